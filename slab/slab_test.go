package slab

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newTestAllocator(t *testing.T, cfg Config) *Allocator {
	t.Helper()
	a, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	return a
}

// TestClassesMatchMemcached: with memcached's defaults (a 48-byte item header
// plus -n 48, -f 1.25, 1 MiB pages) the classes are the 39 that memcached
// 1.6 prints with -vv.
func TestClassesMatchMemcached(t *testing.T) {
	a := newTestAllocator(t, Config{MinChunk: 96, Factor: 1.25})
	want := []struct{ size, perPage int }{
		{96, 10922}, {120, 8738}, {152, 6898}, {192, 5461}, {240, 4369}, {304, 3449},
		{384, 2730}, {480, 2184}, {600, 1747}, {752, 1394}, {944, 1110}, {1184, 885},
		{1480, 708}, {1856, 564}, {2320, 451}, {2904, 361}, {3632, 288}, {4544, 230},
		{5680, 184}, {7104, 147}, {8880, 118}, {11104, 94}, {13880, 75}, {17352, 60},
		{21696, 48}, {27120, 38}, {33904, 30}, {42384, 24}, {52984, 19}, {66232, 15},
		{82792, 12}, {103496, 10}, {129376, 8}, {161720, 6}, {202152, 5}, {252696, 4},
		{315872, 3}, {394840, 2}, {524288, 2},
	}
	require.Equal(t, len(want), a.NumClasses())
	for i, w := range want {
		require.Equal(t, w.size, a.ChunkSize(i+1), "class %d", i+1)
		require.Equal(t, w.perPage, a.ChunksPerPage(i+1), "class %d", i+1)
	}
}

func TestClassesGrowAndAlign(t *testing.T) {
	for _, f := range []float64{1.01, 1.05, 1.25, 2, 10} {
		a := newTestAllocator(t, Config{MinChunk: 77, Factor: f})
		prev := 0
		for c := 1; c <= a.NumClasses(); c++ {
			size := a.ChunkSize(c)
			require.Zero(t, size%8, "factor %g class %d", f, c)
			require.Greater(t, size, prev, "factor %g class %d", f, c)
			prev = size
		}
		require.Equal(t, 512<<10, prev, "the largest class is the chunk max")
		require.LessOrEqual(t, a.NumClasses(), MaxClasses)
	}
}

func TestClassFor(t *testing.T) {
	a := newTestAllocator(t, Config{MinChunk: 96, Factor: 1.25})
	for _, tc := range []struct{ size, class int }{
		{1, 1}, {96, 1}, {97, 2}, {120, 2}, {121, 3}, {524288, 39}, {524289, 0},
	} {
		require.Equal(t, tc.class, a.ClassFor(tc.size), "size %d", tc.size)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"page not a power of two": {PageSize: 100 << 10},
		"page too small":          {PageSize: 32 << 10},
		"factor 1":                {Factor: 1},
		"tiny chunk":              {MinChunk: 8},
		"chunk max over page":     {ChunkMax: 2 << 20},
		"limit below a page":      {Limit: 1000},
		"chunk max below min":     {PageSize: 64 << 10, MinChunk: 17, ChunkMax: 20},
	} {
		_, err := New(cfg)
		require.Error(t, err, name)
	}
}

// TestAllocUntilLimit fills memory with one class, checks that every chunk
// is distinct and that the limit holds, then frees and reuses.
func TestAllocUntilLimit(t *testing.T) {
	a := newTestAllocator(t, Config{Limit: 4 << 20, PageSize: 64 << 10, MinChunk: 96, Factor: 1.25})
	cls := a.ClassFor(1000)
	size := a.ChunkSize(cls)
	var refs []Ref
	for {
		r, ok := a.Alloc(cls)
		if !ok {
			break
		}
		b := a.Bytes(r, size)
		for i := range b {
			b[i] = byte(len(refs))
		}
		refs = append(refs, r)
	}
	require.Equal(t, 64*a.ChunksPerPage(cls), len(refs), "64 pages of 64 KiB")
	require.Equal(t, int64(4<<20), a.Malloced())
	require.False(t, a.CanGrow())
	for i, r := range refs {
		require.Equal(t, bytes.Repeat([]byte{byte(i)}, size), a.Bytes(r, size), "chunk %d overwritten", i)
		require.Equal(t, cls, a.ClassOf(r))
	}
	// Another class gets nothing once the limit is reached.
	_, ok := a.Alloc(cls + 1)
	require.False(t, ok)

	a.Free(refs[7])
	r, ok := a.Alloc(cls)
	require.True(t, ok)
	require.Equal(t, refs[7], r)
	st := a.Stats(cls)
	require.Equal(t, int64(len(refs)), st.UsedChunks)
	require.Equal(t, 64, st.Pages)
	require.Panics(t, func() { a.Free(refs[3]); a.Free(refs[3]) }, "double free")
}

func TestSetLimit(t *testing.T) {
	a := newTestAllocator(t, Config{Limit: 1 << 20, PageSize: 64 << 10})
	cls := a.NumClasses()
	n := 0
	for ; ; n++ {
		if _, ok := a.Alloc(cls); !ok {
			break
		}
	}
	require.Equal(t, 16*a.ChunksPerPage(cls), n)
	a.SetLimit(2 << 20)
	require.Equal(t, int64(2<<20), a.Limit())
	_, ok := a.Alloc(cls)
	require.True(t, ok)
	a.SetLimit(1 << 20)
	require.False(t, a.CanGrow())
	a.SetLimit(1 << 40)
	require.Equal(t, int64(4<<20), a.Limit(), "raised at most to four times the first limit")
}

// TestRefsAddressLargeMemory: limits past 32 GiB widen the alignment so
// that 32-bit refs still reach every page (page numbers start at 1 in a
// Ref, so 16-byte units reach 65535 pages: 64 GiB needs 32). Nothing is
// mapped by New.
func TestRefsAddressLargeMemory(t *testing.T) {
	for _, tc := range []struct {
		limit int64
		align int
	}{{1 << 30, 8}, {32 << 30, 16}, {64 << 30, 32}, {100 << 30, 32}} {
		a := newTestAllocator(t, Config{Limit: tc.limit, MinChunk: 77})
		require.Equal(t, tc.align, 1<<a.alignShift, "limit %d", tc.limit)
		for c := 1; c <= a.NumClasses(); c++ {
			require.Zero(t, a.ChunkSize(c)%tc.align)
		}
		// The last page's last chunk round-trips through a Ref.
		p := int32(tc.limit/int64(a.pageSize)) - 1
		off := a.pageSize - a.ChunkSize(1)
		q, o := a.split(a.ref(p, off))
		require.Equal(t, p, q)
		require.Equal(t, off&^(tc.align-1), o)
	}
}

func TestReassign(t *testing.T) {
	a := newTestAllocator(t, Config{Limit: 1 << 20, PageSize: 64 << 10, MinChunk: 96, Factor: 1.25})
	src, dst := a.ClassFor(100), a.ClassFor(5000)
	live := map[Ref]bool{}
	for {
		r, ok := a.Alloc(src)
		if !ok {
			break
		}
		live[r] = true
	}
	require.Equal(t, 16, a.Stats(src).Pages)
	var evicted int
	err := a.Reassign(src, dst, func(r Ref) bool {
		require.True(t, live[r])
		delete(live, r)
		a.Free(r)
		evicted++
		return true
	})
	require.NoError(t, err)
	require.Equal(t, a.ChunksPerPage(src), evicted)
	require.Equal(t, 15, a.Stats(src).Pages)
	require.Equal(t, 1, a.Stats(dst).Pages)
	require.Equal(t, int64(len(live)), a.Stats(src).UsedChunks)
	// The moved page is now dst's: its chunks are handed out there.
	for i := 0; i < a.ChunksPerPage(dst); i++ {
		r, ok := a.Alloc(dst)
		require.True(t, ok)
		require.Equal(t, dst, a.ClassOf(r))
	}
	_, ok := a.Alloc(dst)
	require.False(t, ok)

	require.ErrorIs(t, a.Reassign(src, src, nil), ErrSameClass)
	require.ErrorIs(t, a.Reassign(0, dst, nil), ErrBadClass)
	require.ErrorIs(t, a.Reassign(src, a.NumClasses()+1, nil), ErrBadClass)
	require.ErrorIs(t, a.Reassign(dst, src, nil), ErrNoSpare, "dst has one page")
}

// TestReassignBusy: a page whose chunks are never freed is given back to its
// class after the deadline, intact.
func TestReassignBusy(t *testing.T) {
	a := newTestAllocator(t, Config{Limit: 1 << 20, PageSize: 64 << 10})
	src := a.NumClasses()
	for {
		if _, ok := a.Alloc(src); !ok {
			break
		}
	}
	before := a.Stats(src)
	require.ErrorIs(t, a.Reassign(src, 1, func(Ref) bool { return true }), ErrBusy)
	after := a.Stats(src)
	require.Equal(t, before.Pages, after.Pages)
	require.Equal(t, before.UsedChunks, after.UsedChunks)
	_, ok := a.Alloc(src)
	require.False(t, ok, "no chunk of the restored page may be free")

	// An owner that cannot give its chunk up abandons the move at once.
	start := time.Now()
	require.ErrorIs(t, a.Reassign(src, 1, func(Ref) bool { return false }), ErrBusy)
	require.Less(t, time.Since(start), 500*time.Millisecond)
	require.Equal(t, before.Pages, a.Stats(src).Pages)
}

// TestSteal: Steal may take a class's only page; Reassign may not.
func TestSteal(t *testing.T) {
	a := newTestAllocator(t, Config{Limit: 1 << 20, PageSize: 64 << 10, MinChunk: 96, Factor: 1.25})
	src, dst := a.ClassFor(100), a.ClassFor(5000)
	r, ok := a.Alloc(src)
	require.True(t, ok)
	require.ErrorIs(t, a.Reassign(src, dst, nil), ErrNoSpare)
	require.NoError(t, a.Steal(src, dst, func(got Ref) bool {
		require.Equal(t, r, got)
		a.Free(got)
		return true
	}))
	require.Zero(t, a.Stats(src).Pages)
	require.Equal(t, 1, a.Stats(dst).Pages)
}

// TestPrefetch: a prefetch is only a hint. Refs that name no memory (0, a
// page never mapped, an offset past the page) are ignored, and one of a
// live chunk leaves its bytes as they were.
func TestPrefetch(t *testing.T) {
	a := newTestAllocator(t, Config{Limit: 4 << 20, PageSize: 64 << 10, MinChunk: 96, Factor: 1.25})
	cls := a.ClassFor(100)
	r, ok := a.Alloc(cls)
	require.True(t, ok)
	b := a.Bytes(r, a.ChunkSize(cls))
	for i := range b {
		b[i] = byte(i)
	}
	want := bytes.Clone(b)
	for _, ref := range []Ref{0, r, Ref(^uint32(0)), Ref(uint32(a.maxPages) << a.unitBits), r | (1<<a.unitBits - 1)} {
		a.Prefetch(ref)
	}
	require.Equal(t, want, a.Bytes(r, a.ChunkSize(cls)))
	PrefetchAddr(nil) // never faults, even on memory that is not mapped
}

// TestClock: the hand visits every allocated chunk of a class once per
// revolution, page by page in address order, skips freed chunks, wraps
// round, and Hand peeks without moving it.
func TestClock(t *testing.T) {
	a := newTestAllocator(t, Config{Limit: 1 << 20, PageSize: 64 << 10, MinChunk: 96, Factor: 1.25})
	cls := a.ClassFor(1000)
	require.Zero(t, a.Clock(cls), "no pages yet")
	require.Zero(t, a.Hand(cls))
	per := a.ChunksPerPage(cls)
	var all []Ref
	for i := 0; i < 2*per+3; i++ { // three pages, the last one started
		r, ok := a.Alloc(cls)
		require.True(t, ok)
		all = append(all, r)
	}
	// Free every third chunk: the hand must pass over them.
	var want []Ref
	for i, r := range all {
		if i%3 == 1 {
			a.Free(r)
		} else {
			want = append(want, r)
		}
	}
	for rev := 0; rev < 2; rev++ {
		for i, w := range want {
			require.Equal(t, w, a.Hand(cls), "revolution %d, chunk %d: peek", rev, i)
			require.Equal(t, w, a.Clock(cls), "revolution %d, chunk %d", rev, i)
		}
	}
	// A chunk allocated while the hand goes round is visited within a revolution.
	require.Equal(t, want[0], a.Clock(cls))
	r, ok := a.Alloc(cls) // the last chunk freed, on the third page
	require.True(t, ok)
	seen := false
	for range want {
		if a.Clock(cls) == r {
			seen = true
		}
	}
	require.True(t, seen, "the chunk allocated meanwhile is visited")
	// Another class is untouched.
	require.Zero(t, a.Clock(a.ClassFor(100)))
}

// TestChunk: Chunk names the class of a chunk's start and rejects anything
// else (a ref read without a lock may be any number) without panicking.
func TestChunk(t *testing.T) {
	a := newTestAllocator(t, Config{Limit: 1 << 20, PageSize: 64 << 10, MinChunk: 96, Factor: 1.25})
	cls := a.ClassFor(200)
	r, ok := a.Alloc(cls)
	require.True(t, ok)
	got, ok := a.Chunk(r)
	require.True(t, ok)
	require.Equal(t, cls, got)
	_, ok = a.Chunk(r + 1) // 8 bytes into the chunk
	require.False(t, ok)
	for _, bad := range []Ref{0, 1, 1 << 31, ^Ref(0), Ref(5) << a.unitBits} {
		_, ok := a.Chunk(bad)
		require.False(t, ok, "%#x", uint32(bad))
	}
}
