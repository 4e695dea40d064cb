package store_test

// Table tests of the store's memcached item semantics: storage modes, CAS,
// expiry, flush_all, incr/decr, delete, the meta-protocol item state, key
// and size limits, chained items, the Observer and the stats counters. Time
// is a store.Clock moved by hand; nothing sleeps.

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tandemcache/tandem/store"
)

// semBase is the unix second every test store starts at, so that absolute
// exptimes are reproducible.
const semBase = 1_700_000_000

// monthSecs is memcached's REALTIME_MAXDELTA: exptimes up to it are relative.
const monthSecs = 60 * 60 * 24 * 30

// newSemStore returns a store on a hand-driven clock set to semBase.
func newSemStore(t *testing.T, cfg store.Config) (*store.Store, *store.Clock) {
	t.Helper()
	clk := store.NewClock()
	clk.Set(semBase)
	cfg.Clock = clk
	s, err := store.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s, clk
}

// snap is a copy of what a Get callback sees.
type snap struct {
	Key        []byte
	Value      []byte
	Len        int
	Flags      uint32
	CAS        uint64
	TTL        int64
	PrevTTL    int64
	LastAccess int64
	Exptime    int64
	Fetched    bool
	Stale      bool
	TokenSent  bool
	Won        bool
	Created    bool
}

func snapOf(it store.Item) snap {
	return snap{
		Key:        append([]byte(nil), it.Key()...),
		Value:      it.AppendValue(nil),
		Len:        it.Len(),
		Flags:      it.Flags,
		CAS:        it.CAS,
		TTL:        it.TTL,
		PrevTTL:    it.PrevTTL,
		LastAccess: it.LastAccess,
		Exptime:    it.Exptime(),
		Fetched:    it.Fetched,
		Stale:      it.Stale,
		TokenSent:  it.TokenSent,
		Won:        it.Won,
		Created:    it.Created,
	}
}

func read(s *store.Store, key string, o store.GetOptions) (snap, error) {
	var sn snap
	err := s.Get([]byte(key), o, func(it store.Item) { sn = snapOf(it) })
	return sn, err
}

// mustGet reads key with default options (counts and bumps like a get).
func mustGet(t *testing.T, s *store.Store, key string) snap {
	t.Helper()
	sn, err := read(s, key, store.GetOptions{})
	require.NoError(t, err, "get %q", key)
	return sn
}

// mustMetaGet reads key as mg does: a stale item's first reader wins.
func mustMetaGet(t *testing.T, s *store.Store, key string) snap {
	t.Helper()
	sn, err := read(s, key, store.GetOptions{Tokens: true})
	require.NoError(t, err, "mg %q", key)
	return sn
}

// peek reads key without changing or counting anything.
func peek(t *testing.T, s *store.Store, key string) snap {
	t.Helper()
	sn, err := read(s, key, store.GetOptions{Peek: true})
	require.NoError(t, err, "peek %q", key)
	return sn
}

func requireAbsent(t *testing.T, s *store.Store, key string) {
	t.Helper()
	_, err := read(s, key, store.GetOptions{Peek: true})
	require.ErrorIs(t, err, store.ErrNotFound, "key %q should be absent", key)
}

func mustSet(t *testing.T, s *store.Store, key, value string, o store.SetOptions) uint64 {
	t.Helper()
	cas, err := s.Set([]byte(key), []byte(value), o)
	require.NoError(t, err, "set %q", key)
	return cas
}

// pattern is n bytes that do not repeat with any chunk-sized period, so a
// misplaced chunk cannot go unnoticed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ byte(i>>8)*31 ^ byte(i>>16)*101 ^ seed
	}
	return b
}

// requireSameBytes compares everything but reports only the first
// difference, not two huge dumps.
func requireSameBytes(t *testing.T, want, got []byte) {
	t.Helper()
	if bytes.Equal(want, got) {
		return
	}
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	require.Failf(t, "values differ", "len want %d got %d; first difference at byte %d", len(want), len(got), i)
}

// usedChunks is the number of chunks allocated over all classes.
func usedChunks(s *store.Store) int64 {
	var n int64
	for _, c := range s.Classes(nil) {
		n += c.UsedChunks
	}
	return n
}

// ---------------------------------------------------------------------------
// Storage commands

func TestSemStorageModes(t *testing.T) {
	type step struct {
		key, value string
		o          store.SetOptions
	}
	tests := []struct {
		name       string
		prep       []step
		op         step
		wantErr    error
		wantValue  string // "" with wantAbsent
		wantAbsent bool
		wantFlags  uint32
		wantTTL    int64
	}{
		{name: "set new", op: step{"k", "v", store.SetOptions{Flags: 7}},
			wantValue: "v", wantFlags: 7, wantTTL: -1},
		{name: "set overwrites value, flags and ttl",
			prep:      []step{{"k", "old", store.SetOptions{Flags: 1, Exptime: 100}}},
			op:        step{"k", "new", store.SetOptions{Flags: 2, Exptime: 50}},
			wantValue: "new", wantFlags: 2, wantTTL: 50},
		{name: "flags zero", op: step{"k", "v", store.SetOptions{Flags: 0}}, wantValue: "v", wantFlags: 0, wantTTL: -1},
		{name: "flags max uint32", op: step{"k", "v", store.SetOptions{Flags: 4294967295}},
			wantValue: "v", wantFlags: 4294967295, wantTTL: -1},
		{name: "flags high bit", op: step{"k", "v", store.SetOptions{Flags: 1 << 31}},
			wantValue: "v", wantFlags: 1 << 31, wantTTL: -1},
		{name: "empty value", op: step{"k", "", store.SetOptions{Flags: 3}}, wantValue: "", wantFlags: 3, wantTTL: -1},

		{name: "add absent stores", op: step{"k", "v", store.SetOptions{Mode: store.ModeAdd, Flags: 5, Exptime: 10}},
			wantValue: "v", wantFlags: 5, wantTTL: 10},
		{name: "add present is not stored",
			prep:    []step{{"k", "old", store.SetOptions{Flags: 1}}},
			op:      step{"k", "new", store.SetOptions{Mode: store.ModeAdd, Flags: 2}},
			wantErr: store.ErrNotStored, wantValue: "old", wantFlags: 1, wantTTL: -1},

		{name: "replace absent is not stored",
			op:      step{"k", "v", store.SetOptions{Mode: store.ModeReplace}},
			wantErr: store.ErrNotStored, wantAbsent: true},
		{name: "replace present",
			prep:      []step{{"k", "old", store.SetOptions{Flags: 1, Exptime: 100}}},
			op:        step{"k", "new", store.SetOptions{Mode: store.ModeReplace, Flags: 9, Exptime: 20}},
			wantValue: "new", wantFlags: 9, wantTTL: 20},

		{name: "append keeps flags and ttl",
			prep:      []step{{"k", "old", store.SetOptions{Flags: 77, Exptime: 100}}},
			op:        step{"k", "+new", store.SetOptions{Mode: store.ModeAppend, Flags: 1, Exptime: 5}},
			wantValue: "old+new", wantFlags: 77, wantTTL: 100},
		{name: "prepend keeps flags and ttl",
			prep:      []step{{"k", "old", store.SetOptions{Flags: 77, Exptime: 100}}},
			op:        step{"k", "new+", store.SetOptions{Mode: store.ModePrepend, Flags: 1, Exptime: 5}},
			wantValue: "new+old", wantFlags: 77, wantTTL: 100},
		{name: "append to empty value",
			prep:      []step{{"k", "", store.SetOptions{}}},
			op:        step{"k", "x", store.SetOptions{Mode: store.ModeAppend}},
			wantValue: "x", wantTTL: -1},
		{name: "append nothing",
			prep:      []step{{"k", "v", store.SetOptions{Flags: 2}}},
			op:        step{"k", "", store.SetOptions{Mode: store.ModeAppend}},
			wantValue: "v", wantFlags: 2, wantTTL: -1},
		{name: "append missing is not stored",
			op:      step{"k", "v", store.SetOptions{Mode: store.ModeAppend}},
			wantErr: store.ErrNotStored, wantAbsent: true},
		{name: "prepend missing is not stored",
			op:      step{"k", "v", store.SetOptions{Mode: store.ModePrepend}},
			wantErr: store.ErrNotStored, wantAbsent: true},
		{name: "append missing with vivify stores",
			op:        step{"k", "v", store.SetOptions{Mode: store.ModeAppend, Vivify: true, VivifyExptime: 30}},
			wantValue: "v", wantTTL: 30},
		{name: "prepend missing with vivify stores",
			op:        step{"k", "v", store.SetOptions{Mode: store.ModePrepend, Vivify: true}},
			wantValue: "v", wantTTL: -1},
		{name: "append present with vivify appends",
			prep:      []step{{"k", "a", store.SetOptions{Flags: 4, Exptime: 60}}},
			op:        step{"k", "b", store.SetOptions{Mode: store.ModeAppend, Vivify: true, VivifyExptime: 5}},
			wantValue: "ab", wantFlags: 4, wantTTL: 60},

		{name: "cas on missing is not found",
			op:      step{"k", "v", store.SetOptions{Mode: store.ModeCAS, CAS: 1}},
			wantErr: store.ErrNotFound, wantAbsent: true},
		{name: "cas mismatch exists",
			prep:    []step{{"k", "old", store.SetOptions{Flags: 1}}},
			op:      step{"k", "new", store.SetOptions{Mode: store.ModeCAS, CAS: 999}},
			wantErr: store.ErrExists, wantValue: "old", wantFlags: 1, wantTTL: -1},
		{name: "set with cas on missing is not found",
			op:      step{"k", "v", store.SetOptions{CAS: 1}},
			wantErr: store.ErrNotFound, wantAbsent: true},
		{name: "set with cas mismatch exists",
			prep:    []step{{"k", "old", store.SetOptions{}}},
			op:      step{"k", "new", store.SetOptions{CAS: 999}},
			wantErr: store.ErrExists, wantValue: "old", wantTTL: -1},
		{name: "replace with cas on missing is not found",
			op:      step{"k", "v", store.SetOptions{Mode: store.ModeReplace, CAS: 1}},
			wantErr: store.ErrNotFound, wantAbsent: true},
		{name: "replace with cas mismatch exists",
			prep:    []step{{"k", "old", store.SetOptions{}}},
			op:      step{"k", "new", store.SetOptions{Mode: store.ModeReplace, CAS: 999}},
			wantErr: store.ErrExists, wantValue: "old", wantTTL: -1},
		{name: "append with cas mismatch exists",
			prep:    []step{{"k", "old", store.SetOptions{}}},
			op:      step{"k", "new", store.SetOptions{Mode: store.ModeAppend, CAS: 999}},
			wantErr: store.ErrExists, wantValue: "old", wantTTL: -1},
		{name: "prepend with cas mismatch exists",
			prep:    []step{{"k", "old", store.SetOptions{}}},
			op:      step{"k", "new", store.SetOptions{Mode: store.ModePrepend, CAS: 999}},
			wantErr: store.ErrExists, wantValue: "old", wantTTL: -1},
		{name: "invalidate with a higher cas still exists",
			prep:    []step{{"k", "old", store.SetOptions{}}},
			op:      step{"k", "new", store.SetOptions{Mode: store.ModeCAS, CAS: 999, Invalidate: true}},
			wantErr: store.ErrExists, wantValue: "old", wantTTL: -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSemStore(t, store.Config{})
			for _, p := range tc.prep {
				mustSet(t, s, p.key, p.value, p.o)
			}
			var before snap
			if len(tc.prep) > 0 {
				before = peek(t, s, tc.op.key)
			}
			cas, err := s.Set([]byte(tc.op.key), []byte(tc.op.value), tc.op.o)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				require.Zero(t, cas)
			} else {
				require.NoError(t, err)
				require.NotZero(t, cas)
			}
			if tc.wantAbsent {
				requireAbsent(t, s, tc.op.key)
				return
			}
			got := peek(t, s, tc.op.key)
			require.Equal(t, tc.wantValue, string(got.Value))
			require.Equal(t, len(tc.wantValue), got.Len)
			require.Equal(t, tc.wantFlags, got.Flags)
			require.Equal(t, tc.wantTTL, got.TTL)
			require.Equal(t, tc.op.key, string(got.Key))
			if tc.wantErr != nil {
				require.Equal(t, before.CAS, got.CAS, "a failed store leaves the item alone")
			} else {
				require.Equal(t, cas, got.CAS, "Set returns the stored CAS")
				require.Greater(t, got.CAS, before.CAS)
			}
		})
	}
}

// TestSemCASMatch covers the successful compare-and-swap paths: the CAS
// changes and the cas_hits counter moves.
func TestSemCASMatch(t *testing.T) {
	tests := []struct {
		name string
		o    func(cas uint64) store.SetOptions
		want string
	}{
		{"cas command", func(c uint64) store.SetOptions { return store.SetOptions{Mode: store.ModeCAS, CAS: c, Flags: 3} }, "new"},
		{"set with cas", func(c uint64) store.SetOptions { return store.SetOptions{CAS: c, Flags: 3} }, "new"},
		{"replace with cas", func(c uint64) store.SetOptions { return store.SetOptions{Mode: store.ModeReplace, CAS: c, Flags: 3} }, "new"},
		{"append with cas", func(c uint64) store.SetOptions { return store.SetOptions{Mode: store.ModeAppend, CAS: c} }, "oldnew"},
		{"prepend with cas", func(c uint64) store.SetOptions { return store.SetOptions{Mode: store.ModePrepend, CAS: c} }, "newold"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSemStore(t, store.Config{})
			old := mustSet(t, s, "k", "old", store.SetOptions{Flags: 3, Exptime: 100})
			cas, err := s.Set([]byte("k"), []byte("new"), tc.o(old))
			require.NoError(t, err)
			require.Greater(t, cas, old)
			got := peek(t, s, "k")
			require.Equal(t, tc.want, string(got.Value))
			require.Equal(t, cas, got.CAS)
			require.Equal(t, uint32(3), got.Flags)
			// The stale CAS no longer matches.
			_, err = s.Set([]byte("k"), []byte("again"), tc.o(old))
			require.ErrorIs(t, err, store.ErrExists)
		})
	}
}

func TestSemNewCAS(t *testing.T) {
	s, _ := newSemStore(t, store.Config{})
	const explicit = uint64(1) << 40

	cas := mustSet(t, s, "k", "v", store.SetOptions{NewCAS: explicit})
	require.Equal(t, explicit, cas)
	require.Equal(t, explicit, peek(t, s, "k").CAS)

	// The explicit CAS is what a compare must give.
	cas, err := s.Set([]byte("k"), []byte("w"), store.SetOptions{Mode: store.ModeCAS, CAS: explicit, NewCAS: explicit + 5})
	require.NoError(t, err)
	require.Equal(t, explicit+5, cas)
	require.Equal(t, "w", string(peek(t, s, "k").Value))

	mustSet(t, s, "n", "1", store.SetOptions{})
	res, err := s.Arith([]byte("n"), store.ArithOptions{Delta: 1, NewCAS: explicit + 7})
	require.NoError(t, err)
	require.Equal(t, explicit+7, res.CAS)
	require.Equal(t, explicit+7, peek(t, s, "n").CAS)

	require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{Invalidate: true, NewCAS: explicit + 9}))
	require.Equal(t, explicit+9, peek(t, s, "k").CAS)
}

// TestSemInvalidateSet covers meta set I: a write with a CAS lower than the
// item's stores anyway, keeps the old TTL and marks the item stale.
func TestSemInvalidateSet(t *testing.T) {
	t.Run("stale write keeps ttl and marks stale", func(t *testing.T) {
		s, clk := newSemStore(t, store.Config{})
		c1 := mustSet(t, s, "k", "v1", store.SetOptions{Exptime: 100})
		c2 := mustSet(t, s, "k", "v2", store.SetOptions{Exptime: 100, Flags: 8})
		require.Greater(t, c2, c1)
		clk.Advance(10)
		st0 := s.Stats()

		c3, err := s.Set([]byte("k"), []byte("stale"), store.SetOptions{Mode: store.ModeCAS, CAS: c1, Invalidate: true, Exptime: 1000, Flags: 9})
		require.NoError(t, err)
		require.Greater(t, c3, c2, "a stale write still gets a new CAS")
		require.Equal(t, st0.CasHits+1, s.Stats().CasHits)

		got := mustMetaGet(t, s, "k")
		require.Equal(t, "stale", string(got.Value))
		require.True(t, got.Stale)
		require.Equal(t, int64(90), got.TTL, "the old TTL is kept, not the new exptime")
		require.Equal(t, uint32(9), got.Flags)
		require.Equal(t, c3, got.CAS)
		require.True(t, got.Won, "the first reader of a stale item wins the recache token")
		require.False(t, got.TokenSent)

		got = mustMetaGet(t, s, "k")
		require.True(t, got.Stale)
		require.False(t, got.Won)
		require.True(t, got.TokenSent)

		// A plain set replaces the stale item with a fresh one.
		mustSet(t, s, "k", "fresh", store.SetOptions{})
		got = mustMetaGet(t, s, "k")
		require.False(t, got.Stale)
		require.False(t, got.TokenSent)
		require.False(t, got.Won)
	})
	t.Run("equal cas is a normal store", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		c1 := mustSet(t, s, "k", "v1", store.SetOptions{Exptime: 100})
		_, err := s.Set([]byte("k"), []byte("v2"), store.SetOptions{Mode: store.ModeCAS, CAS: c1, Invalidate: true, Exptime: 7})
		require.NoError(t, err)
		got := peek(t, s, "k")
		require.False(t, got.Stale)
		require.Equal(t, int64(7), got.TTL)
	})
	t.Run("lower cas without invalidate exists", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		c1 := mustSet(t, s, "k", "v1", store.SetOptions{})
		mustSet(t, s, "k", "v2", store.SetOptions{})
		_, err := s.Set([]byte("k"), []byte("v3"), store.SetOptions{Mode: store.ModeCAS, CAS: c1})
		require.ErrorIs(t, err, store.ErrExists)
		require.Equal(t, "v2", string(peek(t, s, "k").Value))
	})
	t.Run("stale write keeps a sent token", func(t *testing.T) {
		// memcached's do_store_item keeps ITEM_TOKEN_SENT on a stale write.
		s, _ := newSemStore(t, store.Config{})
		c1 := mustSet(t, s, "k", "v1", store.SetOptions{Exptime: 100})
		require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{Invalidate: true}))
		require.True(t, mustMetaGet(t, s, "k").Won)
		_, err := s.Set([]byte("k"), []byte("v2"), store.SetOptions{Mode: store.ModeCAS, CAS: c1, Invalidate: true})
		require.NoError(t, err)
		got := mustMetaGet(t, s, "k")
		require.True(t, got.Stale)
		require.True(t, got.TokenSent)
		require.False(t, got.Won)
	})
}

// ---------------------------------------------------------------------------
// CAS uniqueness

func TestSemCASUnique(t *testing.T) {
	s, _ := newSemStore(t, store.Config{})
	seen := map[uint64]string{}
	last := uint64(0)
	check := func(what string, cas uint64) {
		t.Helper()
		require.NotZero(t, cas, what)
		require.Greater(t, cas, last, "%s: CAS must grow", what)
		prev, dup := seen[cas]
		require.False(t, dup, "%s reused the CAS of %s", what, prev)
		seen[cas] = what
		last = cas
	}
	check("set", mustSet(t, s, "k", "1", store.SetOptions{}))
	check("set again", mustSet(t, s, "k", "2", store.SetOptions{}))
	check("add", mustSet(t, s, "a", "1", store.SetOptions{Mode: store.ModeAdd}))
	check("replace", mustSet(t, s, "k", "3", store.SetOptions{Mode: store.ModeReplace}))
	check("append", mustSet(t, s, "k", "0", store.SetOptions{Mode: store.ModeAppend}))
	check("prepend", mustSet(t, s, "k", "1", store.SetOptions{Mode: store.ModePrepend}))
	require.Equal(t, last, peek(t, s, "k").CAS)
	check("cas", mustSet(t, s, "k", "5", store.SetOptions{Mode: store.ModeCAS, CAS: last}))

	res, err := s.Arith([]byte("k"), store.ArithOptions{Delta: 1}) // in place
	require.NoError(t, err)
	check("incr in place", res.CAS)
	require.Equal(t, res.CAS, peek(t, s, "k").CAS)
	res, err = s.Arith([]byte("k"), store.ArithOptions{Delta: 1000}) // grows
	require.NoError(t, err)
	check("incr grows", res.CAS)
	res, err = s.Arith([]byte("k"), store.ArithOptions{Decr: true, Delta: 1})
	require.NoError(t, err)
	check("decr", res.CAS)
	res, err = s.Arith([]byte("new"), store.ArithOptions{Vivify: true, Initial: 3})
	require.NoError(t, err)
	check("incr vivify", res.CAS)

	var viv snap
	require.NoError(t, s.Get([]byte("viv"), store.GetOptions{Vivify: true}, func(it store.Item) { viv = snapOf(it) }))
	check("get vivify", viv.CAS)

	require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{Invalidate: true}))
	check("delete invalidate", peek(t, s, "k").CAS)
	require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{KeepItem: true}))
	check("delete keep item", peek(t, s, "k").CAS)

	// touch and gat change the TTL, not the CAS (memcached's item_touch).
	before := peek(t, s, "a").CAS
	require.NoError(t, s.Touch([]byte("a"), 100))
	require.Equal(t, before, peek(t, s, "a").CAS)
	_, err = read(s, "a", store.GetOptions{Touch: true, Exptime: 50})
	require.NoError(t, err)
	require.Equal(t, before, peek(t, s, "a").CAS)

	check("set after all", mustSet(t, s, "z", "z", store.SetOptions{}))
}

func TestSemNoCAS(t *testing.T) {
	s, _ := newSemStore(t, store.Config{NoCAS: true})
	cas := mustSet(t, s, "k", "1", store.SetOptions{})
	require.Zero(t, cas)
	require.Zero(t, peek(t, s, "k").CAS)
	cas = mustSet(t, s, "k", "2", store.SetOptions{Mode: store.ModeAppend})
	require.Zero(t, cas)
	res, err := s.Arith([]byte("k"), store.ArithOptions{Delta: 1})
	require.NoError(t, err)
	require.Zero(t, res.CAS)
	require.Equal(t, uint64(13), res.Value) // "1" appended with "2", plus one
	require.Zero(t, peek(t, s, "k").CAS)
	require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{Invalidate: true}))
	require.Zero(t, peek(t, s, "k").CAS)
}

// ---------------------------------------------------------------------------
// Expiry

func TestSemExpiry(t *testing.T) {
	type probe struct {
		at      int64 // seconds after the store
		present bool
		ttl     int64 // when present
	}
	tests := []struct {
		name        string
		exptime     int64 // relative to nothing: the raw memcached exptime
		absolute    int64 // if not 0, exptime = semBase + absolute
		wantExptime int64 // Item.Exptime() right after the store, when present
		probes      []probe
	}{
		{name: "zero never expires", exptime: 0,
			probes: []probe{{0, true, -1}, {monthSecs, true, -1}, {10 * 365 * 86400, true, -1}}},
		{name: "relative", exptime: 10, wantExptime: semBase + 10,
			probes: []probe{{0, true, 10}, {1, true, 9}, {9, true, 1}, {10, false, 0}}},
		{name: "relative one second", exptime: 1, wantExptime: semBase + 1,
			probes: []probe{{0, true, 1}, {1, false, 0}}},
		{name: "thirty days is still relative", exptime: monthSecs, wantExptime: semBase + monthSecs,
			probes: []probe{{0, true, monthSecs}, {monthSecs - 1, true, 1}, {monthSecs, false, 0}}},
		{name: "one past thirty days is absolute and long past", exptime: monthSecs + 1,
			probes: []probe{{0, false, 0}}},
		{name: "absolute future", absolute: 100, wantExptime: semBase + 100,
			probes: []probe{{0, true, 100}, {99, true, 1}, {100, false, 0}}},
		{name: "absolute far future", absolute: 365 * 86400, wantExptime: semBase + 365*86400,
			probes: []probe{{0, true, 365 * 86400}, {monthSecs + 1, true, 365*86400 - monthSecs - 1}}},
		{name: "absolute now", absolute: 0, exptime: semBase,
			probes: []probe{{0, false, 0}}},
		{name: "absolute in the past", absolute: -10,
			probes: []probe{{0, false, 0}}},
		{name: "negative", exptime: -1,
			probes: []probe{{0, false, 0}}},
		{name: "very negative", exptime: -1 << 40,
			probes: []probe{{0, false, 0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newSemStore(t, store.Config{})
			exp := tc.exptime
			if tc.absolute != 0 {
				exp = semBase + tc.absolute
			}
			_, err := s.Set([]byte("k"), []byte("v"), store.SetOptions{Exptime: exp})
			require.NoError(t, err, "an already expired item is still stored")
			require.Equal(t, uint64(1), s.Stats().CurrItems)
			for _, p := range tc.probes {
				clk.Set(semBase + p.at)
				got, err := read(s, "k", store.GetOptions{})
				if !p.present {
					require.ErrorIs(t, err, store.ErrNotFound, "at +%d", p.at)
					st := s.Stats()
					require.Equal(t, uint64(1), st.GetExpired, "lazy expiry is counted")
					require.Zero(t, st.CurrItems, "lazy expiry frees the item")
					require.Zero(t, usedChunks(s))
					break
				}
				require.NoError(t, err, "at +%d", p.at)
				require.Equal(t, p.ttl, got.TTL, "at +%d", p.at)
				require.Equal(t, p.ttl, got.PrevTTL)
				if p.at == 0 {
					require.Equal(t, tc.wantExptime, got.Exptime)
				}
			}
		})
	}
}

func TestSemExpiredKeyIsFree(t *testing.T) {
	tests := []struct {
		name string
		op   func(s *store.Store) error
		want error
	}{
		{"add succeeds", func(s *store.Store) error {
			_, err := s.Set([]byte("k"), []byte("new"), store.SetOptions{Mode: store.ModeAdd})
			return err
		}, nil},
		{"replace fails", func(s *store.Store) error {
			_, err := s.Set([]byte("k"), []byte("new"), store.SetOptions{Mode: store.ModeReplace})
			return err
		}, store.ErrNotStored},
		{"append fails", func(s *store.Store) error {
			_, err := s.Set([]byte("k"), []byte("new"), store.SetOptions{Mode: store.ModeAppend})
			return err
		}, store.ErrNotStored},
		{"incr misses", func(s *store.Store) error {
			_, err := s.Arith([]byte("k"), store.ArithOptions{Delta: 1})
			return err
		}, store.ErrNotFound},
		{"delete misses", func(s *store.Store) error { return s.Delete([]byte("k"), store.DeleteOptions{}) }, store.ErrNotFound},
		{"touch misses", func(s *store.Store) error { return s.Touch([]byte("k"), 100) }, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newSemStore(t, store.Config{})
			mustSet(t, s, "k", "1", store.SetOptions{Exptime: 5})
			clk.Advance(5)
			require.ErrorIs(t, tc.op(s), tc.want)
			require.Equal(t, uint64(1), s.Stats().GetExpired)
		})
	}
}

func TestSemTouch(t *testing.T) {
	tests := []struct {
		name    string
		exptime int64
		wantTTL int64
		gone    bool
		viaGet  bool
	}{
		{name: "touch extends", exptime: 500, wantTTL: 500},
		{name: "touch shortens", exptime: 3, wantTTL: 3},
		{name: "touch zero removes expiry", exptime: 0, wantTTL: -1},
		{name: "touch absolute", exptime: semBase + 30 + 200, wantTTL: 200},
		{name: "touch negative expires", exptime: -1, gone: true},
		{name: "gat extends", exptime: 500, wantTTL: 500, viaGet: true},
		{name: "gat zero removes expiry", exptime: 0, wantTTL: -1, viaGet: true},
		{name: "gat negative expires", exptime: -1, gone: true, viaGet: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newSemStore(t, store.Config{})
			cas := mustSet(t, s, "k", "v", store.SetOptions{Exptime: 100, Flags: 6})
			clk.Advance(30)
			if tc.viaGet {
				got, err := read(s, "k", store.GetOptions{Touch: true, Exptime: tc.exptime})
				require.NoError(t, err)
				require.Equal(t, "v", string(got.Value))
				require.Equal(t, int64(70), got.PrevTTL, "PrevTTL is the TTL before the touch")
				if tc.gone {
					require.LessOrEqual(t, got.TTL, int64(0))
				} else {
					require.Equal(t, tc.wantTTL, got.TTL)
				}
				require.Equal(t, uint32(6), got.Flags)
				require.Equal(t, cas, got.CAS)
			} else {
				require.NoError(t, s.Touch([]byte("k"), tc.exptime))
			}
			if tc.gone {
				requireAbsent(t, s, "k")
				return
			}
			got := peek(t, s, "k")
			require.Equal(t, tc.wantTTL, got.TTL)
			require.Equal(t, cas, got.CAS)
			if tc.wantTTL > 0 {
				clk.Advance(tc.wantTTL - 1)
				require.Equal(t, int64(1), peek(t, s, "k").TTL)
				clk.Advance(1)
				requireAbsent(t, s, "k")
			} else {
				clk.Advance(1000)
				require.Equal(t, "v", string(peek(t, s, "k").Value))
			}
		})
	}
	t.Run("touch missing", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		require.ErrorIs(t, s.Touch([]byte("nope"), 10), store.ErrNotFound)
		_, err := read(s, "nope", store.GetOptions{Touch: true, Exptime: 10})
		require.ErrorIs(t, err, store.ErrNotFound)
		st := s.Stats()
		require.Equal(t, uint64(2), st.TouchMisses)
		require.Zero(t, st.GetMisses, "a gat miss is a touch miss, not a get miss")
	})
}

// ---------------------------------------------------------------------------
// flush_all

func TestSemFlushAll(t *testing.T) {
	t.Run("immediate", func(t *testing.T) {
		s, clk := newSemStore(t, store.Config{})
		mustSet(t, s, "old", "1", store.SetOptions{})
		clk.Advance(1)
		mustSet(t, s, "same-second-before", "2", store.SetOptions{})
		s.FlushAll(0)
		mustSet(t, s, "same-second-after", "3", store.SetOptions{})

		requireAbsent(t, s, "old")
		requireAbsent(t, s, "same-second-before")
		require.Equal(t, "3", string(peek(t, s, "same-second-after").Value),
			"an item stored after the flush in the same second stays (CAS)")
		clk.Advance(100)
		require.Equal(t, "3", string(peek(t, s, "same-second-after").Value))
		mustSet(t, s, "later", "4", store.SetOptions{})
		require.Equal(t, "4", string(peek(t, s, "later").Value))

		st := s.Stats()
		require.Equal(t, uint64(1), st.CmdFlush)
		require.Equal(t, uint64(2), st.GetFlushed)
		require.Equal(t, uint64(2), st.CurrItems)
	})
	t.Run("negative delay is immediate", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		mustSet(t, s, "k", "1", store.SetOptions{})
		s.FlushAll(-5)
		requireAbsent(t, s, "k")
	})
	t.Run("flushed key can be added again", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		mustSet(t, s, "k", "1", store.SetOptions{})
		s.FlushAll(0)
		mustSet(t, s, "k", "2", store.SetOptions{Mode: store.ModeAdd})
		require.Equal(t, "2", string(peek(t, s, "k").Value))
		_, err := s.Arith([]byte("gone"), store.ArithOptions{Delta: 1})
		require.ErrorIs(t, err, store.ErrNotFound)
	})
	for _, abs := range []bool{false, true} {
		t.Run(fmt.Sprintf("delayed absolute=%v", abs), func(t *testing.T) {
			s, clk := newSemStore(t, store.Config{})
			mustSet(t, s, "before", "1", store.SetOptions{})
			delay := int64(10)
			if abs {
				delay = semBase + 10
			}
			s.FlushAll(delay)
			mustSet(t, s, "after-call", "2", store.SetOptions{})
			clk.Set(semBase + 5)
			mustSet(t, s, "mid", "3", store.SetOptions{})
			// memcached sets oldest_live to the flush time minus one, so
			// with CAS the flush bites at +9; at +8 everything is there.
			clk.Set(semBase + 8)
			for _, k := range []string{"before", "after-call", "mid"} {
				require.Equal(t, k, string(peek(t, s, k).Key), "%s visible before the flush time", k)
			}
			clk.Set(semBase + 10)
			requireAbsent(t, s, "before")
			requireAbsent(t, s, "after-call")
			requireAbsent(t, s, "mid")
			mustSet(t, s, "new", "4", store.SetOptions{})
			clk.Set(semBase + 11)
			mustSet(t, s, "newer", "5", store.SetOptions{})
			clk.Advance(1000)
			require.Equal(t, "4", string(peek(t, s, "new").Value), "stored at the flush time: stays")
			require.Equal(t, "5", string(peek(t, s, "newer").Value), "stored after the flush time: stays")
			st := s.Stats()
			require.Equal(t, uint64(1), st.CmdFlush)
			require.Equal(t, uint64(3), st.GetFlushed)
		})
	}
	t.Run("nocas immediate", func(t *testing.T) {
		s, clk := newSemStore(t, store.Config{NoCAS: true})
		mustSet(t, s, "old", "1", store.SetOptions{})
		clk.Advance(1)
		mustSet(t, s, "same-second-before", "2", store.SetOptions{})
		s.FlushAll(0)
		requireAbsent(t, s, "old")
		requireAbsent(t, s, "same-second-before")
		// Without CAS an item stored later in the flush second cannot be
		// told apart (memcached -C has the same limit); a second later it can.
		clk.Advance(1)
		mustSet(t, s, "later", "3", store.SetOptions{})
		clk.Advance(100)
		require.Equal(t, "3", string(peek(t, s, "later").Value))
		require.Equal(t, uint64(2), s.Stats().GetFlushed)
	})
	t.Run("nocas delayed", func(t *testing.T) {
		s, clk := newSemStore(t, store.Config{NoCAS: true})
		mustSet(t, s, "before", "1", store.SetOptions{})
		s.FlushAll(10)
		clk.Set(semBase + 9)
		require.Equal(t, "1", string(peek(t, s, "before").Value))
		clk.Set(semBase + 10)
		requireAbsent(t, s, "before")
		clk.Set(semBase + 11)
		mustSet(t, s, "after", "2", store.SetOptions{})
		clk.Advance(1000)
		require.Equal(t, "2", string(peek(t, s, "after").Value))
		require.Equal(t, uint64(1), s.Stats().CmdFlush)
	})
}

// ---------------------------------------------------------------------------
// incr / decr

func TestSemArith(t *testing.T) {
	const max64 = "18446744073709551615"
	tests := []struct {
		name      string
		stored    *string // nil: key absent
		o         store.ArithOptions
		wantErr   error
		wantValue uint64
		wantRead  string // the stored value afterwards
	}{
		{name: "incr", stored: ptr("5"), o: store.ArithOptions{Delta: 3}, wantValue: 8, wantRead: "8"},
		{name: "incr by zero", stored: ptr("5"), o: store.ArithOptions{Delta: 0}, wantValue: 5, wantRead: "5"},
		{name: "decr", stored: ptr("5"), o: store.ArithOptions{Decr: true, Delta: 3}, wantValue: 2, wantRead: "2"},
		{name: "incr wraps at 2^64", stored: ptr(max64), o: store.ArithOptions{Delta: 2},
			wantValue: 1, wantRead: "1" + strings.Repeat(" ", 19)},
		{name: "incr max plus one is zero", stored: ptr(max64), o: store.ArithOptions{Delta: 1},
			wantValue: 0, wantRead: "0" + strings.Repeat(" ", 19)},
		{name: "incr to max", stored: ptr("0"), o: store.ArithOptions{Delta: 1<<64 - 1},
			wantValue: 1<<64 - 1, wantRead: max64},
		{name: "decr floors at zero", stored: ptr("5"), o: store.ArithOptions{Decr: true, Delta: 10}, wantValue: 0, wantRead: "0"},
		{name: "decr zero stays zero", stored: ptr("0"), o: store.ArithOptions{Decr: true, Delta: 1}, wantValue: 0, wantRead: "0"},
		{name: "decr max delta floors", stored: ptr(max64), o: store.ArithOptions{Decr: true, Delta: 1<<64 - 1},
			wantValue: 0, wantRead: "0" + strings.Repeat(" ", 19)},
		{name: "shorter result is padded in place", stored: ptr("100"), o: store.ArithOptions{Decr: true, Delta: 1},
			wantValue: 99, wantRead: "99 "},
		{name: "decr 10 to 9 pads", stored: ptr("10"), o: store.ArithOptions{Decr: true, Delta: 1}, wantValue: 9, wantRead: "9 "},
		{name: "longer result grows", stored: ptr("99"), o: store.ArithOptions{Delta: 1}, wantValue: 100, wantRead: "100"},
		{name: "padded value reads back", stored: ptr("99 "), o: store.ArithOptions{Delta: 1}, wantValue: 100, wantRead: "100"},

		{name: "trailing space ends the number", stored: ptr("12 abc"), o: store.ArithOptions{Delta: 1},
			wantValue: 13, wantRead: "13    "},
		{name: "trailing crlf", stored: ptr("7\r\n"), o: store.ArithOptions{Delta: 1}, wantValue: 8, wantRead: "8  "},
		{name: "minus zero is zero", stored: ptr("-0"), o: store.ArithOptions{Delta: 5}, wantValue: 5, wantRead: "5 "},
		{name: "leading spaces", stored: ptr("  7"), o: store.ArithOptions{Delta: 1}, wantValue: 8, wantRead: "8  "},
		{name: "leading tab", stored: ptr("\t9"), o: store.ArithOptions{Delta: 1}, wantValue: 10, wantRead: "10"},
		{name: "plus sign", stored: ptr("+5"), o: store.ArithOptions{Delta: 1}, wantValue: 6, wantRead: "6 "},
		{name: "leading zeros", stored: ptr("007"), o: store.ArithOptions{Delta: 1}, wantValue: 8, wantRead: "8  "},
		// strtoull negates "-18446744073709551615" to 1, which is not
		// negative as a signed number, so safe_strtoull accepts it.
		{name: "strtoull negation quirk", stored: ptr("-" + max64), o: store.ArithOptions{Delta: 1},
			wantValue: 2, wantRead: "2" + strings.Repeat(" ", 20)},

		{name: "letters", stored: ptr("abc"), o: store.ArithOptions{Delta: 1}, wantErr: store.ErrNonNumeric, wantRead: "abc"},
		{name: "digits then letters", stored: ptr("12abc"), o: store.ArithOptions{Delta: 1}, wantErr: store.ErrNonNumeric, wantRead: "12abc"},
		{name: "empty", stored: ptr(""), o: store.ArithOptions{Delta: 1}, wantErr: store.ErrNonNumeric, wantRead: ""},
		{name: "only spaces", stored: ptr("   "), o: store.ArithOptions{Delta: 1}, wantErr: store.ErrNonNumeric, wantRead: "   "},
		{name: "negative", stored: ptr("-5"), o: store.ArithOptions{Delta: 1}, wantErr: store.ErrNonNumeric, wantRead: "-5"},
		{name: "minus one", stored: ptr("-1"), o: store.ArithOptions{Decr: true, Delta: 1}, wantErr: store.ErrNonNumeric, wantRead: "-1"},
		{name: "decimal point", stored: ptr("1.5"), o: store.ArithOptions{Delta: 1}, wantErr: store.ErrNonNumeric, wantRead: "1.5"},
		{name: "hex", stored: ptr("0x10"), o: store.ArithOptions{Delta: 1}, wantErr: store.ErrNonNumeric, wantRead: "0x10"},
		{name: "overflow", stored: ptr("18446744073709551616"), o: store.ArithOptions{Delta: 1},
			wantErr: store.ErrNonNumeric, wantRead: "18446744073709551616"},
		{name: "sign only", stored: ptr("-"), o: store.ArithOptions{Delta: 1}, wantErr: store.ErrNonNumeric, wantRead: "-"},

		{name: "incr missing", o: store.ArithOptions{Delta: 1}, wantErr: store.ErrNotFound},
		{name: "decr missing", o: store.ArithOptions{Decr: true, Delta: 1}, wantErr: store.ErrNotFound},
		{name: "vivify creates initial without delta", o: store.ArithOptions{Delta: 5, Vivify: true, Initial: 10},
			wantValue: 10, wantRead: "10"},
		{name: "vivify decr creates initial", o: store.ArithOptions{Decr: true, Delta: 5, Vivify: true, Initial: 3},
			wantValue: 3, wantRead: "3"},
		{name: "vivify present applies delta", stored: ptr("1"), o: store.ArithOptions{Delta: 5, Vivify: true, Initial: 10},
			wantValue: 6, wantRead: "6"},
		{name: "cas mismatch", stored: ptr("5"), o: store.ArithOptions{Delta: 1, CAS: 999}, wantErr: store.ErrExists, wantRead: "5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newSemStore(t, store.Config{})
			var before snap
			if tc.stored != nil {
				mustSet(t, s, "n", *tc.stored, store.SetOptions{Flags: 42, Exptime: 100})
				clk.Advance(10)
				before = peek(t, s, "n")
			}
			res, err := s.Arith([]byte("n"), tc.o)
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				if tc.stored == nil {
					requireAbsent(t, s, "n")
					return
				}
				got := peek(t, s, "n")
				require.Equal(t, tc.wantRead, string(got.Value), "a failed incr leaves the value alone")
				require.Equal(t, before.CAS, got.CAS)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantValue, res.Value)
			got := peek(t, s, "n")
			require.Equal(t, tc.wantRead, string(got.Value))
			require.Equal(t, res.CAS, got.CAS)
			require.Greater(t, got.CAS, before.CAS, "incr/decr gives a new CAS")
			if tc.stored == nil {
				require.True(t, res.Created)
				require.Zero(t, got.Flags)
				require.Equal(t, int64(-1), got.TTL)
				return
			}
			require.False(t, res.Created)
			require.Equal(t, uint32(42), got.Flags, "flags are kept")
			require.Equal(t, int64(90), got.TTL, "the TTL is kept")
			require.Equal(t, int64(90), res.TTL)
		})
	}
}

func ptr(s string) *string { return &s }

func TestSemArithMore(t *testing.T) {
	t.Run("cas match", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		cas := mustSet(t, s, "n", "5", store.SetOptions{})
		res, err := s.Arith([]byte("n"), store.ArithOptions{Delta: 1, CAS: cas})
		require.NoError(t, err)
		require.Equal(t, uint64(6), res.Value)
		_, err = s.Arith([]byte("n"), store.ArithOptions{Delta: 1, CAS: cas})
		require.ErrorIs(t, err, store.ErrExists, "the old CAS is spent")
	})
	t.Run("vivify ttl", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		res, err := s.Arith([]byte("n"), store.ArithOptions{Vivify: true, Initial: 7, VivifyExptime: 30})
		require.NoError(t, err)
		require.Equal(t, int64(30), res.TTL)
		require.Equal(t, int64(30), peek(t, s, "n").TTL)
	})
	t.Run("touch sets ttl", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		mustSet(t, s, "n", "1", store.SetOptions{Exptime: 100})
		res, err := s.Arith([]byte("n"), store.ArithOptions{Delta: 1, Touch: true, Exptime: 500})
		require.NoError(t, err)
		require.Equal(t, int64(500), res.TTL)
		require.Equal(t, int64(500), peek(t, s, "n").TTL)
	})
	t.Run("chained value is non-numeric", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		big := bytes.Repeat([]byte("1"), 600<<10)
		_, err := s.Set([]byte("n"), big, store.SetOptions{})
		require.NoError(t, err)
		_, err = s.Arith([]byte("n"), store.ArithOptions{Delta: 1})
		require.ErrorIs(t, err, store.ErrNonNumeric)
	})
	t.Run("repeated decr then incr in place", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		mustSet(t, s, "n", "1000", store.SetOptions{})
		for want := uint64(999); want >= 990; want-- {
			res, err := s.Arith([]byte("n"), store.ArithOptions{Decr: true, Delta: 1})
			require.NoError(t, err)
			require.Equal(t, want, res.Value)
		}
		require.Equal(t, "990 ", string(peek(t, s, "n").Value))
		res, err := s.Arith([]byte("n"), store.ArithOptions{Delta: 10})
		require.NoError(t, err)
		require.Equal(t, uint64(1000), res.Value)
		require.Equal(t, "1000", string(peek(t, s, "n").Value))
		res, err = s.Arith([]byte("n"), store.ArithOptions{Delta: 9000})
		require.NoError(t, err)
		require.Equal(t, "10000", string(peek(t, s, "n").Value))
		require.Equal(t, uint64(1), s.Stats().CurrItems)
	})
}

// ---------------------------------------------------------------------------
// delete

func TestSemDelete(t *testing.T) {
	tests := []struct {
		name    string
		present bool
		o       func(cas uint64) store.DeleteOptions
		wantErr error
		check   func(t *testing.T, s *store.Store, cas uint64)
	}{
		{name: "present", present: true,
			o: func(uint64) store.DeleteOptions { return store.DeleteOptions{} },
			check: func(t *testing.T, s *store.Store, _ uint64) {
				requireAbsent(t, s, "k")
				require.Zero(t, s.Stats().CurrItems)
			}},
		{name: "absent", o: func(uint64) store.DeleteOptions { return store.DeleteOptions{} }, wantErr: store.ErrNotFound},
		{name: "absent with cas", o: func(uint64) store.DeleteOptions { return store.DeleteOptions{CAS: 5} }, wantErr: store.ErrNotFound},
		{name: "cas match", present: true,
			o:     func(c uint64) store.DeleteOptions { return store.DeleteOptions{CAS: c} },
			check: func(t *testing.T, s *store.Store, _ uint64) { requireAbsent(t, s, "k") }},
		{name: "cas mismatch", present: true,
			o:       func(c uint64) store.DeleteOptions { return store.DeleteOptions{CAS: c + 1} },
			wantErr: store.ErrExists,
			check: func(t *testing.T, s *store.Store, cas uint64) {
				got := peek(t, s, "k")
				require.Equal(t, "value", string(got.Value))
				require.Equal(t, cas, got.CAS)
			}},
		{name: "invalidate", present: true,
			o: func(uint64) store.DeleteOptions { return store.DeleteOptions{Invalidate: true} },
			check: func(t *testing.T, s *store.Store, cas uint64) {
				got := mustMetaGet(t, s, "k")
				require.Equal(t, "value", string(got.Value), "the item stays")
				require.True(t, got.Stale)
				require.Greater(t, got.CAS, cas, "invalidation gives a new CAS")
				require.Equal(t, uint32(11), got.Flags)
				require.Equal(t, int64(100), got.TTL)
				require.True(t, got.Won, "the first reader wins")
				require.False(t, got.TokenSent)
				got = mustMetaGet(t, s, "k")
				require.False(t, got.Won)
				require.True(t, got.TokenSent, "later readers see the token sent")
				require.True(t, got.Stale)
			}},
		{name: "invalidate clears a sent token", present: true,
			o: func(uint64) store.DeleteOptions { return store.DeleteOptions{Invalidate: true} },
			check: func(t *testing.T, s *store.Store, _ uint64) {
				require.True(t, mustMetaGet(t, s, "k").Won)
				require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{Invalidate: true}))
				got := mustMetaGet(t, s, "k")
				require.True(t, got.Won, "a new invalidation lets the next reader win again")
			}},
		{name: "invalidate with touch", present: true,
			o: func(uint64) store.DeleteOptions {
				return store.DeleteOptions{Invalidate: true, Touch: true, Exptime: 30}
			},
			check: func(t *testing.T, s *store.Store, _ uint64) {
				got := peek(t, s, "k")
				require.True(t, got.Stale)
				require.Equal(t, int64(30), got.TTL)
			}},
		{name: "invalidate with cas mismatch", present: true,
			o:       func(c uint64) store.DeleteOptions { return store.DeleteOptions{Invalidate: true, CAS: c + 1} },
			wantErr: store.ErrExists,
			check: func(t *testing.T, s *store.Store, cas uint64) {
				got := peek(t, s, "k")
				require.False(t, got.Stale)
				require.Equal(t, cas, got.CAS)
			}},
		{name: "keep item empties the value", present: true,
			o: func(uint64) store.DeleteOptions { return store.DeleteOptions{KeepItem: true} },
			check: func(t *testing.T, s *store.Store, cas uint64) {
				got := peek(t, s, "k")
				require.Empty(t, got.Value)
				require.Zero(t, got.Len)
				require.Equal(t, uint32(11), got.Flags, "flags kept")
				require.Equal(t, int64(100), got.TTL, "TTL kept")
				require.Greater(t, got.CAS, cas)
				require.False(t, got.Stale)
				require.Equal(t, uint64(1), s.Stats().CurrItems)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSemStore(t, store.Config{})
			var cas uint64
			if tc.present {
				cas = mustSet(t, s, "k", "value", store.SetOptions{Flags: 11, Exptime: 100})
			}
			err := s.Delete([]byte("k"), tc.o(cas))
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
			} else {
				require.NoError(t, err)
			}
			if tc.check != nil {
				tc.check(t, s, cas)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Meta get state

func TestSemFetched(t *testing.T) {
	tests := []struct {
		name  string
		reads []store.GetOptions
		want  []bool // Fetched seen by each read
	}{
		{"plain", []store.GetOptions{{}, {}, {}}, []bool{false, true, true}},
		{"no bump leaves unfetched", []store.GetOptions{{NoBump: true}, {NoBump: true}, {}, {}}, []bool{false, false, false, true}},
		{"peek leaves unfetched", []store.GetOptions{{Peek: true}, {Peek: true}, {}, {}}, []bool{false, false, false, true}},
		{"gat fetches", []store.GetOptions{{Touch: true, Exptime: 10}, {}}, []bool{false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSemStore(t, store.Config{})
			mustSet(t, s, "k", "v", store.SetOptions{})
			for i, o := range tc.reads {
				got, err := read(s, "k", o)
				require.NoError(t, err)
				require.Equal(t, tc.want[i], got.Fetched, "read %d", i)
			}
		})
	}
	t.Run("a failed add does not fetch", func(t *testing.T) {
		// BUG: a failed add calls bump, which sets the fetched bit.
		// memcached refreshes the item with do_item_update, which moves it in
		// the LRU but never sets ITEM_FETCHED: only reads do (do_item_bump).
		// So mg's h flag, me's fetch= and the *_unfetched counters differ.
		s, _ := newSemStore(t, store.Config{})
		mustSet(t, s, "k", "v", store.SetOptions{})
		_, err := s.Set([]byte("k"), []byte("w"), store.SetOptions{Mode: store.ModeAdd})
		require.ErrorIs(t, err, store.ErrNotStored)
		require.False(t, mustGet(t, s, "k").Fetched, "no client has read the item yet")
	})
	t.Run("a new store resets fetched", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		mustSet(t, s, "k", "v", store.SetOptions{})
		mustGet(t, s, "k")
		require.True(t, mustGet(t, s, "k").Fetched)
		mustSet(t, s, "k", "w", store.SetOptions{})
		require.False(t, mustGet(t, s, "k").Fetched)
	})
}

func TestSemPeekChangesNothing(t *testing.T) {
	s, clk := newSemStore(t, store.Config{})
	mustSet(t, s, "k", "v", store.SetOptions{Exptime: 100})
	require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{Invalidate: true}))
	clk.Advance(70)
	st0 := s.Stats()
	for i := 0; i < 3; i++ {
		got, err := read(s, "k", store.GetOptions{Peek: true, Touch: true, Exptime: 5, Recache: true, RecacheExptime: 1000})
		require.NoError(t, err)
		require.Equal(t, "v", string(got.Value))
		require.Equal(t, int64(30), got.TTL)
		require.Equal(t, int64(70), got.LastAccess)
		require.False(t, got.Fetched)
		require.False(t, got.Won, "peek hands out no token")
		require.False(t, got.TokenSent)
	}
	_, err := read(s, "missing", store.GetOptions{Peek: true})
	require.ErrorIs(t, err, store.ErrNotFound)
	st := s.Stats()
	require.Equal(t, st0.CmdGet, st.CmdGet)
	require.Equal(t, st0.GetHits, st.GetHits)
	require.Equal(t, st0.GetMisses, st.GetMisses)
	require.Equal(t, st0.CmdTouch, st.CmdTouch)
	require.Equal(t, st0.TouchHits, st.TouchHits)

	// The first real read still finds everything untouched.
	got := mustMetaGet(t, s, "k")
	require.False(t, got.Fetched)
	require.True(t, got.Won)
	require.Equal(t, int64(70), got.LastAccess)
}

// Only mg hands out win tokens: a get (or gat, or a binary GET) of a
// stale item leaves the token to the next mg, as memcached's do.
func TestSemPlainReadTakesNoToken(t *testing.T) {
	s, _ := newSemStore(t, store.Config{})
	mustSet(t, s, "k", "v", store.SetOptions{})
	require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{Invalidate: true}))
	got := mustGet(t, s, "k")
	require.True(t, got.Stale)
	require.False(t, got.Won)
	require.False(t, got.TokenSent)
	got = mustMetaGet(t, s, "k")
	require.True(t, got.Won, "the first mg still wins")
	require.True(t, mustMetaGet(t, s, "k").TokenSent)
}

func TestSemLastAccess(t *testing.T) {
	s, clk := newSemStore(t, store.Config{})
	mustSet(t, s, "k", "v", store.SetOptions{})
	require.Equal(t, int64(0), mustGet(t, s, "k").LastAccess)
	clk.Advance(5)
	require.Equal(t, int64(5), mustGet(t, s, "k").LastAccess)
	// Within memcached's 60 s update interval a read does not refresh it.
	clk.Advance(100)
	require.Equal(t, int64(105), mustGet(t, s, "k").LastAccess)
	// That read was past the interval: it bumped the item.
	clk.Advance(3)
	require.Equal(t, int64(3), mustGet(t, s, "k").LastAccess)
	// NoBump does not refresh it.
	clk.Advance(100)
	got, err := read(s, "k", store.GetOptions{NoBump: true})
	require.NoError(t, err)
	require.Equal(t, int64(103), got.LastAccess)
	require.Equal(t, int64(103), mustGet(t, s, "k").LastAccess)
	require.Equal(t, int64(0), mustGet(t, s, "k").LastAccess)
	// A store resets it.
	clk.Advance(20)
	mustSet(t, s, "k", "w", store.SetOptions{})
	require.Equal(t, int64(0), mustGet(t, s, "k").LastAccess)
}

func TestSemVivify(t *testing.T) {
	s, _ := newSemStore(t, store.Config{})
	got, err := read(s, "k", store.GetOptions{Vivify: true, VivifyExptime: 30})
	require.NoError(t, err)
	require.True(t, got.Created)
	require.True(t, got.Won)
	require.False(t, got.TokenSent)
	require.Empty(t, got.Value)
	require.Zero(t, got.Flags)
	require.Equal(t, int64(30), got.TTL)
	require.NotZero(t, got.CAS)
	require.Equal(t, uint64(1), s.Stats().CurrItems)

	second, err := read(s, "k", store.GetOptions{Vivify: true, VivifyExptime: 30})
	require.NoError(t, err)
	require.False(t, second.Created)
	require.False(t, second.Won)
	require.True(t, second.TokenSent, "the second reader sees the token handed out")
	require.Equal(t, got.CAS, second.CAS)

	third := mustGet(t, s, "k")
	require.True(t, third.TokenSent)
	require.False(t, third.Won)

	// Filling the stub with a set clears the token.
	mustSet(t, s, "k", "filled", store.SetOptions{})
	fourth := mustGet(t, s, "k")
	require.False(t, fourth.TokenSent)
	require.Equal(t, "filled", string(fourth.Value))
}

func TestSemRecache(t *testing.T) {
	tests := []struct {
		name    string
		exptime int64
		recache int64
		wantWon bool
	}{
		{"ttl below threshold wins", 9, 10, true},
		{"ttl equal to threshold does not win", 10, 10, false},
		{"ttl above threshold does not win", 30, 10, false},
		{"no expiry never wins", 0, 1000, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSemStore(t, store.Config{})
			mustSet(t, s, "k", "v", store.SetOptions{Exptime: tc.exptime})
			o := store.GetOptions{Recache: true, RecacheExptime: tc.recache}
			got, err := read(s, "k", o)
			require.NoError(t, err)
			require.Equal(t, tc.wantWon, got.Won)
			require.False(t, got.TokenSent)
			got, err = read(s, "k", o)
			require.NoError(t, err)
			require.False(t, got.Won, "the token is won only once")
			require.Equal(t, tc.wantWon, got.TokenSent)
		})
	}
	t.Run("wins once the ttl drops", func(t *testing.T) {
		s, clk := newSemStore(t, store.Config{})
		mustSet(t, s, "k", "v", store.SetOptions{Exptime: 30})
		o := store.GetOptions{Recache: true, RecacheExptime: 10}
		got, err := read(s, "k", o)
		require.NoError(t, err)
		require.False(t, got.Won)
		clk.Advance(21)
		got, err = read(s, "k", o)
		require.NoError(t, err)
		require.True(t, got.Won)
		got, err = read(s, "k", o)
		require.NoError(t, err)
		require.False(t, got.Won)
		require.True(t, got.TokenSent)
	})
}

// ---------------------------------------------------------------------------
// Keys

func TestSemKeys(t *testing.T) {
	tests := []struct {
		name string
		key  []byte
		ok   bool
	}{
		{"empty", []byte{}, false},
		{"nil", nil, false},
		{"one byte", []byte("a"), true},
		{"250 bytes", bytes.Repeat([]byte("k"), 250), true},
		{"251 bytes", bytes.Repeat([]byte("k"), 251), false},
		{"1000 bytes", bytes.Repeat([]byte("k"), 1000), false},
		{"binary", []byte{0, 1, 2, 0xff, '\r', '\n', ' ', 0}, true},
		{"all zero", []byte{0, 0, 0}, true},
		{"250 binary", bytes.Repeat([]byte{0xfe, 0}, 125), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSemStore(t, store.Config{})
			_, err := s.Set(tc.key, []byte("v"), store.SetOptions{Flags: 1})
			getErr := s.Get(tc.key, store.GetOptions{}, func(it store.Item) {
				require.Equal(t, tc.key, it.Key())
				require.Equal(t, "v", string(it.AppendValue(nil)))
			})
			_, arithErr := s.Arith(tc.key, store.ArithOptions{Delta: 1, Vivify: true})
			touchErr := s.Touch(tc.key, 10)
			delErr := s.Delete(tc.key, store.DeleteOptions{})
			if !tc.ok {
				for _, e := range []error{err, getErr, arithErr, touchErr, delErr} {
					require.ErrorIs(t, e, store.ErrBadKey)
				}
				require.Zero(t, s.Stats().CurrItems)
				return
			}
			require.NoError(t, err)
			require.NoError(t, getErr)
			require.ErrorIs(t, arithErr, store.ErrNonNumeric)
			require.NoError(t, touchErr)
			require.NoError(t, delErr)
			require.Zero(t, s.Stats().CurrItems)
		})
	}
	t.Run("similar binary keys are distinct", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		keys := [][]byte{{0}, {0, 0}, {0, 1}, {1, 0}, []byte("a\x00"), []byte("a"), []byte("A"), []byte("a ")}
		for i, k := range keys {
			_, err := s.Set(k, []byte{byte(i)}, store.SetOptions{})
			require.NoError(t, err)
		}
		for i, k := range keys {
			var v []byte
			require.NoError(t, s.Get(k, store.GetOptions{Peek: true}, func(it store.Item) { v = it.AppendValue(nil) }))
			require.Equal(t, []byte{byte(i)}, v, "key %q", k)
		}
		require.Equal(t, uint64(len(keys)), s.Stats().CurrItems)
	})
}

// ---------------------------------------------------------------------------
// Item size limit

func TestSemTooLarge(t *testing.T) {
	const mib = 1 << 20
	// memcached: 48 (item header) + key + 1 + value + 2 (CRLF)
	// + 8 with CAS + 4 when flags are not 0 must be <= item_size_max.
	tests := []struct {
		name  string
		nocas bool
		klen  int
		flags uint32
		max   int // largest value that fits
	}{
		{"cas no flags", false, 1, 0, mib - 48 - 2 - 2 - 8},
		{"cas flags", false, 1, 1, mib - 48 - 2 - 2 - 8 - 4},
		{"cas max flags", false, 1, 4294967295, mib - 48 - 2 - 2 - 8 - 4},
		{"nocas no flags", true, 1, 0, mib - 48 - 2 - 2},
		{"nocas flags", true, 1, 7, mib - 48 - 2 - 2 - 4},
		{"long key", false, 250, 0, mib - 48 - 251 - 2 - 8},
	}
	for _, tc := range tests {
		for _, over := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s over=%v", tc.name, over), func(t *testing.T) {
				s, _ := newSemStore(t, store.Config{NoCAS: tc.nocas, ItemSizeMax: mib})
				key := bytes.Repeat([]byte("k"), tc.klen)
				n := tc.max
				if over {
					n++
				}
				val := pattern(n, 3)
				require.Equal(t, over, s.TooLarge(tc.klen, tc.flags, n))
				_, err := s.Set(key, val, store.SetOptions{Flags: tc.flags})
				if over {
					require.ErrorIs(t, err, store.ErrTooLarge)
					require.Equal(t, uint64(1), s.Stats().StoreTooLarge)
					require.Zero(t, s.Stats().CurrItems)
					return
				}
				require.NoError(t, err)
				require.Zero(t, s.Stats().StoreTooLarge)
				var got []byte
				var flags uint32
				require.NoError(t, s.Get(key, store.GetOptions{}, func(it store.Item) {
					got, flags = it.AppendValue(nil), it.Flags
				}))
				requireSameBytes(t, val, got)
				require.Equal(t, tc.flags, flags)
			})
		}
	}
	t.Run("too large replaces nothing", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		mustSet(t, s, "k", "small", store.SetOptions{})
		_, err := s.Set([]byte("k"), make([]byte, 2*mib), store.SetOptions{})
		require.ErrorIs(t, err, store.ErrTooLarge)
		// memcached also unlinks the old item when a plain set fails this
		// way ("Avoid stale data persisting in cache because we failed
		// alloc", proto_text.c); the store leaves that to its caller, so the
		// old item is not checked here.
		_, err = s.Set([]byte("k"), make([]byte, 2*mib), store.SetOptions{Mode: store.ModeAdd})
		require.ErrorIs(t, err, store.ErrTooLarge)
		require.Equal(t, uint64(2), s.Stats().StoreTooLarge)
	})
	t.Run("append past the limit", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{ItemSizeMax: mib})
		const maxv = mib - 48 - 2 - 2 - 8
		base := pattern(maxv-16, 1)
		cas, err := s.Set([]byte("k"), base, store.SetOptions{})
		require.NoError(t, err)
		// Up to the limit exactly: fine.
		cas2, err := s.Set([]byte("k"), bytes.Repeat([]byte("x"), 16), store.SetOptions{Mode: store.ModeAppend})
		require.NoError(t, err)
		require.Greater(t, cas2, cas)
		want := append(append([]byte(nil), base...), bytes.Repeat([]byte("x"), 16)...)
		// One byte more: refused with NOT_STORED, as memcached (its
		// do_store_item cannot allocate the combined item), and the value
		// is intact.
		for _, mode := range []store.Mode{store.ModeAppend, store.ModePrepend} {
			_, err = s.Set([]byte("k"), []byte("y"), store.SetOptions{Mode: mode})
			require.ErrorIs(t, err, store.ErrNotStored)
		}
		var got []byte
		var gotCAS uint64
		require.NoError(t, s.Get([]byte("k"), store.GetOptions{Peek: true}, func(it store.Item) {
			got, gotCAS = it.AppendValue(nil), it.CAS
		}))
		requireSameBytes(t, want, got)
		require.Equal(t, cas2, gotCAS)
	})
	t.Run("append with flags counts the flags", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{ItemSizeMax: mib})
		const maxv = mib - 48 - 2 - 2 - 8 - 4
		_, err := s.Set([]byte("k"), make([]byte, maxv-1), store.SetOptions{Flags: 5})
		require.NoError(t, err)
		_, err = s.Set([]byte("k"), []byte("a"), store.SetOptions{Mode: store.ModeAppend})
		require.NoError(t, err)
		_, err = s.Set([]byte("k"), []byte("b"), store.SetOptions{Mode: store.ModeAppend})
		require.ErrorIs(t, err, store.ErrNotStored)
	})
	t.Run("vivified append past the limit", func(t *testing.T) {
		// An append with Vivify on an absent key stores the data as a new
		// item, so the data alone must fit.
		s, _ := newSemStore(t, store.Config{ItemSizeMax: mib})
		for _, mode := range []store.Mode{store.ModeAppend, store.ModePrepend} {
			_, err := s.Set([]byte("k"), make([]byte, 3*mib/2), store.SetOptions{Mode: mode, Vivify: true})
			require.ErrorIs(t, err, store.ErrTooLarge, "mode %d", mode)
			requireAbsent(t, s, "k")
		}
	})
}

// ---------------------------------------------------------------------------
// Chained (larger than a chunk) items

func TestSemChainedRoundTrip(t *testing.T) {
	const (
		kib = 1 << 10
		mib = 1 << 20
	)
	tests := []struct {
		name        string
		itemSizeMax int
		size        int
		flags       uint32
		key         string
	}{
		{"600 KiB", 0, 600 * kib, 0, "k"},
		{"600 KiB with flags and long key", 0, 600 * kib, 0xdeadbeef, strings.Repeat("L", 250)},
		{"just past one chunk", 0, 512*kib - 20, 0, "k"},
		{"1 MiB minus 200", 0, mib - 200, 7, "k"},
		{"5 MiB", 8 * mib, 5 * mib, 0, "k"},
		{"8 MiB limit", 8 * mib, 8*mib - 48 - 2 - 2 - 8 - 4, 1, "k"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newSemStore(t, store.Config{ItemSizeMax: tc.itemSizeMax})
			val := pattern(tc.size, byte(len(tc.name)))
			cas, err := s.Set([]byte(tc.key), val, store.SetOptions{Flags: tc.flags, Exptime: 60})
			require.NoError(t, err)
			require.Positive(t, usedChunks(s))

			var got []byte
			var it snap
			require.NoError(t, s.Get([]byte(tc.key), store.GetOptions{}, func(i store.Item) {
				got = i.AppendValue(nil)
				it = snapOf(i)
				// ValueSpans yields the same bytes in order.
				var spans []byte
				i.ValueSpans(func(b []byte) { spans = append(spans, b...) })
				requireSameBytes(t, got, spans)
			}))
			requireSameBytes(t, val, got)
			require.Equal(t, tc.size, it.Len)
			require.Equal(t, tc.flags, it.Flags)
			require.Equal(t, cas, it.CAS)
			require.Equal(t, int64(60), it.TTL)
			require.Equal(t, tc.key, string(it.Key))
			st := s.Stats()
			require.Equal(t, uint64(1), st.CurrItems)
			require.GreaterOrEqual(t, st.Bytes, int64(tc.size))

			require.NoError(t, s.Delete([]byte(tc.key), store.DeleteOptions{}))
			require.Zero(t, usedChunks(s), "delete frees every chunk of the chain")
			require.Zero(t, s.Stats().Bytes)
			require.Zero(t, s.Stats().CurrItems)
		})
	}
}

func TestSemChainedMutations(t *testing.T) {
	const kib = 1 << 10
	t.Run("append and prepend to a chained item", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		a, b, c := pattern(600*kib, 1), pattern(100*kib+3, 2), pattern(7, 3)
		_, err := s.Set([]byte("k"), a, store.SetOptions{Flags: 9, Exptime: 100})
		require.NoError(t, err)
		_, err = s.Set([]byte("k"), b, store.SetOptions{Mode: store.ModeAppend})
		require.NoError(t, err)
		_, err = s.Set([]byte("k"), c, store.SetOptions{Mode: store.ModePrepend})
		require.NoError(t, err)
		got := peek(t, s, "k")
		want := append(append(append([]byte(nil), c...), a...), b...)
		requireSameBytes(t, want, got.Value)
		require.Equal(t, uint32(9), got.Flags)
		require.Equal(t, int64(100), got.TTL)
		require.Equal(t, uint64(1), s.Stats().CurrItems)
	})
	t.Run("append makes a small item chained", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		a, b := pattern(400*kib, 4), pattern(400*kib, 5)
		_, err := s.Set([]byte("k"), a, store.SetOptions{})
		require.NoError(t, err)
		_, err = s.Set([]byte("k"), b, store.SetOptions{Mode: store.ModeAppend})
		require.NoError(t, err)
		requireSameBytes(t, append(append([]byte(nil), a...), b...), peek(t, s, "k").Value)
	})
	t.Run("replace chained by small and back", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		big := pattern(700*kib, 6)
		_, err := s.Set([]byte("k"), big, store.SetOptions{})
		require.NoError(t, err)
		chainChunks := usedChunks(s)
		require.GreaterOrEqual(t, chainChunks, int64(2))

		_, err = s.Set([]byte("k"), []byte("small"), store.SetOptions{Mode: store.ModeReplace})
		require.NoError(t, err)
		require.Equal(t, "small", string(peek(t, s, "k").Value))
		require.Equal(t, int64(1), usedChunks(s), "the chain is freed")

		big2 := pattern(700*kib, 7)
		_, err = s.Set([]byte("k"), big2, store.SetOptions{})
		require.NoError(t, err)
		requireSameBytes(t, big2, peek(t, s, "k").Value)
		require.Equal(t, chainChunks, usedChunks(s), "the small item is freed")

		require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{}))
		require.Zero(t, usedChunks(s))
		require.Zero(t, s.Stats().Bytes)
	})
	t.Run("many chained items and flush", func(t *testing.T) {
		s, clk := newSemStore(t, store.Config{})
		vals := map[string][]byte{}
		for i := 0; i < 8; i++ {
			k := fmt.Sprintf("big%d", i)
			vals[k] = pattern(520*kib+i*9001, byte(i))
			_, err := s.Set([]byte(k), vals[k], store.SetOptions{})
			require.NoError(t, err)
		}
		for k, v := range vals {
			requireSameBytes(t, v, peek(t, s, k).Value)
		}
		clk.Advance(1)
		s.FlushAll(0)
		for k := range vals {
			requireAbsent(t, s, k)
		}
		require.Zero(t, usedChunks(s), "lazily flushed chains are freed")
	})
	t.Run("expired chain is freed", func(t *testing.T) {
		s, clk := newSemStore(t, store.Config{})
		_, err := s.Set([]byte("k"), pattern(900*kib, 8), store.SetOptions{Exptime: 5})
		require.NoError(t, err)
		clk.Advance(5)
		requireAbsent(t, s, "k")
		require.Zero(t, usedChunks(s))
	})
	t.Run("delete keep item on a chain", func(t *testing.T) {
		s, _ := newSemStore(t, store.Config{})
		_, err := s.Set([]byte("k"), pattern(900*kib, 9), store.SetOptions{Flags: 3})
		require.NoError(t, err)
		require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{KeepItem: true}))
		got := peek(t, s, "k")
		require.Empty(t, got.Value)
		require.Equal(t, uint32(3), got.Flags)
		require.Equal(t, int64(1), usedChunks(s))
	})
}

// ---------------------------------------------------------------------------
// Observer

type obsEvent struct {
	kind  string // stored, deleted, flushed
	key   string
	value string
	flags uint32
	cas   uint64
	ttl   int64
	at    int64
}

type recorder struct {
	mu     sync.Mutex
	events []obsEvent
}

func (r *recorder) Stored(it store.Item) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, obsEvent{kind: "stored", key: string(it.Key()), value: string(it.AppendValue(nil)),
		flags: it.Flags, cas: it.CAS, ttl: it.TTL})
}

func (r *recorder) Deleted(key []byte, cas uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, obsEvent{kind: "deleted", key: string(key), cas: cas})
}

func (r *recorder) Flushed(at int64, _ uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, obsEvent{kind: "flushed", at: at})
}

// take returns and forgets the events so far.
func (r *recorder) take() []obsEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

func TestSemObserver(t *testing.T) {
	tests := []struct {
		name string
		prep func(t *testing.T, s *store.Store)
		op   func(t *testing.T, s *store.Store) uint64 // returns a CAS to expect, if any
		want func(cas uint64) []obsEvent
	}{
		{name: "set",
			op: func(t *testing.T, s *store.Store) uint64 {
				return mustSet(t, s, "k", "v", store.SetOptions{Flags: 3, Exptime: 10})
			},
			want: func(c uint64) []obsEvent {
				return []obsEvent{{kind: "stored", key: "k", value: "v", flags: 3, cas: c, ttl: 10}}
			}},
		{name: "append",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "k", "a", store.SetOptions{Flags: 3}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				return mustSet(t, s, "k", "b", store.SetOptions{Mode: store.ModeAppend})
			},
			want: func(c uint64) []obsEvent {
				return []obsEvent{{kind: "stored", key: "k", value: "ab", flags: 3, cas: c, ttl: -1}}
			}},
		{name: "incr in place",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "n", "10", store.SetOptions{}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				res, err := s.Arith([]byte("n"), store.ArithOptions{Decr: true, Delta: 1})
				require.NoError(t, err)
				return res.CAS
			},
			want: func(c uint64) []obsEvent { return []obsEvent{{kind: "stored", key: "n", value: "9 ", cas: c, ttl: -1}} }},
		{name: "incr grows",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "n", "9", store.SetOptions{}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				res, err := s.Arith([]byte("n"), store.ArithOptions{Delta: 1})
				require.NoError(t, err)
				return res.CAS
			},
			want: func(c uint64) []obsEvent { return []obsEvent{{kind: "stored", key: "n", value: "10", cas: c, ttl: -1}} }},
		{name: "incr vivify",
			op: func(t *testing.T, s *store.Store) uint64 {
				res, err := s.Arith([]byte("n"), store.ArithOptions{Delta: 1, Vivify: true, Initial: 5})
				require.NoError(t, err)
				return res.CAS
			},
			want: func(c uint64) []obsEvent { return []obsEvent{{kind: "stored", key: "n", value: "5", cas: c, ttl: -1}} }},
		{name: "touch",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "k", "v", store.SetOptions{Exptime: 10}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				require.NoError(t, s.Touch([]byte("k"), 99))
				return peek(t, s, "k").CAS
			},
			want: func(c uint64) []obsEvent { return []obsEvent{{kind: "stored", key: "k", value: "v", cas: c, ttl: 99}} }},
		{name: "gat",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "k", "v", store.SetOptions{Exptime: 10}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				_, err := read(s, "k", store.GetOptions{Touch: true, Exptime: 77})
				require.NoError(t, err)
				return peek(t, s, "k").CAS
			},
			want: func(c uint64) []obsEvent { return []obsEvent{{kind: "stored", key: "k", value: "v", cas: c, ttl: 77}} }},
		{name: "delete",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "k", "v", store.SetOptions{}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				cas := peek(t, s, "k").CAS
				require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{}))
				return cas + 1 // the deletion's version: the next CAS
			},
			want: func(c uint64) []obsEvent { return []obsEvent{{kind: "deleted", key: "k", cas: c}} }},
		{name: "delete invalidate is a store",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "k", "v", store.SetOptions{}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{Invalidate: true}))
				return peek(t, s, "k").CAS
			},
			want: func(c uint64) []obsEvent { return []obsEvent{{kind: "stored", key: "k", value: "v", cas: c, ttl: -1}} }},
		{name: "delete keep item is a store",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "k", "v", store.SetOptions{Flags: 2}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				require.NoError(t, s.Delete([]byte("k"), store.DeleteOptions{KeepItem: true}))
				return peek(t, s, "k").CAS
			},
			want: func(c uint64) []obsEvent { return []obsEvent{{kind: "stored", key: "k", flags: 2, cas: c, ttl: -1}} }},
		{name: "get vivify is a store",
			op: func(t *testing.T, s *store.Store) uint64 {
				got, err := read(s, "k", store.GetOptions{Vivify: true, VivifyExptime: 30})
				require.NoError(t, err)
				return got.CAS
			},
			want: func(c uint64) []obsEvent { return []obsEvent{{kind: "stored", key: "k", cas: c, ttl: 30}} }},
		{name: "flush_all now",
			op:   func(t *testing.T, s *store.Store) uint64 { s.FlushAll(0); return 0 },
			want: func(uint64) []obsEvent { return []obsEvent{{kind: "flushed", at: semBase}} }},
		{name: "flush_all delayed",
			op:   func(t *testing.T, s *store.Store) uint64 { s.FlushAll(100); return 0 },
			want: func(uint64) []obsEvent { return []obsEvent{{kind: "flushed", at: semBase + 100}} }},
		{name: "failed add",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "k", "v", store.SetOptions{}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				_, err := s.Set([]byte("k"), []byte("w"), store.SetOptions{Mode: store.ModeAdd})
				require.ErrorIs(t, err, store.ErrNotStored)
				return 0
			},
			want: func(uint64) []obsEvent { return nil }},
		{name: "failed replace, append, cas, incr, delete",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "k", "v", store.SetOptions{}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				_, err := s.Set([]byte("x"), []byte("w"), store.SetOptions{Mode: store.ModeReplace})
				require.Error(t, err)
				_, err = s.Set([]byte("x"), []byte("w"), store.SetOptions{Mode: store.ModeAppend})
				require.Error(t, err)
				_, err = s.Set([]byte("k"), []byte("w"), store.SetOptions{Mode: store.ModeCAS, CAS: 12345})
				require.Error(t, err)
				_, err = s.Arith([]byte("k"), store.ArithOptions{Delta: 1})
				require.Error(t, err)
				require.Error(t, s.Delete([]byte("x"), store.DeleteOptions{}))
				require.Error(t, s.Delete([]byte("k"), store.DeleteOptions{CAS: 12345}))
				return 0
			},
			want: func(uint64) []obsEvent { return nil }},
		{name: "get without touch",
			prep: func(t *testing.T, s *store.Store) { mustSet(t, s, "k", "v", store.SetOptions{}) },
			op: func(t *testing.T, s *store.Store) uint64 {
				mustGet(t, s, "k")
				_, err := read(s, "k", store.GetOptions{NoBump: true, Recache: true, RecacheExptime: 10})
				require.NoError(t, err)
				_, err = read(s, "missing", store.GetOptions{})
				require.ErrorIs(t, err, store.ErrNotFound)
				return 0
			},
			want: func(uint64) []obsEvent { return nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			s, _ := newSemStore(t, store.Config{Observer: rec})
			if tc.prep != nil {
				tc.prep(t, s)
			}
			rec.take()
			cas := tc.op(t, s)
			require.Equal(t, tc.want(cas), rec.take())
		})
	}
}

// ---------------------------------------------------------------------------
// Stats

func TestSemStats(t *testing.T) {
	s, clk := newSemStore(t, store.Config{})
	casA := mustSet(t, s, "a", "1", store.SetOptions{})
	mustSet(t, s, "b", "x", store.SetOptions{})
	st := s.Stats()
	require.Equal(t, uint64(2), st.CurrItems)
	require.Equal(t, uint64(2), st.TotalItems)

	mustGet(t, s, "a")
	_, err := read(s, "zz", store.GetOptions{})
	require.ErrorIs(t, err, store.ErrNotFound)
	st = s.Stats()
	require.Equal(t, uint64(1), st.GetHits)
	require.Equal(t, uint64(1), st.GetMisses)
	require.Equal(t, uint64(2), st.CmdGet)

	require.NoError(t, s.Delete([]byte("b"), store.DeleteOptions{}))
	require.ErrorIs(t, s.Delete([]byte("zz"), store.DeleteOptions{}), store.ErrNotFound)
	st = s.Stats()
	require.Equal(t, uint64(1), st.DeleteHits)
	require.Equal(t, uint64(1), st.DeleteMisses)
	require.Equal(t, uint64(1), st.CurrItems)

	for _, o := range []store.ArithOptions{{Delta: 1}, {Decr: true, Delta: 1}} {
		_, err := s.Arith([]byte("a"), o)
		require.NoError(t, err)
		_, err = s.Arith([]byte("zz"), o)
		require.ErrorIs(t, err, store.ErrNotFound)
	}
	mustSet(t, s, "text", "abc", store.SetOptions{})
	_, err = s.Arith([]byte("text"), store.ArithOptions{Delta: 1})
	require.ErrorIs(t, err, store.ErrNonNumeric)
	st = s.Stats()
	require.Equal(t, uint64(1), st.IncrHits, "a non-numeric value is neither hit nor miss")
	require.Equal(t, uint64(1), st.IncrMisses)
	require.Equal(t, uint64(1), st.DecrHits)
	require.Equal(t, uint64(1), st.DecrMisses)

	casA = peek(t, s, "a").CAS
	_, err = s.Set([]byte("zz"), []byte("v"), store.SetOptions{Mode: store.ModeCAS, CAS: 1})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.Set([]byte("a"), []byte("v"), store.SetOptions{Mode: store.ModeCAS, CAS: casA + 100})
	require.ErrorIs(t, err, store.ErrExists)
	_, err = s.Set([]byte("a"), []byte("v"), store.SetOptions{Mode: store.ModeCAS, CAS: casA})
	require.NoError(t, err)
	st = s.Stats()
	require.Equal(t, uint64(1), st.CasMisses)
	require.Equal(t, uint64(1), st.CasBadval)
	require.Equal(t, uint64(1), st.CasHits)

	require.NoError(t, s.Touch([]byte("a"), 100))
	require.ErrorIs(t, s.Touch([]byte("zz"), 100), store.ErrNotFound)
	_, err = read(s, "a", store.GetOptions{Touch: true, Exptime: 50})
	require.NoError(t, err)
	st = s.Stats()
	require.Equal(t, uint64(2), st.TouchHits)
	require.Equal(t, uint64(1), st.TouchMisses)
	require.Equal(t, uint64(3), st.CmdTouch)
	require.Equal(t, uint64(1), st.GetHits, "gat hits are touch hits")
	require.Equal(t, uint64(1), st.GetMisses, "touch misses are not get misses")

	// a, b, text, and the cas-set a were linked; incr/decr were in place.
	require.Equal(t, uint64(4), st.TotalItems)
	require.Equal(t, uint64(2), st.CurrItems)
	require.Equal(t, uint64(4), st.CmdSet)

	mustSet(t, s, "exp", "v", store.SetOptions{Exptime: 1})
	clk.Advance(1)
	requireAbsent(t, s, "exp")
	s.FlushAll(0)
	requireAbsent(t, s, "a")
	_, err = s.Set([]byte("big"), make([]byte, 2<<20), store.SetOptions{})
	require.ErrorIs(t, err, store.ErrTooLarge)
	mustSet(t, s, "after", "v", store.SetOptions{})
	st = s.Stats()
	require.Equal(t, uint64(1), st.GetExpired)
	require.Equal(t, uint64(1), st.GetFlushed)
	require.Equal(t, uint64(1), st.CmdFlush)
	require.Equal(t, uint64(1), st.StoreTooLarge)
	require.Equal(t, uint64(2), st.CurrItems, "text (flushed, not yet read) and after")
	require.Positive(t, st.Bytes)

	s.ResetStats()
	st = s.Stats()
	require.Equal(t, uint64(2), st.CurrItems, "stats reset keeps curr_items")
	require.Positive(t, st.Bytes, "stats reset keeps bytes")
	zero := store.Stats{
		CurrItems:     st.CurrItems,
		Bytes:         st.Bytes,
		LimitMaxbytes: st.LimitMaxbytes,
		TotalMalloced: st.TotalMalloced,
		HashBytes:     st.HashBytes,
	}
	require.Equal(t, zero, st, "every counter is zero after a reset")
	require.Equal(t, "v", string(mustGet(t, s, "after").Value), "items survive a reset")
	require.Equal(t, uint64(1), s.Stats().GetHits)
}

// TestSemTouchIsNotAGet: memcached counts touch and gat in cmd_touch and
// touch_hits/touch_misses only; get_cmds (cmd_get) is counted for plain
// gets (proto_text.c process_touch_command and process_get_command with
// should_touch, proto_bin.c process_bin_get_or_touch).
func TestSemTouchIsNotAGet(t *testing.T) {
	tests := []struct {
		name string
		op   func(s *store.Store) error
	}{
		{"touch hit", func(s *store.Store) error { return s.Touch([]byte("k"), 10) }},
		{"touch miss", func(s *store.Store) error {
			if err := s.Touch([]byte("zz"), 10); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("touch miss: %v", err)
			}
			return nil
		}},
		{"gat hit", func(s *store.Store) error {
			_, err := read(s, "k", store.GetOptions{Touch: true, Exptime: 10})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// BUG: Store.Touch goes through Get, which counts cmdGet for
			// every non-peek call, touch or not; memcached's cmd_get does not
			// include touch or gat.
			s, _ := newSemStore(t, store.Config{})
			mustSet(t, s, "k", "v", store.SetOptions{})
			require.NoError(t, tc.op(s))
			st := s.Stats()
			require.Equal(t, uint64(1), st.CmdTouch)
			require.Zero(t, st.CmdGet, "touch/gat must not count as cmd_get")
		})
	}
}

// A lookup told to say why it missed (GetOptions.Miss, for watch's
// item_get lines) names what it removed, as memcached's do_item_get does.
func TestSemMissReason(t *testing.T) {
	tests := []struct {
		name string
		prep func(s *store.Store, clk *store.Clock)
		want store.Miss
	}{
		{"absent", func(*store.Store, *store.Clock) {}, store.MissAbsent},
		{"expired", func(s *store.Store, clk *store.Clock) {
			_, _ = s.Set([]byte("k"), []byte("v"), store.SetOptions{Exptime: 10})
			clk.Set(semBase + 10)
		}, store.MissExpired},
		{"flushed", func(s *store.Store, clk *store.Clock) {
			_, _ = s.Set([]byte("k"), []byte("v"), store.SetOptions{})
			clk.Set(semBase + 5)
			s.FlushAll(0)
		}, store.MissFlushed},
		{"flushed in the second it was written", func(s *store.Store, clk *store.Clock) {
			_, _ = s.Set([]byte("k"), []byte("v"), store.SetOptions{})
			s.FlushAll(0)
		}, store.MissFlushed},
		{"delayed flush once it takes effect", func(s *store.Store, clk *store.Clock) {
			_, _ = s.Set([]byte("k"), []byte("v"), store.SetOptions{})
			s.FlushAll(5)
			clk.Set(semBase + 6)
		}, store.MissFlushed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newSemStore(t, store.Config{})
			tc.prep(s, clk)
			why := store.Miss(255)
			err := s.Get([]byte("k"), store.GetOptions{Miss: &why}, func(store.Item) {})
			require.ErrorIs(t, err, store.ErrNotFound)
			require.Equal(t, tc.want, why)
			// Asked again, the item is gone.
			require.ErrorIs(t, s.Get([]byte("k"), store.GetOptions{Miss: &why}, func(store.Item) {}), store.ErrNotFound)
			require.Equal(t, store.MissAbsent, why)
		})
	}
}
