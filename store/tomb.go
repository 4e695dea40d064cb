package store

import "github.com/tandemcache/tandem/slab"

// Tombstones: on a replica a deletion must outrank an older state of the key
// that arrives later (a write made on another node before the delete, still
// in flight). Each shard keeps the deletion's version for a while; Apply
// refuses a state whose CAS is not above it. They live in a Go map, outside
// the slab, because they exist only on replicas and only for recent
// deletions; the caps below bound both their memory and how long a
// deletion is remembered.
const (
	// tombTTL is how long a tombstone is kept, in seconds: far longer
	// than any replication timeout or resync, so only a peer partitioned
	// for longer can bring a deleted key back.
	tombTTL = 600
	// tombsPerShard caps the tombstones of one shard (512 shards: about
	// 2M in all, some 200 MB at worst); past it the oldest are dropped.
	tombsPerShard = 4096
)

type tomb struct {
	cas uint64
	at  uint32 // store seconds when the key was deleted
}

// bury records that key was deleted at version cas. sh.mu held.
func (s *Store) bury(sh *shard, key []byte, cas uint64, now uint32) {
	if sh.tombs == nil {
		sh.tombs = make(map[string]tomb)
	}
	if len(sh.tombs) >= tombsPerShard {
		s.sweepTombs(sh, now)
	}
	if t, ok := sh.tombs[string(key)]; ok && t.cas >= cas {
		return
	}
	sh.tombs[string(key)] = tomb{cas: cas, at: now}
}

// sweepTombs drops the expired tombstones of sh and, if that frees nothing,
// the older half. sh.mu held.
func (s *Store) sweepTombs(sh *shard, now uint32) {
	var sum uint64
	for k, t := range sh.tombs {
		if now-t.at >= tombTTL {
			delete(sh.tombs, k)
		} else {
			sum += uint64(t.at)
		}
	}
	if len(sh.tombs) < tombsPerShard {
		return
	}
	// The oldest is at or below the mean, so this always frees room; if
	// all were made within the same second, it empties the table.
	mean := uint32(sum / uint64(len(sh.tombs)))
	for k, t := range sh.tombs {
		if t.at <= mean {
			delete(sh.tombs, k)
		}
	}
}

// Tombstones counts the tombstones kept (for stats).
func (s *Store) Tombstones() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.tombs)
		sh.mu.Unlock()
	}
	return n
}

// Parts is how many parts ForEach walks: the store's shards.
func (s *Store) Parts() int { return nShards }

// ForEach calls fn with every live item of part p (0 <= p < Parts()), with
// that part locked: fn must copy what it keeps and must not call the Store.
// A replication resync walks the parts one by one so that no lock is held
// for long and writes go on meanwhile.
func (s *Store) ForEach(p int, fn func(Item)) {
	sh := &s.shards[p]
	now := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.ix.each(func(r slab.Ref) {
		h := s.readHead(r)
		if s.isFlushed(&h, now) || expired(&h, now) {
			return
		}
		fn(s.view(r, &h, now))
	})
}

// ForEachTomb calls fn with the key and version of every tombstone of part
// p, with that part locked: a resync sends them so that a peer that missed
// a deletion drops the key too. fn must copy what it keeps.
func (s *Store) ForEachTomb(p int, fn func(key []byte, cas uint64)) {
	sh := &s.shards[p]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for k, t := range sh.tombs {
		fn([]byte(k), t.cas)
	}
}

// FlushState is what flush_all has decided so far, for a resync: cas, if
// not 0, is the CAS below which items are flushed (a flush now, see
// flushBelow); pending, if not 0, is the unix time of the last delayed
// flush, to come or past (items stored before it are flushed).
func (s *Store) FlushState() (pending int64, cas uint64) {
	if ol := s.oldestLive.Load(); ol > 1 {
		pending = s.unix(ol + 1)
	}
	return pending, s.oldestCAS.Load()
}
