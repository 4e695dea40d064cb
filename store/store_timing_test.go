package store

import (
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks of the request path. Each reports allocations (0 is the
// promise); the Baseline ones are a map under a RWMutex, the simplest cache a
// Go program would write, measured in the same run for scale.

const benchKeys = 100_000

func benchKey(buf []byte, i int) []byte {
	return strconv.AppendInt(append(buf[:0], "key:"...), int64(i), 10)
}

func loadedStore(b *testing.B) (*Store, []byte) {
	s := newTestStore(b, Config{MemoryLimit: 256 << 20})
	val := make([]byte, 100)
	var kb []byte
	for i := 0; i < benchKeys; i++ {
		if _, err := s.Set(benchKey(kb, i), val, SetOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	return s, val
}

func BenchmarkGetHit(b *testing.B) {
	s, val := loadedStore(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(val)))
	buf := make([]byte, 0, 256)
	kb := make([]byte, 0, 32)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		kb = benchKey(kb, i%benchKeys)
		_ = s.Get(kb, GetOptions{}, func(it Item) { buf = it.AppendValue(buf[:0]) })
	}
}

func BenchmarkGetHitParallel(b *testing.B) {
	s, val := loadedStore(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(val)))
	var seed atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, 256)
		kb := make([]byte, 0, 32)
		i := int(seed.Add(7919))
		for pb.Next() {
			i++
			kb = benchKey(kb, i%benchKeys)
			_ = s.Get(kb, GetOptions{}, func(it Item) { buf = it.AppendValue(buf[:0]) })
		}
	})
}

func BenchmarkGetMiss(b *testing.B) {
	s, _ := loadedStore(b)
	b.ReportAllocs()
	kb := make([]byte, 0, 32)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		kb = benchKey(kb, benchKeys+i)
		_ = s.Get(kb, GetOptions{}, func(Item) {})
	}
}

func BenchmarkSet(b *testing.B) {
	s, val := loadedStore(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(val)))
	kb := make([]byte, 0, 32)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		kb = benchKey(kb, i%benchKeys)
		if _, err := s.Set(kb, val, SetOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSetParallel(b *testing.B) {
	s, val := loadedStore(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(val)))
	var seed atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		kb := make([]byte, 0, 32)
		i := int(seed.Add(7919))
		for pb.Next() {
			i++
			kb = benchKey(kb, i%benchKeys)
			if _, err := s.Set(kb, val, SetOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkIncr(b *testing.B) {
	s, _ := loadedStore(b)
	if _, err := s.Set([]byte("counter"), []byte("0"), SetOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	key := []byte("counter")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Arith(key, ArithOptions{Delta: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDelete measures a set and a delete of the same key per op.
func BenchmarkDelete(b *testing.B) {
	s, val := loadedStore(b)
	b.ReportAllocs()
	kb := make([]byte, 0, 32)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		kb = benchKey(kb, benchKeys+i%1000)
		if _, err := s.Set(kb, val, SetOptions{}); err != nil {
			b.Fatal(err)
		}
		if err := s.Delete(kb, DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

type baseline struct {
	mu sync.RWMutex
	m  map[string][]byte
}

func loadedBaseline() (*baseline, []byte) {
	c := &baseline{m: make(map[string][]byte, benchKeys)}
	val := make([]byte, 100)
	var kb []byte
	for i := 0; i < benchKeys; i++ {
		c.m[string(benchKey(kb, i))] = append([]byte(nil), val...)
	}
	return c, val
}

func BenchmarkBaselineGetHit(b *testing.B) {
	c, val := loadedBaseline()
	b.ReportAllocs()
	b.SetBytes(int64(len(val)))
	buf := make([]byte, 0, 256)
	kb := make([]byte, 0, 32)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		kb = benchKey(kb, i%benchKeys)
		c.mu.RLock()
		buf = append(buf[:0], c.m[string(kb)]...)
		c.mu.RUnlock()
	}
}

func BenchmarkBaselineSet(b *testing.B) {
	c, val := loadedBaseline()
	b.ReportAllocs()
	b.SetBytes(int64(len(val)))
	kb := make([]byte, 0, 32)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		kb = benchKey(kb, i%benchKeys)
		v := append([]byte(nil), val...) // a cache must copy the caller's bytes
		c.mu.Lock()
		c.m[string(kb)] = v
		c.mu.Unlock()
	}
}

// BenchmarkMemoryPerItem loads 1M items with ~14-byte keys and 100-byte
// values and reports the memory per item: slab pages taken, the index, and
// the growth of the live Go heap. Run with -benchtime=1x.
func BenchmarkMemoryPerItem(b *testing.B) {
	for _, cfg := range []struct {
		name   string
		factor float64
	}{{"f1.05", 0}, {"f1.25", 1.25}} {
		b.Run(cfg.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				slabB, indexB, heapB := memoryPerItem(b, 1_000_000, cfg.factor)
				b.ReportMetric(slabB, "slab-B/item")
				b.ReportMetric(indexB, "index-B/item")
				b.ReportMetric(heapB, "heap-B/item")
				// The index is mapped outside the heap (newSlots), so
				// heap-B is the rest of the Go heap.
				b.ReportMetric(slabB+indexB+heapB, "total-B/item")
			}
		})
	}
}

// memoryPerItem returns slab and index bytes per item, and the live heap
// growth per item (which includes the index, a Go slice).
func memoryPerItem(tb testing.TB, n int, factor float64) (slabB, indexB, heapB float64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0 := ms.HeapAlloc
	s := newTestStore(tb, Config{MemoryLimit: 1 << 30, GrowthFactor: factor})
	val := make([]byte, 100)
	kb := make([]byte, 0, 32)
	for i := 0; i < n; i++ {
		kb = fmt.Appendf(kb[:0], "key:%010d", i) // 14 bytes
		if _, err := s.Set(kb, val, SetOptions{}); err != nil {
			tb.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	st := s.Stats()
	if st.CurrItems != uint64(n) {
		tb.Fatalf("%d items stored, want %d", st.CurrItems, n)
	}
	f := float64(n)
	return float64(st.TotalMalloced) / f, float64(st.HashBytes) / f, float64(int64(ms.HeapAlloc)-int64(heap0)) / f
}

// BenchmarkGCScaling shows that the collector's work does not grow with the
// number of items: live heap objects and the time of a forced collection at
// 10k, 100k and 1M items.
func BenchmarkGCScaling(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			s := newTestStore(b, Config{MemoryLimit: 1 << 30})
			val := make([]byte, 100)
			kb := make([]byte, 0, 32)
			for i := 0; i < n; i++ {
				kb = fmt.Appendf(kb[:0], "key:%010d", i)
				if _, err := s.Set(kb, val, SetOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC()
			var ms runtime.MemStats
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				runtime.GC()
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/GC")
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(ms.HeapObjects), "heap-objects")
			runtime.KeepAlive(s)
		})
	}
}

// BenchmarkGetBatch: 16 gets of scattered keys, as a pipelined batch, with
// and without a Prefetch of their keys first. One op is the batch.
func BenchmarkGetBatch(b *testing.B) {
	s, _ := loadedStore(b)
	keys := make([][]byte, PrefetchMax)
	for i := range keys {
		keys[i] = make([]byte, 0, 32)
	}
	buf := make([]byte, 0, 256)
	hit := func(it Item) { buf = it.AppendValue(buf[:0]) }
	for _, prefetch := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "prefetch"}[prefetch], func(b *testing.B) {
			b.ReportAllocs()
			for n := 0; b.Loop(); n++ {
				for i := range keys {
					// A stride through the key space: few cache hits.
					keys[i] = benchKey(keys[i], (n*PrefetchMax+i)*7919%benchKeys)
				}
				if prefetch {
					s.Prefetch(keys)
				}
				for _, k := range keys {
					_ = s.Get(k, GetOptions{}, hit)
				}
			}
		})
	}
}
