package server

import (
	"bytes"
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
		c.s.detail.record(r.Key, detailDel, false)
		c.watchLookup(r.Key)
		switch c.s.store.Delete(r.Key, store.DeleteOptions{}) {
		case nil:
			c.reply("DELETED")
		default:
			c.reply("NOT_FOUND")
		}
	case protocol.CmdTouch:
		c.watchLookup(r.Key)
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
		n, ok := protocol.ParseUint32(r.Args[0])
		if !ok {
			c.reply(protocol.ErrFormat.Reply)
			return
		}
		c.s.verbosity.Store(int32(n))
		c.reply("OK")
	case protocol.CmdQuit:
		c.closing, c.quitting = true, true
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
	case protocol.CmdLru:
		c.lru()
	case protocol.CmdWatch:
		c.watch()
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
	} else if c.s.verbosity.Load() >= 2 {
		c.vvNoReply = s
	}
}

func (c *conn) retrieve() {
	r := &c.req
	c.withCAS = r.Cmd == protocol.CmdGets || r.Cmd == protocol.CmdGats
	opts := store.GetOptions{}
	if r.Cmd == protocol.CmdGat || r.Cmd == protocol.CmdGats {
		opts.Touch, opts.Exptime = true, r.Exptime
	}
	if c.s.watch.wants(watchFetchers) {
		opts.Miss = &c.miss
	}
	mark := len(c.out)
	for i, k := range r.Keys {
		if i%store.PrefetchMax == 0 && len(r.Keys)-i > 1 {
			// A multi-get is a batch of its own (protocol.TextKeys takes
			// none of its keys): its keys are prefetched 16 at a time, so
			// that the lookups' misses overlap.
			c.s.store.Prefetch(r.Keys[i:min(i+store.PrefetchMax, len(r.Keys))])
		}
		if len(k) > protocol.MaxKeyLen {
			// The whole get fails, as in memcached: the values found
			// before the bad key are dropped and no END follows.
			// (memcached also drops the unsent replies of earlier
			// pipelined commands; Tandem keeps those.)
			c.out = protocol.AppendLine(c.out[:mark], protocol.ErrFormat.Reply)
			return
		}
		err := c.s.store.Get(k, opts, c.hit)
		c.s.detail.record(k, detailGet, err == nil)
		if err != nil && c.s.watch.wants(watchFetchers) {
			c.logMiss(k, opts.Miss)
		}
	}
	c.out = append(c.out, "END\r\n"...)
}

// appendHit is the store callback of get, gets, gat and gats.
func (c *conn) appendHit(it store.Item) {
	if c.s.watch.wants(watchFetchers) {
		c.logFetch(it.Key(), "found", it.Class(), it.Len())
	}
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
	c.s.detail.record(r.Key, detailSet, false)
	c.watchLookup(r.Key)
	cas, err := c.s.store.Set(r.Key, value, store.SetOptions{
		Mode: storeModes[r.Cmd], Flags: r.Flags, Exptime: r.Exptime, CAS: r.CAS,
	})
	if r.Cmd == protocol.CmdCas && err == nil {
		c.casWrote = cas
	}
	if c.s.watch.wants(watchMutations) {
		c.logStore(r.Key, storeModes[r.Cmd], err, r.Flags, r.Exptime, len(value))
	}
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
	c.watchLookup(r.Key)
	res, err := c.s.store.Arith(r.Key, store.ArithOptions{Decr: r.Cmd == protocol.CmdDecr, Delta: r.Delta})
	switch err {
	case nil:
		if !r.NoReply {
			c.out = strconv.AppendUint(c.out, res.Value, 10)
			c.out = append(c.out, protocol.CRLF...)
		} else if c.s.verbosity.Load() >= 2 {
			c.vvNoReply = strconv.FormatUint(res.Value, 10)
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
		if c.s.cfg.NoSlabReassign {
			c.reply("CLIENT_ERROR slab reassignment disabled")
			return
		}
		src, ok1 := parseClassID(a[1])
		dst, ok2 := parseClassID(a[2])
		if !ok1 || !ok2 {
			c.reply(protocol.ErrFormat.Reply)
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
		n, ok := protocol.ParseUint32(a[1])
		switch {
		case !ok:
			c.reply(protocol.ErrFormat.Reply)
		case n == 0:
			c.s.store.SetAutomove(false)
			c.s.automove.Store(0)
			c.reply("OK")
		case n <= 2:
			c.s.store.SetAutomove(true)
			c.s.automove.Store(int32(n))
			c.reply("OK")
		default:
			c.reply("ERROR")
		}
	default:
		c.reply("ERROR")
	}
}

// parseClassID reads a class id as memcached's strtol: -1 means any.
func parseClassID(b []byte) (int, bool) {
	n, err := strconv.Atoi(string(b))
	return n, err == nil
}

// lru answers memcached's LRU tuning commands. Tandem evicts with one clock
// per class, not segmented LRUs, so valid settings are accepted and have
// no effect.
func (c *conn) lru() {
	a := c.req.Args
	switch {
	case len(a) >= 5 && string(a[0]) == "tune":
		hot, ok1 := protocol.ParseUint32(a[1])
		warm, ok2 := protocol.ParseUint32(a[2])
		hotF, err3 := strconv.ParseFloat(string(a[3]), 64)
		warmF, err4 := strconv.ParseFloat(string(a[4]), 64)
		switch {
		case !ok1 || !ok2 || err3 != nil || err4 != nil:
			c.reply("ERROR")
		case hot+warm > 80:
			c.reply("ERROR hot and warm pcts must not exceed 80")
		case hotF <= 0 || warmF <= 0:
			c.reply("ERROR hot/warm age factors must be greater than 0")
		default:
			c.reply("OK")
		}
	case len(a) >= 2 && string(a[0]) == "mode":
		switch string(a[1]) {
		case "flat", "segmented":
			c.reply("OK")
		default:
			c.reply("ERROR")
		}
	case len(a) >= 2 && string(a[0]) == "temp_ttl":
		if _, ok := protocol.ParseInt32(a[1]); !ok {
			c.reply("ERROR")
			return
		}
		c.reply("OK")
	default:
		c.reply("ERROR")
	}
}

func (c *conn) lruCrawler() {
	a := c.req.Args
	switch {
	case len(a) == 2 && string(a[0]) == "crawl":
		if c.s.crawlerOff.Load() {
			c.reply("CLIENT_ERROR lru crawler disabled")
			return
		}
		if _, ok := c.crawlClasses(a[1]); !ok {
			c.reply("BADCLASS invalid class id")
			return
		}
		go c.s.store.Crawl()
		c.reply("OK")
	case len(a) == 2 && string(a[0]) == "metadump":
		c.metadump(a[1])
	case len(a) == 2 && string(a[0]) == "tocrawl":
		if _, ok := protocol.ParseUint32(a[1]); !ok {
			c.reply(protocol.ErrFormat.Reply)
			return
		}
		c.reply("OK")
	case len(a) == 2 && string(a[0]) == "sleep":
		n, ok := protocol.ParseUint32(a[1])
		switch {
		case !ok:
			c.reply(protocol.ErrFormat.Reply)
		case n > 1000000:
			c.reply("CLIENT_ERROR sleep must be one second or less")
		default:
			c.reply("OK")
		}
	case len(a) == 1 && string(a[0]) == "enable":
		// As memcached: starting a crawler that runs fails.
		if !c.s.crawlerOff.CompareAndSwap(true, false) {
			c.reply("ERROR failed to start lru crawler thread")
			return
		}
		c.reply("OK")
	case len(a) == 1 && string(a[0]) == "disable":
		if !c.s.crawlerOff.CompareAndSwap(false, true) {
			c.reply("ERROR failed to stop lru crawler thread")
			return
		}
		c.reply("OK")
	default:
		c.reply("ERROR")
	}
}

// crawlClasses reads "all" or a comma list of class ids.
func (c *conn) crawlClasses(arg []byte) ([]int, bool) {
	n := c.s.store.NumClasses()
	if string(arg) == "all" {
		ids := make([]int, n)
		for i := range ids {
			ids[i] = i + 1
		}
		return ids, true
	}
	var ids []int
	for _, f := range bytes.Split(arg, []byte(",")) {
		id, ok := protocol.ParseUint32(f)
		if !ok || id < 1 || int(id) > n {
			return nil, false
		}
		ids = append(ids, int(id))
	}
	return ids, true
}

// metadump answers "lru_crawler metadump": a line per item, as memcached's
// crawler writes them (ending in a bare newline), then END.
func (c *conn) metadump(arg []byte) {
	switch {
	case c.s.crawlerOff.Load():
		c.reply("CLIENT_ERROR lru crawler disabled")
		return
	case c.s.cfg.DisableDumping:
		c.reply("ERROR metadump not allowed")
		return
	case len(c.out) > 0:
		c.reply("ERROR cannot pipeline other commands before metadump")
		return
	}
	ids, ok := c.crawlClasses(arg)
	if !ok {
		c.reply("BADCLASS invalid class id")
		return
	}
	for _, cls := range ids {
		c.s.store.Dump(cls, 0, func(e store.DumpEntry) bool {
			if e.Dead {
				return true // as memcached's crawler: expired and flushed items are skipped
			}
			c.out = append(c.out, "key="...)
			c.out = appendURIEncoded(c.out, e.Key)
			c.out = append(c.out, " exp="...)
			if e.Exptime == 0 {
				c.out = append(c.out, "-1"...)
			} else {
				c.out = strconv.AppendInt(c.out, e.Exptime, 10)
			}
			c.out = appendItemFields(c.out, e.LastAccess, e.CAS, e.Fetched, e.Class, e.Size)
			c.out = append(c.out, '\n')
			if len(c.out) >= flushAt {
				c.flush()
			}
			return true
		})
	}
	c.out = append(c.out, "END\r\n"...)
}

// appendURIEncoded percent-encodes all but unreserved characters, as
// memcached's uriencode.
func appendURIEncoded(dst, key []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, b := range key {
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '-', b == '.', b == '_', b == '~':
			dst = append(dst, b)
		default:
			dst = append(dst, '%', hex[b>>4], hex[b&15])
		}
	}
	return dst
}
