package server

import (
	"strconv"

	"github.com/tandemcache/tandem/protocol"
	"github.com/tandemcache/tandem/store"
)

// dispatch runs a parsed non-storage command.
func (c *conn) dispatch() {
	r := &c.req
	switch r.Cmd {
	case protocol.CmdGet, protocol.CmdGets, protocol.CmdGat, protocol.CmdGats:
		c.retrieve()
	case protocol.CmdIncr, protocol.CmdDecr:
		c.arith()
	case protocol.CmdDelete:
		switch c.s.store.Delete(r.Key, store.DeleteOptions{}) {
		case nil:
			c.reply("DELETED")
		default:
			c.reply("NOT_FOUND")
		}
	case protocol.CmdTouch:
		if c.s.store.Touch(r.Key, r.Exptime) == nil {
			c.reply("TOUCHED")
		} else {
			c.reply("NOT_FOUND")
		}
	case protocol.CmdFlushAll:
		if c.s.cfg.DisableFlush {
			c.reply("CLIENT_ERROR flush_all not allowed")
			return
		}
		c.s.store.FlushAll(r.Exptime)
		c.reply("OK")
	case protocol.CmdVersion:
		c.reply("VERSION " + Version)
	case protocol.CmdVerbosity:
		// memcached reads the level with strtoul and ignores garbage.
		n, _ := strconv.Atoi(string(r.Args[0]))
		c.s.verbosity.Store(int32(n))
		c.reply("OK")
	case protocol.CmdQuit:
		c.closing = true
	case protocol.CmdShutdown:
		c.shutdown()
	case protocol.CmdCacheMemlimit:
		c.memlimit()
	case protocol.CmdStats:
		c.stats()
	case protocol.CmdSlabs:
		c.slabs()
	case protocol.CmdLruCrawler:
		c.lruCrawler()
	case protocol.CmdLru, protocol.CmdWatch:
		// Not implemented: memcached answers ERROR to forms it does not
		// know, and clients treat these as optional.
		c.reply("ERROR")
	case protocol.CmdMetaNoop, protocol.CmdMetaGet, protocol.CmdMetaDelete,
		protocol.CmdMetaArith, protocol.CmdMetaDebug:
		c.s.cmdMeta.Add(1)
		c.meta()
	}
}

func (c *conn) meta() {
	switch c.req.Cmd {
	case protocol.CmdMetaNoop:
		c.out = protocol.AppendLine(c.out, "MN")
	case protocol.CmdMetaGet:
		c.metaGet()
	case protocol.CmdMetaDelete:
		c.metaDelete()
	case protocol.CmdMetaArith:
		c.metaArith()
	case protocol.CmdMetaDebug:
		c.metaDebug()
	}
}

// reply appends a reply line unless the request said noreply.
func (c *conn) reply(s string) {
	if !c.req.NoReply {
		c.out = protocol.AppendLine(c.out, s)
	}
}

func (c *conn) retrieve() {
	r := &c.req
	c.withCAS = r.Cmd == protocol.CmdGets || r.Cmd == protocol.CmdGats
	opts := store.GetOptions{}
	if r.Cmd == protocol.CmdGat || r.Cmd == protocol.CmdGats {
		opts.Touch, opts.Exptime = true, r.Exptime
	}
	for _, k := range r.Keys {
		if len(k) > protocol.MaxKeyLen {
			// memcached stops at the bad key: the values before it stay,
			// and no END follows.
			c.out = protocol.AppendLine(c.out, protocol.ErrFormat.Reply)
			return
		}
		_ = c.s.store.Get(k, opts, c.hit)
	}
	c.out = append(c.out, "END\r\n"...)
}

// appendHit is the store callback of get, gets, gat and gats.
func (c *conn) appendHit(it store.Item) {
	c.out = protocol.AppendValueHeader(c.out, it.Key(), it.Flags, it.Len(), it.CAS, c.withCAS)
	c.out = it.AppendValue(c.out)
	c.out = append(c.out, protocol.CRLF...)
}

var storeModes = [...]store.Mode{
	protocol.CmdSet:     store.ModeSet,
	protocol.CmdAdd:     store.ModeAdd,
	protocol.CmdReplace: store.ModeReplace,
	protocol.CmdAppend:  store.ModeAppend,
	protocol.CmdPrepend: store.ModePrepend,
	protocol.CmdCas:     store.ModeCAS,
}

func (c *conn) textStore(value []byte) {
	r := &c.req
	_, err := c.s.store.Set(r.Key, value, store.SetOptions{
		Mode: storeModes[r.Cmd], Flags: r.Flags, Exptime: r.Exptime, CAS: r.CAS,
	})
	c.reply(storeReply(err))
}

func storeReply(err error) string {
	switch err {
	case nil:
		return "STORED"
	case store.ErrNotStored:
		return "NOT_STORED"
	case store.ErrExists:
		return "EXISTS"
	case store.ErrNotFound:
		return "NOT_FOUND"
	case store.ErrTooLarge:
		return protocol.ErrTooLarge.Reply
	default:
		return protocol.ErrNoMemory.Reply
	}
}

func (c *conn) arith() {
	r := &c.req
	res, err := c.s.store.Arith(r.Key, store.ArithOptions{Decr: r.Cmd == protocol.CmdDecr, Delta: r.Delta})
	switch err {
	case nil:
		if !r.NoReply {
			c.out = strconv.AppendUint(c.out, res.Value, 10)
			c.out = append(c.out, protocol.CRLF...)
		}
	case store.ErrNotFound:
		c.reply("NOT_FOUND")
	case store.ErrNonNumeric:
		c.reply("CLIENT_ERROR cannot increment or decrement non-numeric value")
	default:
		c.reply("SERVER_ERROR out of memory")
	}
}

func (c *conn) shutdown() {
	if !c.s.cfg.EnableShutdown {
		c.reply("ERROR: shutdown not enabled")
		return
	}
	args := c.req.Args
	graceful := false
	switch {
	case len(args) == 0:
	case len(args) == 1 && string(args[0]) == "graceful":
		graceful = true
	default:
		c.reply("CLIENT_ERROR invalid shutdown mode")
		return
	}
	if c.s.cfg.OnShutdown != nil {
		c.closing = true
		go c.s.cfg.OnShutdown(graceful)
	}
}

func (c *conn) memlimit() {
	mb, ok := protocol.ParseUint64(c.req.Args[0])
	switch {
	case !ok || mb > 1<<32-1:
		c.reply("ERROR")
	case mb < 8:
		c.reply("MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m")
	case mb > 1000000000:
		c.reply("MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes")
	default:
		c.s.store.SetMemoryLimit(int64(mb) << 20)
		c.reply("OK")
	}
}

func (c *conn) slabs() {
	a := c.req.Args
	switch {
	case len(a) == 3 && string(a[0]) == "reassign":
		src, ok1 := strconv.Atoi(string(a[1]))
		dst, ok2 := strconv.Atoi(string(a[2]))
		if ok1 != nil || ok2 != nil {
			c.reply("ERROR")
			return
		}
		switch c.s.store.Reassign(src, dst) {
		case nil:
			c.reply("OK")
		case store.ErrBusy:
			c.reply("BUSY currently processing reassign request")
		case store.ErrBadClass:
			c.reply("BADCLASS invalid src or dst class id")
		case store.ErrNoSpare:
			c.reply("NOSPARE source class has no spare pages")
		case store.ErrSameClass:
			c.reply("SAME src and dst class are identical")
		}
	case len(a) == 2 && string(a[0]) == "automove":
		switch string(a[1]) {
		case "0":
			c.s.store.SetAutomove(false)
			c.reply("OK")
		case "1", "2":
			c.s.store.SetAutomove(true)
			c.reply("OK")
		default:
			c.reply("ERROR")
		}
	default:
		c.reply("ERROR")
	}
}

func (c *conn) lruCrawler() {
	a := c.req.Args
	if len(a) == 0 {
		c.reply("ERROR")
		return
	}
	switch string(a[0]) {
	case "crawl":
		if len(a) != 2 {
			c.reply("ERROR")
			return
		}
		go c.s.store.Crawl()
		c.reply("OK")
	case "enable", "disable":
		c.reply("OK")
	case "sleep", "tocrawl":
		if len(a) != 2 {
			c.reply("ERROR")
			return
		}
		if _, ok := protocol.ParseUint64(a[1]); !ok {
			c.reply("CLIENT_ERROR bad command line format")
			return
		}
		c.reply("OK")
	default:
		c.reply("ERROR")
	}
}
