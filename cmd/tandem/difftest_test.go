package main

// TestDifferential sends the same request scripts to Debian's memcached and to
// tandem, both started by the test, and requires byte-identical replies apart
// from CAS values and stats values (see normalize).
//
// # Script format (testdata/diff/*.txt, one script per file)
//
// A script is the exact bytes sent on one fresh connection, written as lines:
//
//   - Each line of the file is sent followed by "\r\n". Every line counts,
//     empty ones included (an empty line sends a bare "\r\n"); the file's final
//     newline only ends the last line. Files use "\n" line endings; a literal
//     CR in a file is an error, so an editor cannot change the bytes silently.
//   - A line ending in a single unescaped backslash is sent without "\r\n"
//     (`get k\n\` sends "get k\n"; `abc\` followed by the line `def` sends
//     "abcdef\r\n").
//   - Escapes: \r \n \t, \s (a space, so trailing spaces survive editors),
//     \\ (a backslash), \0 (NUL), \xHH (any byte), and \{N*S}, which expands
//     to the string S (no "}" in it) repeated N times: `k\{249*a}` is a
//     250-byte key, `\{1048576*v}` a 1 MiB value.
//   - \c stands for the CAS value of the item last seen in this server's
//     replies so far (a "VALUE k f n cas" line, a meta "c<n>" flag or an "me"
//     cas=); \c+ and \c- stand for that value plus or minus one. CAS values
//     differ between servers, so before a line that uses \c the harness sends
//     "mn\r\n" and reads up to its "MN", then fills in each server's own value.
//   - A line that is just \| is a sync point: nothing of it is sent, but
//     the harness sends "mn\r\n" and reads up to its "MN" before going on, so
//     the replies before it are on the wire before anything after it is
//     sent. (memcached 1.6.18 discards replies still queued when a get with
//     a too-long key fails; a sync point keeps a script clear of that.)
//   - Lines starting with "#" at the top of the file are not sent: they are
//     comments, or one of these directives:
//     "# close"  the server is expected to close the connection; the harness
//     reads until EOF and appends nothing.
//     "# idle"   the connection cannot be answered any more (watch mode);
//     the harness reads until the server has been silent for idleGap.
//     "# args: FLAGS"  run against a separate pair of servers started with
//     these extra command-line flags (e.g. "-A" to enable shutdown).
//     "# fresh"  run against a pair of servers of its own, started for this
//     script alone and not flushed first: for replies that depend on the
//     server's whole history (stats items, stats slabs), which flush_all does
//     not reset, and for servers where flush_all itself would interfere
//     (with -C, an item stored in the same second as a flush_all is gone).
//     To send a line that starts with "#", write \x23.
//
// Unless the script says "# close" or "# idle", the harness appends "mn\r\n"
// and reads until the reply holds one "MN" line per "mn" command sent: the
// script's own mn lines plus the final one. The reply is split into lines and
// the data blocks announced by "VALUE" and "VA" lines, so a value that happens
// to contain "MN\r\n" does not end the read early.
//
// Each script starts from an empty cache: the harness sends "flush_all" on a
// separate connection first and expects "OK" (a "# fresh" script starts on
// new servers instead; servers started with -F or -Y answer flush_all with
// their refusal, which the harness accepts). Scripts still use their own key
// prefix (the script's name), so that a stray item never makes two scripts
// interfere.
//
// Scripts run one after the other; within a script both servers are driven
// at the same time. The whole suite (about 300 scripts) takes a few seconds
// plus the build.
//
// # Checking the harness itself
//
// DIFF_SELF=1 go test -v -run TestDifferential ./cmd/tandem
//
// compares memcached with a second memcached instead of tandem (nothing is
// built) and logs memcached's reply to every script, so that each script can
// be checked to exercise what its name claims and the normalisation can be
// checked to be deterministic.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	// memcachedPath is where Debian's memcached package installs the server.
	memcachedPath = "/usr/bin/memcached"

	// startTimeout bounds how long a server may take to accept connections.
	startTimeout = 10 * time.Second
	// scriptTimeout bounds one script's exchange with one server: generous
	// for loopback (the largest script sends 6 MB), short enough that a few
	// scripts a server never answers keep the suite within its minute.
	scriptTimeout = 3 * time.Second
	// idleGap is how long a "# idle" script waits for more reply bytes.
	idleGap = 300 * time.Millisecond
)

// baseArgs are the flags both servers get; -u root because memcached refuses
// to run as root without it, -U 0 to stay off UDP.
var baseArgs = []string{"-u", "root", "-U", "0", "-l", "127.0.0.1", "-m", "64"}

type diffScript struct {
	name string
	// segments are sent one after the other; each but the last is followed
	// by "mn\r\n" and a read up to its MN, because the next one refers to a
	// CAS value from the replies (\c) or the script asked for a sync point.
	segments [][]piece
	// close: the server must close the connection (quit, shutdown).
	close bool
	// idle: read until the server is silent (watch, refused auth).
	idle bool
	// args: extra server flags; "" means the default pair of servers.
	args string
	// fresh: the script gets a pair of servers of its own.
	fresh bool
	// mnCounts[i] is how many MN lines segment i's reply ends with: the
	// segment's own mn commands plus the one the harness appends.
	mnCounts []int
}

// serverKey names the pair of servers the script runs against.
func (s diffScript) serverKey() string {
	if s.fresh {
		return s.args + "\x00" + s.name
	}
	return s.args
}

// piece is literal bytes or, if cas, a reference to the last CAS seen plus
// delta.
type piece struct {
	lit   []byte
	cas   bool
	delta int64
}

// requestText renders the request for error messages, with \c as written.
func (s diffScript) requestText() []byte {
	var b []byte
	for i, seg := range s.segments {
		if i > 0 {
			b = append(b, "<harness: mn, read to MN>"...)
		}
		for _, p := range seg {
			if !p.cas {
				b = append(b, p.lit...)
				continue
			}
			b = append(b, "\\c"...)
			switch {
			case p.delta > 0:
				b = append(b, '+')
			case p.delta < 0:
				b = append(b, '-')
			}
		}
	}
	return b
}

// pendingScripts are memcached behaviours Tandem does not have yet, with
// the reason; docs/compatibility.md lists them too. Nothing else may differ.
var pendingScripts = map[string]string{}

func TestDifferential(t *testing.T) {
	if _, err := os.Stat(memcachedPath); err != nil {
		t.Fatalf("%s not found (%v): install the Debian package memcached (apt-get install memcached)", memcachedPath, err)
	}
	self := os.Getenv("DIFF_SELF") == "1"

	files, err := filepath.Glob(filepath.Join("testdata", "diff", "*.txt"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no scripts in testdata/diff")
	scripts := make([]diffScript, 0, len(files))
	type serverSet struct{ key, args string }
	sets := []serverSet{{}}
	seen := map[string]bool{"": true}
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		s, err := parseScript(strings.TrimSuffix(filepath.Base(f), ".txt"), data)
		require.NoError(t, err, "script %s", f)
		scripts = append(scripts, s)
		if key := s.serverKey(); !seen[key] {
			seen[key] = true
			sets = append(sets, serverSet{key: key, args: s.args})
		}
	}

	otherBin := memcachedPath
	if !self {
		otherBin = buildTandem(t)
	}

	// A pair that does not start fails only the scripts that need it (say,
	// tandem refusing a flag one script uses), unless it is the default one.
	type pair struct {
		ref, other string
		err        error
	}
	servers := map[string]pair{}
	for _, set := range sets {
		extra := strings.Fields(set.args)
		var p pair
		p.ref, p.err = launchServer(t, memcachedPath, extra)
		if p.err == nil {
			p.other, p.err = launchServer(t, otherBin, extra)
		}
		if p.err != nil && set.key == "" {
			t.Fatal(p.err)
		}
		servers[set.key] = p
	}

	otherName := "tandem"
	if self {
		otherName = "memcached#2"
	}
	for _, s := range scripts {
		t.Run(s.name, func(t *testing.T) {
			p := servers[s.serverKey()]
			if p.err != nil {
				t.Fatalf("script %s: %v", s.name, p.err)
			}
			var ref, other []byte
			var refErr, otherErr error
			var wg sync.WaitGroup
			wg.Add(2)
			go func() { defer wg.Done(); ref, refErr = exchange(p.ref, s) }()
			go func() { defer wg.Done(); other, otherErr = exchange(p.other, s) }()
			wg.Wait()
			if self {
				t.Logf("script %s\nrequest: %q\nmemcached reply:\n%s", s.name, shorten(s.requestText()), quoteLines(ref))
			}
			if refErr != nil {
				t.Fatalf("script %s: memcached: %v\nmemcached transcript: %q", s.name, refErr, ref)
			}
			nref, nother := normalize(ref), normalize(other)
			differ := otherErr != nil || !bytes.Equal(nref, nother)
			if why, ok := pendingScripts[s.name]; ok && !self {
				// A known gap: it must still differ, so that closing it
				// forces taking it off the list (and the docs).
				if !differ {
					t.Errorf("script %s now matches memcached: remove it from pendingScripts and update docs/compatibility.md", s.name)
				}
				t.Logf("script %s differs, as expected: %s", s.name, why)
				return
			}
			if differ {
				t.Errorf("script %s: replies differ (%s error: %v)\nrequest:              %q\nmemcached transcript: %q\n%-12s transcript: %q\nmemcached normalised: %q\n%-12s normalised: %q",
					s.name, otherName, otherErr, s.requestText(), ref, otherName, other, nref, otherName, nother)
			}
		})
	}
}

// buildTandem builds ./cmd/tandem (the test runs in that directory) into a
// temporary directory and returns the binary's path.
func buildTandem(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tandem")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go build -o %s . failed: %v\n%s", bin, err, out)
	}
	return bin
}

// startServer starts bin with baseArgs, a free port and extra, waits until it
// accepts connections and registers a cleanup that kills it. It returns the
// address to dial and fails the test if the server does not start. (Other
// end-to-end tests in this package use it too.)
func startServer(t *testing.T, bin string, extra []string) string {
	t.Helper()
	addr, err := launchServer(t, bin, extra)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// launchServer is startServer returning the failure to start instead; the
// process, if any, is still killed at cleanup.
func launchServer(t *testing.T, bin string, extra []string) (string, error) {
	t.Helper()
	port := freePort(t)
	args := append(append(append([]string{}, baseArgs...), "-p", strconv.Itoa(port)), extra...)
	cmd := exec.Command(bin, args...)
	var stderr lockedBuffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s %v: %w", bin, args, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // fails harmlessly if it already exited (shutdown)
		<-exited
	})

	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return addr, nil
		}
		select {
		case <-exited:
			return "", fmt.Errorf("%s %v exited before accepting connections: %v\noutput:\n%s", bin, args, cmd.ProcessState, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s %v does not accept connections on %s after %v: %v\noutput:\n%s", bin, args, addr, startTimeout, err, stderr.String())
		}
	}
}

// freePort returns a TCP port that was free a moment ago: listen on :0, close.
func freePort(t *testing.T) int {
	t.Helper()
	return freePorts(t, 1)[0]
}

// handedOut holds every port freePorts has returned in this test binary.
// Tests run in parallel: a port one test found free and released before
// its server bound it could otherwise be found free by another test, two
// servers would try it, and the one that lost would exit while the
// other's test talked to the winner (seen once in TestReplSecret).
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// freePorts returns n TCP ports that were free a moment ago, all distinct
// and never returned before in this test binary: each is held until all
// are found.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		require.Less(t, tries, 1000, "no unused port found")
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		p := l.Addr().(*net.TCPAddr).Port
		if !handedOut.ports[p] {
			handedOut.ports[p] = true
			ports = append(ports, p)
		}
	}
	return ports
}

// lockedBuffer collects a server's output; the exec package writes to it
// from its own goroutine while a failing test may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// exchange flushes the server's cache, then runs s on a fresh connection and
// returns everything the server replied, also when it fails part way.
//
// Requests are written by a goroutine while this one reads: a script that
// sends megabytes to a server that answers as it reads must not deadlock on
// full socket buffers.
func exchange(addr string, s diffScript) ([]byte, error) {
	if !s.fresh {
		if err := flush(addr); err != nil {
			return nil, err
		}
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(scriptTimeout)
	if err := c.SetDeadline(deadline); err != nil {
		c.Close()
		return nil, err
	}
	writeDone := make(chan error, 1)
	writing := false
	defer func() {
		c.Close() // unblocks a pending write
		if writing {
			<-writeDone
		}
	}()
	// waitWrite collects the pending write's result. A server that closes
	// the connection may make it fail: that is the point of "# close"; one
	// that stops reading may leave it pending: "# idle" cuts it short.
	waitWrite := func() error {
		writing = false
		err := <-writeDone
		if err == nil || (s.close && isPeerClosed(err)) || (s.idle && isTimeout(err)) {
			return nil
		}
		return fmt.Errorf("write: %w", err)
	}

	var reply []byte
	buf := make([]byte, 64<<10)
	wantMN := 0
	for i, seg := range s.segments {
		var req []byte
		for _, p := range seg {
			if !p.cas {
				req = append(req, p.lit...)
				continue
			}
			cas, ok := lastCAS(reply)
			if !ok {
				return reply, errors.New("script uses \\c but no CAS value was seen in the reply yet")
			}
			req = strconv.AppendUint(req, cas+uint64(p.delta), 10)
		}
		last := i == len(s.segments)-1
		if !last || (!s.close && !s.idle) {
			req = append(req, "mn\r\n"...)
		}
		writing = true
		go func() {
			_, err := c.Write(req)
			writeDone <- err
		}()
		if last && (s.close || s.idle) {
			break
		}
		wantMN += s.mnCounts[i]
		for countMN(reply) < wantMN {
			n, err := c.Read(buf)
			reply = append(reply, buf[:n]...)
			if err != nil && countMN(reply) < wantMN {
				if errors.Is(err, io.EOF) {
					return reply, errors.New("connection closed by the server before the end of the reply")
				}
				return reply, fmt.Errorf("read: %w", err)
			}
		}
		if err := waitWrite(); err != nil {
			return reply, err
		}
	}
	if !s.close && !s.idle {
		return reply, nil
	}
	for {
		if s.idle {
			// Read until the server goes quiet, but never past the deadline.
			gap := time.Now().Add(idleGap)
			if gap.After(deadline) {
				gap = deadline
			}
			_ = c.SetReadDeadline(gap)
		}
		n, err := c.Read(buf)
		reply = append(reply, buf[:n]...)
		switch {
		case err == nil:
			continue
		case s.close && (errors.Is(err, io.EOF) || isPeerClosed(err)):
		case s.idle && isTimeout(err):
		case errors.Is(err, io.EOF):
			return reply, errors.New("connection closed by the server, but the script does not say \"# close\"")
		default:
			return reply, fmt.Errorf("read: %w", err)
		}
		if s.idle {
			_ = c.SetWriteDeadline(time.Now()) // a server that stopped reading must not stall us
		}
		return reply, waitWrite()
	}
}

// flush empties the cache on its own connection so that each script starts
// from the same state on both servers. Servers started with -F or -Y refuse
// flush_all; their scripts must not depend on an empty cache.
func flush(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(scriptTimeout))
	if _, err := c.Write([]byte("flush_all\r\n")); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	var got []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(got, []byte("\n")) {
		if _, err := c.Read(b); err != nil {
			return fmt.Errorf("flush_all: got %q, then %w", got, err)
		}
		got = append(got, b[0])
	}
	switch string(got) {
	case "OK\r\n", "CLIENT_ERROR flush_all not allowed\r\n", "CLIENT_ERROR unauthenticated\r\n":
		return nil
	}
	return fmt.Errorf("flush_all: got %q, want \"OK\\r\\n\"", got)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isPeerClosed reports errors that mean the server closed the connection: a
// server that closes with unread request bytes makes the kernel send RST
// instead of FIN (ECONNRESET), and writing after that fails (EPIPE).
func isPeerClosed(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// parseScript decodes a script file; see the format at the top of this file.
func parseScript(name string, data []byte) (diffScript, error) {
	s := diffScript{name: name}
	if len(data) == 0 {
		return s, errors.New("empty file")
	}
	if bytes.IndexByte(data, '\r') >= 0 {
		return s, errors.New("literal CR in the file: write \\r")
	}
	text := strings.TrimSuffix(string(data), "\n")
	lines := strings.Split(text, "\n")
	i := 0
	for ; i < len(lines) && strings.HasPrefix(lines[i], "#"); i++ {
		line := strings.TrimSpace(lines[i])
		switch {
		case line == "# close":
			s.close = true
		case line == "# idle":
			s.idle = true
		case line == "# fresh":
			s.fresh = true
		case strings.HasPrefix(line, "# args:"):
			s.args = strings.Join(strings.Fields(strings.TrimPrefix(line, "# args:")), " ")
		}
	}
	if s.close && s.idle {
		return s, errors.New(`"# close" and "# idle" exclude each other`)
	}
	var seg []piece
	empty := true
	for n, line := range lines[i:] {
		if line == `\|` {
			if len(seg) == 0 {
				return s, fmt.Errorf("line %d: sync point with nothing before it", i+n+1)
			}
			s.segments = append(s.segments, seg)
			seg = nil
			continue
		}
		pieces, terminated, err := decodeLine(line)
		if err != nil {
			return s, fmt.Errorf("line %d: %w", i+n+1, err)
		}
		usesCAS := false
		for _, p := range pieces {
			usesCAS = usesCAS || p.cas
		}
		if usesCAS && len(seg) > 0 {
			s.segments = append(s.segments, seg)
			seg = nil
		}
		if terminated {
			pieces = append(pieces, piece{lit: []byte("\r\n")})
		}
		for _, p := range pieces {
			empty = empty && !p.cas && len(p.lit) == 0
		}
		seg = append(seg, pieces...)
	}
	if empty {
		return s, errors.New("empty script")
	}
	s.segments = append(s.segments, seg)
	for _, seg := range s.segments {
		s.mnCounts = append(s.mnCounts, 1+countMNCommands(seg))
	}
	return s, nil
}

// countMNCommands counts the mn commands in a segment: lines, ended by "\n"
// or "\r\n", whose first token is "mn". (A data block holding such a line
// would be miscounted; no script has one.)
func countMNCommands(seg []piece) int {
	var b []byte
	for _, p := range seg {
		b = append(b, p.lit...)
		if p.cas {
			b = append(b, '0')
		}
	}
	n := 0
	lines := bytes.Split(b, []byte("\n"))
	for _, line := range lines[:len(lines)-1] { // the last one has no "\n"
		if f := strings.Fields(string(line)); len(f) > 0 && f[0] == "mn" {
			n++
		}
	}
	return n
}

// decodeLine interprets the escapes of one script line and reports whether
// the line is to be terminated with "\r\n" (no trailing lone backslash).
func decodeLine(line string) (out []piece, terminated bool, err error) {
	var lit []byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		if c != '\\' {
			lit = append(lit, c)
			continue
		}
		if i == len(line)-1 {
			return append(out, piece{lit: lit}), false, nil
		}
		i++
		switch line[i] {
		case 'r':
			lit = append(lit, '\r')
		case 'n':
			lit = append(lit, '\n')
		case 't':
			lit = append(lit, '\t')
		case 's':
			lit = append(lit, ' ')
		case '\\':
			lit = append(lit, '\\')
		case '0':
			lit = append(lit, 0)
		case 'x':
			if i+3 > len(line) {
				return nil, false, fmt.Errorf("short \\x escape at column %d", i)
			}
			v, err := strconv.ParseUint(line[i+1:i+3], 16, 8)
			if err != nil {
				return nil, false, fmt.Errorf("bad \\x escape at column %d: %w", i, err)
			}
			lit = append(lit, byte(v))
			i += 2
		case '{':
			end := strings.IndexByte(line[i:], '}')
			if end < 0 {
				return nil, false, fmt.Errorf("unclosed \\{ at column %d", i)
			}
			count, str, ok := strings.Cut(line[i+1:i+end], "*")
			n, err := strconv.Atoi(count)
			if !ok || err != nil || n < 0 || str == "" {
				return nil, false, fmt.Errorf("bad repetition %q at column %d: want \\{N*S}", line[i:i+end+1], i)
			}
			lit = append(lit, strings.Repeat(str, n)...)
			i += end
		case 'c':
			p := piece{cas: true}
			if i+1 < len(line) && (line[i+1] == '+' || line[i+1] == '-') {
				p.delta = 1
				if line[i+1] == '-' {
					p.delta = -1
				}
				i++
			}
			out = append(out, piece{lit: lit}, p)
			lit = nil
		default:
			return nil, false, fmt.Errorf("unknown escape \\%c at column %d", line[i], i)
		}
	}
	return append(out, piece{lit: lit}), true, nil
}

// replyElem is one line of a reply (with its terminator) or one data block
// (with its "\r\n").
type replyElem struct {
	data   []byte
	isData bool
}

// splitReply cuts a reply into lines and data blocks. A "VALUE k f n [cas]"
// or "VA n ..." line announces n bytes of data plus "\r\n"; everything else
// is a line. An incomplete tail is returned as a last line as is.
func splitReply(b []byte) []replyElem {
	var out []replyElem
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return append(out, replyElem{data: b})
		}
		line := b[:nl+1]
		out = append(out, replyElem{data: line})
		b = b[nl+1:]
		if n, ok := dataLen(line); ok {
			if n+2 > len(b) {
				return append(out, replyElem{data: b, isData: true})
			}
			out = append(out, replyElem{data: b[:n+2], isData: true})
			b = b[n+2:]
		}
	}
	return out
}

// dataLen reports the length of the data block a reply line announces.
func dataLen(line []byte) (int, bool) {
	f := strings.Fields(string(line))
	var tok string
	switch {
	case len(f) >= 4 && f[0] == "VALUE":
		tok = f[3]
	case len(f) >= 2 && f[0] == "VA":
		tok = f[1]
	default:
		return 0, false
	}
	n, err := strconv.Atoi(tok)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// countMN counts complete "MN" lines in a reply, skipping data blocks.
func countMN(b []byte) int {
	n := 0
	for _, e := range splitReply(b) {
		if !e.isData && string(e.data) == "MN\r\n" {
			n++
		}
	}
	return n
}

// lastCAS returns the last CAS value in a reply: the 5th token of a VALUE
// line, a meta "c<n>" return flag or the cas= field of an "me" reply.
func lastCAS(b []byte) (uint64, bool) {
	var cas uint64
	found := false
	for _, e := range splitReply(b) {
		if e.isData {
			continue
		}
		f := strings.Fields(string(e.data))
		if len(f) == 0 {
			continue
		}
		var toks []string
		switch {
		case f[0] == "VALUE" && len(f) == 5:
			toks = f[4:]
		case metaCodes[f[0]]:
			for _, tok := range f[1:] {
				if casFlag.MatchString(tok) {
					toks = append(toks, tok[1:])
				}
			}
		case f[0] == "ME":
			for _, tok := range f[1:] {
				if v, ok := strings.CutPrefix(tok, "cas="); ok {
					toks = append(toks, v)
				}
			}
		}
		for _, tok := range toks {
			if v, err := strconv.ParseUint(tok, 10, 64); err == nil {
				cas, found = v, true
			}
		}
	}
	return cas, found
}

var (
	// casFlag is a meta reply's "c" return flag: the item's CAS value.
	casFlag = regexp.MustCompile(`^c[0-9]+$`)
	// metaFields are the "me" (and lru_crawler metadump) fields whose values
	// are allowed to differ; see normalize.
	metaFields = regexp.MustCompile(`\b(exp|la|cas|cls|size)=-?[0-9]+`)
	// connsStat is a "stats conns" name: it starts with a file descriptor.
	connsStat = regexp.MustCompile(`^[0-9]+:(addr|listen_addr|state|secs_since_last_cmd)$`)
)

// metaCodes are the meta commands' reply codes, which may carry return flags.
// slabClassStat matches the class number in "items:<cls>:" and "<cls>:".
var slabClassStat = regexp.MustCompile(`^(items:)?[0-9]+:`)

var metaCodes = map[string]bool{"HD": true, "VA": true, "EN": true, "NF": true, "NS": true, "EX": true}

// normalize rewrites the parts of a reply that legitimately differ between
// two correct servers, so that the rest can be compared byte for byte:
//
//   - CAS values. Both servers assign CAS from a global counter, but the
//     counter also moves on flush_all and internal stores, so the numbers
//     need not agree: the 5th token of a "VALUE k f n cas" line, the digits
//     of a meta "c<n>" return flag and "cas=<n>" of "me" become <cas>.
//     Whether a CAS comparison succeeds is still checked by the script's
//     EXISTS/STORED/EX/HD replies. A CAS of 0 (no CAS, as with -C) is
//     kept, so that 0 against non-zero is still a difference.
//   - "me" fields exp=, la=, size= and cls=: exp and la are absolute or
//     clock-derived seconds that may tick between the two servers; size
//     and cls depend on the item header layout (tandem's may differ from
//     memcached's by a few bytes and so land in another slab class).
//   - stats: only the set of STAT names is compared (sorted, duplicates
//     removed), never values (pids, times, byte counts, counters differ).
//     Names "<fd>:field" of "stats conns" have the fd replaced, since fd
//     numbers depend on the process; as a set, the number of connections
//     listed does not matter either.
//
// Meta t<n> (TTL left) and l<n> (seconds since last access) are kept: scripts
// use long TTLs, so both servers answer the same in practice.
func normalize(reply []byte) []byte {
	var out []byte
	var stats []string
	flushStats := func() {
		sort.Strings(stats)
		for i, name := range stats {
			if i == 0 || name != stats[i-1] {
				out = append(out, "STAT "+name+"\r\n"...)
			}
		}
		stats = stats[:0]
	}
	for _, e := range splitReply(reply) {
		if e.isData {
			flushStats()
			out = append(out, e.data...)
			continue
		}
		line := string(e.data)
		body := strings.TrimRight(line, "\r\n")
		term := line[len(body):]
		f := strings.Split(body, " ")
		if f[0] == "STAT" && len(f) >= 2 {
			name := f[1]
			if connsStat.MatchString(name) {
				name = "<fd>" + name[strings.IndexByte(name, ':'):]
			}
			// Slab class numbers are a value, not a name: Tandem's default
			// growth factor (1.05) and smaller item header put an item in a
			// different class than memcached's 1.25 does. The set of fields
			// per class must still be the same.
			name = slabClassStat.ReplaceAllString(name, "${1}<cls>:")
			stats = append(stats, name)
			continue
		}
		flushStats()
		switch {
		case f[0] == "VALUE" && len(f) == 5 && f[4] != "0":
			f[4] = "<cas>"
		case metaCodes[f[0]]:
			for i := 1; i < len(f); i++ {
				if casFlag.MatchString(f[i]) && f[i] != "c0" {
					f[i] = "c<cas>"
				}
			}
		case f[0] == "ME" || strings.HasPrefix(f[0], "key="):
			for i := range f {
				if f[i] != "cas=0" {
					f[i] = metaFields.ReplaceAllString(f[i], "$1=<n>")
				}
			}
		}
		out = append(out, strings.Join(f, " ")+term...)
	}
	flushStats()
	return out
}

// shorten cuts long byte strings (1 MiB values) for logs.
func shorten(d []byte) []byte {
	if len(d) <= 300 {
		return d
	}
	return append(append(append([]byte{}, d[:150]...), fmt.Sprintf("...(%d bytes)...", len(d)-300)...), d[len(d)-150:]...)
}

// quoteLines renders a reply one quoted line per reply line, for logs.
func quoteLines(b []byte) string {
	var sb strings.Builder
	for _, e := range splitReply(b) {
		fmt.Fprintf(&sb, "  %q\n", shorten(e.data))
	}
	return sb.String()
}

// TestDiffHarness checks the script decoder and the reply normaliser that
// TestDifferential relies on, without any server.
func TestDiffHarness(t *testing.T) {
	t.Run("decodeLine", func(t *testing.T) {
		for _, tc := range []struct {
			line       string
			want       string
			terminated bool
		}{
			{`get k`, "get k", true},
			{`get k\n\`, "get k\n", false},
			{`\r\n\t\s\\\0\x41\xff`, "\r\n\t \\\x00A\xff", true},
			{`k\{3*ab}z`, "kabababz", true},
			{`abc\`, "abc", false},
			{``, "", true},
		} {
			pieces, terminated, err := decodeLine(tc.line)
			require.NoError(t, err, tc.line)
			var got []byte
			for _, p := range pieces {
				require.False(t, p.cas, tc.line)
				got = append(got, p.lit...)
			}
			require.Equal(t, tc.want, string(got), tc.line)
			require.Equal(t, tc.terminated, terminated, tc.line)
		}
		for _, bad := range []string{`\q`, `\x4`, `\xzz`, `\{3ab}`, `\{3*ab`, `\{x*a}`, `\{3*}`} {
			_, _, err := decodeLine(bad)
			require.Error(t, err, bad)
		}
		pieces, _, err := decodeLine(`cas k 0 0 1 \c+ \c- \c`)
		require.NoError(t, err)
		var deltas []int64
		for _, p := range pieces {
			if p.cas {
				deltas = append(deltas, p.delta)
			}
		}
		require.Equal(t, []int64{1, -1, 0}, deltas)
	})

	t.Run("parseScript", func(t *testing.T) {
		s, err := parseScript("x", []byte("# args: -A  -C\n# close\n# fresh\n# a comment\nset k 0 0 1\na\ngets k\nmn\nmn\\n\\\n\\|\nversion\ncas k 0 0 1 \\c\nb\n"))
		require.NoError(t, err)
		require.Equal(t, "-A -C", s.args)
		require.True(t, s.close)
		require.True(t, s.fresh)
		require.False(t, s.idle)
		require.Len(t, s.segments, 3)
		require.Equal(t, []int{3, 1, 1}, s.mnCounts)
		require.Equal(t, "set k 0 0 1\r\na\r\ngets k\r\nmn\r\nmn\n<harness: mn, read to MN>version\r\n<harness: mn, read to MN>cas k 0 0 1 \\c\r\nb\r\n", string(s.requestText()))

		for _, bad := range []string{"", "# close\n", "\\|\nversion\n", "# close\n# idle\nversion\n", "version\r\n"} {
			_, err := parseScript("bad", []byte(bad))
			require.Error(t, err, "%q", bad)
		}
	})

	t.Run("splitReply", func(t *testing.T) {
		reply := []byte("VALUE k 0 4\r\nMN\r\n\r\nVA 4 c5\r\nMN\r\n\r\nMN\r\n")
		require.Equal(t, 1, countMN(reply), "MN inside data blocks is data")
		require.Equal(t, 0, countMN([]byte("VALUE k 0 10\r\nMN\r\n")), "an incomplete data block")
		cas, ok := lastCAS([]byte("VALUE a 0 1 7\r\nx\r\nEND\r\nHD c9 kk\r\nME k exp=-1 la=0 cas=12 fetch=no cls=1 size=3\r\n"))
		require.True(t, ok)
		require.Equal(t, uint64(12), cas)
		_, ok = lastCAS([]byte("VALUE a 0 1\r\nc99\r\nEND\r\n"))
		require.False(t, ok, "the data block c99 is not a CAS")
	})

	t.Run("normalize", func(t *testing.T) {
		for _, tc := range []struct{ in, want string }{
			{"VALUE k 1 2 345\r\nab\r\nEND\r\n", "VALUE k 1 2 <cas>\r\nab\r\nEND\r\n"},
			{"VALUE k 1 2 0\r\nab\r\nEND\r\n", "VALUE k 1 2 0\r\nab\r\nEND\r\n"},
			{"VALUE k 1 2\r\nab\r\nEND\r\n", "VALUE k 1 2\r\nab\r\nEND\r\n"},
			{"HD c123 kfoo c0\r\nVA 3 t-1 c9 s3\r\nc12\r\nEN\r\n", "HD c<cas> kfoo c0\r\nVA 3 t-1 c<cas> s3\r\nc12\r\nEN\r\n"},
			{"ME k exp=-1 la=3 cas=7 fetch=no cls=1 size=70\r\n", "ME k exp=<n> la=<n> cas=<n> fetch=no cls=<n> size=<n>\r\n"},
			{"ME k exp=5 la=3 cas=0 fetch=yes cls=1 size=70\r\n", "ME k exp=<n> la=<n> cas=0 fetch=yes cls=<n> size=<n>\r\n"},
			{"key=k exp=-1 la=17 cas=2 fetch=no cls=1 size=82\nEND\r\n", "key=k exp=<n> la=<n> cas=<n> fetch=no cls=<n> size=<n>\nEND\r\n"},
			{"STAT pid 1\r\nSTAT b 2\r\nSTAT a 3\r\nSTAT b 4\r\nEND\r\n", "STAT a\r\nSTAT b\r\nSTAT pid\r\nEND\r\n"},
			{"STAT 23:addr tcp:x\r\nSTAT 24:addr tcp:y\r\nSTAT 24:state conn_new_cmd\r\nSTAT items:1:number 3\r\nEND\r\n", "STAT <fd>:addr\r\nSTAT <fd>:state\r\nSTAT items:<cls>:number\r\nEND\r\n"},
			{"VA 9\r\nSTAT a 1\r\n\r\nMN\r\n", "VA 9\r\nSTAT a 1\r\n\r\nMN\r\n"},
			{"ERROR\r\nCLIENT_ERROR bad data chunk\r\n", "ERROR\r\nCLIENT_ERROR bad data chunk\r\n"},
		} {
			require.Equal(t, tc.want, string(normalize([]byte(tc.in))), "%q", tc.in)
		}
	})
}
