package store

import (
	"context"
	"time"

	"github.com/tandemcache/tandem/slab"
)

// Run keeps the store's clock (if the store made it) and runs the background
// work until ctx is done: a crawler pass that frees expired and flushed items
// every crawlInterval (and within a second of a flush_all taking effect),
// so their memory comes back without anyone reading them, and, unless
// NoAutomove, a check each second that moves a page to a class that is
// evicting from one whose items are much older.
func (s *Store) Run(ctx context.Context) {
	if s.ownClock {
		go s.clock.Run(ctx)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var am automover
	lastCrawl := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if !s.noAutomove.Load() && !s.cfg.NoEvict {
				am.step(s)
			}
			if s.flushDue() || now.Sub(lastCrawl) >= crawlInterval {
				s.Crawl()
				lastCrawl = now
			}
		}
	}
}

// flushDue reports, once, that a flush_all has taken effect since the last
// crawl it asked for.
func (s *Store) flushDue() bool {
	at := s.crawlAt.Load()
	return at != 0 && s.now() >= at && s.crawlAt.CompareAndSwap(at, 0)
}

// crawlInterval: a pass reads one header per item, about 50 ms of one core
// per million items, so every 10 s costs under 1% of a core.
const crawlInterval = 10 * time.Second

// Crawl makes one pass over every allocated chunk and frees the items that
// are expired or flushed. It returns how many it freed.
func (s *Store) Crawl() int {
	s.crawls.Add(1)
	var (
		pages []int32
		refs  []slab.Ref
		freed int
	)
	for cls := 1; cls <= s.largest; cls++ {
		pages = s.slab.Pages(cls, pages[:0])
		var checked, reclaimed uint64
		for _, p := range pages {
			refs = s.slab.UsedChunks(cls, p, refs[:0])
			now := s.now()
			for _, r := range refs {
				// A cheap look without the lock first; reap re-checks under it.
				b := s.slab.Bytes(r, s.hdr)
				if isRaw(b) {
					continue
				}
				checked++
				if s.quickDead(b, now) && s.reap(r, now) {
					reclaimed++
				}
			}
		}
		l := &s.lrus[cls]
		l.mu.Lock()
		l.crawlerChecked += checked
		l.crawlerReclaimed += reclaimed
		l.mu.Unlock()
		freed += int(reclaimed)
	}
	return freed
}

// quickDead reads only the fixed header, which is always inside the chunk.
func (s *Store) quickDead(b []byte, now uint32) bool {
	h := head{exp: u32(b, offExp), time: u32(b, offTime) & timeMask}
	if s.useCAS {
		h.cas = uint64(u32(b, offCAS)) | uint64(u32(b, offCAS+4))<<32
	}
	return expired(&h, now) || s.isFlushed(&h, now)
}

// reap frees item r if, under its shard lock, it is still linked under its
// key and dead.
func (s *Store) reap(r slab.Ref, now uint32) bool {
	var kb [MaxKeyLen]byte
	sh, slot, _, ok := s.lockOwner(r, kb[:])
	if !ok {
		return false
	}
	defer sh.mu.Unlock()
	h := s.readHead(r)
	if !expired(&h, now) && !s.isFlushed(&h, now) {
		return false
	}
	if h.bits&bitFetched == 0 {
		l := &s.lrus[s.slab.ClassOf(r)]
		l.mu.Lock()
		l.expiredUnfetched++
		l.mu.Unlock()
	}
	s.remove(sh, slot, r, &h)
	return true
}

// lockOwner finds the item in chunk r, which the caller found without a
// lock: it copies the key (racyOwner), locks the key's shard and checks
// that the key's slot holds r. It returns the locked shard, the slot and
// the key (in buf), or false with no lock held.
func (s *Store) lockOwner(r slab.Ref, buf []byte) (*shard, int, []byte, bool) {
	key, sh, h32, ok := s.racyOwner(r, buf)
	if !ok {
		return nil, 0, nil, false
	}
	sh.mu.Lock()
	slot, found := s.find(sh, key, h32)
	if found != r {
		sh.mu.Unlock()
		return nil, 0, nil, false
	}
	return sh, slot, key, true
}

// racyOwner copies the key of the item in chunk r into buf without a lock
// and returns it with its shard and index hash. The copy may be garbage if
// the chunk is being rewritten; callers only use it to look the key up
// under the shard lock and then check they found this very chunk.
func (s *Store) racyOwner(r slab.Ref, buf []byte) ([]byte, *shard, uint32, bool) {
	key, ok := s.racyKey(r, buf)
	if !ok {
		return nil, nil, 0, false
	}
	sh, h32 := s.shardOf(key)
	return key, sh, h32, true
}

func (s *Store) racyKey(r slab.Ref, buf []byte) ([]byte, bool) {
	// The chunk's page may have moved to another class since r was found:
	// its class now, and r's alignment in it, bound what may be read.
	cls, ok := s.slab.Chunk(r)
	if !ok {
		return nil, false
	}
	b := s.slab.Bytes(r, s.hdr)
	koff := s.hdr
	if b[offBits]&bitFlags != 0 {
		koff += flagsLen
	}
	klen := int(b[offKlen])
	if klen == 0 || klen > MaxKeyLen || koff+klen > s.slab.ChunkSize(cls) {
		return nil, false
	}
	return buf[:copy(buf[:klen], s.slab.Bytes(r, koff+klen)[koff:])], true
}

// Reassign moves a page from class src (-1: the class with most pages) to
// dst, evicting the items on it (memcached's "slabs reassign").
func (s *Store) Reassign(src, dst int) error {
	err := s.slab.Reassign(src, dst, func(r slab.Ref) bool { return s.evictRef(r, nil) })
	if err == nil {
		s.moves.Add(1)
	}
	return err
}

// automover decides page moves from what happened since its last step.
type automover struct {
	evicted []uint64
}

// automoveRatio: a page moves when the starving class's oldest item is
// younger than this fraction of the source class's oldest item, as
// memcached's slab_automove_ratio (0.8).
const automoveRatio = 0.8

// step moves at most one page: to the class with the most evictions since
// the last step, from a class with at least two pages that either has a
// page's worth of free chunks or whose LRU tail is much older.
func (am *automover) step(s *Store) bool {
	n := s.largest
	if len(am.evicted) != n+1 {
		am.evicted = make([]uint64, n+1)
		for c := 1; c <= n; c++ {
			am.evicted[c] = s.evictedCount(c)
		}
		return false
	}
	now := s.now()
	dst, most := 0, uint64(0)
	for c := 1; c <= n; c++ {
		e := s.evictedCount(c)
		if d := e - am.evicted[c]; d > most {
			dst, most = c, d
		}
		am.evicted[c] = e
	}
	if dst == 0 {
		return false
	}
	dstAge := s.handAge(dst, now)
	src, best := 0, -1.0
	for c := 1; c <= n; c++ {
		if c == dst {
			continue
		}
		st := s.slab.Stats(c)
		if st.Pages < 2 {
			continue
		}
		if st.FreeChunks+st.FreeChunksEnd >= int64(st.ChunksPerPage) {
			src = c
			break
		}
		if age := float64(s.handAge(c, now)); age*automoveRatio > float64(dstAge) && age > best {
			src, best = c, age
		}
	}
	if src == 0 {
		return false
	}
	return s.Reassign(src, dst) == nil
}

func (s *Store) evictedCount(cls int) uint64 {
	l := &s.lrus[cls]
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.evicted
}

// handAge is the seconds since the item at class cls's clock hand was
// stored or last bumped: the next item eviction looks at, so about the
// oldest (memcached's age of the LRU tail). 0 when there is none. Read
// without the item's lock: a chunk being rewritten may give 0.
func (s *Store) handAge(cls int, now uint32) uint32 {
	r := s.slab.Hand(cls)
	if r == 0 {
		return 0
	}
	b := s.slab.Bytes(r, s.hdr)
	if isRaw(b) { // its head's age
		h, ok := s.rawHead(b)
		if !ok {
			return 0
		}
		b = s.slab.Bytes(h, s.hdr)
	}
	if t := u32(b, offTime) & timeMask; !isRaw(b) && t <= now {
		return now - t
	}
	return 0
}
