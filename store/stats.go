package store

import "github.com/tandemcache/tandem/slab"

// Stats are the store's counters, named after the fields of memcached's
// "stats" that they feed.
type Stats struct {
	CurrItems, TotalItems                      uint64
	Bytes                                      int64 // memory taken by items
	CmdGet, CmdSet, CmdTouch, CmdFlush         uint64
	GetHits, GetMisses, GetExpired, GetFlushed uint64
	TouchHits, TouchMisses                     uint64
	DeleteHits, DeleteMisses                   uint64
	IncrHits, IncrMisses, DecrHits, DecrMisses uint64
	CasHits, CasMisses, CasBadval              uint64
	StoreTooLarge, StoreNoMemory               uint64
	Evictions, Reclaimed                       uint64
	ExpiredUnfetched, EvictedUnfetched         uint64
	CrawlerReclaimed, CrawlerItemsChecked      uint64
	CrawlerStarts                              uint64
	OutOfMemory                                uint64
	SlabsMoved, SlabReassignEvicted            uint64
	LimitMaxbytes, TotalMalloced, HashBytes    int64
}

// ClassStats describes one slab class for "stats slabs" and "stats items".
type ClassStats struct {
	Class                                     int
	ChunkSize, ChunksPerPage, TotalPages      int
	TotalChunks, UsedChunks                   int64
	FreeChunks, FreeChunksEnd                 int64
	Number, MemRequested                      int64
	Age                                       int64 // seconds since the LRU tail was stored or bumped
	Evicted, EvictedNonzero, EvictedUnfetched uint64
	EvictedTime                               int64
	OutOfMemory, Reclaimed, ExpiredUnfetched  uint64
	CrawlerReclaimed, CrawlerItemsChecked     uint64
	GetHits, CmdSet, DeleteHits, IncrHits     uint64
	DecrHits, CasHits, CasBadval, TouchHits   uint64
}

// Stats sums the counters. It takes every lock briefly, one at a time.
func (s *Store) Stats() Stats {
	var st Stats
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		c := sh.c
		st.HashBytes += int64(sh.ix.bytes())
		sh.mu.Unlock()
		st.CurrItems += c.currItems
		st.TotalItems += c.totalItems
		st.CmdGet += c.cmdGet
		st.CmdTouch += c.cmdTouch
		st.GetMisses += c.getMisses
		st.GetExpired += c.getExpired
		st.GetFlushed += c.getFlushed
		st.TouchMisses += c.touchMisses
		st.DeleteMisses += c.deleteMisses
		st.IncrMisses += c.incrMisses
		st.DecrMisses += c.decrMisses
		st.CasMisses += c.casMisses
		st.StoreNoMemory += c.storeNoMemory
	}
	for cls := 1; cls <= s.largest; cls++ {
		cs := s.classStats(cls)
		st.Bytes += cs.MemRequested
		st.CmdSet += cs.CmdSet
		st.GetHits += cs.GetHits
		st.TouchHits += cs.TouchHits
		st.DeleteHits += cs.DeleteHits
		st.IncrHits += cs.IncrHits
		st.DecrHits += cs.DecrHits
		st.CasHits += cs.CasHits
		st.CasBadval += cs.CasBadval
		st.Evictions += cs.Evicted
		st.Reclaimed += cs.Reclaimed
		st.ExpiredUnfetched += cs.ExpiredUnfetched
		st.EvictedUnfetched += cs.EvictedUnfetched
		st.CrawlerReclaimed += cs.CrawlerReclaimed
		st.CrawlerItemsChecked += cs.CrawlerItemsChecked
		st.OutOfMemory += cs.OutOfMemory
	}
	st.CmdFlush = s.cmdFlush.Load()
	st.StoreTooLarge = s.tooLarge.Load()
	st.CrawlerStarts = s.crawls.Load()
	st.SlabsMoved = s.moves.Load()
	st.SlabReassignEvicted = s.moveEvict.Load()
	st.LimitMaxbytes = s.slab.Limit()
	st.TotalMalloced = s.slab.Malloced()
	return st
}

// Classes appends the stats of every class that has pages to dst.
func (s *Store) Classes(dst []ClassStats) []ClassStats {
	for cls := 1; cls <= s.largest; cls++ {
		if cs := s.classStats(cls); cs.TotalPages > 0 {
			dst = append(dst, cs)
		}
	}
	return dst
}

func (s *Store) classStats(cls int) ClassStats {
	sl := s.slab.Stats(cls)
	cs := ClassStats{
		Class:         cls,
		ChunkSize:     sl.ChunkSize,
		ChunksPerPage: sl.ChunksPerPage,
		TotalPages:    sl.Pages,
		TotalChunks:   int64(sl.Pages * sl.ChunksPerPage),
		UsedChunks:    sl.UsedChunks,
		FreeChunks:    sl.FreeChunks,
		FreeChunksEnd: sl.FreeChunksEnd,
	}
	cs.Age = int64(s.handAge(cls, s.now())) // not under l.mu: it walks bitmaps
	l := &s.lrus[cls]
	l.mu.Lock()
	cs.Number, cs.MemRequested = l.count, l.bytes
	cs.Evicted, cs.EvictedNonzero, cs.EvictedUnfetched = l.evicted, l.evictedNonzero, l.evictedUnfetched
	cs.EvictedTime = int64(l.evictedTime)
	cs.OutOfMemory, cs.Reclaimed, cs.ExpiredUnfetched = l.outOfMemory, l.reclaimed, l.expiredUnfetched
	cs.CrawlerReclaimed, cs.CrawlerItemsChecked = l.crawlerReclaimed, l.crawlerChecked
	l.mu.Unlock()
	cs.GetHits, cs.CmdSet, cs.DeleteHits = l.getHits.Load(), l.cmdSet.Load(), l.deleteHits.Load()
	cs.IncrHits, cs.DecrHits, cs.TouchHits = l.incrHits.Load(), l.decrHits.Load(), l.touchHits.Load()
	cs.CasHits, cs.CasBadval = l.casHits.Load(), l.casBadval.Load()
	return cs
}

// ResetStats zeroes the counters, as memcached's "stats reset": item counts,
// memory and the items themselves are untouched.
func (s *Store) ResetStats() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.c = shardCounters{currItems: sh.c.currItems}
		sh.mu.Unlock()
	}
	for cls := 1; cls <= s.largest; cls++ {
		l := &s.lrus[cls]
		l.mu.Lock()
		l.evicted, l.evictedNonzero, l.evictedUnfetched, l.evictedTime = 0, 0, 0, 0
		l.reclaimed, l.expiredUnfetched, l.outOfMemory = 0, 0, 0
		l.crawlerReclaimed, l.crawlerChecked = 0, 0
		l.mu.Unlock()
		for _, c := range []*atomicCounter{&l.getHits, &l.cmdSet, &l.deleteHits, &l.incrHits,
			&l.decrHits, &l.casHits, &l.casBadval, &l.touchHits} {
			c.Store(0)
		}
	}
	s.cmdFlush.Store(0)
	s.tooLarge.Store(0)
}

// SetMemoryLimit changes the memory limit (memcached's cache_memlimit).
func (s *Store) SetMemoryLimit(bytes int64) { s.slab.SetLimit(bytes) }

// MemoryLimit is the memory limit in bytes now.
func (s *Store) MemoryLimit() int64 { return s.slab.Limit() }

// OldestLive is the store second at or before which flush_all invalidated
// what was stored (memcached's settings.oldest_live), 0 if none did.
func (s *Store) OldestLive() uint32 {
	if ol := s.oldestLive.Load(); ol > 1 {
		return ol
	}
	return 0
}

// NumClasses is the number of slab classes; they are numbered from 1.
func (s *Store) NumClasses() int { return s.largest }

// ClassSizes calls fn for every slab class in order with its chunk size and
// how many chunks a page holds (memcached's -vv "slab class" lines).
func (s *Store) ClassSizes(fn func(cls, chunk, perPage int)) {
	for cls := 1; cls <= s.largest; cls++ {
		size := s.slab.ChunkSize(cls)
		fn(cls, size, max(1, s.slab.PageSize()/size))
	}
}

// CountTooLarge counts a value the server refused as too large before it
// reached the store (store_too_large).
func (s *Store) CountTooLarge() { s.tooLarge.Add(1) }

// SetAutomove turns the background page moves on or off ("slabs automove").
func (s *Store) SetAutomove(on bool) { s.noAutomove.Store(!on) }

// ChunkMax is the size of the largest slab chunk; larger items are chained.
func (s *Store) ChunkMax() int { return s.chunkMax }

// DumpEntry describes one item for "stats cachedump" and "lru_crawler
// metadump".
type DumpEntry struct {
	Key        []byte // valid only during the callback
	Len        int    // value length
	Exptime    int64  // unix seconds, 0 for never
	LastAccess int64  // unix seconds of the last store or bump
	CAS        uint64
	Fetched    bool
	Class      int
	Size       int // memcached's size for the item
	// Dead: expired or invalidated by flush_all, not yet reclaimed.
	// memcached's cachedump lists such items, its metadump does not.
	Dead bool
}

// Dump calls fn for the items of class cls, at most limit of them (0: all),
// until fn returns false. The order is that of the class's pages and
// chunks: there is no recency list to follow (memcached's goes from the
// most recently used; neither promises an order). Each item is read under
// its shard lock and fn runs with no lock held, so it may write to a
// connection; an item stored while the walk goes on may be missed.
func (s *Store) Dump(cls, limit int, fn func(DumpEntry) bool) {
	if cls < 1 || cls > s.largest {
		return
	}
	var kb [MaxKeyLen]byte
	var refs []slab.Ref
	n := 0
	now := s.now()
	for _, p := range s.slab.Pages(cls, nil) {
		refs = s.slab.UsedChunks(cls, p, refs[:0])
		for _, r := range refs {
			if limit != 0 && n >= limit {
				return
			}
			sh, _, key, ok := s.lockOwner(r, kb[:])
			if !ok {
				continue
			}
			h := s.readHead(r)
			e := DumpEntry{
				Key: key, Len: h.vlen,
				Exptime: s.unix(h.exp), LastAccess: s.unix(h.time), CAS: h.cas,
				Fetched: h.bits&bitFetched != 0, Class: cls,
				Size: s.MemcachedSize(h.klen, h.flags, h.vlen),
				Dead: expired(&h, now) || s.isFlushed(&h, now),
			}
			sh.mu.Unlock()
			n++
			if !fn(e) {
				return
			}
		}
	}
}

// Started is the unix time of store second 0 (memcached's process_started).
func (s *Store) Started() int64 { return s.epoch }

// ItemSizeMax is the largest item size in bytes (-I).
func (s *Store) ItemSizeMax() int { return s.cfg.ItemSizeMax }

// SizesTracked tells whether the size histogram is on (stats settings
// track_sizes).
func (s *Store) SizesTracked() bool { return s.sizes.Load() != nil }

// Sizes calls fn with each 32-byte size bucket (its upper bound in bytes)
// that holds items, in ascending order. It reports false when sizes are
// not tracked (Config.TrackSizes, TrackSizes).
func (s *Store) Sizes(fn func(size, count int64)) bool {
	hist := s.sizes.Load()
	if hist == nil {
		return false
	}
	for i := range hist.n {
		if n := hist.n[i].Load(); n > 0 {
			fn(int64(i)*32, n)
		}
	}
	return true
}
