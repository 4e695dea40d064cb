package main

// End-to-end tests with real clients: libmemcached's memccapable, Brad
// Fitzpatrick's gomemcache and pymemcache, each against a tandem binary built
// once per test run and started on a free port by the test.
//
// E2E_MEMCACHED=1 go test -run 'TestMemccapable|TestGomemcache|TestPymemcacheSessions' ./cmd/tandem
//
// runs the same tests against Debian's memcached instead (nothing is built),
// which checks the tests themselves: anything that fails only against tandem
// is tandem's difference. E2E_ARGS adds server flags (E2E_ARGS='-f 1.25'),
// to tell one difference from another while investigating.
//
// startServer, shorten and memcachedPath come from
// difftest_test.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"
)

const (
	// memccapablePath is looked up on PATH; Debian's libmemcached-tools
	// installs /usr/bin/memccapable.
	memccapablePath = "memccapable"
	// memccapableTests is how many tests `memccapable -a` runs (the ascii
	// suite of Debian 12's libmemcached-tools 1.1.4); another count means
	// another suite, whose results this test was not checked against.
	memccapableTests = 27
	// pythonPath is Debian's python3, the one python3-pymemcache installs
	// into (the first python3 on PATH may be another).
	pythonPath = "/usr/bin/python3"

	// clientTimeout bounds one client round trip; generous because the race
	// detector slows the test process, short enough to fail fast on a hang.
	clientTimeout = 5 * time.Second
	// toolTimeout bounds one external client run (memccapable, python):
	// each takes a few seconds on loopback.
	toolTimeout = 40 * time.Second
	// itemSizeMax is memcached's default -I: no item, header included, may
	// be larger, so a value of exactly this size never fits.
	itemSizeMax = 1 << 20
)

// TestMain removes the tandem binary that e2eBinary built, if any.
func TestMain(m *testing.M) {
	code := m.Run()
	if e2eBin.dir != "" {
		os.RemoveAll(e2eBin.dir)
	}
	os.Exit(code)
}

// e2eBin is the tandem binary shared by the client tests of one run.
var e2eBin struct {
	once sync.Once
	dir  string // temporary directory holding it, removed by TestMain
	path string
	err  error
}

// e2eBinary builds ./cmd/tandem once per test run and returns its path.
// (buildTandem in difftest_test.go builds into one test's TempDir, which is
// gone when that test ends, so it cannot be shared.)
func e2eBinary(t *testing.T) string {
	t.Helper()
	e2eBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "tandem-e2e-")
		if err != nil {
			e2eBin.err = err
			return
		}
		e2eBin.dir = dir
		e2eBin.path = filepath.Join(dir, "tandem")
		out, err := exec.Command("go", "build", "-o", e2eBin.path, ".").CombinedOutput()
		if err != nil {
			e2eBin.err = fmt.Errorf("go build -o %s . failed: %w\n%s", e2eBin.path, err, out)
		}
	})
	if e2eBin.err != nil {
		t.Fatal(e2eBin.err)
	}
	return e2eBin.path
}

// e2eServer starts the server under test (tandem, or memcached with
// E2E_MEMCACHED=1) with the default flags (plus E2E_ARGS) on a free port; it
// is killed when the test ends. It returns the address and the port.
func e2eServer(t *testing.T) (string, int) {
	t.Helper()
	bin := memcachedPath
	if os.Getenv("E2E_MEMCACHED") != "1" {
		bin = e2eBinary(t)
	}
	addr := startServer(t, bin, strings.Fields(os.Getenv("E2E_ARGS")))
	i := strings.LastIndexByte(addr, ':')
	port, err := strconv.Atoi(addr[i+1:])
	require.NoError(t, err)
	return addr, port
}

// e2eRun runs an external client with a deadline and returns its combined
// output and exit error.
func e2eRun(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = time.Second // do not wait on pipes a killed child left open
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %v: %w", toolTimeout, err)
	}
	return string(out), err
}

var passLine = regexp.MustCompile(`(?m)^ascii .*\[pass\]\s*$`)

// TestMemccapable runs libmemcached's ascii-protocol conformance suite.
func TestMemccapable(t *testing.T) {
	if _, err := exec.LookPath(memccapablePath); err != nil {
		t.Fatalf("memccapable not found (%v): install the Debian package libmemcached-tools (./test.sh does)", err)
	}
	_, port := e2eServer(t)
	out, err := e2eRun(t, memccapablePath, "-a", "-h", "127.0.0.1", "-p", strconv.Itoa(port))
	passed := len(passLine.FindAllString(out, -1))
	if err != nil || !strings.Contains(out, "All tests passed") || passed != memccapableTests {
		t.Fatalf("memccapable -a: %v; %d of %d tests passed; output:\n%s", err, passed, memccapableTests, out)
	}
}

// TestPymemcacheSessions runs testdata/sessions.py, a session-store workload
// that checks every reply against its own model; see the script.
func TestPymemcacheSessions(t *testing.T) {
	if out, err := exec.Command(pythonPath, "-c", "import pymemcache").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import pymemcache (%v): install the Debian package python3-pymemcache (./test.sh does)\n%s", pythonPath, err, out)
	}
	_, port := e2eServer(t)
	out, err := e2eRun(t, pythonPath, "-u", filepath.Join("testdata", "sessions.py"), "127.0.0.1", strconv.Itoa(port))
	if err != nil {
		t.Fatalf("sessions.py: %v; output:\n%s", err, out)
	}
	t.Logf("sessions.py: %s", out)
}

// e2eClient returns a gomemcache client for addr, closed when the test ends.
func e2eClient(t *testing.T, addr string, conns int) *memcache.Client {
	t.Helper()
	mc := memcache.New(addr)
	mc.Timeout = clientTimeout
	mc.MaxIdleConns = conns
	t.Cleanup(func() { _ = mc.Close() })
	return mc
}

// requireItem gets key and requires the value and flags.
func requireItem(t *testing.T, mc *memcache.Client, key string, value []byte, flags uint32) *memcache.Item {
	t.Helper()
	it, err := mc.Get(key)
	require.NoError(t, err, "get %q", key)
	require.Equal(t, key, it.Key)
	require.True(t, bytes.Equal(value, it.Value), "get %q: value %q, want %q", key, shorten(it.Value), shorten(value))
	require.Equal(t, flags, it.Flags, "get %q: flags", key)
	require.NotZero(t, it.CasID, "get %q: cas", key)
	return it
}

func requireMiss(t *testing.T, mc *memcache.Client, key string) {
	t.Helper()
	it, err := mc.Get(key)
	require.ErrorIs(t, err, memcache.ErrCacheMiss, "get %q returned %+v", key, it)
}

// requireNumber gets a counter: incr/decr results are decimal text, which
// memcached may leave space-padded after a decr shrinks it in place.
func requireNumber(t *testing.T, mc *memcache.Client, key string, want uint64) {
	t.Helper()
	it, err := mc.Get(key)
	require.NoError(t, err, "get %q", key)
	got, err := strconv.ParseUint(strings.TrimRight(string(it.Value), " "), 10, 64)
	require.NoError(t, err, "get %q: value %q", key, it.Value)
	require.Equal(t, want, got, "get %q: value %q", key, it.Value)
}

// waitMiss polls key until it is gone, for expiry: the server's clock ticks
// in whole seconds.
func waitMiss(t *testing.T, mc *memcache.Client, key string, deadline time.Time) {
	t.Helper()
	for {
		_, err := mc.Get(key)
		if errors.Is(err, memcache.ErrCacheMiss) {
			return
		}
		require.NoError(t, err, "get %q", key)
		if time.Now().After(deadline) {
			t.Fatalf("%q has not expired by the deadline", key)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, bounded by deadline
	}
}

// TestGomemcache exercises every method of gomemcache's Client.
func TestGomemcache(t *testing.T) {
	addr, _ := e2eServer(t)
	mc := e2eClient(t, addr, 4)

	t.Run("Ping", func(t *testing.T) {
		require.NoError(t, mc.Ping())
	})

	t.Run("SetGet", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			flags uint32
			exp   int32
		}{
			{"zero", 0, 0},
			{"flags", 0xdeadbeef, 0},
			{"max-flags", 1<<32 - 1, 0},
			{"relative-ttl", 7, 1800},
			// More than 30 days: an absolute unix time, here an hour ahead.
			{"absolute-ttl", 8, int32(time.Now().Unix() + 3600)},
		} {
			key := "setget:" + tc.name
			v := []byte("value of " + tc.name)
			require.NoError(t, mc.Set(&memcache.Item{Key: key, Value: v, Flags: tc.flags, Expiration: tc.exp}), tc.name)
			requireItem(t, mc, key, v, tc.flags)
		}
		require.NoError(t, mc.Set(&memcache.Item{Key: "setget:zero", Value: []byte("overwritten"), Flags: 3}))
		requireItem(t, mc, "setget:zero", []byte("overwritten"), 3)
		require.NoError(t, mc.Set(&memcache.Item{Key: "setget:empty", Value: []byte{}}))
		requireItem(t, mc, "setget:empty", []byte{}, 0)

		// Already expired: a negative TTL, and an absolute time in the past.
		for i, exp := range []int32{-1, int32(time.Now().Unix() - 3600)} {
			key := fmt.Sprintf("setget:expired%d", i)
			require.NoError(t, mc.Set(&memcache.Item{Key: key, Value: []byte("x"), Expiration: exp}))
			requireMiss(t, mc, key)
		}
		requireMiss(t, mc, "setget:never-set")
	})

	t.Run("Expiry", func(t *testing.T) {
		// A TTL of 2 s lives at least a second (whole-second clock), then
		// goes; Touch and GetAndTouch set a TTL, Touch to 0 removes one.
		v := []byte("v")
		require.NoError(t, mc.Set(&memcache.Item{Key: "exp:ttl", Value: v, Expiration: 2}))
		require.NoError(t, mc.Set(&memcache.Item{Key: "exp:touched", Value: v}))
		require.NoError(t, mc.Touch("exp:touched", 2))
		require.NoError(t, mc.Set(&memcache.Item{Key: "exp:gat", Value: v, Flags: 9}))
		it, err := mc.GetAndTouch("exp:gat", 2)
		require.NoError(t, err)
		require.Equal(t, v, it.Value)
		require.Equal(t, uint32(9), it.Flags)
		require.NoError(t, mc.Set(&memcache.Item{Key: "exp:kept", Value: v, Expiration: 2}))
		require.NoError(t, mc.Touch("exp:kept", 0))
		requireItem(t, mc, "exp:ttl", v, 0)
		requireItem(t, mc, "exp:touched", v, 0)
		requireItem(t, mc, "exp:gat", v, 9)
		requireItem(t, mc, "exp:kept", v, 0)
		deadline := time.Now().Add(5 * time.Second)
		waitMiss(t, mc, "exp:ttl", deadline)
		waitMiss(t, mc, "exp:touched", deadline)
		waitMiss(t, mc, "exp:gat", deadline)
		requireItem(t, mc, "exp:kept", v, 0)

		_, err = mc.GetAndTouch("exp:missing", 10)
		require.ErrorIs(t, err, memcache.ErrCacheMiss)
	})

	t.Run("Touch", func(t *testing.T) {
		require.NoError(t, mc.Set(&memcache.Item{Key: "touch:k", Value: []byte("v"), Flags: 4}))
		require.NoError(t, mc.Touch("touch:k", 1800))
		requireItem(t, mc, "touch:k", []byte("v"), 4)
		require.ErrorIs(t, mc.Touch("touch:missing", 10), memcache.ErrCacheMiss)
		// A negative TTL expires the item at once.
		require.NoError(t, mc.Touch("touch:k", -1))
		requireMiss(t, mc, "touch:k")
	})

	t.Run("GetMulti", func(t *testing.T) {
		want := map[string][]byte{}
		var keys []string
		for i := range 100 {
			k := fmt.Sprintf("multi:%03d", i)
			keys = append(keys, k, k+":missing")
			if i%3 == 0 {
				continue // a miss
			}
			want[k] = bytes.Repeat([]byte{byte('a' + i%26)}, i*7)
			require.NoError(t, mc.Set(&memcache.Item{Key: k, Value: want[k], Flags: uint32(i)}))
		}
		got, err := mc.GetMulti(keys)
		require.NoError(t, err)
		require.Len(t, got, len(want))
		for k, v := range want {
			it := got[k]
			require.NotNil(t, it, "GetMulti lost %q", k)
			require.Equal(t, k, it.Key)
			require.True(t, bytes.Equal(v, it.Value), "%q: %q, want %q", k, it.Value, v)
			i, _ := strconv.Atoi(strings.TrimPrefix(k, "multi:"))
			require.Equal(t, uint32(i), it.Flags, k)
		}
		got, err = mc.GetMulti([]string{"multi:000", "multi:none"})
		require.NoError(t, err)
		require.Empty(t, got)
	})

	t.Run("Add", func(t *testing.T) {
		require.NoError(t, mc.Add(&memcache.Item{Key: "add:k", Value: []byte("first"), Flags: 1}))
		require.ErrorIs(t, mc.Add(&memcache.Item{Key: "add:k", Value: []byte("second"), Flags: 2}), memcache.ErrNotStored)
		requireItem(t, mc, "add:k", []byte("first"), 1)
		require.NoError(t, mc.Delete("add:k"))
		require.NoError(t, mc.Add(&memcache.Item{Key: "add:k", Value: []byte("third"), Flags: 3}))
		requireItem(t, mc, "add:k", []byte("third"), 3)
		// An expired item does not block add.
		require.NoError(t, mc.Set(&memcache.Item{Key: "add:expired", Value: []byte("old"), Expiration: -1}))
		require.NoError(t, mc.Add(&memcache.Item{Key: "add:expired", Value: []byte("new")}))
		requireItem(t, mc, "add:expired", []byte("new"), 0)
	})

	t.Run("Replace", func(t *testing.T) {
		require.ErrorIs(t, mc.Replace(&memcache.Item{Key: "replace:k", Value: []byte("v")}), memcache.ErrNotStored)
		requireMiss(t, mc, "replace:k")
		require.NoError(t, mc.Set(&memcache.Item{Key: "replace:k", Value: []byte("old"), Flags: 1}))
		require.NoError(t, mc.Replace(&memcache.Item{Key: "replace:k", Value: []byte("new"), Flags: 2}))
		requireItem(t, mc, "replace:k", []byte("new"), 2)
	})

	t.Run("AppendPrepend", func(t *testing.T) {
		require.ErrorIs(t, mc.Append(&memcache.Item{Key: "ap:k", Value: []byte("x")}), memcache.ErrNotStored)
		require.ErrorIs(t, mc.Prepend(&memcache.Item{Key: "ap:k", Value: []byte("x")}), memcache.ErrNotStored)
		requireMiss(t, mc, "ap:k")
		require.NoError(t, mc.Set(&memcache.Item{Key: "ap:k", Value: []byte("middle"), Flags: 5, Expiration: 1800}))
		before := requireItem(t, mc, "ap:k", []byte("middle"), 5)
		// The flags and TTL of append/prepend are ignored; the item keeps its own.
		require.NoError(t, mc.Append(&memcache.Item{Key: "ap:k", Value: []byte("-end"), Flags: 99, Expiration: -1}))
		require.NoError(t, mc.Prepend(&memcache.Item{Key: "ap:k", Value: []byte("start-"), Flags: 98, Expiration: -1}))
		after := requireItem(t, mc, "ap:k", []byte("start-middle-end"), 5)
		require.NotEqual(t, before.CasID, after.CasID, "append/prepend must give a new CAS")
		// Growing an item across slab classes keeps every byte.
		big := bytes.Repeat([]byte("0123456789"), 10000)
		require.NoError(t, mc.Append(&memcache.Item{Key: "ap:k", Value: big}))
		requireItem(t, mc, "ap:k", append([]byte("start-middle-end"), big...), 5)
	})

	t.Run("CompareAndSwap", func(t *testing.T) {
		require.NoError(t, mc.Set(&memcache.Item{Key: "cas:k", Value: []byte("v1"), Flags: 1}))
		it := requireItem(t, mc, "cas:k", []byte("v1"), 1)
		it.Value, it.Flags = []byte("v2"), 2
		require.NoError(t, mc.CompareAndSwap(it))
		now := requireItem(t, mc, "cas:k", []byte("v2"), 2)
		require.NotEqual(t, it.CasID, now.CasID)
		// The old CAS is stale now.
		it.Value = []byte("stale")
		require.ErrorIs(t, mc.CompareAndSwap(it), memcache.ErrCASConflict)
		requireItem(t, mc, "cas:k", []byte("v2"), 2)

		// Another client sets the key between this one's Get and CAS.
		other := e2eClient(t, addr, 1)
		mine := requireItem(t, mc, "cas:k", []byte("v2"), 2)
		require.NoError(t, other.Set(&memcache.Item{Key: "cas:k", Value: []byte("theirs"), Flags: 3}))
		mine.Value = []byte("mine")
		require.ErrorIs(t, mc.CompareAndSwap(mine), memcache.ErrCASConflict)
		requireItem(t, mc, "cas:k", []byte("theirs"), 3)
		// A touch keeps the CAS; an append changes it.
		mine = requireItem(t, mc, "cas:k", []byte("theirs"), 3)
		require.NoError(t, other.Touch("cas:k", 1800))
		mine.Value = []byte("after touch")
		require.NoError(t, mc.CompareAndSwap(mine))
		mine = requireItem(t, mc, "cas:k", []byte("after touch"), 3)
		require.NoError(t, other.Append(&memcache.Item{Key: "cas:k", Value: []byte("+")}))
		require.ErrorIs(t, mc.CompareAndSwap(mine), memcache.ErrCASConflict)

		// The item is gone (deleted, or never there): the server says
		// NOT_FOUND, which gomemcache reports as ErrCacheMiss.
		mine = requireItem(t, mc, "cas:k", []byte("after touch+"), 3)
		require.NoError(t, other.Delete("cas:k"))
		require.ErrorIs(t, mc.CompareAndSwap(mine), memcache.ErrCacheMiss)
		requireMiss(t, mc, "cas:k")
		err := mc.CompareAndSwap(&memcache.Item{Key: "cas:never", Value: []byte("v"), CasID: 12345})
		require.ErrorIs(t, err, memcache.ErrCacheMiss)
		requireMiss(t, mc, "cas:never")
	})

	t.Run("Delete", func(t *testing.T) {
		require.NoError(t, mc.Set(&memcache.Item{Key: "del:k", Value: []byte("v")}))
		require.NoError(t, mc.Delete("del:k"))
		requireMiss(t, mc, "del:k")
		require.ErrorIs(t, mc.Delete("del:k"), memcache.ErrCacheMiss)
		require.ErrorIs(t, mc.Delete("del:never"), memcache.ErrCacheMiss)
	})

	t.Run("IncrementDecrement", func(t *testing.T) {
		require.NoError(t, mc.Set(&memcache.Item{Key: "num:k", Value: []byte("10"), Flags: 6}))
		n, err := mc.Increment("num:k", 5)
		require.NoError(t, err)
		require.Equal(t, uint64(15), n)
		n, err = mc.Decrement("num:k", 3)
		require.NoError(t, err)
		require.Equal(t, uint64(12), n)
		requireNumber(t, mc, "num:k", 12)
		n, err = mc.Increment("num:k", 1000) // grows the text: 4 digits
		require.NoError(t, err)
		require.Equal(t, uint64(1012), n)
		requireNumber(t, mc, "num:k", 1012)
		// decr floors at 0, never wraps.
		n, err = mc.Decrement("num:k", 5000)
		require.NoError(t, err)
		require.Zero(t, n)
		requireNumber(t, mc, "num:k", 0)
		it, err := mc.Get("num:k")
		require.NoError(t, err)
		require.Equal(t, uint32(6), it.Flags, "incr/decr keep the flags")
		n, err = mc.Increment("num:k", 0)
		require.NoError(t, err)
		require.Zero(t, n)
		// incr wraps at 2^64.
		require.NoError(t, mc.Set(&memcache.Item{Key: "num:max", Value: []byte("18446744073709551615")}))
		n, err = mc.Increment("num:max", 2)
		require.NoError(t, err)
		require.Equal(t, uint64(1), n)
		n, err = mc.Decrement("num:max", 1<<63)
		require.NoError(t, err)
		require.Zero(t, n)

		_, err = mc.Increment("num:missing", 1)
		require.ErrorIs(t, err, memcache.ErrCacheMiss)
		_, err = mc.Decrement("num:missing", 1)
		require.ErrorIs(t, err, memcache.ErrCacheMiss)
		requireMiss(t, mc, "num:missing")

		require.NoError(t, mc.Set(&memcache.Item{Key: "num:text", Value: []byte("abc")}))
		_, err = mc.Increment("num:text", 1)
		require.EqualError(t, err, "memcache: client error: cannot increment or decrement non-numeric value")
		requireItem(t, mc, "num:text", []byte("abc"), 0)
	})

	t.Run("LargeValues", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		random := func(n int) []byte {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
			return b
		}
		// A value near the limit: 1 MiB less room for the item header
		// (memcached's is 48 bytes + 8 of CAS + key + 3; 1 KiB is ample).
		near := random(itemSizeMax - 1024)
		require.NoError(t, mc.Set(&memcache.Item{Key: "large:near", Value: near, Flags: 11}))
		requireItem(t, mc, "large:near", near, 11)
		key250 := strings.Repeat("L", 250)
		require.NoError(t, mc.Set(&memcache.Item{Key: key250, Value: near}))
		requireItem(t, mc, key250, near, 0)
		got, err := mc.GetMulti([]string{"large:near", key250})
		require.NoError(t, err)
		require.Len(t, got, 2)
		require.True(t, bytes.Equal(near, got["large:near"].Value))
		require.True(t, bytes.Equal(near, got[key250].Value))

		// A value of 1 MiB cannot fit with its header. gomemcache has no
		// sentinel for SERVER_ERROR on a store: it returns the reply line.
		require.NoError(t, mc.Set(&memcache.Item{Key: "large:over", Value: []byte("small")}))
		for _, n := range []int{itemSizeMax, itemSizeMax + 1, 2 * itemSizeMax} {
			err := mc.Set(&memcache.Item{Key: "large:over", Value: random(n)})
			require.EqualError(t, err, `memcache: unexpected response line from "set": "SERVER_ERROR object too large for cache\r\n"`, "set %d bytes", n)
		}
		// A failed set removes the old value (memcached does, so that a
		// stale value does not outlive a write that was meant to replace it),
		// and the connection stays in step: the data block was swallowed.
		requireMiss(t, mc, "large:over")
		requireItem(t, mc, "large:near", near, 11)
		err = mc.Add(&memcache.Item{Key: "large:add", Value: random(itemSizeMax)})
		require.EqualError(t, err, `memcache: unexpected response line from "add": "SERVER_ERROR object too large for cache\r\n"`)
		requireMiss(t, mc, "large:add")
		// An append or prepend whose result would be too large is NOT_STORED
		// (memcached's do_store_item: the new item cannot be allocated), and
		// the old value stays.
		err = mc.Append(&memcache.Item{Key: "large:near", Value: random(2048)})
		require.ErrorIs(t, err, memcache.ErrNotStored, "append past the limit")
		err = mc.Prepend(&memcache.Item{Key: "large:near", Value: random(2048)})
		require.ErrorIs(t, err, memcache.ErrNotStored, "prepend past the limit")
		requireItem(t, mc, "large:near", near, 11)
	})

	t.Run("BinarySafe", func(t *testing.T) {
		all := make([]byte, 256)
		for i := range all {
			all[i] = byte(i)
		}
		for i, v := range [][]byte{
			[]byte("\r\n"),
			[]byte("a\r\nb"),
			[]byte("\r\nEND\r\n"),
			[]byte("VALUE bin:0 0 2\r\nxx\r\nEND\r\n"),
			{0},
			[]byte("nul\x00inside\x00"),
			[]byte("ends with CR\r"),
			[]byte("\nstarts with LF"),
			all,
			bytes.Repeat([]byte("\r\n\x00"), 5000),
		} {
			key := fmt.Sprintf("bin:%d", i)
			require.NoError(t, mc.Set(&memcache.Item{Key: key, Value: v, Flags: uint32(i)}))
			requireItem(t, mc, key, v, uint32(i))
			require.NoError(t, mc.Append(&memcache.Item{Key: key, Value: []byte("\r\n")}))
			require.NoError(t, mc.Prepend(&memcache.Item{Key: key, Value: []byte("\x00")}))
			requireItem(t, mc, key, append(append([]byte{0}, v...), "\r\n"...), uint32(i))
		}
	})

	t.Run("Keys", func(t *testing.T) {
		for _, key := range []string{
			strings.Repeat("k", 250),
			strings.Repeat("x", 249) + "y",
			"!\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`{|}~",
			"unicode:ключ-日本語-🔑",
			"a",
		} {
			v := []byte("value for " + key)
			require.NoError(t, mc.Set(&memcache.Item{Key: key, Value: v}), "key %q", key)
			requireItem(t, mc, key, v, 0)
			require.NoError(t, mc.Delete(key))
			requireMiss(t, mc, key)
		}
		// Too long or with spaces: gomemcache refuses before sending.
		require.ErrorIs(t, mc.Set(&memcache.Item{Key: strings.Repeat("k", 251), Value: []byte("v")}), memcache.ErrMalformedKey)
		require.ErrorIs(t, mc.Set(&memcache.Item{Key: "has space", Value: []byte("v")}), memcache.ErrMalformedKey)
		require.NoError(t, mc.Ping(), "the connection is still fine")
	})

	t.Run("FlushAllDeleteAll", func(t *testing.T) {
		for _, flush := range []struct {
			name string
			fn   func() error
		}{{"FlushAll", mc.FlushAll}, {"DeleteAll", mc.DeleteAll}} {
			var keys []string
			for i := range 20 {
				k := fmt.Sprintf("flush:%s:%d", flush.name, i)
				keys = append(keys, k)
				require.NoError(t, mc.Set(&memcache.Item{Key: k, Value: []byte("v")}))
			}
			require.NoError(t, flush.fn(), flush.name)
			got, err := mc.GetMulti(keys)
			require.NoError(t, err)
			require.Empty(t, got, "%s left items", flush.name)
			// Stored in the same second as the flush: still visible.
			require.NoError(t, mc.Set(&memcache.Item{Key: keys[0], Value: []byte("after")}))
			requireItem(t, mc, keys[0], []byte("after"), 0)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		gomemcacheConcurrent(t, addr)
	})

	require.NoError(t, mc.Close())
	require.NoError(t, mc.Ping(), "a closed client dials again")
}

// Concurrent workload: concGoroutines goroutines each run concOps operations
// on concKeys shared keys.
const (
	concGoroutines = 16
	concOps        = 500
	concKeys       = 24
)

// concValue is what goroutine g writes to key in its op-th operation: it
// names its writer, and its length varies over several slab classes.
func concValue(key string, g, op int) []byte {
	head := fmt.Sprintf("%s|g%d|op%d|", key, g, op)
	n := (g*131 + op*37) % 4000
	v := make([]byte, 0, len(head)+n)
	v = append(v, head...)
	for i := range n {
		v = append(v, byte('a'+(g+op+i)%26))
	}
	return v
}

// concWrites records every value some goroutine is about to write, per key.
// A value is recorded before it is sent, so a read can never see one that
// is not recorded yet.
type concWrites struct {
	mu sync.Mutex
	m  map[string]map[[2]int]bool
}

func (w *concWrites) add(key string, g, op int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m[key] == nil {
		w.m[key] = map[[2]int]bool{}
	}
	w.m[key][[2]int{g, op}] = true
}

// check reports why v cannot be a value written to key, or "".
func (w *concWrites) check(key string, v []byte) string {
	var g, op int
	var k string
	parts := strings.SplitN(string(v), "|", 4)
	if len(parts) == 4 {
		k = parts[0]
		_, err1 := fmt.Sscanf(parts[1], "g%d", &g)
		_, err2 := fmt.Sscanf(parts[2], "op%d", &op)
		if err1 != nil || err2 != nil {
			k = ""
		}
	}
	if k != key {
		return fmt.Sprintf("key %q holds a value not written to it: %q", key, shorten(v))
	}
	if !bytes.Equal(v, concValue(key, g, op)) {
		return fmt.Sprintf("key %q: value of goroutine %d op %d is corrupt: %q", key, g, op, shorten(v))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.m[key][[2]int{g, op}] {
		return fmt.Sprintf("key %q: goroutine %d op %d never wrote it", key, g, op)
	}
	return ""
}

func gomemcacheConcurrent(t *testing.T, addr string) {
	mc := e2eClient(t, addr, concGoroutines)
	keys := make([]string, concKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("conc:%d", i)
	}
	writes := &concWrites{m: map[string]map[[2]int]bool{}}
	var reads, hits, failures atomic.Int64
	var wg sync.WaitGroup
	for g := range concGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 42))
			checkItem := func(op string, key string, it *memcache.Item) {
				hits.Add(1)
				if it.Key != key {
					t.Errorf("goroutine %d %s %q: item for key %q", g, op, key, it.Key)
				}
				if why := writes.check(key, it.Value); why != "" {
					t.Errorf("goroutine %d %s: %s", g, op, why)
				}
			}
			failed := 0
			for op := range concOps {
				key := keys[rng.IntN(len(keys))]
				var err error
				switch r := rng.IntN(100); {
				case r < 35:
					writes.add(key, g, op)
					err = mc.Set(&memcache.Item{Key: key, Value: concValue(key, g, op)})
				case r < 75:
					reads.Add(1)
					var it *memcache.Item
					it, err = mc.Get(key)
					if err == nil {
						checkItem("Get", key, it)
					}
				case r < 85:
					reads.Add(1)
					var m map[string]*memcache.Item
					multi := []string{key, keys[rng.IntN(len(keys))], keys[rng.IntN(len(keys))]}
					m, err = mc.GetMulti(multi)
					for k, it := range m {
						checkItem("GetMulti", k, it)
					}
				case r < 95:
					reads.Add(1)
					var it *memcache.Item
					it, err = mc.Get(key)
					if err != nil {
						break
					}
					checkItem("Get for CAS", key, it)
					writes.add(key, g, op)
					it.Value = concValue(key, g, op)
					err = mc.CompareAndSwap(it)
					if errors.Is(err, memcache.ErrCASConflict) {
						err = nil
					}
				default:
					err = mc.Delete(key)
				}
				if err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
					// Keep going, so that one failing command does not hide
					// what the reads would show; report a few per goroutine.
					failures.Add(1)
					if failed++; failed <= 2 {
						t.Errorf("goroutine %d op %d on %q: %v", g, op, key, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d goroutines x %d ops on %d keys: %d reads, %d values checked, %d failed commands",
		concGoroutines, concOps, concKeys, reads.Load(), hits.Load(), failures.Load())
	require.Positive(t, hits.Load(), "no read hit anything")

	// Quiet now: every key holds a value some goroutine wrote, or nothing.
	got, err := mc.GetMulti(keys)
	require.NoError(t, err)
	for k, it := range got {
		require.Empty(t, writes.check(k, it.Value))
	}
}
