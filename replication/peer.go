package replication

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
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
			if !r.pause(backoff) {
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

// pause waits for d, or less if the replicator closes: then it reports
// false.
func (r *Replicator) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
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
	node, err := r.listenHandshake(conn, br, c)
	if err != nil {
		r.badLinks.Add(1)
		r.logf("refused %s: %v", in.remote, err)
		return
	}
	r.inMu.Lock() // Stats reads it
	in.node = node
	r.inMu.Unlock()
	r.logf("peer %s (%s) connected", in.remote, node)
	if err := r.receive(conn, br, c, in); err != nil && !errors.Is(err, io.EOF) && r.ctx.Err() == nil {
		if errors.Is(err, errFrame) {
			r.badLinks.Add(1)
		}
		r.logf("peer %s (%s): %v", in.remote, node, err)
	}
}

// listenHandshake is the listener's side of the handshake: it checks who
// dials and that it knows the secret, and proves that it knows it too.
func (r *Replicator) listenHandshake(conn net.Conn, br *bufio.Reader, c *codecs) (string, error) {
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	refuse := func(msg string) error {
		_, _ = conn.Write(c.appendMsg(nil, &hello{Err: msg}))
		return errors.New(msg)
	}
	var h hello
	if _, err := c.readMsg(br, nil, maxHello, &h); err != nil {
		return "", err
	}
	switch {
	case h.Magic != magic:
		return "", fmt.Errorf("not a tandem peer (magic %q)", h.Magic)
	case h.Version != version:
		return "", refuse(fmt.Sprintf("wire version %d is not %d", h.Version, version))
	case h.Group != r.cfg.Group:
		return "", refuse(fmt.Sprintf("group %q is not %q", h.Group, r.cfg.Group))
	case h.NodeNum == r.node:
		return "", refuse(fmt.Sprintf("node ids %q and %q share the CAS node number %d: give one another --node-id", h.Node, r.cfg.NodeID, r.node))
	case len(h.Nonce) != nonceLen:
		return "", refuse("bad nonce")
	}
	mine := make([]byte, nonceLen)
	_, _ = rand.Read(mine)
	out := c.appendMsg(nil, &hello{Magic: magic, Version: version, Node: r.cfg.NodeID, Group: r.cfg.Group,
		NodeNum: r.node, Nonce: mine, Proof: proof(r.cfg.Secret, "listener", mine, h.Nonce)})
	if _, err := conn.Write(out); err != nil {
		return "", err
	}
	var p hello
	if _, err := c.readMsg(br, nil, maxHello, &p); err != nil {
		return "", err
	}
	if !bytes.Equal(p.Proof, proof(r.cfg.Secret, "dialer", mine, h.Nonce)) {
		return "", refuse("wrong shared secret")
	}
	if _, err := conn.Write(c.appendMsg(out[:0], &hello{})); err != nil {
		return "", err
	}
	_ = conn.SetDeadline(time.Time{})
	return h.Node, nil
}

// ackEvery bounds the frames applied between two acks.
const ackEvery = 64

// receive applies frames until the link ends, acking whenever it has
// caught up with what was sent: one ack covers a whole batch.
func (r *Replicator) receive(conn net.Conn, br *bufio.Reader, c *codecs, in *inbound) error {
	var (
		f       frame
		hdr     []byte
		val     []byte
		out     []byte
		nack    []byte // nacks not yet sent
		lastSeq uint64
		acked   uint64
		unacked int // frames applied since the last ack
		itemMax = r.st.ItemSizeMax()
		err     error
	)
	for {
		f = frame{Key: f.Key[:0]} // a short array must not inherit the last frame's fields; the key's buffer is reused
		hdr, err = c.readMsg(br, hdr, maxHeader, &f)
		if err != nil {
			return err
		}
		if err := checkFrame(&f, itemMax); err != nil {
			return err
		}
		// The clock follows every version it sees (a mark carries 0).
		r.clk.observe(f.CAS)
		switch f.Op {
		case opSet:
			if cap(val) < int(f.VLen) {
				val = make([]byte, f.VLen)
			}
			val = val[:f.VLen]
			if _, err := io.ReadFull(br, val); err != nil {
				return err
			}
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
					nack = appendFrame(nack, &frame{Op: opNack, CAS: f.CAS})
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
				r.logf("peer %s: cannot apply %q from the resync: %v", in.node, f.Key, err)
			}
		case opDel:
			r.st.ApplyDelete(f.Key, f.CAS)
		case opFlush:
			r.st.ApplyFlush(f.Exp, f.CAS)
		}
		lastSeq = max(lastSeq, f.Seq)
		unacked++
		// Ack once the input is drained, or every ackEvery frames: a peer
		// working through a backlog would otherwise ack only at its end.
		if f.Op == opMark || (br.Buffered() == 0 || unacked >= ackEvery) && (lastSeq > acked || len(nack) > 0) {
			unacked = 0
			out = append(out[:0], nack...)
			nack = nack[:0]
			if lastSeq > acked {
				out = appendFrame(out, &frame{Op: opAck, Seq: lastSeq})
				acked = lastSeq
				in.lastSeq.Store(lastSeq)
			}
			if f.Op == opMark {
				out = appendFrame(out, &frame{Op: opMark, Seq: f.Seq})
			}
			_ = conn.SetWriteDeadline(time.Now().Add(r.writeTimeout()))
			if _, err := conn.Write(out); err != nil {
				return err
			}
		}
	}
}
