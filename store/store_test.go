package store

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/slab"
)

func newTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Clock == nil {
		cfg.Clock = NewClock()
	}
	s, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func getValue(s *Store, key string) ([]byte, error) {
	var v []byte
	err := s.Get([]byte(key), GetOptions{}, func(it Item) { v = it.AppendValue(nil) })
	return v, err
}

func peekValue(s *Store, key string) ([]byte, error) {
	var v []byte
	err := s.Get([]byte(key), GetOptions{Peek: true}, func(it Item) { v = it.AppendValue(nil) })
	return v, err
}

// TestBoundedMemory writes four times the memory limit and checks that slab
// memory never passes the limit and that the survivors are exactly the most
// recently written keys: evictions went in LRU order.
func TestBoundedMemory(t *testing.T) {
	const limit = 8 << 20
	s := newTestStore(t, Config{MemoryLimit: limit})
	val := bytes.Repeat([]byte("v"), 200)
	n := 0
	for written := 0; written < 4*limit; n++ {
		_, err := s.Set([]byte(fmt.Sprintf("key:%08d", n)), val, SetOptions{})
		require.NoError(t, err)
		written += len(val) + 12
		if n%1000 == 0 {
			require.LessOrEqual(t, s.Stats().TotalMalloced, int64(limit))
		}
	}
	st := s.Stats()
	require.LessOrEqual(t, st.TotalMalloced, int64(limit))
	require.Positive(t, st.Evictions)
	require.Equal(t, uint64(n), st.Evictions+st.CurrItems, "every item is either evicted or present")

	// The survivors form a suffix of the write order.
	first := -1
	for i := 0; i < n; i++ {
		_, err := peekValue(s, fmt.Sprintf("key:%08d", i))
		if err == nil && first < 0 {
			first = i
		}
		if first >= 0 {
			require.NoError(t, err, "key %d missing after survivor %d: eviction out of LRU order", i, first)
		}
	}
	require.Equal(t, n-first, int(st.CurrItems))
}

// TestLRUBump checks that a read gives an item a second chance: it outlives
// items written before the read, and a read more than a minute after the
// store moves its time to now.
func TestLRUBump(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{MemoryLimit: 2 << 20, PageSize: 64 << 10, Clock: clk})
	val := bytes.Repeat([]byte("x"), 100)
	for i := 0; i < 100; i++ {
		_, err := s.Set([]byte(fmt.Sprintf("k%d", i)), val, SetOptions{})
		require.NoError(t, err)
	}
	clk.Advance(bumpInterval)
	_, err := getValue(s, "k0") // referenced, its time now
	require.NoError(t, err)
	require.Equal(t, s.now(), s.readHead(refOf(t, s, "k0")).time)
	// Fill until k2 (the oldest unbumped) is gone; k0 must still be there.
	for i := 100; ; i++ {
		_, err := s.Set([]byte(fmt.Sprintf("k%d", i)), val, SetOptions{})
		require.NoError(t, err)
		if _, err := peekValue(s, "k2"); err == ErrNotFound {
			break
		}
		require.Less(t, i, 1_000_000)
	}
	_, err = peekValue(s, "k0")
	require.NoError(t, err, "a bumped item was evicted before older ones")
	_, err = peekValue(s, "k1")
	require.ErrorIs(t, err, ErrNotFound, "k1 was not read: evicted in order, before k2")
}

// TestOverwriteOutlivesOlder: an item overwritten in place keeps its chunk,
// but eviction must still treat it as just stored: it outlives every item
// stored before the overwrite, and once the hand has passed it, it is
// evicted in its turn.
func TestOverwriteOutlivesOlder(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 2 << 20, PageSize: 64 << 10})
	val := bytes.Repeat([]byte("x"), 100)
	set := func(k string) {
		_, err := s.Set([]byte(k), val, SetOptions{})
		require.NoError(t, err)
	}
	for i := 0; i < 100; i++ {
		set(fmt.Sprintf("k%d", i))
	}
	r := refOf(t, s, "k0")
	set("k0") // in place, at the LRU tail
	require.Equal(t, r, refOf(t, s, "k0"))
	require.True(t, s.referenced(r))
	// Fill until k1 (the oldest untouched) is gone; k0 must still be there.
	i := 100
	for ; ; i++ {
		set(fmt.Sprintf("k%d", i))
		if _, err := peekValue(s, "k1"); err == ErrNotFound {
			break
		}
		require.Less(t, i, 1_000_000)
	}
	_, err := peekValue(s, "k0")
	require.NoError(t, err, "an overwritten item was evicted before older ones")
	require.False(t, s.referenced(r), "the hand passed it and cleared the mark")
	// The hand passed k0 before everything written until then, k99
	// included: k99 goes first.
	for ; ; i++ {
		set(fmt.Sprintf("k%d", i))
		if _, err := peekValue(s, "k99"); err == ErrNotFound {
			break
		}
		require.Less(t, i, 1_000_000)
	}
	_, err = peekValue(s, "k0")
	require.NoError(t, err, "moved behind k99 by the eviction, but evicted before it")
}

// TestReadWithinInterval: a read within a minute of the store leaves the
// item's time alone (memcached's ITEM_UPDATE_INTERVAL) but still marks it
// referenced, and the class's age is that of the item at the hand.
func TestReadWithinInterval(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{MemoryLimit: 1 << 20, PageSize: 64 << 10, Clock: clk})
	val := bytes.Repeat([]byte("x"), 100)
	for i := 0; i < 3; i++ {
		_, err := s.Set([]byte(fmt.Sprintf("k%d", i)), val, SetOptions{})
		require.NoError(t, err)
	}
	stored := s.now()
	clk.Advance(bumpInterval - 1)
	_, err := getValue(s, "k0")
	require.NoError(t, err)
	r := refOf(t, s, "k0")
	require.Equal(t, stored, s.readHead(r).time)
	require.True(t, s.referenced(r))
	require.False(t, s.referenced(refOf(t, s, "k1")))
	cls := s.slab.ClassOf(r)
	require.Equal(t, r, s.slab.Hand(cls), "the first chunk is at the hand")
	require.Equal(t, int64(bumpInterval-1), s.classStats(cls).Age)
}

// TestEvictAllReferenced: when every item of a full class was read since
// the hand last passed, a set still evicts (the search is bounded and takes
// the last item it looks at) instead of failing or taking another class's
// page.
func TestEvictAllReferenced(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 1 << 20, PageSize: 64 << 10})
	val := bytes.Repeat([]byte("x"), 100)
	n := 0
	for ; n%100 != 0 || s.Stats().Evictions == 0; n++ { // Stats sums every shard
		_, err := s.Set([]byte(fmt.Sprintf("k%06d", n)), val, SetOptions{})
		require.NoError(t, err)
	}
	for i := 0; i < n; i++ {
		_, _ = getValue(s, fmt.Sprintf("k%06d", i))
	}
	before := s.Stats()
	for i := 0; i < 2*evictSearch; i++ {
		_, err := s.Set([]byte(fmt.Sprintf("n%06d", i)), val, SetOptions{})
		require.NoError(t, err)
	}
	after := s.Stats()
	require.Equal(t, before.Evictions+2*evictSearch, after.Evictions, "one eviction per set")
	require.Equal(t, before.SlabsMoved, after.SlabsMoved, "no page taken from another class")
}

// TestEvictAllReferencedChained: the same for chained items, whose raw
// chunks the hand passes without counting them as items looked at: with
// 32 KiB chunks a 1 MiB value has 32 of them.
func TestEvictAllReferencedChained(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 16 << 20, PageSize: 64 << 10, ItemSizeMax: 2 << 20})
	val := bytes.Repeat([]byte("c"), 1<<20)
	n := 0
	for ; s.Stats().Evictions == 0; n++ {
		_, err := s.Set([]byte(fmt.Sprintf("c%04d", n)), val, SetOptions{})
		require.NoError(t, err)
	}
	for i := 0; i < n; i++ {
		_, _ = getValue(s, fmt.Sprintf("c%04d", i))
	}
	for i := 0; i < 20; i++ {
		_, err := s.Set([]byte(fmt.Sprintf("d%04d", i)), val, SetOptions{})
		require.NoError(t, err, "set %d", i)
	}
}

// TestRacyKeyAfterPageMove: a chunk found before its page moved to a class
// of bigger chunks may claim a key that runs past the page; reading it
// without a lock must fail cleanly, not panic.
func TestRacyKeyAfterPageMove(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 1 << 20, PageSize: 64 << 10})
	small := s.slab.ClassFor(s.hdr + 20)
	var refs []slab.Ref
	for len(refs) < s.slab.ChunksPerPage(small) {
		r, ok := s.slab.Alloc(small)
		require.True(t, ok)
		refs = append(refs, r)
	}
	last := refs[len(refs)-1] // the page's last chunk
	for _, r := range refs {
		s.slab.Free(r)
	}
	big := s.slab.ClassFor(20000)
	require.NoError(t, s.slab.Steal(small, big, func(slab.Ref) bool { return true }))
	b := s.slab.Bytes(last, s.hdr)
	b[offKlen] = MaxKeyLen
	b[offBits] |= bitFlags
	var kb [MaxKeyLen]byte
	require.NotPanics(t, func() {
		_, ok := s.racyKey(last, kb[:])
		require.False(t, ok)
	})
}

// TestNoEvict: with evictions off (-M) a full cache refuses new items and
// keeps the old ones, but still reuses the memory of expired items.
func TestNoEvict(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{MemoryLimit: 1 << 20, PageSize: 64 << 10, NoEvict: true, Clock: clk})
	val := bytes.Repeat([]byte("m"), 500)
	n := 0
	for ; ; n++ {
		_, err := s.Set([]byte(fmt.Sprintf("k%d", n)), val, SetOptions{Exptime: 100})
		if err != nil {
			require.ErrorIs(t, err, ErrNoMemory)
			break
		}
		require.Less(t, n, 100000)
	}
	require.Positive(t, n)
	for i := 0; i < n; i++ {
		v, err := peekValue(s, fmt.Sprintf("k%d", i))
		require.NoError(t, err)
		require.Equal(t, val, v)
	}
	st := s.Stats()
	require.Zero(t, st.Evictions)
	require.Equal(t, uint64(1), st.StoreNoMemory)
	require.Equal(t, uint64(1), st.OutOfMemory)

	clk.Advance(100) // all expired: their memory is reclaimed, not evicted
	_, err := s.Set([]byte("after"), val, SetOptions{})
	require.NoError(t, err)
	st = s.Stats()
	require.Zero(t, st.Evictions)
	require.Positive(t, st.Reclaimed)
}

// TestReassign moves a page from a class full of small items to a class of
// large ones: the items on the moved page go, the others stay readable.
func TestReassign(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 4 << 20, PageSize: 64 << 10})
	small := bytes.Repeat([]byte("s"), 50)
	big := bytes.Repeat([]byte("B"), 3000)
	for i := 0; i < 10000; i++ {
		_, err := s.Set([]byte(fmt.Sprintf("s%04d", i)), small, SetOptions{})
		require.NoError(t, err)
	}
	src := s.slab.ClassFor(s.hdr + 5 + 50)
	dst := s.slab.ClassFor(s.hdr + 5 + 3000)
	_, err := s.Set([]byte("b0"), big, SetOptions{})
	require.NoError(t, err)
	before := s.classStats(src)
	dstBefore := s.classStats(dst)

	require.NoError(t, s.Reassign(src, dst))
	after := s.classStats(src)
	require.Equal(t, before.TotalPages-1, after.TotalPages)
	require.Equal(t, dstBefore.TotalPages+1, s.classStats(dst).TotalPages)
	require.Equal(t, after.UsedChunks, after.Number)
	gone := before.Number - after.Number
	require.Positive(t, gone)
	require.Equal(t, uint64(gone), s.Stats().SlabReassignEvicted)

	present := 0
	for i := 0; i < 10000; i++ {
		v, err := peekValue(s, fmt.Sprintf("s%04d", i))
		if err == nil {
			require.Equal(t, small, v)
			present++
		}
	}
	require.Equal(t, int(after.Number), present)

	require.ErrorIs(t, s.Reassign(src, src), ErrSameClass)
	require.ErrorIs(t, s.Reassign(0, dst), ErrBadClass)
	require.ErrorIs(t, s.Reassign(src, s.NumClasses()+1), ErrBadClass)
}

// TestAutomove: a class that evicts while another holds old items gets a
// page from it.
func TestAutomove(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{MemoryLimit: 2 << 20, PageSize: 64 << 10, Clock: clk})
	small := bytes.Repeat([]byte("s"), 50)
	for i := 0; s.slab.CanGrow(); i++ {
		_, err := s.Set([]byte(fmt.Sprintf("s%d", i)), small, SetOptions{})
		require.NoError(t, err)
	}
	src := s.slab.ClassFor(s.hdr + 6 + 50)
	var am automover
	require.False(t, am.step(s), "the first step only takes a baseline")
	clk.Advance(3600) // the small items are now an hour old
	big := bytes.Repeat([]byte("B"), 3000)
	for i := 0; i < 40; i++ {
		_, err := s.Set([]byte(fmt.Sprintf("b%d", i)), big, SetOptions{})
		require.NoError(t, err)
	}
	dst := s.slab.ClassFor(s.hdr + 3 + 3000)
	require.Positive(t, s.classStats(dst).Evicted, "the big class must be evicting for this test")
	pages := s.classStats(dst).TotalPages
	require.True(t, am.step(s))
	require.Equal(t, pages+1, s.classStats(dst).TotalPages)
	require.Less(t, s.classStats(src).TotalPages, 32)
}

// TestCrawler: expired and flushed items are freed by a crawl without anyone
// reading them.
func TestCrawler(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{MemoryLimit: 4 << 20, Clock: clk})
	for i := 0; i < 1000; i++ {
		exp := int64(0)
		if i%2 == 0 {
			exp = 10
		}
		_, err := s.Set([]byte(fmt.Sprintf("k%d", i)), []byte("value"), SetOptions{Exptime: exp})
		require.NoError(t, err)
	}
	require.Zero(t, s.Crawl())
	clk.Advance(10)
	require.Equal(t, 500, s.Crawl())
	st := s.Stats()
	require.Equal(t, uint64(500), st.CurrItems)
	require.Equal(t, uint64(500), st.CrawlerReclaimed)
	require.Equal(t, uint64(500), st.ExpiredUnfetched)
	var used int64
	for _, c := range s.Classes(nil) {
		used += c.UsedChunks
	}
	require.Equal(t, int64(500), used)

	s.FlushAll(0)
	clk.Advance(1)
	require.Equal(t, 500, s.Crawl())
	require.Zero(t, s.Stats().CurrItems)
}

// TestRunCrawlsAfterFlush: Run frees what a flush_all invalidated within a
// second or two of it taking effect, not at its next regular pass (10 s),
// so curr_items drops as memcached's does.
func TestRunCrawlsAfterFlush(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 4 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for i := range 100 {
		_, err := s.Set([]byte(fmt.Sprintf("k%d", i)), []byte("value"), SetOptions{})
		require.NoError(t, err)
	}
	s.FlushAll(0)
	require.Eventually(t, func() bool { return s.Stats().CurrItems == 0 }, crawlInterval/2, 10*time.Millisecond,
		"curr_items %d", s.Stats().CurrItems)
	require.Equal(t, uint64(100), s.Stats().CrawlerReclaimed)
}

// TestRunStops: Run returns when its context ends.
func TestRunStops(t *testing.T) {
	s := newTestStore(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	cancel()
	<-done
}

// TestConcurrentStress runs mixed operations from many goroutines on a small
// cache that evicts, chains large items and moves pages, and checks that
// every value read is one that was written for that key.
func TestConcurrentStress(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{MemoryLimit: 4 << 20, PageSize: 64 << 10, ItemSizeMax: 256 << 10, Clock: clk})
	value := func(key string, n int) []byte {
		v := []byte(key + ":")
		for len(v) < n {
			v = append(v, key...)
		}
		return v[:n]
	}
	check := func(key string, v []byte) {
		if len(v) > 0 && !bytes.Equal(v, value(key, len(v))) {
			panic(fmt.Sprintf("key %s: corrupt value of %d bytes", key, len(v)))
		}
	}
	sizes := []int{10, 100, 1000, 5000, 40000, 100000}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			for i := 0; i < 3000; i++ {
				key := "k" + strconv.Itoa(rng.IntN(500))
				switch op := rng.IntN(10); {
				case op < 4:
					_, err := s.Set([]byte(key), value(key, sizes[rng.IntN(len(sizes))]), SetOptions{})
					if err != nil && err != ErrNoMemory {
						panic(err)
					}
				case op < 8:
					err := s.Get([]byte(key), GetOptions{}, func(it Item) { check(key, it.AppendValue(nil)) })
					if err != nil && err != ErrNotFound {
						panic(err)
					}
				case op < 9:
					_ = s.Delete([]byte(key), DeleteOptions{})
				default:
					_ = s.Reassign(-1, 1+rng.IntN(s.NumClasses()))
				}
			}
		}(uint64(g))
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			s.Crawl()
		}
	}()
	wg.Wait()
	st := s.Stats()
	var number, used int64
	for _, c := range s.Classes(nil) {
		number += c.Number
		used += c.UsedChunks
	}
	require.Equal(t, int64(st.CurrItems), number)
	require.GreaterOrEqual(t, used, number)
	require.LessOrEqual(t, st.TotalMalloced, int64(4<<20))
}

// TestHotPathAllocs guards the zero-allocation promise of the request path.
func TestHotPathAllocs(t *testing.T) {
	s := newTestStore(t, Config{})
	key, missing, num := []byte("user:123456789"), []byte("missing:key"), []byte("counter")
	val := bytes.Repeat([]byte("v"), 100)
	_, err := s.Set(key, val, SetOptions{})
	require.NoError(t, err)
	_, err = s.Set(num, []byte("1"), SetOptions{})
	require.NoError(t, err)
	buf := make([]byte, 0, 256)
	for name, f := range map[string]func(){
		"get hit":  func() { _ = s.Get(key, GetOptions{}, func(it Item) { buf = it.AppendValue(buf[:0]) }) },
		"get miss": func() { _ = s.Get(missing, GetOptions{}, func(it Item) { buf = it.AppendValue(buf[:0]) }) },
		"set":      func() { _, _ = s.Set(key, val, SetOptions{}) },
		"incr":     func() { _, _ = s.Arith(num, ArithOptions{Delta: 1}) },
		"delete":   func() { _, _ = s.Set(missing, val, SetOptions{}); _ = s.Delete(missing, DeleteOptions{}) },
	} {
		require.Zero(t, testing.AllocsPerRun(1000, f), name)
	}
}

// TestMaxItemSize128MiB: with -I 128m a value of nearly 128 MiB is chained
// over 1 MiB pages and reads back byte for byte, in place and copied.
func TestMaxItemSize128MiB(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 300 << 20, ItemSizeMax: 128 << 20})
	// The largest value memcached accepts with a 4-byte key and flags:
	// 48 + (4+1) + 4 + (n+2) + 8 == 128 MiB.
	n := 128<<20 - 67
	val := make([]byte, n)
	for i := range val {
		val[i] = byte(i * 7 >> 8)
	}
	_, err := s.Set([]byte("huge"), val, SetOptions{Flags: 9})
	require.NoError(t, err)
	require.False(t, s.TooLarge(4, 9, n))
	require.True(t, s.TooLarge(4, 9, n+1))
	_, err = s.Set([]byte("huge2"), append(val, 0), SetOptions{Flags: 9})
	require.ErrorIs(t, err, ErrTooLarge)

	var spans, pos int
	err = s.Get([]byte("huge"), GetOptions{}, func(it Item) {
		require.Equal(t, n, it.Len())
		require.Equal(t, uint32(9), it.Flags)
		it.ValueSpans(func(b []byte) {
			require.True(t, bytes.Equal(val[pos:pos+len(b)], b), "span %d differs", spans)
			pos += len(b)
			spans++
		})
	})
	require.NoError(t, err)
	require.Equal(t, n, pos)
	require.Greater(t, spans, 250, "512 KiB chunks")
	got, err := getValue(s, "huge")
	require.NoError(t, err)
	require.True(t, bytes.Equal(val, got))

	require.NoError(t, s.Delete([]byte("huge"), DeleteOptions{}))
	for _, c := range s.Classes(nil) {
		require.Zero(t, c.UsedChunks, "class %d", c.Class)
	}
}

// TestMoreClassesThanPages: with 1 MiB pages and the default growth factor
// there are far more classes than pages at a small limit (170 against 8
// here). Every new size must still be stored, by taking the only page of
// the class with the oldest items, and memory stays within the limit.
func TestMoreClassesThanPages(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{MemoryLimit: 8 << 20, PageSize: 1 << 20, Clock: clk})
	sizes := 0
	for n := 8.0; n < 400_000; n *= 1.05 {
		v := bytes.Repeat([]byte("s"), int(n))
		_, err := s.Set([]byte(fmt.Sprintf("k%d", int(n))), v, SetOptions{})
		require.NoError(t, err, "value of %d bytes", int(n))
		got, err := getValue(s, fmt.Sprintf("k%d", int(n)))
		require.NoError(t, err)
		require.Equal(t, v, got)
		require.LessOrEqual(t, s.Stats().TotalMalloced, int64(8<<20))
		sizes++
		clk.Advance(1)
	}
	require.Greater(t, sizes, 100)
	require.Positive(t, s.Stats().SlabsMoved)
}

func TestDefaultPageSize(t *testing.T) {
	for _, tc := range []struct {
		limit    int64
		chunkMax int
		page     int
	}{
		{8 << 20, 0, 64 << 10},
		{64 << 20, 0, 128 << 10},
		{256 << 20, 0, 512 << 10},
		{512 << 20, 0, 1 << 20},
		{64 << 30, 0, 1 << 20},
		{64 << 20, 512 << 10, 512 << 10}, // never below the largest chunk
	} {
		require.Equal(t, tc.page, defaultPageSize(tc.limit, tc.chunkMax), "limit %d chunk max %d", tc.limit, tc.chunkMax)
	}
}

// TestTrackSizes: with TrackSizes the histogram follows stores,
// replacements, deletes and expiry, in memcached's 32-byte buckets.
func TestTrackSizes(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{TrackSizes: true, Clock: clk})
	sizes := func() map[int64]int64 {
		m := map[int64]int64{}
		require.True(t, s.Sizes(func(size, n int64) { m[size] = n }))
		return m
	}
	// memcached's size of key "a" (1), value of 100 bytes, no flags, CAS:
	// 48 + 2 + 102 + 8 = 160, bucket 160.
	_, err := s.Set([]byte("a"), make([]byte, 100), SetOptions{})
	require.NoError(t, err)
	_, err = s.Set([]byte("b"), make([]byte, 100), SetOptions{Exptime: 10})
	require.NoError(t, err)
	require.Equal(t, map[int64]int64{160: 2}, sizes())
	_, err = s.Set([]byte("a"), make([]byte, 200), SetOptions{}) // 260: bucket 288
	require.NoError(t, err)
	require.Equal(t, map[int64]int64{160: 1, 288: 1}, sizes())
	require.NoError(t, s.Delete([]byte("a"), DeleteOptions{}))
	clk.Advance(10)
	require.Equal(t, 1, s.Crawl())
	require.Empty(t, sizes())

	off := newTestStore(t, Config{})
	require.False(t, off.Sizes(func(int64, int64) {}))
}

// TestTrackSizesAtRuntime: turned on while items are stored ("stats
// sizes_enable"), the histogram counts only the items stored since, and
// removing an older one does not count it out; turned off, it is gone.
func TestTrackSizesAtRuntime(t *testing.T) {
	s := newTestStore(t, Config{})
	sizes := func() map[int64]int64 {
		m := map[int64]int64{}
		require.True(t, s.Sizes(func(size, n int64) { m[size] = n }))
		return m
	}
	set := func(key string, n int) {
		_, err := s.Set([]byte(key), make([]byte, n), SetOptions{})
		require.NoError(t, err)
	}
	set("old", 100)
	set("kept", 100)
	_, err := s.Set([]byte("num"), []byte("5"), SetOptions{})
	require.NoError(t, err)
	require.NoError(t, s.TrackSizes(true))
	require.Empty(t, sizes())
	set("new", 100) // memcached's size: 48 + 3 + 102 + 8 = 161, bucket 192
	require.Equal(t, map[int64]int64{192: 1}, sizes())
	require.NoError(t, s.Delete([]byte("old"), DeleteOptions{})) // never counted
	require.Equal(t, map[int64]int64{192: 1}, sizes())
	set("kept", 200) // the old item goes uncounted, the new one is counted
	require.Equal(t, map[int64]int64{192: 1, 288: 1}, sizes())
	require.NoError(t, s.TrackSizes(true)) // on already: nothing changes
	require.NoError(t, s.Delete([]byte("new"), DeleteOptions{}))
	require.Equal(t, map[int64]int64{288: 1}, sizes())
	// A number from before, incremented in place: it takes a new CAS, so
	// it is counted from then on, and counted out when deleted.
	_, err = s.Arith([]byte("num"), ArithOptions{Delta: 1})
	require.NoError(t, err)
	require.Equal(t, map[int64]int64{64: 1, 288: 1}, sizes())
	require.NoError(t, s.Delete([]byte("num"), DeleteOptions{}))
	require.Equal(t, map[int64]int64{288: 1}, sizes())
	require.NoError(t, s.TrackSizes(false))
	require.False(t, s.Sizes(func(int64, int64) {}))

	noCAS := newTestStore(t, Config{NoCAS: true})
	require.ErrorIs(t, noCAS.TrackSizes(true), ErrNoCAS)
	require.NoError(t, noCAS.TrackSizes(false))
}

// refOf is where key's item lives now.
func refOf(t *testing.T, s *Store, key string) slab.Ref {
	t.Helper()
	sh, h32 := s.shardOf([]byte(key))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, r := s.find(sh, []byte(key), h32)
	require.NotZero(t, r, "%s is not stored", key)
	return r
}

// TestOverwriteInPlace: a set that fits the item's own chunk rewrites it
// there, with everything a new item would have: value, flags (whose
// presence moves the key), CAS, fresh state bits, a late LRU move (see
// TestOverwriteOutlivesOlder), and the same counters as a set that
// allocates.
func TestOverwriteInPlace(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{MemoryLimit: 8 << 20, PageSize: 64 << 10, Clock: clk})
	val := func(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }
	_, err := s.Set([]byte("a"), val('a', 100), SetOptions{})
	require.NoError(t, err)
	_, err = s.Set([]byte("b"), val('b', 100), SetOptions{})
	require.NoError(t, err)
	r := refOf(t, s, "a")
	_, err = getValue(s, "a") // fetched
	require.NoError(t, err)
	before := s.Stats()

	steps := []struct {
		flags uint32
		n     int
	}{{7, 100}, {0, 101}, {0xffffffff, 96}, {0, 100}}
	for i, st := range steps {
		c := byte('c' + i)
		cas, err := s.Set([]byte("a"), val(c, st.n), SetOptions{Flags: st.flags})
		require.NoError(t, err)
		require.Equal(t, r, refOf(t, s, "a"), "step %d: not in place", i)
		var got []byte
		var it Item
		require.NoError(t, s.Get([]byte("a"), GetOptions{Peek: true}, func(x Item) {
			got, it = x.AppendValue(nil), x
			require.Equal(t, []byte("a"), x.Key())
		}))
		require.Equal(t, val(c, st.n), got, "step %d", i)
		require.Equal(t, st.flags, it.Flags, "step %d", i)
		require.Equal(t, cas, it.CAS, "step %d", i)
		require.False(t, it.Fetched, "step %d: a new value is not fetched yet", i)
		require.True(t, s.referenced(r), "step %d: not marked referenced", i)
	}
	v, err := getValue(s, "b")
	require.NoError(t, err)
	require.Equal(t, val('b', 100), v, "the neighbouring chunk is intact")

	after := s.Stats()
	require.Equal(t, before.CurrItems, after.CurrItems)
	require.Equal(t, before.TotalItems+uint64(len(steps)), after.TotalItems)
	require.Equal(t, before.CmdSet+uint64(len(steps)), after.CmdSet)
	require.Equal(t, before.Bytes, after.Bytes, "the last step has the first's size")

	// A value of another class moves the item out of its chunk.
	_, err = s.Set([]byte("a"), val('z', 1000), SetOptions{})
	require.NoError(t, err)
	require.NotEqual(t, r, refOf(t, s, "a"))
	v, err = getValue(s, "a")
	require.NoError(t, err)
	require.Equal(t, val('z', 1000), v)
}

// TestEvictDuringOverwrite: eviction reads an item's header and key without
// the item's shard lock, while a set may be rewriting that item in place
// (with flags that come and go, which moves the key). It must neither
// free the wrong item nor crash, and every key keeps a value it was given.
func TestEvictDuringOverwrite(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 1 << 20, PageSize: 64 << 10})
	val := bytes.Repeat([]byte("v"), 96)
	const hot = 64
	deadline := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(2)
		go func() { // overwrites in place, flags on and off
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				_, err := s.Set([]byte(fmt.Sprintf("hot%d", i%hot)), val, SetOptions{Flags: uint32(i % 2)})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() { // new keys of the same class: evictions
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				_, err := s.Set([]byte(fmt.Sprintf("new%d-%d", g, i)), val[:90], SetOptions{})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := s.Stats()
	require.Positive(t, st.Evictions, "the test must evict")
	for i := 0; i < hot; i++ {
		if v, err := peekValue(s, fmt.Sprintf("hot%d", i)); err == nil {
			require.Equal(t, val, v)
		}
	}
}

// TestPrefetch: Prefetch changes nothing a client can see (values, stats),
// takes any keys (missing, empty, more than PrefetchMax), and under -race
// shows that it reads the index only under the shard locks, while other
// goroutines grow it.
func TestPrefetch(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 64 << 20})
	s.Prefetch(nil)
	s.Prefetch([][]byte{[]byte("missing"), {}, []byte("\x00\xff")})

	const n = 20_000
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "pf:%d", i)
	}
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 2 {
				_, err := s.Set(keys[i], keys[i], SetOptions{})
				assert.NoError(t, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i+PrefetchMax+3 <= n; i += 7 {
			s.Prefetch(keys[i : i+PrefetchMax+3])
		}
	}()
	wg.Wait()

	before := s.Stats()
	for i := 0; i < n; i += PrefetchMax {
		s.Prefetch(keys[i:min(i+PrefetchMax, n)])
	}
	require.Equal(t, before, s.Stats(), "a prefetch is not a get")
	for _, k := range keys {
		var got []byte
		require.NoError(t, s.Get(k, GetOptions{}, func(it Item) { got = it.AppendValue(nil) }))
		require.Equal(t, k, got)
	}
}

// TestHeaderPacking: the state bits, the referenced mark and the time share
// words of the header, and the value length borders the chained mark;
// writing one must not disturb the others, at the lengths' edges too.
func TestHeaderPacking(t *testing.T) {
	clk := NewClock()
	s := newTestStore(t, Config{MemoryLimit: 16 << 20, Clock: clk})
	key := []byte("packed")
	_, err := s.Set(key, bytes.Repeat([]byte("v"), 100), SetOptions{Flags: 0xdeadbeef, BinaryKey: true})
	require.NoError(t, err)
	r := refOf(t, s, "packed")
	h := s.readHead(r)
	require.Equal(t, uint8(bitFlags|bitBinaryKey), h.bits)
	require.Equal(t, uint32(0xdeadbeef), h.flags)
	require.Equal(t, 100, h.vlen)
	require.Equal(t, len(key), h.klen)
	require.False(t, s.referenced(r))

	clk.Advance(bumpInterval)
	_, err = getValue(s, "packed")
	require.NoError(t, err)
	h = s.readHead(r)
	require.Equal(t, uint8(bitFlags|bitBinaryKey|bitFetched), h.bits)
	require.Equal(t, s.now(), h.time, "bumped")
	require.True(t, s.referenced(r))
	s.setRef(r, false)
	s.setBits(r, bitStale|bitTokenSent, 0)
	h = s.readHead(r)
	require.Equal(t, uint8(bitFlags|bitBinaryKey|bitFetched|bitStale|bitTokenSent), h.bits)
	require.Equal(t, s.now(), h.time)
	require.Equal(t, 100, h.vlen)
	s.setBits(r, 0, bitFetched|bitTokenSent)
	h = s.readHead(r)
	require.Equal(t, uint8(bitFlags|bitBinaryKey|bitStale), h.bits)
	require.Equal(t, 100, h.vlen)

	// The longest value a chunk holds unchained, and one byte more, with
	// the default chunk and with the largest, 1 MiB.
	big := newTestStore(t, Config{MemoryLimit: 16 << 20, PageSize: 1 << 20, ChunkMax: 1 << 20,
		ItemSizeMax: 8 << 20})
	for _, s := range []*Store{s, big} {
		most := s.chunkMax - s.hdr - flagsLen - len(key)
		for _, n := range []int{most, most + 1, 3 * s.chunkMax} {
			v := bytes.Repeat([]byte{byte(n)}, n)
			_, err := s.Set(key, v, SetOptions{Flags: 7})
			require.NoError(t, err)
			h := s.readHead(refOf(t, s, "packed"))
			require.Equal(t, n, h.vlen)
			require.Equal(t, n > most, h.bits&bitChained != 0, "length %d", n)
			got, err := getValue(s, "packed")
			require.NoError(t, err)
			require.Equal(t, v, got)
		}
	}
	_, err = New(Config{ChunkMax: 2 << 20, PageSize: 4 << 20})
	require.ErrorContains(t, err, "at most 1 MiB")
}

// TestEvictRefStaleRaw: a chunk that still looks raw (it was part of a
// chain, and its new owner has not written it yet) names a head that now
// belongs to another item: emptying its page must not evict that item. A
// real raw chunk still frees its own item.
func TestEvictRefStaleRaw(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 16 << 20, PageSize: 64 << 10, ItemSizeMax: 1 << 20})
	val := bytes.Repeat([]byte("b"), 3*s.chunkMax)
	for _, k := range []string{"a", "b"} {
		_, err := s.Set([]byte(k), val, SetOptions{})
		require.NoError(t, err)
	}
	ra, rb := refOf(t, s, "a"), refOf(t, s, "b")
	ha := s.readHead(ra)
	require.NotZero(t, ha.bits&bitChained)
	stale, ok := s.slab.Alloc(s.largest)
	require.True(t, ok)
	b := s.slab.Bytes(stale, rawHdr)
	put32(b, 0, uint32(rb)) // names b's head, but is not in b's chain
	put32(b, offVlen, 0)
	require.True(t, s.evictRef(stale, nil))
	_, err := peekValue(s, "b")
	require.NoError(t, err, "an item evicted for a chunk that is not its own")

	own := slab.Ref(u32(s.chain(ra, &ha), 0)) // a's first raw chunk
	require.True(t, s.evictRef(own, nil))
	_, err = peekValue(s, "a")
	require.ErrorIs(t, err, ErrNotFound, "a real raw chunk frees its item")
	s.slab.Free(stale)
}

// TestClassSizes: every class once, in order, growing, with whole pages.
func TestClassSizes(t *testing.T) {
	s := newTestStore(t, Config{MemoryLimit: 64 << 20})
	next, last := 1, 0
	s.ClassSizes(func(cls, chunk, perPage int) {
		require.Equal(t, next, cls)
		require.Greater(t, chunk, last)
		require.GreaterOrEqual(t, perPage, 1)
		require.LessOrEqual(t, chunk*perPage, max(chunk, s.slab.PageSize()))
		next, last = cls+1, chunk
	})
	require.Equal(t, s.NumClasses()+1, next)
	require.Equal(t, s.ChunkMax(), last)
}
