package server

import (
	"bytes"
	"encoding/binary"
	"io"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/protocol"
	"github.com/tandemcache/tandem/store"
)

// binTestConn is a connection without a socket: requests go straight to
// conn.process and the replies collect in c.out.
func binTestConn(t testing.TB, st *store.Store) *conn {
	t.Helper()
	if st == nil {
		var err error
		st, err = store.New(store.Config{MemoryLimit: 64 << 20})
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
	}
	// ReqsPerEvent so high that process never yields (and so never
	// flushes to the missing socket); outputs stay below flushAt.
	s := &Server{cfg: Config{ReqsPerEvent: 1 << 30}, store: st, start: time.Now(), conns: map[*conn]struct{}{}}
	c := &conn{s: s, out: make([]byte, 0, 64<<10), fd: -1}
	c.hit = c.appendHit
	c.metaHit = c.appendMetaHit
	return c
}

func binPkt(op byte, key string, ext []byte, val string, cas uint64) []byte {
	var h [protocol.BinaryHeaderLen]byte
	h[0], h[1] = protocol.BinaryRequestMagic, op
	binary.BigEndian.PutUint16(h[2:], uint16(len(key)))
	h[4] = byte(len(ext))
	binary.BigEndian.PutUint32(h[8:], uint32(len(ext)+len(key)+len(val)))
	binary.BigEndian.PutUint32(h[12:], uint32(op)+1)
	binary.BigEndian.PutUint64(h[16:], cas)
	b := append(h[:], ext...)
	b = append(b, key...)
	return append(b, val...)
}

var binFlags = []byte{0, 0, 0, 9, 0, 0, 0, 0}

// binRunChunked feeds buf to c as serve does, chunk bytes at a time (all at once
// when chunk is 0), and returns the replies.
func binRunChunked(c *conn, buf []byte, chunk int) []byte {
	var pending []byte
	for len(buf) > 0 || len(pending) > 0 {
		if chunk == 0 || chunk > len(buf) {
			pending, buf = append(pending, buf...), nil
		} else {
			pending, buf = append(pending, buf[:chunk]...), buf[chunk:]
		}
		for len(pending) > 0 && !c.closing {
			used, want := c.process(pending)
			pending = pending[used:]
			if want > 0 || used == 0 {
				break
			}
		}
		if c.closing || len(buf) == 0 {
			break
		}
	}
	out := append([]byte{}, c.out...)
	c.out = c.out[:0]
	return out
}

// TestBinarySplitDelivery: a request sequence answers the same whether it
// arrives in one piece or byte by byte, including a refused value dropped
// as it arrives.
func TestBinarySplitDelivery(t *testing.T) {
	big := string(bytes.Repeat([]byte("x"), 1<<20))
	var seq []byte
	seq = append(seq, binPkt(protocol.OpSet, "k", binFlags, "value", 0)...)
	seq = append(seq, binPkt(protocol.OpGetK, "k", nil, "", 0)...)
	seq = append(seq, binPkt(protocol.OpSetQ, "big", binFlags, big, 0)...)
	seq = append(seq, binPkt(protocol.OpAppendQ, "k", nil, "+", 0)...)
	seq = append(seq, binPkt(protocol.OpGetQ, "k", nil, "", 0)...)
	seq = append(seq, binPkt(protocol.OpGetQ, "miss", nil, "", 0)...)
	seq = append(seq, binPkt(protocol.OpIncrement, "n", make([]byte, 20), "", 0)...)
	seq = append(seq, binPkt(0x45, "", nil, "xyz", 0)...)
	seq = append(seq, binPkt(protocol.OpNoop, "", nil, "", 0)...)
	want := binRunChunked(binTestConn(t, nil), seq, 0)
	require.NotEmpty(t, want)
	for _, chunk := range []int{1, 7, 4096} {
		t.Run(strconv.Itoa(chunk), func(t *testing.T) {
			got := binRunChunked(binTestConn(t, nil), seq, chunk)
			require.Equal(t, want, got)
		})
	}
	// The replies: set, getk, E2BIG for the quiet set, the quiet get's hit,
	// incr, unknown command, noop.
	var ops []byte
	var statuses []uint16
	for b := want; len(b) >= 24; b = b[24+binary.BigEndian.Uint32(b[8:]):] {
		ops = append(ops, b[1])
		statuses = append(statuses, binary.BigEndian.Uint16(b[6:]))
	}
	require.Equal(t, []byte{protocol.OpSet, protocol.OpGetK, protocol.OpSetQ, protocol.OpGetQ, protocol.OpIncrement, 0x45, protocol.OpNoop}, ops)
	require.Equal(t, []uint16{0, 0, protocol.StatusTooLarge, 0, 0, protocol.StatusUnknownCommand, 0}, statuses)
}

// TestBinaryMalformed: framing errors close the connection, never panic.
func TestBinaryMalformed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		req    []byte
		status int // -1: no reply
	}{
		// A valid NOOP, then a header whose magic is 0x00.
		{"bad magic", append(binPkt(protocol.OpNoop, "", nil, "", 0), make([]byte, 24)...), -1},
		{"key over 250", binPkt(protocol.OpGet, string(make([]byte, 251)), nil, "", 0), protocol.StatusInvalid},
		{"get with value", binPkt(protocol.OpGet, "k", nil, "v", 0), protocol.StatusInvalid},
		{"set without extras", binPkt(protocol.OpSet, "k", nil, "v", 0), protocol.StatusInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := binTestConn(t, nil)
			out := binRunChunked(c, tc.req, 0)
			require.True(t, c.closing)
			if tc.status == -1 {
				require.Len(t, out, 24) // the NOOP's reply only
				return
			}
			require.GreaterOrEqual(t, len(out), 24)
			require.Equal(t, uint16(tc.status), binary.BigEndian.Uint16(out[6:]))
		})
	}
}

// TestBinaryServerNoAlloc: the server path of a binary GET hit, a SET, a quiet
// GET miss and an INCR allocates nothing.
func TestBinaryServerNoAlloc(t *testing.T) {
	c := binTestConn(t, nil)
	set := binPkt(protocol.OpSet, "key", binFlags, "some value of a few bytes", 0)
	get := binPkt(protocol.OpGet, "key", nil, "", 0)
	getkq := binPkt(protocol.OpGetKQ, "missing", nil, "", 0)
	incr := binPkt(protocol.OpIncrement, "counter", make([]byte, 20), "", 0)
	binRunChunked(c, set, 0)
	for _, tc := range []struct {
		name string
		req  []byte
	}{{"set", set}, {"get hit", get}, {"getkq miss", getkq}, {"incr", incr},
		// A pipelined batch goes through the prefetch of its keys first.
		{"pipelined batch", slices.Concat(set, get, getkq, incr, get, get)}} {
		allocs := testing.AllocsPerRun(200, func() {
			used, want := c.process(tc.req)
			if used != len(tc.req) || want != 0 {
				t.Fatalf("%s: used %d want %d", tc.name, used, want)
			}
			c.out = c.out[:0]
		})
		require.Zero(t, allocs, tc.name)
	}
}

func benchBinary(b *testing.B, req []byte, prep []byte) {
	c := binTestConn(b, nil)
	binRunChunked(c, prep, 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		c.process(req)
		c.out = c.out[:0]
	}
}

func BenchmarkBinaryGetHit(b *testing.B) {
	benchBinary(b, binPkt(protocol.OpGet, "key", nil, "", 0), binPkt(protocol.OpSet, "key", binFlags, "some value of a few bytes", 0))
}

func BenchmarkBinarySet(b *testing.B) {
	benchBinary(b, binPkt(protocol.OpSet, "key", binFlags, "some value of a few bytes", 0), nil)
}

// BenchmarkTextGetHit is the baseline: the same get in the text protocol.
func BenchmarkTextGetHit(b *testing.B) {
	c := binTestConn(b, nil)
	c.process([]byte("set key 9 0 25\r\nsome value of a few bytes\r\n"))
	c.out = c.out[:0]
	req := []byte("get key\r\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(req)))
	for b.Loop() {
		c.process(req)
		c.out = c.out[:0]
	}
}

// BenchmarkBinaryGetHitParallel: one connection per goroutine, one store.
func BenchmarkBinaryGetHitParallel(b *testing.B) {
	st, err := store.New(store.Config{MemoryLimit: 64 << 20})
	require.NoError(b, err)
	defer st.Close()
	binRunChunked(binTestConn(b, st), binPkt(protocol.OpSet, "key", binFlags, "some value of a few bytes", 0), 0)
	req := binPkt(protocol.OpGet, "key", nil, "", 0)
	b.ReportAllocs()
	b.SetBytes(int64(len(req)))
	b.RunParallel(func(pb *testing.PB) {
		c := binTestConn(b, st)
		for pb.Next() {
			c.process(req)
			c.out = c.out[:0]
		}
	})
}

// FuzzBinaryServer feeds any bytes to a binary connection, whole and in
// small pieces: the server must never panic, consume more than it was given
// or ask for less than it has.
func FuzzBinaryServer(f *testing.F) {
	f.Add(binPkt(protocol.OpSet, "k", binFlags, "v", 0), uint8(0))
	f.Add(append(binPkt(protocol.OpGetKQ, "k", nil, "", 0), binPkt(protocol.OpNoop, "", nil, "", 0)...), uint8(3))
	f.Add(binPkt(protocol.OpIncrement, "n", make([]byte, 20), "", 1), uint8(1))
	f.Add(binPkt(protocol.OpStat, "settings", nil, "", 0), uint8(0))
	f.Add(binPkt(0x45, "abc", nil, "xyz", 0), uint8(2))
	f.Add(binPkt(protocol.OpAppend, "k", nil, "tail", 5), uint8(0))
	f.Add(binPkt(protocol.OpGAT, "k", []byte{0, 0, 0, 1}, "", 0), uint8(0))
	// chunk's top bit turns on -vv: every request is logged (logBinary).
	f.Add(append(binPkt(protocol.OpIncrement, "n", make([]byte, 20), "", 1), binPkt(protocol.OpGetK, "zz", nil, "", 0)...), uint8(0x80))
	f.Add(append(binPkt(protocol.OpSet, "k", binFlags, "v", 0), binPkt(0x45, "abc", nil, "xyz", 0)...), uint8(0x83))
	st, err := store.New(store.Config{MemoryLimit: 8 << 20, ItemSizeMax: 4 << 10})
	require.NoError(f, err)
	defer st.Close()
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		if len(data) == 0 {
			return
		}
		data[0] = protocol.BinaryRequestMagic // a binary connection
		c := binTestConn(t, st)
		c.s.cfg.Settings = [][2]string{{"maxconns", "1024"}}
		if chunk&0x80 != 0 {
			c.s.cfg.Log = io.Discard
			c.s.verbosity.Store(2)
		}
		feedChunks(t, c, data, int(chunk&0x7f))
	})
}

// feedChunks hands data to c.process as a socket would, chunk bytes at a
// time (all at once for 0), keeping what it leaves for the next call, and
// fails if process consumes more than it was given or asks for less than
// it has.
func feedChunks(t *testing.T, c *conn, data []byte, chunk int) {
	t.Helper()
	var pending []byte
	rest := data
	for (len(rest) > 0 || len(pending) > 0) && !c.closing {
		n := len(rest)
		if chunk > 0 {
			n = min(n, chunk)
		}
		pending, rest = append(pending, rest[:n]...), rest[n:]
		used, want := c.process(pending)
		if used > len(pending) || want < 0 || (want > 0 && want <= len(pending)-used) {
			t.Fatalf("process(%d bytes) = %d, %d", len(pending), used, want)
		}
		pending = pending[used:]
		c.out = c.out[:0]
		if n == 0 {
			break // all given: a partial request stays partial
		}
	}
}
