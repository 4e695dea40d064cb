package server

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandemcache/tandem/store"
)

// memcached's "watch": a connection that sends it gets OK and then a line
// for each event of the kinds it asked for, in memcached's formats, until
// it hangs up. Event sites pay one atomic load while nobody watches.
//
// A watcher has a bounded buffer (memcached's watcher_logbuf_size, 256 KiB)
// filled by the goroutines that log and emptied by a goroutine of its own
// that writes to the socket (writeUnowned, as a detached connection does): a watcher that reads
// slowly loses lines (counted, and announced with "skipped=N" before the
// next line it gets, as memcached does), never slows the requests.

// Event kinds, as memcached's watch arguments name them.
const (
	watchFetchers uint32 = 1 << iota
	watchMutations
	watchEvictions
	watchConnEvents
	watchSysEvents // accepted; Tandem logs none (memcached: crawler, slab moves)
	watchRawCmds   // accepted; memcached 1.6.18 logs none either
	watchProxy     // proxyreqs, proxyevents, proxyuser: accepted, no proxy
)

var watchWords = map[string]uint32{
	"fetchers": watchFetchers, "mutations": watchMutations, "evictions": watchEvictions,
	"connevents": watchConnEvents, "sysevents": watchSysEvents, "rawcmds": watchRawCmds,
	"proxyreqs": watchProxy, "proxyevents": watchProxy, "proxyuser": watchProxy,
}

const (
	maxWatchers = 20        // memcached's WATCHER_LIMIT
	watchBuf    = 256 << 10 // memcached's default watcher_logbuf_size
)

type watchHub struct {
	mask atomic.Uint32 // the kinds some watcher wants
	gid  atomic.Uint64 // memcached's gid: one number per event logged

	mu sync.Mutex
	ws []*watcher

	sent, skipped atomic.Uint64
}

type watcher struct {
	c     *conn
	kinds uint32
	wake  chan struct{} // 1-buffered: there is something to write
	done  chan struct{} // closed when the connection is gone

	mu      sync.Mutex
	buf     []byte
	skipped uint64
}

func (h *watchHub) wants(kind uint32) bool { return h.mask.Load()&kind != 0 }

// add makes c a watcher of kinds; its first line is OK. It fails when
// maxWatchers are watching.
func (h *watchHub) add(c *conn, kinds uint32) (*watcher, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.ws) >= maxWatchers {
		return nil, false
	}
	w := &watcher{c: c, kinds: kinds, wake: make(chan struct{}, 1), done: make(chan struct{}),
		buf: append(make([]byte, 0, 4096), "OK\r\n"...)}
	h.ws = append(h.ws, w)
	h.setMask()
	w.wake <- struct{}{}
	return w, true
}

func (h *watchHub) remove(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, x := range h.ws {
		if x == w {
			h.ws = append(h.ws[:i], h.ws[i+1:]...)
			h.setMask()
			close(w.done)
			return
		}
	}
}

// watchers is how many connections watch (stats log_watchers).
func (h *watchHub) watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ws)
}

func (h *watchHub) setMask() {
	var m uint32
	for _, w := range h.ws {
		m |= w.kinds
	}
	h.mask.Store(m)
}

// emit hands a finished line to every watcher of its kind.
func (h *watchHub) emit(kind uint32, line []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, w := range h.ws {
		if w.kinds&kind == 0 {
			continue
		}
		w.mu.Lock()
		if len(w.buf)+len(line)+32 > watchBuf {
			w.skipped++
			h.skipped.Add(1)
			w.mu.Unlock()
			continue
		}
		if w.skipped > 0 {
			w.buf = append(w.buf, "skipped="...)
			w.buf = strconv.AppendUint(w.buf, w.skipped, 10)
			w.buf = append(w.buf, '\n')
			w.skipped = 0
		}
		w.buf = append(w.buf, line...)
		w.mu.Unlock()
		h.sent.Add(1)
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// untilDone lets a watcher's write wait for room as long as the watcher
// lasts, checking every 100 ms.
func (w *watcher) untilDone() time.Duration {
	select {
	case <-w.done:
		return 0
	default:
		return 100 * time.Millisecond
	}
}

// run writes the watcher's lines until its connection is gone.
func (w *watcher) run(h *watchHub) {
	var out []byte
	for {
		select {
		case <-w.done:
			return
		case <-w.wake:
		}
		w.mu.Lock()
		out, w.buf = w.buf, out[:0]
		w.mu.Unlock()
		if !w.c.writeUnowned(out, w.untilDone) {
			w.c.closeWhy.Store(closeError) // as memcached logs a watcher's end
			h.remove(w)
			w.c.closeExternal()
			return
		}
	}
}

// watch runs the watch command: the connection becomes a watcher, or gets
// memcached's refusal.
func (c *conn) watch() {
	if c.s.cfg.DisableWatch {
		c.reply("CLIENT_ERROR watch commands not allowed")
		return
	}
	if len(c.out) > 0 || c.held.active.Load() || c.udp || c.fd < 0 {
		// memcached: replies of this batch are still to be sent (here
		// also: replies held for the replication peers' acks).
		c.reply("ERROR cannot pipeline other commands before watch")
		return
	}
	kinds := watchFetchers
	if args := c.req.Args; len(args) > 0 {
		kinds = 0
		for _, a := range args {
			k, ok := watchWords[string(a)]
			if !ok {
				c.reply("ERROR")
				return
			}
			kinds |= k
		}
	}
	w, ok := c.s.watch.add(c, kinds)
	if !ok {
		c.reply("WATCHER_TOO_MANY log watcher limit reached")
		return
	}
	c.watcher.Store(w)
	go w.run(&c.s.watch)
}

// Line formats, memcached 1.6.18's (logger.c). Each line starts with the
// time in seconds and microseconds, the microseconds not zero-padded, as
// memcached prints them, and a gid.

func (h *watchHub) start(b []byte) []byte {
	now := time.Now()
	b = append(b, "ts="...)
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(now.Nanosecond()/1000), 10)
	b = append(b, " gid="...)
	return strconv.AppendUint(b, h.gid.Add(1), 10)
}

func appendField(b []byte, name string, v int64) []byte {
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, '=')
	return strconv.AppendInt(b, v, 10)
}

// logFetch logs a lookup of key: "found" with the item's class and size,
// or why not (logMiss).
func (c *conn) logFetch(key []byte, status string, cls, size int) {
	h := &c.s.watch
	var a [384]byte
	b := h.start(a[:0])
	b = append(b, " type=item_get key="...)
	b = appendURIEncoded(b, key)
	b = append(b, " status="...)
	b = append(b, status...)
	b = appendField(b, "clsid", int64(cls))
	b = appendField(b, "cfd", int64(c.fd))
	b = appendField(b, "size", int64(size))
	h.emit(watchFetchers, append(b, '\n'))
}

// logMiss logs a read's miss of key; why is set when the lookup was told
// to say why (store.GetOptions.Miss), which it is while fetchers are
// watched.
func (c *conn) logMiss(key []byte, why *store.Miss) {
	status := "not_found"
	if why != nil {
		switch *why {
		case store.MissExpired:
			status = "expired"
		case store.MissFlushed:
			status = "flushed"
		}
	}
	c.logFetch(key, status, 0, 0)
}

// watchLookup is logLookup while a watcher wants fetchers: one atomic load
// otherwise, on the write path.
func (c *conn) watchLookup(key []byte) {
	if c.s.watch.wants(watchFetchers) {
		c.logLookup(key)
	}
}

// logLookup logs the lookup of key that a write command makes before it
// changes the item, as memcached logs one from every command that looks a
// key up (its do_item_get): the item as it was, or why there was none. It
// looks the key up once more, so it runs only while fetchers are watched.
func (c *conn) logLookup(key []byte) {
	var why store.Miss
	found := false
	_ = c.s.store.Get(key, store.GetOptions{Peek: true, Miss: &why}, func(it store.Item) {
		found = true
		c.logFetch(it.Key(), "found", it.Class(), it.Len())
	})
	if !found {
		c.logMiss(key, &why)
	}
}

// logCreated logs what memcached logs when an incr or decr creates the
// missing item (binary, or meta with N): a second lookup, and an add.
func (c *conn) logCreated(key []byte, value uint64, exptime int64) {
	if c.s.watch.wants(watchFetchers) {
		c.logMiss(key, nil)
	}
	if c.s.watch.wants(watchMutations) {
		var digits [20]byte
		c.logStore(key, store.ModeAdd, nil, 0, exptime, len(strconv.AppendUint(digits[:0], value, 10)))
	}
}

// storeCmds names the store modes as memcached's item_store lines do.
var storeCmds = [...]string{store.ModeSet: "set", store.ModeAdd: "add", store.ModeReplace: "replace",
	store.ModeAppend: "append", store.ModePrepend: "prepend", store.ModeCAS: "cas"}

// logStore logs a storage command's outcome. exptime is the request's
// (memcached's rules: seconds from now up to 30 days, a unix time beyond).
func (c *conn) logStore(key []byte, mode store.Mode, err error, flags uint32, exptime int64, size int) {
	h := &c.s.watch
	status := "stored"
	switch err {
	case nil:
	case store.ErrNotStored:
		status = "not_stored"
	case store.ErrExists:
		status = "exists"
	case store.ErrNotFound:
		status = "not_found"
	case store.ErrTooLarge:
		status = "too_large"
	default:
		status = "no_memory"
	}
	cmd := "null"
	if int(mode) < len(storeCmds) && storeCmds[mode] != "" {
		cmd = storeCmds[mode]
	}
	// The seconds left, printed as memcached prints them: unsigned 32-bit.
	ttl := exptime
	if exptime > store.MaxDelta {
		ttl = exptime - c.s.store.Unix()
	}
	cls := c.s.store.ClassFor(len(key), flags, size)
	if err == nil && (mode == store.ModeAppend || mode == store.ModePrepend) {
		// memcached names the item made, not the data sent.
		_ = c.s.store.Get(key, store.GetOptions{Peek: true}, func(it store.Item) { cls, size = it.Class(), it.Len() })
	}
	if err == store.ErrTooLarge {
		size = 0 // memcached names no item: none was made
	}
	var a [384]byte
	b := h.start(a[:0])
	b = append(b, " type=item_store key="...)
	b = appendURIEncoded(b, key)
	b = append(b, " status="...)
	b = append(b, status...)
	b = append(b, " cmd="...)
	b = append(b, cmd...)
	b = appendField(b, "ttl", int64(uint32(ttl)))
	b = appendField(b, "clsid", int64(cls))
	b = appendField(b, "cfd", int64(c.fd))
	b = appendField(b, "size", int64(size))
	h.emit(watchMutations, append(b, '\n'))
}

// Why a connection closed, for conn_close lines (memcached's close_reasons).
const (
	closeError uint32 = iota
	closeNormal
	closeIdle
	closeShutdown
)

var closeReasons = [...]string{"error", "normal", "idle_timeout", "shutdown"}

// logConn logs a connection opening (closing false) or closing.
func (c *conn) logConn(closing bool) {
	h := &c.s.watch
	ip, port, transport := "unix", int64(0), "local"
	if a, ok := c.nc.RemoteAddr().(*net.TCPAddr); ok {
		ip, port, transport = a.IP.String(), int64(a.Port), "tcp"
	}
	var a [256]byte
	b := h.start(a[:0])
	if closing {
		b = append(b, " type=conn_close rip="...)
	} else {
		b = append(b, " type=conn_new rip="...)
	}
	b = append(b, ip...)
	b = appendField(b, "rport", port)
	b = append(b, " transport="...)
	b = append(b, transport...)
	if closing {
		b = append(b, " reason="...)
		b = append(b, closeReasons[min(c.closeWhy.Load(), closeShutdown)]...)
	}
	b = appendField(b, "cfd", int64(c.fd))
	h.emit(watchConnEvents, append(b, '\n'))
}

// logEviction is the store's eviction hook.
func (s *Server) logEviction(e store.Eviction) {
	h := &s.watch
	if !h.wants(watchEvictions) {
		return
	}
	var a [384]byte
	b := h.start(a[:0])
	b = append(b, " type=eviction key="...)
	b = appendURIEncoded(b, e.Key)
	if e.Fetched {
		b = append(b, " fetch=yes"...)
	} else {
		b = append(b, " fetch=no"...)
	}
	ttl := int64(-1)
	if e.Exptime != 0 {
		ttl = e.Exptime - e.Now
	}
	b = appendField(b, "ttl", ttl)
	b = appendField(b, "la", e.Now-e.LastAccess)
	b = appendField(b, "clsid", int64(e.Class))
	b = appendField(b, "size", int64(e.Size))
	h.emit(watchEvictions, append(b, '\n'))
}
