package server

import (
	"errors"
	"fmt"
	"net"

	"github.com/tandemcache/tandem/protocol"
)

// serveUDP answers memcached's UDP protocol on one socket until it is
// closed: each datagram is one request (8-byte frame header, then text or
// binary commands); the reply goes back in frames of at most 1400 bytes.
//
// UDP replies go to an address nobody verified, which made memcached a
// notorious traffic amplifier. Tandem drops a malformed datagram without a
// word, and answers a reply larger than its request only to a retrieval (a
// get or meta get), the one command UDP is used for.
func (s *Server) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 64<<10)
	frame := make([]byte, protocol.UDPHeaderLen+protocol.UDPMaxPayload)
	c := newConn(s, nil)
	c.udp, c.udpFd = true, packetFd(pc)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fmt.Fprintf(s.cfg.Log, "tandem: udp: %v\n", err)
			}
			return
		}
		h, payload, ok := protocol.ParseUDP(buf[:n])
		if !ok || len(payload) == 0 {
			s.udpDropped.Add(1)
			continue
		}
		s.bytesRead.Add(uint64(n))
		c.reset()
		c.process(payload)
		c.flush() // settles replicated writes; a UDP reply is framed below
		reply := c.out
		if len(reply) > n && !c.retrieval {
			s.udpDropped.Add(1)
			continue
		}
		protocol.UDPFrames(h.RequestID, reply, frame, func(d []byte) {
			if _, err := pc.WriteTo(d, addr); err == nil {
				s.bytesWritten.Add(uint64(len(d)))
			}
		})
	}
}

// reset prepares the UDP pseudo-connection for the next datagram. Every
// datagram is a connection of its own: its first byte picks the protocol
// under -B (and -Y), as a connection's does, and it starts unauthenticated,
// since one socket serves every sender: a login must not carry over to
// another sender's datagrams.
func (c *conn) reset() {
	c.out = c.out[:0]
	c.swallow = 0
	c.closing = false
	c.started = false
	c.retrieval = false
	c.auth = authState{}
}
