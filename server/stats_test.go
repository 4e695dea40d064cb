package server_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/server"
	"github.com/tandemcache/tandem/store"
)

// TestConnStatsAges checks secs_since_last_cmd in "stats conns". The ages
// come from the store's clock, which stamps each connection's last
// request: they follow that clock, and are never negative (a huge unsigned
// number) when it is behind the wall clock the server started by.
func TestConnStatsAges(t *testing.T) {
	clk := store.NewClock()
	clk.Set(time.Now().Unix() - 10) // behind the server's start
	st, err := store.New(store.Config{MemoryLimit: 64 << 20, Clock: clk})
	require.NoError(t, err)
	addr, _ := serveStore(t, server.Config{}, st)

	idle := mustDial(t, addr)
	require.NoError(t, idle.roundTrip("version\r\n", "VERSION 1.6.18\r\n"))
	clk.Advance(5)

	c := mustDial(t, addr)
	require.NoError(t, c.send([]byte("stats conns\r\n")))
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	var ages []int
	for {
		line, err := c.r.ReadString('\n')
		require.NoError(t, err)
		line = strings.TrimRight(line, "\r\n")
		if line == "END" {
			break
		}
		f := strings.Fields(line)
		require.Len(t, f, 3, "line %q", line)
		if strings.HasSuffix(f[1], ":secs_since_last_cmd") {
			n, err := strconv.Atoi(f[2])
			require.NoError(t, err, "line %q", line)
			ages = append(ages, n)
		}
	}
	slices.Sort(ages)
	// The listener (its start is 5 s ahead of the clock: 0), this
	// connection (its request is now: 0), the idle one (5 s ago).
	require.Equal(t, []int{0, 0, 5}, ages)
}

// TestCachedump: an ITEM line per item, with its value's length and its
// expiry as a unix time, 0 for an item that never expires (memcached 1.6).
func TestCachedump(t *testing.T) {
	addr, _ := startServer(t, server.Config{})
	c := mustDial(t, addr)
	require.NoError(t, c.roundTrip("set forever 0 0 3\r\nabc\r\n", "STORED\r\n"))
	at := time.Now().Unix() + 1000
	require.NoError(t, c.roundTrip("set later 0 1000 1\r\nx\r\n", "STORED\r\n"))
	require.NoError(t, c.send([]byte("stats cachedump 1 0\r\n")))
	got, err := c.readToEnd()
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(got, "\r\nEND\r\n"), "\r\n")
	slices.Sort(lines)
	require.Len(t, lines, 2, got)
	require.Equal(t, "ITEM forever [3 b; 0 s]", lines[0], got)
	var exp int64
	_, err = fmt.Sscanf(lines[1], "ITEM later [1 b; %d s]", &exp)
	require.NoError(t, err, got)
	require.InDelta(t, at, exp, 2)
}
