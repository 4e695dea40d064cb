package main

// End-to-end tests of replication: groups of real tandem processes on
// loopback, each started with -v so that a failure shows their link logs,
// driven by real clients (gomemcache and raw text connections), with peers
// stopped, killed and restarted under them.
//
//	go test -race -count=1 -run TestRepl ./cmd/tandem/
//
// Every wait polls with a deadline; no assertion rests on a bare sleep.
// e2eBinary and e2eClient come from clients_test.go, startProc, dialWait
// and tcpArgs from lifecycle_test.go, shorten from difftest_test.go, breq
// and the binary opcodes from binary_test.go.

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/stretchr/testify/require"
)

const (
	// replSyncWait bounds how long a group may take to reach in_sync: a
	// link dials with a backoff of at most 2 s and a resync of a small
	// store takes milliseconds, so this is several backoffs.
	replSyncWait = 10 * time.Second
	// replPoll is the polling interval of every wait: short against the
	// waits, long enough not to load the nodes.
	replPoll = 20 * time.Millisecond
	// replIOTimeout bounds one request's round trip on a text connection.
	replIOTimeout = 5 * time.Second
)

// replNode is one member of a replica group started by a test.
type replNode struct {
	id       string // --node-id
	addr     string // client address
	replAddr string // --repl-listen
	args     []string
	p        *proc
}

// newReplGroup prepares (without starting) n nodes named a, b, c... that
// list each other as peers, each with extra flags.
func newReplGroup(t *testing.T, n int, extra ...string) []*replNode {
	t.Helper()
	ports := freePorts(t, 2*n)
	nodes := make([]*replNode, n)
	for i := range nodes {
		nodes[i] = &replNode{
			id:       string(rune('a' + i)),
			addr:     "127.0.0.1:" + strconv.Itoa(ports[2*i]),
			replAddr: "127.0.0.1:" + strconv.Itoa(ports[2*i+1]),
		}
	}
	for i, nd := range nodes {
		var peers []string
		for j, o := range nodes {
			if j != i {
				peers = append(peers, o.replAddr)
			}
		}
		nd.args = tcpArgs(ports[2*i], append([]string{"-v", "--node-id", nd.id,
			"--repl-listen", nd.replAddr, "--peers", strings.Join(peers, ",")}, extra...)...)
	}
	return nodes
}

// startReplGroup starts n nodes and waits until every link of every node is
// in sync.
func startReplGroup(t *testing.T, n int, extra ...string) []*replNode {
	t.Helper()
	nodes := newReplGroup(t, n, extra...)
	for _, nd := range nodes {
		nd.start(t)
	}
	deadline := time.Now().Add(replSyncWait)
	for _, nd := range nodes {
		waitInSync(t, nd.addr, deadline, nodes...)
	}
	return nodes
}

// start starts the node (again, on the same ports) and waits until its
// client port answers.
func (nd *replNode) start(t *testing.T) {
	t.Helper()
	nd.p = startProc(t, e2eBinary(t), nd.args...)
	c := dialWait(t, "tcp", nd.addr)
	c.Close()
}

// kill SIGKILLs the node and waits until it is gone, sockets closed.
func (nd *replNode) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, nd.p.cmd.Process.Signal(syscall.SIGKILL))
	select {
	case <-nd.p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("node %s did not die on SIGKILL", nd.id)
	}
}

// logs is every node's output, for failure messages.
func logs(nodes []*replNode) string {
	var b strings.Builder
	for _, nd := range nodes {
		if nd.p != nil {
			fmt.Fprintf(&b, "--- node %s (%s, repl %s):\n%s", nd.id, nd.addr, nd.replAddr, nd.p.out.String())
		}
	}
	return b.String()
}

// replStats reads "stats <which>" ("" for plain stats) from a node.
func replStats(addr, which string) (map[string]string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(replIOTimeout)); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, strings.TrimSpace("stats "+which)+"\r\n"); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	m := map[string]string{}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "END" {
			return m, nil
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 || f[0] != "STAT" {
			return nil, fmt.Errorf("stats %s: unexpected line %q", which, line)
		}
		m[f[1]] = f[2]
	}
}

// allPeers tells whether every peerN:state line of a "stats replication"
// says state (and there is at least one).
func allPeers(st map[string]string, state string) bool {
	n := 0
	for k, v := range st {
		if strings.HasPrefix(k, "peer") && strings.HasSuffix(k, ":state") {
			if v != state {
				return false
			}
			n++
		}
	}
	return n > 0
}

// peerState is the state of the link to the peer whose replication
// address is peerAddr, from a "stats replication".
func peerState(st map[string]string, peerAddr string) string {
	for k, v := range st {
		if v == peerAddr && strings.HasPrefix(k, "peer") && strings.HasSuffix(k, ":addr") {
			return st[strings.TrimSuffix(k, ":addr")+":state"]
		}
	}
	return "(no peer " + peerAddr + ")"
}

// waitReplState polls nd's "stats replication" until cond holds, failing
// the test at deadline with the last stats and the nodes' logs.
func waitReplState(t *testing.T, nd *replNode, deadline time.Time, nodes []*replNode, cond func(map[string]string) bool) map[string]string {
	t.Helper()
	return waitStats(t, nd, "replication", deadline, nodes, cond)
}

// waitStats polls a node's "stats <which>" until cond holds.
func waitStats(t *testing.T, nd *replNode, which string, deadline time.Time, nodes []*replNode, cond func(map[string]string) bool) map[string]string {
	t.Helper()
	for {
		st, err := replStats(nd.addr, which)
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: state not reached by the deadline (err %v); stats %s:\n%s\n%s",
				nd.id, err, which, fmtStats(st), logs(nodes))
		}
		time.Sleep(replPoll) // polling interval, bounded by deadline
	}
}

// waitInSync polls a node's "stats replication" until every peer shows
// in_sync; a failure shows the logs of nodes.
func waitInSync(t *testing.T, addr string, deadline time.Time, nodes ...*replNode) {
	t.Helper()
	id := addr
	for _, nd := range nodes {
		if nd.addr == addr {
			id = nd.id
		}
	}
	waitReplState(t, &replNode{id: id, addr: addr}, deadline, nodes,
		func(st map[string]string) bool { return allPeers(st, "in_sync") })
}

func fmtStats(st map[string]string) string {
	keys := make([]string, 0, len(st))
	for k := range st {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s %s\n", k, st[k])
	}
	return b.String()
}

func statUint(t *testing.T, st map[string]string, name string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(st[name], 10, 64)
	require.NoError(t, err, "stat %s in:\n%s", name, fmtStats(st))
	return v
}

// textClient is one raw text-protocol connection. Its methods return
// errors rather than failing the test, so that writer goroutines can use
// it; the must* forms are for the test goroutine.
type textClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialText(addr string) (*textClient, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	return &textClient{c: c, r: bufio.NewReader(c)}, nil
}

func mustText(t *testing.T, addr string) *textClient {
	t.Helper()
	tc, err := dialText(addr)
	require.NoError(t, err)
	t.Cleanup(func() { tc.c.Close() })
	return tc
}

// do sends req and returns the first reply line, \r\n included.
func (tc *textClient) do(req string) (string, error) {
	if err := tc.c.SetDeadline(time.Now().Add(replIOTimeout)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(tc.c, req); err != nil {
		return "", err
	}
	return tc.r.ReadString('\n')
}

func (tc *textClient) mustDo(t *testing.T, req string) string {
	t.Helper()
	line, err := tc.do(req)
	require.NoError(t, err, "request %q", req)
	return line
}

// textItem is a "gets" hit.
type textItem struct {
	value string
	flags uint32
	cas   uint64
}

// gets reads one key with its CAS; ok is false on a miss.
func (tc *textClient) gets(key string) (it textItem, ok bool, err error) {
	line, err := tc.do("gets " + key + "\r\n")
	if err != nil {
		return it, false, err
	}
	if line == "END\r\n" {
		return it, false, nil
	}
	f := strings.Fields(line)
	if len(f) != 5 || f[0] != "VALUE" || f[1] != key {
		return it, false, fmt.Errorf("gets %s: reply %q", key, line)
	}
	flags, err1 := strconv.ParseUint(f[2], 10, 32)
	n, err2 := strconv.Atoi(f[3])
	cas, err3 := strconv.ParseUint(f[4], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return it, false, fmt.Errorf("gets %s: reply %q: %w", key, line, err)
	}
	data := make([]byte, n+2)
	if _, err := io.ReadFull(tc.r, data); err != nil {
		return it, false, err
	}
	end, err := tc.r.ReadString('\n')
	if err != nil {
		return it, false, err
	}
	if end != "END\r\n" || string(data[n:]) != "\r\n" {
		return it, false, fmt.Errorf("gets %s: bad data block or end %q", key, end)
	}
	return textItem{value: string(data[:n]), flags: uint32(flags), cas: cas}, true, nil
}

func (tc *textClient) mustGets(t *testing.T, key string) (textItem, bool) {
	t.Helper()
	it, ok, err := tc.gets(key)
	require.NoError(t, err)
	return it, ok
}

func setReq(key, value string) string {
	return fmt.Sprintf("set %s 0 0 %d\r\n%s\r\n", key, len(value), value)
}

// requireSame requires key to be present on every client with one value,
// flags and CAS, and returns it.
func requireSame(t *testing.T, key string, clients []*textClient, names []string) textItem {
	t.Helper()
	var first textItem
	for i, tc := range clients {
		it, ok := tc.mustGets(t, key)
		require.True(t, ok, "key %q missing on node %s", key, names[i])
		if i == 0 {
			first = it
			require.NotZero(t, it.cas, "key %q on node %s: no CAS", key, names[i])
			continue
		}
		require.True(t, first.value == it.value, "key %q: value on node %s, %q, differs from node %s's, %q",
			key, names[i], shorten([]byte(it.value)), names[0], shorten([]byte(first.value)))
		require.Equal(t, first.flags, it.flags, "key %q: flags on node %s differ from node %s", key, names[i], names[0])
		require.Equal(t, first.cas, it.cas, "key %q: CAS on node %s differs from node %s", key, names[i], names[0])
	}
	return first
}

func requireMissEverywhere(t *testing.T, key string, clients []*textClient, names []string) {
	t.Helper()
	for i, tc := range clients {
		it, ok := tc.mustGets(t, key)
		require.False(t, ok, "key %q still on node %s: %+v", key, names[i], it)
	}
}

// TestReplReadYourWriteEverywhere: under ack=all a write's reply means every
// peer holds it, so a read on any node right after the reply sees it, with
// the same flags and CAS, whatever the command and whichever node took it.
func TestReplReadYourWriteEverywhere(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) {
			nodes := startReplGroup(t, n)
			var clients []*textClient
			var names []string
			var mcs []*memcache.Client
			for _, nd := range nodes {
				clients = append(clients, mustText(t, nd.addr))
				names = append(names, nd.id)
				mcs = append(mcs, e2eClient(t, nd.addr, 1))
			}
			st, err := replStats(nodes[0].addr, "")
			require.NoError(t, err)
			require.Equal(t, strconv.Itoa(n-1), st["repl_peers_in_sync"], fmtStats(st))
			require.Equal(t, "all", st["repl_ack"])

			// The writer rotates over the nodes; every 50th value is larger
			// than a socket buffer, so that its frame is written in pieces.
			for i := range 200 {
				w := i % n
				key := fmt.Sprintf("ryw:%d", i)
				val := fmt.Sprintf("value %d from %s|", i, nodes[w].id) + strings.Repeat(string(rune('a'+i%26)), i)
				if i%50 == 49 {
					val += strings.Repeat("L", 300<<10)
				}
				require.NoError(t, mcs[w].Set(&memcache.Item{Key: key, Value: []byte(val), Flags: uint32(i * 7)}), "set %q on %s", key, nodes[w].id)
				// Read the other nodes first, then the writer.
				order := append(slices.Clone(clients[w+1:]), clients[:w+1]...)
				orderNames := append(slices.Clone(names[w+1:]), names[:w+1]...)
				it := requireSame(t, key, order, orderNames)
				require.Equal(t, val, it.value, "key %q", key)
				require.Equal(t, uint32(i*7), it.flags, "key %q", key)
			}

			last := clients[n-1]
			// delete on B: a miss everywhere at once.
			require.Equal(t, "DELETED\r\n", clients[1].mustDo(t, "delete ryw:0\r\n"))
			requireMissEverywhere(t, "ryw:0", clients, names)
			// A delete of the deleted key finds nothing anywhere.
			require.Equal(t, "NOT_FOUND\r\n", last.mustDo(t, "delete ryw:0\r\n"))

			// touch takes a new version, the same on every node.
			before := requireSame(t, "ryw:1", clients, names)
			require.Equal(t, "TOUCHED\r\n", last.mustDo(t, "touch ryw:1 3600\r\n"))
			after := requireSame(t, "ryw:1", clients, names)
			require.Equal(t, before.value, after.value)
			require.NotEqual(t, before.cas, after.cas, "touch took no new version")

			// incr on B, decr on the last node, append and prepend on A.
			require.Equal(t, "STORED\r\n", clients[0].mustDo(t, setReq("ryw:ctr", "10")))
			require.Equal(t, "15\r\n", clients[1].mustDo(t, "incr ryw:ctr 5\r\n"))
			require.Equal(t, "15", requireSame(t, "ryw:ctr", clients, names).value)
			require.Equal(t, "12\r\n", last.mustDo(t, "decr ryw:ctr 3\r\n"))
			require.Equal(t, "12", strings.TrimRight(requireSame(t, "ryw:ctr", clients, names).value, " "))
			require.Equal(t, "STORED\r\n", clients[1].mustDo(t, "append ryw:2 0 0 4\r\n-end\r\n"))
			require.True(t, strings.HasSuffix(requireSame(t, "ryw:2", clients, names).value, "-end"))
			require.Equal(t, "STORED\r\n", last.mustDo(t, "prepend ryw:2 0 0 6\r\nbegin-\r\n"))
			require.True(t, strings.HasPrefix(requireSame(t, "ryw:2", clients, names).value, "begin-"))
			// add and replace, refused or not, agree everywhere.
			require.Equal(t, "NOT_STORED\r\n", clients[1].mustDo(t, "add ryw:3 0 0 1\r\nx\r\n"))
			require.Equal(t, "STORED\r\n", clients[1].mustDo(t, "replace ryw:3 5 0 1\r\nx\r\n"))
			it := requireSame(t, "ryw:3", clients, names)
			require.Equal(t, textItem{value: "x", flags: 5, cas: it.cas}, it)
			// cas on the last node with the CAS read on A.
			it, _ = clients[0].mustGets(t, "ryw:3")
			require.Equal(t, "STORED\r\n", last.mustDo(t, fmt.Sprintf("cas ryw:3 9 0 1 %d\r\ny\r\n", it.cas)))
			it2 := requireSame(t, "ryw:3", clients, names)
			require.Equal(t, "y", it2.value)
			require.Equal(t, uint32(9), it2.flags)

			// Meta commands, gat and binary writes replicate the same way.
			require.Equal(t, "HD\r\n", clients[1].mustDo(t, "ms ryw:meta 2 F3 T0\r\nhi\r\n"))
			it = requireSame(t, "ryw:meta", clients, names)
			require.Equal(t, textItem{value: "hi", flags: 3, cas: it.cas}, it, "ms")
			require.Equal(t, "VA 1\r\n", last.mustDo(t, "ma ryw:meta-n N0 J4 v\r\n"))
			line, err := last.r.ReadString('\n')
			require.NoError(t, err)
			require.Equal(t, "4\r\n", line)
			require.Equal(t, "4", requireSame(t, "ryw:meta-n", clients, names).value, "ma autovivify")
			before = requireSame(t, "ryw:meta", clients, names)
			require.Equal(t, "VALUE ryw:meta 3 2\r\n", clients[0].mustDo(t, "gat 3600 ryw:meta\r\n"))
			_, err = clients[0].r.ReadString('\n') // hi
			require.NoError(t, err)
			_, err = clients[0].r.ReadString('\n') // END
			require.NoError(t, err)
			after = requireSame(t, "ryw:meta", clients, names)
			require.NotEqual(t, before.cas, after.cas, "gat took no new version")
			require.Equal(t, "HD s0 W\r\n", clients[1].mustDo(t, "mg ryw:vivified N30 s\r\n"))
			require.Equal(t, "", requireSame(t, "ryw:vivified", clients, names).value, "mg N autovivify")
			require.Equal(t, "HD\r\n", last.mustDo(t, "md ryw:meta\r\n"))
			requireMissEverywhere(t, "ryw:meta", clients, names)
			status, cas := replBinary(t, nodes[1].addr, breq(bSet, "ryw:bin", flagsExp(77, 0), "binary value"))
			require.Equal(t, uint16(0), status)
			require.Equal(t, textItem{value: "binary value", flags: 77, cas: cas}, requireSame(t, "ryw:bin", clients, names), "binary set")
			status, cas = replBinary(t, nodes[0].addr, breq(bIncr, "ryw:bin-ctr", arithExt(1, 41, 0), ""))
			require.Equal(t, uint16(0), status)
			require.Equal(t, textItem{value: "41", cas: cas}, requireSame(t, "ryw:bin-ctr", clients, names), "binary incr creating")
			status, _ = replBinary(t, nodes[n-1].addr, breq(bDelete, "ryw:bin", nil, ""))
			require.Equal(t, uint16(0), status)
			requireMissEverywhere(t, "ryw:bin", clients, names)

			// flush_all on A empties B at once; a set right after it, in the
			// same second, survives the flush on every node.
			require.Equal(t, "OK\r\n", clients[0].mustDo(t, "flush_all\r\n"))
			for _, k := range []string{"ryw:1", "ryw:2", "ryw:3", "ryw:ctr", "ryw:199", "ryw:bin-ctr", "ryw:vivified"} {
				requireMissEverywhere(t, k, clients, names)
			}
			require.Equal(t, "STORED\r\n", clients[0].mustDo(t, setReq("ryw:after-flush", "kept")))
			require.Equal(t, "kept", requireSame(t, "ryw:after-flush", clients, names).value)
			require.Equal(t, "STORED\r\n", last.mustDo(t, setReq("ryw:after-flush-2", "kept too")))
			require.Equal(t, "kept too", requireSame(t, "ryw:after-flush-2", clients, names).value)

			// Nothing was acknowledged without a peer.
			st, err = replStats(nodes[0].addr, "replication")
			require.NoError(t, err)
			require.Equal(t, "0", st["writes_degraded"], fmtStats(st))
			require.True(t, allPeers(st, "in_sync"), fmtStats(st))
		})
	}
}

// errStoppedByTest ends a writer that outlived its node.
var errStoppedByTest = errors.New("stopped by the test")

// replBinary sends one binary request on a connection of its own and
// returns the response's status and CAS.
func replBinary(t *testing.T, addr string, req bpkt) (status uint16, cas uint64) {
	t.Helper()
	c := dialWait(t, "tcp", addr)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(replIOTimeout)))
	_, err := c.Write(req.bytes())
	require.NoError(t, err)
	var h [24]byte
	_, err = io.ReadFull(c, h[:])
	require.NoError(t, err)
	body := make([]byte, binary.BigEndian.Uint32(h[8:]))
	_, err = io.ReadFull(c, body)
	require.NoError(t, err)
	status = binary.BigEndian.Uint16(h[6:])
	require.Zero(t, status, "binary op 0x%02x: status %d, body %q", req.op, status, body)
	return status, binary.BigEndian.Uint64(h[16:])
}

// TestReplDurabilitySIGKILL: every write a node acknowledged under ack=all
// is on its peer when the node is SIGKILLed in the middle of a write storm.
func TestReplDurabilitySIGKILL(t *testing.T) {
	// A long --repl-timeout: on a loaded machine a peer slower than the
	// default 500 ms would be marked out of sync and writes acknowledged
	// without it, by design; this test is about the writes that the rule
	// did cover.
	nodes := startReplGroup(t, 2, "--repl-timeout", "10s")
	a, b := nodes[0], nodes[1]

	const (
		writers = 8
		hotKeys = 4 // per writer: overwritten with increasing versions
	)
	type acked struct {
		plain map[string]string // distinct keys: the value acknowledged
		hot   map[string]int    // overwritten keys: the last version acknowledged
		err   error             // what stopped the writer
		sent  int
	}
	// A is killed once this many writes are acknowledged: thousands, in the
	// middle of the storm.
	const killAfter = 3000
	var ackedSoFar atomic.Int64
	results := make([]acked, writers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[g]
			res.plain, res.hot = map[string]string{}, map[string]int{}
			tc, err := dialText(a.addr)
			if err != nil {
				res.err = err
				return
			}
			defer tc.c.Close()
			for n := 0; ; n++ {
				select {
				case <-stop:
					res.err = errStoppedByTest
					return
				default:
				}
				var key, val string
				if n%3 == 0 {
					key, val = fmt.Sprintf("dur:g%d:hot%d", g, (n/3)%hotKeys), fmt.Sprintf("v%09d", n)
				} else {
					key = fmt.Sprintf("dur:g%d:n%d", g, n)
					val = fmt.Sprintf("g%d-n%d-", g, n) + strings.Repeat("z", n%200)
				}
				res.sent++
				line, err := tc.do(setReq(key, val))
				if err != nil {
					res.err = err
					return
				}
				if line != "STORED\r\n" {
					res.err = fmt.Errorf("set %s: %q", key, line)
					return
				}
				if n%3 == 0 {
					res.hot[key] = n
				} else {
					res.plain[key] = val
				}
				ackedSoFar.Add(1)
			}
		}()
	}
	// Kill A in the middle of the storm, reading its degraded count first.
	var degradedBeforeKill string
	deadline := time.Now().Add(30 * time.Second)
	for ackedSoFar.Load() < killAfter {
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("only %d writes acknowledged in 30 s\n%s", ackedSoFar.Load(), logs(nodes))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if st, err := replStats(a.addr, "replication"); err == nil {
		degradedBeforeKill = st["writes_degraded"] + " (peer0:state " + st["peer0:state"] + ")"
	}
	require.NoError(t, a.p.cmd.Process.Signal(syscall.SIGKILL))
	// The writers stop on their first error; if one hangs, stop it.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		close(stop)
		<-done
		t.Fatalf("writers still running 15 s after A was killed\n%s", logs(nodes))
	}
	<-a.p.exited

	// Every acknowledged write must be on B.
	mc := e2eClient(t, b.addr, 1)
	var ackedN, verified, lost, newer int
	var lostKeys []string
	for g := range results {
		res := &results[g]
		var keys []string
		for k := range res.plain {
			keys = append(keys, k)
		}
		for k := range res.hot {
			keys = append(keys, k)
		}
		for chunk := range slices.Chunk(keys, 100) {
			got, err := mc.GetMulti(chunk)
			require.NoError(t, err, "reading from B")
			for _, k := range chunk {
				ackedN++
				it, ok := got[k]
				switch want, plain := res.plain[k]; {
				case !ok:
					lost++
					lostKeys = append(lostKeys, k+" (missing)")
				case plain && string(it.Value) == want:
					verified++
				case plain:
					lost++
					lostKeys = append(lostKeys, fmt.Sprintf("%s (value %q, acked %q)", k, shorten(it.Value), want))
				default:
					v, err := strconv.Atoi(strings.TrimPrefix(string(it.Value), "v"))
					switch {
					case err != nil || v < res.hot[k]:
						lost++
						lostKeys = append(lostKeys, fmt.Sprintf("%s (value %q, acked v%09d)", k, it.Value, res.hot[k]))
					case v > res.hot[k]:
						newer++ // a later write B got but A never acknowledged
						verified++
					default:
						verified++
					}
				}
			}
		}
	}
	sent := 0
	for g := range results {
		sent += results[g].sent
		require.NotErrorIs(t, results[g].err, errStoppedByTest)
	}
	t.Logf("writes sent %d, acked %d keys, verified on B %d (%d with a later unacknowledged version), lost %d; A's writes_degraded before the kill: %s",
		sent, ackedN, verified, newer, lost, degradedBeforeKill)
	// Hot keys are overwritten, so fewer keys than writes: at least the
	// distinct ones, two in three of killAfter.
	require.GreaterOrEqual(t, ackedN, killAfter*2/3, "writers stopped with %v", results[0].err)
	if lost > 0 {
		t.Fatalf("%d acknowledged writes lost on B, e.g. %v\n%s", lost, lostKeys[:min(len(lostKeys), 10)], logs(nodes))
	}
	require.Equal(t, 0, lost)
}

// TestReplConcurrentArith: concurrent incr and append on one node end equal
// on both, with no update lost, and a CAS token is good for exactly one
// write across the group.
func TestReplConcurrentArith(t *testing.T) {
	nodes := startReplGroup(t, 3)
	a, b := nodes[0], nodes[1]
	ca, cb := mustText(t, a.addr), mustText(t, b.addr)
	both, names := []*textClient{ca, cb, mustText(t, nodes[2].addr)}, []string{"a", "b", "c"}

	const (
		incrClients   = 8
		incrs         = 200
		decrClients   = 4
		decrs         = 100
		decrFrom      = 100000
		appendClients = 4
		appends       = 50
	)
	require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq("arith:ctr", "0")))
	require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq("arith:down", strconv.Itoa(decrFrom))))
	require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq("arith:log", "")))
	var wg sync.WaitGroup
	replies := make([][]uint64, incrClients)
	decrReplies := make([][]uint64, decrClients)
	errs := make(chan error, incrClients+decrClients+appendClients)
	// client runs fn on a connection of its own to a.
	client := func(fn func(tc *textClient) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tc, err := dialText(a.addr)
			if err == nil {
				defer tc.c.Close()
				err = fn(tc)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	// arith runs n of cmd, collecting the values replied into *out.
	arith := func(cmd string, n int, out *[]uint64) func(tc *textClient) error {
		return func(tc *textClient) error {
			for range n {
				line, err := tc.do(cmd)
				if err != nil {
					return err
				}
				v, err := strconv.ParseUint(strings.TrimSpace(line), 10, 64)
				if err != nil {
					return fmt.Errorf("%q: reply %q", cmd, line)
				}
				*out = append(*out, v)
			}
			return nil
		}
	}
	for g := range incrClients {
		client(arith("incr arith:ctr 1\r\n", incrs, &replies[g]))
	}
	for g := range decrClients {
		client(arith("decr arith:down 1\r\n", decrs, &decrReplies[g]))
	}
	for g := range appendClients {
		client(func(tc *textClient) error {
			for i := range appends {
				tok := fmt.Sprintf("<%d.%03d>", g, i)
				line, err := tc.do(fmt.Sprintf("append arith:log 0 0 %d\r\n%s\r\n", len(tok), tok))
				if err != nil {
					return err
				}
				if line != "STORED\r\n" {
					return fmt.Errorf("append: reply %q", line)
				}
			}
			return nil
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err, logs(nodes))
	}

	// Under ack=all both are equal as soon as the clients have their replies.
	ctr := requireSame(t, "arith:ctr", both, names)
	require.Equal(t, strconv.Itoa(incrClients*incrs), ctr.value)
	var all []uint64
	for _, r := range replies {
		all = append(all, r...)
	}
	slices.Sort(all)
	for i, v := range all {
		require.Equal(t, uint64(i+1), v, "incr replies are not 1..%d: every incr must see its own value", incrClients*incrs)
	}
	down := requireSame(t, "arith:down", both, names)
	// decr writes a shorter number in place, padded with spaces, as memcached does.
	require.Equal(t, strconv.Itoa(decrFrom-decrClients*decrs), strings.TrimRight(down.value, " "))
	all = all[:0]
	for _, r := range decrReplies {
		all = append(all, r...)
	}
	slices.Sort(all)
	for i, v := range all {
		require.Equal(t, uint64(decrFrom-decrClients*decrs+i), v, "every decr must see its own value")
	}
	log := requireSame(t, "arith:log", both, names)
	for g := range appendClients {
		for i := range appends {
			tok := fmt.Sprintf("<%d.%03d>", g, i)
			require.Equal(t, 1, strings.Count(log.value, tok), "append %s appears %d times", tok, strings.Count(log.value, tok))
		}
	}
	require.Len(t, log.value, appendClients*appends*len("<0.000>"))

	t.Run("cas token used on B then A", func(t *testing.T) {
		it, _ := ca.mustGets(t, "arith:ctr")
		require.Equal(t, "STORED\r\n", cb.mustDo(t, fmt.Sprintf("cas arith:ctr 0 0 3 %d\r\nfrB\r\n", it.cas)))
		require.Equal(t, "EXISTS\r\n", ca.mustDo(t, fmt.Sprintf("cas arith:ctr 0 0 3 %d\r\nfrA\r\n", it.cas)))
		require.Equal(t, "frB", requireSame(t, "arith:ctr", both, names).value)
	})

	t.Run("cas token used on A and B at once", func(t *testing.T) {
		// Two clients race with one token, one on each node: only one
		// may be told STORED, and both nodes must end with its value.
		const rounds = 20
		ca2, cb2 := mustText(t, a.addr), mustText(t, b.addr)
		var doubles []string
		for round := range rounds {
			key := fmt.Sprintf("arith:race%d", round)
			require.Equal(t, "STORED\r\n", ca2.mustDo(t, setReq(key, "start")))
			it, _ := ca2.mustGets(t, key)
			var ra, rb string
			var ea, eb error
			var start, wgr sync.WaitGroup
			start.Add(1)
			wgr.Add(2)
			go func() {
				defer wgr.Done()
				start.Wait()
				ra, ea = ca2.do(fmt.Sprintf("cas %s 0 0 1 %d\r\nA\r\n", key, it.cas))
			}()
			go func() {
				defer wgr.Done()
				start.Wait()
				rb, eb = cb2.do(fmt.Sprintf("cas %s 0 0 1 %d\r\nB\r\n", key, it.cas))
			}()
			start.Done()
			wgr.Wait()
			require.NoError(t, errors.Join(ea, eb))
			final := requireSame(t, key, both, names)
			stored := 0
			for _, r := range []string{ra, rb} {
				require.Contains(t, []string{"STORED\r\n", "EXISTS\r\n"}, r)
				if r == "STORED\r\n" {
					stored++
				}
			}
			if stored != 1 {
				doubles = append(doubles, fmt.Sprintf("round %d: A %q, B %q, final %q", round, ra, rb, final.value))
				continue
			}
			winner := "A"
			if rb == "STORED\r\n" {
				winner = "B"
			}
			require.Equal(t, winner, final.value, "round %d: the node that answered STORED lost its write", round)
		}
		require.Empty(t, doubles, "one CAS token was accepted on both nodes (a write acknowledged STORED and then lost) in %d of %d rounds", len(doubles), rounds)
	})
}

// TestReplPeerStoppedAndKilled: a peer that stops answering (SIGSTOP) costs
// writes one timeout and is then left behind; it catches up when it
// continues. A killed peer costs nothing; a restarted one is refilled.
func TestReplPeerStoppedAndKilled(t *testing.T) {
	const timeout = 300 * time.Millisecond
	// -m 128: the 40 MB written while B is stopped must fit.
	nodes := startReplGroup(t, 2, "--repl-timeout", timeout.String(), "-m", "128")
	a, b := nodes[0], nodes[1]
	ca := mustText(t, a.addr)
	written := map[string]string{}
	set := func(key, val string, within time.Duration) {
		t.Helper()
		start := time.Now()
		require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq(key, val)), "set %s", key)
		took := time.Since(start)
		require.Less(t, took, within, "set %s on A took %v\n%s", key, took, logs(nodes))
		written[key] = val
	}
	set("pk:before", "before", timeout)

	// B stopped: the first write waits for the timeout, then B is out of
	// sync and writes go on without it.
	stopPeer(t, b)
	for i := range 10 {
		set(fmt.Sprintf("pk:stopped%d", i), fmt.Sprintf("while B was stopped %d", i), timeout+time.Second)
	}
	st, err := replStats(a.addr, "replication")
	require.NoError(t, err)
	require.Equal(t, "out_of_sync", st["peer0:state"], fmtStats(st))
	// More than the socket buffers hold (loopback's may grow to 4 MiB
	// sent plus 32 MiB received): A's writer to B blocks, and still no
	// client write waits for it; the writer's deadline drops the link.
	for i := range 400 {
		set(fmt.Sprintf("pk:stopped-big%d", i), strings.Repeat(string(rune('A'+i%26)), 100<<10), timeout+time.Second)
	}
	waitReplState(t, a, time.Now().Add(replSyncWait), nodes, func(st map[string]string) bool { return st["peer0:state"] == "connecting" })
	set("pk:stopped-dropped", "after the link to the stopped B was dropped", timeout)
	require.GreaterOrEqual(t, statUint(t, st, "writes_degraded"), uint64(1), fmtStats(st))
	require.GreaterOrEqual(t, statUint(t, st, "peer0:timeouts"), uint64(1), fmtStats(st))
	// The ten small writes while B was stopped, less the one that waited
	// for the timeout, at least: each acknowledged without B.
	require.GreaterOrEqual(t, statUint(t, st, "writes_unsynced"), uint64(9), fmtStats(st))
	s, err := replStats(a.addr, "")
	require.NoError(t, err)
	require.Equal(t, "0", s["repl_peers_in_sync"], fmtStats(s))

	// B continues: it catches up and holds what it missed.
	require.NoError(t, b.p.cmd.Process.Signal(syscall.SIGCONT))
	deadline := time.Now().Add(replSyncWait)
	waitInSync(t, a.addr, deadline, nodes...)
	cb := mustText(t, b.addr)
	requireWritten := func() {
		t.Helper()
		for k, v := range written {
			it := requireSame(t, k, []*textClient{ca, cb}, []string{"a", "b"})
			require.True(t, it.value == v, "key %s on B: %q, want %q", k, shorten([]byte(it.value)), shorten([]byte(v)))
		}
	}
	requireWritten()
	set("pk:resumed", "resumed", timeout)
	it, ok := cb.mustGets(t, "pk:resumed")
	require.True(t, ok, "B back in sync but a write acknowledged under ack=all is not on it")
	require.Equal(t, "resumed", it.value)

	// B killed: writes do not wait for it at all.
	st, err = replStats(a.addr, "replication")
	require.NoError(t, err)
	degraded := statUint(t, st, "writes_degraded")
	b.kill(t)
	for i := range 20 {
		set(fmt.Sprintf("pk:dead%d", i), fmt.Sprintf("while B was dead %d", i), timeout)
	}
	waitReplState(t, a, time.Now().Add(replSyncWait), nodes, func(st map[string]string) bool { return st["peer0:state"] == "connecting" })
	st, err = replStats(a.addr, "replication")
	require.NoError(t, err)
	require.Equal(t, degraded, statUint(t, st, "writes_degraded"), "a write waited for the timeout of a dead peer\n%s", fmtStats(st))

	// B restarted, empty, on the same ports: it is refilled.
	b.start(t)
	deadline = time.Now().Add(replSyncWait)
	waitInSync(t, a.addr, deadline, nodes...)
	waitInSync(t, b.addr, deadline, nodes...)
	cb = mustText(t, b.addr)
	requireWritten()
	// And writes on the new B reach A.
	require.Equal(t, "STORED\r\n", cb.mustDo(t, setReq("pk:from-new-b", "hello")))
	require.Equal(t, "hello", requireSame(t, "pk:from-new-b", []*textClient{ca, cb}, []string{"a", "b"}).value)
}

// TestReplQuorum: under ack=quorum a write needs a majority of the group;
// without one it is refused, and not applied.
func TestReplQuorum(t *testing.T) {
	const quorumErr = "SERVER_ERROR replication quorum not reached\r\n"
	nodes := startReplGroup(t, 3, "--repl-ack", "quorum", "--repl-timeout", "300ms")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ca := mustText(t, a.addr)
	require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq("q:old", "old")))
	require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq("q:ctr", "7")))

	// One of three down: A and B are a majority.
	c.kill(t)
	require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq("q:one-down", "ok")))
	it, ok := mustText(t, b.addr).mustGets(t, "q:one-down")
	require.True(t, ok)
	require.Equal(t, "ok", it.value)

	// Two down: A alone is no majority. The first writes may be applied
	// and refused (the links have not yet seen the peers die); once A
	// knows, a write is refused before it is applied.
	b.kill(t)
	deadline := time.Now().Add(replSyncWait)
	for {
		line := ca.mustDo(t, setReq("q:probe", "p"))
		if line == quorumErr {
			break
		}
		require.Equal(t, "STORED\r\n", line)
		require.True(t, time.Now().Before(deadline), "writes still acknowledged with two of three nodes dead\n%s", logs(nodes))
		time.Sleep(replPoll) // polling interval, bounded by deadline
	}
	require.Equal(t, quorumErr, ca.mustDo(t, setReq("q:old", "new")))
	require.Equal(t, quorumErr, ca.mustDo(t, setReq("q:fresh", "fresh")))
	require.Equal(t, quorumErr, ca.mustDo(t, "incr q:ctr 1\r\n"))
	require.Equal(t, quorumErr, ca.mustDo(t, "delete q:old\r\n"))
	require.Equal(t, quorumErr, ca.mustDo(t, "append q:old 0 0 4\r\nmore\r\n"))
	// The refused writes were not applied, and the connection is still in
	// step (their data blocks were swallowed).
	it, ok = ca.mustGets(t, "q:old")
	require.True(t, ok, "a refused delete was applied")
	require.Equal(t, "old", it.value)
	_, ok = ca.mustGets(t, "q:fresh")
	require.False(t, ok, "a refused set was applied")
	it, _ = ca.mustGets(t, "q:ctr")
	require.Equal(t, "7", it.value, "a refused incr was applied")
	st, err := replStats(a.addr, "replication")
	require.NoError(t, err)
	require.GreaterOrEqual(t, statUint(t, st, "writes_refused"), uint64(6), fmtStats(st))
	s, err := replStats(a.addr, "")
	require.NoError(t, err)
	require.Equal(t, "quorum", s["repl_ack"])
	require.Equal(t, "0", s["repl_peers_in_sync"])

	// C back (empty): once it is in sync, A and C are a majority again.
	c.start(t)
	waitReplState(t, a, time.Now().Add(replSyncWait), nodes, func(st map[string]string) bool {
		return peerState(st, c.replAddr) == "in_sync"
	})
	require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq("q:old", "newer")))
	cc := mustText(t, c.addr)
	for k, v := range map[string]string{"q:old": "newer", "q:one-down": "ok", "q:ctr": "7"} {
		it, ok := cc.mustGets(t, k)
		require.True(t, ok, "key %s not on the restarted C", k)
		require.Equal(t, v, it.value, "key %s on C", k)
	}
}

// TestReplSecret: peers prove a shared secret and belong to one group, or
// never link.
func TestReplSecret(t *testing.T) {
	dir := t.TempDir()
	secret := func(name, s string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(s+"\n"), 0o600))
		return p
	}
	s1, s2 := secret("s1", "correct horse battery staple"), secret("s2", "tr0ub4dor&3")
	for _, tc := range []struct {
		name    string
		a, b    []string // extra flags of each node
		link    bool
		logsAny []string // one of these in the logs when they do not link
	}{
		{"different secrets", []string{"--repl-secret-file", s1}, []string{"--repl-secret-file", s2}, false,
			[]string{"wrong shared secret", "cannot prove"}},
		{"secret against none", []string{"--repl-secret-file", s1}, nil, false,
			[]string{"wrong shared secret", "cannot prove"}},
		{"different groups", []string{"--repl-group", "blue"}, []string{"--repl-group", "green"}, false,
			[]string{`group "blue" is not "green"`, `group "green" is not "blue"`}},
		{"same secret", []string{"--repl-secret-file", s1}, []string{"--repl-secret-file", s1}, true, nil},
		{"same secret and group", []string{"--repl-secret-file", s2, "--repl-group", "blue"},
			[]string{"--repl-secret-file", s2, "--repl-group", "blue"}, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nodes := newReplGroup(t, 2)
			nodes[0].args = append(nodes[0].args, tc.a...)
			nodes[1].args = append(nodes[1].args, tc.b...)
			for _, nd := range nodes {
				nd.start(t)
			}
			if tc.link {
				deadline := time.Now().Add(replSyncWait)
				for _, nd := range nodes {
					waitInSync(t, nd.addr, deadline, nodes...)
				}
				return
			}
			// For 2 s (many dial attempts) neither side gets past the
			// handshake.
			end := time.Now().Add(2 * time.Second)
			for time.Now().Before(end) {
				for _, nd := range nodes {
					st, err := replStats(nd.addr, "replication")
					require.NoError(t, err)
					require.Equal(t, "connecting", st["peer0:state"], "node %s linked to a peer it must refuse\n%s", nd.id, logs(nodes))
				}
				time.Sleep(50 * time.Millisecond) // sampling interval of a fixed observation window
			}
			out := logs(nodes)
			require.True(t, slices.ContainsFunc(tc.logsAny, func(s string) bool { return strings.Contains(out, s) }),
				"the logs do not say why the peers were refused (want one of %q):\n%s", tc.logsAny, out)
			// Still a working cache each.
			for _, nd := range nodes {
				require.Equal(t, "STORED\r\n", mustText(t, nd.addr).mustDo(t, setReq("alone", nd.id)))
			}
		})
	}
}

// replHello and replFrame mirror hello and frame of replication/wire.go,
// so that TestReplGarbageFrames can speak the wire format (and then break
// it) from outside.
type replHello struct {
	_struct struct{} `codec:",toarray"` //nolint:unused // codec's array tag

	Magic   string
	Version uint16
	Node    string
	Group   string
	NodeNum uint16
	Nonce   []byte
	Proof   []byte
	Err     string
}

type replFrame struct {
	_struct struct{} `codec:",toarray"` //nolint:unused // codec's array tag

	Op    uint8
	Seq   uint64
	Key   []byte
	Flags uint32
	Exp   int64
	CAS   uint64
	VLen  uint32
	Bits  uint8
}

// replMsg encodes v as a length-prefixed msgpack message, as the nodes do.
func replMsg(v any) []byte {
	var out []byte
	h := &codec.MsgpackHandle{}
	h.WriteExt = true
	if err := codec.NewEncoderBytes(&out, h).Encode(v); err != nil {
		panic(err)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(out))), out...)
}

// readReplMsg reads one length-prefixed msgpack message into v.
func readReplMsg(r *bufio.Reader, v any) error {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n > 1<<16 {
		return fmt.Errorf("message of %d bytes", n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return err
	}
	h := &codec.MsgpackHandle{}
	return codec.NewDecoderBytes(msg, h).Decode(v)
}

// replProof is the HMAC a side sends to prove the shared secret.
func replProof(secret []byte, role string, mine, theirs []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(role))
	m.Write(mine)
	m.Write(theirs)
	return m.Sum(nil)
}

// replHandshake dials addr and passes the handshake as a peer with no
// secret, in group "tandem", numbered nodeNum.
func replHandshake(addr string, nodeNum uint16) (net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(replIOTimeout))
	r := bufio.NewReader(c)
	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	fail := func(err error) (net.Conn, *bufio.Reader, error) { c.Close(); return nil, nil, err }
	if _, err := c.Write(replMsg(&replHello{Magic: "TANDEM-REPL", Version: 1, Node: "fuzzer", Group: "tandem",
		NodeNum: nodeNum, Nonce: nonce})); err != nil {
		return fail(err)
	}
	var h replHello
	if err := readReplMsg(r, &h); err != nil {
		return fail(fmt.Errorf("reading the listener's hello: %w", err))
	}
	if h.Err != "" {
		return fail(fmt.Errorf("refused: %s", h.Err))
	}
	if !bytes.Equal(h.Proof, replProof(nil, "listener", h.Nonce, nonce)) {
		return fail(errors.New("the listener's proof does not check"))
	}
	if _, err := c.Write(replMsg(&replHello{Proof: replProof(nil, "dialer", h.Nonce, nonce)})); err != nil {
		return fail(err)
	}
	var ok replHello
	if err := readReplMsg(r, &ok); err != nil {
		return fail(fmt.Errorf("reading the listener's ok: %w", err))
	}
	if ok.Err != "" {
		return fail(fmt.Errorf("refused after the proof: %s", ok.Err))
	}
	_ = c.SetDeadline(time.Time{})
	return c, r, nil
}

// closedByServer reads c until the server closes it; a read timeout means
// the server kept a bad connection open.
func closedByServer(c net.Conn, within time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("not closed by the server within %v", within)
	}
	return nil // EOF (nil from io.Copy) or a reset: closed
}

// TestReplGarbageFrames: whatever arrives on the replication port, before
// or after a handshake, the node closes that connection and goes on
// serving.
func TestReplGarbageFrames(t *testing.T) {
	ports := freePorts(t, 3)
	nd := &replNode{id: "g", addr: "127.0.0.1:" + strconv.Itoa(ports[0]), replAddr: "127.0.0.1:" + strconv.Itoa(ports[1])}
	nobody := "127.0.0.1:" + strconv.Itoa(ports[2]) // nothing listens there
	nd.args = tcpArgs(ports[0], "-v", "--node-id", nd.id, "--repl-listen", nd.replAddr, "--peers", nobody)
	nd.start(t)
	nodes := []*replNode{nd}
	st, err := replStats(nd.addr, "replication")
	require.NoError(t, err)
	num, err := strconv.Atoi(st["node_number"])
	require.NoError(t, err, fmtStats(st))
	fakeNum := uint16((num + 1) % 1024)

	// A valid peer first: the handshake and a frame work, so the garbage
	// below is refused for being garbage.
	c, r, err := replHandshake(nd.replAddr, fakeNum)
	require.NoError(t, err, logs(nodes))
	_, err = c.Write(append(replMsg(&replFrame{Op: 1, Seq: 1, Key: []byte("from-fake-peer"), CAS: 1 << 40, VLen: 5}), "hello"...))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(replIOTimeout)))
	var ack replFrame
	require.NoError(t, readReplMsg(r, &ack), logs(nodes))
	require.Equal(t, replFrame{Op: 5, Seq: 1}, ack)
	c.Close()
	it, ok := mustText(t, nd.addr).mustGets(t, "from-fake-peer")
	require.True(t, ok)
	require.Equal(t, "hello", it.value)

	hello := replMsg(&replHello{Magic: "TANDEM-REPL", Version: 1, Node: "x", Group: "tandem", NodeNum: fakeNum, Nonce: make([]byte, 32)})
	// msgpack array32 claiming 2^32-1 elements, padded to a header the
	// size limit allows.
	hugeArray := append(u32(4096), append([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, make([]byte, 4091)...)...)
	// A frame header whose key, a str32, claims 4 GiB.
	hugeKey := append(u32(10), 0x98, 0x01, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff, 'k', 'k')
	// Deeply nested arrays.
	nested := append(u32(4000), bytes.Repeat([]byte{0x91}, 4000)...)
	rng := mrand.New(mrand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	framed := func(b []byte) []byte { return append(u32(uint32(len(b))), b...) }

	// Before the handshake: refused; a truncated message is closed by the
	// handshake deadline.
	pre := map[string][]byte{
		"length 0xFFFFFFFF":       u32(0xFFFFFFFF),
		"length 0":                u32(0),
		"huge msgpack array":      hugeArray,
		"nested arrays":           nested,
		"HTTP request":            []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"memcached request":       []byte("get foo\r\n"),
		"truncated hello":         hello[:len(hello)/2],
		"truncated length":        hello[:2],
		"wrong magic":             replMsg(&replHello{Magic: "TANDEM-REPX", Version: 1, Group: "tandem", NodeNum: fakeNum, Nonce: make([]byte, 32)}),
		"wrong version":           replMsg(&replHello{Magic: "TANDEM-REPL", Version: 99, Group: "tandem", NodeNum: fakeNum, Nonce: make([]byte, 32)}),
		"short nonce":             replMsg(&replHello{Magic: "TANDEM-REPL", Version: 1, Group: "tandem", NodeNum: fakeNum, Nonce: []byte{1}}),
		"own node number":         replMsg(&replHello{Magic: "TANDEM-REPL", Version: 1, Group: "tandem", NodeNum: uint16(num), Nonce: make([]byte, 32)}),
		"hello then garbage":      append(slices.Clone(hello), framed(random(100))...),
		"hello then wrong proof":  append(slices.Clone(hello), replMsg(&replHello{Proof: make([]byte, 32)})...),
		"hello then frame":        append(slices.Clone(hello), replMsg(&replFrame{Op: 1, Key: []byte("k")})...),
		"frame instead of hello":  replMsg(&replFrame{Op: 1, Seq: 1, Key: []byte("k"), VLen: 1}),
		"hello with trailing":     append(u32(uint32(len(hello)-4+3)), append(slices.Clone(hello[4:]), 1, 2, 3)...),
		"random framed":           framed(random(200)),
		"random 1 KiB":            random(1024),
		"random 64 KiB":           random(64 << 10),
		"msgpack map, not array":  framed([]byte{0x81, 0xa1, 'a', 0x01}),
		"msgpack nil":             framed([]byte{0xc0}),
		"msgpack reserved byte":   framed([]byte{0xc1}),
		"msgpack bin32 4 GiB":     framed([]byte{0x98, 0xa1, 'x', 0x01, 0xa0, 0xa0, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff}),
		"msgpack ext":             framed([]byte{0xd4, 0x01, 0x02}),
		"msgpack 2^64 as version": framed([]byte{0x98, 0xab, 'T', 'A', 'N', 'D', 'E', 'M', '-', 'R', 'E', 'P', 'L', 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xa0, 0xa0, 0x01, 0xc0, 0xc0, 0xc0}),
	}
	// After the handshake: each is a malformed frame (bad_links counts
	// them), which closes the link at once.
	post := map[string][]byte{
		"length 0xFFFFFFFF":   u32(0xFFFFFFFF),
		"length 0":            u32(0),
		"huge msgpack array":  hugeArray,
		"huge key":            hugeKey,
		"nested arrays":       nested,
		"value over -I":       replMsg(&replFrame{Op: 1, Seq: 2, Key: []byte("k"), CAS: 1 << 40, VLen: 2 << 20}),
		"value over 4 GiB":    replMsg(&replFrame{Op: 1, Seq: 2, Key: []byte("k"), CAS: 1 << 40, VLen: 0xFFFFFFFF}),
		"empty key":           replMsg(&replFrame{Op: 1, Seq: 2, CAS: 1 << 40}),
		"key of 251 bytes":    replMsg(&replFrame{Op: 2, Seq: 2, Key: bytes.Repeat([]byte("k"), 251), CAS: 1 << 40}),
		"unknown op":          replMsg(&replFrame{Op: 99, Seq: 2, Key: []byte("k")}),
		"op 0":                replMsg(&replFrame{Seq: 2, Key: []byte("k")}),
		"ack to the listener": replMsg(&replFrame{Op: 5, Seq: 2}),
		"delete with a value": replMsg(&replFrame{Op: 2, Seq: 2, Key: []byte("k"), VLen: 10}),
		"hello again":         hello,
		"frame with trailing": append(u32(uint32(len(replMsg(&replFrame{Op: 2, Key: []byte("k")}))-4+2)), append(replMsg(&replFrame{Op: 2, Key: []byte("k")})[4:], 0, 0)...),
		"msgpack map":         framed([]byte{0x81, 0xa1, 'a', 0x01}),
		"msgpack nil":         framed([]byte{0xc0}),
		"msgpack reserved":    framed([]byte{0xc1}),
		"msgpack ext":         framed([]byte{0xd4, 0x01, 0x02}),
	}
	for i := range 20 {
		post[fmt.Sprintf("random framed %d", i)] = framed(random(1 + rng.IntN(300)))
	}

	type result struct {
		name string
		err  error
	}
	const copies = 3 // each case this many times at once, from as many connections
	results := make(chan result, copies*(len(pre)+len(post)+2))
	var wg sync.WaitGroup
	for range copies {
		for name, msg := range pre {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.DialTimeout("tcp", nd.replAddr, time.Second)
				if err != nil {
					results <- result{"pre: " + name, err}
					return
				}
				defer c.Close()
				_, _ = c.Write(msg) // the server may close before it has read all
				results <- result{"pre: " + name, closedByServer(c, replIOTimeout)}
			}()
		}
		for name, msg := range post {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, _, err := replHandshake(nd.replAddr, fakeNum)
				if err != nil {
					results <- result{"post: " + name, fmt.Errorf("handshake: %w", err)}
					return
				}
				defer c.Close()
				_, _ = c.Write(msg)
				results <- result{"post: " + name, closedByServer(c, replIOTimeout)}
			}()
		}
		// Closed mid-message, before and after the handshake: nothing to
		// read back, the node must just survive it.
		wg.Add(2)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", nd.replAddr, time.Second)
			if err == nil {
				_, _ = c.Write(hello[:len(hello)-3])
				c.Close()
			}
			results <- result{"pre: closed mid-message", err}
		}()
		go func() {
			defer wg.Done()
			c, _, err := replHandshake(nd.replAddr, fakeNum)
			if err == nil {
				msg := replMsg(&replFrame{Op: 1, Seq: 3, Key: []byte("half"), CAS: 1 << 41, VLen: 1000})
				_, _ = c.Write(append(msg, make([]byte, 500)...))
				c.Close()
			}
			results <- result{"post: closed mid-value", err}
		}()
	}
	wg.Wait()
	close(results)
	var failures []string
	for res := range results {
		if res.err != nil {
			failures = append(failures, res.name+": "+res.err.Error())
		}
	}
	slices.Sort(failures)
	require.Empty(t, failures, logs(nodes))

	// Alive, serving, and every bad link counted.
	select {
	case <-nd.p.exited:
		t.Fatalf("the node died:\n%s", logs(nodes))
	default:
	}
	cl := mustText(t, nd.addr)
	require.Equal(t, "VERSION 1.6.18\r\n", cl.mustDo(t, "version\r\n"))
	require.Equal(t, "STORED\r\n", cl.mustDo(t, setReq("after", "garbage")))
	_, ok = cl.mustGets(t, "half")
	require.False(t, ok, "a frame cut off in its value was applied")
	// bad_links counts the refused handshakes too: at least every bad
	// frame sent after a handshake.
	waitReplState(t, nd, time.Now().Add(replSyncWait), nodes, func(st map[string]string) bool {
		n, err := strconv.Atoi(st["bad_links"])
		return err == nil && n >= copies*len(post)
	})
	// A valid peer is still welcome.
	c, r, err = replHandshake(nd.replAddr, fakeNum)
	require.NoError(t, err, logs(nodes))
	defer c.Close()
	_, err = c.Write(replMsg(&replFrame{Op: 2, Seq: 1, Key: []byte("from-fake-peer"), CAS: 1 << 41}))
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(replIOTimeout)))
	require.NoError(t, readReplMsg(r, &ack), logs(nodes))
	require.Equal(t, replFrame{Op: 5, Seq: 1}, ack)
	_, ok = cl.mustGets(t, "from-fake-peer")
	require.False(t, ok, "a peer's delete was not applied")
}

// TestReplFlags: inconsistent replication flags are usage errors (exit 64)
// that name the flag to fix.
func TestReplFlags(t *testing.T) {
	bin := e2eBinary(t)
	port := freePort(t)
	for _, tc := range []struct {
		name string
		args []string
		msg  string
	}{
		{"peers without repl-listen", []string{"--peers", "127.0.0.1:1"}, "--repl-listen"},
		{"-C with peers", []string{"-C", "--peers", "127.0.0.1:1", "--repl-listen", "127.0.0.1:2"}, "-C"},
		{"bogus ack rule", []string{"--peers", "127.0.0.1:1", "--repl-listen", "127.0.0.1:2", "--repl-ack", "bogus"}, "--repl-ack"},
		{"repl-listen without peers", []string{"--repl-listen", "127.0.0.1:2"}, "--peers"},
		{"node-id without peers", []string{"--node-id", "a"}, "--peers"},
		{"secret without peers", []string{"--repl-secret-file", "/dev/null"}, "--peers"},
		{"zero timeout", []string{"--peers", "127.0.0.1:1", "--repl-listen", "127.0.0.1:2", "--repl-timeout", "0s"}, "--repl-timeout"},
		{"peer without a port", []string{"--peers", "127.0.0.1", "--repl-listen", "127.0.0.1:2"}, "127.0.0.1"},
		{"tiny max pending", []string{"--peers", "127.0.0.1:1", "--repl-listen", "127.0.0.1:2", "--repl-max-pending", "1k"}, "--repl-max-pending"},
		{"bad max pending", []string{"--peers", "127.0.0.1:1", "--repl-listen", "127.0.0.1:2", "--repl-max-pending", "lots"}, "--repl-max-pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, bin, tcpArgs(port, tc.args...)...)
			require.Equal(t, 64, p.waitExit(t, 10*time.Second), p.out.String())
			require.Contains(t, p.out.String(), tc.msg)
		})
	}
}

// TestReplQuietWriteFailure: a quiet write (meta q, binary SETQ) answers
// nothing on success, but must still hear that replication could not
// acknowledge it, whether the wait timed out after the write was applied
// or the write was refused up front.
func TestReplQuietWriteFailure(t *testing.T) {
	const timeout = 300 * time.Millisecond
	nodes := startReplGroup(t, 2, "--repl-ack", "quorum", "--repl-timeout", timeout.String())
	a, b := nodes[0], nodes[1]
	ca := mustText(t, a.addr)
	require.Equal(t, "MN\r\n", ca.mustDo(t, "ms q:ok 1 q\r\nx\r\nmn\r\n"), "a quiet write that succeeds answers nothing")

	stopPeer(t, b)
	// B was in sync: the write is applied, waits, times out without a
	// majority: the empty success becomes the error.
	const quorumErr = "SERVER_ERROR replication quorum not reached\r\n"
	require.Equal(t, quorumErr, ca.mustDo(t, "ms q:timedout 1 q\r\nx\r\nmn\r\n"), logs(nodes))
	line, err := ca.r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "MN\r\n", line)
	// B is now out of sync: refused before it is applied.
	require.Equal(t, quorumErr, ca.mustDo(t, "ms q:refused 1 q\r\nx\r\nmn\r\n"), logs(nodes))
	line, err = ca.r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "MN\r\n", line)

	// Binary SETQ then NOOP: an error packet (status 0x86), then the NOOP's.
	c, err := net.DialTimeout("tcp", a.addr, time.Second)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(replIOTimeout)))
	req := append(breq(0x11, "q:binary", flagsExp(0, 0), "v").bytes(), breq(0x0a, "", nil, "").bytes()...)
	_, err = c.Write(req)
	require.NoError(t, err)
	r := bufio.NewReader(c)
	var ops []byte
	var statuses []uint16
	for len(ops) < 2 {
		var h [24]byte
		_, err := io.ReadFull(r, h[:])
		require.NoError(t, err, logs(nodes))
		_, err = io.CopyN(io.Discard, r, int64(binary.BigEndian.Uint32(h[8:12])))
		require.NoError(t, err)
		ops, statuses = append(ops, h[1]), append(statuses, binary.BigEndian.Uint16(h[6:8]))
		if h[1] == 0x0a {
			break
		}
	}
	require.Equal(t, []byte{0x11, 0x0a}, ops, "statuses %v", statuses)
	require.Equal(t, []uint16{0x86, 0}, statuses)
}

// waitStopped waits until the kernel shows pid stopped: SIGSTOP takes
// effect asynchronously, and a peer still running for a moment would ack.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		require.NoError(t, err)
		// The state follows the command name in parentheses.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'T' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped after 5 s: %s", pid, b)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReplHeldReplies: a replicating node answers a write from the
// goroutine that reads the peer's acks, holding the replies that follow it.
// Those replies come out whole and in order, also to a client that reads
// slower than they come, and never to a later connection that gets the
// descriptor of one that left while its write waited.
func TestReplHeldReplies(t *testing.T) {
	const timeout = 300 * time.Millisecond
	nodes := startReplGroup(t, 2, "--repl-timeout", timeout.String(), "-m", "256")
	a, b := nodes[0], nodes[1]

	t.Run("quit after writes", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", a.addr, time.Second)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(replIOTimeout)))
		_, err = io.WriteString(c, setReq("held:q1", "one")+setReq("held:q2", "two")+"quit\r\n")
		require.NoError(t, err)
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		require.Equal(t, "STORED\r\nSTORED\r\n", string(got), "the replies owed before quit")
	})

	t.Run("slow reader", func(t *testing.T) {
		// One write, then 48 reads of a 512 KiB value in the same send: 24
		// MiB of replies held behind the write while B, stopped, does not
		// ack it; then written at the timeout, far more than the socket
		// buffers take, so most of it waits for the client to read.
		stopPeer(t, b)
		defer contPeer(t, b, nodes)
		big := strings.Repeat("0123456789abcdef", 32<<10)
		c, err := net.DialTimeout("tcp", a.addr, time.Second)
		require.NoError(t, err)
		defer c.Close()
		// A small receive window: the node finds the socket full again and
		// again, and goes on when the client has read.
		require.NoError(t, c.(*net.TCPConn).SetReadBuffer(32<<10))
		require.NoError(t, c.SetDeadline(time.Now().Add(4*replIOTimeout)))
		const gets = 48
		_, err = io.WriteString(c, setReq("held:big", big)+strings.Repeat("get held:big\r\n", gets)+"mn\r\n")
		require.NoError(t, err)
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "STORED\r\n", line)
		want := fmt.Sprintf("VALUE held:big 0 %d\r\n%s\r\nEND\r\n", len(big), big)
		buf := make([]byte, len(want))
		for i := range gets {
			_, err := io.ReadFull(r, buf)
			require.NoError(t, err, "get %d", i)
			require.True(t, string(buf) == want, "get %d: reply %q...", i, shorten(buf))
		}
		line, err = r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "MN\r\n", line)
	})

	t.Run("client gone while its write waits", func(t *testing.T) {
		stopPeer(t, b)
		defer contPeer(t, b, nodes)
		base, err := replStats(a.addr, "")
		require.NoError(t, err)
		// x writes and leaves at once: its reply waits for the timeout.
		x, err := net.DialTimeout("tcp", a.addr, time.Second)
		require.NoError(t, err)
		_, err = io.WriteString(x, setReq("held:gone", "x"))
		require.NoError(t, err)
		waitStat(t, a, nodes, "repl_waiting", "1")
		x.Close()
		// Once A has closed it, a new connection likely gets its descriptor.
		waitStat(t, a, nodes, "curr_connections", base["curr_connections"])
		y := mustText(t, a.addr)
		require.Equal(t, "STORED\r\n", y.mustDo(t, setReq("held:y", "y")+"mn\r\n"), logs(nodes))
		require.Equal(t, "MN\r\n", y.mustDo(t, ""), "after y's own reply")
		// By now x's write has timed out; nothing of it reached y.
		it, ok := y.mustGets(t, "held:gone")
		require.True(t, ok, "x's write was applied before x left")
		require.Equal(t, "x", it.value)
		require.Equal(t, "MN\r\n", y.mustDo(t, "mn\r\n"))
	})

	t.Run("stopped while a write waits", func(t *testing.T) {
		// SIGTERM stops A gracefully: the reply held for the stopped B is
		// still written (at the timeout) before A closes the connection.
		stopPeer(t, b)
		c, err := net.DialTimeout("tcp", a.addr, time.Second)
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.SetDeadline(time.Now().Add(replIOTimeout)))
		_, err = io.WriteString(c, setReq("held:term", "t"))
		require.NoError(t, err)
		waitStat(t, a, nodes, "repl_waiting", "1")
		require.NoError(t, a.p.cmd.Process.Signal(syscall.SIGTERM))
		got, err := io.ReadAll(c)
		require.NoError(t, err)
		require.Equal(t, "STORED\r\n", string(got), logs(nodes))
	})
}

// stopPeer SIGSTOPs a node: the next write waits for the timeout.
func stopPeer(t *testing.T, nd *replNode) {
	t.Helper()
	require.NoError(t, nd.p.cmd.Process.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = nd.p.cmd.Process.Signal(syscall.SIGCONT) }) // before startProc's Kill
	waitStopped(t, nd.p.cmd.Process.Pid)
}

// contPeer SIGCONTs a stopped node and waits until the group is in sync.
func contPeer(t *testing.T, nd *replNode, nodes []*replNode) {
	t.Helper()
	require.NoError(t, nd.p.cmd.Process.Signal(syscall.SIGCONT))
	deadline := time.Now().Add(replSyncWait)
	for _, n := range nodes {
		waitInSync(t, n.addr, deadline, nodes...)
	}
}

// waitStat waits until field of a node's "stats" reads want.
func waitStat(t *testing.T, nd *replNode, nodes []*replNode, field, want string) {
	t.Helper()
	waitStats(t, nd, "", time.Now().Add(replSyncWait), nodes,
		func(st map[string]string) bool { return st[field] == want })
}

// TestReplBackPressure: clients that pipeline large sets to A faster than
// B applies them are held back, so B stays in sync and holds every
// acknowledged write. Before, A ran ahead of its acks until the link's
// backlog passed --repl-max-pending; B was dropped and resynced while A
// answered the rest of the writes without it.
func TestReplBackPressure(t *testing.T) {
	// A long timeout: a peer slowed down by a busy machine must not let
	// writers go at the timeout, which is not what this tests.
	nodes := startReplGroup(t, 2, "--repl-max-pending", "1m", "-m", "256", "--repl-timeout", "10s")
	a, b := nodes[0], nodes[1]
	const conns, sets = 4, 1000
	value := strings.Repeat("p", 16<<10)
	errs := make(chan error, conns)
	for c := range conns {
		go func() {
			errs <- func() error {
				nc, err := net.DialTimeout("tcp", a.addr, time.Second)
				if err != nil {
					return err
				}
				defer nc.Close()
				if err := nc.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
					return err
				}
				var req strings.Builder
				for i := range sets {
					req.WriteString(setReq(fmt.Sprintf("bp:%d:%d", c, i), value))
				}
				sent := make(chan error, 1)
				go func() { _, err := io.WriteString(nc, req.String()); sent <- err }()
				want := strings.Repeat("STORED\r\n", sets)
				got := make([]byte, len(want))
				if _, err := io.ReadFull(nc, got); err != nil {
					return fmt.Errorf("connection %d: %w", c, err)
				}
				if string(got) != want {
					return fmt.Errorf("connection %d: not all STORED: %q", c, got[:min(80, len(got))])
				}
				return <-sent
			}()
		}()
	}
	for range conns {
		require.NoError(t, <-errs, logs(nodes))
	}

	st, err := replStats(a.addr, "replication")
	require.NoError(t, err)
	require.Equal(t, "0", st["peer0:overflows"], fmtStats(st))
	require.Equal(t, "0", st["writes_unsynced"], fmtStats(st))
	require.Equal(t, "in_sync", st["peer0:state"], fmtStats(st))
	require.NotEqual(t, "0", st["throttled"], "the writers were never held back:\n%s", fmtStats(st))
	t.Logf("%d sets of %d bytes on %d connections: writers held back %s times, ack p99 %s µs",
		conns*sets, len(value), conns, st["throttled"], st["peer0:ack_p99_us"])

	// Every write acknowledged is on B, as it was sent.
	tc := mustText(t, b.addr)
	for c := range conns {
		for i := range sets {
			key := fmt.Sprintf("bp:%d:%d", c, i)
			it, ok := tc.mustGets(t, key)
			require.True(t, ok, "%s missing on B", key)
			require.Equal(t, value, it.value, key)
		}
	}
}

// TestReplRestartWaitsForRefill: a node that starts serves clients only
// once the peers that are up have refilled it. Served at once with an
// empty store, it decided conditional writes against nothing: an incr said
// NOT_FOUND, an add of a key the group held succeeded, and the newer CAS
// of what it stored then replaced the survivors' acknowledged values.
func TestReplRestartWaitsForRefill(t *testing.T) {
	t.Run("returning node", func(t *testing.T) {
		nodes := startReplGroup(t, 2)
		a, b := nodes[0], nodes[1]
		ca := mustText(t, a.addr)
		require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq("counter", "100")))
		require.Equal(t, "101\r\n", ca.mustDo(t, "incr counter 1\r\n"))
		require.Equal(t, "STORED\r\n", ca.mustDo(t, "add lock 0 0 5\r\nowner\r\n"))
		ca.c.Close()

		a.kill(t)
		waitReplState(t, b, time.Now().Add(replSyncWait), nodes,
			func(st map[string]string) bool { return st["peer0:state"] == "connecting" })
		// The scenario: A stays down for 2 s, so that B's redial backoff
		// has grown past the time A takes to start (it waits up to 2 s).
		time.Sleep(2 * time.Second)
		a.start(t)

		ca = mustText(t, a.addr)
		require.Equal(t, "102\r\n", ca.mustDo(t, "incr counter 1\r\n"), logs(nodes))
		require.Equal(t, "NOT_STORED\r\n", ca.mustDo(t, "add lock 0 0 5\r\nthief\r\n"), logs(nodes))
		cb := mustText(t, b.addr)
		for _, key := range []string{"counter", "lock"} {
			ia, ok := ca.mustGets(t, key)
			require.True(t, ok, "%s missing on A", key)
			ib, ok := cb.mustGets(t, key)
			require.True(t, ok, "%s missing on B", key)
			require.Equal(t, ib, ia, key)
		}
		it, _ := cb.mustGets(t, "lock")
		require.Equal(t, "owner", it.value)
		st, err := replStats(a.addr, "replication")
		require.NoError(t, err)
		require.Equal(t, "1", st["warmup_refilled_by"], fmtStats(st))
		require.Equal(t, "0", st["warmup_missing"], fmtStats(st))
		require.Contains(t, a.p.out.String(), "warmup done in")
	})

	t.Run("stopped peer", func(t *testing.T) {
		// A stopped peer accepts the dial in its kernel and never answers:
		// the failed handshake (2 s) counts it down, and A serves.
		nodes := startReplGroup(t, 2)
		a, b := nodes[0], nodes[1]
		a.kill(t)
		stopPeer(t, b)
		began := time.Now()
		a.start(t)
		took := time.Since(began)
		require.Less(t, took, 8*time.Second, logs(nodes))
		st, err := replStats(a.addr, "replication")
		require.NoError(t, err)
		require.Equal(t, "0", st["warmup_refilled_by"], fmtStats(st))
		require.Equal(t, "0", st["warmup_missing"], fmtStats(st))
		require.Contains(t, a.p.out.String(), "down: "+b.replAddr)
		require.Contains(t, a.p.out.String(), "waiting for the peers to refill this node")
		t.Logf("A served %v after its start, B stopped", took.Round(time.Millisecond))
	})

	t.Run("peer that never refills", func(t *testing.T) {
		// C takes A's dial but lists another address as its peer, so it
		// never dials A: A serves after --repl-warmup, with a warning.
		ports := freePorts(t, 5)
		addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
		c := startProc(t, e2eBinary(t), tcpArgs(ports[0], "--node-id", "c", "--repl-listen", addr(1), "--peers", addr(4))...)
		dialWait(t, "tcp", addr(0)).Close()
		a := startProc(t, e2eBinary(t), tcpArgs(ports[2], "--node-id", "a", "--repl-listen", addr(3), "--peers", addr(1),
			"--repl-warmup", "300ms")...)
		dialWait(t, "tcp", addr(2)).Close()
		st, err := replStats(addr(2), "replication")
		require.NoError(t, err)
		require.Equal(t, "1", st["warmup_missing"], fmtStats(st))
		require.Contains(t, a.out.String(), "tandem: warning: serving after", "A:\n%s\nC:\n%s", a.out.String(), c.out.String())
		require.Contains(t, a.out.String(), "without a refill from "+addr(1))
	})
}

// TestReplOrphanedWrites: a write that its node sent to one peer and not
// yet to another when it died reaches the other from the survivor
// (replication/orphans.go). Under quorum, C's write is acknowledged once A
// has it; B is stopped, and C's link to it is stuck behind 40 MB that B
// has not read, so the write never leaves C for B. C is killed and B
// continued: without the survivors' re-send, B would lack the write until
// C came back, while A and B stay in sync with each other.
func TestReplOrphanedWrites(t *testing.T) {
	nodes := startReplGroup(t, 3, "--repl-ack", "quorum", "--repl-timeout", "300ms", "-m", "512")
	a, b, c := nodes[0], nodes[1], nodes[2]
	stopPeer(t, b)
	cc := mustText(t, c.addr)
	// Fill the sockets between C and B until C's link holds frames it
	// cannot write: then the next write stays on C.
	filler := strings.Repeat("f", 100<<10)
	stuck := func() bool {
		st, err := replStats(c.addr, "replication")
		require.NoError(t, err)
		for k, v := range st {
			if v == b.replAddr && strings.HasSuffix(k, ":addr") {
				return st[strings.TrimSuffix(k, "addr")+"pending_bytes"] != "0"
			}
		}
		t.Fatalf("no link to B in C's stats:\n%s", fmtStats(st))
		return false
	}
	for i := 0; !stuck(); i++ {
		require.Less(t, i, 2000, "C's link to the stopped B never filled up")
		require.Equal(t, "STORED\r\n", cc.mustDo(t, setReq(fmt.Sprintf("filler%d", i), filler)), logs(nodes))
	}
	require.Equal(t, "STORED\r\n", cc.mustDo(t, setReq("orphan", "only C and A")), logs(nodes))
	require.True(t, stuck())
	c.kill(t)
	require.NoError(t, b.p.cmd.Process.Signal(syscall.SIGCONT))

	cb := mustText(t, b.addr)
	deadline := time.Now().Add(replSyncWait)
	for {
		it, ok := cb.mustGets(t, "orphan")
		if ok {
			require.Equal(t, "only C and A", it.value)
			break
		}
		if time.Now().After(deadline) {
			st, _ := replStats(a.addr, "replication")
			t.Fatalf("B never got C's acknowledged write; A's stats:\n%s\n%s", fmtStats(st), logs(nodes))
		}
		time.Sleep(replPoll) // polling interval, bounded by deadline
	}
	waitStats(t, a, "replication", time.Now().Add(replSyncWait), nodes,
		func(st map[string]string) bool { return st["orphans_resent"] != "0" })
	require.Contains(t, a.p.out.String(), "gone: sent its")
}

// TestReplLinkBreakNotDeath: a link that breaks while its node lives is
// not a dead node: the others do not walk their stores for its writes
// (replication/orphans.go). With --repl-max-pending at its 64k minimum,
// every 100 KB write on A overflows A's links, which A drops and redials;
// B and C must not take that for A's death.
func TestReplLinkBreakNotDeath(t *testing.T) {
	nodes := startReplGroup(t, 3, "--repl-max-pending", "64k")
	a, b, c := nodes[0], nodes[1], nodes[2]
	ca := mustText(t, a.addr)
	big := strings.Repeat("v", 100<<10)
	for i := range 5 {
		require.Equal(t, "STORED\r\n", ca.mustDo(t, setReq(fmt.Sprintf("big%d", i), big)), logs(nodes))
	}
	waitStats(t, a, "replication", time.Now().Add(replSyncWait), nodes,
		func(st map[string]string) bool { return st["peer0:overflows"] != "0" && allPeers(st, "in_sync") })
	// A redials at once after the first break and within its backoff
	// after the next ones; B and C decide within orphanWait (6 s) that
	// A lives. Until then no walk has started either way, so wait for
	// both to have seen A come back, then check that neither walked.
	deadline := time.Now().Add(replSyncWait)
	for _, n := range []*replNode{b, c} {
		waitInSync(t, n.addr, deadline, nodes...)
		tc := mustText(t, n.addr)
		for i := range 5 {
			it, ok := tc.mustGets(t, fmt.Sprintf("big%d", i))
			require.True(t, ok, "big%d missing on %s", i, n.id)
			require.Equal(t, big, it.value)
		}
	}
	for _, n := range []*replNode{b, c} {
		st, err := replStats(n.addr, "replication")
		require.NoError(t, err)
		require.Equal(t, "0", st["orphans_resent"], "%s walked for a living A:\n%s", n.id, logs(nodes))
		require.NotContains(t, n.p.out.String(), "gone:", logs(nodes))
	}
}

// TestReplFrozenWriter: a node that was frozen does not blame its peers for
// its own pause. C writes on while it is stopped (three timeouts long) and
// continued; the acks of
// its writes in flight lie unread in its sockets when it runs again, and its
// timeout sweeper, late by the whole pause, waits one more timeout for its
// ack readers instead of answering them "quorum not reached" and marking
// the peers out of sync (replication/wait.go, sweep).
func TestReplFrozenWriter(t *testing.T) {
	nodes := startReplGroup(t, 3, "--repl-ack", "quorum", "--repl-timeout", "500ms")
	c := nodes[2]
	cc := mustText(t, c.addr)
	n := 0
	for range 2 {
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(100 * time.Millisecond) // the scenario: a pause in the middle of the writes
			_ = c.p.cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(1500 * time.Millisecond) // the pause: three timeouts
			_ = c.p.cmd.Process.Signal(syscall.SIGCONT)
		}()
		end := time.Now().Add(2 * time.Second)
		for time.Now().Before(end) {
			require.Equal(t, "STORED\r\n", cc.mustDo(t, setReq(fmt.Sprintf("k%d", n), "v")), "write %d\n%s", n, logs(nodes))
			n++
		}
		<-done
	}
	st, err := replStats(c.addr, "replication")
	require.NoError(t, err)
	require.Equal(t, "0", st["writes_refused"], fmtStats(st))
	require.Equal(t, "0", st["peer0:timeouts"], fmtStats(st))
	require.Equal(t, "0", st["peer1:timeouts"], fmtStats(st))
	t.Logf("%d writes on C across two pauses of 1.5 s, all STORED", n)
}
