package store

import (
	"slices"
	"unsafe"

	"github.com/tandemcache/tandem/slab"
)

// index maps keys to items for one shard: open addressing with Robin Hood
// linear probing over uint64 slots, each the upper 32 bits of the key's hash
// and the item's slab.Ref (0 = empty). No pointers, so the collector never
// scans it; 8 bytes a slot.
//
// Robin Hood keeps every entry's distance from its home slot no larger than
// that of the entries it passed, so a lookup that misses stops at the first
// entry closer to its home than the probe is to the key's: misses stay short
// even at 90% load. That lets the table fill to 0.9 and grow by a quarter
// (tables below a page, on the Go heap, double: see grow),
// so the load stays between 0.72 and 0.9: 9 to 11 bytes per item. Deletion
// shifts the following entries back: no tombstones, no slowdown with churn.
// Growth rehashes this shard only, 1/512 of the keys, under its lock, while
// the other shards keep serving.
type index struct {
	slots  []uint64
	count  int
	mapped bool // slots is mapped outside the Go heap (see newSlots)
}

const (
	// mmapSlots is the smallest table worth its own mapping (newSlots): one
	// page. Smaller tables (nearly empty shards) stay on the Go heap.
	mmapSlots = 4096 / 8

	indexMinSlots = 16
	// Grow past 9/10 full: Robin Hood probes stay short up to there.
	indexLoadNum, indexLoadDen = 9, 10
)

// home is the first slot to probe: a multiply-shift range reduction, so the
// table size need not be a power of two and can grow by a quarter.
func (ix *index) home(h32 uint32) int {
	return int(uint64(h32) * uint64(len(ix.slots)) >> 32)
}

// dist is how far the entry e at slot i is from its home.
func (ix *index) dist(e uint64, i int) int {
	d := i - ix.home(uint32(e>>32))
	if d < 0 {
		d += len(ix.slots)
	}
	return d
}

func entry(h32 uint32, r slab.Ref) uint64 { return uint64(h32)<<32 | uint64(r) }

// insert adds an entry known to be absent, growing the table first if
// needed. It may move other entries: slot numbers found before are stale.
func (ix *index) insert(h32 uint32, r slab.Ref) {
	if (ix.count+1)*indexLoadDen > len(ix.slots)*indexLoadNum {
		ix.grow()
	}
	ix.place(entry(h32, r))
	ix.count++
}

func (ix *index) place(e uint64) {
	n := len(ix.slots)
	i, d := ix.home(uint32(e>>32)), 0
	for {
		r := ix.slots[i]
		if r == 0 {
			ix.slots[i] = e
			return
		}
		if rd := ix.dist(r, i); rd < d {
			ix.slots[i], e, d = e, r, rd
		}
		if i++; i == n {
			i = 0
		}
		d++
	}
}

func (ix *index) grow() {
	old, oldMapped := ix.slots, ix.mapped
	want := max(indexMinSlots, len(old)+len(old)/4)
	if len(old) < mmapSlots {
		// A table on the Go heap leaves the old one as garbage until the
		// next collection: double it, so that filling a shard up to a
		// mapped table leaves a few tables of garbage, not a dozen.
		want = max(want, 2*len(old))
	}
	var s []uint64
	if s, ix.mapped = newSlots(want); !ix.mapped {
		// Take the whole allocation the runtime rounds the request up to.
		s = slices.Grow(s[:0], want)
	}
	ix.slots = s[:cap(s)]
	for _, e := range old {
		if e != 0 {
			ix.place(e)
		}
	}
	freeSlots(old, oldMapped)
}

// free releases the table (Store.Close).
func (ix *index) free() {
	freeSlots(ix.slots, ix.mapped)
	ix.slots, ix.count, ix.mapped = nil, 0, false
}

// remove deletes the entry at slot i and shifts back the entries after it
// that are not at their home.
func (ix *index) remove(i int) {
	n := len(ix.slots)
	for {
		j := i + 1
		if j == n {
			j = 0
		}
		e := ix.slots[j]
		if e == 0 || ix.dist(e, j) == 0 {
			break
		}
		ix.slots[i] = e
		i = j
	}
	ix.slots[i] = 0
	ix.count--
}

// lookup calls match for each entry with hash h32 in probe order until it
// returns true, and returns that slot, or -1.
func (ix *index) lookup(h32 uint32, match func(slab.Ref) bool) int {
	n := len(ix.slots)
	if n == 0 {
		return -1
	}
	for i, d := ix.home(h32), 0; ; d++ {
		e := ix.slots[i]
		if e == 0 || ix.dist(e, i) < d {
			return -1
		}
		if uint32(e>>32) == h32 && match(slab.Ref(uint32(e))) {
			return i
		}
		if i++; i == n {
			i = 0
		}
	}
}

// prefetch starts loading the slot where a lookup of h32 begins.
func (ix *index) prefetch(h32 uint32) {
	if len(ix.slots) > 0 {
		slab.PrefetchAddr(unsafe.Pointer(&ix.slots[ix.home(h32)]))
	}
}

// first is the ref of the first entry a lookup of h32 would compare, or
// 0: without the key compare, so a hash collision gives the wrong item,
// which is harmless for a prefetch.
func (ix *index) first(h32 uint32) slab.Ref {
	var r slab.Ref
	ix.lookup(h32, func(c slab.Ref) bool { r = c; return true })
	return r
}

// bytes is the memory the table takes.
func (ix *index) bytes() int { return len(ix.slots) * 8 }

// each calls fn with every ref in the index. fn must not change the index.
func (ix *index) each(fn func(slab.Ref)) {
	for _, e := range ix.slots {
		if e != 0 {
			fn(slab.Ref(uint32(e)))
		}
	}
}
