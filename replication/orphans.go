package replication

import (
	"sync"
	"time"
)

// Only the node that took a write sends it to the peers, each over its own
// link. If that node dies, a write it had sent to some peers and not yet
// to others stays missing on the others: under quorum a write acked by
// one peer of two, under all one made while a peer was out of sync. No
// link between the survivors would ever resync, so they would disagree
// until the dead node came back and refilled them. So when a peer dies,
// every survivor sends the others, like a resync but without a mark, the
// states (items and tombstones) whose CAS that peer made: its node number
// is in the CAS's low bits. After both walks each survivor holds every
// write of the dead node that any of them got; no other write can be
// missing, since their origins are alive and streaming.

// A link that breaks while its peer lives (its writer overflowed, a
// decode error, a network blip) needs no walk: the peer is streaming its
// writes to the others itself, and resyncs this node when it dials again.
// So when a peer's inbound link ends, the walk waits to see the peer gone:
// this node's own link to it broken too. If the peer dials this node again
// while that link stays up, or it stays up for orphanWait, the peer is
// alive. Without the wait, a link that keeps breaking (a
// --repl-max-pending smaller than the writes in flight) made each survivor
// walk its store at every break.
const (
	orphanWait = 2*backoffMax + handshakeTimeout
	orphanPoll = 10 * time.Millisecond
)

// orphans coalesces the walks: one per dead peer at a time, run again
// if the peer's link ended again meanwhile.
type orphans struct {
	mu      sync.Mutex
	running map[uint16]bool // node number: walking; true: walk again after
}

// lost starts sending the other peers what the peer with node number num
// wrote (its inbound link from that peer ended).
func (r *Replicator) lost(num uint16, node string) {
	if r.ctx.Err() != nil {
		return
	}
	ended := time.Since(r.epoch)
	o := &r.orphans
	o.mu.Lock()
	defer o.mu.Unlock()
	if again, ok := o.running[num]; ok {
		if !again {
			o.running[num] = true
		}
		return
	}
	o.running[num] = false
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			if r.gone(num, ended) {
				n := r.resend(num)
				r.logf("peer %s gone: sent its %d writes to the other peers", node, n)
			}
			ended = time.Since(r.epoch)
			o.mu.Lock()
			if !o.running[num] || r.ctx.Err() != nil {
				delete(o.running, num)
				o.mu.Unlock()
				return
			}
			o.running[num] = false
			o.mu.Unlock()
		}
	}()
}

// gone waits to tell whether the peer with node number num, whose inbound
// link ended at ended (since epoch), died or restarted: this node's link to
// it broke too, at about the same time or since. A peer that only dialled
// this node again, with this node's link to it up all along, is alive.
func (r *Replicator) gone(num uint16, ended time.Duration) bool {
	deadline := time.Now().Add(orphanWait)
	for {
		known, broke := false, false
		for _, l := range r.links {
			l.mu.Lock()
			if l.peerNum == num && l.peer != "" {
				known = true
				// Both links end when the peer dies, each noticed by its
				// own reader: allow for the other order.
				broke = l.state.Load() == stateConnecting || l.diedAt > 0 && l.diedAt >= ended-time.Second
			}
			l.mu.Unlock()
		}
		if !known || broke {
			return true
		}
		r.inMu.Lock()
		back := r.inboundAt[num] > ended
		r.inMu.Unlock()
		if back || time.Now().After(deadline) || !r.pause(orphanPoll, nil) {
			return false
		}
	}
}

// resend walks the store once and pushes the states whose CAS node number
// is num to every connected link but the one to that node. It returns how
// many states it sent to each.
func (r *Replicator) resend(num uint16) int {
	var targets []*link
	for _, l := range r.links {
		l.mu.Lock()
		to := l.peerNum != num && !l.dead && l.conn != nil
		l.mu.Unlock()
		if to && l.state.Load() != stateConnecting {
			targets = append(targets, l)
		}
	}
	if len(targets) == 0 {
		return 0
	}
	st := r.st
	sent := 0
	var local []byte
	if pending, cas := st.FlushState(); cas != 0 || pending != 0 {
		// A flush the dead node made may have reached some of us only.
		local = appendFlushState(local, pending, cas)
	}
	byNode := func(cas uint64) bool { return uint16(cas&nodeMask) == num }
	for p := 0; p < st.Parts() && r.ctx.Err() == nil; p++ {
		var n int
		local, n = appendPart(local, st, p, byNode)
		sent += n
		if len(local) < resyncChunk/4 && p+1 < st.Parts() {
			continue // gather small parts into one push
		}
		for _, l := range targets {
			l.pushResync(local) // a link that died gets it in its resync
		}
		local = local[:0]
	}
	r.resent.Add(uint64(sent))
	return sent
}
