package protocol

import (
	"bytes"
	"testing"
)

// FuzzUDP: any datagram parses without panic, and an accepted one is a
// single-datagram request whose payload is the rest of the datagram.
func FuzzUDP(f *testing.F) {
	f.Add([]byte("\x00\x01\x00\x00\x00\x01\x00\x00get k\r\n"))
	f.Add([]byte("\x00\x01\x00\x01\x00\x02\x00\x00get k\r\n"))
	f.Add([]byte("\x00\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, d []byte) {
		h, payload, ok := ParseUDP(d)
		if !ok {
			return
		}
		if h.Seq != 0 || h.Total != 1 || !bytes.Equal(payload, d[UDPHeaderLen:]) {
			t.Fatalf("accepted %q as %+v with payload %q", d, h, payload)
		}
	})
}
