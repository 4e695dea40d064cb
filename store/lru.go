package store

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/tandemcache/tandem/slab"
)

type atomicCounter = atomic.Uint64

// lru is one slab class's list of items, most recently used at the head.
// Links are slab refs stored in the items (prev towards the head).
type lru struct {
	mu         sync.Mutex
	head, tail slab.Ref

	// Guarded by mu.
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

// evictSearch is how many items from the tail eviction considers, as
// memcached: enough to skip a few locked ones, few enough to stay O(1).
const evictSearch = 5

// maxLate bounds the late items (see offLate) one eviction moves to the
// head before it evicts whatever is at the tail.
const maxLate = 64

func (s *Store) lruPush(l *lru, r slab.Ref) {
	b := s.slab.Bytes(r, 8)
	put32(b, offPrev, 0)
	put32(b, offNext, uint32(l.head))
	if l.head != 0 {
		put32(s.slab.Bytes(l.head, 8), offPrev, uint32(r))
	}
	l.head = r
	if l.tail == 0 {
		l.tail = r
	}
}

// lruFront moves the linked item r to the head of l. l.mu held.
func (s *Store) lruFront(l *lru, r slab.Ref) {
	if l.head != r {
		s.lruUnlink(l, r)
		s.lruPush(l, r)
	}
}

func (s *Store) lruUnlink(l *lru, r slab.Ref) {
	b := s.slab.Bytes(r, 8)
	prev, next := slab.Ref(u32(b, offPrev)), slab.Ref(u32(b, offNext))
	if prev != 0 {
		put32(s.slab.Bytes(prev, 8), offNext, uint32(next))
	} else {
		l.head = next
	}
	if next != 0 {
		put32(s.slab.Bytes(next, 8), offPrev, uint32(prev))
	} else {
		l.tail = prev
	}
	put32(b, offPrev, 0)
	put32(b, offNext, 0)
}

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

// evictOne frees the least recently used item of class cls that can be
// freed now: expired ones are reclaimed; live ones are evicted unless
// onlyExpired. It reports whether one was freed and whether it was in sh.
func (s *Store) evictOne(sh *shard, cls int, onlyExpired bool, now uint32) (bool, bool) {
	l := &s.lrus[cls]
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.tail
	for i, late := 0, 0; r != 0 && i < evictSearch; i++ {
		prev := slab.Ref(u32(s.slab.Bytes(r, 8), offPrev))
		h := s.readHead(r)
		dead := expired(&h, now) || s.isFlushed(&h, now)
		if onlyExpired && !dead {
			r = prev
			continue
		}
		vs, h32 := s.shardOf(s.slab.Bytes(r, h.keyOff+h.klen)[h.keyOff:])
		if vs == sh {
			if r == sh.pin {
				r = prev
				continue
			}
		} else if !vs.mu.TryLock() {
			r = prev
			continue
		}
		// The header and key were read without the item's shard lock, and
		// an overwrite in place may have been rewriting them (with a change
		// of flags the key moves): r must be found in vs, and its header
		// read again, now that vs is locked.
		slot := s.findRef(vs, h32, r)
		if slot >= 0 {
			h = s.readHead(r)
			dead = expired(&h, now) || s.isFlushed(&h, now)
		}
		if slot < 0 || onlyExpired && !dead {
			if vs != sh {
				vs.mu.Unlock()
			}
			r = prev
			continue
		}
		if !dead && late < maxLate && s.late(r) {
			// Stored in place since its last move (overwrite): it is
			// younger than its place says. Move it now, as the store
			// would have, and look further.
			s.setLate(r, false)
			s.lruFront(l, r)
			if vs != sh {
				vs.mu.Unlock()
			}
			late++
			i--
			r = prev
			continue
		}
		vs.ix.remove(slot)
		vs.c.currItems--
		if s.sizes != nil {
			s.trackSize(&h, -1)
		}
		s.lruUnlink(l, r)
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
// otherwise the only page of the class whose least recently used item is
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
		age := int64(s.tailAge(c, now))
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
	b := s.slab.Bytes(r, s.hdr)
	if b[offBits]&bitRaw != 0 {
		r = slab.Ref(u32(b, 0))
		if r == 0 {
			return true
		}
		b = s.slab.Bytes(r, s.hdr)
	}
	if b[offBits]&bitLinked == 0 {
		return true
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
	s.remove(vs, slot, r, &h)
	s.moveEvict.Add(1)
	return true
}
