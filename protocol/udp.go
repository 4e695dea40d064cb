package protocol

import "encoding/binary"

// memcached's UDP frame: every datagram starts with an 8-byte header,
// big-endian: request id, sequence number, datagrams in the message, and a
// reserved zero.
const (
	UDPHeaderLen = 8
	// UDPMaxPayload is what a reply datagram carries after its header:
	// memcached's UDP_MAX_PAYLOAD_SIZE, 1400 bytes, counts the header too,
	// to stay under common MTUs.
	UDPMaxPayload = 1400 - UDPHeaderLen
)

// UDPHeader is a parsed frame header.
type UDPHeader struct {
	RequestID, Seq, Total uint16
}

// ParseUDP reads the header of a request datagram. memcached takes requests
// in a single datagram only: sequence 0 of 1, reserved 0. It reports false
// for anything else, which the server drops.
func ParseUDP(d []byte) (UDPHeader, []byte, bool) {
	if len(d) < UDPHeaderLen {
		return UDPHeader{}, nil, false
	}
	h := UDPHeader{
		RequestID: binary.BigEndian.Uint16(d[0:]),
		Seq:       binary.BigEndian.Uint16(d[2:]),
		Total:     binary.BigEndian.Uint16(d[4:]),
	}
	if h.Seq != 0 || h.Total != 1 || binary.BigEndian.Uint16(d[6:]) != 0 {
		return h, nil, false
	}
	return h, d[UDPHeaderLen:], true
}

// UDPFrames splits a reply into datagrams, calling emit with each (header
// and payload, valid only during the call). buf is scratch space of at
// least UDPHeaderLen+UDPMaxPayload bytes. It returns false if the reply
// needs more than 65535 datagrams, the most a header can count.
func UDPFrames(id uint16, reply, buf []byte, emit func([]byte)) bool {
	n := (len(reply) + UDPMaxPayload - 1) / UDPMaxPayload
	if n == 0 {
		return true
	}
	if n > 0xffff {
		return false
	}
	for i := 0; i < n; i++ {
		part := reply[i*UDPMaxPayload : min(len(reply), (i+1)*UDPMaxPayload)]
		binary.BigEndian.PutUint16(buf[0:], id)
		binary.BigEndian.PutUint16(buf[2:], uint16(i))
		binary.BigEndian.PutUint16(buf[4:], uint16(n))
		binary.BigEndian.PutUint16(buf[6:], 0)
		emit(append(buf[:UDPHeaderLen], part...))
	}
	return true
}
