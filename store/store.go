// Package store is Tandem's item store: keys and values with memcached's
// semantics (flags, expiry, CAS, append, incr/decr, flush, meta-protocol
// state) over memory from package slab.
//
// Nothing per item lives on the Go heap. Items sit in slab chunks outside
// it; the index is one table of uint64 slots per shard; LRU links are slab
// refs inside the items. The collector's work does not grow with the number
// of items.
//
// Locks: keys are spread over 512 shards by hash, each with a mutex that
// guards its index and the items in it. Each slab class has an LRU with its
// own mutex. The order is shard, then LRU, then the allocator's own locks;
// eviction, which holds a shard and an LRU and needs the victim's shard, only
// try-locks it and moves on to the next candidate, as memcached does.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
	"github.com/tandemcache/tandem/protocol"
	"github.com/tandemcache/tandem/slab"
)

// Errors returned by store operations. The server turns them into
// memcached's replies.
var (
	// ErrNotFound: the key is absent (NOT_FOUND; for get, a miss).
	ErrNotFound = errors.New("store: not found")
	// ErrNoCAS: what was asked needs CAS values, and the store has none (-C).
	ErrNoCAS = errors.New("store: CAS is disabled")
	// ErrExists: a CAS compare failed (EXISTS).
	ErrExists = errors.New("store: cas mismatch")
	// ErrNotStored: add on a present key, or replace, append or prepend on an
	// absent one (NOT_STORED).
	ErrNotStored = errors.New("store: not stored")
	// ErrTooLarge: the item would pass the maximum item size (-I).
	ErrTooLarge = errors.New("store: object too large for cache")
	// ErrNoMemory: no memory could be freed for the item: evictions are
	// disabled (-M) or nothing in its class can be evicted.
	ErrNoMemory = errors.New("store: out of memory storing object")
	// ErrNonNumeric: incr or decr on a value that is not a decimal number.
	ErrNonNumeric = errors.New("store: cannot increment or decrement non-numeric value")
	// ErrBadKey: the key is empty or longer than MaxKeyLen.
	ErrBadKey = errors.New("store: key is empty or longer than 250 bytes")

	// Reassign's errors, from package slab: a class out of range (BADCLASS),
	// source equal to destination (SAME), a source with fewer than two pages
	// (NOSPARE), another move running (BUSY).
	ErrBadClass  = slab.ErrBadClass
	ErrSameClass = slab.ErrSameClass
	ErrNoSpare   = slab.ErrNoSpare
	ErrBusy      = slab.ErrBusy
)

const (
	nShards   = 512 // a power of two: a shard is hash & (nShards-1)
	shardMask = nShards - 1

	// bumpInterval is memcached's ITEM_UPDATE_INTERVAL: a read more than a
	// minute after the item's last bump sets its time (what "mg l" and
	// the age stats show) to now.
	bumpInterval = 60

	// memcachedItemHeader is sizeof(item) in 64-bit memcached: the maximum
	// item size is checked the way memcached computes it, so that exactly the
	// same values are accepted and refused.
	memcachedItemHeader = 48
)

// Config sets up a Store. Zero fields take the defaults noted.
type Config struct {
	// MemoryLimit is the slab memory in bytes (memcached -m). Default 64 MiB.
	MemoryLimit int64
	// ItemSizeMax is the largest item in bytes (-I), 1 KiB to 1 GiB,
	// counted as memcached counts it. Default 1 MiB.
	ItemSizeMax int
	// ChunkMin is the value room in bytes of the smallest chunk beyond the
	// item header (-n). Default 48.
	ChunkMin int
	// GrowthFactor between slab classes (-f). Default 1.05: finer than
	// memcached's 1.25, so a chunk wastes at most 5% (1.25 wastes up to 20%).
	GrowthFactor float64
	// PageSize of slab pages in bytes. Default 1 MiB, halved (down to
	// 64 KiB) while the memory limit would hold fewer than 512 pages.
	PageSize int
	// ChunkMax is the largest chunk in bytes (-o slab_chunk_max); larger
	// items are chained. At most PageSize and 1 MiB. Default PageSize/2.
	ChunkMax int
	// NoEvict makes a full cache answer ErrNoMemory instead of evicting (-M).
	NoEvict bool
	// NoCAS disables CAS: items are 8 bytes smaller and their CAS is 0 (-C).
	NoCAS bool
	// Clock is the time source. Default: a new Clock, advanced by Run.
	Clock *Clock
	// Observer, if set, hears every change a client makes (see Observer).
	Observer Observer
	// NoAutomove turns off moving pages between classes in Run
	// (-o slab_automove=0).
	NoAutomove bool
	// LargePages asks for huge pages for item memory (-L; slab.Config).
	LargePages bool
	// TrackSizes keeps a histogram of item sizes in 32-byte buckets for
	// "stats sizes" (-o track_sizes): one atomic add per store and removal.
	TrackSizes bool
}

// Eviction is a live item evicted for room (not an expired or flushed one
// reclaimed), as told to the hook of SetEvictHook. Key is valid only during
// the call.
type Eviction struct {
	Key        []byte
	Fetched    bool  // read since it was stored
	Exptime    int64 // unix seconds, 0 for never
	LastAccess int64 // unix seconds
	Now        int64 // unix seconds
	Class      int
	Size       int // the value's length
}

// Observer hears the resulting state of every client mutation, for
// replication. Its methods are called with the key's shard locked, in the
// order the changes happen; they must be quick and must not call the Store.
// Evictions and expiry are not reported: they are local memory decisions.
type Observer interface {
	// Stored reports the key's new state. The Item is valid only during the call.
	Stored(it Item)
	// Deleted reports that a client deleted key; cas is the deletion's
	// version, above the deleted item's CAS.
	Deleted(key []byte, cas uint64)
	// Flushed reports flush_all: items stored before unix second at are
	// invalid and, when cas is not 0 (a flush now, with CAS on), so are
	// items whose CAS is below cas.
	Flushed(at int64, cas uint64)
}

// Versioner, when the Observer also implements it, makes the store a
// replica: NextCAS supplies every CAS the store hands out (a version
// unique across the replica group and above cur: the highest of the key's
// item's CAS, its tombstone's and the last flush_all's, 0 if none), a
// touch gives the item a new CAS so that its new exptime is a newer state,
// and deletions leave tombstones so that Apply refuses older states of a
// deleted key.
type Versioner interface {
	NextCAS(cur uint64) uint64
}

type shard struct {
	mu  sync.Mutex
	ix  index
	pin slab.Ref // item the running operation still needs: never evicted
	// tombs are the versions of recently deleted keys, kept only when the
	// store is a replica (see Versioner and tomb.go).
	tombs map[string]tomb
	refs  []slab.Ref // scratch for allocating chains
	c     shardCounters
	_     [64]byte // keep neighbouring shards' locks off this cache line
}

// shardCounters are guarded by the shard lock.
type shardCounters struct {
	getMisses, getExpired, getFlushed, cmdGet uint64
	cmdTouch, touchMisses                     uint64
	deleteMisses, incrMisses, decrMisses      uint64
	casMisses, storeNoMemory                  uint64
	totalItems, currItems                     uint64
}

// Store holds the items. All methods are safe for concurrent use.
type Store struct {
	cfg      Config
	slab     *slab.Allocator
	clock    *Clock
	ownClock bool
	epoch    int64 // unix time of store second 0
	hdr      int   // item header length
	useCAS   bool
	chunkMax int // size of the largest class
	largest  int // the largest class
	obs      Observer
	ver      Versioner // obs as a Versioner, or nil

	shards []shard
	lrus   []lru // by class

	cas        atomic.Uint64
	oldestLive atomic.Uint32 // flush_all: items last stored at or before are invalid
	crawlAt    atomic.Uint32 // store second from which Run crawls once (after a flush_all), 0 if none
	oldestCAS  atomic.Uint64 // flush_all now: items with a lower CAS are invalid

	sizes      atomic.Pointer[sizeHist] // nil unless sizes are tracked
	tooLarge   atomic.Uint64
	noAutomove atomic.Bool
	cmdFlush   atomic.Uint64
	crawls     atomic.Uint64
	moves      atomic.Uint64 // pages reassigned
	moveEvict  atomic.Uint64 // items evicted to empty pages being moved
	onEvict    atomic.Pointer[func(Eviction)]
}

// New builds a Store. Call Run to start the clock and the background work,
// and Close to release the memory.
func New(cfg Config) (*Store, error) {
	if cfg.MemoryLimit == 0 {
		cfg.MemoryLimit = slab.DefaultLimit
	}
	if cfg.ItemSizeMax == 0 {
		cfg.ItemSizeMax = 1 << 20
	}
	if cfg.ChunkMin == 0 {
		cfg.ChunkMin = 48
	}
	if cfg.GrowthFactor == 0 {
		cfg.GrowthFactor = 1.05
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = defaultPageSize(cfg.MemoryLimit, cfg.ChunkMax)
	}
	if cfg.ChunkMax == 0 {
		cfg.ChunkMax = min(cfg.PageSize/2, 1<<20)
	}
	switch {
	case cfg.ItemSizeMax < 1<<10 || cfg.ItemSizeMax > 1<<30:
		return nil, fmt.Errorf("store: item size max %d is outside 1 KiB to 1 GiB", cfg.ItemSizeMax)
	case cfg.ChunkMax > 1<<20:
		// An item's length field has 20 bits (see vlenChained).
		return nil, fmt.Errorf("store: chunk max %d must be at most 1 MiB", cfg.ChunkMax)
	case cfg.ChunkMin < 1:
		return nil, fmt.Errorf("store: chunk min %d must be positive", cfg.ChunkMin)
	}
	s := &Store{cfg: cfg, useCAS: !cfg.NoCAS, obs: cfg.Observer, clock: cfg.Clock}
	if v, ok := cfg.Observer.(Versioner); ok {
		if cfg.NoCAS {
			return nil, errors.New("store: a replica needs CAS; it cannot run with CAS off")
		}
		s.ver = v
	}
	s.hdr = baseHdr
	if s.useCAS {
		s.hdr += 8
	}
	a, err := slab.New(slab.Config{
		Limit:      cfg.MemoryLimit,
		PageSize:   cfg.PageSize,
		MinChunk:   s.hdr + cfg.ChunkMin,
		Factor:     cfg.GrowthFactor,
		ChunkMax:   cfg.ChunkMax,
		LargePages: cfg.LargePages,
	})
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s.slab = a
	s.largest = a.NumClasses()
	s.chunkMax = a.ChunkSize(s.largest)
	if s.clock == nil {
		s.clock, s.ownClock = NewClock(), true
	}
	// As memcached does, start the store's clock a little in the past so
	// that second 0 never occurs and new items are past the bump interval.
	s.epoch = s.clock.Now() - bumpInterval - 2
	s.noAutomove.Store(cfg.NoAutomove)
	if cfg.TrackSizes {
		s.sizes.Store(s.newSizeHist(0))
	}
	s.shards = make([]shard, nShards)
	s.lrus = make([]lru, s.largest+1)
	return s, nil
}

// minPages is the fewest pages the default page size allows: a page belongs
// to one class at a time, and with the default growth factor about 170
// classes may want one each. 512 pages leave every class room without
// stealing pages from each other while the cache is far from full.
const minPages = 512

// defaultPageSize is 1 MiB, memcached's page, unless the limit would then
// hold fewer than minPages pages: halved down to 64 KiB, and never below the
// largest chunk.
func defaultPageSize(limit int64, chunkMax int) int {
	ps := slab.DefaultPageSize
	for ps > 64<<10 && limit/int64(ps) < minPages && ps/2 >= chunkMax {
		ps /= 2
	}
	return ps
}

// Close releases the slab memory. No method may be called during or after it.
func (s *Store) Close() error {
	for i := range s.shards {
		s.shards[i].ix.free()
	}
	return s.slab.Close()
}

func (s *Store) now() uint32 { return uint32(s.clock.Now() - s.epoch) }

// Unix is the store's clock in unix seconds: one atomic load, for a caller
// that wants the time on every request.
func (s *Store) Unix() int64 { return s.clock.Now() }

// MaxDelta is memcached's REALTIME_MAXDELTA: an exptime up to 30 days is
// relative, beyond that an absolute unix time.
const MaxDelta = 60 * 60 * 24 * 30

// realtime converts a memcached exptime to store seconds: 0 is never, up to
// 30 days is relative to now, larger is an absolute unix time, and a
// negative one or an absolute one in the past is already expired (1).
func (s *Store) realtime(exptime int64, now uint32) uint32 {
	switch {
	case exptime == 0:
		return 0
	case exptime < 0:
		return 1
	case exptime > MaxDelta:
		if exptime <= s.epoch {
			return 1
		}
		return uint32(min(exptime-s.epoch, 1<<32-1))
	default:
		return uint32(exptime) + now
	}
}

func (s *Store) unix(rel uint32) int64 {
	if rel == 0 {
		return 0
	}
	return s.epoch + int64(rel)
}

// nextCAS returns the CAS of a local write of key (in shard sh, locked),
// whose live item has CAS cur (0 if absent; sh nil for flush_all). A
// replica's write must outrank the key's current version, item or
// tombstone, and the last flush_all's, or its peers would refuse it or
// hide it: the clock follows the versions it receives, but not one
// absurdly far ahead of its wall clock (see replication's hlc).
func (s *Store) nextCAS(sh *shard, key []byte, cur uint64) uint64 {
	if !s.useCAS {
		return 0
	}
	if s.ver != nil {
		if cur == 0 && sh != nil && len(sh.tombs) > 0 {
			cur = sh.tombs[string(key)].cas
		}
		// Below a flush_all's CAS a new item would be invisible.
		return s.ver.NextCAS(max(cur, s.oldestCAS.Load()))
	}
	return s.cas.Add(1)
}

// PrefetchMax is the most keys one Prefetch call looks at.
const PrefetchMax = 16

// Prefetch starts loading, for each key (up to PrefetchMax), the index slot
// and then the item a lookup of it will read, so that the lookups that
// follow find them in cache. Lookups of a batch wait for memory one after
// the other (each probes the index, then compares the key in the item);
// prefetching them together overlaps those waits. Worth it for two keys or
// more: a server calls it for the keys of a pipelined batch.
func (s *Store) Prefetch(keys [][]byte) {
	var (
		shards [PrefetchMax]*shard
		hashes [PrefetchMax]uint32
	)
	keys = keys[:min(len(keys), PrefetchMax)]
	for i, k := range keys {
		sh, h32 := s.shardOf(k)
		shards[i], hashes[i] = sh, h32
		sh.mu.Lock()
		sh.ix.prefetch(h32)
		sh.mu.Unlock()
	}
	// The slots are on their way: read them, and start on the items.
	for i := range keys {
		sh := shards[i]
		sh.mu.Lock()
		if r := sh.ix.first(hashes[i]); r != 0 {
			s.slab.Prefetch(r)
		}
		sh.mu.Unlock()
	}
}

func (s *Store) shardOf(key []byte) (*shard, uint32) {
	h := xxhash.Sum64(key)
	return &s.shards[h&shardMask], uint32(h >> 32)
}

// MemcachedSize is the size memcached would give an item: its 48-byte
// header, the key and its NUL, 4 bytes of flags when not zero, the value and
// its CRLF, and 8 bytes of CAS when CAS is on.
func (s *Store) MemcachedSize(keyLen int, flags uint32, valueLen int) int {
	n := memcachedItemHeader + keyLen + 1 + valueLen + 2
	if flags != 0 {
		n += 4
	}
	if s.useCAS {
		n += 8
	}
	return n
}

// SetEvictHook makes f hear of every eviction (memcached's "watch
// evictions"). f is called with shard locks held: it must be quick and must
// not call the Store.
func (s *Store) SetEvictHook(f func(Eviction)) { s.onEvict.Store(&f) }

// ClassFor is the slab class an item of this shape is stored in (of its
// first chunk, for an item chained over several), 0 if too large.
func (s *Store) ClassFor(keyLen int, flags uint32, valueLen int) int {
	_, cls := s.plan(keyLen, flags, valueLen)
	return cls
}

// TooLarge reports whether an item would pass the maximum item size, the
// way memcached measures it (MemcachedSize), so that exactly the values
// memcached accepts are accepted. The server checks it before reading a
// value it must then swallow.
func (s *Store) TooLarge(keyLen int, flags uint32, valueLen int) bool {
	return s.MemcachedSize(keyLen, flags, valueLen) > s.cfg.ItemSizeMax
}

// find looks key up in sh without regard to expiry. sh.mu held.
func (s *Store) find(sh *shard, key []byte, h32 uint32) (int, slab.Ref) {
	var found slab.Ref
	slot := sh.ix.lookup(h32, func(r slab.Ref) bool {
		if bytes.Equal(s.key(r), key) {
			found = r
			return true
		}
		return false
	})
	return slot, found
}

// findRef returns the slot holding exactly r, or -1.
func (s *Store) findRef(sh *shard, h32 uint32, r slab.Ref) int {
	return sh.ix.lookup(h32, func(c slab.Ref) bool { return c == r })
}

func (s *Store) isFlushed(h *head, now uint32) bool {
	ol := s.oldestLive.Load()
	if ol == 0 || ol > now {
		return false
	}
	oc := s.oldestCAS.Load()
	return h.time <= ol || (oc != 0 && h.cas != 0 && h.cas < oc)
}

func expired(h *head, now uint32) bool { return h.exp != 0 && h.exp <= now }

// live finds key and checks it is neither expired nor flushed; a dead item
// is removed on the spot (lazy expiry), and miss says which it was. sh.mu
// held.
func (s *Store) live(sh *shard, key []byte, h32 uint32, now uint32) (int, slab.Ref, head, Miss) {
	slot, r := s.find(sh, key, h32)
	if r == 0 {
		return -1, 0, head{}, MissAbsent
	}
	h := s.readHead(r)
	miss := MissFlushed
	switch {
	case s.isFlushed(&h, now):
		sh.c.getFlushed++
	case expired(&h, now):
		sh.c.getExpired++
		miss = MissExpired
	default:
		return slot, r, h, MissAbsent
	}
	s.remove(sh, slot, r, &h)
	return -1, 0, head{}, miss
}

// itemSize is the memory an item takes in its chunks.
func (s *Store) itemSize(h *head) int {
	n := h.keyOff + h.klen + h.vlen
	if h.bits&bitChained != 0 {
		e := s.extraChunks(h)
		n += 4 + 4*e + rawHdr*e
	}
	return n
}

// sizeHist is the histogram of "stats sizes": items per 32-byte bucket.
// Turned on while the store holds items ("stats sizes_enable"), it counts
// only those stored since: an item whose CAS is below casMin is counted
// neither in nor out (memcached's stats_sizes_cas_min).
type sizeHist struct {
	n      []atomic.Int64
	casMin uint64
}

// newSizeHist is an empty histogram with a bucket for every size up to
// the largest item, counting the items whose CAS is casMin or more.
func (s *Store) newSizeHist(casMin uint64) *sizeHist {
	return &sizeHist{n: make([]atomic.Int64, s.cfg.ItemSizeMax/32+2), casMin: casMin}
}

// trackSize counts an item in or out of the size histogram, by memcached's
// measure of the item rounded up to 32 bytes, as memcached's stats sizes.
func (s *Store) trackSize(hist *sizeHist, h *head, delta int64) {
	if h.cas < hist.casMin {
		return // an item from before the histogram: never counted
	}
	b := (s.MemcachedSize(h.klen, h.flags, h.vlen) + 31) / 32
	hist.n[min(b, len(hist.n)-1)].Add(delta)
}

// changeCAS gives item r (whose head is h) a new CAS in place. While sizes
// are tracked that can change whether it is counted (sizeHist.casMin): it
// is counted out under its old CAS and in under the new one, as memcached's
// do_add_delta does.
func (s *Store) changeCAS(r slab.Ref, h *head, cas uint64) {
	if hist := s.sizes.Load(); hist != nil {
		s.trackSize(hist, h, -1)
		nh := *h
		nh.cas = cas
		s.trackSize(hist, &nh, 1)
	}
	s.setCAS(r, cas)
}

// TrackSizes turns the size histogram of "stats sizes" on or off while the
// store runs (memcached's "stats sizes_enable" and "sizes_disable"). Turned
// on, it counts the items stored from then on; it needs CAS values to tell
// them apart, and fails with ErrNoCAS without them (-C), as memcached does.
func (s *Store) TrackSizes(on bool) error {
	switch {
	case !on:
		s.sizes.Store(nil)
	case !s.useCAS:
		return ErrNoCAS
	case s.sizes.Load() == nil:
		s.sizes.CompareAndSwap(nil, s.newSizeHist(s.nextCAS(nil, nil, 0)))
	}
	return nil
}

// remove takes item r out of the index and frees it. sh.mu held.
func (s *Store) remove(sh *shard, slot int, r slab.Ref, h *head) {
	if hist := s.sizes.Load(); hist != nil {
		s.trackSize(hist, h, -1)
	}
	sh.ix.remove(slot)
	s.account(s.slab.ClassOf(r), -1, -s.itemSize(h))
	sh.c.currItems--
	s.release(r, h)
}

// account adds n items of the given bytes to class cls's counts.
func (s *Store) account(cls int, n, bytes int) {
	if n == 0 && bytes == 0 {
		return // an item replaced by one of its size: no lock to take
	}
	l := &s.lrus[cls]
	l.mu.Lock()
	l.count += int64(n)
	l.bytes += int64(bytes)
	l.mu.Unlock()
}

// release frees the chunks of an item that is no longer linked.
func (s *Store) release(r slab.Ref, h *head) {
	if h.bits&bitChained != 0 {
		chain := s.chain(r, h)
		for i := 0; i < len(chain); i += 4 {
			s.slab.Free(slab.Ref(u32(chain, i)))
		}
	}
	s.slab.Free(r)
}

// link puts the new item r in the index, replacing old at slot if old is
// not 0. sh.mu held.
func (s *Store) link(sh *shard, slot int, old slab.Ref, oh *head, r slab.Ref, h32 uint32, size int) {
	cls := s.slab.ClassOf(r)
	if hist := s.sizes.Load(); hist != nil {
		h := s.readHead(r)
		s.trackSize(hist, &h, 1)
		if old != 0 {
			s.trackSize(hist, oh, -1)
		}
	}
	if old != 0 {
		sh.ix.slots[slot] = entry(h32, r)
		if ocls := s.slab.ClassOf(old); ocls == cls {
			s.account(cls, 0, size-s.itemSize(oh))
		} else {
			s.account(ocls, -1, -s.itemSize(oh))
			s.account(cls, 1, size)
		}
		s.release(old, oh)
	} else {
		sh.ix.insert(h32, r)
		sh.c.currItems++
		s.account(cls, 1, size)
	}
	sh.c.totalItems++
	s.lrus[cls].cmdSet.Add(1)
}

// bump records a read: the item is marked fetched, then refreshed.
// sh.mu held.
func (s *Store) bump(r slab.Ref, h *head, now uint32) {
	if h.bits&bitFetched == 0 {
		s.setBits(r, bitFetched, 0)
	}
	s.refresh(r, h, now)
}

// refresh records a use of item r: it is marked referenced, so that the
// clock hand passes it over once, and its time moves to now if it was last
// set more than bumpInterval ago (memcached's do_item_update). Both are
// writes to a line the caller has just read, and the bit is written only
// when it changes. sh.mu held.
func (s *Store) refresh(r slab.Ref, h *head, now uint32) {
	b := s.slab.Bytes(r, s.hdr)
	if b[offRef]&refBit == 0 {
		b[offRef] |= refBit
	}
	if now-h.time >= bumpInterval {
		put32(b, offTime, now&timeMask|u32(b, offTime)&^timeMask)
	}
}

// newItem allocates and fills the header of a new item. It pins pin (an
// item the caller still needs) against eviction and reports whether items
// of sh itself were evicted, which moves index slots. sh.mu held.
func (s *Store) newItem(sh *shard, pin slab.Ref, key []byte, flags uint32, vlen int,
	exp, now uint32, cas uint64) (refs []slab.Ref, l layout, own bool, err error) {
	l, cls := s.plan(len(key), flags, vlen)
	if cls == 0 {
		s.tooLarge.Add(1)
		return nil, l, false, ErrTooLarge
	}
	sh.pin = pin
	refs = sh.refs[:0]
	for i := 0; i < l.nchunks; i++ {
		c := cls
		r, evictedOwn, err := s.allocChunk(sh, c, now)
		own = own || evictedOwn
		if err != nil {
			for _, r := range refs {
				s.slab.Free(r)
			}
			sh.refs, sh.pin = refs[:0], 0
			sh.c.storeNoMemory++
			return nil, l, own, err
		}
		refs = append(refs, r)
	}
	sh.refs, sh.pin = refs[:0], 0
	s.writeFields(refs, l, key, flags, exp, now, cas)
	return refs, l, own, nil
}

// SetOptions says how Set stores a value.
type SetOptions struct {
	Mode Mode
	// Flags are the client flags; append and prepend keep the old ones.
	Flags uint32
	// Exptime is memcached's exptime; append and prepend keep the old one.
	Exptime int64
	// CAS, if not 0, makes the write conditional on the item's CAS: Mode CAS
	// requires it; Set and Replace honour it as CAS does (binary protocol,
	// meta C); Append and Prepend fail with ErrExists on a mismatch.
	CAS uint64
	// NewCAS, if not 0, is the CAS the stored item gets (meta E).
	NewCAS uint64
	// Invalidate (meta I): a CAS lower than the item's still stores, keeping
	// the old TTL, and marks the item stale.
	Invalidate bool
	// Vivify (meta N) makes Append and Prepend on an absent key store the
	// value as it is, with VivifyExptime.
	Vivify        bool
	VivifyExptime int64
	// BinaryKey records that the client sent the key base64-encoded (meta
	// b), so that replies echo it encoded (Item.BinaryKey).
	BinaryKey bool
}

// Mode is what Set does depending on whether the key is present.
type Mode uint8

const (
	ModeSet     Mode = iota // store
	ModeAdd                 // store only if absent
	ModeReplace             // store only if present
	ModeAppend              // put the data after the present value
	ModePrepend             // put the data before the present value
	ModeCAS                 // store only if present with CAS equal to SetOptions.CAS
	modeApply               // replication: store only if newer by CAS
)

// Set stores value under key and returns the item's new CAS.
func (s *Store) Set(key, value []byte, o SetOptions) (uint64, error) {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return 0, ErrBadKey
	}
	if o.Mode != ModeAppend && o.Mode != ModePrepend && s.TooLarge(len(key), o.Flags, len(value)) {
		s.tooLarge.Add(1)
		return 0, ErrTooLarge
	}
	sh, h32 := s.shardOf(key)
	now := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return s.set(sh, h32, key, value, &o, s.realtime(o.Exptime, now), now)
}

func (s *Store) set(sh *shard, h32 uint32, key, value []byte, o *SetOptions, exp, now uint32) (uint64, error) {
	slot, old, oh, _ := s.live(sh, key, h32, now)
	flags := o.Flags
	stale := false
	var tokenBits uint8
	compare := o.CAS != 0 && o.Mode != ModeAdd || o.Mode == ModeCAS
	switch o.Mode {
	case ModeAdd:
		if old != 0 {
			// memcached refreshes the LRU position of the item a failed add
			// found, without counting it as fetched.
			s.refresh(old, &oh, now)
			return 0, ErrNotStored
		}
	case ModeReplace:
		if old == 0 {
			if compare {
				sh.c.casMisses++
				return 0, ErrNotFound
			}
			return 0, ErrNotStored
		}
	case ModeAppend, ModePrepend:
		if old == 0 {
			if !o.Vivify {
				return 0, ErrNotStored
			}
			if s.TooLarge(len(key), flags, len(value)) {
				s.tooLarge.Add(1)
				return 0, ErrTooLarge
			}
			exp = s.realtime(o.VivifyExptime, now)
			break
		}
		// With CAS off the item has no CAS to compare: memcached ignores
		// the request's.
		if o.CAS != 0 && s.useCAS && o.CAS != oh.cas {
			return 0, ErrExists
		}
		compare = false
		flags, exp = oh.flags, oh.exp
		// memcached answers NOT_STORED when the combined item cannot be
		// made, whether too large or out of memory.
		if s.TooLarge(len(key), flags, oh.vlen+len(value)) {
			return 0, ErrNotStored
		}
	case modeApply:
		if old != 0 && oh.cas >= o.NewCAS {
			return oh.cas, ErrExists
		}
		compare = false
	}
	if compare {
		switch {
		case old == 0:
			sh.c.casMisses++
			return 0, ErrNotFound
		case !s.useCAS:
			// memcached 1.6 with -C keeps no CAS to compare with: every
			// compare on a present item fails.
			s.lrus[s.slab.ClassOf(old)].casBadval.Add(1)
			return 0, ErrExists
		case oh.cas == o.CAS:
			s.lrus[s.slab.ClassOf(old)].casHits.Add(1)
		case o.Invalidate && o.CAS < oh.cas:
			// A stale write: keep the TTL, mark stale, keep a sent token.
			s.lrus[s.slab.ClassOf(old)].casHits.Add(1)
			stale, exp = true, oh.exp
			tokenBits = oh.bits & bitTokenSent
		default:
			s.lrus[s.slab.ClassOf(old)].casBadval.Add(1)
			return 0, ErrExists
		}
	}
	vlen := len(value)
	merge := old != 0 && (o.Mode == ModeAppend || o.Mode == ModePrepend)
	if merge {
		vlen += oh.vlen
	}
	cas := o.NewCAS
	if cas == 0 {
		cas = s.nextCAS(sh, key, oh.cas)
	}
	var bits uint8 // state bits beyond what writeFields sets
	if stale {
		bits |= bitStale | tokenBits
	}
	if o.BinaryKey {
		bits |= bitBinaryKey
	}
	if old != 0 && !merge && oh.bits&bitChained == 0 {
		if l, cls := s.plan(len(key), flags, vlen); l.nchunks == 1 && cls == s.slab.ClassOf(old) {
			s.overwrite(sh, old, cls, &oh, l, key, value, flags, exp, now, cas, bits)
			if o.Mode != modeApply {
				s.observe(sh, old, now)
			}
			return cas, nil
		}
	}
	refs, l, own, err := s.newItem(sh, old, key, flags, vlen, exp, now, cas)
	if err != nil {
		if merge {
			return 0, ErrNotStored
		}
		return 0, err
	}
	w := valueWriter{s: s, refs: refs, l: l}
	switch {
	case !merge:
		w.write(value)
	case o.Mode == ModeAppend:
		s.spans(old, &oh, w.write)
		w.write(value)
	default:
		w.write(value)
		s.spans(old, &oh, w.write)
	}
	if bits != 0 {
		s.setBits(refs[0], bits, 0)
	}
	if own && old != 0 {
		slot = s.findRef(sh, h32, old)
	}
	s.link(sh, slot, old, &oh, refs[0], h32, l.size())
	if o.Mode != modeApply {
		s.observe(sh, refs[0], now)
	}
	return cas, nil
}

// overwrite stores a new state of the linked item r in its own chunk: the
// new item needs the same class and one chunk, as r has. Replacing a value
// by one of about the same size is the common set (sessions, counters,
// a replica applying its peer's writes), and this spares it a chunk
// allocation, a free and an index update, each a cache miss. As for a new
// item, the state is fresh (not fetched), and it is marked referenced, so
// that the clock hand gives it a second chance as a newly stored item.
// Readers take the shard lock; eviction, which reads the item before it
// has the shard lock, checks it again once it has (evictOne).
// key and value must not alias the item (set's callers pass request and
// frame buffers). sh.mu held.
func (s *Store) overwrite(sh *shard, r slab.Ref, cls int, oh *head, l layout, key, value []byte,
	flags, exp, now uint32, cas uint64, bits uint8) {
	hist := s.sizes.Load()
	if hist != nil {
		s.trackSize(hist, oh, -1)
	}
	oldSize := s.itemSize(oh)
	refs := append(sh.refs[:0], r)
	s.writeFields(refs, l, key, flags, exp, now, cas)
	w := valueWriter{s: s, refs: refs, l: l}
	w.write(value)
	s.setBits(r, bits, 0)
	if hist != nil {
		h := s.readHead(r)
		s.trackSize(hist, &h, 1)
	}
	s.setRef(r, true)
	s.account(cls, 0, l.size()-oldSize)
	s.lrus[cls].cmdSet.Add(1)
	sh.c.totalItems++
}

// observe reports item r's state to the observer, if there is one.
func (s *Store) observe(sh *shard, r slab.Ref, now uint32) {
	if s.obs != nil {
		h := s.readHead(r)
		it := s.view(r, &h, now)
		if len(sh.tombs) > 0 {
			delete(sh.tombs, string(it.Key()))
		}
		s.obs.Stored(it)
	}
}

// Item is a read-only view of an item, passed to callbacks while the item's
// shard is locked. It and the slices its methods return are valid only
// during the callback; copy what you keep. A callback must not call the Store.
type Item struct {
	s   *Store
	ref slab.Ref
	h   head

	Flags uint32
	CAS   uint64
	// TTL is the seconds left after the request, -1 for never.
	TTL int64
	// PrevTTL is TTL before the request changed it (a touch).
	PrevTTL int64
	// LastAccess is seconds since the item was stored or last bumped in the
	// LRU, before this request.
	LastAccess int64
	// Fetched tells whether the item had been read before this request.
	Fetched bool
	// Stale: the item was invalidated (meta X).
	Stale bool
	// TokenSent: a recache token was handed out before this request (meta Z).
	TokenSent bool
	// Won: this request won the right to recache the item (meta W).
	Won bool
	// Created: the item was made by this request (vivify on miss).
	Created bool
}

func (s *Store) view(r slab.Ref, h *head, now uint32) Item {
	return Item{
		s: s, ref: r, h: *h,
		Flags:      h.flags,
		CAS:        h.cas,
		TTL:        ttl(h.exp, now),
		PrevTTL:    ttl(h.exp, now),
		LastAccess: int64(now - h.time),
		Fetched:    h.bits&bitFetched != 0,
		Stale:      h.bits&bitStale != 0,
		TokenSent:  h.bits&bitTokenSent != 0,
	}
}

func ttl(exp, now uint32) int64 {
	if exp == 0 {
		return -1
	}
	return int64(exp) - int64(now)
}

// TTLOf is the TTL an item given exptime now would have: seconds left, -1
// for never (meta's t, for a TTL a command sets).
func (s *Store) TTLOf(exptime int64) int64 {
	now := s.now()
	return ttl(s.realtime(exptime, now), now)
}

// BinaryKey tells whether the key was stored base64-encoded (meta b).
func (it Item) BinaryKey() bool { return it.h.bits&bitBinaryKey != 0 }

// Key returns the item's key.
func (it Item) Key() []byte { return it.s.slab.Bytes(it.ref, it.h.keyOff+it.h.klen)[it.h.keyOff:] }

// Len is the value's length in bytes.
func (it Item) Len() int { return it.h.vlen }

// AppendValue appends the value to dst.
func (it Item) AppendValue(dst []byte) []byte { return it.s.appendValue(dst, it.ref, &it.h) }

// ValueSpans calls fn with the value in place, one slice per chunk (one for
// items up to the largest chunk). The slices alias slab memory: use them
// within fn and keep none.
func (it Item) ValueSpans(fn func([]byte)) { it.s.spans(it.ref, &it.h, fn) }

// Exptime is the absolute expiry in unix seconds, 0 for never.
func (it Item) Exptime() int64 { return it.s.unix(it.h.exp) }

// Class is the item's slab class (of its head chunk).
func (it Item) Class() int { return it.s.slab.ClassOf(it.ref) }

// GetOptions changes what Get does besides reading.
type GetOptions struct {
	// Touch sets the item's exptime to Exptime (gat, meta T).
	Touch   bool
	Exptime int64
	// NoBump leaves the LRU position and the fetched state alone (meta u).
	NoBump bool
	// Peek changes nothing and counts nothing (meta me).
	Peek bool
	// Vivify creates an empty item with VivifyExptime on a miss, and the
	// caller wins the recache token (meta N).
	Vivify        bool
	VivifyExptime int64
	// Recache hands the caller the recache token if the item's TTL is below
	// RecacheExptime and no token was sent yet (meta R).
	Recache        bool
	RecacheExptime int64
	// Tokens: the caller hands out win tokens (meta mg), so the first
	// read of a stale item wins; other reads leave the token alone.
	Tokens bool
	// Miss, when set, is told why a lookup found nothing (watch's
	// item_get lines name it).
	Miss *Miss
}

// Miss is why a lookup found no item.
type Miss uint8

const (
	MissAbsent  Miss = iota // no item for the key
	MissExpired             // its item had expired, and was removed
	MissFlushed             // its item was older than a flush_all, and was removed
)

// Get calls fn with the item for key, or returns ErrNotFound. fn runs with
// the key's shard locked: it should copy what it needs and return.
func (s *Store) Get(key []byte, o GetOptions, fn func(Item)) error {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return ErrBadKey
	}
	sh, h32 := s.shardOf(key)
	now := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, r, h, miss := s.live(sh, key, h32, now)
	if !o.Peek {
		// As memcached: a touching read (touch, gat, mg T) is a touch
		// command, not a get.
		if o.Touch {
			sh.c.cmdTouch++
		} else {
			sh.c.cmdGet++
		}
	}
	created := false
	if r == 0 {
		if !o.Peek {
			if o.Touch {
				sh.c.touchMisses++
			} else {
				sh.c.getMisses++
			}
		}
		if o.Miss != nil {
			*o.Miss = miss
		}
		if !o.Vivify {
			return ErrNotFound
		}
		exp := s.realtime(o.VivifyExptime, now)
		refs, l, _, err := s.newItem(sh, 0, key, 0, 0, exp, now, s.nextCAS(sh, key, 0))
		if err != nil {
			return err
		}
		s.link(sh, -1, 0, nil, refs[0], h32, l.size())
		r, h, created = refs[0], s.readHead(refs[0]), true
		s.observe(sh, r, now)
	}
	it := s.view(r, &h, now)
	it.Created = created
	if created {
		it.PrevTTL = -1 // memcached makes the item without a TTL, then sets it
	}
	if o.Peek {
		fn(it)
		return nil
	}
	if o.Touch {
		h.exp = s.realtime(o.Exptime, now)
		s.setExp(r, h.exp)
		if s.ver != nil && !created {
			// A replica's new exptime must be a newer version.
			cas := s.nextCAS(sh, key, h.cas)
			s.changeCAS(r, &h, cas)
			h.cas = cas
			it.h.cas, it.CAS = h.cas, h.cas
		}
		it.h.exp = h.exp
		it.TTL = ttl(h.exp, now)
		s.lrus[s.slab.ClassOf(r)].touchHits.Add(1)
	} else if !created {
		s.lrus[s.slab.ClassOf(r)].getHits.Add(1)
	}
	won := created
	if o.Recache && !it.TokenSent && !created && h.exp != 0 && h.exp < s.realtime(o.RecacheExptime, now) {
		won = true
	}
	if o.Tokens && it.Stale && !it.TokenSent {
		won = true
	}
	if won {
		it.Won = true
		s.setBits(r, bitTokenSent, 0)
	}
	if !o.NoBump {
		s.bump(r, &h, now)
	}
	if o.Touch && !created {
		s.observe(sh, r, now)
	}
	fn(it)
	return nil
}

// Touch sets the exptime of key (memcached's touch).
func (s *Store) Touch(key []byte, exptime int64) error {
	return s.Get(key, GetOptions{Touch: true, Exptime: exptime}, func(Item) {})
}

// DeleteOptions changes what Delete does.
type DeleteOptions struct {
	// CAS, if not 0, deletes only if the item's CAS is equal (meta C).
	CAS uint64
	// NewCAS is the CAS an invalidated or emptied item gets (meta E).
	NewCAS uint64
	// Invalidate marks the item stale and gives it a new CAS instead of
	// removing it (meta I); with Touch its exptime becomes Exptime (meta T).
	Invalidate bool
	Touch      bool
	Exptime    int64
	// KeepItem empties the value but keeps the item, its flags and TTL (meta x).
	KeepItem bool
}

// Delete removes key. It returns ErrNotFound if absent, ErrExists on a CAS
// mismatch.
func (s *Store) Delete(key []byte, o DeleteOptions) error {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return ErrBadKey
	}
	sh, h32 := s.shardOf(key)
	now := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	slot, r, h, _ := s.live(sh, key, h32, now)
	if r == 0 {
		sh.c.deleteMisses++
		return ErrNotFound
	}
	if o.CAS != 0 && o.CAS != h.cas {
		return ErrExists
	}
	cls := s.slab.ClassOf(r) // before r may be freed
	cas := o.NewCAS
	if cas == 0 || s.ver != nil && cas <= h.cas {
		// A replica's deletion must be a newer version than the item.
		cas = s.nextCAS(sh, key, h.cas)
	}
	switch {
	case o.Invalidate:
		if o.Touch {
			s.setExp(r, s.realtime(o.Exptime, now))
		}
		s.setBits(r, bitStale, bitTokenSent)
		s.changeCAS(r, &h, cas)
		s.observe(sh, r, now)
	case o.KeepItem:
		refs, l, own, err := s.newItem(sh, r, key, h.flags, 0, h.exp, now, cas)
		if err != nil {
			return err
		}
		if own {
			slot = s.findRef(sh, h32, r)
		}
		s.link(sh, slot, r, &h, refs[0], h32, l.size())
		s.observe(sh, refs[0], now)
	default:
		s.remove(sh, slot, r, &h)
		if s.obs != nil {
			if s.ver != nil {
				s.bury(sh, key, cas, now)
			}
			s.obs.Deleted(key, cas)
		}
	}
	s.lrus[cls].deleteHits.Add(1)
	return nil
}

// ArithOptions describes an incr or decr.
type ArithOptions struct {
	Decr  bool
	Delta uint64
	// CAS, if not 0, applies only if the item's CAS is equal.
	CAS    uint64
	NewCAS uint64
	// Vivify creates a missing item holding Initial, with VivifyExptime
	// (meta N and J); the delta is not applied to it.
	Vivify        bool
	Initial       uint64
	VivifyExptime int64
	// Touch also sets the exptime (meta T).
	Touch   bool
	Exptime int64
	// VivifyLast: N came after T in the request, so a created item takes
	// VivifyExptime (memcached applies ma's T and N in their order).
	VivifyLast bool
}

// ArithResult is the outcome of Arith.
type ArithResult struct {
	Value uint64
	CAS   uint64
	TTL   int64 // seconds left, -1 for never
	// PrevTTL is the TTL before this command set one (-1 for an item it
	// created: memcached makes it without one, then applies T and N).
	PrevTTL int64
	Created bool
}

// Arith increments or decrements the decimal number stored under key.
// incr wraps at 2^64, decr stops at 0. As in memcached, a result no longer
// than the old value is written in place, padded with spaces.
func (s *Store) Arith(key []byte, o ArithOptions) (ArithResult, error) {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return ArithResult{}, ErrBadKey
	}
	sh, h32 := s.shardOf(key)
	now := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	slot, r, h, _ := s.live(sh, key, h32, now)
	var buf [20]byte
	if r == 0 {
		if !o.Vivify {
			if o.Decr {
				sh.c.decrMisses++
			} else {
				sh.c.incrMisses++
			}
			return ArithResult{}, ErrNotFound
		}
		exp := s.realtime(o.VivifyExptime, now)
		if o.Touch && !o.VivifyLast {
			exp = s.realtime(o.Exptime, now)
		}
		digits := strconv.AppendUint(buf[:0], o.Initial, 10)
		cas := o.NewCAS
		if cas == 0 {
			cas = s.nextCAS(sh, key, 0)
		}
		refs, l, _, err := s.newItem(sh, 0, key, 0, len(digits), exp, now, cas)
		if err != nil {
			return ArithResult{}, err
		}
		w := valueWriter{s: s, refs: refs, l: l}
		w.write(digits)
		s.link(sh, -1, 0, nil, refs[0], h32, l.size())
		s.observe(sh, refs[0], now)
		return ArithResult{Value: o.Initial, CAS: cas, TTL: ttl(exp, now), PrevTTL: -1, Created: true}, nil
	}
	if h.vlen == 0 || h.bits&bitChained != 0 {
		return ArithResult{}, ErrNonNumeric
	}
	if o.CAS != 0 && o.CAS != h.cas {
		return ArithResult{}, ErrExists
	}
	off := h.keyOff + h.klen
	val := s.slab.Bytes(r, off+h.vlen)[off:]
	n, ok := protocol.ParseUint64(val)
	if !ok {
		return ArithResult{}, ErrNonNumeric
	}
	cls := s.slab.ClassOf(r)
	if o.Decr {
		n -= min(n, o.Delta)
		s.lrus[cls].decrHits.Add(1)
	} else {
		n += o.Delta
		s.lrus[cls].incrHits.Add(1)
	}
	exp := h.exp
	if o.Touch {
		exp = s.realtime(o.Exptime, now)
	}
	cas := o.NewCAS
	if cas == 0 {
		cas = s.nextCAS(sh, key, h.cas)
	}
	digits := strconv.AppendUint(buf[:0], n, 10)
	if len(digits) <= len(val) {
		copy(val, digits)
		for i := len(digits); i < len(val); i++ {
			val[i] = ' '
		}
		s.changeCAS(r, &h, cas)
		s.setExp(r, exp)
		s.refresh(r, &h, now) // memcached's do_item_update
		s.observe(sh, r, now)
		return ArithResult{Value: n, CAS: cas, TTL: ttl(exp, now), PrevTTL: ttl(h.exp, now)}, nil
	}
	refs, l, own, err := s.newItem(sh, r, key, h.flags, len(digits), exp, now, cas)
	if err != nil {
		return ArithResult{}, err
	}
	w := valueWriter{s: s, refs: refs, l: l}
	w.write(digits)
	if own {
		slot = s.findRef(sh, h32, r)
	}
	s.link(sh, slot, r, &h, refs[0], h32, l.size())
	s.observe(sh, refs[0], now)
	return ArithResult{Value: n, CAS: cas, TTL: ttl(exp, now), PrevTTL: ttl(h.exp, now)}, nil
}

// FlushAll invalidates every item, now (delay <= 0) or at the memcached
// exptime delay, exactly as memcached's flush_all: an item stored after the
// flush time (even within the same second, when CAS is on) stays visible.
func (s *Store) FlushAll(delay int64) {
	now := s.now()
	oldest := now
	if delay > 0 {
		oldest = s.realtime(delay, now)
	}
	s.cmdFlush.Add(1)
	var cas uint64
	if s.useCAS {
		s.oldestLive.Store(oldest - 1)
		if oldest-1 <= now {
			cas = s.nextCAS(nil, nil, 0)
			s.flushBelow(cas)
		}
	} else {
		s.oldestLive.Store(oldest)
	}
	// The crawler frees what the flush invalidated once it takes effect,
	// as memcached's does, rather than at its next pass (up to 10 s).
	s.crawlAt.Store(oldest)
	if s.obs != nil {
		s.obs.Flushed(s.unix(oldest), cas)
	}
}

// flushBelow invalidates the items whose CAS is below cas. A replica
// (Versioner set) decides a flush now by CAS alone: its items' store times
// are local arrival times, which differ between replicas, while CAS values
// are the same everywhere, so every replica flushes the same items.
func (s *Store) flushBelow(cas uint64) {
	if s.ver != nil {
		s.oldestLive.Store(1) // no item is stored at second 1: time plays no part
	}
	if cas > s.oldestCAS.Load() {
		s.oldestCAS.Store(cas)
	}
}

// ApplyFlush is a flush_all received from a replication peer: at and cas
// are what the peer's Observer heard. A flush now (cas not 0) invalidates
// the items with a lower CAS; a delayed one, those stored before at.
func (s *Store) ApplyFlush(at int64, cas uint64) {
	now := s.now()
	switch {
	case !s.useCAS:
		oldest := now
		if at > s.unix(now) {
			oldest = s.realtime(at, now)
		}
		s.oldestLive.Store(oldest)
	case cas != 0:
		s.flushBelow(cas)
	default:
		s.oldestLive.Store(s.realtime(max(at, MaxDelta+1), now) - 1)
	}
}

// ApplyState installs a state received from a replication peer if its CAS
// is higher than the local item's and than the key's tombstone, if any.
// exptime is absolute unix seconds, 0 for never; binaryKey is the item's
// meta b bit. It reports whether the state was installed; a refused older
// state is not an error.
func (s *Store) ApplyState(key, value []byte, flags uint32, exptime int64, cas uint64, binaryKey bool) (bool, error) {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return false, ErrBadKey
	}
	if s.TooLarge(len(key), flags, len(value)) {
		return false, ErrTooLarge
	}
	sh, h32 := s.shardOf(key)
	now := s.now()
	exp := uint32(0)
	if exptime != 0 {
		exp = s.realtime(max(exptime, MaxDelta+1), now)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if t, ok := sh.tombs[string(key)]; ok && t.cas >= cas {
		return false, nil
	}
	_, err := s.set(sh, h32, key, value, &SetOptions{Mode: modeApply, Flags: flags, NewCAS: cas, BinaryKey: binaryKey}, exp, now)
	if err == nil && sh.tombs != nil {
		delete(sh.tombs, string(key)) // only once the newer state is in
	}
	if errors.Is(err, ErrExists) {
		return false, nil
	}
	return err == nil, err
}

// ApplyDelete removes key if its CAS is below cas, for a deletion received
// from a replication peer, and (on a replica) leaves a tombstone so that an
// older state arriving later is refused. It reports whether an item was
// removed.
func (s *Store) ApplyDelete(key []byte, cas uint64) bool {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return false
	}
	sh, h32 := s.shardOf(key)
	now := s.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	slot, r, h, _ := s.live(sh, key, h32, now)
	if r != 0 && h.cas >= cas {
		return false
	}
	if s.ver != nil {
		s.bury(sh, key, cas, now)
	}
	if r == 0 {
		return false
	}
	s.remove(sh, slot, r, &h)
	return true
}
