package server

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/tandemcache/tandem/protocol"
)

// Replication's part in a connection. A write is applied to the store at
// once (its Observer hands the new state to the peer links); its reply
// goes into out like any other, with a mark (replMark) that says which
// write it waits for. When out is flushed with marks in it, the replies are
// held (held) and the connection's handler returns: the replicator calls
// the connection back (Acked) from the goroutine that reads the peers' acks
// or times them out, and the replies are written from there, in order. No
// goroutine waits per connection, and acks being cumulative, one callback
// answers a whole batch of pipelined requests. Replies that follow a held
// write, reads included, are held behind it, so a reply always means that
// every write before it was acknowledged.

// replMark is where a write's reply sits in out (or held.out), to replace
// it with an error if replication cannot acknowledge it.
type replMark struct {
	start, end int
	seq        uint64 // the stream's head once the write was applied
	silent     bool   // noreply: nothing to answer, even an error
	binary     bool
	opcode     uint8
	opaque     uint32
	meta       bool
	cas        uint64 // a compare-and-swap's new CAS, or 0
}

// held is a connection's replies waiting for the peers' acks. While active,
// the replicator side owns the writing: the handler appends to out and
// never writes the socket itself.
type held struct {
	mu    sync.Mutex
	idle  sync.Cond // active went false, or the connection closed
	out   []byte
	off   int        // out[:off] is written
	sent  uint64     // bytes written from out, for drain's deadline
	marks []replMark // the writes in out not yet acknowledged, in order
	spare []byte
	// active: the replicator side owns the writing. Written under mu; the
	// handler reads it without the lock to skip mu when nothing is held
	// (only the handler sets it, so a false it reads stays false).
	active atomic.Bool
	closed bool
}

// textWrite tells whether a text or meta request changes the store.
func textWrite(r *protocol.Request) bool {
	switch r.Cmd {
	case protocol.CmdSet, protocol.CmdAdd, protocol.CmdReplace, protocol.CmdAppend, protocol.CmdPrepend,
		protocol.CmdCas, protocol.CmdIncr, protocol.CmdDecr, protocol.CmdDelete, protocol.CmdTouch,
		protocol.CmdGat, protocol.CmdGats, protocol.CmdFlushAll,
		protocol.CmdMetaSet, protocol.CmdMetaDelete, protocol.CmdMetaArith:
		return true
	case protocol.CmdMetaGet:
		return r.Meta.HasTTL || r.Meta.Vivify
	}
	return false
}

// binaryWrite tells whether a binary opcode (quiet ones mapped to their
// loud form) changes the store.
func binaryWrite(op uint8) bool {
	switch op {
	case protocol.OpSet, protocol.OpAdd, protocol.OpReplace, protocol.OpAppend, protocol.OpPrepend,
		protocol.OpDelete, protocol.OpIncrement, protocol.OpDecrement,
		protocol.OpTouch, protocol.OpGAT, protocol.OpGATK, protocol.OpFlush:
		return true
	}
	return false
}

// refuseWrite answers a text write with SERVER_ERROR, without running it,
// when replication could not acknowledge it now. A storage command's data
// block is then dropped as it arrives.
func (c *conn) refuseWrite() bool {
	err := c.s.repl.Writable()
	if err == nil {
		return false
	}
	reply := &protocol.ErrorReply{Reply: "SERVER_ERROR " + err.Error()}
	if c.req.Cmd.IsStorage() {
		c.req.SwallowErr = reply
		return true
	}
	if !c.req.NoReply {
		c.out = protocol.AppendLine(c.out, reply.Reply)
	}
	return true
}

// wrote records a write whose reply starts at mark in out: no reply after
// it is written before the peers acknowledge it.
func (c *conn) wrote(mark int, b *binRequest) {
	cas := c.casWrote
	c.casWrote = 0
	// Only meta commands set Meta.Quiet (Parse starts from a zero Request).
	quiet := b != nil && b.quiet || b == nil && c.req.Meta.Quiet
	// A quiet write (meta q, binary ...Q) answers nothing on success but
	// must still hear a failure: its mark is empty, and an error reply is
	// inserted there if need be. A noreply write's mark only holds back the
	// replies after it.
	m := replMark{start: mark, end: len(c.out), seq: c.s.repl.Head(), cas: cas,
		silent: len(c.out) == mark && !quiet}
	if b != nil {
		m.binary, m.opcode, m.opaque = true, b.Opcode, b.Opaque
	} else {
		m.meta = c.req.Cmd == protocol.CmdMetaSet
	}
	c.replMarks = append(c.replMarks, m)
}

// hold is flush's part when replication is on. It reports whether the
// replies were taken to be written once acknowledged; false leaves them to
// be written now.
func (c *conn) hold() bool {
	if c.udp || c.fd < 0 {
		// A datagram is answered in one piece, by its own goroutine.
		if n := len(c.replMarks); n > 0 {
			seq := c.replMarks[n-1].seq
			err := c.s.repl.Wait(seq)
			// held is never used by a socketless connection: its spare is free.
			c.out, c.held.spare = c.settle(c.out, c.replMarks, n, seq, err, c.held.spare)
			c.replMarks = c.replMarks[:0]
		}
		return false
	}
	h := &c.held
	if len(c.replMarks) == 0 && !h.active.Load() {
		return false // nothing waits: the usual write
	}
	h.mu.Lock()
	if len(h.out)+len(c.out) > c.s.maxInput {
		// A client that sends far faster than its writes are acknowledged,
		// or that does not read its replies.
		h.mu.Unlock()
		c.closing = true
		c.out, c.replMarks = c.out[:0], c.replMarks[:0]
		return true
	}
	base := len(h.out)
	for _, m := range c.replMarks {
		m.start += base
		m.end += base
		h.marks = append(h.marks, m)
	}
	c.replMarks = c.replMarks[:0]
	if base == 0 {
		h.out, c.out = c.out, h.out[:0] // no copy in the usual case
	} else {
		h.out = append(h.out, c.out...)
		c.out = c.out[:0]
	}
	if h.active.Load() {
		// The replicator side is on it: it goes on to these marks once the
		// ones before them are acknowledged.
		h.mu.Unlock()
		return true
	}
	h.active.Store(true)
	if c.advanceLocked(0, nil) {
		go c.drain()
	}
	return true
}

// throttle holds back a connection that just wrote while the peers are far
// behind the writes (Replicator.Throttle): its replies so far are flushed
// (held for their acks) and its reading is paused meanwhile, so that the
// client waits in TCP rather than in our buffers. It is checked after every
// write, not every batch: one batch may hold a MiB of sets, more than the
// links' whole bound on a small one.
func (c *conn) throttle() {
	if c.udp {
		return // a datagram waits for its acks anyway
	}
	c.flush()
	if c.closing {
		return // past the input bound (hold): closed at once, not after a wait
	}
	c.pauseReading()
	c.s.repl.Throttle()
}

// Acked is called by the replicator once the writes up to seq are decided.
func (c *conn) Acked(seq uint64, err error) {
	if c.advance(seq, err) {
		go c.drain()
	}
}

// advance settles the held writes up to seq (decided with err), writes the
// replies that no longer wait, and waits for the next held write, until
// none is left. Only one goroutine advances a connection at a time: the
// handler that made it active, then whoever the replicator calls back. It
// reports true when the socket is full: the caller must start drain.
func (c *conn) advance(seq uint64, err error) (stuck bool) {
	c.held.mu.Lock()
	return c.advanceLocked(seq, err)
}

// advanceLocked is advance with c.held.mu held; it releases it.
func (c *conn) advanceLocked(seq uint64, err error) (stuck bool) {
	h := &c.held
	for {
		if h.closed {
			h.mu.Unlock()
			return false
		}
		n := 0
		for n < len(h.marks) && h.marks[n].seq <= seq {
			n++
		}
		if n > 0 {
			h.out, h.spare = c.settle(h.out, h.marks, n, seq, err, h.spare)
			h.marks = h.marks[:copy(h.marks, h.marks[n:])]
		}
		ready := len(h.out)
		if len(h.marks) > 0 {
			ready = h.marks[0].start
		}
		if ready > h.off {
			w, err := writeFd(c.fd, h.out[h.off:ready])
			c.s.bytesWritten.Add(uint64(w))
			h.off += w
			h.sent += uint64(w)
			if err != nil {
				// The client is gone: what it would have read goes with it.
				c.dropLocked()
				h.mu.Unlock()
				c.nc.Close()
				return false
			}
			stuck := h.off < ready
			h.compact()
			if stuck {
				h.mu.Unlock()
				return true
			}
		}
		if len(h.marks) == 0 {
			c.release()
			h.mu.Unlock()
			return false
		}
		next := h.marks[len(h.marks)-1].seq
		h.mu.Unlock()
		done, e := c.s.repl.Await(next, c)
		if !done {
			return false // Acked goes on
		}
		seq, err = next, e
		h.mu.Lock()
	}
}

// drain writes held replies to a client whose socket buffer is full, as
// memcached waits for a slow reader: off the replicator's goroutine. A
// client that takes nothing for the write timeout is dropped, with its
// held replies.
func (c *conn) drain() {
	h := &c.held
	deadline := time.Now().Add(c.s.cfg.WriteTimeout)
	for {
		h.mu.Lock()
		sent := h.sent
		h.mu.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			h.mu.Lock()
			c.dropLocked() // a handler in waitHeld goes on to close
			h.mu.Unlock()
			c.nc.Close()
			return
		}
		waitWritable(c.fd, min(left, 100*time.Millisecond))
		if !c.advance(0, nil) {
			return
		}
		h.mu.Lock()
		if h.sent != sent {
			deadline = time.Now().Add(c.s.cfg.WriteTimeout)
		}
		h.mu.Unlock()
	}
}

// waitHeld returns once no reply is held (or the connection closed): a
// connection about to close first writes the replies it owes.
func (c *conn) waitHeld() {
	h := &c.held
	h.mu.Lock()
	for h.active.Load() && !h.closed {
		h.idle.Wait()
	}
	h.mu.Unlock()
}

// compact drops the written part of out once it is all of it, or half of
// a large one: a slow reader's replies are not moved on every write.
func (h *held) compact() {
	if h.off == 0 || h.off < len(h.out) && (h.off < 64<<10 || h.off < len(h.out)/2) {
		return
	}
	h.out = h.out[:copy(h.out, h.out[h.off:])]
	for i := range h.marks {
		h.marks[i].start -= h.off
		h.marks[i].end -= h.off
	}
	h.off = 0
}

// release ends the replicator side's turn: nothing is held. h.mu held.
func (c *conn) release() {
	c.held.active.Store(false)
	c.held.idle.Broadcast()
}

// dropHeld drops the held replies of a connection being closed. netpoll
// runs it before it closes the socket, so no held reply is written to a
// reused descriptor.
func (c *conn) dropHeld() {
	h := &c.held
	h.mu.Lock()
	c.dropLocked()
	h.closed = true
	h.out, h.marks, h.spare = nil, nil, nil
	h.mu.Unlock()
}

// dropLocked forgets the held replies and ends the turn. h.mu held.
func (c *conn) dropLocked() {
	h := &c.held
	h.out, h.marks, h.off = h.out[:0], h.marks[:0], 0
	if h.active.Load() {
		c.release()
	}
}

// settle rewrites the replies of the writes at marks[:n], decided up to seq
// with err, in out; marks[n:] follow them. The error of the newest write
// need not be the older ones': those the ack rule was met for when it
// failed stand. A connection and a UDP datagram settle alike.
func (c *conn) settle(out []byte, marks []replMark, n int, seq uint64, err error, spare []byte) ([]byte, []byte) {
	k := 0
	if err != nil {
		for k < n && marks[k].seq < seq && c.s.repl.Met(marks[k].seq) {
			k++
		}
		out, spare = c.rewrite(out, marks[:k], marks[k:], nil, spare)
	}
	return c.rewrite(out, marks[k:n], marks[n:], err, spare)
}

// rewrite replaces the replies of the writes at marks (decided with err)
// that cannot stand: with the replication error, or (err nil) with EXISTS
// for a compare-and-swap a peer overruled (the same token used on another
// node at the same moment, and that write won), so that one token succeeds
// once. rest are the marks after them, moved by the change in length. The
// result is built in spare, and out returned as the new spare, only when a
// reply changes.
func (c *conn) rewrite(out []byte, marks, rest []replMark, err error, spare []byte) (newOut, newSpare []byte) {
	o, prev, changed := spare[:0], 0, false
	for _, m := range marks {
		if m.silent || err == nil && (m.cas == 0 || !c.s.repl.Overruled(m.cas)) {
			continue
		}
		o = append(o, out[prev:m.start]...)
		o = appendReplaced(o, out, &m, err)
		prev, changed = m.end, true
	}
	if !changed {
		return out, spare
	}
	shift := len(o) - prev
	o = append(o, out[prev:]...)
	for i := range rest {
		rest[i].start += shift
		rest[i].end += shift
	}
	return o, out[:0]
}

// appendReplaced appends what the write at m answers instead of its reply
// in out: the replication error, or (err nil) EXISTS for an overruled CAS.
func appendReplaced(o, out []byte, m *replMark, err error) []byte {
	switch {
	case err != nil && m.binary:
		return protocol.AppendBinaryError(o, m.opcode, protocol.StatusTempFailure, m.opaque, err.Error())
	case err != nil:
		return protocol.AppendLine(o, "SERVER_ERROR "+err.Error())
	case m.binary:
		return protocol.AppendBinaryError(o, m.opcode, protocol.StatusKeyExists, m.opaque,
			protocol.StatusText(protocol.StatusKeyExists))
	case m.meta && m.start == m.end:
		return protocol.AppendLine(o, "EX") // quiet: no flags were written to keep
	case m.meta:
		// Keep the flags the client asked back (O, k, ...): only the code changes.
		return append(append(o, "EX"...), out[m.start+2:m.end]...)
	}
	return protocol.AppendLine(o, "EXISTS")
}

// waitWritable blocks until fd can take more bytes, or for at most d. The
// descriptor may have been closed meanwhile: the caller checks under the
// lock that closing takes before writing.
func waitWritable(fd int, d time.Duration) {
	pfd := struct {
		fd             int32
		events, revent int16
	}{fd: int32(fd), events: 0x4} // POLLOUT
	ts := syscall.NsecToTimespec(d.Nanoseconds())
	_, _, _ = syscall.Syscall6(syscall.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd)), 1,
		uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
}
