package main

import (
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// verboseScript is one connection's requests for TestVerboseLog. Left out:
// a cas that fails (memcached also prints a "CAS:  failure" debugging line)
// and a get with a key over 250 bytes (memcached logs an END it does not
// send).
var verboseScript = strings.Join([]string{
	"set a 0 0 1", "b", "set n 0 0 1 noreply", "c", "get a", "get a zz n", "gets a", "get zz",
	"delete zz", "delete n", "incr a 1", "set c 0 0 1", "5", "incr c 2", "touch c 10", "bogus command",
	"mg a v", "mg zz v", "ms m 2", "hi", "md m", "mn", "me a", "me zz", "mg a zzz", "ma zz", "ma",
	"version", "verbosity 2", "stats", "stats reset", "stats detail on", "stats items", "stats settings",
	"append zz 0 0 1 noreply", "x", "incr a 1 noreply", "incr c 1 noreply", "delete c noreply",
	"get a noreply", "flush_all noreply", "flush_all 0", "shutdown", "verbosity", "quit", "",
}, "\r\n")

var (
	// fdPrefix is the descriptor number memcached's -vv lines start with.
	fdPrefix = regexp.MustCompile(`(?m)^([<>])\d+ |^\d+: `)
	// slabLine is a -vv slab class line at start.
	slabLine = regexp.MustCompile(`(?m)^slab class +\d+: chunk size +\d+ perslab +\d+$`)
	// listenLine is a -vv line for a listening socket.
	listenLine = regexp.MustCompile(`(?m)^<\d+ server listening \(auto-negotiate\)$`)
)

// TestVerboseLog: with -vv, Tandem logs a text connection's life and
// requests as memcached 1.6.18 does, line for line (descriptor numbers
// aside), and says it exits normally on SIGTERM.
func TestVerboseLog(t *testing.T) {
	if _, err := os.Stat(memcachedPath); err != nil {
		t.Fatalf("%s not found (%v): install the Debian package memcached", memcachedPath, err)
	}
	logs := map[string]string{}
	for _, srv := range []struct{ name, bin string }{{"memcached", memcachedPath}, {"tandem", e2eBinary(t)}} {
		port := freePort(t)
		p := startProc(t, srv.bin, tcpArgs(port, "-vv")...)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		// Listening once it says so: no other connection may log lines.
		deadline := time.Now().Add(10 * time.Second)
		for !listenLine.MatchString(p.out.String()) {
			require.True(t, time.Now().Before(deadline), "%s never said it listens:\n%s", srv.name, p.out.String())
			time.Sleep(10 * time.Millisecond)
		}

		c, err := net.DialTimeout("tcp", addr, time.Second)
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
		_, err = io.WriteString(c, verboseScript)
		require.NoError(t, err)
		_, err = io.ReadAll(c) // until quit closes it
		require.NoError(t, err)
		c.Close()
		for !strings.Contains(p.out.String(), "connection closed.") {
			require.True(t, time.Now().Before(deadline), "%s never logged the close:\n%s", srv.name, p.out.String())
			time.Sleep(10 * time.Millisecond)
		}

		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		require.Equal(t, 0, p.waitExit(t, 10*time.Second))
		out := p.out.String()
		require.Regexp(t, slabLine, out, srv.name)
		require.Regexp(t, listenLine, out, srv.name)
		require.True(t, strings.HasSuffix(out, "Exiting normally\n"), "%s: %q", srv.name, out[max(0, len(out)-200):])

		// The script's connection: from its first line to its close.
		norm := fdPrefix.ReplaceAllString(out, "${1}N ")
		start := strings.Index(norm, "<N new auto-negotiating client connection\n")
		end := strings.Index(norm, "<N connection closed.\n")
		require.True(t, start >= 0 && end > start, "%s:\n%s", srv.name, out)
		logs[srv.name] = norm[start:end]
	}
	require.Equal(t, strings.Split(logs["memcached"], "\n"), strings.Split(logs["tandem"], "\n"))
}
