package replication

import (
	"slices"
	"time"
)

// Acker is told once that the writes up to seq are decided: err is nil when
// they meet the ack rule, or says why they cannot. It is called from the
// goroutine that decided it (a link's ack reader, the timeout sweeper, or
// the caller of Await), never with a replicator lock held, and must not
// block for long: the other waiters of that ack are answered after it.
type Acker = interface{ Acked(seq uint64, err error) }

// waiter is one Acker waiting in Await.
type waiter struct {
	seq      uint64
	deadline time.Duration // since r.epoch
	a        Acker
}

// Await reports whether the writes up to seq are decided now, and then
// with what error. If they are not, a is registered and its Acked is called
// once they are, under all with every in-sync peer's ack, or at the timeout
// with the laggards marked out of sync. A server answers a waiting client
// from Acked, so no goroutine waits per connection. a must not be waiting
// already.
func (r *Replicator) Await(seq uint64, a Acker) (bool, error) {
	if r.cfg.Ack == AckAsync {
		return true, nil
	}
	if done, err := r.verdict().decide(seq); done {
		r.refusedIf(err)
		return true, err
	}
	r.kick() // frames this write waits for may be stuck behind the writer
	r.wmu.Lock()
	// The clock is read under the lock so that the list stays in deadline
	// order: the sweeper looks only at its front.
	r.waiters = append(r.waiters, waiter{seq: seq, deadline: time.Since(r.epoch) + r.cfg.Timeout, a: a})
	r.wmu.Unlock()
	// An ack that came between the look above and the registration found
	// no waiter to complete: look again. Whoever takes a off the list
	// calls it, so it is called once.
	if done, err := r.verdict().decide(seq); done && r.unregister(a) {
		r.refusedIf(err)
		return true, err
	}
	return false, nil
}

// unregister takes a off the list, reporting whether it was still there.
func (r *Replicator) unregister(a Acker) bool {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	i := slices.IndexFunc(r.waiters, func(w waiter) bool { return w.a == a })
	if i < 0 {
		return false
	}
	r.waiters = slices.Delete(r.waiters, i, i+1)
	return true
}

// Met tells whether the writes up to seq meet the ack rule now: a write
// older than one that failed may have met it before the failure.
func (r *Replicator) Met(seq uint64) bool {
	return r.cfg.Ack == AckAsync || r.progress() >= seq
}

// waiting is how many connections (or Wait calls) wait for acks now.
func (r *Replicator) waiting() int {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return len(r.waiters)
}

// chanAcker turns Await into a blocking wait.
type chanAcker chan error

func (c chanAcker) Acked(_ uint64, err error) { c <- err }

// Wait blocks until the writes up to seq are decided (see Await).
func (r *Replicator) Wait(seq uint64) error {
	c := make(chanAcker, 1)
	if done, err := r.Await(seq, c); done {
		return err
	}
	return <-c
}

// complete takes off the list, in order, the waiters that decide says are
// done, and calls them with its error once the lock is released.
func (r *Replicator) complete(decide func(seq uint64) (bool, error)) {
	type result struct {
		w   waiter
		err error
	}
	var buf [32]result // an ack usually completes a few connections
	done := buf[:0]
	r.wmu.Lock()
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if ok, err := decide(w.seq); ok {
			done = append(done, result{w, err})
		} else {
			kept = append(kept, w)
		}
	}
	clear(r.waiters[len(kept):])
	r.waiters = kept
	r.wmu.Unlock()
	for _, d := range done {
		d.w.a.Acked(d.w.seq, d.err)
	}
}

// acked completes the waiters an ack satisfied.
func (r *Replicator) acked() {
	p := r.progress()
	r.complete(func(seq uint64) (bool, error) { return seq <= p, nil })
}

// recheck completes the waiters whose writes are decided now that a peer's
// state changed (out of sync, or gone), since what the rule asks for did
// too.
func (r *Replicator) recheck() {
	v := r.verdict()
	r.complete(func(seq uint64) (bool, error) {
		done, err := v.decide(seq)
		r.refusedIf(err)
		return done, err
	})
}

// finishAll completes every waiter with err: replication is stopping.
func (r *Replicator) finishAll(err error) {
	r.complete(func(uint64) (bool, error) { return true, err })
}

// sweep times out the waiters past their deadline. The list is in deadline
// order, so it looks at its front only, and sleeps until the next
// deadline; with nothing waiting, a full timeout, which is never later than
// the deadline of a waiter added meanwhile.
func (r *Replicator) sweep() {
	defer r.wg.Done()
	t := time.NewTimer(r.cfg.Timeout)
	defer t.Stop()
	due := time.Since(r.epoch) + r.cfg.Timeout // when t should fire
	var expired []waiter
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		now := time.Since(r.epoch)
		if now-due > r.cfg.Timeout/2 {
			// The sweeper ran half a timeout or more after its time: the
			// process was frozen (SIGSTOP, a paused VM) or starved. The
			// acks of the writes waiting may lie unread in the sockets;
			// expiring them now would blame the peers for this node's
			// pause (quorum answered "not reached", peers marked out of
			// sync). Give the ack readers one timeout first, and another
			// if the process is frozen again meanwhile: a wake that comes
			// on time expires what is due.
			due = now + r.cfg.Timeout
			t.Reset(r.cfg.Timeout)
			continue
		}
		next := r.cfg.Timeout
		r.wmu.Lock()
		n := 0
		for n < len(r.waiters) && r.waiters[n].deadline <= now {
			n++
		}
		expired = append(expired[:0], r.waiters[:n]...)
		r.waiters = slices.Delete(r.waiters, 0, n)
		if len(r.waiters) > 0 {
			next = r.waiters[0].deadline - now
		}
		r.wmu.Unlock()
		for i, w := range expired {
			w.a.Acked(w.seq, r.timedOut(w.seq))
			expired[i] = waiter{}
		}
		due = now + next
		t.Reset(next)
	}
}

// Behind tells whether a writer should Throttle now. It costs one atomic
// load while no link is past its window, which is nearly always.
func (r *Replicator) Behind() bool {
	return r.cfg.Ack != AckAsync && r.nBehind.Load() > 0 && r.behind()
}

// Throttle is a writer's back-pressure. While a peer the ack rule waits for
// has more than the window of writes unsent (it takes them slower than
// they come), it blocks until that peer's writer has caught up, or for at
// most the timeout. A server calls it after a connection's write when
// Behind says so, with the connection's reading paused, so that a client
// that pipelines faster than the peers apply is held back by TCP instead
// of running ahead of its acks: without it the link's backlog passed
// MaxPending within a fraction of a second of a bulk load, and the peer
// was dropped and resynced while every write was answered without it.
// Reads never wait here. Under async it never waits: nothing promises
// that the peers keep up.
func (r *Replicator) Throttle() {
	if !r.Behind() {
		return
	}
	r.throttled.Add(1)
	deadline := time.Now().Add(r.cfg.Timeout)
	for {
		r.reliefMu.Lock()
		if r.relief == nil {
			r.relief = make(chan struct{})
		}
		relief := r.relief
		r.reliefMu.Unlock()
		// Looked at again once the channel is in hand: a relief between
		// the two looks closed the one before it.
		if !r.behind() {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			// The acks of the writes behind are late too: their own
			// timeout marks the peer out of sync, and then it no longer
			// holds anyone back.
			r.throttleTimeouts.Add(1)
			return
		}
		t := time.NewTimer(min(left, 10*time.Millisecond)) // a peer's state may change without a relief
		select {
		case <-relief:
		case <-t.C:
		}
		t.Stop()
	}
}

// behind tells whether the peers the ack rule needs are behind the window:
// under all, any peer in sync or resyncing; under quorum, too many of them
// for the rest to make a majority. A resyncing peer counts although the
// rule does not wait for it yet: writers that outpace it would keep it
// from ever catching up (its backlog passes MaxPending, the link is
// dropped and resynced again). An out-of-sync peer holds no one back: it
// missed the timeout, and once its backlog passes MaxPending it resyncs.
// Nor does one whose writer has not moved for the timeout (a peer that
// stopped reading, until the write deadline drops it): otherwise every
// write would wait the whole timeout meanwhile, not just the first.
func (r *Replicator) behind() bool {
	inSync, ahead := 0, 0
	stuck := int64(time.Since(r.epoch) - r.cfg.Timeout)
	for _, l := range r.links {
		if st := l.state.Load(); st != stateInSync && st != stateResyncing {
			continue
		}
		inSync++
		if !l.behind.Load() || l.moved.Load() < stuck {
			ahead++
		}
	}
	if r.cfg.Ack == AckAll {
		return ahead < inSync
	}
	return ahead < min(r.need, inSync)
}

// relieve wakes the throttled writers: a link's backlog fell below the
// window, or it died.
func (r *Replicator) relieve() {
	r.reliefMu.Lock()
	if r.relief != nil {
		close(r.relief)
		r.relief = nil
	}
	r.reliefMu.Unlock()
}
