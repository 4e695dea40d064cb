package replication

import (
	"context"
	"slices"
	"time"
)

// A node that starts holds nothing, while its peers may hold every write of
// the group. If it served at once, a conditional write would be decided
// against its empty store: an add of a key the peers hold succeeds, an incr
// answers NOT_FOUND (and a client's usual add of the initial value then
// succeeds), and since the new state carries a newer CAS, every replica
// installs it. Acknowledged writes held by the survivors are lost that way,
// by the node that comes back rather than by the one that died. So a
// starting node waits (WaitRefilled) until each peer that is up has
// refilled it (sent its store and then a mark, the same resync a returning
// peer always gets) before it serves clients at all.

// refillPoll is how often WaitRefilled looks at the links: a start waits
// for dials and resyncs that take milliseconds at least.
const refillPoll = 10 * time.Millisecond

// Warmup is what WaitRefilled saw.
type Warmup struct {
	Waited     time.Duration
	RefilledBy []string // node ids of the peers whose resync of this node finished
	Down       []string // peer addresses that could not be reached
	Missing    []string // peer addresses neither refilled nor down when the wait ended
}

// GaveUp tells whether the wait ended with some peer's refill missing.
func (w Warmup) GaveUp() bool { return len(w.Missing) > 0 }

// WaitRefilled waits until every peer has either refilled this node (and
// this node's link to it is in sync) or been found down (its dial failed before any connection to it succeeded), or
// until no refill has made progress for patience, or ctx ends. A peer that
// is up dials this node as soon as this node's dial reaches it (redial), so
// the wait is about as long as the largest peer's resync; patience covers a
// peer that accepts connections but never dials back or never finishes
// (stopped, or a --peers list that lacks this node). Call it after Start,
// before the server serves clients.
func (r *Replicator) WaitRefilled(ctx context.Context, patience time.Duration) Warmup {
	start := time.Since(r.epoch)
	r.warming.Store(true)
	defer r.warming.Store(false)
	t := time.NewTicker(refillPoll)
	defer t.Stop()
	for {
		w := r.warmupState()
		w.Waited = time.Since(r.epoch) - start
		quiet := time.Since(r.epoch) - max(start, time.Duration(r.refillMoved.Load()))
		if len(w.Missing) == 0 || quiet >= patience {
			r.warmupMu.Lock()
			r.warmup = w
			r.warmupMu.Unlock()
			return w
		}
		select {
		case <-ctx.Done():
			return w
		case <-t.C:
		}
	}
}

// warmupState sorts the peers into refilled, down and missing.
func (r *Replicator) warmupState() Warmup {
	var w Warmup
	r.inMu.Lock()
	defer r.inMu.Unlock()
	for _, l := range r.links {
		l.mu.Lock()
		peer := l.peer
		l.mu.Unlock()
		_, refilled := r.refilledBy[peer]
		refilled = refilled && peer != ""
		if refilled {
			w.RefilledBy = append(w.RefilledBy, peer)
		}
		switch {
		case refilled && l.state.Load() == stateInSync:
			// Both ways: it refilled this node, and this node's stream to
			// it is complete, so that writes here count it at once (under
			// quorum a resyncing peer's acks do not count).
		case l.dialFailed.Load() && !l.everUp.Load():
			w.Down = append(w.Down, l.addr)
		default:
			w.Missing = append(w.Missing, l.addr)
		}
	}
	slices.Sort(w.RefilledBy)
	return w
}

// noteRefilled records that node's resync of this node is complete.
func (r *Replicator) noteRefilled(node string) {
	r.inMu.Lock()
	r.refilledBy[node] = struct{}{}
	r.inMu.Unlock()
}

// redial has every link that is waiting to dial again dial now: a peer just
// connected, so it is back, and it may be waiting for this node's refill.
func (r *Replicator) redial() {
	for _, l := range r.links {
		if l.state.Load() == stateConnecting {
			select {
			case l.redial <- struct{}{}:
			default:
			}
		}
	}
}
