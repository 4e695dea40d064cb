package replication

import (
	"strconv"
	"time"
)

// Summary calls fn with the repl_* fields that "stats" shows when
// replication is on.
func (r *Replicator) Summary(fn func(name, value string)) {
	inSync := 0
	for _, l := range r.links {
		if l.state.Load() == stateInSync {
			inSync++
		}
	}
	fn("repl_ack", r.cfg.Ack.String())
	fn("repl_peers", strconv.Itoa(len(r.links)))
	fn("repl_peers_in_sync", strconv.Itoa(inSync))
	fn("repl_head_seq", strconv.FormatUint(r.Head(), 10))
	fn("repl_writes_degraded", strconv.FormatUint(r.degraded.Load(), 10))
	fn("repl_writes_unsynced", strconv.FormatUint(r.unsynced.Load(), 10))
	fn("repl_writes_refused", strconv.FormatUint(r.refused.Load(), 10))
	fn("repl_states_applied", strconv.FormatUint(r.applied.Load(), 10))
	fn("repl_throttled", strconv.FormatUint(r.throttled.Load(), 10))
	fn("repl_waiting", strconv.Itoa(r.waiting()))
}

// Stats calls fn with the lines of "stats replication": the node, then
// each peer link (peerN:field, N in --peers order), then each inbound
// link (inN:field).
func (r *Replicator) Stats(fn func(name, value string)) {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	head := r.Head()
	fn("node_id", r.cfg.NodeID)
	fn("node_number", strconv.Itoa(int(r.node)))
	fn("group", r.cfg.Group)
	fn("listen", r.ln.Addr().String())
	fn("ack", r.cfg.Ack.String())
	fn("timeout_ms", strconv.FormatInt(r.cfg.Timeout.Milliseconds(), 10))
	fn("head_seq", u(head))
	fn("writes_degraded", u(r.degraded.Load()))
	fn("writes_unsynced", u(r.unsynced.Load()))
	fn("writes_refused", u(r.refused.Load()))
	fn("states_applied", u(r.applied.Load()))
	fn("states_stale", u(r.stale.Load()))
	fn("writes_overruled", u(r.overruled.Load()))
	fn("bad_links", u(r.badLinks.Load()))
	fn("throttled", u(r.throttled.Load()))
	fn("throttle_timeouts", u(r.throttleTimeouts.Load()))
	fn("window_bytes", strconv.Itoa(r.window))
	fn("waiting", strconv.Itoa(r.waiting()))
	fn("tombstones", strconv.Itoa(r.st.Tombstones()))
	r.warmupMu.Lock()
	w := r.warmup
	r.warmupMu.Unlock()
	fn("orphans_resent", u(r.resent.Load()))
	fn("warmup_ms", strconv.FormatInt(w.Waited.Milliseconds(), 10))
	fn("warmup_refilled_by", strconv.Itoa(len(w.RefilledBy)))
	fn("warmup_missing", strconv.Itoa(len(w.Missing)))
	now := time.Now()
	for i, l := range r.links {
		p := "peer" + strconv.Itoa(i) + ":"
		l.mu.Lock()
		pending, peer := len(l.buf), l.peer
		var oldest time.Duration
		if len(l.sent) > 0 {
			oldest = now.Sub(l.sent[0].at)
		}
		p50, p99, p999, n := l.lat.ValueAtQuantile(50), l.lat.ValueAtQuantile(99), l.lat.ValueAtQuantile(99.9), l.lat.TotalCount()
		l.mu.Unlock()
		acked := l.ackedSeq.Load()
		state := l.state.Load()
		lag := uint64(0)
		if state != stateConnecting && head > acked {
			lag = head - acked
		}
		fn(p+"addr", l.addr)
		fn(p+"node_id", peer)
		fn(p+"state", stateNames[state])
		fn(p+"pending_bytes", strconv.Itoa(pending))
		fn(p+"acked_seq", u(acked))
		fn(p+"lag_seqs", u(lag))
		fn(p+"lag_ms", strconv.FormatInt(oldest.Milliseconds(), 10))
		fn(p+"acks", strconv.FormatInt(n, 10))
		fn(p+"ack_p50_us", strconv.FormatInt(p50, 10))
		fn(p+"ack_p99_us", strconv.FormatInt(p99, 10))
		fn(p+"ack_p999_us", strconv.FormatInt(p999, 10))
		fn(p+"reconnects", u(l.reconnects.Load()))
		fn(p+"timeouts", u(l.timeouts.Load()))
		fn(p+"resyncs", u(l.resyncs.Load()))
		fn(p+"overflows", u(l.overflows.Load()))
	}
	r.inMu.Lock()
	i := 0
	for _, in := range r.inbound {
		p := "in" + strconv.Itoa(i) + ":"
		fn(p+"remote", in.remote)
		fn(p+"node_id", in.node)
		fn(p+"applied_seq", u(in.lastSeq.Load()))
		i++
	}
	r.inMu.Unlock()
}
