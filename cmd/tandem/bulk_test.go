package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBulkLoad pipes a load larger than a connection's input bound (64 MiB)
// into a real tandem through one connection, as fast as the socket takes
// it, reading the replies as they come and shutting down its side at the
// end, as `nc host port < dump` does. memcached reads such a client at its
// own pace and stores everything; so must tandem (it used to close the
// connection once netpoll had read 64 MiB ahead of the handler).
func TestBulkLoad(t *testing.T) {
	port := freePort(t)
	p := startProc(t, e2eBinary(t), tcpArgs(port, "-m", "1024")...)
	defer func() {
		if t.Failed() {
			t.Logf("tandem's output:\n%s", p.out.String())
		}
	}()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	c := dialWait(t, "tcp", addr)
	defer c.Close()

	const n = 2_000_000 // 250 MB of requests
	val := bytes.Repeat([]byte("v"), 100)
	// Made first, so that it goes out as fast as a file through nc.
	var load []byte
	for i := range n {
		load = fmt.Appendf(load, "set bulk:%d 0 0 %d\r\n%s\r\n", i, len(val), val)
	}
	sent := make(chan error, 1)
	go func() {
		if _, err := c.Write(load); err != nil {
			sent <- err
			return
		}
		sent <- c.(*net.TCPConn).CloseWrite()
	}()
	began := time.Now()
	require.NoError(t, c.SetReadDeadline(began.Add(2*time.Minute)))
	r := bufio.NewReaderSize(c, 64<<10)
	for i := range n {
		line, err := r.ReadString('\n')
		require.NoError(t, err, "after %d replies", i)
		require.Equal(t, "STORED\r\n", line, "reply %d", i)
	}
	require.NoError(t, <-sent)
	t.Logf("%d sets stored and answered in %v", n, time.Since(began).Round(time.Millisecond))

	check := dialWait(t, "tcp", addr)
	defer check.Close()
	cr := bufio.NewReader(check)
	require.Equal(t, fmt.Sprintf("STAT curr_items %d\r\n", n), statLine(t, check, cr, "stats\r\n", "curr_items"))
	require.Equal(t, fmt.Sprintf("VALUE bulk:%d 0 %d\r\n", n-1, len(val)), roundTrip(t, check, cr, fmt.Sprintf("get bulk:%d\r\n", n-1)))
}
