package server_test

import (
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

// startReplicated starts a server whose store replicates to one in-process
// peer, with the given write timeout, once the two are in sync.
func startReplicated(t *testing.T, writeTimeout time.Duration) string {
	t.Helper()
	addrs := make([]string, 2)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addrs[i] = l.Addr().String()
		require.NoError(t, l.Close())
	}
	var node *replication.Replicator
	var nodeStore *store.Store
	for i := range addrs {
		r, err := replication.New(replication.Config{Listen: addrs[i], Peers: []string{addrs[1-i]}, NodeID: addrs[i]})
		require.NoError(t, err)
		st, err := store.New(store.Config{MemoryLimit: 64 << 20, Observer: r})
		require.NoError(t, err)
		require.NoError(t, r.Start(st))
		t.Cleanup(func() { _ = r.Close() })
		if i == 0 {
			node, nodeStore = r, st
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		state := ""
		node.Stats(func(name, value string) {
			if name == "peer0:state" {
				state = value
			}
		})
		if state == "in_sync" {
			break
		}
		require.True(t, time.Now().Before(deadline), "peer not in sync: %s", state)
		time.Sleep(10 * time.Millisecond)
	}
	addr, _ := serveStore(t, server.Config{Replicator: node, WriteTimeout: writeTimeout}, nodeStore)
	return addr
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
