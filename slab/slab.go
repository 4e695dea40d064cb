// Package slab hands out fixed-size chunks carved from large pages that live
// outside the Go heap.
//
// Memory is divided into pages (1 MiB by default). A page belongs to at most
// one slab class at a time and is cut into chunks of that class's size. The
// sizes grow geometrically, as in memcached: the smallest is the configured
// minimum, each next one is the previous times the growth factor, rounded up
// to the alignment, up to ChunkMax. Pages are given to classes on demand
// until the memory limit is reached; after that a class only gets memory back
// through Free or by taking a page from another class with Reassign.
//
// The package knows nothing about keys or items. A chunk is named by a Ref, a
// 32-bit number that packs the page and the offset inside it, so that callers
// can link chunks to each other without Go pointers and the garbage collector
// never scans the cache.
package slab

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Defaults used when a Config field is zero.
const (
	DefaultPageSize = 1 << 20 // memcached's slab page size
	DefaultFactor   = 1.25    // memcached's -f
	DefaultLimit    = 64 << 20
)

const (
	// MaxClasses bounds the number of classes so that a class id fits the
	// page table entry. memcached stops at 63; finer growth factors need more.
	MaxClasses = 255

	// regionPages is how many pages one mmap call maps. Mapping page by page
	// would use one kernel mapping per MiB and run into vm.max_map_count
	// (65530 by default) at 64 GiB; 64-page regions need 512 mappings for 32 GiB.
	regionPages = 64

	// minAlignShift is log2 of the smallest chunk alignment: 8 bytes keeps
	// 64-bit header fields naturally aligned.
	minAlignShift = 3
)

// Errors returned by Reassign. They match the replies of memcached's
// "slabs reassign" command.
var (
	// ErrBadClass is returned when a class id is out of range.
	ErrBadClass = errors.New("slab: no such class")
	// ErrSameClass is returned when source and destination are the same.
	ErrSameClass = errors.New("slab: source and destination are the same class")
	// ErrNoSpare is returned when the source class has fewer than two pages.
	ErrNoSpare = errors.New("slab: source class has no spare pages")
	// ErrBusy is returned while another reassignment is running, or when the
	// page could not be emptied in time.
	ErrBusy = errors.New("slab: reassignment busy")
)

// Config sizes an Allocator. Zero fields take the defaults noted.
type Config struct {
	// Limit is the most memory, in bytes, that pages may take. It is a hard
	// bound: no page is mapped or assigned beyond it. Default 64 MiB.
	Limit int64
	// PageSize in bytes; a power of two from 64 KiB to 1 GiB. Default 1 MiB.
	PageSize int
	// MinChunk is the size in bytes of the smallest class. Default 96.
	MinChunk int
	// Factor is the growth factor between classes, > 1. Default 1.25.
	Factor float64
	// ChunkMax is the size of the largest class, at most PageSize.
	// Default PageSize/2.
	ChunkMax int
	// LargePages backs pages with the kernel's transparent huge pages where
	// it has them (memcached -L): a lookup in a large cache then misses the
	// TLB less often. Memory is still committed as it is first touched, but
	// 2 MiB at a time.
	LargePages bool
}

// Ref names a chunk: the page number plus one in the high bits and the
// offset inside the page, in alignment units, in the low bits. The zero Ref
// names no chunk.
type Ref uint32

type class struct {
	mu      sync.Mutex
	size    int
	perPage int
	free    []uint32 // freed chunks, used as a stack
	pages   []int32
	carve   int32 // page whose tail is still being cut into chunks, or -1
	next    int   // next chunk index to cut from carve
	moving  int32 // page being emptied for Reassign, or -1
	used    int64
	// The clock hand (Clock): index into pages and the next chunk index
	// to look at on that page.
	handPage, handChunk int
}

// Allocator is a set of slab classes sharing one memory limit.
// All methods are safe for concurrent use.
type Allocator struct {
	pageSize   int
	pageShift  uint
	alignShift uint
	unitBits   uint
	maxPages   int // pages a Ref can address and the page tables hold
	largePages bool
	classes    []class

	mu         sync.Mutex // guards the page pool below
	limitPages int
	regions    [][]byte
	mapped     int
	freePages  []int32
	assigned   int

	// Per-page tables, allocated once for maxPages entries so that they never
	// move. An entry is written when its page is mapped or assigned, under
	// the locks of the classes involved, before any chunk of it is handed out.
	pages     [][]byte
	pageClass []atomic.Uint32 // atomic: read without the lock of the class being given the page
	pageUsed  []int32
	pageBits  [][]uint64

	moveMu sync.Mutex
}

// New builds an Allocator. No memory is mapped until the first Alloc.
func New(cfg Config) (*Allocator, error) {
	if cfg.Limit == 0 {
		cfg.Limit = DefaultLimit
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.MinChunk == 0 {
		cfg.MinChunk = 96
	}
	if cfg.Factor == 0 {
		cfg.Factor = DefaultFactor
	}
	if cfg.ChunkMax == 0 {
		cfg.ChunkMax = cfg.PageSize / 2
	}
	ps := cfg.PageSize
	switch {
	case ps < 64<<10 || ps > 1<<30 || ps&(ps-1) != 0:
		return nil, fmt.Errorf("slab: page size %d is not a power of two from 64 KiB to 1 GiB", ps)
	case cfg.Factor <= 1:
		return nil, fmt.Errorf("slab: growth factor %g must be greater than 1", cfg.Factor)
	case cfg.MinChunk < 16:
		return nil, fmt.Errorf("slab: smallest chunk %d is below 16 bytes", cfg.MinChunk)
	case cfg.ChunkMax > ps || cfg.ChunkMax < cfg.MinChunk:
		return nil, fmt.Errorf("slab: chunk max %d must lie between the smallest chunk %d and the page size %d",
			cfg.ChunkMax, cfg.MinChunk, ps)
	case cfg.ChunkMax&^(1<<minAlignShift-1) < (cfg.MinChunk+1<<minAlignShift-1)&^(1<<minAlignShift-1):
		return nil, fmt.Errorf("slab: chunk max %d leaves no room above the smallest chunk %d once aligned",
			cfg.ChunkMax, cfg.MinChunk)
	case cfg.Limit < int64(ps):
		return nil, fmt.Errorf("slab: memory limit %d is smaller than one page (%d)", cfg.Limit, ps)
	}
	a := &Allocator{pageSize: ps, pageShift: uint(bits.TrailingZeros(uint(ps))), largePages: cfg.LargePages}
	limitPages := int(cfg.Limit / int64(ps))
	// Pick the smallest alignment whose Refs can address every page the
	// limit allows: with 1 MiB pages, 8-byte units address 32 GiB.
	for a.alignShift = minAlignShift; ; a.alignShift++ {
		a.unitBits = a.pageShift - a.alignShift
		a.maxPages = 1<<(32-a.unitBits) - 1
		if a.maxPages >= limitPages {
			break
		}
	}
	a.limitPages = limitPages
	// The per-page tables never move (readers use them without the page
	// pool lock), so they are sized once: for four times the limit, so that
	// SetLimit can raise it that far, at 56 bytes a page.
	a.maxPages = min(a.maxPages, max(4*limitPages, regionPages))
	a.buildClasses(cfg.MinChunk, cfg.Factor, cfg.ChunkMax)
	a.pages = make([][]byte, a.maxPages)
	a.pageClass = make([]atomic.Uint32, a.maxPages)
	a.pageUsed = make([]int32, a.maxPages)
	a.pageBits = make([][]uint64, a.maxPages)
	return a, nil
}

// buildClasses follows memcached's slabs_init: while the next size is at
// most chunkMax/factor, round it up to the alignment, add a class and
// multiply by the factor (truncating, as memcached's integer arithmetic
// does); the last class is chunkMax itself, rounded down to the alignment.
// Unlike memcached, a factor so close to 1 that rounding would repeat a size
// steps to the next alignment instead of making duplicate classes.
func (a *Allocator) buildClasses(minChunk int, factor float64, chunkMax int) {
	align := 1 << a.alignShift
	up := func(n int) int { return (n + align - 1) &^ (align - 1) }
	a.classes = make([]class, 1, 64) // class 0 is never used, as in memcached
	top := chunkMax &^ (align - 1)
	size, last := minChunk, 0
	for len(a.classes) < MaxClasses && float64(size) <= float64(top)/factor {
		size = up(size)
		if size <= last {
			size = last + align
		}
		if size >= top {
			break
		}
		a.addClass(size)
		last = size
		size = int(float64(size) * factor)
	}
	a.addClass(top)
}

func (a *Allocator) addClass(size int) {
	a.classes = append(a.classes, class{size: size, perPage: a.pageSize / size, carve: -1, moving: -1})
}

// Close unmaps all memory. Any slice obtained from Bytes is invalid after
// it, and touching one faults: the caller must stop all use first.
func (a *Allocator) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	for _, r := range a.regions {
		if e := unmapRegion(r); e != nil && err == nil {
			err = fmt.Errorf("slab: unmapping a region: %w", e)
		}
	}
	a.regions = nil
	return err
}

// NumClasses is the number of the largest class; classes are 1..NumClasses.
func (a *Allocator) NumClasses() int { return len(a.classes) - 1 }

// ChunkSize is the size in bytes of the chunks of class cls.
func (a *Allocator) ChunkSize(cls int) int { return a.classes[cls].size }

// ChunksPerPage is how many chunks of class cls one page holds.
func (a *Allocator) ChunksPerPage(cls int) int { return a.classes[cls].perPage }

// PageSize is the page size in bytes.
func (a *Allocator) PageSize() int { return a.pageSize }

// ClassFor returns the smallest class whose chunks hold size bytes, or 0 when
// size exceeds the largest class.
func (a *Allocator) ClassFor(size int) int {
	lo, hi := 1, len(a.classes)-1
	if size > a.classes[hi].size {
		return 0
	}
	for lo < hi {
		mid := (lo + hi) / 2
		if a.classes[mid].size >= size {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

func (a *Allocator) ref(page int32, off int) Ref {
	return Ref(uint32(page+1)<<a.unitBits | uint32(off>>a.alignShift))
}

func (a *Allocator) split(r Ref) (page int32, off int) {
	return int32(r>>a.unitBits) - 1, int(r&(1<<a.unitBits-1)) << a.alignShift
}

// Bytes returns n bytes of chunk memory starting at the chunk r. The slice
// aliases memory outside the Go heap: it is valid while the chunk is
// allocated and the Allocator open, and n must not exceed the chunk size.
func (a *Allocator) Bytes(r Ref, n int) []byte {
	p, off := a.split(r)
	return a.pages[p][off : off+n : off+n]
}

// prefetchSpan is the most of a chunk Prefetch loads: the header, key and
// value of a small item, where a lookup's key compare and a set's copy land.
const prefetchSpan = 256

// Prefetch starts loading chunk r, or its first prefetchSpan bytes, so that
// a read or write of it a little later does not wait for memory. Only a
// hint: callers issue several before using any, and the misses overlap.
func (a *Allocator) Prefetch(r Ref) {
	p, off := a.split(r)
	if uint(p) >= uint(len(a.pages)) || off >= len(a.pages[p]) {
		return
	}
	n := 1
	if cls := int(a.pageClass[p].Load()); cls > 0 && cls < len(a.classes) {
		n = min(a.classes[cls].size, prefetchSpan, len(a.pages[p])-off)
	}
	// Chunks are 8-byte aligned: from the line the chunk starts in.
	for i := off &^ 63; i < off+n; i += 64 {
		PrefetchAddr(unsafe.Pointer(&a.pages[p][i]))
	}
}

// Chunk reports whether r names the start of a chunk on a page that belongs
// to a class, and that class. It is for refs read without a lock, which
// may be garbage: it never panics.
func (a *Allocator) Chunk(r Ref) (int, bool) {
	p, off := a.split(r)
	if uint(p) >= uint(len(a.pageClass)) {
		return 0, false
	}
	// A page is mapped before its class is stored: a class means a page.
	cls := int(a.pageClass[p].Load())
	if cls == 0 || off%a.classes[cls].size != 0 || off+a.classes[cls].size > a.pageSize {
		return 0, false
	}
	return cls, true
}

// ClassOf returns the class of an allocated chunk.
func (a *Allocator) ClassOf(r Ref) int {
	p, _ := a.split(r)
	return int(a.pageClass[p].Load())
}

// Alloc takes a chunk of class cls. It reports false when the class has no
// free chunk and no page can be added without passing the memory limit; the
// caller then frees something of this class (evicts) or reassigns a page.
// The chunk's contents are whatever was there before.
func (a *Allocator) Alloc(cls int) (Ref, bool) {
	c := &a.classes[cls]
	c.mu.Lock()
	var r Ref
	if n := len(c.free); n > 0 {
		r = Ref(c.free[n-1])
		c.free = c.free[:n-1]
	} else {
		if c.carve < 0 {
			p, ok := a.takePage()
			if !ok {
				c.mu.Unlock()
				return 0, false
			}
			a.assign(c, cls, p)
		}
		r = a.ref(c.carve, c.next*c.size)
		if c.next++; c.next == c.perPage {
			c.carve = -1
		}
	}
	p, off := a.split(r)
	i := off / c.size
	a.pageBits[p][i>>6] |= 1 << (i & 63)
	a.pageUsed[p]++
	c.used++
	c.mu.Unlock()
	return r, true
}

// Free returns an allocated chunk to its class. Freeing a chunk twice panics:
// it means two owners, and the cache would hand the same memory out twice.
func (a *Allocator) Free(r Ref) {
	p, off := a.split(r)
	c := &a.classes[a.pageClass[p].Load()]
	c.mu.Lock()
	i := off / c.size
	w, b := i>>6, uint64(1)<<(i&63)
	if a.pageBits[p][w]&b == 0 {
		c.mu.Unlock()
		panic(fmt.Sprintf("slab: chunk %#x freed twice", uint32(r)))
	}
	a.pageBits[p][w] &^= b
	a.pageUsed[p]--
	c.used--
	if p != c.moving {
		c.free = append(c.free, uint32(r))
	}
	c.mu.Unlock()
}

// takePage returns a page for a class: a pooled one, or a newly mapped one
// while under the limit. Called with the class lock held.
func (a *Allocator) takePage() (int32, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.assigned >= a.limitPages {
		return 0, false
	}
	if n := len(a.freePages); n > 0 {
		p := a.freePages[n-1]
		a.freePages = a.freePages[:n-1]
		a.assigned++
		return p, true
	}
	if a.mapped >= a.maxPages {
		return 0, false
	}
	n := min(regionPages, a.limitPages-a.mapped, a.maxPages-a.mapped)
	if n <= 0 {
		return 0, false
	}
	mem, err := mapRegion(n<<a.pageShift, a.largePages)
	if err != nil {
		// Out of address space or memory: behave as if the limit was hit,
		// so the caller evicts instead of failing outright.
		return 0, false
	}
	a.regions = append(a.regions, mem)
	for i := 0; i < n; i++ {
		a.pages[a.mapped+i] = mem[i<<a.pageShift : (i+1)<<a.pageShift : (i+1)<<a.pageShift]
	}
	p := int32(a.mapped)
	for i := n - 1; i >= 1; i-- {
		a.freePages = append(a.freePages, p+int32(i))
	}
	a.mapped += n
	a.assigned++
	return p, true
}

// assign gives page p to class c, to be carved from its start. Called with
// c.mu held.
func (a *Allocator) assign(c *class, cls int, p int32) {
	words := (c.perPage + 63) / 64
	if cap(a.pageBits[p]) >= words {
		a.pageBits[p] = a.pageBits[p][:words]
		clear(a.pageBits[p])
	} else {
		a.pageBits[p] = make([]uint64, words)
	}
	a.pageClass[p].Store(uint32(cls))
	a.pageUsed[p] = 0
	c.pages = append(c.pages, p)
	c.carve, c.next = p, 0
}

// SetLimit changes the memory limit. Lowering it stops new pages from being
// assigned until enough pages have been reassigned away; memory already
// handed out is not taken back. It can be raised up to four times the limit
// given to New.
func (a *Allocator) SetLimit(bytes int64) {
	a.mu.Lock()
	a.limitPages = min(int(bytes/int64(a.pageSize)), a.maxPages)
	a.mu.Unlock()
}

// Limit is the current memory limit in bytes.
func (a *Allocator) Limit() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return int64(a.limitPages) * int64(a.pageSize)
}

// Malloced is the memory, in bytes, of pages assigned to classes.
func (a *Allocator) Malloced() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return int64(a.assigned) * int64(a.pageSize)
}

// CanGrow reports whether a class could still get a fresh page.
func (a *Allocator) CanGrow() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.assigned < a.limitPages
}

// ClassStats describes one class, in the terms of memcached's "stats slabs".
type ClassStats struct {
	ChunkSize     int
	ChunksPerPage int
	Pages         int
	UsedChunks    int64
	FreeChunks    int64 // freed chunks waiting for reuse
	FreeChunksEnd int64 // chunks not yet cut from the page being carved
}

// Stats returns the state of class cls.
func (a *Allocator) Stats(cls int) ClassStats {
	c := &a.classes[cls]
	c.mu.Lock()
	defer c.mu.Unlock()
	st := ClassStats{
		ChunkSize:     c.size,
		ChunksPerPage: c.perPage,
		Pages:         len(c.pages),
		UsedChunks:    c.used,
		FreeChunks:    int64(len(c.free)),
	}
	if c.carve >= 0 {
		st.FreeChunksEnd = int64(c.perPage - c.next)
	}
	return st
}

// Pages appends the pages of class cls to dst.
func (a *Allocator) Pages(cls int, dst []int32) []int32 {
	c := &a.classes[cls]
	c.mu.Lock()
	defer c.mu.Unlock()
	return append(dst, c.pages...)
}

// UsedChunks appends to dst the allocated chunks of page p, if p still
// belongs to class cls. The answer is a snapshot: a chunk may be freed, or a
// free one taken, as soon as it returns.
func (a *Allocator) UsedChunks(cls int, p int32, dst []Ref) []Ref {
	c := &a.classes[cls]
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(a.pageClass[p].Load()) != cls {
		return dst
	}
	for w, word := range a.pageBits[p] {
		for word != 0 {
			i := w<<6 | bits.TrailingZeros64(word)
			word &= word - 1
			dst = append(dst, a.ref(p, i*c.size))
		}
	}
	return dst
}

// Clock returns the next allocated chunk of class cls at or after the
// class's clock hand and moves the hand past it, or 0 when the class has no
// allocated chunk. The hand goes round the class's pages in the order they
// were given to it and through each page in address order, so successive
// calls visit every allocated chunk once per revolution: the order CLOCK
// eviction needs. A page taken away or added while the hand goes round
// shifts it by up to a page; the hand only approximates an order anyway.
func (a *Allocator) Clock(cls int) Ref { return a.clock(cls, true) }

// Hand returns the chunk Clock would return next, without moving the hand.
func (a *Allocator) Hand(cls int) Ref { return a.clock(cls, false) }

func (a *Allocator) clock(cls int, move bool) Ref {
	c := &a.classes[cls]
	c.mu.Lock()
	defer c.mu.Unlock()
	r, pi, ci := a.nextUsed(c)
	if move && r != 0 {
		c.handPage, c.handChunk = pi, ci+1
	}
	return r
}

// nextUsed finds the first allocated chunk at or after the hand, wrapping
// round once, and returns it with its page index and chunk index. c.mu held.
func (a *Allocator) nextUsed(c *class) (Ref, int, int) {
	n := len(c.pages)
	if n == 0 {
		return 0, 0, 0
	}
	pi, ci := c.handPage, c.handChunk
	if pi >= n {
		pi, ci = 0, 0
	} else if ci >= c.perPage {
		pi, ci = (pi+1)%n, 0
	}
	// n+1 pages: the hand's own page again, for the chunks before it.
	for range n + 1 {
		p := c.pages[pi]
		pb := a.pageBits[p]
		for w := ci >> 6; w < len(pb); w++ {
			word := pb[w]
			if w == ci>>6 {
				word &^= 1<<(ci&63) - 1
			}
			if word != 0 {
				i := w<<6 | bits.TrailingZeros64(word)
				return a.ref(p, i*c.size), pi, i
			}
		}
		pi, ci = (pi+1)%n, 0
	}
	return 0, 0, 0
}

// Reassign moves one page from class src to class dst, emptying it first.
// src -1 picks the class with the most pages; a source needs at least two
// pages (memcached's NOSPARE rule). evict is called, with no allocator lock
// held, for every chunk still allocated in the page; it must free the chunk
// (or whatever owns it) unless the chunk was freed meanwhile, and it may be
// called again for a chunk whose owner was replaced while it ran. It returns
// false if the chunk cannot be freed now, which abandons the move (ErrBusy).
// While the page is being emptied its chunks are not handed out again.
// Reassign gives up with ErrBusy if the page is not empty after a second.
func (a *Allocator) Reassign(src, dst int, evict func(Ref) bool) error {
	return a.move(src, dst, 2, evict)
}

// Steal is Reassign for a class that needs memory and has none to evict: it
// may take the source's only page.
func (a *Allocator) Steal(src, dst int, evict func(Ref) bool) error {
	return a.move(src, dst, 1, evict)
}

func (a *Allocator) move(src, dst, minPages int, evict func(Ref) bool) error {
	n := len(a.classes) - 1
	if dst < 1 || dst > n || src < -1 || src == 0 || src > n {
		return ErrBadClass
	}
	if src == dst {
		return ErrSameClass
	}
	if !a.moveMu.TryLock() {
		return ErrBusy
	}
	defer a.moveMu.Unlock()
	if src == -1 {
		src = a.biggestClass(dst)
		if src < 0 {
			return ErrNoSpare
		}
	}
	s := &a.classes[src]
	s.mu.Lock()
	if len(s.pages) < minPages {
		s.mu.Unlock()
		return ErrNoSpare
	}
	// Move the emptiest page: fewest evictions.
	pi := 0
	for i, p := range s.pages {
		if a.pageUsed[p] < a.pageUsed[s.pages[pi]] {
			pi = i
		}
	}
	p := s.pages[pi]
	s.pages = append(s.pages[:pi], s.pages[pi+1:]...)
	s.moving = p
	if s.carve == p {
		s.carve = -1
	}
	kept := s.free[:0]
	for _, r := range s.free {
		if q, _ := a.split(Ref(r)); q != p {
			kept = append(kept, r)
		}
	}
	s.free = kept
	s.mu.Unlock()

	var refs []Ref
	deadline := time.Now().Add(time.Second)
	for {
		refs = a.UsedChunks(src, p, refs[:0])
		if len(refs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			a.restore(s, p)
			return ErrBusy
		}
		for _, r := range refs {
			if !evict(r) {
				a.restore(s, p)
				return ErrBusy
			}
		}
		time.Sleep(0) // let an owner that is filling a chunk finish
	}

	d := &a.classes[dst]
	// The page is empty and invisible to src: take it from src's books
	// before dst can carve it, then give it to dst.
	s.mu.Lock()
	s.moving = -1
	a.pageClass[p].Store(0)
	s.mu.Unlock()
	d.mu.Lock()
	if d.carve >= 0 {
		// dst is still carving another page: queue this one as free chunks.
		a.assignFree(d, dst, p)
	} else {
		a.assign(d, dst, p)
	}
	d.mu.Unlock()
	return nil
}

// assignFree gives page p to class c with all its chunks on the free stack.
// Called with c.mu held.
func (a *Allocator) assignFree(c *class, cls int, p int32) {
	carve, next := c.carve, c.next
	a.assign(c, cls, p)
	for i := c.perPage - 1; i >= 0; i-- {
		c.free = append(c.free, uint32(a.ref(p, i*c.size)))
	}
	c.carve, c.next = carve, next
}

// restore hands a page that could not be emptied back to its class.
func (a *Allocator) restore(c *class, p int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.moving = -1
	c.pages = append(c.pages, p)
	for w, word := range a.pageBits[p] {
		for i := 0; i < 64; i++ {
			if idx := w<<6 | i; idx < c.perPage && word&(1<<i) == 0 {
				c.free = append(c.free, uint32(a.ref(p, idx*c.size)))
			}
		}
	}
}

func (a *Allocator) biggestClass(except int) int {
	best, most := -1, 1
	for i := 1; i < len(a.classes); i++ {
		if i == except {
			continue
		}
		c := &a.classes[i]
		c.mu.Lock()
		n := len(c.pages)
		c.mu.Unlock()
		if n > most {
			best, most = i, n
		}
	}
	return best
}
