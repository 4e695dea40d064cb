package replication

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/tandemcache/tandem/store"
)

// A link's states.
const (
	stateConnecting int32 = iota // no connection: dialling, with backoff
	stateResyncing               // connected, sending the store; not counted for all
	stateInSync                  // holds every write acked so far; all waits for it
	stateOutOfSync               // connected but missed the timeout; counted again once caught up
)

var stateNames = [...]string{"connecting", "resyncing", "in_sync", "out_of_sync"}

const (
	// handshakeTimeout bounds dialling and the handshake: a peer that is
	// stopped accepts the connection in its kernel but never answers.
	handshakeTimeout = 2 * time.Second
	// backoffMin and backoffMax bound the wait between dials: short enough
	// that a restarted peer is back within a fraction of a second, long
	// enough that a dead one costs nothing.
	backoffMin = 50 * time.Millisecond
	backoffMax = 2 * time.Second
	// stableLink is how long a connection must have served for the next
	// dial to go at once; one that died sooner counts as a failed dial.
	stableLink = 5 * time.Second
	// resyncChunk: a resync adds a shard's items to the link only when
	// less than this is waiting, so that it never crowds out live writes
	// or fills memory.
	resyncChunk = 1 << 20
)

// link is the outbound pipeline to one peer: writes go out on it, acks come
// back. One goroutine writes (run), one reads acks (readAcks), and during
// a resync one more walks the store.
type link struct {
	r    *Replicator
	addr string

	streaming bool // frames are pushed to it; guarded by r.mu

	mu      sync.Mutex
	cond    *sync.Cond // writer drained buf, or the connection died
	buf     []byte     // frames not yet written
	spare   []byte
	lastSeq uint64 // highest sequence pushed
	marker  uint64 // sequence of the current resync's mark
	marking bool   // the mark is sent
	catchUp uint64 // out of sync: in sync again once this sequence is acked
	// resyncBytes is how much of buf a resync put there.
	resyncBytes int
	takenResync int             // how much of the write in flight (take's) a resync put there
	dead        bool            // the current connection is finished
	writing     bool            // frames taken from buf are being written (take, send)
	raw         syscall.RawConn // conn's descriptor, for kick's writes
	since       time.Duration   // since r.epoch: when buf last became non-empty
	conn        net.Conn
	peer        string                  // the peer's node id
	peerNum     uint16                  // and its node number
	diedAt      time.Duration           // since r.epoch: when a connection last ended (orphans.go)
	sent        []sentMark              // batches written, not yet acked
	lat         *hdrhistogram.Histogram // ack latency, microseconds
	wake        chan struct{}
	redial      chan struct{} // dial now: the peer is back (warmup.go)

	// everUp: a dial has succeeded; dialFailed: one failed before any did
	// (the peer was down when this node started, so it cannot refill it).
	everUp, dialFailed atomic.Bool

	state    atomic.Int32
	ackedSeq atomic.Uint64
	// behind: more than the window of live frames waits unsent, so the
	// connections that write wait (Replicator.Throttle). Set under mu,
	// read without it. moved is when the writer last took or finished a
	// write (since r.epoch): a link whose writer is stuck holds no one
	// back past the timeout.
	behind atomic.Bool
	moved  atomic.Int64

	reconnects, timeouts, resyncs, overflows atomic.Uint64

	// A kick's write in progress (whoever set writing owns them): kept
	// here, with the function handed to raw.Write made once, so that a
	// kick allocates nothing.
	kickOut []byte
	kickN   int
	kickErr error
	kickFn  func(fd uintptr) bool
}

type sentMark struct {
	seq uint64
	at  time.Time
}

func newLink(r *Replicator, addr string) *link {
	l := &link{r: r, addr: addr, wake: make(chan struct{}, 1), redial: make(chan struct{}, 1),
		lat: hdrhistogram.New(1, 60_000_000, 3)}
	l.cond = sync.NewCond(&l.mu)
	l.kickFn = l.kickWrite
	return l
}

func (l *link) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// push appends a frame to the link. r.mu is held (the stream's order).
func (l *link) push(hdr []byte, f *frame, it store.Item) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return
	}
	// A resync's share of the buffer does not count: one shard of a
	// very large cache may exceed the cap on its own.
	if len(l.buf)-l.resyncBytes+len(hdr)+int(f.VLen) > l.r.cfg.MaxPending {
		// The peer takes writes slower than they come: rather than
		// buffer without end (or block the write path), drop the link;
		// the peer is refilled by a resync when it is back.
		l.overflows.Add(1)
		l.dieLocked(fmt.Errorf("more than %d bytes waiting", l.r.cfg.MaxPending))
		return
	}
	l.stamp()
	l.buf = append(l.buf, hdr...)
	if f.VLen > 0 {
		l.buf = it.AppendValue(l.buf)
	}
	l.lastSeq = f.Seq
	l.checkBehind()
	l.signal()
}

// checkBehind sets behind once the live frames waiting pass the window, and
// clears it (waking the throttled writers) once they are taken. l.mu held.
func (l *link) checkBehind() {
	over := !l.dead && len(l.buf)-l.resyncBytes > l.r.window
	if over == l.behind.Load() {
		return
	}
	l.behind.Store(over)
	if over {
		l.r.nBehind.Add(1)
	} else {
		l.r.nBehind.Add(-1)
		l.r.relieve()
	}
}

// markMoved notes that the writer took or finished a write (behind).
func (l *link) markMoved() { l.moved.Store(int64(time.Since(l.r.epoch))) }

// stamp notes when buf, about to get a frame, became non-empty: how long
// its oldest frame has waited is what kick looks at. l.mu held.
func (l *link) stamp() {
	if len(l.buf) == 0 {
		l.since = time.Since(l.r.epoch)
	}
}

// die ends the current connection; run dials again.
func (l *link) die(err error) {
	l.mu.Lock()
	l.dieLocked(err)
	l.mu.Unlock()
}

func (l *link) dieLocked(err error) {
	if l.dead {
		return
	}
	l.dead = true
	l.diedAt = time.Since(l.r.epoch)
	l.checkBehind() // a dead link is waited for no more
	if l.conn != nil {
		l.conn.Close()
	}
	l.r.logf("peer %s: link closed: %v", l.addr, err)
	l.cond.Broadcast()
	l.signal()
}

// kill ends the link for good (Close), a handshake in progress included.
func (l *link) kill() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dieLocked(errors.New("shutting down"))
	if l.conn != nil {
		l.conn.Close() // dead already: a redial's handshake
	}
}

// run dials the peer and serves the link until the replicator closes.
func (l *link) run() {
	defer l.r.wg.Done()
	backoff := backoffMin
	last := "" // the failure logged last: not repeated every backoff
	for l.r.ctx.Err() == nil {
		conn, br, peer, num, err := l.dial()
		if err != nil {
			if !l.everUp.Load() {
				l.dialFailed.Store(true)
			}
			if msg := err.Error(); msg != last {
				l.r.logf("peer %s: %v (retrying)", l.addr, msg)
				last = msg
			}
		} else {
			last = ""
			l.everUp.Store(true)
			began := time.Now()
			l.serve(conn, br, peer, num)
			l.reconnects.Add(1)
			if time.Since(began) >= stableLink {
				backoff = backoffMin
				continue
			}
			// A connection that died soon after it was made (a peer that
			// refuses what it is sent, a decode error on either end)
			// counts as a failed dial: made again at once, it would be
			// resynced in a loop.
		}
		l.r.pause(backoff, l.redial) // the loop ends if it closed; redial: the peer is back
		backoff = min(backoff*2, backoffMax)
	}
}

// serve runs one connection: it starts the stream and a resync, then
// writes what is pushed until the connection dies.
func (l *link) serve(conn net.Conn, br *bufio.Reader, peer string, num uint16) {
	l.r.logf("peer %s (%s): connected, resyncing", l.addr, peer)
	var raw syscall.RawConn
	if sc, ok := conn.(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	}
	l.mu.Lock()
	l.conn, l.raw, l.peer, l.peerNum, l.dead = conn, raw, peer, num, false
	l.buf, l.sent, l.marker, l.marking, l.resyncBytes = l.buf[:0], l.sent[:0], 0, false, 0
	l.checkBehind()
	l.markMoved()
	l.mu.Unlock()
	l.ackedSeq.Store(0)
	l.state.Store(stateResyncing)
	l.r.mu.Lock()
	l.streaming = true
	l.r.mu.Unlock()
	if l.r.ctx.Err() != nil {
		l.die(errors.New("shutting down"))
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.readAcks(br) }()
	go func() { defer wg.Done(); l.resync() }()
	l.write(conn)

	l.r.mu.Lock()
	l.streaming = false
	l.r.mu.Unlock()
	l.mu.Lock()
	l.buf, l.resyncBytes = l.buf[:0], 0
	l.mu.Unlock()
	wg.Wait()
	l.state.Store(stateConnecting)
	l.r.recheck() // waiters stop counting on this peer
}

// write is the writer: it sends whatever was pushed, all of it in one
// write, until the connection dies.
func (l *link) write(conn net.Conn) {
	for {
		select {
		case <-l.wake:
		case <-l.r.ctx.Done():
			l.die(errors.New("shutting down"))
		}
		// Let the writers that are running push too before taking the
		// buffer: a batch of many frames costs the same syscall as one.
		runtime.Gosched()
		b, dead := l.take(0)
		if dead {
			return
		}
		if b == nil {
			continue // empty, or a kick is writing
		}
		if err := l.send(conn, b); err != nil {
			l.die(fmt.Errorf("write: %w", err))
			return
		}
	}
}

// overdue is how long pushed frames may wait for the writer goroutine
// before the goroutine of a connection that waits for them writes them
// itself (kick). Once runnable, the writer waits for a P behind netpoll's
// handler goroutines, which run one connection after another without
// yielding: traced under a pipelined load, it spent two thirds of the time
// runnable, 41 µs at the median and 0.8 ms at p99, while the peer sat idle
// for want of frames. Writing at every handler's end instead makes
// batches too small (a loopback write costs 5–10 µs on each side); 0.3–0.6
// ms measured best (docs/performance.md, ninth session).
const overdue = 400 * time.Microsecond

// kick writes the frames that have waited past overdue on a link whose
// writer has not taken them, from the calling goroutine. It never blocks:
// it may run on the goroutine that reads another peer's acks or on the
// timeout sweeper, which must not wait for a slow peer. What the socket
// does not take at once goes back to the writer.
func (r *Replicator) kick() {
	for _, l := range r.links {
		if b, _ := l.take(overdue); b != nil {
			l.sendNow(b)
		}
	}
}

// take takes the frames pushed so far, to be written by the caller (send,
// sendNow), unless a write is in flight or the oldest of them is younger
// than wait. A kick (wait > 0) needs the raw descriptor. It reports dead
// once the connection is finished.
func (l *link) take(wait time.Duration) (b []byte, dead bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return nil, true
	}
	if l.writing || len(l.buf) == 0 || wait > 0 && (l.raw == nil || time.Since(l.r.epoch)-l.since < wait) {
		return nil, false
	}
	b = l.buf
	l.takenResync, l.resyncBytes = l.resyncBytes, 0
	l.markMoved()
	l.buf, l.spare = l.spare[:0], nil
	l.sent = append(l.sent, sentMark{seq: l.lastSeq, at: time.Now()})
	l.writing = true
	l.checkBehind()
	l.cond.Broadcast() // a resync waits for room
	return b, false
}

// sendNow writes what the socket takes of b without waiting, puts the rest
// back in front of what was pushed meanwhile, and ends the write.
func (l *link) sendNow(b []byte) {
	l.kickOut, l.kickN, l.kickErr = b, 0, nil
	err := l.raw.Write(l.kickFn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The deadline of the writer's last send, past by now: a kick
		// that came later than that is refused before it writes
		// anything, and the link was dropped for it under a load whose
		// writes all went out by kicks. The writer sets a new one.
		err = nil
	}
	if err == nil {
		err = l.kickErr
	}
	// The kick fields are this write's until finish ends it: the next
	// kick may set them as soon as it has.
	n := l.kickN
	l.kickOut = nil
	l.finish(b, n)
	if err != nil {
		l.die(fmt.Errorf("write: %w", err))
	}
}

// kickWrite is sendNow's write: as much of kickOut as the socket takes now.
func (l *link) kickWrite(fd uintptr) bool {
	for l.kickN < len(l.kickOut) {
		n, err := syscall.Write(int(fd), l.kickOut[l.kickN:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			l.kickErr = err
			return true
		}
		l.kickN += n
	}
	return true // done either way: raw.Write must not wait for room
}

// send writes frames take returned and ends that write.
func (l *link) send(conn net.Conn, b []byte) error {
	// A peer that stops reading (SIGSTOP) must not hold the writer
	// for ever: past the deadline the link is dropped.
	_ = conn.SetWriteDeadline(time.Now().Add(l.r.writeTimeout()))
	n, err := conn.Write(b)
	l.finish(b, n)
	return err
}

// finish ends the write of b taken by take, of which n bytes went out. The
// rest (a full socket, or a failed write on a link about to be dropped)
// goes back in front of what was pushed meanwhile; anything waiting is the
// writer's, which may have skipped its turn during the write.
func (l *link) finish(b []byte, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writing = false
	l.markMoved()
	if n < len(b) {
		rest := b[:copy(b, b[n:])]
		l.buf, l.spare = append(rest, l.buf...), l.buf[:0]
		// Where in b the resync's frames were is not known: the rest is
		// counted as theirs first, so that what goes back never makes
		// the live frames look more than they are (a resync of a shard
		// larger than MaxPending would otherwise overflow its own link).
		l.resyncBytes += min(l.takenResync, len(rest))
		l.checkBehind()
	} else if l.spare == nil {
		l.spare = b[:0]
	}
	if len(l.buf) > 0 {
		l.signal()
	}
}

// readAcks completes writes as the peer acks them, in order.
func (l *link) readAcks(br *bufio.Reader) {
	c := newCodecs()
	var f frame
	var buf []byte
	for {
		var err error
		f = frame{}
		buf, err = c.readMsg(br, buf, maxHeader, &f)
		if err != nil {
			l.die(fmt.Errorf("read: %w", err))
			return
		}
		switch f.Op {
		case opAck:
			l.ack(f.Seq)
		case opNack:
			l.r.overrule(f.CAS)
		case opMark:
			l.mu.Lock()
			done := l.marking && f.Seq == l.marker
			l.completeLocked(f.Seq, time.Now())
			l.mu.Unlock()
			if done && l.state.CompareAndSwap(stateResyncing, stateInSync) {
				l.r.logf("peer %s: resync done, in sync", l.addr)
				l.r.acked()
			}
		default:
			l.die(fmt.Errorf("%w: op %d from a peer", errFrame, f.Op))
			return
		}
	}
}

func (l *link) ack(seq uint64) {
	if seq <= l.ackedSeq.Load() {
		return
	}
	l.ackedSeq.Store(seq)
	l.mu.Lock()
	l.completeLocked(seq, time.Now())
	caughtUp := seq >= l.catchUp
	l.mu.Unlock()
	if caughtUp && l.state.CompareAndSwap(stateOutOfSync, stateInSync) {
		l.r.logf("peer %s: caught up, in sync", l.addr)
	}
	l.r.acked()
}

// counted is the link's ack as quorum may count it: a link still resyncing
// holds only the writes streamed since it connected, not the older ones
// its resync has yet to send, so its acks count once its mark is back.
func (l *link) counted() uint64 {
	switch l.state.Load() {
	case stateInSync, stateOutOfSync:
		return l.ackedSeq.Load()
	}
	return 0
}

// markOutOfSync moves an in-sync link that has not acked seq out of sync
// after a timeout. It comes back once it has acked everything pushed so
// far: its stream is complete and in order, so that is all it lacks.
func (l *link) markOutOfSync(seq uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ackedSeq.Load() >= seq || !l.state.CompareAndSwap(stateInSync, stateOutOfSync) {
		return false
	}
	l.catchUp = l.lastSeq
	return true
}

// completeLocked records the ack latency of the batches up to seq. l.mu held.
func (l *link) completeLocked(seq uint64, now time.Time) {
	i := 0
	for i < len(l.sent) && l.sent[i].seq <= seq {
		_ = l.lat.RecordValue(now.Sub(l.sent[i].at).Microseconds())
		i++
	}
	l.sent = l.sent[:copy(l.sent, l.sent[i:])]
}

// resync sends every item of the store, a shard at a time, then a mark.
// Live writes flow meanwhile; the peer keeps whichever state of a key has
// the higher CAS, so the order in which the two arrive does not matter.
func (l *link) resync() {
	l.resyncs.Add(1)
	var local []byte
	st := l.r.st
	// First what flush_all decided, so that a peer that missed a flush
	// drops the same items (both frames are idempotent).
	if pending, cas := st.FlushState(); cas != 0 || pending != 0 {
		local = appendFlushState(local, pending, cas)
		if !l.pushResync(local) {
			return
		}
	}
	for p := 0; p < st.Parts(); p++ {
		// Tombstones too: a peer that kept its memory while away must
		// drop what was deleted meanwhile.
		local, _ = appendPart(local[:0], st, p, nil)
		if !l.pushResync(local) {
			return
		}
	}
	l.r.mu.Lock()
	l.mu.Lock()
	if !l.dead {
		l.marker, l.marking = l.r.seq, true
		l.buf = appendFrame(l.buf, &frame{Op: opMark, Seq: l.marker})
		l.lastSeq = max(l.lastSeq, l.r.seq)
		l.signal()
	}
	l.mu.Unlock()
	l.r.mu.Unlock()
}

// appendPart appends the frames of part p of the store: its tombstones and
// its live items, those whose CAS keep accepts (all when keep is nil). It
// also returns how many it appended.
func appendPart(b []byte, st *store.Store, p int, keep func(cas uint64) bool) ([]byte, int) {
	n := 0
	st.ForEachTomb(p, func(key []byte, cas uint64) {
		if keep == nil || keep(cas) {
			b = appendFrame(b, &frame{Op: opDel, Key: key, CAS: cas})
			n++
		}
	})
	st.ForEach(p, func(it store.Item) {
		if keep == nil || keep(it.CAS) {
			f := itemFrame(it)
			b = appendFrame(b, &f)
			b = it.AppendValue(b)
			n++
		}
	})
	return b, n
}

// appendFlushState appends the frames that carry what flush_all decided.
func appendFlushState(b []byte, pending int64, cas uint64) []byte {
	if cas != 0 {
		b = appendFrame(b, &frame{Op: opFlush, CAS: cas})
	}
	if pending != 0 {
		b = appendFrame(b, &frame{Op: opFlush, Exp: pending})
	}
	return b
}

// pushResync adds frames of a resync to the link once less than
// resyncChunk is waiting. It reports false if the connection died.
func (l *link) pushResync(frames []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for len(l.buf) > resyncChunk && !l.dead {
		l.cond.Wait()
	}
	if l.dead {
		return false
	}
	l.stamp()
	l.buf = append(l.buf, frames...)
	l.resyncBytes += len(frames)
	l.signal()
	return true
}

// dial connects to the peer and runs the dialer's side of the handshake.
func (l *link) dial() (net.Conn, *bufio.Reader, string, uint16, error) {
	r := l.r
	d := net.Dialer{Timeout: handshakeTimeout}
	conn, err := d.DialContext(r.ctx, "tcp", l.addr)
	if err != nil {
		return nil, nil, "", 0, err
	}
	l.mu.Lock()
	l.conn = conn // so that Close interrupts a stuck handshake
	l.mu.Unlock()
	if r.ctx.Err() != nil { // Close ran before l.conn was set
		conn.Close()
		return nil, nil, "", 0, r.ctx.Err()
	}
	peer, num, br, err := r.dialHandshake(conn)
	if err != nil {
		conn.Close()
		return nil, nil, "", 0, fmt.Errorf("handshake: %w", err)
	}
	return conn, br, peer, num, nil
}

func (r *Replicator) dialHandshake(conn net.Conn) (string, uint16, *bufio.Reader, error) {
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	br := bufio.NewReaderSize(conn, 4096)
	c := newCodecs()
	mine := make([]byte, nonceLen)
	_, _ = rand.Read(mine)
	out := c.appendMsg(nil, &hello{Magic: magic, Version: version, Node: r.cfg.NodeID,
		Group: r.cfg.Group, NodeNum: r.node, Nonce: mine})
	if _, err := conn.Write(out); err != nil {
		return "", 0, nil, err
	}
	var h hello
	if _, err := c.readMsg(br, nil, maxHello, &h); err != nil {
		return "", 0, nil, err
	}
	switch {
	case h.Err != "":
		return "", 0, nil, fmt.Errorf("refused by peer: %s", h.Err)
	case h.Magic != magic || h.Version != version:
		return "", 0, nil, fmt.Errorf("not a tandem replication port of version %d (magic %q, version %d)", version, h.Magic, h.Version)
	case !bytes.Equal(h.Proof, proof(r.cfg.Secret, "listener", h.Nonce, mine)):
		return "", 0, nil, errors.New("peer cannot prove the shared secret")
	}
	out = c.appendMsg(out[:0], &hello{Proof: proof(r.cfg.Secret, "dialer", h.Nonce, mine)})
	if _, err := conn.Write(out); err != nil {
		return "", 0, nil, err
	}
	var ok hello
	if _, err := c.readMsg(br, nil, maxHello, &ok); err != nil {
		return "", 0, nil, err
	}
	if ok.Err != "" {
		return "", 0, nil, fmt.Errorf("refused by peer: %s", ok.Err)
	}
	_ = conn.SetDeadline(time.Time{})
	return h.Node, h.NodeNum, br, nil
}
