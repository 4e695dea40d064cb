package server

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/store"
)

// TestInlinePanic: a panic in a task run on a poller (which only netpoll's
// own code could raise: the handlers recover theirs) is logged, closes that
// connection only, and leaves the server serving.
func TestInlinePanic(t *testing.T) {
	st, err := store.New(store.Config{MemoryLimit: 16 << 20})
	require.NoError(t, err)
	// A file: written by the server's goroutines, read by the test.
	log, err := os.Create(filepath.Join(t.TempDir(), "log"))
	require.NoError(t, err)
	defer log.Close()
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Log: log, LowLatency: true,
		ReqsPerEvent: 20, WriteTimeout: time.Second}, st)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, s.Shutdown(ctx))
		require.NoError(t, <-done)
	})
	addr := s.Addrs()[0].String()

	roundTrip := func(nc net.Conn, r *bufio.Reader) string {
		t.Helper()
		require.NoError(t, nc.SetDeadline(time.Now().Add(5*time.Second)))
		_, err := nc.Write([]byte("version\r\n"))
		require.NoError(t, err)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		return line
	}
	victim, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer victim.Close()
	vr := bufio.NewReader(victim)
	require.Contains(t, roundTrip(victim, vr), "VERSION")

	conns := s.connsWhere(func(*conn) bool { return true })
	require.Len(t, conns, 1)
	c := conns[0]
	// What runTask does for a task it runs on the poller.
	c.mu.Lock()
	c.runInline(func() { panic("boom") })
	c.mu.Unlock()

	require.NoError(t, victim.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = vr.ReadByte()
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "read timed out: the connection was not closed")
	require.Error(t, err, "the connection must be closed")
	logged, err := os.ReadFile(log.Name())
	require.NoError(t, err)
	require.Contains(t, string(logged), "tandem: panic on a poller serving")
	require.Contains(t, string(logged), "boom")

	other, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer other.Close()
	require.Contains(t, roundTrip(other, bufio.NewReader(other)), "VERSION")
}
