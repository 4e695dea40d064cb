package server_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/replication"
	"github.com/tandemcache/tandem/server"
	"github.com/tandemcache/tandem/store"
)

// replPair is a server whose store replicates to one in-process peer.
type replPair struct {
	addr string
	node *replication.Replicator
	peer *store.Store
}

// startReplicated starts a server whose store replicates to one in-process
// peer, with the given write timeout, once the two are in sync.
func startReplicated(t *testing.T, writeTimeout time.Duration) string {
	return startReplPair(t, writeTimeout, 0, 0).addr
}

// startReplPair is startReplicated with the links' MaxPending and the
// replication timeout (0: the defaults), returning the replicator and the
// peer's store too.
func startReplPair(t *testing.T, writeTimeout time.Duration, maxPending int, replTimeout time.Duration) replPair {
	t.Helper()
	addrs := make([]string, 2)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addrs[i] = l.Addr().String()
		require.NoError(t, l.Close())
	}
	var p replPair
	var nodeStore *store.Store
	for i := range addrs {
		r, err := replication.New(replication.Config{Listen: addrs[i], Peers: []string{addrs[1-i]},
			NodeID: addrs[i], MaxPending: maxPending, Timeout: replTimeout})
		require.NoError(t, err)
		st, err := store.New(store.Config{MemoryLimit: 64 << 20, Observer: r})
		require.NoError(t, err)
		require.NoError(t, r.Start(st))
		t.Cleanup(func() { _ = r.Close() })
		if i == 0 {
			p.node, nodeStore = r, st
		} else {
			p.peer = st
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		state := replStat(p.node, "peer0:state")
		if state == "in_sync" {
			break
		}
		require.True(t, time.Now().Before(deadline), "peer not in sync: %s", state)
		time.Sleep(10 * time.Millisecond)
	}
	p.addr, _ = serveStore(t, server.Config{Replicator: p.node, WriteTimeout: writeTimeout}, nodeStore)
	return p
}

// replStat is one line of a replicator's "stats replication".
func replStat(r *replication.Replicator, name string) string {
	v := ""
	r.Stats(func(n, value string) {
		if n == name {
			v = value
		}
	})
	return v
}

// TestHeldRepliesReaderGone: a client that pipelines writes and reads,
// then quit, and never reads its replies, is dropped after the write
// timeout although its handler waits for the held replies to go out.
func TestHeldRepliesReaderGone(t *testing.T) {
	addr := startReplicated(t, 300*time.Millisecond)
	big := strings.Repeat("x", 256<<10)
	c := mustDial(t, addr)
	require.NoError(t, c.roundTrip(fmt.Sprintf("set big 0 0 %d\r\n%s\r\n", len(big), big), "STORED\r\n"))
	curr, err := c.stat("curr_connections")
	require.NoError(t, err)

	// Every flush holds a write's reply, so the replies are written off the
	// handler, which waits for them after quit.
	stuck, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer stuck.Close()
	require.NoError(t, stuck.(*net.TCPConn).SetReadBuffer(16<<10))
	var req strings.Builder
	for i := range 40 {
		fmt.Fprintf(&req, "set k%d 0 0 1\r\nv\r\nget big\r\n", i)
	}
	req.WriteString("quit\r\n")
	require.NoError(t, stuck.SetWriteDeadline(time.Now().Add(ioTimeout)))
	_, err = io.WriteString(stuck, req.String())
	require.NoError(t, err)

	// Not read at all: the server gives up on it and closes it.
	c.waitStat(t, "curr_connections", curr)
}

var be = binary.BigEndian

// TestReplBackPressure: clients that pipeline large sets faster than the
// peer applies them (text and binary) are held back (Replicator.Throttle), so the peer stays
// in sync and every acknowledged write is on it. Without back-pressure the
// node ran ahead of its acks until the link's backlog passed MaxPending,
// the peer was dropped, and the rest of the writes were acknowledged
// without it.
func TestReplBackPressure(t *testing.T) {
	// A window of 128 KiB. A long timeout: under -race on a busy machine
	// the peer may take long enough that a writer would be let go at the
	// timeout (and the link overflow), which is not what this tests.
	p := startReplPair(t, 5*time.Second, 512<<10, 10*time.Second)
	const conns, sets = 4, 400
	value := strings.Repeat("v", 16<<10)
	errs := make(chan error, conns)
	for c := range conns {
		go func() {
			errs <- func() error {
				nc, err := net.Dial("tcp", p.addr)
				if err != nil {
					return err
				}
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(60 * time.Second))
				// Odd connections speak the binary protocol.
				binary := c%2 == 1
				var req []byte
				for i := range sets {
					key := fmt.Sprintf("bp%d_%d", c, i)
					if !binary {
						req = fmt.Appendf(req, "set %s 0 0 %d\r\n%s\r\n", key, len(value), value)
						continue
					}
					h := make([]byte, 24+8)
					h[0], h[1], h[4] = 0x80, 0x01, 8 // SET, 8 bytes of extras (flags, exptime)
					be.PutUint16(h[2:], uint16(len(key)))
					be.PutUint32(h[8:], uint32(8+len(key)+len(value)))
					be.PutUint32(h[12:], uint32(i))
					req = append(append(append(req, h...), key...), value...)
				}
				sent := make(chan error, 1)
				go func() { _, err := nc.Write(req); sent <- err }()
				want := []byte(strings.Repeat("STORED\r\n", sets))
				if binary {
					want = make([]byte, 24*sets)
				}
				got := make([]byte, len(want))
				if _, err := io.ReadFull(nc, got); err != nil {
					return fmt.Errorf("conn %d: %w", c, err)
				}
				for i := 0; binary && i < sets; i++ {
					r := got[24*i : 24*i+24]
					if r[0] != 0x81 || r[1] != 0x01 || be.Uint16(r[6:]) != 0 || be.Uint32(r[12:]) != uint32(i) {
						return fmt.Errorf("conn %d: reply %d: % x", c, i, r)
					}
				}
				if !binary && string(got) != string(want) {
					return fmt.Errorf("conn %d: replies %q...", c, got[:min(64, len(got))])
				}
				return <-sent
			}()
		}()
	}
	for range conns {
		require.NoError(t, <-errs)
	}
	st := map[string]string{}
	p.node.Stats(func(name, value string) { st[name] = value })
	require.Equal(t, "0", st["peer0:overflows"], "%v", st)
	require.Equal(t, "0", st["writes_unsynced"], "%v", st)
	require.Equal(t, "in_sync", st["peer0:state"], "%v", st)
	require.NotEqual(t, "0", st["throttled"], "the writers were never held back: %v", st)
	for c := range conns {
		for i := range sets {
			key := fmt.Sprintf("bp%d_%d", c, i)
			n := -1
			err := p.peer.Get([]byte(key), store.GetOptions{}, func(it store.Item) { n = it.Len() })
			require.NoError(t, err, key)
			require.Equal(t, len(value), n, "%s on the peer", key)
		}
	}
	t.Logf("%d sets of %d bytes on %d connections; writers held back %s times", conns*sets, len(value), conns, st["throttled"])
}
