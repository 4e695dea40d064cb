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

// verboseBinary is one binary connection's requests for
// TestVerboseLog: hits, misses, quiet requests and errors of each family,
// then QUIT.
var verboseBinary = cat(
	breq(0x02, "ka", flagsExp(5, 0), "v1"),                          // ADD
	breq(0x02, "ka", flagsExp(5, 0), "v2"),                          // ADD: exists
	breq(0x03, "kb", flagsExp(5, 0), "v"),                           // REPLACE: not found
	breq(0x01, "kc", flagsExp(5, 0), "v3"),                          // SET
	breq(0x0e, "ka", nil, "x"),                                      // APPEND
	breq(0x0f, "zz", nil, "y"),                                      // PREPEND: not stored
	breq(0x00, "ka", nil, ""),                                       // GET
	breq(0x0c, "zz", nil, ""),                                       // GETK: miss
	breq(0x09, "zz", nil, ""),                                       // GETQ: miss, silent
	breq(0x0d, "kc", nil, ""),                                       // GETKQ
	breq(0x1c, "ka", u32(10), ""),                                   // TOUCH
	breq(0x1d, "ka", u32(10), ""),                                   // GAT
	breq(0x23, "zz", u32(10), ""),                                   // GATK: miss
	breq(0x05, "n", arithExt(1, 5, 0), ""),                          // INCREMENT: created
	breq(0x06, "n", arithExt(1, 5, 0), ""),                          // DECREMENT
	breq(0x05, "zz", arithExt(1, 5, 0xffffffff), ""),                // INCREMENT: not found
	breq(0x05, "ka", arithExt(1, 5, 0), ""),                         // INCREMENT: not a number
	breq(0x11, "kq", flagsExp(0, 0), "v"),                           // SETQ
	breq(0x04, "zz", nil, ""),                                       // DELETE: not found
	breq(0x14, "kq", nil, ""),                                       // DELETEQ
	breq(0x0a, "", nil, ""),                                         // NOOP
	breq(0x0b, "", nil, ""),                                         // VERSION
	breq(0x08, "", nil, ""),                                         // FLUSH
	breq(0x99, "", nil, ""),                                         // unknown
	breq(0x01, "big", flagsExp(0, 0), strings.Repeat("v", 2000000)), // SET: too large
	breq(0x07, "", nil, ""),                                         // QUIT
)

// verboseBinaryStats is a second binary connection: stats (whose packets
// memcached does not log), an error, a delta of 2^63 or more (printed
// signed), then a header with a bad magic, which closes it.
var verboseBinaryStats = append(cat(
	breq(0x10, "", nil, ""),                        // STAT
	breq(0x10, "settings", nil, ""),                // STAT settings
	breq(0x10, "bogus", nil, ""),                   // STAT: not found
	breq(0x05, "big", arithExt(1<<63+5, 5, 0), ""), // INCREMENT: created
	breq(0x05, "big", arithExt(1<<63+5, 5, 0), ""), // INCREMENT
), append([]byte{0x81}, make([]byte, 23)...)...) // bad magic

// TestVerboseLog: with -vv, Tandem logs a connection's life and requests
// as memcached 1.6.18 does, line for line (descriptor numbers aside), for
// a text and meta script and a binary one, and says it exits normally on
// SIGTERM.
func TestVerboseLog(t *testing.T) {
	if _, err := os.Stat(memcachedPath); err != nil {
		t.Fatalf("%s not found (%v): install the Debian package memcached", memcachedPath, err)
	}
	for _, script := range []struct {
		name string
		req  []byte
	}{{"text", []byte(verboseScript)}, {"binary", verboseBinary}, {"binary-stats", verboseBinaryStats}} {
		t.Run(script.name, func(t *testing.T) {
			want := verboseLog(t, memcachedPath, script.req)
			got := verboseLog(t, e2eBinary(t), script.req)
			require.Equal(t, strings.Split(want, "\n"), strings.Split(got, "\n"))
		})
	}
}

// verboseLog runs script through one connection to the server bin started
// with -vv, until the server closes it, and returns what it logged of that
// connection, descriptor numbers replaced by N.
func verboseLog(t *testing.T, bin string, script []byte) string {
	port := freePort(t)
	p := startProc(t, bin, tcpArgs(port, "-vv")...)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	// Listening once it says so: no other connection may log lines.
	deadline := time.Now().Add(10 * time.Second)
	for !listenLine.MatchString(p.out.String()) {
		require.True(t, time.Now().Before(deadline), "%s never said it listens:\n%s", bin, p.out.String())
		time.Sleep(10 * time.Millisecond)
	}

	c, err := net.DialTimeout("tcp", addr, time.Second)
	require.NoError(t, err)
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	go func() { _, _ = c.Write(script) }()
	_, err = io.ReadAll(c) // until quit closes it
	require.NoError(t, err)
	c.Close()
	for !strings.Contains(p.out.String(), "connection closed.") {
		require.True(t, time.Now().Before(deadline), "%s never logged the close:\n%s", bin, p.out.String())
		time.Sleep(10 * time.Millisecond)
	}

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.Equal(t, 0, p.waitExit(t, 10*time.Second))
	out := p.out.String()
	require.Regexp(t, slabLine, out, bin)
	require.Regexp(t, listenLine, out, bin)
	require.True(t, strings.HasSuffix(out, "Exiting normally\n"), "%s: %q", bin, out[max(0, len(out)-200):])

	// The script's connection: from its first line to its close.
	norm := fdPrefix.ReplaceAllString(out, "${1}N ")
	start := strings.Index(norm, "<N new auto-negotiating client connection\n")
	end := strings.Index(norm, "<N connection closed.\n")
	require.True(t, start >= 0 && end > start, "%s:\n%s", bin, out)
	return norm[start:end]
}
