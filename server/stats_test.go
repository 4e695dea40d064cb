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

// TestSettingsFollowCommands: the settings that commands change at run
// time show their new values in "stats settings", as memcached's do.
func TestSettingsFollowCommands(t *testing.T) {
	addr, _ := startServer(t, server.Config{Settings: [][2]string{
		{"maxbytes", "67108864"}, {"verbosity", "0"}, {"oldest", "0"}, {"slab_automove", "1"}, {"detail_enabled", "no"},
		{"track_sizes", "no"},
	}})
	c := mustDial(t, addr)
	settings := func() map[string]string {
		t.Helper()
		require.NoError(t, c.send([]byte("stats settings\r\n")))
		got, err := c.readToEnd()
		require.NoError(t, err)
		m := map[string]string{}
		for _, line := range strings.Split(strings.TrimSuffix(got, "END\r\n"), "\r\n") {
			if f := strings.Fields(line); len(f) == 3 {
				m[f[1]] = f[2]
			}
		}
		return m
	}
	require.Equal(t, map[string]string{"maxbytes": "67108864", "verbosity": "0", "oldest": "0",
		"slab_automove": "1", "detail_enabled": "no", "track_sizes": "no"}, settings())
	require.NoError(t, c.roundTrip("verbosity 1\r\n", "OK\r\n"))
	require.NoError(t, c.roundTrip("cache_memlimit 100\r\n", "OK\r\n"))
	require.NoError(t, c.roundTrip("slabs automove 0\r\n", "OK\r\n"))
	require.NoError(t, c.roundTrip("stats detail on\r\n", "OK\r\n"))
	require.NoError(t, c.roundTrip("flush_all\r\n", "OK\r\n"))
	require.NoError(t, c.roundTrip("stats sizes_enable\r\n", "STAT sizes_status enabled\r\n"))
	got := settings()
	require.Equal(t, "yes", got["track_sizes"])
	require.Equal(t, "1", got["verbosity"])
	require.Equal(t, strconv.Itoa(100<<20), got["maxbytes"])
	require.Equal(t, "0", got["slab_automove"])
	require.Equal(t, "yes", got["detail_enabled"])
	require.NotEqual(t, "0", got["oldest"], "flush_all sets oldest")
	require.NoError(t, c.roundTrip("slabs automove 2\r\n", "OK\r\n"))
	require.Equal(t, "2", settings()["slab_automove"])
	require.NoError(t, c.roundTrip("stats sizes_disable\r\n", "STAT sizes_status disabled\r\n"))
	require.Equal(t, "no", settings()["track_sizes"])
}
