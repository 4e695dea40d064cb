package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/server"
	"github.com/tandemcache/tandem/store"
)

// End-to-end tests of the server in this process: a real store, a real
// listener on 127.0.0.1, and clients over TCP.

// ioTimeout bounds every read and write of a test client, so that a server
// that stops answering fails the test instead of hanging it.
const ioTimeout = 10 * time.Second

// lockedBuffer is the server's log: the handler recovers panics and logs
// them, so a test checks that nothing was logged.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServer runs a server over a new 64 MiB store until the test ends and
// returns its address.
func startServer(t *testing.T, cfg server.Config) (string, *lockedBuffer) {
	t.Helper()
	// The store is not closed: Close unmaps its memory, and a handler may
	// still be finishing a request after Shutdown returns.
	st, err := store.New(store.Config{MemoryLimit: 64 << 20})
	require.NoError(t, err)
	return serveStore(t, cfg, st)
}

// serveStore starts a server over st with cfg; it is shut down when the
// test ends.
func serveStore(t *testing.T, cfg server.Config, st *store.Store) (string, *lockedBuffer) {
	t.Helper()
	log := &lockedBuffer{}
	cfg.Listen = []string{"127.0.0.1:0"}
	cfg.Log = log
	srv, err := server.New(cfg, st)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, srv.Shutdown(ctx))
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Shutdown")
		}
		require.NotContains(t, log.String(), "panic")
	})
	return srv.Addrs()[0].String(), log
}

// client is a test connection with a buffered reader.
type client struct {
	net.Conn
	r *bufio.Reader
}

func dial(addr string) (*client, error) {
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	return &client{Conn: nc, r: bufio.NewReaderSize(nc, 64<<10)}, nil
}

func mustDial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := dial(addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// send writes b under the I/O timeout.
func (c *client) send(b []byte) error {
	_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := c.Write(b)
	return err
}

// expect reads exactly len(want) bytes and compares them.
func (c *client) expect(want []byte) error {
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c.r, got); err != nil {
		return fmt.Errorf("reading %d bytes (%.40q...): %w", len(want), want, err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		lo := max(0, i-40)
		return fmt.Errorf("reply differs at byte %d of %d:\n got %q\nwant %q", i, len(want),
			got[lo:min(len(got), i+40)], want[lo:min(len(want), i+40)])
	}
	return nil
}

// roundTrip sends req and expects exactly want.
func (c *client) roundTrip(req, want string) error {
	if err := c.send([]byte(req)); err != nil {
		return err
	}
	return c.expect([]byte(want))
}

// stat reads one field of "stats".
func (c *client) stat(name string) (string, error) {
	if err := c.send([]byte("stats\r\n")); err != nil {
		return "", err
	}
	lines, err := c.readToEnd()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(lines, "\r\n") {
		if f := strings.Fields(line); len(f) == 3 && f[1] == name {
			return f[2], nil
		}
	}
	return "", nil
}

// readToEnd reads lines up to and including an "END" line, under the I/O
// timeout.
func (c *client) readToEnd() (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	var got strings.Builder
	for !strings.HasSuffix(got.String(), "END\r\n") {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		got.WriteString(line)
	}
	return got.String(), nil
}

// waitStat asks for stats until field name reads want, or fails the test
// after the I/O timeout.
func (c *client) waitStat(t *testing.T, name, want string) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		got, err := c.stat(name)
		require.NoError(t, err)
		if got == want {
			return
		}
		require.True(t, time.Now().Before(deadline), "%s stays at %s, not %s", name, got, want)
		time.Sleep(10 * time.Millisecond)
	}
}

// waitEOF reads until the server closes the connection.
func (c *client) waitEOF() error {
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	_, err := io.Copy(io.Discard, c.r)
	if errors.Is(err, syscall.ECONNRESET) {
		return nil // a close with input left unread
	}
	return err // nil at EOF
}

// heapAlloc is the live heap after collecting twice (pools are emptied by
// the second collection).
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestBadInputIsolation runs 50 connections sending garbage, absurd
// lengths, half requests and huge lines next to 8 well-behaved clients for
// about 3 seconds. Every well-behaved operation must get exactly the right
// answer, and afterwards the server must hold no more connections,
// goroutines or memory than before.
// TestBadInputIsolation runs with handlers on the pool and, with LowLatency, on
// the poller (inline.go).
func TestBadInputIsolation(t *testing.T) {
	for _, low := range []bool{false, true} {
		t.Run(fmt.Sprintf("low-latency=%v", low), func(t *testing.T) {
			testBadInputIsolation(t, server.Config{LowLatency: low, MaxInput: 2 << 20})
		})
	}
}

func testBadInputIsolation(t *testing.T, cfg server.Config) {
	const (
		good     = 8
		bad      = 50
		duration = 3 * time.Second
	)
	addr, _ := startServer(t, cfg)

	// Warm up netpoll's pollers and pools before the baselines.
	w := mustDial(t, addr)
	require.NoError(t, w.roundTrip("set warm 0 0 1\r\nw\r\nget warm\r\n", "STORED\r\nVALUE warm 0 1\r\nw\r\nEND\r\n"))
	w.Close()
	time.Sleep(200 * time.Millisecond) // the warm-up connection's handler ends
	baseGoroutines := runtime.NumGoroutine()
	baseHeap := heapAlloc()

	goods := make([]*client, good)
	for i := range goods {
		goods[i] = mustDial(t, addr)
	}
	stop := time.Now().Add(duration)
	var (
		wg      sync.WaitGroup
		goodOps [good]atomic.Int64
		badRuns [badKinds]atomic.Int64
		errMu   sync.Mutex
		errs    []error
	)
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	for i, c := range goods {
		wg.Go(func() {
			if err := goodClient(c, i, stop, &goodOps[i]); err != nil {
				fail(fmt.Errorf("good client %d: %w", i, err))
			}
		})
	}
	for i := range bad {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			for time.Now().Before(stop) {
				kind := rng.IntN(badKinds)
				if err := badClient(addr, kind, rng); err != nil {
					fail(fmt.Errorf("bad client %d, kind %d: %w", i, kind, err))
					return
				}
				badRuns[kind].Add(1)
			}
		})
	}
	wg.Wait()
	require.Empty(t, errs)
	t.Logf("good operations by client: %v; bad connections by kind: %v", loads(goodOps[:]), loads(badRuns[:]))
	for i := range good {
		require.Positive(t, goodOps[i].Load(), "good client %d never ran", i)
	}
	for kind := range badKinds {
		require.Positive(t, badRuns[kind].Load(), "bad kind %d never ran", kind)
	}

	// The server still answers, the good clients too, and every bad
	// connection is gone: the good ones and this one remain.
	s := mustDial(t, addr)
	require.NoError(t, s.roundTrip("set after 0 0 2\r\nok\r\nget after\r\n", "STORED\r\nVALUE after 0 2\r\nok\r\nEND\r\n"))
	for i, c := range goods {
		key := "good:" + strconv.Itoa(i) + ":after"
		require.NoError(t, c.roundTrip("set "+key+" 0 0 1\r\nx\r\nget "+key+"\r\n", "STORED\r\nVALUE "+key+" 0 1\r\nx\r\nEND\r\n"))
	}
	want := strconv.Itoa(good + 1)
	var got string
	require.Eventually(t, func() bool {
		v, err := s.stat("curr_connections")
		require.NoError(t, err)
		got = v
		return v == want
	}, 10*time.Second, 20*time.Millisecond, "curr_connections %s, want %s", got, want)

	for _, c := range goods {
		c.Close()
	}
	s.Close()
	// Goroutines: the handlers of closed connections have all returned.
	// netpoll's pool may keep a worker or two for a moment.
	const margin = 4
	var n int
	require.Eventually(t, func() bool {
		n = runtime.NumGoroutine()
		return n <= baseGoroutines+margin
	}, 10*time.Second, 20*time.Millisecond, "goroutines %d, baseline %d", n, baseGoroutines)
	// Memory: connection buffers are released (the store is off the heap).
	const heapMargin = 8 << 20
	var heap uint64
	require.Eventually(t, func() bool {
		heap = heapAlloc()
		return heap <= baseHeap+heapMargin
	}, 10*time.Second, 100*time.Millisecond, "heap %d MiB, baseline %d MiB", heap>>20, baseHeap>>20)
	t.Logf("goroutines %d (baseline %d), heap %.1f MiB (baseline %.1f MiB)",
		n, baseGoroutines, float64(heap)/(1<<20), float64(baseHeap)/(1<<20))
}

func loads(a []atomic.Int64) []int64 {
	out := make([]int64, len(a))
	for i := range a {
		out[i] = a[i].Load()
	}
	return out
}

// goodClient stores and reads back its own keys until stop, checking every
// byte of every reply.
func goodClient(c *client, id int, stop time.Time, ops *atomic.Int64) error {
	rng := rand.New(rand.NewPCG(uint64(id), 7))
	val := make([]byte, 4096)
	for j := 0; time.Now().Before(stop); j++ {
		key := fmt.Sprintf("good:%d:%d", id, j%64)
		n := 1 + rng.IntN(len(val)-1)
		for i := range n {
			val[i] = byte(rng.Uint32()) // any byte, CR and LF included
		}
		v := val[:n]
		flags := rng.Uint32()
		var req, want bytes.Buffer
		switch j % 4 {
		case 0, 1: // set and get, pipelined
			fmt.Fprintf(&req, "set %s %d 0 %d\r\n%s\r\nget %s\r\n", key, flags, n, v, key)
			fmt.Fprintf(&want, "STORED\r\nVALUE %s %d %d\r\n%s\r\nEND\r\n", key, flags, n, v)
		case 2: // meta set and get with an opaque
			fmt.Fprintf(&req, "ms %s %d F%d O%d\r\n%s\r\nmg %s v f O%d k\r\n", key, n, flags, j, v, key, j)
			fmt.Fprintf(&want, "HD O%d\r\nVA %d f%d O%d k%s\r\n%s\r\n", j, n, flags, j, key, v)
		case 3: // a counter, deleted
			fmt.Fprintf(&req, "set %s 0 0 1\r\n5\r\nincr %s %d\r\ndelete %s\r\nget %s\r\n", key, key, n, key, key)
			fmt.Fprintf(&want, "STORED\r\n%d\r\nDELETED\r\nEND\r\n", 5+n)
		}
		if err := c.send(req.Bytes()); err != nil {
			return fmt.Errorf("op %d: %w", j, err)
		}
		if err := c.expect(want.Bytes()); err != nil {
			return fmt.Errorf("op %d: %w", j, err)
		}
		ops.Add(1)
	}
	return nil
}

// The kinds of bad connection.
const (
	badGarbage    = iota // random bytes, then gone
	badHugeLength        // a length of almost 2 GiB, a little data, then gone
	badHalfLine          // half a command line, then gone
	badCutValue          // a value cut short, then gone
	badLongLine          // 3000 bytes without a newline: the server closes
	badHugeGet           // a multi-get of 200 KB or 1.2 MiB, answered; or 2.1 MiB unterminated: closed
	badQuit              // quit: the server closes
	badUnknown           // unknown commands: ERROR
	badKinds
)

// badClient opens one connection and misbehaves on it in the given way.
// It returns an error only when the server answers wrongly.
func badClient(addr string, kind int, rng *rand.Rand) error {
	c, err := dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	switch kind {
	case badGarbage:
		b := make([]byte, 1+rng.IntN(4096))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		_ = c.send(b)
		// Whatever the server makes of it, read a little and vanish.
		_ = c.SetReadDeadline(time.Now().Add(time.Duration(rng.IntN(20)) * time.Millisecond))
		_, _ = c.r.Read(make([]byte, 512))
	case badHugeLength:
		_ = c.send([]byte("set huge 0 0 2147483640\r\n" + strings.Repeat("z", rng.IntN(10000))))
		if rng.IntN(2) == 0 {
			// Tandem answers at once and swallows what follows (memcached
			// 1.6.18 sends its answer only once the value is swallowed).
			return c.expect([]byte("SERVER_ERROR object too large for cache\r\n"))
		}
	case badHalfLine:
		lines := []string{"set half 0 0 10", "get half", "mg half v", "delete", "ms half 5 T", "gat 10"}
		l := lines[rng.IntN(len(lines))]
		_ = c.send([]byte(l[:1+rng.IntN(len(l)-1)]))
		time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
	case badCutValue:
		_ = c.send([]byte("set cut 0 0 1000\r\n" + strings.Repeat("c", rng.IntN(1000))))
		time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
	case badLongLine:
		if err := c.send(bytes.Repeat([]byte("x"), 3000)); err != nil {
			return err
		}
		return c.waitEOF()
	case badHugeGet:
		switch rng.IntN(10) {
		case 0:
			// Past the connection's input bound (2 MiB here) with no
			// newline: closed.
			_ = c.send([]byte("get " + strings.Repeat("k123456 ", (2<<20)/8+2000)))
			return c.waitEOF()
		case 1:
			// Longer than 1 MiB, then its newline: answered, as memcached
			// answers multi-gets of any length.
			line := "get " + strings.Repeat("k123456 ", (1<<20)/8+20000) + "\r\n"
			go func() { _ = c.send([]byte(line)) }()
			return c.expect([]byte("END\r\n"))
		}
		var b strings.Builder
		b.WriteString("get")
		for i := range 20000 {
			fmt.Fprintf(&b, " nokey%d", i)
		}
		b.WriteString("\r\n")
		go func() { _ = c.send([]byte(b.String())) }()
		return c.expect([]byte("END\r\n"))
	case badQuit:
		if err := c.send([]byte("quit\r\n")); err != nil {
			return err
		}
		return c.waitEOF()
	case badUnknown:
		return c.roundTrip("foo bar\r\nGET x\r\nbogus\r\n", "ERROR\r\nERROR\r\nERROR\r\n")
	}
	return nil
}

// TestPartialRequests delivers requests in pieces: a byte at a time, in
// large pipelines, as a value of almost the largest size in 7 writes, and as
// a value too large to store.
// TestPartialRequests runs with handlers on the pool and, with LowLatency, on
// the poller (inline.go).
func TestPartialRequests(t *testing.T) {
	for _, low := range []bool{false, true} {
		t.Run(fmt.Sprintf("low-latency=%v", low), func(t *testing.T) {
			testPartialRequests(t, server.Config{LowLatency: low})
		})
	}
}

func testPartialRequests(t *testing.T, cfg server.Config) {
	addr, _ := startServer(t, cfg)

	t.Run("byte at a time", func(t *testing.T) {
		c := mustDial(t, addr)
		msg := []byte("set slow 5 0 10\r\n0123456789\r\nget slow\r\nmg slow v f\r\n")
		deadline := time.Now().Add(10 * time.Second)
		i := 0
		for ; i < len(msg) && time.Now().Before(deadline); i++ {
			require.NoError(t, c.send(msg[i:i+1]))
			time.Sleep(time.Millisecond)
		}
		require.Equal(t, len(msg), i, "ran out of time")
		require.NoError(t, c.expect([]byte("STORED\r\nVALUE slow 5 10\r\n0123456789\r\nEND\r\nVA 10 f5\r\n0123456789\r\n")))
	})

	t.Run("10000 pipelined gets", func(t *testing.T) {
		c := mustDial(t, addr)
		const keys = 100
		var setup, setupWant bytes.Buffer
		for i := range keys {
			fmt.Fprintf(&setup, "set p%d %d 0 %d\r\nv%d\r\n", i, i, len(strconv.Itoa(i))+1, i)
			setupWant.WriteString("STORED\r\n")
		}
		require.NoError(t, c.send(setup.Bytes()))
		require.NoError(t, c.expect(setupWant.Bytes()))

		for _, meta := range []bool{false, true} {
			var req, want bytes.Buffer
			for i := range 10000 {
				k := i % (keys + 7) // some misses
				switch {
				case meta && k < keys:
					fmt.Fprintf(&req, "mg p%d v O%d\r\n", k, i)
					fmt.Fprintf(&want, "VA %d O%d\r\nv%d\r\n", len(strconv.Itoa(k))+1, i, k)
				case meta:
					fmt.Fprintf(&req, "mg p%d v O%d\r\n", k, i)
					fmt.Fprintf(&want, "EN O%d\r\n", i)
				case k < keys:
					fmt.Fprintf(&req, "get p%d\r\n", k)
					fmt.Fprintf(&want, "VALUE p%d %d %d\r\nv%d\r\nEND\r\n", k, k, len(strconv.Itoa(k))+1, k)
				default:
					fmt.Fprintf(&req, "get p%d\r\n", k)
					want.WriteString("END\r\n")
				}
			}
			// One write; replies are read meanwhile, or both sides could
			// fill their socket buffers and wait for each other.
			errc := make(chan error, 1)
			go func() { errc <- c.send(req.Bytes()) }()
			require.NoError(t, c.expect(want.Bytes()), "meta %v", meta)
			require.NoError(t, <-errc)
		}
	})

	t.Run("largest value in 7 pieces", func(t *testing.T) {
		c := mustDial(t, addr)
		// memcached's size of an item: a 48-byte header, the key and a NUL,
		// the value and CRLF, 8 bytes of CAS; the default limit is 1 MiB.
		const key = "big"
		n := 1<<20 - (48 + len(key) + 1 + 2 + 8)
		val := make([]byte, n)
		for i := range val {
			val[i] = byte('a' + i%26)
		}
		msg := append([]byte(fmt.Sprintf("set %s 0 0 %d\r\n", key, n)), val...)
		msg = append(msg, "\r\n"...)
		piece := (len(msg) + 6) / 7
		for i := 0; i < len(msg); i += piece {
			require.NoError(t, c.send(msg[i:min(len(msg), i+piece)]))
			time.Sleep(5 * time.Millisecond)
		}
		require.NoError(t, c.expect([]byte("STORED\r\n")))
		want := append([]byte(fmt.Sprintf("VALUE %s 0 %d\r\n", key, n)), val...)
		want = append(want, "\r\nEND\r\n"...)
		require.NoError(t, c.roundTrip("get big\r\n", string(want)))

		// One byte more is too large.
		errc := make(chan error, 1)
		go func() {
			errc <- c.send(append([]byte(fmt.Sprintf("set big2 0 0 %d\r\n", n+1)), append(val, "x\r\n"...)...))
		}()
		require.NoError(t, c.expect([]byte("SERVER_ERROR object too large for cache\r\n")))
		require.NoError(t, <-errc)
		require.NoError(t, c.roundTrip("get big2\r\n", "END\r\n"))
	})

	t.Run("too large is swallowed", func(t *testing.T) {
		c := mustDial(t, addr)
		require.NoError(t, c.roundTrip("set tl 0 0 1\r\na\r\n", "STORED\r\n"))
		big := bytes.Repeat([]byte("y"), 2<<20)
		msg := append([]byte("set tl 0 0 2097152\r\n"), big...)
		msg = append(msg, "\r\nget tl\r\nset after 0 0 3\r\nabc\r\nget after\r\n"...)
		errc := make(chan error, 1)
		go func() {
			// In pieces, so that the answer comes before the value is in.
			for i := 0; i < len(msg); i += 256 << 10 {
				if err := c.send(msg[i:min(len(msg), i+256<<10)]); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		// A failed set drops the old value, as memcached does.
		require.NoError(t, c.expect([]byte("SERVER_ERROR object too large for cache\r\nEND\r\nSTORED\r\nVALUE after 0 3\r\nabc\r\nEND\r\n")))
		require.NoError(t, <-errc)
	})
}

// TestLongGetLine: a get line may be longer than a megabyte and arrive in
// many pieces (memcached buffers multi-gets without a bound); its
// answer, or a too-long key's error, comes once the newline does, and the
// connection goes on.
func TestLongGetLine(t *testing.T) {
	addr, _ := startServer(t, server.Config{})
	c := mustDial(t, addr)
	defer c.Close()
	require.NoError(t, c.roundTrip("set k1 0 0 2\r\nv1\r\n", "STORED\r\n"))

	keys := []byte("get k1" + strings.Repeat(" nokey123", (1<<20)/9+5000))
	for chunk := range slices.Chunk(keys, 32<<10) {
		require.NoError(t, c.send(chunk))
	}
	require.NoError(t, c.roundTrip(" k1\r\nget k1\r\n",
		"VALUE k1 0 2\r\nv1\r\nVALUE k1 0 2\r\nv1\r\nEND\r\nVALUE k1 0 2\r\nv1\r\nEND\r\n"))

	long := []byte("get " + strings.Repeat("z", 2<<20))
	for chunk := range slices.Chunk(long, 64<<10) {
		require.NoError(t, c.send(chunk))
	}
	require.NoError(t, c.roundTrip("\r\nget k1\r\n", "CLIENT_ERROR bad command line format\r\nVALUE k1 0 2\r\nv1\r\nEND\r\n"))
}
