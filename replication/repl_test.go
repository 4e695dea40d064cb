package replication

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/store"
)

const (
	// syncWait bounds how long a group may take to reach in_sync: a link
	// redials with a backoff of at most 2 s, and resyncing a small store
	// takes milliseconds even under -race.
	syncWait = 15 * time.Second
	// poll is the interval of every polling wait.
	poll = 5 * time.Millisecond
	// longTimeout is the replication timeout of tests in which no peer may
	// be marked out of sync: far above any scheduling delay of a loaded
	// test machine, so a Wait that returns means the peers acked.
	longTimeout = 20 * time.Second
	// prompt bounds what should take no time at all (a Wait that needs
	// nobody, a Close), with room for a loaded machine.
	prompt = time.Second
)

// logBuf collects a replicator's log, shown when a test fails.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testNode is one in-process member of a replica group.
type testNode struct {
	r      *Replicator
	st     *store.Store
	log    *logBuf
	closed bool
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// newTestNode makes a node from cfg (its Log replaced; Timeout longTimeout
// unless set) and its store, without starting it.
func newTestNode(t *testing.T, cfg Config) *testNode {
	t.Helper()
	n := &testNode{log: &logBuf{}}
	cfg.Log = n.log
	if cfg.Timeout == 0 {
		cfg.Timeout = longTimeout
	}
	r, err := New(cfg)
	require.NoError(t, err)
	st, err := store.New(store.Config{MemoryLimit: 8 << 20, Observer: r})
	require.NoError(t, err)
	n.r, n.st = r, st
	t.Cleanup(func() {
		n.close(t)
		require.NoError(t, st.Close())
		if t.Failed() {
			t.Logf("log of %s:\n%s", cfg.NodeID, n.log)
		}
	})
	return n
}

func (n *testNode) start(t *testing.T) {
	t.Helper()
	require.NoError(t, n.r.Start(n.st))
}

// close closes the replicator once, checking that it returns promptly.
func (n *testNode) close(t *testing.T) {
	t.Helper()
	if n.closed || n.r.ln == nil {
		return
	}
	n.closed = true
	start := time.Now()
	require.NoError(t, n.r.Close())
	require.Less(t, time.Since(start), prompt+handshakeTimeout, "Close took too long")
}

// newPair makes nodes a and b, each the other's peer, not yet started.
func newPair(t *testing.T) (a, b *testNode) {
	t.Helper()
	addrA, addrB := freeAddr(t), freeAddr(t)
	a = newTestNode(t, Config{Listen: addrA, Peers: []string{addrB}, NodeID: "a"})
	b = newTestNode(t, Config{Listen: addrB, Peers: []string{addrA}, NodeID: "b"})
	return a, b
}

// startGroup starts n nodes named n0, n1... that list each other as peers.
func startGroup(t *testing.T, n int, ack AckRule) []*testNode {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freeAddr(t)
	}
	nodes := make([]*testNode, n)
	nums := map[uint16]bool{}
	for i := range nodes {
		var peers []string
		for j, a := range addrs {
			if j != i {
				peers = append(peers, a)
			}
		}
		nodes[i] = newTestNode(t, Config{Listen: addrs[i], Peers: peers, NodeID: "n" + strconv.Itoa(i), Ack: ack})
		require.False(t, nums[nodes[i].r.node], "node numbers collide")
		nums[nodes[i].r.node] = true
	}
	for _, nd := range nodes {
		nd.start(t)
	}
	return nodes
}

// statsOf collects r.Stats. Stats reads each inbound link's node id,
// which serveInbound writes without a lock once the handshake is done (see
// TestStatsDuringInboundHandshake): the other tests call it only where no
// inbound handshake can be in progress, and otherwise read the counters.
func statsOf(r *Replicator) map[string]string {
	m := map[string]string{}
	r.Stats(func(name, value string) { m[name] = value })
	return m
}

func summaryOf(r *Replicator) map[string]string {
	m := map[string]string{}
	r.Summary(func(name, value string) { m[name] = value })
	return m
}

// waitInSync waits until every peer link of every node is in sync.
func waitInSync(t *testing.T, nodes ...*testNode) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, n := range nodes {
			for _, l := range n.r.links {
				if l.state.Load() != stateInSync {
					return false
				}
			}
		}
		return true
	}, syncWait, poll, "peers not in sync")
}

// peerState is the state of node n's link i, as Stats names it.
func peerState(n *testNode, i int) string { return stateNames[n.r.links[i].state.Load()] }

// waitPeerState waits until node n's link i is in the given state.
func waitPeerState(t *testing.T, n *testNode, i int, state string) {
	t.Helper()
	require.Eventually(t, func() bool { return peerState(n, i) == state },
		syncWait, poll, "peer%d never %s", i, state)
}

// itemState is an item as a client can tell it apart.
type itemState struct {
	value string
	flags uint32
	cas   uint64
	exp   int64
	bin   bool
}

func stateOf(it store.Item) itemState {
	return itemState{string(it.AppendValue(nil)), it.Flags, it.CAS, it.Exptime(), it.BinaryKey()}
}

func lookup(t *testing.T, st *store.Store, key string) (itemState, bool) {
	t.Helper()
	var s itemState
	err := st.Get([]byte(key), store.GetOptions{Peek: true}, func(it store.Item) { s = stateOf(it) })
	if errors.Is(err, store.ErrNotFound) {
		return s, false
	}
	require.NoError(t, err)
	return s, true
}

// contents is every live item of st.
func contents(st *store.Store) map[string]itemState {
	m := map[string]itemState{}
	for p := range st.Parts() {
		st.ForEach(p, func(it store.Item) { m[string(it.Key())] = stateOf(it) })
	}
	return m
}

// write runs op on node n and waits for its ack.
func write(t *testing.T, n *testNode, op func(st *store.Store) error) {
	t.Helper()
	require.NoError(t, op(n.st))
	require.NoError(t, n.r.Wait(n.r.Head()))
}

func set(key, value string, o store.SetOptions) func(*store.Store) error {
	return func(st *store.Store) error {
		_, err := st.Set([]byte(key), []byte(value), o)
		return err
	}
}

// requireSame checks that key is in the same state on every node, or
// absent from all.
func requireSame(t *testing.T, nodes []*testNode, key string) (itemState, bool) {
	t.Helper()
	want, found := lookup(t, nodes[0].st, key)
	for i, n := range nodes[1:] {
		got, ok := lookup(t, n.st, key)
		require.Equal(t, found, ok, "%q present on n0 but not n%d, or the reverse", key, i+1)
		require.Equal(t, want, got, "%q on n%d", key, i+1)
	}
	return want, found
}

func TestParseAckRule(t *testing.T) {
	for _, a := range []AckRule{AckAll, AckQuorum, AckAsync} {
		got, err := ParseAckRule(a.String())
		require.NoError(t, err)
		require.Equal(t, a, got)
	}
	for _, s := range []string{"", "ALL", "majority", "none"} {
		_, err := ParseAckRule(s)
		require.Error(t, err, s)
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"no listen", Config{Peers: []string{"a:1"}}, false},
		{"no peers", Config{Listen: "127.0.0.1:0"}, false},
		{"too many peers", Config{Listen: "127.0.0.1:0", Peers: make([]string, 1<<nodeBits)}, false},
		{"defaults", Config{Listen: "127.0.0.1:0", Peers: []string{"a:1", "b:1"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.cfg)
			if !tt.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "127.0.0.1:0", r.cfg.NodeID, "node id defaults to the listen address")
			require.Equal(t, "tandem", r.cfg.Group)
			require.Equal(t, AckAll, r.cfg.Ack)
			require.Equal(t, 500*time.Millisecond, r.cfg.Timeout)
			require.Equal(t, 64<<20, r.cfg.MaxPending)
			require.Equal(t, 1, r.need, "a majority of 3 is this node and one peer")
			require.Less(t, uint64(r.node), uint64(1<<nodeBits))
		})
	}
	for peers, need := range map[int]int{1: 1, 2: 1, 3: 2, 4: 2, 6: 3} {
		r, err := New(Config{Listen: "x:1", Peers: make([]string, peers)})
		require.NoError(t, err)
		require.Equal(t, need, r.need, "%d peers", peers)
	}
}

func TestReplicateWrites(t *testing.T) {
	nodes := startGroup(t, 3, AckAll)
	waitInSync(t, nodes...)
	n0, n1, n2 := nodes[0], nodes[1], nodes[2]

	t.Run("set", func(t *testing.T) {
		write(t, n0, set("k", "v1", store.SetOptions{Flags: 42, Exptime: 1000}))
		s, ok := requireSame(t, nodes, "k")
		require.True(t, ok)
		require.Equal(t, itemState{value: "v1", flags: 42, cas: s.cas, exp: s.exp}, s)
		require.NotZero(t, s.exp)
		require.Equal(t, uint64(n0.r.node), s.cas&nodeMask, "the CAS names the writer")

		write(t, n0, set("bin", "v", store.SetOptions{BinaryKey: true}))
		s, ok = requireSame(t, nodes, "bin")
		require.True(t, ok)
		require.True(t, s.bin)

		big := strings.Repeat("b", 700<<10) // chained in the slab
		write(t, n1, set("big", big, store.SetOptions{}))
		s, ok = requireSame(t, nodes, "big")
		require.True(t, ok)
		require.Equal(t, big, s.value)
	})

	t.Run("overwrite elsewhere", func(t *testing.T) {
		before, _ := lookup(t, n0.st, "k")
		write(t, n2, set("k", "v2", store.SetOptions{}))
		s, ok := requireSame(t, nodes, "k")
		require.True(t, ok)
		require.Equal(t, "v2", s.value)
		require.Greater(t, s.cas, before.cas, "a later write of a key is a higher version")
	})

	t.Run("touch", func(t *testing.T) {
		before, _ := lookup(t, n0.st, "k")
		write(t, n1, func(st *store.Store) error { return st.Touch([]byte("k"), 5000) })
		s, ok := requireSame(t, nodes, "k")
		require.True(t, ok)
		require.Greater(t, s.cas, before.cas)
		require.NotEqual(t, before.exp, s.exp)
	})

	t.Run("append and incr", func(t *testing.T) {
		write(t, n0, set("n", "41", store.SetOptions{}))
		write(t, n1, func(st *store.Store) error {
			_, err := st.Arith([]byte("n"), store.ArithOptions{Delta: 1})
			return err
		})
		s, ok := requireSame(t, nodes, "n")
		require.True(t, ok)
		require.Equal(t, "42", s.value)
		write(t, n2, set("n", "0", store.SetOptions{Mode: store.ModeAppend}))
		s, _ = requireSame(t, nodes, "n")
		require.Equal(t, "420", s.value)
	})

	t.Run("delete", func(t *testing.T) {
		old, ok := lookup(t, n0.st, "k")
		require.True(t, ok)
		write(t, n1, func(st *store.Store) error { return st.Delete([]byte("k"), store.DeleteOptions{}) })
		_, ok = requireSame(t, nodes, "k")
		require.False(t, ok)
		for _, n := range []*testNode{n0, n2} {
			require.Positive(t, n.st.Tombstones())
			// The write the delete removed, arriving late, stays deleted.
			applied, err := n.st.ApplyState([]byte("k"), []byte(old.value), old.flags, old.exp, old.cas, false)
			require.NoError(t, err)
			require.False(t, applied)
			_, ok = lookup(t, n.st, "k")
			require.False(t, ok)
		}
	})

	t.Run("flush_all", func(t *testing.T) {
		require.NotEmpty(t, contents(n0.st))
		write(t, n2, func(st *store.Store) error { st.FlushAll(0); return nil })
		for i, n := range nodes {
			require.Empty(t, contents(n.st), "n%d", i)
		}
		write(t, n0, set("after", "x", store.SetOptions{}))
		_, ok := requireSame(t, nodes, "after")
		require.True(t, ok, "a write after the flush survives it everywhere")
	})

	for i, n := range nodes {
		require.Zero(t, n.r.degraded.Load(), "n%d", i)
		require.Zero(t, n.r.badLinks.Load(), "n%d", i)
		require.NotZero(t, n.r.applied.Load(), "n%d", i)
	}
}

func TestReplicateConcurrentWritersConverge(t *testing.T) {
	nodes := startGroup(t, 3, AckAll)
	waitInSync(t, nodes...)
	const writers, ops, keys = 3, 300, 64
	var wg sync.WaitGroup
	errs := make(chan error, len(nodes)*writers)
	for ni, n := range nodes {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range ops {
					key := []byte("key" + strconv.Itoa((i*7+w*13+ni)%keys))
					var err error
					switch i % 5 {
					case 3:
						err = n.st.Delete(key, store.DeleteOptions{})
						if errors.Is(err, store.ErrNotFound) {
							err = nil
						}
					case 4:
						err = n.st.Touch(key, 3600)
						if errors.Is(err, store.ErrNotFound) {
							err = nil
						}
					default:
						_, err = n.st.Set(key, []byte(fmt.Sprintf("n%d-w%d-%d", ni, w, i)), store.SetOptions{Flags: uint32(ni)})
					}
					if err == nil {
						err = n.r.Wait(n.r.Head())
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	for _, n := range nodes {
		require.NoError(t, n.r.Wait(n.r.Head()))
	}
	want := contents(nodes[0].st)
	for i, n := range nodes[1:] {
		require.Equal(t, want, contents(n.st), "n%d differs from n0", i+1)
	}
	for i, n := range nodes {
		require.Zero(t, n.r.degraded.Load(), "n%d", i)
	}
}

func TestResync(t *testing.T) {
	a, b := newPair(t)
	a.start(t)

	// While b is away, a answers writes alone.
	for i := range 2000 {
		write(t, a, set("a"+strconv.Itoa(i), strings.Repeat("v", i%300), store.SetOptions{Flags: uint32(i)}))
	}
	big := strings.Repeat("B", 900<<10)
	write(t, a, set("big", big, store.SetOptions{Exptime: 3600}))
	for i := 0; i < 2000; i += 10 {
		write(t, a, func(st *store.Store) error { return st.Delete([]byte("a"+strconv.Itoa(i)), store.DeleteOptions{}) })
	}
	require.Equal(t, "connecting", peerState(a, 0))
	// b holds writes of its own before it joins.
	for i := range 100 {
		_, err := b.st.Set([]byte("b"+strconv.Itoa(i)), []byte("w"), store.SetOptions{})
		require.NoError(t, err)
	}

	b.start(t)
	waitInSync(t, a, b)
	got, want := contents(b.st), contents(a.st)
	require.Len(t, want, 2000-200+1+100)
	require.Equal(t, want, got)
	require.Equal(t, big, got["big"].value)
	require.Equal(t, uint64(1), a.r.links[0].resyncs.Load())

	// And live writes flow after the resync.
	write(t, b, set("live", "x", store.SetOptions{}))
	_, ok := requireSame(t, []*testNode{a, b}, "live")
	require.True(t, ok)
}

func TestResyncAfterRestart(t *testing.T) {
	a, b := newPair(t)
	a.start(t)
	b.start(t)
	waitInSync(t, a, b)
	write(t, a, set("k", "1", store.SetOptions{}))

	b.close(t)
	waitPeerState(t, a, 0, "connecting")
	write(t, a, set("missed", "2", store.SetOptions{}))

	// b comes back empty, as a restarted process does.
	b2 := newTestNode(t, Config{Listen: b.r.cfg.Listen, Peers: b.r.cfg.Peers, NodeID: "b"}) // b's address
	b2.start(t)
	waitInSync(t, a, b2)
	require.Equal(t, contents(a.st), contents(b2.st))
	require.Len(t, contents(b2.st), 2)
	require.NotZero(t, a.r.links[0].reconnects.Load())
}

func TestWaitQuorumNoPeer(t *testing.T) {
	n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{freeAddr(t), freeAddr(t)}, NodeID: "q", Ack: AckQuorum})
	n.start(t)
	require.ErrorIs(t, n.r.Writable(), ErrQuorum)
	_, err := n.st.Set([]byte("k"), []byte("v"), store.SetOptions{})
	require.NoError(t, err)
	start := time.Now()
	require.ErrorIs(t, n.r.Wait(n.r.Head()), ErrQuorum)
	require.Less(t, time.Since(start), prompt, "no peer can ack: Wait must not wait for the timeout")
	require.Equal(t, "2", summaryOf(n.r)["repl_writes_refused"], "Writable and Wait refused")

	// Async never waits.
	a := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{freeAddr(t)}, NodeID: "as", Ack: AckAsync})
	a.start(t)
	_, err = a.st.Set([]byte("k"), []byte("v"), store.SetOptions{})
	require.NoError(t, err)
	require.NoError(t, a.r.Wait(a.r.Head()))
	require.NoError(t, a.r.Writable())
}

// silentPeer accepts connections and reads whatever comes, never answering.
type silentPeer struct {
	ln       net.Listener
	accepted atomic.Int64
	read     atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newSilentPeer(t *testing.T, addr string) *silentPeer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	p := &silentPeer{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					p.read.Add(int64(n))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(p.close)
	return p
}

func (p *silentPeer) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func TestWaitSilentPeer(t *testing.T) {
	for _, ack := range []AckRule{AckAll, AckQuorum} {
		t.Run(ack.String(), func(t *testing.T) {
			silent := newSilentPeer(t, "127.0.0.1:0")
			n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{silent.ln.Addr().String()}, NodeID: "s", Ack: ack})
			n.start(t)
			// The link is in its handshake: the peer got the hello.
			require.Eventually(t, func() bool { return silent.read.Load() > 0 }, syncWait, poll)
			require.Equal(t, "connecting", statsOf(n.r)["peer0:state"])

			write := func() error {
				_, err := n.st.Set([]byte("k"), []byte("v"), store.SetOptions{})
				require.NoError(t, err)
				start := time.Now()
				err = n.r.Wait(n.r.Head())
				require.Less(t, time.Since(start), prompt, "a peer that is not connected is not waited for")
				return err
			}
			if ack == AckAll {
				require.NoError(t, write())
				require.NoError(t, n.r.Writable())
			} else {
				require.ErrorIs(t, write(), ErrQuorum)
				require.ErrorIs(t, n.r.Writable(), ErrQuorum)
			}
			require.Equal(t, "0", statsOf(n.r)["writes_degraded"])

			// Close interrupts the handshake in progress.
			n.closed = true
			start := time.Now()
			require.NoError(t, n.r.Close())
			require.Less(t, time.Since(start), prompt)
		})
	}
}

func TestWritableQuorum(t *testing.T) {
	nodes := startGroup(t, 3, AckQuorum)
	waitInSync(t, nodes...)
	n0 := nodes[0]
	require.NoError(t, n0.r.Writable())
	write(t, n0, set("k", "1", store.SetOptions{}))

	// One of three down: a majority remains.
	nodes[2].close(t)
	waitPeerState(t, n0, 1, "connecting")
	require.NoError(t, n0.r.Writable())
	write(t, n0, set("k", "2", store.SetOptions{}))
	s, ok := lookup(t, nodes[1].st, "k")
	require.True(t, ok)
	require.Equal(t, "2", s.value, "the majority holds the write")
	require.Equal(t, "1", summaryOf(n0.r)["repl_peers_in_sync"])

	// Two of three down: no majority.
	nodes[1].close(t)
	waitPeerState(t, n0, 0, "connecting")
	require.ErrorIs(t, n0.r.Writable(), ErrQuorum)
	_, err := n0.st.Set([]byte("k"), []byte("3"), store.SetOptions{})
	require.NoError(t, err)
	require.ErrorIs(t, n0.r.Wait(n0.r.Head()), ErrQuorum)
	sum := summaryOf(n0.r)
	require.Equal(t, "0", sum["repl_peers_in_sync"])
	require.Equal(t, "2", sum["repl_writes_refused"])
}

// fakePeer is the listening side of a link, written for the test: it
// passes the handshake, echoes resync marks, and acks writes only when
// told to.
type fakePeer struct {
	ln     net.Listener
	ackAll atomic.Bool
	// nackAll: every write is refused, as by a peer holding newer states.
	nackAll atomic.Bool
	// stall: the next connection stops reading after its first mark, until
	// the test ends or closes release.
	stall   atomic.Bool
	release chan struct{}
	// hangUp: every connection is closed right after the handshake.
	hangUp     atomic.Bool
	handshakes atomic.Int64
	frames     atomic.Int64
	done       chan struct{}
	wg         sync.WaitGroup
	mu         sync.Mutex
	conns      []net.Conn
}

func newFakePeer(t *testing.T, group string) *fakePeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	// A Replicator that is never started supplies the listener's side of
	// the handshake.
	hs, err := New(Config{Listen: ln.Addr().String(), Peers: []string{"unused:1"}, NodeID: "fake", Group: group})
	require.NoError(t, err)
	p := &fakePeer{ln: ln, done: make(chan struct{}), release: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				cd := newCodecs()
				if _, _, err := hs.listenHandshake(c, br, cd); err != nil {
					return
				}
				p.handshakes.Add(1)
				if p.hangUp.Load() {
					return
				}
				p.serve(c, br, cd)
			}()
		}
	}()
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *fakePeer) serve(c net.Conn, br *bufio.Reader, cd *codecs) {
	var f frame
	var buf, out []byte
	stall := p.stall.Swap(false)
	for {
		var err error
		if buf, err = cd.readMsg(br, buf, maxHeader, &f); err != nil {
			return
		}
		p.frames.Add(1)
		if _, err := br.Discard(int(f.VLen)); err != nil {
			return
		}
		out = out[:0]
		if f.Op == opSet && f.Seq > 0 && p.nackAll.Load() {
			out = cd.appendMsg(out, &frame{Op: opNack, CAS: f.CAS})
		}
		switch {
		case f.Op == opMark:
			out = cd.appendMsg(out, &frame{Op: opAck, Seq: f.Seq})
			out = cd.appendMsg(out, &frame{Op: opMark, Seq: f.Seq})
		case p.ackAll.Load() && f.Seq > 0:
			out = cd.appendMsg(out, &frame{Op: opAck, Seq: f.Seq})
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		if stall && f.Op == opMark {
			select {
			case <-p.done:
				return
			case <-p.release:
				stall = false
			}
		}
	}
}

func TestOverruled(t *testing.T) {
	fake := newFakePeer(t, "tandem")
	fake.ackAll.Store(true)
	n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{fake.ln.Addr().String()}, NodeID: "o"})
	n.start(t)
	waitPeerState(t, n, 0, "in_sync")

	won, err := n.st.Set([]byte("k"), []byte("v"), store.SetOptions{})
	require.NoError(t, err)
	require.NoError(t, n.r.Wait(n.r.Head()))
	require.False(t, n.r.Overruled(won))

	fake.nackAll.Store(true)
	var lost []uint64
	for i := range overruledKept + 10 {
		cas, err := n.st.Set([]byte("k"+strconv.Itoa(i%50)), []byte("v"), store.SetOptions{})
		require.NoError(t, err)
		require.NoError(t, n.r.Wait(n.r.Head()))
		require.True(t, n.r.Overruled(cas), "the nack arrives before the ack that ends the wait")
		lost = append(lost, cas)
	}
	require.Equal(t, uint64(overruledKept+10), n.r.overruled.Load())
	require.False(t, n.r.Overruled(won))
	// A bounded memory: the oldest are forgotten.
	require.False(t, n.r.Overruled(lost[0]))
	require.True(t, n.r.Overruled(lost[len(lost)-1]))
	n.r.ovMu.Lock()
	require.Len(t, n.r.ovSet, overruledKept)
	n.r.ovMu.Unlock()
}

// TestRedialBackoff: a peer that hangs up right after each handshake is
// redialled with backoff, as one that refuses the dial is, not in a loop
// of connect, resync, close.
func TestRedialBackoff(t *testing.T) {
	fake := newFakePeer(t, "tandem")
	fake.hangUp.Store(true)
	n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{fake.ln.Addr().String()}, NodeID: "o"})
	start := time.Now()
	n.start(t)
	l := n.r.links[0]
	require.Eventually(t, func() bool { return l.reconnects.Load() >= 4 }, syncWait, poll)
	// Three pauses at least: backoffMin, twice it, four times it.
	require.GreaterOrEqual(t, time.Since(start), 7*backoffMin-poll)
	require.LessOrEqual(t, uint64(fake.handshakes.Load()), l.reconnects.Load()+1)
}

func TestOverflowDropsAndResyncs(t *testing.T) {
	fake := newFakePeer(t, "tandem")
	fake.ackAll.Store(true)
	fake.stall.Store(true)
	const maxPending = 256 << 10
	n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{fake.ln.Addr().String()}, NodeID: "o",
		Ack: AckAsync, MaxPending: maxPending})
	n.start(t)
	waitPeerState(t, n, 0, "in_sync")

	// The peer reads nothing: once the socket buffers are full, frames pile
	// up in the link until it passes MaxPending and is dropped.
	l := n.r.links[0]
	val := make([]byte, 32<<10)
	for i := 0; l.overflows.Load() == 0; i++ {
		require.Less(t, i, 20000, "64 MiB written and the link never overflowed")
		_, err := n.st.Set([]byte("k"+strconv.Itoa(i%100)), val, store.SetOptions{})
		require.NoError(t, err)
		l.mu.Lock()
		pending := len(l.buf)
		l.mu.Unlock()
		require.LessOrEqual(t, pending, maxPending)
	}
	require.Equal(t, uint64(1), l.overflows.Load())
	// The next connection reads again: the peer is resynced.
	require.Eventually(t, func() bool { return l.reconnects.Load() == 1 && l.state.Load() == stateInSync }, syncWait, poll)
	require.Equal(t, uint64(2), l.resyncs.Load())
}

// TestThrottle: once an in-sync peer takes writes slower than they come
// (here it reads nothing), Behind holds writers back. A peer that reads
// again releases them at once; one that does not holds them back for the
// timeout, after which its stuck writer holds no one back.
func TestThrottle(t *testing.T) {
	const timeout = time.Second
	// behindPeer starts a node whose one peer stops reading, and writes
	// until the link is behind for good.
	behindPeer := func(t *testing.T) (*testNode, *fakePeer) {
		fake := newFakePeer(t, "tandem")
		fake.ackAll.Store(true)
		fake.stall.Store(true)
		n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{fake.ln.Addr().String()}, NodeID: "th",
			Ack: AckAll, Timeout: timeout, MaxPending: 1 << 20}) // a window of 256 KiB
		n.start(t)
		waitPeerState(t, n, 0, "in_sync")
		require.False(t, n.r.Behind())
		start := time.Now()
		n.r.Throttle()
		require.Less(t, time.Since(start), prompt, "nothing behind: no wait")

		// Once the socket buffers are full, frames pile up in the link.
		// Until then its writer may still take them (and the link is no
		// longer behind): it is behind for good once it stays so while
		// the writer has had time to take them.
		val := make([]byte, 32<<10)
		for i := 0; !n.r.Behind() || !stays(n.r.Behind, 50*time.Millisecond); i++ {
			require.Less(t, i, 2000, "64 MiB written and the link never fell behind")
			_, err := n.st.Set([]byte("k"+strconv.Itoa(i%100)), val, store.SetOptions{})
			require.NoError(t, err)
		}
		st := statsOf(n.r)
		require.Equal(t, "0", st["peer0:overflows"], "behind before MaxPending")
		require.Equal(t, "262144", st["window_bytes"])
		return n, fake
	}

	t.Run("released", func(t *testing.T) {
		n, fake := behindPeer(t)
		done := make(chan time.Duration, 1)
		go func() {
			start := time.Now()
			n.r.Throttle()
			done <- time.Since(start)
		}()
		const held = 100 * time.Millisecond
		select {
		case <-done:
			t.Fatal("Throttle returned while the peer read nothing")
		case <-time.After(held):
		}
		// It reads again: the writer catches up and the throttled go on.
		close(fake.release)
		var waited time.Duration
		select {
		case waited = <-done:
		case <-time.After(syncWait):
			t.Fatal("Throttle still waits after the peer read again")
		}
		require.GreaterOrEqual(t, waited, held)
		require.Less(t, waited, timeout, "released by the peer, not the timeout")
		require.False(t, n.r.Behind())
		st := statsOf(n.r)
		require.Equal(t, "1", st["throttled"])
		require.Equal(t, "0", st["throttle_timeouts"])
		require.Equal(t, "in_sync", st["peer0:state"])
		require.Equal(t, "0", st["peer0:overflows"])
	})

	t.Run("stuck", func(t *testing.T) {
		n, _ := behindPeer(t)
		// The writer has not moved since it blocked in its write: within
		// the timeout of that, writers go on; the link holds no one back
		// any more, though its frames are still unsent.
		start := time.Now()
		n.r.Throttle()
		require.Less(t, time.Since(start), timeout+prompt)
		require.False(t, n.r.Behind(), "a stuck writer still holds writers back")
		start = time.Now()
		n.r.Throttle()
		require.Less(t, time.Since(start), prompt, "only the first writer waits")
		st := statsOf(n.r)
		require.Equal(t, "1", st["throttled"])
		require.Equal(t, "in_sync", st["peer0:state"], "no write waited for an ack")
	})
}

// stays tells whether cond holds all through d.
func stays(cond func() bool, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(poll) {
		if !cond() {
			return false
		}
	}
	return true
}

// TestBehindRule: which peers hold writers back, by ack rule and state.
func TestBehindRule(t *testing.T) {
	type peer struct {
		state  int32
		behind bool
		stuck  bool // its writer has not moved for the timeout
	}
	in, re, out, conn := stateInSync, stateResyncing, stateOutOfSync, stateConnecting
	for _, tc := range []struct {
		name  string
		ack   AckRule
		peers []peer
		want  bool
	}{
		{"all: none behind", AckAll, []peer{{in, false, false}, {in, false, false}}, false},
		{"all: one in sync behind", AckAll, []peer{{in, false, false}, {in, true, false}}, true},
		{"all: one resyncing behind", AckAll, []peer{{re, true, false}, {in, false, false}}, true},
		{"all: out of sync behind", AckAll, []peer{{out, true, false}, {in, false, false}}, false},
		{"all: connecting behind", AckAll, []peer{{conn, true, false}}, false},
		{"all: in sync behind, writer stuck", AckAll, []peer{{in, true, true}}, false},
		{"all: resyncing behind, writer stuck", AckAll, []peer{{re, true, true}}, false},
		{"quorum: one of two behind", AckQuorum, []peer{{in, true, false}, {in, false, false}}, false},
		{"quorum: both behind", AckQuorum, []peer{{in, true, false}, {re, true, false}}, true},
		{"quorum: the only one left behind", AckQuorum, []peer{{in, true, false}, {conn, false, false}}, true},
		{"async: behind", AckAsync, []peer{{in, true, false}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var addrs []string
			for i := range tc.peers {
				addrs = append(addrs, "unused:"+strconv.Itoa(i+1))
			}
			r, err := New(Config{Listen: "127.0.0.1:0", Peers: addrs, Ack: tc.ack})
			require.NoError(t, err)
			now := int64(time.Since(r.epoch))
			for i, p := range tc.peers {
				l := r.links[i]
				l.state.Store(p.state)
				l.behind.Store(p.behind)
				l.moved.Store(now) // its writer is moving
				if p.stuck {
					l.moved.Store(now - int64(2*r.cfg.Timeout))
				}
				if p.behind {
					r.nBehind.Add(1)
				}
			}
			require.Equal(t, tc.want, r.Behind())
		})
	}
}

// TestBehindAccounting: what a cut-short write puts back keeps its resync
// share (it does not count as live writes, for the window or MaxPending),
// and a dead link is never behind, whatever its writer puts back.
func TestBehindAccounting(t *testing.T) {
	r, err := New(Config{Listen: "127.0.0.1:0", Peers: []string{"unused:1"}, MaxPending: 256 << 10})
	require.NoError(t, err)
	l := newLink(r, "unused:1")

	require.True(t, l.pushResync(make([]byte, 200<<10)))
	b, _ := l.take(0)
	l.finish(b, 50<<10) // 150 KiB of the resync go back
	require.False(t, l.behind.Load(), "resync frames counted as live")
	l.mu.Lock()
	require.Equal(t, 150<<10, l.resyncBytes)
	l.mu.Unlock()
	l.r.mu.Lock()
	l.push(make([]byte, 150<<10), &frame{Seq: 1}, store.Item{})
	l.r.mu.Unlock()
	require.Zero(t, l.overflows.Load(), "150 KiB of live frames overflowed 256 KiB")
	require.True(t, l.behind.Load(), "150 KiB live is past the 64 KiB window")
	require.Equal(t, int32(1), r.nBehind.Load())

	// The connection dies during a write that the socket took part of.
	b, _ = l.take(0)
	require.False(t, l.behind.Load())
	l.die(errors.New("test"))
	l.finish(b, 1)
	require.False(t, l.behind.Load(), "a dead link is behind")
	require.Zero(t, r.nBehind.Load())
}

// TestKickAfterDeadline: a kick long after the writer's last send (whose
// write deadline stays on the socket) must not take that deadline for a
// stuck peer: it leaves its frames to the writer, and the link lives.
func TestKickAfterDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	peer, err := ln.Accept()
	require.NoError(t, err)
	defer peer.Close()

	r, err := New(Config{Listen: "127.0.0.1:0", Peers: []string{"unused:1"}})
	require.NoError(t, err)
	l := newLink(r, "unused:1")
	raw, err := conn.(*net.TCPConn).SyscallConn()
	require.NoError(t, err)
	l.conn, l.raw = conn, raw
	require.NoError(t, conn.SetWriteDeadline(time.Now().Add(-time.Second)))

	l.buf = append(l.buf, "frames"...)
	b, dead := l.take(0)
	require.False(t, dead)
	require.Equal(t, "frames", string(b))
	l.sendNow(b)
	require.False(t, l.dead, "the link was dropped for the writer's old deadline")
	require.Equal(t, "frames", string(l.buf), "the frames go back to the writer")
	require.False(t, l.writing)
}

func TestPeerTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	for _, ack := range []AckRule{AckAll, AckQuorum} {
		t.Run(ack.String(), func(t *testing.T) {
			fake := newFakePeer(t, "tandem")
			n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{fake.ln.Addr().String()}, NodeID: "t", Ack: ack, Timeout: timeout})
			n.start(t)
			waitPeerState(t, n, 0, "in_sync")

			_, err := n.st.Set([]byte("k"), []byte("v"), store.SetOptions{})
			require.NoError(t, err)
			start := time.Now()
			err = n.r.Wait(n.r.Head())
			require.GreaterOrEqual(t, time.Since(start), timeout, "Wait gives an in-sync peer the timeout")
			st := statsOf(n.r)
			require.Equal(t, "out_of_sync", st["peer0:state"])
			require.Equal(t, "1", st["peer0:timeouts"])
			if ack == AckAll {
				require.NoError(t, err)
				require.Equal(t, "1", st["writes_degraded"])
				// Later writes do not wait for it.
				_, err = n.st.Set([]byte("k"), []byte("v2"), store.SetOptions{})
				require.NoError(t, err)
				start = time.Now()
				require.NoError(t, n.r.Wait(n.r.Head()))
				require.Less(t, time.Since(start), timeout)
			} else {
				require.ErrorIs(t, err, ErrQuorum)
				require.Equal(t, "1", st["writes_refused"])
				require.ErrorIs(t, n.r.Writable(), ErrQuorum)
			}

			// The peer answers again: once it has acked everything it was
			// sent, it is in sync.
			fake.ackAll.Store(true)
			_, err = n.st.Set([]byte("k"), []byte("v3"), store.SetOptions{})
			require.NoError(t, err)
			waitPeerState(t, n, 0, "in_sync")
			require.NoError(t, n.r.Writable())
			_, err = n.st.Set([]byte("k"), []byte("v4"), store.SetOptions{})
			require.NoError(t, err)
			require.NoError(t, n.r.Wait(n.r.Head()))
		})
	}
}

func TestHandshakeRefused(t *testing.T) {
	// Two node ids whose CAS node numbers collide.
	numOf := func(id string) uint16 {
		r, err := New(Config{Listen: "x:1", Peers: []string{"y:1"}, NodeID: id})
		require.NoError(t, err)
		return r.node
	}
	clash := map[uint16]string{}
	var idA, idB string
	for i := 0; idB == ""; i++ {
		id := "node" + strconv.Itoa(i)
		num := numOf(id)
		if other, ok := clash[num]; ok {
			idA, idB = other, id
		}
		clash[num] = id
	}

	tests := []struct {
		name       string
		a, b       Config
		logA, logB string // what each side logs about the other
	}{
		{"wrong secret",
			Config{NodeID: "a", Secret: []byte("one")}, Config{NodeID: "b", Secret: []byte("two")},
			"cannot prove the shared secret", "cannot prove the shared secret"},
		{"secret on one side only",
			Config{NodeID: "a", Secret: []byte("one")}, Config{NodeID: "b"},
			"cannot prove the shared secret", "cannot prove the shared secret"},
		{"other group",
			Config{NodeID: "a", Group: "g1"}, Config{NodeID: "b", Group: "g2"},
			`group "g1" is not "g2"`, `group "g2" is not "g1"`},
		{"node number clash",
			Config{NodeID: idA}, Config{NodeID: idB},
			"share the CAS node number", "share the CAS node number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addrA, addrB := freeAddr(t), freeAddr(t)
			tt.a.Listen, tt.a.Peers = addrA, []string{addrB}
			tt.b.Listen, tt.b.Peers = addrB, []string{addrA}
			a, b := newTestNode(t, tt.a), newTestNode(t, tt.b)
			a.start(t)
			b.start(t)
			// A dialer logs only the first of a run of failures (often
			// "connection refused", while its peer starts), so the cause
			// shows in one log or the other.
			require.Eventually(t, func() bool {
				return strings.Contains(a.log.String(), tt.logA) || strings.Contains(b.log.String(), tt.logB)
			}, syncWait, poll)
			for _, n := range []*testNode{a, b} {
				require.Equal(t, "connecting", peerState(n, 0))
				require.Zero(t, n.r.links[0].ackedSeq.Load())
			}
			write(t, a, set("k", "v", store.SetOptions{}))
			_, ok := lookup(t, b.st, "k")
			require.False(t, ok)
		})
	}
}

// dialNode runs the dialer's side of the handshake against n, as a peer
// with the given id would.
func dialNode(t *testing.T, n *testNode, id string) (net.Conn, *bufio.Reader) {
	t.Helper()
	d, err := New(Config{Listen: "unused:1", Peers: []string{"unused:2"}, NodeID: id, Group: n.r.cfg.Group, Secret: n.r.cfg.Secret})
	require.NoError(t, err)
	require.NotEqual(t, n.r.node, d.node)
	conn, err := net.Dial("tcp", n.r.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	peer, _, br, err := d.dialHandshake(conn)
	require.NoError(t, err)
	require.Equal(t, n.r.cfg.NodeID, peer)
	return conn, br
}

// requireClosed checks that the other end closes conn, within syncWait.
func requireClosed(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(syncWait)))
	_, err := io.Copy(io.Discard, br)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the connection was not closed")
}

func TestInbound(t *testing.T) {
	n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{freeAddr(t)}, NodeID: "in", Secret: []byte("s")})
	n.start(t)
	conn, br := dialNode(t, n, "peer")
	c := newCodecs()
	readAck := func() frame {
		t.Helper()
		var f frame
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(syncWait)))
		_, err := c.readMsg(br, nil, maxHeader, &f)
		require.NoError(t, err)
		return f
	}
	encode := func(frames ...frame) []byte {
		var out []byte
		for _, f := range frames {
			out = c.appendMsg(out, &f)
			out = append(out, bytes.Repeat([]byte("v"), int(f.VLen))...)
		}
		return out
	}
	send := func(frames ...frame) {
		t.Helper()
		_, err := conn.Write(encode(frames...))
		require.NoError(t, err)
	}
	// Versions an hour ahead of the node's clock (within the day it follows).
	base := (uint64(time.Now().UnixMilli()-hlcEpoch) + 3600_000) << wallShift

	send(frame{Op: opSet, Seq: 1, Key: []byte("a"), CAS: base + 10, VLen: 3, Flags: 9},
		frame{Op: opSet, Seq: 2, Key: []byte("b"), CAS: base + 10, VLen: 1})
	f := readAck()
	for f.Seq < 2 { // acks are cumulative; one may cover both
		require.Equal(t, uint8(opAck), f.Op)
		f = readAck()
	}
	require.Equal(t, frame{Op: opAck, Seq: 2}, f)
	s, ok := lookup(t, n.st, "a")
	require.True(t, ok)
	require.Equal(t, itemState{value: "vvv", flags: 9, cas: base + 10}, s)

	// The node's clock moved past what it received.
	_, err := n.st.Set([]byte("local"), []byte("x"), store.SetOptions{})
	require.NoError(t, err)
	s, _ = lookup(t, n.st, "local")
	require.Greater(t, s.cas, uint64(base+10))

	// An older state is refused, counted and nacked before the ack that
	// covers it; then a deletion and a mark.
	send(frame{Op: opSet, Seq: 3, Key: []byte("a"), CAS: base + 5, VLen: 1},
		frame{Op: opDel, Seq: 4, Key: []byte("b"), CAS: base + 20},
		frame{Op: opMark, Seq: 4})
	var nacks []uint64
	for f = readAck(); f.Op != opMark; f = readAck() {
		switch f.Op {
		case opNack:
			require.Empty(t, nacks, "one nack")
			require.Zero(t, f.Seq+uint64(len(f.Key))+uint64(f.VLen))
			nacks = append(nacks, f.CAS)
		case opAck:
			if f.Seq >= 3 {
				require.NotEmpty(t, nacks, "the nack comes before the ack of its frame")
			}
		default:
			t.Fatalf("unexpected %+v", f)
		}
	}
	require.Equal(t, []uint64{base + 5}, nacks)
	require.Equal(t, uint64(4), f.Seq, "the mark is echoed")
	s, _ = lookup(t, n.st, "a")
	require.Equal(t, "vvv", s.value)
	_, ok = lookup(t, n.st, "b")
	require.False(t, ok)
	st := statsOf(n.r)
	require.Equal(t, "1", st["states_stale"])
	require.Equal(t, "2", st["states_applied"])
	require.Equal(t, "peer", st["in0:node_id"])
	require.Equal(t, "4", st["in0:applied_seq"])

	// A resync's older item (sequence 0) is refused without a nack.
	send(frame{Op: opSet, Key: []byte("a"), CAS: base + 1, VLen: 1}, frame{Op: opMark, Seq: 4})
	f = readAck()
	require.Equal(t, frame{Op: opMark, Seq: 4}, f)

	// A flush.
	send(frame{Op: opFlush, Seq: 5, CAS: base + 30})
	require.Equal(t, uint64(5), readAck().Seq)
	_, ok = lookup(t, n.st, "a")
	require.False(t, ok)

	// A value larger than the item size limit closes the link before a
	// byte of it is read or applied.
	// The write itself may fail: the node closes on the header, and a
	// close with the value unread resets the connection.
	_, _ = conn.Write(encode(frame{Op: opSet, Seq: 6, Key: []byte("huge"), CAS: base + 40, VLen: uint32(n.st.ItemSizeMax()) + 1}))
	requireClosed(t, conn, br)
	require.Eventually(t, func() bool { return n.r.badLinks.Load() == 1 }, syncWait, poll)
	_, ok = lookup(t, n.st, "huge")
	require.False(t, ok)
}

// TestInboundBatch sends many frames in one write, so that the node
// applies most of them in prefetched batches: the result must be what
// applying them one by one in order gives, nacks included.
func TestInboundBatch(t *testing.T) {
	n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{freeAddr(t)}, NodeID: "in", Secret: []byte("s")})
	n.start(t)
	conn, br := dialNode(t, n, "peer")
	base := (uint64(time.Now().UnixMilli()-hlcEpoch) + 3600_000) << wallShift

	var (
		out   []byte
		seq   uint64
		want  = map[string]itemState{}
		nacks []uint64
	)
	add := func(f frame, value string) {
		seq++
		f.Seq, f.VLen = seq, uint32(len(value))
		out = append(appendFrame(out, &f), value...)
	}
	for round := range 3 { // each key written three times, newer each time
		for k := range 40 {
			key := fmt.Sprintf("key%02d", k)
			cas := base + uint64(round*100+k)
			value := strings.Repeat(string(rune('a'+round)), k+1)
			add(frame{Op: opSet, Key: []byte(key), Flags: uint32(round), CAS: cas}, value)
			want[key] = itemState{value: value, flags: uint32(round), cas: cas}
		}
		if round == 0 {
			// A resync's items (sequence 0: an older one refused without a
			// nack, a new one applied) and its mark, amid the stream.
			out = append(appendFrame(out, &frame{Op: opSet, Key: []byte("key00"), CAS: base - 1, VLen: 1}), 'r')
			out = append(appendFrame(out, &frame{Op: opSet, Key: []byte("resynced"), CAS: base, VLen: 1}), 'r')
			want["resynced"] = itemState{value: "r", cas: base}
			out = appendFrame(out, &frame{Op: opMark, Seq: seq})
		}
	}
	for k := 0; k < 40; k += 4 {
		key := fmt.Sprintf("key%02d", k)
		add(frame{Op: opDel, Key: []byte(key), CAS: base + 1000}, "")
		delete(want, key)
	}
	for k := 1; k < 40; k += 4 { // older than what the node holds
		stale := base + uint64(k)
		add(frame{Op: opSet, Key: []byte(fmt.Sprintf("key%02d", k)), CAS: stale}, "old")
		nacks = append(nacks, stale)
	}
	_, err := conn.Write(out)
	require.NoError(t, err)

	c := newCodecs()
	var got []uint64
	marked := false
	for acked := uint64(0); acked < seq || !marked; {
		var f frame
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(syncWait)))
		_, err := c.readMsg(br, nil, maxHeader, &f)
		require.NoError(t, err)
		switch f.Op {
		case opNack:
			got = append(got, f.CAS)
		case opAck:
			require.Greater(t, f.Seq, acked)
			acked = f.Seq
		case opMark:
			require.False(t, marked, "one mark echoed")
			require.Equal(t, uint64(40), f.Seq)
			require.Equal(t, uint64(40), acked, "the mark comes after the ack of what it follows")
			marked = true
		default:
			t.Fatalf("unexpected %+v", f)
		}
	}
	require.Equal(t, nacks, got, "every stale write nacked, in order, before the last ack")
	require.Equal(t, want, contents(n.st))
	st := statsOf(n.r)
	require.Equal(t, strconv.Itoa(len(nacks)+1), st["states_stale"]) // and the resync's older item
	require.Equal(t, "121", st["states_applied"])
}

func TestInboundMalformed(t *testing.T) {
	c := newCodecs()
	tests := []struct {
		name string
		in   []byte
	}{
		{"zero length", []byte{0, 0, 0, 0}},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff}},
		{"not msgpack", prefixed([]byte{0xc1})},
		{"unknown op", c.appendMsg(nil, &frame{Op: 9, Seq: 1})},
		{"ack from a dialer", c.appendMsg(nil, &frame{Op: opAck, Seq: 1})},
		{"empty key", c.appendMsg(nil, &frame{Op: opSet, Seq: 1, CAS: 1})},
		{"delete with a value", append(c.appendMsg(nil, &frame{Op: opDel, Seq: 1, Key: []byte("k"), CAS: 1, VLen: 1}), 'v')},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{freeAddr(t)}, NodeID: "m"})
			n.start(t)
			conn, br := dialNode(t, n, "peer")
			_, err := conn.Write(tt.in)
			require.NoError(t, err)
			requireClosed(t, conn, br)
			require.Eventually(t, func() bool { return n.r.badLinks.Load() == 1 }, syncWait, poll)
			require.Empty(t, contents(n.st))
		})
	}
}

// TestGarbageOnPort: docs/replication.md, failure cases: "garbage on the
// replication port: connection closed, bad_links counted, nothing applied".
func TestGarbageOnPort(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"text", []byte("get foo\r\n")},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff}},
		{"wrong magic", newCodecs().appendMsg(nil, &hello{Magic: "HTTP", Version: version})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{freeAddr(t)}, NodeID: "g"})
			n.start(t)
			conn, err := net.Dial("tcp", n.r.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.Write(tt.in)
			require.NoError(t, err)
			requireClosed(t, conn, bufio.NewReader(conn))
			require.Empty(t, contents(n.st))
			require.Eventually(t, func() bool { return n.r.badLinks.Load() == 1 }, prompt, poll,
				"bad_links is %d", n.r.badLinks.Load())
		})
	}
}

func TestStatsNames(t *testing.T) {
	nodes := startGroup(t, 2, AckAll)
	waitInSync(t, nodes...)
	write(t, nodes[0], set("k", "v", store.SetOptions{}))
	write(t, nodes[1], set("j", "v", store.SetOptions{}))
	write(t, nodes[1], func(st *store.Store) error { return st.Delete([]byte("j"), store.DeleteOptions{}) })
	// Each node's inbound link has applied a frame: its handshake is over
	// (the atomic orders it before the Stats below; see statsOf).
	for _, n := range nodes {
		require.Eventually(t, func() bool {
			n.r.inMu.Lock()
			defer n.r.inMu.Unlock()
			for _, in := range n.r.inbound {
				if in.lastSeq.Load() == 0 {
					return false
				}
			}
			return len(n.r.inbound) == 1
		}, syncWait, poll)
	}

	st := statsOf(nodes[0].r)
	names := []string{"node_id", "node_number", "group", "listen", "ack", "timeout_ms", "head_seq",
		"writes_degraded", "writes_unsynced", "writes_refused", "states_applied", "states_stale", "writes_overruled", "bad_links",
		"throttled", "throttle_timeouts", "window_bytes", "tombstones", "waiting", "orphans_resent", "warmup_ms", "warmup_refilled_by", "warmup_missing"}
	for _, f := range []string{"addr", "node_id", "state", "pending_bytes", "acked_seq", "lag_seqs", "lag_ms",
		"acks", "ack_p50_us", "ack_p99_us", "ack_p999_us", "reconnects", "timeouts", "resyncs", "overflows"} {
		names = append(names, "peer0:"+f)
	}
	names = append(names, "in0:remote", "in0:node_id", "in0:applied_seq")
	for _, name := range names {
		require.Contains(t, st, name)
	}
	require.Len(t, st, len(names), "no undocumented stats")

	require.Equal(t, "n0", st["node_id"])
	require.Equal(t, strconv.Itoa(int(nodes[0].r.node)), st["node_number"])
	require.Equal(t, "tandem", st["group"])
	require.Equal(t, nodes[0].r.Addr().String(), st["listen"])
	require.Equal(t, "all", st["ack"])
	require.Equal(t, strconv.FormatInt(longTimeout.Milliseconds(), 10), st["timeout_ms"])
	require.Equal(t, "1", st["head_seq"])
	require.Equal(t, "0", st["writes_degraded"])
	require.Equal(t, "0", st["writes_unsynced"])
	require.Equal(t, "0", st["writes_refused"])
	require.Equal(t, "1", st["states_applied"])
	require.Equal(t, "0", st["states_stale"])
	require.Equal(t, "0", st["writes_overruled"])
	require.Equal(t, "0", st["bad_links"])
	require.Equal(t, "0", st["throttled"])
	require.Equal(t, "0", st["throttle_timeouts"])
	require.Equal(t, strconv.Itoa(1<<20), st["window_bytes"])
	require.Equal(t, "1", st["tombstones"])
	require.Equal(t, "0", st["waiting"])
	require.Equal(t, nodes[1].r.Addr().String(), st["peer0:addr"])
	require.Equal(t, "n1", st["peer0:node_id"])
	require.Equal(t, "in_sync", st["peer0:state"])
	require.Equal(t, "0", st["peer0:pending_bytes"])
	require.Equal(t, "1", st["peer0:acked_seq"])
	require.Equal(t, "0", st["peer0:lag_seqs"])
	require.NotEqual(t, "0", st["peer0:acks"])
	require.Equal(t, "0", st["peer0:reconnects"])
	require.Equal(t, "0", st["peer0:timeouts"])
	require.Equal(t, "1", st["peer0:resyncs"])
	require.Equal(t, "0", st["peer0:overflows"])
	require.Equal(t, "n1", st["in0:node_id"])
	require.Equal(t, "2", st["in0:applied_seq"])
	require.Contains(t, st["in0:remote"], "127.0.0.1:")

	require.Equal(t, map[string]string{
		"repl_ack":             "all",
		"repl_peers":           "1",
		"repl_peers_in_sync":   "1",
		"repl_head_seq":        "1",
		"repl_writes_degraded": "0",
		"repl_writes_unsynced": "0",
		"repl_writes_refused":  "0",
		"repl_states_applied":  "1",
		"repl_throttled":       "0",
		"repl_waiting":         "0",
	}, summaryOf(nodes[0].r))
}

// TestWritesUnsynced: writes made while a peer is not in sync (its link
// still connecting, here) are counted, and only those.
func TestWritesUnsynced(t *testing.T) {
	a, b := newPair(t)
	a.start(t) // b not yet listening: a's link to it keeps connecting
	for i := range 3 {
		write(t, a, set("early"+strconv.Itoa(i), "v", store.SetOptions{}))
	}
	require.Equal(t, uint64(3), a.r.unsynced.Load())
	require.Equal(t, "3", summaryOf(a.r)["repl_writes_unsynced"])
	b.start(t)
	waitInSync(t, a, b)
	write(t, a, set("late", "v", store.SetOptions{}))
	write(t, b, set("late", "w", store.SetOptions{}))
	require.Equal(t, uint64(3), a.r.unsynced.Load(), "writes once in sync are not counted")
	require.Zero(t, b.r.unsynced.Load())
}

// TestStatsDuringInboundHandshake reads the stats while an inbound link is
// in its handshake, as "stats replication" may at any time: under -race,
// Stats (which reads the link's node id under inMu) must not race with
// serveInbound (which writes it without inMu once the handshake is done).
func TestStatsDuringInboundHandshake(t *testing.T) {
	n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{freeAddr(t)}, NodeID: "a"})
	n.start(t)
	conn, err := net.Dial("tcp", n.r.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	require.Eventually(t, func() bool { _, ok := statsOf(n.r)["in0:remote"]; return ok }, syncWait, poll)
	require.Empty(t, statsOf(n.r)["in0:node_id"], "no node id before the handshake")

	d, err := New(Config{Listen: "unused:1", Peers: []string{"unused:2"}, NodeID: "b"})
	require.NoError(t, err)
	_, _, _, err = d.dialHandshake(conn)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return statsOf(n.r)["in0:node_id"] == "b" }, syncWait, poll)
}

// TestCloseDuringRedial: Close must interrupt a handshake stuck on a peer
// that accepts but never answers, also when the link had been connected
// before (link.dial: "so that Close interrupts a stuck handshake").
func TestCloseDuringRedial(t *testing.T) {
	a, b := newPair(t)
	a.start(t)
	b.start(t)
	waitInSync(t, a, b)
	b.close(t)
	waitPeerState(t, a, 0, "connecting")
	silent := newSilentPeer(t, b.r.cfg.Listen)
	require.Eventually(t, func() bool { return silent.read.Load() > 0 }, syncWait, poll, "a redials")

	a.closed = true
	start := time.Now()
	require.NoError(t, a.r.Close())
	require.Less(t, time.Since(start), prompt, "Close waited for the handshake timeout")
}

func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		addrs := []string{freeAddr(t), freeAddr(t)}
		var nodes []*testNode
		for i := range 2 {
			r, err := New(Config{Listen: addrs[i], Peers: []string{addrs[1-i]}, NodeID: "n" + strconv.Itoa(i), Timeout: longTimeout, Log: io.Discard})
			require.NoError(t, err)
			st, err := store.New(store.Config{MemoryLimit: 8 << 20, Observer: r})
			require.NoError(t, err)
			require.NoError(t, r.Start(st))
			nodes = append(nodes, &testNode{r: r, st: st, log: &logBuf{}})
		}
		waitInSync(t, nodes...)
		for i := range 100 {
			write(t, nodes[i%2], set("k"+strconv.Itoa(i), "v", store.SetOptions{}))
		}
		for _, n := range nodes {
			require.NoError(t, n.r.Close())
			require.NoError(t, n.st.Close())
		}
	}()
	ok := assertEventually(func() bool { return runtime.NumGoroutine() <= base }, syncWait)
	if !ok {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
	}
}

func assertEventually(cond func() bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll)
	}
	return true
}

// countAcker records its calls.
type countAcker struct {
	mu    sync.Mutex
	calls []error
	done  chan struct{}
}

func newCountAcker() *countAcker { return &countAcker{done: make(chan struct{}, 8)} }

func (a *countAcker) Acked(_ uint64, err error) {
	a.mu.Lock()
	a.calls = append(a.calls, err)
	a.mu.Unlock()
	a.done <- struct{}{}
}

func (a *countAcker) result(t *testing.T) []error {
	t.Helper()
	select {
	case <-a.done:
	case <-time.After(syncWait):
		t.Fatal("Acked not called")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// TestAwaitCallbacks: a waiter not decided at once is called back exactly
// once: by the sweeper at the timeout (the peer marked out of sync), or
// when replication stops first.
func TestAwaitCallbacks(t *testing.T) {
	const timeout = 200 * time.Millisecond
	fake := newFakePeer(t, "tandem")
	n := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{fake.ln.Addr().String()}, NodeID: "t", Timeout: timeout})
	n.start(t)
	waitPeerState(t, n, 0, "in_sync")

	var ackers []*countAcker
	start := time.Now()
	for i := range 3 {
		_, err := n.st.Set([]byte("k"+strconv.Itoa(i)), []byte("v"), store.SetOptions{})
		require.NoError(t, err)
		a := newCountAcker()
		done, err := n.r.Await(n.r.Head(), a)
		require.False(t, done, "a peer in sync that has not acked")
		require.NoError(t, err)
		ackers = append(ackers, a)
	}
	require.Equal(t, "3", statsOf(n.r)["waiting"])
	for i, a := range ackers {
		require.Equal(t, []error{nil}, a.result(t), "waiter %d", i)
	}
	require.GreaterOrEqual(t, time.Since(start), timeout)
	st := statsOf(n.r)
	require.Equal(t, "out_of_sync", st["peer0:state"])
	require.Equal(t, "0", st["waiting"])
	// One timeout, one degraded batch: the others were decided by it.
	require.Equal(t, "1", st["writes_degraded"])
	// Nothing in sync is left to wait for: decided at once.
	done, err := n.r.Await(n.r.Head(), newCountAcker())
	require.True(t, done)
	require.NoError(t, err)

	// Stopping replication answers whoever still waits, once: under all,
	// the closed link leaves no peer to wait for.
	fake2 := newFakePeer(t, "tandem")
	m := newTestNode(t, Config{Listen: freeAddr(t), Peers: []string{fake2.ln.Addr().String()}, NodeID: "u", Timeout: time.Hour})
	m.start(t)
	waitPeerState(t, m, 0, "in_sync")
	_, err = m.st.Set([]byte("k"), []byte("v"), store.SetOptions{})
	require.NoError(t, err)
	a := newCountAcker()
	done, err = m.r.Await(m.r.Head(), a)
	require.False(t, done)
	require.NoError(t, err)
	m.closed = true
	require.NoError(t, m.r.Close())
	require.Equal(t, []error{nil}, a.result(t))
	require.Empty(t, a.done, "called more than once")
}

// kickLink is a link of an unstarted replicator wired to one end of a
// loopback TCP connection; far is the other end, the peer.
func kickLink(t *testing.T) (r *Replicator, l *link, far net.Conn) {
	t.Helper()
	r, err := New(Config{Listen: "127.0.0.1:0", Peers: []string{"unused:1"}, NodeID: "k"})
	require.NoError(t, err)
	r.epoch = time.Now()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	near, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	far, err = ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { near.Close(); far.Close() })
	l = r.links[0]
	raw, err := near.(syscall.Conn).SyscallConn()
	require.NoError(t, err)
	l.conn, l.raw = near, raw
	return r, l, far
}

// TestKickOverdue: frames the writer goroutine has not taken within overdue
// are written by whoever kicks (a goroutine about to wait for them), and
// younger ones, or any while a write is in flight, are left to the writer.
func TestKickOverdue(t *testing.T) {
	r, l, far := kickLink(t)
	frames := appendFrame(nil, &frame{Op: opDel, Key: []byte("k"), CAS: 7, Seq: 1})
	require.True(t, l.pushResync(frames))
	r.kick()
	require.Len(t, l.buf, len(frames), "a young frame is left to the writer")

	l.since -= overdue
	l.writing = true
	r.kick()
	require.Len(t, l.buf, len(frames), "one write at a time: the stream stays in order")

	l.writing = false
	r.kick()
	require.Empty(t, l.buf)
	require.False(t, l.writing)
	require.Len(t, l.sent, 1, "its ack latency is measured like the writer's")
	got := make([]byte, len(frames))
	require.NoError(t, far.SetReadDeadline(time.Now().Add(syncWait)))
	_, err := io.ReadFull(far, got)
	require.NoError(t, err)
	require.Equal(t, frames, got)
}

// TestKickFullSocket: a kick never waits for a peer that does not read (it
// may run on another peer's ack reader or on the timeout sweeper): what the
// socket does not take goes back to the front of the buffer, in order.
func TestKickFullSocket(t *testing.T) {
	r, l, far := kickLink(t)
	const pushedByte = 0xff
	big := make([]byte, 16<<20) // far more than both sockets' buffers
	for i := range 251 {
		big[i] = byte(i)
	}
	for n := 251; n < len(big); n *= 2 {
		copy(big[n:], big[:n])
	}
	l.buf = append(l.buf, big...)
	l.since = -overdue
	// A writer pushing all along: what it adds after the kick took the
	// buffer must stay behind the rest.
	stop, pushed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pushed)
		for {
			select {
			case <-stop:
				return
			default:
			}
			l.mu.Lock()
			l.buf = append(l.buf, pushedByte)
			l.mu.Unlock()
		}
	}()
	done := make(chan struct{})
	go func() {
		r.kick()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(syncWait):
		t.Fatal("kick blocked on a peer that does not read")
	}
	close(stop)
	<-pushed
	require.False(t, l.writing)
	// big holds no pushed byte (0xff): the first one ends the rest.
	i := bytes.IndexByte(l.buf, pushedByte)
	if i < 0 {
		i = len(l.buf)
	}
	n := len(big) - i
	require.Positive(t, n, "the socket took a first part")
	require.Less(t, n, len(big), "the socket took everything: make big bigger")
	require.Equal(t, big[n:], l.buf[:i], "the rest waits for the writer, first")
	require.Empty(t, bytes.Trim(l.buf[i:], string([]byte{pushedByte})), "and what was pushed meanwhile follows it")

	got := make([]byte, n)
	require.NoError(t, far.SetReadDeadline(time.Now().Add(syncWait)))
	_, err := io.ReadFull(far, got)
	require.NoError(t, err)
	require.Equal(t, big[:n], got)
}

// TestClockAhead: a node whose clock is ahead of the others'. Two days
// ahead, the others' clocks follow its versions; twenty years ahead (more
// than maxAheadMs) they do not. Either way, writes made elsewhere to the
// keys it wrote, and new keys after its flush_all, must outrank its
// versions, or its peers would refuse them (or hide them) and the replicas
// diverge.
func TestClockAhead(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ahead    time.Duration
		followed bool
	}{
		{"two days", 48 * time.Hour, true},
		{"twenty years", 20 * 365 * 24 * time.Hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) { testClockAhead(t, tc.ahead, tc.followed) })
	}
}

func testClockAhead(t *testing.T, ahead time.Duration, followed bool) {
	a, b := newPair(t)
	a.r.clk.ms = func() int64 { return time.Now().Add(ahead).UnixMilli() }
	a.start(t)
	b.start(t)
	nodes := []*testNode{a, b}
	waitInSync(t, a, b)

	for _, k := range []string{"s", "app", "n", "t", "d"} {
		write(t, a, set(k, "1", store.SetOptions{}))
	}
	fromA, ok := requireSame(t, nodes, "s")
	require.True(t, ok)
	require.Equal(t, followed, b.r.clk.next() > fromA.cas, "b's clock follows a's versions: %v", followed)

	tests := []struct {
		key  string
		op   func(st *store.Store) error
		want string // "" for absent
	}{
		{"s", set("s", "from b", store.SetOptions{}), "from b"},
		{"app", func(st *store.Store) error {
			_, err := st.Set([]byte("app"), []byte("+b"), store.SetOptions{Mode: store.ModeAppend})
			return err
		}, "1+b"},
		{"n", func(st *store.Store) error {
			_, err := st.Arith([]byte("n"), store.ArithOptions{Delta: 5})
			return err
		}, "6"},
		{"t", func(st *store.Store) error { return st.Touch([]byte("t"), 3600) }, "1"},
		{"d", func(st *store.Store) error { return st.Delete([]byte("d"), store.DeleteOptions{}) }, ""},
		// d's tombstone on b carries b's version above a's: a new add of
		// the key on b must outrank that too.
		{"d", func(st *store.Store) error {
			_, err := st.Set([]byte("d"), []byte("again"), store.SetOptions{Mode: store.ModeAdd})
			return err
		}, "again"},
	}
	cases := map[uint64]string{} // no two writes share a CAS
	for _, tt := range tests {
		before, _ := lookup(t, b.st, tt.key)
		write(t, b, tt.op)
		got, ok := requireSame(t, nodes, tt.key)
		require.Equal(t, tt.want != "", ok, "%s", tt.key)
		if ok {
			require.Equal(t, tt.want, got.value, "%s", tt.key)
			require.Greater(t, got.cas, max(before.cas, fromA.cas), "%s: b's write outranks a's version", tt.key)
			require.Equal(t, uint64(b.r.node), got.cas&nodeMask, "%s: the CAS names b", tt.key)
			require.NotContains(t, cases, got.cas, "%s has the CAS of %s", tt.key, cases[got.cas])
			cases[got.cas] = tt.key
		}
	}
	// a's next write of a key b wrote wins again, everywhere.
	write(t, a, set("s", "from a", store.SetOptions{}))
	got, _ := requireSame(t, nodes, "s")
	require.Equal(t, "from a", got.value)

	// After a's flush_all, a new key written on b is visible everywhere.
	write(t, a, func(st *store.Store) error { st.FlushAll(0); return nil })
	_, ok = requireSame(t, nodes, "s")
	require.False(t, ok, "flushed")
	write(t, b, set("new", "after the flush", store.SetOptions{}))
	got, ok = requireSame(t, nodes, "new")
	require.True(t, ok, "a write after a's flush_all is hidden by the flush's version")
	require.Equal(t, "after the flush", got.value)
}
