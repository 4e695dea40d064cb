package store

import "github.com/tandemcache/tandem/slab"

// index maps keys to items for one shard: open addressing with linear
// probing over uint64 slots, each the upper 32 bits of the key's hash and the
// item's slab.Ref (0 = empty). No pointers, so the collector never scans it;
// 8 bytes a slot. Deletion shifts the following entries back instead of
// leaving tombstones, so lookups never slow down with churn.
//
// The table grows by half when it is 7/8 full: the load then stays between
// 0.58 and 0.875 (9 to 14 bytes per item), and a lookup that misses scans
// about 32 slots at the worst, 4 cache lines. Growth rehashes this shard
// only, 1/512 of the keys, under its lock: other shards keep serving.
type index struct {
	slots []uint64
	count int
}

const (
	indexMinSlots = 16
	// Load limit 7/8: linear probing degrades fast past 0.9.
	indexLoadNum, indexLoadDen = 7, 8
)

// home is the first slot to probe: a multiply-shift range reduction, so the
// table size need not be a power of two and can grow by half.
func (ix *index) home(h32 uint32) int {
	return int(uint64(h32) * uint64(len(ix.slots)) >> 32)
}

func entry(h32 uint32, r slab.Ref) uint64 { return uint64(h32)<<32 | uint64(r) }

// insert adds an entry known to be absent, growing the table first if needed.
func (ix *index) insert(h32 uint32, r slab.Ref) {
	if (ix.count+1)*indexLoadDen > len(ix.slots)*indexLoadNum {
		ix.grow()
	}
	ix.place(entry(h32, r))
	ix.count++
}

func (ix *index) place(e uint64) {
	n := len(ix.slots)
	i := ix.home(uint32(e >> 32))
	for ix.slots[i] != 0 {
		if i++; i == n {
			i = 0
		}
	}
	ix.slots[i] = e
}

func (ix *index) grow() {
	old := ix.slots
	ix.slots = make([]uint64, max(indexMinSlots, len(old)+len(old)/2))
	for _, e := range old {
		if e != 0 {
			ix.place(e)
		}
	}
}

// remove deletes the entry at slot i and shifts back the entries of the
// probe run after it that would otherwise become unreachable.
func (ix *index) remove(i int) {
	n := len(ix.slots)
	j := i
	for {
		if j++; j == n {
			j = 0
		}
		e := ix.slots[j]
		if e == 0 {
			break
		}
		k := ix.home(uint32(e >> 32))
		// The entry at j may move to i unless its home lies cyclically in (i, j].
		if i <= j {
			if i < k && k <= j {
				continue
			}
		} else if i < k || k <= j {
			continue
		}
		ix.slots[i] = e
		i = j
	}
	ix.slots[i] = 0
	ix.count--
}

// bytes is the memory the table takes.
func (ix *index) bytes() int { return len(ix.slots) * 8 }
