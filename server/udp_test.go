package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/protocol"
	"github.com/tandemcache/tandem/store"
)

// udpServer starts a server with UDP on a free port and returns a socket
// connected to it.
func udpServer(t *testing.T) net.Conn {
	t.Helper()
	return udpServerWith(t, Config{})
}

// udpServerWith is udpServer with cfg (its addresses are set here).
func udpServerWith(t *testing.T, cfg Config) net.Conn {
	t.Helper()
	st, err := store.New(store.Config{})
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	cfg.Listen, cfg.UDPPort = []string{"127.0.0.1:0"}, port
	srv, err := New(cfg, st)
	require.NoError(t, err)
	go srv.Serve()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	c, err := net.Dial("udp", srv.UDPAddrs()[0].String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func udpRequest(id uint16, payload string) []byte {
	h := make([]byte, 8)
	binary.BigEndian.PutUint16(h[0:], id)
	binary.BigEndian.PutUint16(h[4:], 1)
	return append(h, payload...)
}

// udpReply reads the datagrams of one reply and reassembles it, within a
// deadline; it returns nil if nothing arrives.
func udpReply(t *testing.T, c net.Conn, id uint16, wait time.Duration) []byte {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(wait)))
	var parts [][]byte
	total := -1
	buf := make([]byte, 2048)
	for total < 0 || len(parts) < total {
		n, err := c.Read(buf)
		if err != nil {
			require.Less(t, total, 0, "reply cut short: %d of %d datagrams", len(parts), total)
			return nil
		}
		h, _, _ := protocol.ParseUDP(append([]byte(nil), buf[:n]...))
		require.Equal(t, id, binary.BigEndian.Uint16(buf[0:]))
		require.Equal(t, uint16(len(parts)), binary.BigEndian.Uint16(buf[2:]), "datagrams in order on loopback")
		total = int(binary.BigEndian.Uint16(buf[4:]))
		_ = h
		parts = append(parts, append([]byte(nil), buf[8:n]...))
	}
	return bytes.Join(parts, nil)
}

func TestUDP(t *testing.T) {
	c := udpServer(t)
	send := func(d []byte) {
		_, err := c.Write(d)
		require.NoError(t, err)
	}
	send(udpRequest(1, "set k 0 0 5\r\nhello\r\n"))
	require.Equal(t, "STORED\r\n", string(udpReply(t, c, 1, 2*time.Second)))
	send(udpRequest(2, "get k\r\n"))
	require.Equal(t, "VALUE k 0 5\r\nhello\r\nEND\r\n", string(udpReply(t, c, 2, 2*time.Second)))

	// A value larger than one datagram comes back in several, in order.
	big := bytes.Repeat([]byte("0123456789"), 500)
	send(udpRequest(3, "set big 0 0 5000\r\n"+string(big)+"\r\n"))
	require.Equal(t, "STORED\r\n", string(udpReply(t, c, 3, 2*time.Second)))
	send(udpRequest(4, "get big\r\n"))
	require.Equal(t, "VALUE big 0 5000\r\n"+string(big)+"\r\nEND\r\n", string(udpReply(t, c, 4, 2*time.Second)))

	// Meta and binary requests work too.
	send(udpRequest(5, "mg k v\r\n"))
	require.Equal(t, "VA 5\r\nhello\r\n", string(udpReply(t, c, 5, 2*time.Second)))
	noop := make([]byte, 24)
	noop[0], noop[1] = 0x80, 0x0a
	send(udpRequest(6, string(noop)))
	r := udpReply(t, c, 6, 2*time.Second)
	require.Len(t, r, 24)
	require.Equal(t, byte(0x81), r[0])

	// Dropped without a reply: short datagrams, multi-datagram requests,
	// and replies bigger than the request that are not retrievals.
	send([]byte{0, 7, 0})
	bad := udpRequest(8, "get k\r\n")
	binary.BigEndian.PutUint16(bad[4:], 2)
	send(bad)
	send(udpRequest(9, "stats\r\n"))
	// The next good request is answered, and nothing arrived for the bad ones.
	send(udpRequest(10, "get k\r\n"))
	require.Equal(t, "VALUE k 0 5\r\nhello\r\nEND\r\n", string(udpReply(t, c, 10, 2*time.Second)))
}

// binaryUDP is a binary request of opcode with key (and value for a set).
func binaryUDP(opcode uint8, key, value string) string {
	var extras []byte
	if opcode == protocol.OpSet {
		extras = make([]byte, 8)
	}
	return string(binPkt(opcode, key, extras, value, 0))
}

// TestUDPBinaryGet: a binary get is a retrieval too: its reply may be larger
// than the request.
func TestUDPBinaryGet(t *testing.T) {
	c := udpServer(t)
	val := string(bytes.Repeat([]byte("v"), 500))
	_, err := c.Write(udpRequest(1, binaryUDP(protocol.OpSet, "k", val)))
	require.NoError(t, err)
	r := udpReply(t, c, 1, 2*time.Second)
	require.Len(t, r, 24)
	require.Zero(t, binary.BigEndian.Uint16(r[6:]), "status")
	_, err = c.Write(udpRequest(2, binaryUDP(protocol.OpGet, "k", "")))
	require.NoError(t, err)
	r = udpReply(t, c, 2, 2*time.Second)
	require.Len(t, r, 24+4+len(val))
	require.Equal(t, val, string(r[28:]))
}

// TestUDPAuth: with -S, a datagram is held to what a new connection is:
// text is refused (-B binary) and binary commands need a login, which does
// not carry over to the next datagram, whoever sends it.
func TestUDPAuth(t *testing.T) {
	users, err := LoadSASLUsers(writeUsers(t, "u:p\n"))
	require.NoError(t, err)
	c := udpServerWith(t, Config{SASL: users, Protocol: ProtocolBinary})
	send := func(id uint16, payload string) []byte {
		t.Helper()
		_, err := c.Write(udpRequest(id, payload))
		require.NoError(t, err)
		return udpReply(t, c, id, time.Second)
	}
	require.Nil(t, send(1, "set k 0 0 1\r\nx\r\n"), "text over UDP with -S")
	r := send(2, binaryUDP(protocol.OpSASLAuth, "PLAIN", "\x00u\x00p"))
	require.Equal(t, uint16(protocol.StatusOK), binary.BigEndian.Uint16(r[6:]), "login")
	r = send(3, binaryUDP(protocol.OpSet, "k", "x"))
	require.Equal(t, uint16(protocol.StatusAuthError), binary.BigEndian.Uint16(r[6:]), "the login did not carry over")
	r = send(4, binaryUDP(protocol.OpSASLAuth, "PLAIN", "\x00u\x00p")+binaryUDP(protocol.OpSet, "k", "x"))
	require.Len(t, r, 2*24+len("Authenticated"))
	require.Zero(t, binary.BigEndian.Uint16(r[24+len("Authenticated")+6:]), "login and set in one datagram")
}

func TestUDPFrames(t *testing.T) {
	reply := bytes.Repeat([]byte("x"), 3*protocol.UDPMaxPayload+1)
	var got [][]byte
	buf := make([]byte, protocol.UDPHeaderLen+protocol.UDPMaxPayload)
	require.True(t, protocol.UDPFrames(77, reply, buf, func(d []byte) { got = append(got, append([]byte(nil), d...)) }))
	require.Len(t, got, 4)
	for i, d := range got {
		require.Equal(t, uint16(77), binary.BigEndian.Uint16(d[0:]))
		require.Equal(t, uint16(i), binary.BigEndian.Uint16(d[2:]))
		require.Equal(t, uint16(4), binary.BigEndian.Uint16(d[4:]))
	}
	require.Len(t, got[3], protocol.UDPHeaderLen+1)
}
