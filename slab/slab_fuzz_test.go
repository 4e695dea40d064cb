package slab

import (
	"encoding/binary"
	"slices"
	"sort"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// fuzzPage is the smallest page New accepts: more pages per byte of input,
// so limits, reassignment and page boundaries are reached by short inputs.
const fuzzPage = 64 << 10

// Operations of FuzzAllocator, the low three bits of an op byte; the high
// five bits (hi) parameterise some of them.
const (
	opAlloc     = iota // Alloc(arg%n + 1)
	opAlloc2           // the same: single allocations are the common case
	opAllocMany        // up to 1+hi*8 allocations from one class, until one fails
	opFree             // Free(live[arg])
	opFreeMany         // hi even: free 1+hi*4 chunks from live[arg]; odd: all of live[arg]'s class
	opReassign         // Reassign(src from arg, dst from the next byte); hi&1: Alloc from src inside evict, hi&2: free other chunks too
	opSetLimit         // SetLimit(arg%10 pages, plus a few bytes that must be ignored)
	opVerify           // full pattern and used-chunk check of every live chunk
)

// FuzzAllocator drives one Allocator with operations decoded from the input
// and checks it after every one against the test's own books: which chunks
// are live, in which class, and what was written into them.
//
// Input: 4 config bytes (limit, growth factor, smallest chunk, chunk max),
// then operations of two bytes (op, arg); opReassign takes a third.
func FuzzAllocator(f *testing.F) {
	// One page, default-ish classes: fill a class, free, reuse.
	f.Add([]byte{0, 16, 10, 0, opAllocMany | 31<<3, 0, opAllocMany | 31<<3, 0, opFree, 3, opAlloc, 0, opVerify, 0})
	// Four pages, factor 2: fill all of them with 6 KiB chunks, free some,
	// move the emptiest page to a small class and use it there.
	f.Add([]byte{3, 64, 4, 0,
		opAllocMany | 31<<3, 8, opFreeMany | 2<<3, 0,
		opReassign, 0, 5, opAllocMany | 3<<3, 5, opVerify, 0})
	// Reassign with src -1 while allocating from the source inside evict.
	f.Add([]byte{5, 40, 0, 1,
		opAllocMany | 31<<3, 2, opAllocMany | 31<<3, 2, opAllocMany | 31<<3, 2,
		opAllocMany | 31<<3, 2, opAllocMany | 31<<3, 2, opAllocMany | 31<<3, 2,
		opReassign | 1<<3, 0, 7, opAllocMany | 31<<3, 7, opVerify, 0})
	// The same while the callback also frees other chunks, as a store
	// freeing a whole chained item does.
	f.Add([]byte{5, 40, 0, 1,
		opAllocMany | 31<<3, 2, opAllocMany | 31<<3, 2, opAllocMany | 31<<3, 2,
		opAllocMany | 31<<3, 2, opAllocMany | 31<<3, 2, opAllocMany | 31<<3, 2,
		opReassign | 3<<3, 0, 7, opAllocMany | 31<<3, 7, opVerify, 0})
	// Lower the limit under what is in use, then raise it.
	f.Add([]byte{2, 8, 30, 2,
		opAllocMany | 31<<3, 9, opAllocMany | 31<<3, 9, opSetLimit, 1,
		opAlloc, 200, opFreeMany | 1<<3, 0, opSetLimit, 9, opAllocMany | 31<<3, 200})
	// Chunk max equal to the page: one chunk per page in the largest class.
	f.Add([]byte{1, 200, 255, 1, opAlloc, 255, opAlloc, 255, opAlloc, 254, opReassign, 255, 0, opFree, 0})
	// The finest factor: the class count hits MaxClasses.
	f.Add([]byte{4, 0, 0, 1, opAlloc, 254, opAlloc, 1, opAllocMany | 7<<3, 100, opReassign, 0, 3})

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		cfg := fuzzAllocConfig(data[:4])
		a, err := New(cfg)
		require.NoError(t, err, "config %+v", cfg)
		defer func() { require.NoError(t, a.Close()) }()
		m := newAllocModel(t, a, cfg)
		m.checkClasses(cfg)

		ops := data[4:]
		for len(ops) > 0 {
			op, hi := ops[0]&7, int(ops[0]>>3)
			arg := byte(0)
			if len(ops) > 1 {
				arg = ops[1]
			}
			ops = ops[min(2, len(ops)):]
			switch op {
			case opAlloc, opAlloc2:
				m.alloc(int(arg)%m.n + 1)
			case opAllocMany:
				cls := int(arg)%m.n + 1
				for i := 0; i <= hi*8 && m.alloc(cls); i++ {
				}
			case opFree:
				if len(m.live) > 0 {
					m.free(int(arg) % len(m.live))
				}
			case opFreeMany:
				m.freeMany(int(arg), hi)
			case opReassign:
				arg2 := byte(0)
				if len(ops) > 0 {
					arg2, ops = ops[0], ops[1:]
				}
				m.reassign(arg, arg2, hi&1 != 0, hi&2 != 0)
			case opSetLimit:
				m.setLimit(arg)
			case opVerify:
				m.verifyAll()
			}
			m.check()
		}
		m.verifyAll()
	})
}

// fuzzAllocConfig reads a valid Config from four bytes, covering the whole
// range New accepts with 64 KiB pages.
func fuzzAllocConfig(b []byte) Config {
	cfg := Config{
		PageSize: fuzzPage,
		// 1 to 6 pages; the odd bytes beyond a page must be ignored.
		Limit: int64(1+int(b[0])%6) * fuzzPage,
		// 1.01 (so fine that the class count hits MaxClasses) to 5.
		Factor: 1.01 + float64(b[1])/64,
		// 16 to about 8 KiB, denser at the small end where classes crowd.
		MinChunk: 16 + int(b[2])*int(b[2])/8,
	}
	if b[0]&0x80 != 0 {
		cfg.Limit += 1000
	}
	switch b[3] % 4 {
	case 0: // the default, half a page
	case 1:
		cfg.ChunkMax = fuzzPage
	case 2: // anywhere, usually not a multiple of the alignment
		cfg.ChunkMax = cfg.MinChunk + int(b[3])*997%(fuzzPage-cfg.MinChunk+1)
	case 3: // just above the smallest chunk: one or two classes
		cfg.ChunkMax = cfg.MinChunk + int(b[3]/4)
	}
	if cfg.ChunkMax != 0 {
		// New wants room for one aligned chunk between the two.
		cfg.ChunkMax = max(cfg.ChunkMax, cfg.MinChunk+1<<minAlignShift)
	}
	return cfg
}

// fuzzChunk is one live chunk in the test's books.
type fuzzChunk struct {
	ref  Ref
	cls  int
	tag  uint64 // every 8-byte word of the chunk holds it
	addr uintptr
	size int
}

// allocModel is what the test knows the Allocator must hold.
type allocModel struct {
	t *testing.T
	a *Allocator
	n int // classes

	live   []fuzzChunk
	byRef  map[Ref]int // index into live
	spans  []fuzzChunk // live, sorted by address, for overlap checks
	used   []int64     // live chunks per class
	nextID uint64

	limitPages int // the limit in force, in whole pages
	pages      int // pages held by classes after the last operation

	refs  []Ref // scratch
	pageL []int32
}

func newAllocModel(t *testing.T, a *Allocator, cfg Config) *allocModel {
	return &allocModel{
		t: t, a: a, n: a.NumClasses(),
		byRef:      map[Ref]int{},
		used:       make([]int64, a.NumClasses()+1),
		limitPages: int(cfg.Limit / fuzzPage),
	}
}

// checkClasses: sizes grow strictly, stay aligned, end at the chunk max and
// agree with ClassFor and ChunksPerPage.
func (m *allocModel) checkClasses(cfg Config) {
	t, a := m.t, m.a
	require.GreaterOrEqual(t, m.n, 1)
	require.LessOrEqual(t, m.n, MaxClasses)
	chunkMax := cfg.ChunkMax
	if chunkMax == 0 {
		chunkMax = cfg.PageSize / 2
	}
	require.Equal(t, chunkMax&^7, a.ChunkSize(m.n), "the largest class is the chunk max, aligned down")
	prev := 0
	for c := 1; c <= m.n; c++ {
		size := a.ChunkSize(c)
		require.Zero(t, size%8, "class %d size %d is not aligned", c, size)
		require.Greater(t, size, prev, "class %d", c)
		require.Equal(t, fuzzPage/size, a.ChunksPerPage(c), "class %d", c)
		require.Equal(t, c, a.ClassFor(size), "ClassFor(ChunkSize(%d))", c)
		require.Equal(t, c, a.ClassFor(prev+1), "ClassFor(%d)", prev+1)
		prev = size
	}
	require.Zero(t, a.ClassFor(prev+1), "nothing holds more than the largest class")
}

// tagOf makes a pattern word that differs between chunks and is unlikely to
// be left in memory by anything else.
func tagOf(id uint64) uint64 { return id*0x9e3779b97f4a7c15 | 1 }

// addrOf is the address of a chunk's first byte. Overlap is a property of
// memory, not of Ref encoding, so it is checked on addresses: two Refs that
// decode to the same bytes are caught even if the encoding is wrong.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// totalPages counts the pages the classes hold, and checks that no page is
// held by two classes.
func (m *allocModel) totalPages() int {
	seen := map[int32]int{}
	for c := 1; c <= m.n; c++ {
		m.pageL = m.a.Pages(c, m.pageL[:0])
		for _, p := range m.pageL {
			if o, dup := seen[p]; dup {
				m.t.Fatalf("page %d held by classes %d and %d", p, o, c)
			}
			seen[p] = c
		}
	}
	return len(seen)
}

func (m *allocModel) alloc(cls int) bool {
	t, a := m.t, m.a
	st := a.Stats(cls)
	canGrow := m.pages < m.limitPages
	require.Equal(t, canGrow, a.CanGrow(), "pages %d, limit %d pages", m.pages, m.limitPages)
	want := st.FreeChunks+st.FreeChunksEnd > 0 || canGrow
	r, ok := a.Alloc(cls)
	require.Equal(t, want, ok, "Alloc(%d) with stats %+v, %d of %d pages", cls, st, m.pages, m.limitPages)
	if !ok {
		return false
	}
	m.add(r, cls)
	if st.FreeChunks+st.FreeChunksEnd == 0 {
		require.Equal(t, st.Pages+1, a.Stats(cls).Pages, "class %d had no free chunk: it takes a page", cls)
		m.pages++
		require.LessOrEqual(t, m.pages, m.limitPages, "a page was taken beyond the limit")
	}
	return true
}

// add books a chunk just handed out for class cls and fills it with its tag.
func (m *allocModel) add(r Ref, cls int) {
	t, a := m.t, m.a
	if r == 0 {
		t.Fatalf("Alloc(%d) returned the zero Ref", cls)
	}
	if i, dup := m.byRef[r]; dup {
		t.Fatalf("Ref %#x handed out twice (live as chunk %+v)", uint32(r), m.live[i])
	}
	if got := a.ClassOf(r); got != cls {
		t.Fatalf("ClassOf(%#x) = %d, allocated from %d", uint32(r), got, cls)
	}
	size := a.ChunkSize(cls)
	b := a.Bytes(r, size) // panics if the chunk runs past its page
	m.nextID++
	c := fuzzChunk{ref: r, cls: cls, tag: tagOf(m.nextID), addr: addrOf(b), size: size}

	i := sort.Search(len(m.spans), func(i int) bool { return m.spans[i].addr >= c.addr })
	if i > 0 {
		if p := m.spans[i-1]; p.addr+uintptr(p.size) > c.addr {
			t.Fatalf("chunk %#x (class %d) overlaps live chunk %#x (class %d)", uint32(r), cls, uint32(p.ref), p.cls)
		}
	}
	if i < len(m.spans) {
		if n := m.spans[i]; c.addr+uintptr(size) > n.addr {
			t.Fatalf("chunk %#x (class %d) overlaps live chunk %#x (class %d)", uint32(r), cls, uint32(n.ref), n.cls)
		}
	}
	m.spans = slices.Insert(m.spans, i, c)

	for off := 0; off < size; off += 8 {
		binary.LittleEndian.PutUint64(b[off:], c.tag)
	}
	m.byRef[r] = len(m.live)
	m.live = append(m.live, c)
	m.used[cls]++
}

// verify checks every word of chunk c.
func (m *allocModel) verify(c fuzzChunk) {
	b := m.a.Bytes(c.ref, c.size)
	for off := 0; off < c.size; off += 8 {
		if w := binary.LittleEndian.Uint64(b[off:]); w != c.tag {
			m.t.Fatalf("chunk %#x (class %d) overwritten at byte %d: %#x, want %#x", uint32(c.ref), c.cls, off, w, c.tag)
		}
	}
}

// free verifies live[i], frees it and drops it from the books.
func (m *allocModel) free(i int) {
	c := m.live[i]
	m.verify(c)
	m.a.Free(c.ref)
	m.forget(i)
}

func (m *allocModel) forget(i int) {
	c := m.live[i]
	last := len(m.live) - 1
	m.live[i] = m.live[last]
	m.byRef[m.live[i].ref] = i
	m.live = m.live[:last]
	delete(m.byRef, c.ref)
	j := sort.Search(len(m.spans), func(j int) bool { return m.spans[j].addr >= c.addr })
	require.Equal(m.t, c.ref, m.spans[j].ref)
	m.spans = slices.Delete(m.spans, j, j+1)
	m.used[c.cls]--
}

func (m *allocModel) freeMany(arg, hi int) {
	if len(m.live) == 0 {
		return
	}
	if hi&1 == 0 {
		for k := 0; k <= hi*4 && len(m.live) > 0; k++ {
			m.free((arg + k) % len(m.live))
		}
		return
	}
	cls := m.live[arg%len(m.live)].cls
	for i := len(m.live) - 1; i >= 0; i-- {
		if m.live[i].cls == cls {
			m.free(i)
		}
	}
}

// pageUse returns, for each page of class cls in Pages order, how many of
// its chunks are allocated, and checks them against the books.
func (m *allocModel) pageUse(cls int) (pages []int32, use []int) {
	pages = m.a.Pages(cls, nil)
	total := 0
	for _, p := range pages {
		m.refs = m.a.UsedChunks(cls, p, m.refs[:0])
		for _, r := range m.refs {
			i, ok := m.byRef[r]
			if !ok || m.live[i].cls != cls {
				m.t.Fatalf("UsedChunks(%d, %d) lists %#x, which the test did not allocate from that class", cls, p, uint32(r))
			}
		}
		use = append(use, len(m.refs))
		total += len(m.refs)
	}
	require.Equal(m.t, m.used[cls], int64(total), "class %d: used chunks over its pages", cls)
	return pages, use
}

// reassign calls Reassign with classes decoded from a1 and a2 and checks the
// outcome the rules of Reassign predict. The evict callback frees the chunk
// it is given and, like a store freeing a whole chained item, may free other
// chunks too (freeMore), and may allocate from the source class meanwhile.
func (m *allocModel) reassign(a1, a2 byte, allocInEvict, freeMore bool) {
	t, a := m.t, m.a
	var arg1, dst int // as passed to Reassign
	var populated []int
	for c := 1; c <= m.n; c++ {
		if a.Stats(c).Pages > 0 {
			populated = append(populated, c)
		}
	}
	switch {
	case a1 < 16:
		arg1 = -1
	case a1 < 20:
		arg1 = []int{0, -2, m.n + 1, m.n}[a1-16]
	case len(populated) > 0 && a1 < 200:
		arg1 = populated[int(a1)%len(populated)]
	default:
		arg1 = int(a1)%m.n + 1
	}
	switch {
	case a2 == 255:
		dst = 0
	case a2 == 254:
		dst = m.n + 1
	default:
		dst = int(a2)%m.n + 1
	}

	// What Reassign must answer, from the documented rules.
	var wantErr error
	switch {
	case dst < 1 || dst > m.n || arg1 < -1 || arg1 == 0 || arg1 > m.n:
		wantErr = ErrBadClass
	case arg1 == dst:
		wantErr = ErrSameClass
	}
	src := arg1 // the class that must give the page
	if wantErr == nil && src == -1 {
		// The class with the most pages, the first of equals, if it has two.
		most := 1
		for c := 1; c <= m.n; c++ {
			if p := a.Stats(c).Pages; c != dst && p > most {
				src, most = c, p
			}
		}
		if src < 0 {
			wantErr = ErrNoSpare
		}
	}
	var srcPages, dstPages int
	moving := map[Ref]bool{} // the chunks of the page that must move
	if wantErr == nil {
		pages, use := m.pageUse(src)
		srcPages, dstPages = len(pages), a.Stats(dst).Pages
		if srcPages < 2 {
			wantErr = ErrNoSpare
		} else {
			// The emptiest page moves, the first of equals: fewest evictions.
			p := pages[slices.Index(use, slices.Min(use))]
			for _, r := range a.UsedChunks(src, p, nil) {
				moving[r] = true
			}
		}
	}

	evicted := map[Ref]bool{}
	freed := map[Ref]bool{} // freed by the callback besides the chunk it was given
	var extra Ref
	grew := false
	calls := 0
	err := a.Reassign(arg1, dst, func(r Ref) bool {
		calls++
		if !moving[r] {
			t.Fatalf("evict(%#x): not an allocated chunk of the page being moved", uint32(r))
		}
		if evicted[r] {
			t.Fatalf("evict(%#x) twice though it was freed", uint32(r))
		}
		evicted[r] = true
		i, ok := m.byRef[r]
		if !ok {
			// Freed by an earlier callback after Reassign listed it: the
			// owner is gone, nothing to do.
			require.True(t, freed[r], "evict(%#x): never allocated", uint32(r))
			return true
		}
		require.Equal(t, src, m.live[i].cls, "evict(%#x) of another class", uint32(r))
		m.free(i)
		if freeMore && len(m.live) > 0 {
			j := (int(a1) + 7*calls) % len(m.live)
			freed[m.live[j].ref] = true
			m.free(j)
		}
		if allocInEvict && extra == 0 {
			// An owner of the source class allocating while its page is being
			// emptied must not get a chunk of that page.
			st := a.Stats(src)
			if r2, ok := a.Alloc(src); ok {
				extra = r2
				m.add(r2, src)
				if st.FreeChunks+st.FreeChunksEnd == 0 {
					grew = true
					m.pages++
					require.LessOrEqual(t, m.pages, m.limitPages, "a page was taken beyond the limit")
				}
			}
		}
		return true
	})
	if wantErr != nil {
		require.ErrorIs(t, err, wantErr, "Reassign(%d, %d)", arg1, dst)
		require.Empty(t, evicted)
		return
	}
	require.NoError(t, err, "Reassign(%d, %d), source %d", arg1, dst, src)
	for r := range moving {
		if !evicted[r] && !freed[r] {
			t.Fatalf("chunk %#x of the moved page was never evicted", uint32(r))
		}
	}
	wantSrc := srcPages - 1
	if grew {
		wantSrc++
	}
	require.Equal(t, wantSrc, a.Stats(src).Pages, "source class %d", src)
	require.Equal(t, dstPages+1, a.Stats(dst).Pages, "destination class %d", dst)
	if extra != 0 {
		require.Equal(t, src, a.ClassOf(extra), "a chunk handed out during the move landed on the moved page")
	}
	m.pageUse(src)
	m.pageUse(dst)
}

func (m *allocModel) setLimit(arg byte) {
	pages := int(arg) % 10
	// Bytes past a whole page must not count.
	m.a.SetLimit(int64(pages)*fuzzPage + int64(arg/10%3)*12345)
	m.limitPages = pages
	require.Equal(m.t, int64(pages)*fuzzPage, m.a.Limit())
}

// check runs after every operation: the cheap invariants over everything.
func (m *allocModel) check() {
	t, a := m.t, m.a
	for c := 1; c <= m.n; c++ {
		st := a.Stats(c)
		if st.UsedChunks != m.used[c] {
			t.Fatalf("class %d: Stats.UsedChunks %d, the test holds %d", c, st.UsedChunks, m.used[c])
		}
		// Every chunk of the class's pages is used, on the free stack or
		// still uncut: none lost, none counted twice.
		if st.UsedChunks+st.FreeChunks+st.FreeChunksEnd != int64(st.Pages*st.ChunksPerPage) {
			t.Fatalf("class %d: used %d + free %d + uncut %d != %d pages * %d chunks",
				c, st.UsedChunks, st.FreeChunks, st.FreeChunksEnd, st.Pages, st.ChunksPerPage)
		}
	}
	pages := m.totalPages()
	if pages != m.pages {
		t.Fatalf("classes hold %d pages, the test expects %d", pages, m.pages)
	}
	require.Equal(t, int64(pages)*fuzzPage, a.Malloced())
	for _, c := range m.live {
		if got := a.ClassOf(c.ref); got != c.cls {
			t.Fatalf("ClassOf(%#x) = %d, allocated from %d", uint32(c.ref), got, c.cls)
		}
		b := a.Bytes(c.ref, c.size)
		if binary.LittleEndian.Uint64(b) != c.tag || binary.LittleEndian.Uint64(b[c.size-8:]) != c.tag {
			m.verify(c)
		}
	}
}

// verifyAll checks every byte of every live chunk and the used-chunk lists.
func (m *allocModel) verifyAll() {
	for _, c := range m.live {
		m.verify(c)
	}
	for c := 1; c <= m.n; c++ {
		m.pageUse(c)
		m.clock(c)
	}
}

// clock checks that one revolution of class cls's hand, from wherever it
// stands, visits exactly its live chunks, each once, and that Chunk names
// their class.
func (m *allocModel) clock(cls int) {
	want := map[Ref]bool{}
	for _, c := range m.live {
		if c.cls == cls {
			want[c.ref] = true
			got, ok := m.a.Chunk(c.ref)
			require.True(m.t, ok && got == cls, "Chunk(%#x) = %d, %v; class %d", uint32(c.ref), got, ok, cls)
		}
	}
	if len(want) == 0 {
		require.Zero(m.t, m.a.Clock(cls), "class %d has no chunk, the hand found one", cls)
		return
	}
	seen := map[Ref]bool{}
	for range want {
		r := m.a.Clock(cls)
		require.True(m.t, want[r], "class %d: the hand gave %#x, not a live chunk of it", cls, uint32(r))
		require.False(m.t, seen[r], "class %d: %#x twice in one revolution", cls, uint32(r))
		seen[r] = true
	}
}
