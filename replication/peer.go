package replication

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/tandemcache/tandem/store"
)

// inbound is the receiving side of a peer's link: it applies the peer's
// frames to the store and acks them.
type inbound struct {
	node    string
	remote  string
	lastSeq atomic.Uint64
}

// accept serves the replication port.
func (r *Replicator) accept() {
	defer r.wg.Done()
	backoff := time.Duration(0)
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			// Out of file descriptors, or another passing failure: keep
			// the port open, as net/http does, or peers could never
			// reconnect to this node.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			r.logf("accept: %v (retrying in %v)", err, backoff)
			if !r.pause(backoff, nil) {
				return
			}
			continue
		}
		backoff = 0
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serveInbound(conn)
		}()
	}
}

// pause waits for d, or less if wake (which may be nil) is signalled or
// the replicator closes: then it reports false.
func (r *Replicator) pause(d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wake:
		return true
	case <-r.ctx.Done():
		return false
	}
}

func (r *Replicator) serveInbound(conn net.Conn) {
	in := &inbound{remote: conn.RemoteAddr().String()}
	r.inMu.Lock()
	if r.ctx.Err() != nil {
		r.inMu.Unlock()
		conn.Close()
		return
	}
	r.inbound[conn] = in
	r.inMu.Unlock()
	defer func() {
		r.inMu.Lock()
		delete(r.inbound, conn)
		r.inMu.Unlock()
		conn.Close()
	}()
	br := bufio.NewReaderSize(conn, 64<<10)
	c := newCodecs()
	node, num, err := r.listenHandshake(conn, br, c)
	if err != nil {
		r.badLinks.Add(1)
		r.logf("refused %s: %v", in.remote, err)
		return
	}
	r.inMu.Lock() // Stats reads it
	in.node = node
	r.inboundAt[num] = time.Since(r.epoch)
	r.inMu.Unlock()
	r.logf("peer %s (%s) connected", in.remote, node)
	r.redial() // it is back: refill it now, not after our backoff
	if err := r.receive(conn, br, c, in); err != nil && !errors.Is(err, io.EOF) && r.ctx.Err() == nil {
		if errors.Is(err, errFrame) {
			r.badLinks.Add(1)
		}
		r.logf("peer %s (%s): %v", in.remote, node, err)
	}
	r.lost(num, node) // the other peers may lack some of its writes (orphans.go)
}

// listenHandshake is the listener's side of the handshake: it checks who
// dials and that it knows the secret, and proves that it knows it too.
func (r *Replicator) listenHandshake(conn net.Conn, br *bufio.Reader, c *codecs) (string, uint16, error) {
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	refuse := func(msg string) error {
		_, _ = conn.Write(c.appendMsg(nil, &hello{Err: msg}))
		return errors.New(msg)
	}
	var h hello
	if _, err := c.readMsg(br, nil, maxHello, &h); err != nil {
		return "", 0, err
	}
	switch {
	case h.Magic != magic:
		return "", 0, fmt.Errorf("not a tandem peer (magic %q)", h.Magic)
	case h.Version != version:
		return "", 0, refuse(fmt.Sprintf("wire version %d is not %d", h.Version, version))
	case h.Group != r.cfg.Group:
		return "", 0, refuse(fmt.Sprintf("group %q is not %q", h.Group, r.cfg.Group))
	case h.NodeNum == r.node:
		return "", 0, refuse(fmt.Sprintf("node ids %q and %q share the CAS node number %d: give one another --node-id", h.Node, r.cfg.NodeID, r.node))
	case len(h.Nonce) != nonceLen:
		return "", 0, refuse("bad nonce")
	}
	mine := make([]byte, nonceLen)
	_, _ = rand.Read(mine)
	out := c.appendMsg(nil, &hello{Magic: magic, Version: version, Node: r.cfg.NodeID, Group: r.cfg.Group,
		NodeNum: r.node, Nonce: mine, Proof: proof(r.cfg.Secret, "listener", mine, h.Nonce)})
	if _, err := conn.Write(out); err != nil {
		return "", 0, err
	}
	var p hello
	if _, err := c.readMsg(br, nil, maxHello, &p); err != nil {
		return "", 0, err
	}
	if !bytes.Equal(p.Proof, proof(r.cfg.Secret, "dialer", mine, h.Nonce)) {
		return "", 0, refuse("wrong shared secret")
	}
	if _, err := conn.Write(c.appendMsg(out[:0], &hello{})); err != nil {
		return "", 0, err
	}
	_ = conn.SetDeadline(time.Time{})
	return h.Node, h.NodeNum, nil
}

// ackEvery bounds the frames applied between two acks.
const ackEvery = 64

// receiver is the state of one inbound link while it applies frames.
type receiver struct {
	r       *Replicator
	conn    net.Conn
	in      *inbound
	marked  bool // the peer's resync of this node is complete
	out     []byte
	nack    []byte // nacks not yet sent
	lastSeq uint64
	acked   uint64
	unacked int // frames applied since the last ack
	// A batch of frames decoded where they lie in the read buffer, so that
	// their index slots and items can be prefetched before any is applied:
	// the lookups' cache misses were 40% of a peer's CPU.
	batch [store.PrefetchMax]frame
	vals  [store.PrefetchMax][]byte
	keys  [store.PrefetchMax][]byte
}

// receive applies frames until the link ends, acking whenever it has
// caught up with what was sent: one ack covers a whole batch.
func (r *Replicator) receive(conn net.Conn, br *bufio.Reader, c *codecs, in *inbound) error {
	var (
		f       frame
		hdr     []byte
		val     []byte
		itemMax = r.st.ItemSizeMax()
		err     error
	)
	rc := &receiver{r: r, conn: conn, in: in}
	for {
		buffered, _ := br.Peek(br.Buffered())
		if n, used := rc.peekBatch(buffered, itemMax, max(ackEvery-rc.unacked, 1)); n > 0 {
			if n > 1 {
				r.st.Prefetch(rc.keys[:n])
			}
			for i := range n {
				if err := rc.apply(&rc.batch[i], rc.vals[i]); err != nil {
					return err
				}
			}
			_, _ = br.Discard(used) // the values lay in the buffer until now
			rc.progress()
			if err := rc.ackIf(br.Buffered() == 0, nil); err != nil {
				return err
			}
			continue
		}
		// Anything else, one frame at a time: a frame not wholly buffered,
		// a mark or a flush, and any frame in error, which ends the link.
		f = frame{Key: f.Key[:0]} // a short array must not inherit the last frame's fields; the key's buffer is reused
		hdr, err = c.readMsg(br, hdr, maxHeader, &f)
		if err != nil {
			return err
		}
		if err := checkFrame(&f, itemMax); err != nil {
			return err
		}
		if f.Op == opSet {
			if cap(val) < int(f.VLen) {
				val = make([]byte, f.VLen)
			}
			val = val[:f.VLen]
			if _, err := io.ReadFull(br, val); err != nil {
				return err
			}
		}
		if err := rc.apply(&f, val); err != nil {
			return err
		}
		var mark *frame
		if f.Op == opMark {
			mark = &f
			if !rc.marked {
				rc.marked = true
				r.noteRefilled(in.node)
			}
		}
		rc.progress()
		if err := rc.ackIf(br.Buffered() == 0, mark); err != nil {
			return err
		}
	}
}

// progress tells a warming node (WaitRefilled) that its refill by this
// peer is moving.
func (rc *receiver) progress() {
	if !rc.marked && rc.r.warming.Load() {
		rc.r.refillMoved.Store(int64(time.Since(rc.r.epoch)))
	}
}

// peekBatch decodes up to limit (at most PrefetchMax) sets and deletions
// that lie whole in b, the read buffer, without consuming them: it returns
// how many, and the bytes they take. It stops at anything else, which the caller reads alone
// (FuzzPeekBatch checks that both ways read the same frames).
func (rc *receiver) peekBatch(b []byte, itemMax, limit int) (n, used int) {
	for n < min(limit, len(rc.batch)) && len(b)-used >= 4 {
		l32 := binary.BigEndian.Uint32(b[used:])
		if !msgLenOK(l32, maxHeader) || uint64(len(b)-used-4) < uint64(l32) {
			break
		}
		l := int(l32)
		f := &rc.batch[n]
		*f = frame{Key: f.Key[:0]}
		if !decodeFrame(b[used+4:used+4+l], f) || (f.Op != opSet && f.Op != opDel) || checkFrame(f, itemMax) != nil {
			break
		}
		start := used + 4 + l
		if len(b)-start < int(f.VLen) {
			break
		}
		rc.vals[n], rc.keys[n] = b[start:start+int(f.VLen)], f.Key
		used = start + int(f.VLen)
		n++
	}
	return n, used
}

// apply installs one frame's state in the store.
func (rc *receiver) apply(f *frame, val []byte) error {
	r := rc.r
	// The clock follows every version it sees (a mark carries 0).
	r.clk.observe(f.CAS)
	switch f.Op {
	case opSet:
		ok, err := r.st.ApplyState(f.Key, val, f.Flags, f.Exp, f.CAS, f.Bits&bitBinaryKey != 0)
		switch {
		case ok:
			r.applied.Add(1)
		case err == nil:
			// The peer's write of the key won (a higher CAS). Tell the
			// writer, before the ack that covers it, so that a cas
			// command there is answered EXISTS.
			r.stale.Add(1)
			if f.Seq != 0 { // a resync's items need no answer
				rc.nack = appendFrame(rc.nack, &frame{Op: opNack, CAS: f.CAS})
			}
		case f.Seq != 0:
			// Out of memory (-M) or too large for this node's -I: it
			// cannot hold a write the sender is waiting for. Acking it
			// would tell the client a lie; closing the link makes the
			// sender stop counting this node until it resyncs.
			return fmt.Errorf("cannot apply %q: %w", f.Key, err)
		default:
			// The same during a resync: the item stays missing here,
			// as after an eviction; the resync goes on.
			r.logf("peer %s: cannot apply %q from the resync: %v", rc.in.node, f.Key, err)
		}
	case opDel:
		r.st.ApplyDelete(f.Key, f.CAS)
	case opFlush:
		r.st.ApplyFlush(f.Exp, f.CAS)
	}
	rc.lastSeq = max(rc.lastSeq, f.Seq)
	rc.unacked++
	return nil
}

// ackIf sends the nacks held and an ack of everything applied, then the
// echo of a resync's mark if there is one. It does so once the input is
// drained, or every ackEvery frames (a peer working through a backlog
// would otherwise ack only at its end), or at a mark.
func (rc *receiver) ackIf(drained bool, mark *frame) error {
	due := drained || rc.unacked >= ackEvery || mark != nil
	if !due || rc.lastSeq <= rc.acked && len(rc.nack) == 0 && mark == nil {
		return nil
	}
	rc.unacked = 0
	rc.out = append(rc.out[:0], rc.nack...)
	rc.nack = rc.nack[:0]
	if rc.lastSeq > rc.acked {
		rc.out = appendFrame(rc.out, &frame{Op: opAck, Seq: rc.lastSeq})
		rc.acked = rc.lastSeq
		rc.in.lastSeq.Store(rc.lastSeq)
	}
	if mark != nil {
		rc.out = appendFrame(rc.out, &frame{Op: opMark, Seq: mark.Seq})
	}
	_ = rc.conn.SetWriteDeadline(time.Now().Add(rc.r.writeTimeout()))
	_, err := rc.conn.Write(rc.out)
	return err
}
