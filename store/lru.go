package store

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/tandemcache/tandem/slab"
)

type atomicCounter = atomic.Uint64

// lru is one slab class's eviction state and counters. Eviction is CLOCK,
// an approximation of LRU: the class's clock hand (slab.Allocator.Clock)
// goes round its chunks, an item used since the hand last passed it
// (referenced, see offRef) gets a second chance, and the first one that
// was not used is evicted. Without a list there are no links to keep in
// each item (8 bytes saved) and no list lock taken on a read. A new item
// takes the chunk the hand has just freed, so under memory pressure items
// go in the order they were stored unless read meanwhile, as in an LRU
// whose reads move items back once per revolution.
type lru struct {
	mu sync.Mutex // guards the counters below and the hand's use

	count, bytes                                   int64
	evicted, evictedNonzero, evictedUnfetched      uint64
	evictedTime                                    uint32 // age of the last evicted item
	reclaimed, expiredUnfetched, outOfMemory       uint64
	crawlerReclaimed, crawlerChecked, movedEvicted uint64

	// Counted without the lock, for "stats slabs".
	getHits, cmdSet, deleteHits, incrHits, decrHits atomicCounter
	casHits, casBadval, touchHits                   atomicCounter

	_ [64]byte
}

// evictSearch bounds the items one eviction looks at under their locks:
// enough to pass over a run of referenced ones, few enough to stay O(1).
// The last one is evicted even if referenced, so that a class whose items
// are all in use still evicts (in the hand's order, as FIFO would).
// evictVisits bounds the chunks the hand passes meanwhile: the raw chunks
// of chained items (a 1 MiB value in 32 KiB chunks has 32) and items it
// cannot lock at once are passed over without counting as looked at.
const (
	evictSearch = 32
	evictVisits = 64 * evictSearch
)

// allocChunk takes one chunk of class cls, evicting from that class's LRU
// tail when memory is full, and taking a page from another class when the
// class has nothing to evict. own reports an eviction from sh. sh.mu held.
func (s *Store) allocChunk(sh *shard, cls int, now uint32) (r slab.Ref, own bool, err error) {
	steals := 0
	for tries := 0; ; tries++ {
		if r, ok := s.slab.Alloc(cls); ok {
			return r, own, nil
		}
		ok, o := s.evictOne(sh, cls, s.cfg.NoEvict, now)
		own = own || o
		if ok {
			continue
		}
		// The candidates at the tail may only be locked for a moment by
		// other shards: try again a few times before anything drastic.
		if tries < 4 && s.lruCount(cls) > 0 {
			runtime.Gosched()
			continue
		}
		// Nothing evictable here: an empty class (its first page), or a
		// class whose items are all in use. Take a page from another class,
		// unless evictions are off (-M): that would evict too. Another
		// goroutine may be moving a page right now: wait for it a little.
		if steals < 100 && !s.cfg.NoEvict {
			steals++
			switch err := s.steal(sh, cls); err {
			case nil:
				own = true
				continue
			case slab.ErrBusy:
				runtime.Gosched()
				continue
			}
		}
		l := &s.lrus[cls]
		l.mu.Lock()
		l.outOfMemory++
		l.mu.Unlock()
		return 0, own, ErrNoMemory
	}
}

func (s *Store) lruCount(cls int) int64 {
	l := &s.lrus[cls]
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

// evictOne frees an item of class cls, the first one at the clock hand that
// can be freed now and was not used since the hand last passed it: expired
// ones are reclaimed; live ones are evicted unless onlyExpired. It reports
// whether one was freed and whether it was in sh. sh.mu held.
func (s *Store) evictOne(sh *shard, cls int, onlyExpired bool, now uint32) (bool, bool) {
	l := &s.lrus[cls]
	l.mu.Lock()
	defer l.mu.Unlock()
	var kb [MaxKeyLen]byte
	// One revolution at most: a small class whose items are all locked
	// by other connections is not worth going round again and again.
	maxVisits := min(evictVisits, int(s.slab.Stats(cls).UsedChunks)+1)
	looked := 0
	for visits := 0; visits < maxVisits && looked < evictSearch; visits++ {
		r := s.slab.Clock(cls)
		if r == 0 {
			return false, false
		}
		// A cheap look without the item's lock first: the chunk may be a
		// raw part of a chained item, free, or being written.
		b := s.slab.Bytes(r, s.hdr)
		if isRaw(b) || onlyExpired && !s.quickDead(b, now) {
			continue
		}
		key, vs, h32, ok := s.racyOwner(r, kb[:])
		if !ok {
			continue
		}
		if vs == sh {
			if r == sh.pin {
				continue
			}
		} else if !vs.mu.TryLock() {
			continue
		}
		// Now that vs is locked: r must be the item of its key, and its
		// header is read again.
		slot, found := s.find(vs, key, h32)
		if found != r {
			if vs != sh {
				vs.mu.Unlock()
			}
			continue
		}
		looked++
		h := s.readHead(r)
		dead := expired(&h, now) || s.isFlushed(&h, now)
		if !dead && (onlyExpired || looked < evictSearch && s.referenced(r)) {
			if !onlyExpired {
				s.setRef(r, false) // second chance: evicted next time round
			}
			if vs != sh {
				vs.mu.Unlock()
			}
			continue
		}
		vs.ix.remove(slot)
		vs.c.currItems--
		if hist := s.sizes.Load(); hist != nil {
			s.trackSize(hist, &h, -1)
		}
		l.count--
		l.bytes -= int64(s.itemSize(&h))
		fetched := h.bits&bitFetched != 0
		if dead {
			l.reclaimed++
			if !fetched {
				l.expiredUnfetched++
			}
		} else {
			l.evicted++
			l.evictedTime = now - h.time
			if f := s.onEvict.Load(); f != nil {
				(*f)(Eviction{Key: key, Fetched: fetched, Exptime: s.unix(h.exp),
					LastAccess: s.unix(h.time), Now: s.unix(now), Class: cls, Size: h.vlen})
			}
			if h.exp != 0 {
				l.evictedNonzero++
			}
			if !fetched {
				l.evictedUnfetched++
			}
		}
		s.release(r, &h)
		if vs != sh {
			vs.mu.Unlock()
		}
		return true, vs == sh
	}
	return false, false
}

// steal moves a page to cls, for a class that needs memory and has nothing
// to evict: from the class with the most pages if one has two or more,
// otherwise the only page of the class whose item at the clock hand is
// the oldest. Without this a cache with many classes in use (170 with the
// default growth factor, against 64 pages at -m 64) would refuse a new size
// once every page is the only page of its class; memcached instead lets a
// class take its first page past the limit, which would break the limit.
// sh.mu is held by the caller; items in sh are evicted without locking it
// again.
func (s *Store) steal(sh *shard, cls int) error {
	src := s.stealSource(cls)
	if src == 0 {
		return slab.ErrNoSpare
	}
	if err := s.slab.Steal(src, cls, func(r slab.Ref) bool { return s.evictRef(r, sh) }); err != nil {
		return err
	}
	s.moves.Add(1)
	return nil
}

func (s *Store) stealSource(dst int) int {
	now := s.now()
	best, bestPages, bestAge := 0, 0, int64(-1)
	for c := 1; c <= s.largest; c++ {
		if c == dst {
			continue
		}
		pages := s.slab.Stats(c).Pages
		if pages == 0 || pages < bestPages {
			continue
		}
		age := int64(s.handAge(c, now))
		if s.lruCount(c) == 0 {
			age = 1 << 40 // an empty class gives its page up for nothing
		}
		if pages > bestPages || age > bestAge {
			best, bestPages, bestAge = c, pages, age
		}
	}
	return best
}

// evictRef frees whatever item owns chunk r, for emptying a page that is
// being reassigned. The chunk's contents are read without a lock and may be
// stale or half written; the owner is only freed after looking its key up
// under the shard lock and finding exactly this item. held is a shard the
// caller has locked already, or nil. It returns false only when the owner
// is the item the caller's operation still needs, which must not be freed.
func (s *Store) evictRef(r slab.Ref, held *shard) bool {
	raw := slab.Ref(0)
	if b := s.slab.Bytes(r, s.hdr); isRaw(b) { // free its head
		h, ok := s.rawHead(b)
		if !ok {
			return true
		}
		raw, r = r, h
	}
	var kb [MaxKeyLen]byte
	key, vs, h32, ok := s.racyOwner(r, kb[:])
	if !ok {
		return true
	}
	if vs != held {
		vs.mu.Lock()
		defer vs.mu.Unlock()
	} else if r == vs.pin {
		return false
	}
	slot, found := s.find(vs, key, h32)
	if found != r {
		return true
	}
	h := s.readHead(r)
	if raw != 0 && !s.inChain(r, &h, raw) {
		// The head named by a chunk that was raw once and is being reused:
		// another item's now. Its new owner frees or links it.
		return true
	}
	s.remove(vs, slot, r, &h)
	s.moveEvict.Add(1)
	return true
}

// inChain tells whether raw is one of the chunks of item r. sh.mu held.
func (s *Store) inChain(r slab.Ref, h *head, raw slab.Ref) bool {
	if h.bits&bitChained == 0 {
		return false
	}
	chain := s.chain(r, h)
	for i := 0; i < len(chain); i += 4 {
		if slab.Ref(u32(chain, i)) == raw {
			return true
		}
	}
	return false
}
