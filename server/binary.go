package server

// processBinary runs the binary-protocol request at the front of buf and
// returns the bytes consumed, or how many must be buffered first. The
// binary protocol is not implemented yet: the first request is answered
// with status 0x81 (Unknown command) and the connection closed.
func (c *conn) processBinary(buf []byte) (used, want int) {
	const body = "Unknown command"
	var opcode byte
	var opaque [4]byte
	if len(buf) >= 24 {
		opcode = buf[1]
		copy(opaque[:], buf[12:16])
	}
	hdr := [24]byte{0: 0x81, 1: opcode, 6: 0x00, 7: 0x81, 11: byte(len(body))}
	copy(hdr[12:16], opaque[:])
	c.out = append(c.out, hdr[:]...)
	c.out = append(c.out, body...)
	c.closing = true
	return len(buf), 0
}
