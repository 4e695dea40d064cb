package store

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// repEvent is what a repObserver heard.
type repEvent struct {
	kind  string // stored, deleted, flushed
	key   string
	value string
	cas   uint64
	ttl   int64
	at    int64
}

// repObserver is a Versioner: it hands out increasing CAS values, as a
// replication clock does, and records what the store reports.
type repObserver struct {
	mu     sync.Mutex
	cas    uint64
	events []repEvent
}

func (o *repObserver) NextCAS(cur uint64) uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cas = max(o.cas, cur) + 10 // gaps, so that tests can place versions between two
	return o.cas
}

func (o *repObserver) Stored(it Item) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, repEvent{kind: "stored", key: string(it.Key()), value: string(it.AppendValue(nil)), cas: it.CAS, ttl: it.TTL})
}

func (o *repObserver) Deleted(key []byte, cas uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, repEvent{kind: "deleted", key: string(key), cas: cas})
}

func (o *repObserver) Flushed(at int64, cas uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events = append(o.events, repEvent{kind: "flushed", at: at, cas: cas})
}

// take returns the events heard since the last take.
func (o *repObserver) take() []repEvent {
	o.mu.Lock()
	defer o.mu.Unlock()
	ev := o.events
	o.events = nil
	return ev
}

// plainObserver is an Observer that is not a Versioner.
type plainObserver struct{ deleted int }

func (o *plainObserver) Stored(Item)            {}
func (o *plainObserver) Deleted([]byte, uint64) { o.deleted++ }
func (o *plainObserver) Flushed(int64, uint64)  {}

func newReplicaStore(t *testing.T) (*Store, *repObserver, *Clock) {
	t.Helper()
	obs := &repObserver{}
	clk := NewClock()
	s, err := New(Config{MemoryLimit: 8 << 20, Clock: clk, Observer: obs})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s, obs, clk
}

// repPeek reads key without changing it; ok is false on a miss.
func repPeek(t *testing.T, s *Store, key string) (it struct {
	value string
	cas   uint64
	ttl   int64
	bin   bool
}, ok bool) {
	t.Helper()
	err := s.Get([]byte(key), GetOptions{Peek: true}, func(i Item) {
		it.value, it.cas, it.ttl, it.bin = string(i.AppendValue(nil)), i.CAS, i.TTL, i.BinaryKey()
	})
	if err == ErrNotFound {
		return it, false
	}
	require.NoError(t, err)
	return it, true
}

func repSet(t *testing.T, s *Store, key, value string, o SetOptions) uint64 {
	t.Helper()
	cas, err := s.Set([]byte(key), []byte(value), o)
	require.NoError(t, err)
	return cas
}

// tombOf is key's tombstone, if it has one.
func tombOf(s *Store, key string) (tomb, bool) {
	sh, _ := s.shardOf([]byte(key))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t, ok := sh.tombs[key]
	return t, ok
}

func TestReplicaNeedsCAS(t *testing.T) {
	_, err := New(Config{MemoryLimit: 8 << 20, NoCAS: true, Observer: &repObserver{}})
	require.Error(t, err)

	// A plain Observer does not make a replica: CAS may be off.
	s, err := New(Config{MemoryLimit: 8 << 20, NoCAS: true, Observer: &plainObserver{}})
	require.NoError(t, err)
	require.NoError(t, s.Close())
}

func TestReplicaCASFromVersioner(t *testing.T) {
	s, obs, _ := newReplicaStore(t)
	c1 := repSet(t, s, "a", "1", SetOptions{})
	c2 := repSet(t, s, "b", "2", SetOptions{})
	require.Equal(t, uint64(10), c1)
	require.Equal(t, uint64(20), c2)
	res, err := s.Arith([]byte("n"), ArithOptions{Vivify: true, Initial: 1})
	require.NoError(t, err)
	require.Equal(t, uint64(30), res.CAS)
	require.Equal(t, []repEvent{
		{kind: "stored", key: "a", value: "1", cas: 10, ttl: -1},
		{kind: "stored", key: "b", value: "2", cas: 20, ttl: -1},
		{kind: "stored", key: "n", value: "1", cas: 30, ttl: -1},
	}, obs.take())
}

func TestReplicaTouchNewCAS(t *testing.T) {
	tests := []struct {
		name  string
		touch func(t *testing.T, s *Store) (cas uint64)
	}{
		{"touch", func(t *testing.T, s *Store) uint64 {
			require.NoError(t, s.Touch([]byte("k"), 100))
			it, ok := repPeek(t, s, "k")
			require.True(t, ok)
			return it.cas
		}},
		{"gat", func(t *testing.T, s *Store) uint64 {
			var cas uint64
			require.NoError(t, s.Get([]byte("k"), GetOptions{Touch: true, Exptime: 100}, func(it Item) { cas = it.CAS }))
			return cas
		}},
		{"gat without bump", func(t *testing.T, s *Store) uint64 {
			var cas uint64
			require.NoError(t, s.Get([]byte("k"), GetOptions{Touch: true, Exptime: 100, NoBump: true}, func(it Item) { cas = it.CAS }))
			return cas
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, obs, _ := newReplicaStore(t)
			old := repSet(t, s, "k", "v", SetOptions{Exptime: 10})
			obs.take()
			cas := tt.touch(t, s)
			require.Greater(t, cas, old, "a replica's touch is a new version")
			it, ok := repPeek(t, s, "k")
			require.True(t, ok)
			require.Equal(t, cas, it.cas, "the new CAS is stored")
			require.Equal(t, int64(100), it.ttl)
			require.Equal(t, []repEvent{{kind: "stored", key: "k", value: "v", cas: cas, ttl: 100}}, obs.take())

			// A miss changes nothing and reports nothing.
			require.ErrorIs(t, s.Touch([]byte("absent"), 5), ErrNotFound)
			require.Empty(t, obs.take())
		})
	}

	t.Run("not a replica", func(t *testing.T) {
		s, err := New(Config{MemoryLimit: 8 << 20, Clock: NewClock(), Observer: &plainObserver{}})
		require.NoError(t, err)
		defer s.Close()
		old := repSet(t, s, "k", "v", SetOptions{})
		require.NoError(t, s.Touch([]byte("k"), 100))
		it, ok := repPeek(t, s, "k")
		require.True(t, ok)
		require.Equal(t, old, it.cas, "memcached keeps the CAS on touch")
	})
}

func TestReplicaDeleteBuries(t *testing.T) {
	s, obs, _ := newReplicaStore(t)
	old := repSet(t, s, "k", "v", SetOptions{})
	obs.take()
	require.NoError(t, s.Delete([]byte("k"), DeleteOptions{}))
	ev := obs.take()
	require.Len(t, ev, 1)
	require.Equal(t, "deleted", ev[0].kind)
	require.Equal(t, "k", ev[0].key)
	del := ev[0].cas
	require.Greater(t, del, old, "the deletion is a newer version than the item")
	tb, ok := tombOf(s, "k")
	require.True(t, ok)
	require.Equal(t, del, tb.cas)
	require.Equal(t, 1, s.Tombstones())

	// States at or below the deletion's version are refused, without error
	// and without telling the observer.
	for _, cas := range []uint64{1, old, del - 1, del} {
		ok, err := s.ApplyState([]byte("k"), []byte("stale"), 0, 0, cas, false)
		require.NoError(t, err)
		require.False(t, ok, "cas %d <= tombstone %d", cas, del)
		_, found := repPeek(t, s, "k")
		require.False(t, found)
	}
	ok, err := s.ApplyState([]byte("k"), []byte("new"), 7, 0, del+1, false)
	require.NoError(t, err)
	require.True(t, ok)
	it, found := repPeek(t, s, "k")
	require.True(t, found)
	require.Equal(t, "new", it.value)
	require.Equal(t, del+1, it.cas)
	_, ok = tombOf(s, "k")
	require.False(t, ok, "a newer state replaces the tombstone")
	require.Empty(t, obs.take(), "applied states are not reported")

	// A local write of a buried key drops its tombstone too.
	repSet(t, s, "j", "v", SetOptions{})
	require.NoError(t, s.Delete([]byte("j"), DeleteOptions{}))
	require.Equal(t, 1, s.Tombstones())
	repSet(t, s, "j", "again", SetOptions{})
	require.Equal(t, 0, s.Tombstones())
}

// TestReplicaDeleteNewCAS: a deletion's version must be above the deleted
// item's, or a peer (ApplyDelete refuses a version at or below its item's)
// keeps the key this node deleted. A client chooses the version with
// meta E (DeleteOptions.NewCAS).
func TestReplicaDeleteNewCAS(t *testing.T) {
	s, obs, _ := newReplicaStore(t)
	old := repSet(t, s, "k", "v", SetOptions{})
	obs.take()
	require.NoError(t, s.Delete([]byte("k"), DeleteOptions{NewCAS: 1}))
	ev := obs.take()
	require.Len(t, ev, 1)
	require.Greater(t, ev[0].cas, old, "Observer.Deleted: cas is the deletion's version, above the deleted item's CAS")
}

func TestReplicaApplyState(t *testing.T) {
	s, obs, clk := newReplicaStore(t)
	ok, err := s.ApplyState([]byte("k"), []byte("v100"), 3, 0, 100, false)
	require.NoError(t, err)
	require.True(t, ok)

	tests := []struct {
		cas     uint64
		applied bool
	}{
		{50, false},
		{99, false},
		{100, false},
		{101, true},
		{101, false},
		{1 << 62, true},
	}
	want := "v100"
	for _, tt := range tests {
		v := fmt.Sprintf("v%d", tt.cas)
		ok, err := s.ApplyState([]byte("k"), []byte(v), 0, 0, tt.cas, false)
		require.NoError(t, err)
		require.Equal(t, tt.applied, ok, "cas %d", tt.cas)
		if ok {
			want = v
		}
		it, found := repPeek(t, s, "k")
		require.True(t, found)
		require.Equal(t, want, it.value)
	}

	// Absolute expiry, binary key bit.
	ok, err = s.ApplyState([]byte("e"), []byte("x"), 0, clk.Now()+100, 5, true)
	require.NoError(t, err)
	require.True(t, ok)
	it, found := repPeek(t, s, "e")
	require.True(t, found)
	require.Equal(t, int64(100), it.ttl)
	require.True(t, it.bin)
	clk.Advance(100)
	_, found = repPeek(t, s, "e")
	require.False(t, found, "expired at the absolute time")

	// An exptime already past: stored dead.
	_, err = s.ApplyState([]byte("p"), []byte("x"), 0, clk.Now()-10, 5, false)
	require.NoError(t, err)
	_, found = repPeek(t, s, "p")
	require.False(t, found)

	_, err = s.ApplyState(nil, []byte("x"), 0, 0, 5, false)
	require.ErrorIs(t, err, ErrBadKey)
	_, err = s.ApplyState(bytes.Repeat([]byte("k"), MaxKeyLen+1), []byte("x"), 0, 0, 5, false)
	require.ErrorIs(t, err, ErrBadKey)
	_, err = s.ApplyState([]byte("big"), make([]byte, 1<<20), 0, 0, 5, false)
	require.ErrorIs(t, err, ErrTooLarge)

	require.Empty(t, obs.take(), "ApplyState never calls the observer")
}

func TestReplicaApplyDelete(t *testing.T) {
	s, obs, _ := newReplicaStore(t)
	_, err := s.ApplyState([]byte("k"), []byte("v"), 0, 0, 100, false)
	require.NoError(t, err)

	for _, cas := range []uint64{1, 99, 100} {
		require.False(t, s.ApplyDelete([]byte("k"), cas), "cas %d", cas)
		_, found := repPeek(t, s, "k")
		require.True(t, found, "an older deletion keeps the item (cas %d)", cas)
		_, buried := tombOf(s, "k")
		require.False(t, buried, "an older deletion leaves no tombstone")
	}
	require.True(t, s.ApplyDelete([]byte("k"), 150))
	_, found := repPeek(t, s, "k")
	require.False(t, found)
	tb, buried := tombOf(s, "k")
	require.True(t, buried)
	require.Equal(t, uint64(150), tb.cas)
	ok, err := s.ApplyState([]byte("k"), []byte("late"), 0, 0, 120, false)
	require.NoError(t, err)
	require.False(t, ok, "a state older than the deletion arriving late is refused")

	// A deletion of a key this node does not hold still buries it: the
	// older state may be still on its way.
	require.False(t, s.ApplyDelete([]byte("m"), 40))
	tb, buried = tombOf(s, "m")
	require.True(t, buried)
	require.Equal(t, uint64(40), tb.cas)
	// An older deletion does not lower the tombstone.
	require.False(t, s.ApplyDelete([]byte("m"), 30))
	tb, _ = tombOf(s, "m")
	require.Equal(t, uint64(40), tb.cas)
	ok, err = s.ApplyState([]byte("m"), []byte("x"), 0, 0, 35, false)
	require.NoError(t, err)
	require.False(t, ok)
	ok, err = s.ApplyState([]byte("m"), []byte("x"), 0, 0, 41, false)
	require.NoError(t, err)
	require.True(t, ok)

	require.False(t, s.ApplyDelete(nil, 1))
	require.False(t, s.ApplyDelete(bytes.Repeat([]byte("k"), MaxKeyLen+1), 1))
	require.Empty(t, obs.take(), "ApplyDelete never calls the observer")
}

func TestNotReplicaNoTombstones(t *testing.T) {
	obs := &plainObserver{}
	s, err := New(Config{MemoryLimit: 8 << 20, Clock: NewClock(), Observer: obs})
	require.NoError(t, err)
	defer s.Close()
	repSet(t, s, "k", "v", SetOptions{})
	require.NoError(t, s.Delete([]byte("k"), DeleteOptions{}))
	require.Equal(t, 1, obs.deleted)
	require.False(t, s.ApplyDelete([]byte("j"), 5))
	require.Equal(t, 0, s.Tombstones())
}

func TestReplicaApplyFlush(t *testing.T) {
	apply := func(t *testing.T, s *Store, key string, cas uint64) {
		t.Helper()
		ok, err := s.ApplyState([]byte(key), []byte(key), 0, 0, cas, false)
		require.NoError(t, err)
		require.True(t, ok)
	}
	for _, ago := range []int64{0, 1, 100} {
		t.Run(fmt.Sprintf("%ds ago", ago), func(t *testing.T) {
			s, obs, clk := newReplicaStore(t)
			apply(t, s, "old", 10)
			apply(t, s, "older", 5)
			apply(t, s, "new", 30)
			s.ApplyFlush(clk.Now()-ago, 20)
			for key, live := range map[string]bool{"old": false, "older": false, "new": true} {
				_, found := repPeek(t, s, key)
				require.Equal(t, live, found, key)
			}
			// A state newer than the flush, applied after it, is live; an
			// older one is not.
			apply(t, s, "after", 25)
			_, found := repPeek(t, s, "after")
			require.True(t, found)
			_, err := s.ApplyState([]byte("before"), []byte("x"), 0, 0, 15, false)
			require.NoError(t, err)
			_, found = repPeek(t, s, "before")
			require.False(t, found)
			// Local writes get versions from the Versioner, above the flush.
			obs.mu.Lock()
			obs.cas = 100
			obs.mu.Unlock()
			repSet(t, s, "local", "x", SetOptions{})
			_, found = repPeek(t, s, "local")
			require.True(t, found)
			require.Empty(t, filterKind(obs.take(), "flushed"), "ApplyFlush never calls the observer")
		})
	}

	t.Run("delayed", func(t *testing.T) {
		// A delayed flush_all on one node and its ApplyFlush on another
		// hide items at the same second (memcached's: one before the
		// flush time when CAS is on).
		src, srcObs, srcClk := newReplicaStore(t)
		dst, dstObs, dstClk := newReplicaStore(t)
		dstClk.Set(srcClk.Now())
		repSet(t, src, "k", "v", SetOptions{})
		apply(t, dst, "k", 10)
		src.FlushAll(10)
		ev := filterKind(srcObs.take(), "flushed")
		require.Len(t, ev, 1)
		require.Equal(t, srcClk.Now()+10, ev[0].at)
		require.Zero(t, ev[0].cas, "a delayed flush has no version")
		dst.ApplyFlush(ev[0].at, ev[0].cas)
		for i := range 12 {
			_, inSrc := repPeek(t, src, "k")
			_, inDst := repPeek(t, dst, "k")
			require.Equal(t, inSrc, inDst, "%ds after the flush", i)
			require.Equal(t, i < 9, inDst, "%ds after the flush", i)
			srcClk.Advance(1)
			dstClk.Advance(1)
		}
		apply(t, dst, "later", 11)
		_, found := repPeek(t, dst, "later")
		require.True(t, found, "stored after the flush time")
		require.Empty(t, dstObs.take())
	})

	t.Run("local flush reports", func(t *testing.T) {
		s, obs, clk := newReplicaStore(t)
		repSet(t, s, "k", "v", SetOptions{})
		obs.take()
		s.FlushAll(0)
		ev := obs.take()
		require.Len(t, ev, 1)
		require.Equal(t, "flushed", ev[0].kind)
		require.Equal(t, clk.Now(), ev[0].at)
		require.Greater(t, ev[0].cas, uint64(10))
		_, found := repPeek(t, s, "k")
		require.False(t, found)
	})
}

func filterKind(ev []repEvent, kind string) []repEvent {
	var out []repEvent
	for _, e := range ev {
		if e.kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// forEachKeys walks every part and returns the keys seen, sorted, checking
// each item's value and CAS against what Get sees.
func forEachKeys(t *testing.T, s *Store) []string {
	t.Helper()
	type seen struct {
		value string
		cas   uint64
	}
	all := map[string]seen{}
	var keys []string
	for p := 0; p < s.Parts(); p++ {
		s.ForEach(p, func(it Item) {
			k := string(it.Key())
			_, dup := all[k]
			require.False(t, dup, "key %q visited twice", k)
			all[k] = seen{string(it.AppendValue(nil)), it.CAS}
			keys = append(keys, k)
		})
	}
	for k, v := range all {
		it, ok := repPeek(t, s, k)
		require.True(t, ok, k)
		require.Equal(t, it.value, v.value, k)
		require.Equal(t, it.cas, v.cas, k)
	}
	sort.Strings(keys)
	return keys
}

func TestReplicaForEach(t *testing.T) {
	s, _, clk := newReplicaStore(t)
	require.Equal(t, nShards, s.Parts())
	require.Empty(t, forEachKeys(t, s))

	var live []string
	for i := range 300 {
		k := fmt.Sprintf("live%03d", i)
		repSet(t, s, k, strconv.Itoa(i), SetOptions{})
		live = append(live, k)
		repSet(t, s, fmt.Sprintf("brief%03d", i), "x", SetOptions{Exptime: 5})
	}
	// A chained item (larger than the largest chunk) is visited once.
	big := bytes.Repeat([]byte("b"), 600<<10)
	_, err := s.Set([]byte("big"), big, SetOptions{})
	require.NoError(t, err)
	live = append(live, "big")
	sort.Strings(live)
	clk.Advance(5)
	require.Equal(t, live, forEachKeys(t, s), "expired items are not visited")

	s.FlushAll(0)
	require.Empty(t, forEachKeys(t, s), "flushed items are not visited")
	repSet(t, s, "fresh", "v", SetOptions{})
	require.Equal(t, []string{"fresh"}, forEachKeys(t, s))

	require.NoError(t, s.Delete([]byte("fresh"), DeleteOptions{}))
	require.Empty(t, forEachKeys(t, s), "deleted items are not visited")
}

// sameShardKeys returns n keys that all fall in shard 0.
func sameShardKeys(s *Store, n int) []string {
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := "t" + strconv.Itoa(i)
		if sh, _ := s.shardOf([]byte(k)); sh == &s.shards[0] {
			keys = append(keys, k)
		}
	}
	return keys
}

func TestReplicaTombstoneCap(t *testing.T) {
	tombs := func(s *Store) int {
		sh := &s.shards[0]
		sh.mu.Lock()
		defer sh.mu.Unlock()
		return len(sh.tombs)
	}

	t.Run("one second", func(t *testing.T) {
		s, _, _ := newReplicaStore(t)
		keys := sameShardKeys(s, tombsPerShard+500)
		for i, k := range keys {
			s.ApplyDelete([]byte(k), uint64(i+1))
			require.LessOrEqual(t, tombs(s), tombsPerShard, "after %d deletions", i+1)
		}
		require.Equal(t, tombs(s), s.Tombstones(), "all in shard 0")
		// The newest deletion is always remembered.
		last := keys[len(keys)-1]
		ok, err := s.ApplyState([]byte(last), []byte("x"), 0, 0, uint64(len(keys)-1), false)
		require.NoError(t, err)
		require.False(t, ok)
	})

	t.Run("local deletes", func(t *testing.T) {
		s, _, _ := newReplicaStore(t)
		for i, k := range sameShardKeys(s, tombsPerShard+100) {
			repSet(t, s, k, "v", SetOptions{})
			require.NoError(t, s.Delete([]byte(k), DeleteOptions{}))
			require.LessOrEqual(t, tombs(s), tombsPerShard, "after %d deletions", i+1)
		}
	})

	t.Run("over time the newer half stays", func(t *testing.T) {
		s, _, clk := newReplicaStore(t)
		keys := sameShardKeys(s, tombsPerShard+1)
		for i, k := range keys[:tombsPerShard] {
			if i%512 == 0 {
				clk.Advance(1)
			}
			s.ApplyDelete([]byte(k), uint64(i+1))
		}
		require.Equal(t, tombsPerShard, tombs(s))
		clk.Advance(1)
		s.ApplyDelete([]byte(keys[tombsPerShard]), tombsPerShard+1)
		n := tombs(s)
		require.LessOrEqual(t, n, tombsPerShard/2+1)
		require.Positive(t, n)
		// The most recent ones survived the sweep.
		for _, k := range keys[tombsPerShard-100:] {
			_, ok := tombOf(s, k)
			require.True(t, ok, k)
		}
		_, ok := tombOf(s, keys[0])
		require.False(t, ok, "the oldest went")
	})

	t.Run("expired tombstones go first", func(t *testing.T) {
		s, _, clk := newReplicaStore(t)
		keys := sameShardKeys(s, tombsPerShard+1)
		for i, k := range keys[:tombsPerShard-1] {
			s.ApplyDelete([]byte(k), uint64(i+1))
		}
		clk.Advance(tombTTL)
		s.ApplyDelete([]byte(keys[tombsPerShard-1]), tombsPerShard)
		s.ApplyDelete([]byte(keys[tombsPerShard]), tombsPerShard+1)
		require.Equal(t, 2, tombs(s), "the sweep drops only the expired ones")
	})
}

// TestReplicaApplyFlushClockSkew: a flush_all now reaches a peer whose
// one-second clock has not yet reached the sender's second (the nodes'
// clocks tick independently, so this happens near every second boundary).
// A write made after the flush, with a version above the flush's, must be
// live on both nodes, as it is on the sender.
func TestReplicaApplyFlushClockSkew(t *testing.T) {
	for _, skew := range []int64{-1, 1} {
		t.Run(fmt.Sprintf("peer clock %+ds", skew), func(t *testing.T) {
			src, srcObs, srcClk := newReplicaStore(t)
			dst, _, dstClk := newReplicaStore(t)
			dstClk.Set(srcClk.Now() + skew)
			repSet(t, src, "old", "v", SetOptions{})
			ok, err := dst.ApplyState([]byte("old"), []byte("v"), 0, 0, 10, false)
			require.NoError(t, err)
			require.True(t, ok)

			src.FlushAll(0)
			ev := filterKind(srcObs.take(), "flushed")
			require.Len(t, ev, 1)
			dst.ApplyFlush(ev[0].at, ev[0].cas)

			// A write after the flush, applied on both nodes.
			newer := ev[0].cas + 1
			for _, s := range []*Store{src, dst} {
				ok, err := s.ApplyState([]byte("new"), []byte("v"), 0, 0, newer, false)
				require.NoError(t, err)
				require.True(t, ok)
			}
			_, onSrc := repPeek(t, src, "new")
			_, onDst := repPeek(t, dst, "new")
			require.True(t, onSrc)
			require.True(t, onDst, "the peer hides a write made after the flush")
			_, onSrc = repPeek(t, src, "old")
			_, onDst = repPeek(t, dst, "old")
			require.False(t, onSrc)
			require.False(t, onDst)
		})
	}
}
