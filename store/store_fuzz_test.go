package store

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/require"
)

// The store under FuzzStoreModel: 64 KiB pages so that each of the ~120
// classes the keys and values below touch costs little, and 16 MiB so that
// even then nothing is ever evicted (the model has no evictions, and the
// test fails if one happens). Items above the 32 KiB chunk max are chained;
// the 64 KiB item limit makes the largest values too large.
const (
	fuzzLimit    = 16 << 20
	fuzzPage     = 64 << 10
	fuzzChunkMax = 32 << 10
	fuzzItemMax  = 64 << 10
	fuzzMaxOps   = 2000 // keeps one input under a few milliseconds
	fuzzStart    = 1_700_000_000
)

// Operations of FuzzStoreModel: an op byte modulo fuzzOps, then the bytes
// the operation reads.
const (
	fopSet       = iota // key, value, flags, exptime
	fopAdd              // key, value, flags, exptime
	fopReplace          // key, value, flags, exptime
	fopAppend           // key, value
	fopPrepend          // key, value
	fopCAS              // key, value, flags, exptime, cas choice
	fopSetCAS           // mode, key, value, flags, exptime, cas choice: meta set with C
	fopGet              // key, variant (plain, peek, no bump)
	fopTouch            // key, exptime
	fopGAT              // key, exptime
	fopDelete           // key, cas choice
	fopIncr             // key, delta, cas choice
	fopDecr             // key, delta, cas choice
	fopFlush            // delay
	fopAdvance          // seconds
	fopSetNumber        // key, number, exptime
	fopCrawl            // none
	fopSetBig           // key, size
	fuzzOps
)

// FuzzStoreModel runs operation sequences decoded from the input against a
// Store and against storeModel, a plain map that implements memcached's
// semantics on its own, and compares every answer.
//
// Input: one config byte (bit 0: NoCAS), then operations.
func FuzzStoreModel(f *testing.F) {
	// The seeds exercise one area each; the minimal inputs that show the
	// store's known departures from memcached are files under
	// testdata/fuzz/FuzzStoreModel named after them.
	//
	// set, get, append, prepend, get, incr on a non-number, delete, get.
	f.Add([]byte{0, fopSet, 1, 2, 0, 0, fopGet, 1, 0, fopAppend, 1, 3, fopPrepend, 1, 4, fopGet, 1, 0,
		fopIncr, 1, 1, 0, fopDelete, 1, 0, fopGet, 1, 0})
	// Numbers: incr past 2^64, decr to 0, shorter results padded with spaces,
	// odd numbers ("-18446744073709551615" is 1 to strtoull).
	f.Add([]byte{0, fopSetNumber, 2, 8 + 12*16, 0, fopIncr, 2, 1, 0, fopGet, 2, 0,
		fopSetNumber, 3, 6 + 5*16, 0, fopDecr, 3, 2, 0, fopGet, 3, 0, fopDecr, 3, 8, 0, fopGet, 3, 0,
		fopSetNumber, 4, 128 + 10, 0, fopIncr, 4, 1, 0, fopGet, 4, 0,
		fopSetNumber, 5, 128 + 2, 0, fopIncr, 5, 1, 0, fopSetNumber, 5, 128 + 0, 0, fopDecr, 5, 2, 0, fopGet, 5, 0})
	// CAS: right, wrong, on a missing key; meta set with C; delete with C.
	f.Add([]byte{0, fopSet, 5, 2, 1, 0, fopCAS, 5, 3, 0, 0, 1, fopCAS, 5, 3, 0, 0, 0, fopGet, 5, 0,
		fopCAS, 6, 3, 0, 0, 0, fopSetCAS, 1, 5, 4, 0, 0, 0, fopSetCAS, 2, 5, 4, 0, 0, 2,
		fopDelete, 5, 128 + 1, fopDelete, 5, 128 + 0, fopGet, 5, 0})
	// Expiry: relative, negative, absolute; touch and gat; the clock moves.
	f.Add([]byte{0, fopSet, 7, 2, 0, 1 + 3*8, fopSet, 8, 2, 0, 3, fopSet, 9, 2, 0, 4 + 20*8,
		fopGet, 7, 0, fopGet, 8, 0, fopAdvance, 1 + 3*8, fopGet, 7, 0, fopGet, 9, 0,
		fopTouch, 9, 2 + 2*8, fopGAT, 9, 2 + 2*8, fopAdvance, 3, fopGet, 9, 1, fopGet, 9, 0})
	// flush_all now, then with a delay; items stored after it survive.
	f.Add([]byte{0, fopSet, 1, 2, 0, 0, fopFlush, 0, fopGet, 1, 0, fopSet, 1, 3, 0, 0, fopGet, 1, 0,
		fopFlush, 2 + 6*5, fopAdvance, 1 + 8*4, fopGet, 1, 0, fopAdvance, 1 + 8*2, fopGet, 1, 0,
		fopSet, 2, 2, 0, 0, fopCrawl})
	// Chained values: set, append to one, get, one too large to set and one
	// too large to append to.
	f.Add([]byte{0, fopSetBig, 10, 3, fopGet, 10, 0, fopAppend, 10, 2, fopPrepend, 10, 5, fopGet, 10, 2,
		fopSetBig, 11, 250, fopGet, 11, 0, fopSetBig, 12, 100, fopIncr, 12, 1, 0,
		fopSetBig, 13, 0, fopAppend, 13, 11 + 16*2, fopAppend, 13, 11 + 16*2, fopGet, 13, 1})
	// Fill shard 0's index past two growths, delete from the middle of its
	// probe runs, read everything back.
	f.Add([]byte{0, fopSet, 0, 1, 0, 0, fopSet, 1, 1, 0, 0, fopSet, 2, 1, 0, 0, fopSet, 3, 1, 0, 0,
		fopSet, 4, 1, 0, 0, fopSet, 5, 1, 0, 0, fopSet, 6, 1, 0, 0, fopSet, 7, 1, 0, 0, fopSet, 8, 1, 0, 0,
		fopSet, 9, 1, 0, 0, fopSet, 10, 1, 0, 0, fopSet, 11, 1, 0, 0, fopSet, 12, 1, 0, 0, fopSet, 13, 1, 0, 0,
		fopSet, 14, 1, 0, 0, fopSet, 15, 1, 0, 0, fopSet, 16, 1, 0, 0, fopSet, 17, 1, 0, 0, fopSet, 18, 1, 0, 0,
		fopDelete, 3, 0, fopDelete, 9, 0, fopDelete, 14, 0, fopGet, 4, 0, fopGet, 10, 0, fopGet, 15, 0,
		fopSet, 3, 2, 0, 0})
	// Without CAS: flush by time alone, compares fail.
	f.Add([]byte{1, fopSet, 1, 2, 0, 0, fopCAS, 1, 3, 0, 0, 1, fopGet, 1, 0, fopFlush, 0, fopSet, 1, 3, 0, 0,
		fopGet, 1, 0, fopAdvance, 0, fopSet, 1, 3, 0, 0, fopGet, 1, 0})
	// Reads a minute apart bump the item's time, closer ones do not.
	f.Add([]byte{0, fopSet, 1, 2, 0, 0, fopAdvance, 2 + 8*2, fopGet, 1, 0, fopAdvance, 1 + 8*30,
		fopGet, 1, 0, fopAdvance, 1 + 8*30, fopGet, 1, 2, fopGet, 1, 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		useCAS := data[0]&1 == 0
		clock := &Clock{}
		clock.Set(fuzzStart + int64(data[0]>>1))
		obs := &fuzzObserver{}
		s, err := New(Config{
			MemoryLimit: fuzzLimit, PageSize: fuzzPage, ChunkMax: fuzzChunkMax,
			ItemSizeMax: fuzzItemMax, NoCAS: !useCAS, Clock: clock, Observer: obs,
		})
		require.NoError(t, err)
		defer func() { require.NoError(t, s.Close()) }()
		m := newStoreModel(clock.Now(), useCAS)
		r := &fuzzReader{b: data[1:]}
		h := &fuzzHarness{t: t, s: s, m: m, clock: clock, obs: obs}
		for n := 0; len(r.b) > 0 && n < fuzzMaxOps; n++ {
			h.step(r, n)
			if n%16 == 15 {
				h.checkCounts()
			}
		}
		h.sweep()
	})
}

// fuzzReader hands out input bytes, zeros once they run out.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) next() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// fuzzKeys: short, long (the 250-byte maximum) and in between. All but "x"
// hash to shard 0, so that its index holds up to 19 entries: probe runs
// collide and shift, and the table grows twice (at 15 and 19 entries).
// Index len(fuzzKeys) decodes to an invalid key.
var fuzzKeys = func() []string {
	inShard0 := func(prefix string, pad int, n int) []string {
		var keys []string
		for i := 0; len(keys) < n; i++ {
			k := prefix + strconv.Itoa(i)
			k += strings.Repeat("-", max(0, pad-len(k)))
			if xxhash.Sum64String(k)&shardMask == 0 {
				keys = append(keys, k)
			}
		}
		return keys
	}
	keys := inShard0("k", 0, 15)
	keys = append(keys, inShard0("K", MaxKeyLen, 2)...)
	keys = append(keys, inShard0("user:profile:", 200, 2)...)
	return append(keys, "x")
}()

func decodeKey(b byte) []byte {
	i := int(b) % (len(fuzzKeys) + 1)
	if i < len(fuzzKeys) {
		return []byte(fuzzKeys[i])
	}
	if b&0x80 != 0 {
		return []byte{}
	}
	return bytes.Repeat([]byte("b"), MaxKeyLen+1)
}

var fuzzNumbers = []uint64{0, 1, 2, 9, 10, 99, 100, 12345, 1 << 32, 1<<63 - 1, 1 << 63,
	1<<64 - 2, 1<<64 - 1, 999, 1000000, 7}

// fuzzOddNumbers are values that memcached's safe_strtoull reads in
// surprising ways (or refuses).
var fuzzOddNumbers = []string{" 12", "12 ", "+7", "-0", "-5", "12a", "1 2", "\t3\r\n",
	"18446744073709551616", "00012", "-18446744073709551615", "5\x00abc", "  ", "+",
	"-9223372036854775809", "12 x"}

var fuzzLengths = []int{0, 1, 2, 5, 10, 20, 40, 77, 100, 150, 200, 250, 300, 400, 500, 600}

// filler is a value that is no number: it starts with a letter.
func filler(n int, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + (seed+i)%26)
	}
	return b
}

// decodeValue: mostly short filler, sometimes numbers and odd numbers.
func decodeValue(v byte, seed int) []byte {
	switch k, i := v%16, int(v/16); {
	case k < 6:
		return filler(fuzzLengths[i], seed)
	case k < 9:
		return []byte(strconv.FormatUint(fuzzNumbers[i], 10))
	case k < 11:
		return []byte(fuzzOddNumbers[i])
	case k == 11:
		return bigValue(v, seed)
	default:
		return filler(i*20+int(k), seed)
	}
}

// bigValue is 30000 to 66000 bytes: around the chunk max (chained or not,
// depending on the key and flags), chained, and too large.
func bigValue(v byte, seed int) []byte { return filler(30000+int(v)*141, seed) }

func decodeFlags(b byte) uint32 {
	if b < 128 {
		return 0
	}
	return []uint32{1, 2, 1 << 31, 1<<32 - 1, 12345, 0xdeadbeef, 7, 100}[b%8]
}

// decodeExptime covers memcached's exptime cases: 0 (never), relative up to
// 30 days, negative (already expired), absolute unix times near now, in the
// past and before the process started.
func decodeExptime(b byte, now int64) int64 {
	x := int64(b / 8)
	switch b % 8 {
	case 0:
		return 0
	case 1:
		return 1 + x
	case 2:
		return x * 60
	case 3:
		return -1 - x
	case 4:
		return now + x - 16
	case 5:
		return MaxDelta + x%2 // the last relative one; the first absolute one (1970)
	case 6:
		return 1
	default:
		return now + x*100
	}
}

var fuzzDeltas = []uint64{0, 1, 2, 5, 10, 100, 1 << 32, 1 << 63, 1<<64 - 1, 1<<64 - 2,
	12345678901234567890, 9, 99, 1000, 7, 3}

// decodeDelay for flush_all: 0, negative (now), relative, absolute near now
// and before the process started.
func decodeDelay(b byte, now int64) int64 {
	x := int64(b / 6)
	switch b % 6 {
	case 0:
		return 0
	case 1:
		return -1
	case 2:
		return 1 + x
	case 3:
		return now + x - 20
	case 4:
		return MaxDelta + 1
	default:
		return 60 * x
	}
}

func decodeAdvance(b byte) int64 {
	x := int64(b / 8)
	switch b % 8 {
	case 0:
		return 1
	case 1:
		return x
	case 2:
		return 59 + x%3
	case 3:
		return 3600
	case 4:
		return MaxDelta
	case 5:
		return 10 * x
	case 6:
		return 0
	default:
		return 86400
	}
}

// fuzzHarness applies decoded operations to both sides and compares.
type fuzzHarness struct {
	t     *testing.T
	s     *Store
	m     *storeModel
	clock *Clock
	obs   *fuzzObserver
	want  []fuzzEvent // what the observer must hear from the current operation
	n     int         // operation number, for messages
}

// fuzzEvent is one call to the Observer.
type fuzzEvent struct {
	kind    string // "stored", "deleted", "flushed"
	key     string
	value   string
	flags   uint32
	cas     uint64
	exptime int64 // stored: the item's; flushed: the flush time
}

// fuzzObserver records what the store reports for replication.
type fuzzObserver struct{ events []fuzzEvent }

func (o *fuzzObserver) Stored(it Item) {
	o.events = append(o.events, fuzzEvent{kind: "stored", key: string(it.Key()),
		value: string(it.AppendValue(nil)), flags: it.Flags, cas: it.CAS, exptime: it.Exptime()})
}

func (o *fuzzObserver) Deleted(key []byte, cas uint64) {
	o.events = append(o.events, fuzzEvent{kind: "deleted", key: string(key), cas: cas})
}

func (o *fuzzObserver) Flushed(at int64, _ uint64) {
	o.events = append(o.events, fuzzEvent{kind: "flushed", exptime: at})
}

// expectStored: the observer must hear key's state in the model.
func (h *fuzzHarness) expectStored(key []byte) {
	it := h.m.items[string(key)]
	h.want = append(h.want, fuzzEvent{kind: "stored", key: string(key), value: string(it.value),
		flags: it.flags, cas: it.cas, exptime: it.exp})
}

// casFor picks a CAS for a conditional operation: the item's own (if the
// model has one), off by one either way, zero, or one never issued.
func (h *fuzzHarness) casFor(key []byte, b byte) uint64 {
	cur := h.m.maxCAS
	if it, ok := h.m.items[string(key)]; ok {
		cur = it.cas
	}
	switch b % 6 {
	case 0:
		return cur
	case 1:
		return cur + 1
	case 2:
		return cur - 1
	case 3:
		return 0
	case 4:
		return 1 << 40
	default:
		return cur
	}
}

func (h *fuzzHarness) step(r *fuzzReader, n int) {
	h.n = n
	h.obs.events, h.want = h.obs.events[:0], h.want[:0]
	defer h.checkEvents()
	op := r.next() % fuzzOps
	switch op {
	case fopSet, fopAdd, fopReplace:
		key, val, fl, exp := decodeKey(r.next()), decodeValue(r.next(), n), decodeFlags(r.next()), decodeExptime(r.next(), h.m.now)
		mode := map[byte]Mode{fopSet: ModeSet, fopAdd: ModeAdd, fopReplace: ModeReplace}[op]
		h.set(key, val, SetOptions{Mode: mode, Flags: fl, Exptime: exp})
	case fopAppend, fopPrepend:
		key, val := decodeKey(r.next()), decodeValue(r.next(), n)
		mode := map[byte]Mode{fopAppend: ModeAppend, fopPrepend: ModePrepend}[op]
		h.set(key, val, SetOptions{Mode: mode})
	case fopCAS:
		key, val, fl, exp := decodeKey(r.next()), decodeValue(r.next(), n), decodeFlags(r.next()), decodeExptime(r.next(), h.m.now)
		h.set(key, val, SetOptions{Mode: ModeCAS, Flags: fl, Exptime: exp, CAS: h.casFor(key, r.next())})
	case fopSetCAS:
		mode := []Mode{ModeSet, ModeReplace, ModeAppend, ModePrepend, ModeAdd}[r.next()%5]
		key, val, fl, exp := decodeKey(r.next()), decodeValue(r.next(), n), decodeFlags(r.next()), decodeExptime(r.next(), h.m.now)
		h.set(key, val, SetOptions{Mode: mode, Flags: fl, Exptime: exp, CAS: h.casFor(key, r.next())})
	case fopSetNumber:
		key, v, exp := decodeKey(r.next()), r.next(), decodeExptime(r.next(), h.m.now)
		val := []byte(strconv.FormatUint(fuzzNumbers[v%16], 10))
		if v >= 128 {
			val = []byte(fuzzOddNumbers[v%16])
		}
		h.set(key, val, SetOptions{Exptime: exp})
	case fopSetBig:
		key, v := decodeKey(r.next()), r.next()
		h.set(key, bigValue(v, n), SetOptions{})
	case fopGet:
		key, v := decodeKey(r.next()), r.next()
		h.get(key, GetOptions{Peek: v%4 == 1, NoBump: v%4 == 2})
	case fopTouch:
		key, exp := decodeKey(r.next()), decodeExptime(r.next(), h.m.now)
		_, want := h.m.get(key, GetOptions{Touch: true, Exptime: exp})
		h.checkErr("touch", key, want, h.s.Touch(key, exp))
		if want == nil {
			h.expectStored(key)
		}
	case fopGAT:
		key, exp := decodeKey(r.next()), decodeExptime(r.next(), h.m.now)
		h.get(key, GetOptions{Touch: true, Exptime: exp})
	case fopDelete:
		key := decodeKey(r.next())
		var cas uint64
		if c := r.next(); c >= 128 {
			cas = h.casFor(key, c)
		}
		old := h.m.items[string(key)]
		want := h.m.delete(key, cas)
		h.checkErr("delete", key, want, h.s.Delete(key, DeleteOptions{CAS: cas}))
		if want == nil {
			// The deletion's version is a new CAS, above the item's.
			cas := old.cas
			if ev := h.obs.events; len(ev) == 1 && ev[0].kind == "deleted" && (ev[0].cas > old.cas || !h.m.useCAS) {
				cas = ev[0].cas
				if h.m.useCAS {
					h.newCAS(cas)
				}
			}
			h.want = append(h.want, fuzzEvent{kind: "deleted", key: string(key), cas: cas})
		}
	case fopIncr, fopDecr:
		key, d := decodeKey(r.next()), fuzzDeltas[r.next()%16]
		var cas uint64
		if c := r.next(); c >= 128 {
			cas = h.casFor(key, c)
		}
		h.arith(key, ArithOptions{Decr: op == fopDecr, Delta: d, CAS: cas})
	case fopFlush:
		delay := decodeDelay(r.next(), h.m.now)
		at := h.m.flush(delay)
		h.s.FlushAll(delay)
		h.want = append(h.want, fuzzEvent{kind: "flushed", exptime: at})
	case fopAdvance:
		d := decodeAdvance(r.next())
		h.clock.Advance(d)
		h.m.now += d
	case fopCrawl:
		want := h.m.crawl()
		got := h.s.Crawl()
		require.Equal(h.t, want, got, "op %d: Crawl freed %d items, the model has %d dead", h.n, got, want)
	}
}

func (h *fuzzHarness) checkErr(what string, key []byte, want, got error) {
	h.t.Helper()
	if !errors.Is(got, want) && !(want == nil && got == nil) {
		h.t.Fatalf("op %d: %s %.40q: error %v, model says %v", h.n, what, key, got, want)
	}
}

func (h *fuzzHarness) set(key, val []byte, o SetOptions) {
	h.t.Helper()
	want, wantErr := h.m.set(key, val, o)
	cas, err := h.s.Set(key, val, o)
	h.checkErr(fmt.Sprintf("set mode %d cas %d", o.Mode, o.CAS), key, wantErr, err)
	if err != nil {
		require.Zero(h.t, cas, "op %d: a failed set returns CAS 0", h.n)
		return
	}
	h.newCAS(cas)
	want.cas = cas
	h.m.items[string(key)] = want
	h.expectStored(key)
}

// newCAS checks a CAS the store handed out: above every earlier one (the
// model relies on that to tell items stored before a flush_all from those
// after), or 0 with CAS off.
func (h *fuzzHarness) newCAS(cas uint64) {
	h.t.Helper()
	if !h.m.useCAS {
		require.Zero(h.t, cas, "op %d: CAS with CAS off", h.n)
		return
	}
	if cas <= h.m.maxCAS {
		h.t.Fatalf("op %d: CAS %d is not above the earlier %d", h.n, cas, h.m.maxCAS)
	}
	h.m.maxCAS = cas
}

// fuzzGot is what the store's Get callback saw.
type fuzzGot struct {
	value, key         []byte
	spans              []byte
	length             int
	flags              uint32
	cas                uint64
	ttl, prevTTL, last int64
	exptime            int64
	fetched, stale     bool
	tokenSent, won     bool
	created            bool
}

func (h *fuzzHarness) get(key []byte, o GetOptions) {
	h.t.Helper()
	want, wantErr := h.m.get(key, o)
	var got fuzzGot
	called := false
	err := h.s.Get(key, o, func(it Item) {
		called = true
		got = fuzzGot{
			value: it.AppendValue(nil), key: bytes.Clone(it.Key()), length: it.Len(),
			flags: it.Flags, cas: it.CAS, ttl: it.TTL, prevTTL: it.PrevTTL, last: it.LastAccess,
			exptime: it.Exptime(), fetched: it.Fetched, stale: it.Stale, tokenSent: it.TokenSent,
			won: it.Won, created: it.Created,
		}
		it.ValueSpans(func(b []byte) { got.spans = append(got.spans, b...) })
	})
	what := fmt.Sprintf("get %+v", o)
	h.checkErr(what, key, wantErr, err)
	if err != nil {
		require.False(h.t, called, "op %d: %s: callback called on error", h.n, what)
		return
	}
	if o.Touch {
		h.expectStored(key)
	}
	require.True(h.t, called)
	w := want
	t := h.t
	if !bytes.Equal(got.value, w.value) {
		t.Fatalf("op %d: %s %.40q: value %.60q (%d bytes), model %.60q (%d bytes)",
			h.n, what, key, got.value, len(got.value), w.value, len(w.value))
	}
	require.Equal(t, got.value, got.spans, "op %d: ValueSpans differs from AppendValue", h.n)
	require.Equal(t, key, got.key, "op %d: Key", h.n)
	require.Equal(t, len(w.value), got.length, "op %d: Len", h.n)
	require.Equal(t, w.flags, got.flags, "op %d: %s %.40q: flags", h.n, what, key)
	require.Equal(t, w.cas, got.cas, "op %d: %s %.40q: CAS", h.n, what, key)
	require.Equal(t, w.ttl, got.ttl, "op %d: %s %.40q: TTL", h.n, what, key)
	require.Equal(t, w.prevTTL, got.prevTTL, "op %d: %s %.40q: PrevTTL", h.n, what, key)
	require.Equal(t, w.exptime, got.exptime, "op %d: %s %.40q: Exptime", h.n, what, key)
	require.Equal(t, w.fetched, got.fetched, "op %d: %s %.40q: Fetched", h.n, what, key)
	require.Equal(t, w.last, got.last, "op %d: %s %.40q: LastAccess", h.n, what, key)
	require.False(t, got.stale || got.tokenSent || got.won || got.created,
		"op %d: %s %.40q: meta state %+v on a plain item", h.n, what, key, got)
}

func (h *fuzzHarness) arith(key []byte, o ArithOptions) {
	h.t.Helper()
	want := h.m.arith(key, o)
	res, err := h.s.Arith(key, o)
	what := fmt.Sprintf("arith %+v", o)
	if want.maybeChained && errors.Is(err, ErrNonNumeric) {
		// Near the chunk max, whether the item is chained (and so not a
		// number, as memcached's chunked items) depends on the header size.
		return
	}
	h.checkErr(what, key, want.err, err)
	if err != nil {
		return
	}
	require.Equal(h.t, want.value, res.Value, "op %d: %s %.40q: value", h.n, what, key)
	require.Equal(h.t, want.ttl, res.TTL, "op %d: %s %.40q: TTL", h.n, what, key)
	require.False(h.t, res.Created)
	h.newCAS(res.CAS)
	want.item.cas = res.CAS
	h.m.items[string(key)] = want.item
	h.expectStored(key)
}

// checkEvents: the observer heard exactly the changes of the operation,
// and nothing of lazy expiry, flushing or crawling.
func (h *fuzzHarness) checkEvents() {
	if h.t.Failed() {
		return // already reported; the operation stopped half way
	}
	if len(h.obs.events) == len(h.want) {
		for i := range h.want {
			if h.obs.events[i] != h.want[i] {
				goto differ
			}
		}
		return
	}
differ:
	h.t.Fatalf("op %d: observer heard %v, want %v", h.n, h.obs.events, h.want)
}

func (e fuzzEvent) String() string {
	return fmt.Sprintf("%s(%.40q %.40q flags %d cas %d exptime %d)", e.kind, e.key, e.value, e.flags, e.cas, e.exptime)
}

// checkCounts: the store holds exactly the model's items, the dead ones
// nobody has looked at included, and has evicted nothing.
func (h *fuzzHarness) checkCounts() {
	st := h.s.Stats()
	require.Zero(h.t, st.Evictions, "the store evicted: the model cannot follow, raise fuzzLimit")
	require.Equal(h.t, uint64(len(h.m.items)), st.CurrItems, "op %d: CurrItems", h.n)
}

// sweep reads every key at the end, without changing anything.
func (h *fuzzHarness) sweep() {
	h.checkCounts()
	for _, k := range fuzzKeys {
		h.get([]byte(k), GetOptions{Peek: true})
	}
	h.checkCounts()
}

// storeModel is memcached's item semantics over a Go map, in unix seconds.
type storeModel struct {
	items   map[string]*modelItem
	now     int64
	started int64 // memcached's process_started: items expire at started+1 at the earliest
	useCAS  bool
	maxCAS  uint64 // the highest CAS the store has handed out

	// flush_all: items last stored (or bumped) at or before flushLive are
	// invalid once now reaches it; with CAS, so are those with a CAS below
	// flushCAS (stored before an immediate flush, in the same second).
	flushOn   bool
	flushLive int64
	flushCAS  uint64
}

type modelItem struct {
	value   []byte
	flags   uint32
	exp     int64 // unix second it is dead from, 0 never
	cas     uint64
	time    int64 // last store or LRU bump (memcached's it->time)
	fetched bool
}

func newStoreModel(now int64, useCAS bool) *storeModel {
	// memcached starts its clock ITEM_UPDATE_INTERVAL+2 seconds in the past,
	// so that relative time 0 never occurs and fresh items are bumpable.
	return &storeModel{items: map[string]*modelItem{}, now: now, started: now - 62, useCAS: useCAS}
}

func validKey(key []byte) bool { return len(key) > 0 && len(key) <= MaxKeyLen }

// realtime is memcached's realtime(), in unix seconds.
func (m *storeModel) realtime(exptime int64) int64 {
	switch {
	case exptime == 0:
		return 0
	case exptime < 0:
		return m.started + 1
	case exptime > MaxDelta:
		if exptime <= m.started {
			return m.started + 1
		}
		return exptime
	default:
		return m.now + exptime
	}
}

func (m *storeModel) ttl(exp int64) int64 {
	if exp == 0 {
		return -1
	}
	return exp - m.now
}

func (m *storeModel) flushed(it *modelItem) bool {
	if !m.flushOn || m.flushLive > m.now {
		return false
	}
	return it.time <= m.flushLive || (m.useCAS && m.flushCAS != 0 && it.cas < m.flushCAS)
}

func (m *storeModel) dead(it *modelItem) bool {
	return m.flushed(it) || it.exp != 0 && it.exp <= m.now
}

// lookup finds a live item; a dead one is removed, as memcached does on
// access.
func (m *storeModel) lookup(key []byte) *modelItem {
	it, ok := m.items[string(key)]
	if !ok {
		return nil
	}
	if m.dead(it) {
		delete(m.items, string(key))
		return nil
	}
	return it
}

// tooLarge is memcached's item size check: its 48-byte header, key and NUL,
// the value with CRLF, the flags if not zero and the CAS.
func (m *storeModel) tooLarge(klen int, flags uint32, vlen int) bool {
	n := 48 + klen + 1 + vlen + 2
	if flags != 0 {
		n += 4
	}
	if m.useCAS {
		n += 8
	}
	return n > fuzzItemMax
}

// bump is memcached's do_item_update: a store refreshes the item's time at
// most once per ITEM_UPDATE_INTERVAL.
func (m *storeModel) bump(it *modelItem) {
	if m.now-it.time >= bumpInterval {
		it.time = m.now
	}
}

// set returns the item a successful Set must leave (its CAS comes from the
// store) or the error it must return.
func (m *storeModel) set(key, val []byte, o SetOptions) (*modelItem, error) {
	if !validKey(key) {
		return nil, ErrBadKey
	}
	appendLike := o.Mode == ModeAppend || o.Mode == ModePrepend
	if !appendLike && m.tooLarge(len(key), o.Flags, len(val)) {
		return nil, ErrTooLarge
	}
	old := m.lookup(key)
	flags, exp := o.Flags, m.realtime(o.Exptime)
	value := bytes.Clone(val)
	// Meta set with C makes set and replace a cas; add ignores it
	// (memcached's process_mset_command).
	compare := o.Mode == ModeCAS || o.CAS != 0 && (o.Mode == ModeSet || o.Mode == ModeReplace)
	switch o.Mode {
	case ModeAdd:
		if old != nil {
			// memcached promotes the item a failed add found
			// (do_item_update): its time, not its fetched state.
			m.bump(old)
			return nil, ErrNotStored
		}
	case ModeReplace:
		if old == nil && !compare {
			return nil, ErrNotStored
		}
	case ModeAppend, ModePrepend:
		if old == nil {
			return nil, ErrNotStored
		}
		if o.CAS != 0 && o.CAS != old.cas && m.useCAS {
			return nil, ErrExists
		}
		flags, exp = old.flags, old.exp
		// memcached cannot allocate the combined item: NOT_STORED.
		if m.tooLarge(len(key), flags, len(old.value)+len(val)) {
			return nil, ErrNotStored
		}
		if o.Mode == ModeAppend {
			value = append(bytes.Clone(old.value), val...)
		} else {
			value = append(value, old.value...)
		}
	}
	if compare {
		switch {
		case old == nil:
			return nil, ErrNotFound
		case !m.useCAS:
			// With CAS off (-C) items have none: memcached 1.6 answers EXISTS
			// to every compare (CAS_NONE), cas 0 included.
			return nil, ErrExists
		case m.useCAS && old.cas != o.CAS:
			return nil, ErrExists
		}
	}
	return &modelItem{value: value, flags: flags, exp: exp, time: m.now}, nil
}

// get returns what Get must pass its callback, and applies the request's
// effects: the touch, the fetched mark, the LRU bump.
func (m *storeModel) get(key []byte, o GetOptions) (fuzzGot, error) {
	if !validKey(key) {
		return fuzzGot{}, ErrBadKey
	}
	it := m.lookup(key)
	if it == nil {
		return fuzzGot{}, ErrNotFound
	}
	g := fuzzGot{
		value: bytes.Clone(it.value), flags: it.flags, cas: it.cas,
		ttl: m.ttl(it.exp), prevTTL: m.ttl(it.exp), last: m.now - it.time,
		exptime: it.exp, fetched: it.fetched,
	}
	if o.Peek {
		return g, nil
	}
	if o.Touch {
		it.exp = m.realtime(o.Exptime)
		g.ttl = m.ttl(it.exp)
		g.exptime = it.exp
	}
	if !o.NoBump {
		it.fetched = true
		m.bump(it)
	}
	return g, nil
}

func (m *storeModel) delete(key []byte, cas uint64) error {
	if !validKey(key) {
		return ErrBadKey
	}
	it := m.lookup(key)
	switch {
	case it == nil:
		return ErrNotFound
	case cas != 0 && cas != it.cas:
		return ErrExists
	}
	delete(m.items, string(key))
	return nil
}

type arithResult struct {
	err          error
	value        uint64
	ttl          int64
	item         *modelItem // the item after it, without its new CAS
	maybeChained bool       // a refusal as non-numeric is also right
}

// arith is memcached's do_add_delta.
func (m *storeModel) arith(key []byte, o ArithOptions) arithResult {
	if !validKey(key) {
		return arithResult{err: ErrBadKey}
	}
	it := m.lookup(key)
	if it == nil {
		return arithResult{err: ErrNotFound}
	}
	// Empty values and chunked (chained) items are not numbers. An item is
	// chained when it passes the largest chunk: surely so when the value
	// alone does, surely not when value, key and any header fit.
	vlen := len(it.value)
	if vlen == 0 || vlen > fuzzChunkMax {
		return arithResult{err: ErrNonNumeric}
	}
	maybeChained := vlen+MaxKeyLen+64 > fuzzChunkMax
	if o.CAS != 0 && o.CAS != it.cas {
		return arithResult{err: ErrExists, maybeChained: maybeChained}
	}
	n, ok := strtoull(it.value)
	if !ok {
		return arithResult{err: ErrNonNumeric}
	}
	if o.Decr {
		n -= min(n, o.Delta)
	} else {
		n += o.Delta // wraps at 2^64
	}
	digits := strconv.FormatUint(n, 10)
	res := arithResult{value: n, ttl: m.ttl(it.exp), maybeChained: maybeChained}
	if len(digits) <= vlen {
		// In place, padded with spaces to the old length; memcached then
		// calls do_item_update.
		next := *it
		next.value = []byte(digits + strings.Repeat(" ", vlen-len(digits)))
		m.bump(&next)
		res.item = &next
	} else {
		res.item = &modelItem{value: []byte(digits), flags: it.flags, exp: it.exp, time: m.now}
	}
	return res
}

// strtoull is memcached's safe_strtoull over a value followed by its CRLF:
// strtoull skips white space and a sign, reads decimal digits (ERANGE past
// 2^64-1) and stops at the first other byte, which must be white space or
// the string's end, and a NUL ends a C string. A '-' is refused only when
// the result, read as signed, is negative.
func strtoull(v []byte) (uint64, bool) {
	s := append(bytes.Clone(v), '\r', '\n')
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' }
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	start := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == start {
		return 0, false // no conversion: endptr == str
	}
	n, err := strconv.ParseUint(string(s[start:i]), 10, 64)
	if err != nil {
		return 0, false // ERANGE
	}
	if neg {
		n = -n
	}
	if i < len(s) && !isSpace(s[i]) {
		return 0, false
	}
	if neg && int64(n) < 0 {
		return 0, false
	}
	return n, true
}

// flush is memcached's flush_all: with CAS, oldest_live is one second
// before the flush time and, if that is not in the future, every item
// stored so far is invalid by its CAS. It returns the flush time.
func (m *storeModel) flush(delay int64) int64 {
	oldest := m.now
	if delay > 0 {
		oldest = m.realtime(delay)
	}
	if m.useCAS {
		m.flushLive = oldest - 1
		if m.flushLive <= m.now {
			m.flushCAS = m.maxCAS + 1
		}
	} else {
		m.flushLive = oldest
	}
	// memcached's relative oldest_live 0 means no flush at all.
	m.flushOn = m.flushLive != m.started
	return oldest
}

// crawl frees every dead item, as the LRU crawler does, and counts them.
func (m *storeModel) crawl() int {
	n := 0
	for k, it := range m.items {
		if m.dead(it) {
			delete(m.items, k)
			n++
		}
	}
	return n
}
