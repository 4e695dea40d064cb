package server

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/store"
)

// The text request path, measured without a network: conn.process over a
// buffer holding whole requests, as serve hands it over, with the replies
// left in c.out (which each iteration empties). The socket write is not
// part of it.

// valueLen is the size of the values read and written: a typical small
// cached object.
const valueLen = 100

// newSocketlessConn makes a connection with no socket over st (a new 64 MiB
// store when nil). ReqsPerEvent is so high that process never yields, and
// replies stay below flushAt, so nothing is ever flushed to the missing
// socket.
func newSocketlessConn(tb testing.TB, st *store.Store) *conn {
	tb.Helper()
	if st == nil {
		var err error
		st, err = store.New(store.Config{MemoryLimit: 64 << 20})
		require.NoError(tb, err)
		tb.Cleanup(func() { st.Close() })
	}
	s := &Server{cfg: Config{ReqsPerEvent: 1 << 30}, store: st, start: time.Now(), conns: map[*conn]struct{}{}}
	return newConn(s, nil)
}

// requestPath is one benchmarked request buffer and the reply it must get.
type requestPath struct {
	name  string
	req   []byte
	reply []byte
	bytes int // value bytes moved, for SetBytes
}

func requestPaths() []requestPath {
	val := bytes.Repeat([]byte("v"), valueLen)
	var set, get, multi, multiReply, mg, sets, setsReply, mget bytes.Buffer
	fmt.Fprintf(&set, "set bench:set 7 0 %d\r\n%s\r\n", valueLen, val)
	for i := range 16 {
		fmt.Fprintf(&sets, "set bench:set%d 7 0 %d\r\n%s\r\n", i, valueLen, val)
		setsReply.WriteString("STORED\r\n")
	}
	fmt.Fprintf(&get, "get bench:0\r\n")
	mget.WriteString("get")
	for i := range 16 {
		fmt.Fprintf(&mget, " bench:%d", i)
	}
	mget.WriteString("\r\n")
	for i := range 16 {
		fmt.Fprintf(&multi, "get bench:%d\r\n", i)
		fmt.Fprintf(&multiReply, "VALUE bench:%d 7 %d\r\n%s\r\nEND\r\n", i, valueLen, val)
	}
	fmt.Fprintf(&mg, "mg bench:0 v f t k\r\n")
	return []requestPath{
		{"get hit", get.Bytes(), fmt.Appendf(nil, "VALUE bench:0 7 %d\r\n%s\r\nEND\r\n", valueLen, val), valueLen},
		{"set", set.Bytes(), []byte("STORED\r\n"), valueLen},
		{"16 pipelined gets", multi.Bytes(), multiReply.Bytes(), 16 * valueLen},
		{"16 pipelined sets", sets.Bytes(), setsReply.Bytes(), 16 * valueLen},
		{"get of 16 keys", mget.Bytes(), append(bytes.ReplaceAll(multiReply.Bytes(), []byte("END\r\n"), nil), "END\r\n"...), 16 * valueLen},
		{"mg hit", mg.Bytes(), fmt.Appendf(nil, "VA %d f7 t-1 kbench:0\r\n%s\r\n", valueLen, val), valueLen},
	}
}

// loadBench stores the keys the request paths read.
func loadBench(tb testing.TB, c *conn) {
	tb.Helper()
	val := bytes.Repeat([]byte("v"), valueLen)
	for i := range 16 {
		_, err := c.s.store.Set(fmt.Appendf(nil, "bench:%d", i), val, store.SetOptions{Flags: 7})
		require.NoError(tb, err)
	}
}

// runOnce processes req whole and checks that it was consumed.
func runOnce(c *conn, req []byte) error {
	c.out = c.out[:0]
	used, need := c.process(req)
	if used != len(req) || need != 0 || c.closing {
		return fmt.Errorf("process used %d of %d bytes, needs %d, closing %v", used, len(req), need, c.closing)
	}
	return nil
}

// TestRequestPathAllocs: a get hit, a set, 16 pipelined gets and a meta get
// allocate nothing once the connection's buffers have grown.
func TestRequestPathAllocs(t *testing.T) {
	c := newSocketlessConn(t, nil)
	loadBench(t, c)
	for _, p := range requestPaths() {
		t.Run(p.name, func(t *testing.T) {
			require.NoError(t, runOnce(c, p.req))
			require.Equal(t, string(p.reply), string(c.out))
			var err error
			allocs := testing.AllocsPerRun(1000, func() { err = runOnce(c, p.req) })
			require.NoError(t, err)
			require.Zero(t, allocs)
		})
	}
}

func BenchmarkProcess(b *testing.B) {
	for _, p := range requestPaths() {
		b.Run(p.name, func(b *testing.B) {
			c := newSocketlessConn(b, nil)
			loadBench(b, c)
			require.NoError(b, runOnce(c, p.req))
			require.Equal(b, string(p.reply), string(c.out))
			b.ReportAllocs()
			b.SetBytes(int64(p.bytes))
			for b.Loop() {
				if err := runOnce(c, p.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkProcessParallel: one connection per goroutine over one store,
// as the event loops run them.
func BenchmarkProcessParallel(b *testing.B) {
	for _, p := range requestPaths() {
		b.Run(p.name, func(b *testing.B) {
			first := newSocketlessConn(b, nil)
			loadBench(b, first)
			b.ReportAllocs()
			b.SetBytes(int64(p.bytes))
			b.RunParallel(func(pb *testing.PB) {
				c := newSocketlessConn(b, first.s.store)
				for pb.Next() {
					if err := runOnce(c, p.req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkProcessBaseline is the floor for scale: copying the reply bytes
// of a get hit into the output buffer, with no parsing and no store.
func BenchmarkProcessBaseline(b *testing.B) {
	p := requestPaths()[0]
	out := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.SetBytes(int64(p.bytes))
	for b.Loop() {
		out = append(out[:0], p.reply...)
	}
	_ = out
}
