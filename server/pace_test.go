package server_test

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/server"
)

// TestBulkLoad sends one connection's load, many times its input bound, as
// fast as the socket takes it while reading the replies, as `nc host port
// < dump` does, and then shuts down its side: every set is stored and
// answered. Before the handler paced its reading (pace.go), netpoll read
// far ahead of it and the connection was closed at the bound.
func TestBulkLoad(t *testing.T) {
	for _, low := range []bool{false, true} {
		t.Run(fmt.Sprintf("LowLatency=%v", low), func(t *testing.T) {
			addr, _ := startServer(t, server.Config{LowLatency: low, MaxInput: 2 << 20})
			const n = 100_000 // 13 MB of requests
			c := mustDial(t, addr)
			val := bytes.Repeat([]byte("v"), 100)
			sent := make(chan error, 1)
			go func() {
				var b []byte
				for i := range n {
					b = fmt.Appendf(b, "set bulk:%d 0 0 %d\r\n%s\r\n", i, len(val), val)
					if len(b) >= 256<<10 || i == n-1 {
						if _, err := c.Write(b); err != nil {
							sent <- err
							return
						}
						b = b[:0]
					}
				}
				sent <- c.Conn.(*net.TCPConn).CloseWrite()
			}()
			require.NoError(t, c.SetReadDeadline(time.Now().Add(60*time.Second)))
			for i := range n {
				line, err := c.r.ReadString('\n')
				require.NoError(t, err, "after %d replies", i)
				require.Equal(t, "STORED\r\n", line, "reply %d", i)
			}
			require.NoError(t, <-sent)

			check := mustDial(t, addr)
			for _, i := range []int{0, n / 2, n - 1} {
				key := fmt.Sprintf("bulk:%d", i)
				require.NoError(t, check.roundTrip("get "+key+"\r\n", fmt.Sprintf("VALUE %s 0 %d\r\n%s\r\nEND\r\n", key, len(val), val)))
			}
			items, err := check.stat("curr_items")
			require.NoError(t, err)
			require.Equal(t, fmt.Sprint(n), items)
		})
	}
}
