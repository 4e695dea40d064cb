package replication

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeWall is a wall clock a test moves by hand.
type fakeWall struct {
	mu sync.Mutex
	t  time.Time
}

func (w *fakeWall) now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.t
}

func (w *fakeWall) ms() int64 { return w.now().UnixMilli() }

func (w *fakeWall) set(t time.Time) {
	w.mu.Lock()
	w.t = t
	w.mu.Unlock()
}

func TestHLCNextIncreases(t *testing.T) {
	for _, node := range []uint64{0, 1, 7, nodeMask} {
		c := newHLC(node)
		prev := uint64(0)
		// More than 4096 calls: the counter of one millisecond overflows
		// into the wall bits and the values must still grow.
		for i := 0; i < 20000; i++ {
			v := c.next()
			require.Greater(t, v, prev, "node %d call %d", node, i)
			require.Equal(t, node, v&nodeMask, "node bits")
			prev = v
		}
	}
}

func TestHLCNodeMasked(t *testing.T) {
	// A node number is only nodeBits wide: higher bits must not leak into
	// the counter or the wall.
	c := newHLC(1<<nodeBits | 5)
	require.Equal(t, uint64(5), c.next()&nodeMask)
}

func TestHLCConcurrentUnique(t *testing.T) {
	const goroutines, per = 8, 5000
	c := newHLC(3)
	out := make([][]uint64, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vs := make([]uint64, per)
			for i := range vs {
				vs[i] = c.next()
			}
			out[g] = vs
		}()
	}
	wg.Wait()
	seen := make(map[uint64]bool, goroutines*per)
	for g, vs := range out {
		for i, v := range vs {
			if i > 0 {
				require.Greater(t, v, vs[i-1], "goroutine %d: not increasing at %d", g, i)
			}
			require.Equal(t, uint64(3), v&nodeMask)
			require.False(t, seen[v], "duplicate %d", v)
			seen[v] = true
		}
	}
	require.Len(t, seen, goroutines*per)
}

func TestHLCObserve(t *testing.T) {
	wall := &fakeWall{t: time.UnixMilli(hlcEpoch + 1000)}
	c := newHLC(2)
	c.ms = wall.ms
	local := c.next()

	tests := []struct {
		name   string
		remote uint64
	}{
		{"far ahead", local + 1<<40 | 9},
		{"just ahead", local + 1<<nodeBits | 9},
		{"same instant, higher node", local&^nodeMask | nodeMask},
		{"behind", local >> 1},
		{"zero", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.next()
			c.observe(tt.remote)
			v := c.next()
			require.Greater(t, v, tt.remote)
			require.Greater(t, v, before)
			require.Equal(t, uint64(2), v&nodeMask)
		})
	}
}

func TestHLCObserveConcurrent(t *testing.T) {
	// observe and next racing: every value next returns after an observe
	// returned is above the observed version.
	c := newHLC(1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				c.next()
			}
		}
	}()
	remote := c.next()
	for i := 0; i < 2000; i++ {
		remote += 1 << (nodeBits + 3)
		c.observe(remote | 5)
		require.Greater(t, c.next(), remote|5)
	}
	close(stop)
	wg.Wait()
}

func TestHLCWallBackwards(t *testing.T) {
	base := time.UnixMilli(hlcEpoch + 10_000_000)
	wall := &fakeWall{t: base}
	c := newHLC(4)
	c.ms = wall.ms
	steps := []time.Duration{0, time.Millisecond, -time.Hour, -time.Hour, 5 * time.Second, -24 * time.Hour, 0, time.Millisecond}
	prev := uint64(0)
	at := base
	for i, d := range steps {
		at = at.Add(d)
		wall.set(at)
		for j := 0; j < 100; j++ {
			v := c.next()
			require.Greater(t, v, prev, "step %d (%v), call %d", i, d, j)
			require.Equal(t, uint64(4), v&nodeMask)
			prev = v
		}
	}
	// A wall clock before the epoch (or at zero) is clamped, not wrapped.
	wall.set(time.Unix(0, 0))
	require.Greater(t, c.next(), prev)

	fresh := newHLC(4)
	fresh.ms = func() int64 { return 0 }
	a, b := fresh.next(), fresh.next()
	require.Less(t, a, b)
	require.Less(t, b, uint64(1)<<wallShift, "a pre-epoch clock must not wrap into the wall bits")
}

func TestHLCWallBits(t *testing.T) {
	// The wall part is milliseconds since hlcEpoch.
	c := newHLC(0)
	c.ms = func() int64 { return hlcEpoch + 12345 }
	require.Equal(t, uint64(12345), c.next()>>wallShift)
}

func TestSinceStart(t *testing.T) {
	// An hour-old start, moved on by the monotonic clock, reads the wall
	// clock of now.
	ms := sinceStart(time.Now().Add(-time.Hour))
	require.InDelta(t, time.Now().UnixMilli(), ms(), 50)
	a := ms()
	deadline := time.Now().Add(time.Second)
	for ms() == a && time.Now().Before(deadline) {
	}
	require.Greater(t, ms(), a, "the clock moves")
}

func BenchmarkHLCNext(b *testing.B) {
	c := newHLC(1)
	b.ReportAllocs()
	for b.Loop() {
		c.next()
	}
}

func TestHLCNextAbove(t *testing.T) {
	wall := &fakeWall{t: time.UnixMilli(hlcEpoch + 1000)}
	c := newHLC(6)
	c.ms = wall.ms
	local := c.next()
	farAhead := local + (2*maxAheadMs)<<wallShift | 9

	tests := []struct {
		name string
		cur  uint64
		want func(n uint64) bool
	}{
		{"no version", 0, func(n uint64) bool { return n > local }},
		{"behind", local >> 1, func(n uint64) bool { return n > local }},
		{"far ahead: just above it", farAhead, func(n uint64) bool { return n == farAhead&^nodeMask+1<<nodeBits|6 }},
		{"top of the range: nothing above", ^uint64(0), func(n uint64) bool { return n < farAhead && n > local }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.observe(tt.cur) // as a peer's frame would: not followed when far ahead
			n := c.nextAbove(tt.cur)
			if tt.cur == farAhead {
				// Two keys at the same far version get different CAS values.
				again := c.nextAbove(farAhead)
				require.Greater(t, again, n)
				require.Greater(t, c.nextAbove(farAhead-1<<nodeBits), again)
			}
			require.True(t, tt.want(n), "nextAbove(%#x) = %#x", tt.cur, n)
			require.Equal(t, uint64(6), n&nodeMask)
			// The clock itself did not jump ahead with the key.
			require.Less(t, c.next(), farAhead)
		})
	}
}
