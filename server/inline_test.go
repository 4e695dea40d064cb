package server_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/server"
	"github.com/tandemcache/tandem/store"
)

// Small batches run on the poller's goroutine (server/inline.go). These
// cases are the ones where such a handler would otherwise wait: for a
// socket that does not drain, for the rest of a request, for a long
// command, for a close.
func TestInlineHandlers(t *testing.T) {
	// A clock the test moves: the idle sweeper reads the store's clock.
	clk := store.NewClock()
	st, err := store.New(store.Config{MemoryLimit: 64 << 20, Clock: clk})
	require.NoError(t, err)
	addr, log := serveStore(t, server.Config{IdleTimeout: 2 * time.Second, LowLatency: true}, st)
	t.Cleanup(func() { require.Empty(t, log.String()) })

	t.Run("reader that stops reading", func(t *testing.T) {
		// One client sends small gets of a 512 KiB value, one write each
		// (each runs inline), and reads nothing until the socket buffers
		// are full both ways; meanwhile another client on the same poller
		// must be answered at once. Then every reply arrives, in order.
		slow := mustDial(t, addr)
		runs := server.InlineRuns()
		value := strings.Repeat("v", 512<<10)
		require.NoError(t, slow.roundTrip(fmt.Sprintf("set big 0 0 %d\r\n%s\r\n", len(value), value), "STORED\r\n"))
		const gets = 64 // 32 MiB of replies
		fast := mustDial(t, addr)
		for i := range gets {
			require.NoError(t, slow.send([]byte(fmt.Sprintf("mg big v O%d\r\n", i))))
			// A round trip on the other connection between two gets (the
			// tests share one poller) keeps each get a batch of its own.
			start := time.Now()
			require.NoError(t, fast.roundTrip(fmt.Sprintf("mn\r\nmg nokey O%d\r\n", i), fmt.Sprintf("MN\r\nEN O%d\r\n", i)))
			require.Less(t, time.Since(start), time.Second, "a stalled client held up another")
		}
		for i := range gets {
			require.NoError(t, slow.expect([]byte(fmt.Sprintf("VA %d O%d\r\n%s\r\n", len(value), i, value))), "reply %d", i)
		}
		require.NoError(t, slow.roundTrip("mn\r\n", "MN\r\n"))
		require.Greater(t, server.InlineRuns()-runs, uint64(gets), "the gets did not run on the poller")
	})

	t.Run("client gone while its replies wait", func(t *testing.T) {
		// The socket fills, the rest waits on a detached goroutine, and
		// the client resets the connection: the goroutine must stop
		// writing (the socket's number may be reused at once).
		c := mustDial(t, addr)
		// The clients of the subtest before are closing: c alone, first.
		c.waitStat(t, "curr_connections", "1")
		gone := mustDial(t, addr)
		for i := range 32 {
			require.NoError(t, gone.send([]byte(fmt.Sprintf("mg big v O%d\r\n", i))))
			require.NoError(t, c.roundTrip("mn\r\n", "MN\r\n")) // one batch each
		}
		require.NoError(t, gone.Conn.(*net.TCPConn).SetLinger(0))
		require.NoError(t, gone.Close())
		c.waitStat(t, "curr_connections", "1")
		require.NoError(t, c.roundTrip("mg big s\r\n", fmt.Sprintf("HD s%d\r\n", 512<<10)))
	})

	t.Run("partial request, then the rest", func(t *testing.T) {
		c := mustDial(t, addr)
		other := mustDial(t, addr)
		// A round trip on another connection of the same poller between
		// the two halves, so that they are read apart.
		require.NoError(t, c.send([]byte("set half 0 0 10\r\n01234")))
		require.NoError(t, other.roundTrip("mn\r\n", "MN\r\n"))
		require.NoError(t, c.roundTrip("56789\r\nget half\r\n", "STORED\r\nVALUE half 0 10\r\n0123456789\r\nEND\r\n"))
		// A partial line, and a whole one before it.
		require.NoError(t, c.send([]byte("get half\r\nge")))
		require.NoError(t, c.expect([]byte("VALUE half 0 10\r\n0123456789\r\nEND\r\n")))
		require.NoError(t, c.roundTrip("t half\r\n", "VALUE half 0 10\r\n0123456789\r\nEND\r\n"))
	})

	t.Run("half-closed client gets its replies", func(t *testing.T) {
		for _, req := range []string{"mn\r\n", "stats\r\n"} {
			c := mustDial(t, addr)
			require.NoError(t, c.send([]byte(req)))
			require.NoError(t, c.Conn.(*net.TCPConn).CloseWrite())
			_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
			got, err := io.ReadAll(c.r)
			require.NoError(t, err)
			require.True(t, strings.HasSuffix(string(got), "\r\n") && (req == "mn\r\n" && string(got) == "MN\r\n" ||
				strings.HasSuffix(string(got), "END\r\n")), "%q got %q", req, got)
		}
	})

	t.Run("long commands (on the pool) between short ones, in order", func(t *testing.T) {
		c := mustDial(t, addr)
		require.NoError(t, c.send([]byte("set o 0 0 1\r\nx\r\nstats\r\nget o\r\n")))
		require.NoError(t, c.expect([]byte("STORED\r\n")))
		got, err := c.readToEnd()
		require.NoError(t, err)
		require.Contains(t, got, "STAT curr_connections ")
		require.NoError(t, c.expect([]byte("VALUE o 0 1\r\nx\r\nEND\r\n")))
		// Binary stats detaches too; a binary noop after it is answered.
		b := mustDial(t, addr)
		stat := []byte{0x80, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		noop := []byte{0x80, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		require.NoError(t, b.send(append(stat, noop...)))
		for {
			hdr := make([]byte, 24)
			_, err := ioReadFull(b, hdr)
			require.NoError(t, err)
			body := int(hdr[8])<<24 | int(hdr[9])<<16 | int(hdr[10])<<8 | int(hdr[11])
			_, err = ioReadFull(b, make([]byte, body))
			require.NoError(t, err)
			if hdr[1] == 0x0a {
				break // the noop, after the last stat
			}
			require.Equal(t, byte(0x10), hdr[1])
		}
	})

	t.Run("a slow command the scan misses runs off the poller", func(t *testing.T) {
		// The data block is 2 bytes too long: the parser reads "stats" from
		// the middle of the line the runner's scan saw start with "abcde".
		c := mustDial(t, addr)
		require.NoError(t, c.send([]byte("set k 0 0 3\r\nabcdestats\r\nmn\r\n")))
		require.NoError(t, c.expect([]byte("CLIENT_ERROR bad data chunk\r\n")))
		got, err := c.readToEnd()
		require.NoError(t, err)
		require.Contains(t, got, "STAT curr_connections ")
		require.NoError(t, c.expect([]byte("MN\r\n")))
	})

	t.Run("quit after replies", func(t *testing.T) {
		c := mustDial(t, addr)
		require.NoError(t, c.roundTrip("set q 0 0 1\r\nq\r\n", "STORED\r\n"))
		require.NoError(t, c.send([]byte("get q\r\nquit\r\nget q\r\n")))
		require.NoError(t, c.expect([]byte("VALUE q 0 1\r\nq\r\nEND\r\n")))
		require.NoError(t, c.waitEOF())
	})

	t.Run("idle sweeper closes a connection with a partial request", func(t *testing.T) {
		c := mustDial(t, addr)
		require.NoError(t, c.send([]byte("get hal")))
		// A round trip on another connection (the same poller) first, so
		// that the partial request is most likely copied out before the
		// sweep; the connection must close either way.
		require.NoError(t, mustDial(t, addr).roundTrip("mn\r\n", "MN\r\n"))
		clk.Advance(10)
		require.NoError(t, c.waitEOF())
	})
}

// ioReadFull reads exactly len(b) bytes under the I/O timeout.
func ioReadFull(c *client, b []byte) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	return io.ReadFull(c.r, b)
}

// A connection handed to a goroutine of its own because the client does
// not take its replies must stop reading, as a handler on the pool does
// (pace.go): otherwise netpoll keeps buffering whatever the client sends
// for as long as the write timeout, and the connection is dropped once that
// passes its input bound.
func TestDetachedPausesReading(t *testing.T) {
	addr, log := startServer(t, server.Config{LowLatency: true, MaxInput: 2 << 20})
	t.Cleanup(func() { require.Empty(t, log.String()) })
	c := mustDial(t, addr)
	value := strings.Repeat("v", 1000_000)
	require.NoError(t, c.roundTrip(fmt.Sprintf("set big 0 0 %d\r\n%s\r\n", len(value), value), "STORED\r\n"))

	// One small batch, run on the poller, whose 8 MB reply the socket
	// cannot take: the rest goes to a detached goroutine.
	const bigs = 8
	require.NoError(t, c.send([]byte("get"+strings.Repeat(" big", bigs)+"\r\n")))
	// Then 28 MiB of misses (long keys: few requests) while the client
	// reads nothing. With reading paused, TCP soon holds the sender back;
	// without, the server takes it all into memory.
	miss := "get " + strings.Repeat("k", 250) + "\r\n"
	misses := (28 << 20) / len(miss)
	flood := []byte(strings.Repeat(miss, misses))
	require.NoError(t, c.Conn.(*net.TCPConn).SetWriteBuffer(64<<10))
	var wrote atomic.Int64
	sent := make(chan error, 1)
	go func() {
		_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
		var err error
		for b := flood; len(b) > 0 && err == nil; {
			var n int
			n, err = c.Write(b[:min(len(b), 64<<10)])
			wrote.Add(int64(n))
			b = b[n:]
		}
		sent <- err
	}()
	// Until the writer has been stuck for 200 ms, or 2 s have passed.
	for last, since, deadline := int64(-1), time.Now(), time.Now().Add(2*time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if w := wrote.Load(); w != last {
			last, since = w, time.Now()
		} else if time.Since(since) > 200*time.Millisecond {
			break
		}
	}
	t.Logf("written before the client read: %d of %d bytes", wrote.Load(), len(flood))
	require.Less(t, wrote.Load(), int64(len(flood)/2), "the server read on while its replies waited")

	want := "VALUE big 0 1000000\r\n" + value + "\r\n"
	got := make([]byte, 0, len(want))
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	for range bigs {
		got = got[:len(want)]
		_, err := io.ReadFull(c.r, got)
		require.NoError(t, err)
		require.Equal(t, want, string(got))
	}
	require.NoError(t, c.expect([]byte("END\r\n"+strings.Repeat("END\r\n", misses))))
	require.NoError(t, <-sent)
	require.NoError(t, c.roundTrip("mn\r\n", "MN\r\n"))
}
