package replication

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/store"
)

// A peer that kept its memory while away (partition, SIGSTOP, a dropped
// link) must lose, at its resync, what was deleted and flushed meanwhile:
// the resync carries tombstones and the flush state, not only live items.
func TestResyncCarriesDeletesAndFlush(t *testing.T) {
	a, b := newPair(t)
	a.start(t)

	write(t, a, set("k", "old", store.SetOptions{}))
	write(t, a, set("f", "old", store.SetOptions{}))
	// b holds what a held before it went away.
	for key, it := range contents(a.st) {
		ok, err := b.st.ApplyState([]byte(key), []byte(it.value), it.flags, 0, it.cas, false)
		require.NoError(t, err)
		require.True(t, ok)
	}
	write(t, a, func(st *store.Store) error { return st.Delete([]byte("k"), store.DeleteOptions{}) })
	write(t, a, func(st *store.Store) error { st.FlushAll(0); return nil })
	write(t, a, set("after", "new", store.SetOptions{}))

	b.start(t)
	waitInSync(t, a, b)
	_, okK := lookup(t, b.st, "k")
	_, okF := lookup(t, b.st, "f")
	require.False(t, okK, "a key deleted while the peer was away is back on it")
	require.False(t, okF, "a key flushed while the peer was away is back on it")
	require.Equal(t, contents(a.st), contents(b.st))
}

// A delayed flush_all still to come reaches a peer that was away when it
// was sent.
func TestResyncCarriesPendingFlush(t *testing.T) {
	a, b := newPair(t)
	a.start(t)
	write(t, a, func(st *store.Store) error { st.FlushAll(3600); return nil })
	pending, _ := a.st.FlushState()
	require.NotZero(t, pending)
	b.start(t)
	waitInSync(t, a, b)
	got, _ := b.st.FlushState()
	require.Equal(t, pending, got)
}

// A version far ahead of the wall clock (a CAS near 2^64 from a peer) does
// not move the clock: the next local CAS would otherwise wrap.
func TestHLCIgnoresFarFuture(t *testing.T) {
	c := newHLC(3)
	before := c.next()
	c.observe(1<<64 - 1)
	after := c.next()
	require.Greater(t, after, before)
	require.Less(t, after, before+uint64(time.Hour.Milliseconds())<<wallShift)
}
