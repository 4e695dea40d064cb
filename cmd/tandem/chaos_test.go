package main

import (
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReplChaos runs writers against a group of three while its nodes are
// killed (SIGKILL, or SIGTERM for a graceful stop) and restarted, or
// stopped and continued, one at a time, and then checks what the model
// promises: every replica holds the same state of every key (value, flags
// and CAS, or nothing), and every write that was acknowledged, to a key no
// other write touches, is on every node.
//
// TANDEM_CHAOS sets how long the chaos lasts (default 6s), and
// TANDEM_CHAOS_SEED the seed, e.g.:
//
//	TANDEM_CHAOS=2m go test -count=1 -run TestReplChaos ./cmd/tandem
func TestReplChaos(t *testing.T) {
	length := 6 * time.Second
	if s := os.Getenv("TANDEM_CHAOS"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err, "TANDEM_CHAOS")
		length = d
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("TANDEM_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "TANDEM_CHAOS_SEED")
		seed = v
	}
	t.Logf("seed %d (TANDEM_CHAOS_SEED), chaos for %v", seed, length)
	t.Run("all, text", func(t *testing.T) {
		replChaos(t, seed, length, chaosMode{durable: true}, "--repl-ack", "all")
	})
	t.Run("quorum, meta, large values", func(t *testing.T) {
		replChaos(t, seed, length, chaosMode{durable: true, rich: true}, "--repl-ack", "quorum")
	})
	// async promises nothing about a write whose node dies: only that the
	// replicas converge, flush_all included.
	t.Run("async, flush_all", func(t *testing.T) {
		replChaos(t, seed, length, chaosMode{rich: true, flush: true}, "--repl-ack", "async")
	})
}

// chaosMode says what the writers send and what is checked.
type chaosMode struct {
	rich    bool // meta commands, expiry times and values of up to 900 KB (chained items)
	flush   bool // flush_all now and then
	durable bool // acknowledged writes must survive (all and quorum)
}

func replChaos(t *testing.T, seed uint64, length time.Duration, mode chaosMode, args ...string) {
	rng := mrand.New(mrand.NewPCG(seed, 1))
	nodes := startReplGroup(t, 3, append([]string{"--repl-timeout", "300ms", "-m", "1024"}, args...)...)
	cw := &chaosWriters{nodes: nodes, mode: mode, acked: map[string]string{}, errs: map[string]int{}, done: make(chan struct{})}
	const writers = 6
	for g := range writers {
		cw.wg.Add(1)
		go cw.run(g, seed)
	}

	end := time.Now().Add(length)
	kills, stops := 0, 0
	for time.Now().Before(end) {
		nd := nodes[rng.IntN(len(nodes))]
		down := time.Duration(rng.IntN(800)) * time.Millisecond
		if event := rng.IntN(10); event < 7 {
			var sample map[string]string
			if mode.durable {
				sample = cw.sample(rng, 100)
			}
			if event < 5 {
				nd.kill(t)
			} else {
				// A graceful stop: held replies get half the grace period,
				// then the connections close.
				require.NoError(t, nd.p.cmd.Process.Signal(syscall.SIGTERM))
				nd.p.waitExit(t, 10*time.Second)
			}
			time.Sleep(down) // how long the node stays dead: the scenario
			nd.start(t)
			kills++
			// It serves once refilled: what was acknowledged before it
			// died is there from its first answer.
			tc := mustText(t, nd.addr)
			for key, val := range sample {
				it, ok := tc.mustGets(t, key)
				require.True(t, ok, "%s, acknowledged before %s was killed, missing from its first answers\n%s", key, nd.id, logs(nodes))
				require.Equal(t, val, it.value, key)
			}
			tc.c.Close()
		} else {
			stopPeer(t, nd)
			time.Sleep(down) // how long the node stays stopped: the scenario
			require.NoError(t, nd.p.cmd.Process.Signal(syscall.SIGCONT))
			stops++
		}
		// One node away at a time: wait until it is back in sync.
		deadline := time.Now().Add(replSyncWait)
		for _, n := range nodes {
			waitInSync(t, n.addr, deadline, nodes...)
		}
		require.Empty(t, cw.violations(), logs(nodes))
	}
	close(cw.done)
	cw.wg.Wait()
	require.Empty(t, cw.violations(), logs(nodes))

	// Every link drained: nothing in flight anywhere.
	deadline := time.Now().Add(replSyncWait)
	for _, nd := range nodes {
		waitReplState(t, nd, deadline, nodes, func(st map[string]string) bool {
			if !allPeers(st, "in_sync") {
				return false
			}
			for k, v := range st {
				if strings.HasSuffix(k, ":lag_seqs") && v != "0" {
					return false
				}
			}
			return true
		})
	}

	clients := make([]*textClient, len(nodes))
	for i, nd := range nodes {
		clients[i] = mustText(t, nd.addr)
	}
	same := func(key string) (textItem, bool) {
		it0, ok0 := clients[0].mustGets(t, key)
		for i := 1; i < len(clients); i++ {
			it, ok := clients[i].mustGets(t, key)
			require.Equal(t, ok0, ok, "%s: on %s %v, on %s %v\n%s", key, nodes[0].id, ok0, nodes[i].id, ok, logs(nodes))
			require.Equal(t, it0, it, "%s differs between %s and %s\n%s", key, nodes[0].id, nodes[i].id, logs(nodes))
		}
		return it0, ok0
	}
	present := 0
	for _, key := range chaosKeys() {
		if _, ok := same(key); ok {
			present++
		}
	}
	cw.mu.Lock()
	acked := cw.acked
	cw.mu.Unlock()
	kept := 0
	for key, val := range acked {
		it, ok := same(key)
		if ok {
			kept++
		}
		if mode.durable {
			require.True(t, ok, "acknowledged write of %s lost\n%s", key, logs(nodes))
			require.Equal(t, val, it.value, key)
		}
	}
	t.Logf("%d kills, %d stops; %d requests (%d answered with an error, %d lost with their connection); "+
		"%d shared keys alike on every node (%d present); %d acknowledged single writes alike on every node, %d of them present",
		kills, stops, cw.requests.Load(), cw.serverErrors.Load(), cw.ioErrors.Load(), len(chaosKeys()), present, len(acked), kept)
	if len(cw.errs) > 0 {
		t.Logf("errors answered: %v", cw.errs)
	}
}

// chaosShared and chaosCounters are the keys every writer works on.
const chaosShared, chaosCounters = 40, 8

func chaosKeys() []string {
	var keys []string
	for i := range chaosShared {
		keys = append(keys, "x:"+strconv.Itoa(i))
	}
	for i := range chaosCounters {
		keys = append(keys, "n:"+strconv.Itoa(i))
	}
	return keys
}

type chaosWriters struct {
	nodes []*replNode
	mode  chaosMode
	done  chan struct{}
	wg    sync.WaitGroup

	requests, serverErrors, ioErrors atomic.Int64

	mu    sync.Mutex
	acked map[string]string // single-writer keys whose set was acknowledged
	wrong []string          // replies the protocol does not allow
	errs  map[string]int    // SERVER_ERROR replies by text
}

// sample returns up to n of the acknowledged single writes.
func (cw *chaosWriters) sample(rng *mrand.Rand, n int) map[string]string {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	out := make(map[string]string, n)
	for key, val := range cw.acked { // map order: random enough
		if len(out) == n {
			break
		}
		if rng.IntN(4) == 0 {
			out[key] = val
		}
	}
	return out
}

func (cw *chaosWriters) violations() []string {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	return append([]string(nil), cw.wrong...)
}

// run is one writer: random commands on random nodes, moving to another
// node whenever its connection fails.
func (cw *chaosWriters) run(g int, seed uint64) {
	defer cw.wg.Done()
	rng := mrand.New(mrand.NewPCG(seed, uint64(g)+2))
	var tc *textClient
	for seq := 0; ; seq++ {
		select {
		case <-cw.done:
			if tc != nil {
				tc.c.Close()
			}
			return
		default:
		}
		if tc == nil {
			c, err := dialText(cw.nodes[rng.IntN(len(cw.nodes))].addr)
			if err != nil {
				time.Sleep(10 * time.Millisecond) // the node is down: try another soon
				continue
			}
			tc = c
		}
		if err := cw.one(tc, rng, g, seq); err != nil {
			cw.ioErrors.Add(1)
			tc.c.Close()
			tc = nil
		}
	}
}

// one sends one random command and checks that its reply is one the
// command may get. It returns an error only when the connection failed.
func (cw *chaosWriters) one(tc *textClient, rng *mrand.Rand, g, seq int) error {
	cw.requests.Add(1)
	key := "x:" + strconv.Itoa(rng.IntN(chaosShared))
	val := fmt.Sprintf("g%d-%d", g, seq)
	var req string
	var allowed []string
	ops := 10
	if cw.mode.rich {
		ops = 16
	}
	if cw.mode.flush && rng.IntN(300) == 0 {
		line, err := tc.do("flush_all\r\n")
		if err != nil {
			return err
		}
		if line != "OK\r\n" && !strings.HasPrefix(line, "SERVER_ERROR ") {
			cw.violation("flush_all: %q", line)
		}
		return nil
	}
	switch op := rng.IntN(ops); op {
	case 0, 1:
		req, allowed = setReq(key, val), []string{"STORED"}
	case 2:
		req, allowed = fmt.Sprintf("add %s 0 0 %d\r\n%s\r\n", key, len(val), val), []string{"STORED", "NOT_STORED"}
	case 3:
		req, allowed = fmt.Sprintf("append %s 0 0 %d\r\n%s\r\n", key, len(val)+1, "+"+val), []string{"STORED", "NOT_STORED"}
	case 4:
		req, allowed = "delete "+key+"\r\n", []string{"DELETED", "NOT_FOUND"}
	case 5:
		req, allowed = "touch "+key+" 0\r\n", []string{"TOUCHED", "NOT_FOUND"}
	case 6:
		ctr := "n:" + strconv.Itoa(rng.IntN(chaosCounters))
		line, err := tc.do("incr " + ctr + " 1\r\n")
		if err != nil {
			return err
		}
		if line == "NOT_FOUND\r\n" {
			req, allowed = fmt.Sprintf("add %s 0 0 1\r\n0\r\n", ctr), []string{"STORED", "NOT_STORED"}
			break
		}
		if _, err := strconv.ParseUint(strings.TrimSuffix(line, "\r\n"), 10, 64); err != nil && !strings.HasPrefix(line, "SERVER_ERROR ") {
			cw.violation("incr %s: %q", ctr, line)
		}
		return nil
	case 7:
		it, ok, err := tc.gets(key)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		nv := it.value + "|" + val
		if len(nv) > 1000 {
			nv = val
		}
		req, allowed = fmt.Sprintf("cas %s 0 0 %d %d\r\n%s\r\n", key, len(nv), it.cas, nv), []string{"STORED", "EXISTS", "NOT_FOUND"}
	case 10:
		// Over the 1 MB limit's chunks: chained items.
		big := strings.Repeat(val+".", (100<<10+rng.IntN(800<<10))/(len(val)+1))
		req, allowed = setReq(key, big), []string{"STORED"}
	case 11:
		req, allowed = fmt.Sprintf("ms %s %d F%d T%d\r\n%s\r\n", key, len(val), rng.IntN(1<<16), rng.IntN(3)*1000, val), []string{"HD"}
	case 12:
		ctr := "n:" + strconv.Itoa(rng.IntN(chaosCounters))
		req, allowed = "ma "+ctr+" D"+strconv.Itoa(1+rng.IntN(5))+"\r\n", []string{"HD", "NF"}
	case 13:
		req, allowed = "md "+key+"\r\n", []string{"HD", "NF"}
	case 14:
		req, allowed = fmt.Sprintf("set %s %d %d %d\r\n%s\r\n", key, rng.IntN(1000), 100+rng.IntN(1000), len(val), val), []string{"STORED"}
	case 15:
		req, allowed = "gat 500 "+key+"\r\n", nil
		line, err := tc.do(req)
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "SERVER_ERROR ") {
			cw.serverError(line)
			return nil
		}
		if line != "END\r\n" {
			// VALUE line: read the data block and END.
			f := strings.Fields(line)
			n, err := strconv.Atoi(f[len(f)-1])
			if len(f) != 4 || f[0] != "VALUE" || err != nil {
				cw.violation("gat %s: %q", key, line)
				return nil
			}
			buf := make([]byte, n+2)
			if _, err := io.ReadFull(tc.r, buf); err != nil {
				return err
			}
			end, err := tc.r.ReadString('\n')
			if err != nil {
				return err
			}
			if end != "END\r\n" {
				cw.violation("gat %s: ends %q", key, end)
			}
		}
		return nil
	default:
		// A key only this writer ever writes, once: if the set is
		// acknowledged, it must survive on every node.
		dk := fmt.Sprintf("d:%d:%d", g, seq)
		line, err := tc.do(setReq(dk, val))
		if err != nil {
			return err
		}
		switch {
		case line == "STORED\r\n":
			cw.mu.Lock()
			cw.acked[dk] = val
			cw.mu.Unlock()
		case strings.HasPrefix(line, "SERVER_ERROR "):
			cw.serverError(line)
		default:
			cw.violation("set %s: %q", dk, line)
		}
		return nil
	}
	line, err := tc.do(req)
	if err != nil {
		return err
	}
	got := strings.TrimSuffix(line, "\r\n")
	if strings.HasPrefix(got, "SERVER_ERROR ") {
		cw.serverError(line)
		return nil
	}
	for _, a := range allowed {
		if got == a {
			return nil
		}
	}
	cw.violation("%s: %q", strings.SplitN(req, "\r\n", 2)[0], line)
	return nil
}

func (cw *chaosWriters) serverError(line string) {
	cw.serverErrors.Add(1)
	cw.mu.Lock()
	cw.errs[strings.TrimSpace(line)]++
	cw.mu.Unlock()
}

func (cw *chaosWriters) violation(format string, args ...any) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if len(cw.wrong) < 20 {
		cw.wrong = append(cw.wrong, fmt.Sprintf(format, args...))
	}
}
