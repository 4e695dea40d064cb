package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// asUser adds -u so that the tests pass when run as root, as CI does.
func asUser(args ...string) []string { return append([]string{"-u", "root"}, args...) }

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		check func(t *testing.T, o *options)
	}{
		{"defaults", nil, func(t *testing.T, o *options) {
			require.Equal(t, int64(64<<20), o.memory)
			require.Equal(t, 1<<20, o.itemMax)
			require.Equal(t, 1024, o.maxConns)
			require.Equal(t, 4, o.threads)
			require.Equal(t, 20, o.reqsPerEvent)
			require.Equal(t, 48, o.chunkMin)
			require.Equal(t, 1.05, o.factor)
			require.Equal(t, []string{":11211"}, o.listen)
			require.Equal(t, os.FileMode(0o700), o.unixMask)
			require.Equal(t, 1, o.automove)
		}},
		{"memcached short forms", []string{"-p", "12000", "-m", "128", "-c", "10", "-t", "2", "-I", "2m",
			"-f", "1.25", "-n", "64", "-M", "-C", "-vv", "-R", "5", "-A", "-F"}, func(t *testing.T, o *options) {
			require.Equal(t, int64(128<<20), o.memory)
			require.Equal(t, 2<<20, o.itemMax)
			require.Equal(t, 10, o.maxConns)
			require.Equal(t, 2, o.threads)
			require.Equal(t, 1.25, o.factor)
			require.Equal(t, 64, o.chunkMin)
			require.True(t, o.noEvict)
			require.True(t, o.noCAS)
			require.Equal(t, 2, o.verbose)
			require.Equal(t, 5, o.reqsPerEvent)
			require.True(t, o.enableShutdown)
			require.True(t, o.disableFlush)
			require.Equal(t, []string{":12000"}, o.listen)
		}},
		{"long forms", []string{"--port=12001", "--memory-limit=1g", "--max-item-size=512k", "--listen=127.0.0.1"},
			func(t *testing.T, o *options) {
				require.Equal(t, int64(1<<30), o.memory)
				require.Equal(t, 512<<10, o.itemMax)
				require.Equal(t, []string{"127.0.0.1:12001"}, o.listen)
			}},
		{"item size in bytes", []string{"-I", "2097152"}, func(t *testing.T, o *options) {
			require.Equal(t, 2<<20, o.itemMax)
		}},
		{"listen lists", []string{"-l", "127.0.0.1,127.0.0.2:9000", "-l", "notls:[::1]", "-p", "7000"},
			func(t *testing.T, o *options) {
				require.Equal(t, []string{"127.0.0.1:7000", "127.0.0.2:9000", "[::1]:7000"}, o.listen)
			}},
		{"unix socket", []string{"-s", "/tmp/x.sock", "-a", "0766"}, func(t *testing.T, o *options) {
			require.Equal(t, "/tmp/x.sock", o.unixSocket)
			require.Equal(t, os.FileMode(0o766), o.unixMask)
			require.Empty(t, o.listen)
		}},
		{"extended", []string{"-o", "idle_timeout=30,slab_chunk_max=256k", "-o", "no_slab_automove", "-o", "modern"},
			func(t *testing.T, o *options) {
				require.Equal(t, 30*time.Second, o.idleTimeout)
				require.Equal(t, 256<<10, o.chunkMax)
				require.Equal(t, 0, o.automove)
				require.Contains(t, strings.Join(o.warnings, "\n"), "-o modern")
			}},
		{"chunk max in kilobytes", []string{"-o", "slab_chunk_max=512"}, func(t *testing.T, o *options) {
			require.Equal(t, 512<<10, o.chunkMax)
		}},
		{"lock memory, udp, binary", []string{"-k", "-U", "11211", "-B", "binary"}, func(t *testing.T, o *options) {
			require.True(t, o.lockMem)
			require.Equal(t, "binary", o.protocol)
			require.Equal(t, 11211, o.udpPort)
			require.Empty(t, o.warnings)
		}},
		{"max pending below two items", []string{"--peers", "127.0.0.1:1", "--repl-listen", "127.0.0.1:2", "--repl-max-pending", "1m", "-I", "1m"},
			func(t *testing.T, o *options) {
				require.Equal(t, []string{"--repl-max-pending 1m is less than twice -I 1m: a write of a large item drops the links to the peers and resyncs them"}, o.warnings)
			}},
		{"max pending of two items", []string{"--peers", "127.0.0.1:1", "--repl-listen", "127.0.0.1:2", "--repl-max-pending", "2m", "-I", "1m"},
			func(t *testing.T, o *options) {
				require.Empty(t, o.warnings)
			}},
		{"large pages", []string{"-L"}, func(t *testing.T, o *options) {
			require.True(t, o.largePages)
		}},
		{"large pages, long name", []string{"--enable-largepages"}, func(t *testing.T, o *options) {
			require.True(t, o.largePages)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseArgs(asUser(tc.args...), &bytes.Buffer{})
			require.NoError(t, err)
			tc.check(t, o)
		})
	}
}

func TestFlagErrors(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown flag":         {"--bogus"},
		"unknown short flag":   {"-j"},
		"stray argument":       {"extra"},
		"bad memory":           {"-m", "lots"},
		"item size too small":  {"-I", "512"},
		"item size too large":  {"-I", "2g"},
		"factor 1":             {"-f", "1"},
		"unknown suboption":    {"-o", "no_such_thing"},
		"bad idle timeout":     {"-o", "idle_timeout=x"},
		"bad automove":         {"-o", "slab_automove=7"},
		"bad protocol":         {"-B", "udp"},
		"bad hash algorithm":   {"-o", "hash_algorithm=md5"},
		"bad unix mask":        {"-a", "999"},
		"zero connections":     {"-c", "0"},
		"missing config file":  {"--config", "/nonexistent/memcached.conf"},
		"non-numeric threads":  {"-t", "many"},
		"negative slab min":    {"-n", "-1"},
		"bad chunk max":        {"-o", "slab_chunk_max=big"},
		"bad -R":               {"-R", "0"},
		"unknown long with =":  {"--portt=1"},
		"flag missing a value": {"-p"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseArgs(asUser(args...), &bytes.Buffer{})
			require.Error(t, err)
		})
	}
}

func TestRootNeedsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		_, err := parseArgs(nil, &bytes.Buffer{})
		require.NoError(t, err, "-u is only required of root")
		return
	}
	_, err := parseArgs(nil, &bytes.Buffer{})
	require.EqualError(t, err, "can't run as root without the -u switch")
}

// TestDebianConfig reads Debian's stock /etc/memcached.conf, unchanged.
func TestDebianConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "memcached.conf")
	require.NoError(t, os.WriteFile(conf, []byte(`# memcached default config file
# 2003 - Jay Bonci <jaybonci@debian.org>
# This configuration file is read by the start-memcached script provided as
# part of the Debian GNU/Linux distribution.

# Run memcached as a daemon. This command is implied, and is not needed for the
# daemon to run. See the README.Debian that comes with this package for more
# information.
-d

# Log memcached's output to /var/log/memcached
logfile `+filepath.Join(dir, "memcached.log")+`

# Be verbose
# -v

# Be even more verbose (print client commands as well)
# -vv

# Start with a cap of 64 megs of memory. It's reasonable, and the daemon default
# Note that the daemon will grow to this size, but does not start out holding this much
# memory
-m 64

# Default connection port is 11211
-p 11211

# Run the daemon as root. The start-memcached will default to running as root if no
# -u command is present in this config file
-u memcache

# Specify which IP address to listen on. The default is to listen on all IP addresses
# This parameter is one of the only security measures that memcached has, so make sure
# it's listening on a firewalled interface.
-l 127.0.0.1

# Limit the number of simultaneous incoming connections. The daemon default is 1024
# -c 1024

# Lock down all paged memory. Consult with the README and homepage before you do this
# -k

# Return error when memory is exhausted (rather than removing items)
# -M

# Maximize core file limit
# -r

# Use a pidfile
-P /var/run/memcached/memcached.pid
`), 0o644))
	o, err := parseArgs([]string{"--config", conf, "-p", "12345"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.True(t, o.daemon)
	require.Equal(t, int64(64<<20), o.memory)
	require.Equal(t, "memcache", o.user)
	require.Equal(t, []string{"127.0.0.1:12345"}, o.listen, "the command line overrides the file")
	require.Equal(t, "/var/run/memcached/memcached.pid", o.pidfile)
	require.Equal(t, filepath.Join(dir, "memcached.log"), o.logfile)

	bad := filepath.Join(dir, "bad.conf")
	require.NoError(t, os.WriteFile(bad, []byte("m 64\n"), 0o644))
	_, err = parseArgs([]string{"--config", bad}, &bytes.Buffer{})
	require.ErrorContains(t, err, "bad.conf:1")
}

func TestHelpListsOnlySupported(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, run([]string{"-h"}, &out, &out))
	h := out.String()
	for _, f := range []string{"--port", "--memory-limit", "--max-item-size", "--disable-cas", "idle_timeout", "--enable-sasl", "--auth-file", "--enable-largepages"} {
		require.Contains(t, h, f)
	}
	for _, f := range []string{"--enable-ssl"} {
		require.NotContains(t, h, f)
	}
	out.Reset()
	require.Equal(t, 0, run([]string{"-V"}, &out, &out))
	require.Contains(t, out.String(), "memcached 1.6")
	out.Reset()
	require.Equal(t, 64, run(asUser("--bogus"), &out, &out))
}

// TestHugePagesOff: -L warns when the kernel cannot give huge pages.
func TestHugePagesOff(t *testing.T) {
	saved := thpEnabled
	defer func() { thpEnabled = saved }()
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"always [madvise] never\n", ""},
		{"[always] madvise never\n", ""},
		{"always madvise [never]\n", "transparent huge pages are turned off"},
		{"", "transparent huge pages are turned off"},
	} {
		thpEnabled = filepath.Join(dir, "enabled")
		if tc.content == "" {
			thpEnabled = filepath.Join(dir, "missing")
			tc.want = "this kernel has no transparent huge pages"
		} else {
			require.NoError(t, os.WriteFile(thpEnabled, []byte(tc.content), 0o644))
		}
		got := hugePagesOff()
		if tc.want == "" {
			require.Empty(t, got, tc.content)
		} else {
			require.Contains(t, got, tc.want, tc.content)
		}
		o, err := parseArgs(asUser("-L"), &bytes.Buffer{})
		require.NoError(t, err)
		if tc.want == "" {
			require.Empty(t, o.warnings)
		} else {
			require.Equal(t, []string{"-L: " + got + "; item memory uses small pages"}, o.warnings)
		}
	}
}

func TestEventLoops(t *testing.T) {
	cases := []struct {
		threads, procs, loops int
	}{
		{threads: 2, procs: 2, loops: 2},
		{threads: 1, procs: 8, loops: 1},
		{threads: 4, procs: 2, loops: 2}, // memcached's default -t on a 2-CPU box
		{threads: 4, procs: 8, loops: 4},
		{threads: 16, procs: 1, loops: 1},
	}
	for _, c := range cases {
		loops := eventLoops(c.threads, c.procs)
		require.Equal(t, c.loops, loops, "-t %d with GOMAXPROCS %d", c.threads, c.procs)
		require.Equal(t, c.loops+1, lowLatencyProcs(loops))
	}
}
