// Package replication keeps a replica group's nodes holding the same items:
// it forwards the resulting state of every local write to the peers over
// pipelined links, tells the server when a write satisfies the ack rule,
// applies what the peers send, and refills a peer that comes back (resync).
// See docs/replication.md for the model, the guarantees and the wire format.
package replication

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/tandemcache/tandem/store"
)

// AckRule says when a write is acknowledged to its client.
type AckRule uint8

// The --repl-ack choices.
const (
	AckAll    AckRule = iota // every in-sync peer applied it
	AckQuorum                // a majority of the group, this node included
	AckAsync                 // at once; the peers get it soon after
)

func (a AckRule) String() string {
	return [...]string{"all", "quorum", "async"}[a]
}

// ParseAckRule parses --repl-ack.
func ParseAckRule(s string) (AckRule, error) {
	switch s {
	case "all":
		return AckAll, nil
	case "quorum":
		return AckQuorum, nil
	case "async":
		return AckAsync, nil
	}
	return 0, fmt.Errorf("replication: ack rule %q is not all, quorum or async", s)
}

// ErrQuorum is returned by Wait when a majority of the group cannot hold the
// write: fewer peers than a majority are connected, or they did not answer
// within the timeout. The write was applied on this node and may be on
// some peers; it is not acknowledged.
var ErrQuorum = errors.New("replication quorum not reached")

// ErrStopped answers a write still waiting for its peers when replication
// is shut down. The write was applied on this node.
var ErrStopped = errors.New("replication stopped")

// Config sets up replication. Zero fields take the defaults noted.
type Config struct {
	// Listen is this node's replication address, host:port (--repl-listen).
	Listen string
	// Peers are the other members' replication addresses (--peers).
	Peers []string
	// NodeID names this node (--node-id). Default: Listen. Its hash picks
	// the node number in the low bits of every CAS; two members whose
	// numbers collide refuse each other, saying so.
	NodeID string
	// Group names the replica group; a peer of another group is refused.
	// Default "tandem".
	Group string
	// Ack is the ack rule (--repl-ack). Default all.
	Ack AckRule
	// Timeout is how long a write waits for a peer before the peer is
	// marked out of sync (--repl-timeout). Default 500 ms.
	Timeout time.Duration
	// Secret is the shared secret peers prove to each other
	// (--repl-secret-file). Empty: any peer of the group is accepted.
	Secret []byte
	// MaxPending is how many bytes of frames a link may hold unsent before
	// the peer is dropped and resynced later. Default 64 MiB. A quarter of
	// it, at most 1 MiB, is the window past which writers wait for an
	// in-sync peer to catch up (Throttle).
	MaxPending int
	// Log receives connection events. Default: discarded.
	Log io.Writer
}

// Replicator is one node's side of the replica group. It is the store's
// Observer (and Versioner): make it with New, give it to store.Config,
// then Start it with the store.
type Replicator struct {
	cfg  Config
	st   *store.Store
	clk  *hlc
	node uint16
	need int // peers that must ack under quorum
	// window: a link with more live bytes than this unsent holds back the
	// writers (Throttle), who wait on relief; it is closed and replaced
	// whenever a link drops back below.
	window           int
	nBehind          atomic.Int32 // links past the window
	reliefMu         sync.Mutex
	relief           chan struct{}
	throttled        atomic.Uint64 // Throttle calls that waited
	throttleTimeouts atomic.Uint64

	// mu orders the stream: frames get their sequence numbers and are
	// appended to every streaming link under it, so each link's stream is
	// in sequence order and acks can be cumulative.
	mu    sync.Mutex
	seq   uint64
	hdr   []byte // the header being sent
	links []*link
	head  atomic.Uint64 // seq, readable without mu

	// Writes waiting for acks (wait.go), oldest first: an ack completes
	// only the waiters it satisfies, and the sweeper times out the oldest.
	wmu     sync.Mutex
	waiters []waiter
	epoch   time.Time // deadlines are measured from it

	// Warming up (warmup.go): which peers have refilled this node, and
	// when a refill last made progress (since epoch).
	refilledBy  map[string]struct{} // guarded by inMu
	warming     atomic.Bool
	refillMoved atomic.Int64
	warmupMu    sync.Mutex
	warmup      Warmup // what the start's wait saw

	orphans   orphans                  // re-sending a dead peer's writes (orphans.go)
	inboundAt map[uint16]time.Duration // by node number: when its inbound link last connected (since epoch); inMu
	resent    atomic.Uint64            // states re-sent that way

	ln      net.Listener
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	inMu    sync.Mutex
	inbound map[net.Conn]*inbound

	// Recently overruled CAS values (a peer held a newer state): a ring,
	// with a set for lookups. Kept long enough for the writer's wait to
	// see them: the nack arrives before the ack that ends the wait.
	ovMu      sync.Mutex
	ovRing    [overruledKept]uint64
	ovNext    int
	ovSet     map[uint64]struct{}
	overruled atomic.Uint64

	degraded atomic.Uint64 // writes answered without a peer that timed out
	unsynced atomic.Uint64 // writes made while a peer was not in sync
	refused  atomic.Uint64 // writes answered SERVER_ERROR (quorum)
	applied  atomic.Uint64 // states received from peers and installed
	stale    atomic.Uint64 // states received and refused as older
	badLinks atomic.Uint64 // inbound links closed for a protocol error
}

// New makes a Replicator. It does not listen or dial until Start.
func New(cfg Config) (*Replicator, error) {
	if cfg.Listen == "" {
		return nil, errors.New("replication: no listen address (--repl-listen)")
	}
	if len(cfg.Peers) == 0 {
		return nil, errors.New("replication: no peers (--peers)")
	}
	if len(cfg.Peers) >= 1<<nodeBits {
		return nil, fmt.Errorf("replication: %d peers; a group has at most %d nodes", len(cfg.Peers), 1<<nodeBits)
	}
	if cfg.NodeID == "" {
		cfg.NodeID = cfg.Listen
	}
	if cfg.Group == "" {
		cfg.Group = "tandem"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 500 * time.Millisecond
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 64 << 20
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	node := uint16(xxhash.Sum64String(cfg.NodeID) & nodeMask)
	r := &Replicator{
		cfg:        cfg,
		clk:        newHLC(uint64(node)),
		node:       node,
		need:       (len(cfg.Peers) + 1) / 2, // a majority of n+1 nodes is n/2+1 (integer), this one included
		window:     min(1<<20, cfg.MaxPending/4),
		inbound:    make(map[net.Conn]*inbound),
		refilledBy: make(map[string]struct{}),
		orphans:    orphans{running: make(map[uint16]bool)},
		inboundAt:  make(map[uint16]time.Duration),
		ovSet:      make(map[uint64]struct{}, overruledKept),
	}
	for _, p := range cfg.Peers {
		r.links = append(r.links, newLink(r, p))
	}
	return r, nil
}

// Start listens on the replication address and dials the peers. The store
// must have been made with r as its Observer.
func (r *Replicator) Start(st *store.Store) error {
	ln, err := net.Listen("tcp", r.cfg.Listen)
	if err != nil {
		return fmt.Errorf("replication: listen on %s: %w", r.cfg.Listen, err)
	}
	r.st, r.ln = st, ln
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.epoch = time.Now()
	r.wg.Add(2)
	go r.accept()
	go r.sweep()
	for _, l := range r.links {
		r.wg.Add(1)
		go l.run()
	}
	return nil
}

// Addr is the address the replication listener is bound to.
func (r *Replicator) Addr() net.Addr { return r.ln.Addr() }

// Close stops listening, closes every link and waits for their goroutines.
func (r *Replicator) Close() error {
	r.cancel()
	err := r.ln.Close()
	r.inMu.Lock()
	for c := range r.inbound {
		c.Close()
	}
	r.inMu.Unlock()
	for _, l := range r.links {
		l.kill()
	}
	r.wg.Wait()
	r.finishAll(ErrStopped)
	return err
}

// writeTimeout bounds a write on a link: a peer that stops reading
// (SIGSTOP) must not hold a writer for ever; past it the link is dropped.
func (r *Replicator) writeTimeout() time.Duration {
	return max(4*r.cfg.Timeout, handshakeTimeout)
}

func (r *Replicator) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "replication: "+format+"\n", args...)
}

// NextCAS hands out the CAS of a local write of a key whose current
// version is cur (store.Versioner).
func (r *Replicator) NextCAS(cur uint64) uint64 { return r.clk.nextAbove(cur) }

// Stored forwards a key's new state (store.Observer). It runs with the
// key's shard locked: it copies the item into the links' buffers and
// returns; the links' writers send them.
func (r *Replicator) Stored(it store.Item) {
	f := itemFrame(it)
	r.send(&f, it)
}

// itemFrame is the header of an item's state; its value follows it.
func itemFrame(it store.Item) frame {
	f := frame{Op: opSet, Key: it.Key(), Flags: it.Flags, Exp: it.Exptime(), CAS: it.CAS, VLen: uint32(it.Len())}
	if it.BinaryKey() {
		f.Bits = bitBinaryKey
	}
	return f
}

// Deleted forwards a deletion (store.Observer).
func (r *Replicator) Deleted(key []byte, cas uint64) {
	r.send(&frame{Op: opDel, Key: key, CAS: cas}, store.Item{})
}

// Flushed forwards flush_all with its time (store.Observer).
func (r *Replicator) Flushed(at int64, cas uint64) {
	r.send(&frame{Op: opFlush, Exp: at, CAS: cas}, store.Item{})
}

// send numbers f and hands it, with its value, to every streaming link.
func (r *Replicator) send(f *frame, it store.Item) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	f.Seq = r.seq
	encoded, unsynced := false, false
	for _, l := range r.links {
		unsynced = unsynced || l.state.Load() != stateInSync
		if !l.streaming {
			continue
		}
		if !encoded {
			r.hdr, encoded = appendFrame(r.hdr[:0], f), true
		}
		l.push(r.hdr, f, it)
	}
	if unsynced {
		// Not on that peer until its resync: what `all` acknowledges
		// without it.
		r.unsynced.Add(1)
	}
	r.head.Store(r.seq)
}

// Head is the sequence number of the newest write handed to the links. A
// client's write, once its store call returned, is at or below it.
func (r *Replicator) Head() uint64 { return r.head.Load() }

// progress is the highest sequence number that meets the ack rule now:
// under all, the lowest ack of the in-sync peers; under quorum, the
// need-th highest ack.
func (r *Replicator) progress() uint64 {
	if r.cfg.Ack == AckAll {
		p := uint64(math.MaxUint64)
		for _, l := range r.links {
			if l.state.Load() == stateInSync {
				p = min(p, l.ackedSeq.Load())
			}
		}
		return p
	}
	if r.need == 0 {
		return math.MaxUint64
	}
	var acks [8]uint64
	a := acks[:0]
	for _, l := range r.links {
		a = append(a, l.counted())
	}
	slices.Sort(a)
	return a[len(a)-r.need]
}

// verdict is what the links say now about the writes waiting for acks:
// taken once and applied to every waiter (recheck), not once per waiter.
type verdict struct {
	progress uint64 // every write up to it meets the rule
	refuse   bool   // under quorum, too few peers connected for more to
}

func (r *Replicator) verdict() verdict {
	v := verdict{progress: r.progress()}
	if r.cfg.Ack == AckAll {
		return v
	}
	streaming := 0 // may still ack (a resyncing one once its mark is back)
	for _, l := range r.links {
		if l.state.Load() != stateConnecting {
			streaming++
		}
	}
	v.refuse = streaming < r.need
	return v
}

// decide tells whether the wait for seq is over: with nil when seq meets
// the ack rule, with ErrQuorum when too few peers are connected under
// quorum for it ever to. It counts nothing: whoever delivers ErrQuorum
// counts the refusal (refusedIf), once.
func (v verdict) decide(seq uint64) (bool, error) {
	if v.progress >= seq {
		return true, nil
	}
	if v.refuse {
		return true, ErrQuorum
	}
	return false, nil
}

// refusedIf counts a write answered with err if err refuses it.
func (r *Replicator) refusedIf(err error) {
	if err != nil {
		r.refused.Add(1)
	}
}

// timedOut marks the peers that did not ack seq in time out of sync and
// decides the write.
func (r *Replicator) timedOut(seq uint64) error {
	have, dropped := 0, 0
	for _, l := range r.links {
		if l.counted() >= seq {
			have++
			continue
		}
		if !l.markOutOfSync(seq) {
			if l.counted() >= seq {
				have++ // the ack came in between: in time after all
			}
			continue
		}
		l.timeouts.Add(1)
		dropped++
		r.logf("peer %s did not ack within %v: out of sync", l.addr, r.cfg.Timeout)
	}
	if dropped > 0 {
		r.recheck() // the other waiters stop waiting for them too
	}
	if r.cfg.Ack == AckQuorum && have < r.need {
		r.refused.Add(1)
		return ErrQuorum
	}
	if dropped > 0 {
		r.degraded.Add(1) // answered without a peer that should have had it
	}
	return nil
}

// Writable says whether a write can be acknowledged now: under quorum,
// whether enough peers are in sync. A server may refuse writes up front
// when it is not, so that a refused write is not applied at all.
func (r *Replicator) Writable() error {
	if r.cfg.Ack != AckQuorum {
		return nil
	}
	n := 0
	for _, l := range r.links {
		if l.state.Load() == stateInSync {
			n++
		}
	}
	if n < r.need {
		r.refused.Add(1)
		return ErrQuorum
	}
	return nil
}

// overruledKept is how many overruled CAS values are remembered: far more
// than can be waiting for their ack at once.
const overruledKept = 4096

// overrule records that a peer refused the state with this CAS.
func (r *Replicator) overrule(cas uint64) {
	r.overruled.Add(1)
	r.ovMu.Lock()
	defer r.ovMu.Unlock()
	if old := r.ovRing[r.ovNext]; old != 0 {
		delete(r.ovSet, old)
	}
	r.ovRing[r.ovNext] = cas
	r.ovNext = (r.ovNext + 1) % overruledKept
	r.ovSet[cas] = struct{}{}
}

// Overruled tells whether a peer refused the state with this CAS because it
// held a newer one: a concurrent write of the key on another node won.
// Valid once Wait has returned for the write.
func (r *Replicator) Overruled(cas uint64) bool {
	r.ovMu.Lock()
	defer r.ovMu.Unlock()
	_, ok := r.ovSet[cas]
	return ok
}
