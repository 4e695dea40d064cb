package server

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cloudwego/netpoll"
	"github.com/tandemcache/tandem/protocol"
	"github.com/tandemcache/tandem/store"
)

const (
	// flushAt: inside a long pipeline, replies are written out every 64 KiB
	// so that a client reading its replies as it sends is never stalled.
	flushAt = 64 << 10
	// binaryMagic is the first byte of a binary protocol request.
	binaryMagic = 0x80
)

// conn is one client connection. Only its handler touches it (a netpoll
// task, or the goroutine it was detached to: see inline.go), except
// lastActive (read by the idle sweeper) and what mu guards.
type conn struct {
	s        *Server
	nc       netpoll.Connection
	req      protocol.Request
	out      []byte
	swallow  int // bytes of a refused value still to drop
	rejected bool
	closing  bool
	started  bool // a first byte was seen (protocol detection)
	binary   bool // the connection speaks the binary protocol
	udp      bool // a UDP socket's pseudo-connection: replies are framed by serveUDP
	// retrieval: the last request was a get, gat or meta get, text or
	// binary (UDP may answer it with more bytes than it received).
	retrieval bool
	fd        int // the socket, for writing replies; -1 if unknown
	// pfKeys holds the keys of a batch while they are prefetched; pfReq is
	// the text parser's scratch for finding them, made when a connection
	// first sends a batch (most never do: no need to carry one each).
	pfKeys [store.PrefetchMax][]byte
	pfReq  *protocol.Request

	lastActive atomic.Int64 // unix seconds

	// Serving on the poller (inline.go). mu is held by the runner while
	// the handler runs inline and by anything else that closes the
	// connection; noInline (under mu) sends every later task to the pool.
	mu         sync.Mutex
	noInline   bool
	inline     bool          // the handler runs on the poller: it must not wait
	detachReq  bool          // the inline handler must hand the connection over
	detached   atomic.Bool   // a goroutine of its own has the connection
	detachDone chan struct{} // closed when that goroutine gives it back
	// partial holds input that could not be run where it was read: a
	// partial request (once it reaches pneed bytes it is worth parsing
	// again), or requests left to a detached goroutine.
	partial []byte
	pneed   int
	// getLine is how many bytes at the front of the input are known to
	// hold no newline: a get line longer than protocol.MaxLine still
	// arriving (memcached buffers those without a bound; ours is the
	// connection's input bound). Each arrival is searched from there, not
	// from the start, so a long line costs its length once.
	getLine int
	// wmu orders a detached goroutine's writes with the close callback:
	// once netpoll has closed the connection (gone), the socket's number
	// may already belong to another client.
	wmu  sync.Mutex
	gone bool
	// gate pauses reading while the handler is far behind (pace.go).
	gate readGate

	auth authState // -S and -Y, see auth.go

	// watcher is set once the connection runs "watch" (watch.go): from
	// then on its input is ignored and its own goroutine writes to it.
	watcher  atomic.Pointer[watcher]
	closeWhy atomic.Uint32 // for watch's conn_close lines
	quitting bool          // closing because the client said quit

	// Arguments of the store callback, set before each Get so that the
	// callback is a method value made once, not a closure per request.
	hit     func(store.Item)
	metaHit func(store.Item)
	withCAS bool

	// Replication (see repl.go): where the writes' replies are in out,
	// and the replies held for the peers' acks.
	replMarks []replMark
	held      held
	// casWrote is the CAS a compare-and-swap just stored, so that the
	// reply can become EXISTS if a peer overrules it (see repl.go).
	casWrote uint64
	// vvNoReply is the reply noreply suppressed, kept at -vv only for
	// logExchange, which shows it as memcached does; udpFd a UDP
	// pseudo-connection's socket, which -vv lines name. (Last: the fields
	// above are the hot ones.)
	vvNoReply string
	udpFd     int
	miss      store.Miss // why a watched read missed (store.GetOptions.Miss)
}

func newConn(s *Server, nc netpoll.Connection) *conn {
	c := &conn{s: s, nc: nc, out: make([]byte, 0, 4096), fd: -1}
	if f, ok := nc.(interface{ Fd() int }); ok {
		c.fd = f.Fd()
	}
	c.held.idle.L = &c.held.mu
	c.hit = c.appendHit
	c.metaHit = c.appendMetaHit
	c.lastActive.Store(s.store.Unix())
	c.closeWhy.Store(closeNormal)
	return c
}

// serve answers every complete request buffered, flushing once per batch,
// and waits (without spinning) for the rest of a partial one. netpoll calls
// it whenever input is buffered; it must consume everything or close. On
// the poller (c.inline) it never waits: see inline.go.
func (c *conn) serve() {
	c.waitDetached()
	r := c.nc.Reader()
	atLeast := 0 // the request at the front needs this much to be looked at
	for {
		n := r.Len()
		if !c.inline {
			c.pace(n)
		}
		if n == 0 {
			return
		}
		if n+len(c.partial) > c.s.maxInput && !c.paced() {
			// A client far ahead of its requests' replies, whose reading
			// cannot be paused (pace.go): it is dropped.
			c.drop(r, n)
			return
		}
		if c.watcher.Load() != nil {
			// A watcher's input is not read as commands (memcached stops
			// reading it); it only tells netpoll when the client hangs up.
			c.resumeReading()
			_ = r.Skip(n)
			_ = r.Release()
			return
		}
		take := n
		if !c.inline && len(c.partial) == 0 {
			take = min(n, max(peekMax, atLeast))
		}
		buf, err := r.Peek(take)
		if err != nil {
			c.drop(r, n)
			return
		}
		c.lastActive.Store(c.s.store.Unix()) // not time.Now: 0.5% of unpipelined CPU
		if len(c.partial) > 0 {
			// The front of a request was copied out: go on from there.
			c.partial = append(c.partial, buf...)
			_ = r.Skip(n)
			_ = r.Release()
			c.s.bytesRead.Add(uint64(n))
			if len(c.partial) >= c.pneed {
				c.runPartial()
			}
			c.finish()
			return
		}
		pos, need := c.process(buf)
		c.flush()
		if c.watcher.Load() != nil {
			pos, need = n, 0 // what followed watch is ignored
		}
		if c.inline && (need > 0 || c.detachReq || c.closing) {
			// Nothing on the poller may wait: keep what is left.
			if !c.closing {
				c.partial = append(c.partial[:0], buf[pos:]...)
				c.pneed = need
			}
			pos, need = n, 0
		}
		_ = r.Skip(pos)
		c.s.bytesRead.Add(uint64(pos))
		_ = r.Release()
		if c.inline {
			c.finish()
			return
		}
		if c.closing {
			c.markClose()
			if c.s.repl != nil {
				c.waitHeld() // the replies before a quit are owed
			}
			c.nc.Close()
			return
		}
		atLeast = 0
		if need > 0 {
			if take < n {
				// Only part of the input was looked at: the request may
				// be there already. At least double what it was shown, so
				// that a long line is not searched again a byte at a time.
				atLeast = max(need, 2*(take-pos))
			}
			if need <= n-pos {
				continue
			}
			if need > c.s.maxInput {
				// One request larger than the bound: a get line that
				// never ends.
				c.drop(r, n-pos)
				return
			}
			// Block until the partial request is whole; netpoll would call
			// us again at once if we returned with input left.
			c.resumeReading()
			if _, err := r.Peek(need); err != nil {
				c.nc.Close()
				return
			}
		}
	}
}

// runPartial runs the requests in c.partial and keeps what is left of it.
func (c *conn) runPartial() {
	pos, need := c.process(c.partial)
	c.flush()
	rest := copy(c.partial, c.partial[pos:])
	c.partial = c.partial[:rest]
	c.pneed = need
	if rest == 0 && cap(c.partial) > 64<<10 {
		c.partial = nil // a big value passed through: do not keep its room
	}
}

// finish ends a handler call that consumed all input: on the poller, the
// connection goes to a goroutine of its own if it must; elsewhere, it is
// closed if it must.
func (c *conn) finish() {
	switch {
	case c.inline && (c.detachReq || c.closing):
		c.detach()
	case !c.inline && c.closing:
		c.markClose()
		c.nc.Close()
	}
}

// markClose records why the connection closes itself, for watch's
// conn_close lines: memcached calls every close but a quit an error.
func (c *conn) markClose() {
	if c.quitting {
		c.closeWhy.Store(closeNormal)
	} else {
		c.closeWhy.Store(closeError)
	}
}

// drop closes the connection after consuming its input n bytes (a client
// too far ahead, or a read error).
func (c *conn) drop(r netpoll.Reader, n int) {
	c.closing = true
	c.closeWhy.Store(closeError)
	if c.inline {
		_ = r.Skip(n)
		_ = r.Release()
		c.detach()
		return
	}
	c.nc.Close()
}

// process runs the requests at the front of buf. It returns the bytes
// consumed and, when a request is incomplete, how many bytes from there on
// must be buffered before it can go on (0 when all was consumed).
func (c *conn) process(buf []byte) (pos, need int) {
	count := 0
	pf := 0 // the keys of buf[:pf] were prefetched
	for pos < len(buf) && !c.closing && !c.detachReq && c.watcher.Load() == nil {
		if c.swallow > 0 {
			k := min(c.swallow, len(buf)-pos)
			pos += k
			c.swallow -= k
			continue
		}
		if !c.started {
			// memcached picks the protocol from a connection's first byte
			// (-B auto), or refuses the one not allowed by -B.
			c.started = true
			c.binary = buf[pos] == binaryMagic && c.s.cfg.AuthFile == nil // -Y reads all as text
			if c.binary && c.s.cfg.Protocol == ProtocolASCII || !c.binary && c.s.cfg.Protocol == ProtocolBinary {
				c.closing = true
				return len(buf), 0
			}
			if c.s.cfg.Protocol == ProtocolAuto && !c.udp && c.s.verbosity.Load() >= 2 {
				fmt.Fprintf(c.s.cfg.Log, "%d: Client using the %s protocol\n", c.fd, protoName(c.binary))
			}
		}
		if pos >= pf && (c.auth.ok || c.s.cfg.SASL == nil && c.s.cfg.AuthFile == nil) {
			pf = pos + c.prefetch(buf[pos:])
		}
		var used, want int
		if c.binary {
			mark := len(c.out)
			used, want = c.processBinary(buf[pos:])
			if used > 0 && c.s.verbosity.Load() >= 2 { // not one left to a detached goroutine
				var reply []byte
				if mark <= len(c.out) { // else flushed on the way
					reply = c.out[mark:]
				}
				c.logBinary(buf[pos:], reply)
			}
		} else {
			used, want = c.text(buf[pos:])
		}
		if want > 0 {
			return pos, want
		}
		pos += used
		if count++; count%c.s.cfg.ReqsPerEvent == 0 {
			// -R: let other connections run between long runs of one
			// client's pipelined requests.
			c.flush()
			c.s.connYields.Add(1)
			runtime.Gosched()
		} else if len(c.out) >= flushAt {
			c.flush()
		}
	}
	return pos, 0
}

// prefetch starts loading what the lookups of the requests at the front of
// buf will read, so that their cache misses overlap instead of coming one
// after the other (store.Prefetch). It returns the bytes it looked at, at
// least 1. A lone request gains nothing: it is skipped.
func (c *conn) prefetch(buf []byte) int {
	var keys [][]byte
	var n int
	if c.binary {
		keys, n = protocol.BinaryKeys(c.pfKeys[:0], buf, store.PrefetchMax)
	} else {
		if skip, lone := loneText(buf); lone {
			return skip
		}
		if c.pfReq == nil {
			c.pfReq = new(protocol.Request)
		}
		keys, n = protocol.TextKeys(c.pfKeys[:0], buf, store.PrefetchMax, c.pfReq)
	}
	if len(keys) > 1 {
		c.s.store.Prefetch(keys)
	}
	clear(keys) // they alias the input buffer
	return max(n, 1)
}

// loneText tells whether buf holds too little text to be worth scanning for
// keys, which means parsing each request twice: fewer than three lines
// (one get, or one set and its data), and then how much of it to skip.
func loneText(buf []byte) (skip int, lone bool) {
	const window = 1024
	nl := bytes.IndexByte(buf, '\n')
	if nl < 0 || nl+1 == len(buf) {
		return max(nl+1, 1), true
	}
	// The second line is looked for only near the first: further on it
	// ends a large value, whose copy costs far more than a prefetch saves,
	// and a value without newlines would be searched whole.
	rest := buf[nl+1:]
	if nl2 := bytes.IndexByte(rest[:min(len(rest), window)], '\n'); nl2 < 0 || nl2+1 == len(rest) {
		return nl + 1, true
	}
	return 0, false
}

// one runs the request at the front of buf. It returns the bytes consumed,
// or how many must be buffered before it can run.
func (c *conn) one(buf []byte) (used, want int) {
	if c.getLine > 0 && c.getLine <= len(buf) && bytes.IndexByte(buf[c.getLine:], '\n') < 0 {
		c.getLine = len(buf)
		return 0, len(buf) + 1
	}
	c.getLine = 0
	n, err := protocol.Parse(buf, &c.req)
	if err == protocol.ErrNeedMore {
		if len(buf) > protocol.MaxLine {
			c.getLine = len(buf) // only a get line gets this far
		}
		return 0, len(buf) + 1
	}
	if c.inline && err == nil && slowCmd(c.req.Cmd) {
		c.detachReq = true // one the runner's scan missed: not on the poller
		return 0, 0
	}
	mark := len(c.out)
	c.retrieval = err == nil && c.req.Cmd.IsRetrieval()
	write := c.s.repl != nil && err == nil && textWrite(&c.req)
	switch {
	case err != nil:
		used = n
		c.replyError(err)
	case write && c.refuseWrite():
		used, want = n, 0
		if c.req.Cmd.IsStorage() {
			used, want = c.storage(buf, n)
		}
	case c.req.Cmd.IsStorage():
		used, want = c.storage(buf, n)
	default:
		used = n
		c.dispatch()
	}
	if write && want == 0 {
		c.wrote(mark, nil)
	}
	if want == 0 && c.s.verbosity.Load() >= 2 {
		var reply []byte
		if mark <= len(c.out) { // else flushed on the way (a long dump)
			reply = c.out[mark:]
		}
		c.logExchange(buf[:n], reply, err == nil)
	}
	if write && want == 0 && c.s.repl.Behind() {
		c.throttle() // the peers are far behind the writes
	}
	return used, want
}

// logExchange writes a request line and what memcached 1.6.18's -vv shows
// of its reply: "<fd command", then ">fd line" for a reply it writes as one
// line, ">fd NOREPLY line" for one that noreply suppressed, ">fd sending
// key k" for each hit of a get and ">fd END"; nothing for replies it builds
// otherwise (stats, meta commands' results, quit).
func (c *conn) logExchange(line, reply []byte, parsed bool) {
	noReply := c.vvNoReply
	c.vvNoReply = ""
	fd := c.fd
	if c.udp {
		fd = c.udpFd
	}
	b := fmt.Appendf(nil, "<%d %s\n", fd, bytes.TrimRight(line, "\r\n"))
	first := reply
	if i := bytes.Index(reply, []byte("\r\n")); i >= 0 {
		first = reply[:i]
	}
	failed := bytes.HasPrefix(first, []byte("ERROR")) || bytes.HasPrefix(first, []byte("CLIENT_ERROR")) ||
		bytes.HasPrefix(first, []byte("SERVER_ERROR"))
	cmd := c.req.Cmd
	switch {
	case !parsed || failed:
		b = fmt.Appendf(b, ">%d %s\n", fd, first)
	case c.req.NoReply:
		if noReply != "" {
			b = fmt.Appendf(b, ">%d NOREPLY %s\n", fd, noReply)
		}
	case cmd >= protocol.CmdGet && cmd <= protocol.CmdGats:
		b = appendSentKeys(b, fd, reply)
	case cmd == protocol.CmdMetaDebug && bytes.Equal(first, []byte("EN")), cmd == protocol.CmdMetaNoop:
		b = fmt.Appendf(b, ">%d %s\n", fd, first)
	case cmd >= protocol.CmdMetaGet, cmd == protocol.CmdQuit:
		// The other meta commands' results, and quit: nothing.
	case cmd == protocol.CmdStats && (len(first) == 0 || bytes.HasPrefix(first, []byte("STAT ")) ||
		bytes.HasPrefix(first, []byte("ITEM ")) || bytes.Equal(first, []byte("END"))):
	case cmd == protocol.CmdLruCrawler && !bytes.HasPrefix(first, []byte("OK")):
		// metadump streams its lines (or was flushed on the way).
	default:
		b = fmt.Appendf(b, ">%d %s\n", fd, first)
	}
	_, _ = c.s.cfg.Log.Write(b)
}

// appendSentKeys appends a get's -vv lines: "sending key k" for each VALUE
// in reply, then END.
func appendSentKeys(b []byte, fd int, reply []byte) []byte {
	for rest := reply; len(rest) > 0; {
		l := rest
		if i := bytes.Index(rest, []byte("\r\n")); i >= 0 {
			l, rest = rest[:i], rest[i+2:]
		} else {
			rest = nil
		}
		if key, ok := bytes.CutPrefix(l, []byte("VALUE ")); ok {
			if sp := bytes.IndexByte(key, ' '); sp >= 0 {
				key = key[:sp]
			}
			b = fmt.Appendf(b, ">%d sending key %s\n", fd, key)
			rest = skipValue(rest, l)
		}
	}
	return fmt.Appendf(b, ">%d END\n", fd)
}

// skipValue passes over the data block of the VALUE line l ("VALUE key
// flags bytes [cas]") at the front of rest, so that a value holding
// "VALUE " is not taken for another hit.
func skipValue(rest, l []byte) []byte {
	f := bytes.Fields(l)
	if len(f) < 4 {
		return rest
	}
	n, err := strconv.Atoi(string(f[3]))
	if err != nil || n+2 > len(rest) {
		return nil
	}
	return rest[n+2:]
}

// replyError answers a request that failed to parse.
func (c *conn) replyError(err error) {
	e, ok := err.(*protocol.ErrorReply)
	if !ok {
		c.closing = true
		return
	}
	if e.Close {
		c.closing = true
		return
	}
	if c.req.Cmd == protocol.CmdFlushAll && c.s.cfg.DisableFlush {
		// memcached checks -F before the arguments.
		c.out = protocol.AppendLine(c.out, "CLIENT_ERROR flush_all not allowed")
		return
	}
	// memcached decides noreply before checking the rest of a line, so a
	// malformed line ending in noreply gets no answer either.
	if !c.req.NoReply {
		c.out = protocol.AppendLine(c.out, e.Reply)
	}
}

// storage handles a storage command whose line is n bytes at the front of
// buf. It returns the bytes consumed, or how many must be buffered first.
func (c *conn) storage(buf []byte, n int) (used, want int) {
	r := &c.req
	total := n + r.Bytes + 2
	refuse := r.SwallowErr
	if refuse == nil && c.s.store.TooLarge(len(r.Key), c.storageFlags(), r.Bytes) {
		refuse = protocol.ErrTooLarge
		c.s.store.CountTooLarge()
		if c.s.watch.wants(watchMutations) {
			mode := store.ModeSet // ms: its mode flag is not parsed yet
			if r.Cmd != protocol.CmdMetaSet {
				mode = storeModes[r.Cmd]
			}
			c.logStore(r.Key, mode, store.ErrTooLarge, c.storageFlags(), r.Exptime, r.Bytes)
		}
		// memcached drops the old value so a failed set leaves no stale
		// data (for ms in any mode, for text only for set).
		if r.Cmd == protocol.CmdSet || r.Cmd == protocol.CmdMetaSet {
			c.watchLookup(r.Key)
			_ = c.s.store.Delete(r.Key, store.DeleteOptions{})
		}
	}
	if refuse != nil {
		// Answer now and drop the data block as it arrives, without
		// buffering it.
		if !r.NoReply {
			c.out = protocol.AppendLine(c.out, refuse.Reply)
		}
		c.swallow = r.Bytes + 2
		return n, 0
	}
	if len(buf) < total {
		return 0, total
	}
	block := buf[n:total]
	if !protocol.DataOK(block) {
		if !r.NoReply {
			c.out = protocol.AppendLine(c.out, protocol.ErrDataChunk.Reply)
		}
		return total, 0
	}
	if r.Cmd == protocol.CmdMetaSet {
		c.metaSet(block[:r.Bytes])
	} else {
		c.textStore(block[:r.Bytes])
	}
	return total, 0
}

func (c *conn) storageFlags() uint32 {
	if c.req.Cmd == protocol.CmdMetaSet {
		return c.req.Meta.Flags32
	}
	return c.req.Flags
}

// flush writes the pending replies in one write. It writes to the socket
// itself rather than through netpoll's writer: netpoll refuses to write once
// the peer has half-closed (a client that sends its requests and shuts down
// its side, as "nc -N" does), while memcached still answers such a client.
func (c *conn) flush() {
	if c.s.repl != nil && c.hold() {
		return
	}
	if len(c.out) == 0 || c.udp {
		return
	}
	if c.detached.Load() {
		c.flushDetached()
		return
	}
	b := c.out
	if c.fd >= 0 {
		// What is left: the kernel buffer is full, or the socket is gone.
		w, _ := writeFd(c.fd, b)
		c.s.bytesWritten.Add(uint64(w))
		b = b[w:]
	}
	if len(b) > 0 && c.inline {
		// The poller must not wait for the socket: keep the rest for a
		// goroutine of its own, and run nothing more here.
		c.out = c.out[:copy(c.out, b)]
		c.detachReq = true
		return
	}
	if len(b) > 0 {
		// The client is slow to take its replies: read no more of its
		// requests meanwhile, as memcached does, and wait for room.
		// (netpoll's writer would give up once the client has shut down
		// its side, as one that sends its last requests and then reads
		// its replies does.) netpoll closes the socket only once the
		// handler returns, so it stays this client's.
		c.pauseReading()
		if !c.writeWithin(b) {
			c.closing = true
		}
	}
	c.out = c.out[:0]
}

// flushDetached is flush on a detached goroutine, which netpoll does not
// know is running: netpoll may close the connection under it (the client
// hangs up, the idle sweeper, Shutdown), and its writer may be gone. It
// writes until it is done, the connection is closed, or the write timeout
// passes.
func (c *conn) flushDetached() {
	if !c.writeWithin(c.out) {
		c.closing = true
	}
	c.out = c.out[:0]
}

// writeWithin is writeUnowned for as long as the write timeout, looking
// again at least every 100 ms whether the connection is gone.
func (c *conn) writeWithin(b []byte) bool {
	deadline := time.Now().Add(c.s.cfg.WriteTimeout)
	return c.writeUnowned(b, func() time.Duration { return min(time.Until(deadline), 100*time.Millisecond) })
}

// writeUnowned writes b to the socket from a goroutine netpoll does not
// know about (a detached connection, a watcher), under wmu, so that it stops
// once the close callback has marked the connection gone (the handler uses
// it too, for a socket that is full). When the socket
// is full it waits for room for as long as wait says, and gives up when
// wait says 0 or less. It reports whether all of b was written.
func (c *conn) writeUnowned(b []byte, wait func() time.Duration) bool {
	for len(b) > 0 {
		c.wmu.Lock()
		if c.gone {
			c.wmu.Unlock()
			return false
		}
		w, err := writeFd(c.fd, b)
		c.wmu.Unlock()
		c.s.bytesWritten.Add(uint64(w))
		b = b[w:]
		if err != nil {
			return false
		}
		if len(b) > 0 {
			d := wait()
			if d <= 0 {
				return false
			}
			waitWritable(c.fd, d)
		}
	}
	return true
}

// writeFd writes b to the socket without blocking. It returns how much was
// written, and an error only when the socket is gone (not when its buffer
// is full).
func writeFd(fd int, b []byte) (int, error) {
	w := 0
	for w < len(b) {
		n, err := write(fd, b[w:])
		if n > 0 {
			w += n
			continue
		}
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return w, nil
		case nil:
			return w, syscall.EPIPE // wrote nothing, said nothing: give up
		}
		return w, err
	}
	return w, nil
}

// rawWriteMax is the largest write made without telling the runtime.
const rawWriteMax = 16 << 10

// write is one write(2) on a non-blocking socket. Up to rawWriteMax bytes
// it does not tell the Go runtime that a system call began: the call
// cannot block, and a runtime that knows of it lets sysmon take the
// processor away when the call outlasts a 20 µs tick while no processor
// is idle (a loopback write runs the receiver's TCP path too, and often
// does). That hand-off wakes a thread that finds nothing to do, and keeps
// sysmon waking every 20 µs instead of backing off: 4.4% of an
// unpipelined server's samples in sysmon and 1.9% in futex, 0.6 and 0.1%
// with this (docs/performance.md, nineteenth session). A larger write is a
// long copy, during which the processor is better handed on.
func write(fd int, b []byte) (int, error) {
	if len(b) > rawWriteMax {
		return syscall.Write(fd, b)
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
