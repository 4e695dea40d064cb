package replication

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/tandemcache/tandem/store"
)

// The wire format. A link is a TCP connection from the node that sends its
// writes (the dialer) to a peer's replication port. After the handshake,
// every message is a frame:
//
//	u32 big-endian n | n bytes of msgpack header | header.VLen raw value bytes
//
// The header is a msgpack array (the field order of frame is the schema:
// fields are only ever appended). The value follows raw so that it is
// never encoded, and the receiver reads it straight into a buffer it
// reuses. The peer answers with frames too: cumulative acks.
const (
	magic = "TANDEM-REPL"
	// version is the wire version; a peer speaking another is refused.
	version = 1
	// maxHeader bounds a frame header: a 250-byte key, a few integers and
	// msgpack's tags fit many times over. Checked before allocating.
	maxHeader = 4 << 10
	// maxHello bounds a handshake message: two ids, a group name, a nonce
	// and a proof.
	maxHello = 4 << 10
	nonceLen = 32
)

// Frame kinds.
const (
	opSet   = 1 // the key's state: value, flags, exptime, CAS
	opDel   = 2 // the key was deleted at version CAS
	opFlush = 3 // flush_all: items before unix second Exp, or below CAS, are gone
	opMark  = 4 // end of a resync: acking Seq means the peer holds everything before it
	opAck   = 5 // (peer to dialer) every frame up to Seq is applied
	opNack  = 6 // (peer to dialer) the state with this CAS was refused: the peer holds a newer one
)

// frame is a frame header. Seq is 0 for the items of a resync, which are
// acknowledged together by the mark that ends it.
type frame struct {
	_struct struct{} `codec:",toarray"` //nolint:unused // codec's array tag

	Op    uint8
	Seq   uint64
	Key   []byte
	Flags uint32
	Exp   int64 // absolute unix seconds, 0 for never
	CAS   uint64
	VLen  uint32
	Bits  uint8 // bitBinaryKey: the key was given in base64 (meta b)
}

const bitBinaryKey = 1

// hello is a handshake message. The dialer sends Magic, Version, Node,
// Group, NodeNum and its Nonce; the listener answers with the same fields,
// its own Nonce and Proof of the secret over both nonces (or Err and
// closes); the dialer then sends its Proof, and the listener an empty
// hello (or Err).
type hello struct {
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

func newHandle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true
	// A hostile length must not make the decoder preallocate: the frame
	// is already bounded, this bounds what one field may claim.
	h.MaxInitLen = maxHeader
	return h
}

// codecs is one connection's encoder and decoder, made once and reused:
// a fresh one per message costs several times the encoding itself.
type codecs struct {
	h   *codec.MsgpackHandle
	enc *codec.Encoder
	dec *codec.Decoder
	out []byte // what enc writes
}

func newCodecs() *codecs {
	c := &codecs{h: newHandle()}
	c.enc = codec.NewEncoderBytes(&c.out, c.h)
	c.dec = codec.NewDecoderBytes(nil, c.h)
	return c
}

// appendMsg appends v as a frame (length, then msgpack) to dst.
func (c *codecs) appendMsg(dst []byte, v any) []byte {
	c.enc.ResetBytes(&c.out)
	if err := c.enc.Encode(v); err != nil {
		// Only a programming error can make encoding a fixed struct fail.
		panic(fmt.Sprintf("replication: encode %T: %v", v, err))
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(c.out)))
	return append(dst, c.out...)
}

// errFrame is any malformed frame: the link is closed.
var errFrame = errors.New("malformed frame")

// readMsg reads one length-prefixed msgpack message of at most limit bytes
// into v. buf is scratch, returned grown if it had to be.
func (c *codecs) readMsg(r *bufio.Reader, buf []byte, limit int, v any) ([]byte, error) {
	l, err := r.Peek(4) // not ReadFull into an array: that escapes, one allocation a frame
	if err != nil {
		if err == io.EOF && len(l) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return buf, err
	}
	n32 := binary.BigEndian.Uint32(l)
	_, _ = r.Discard(4)
	if !msgLenOK(n32, limit) {
		return buf, fmt.Errorf("%w: header of %d bytes (limit %d)", errFrame, n32, limit)
	}
	n := int(n32)
	if cap(buf) < n {
		buf = make([]byte, n, limit)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf, err
	}
	return buf, c.decode(buf, v)
}

// msgLenOK tells whether n, a message length read off the wire, is one to
// read: not 0 and at most limit. It compares before any int(n), which is
// negative on 32-bit builds for the largest n.
func msgLenOK(n uint32, limit int) bool { return n != 0 && uint64(n) <= uint64(limit) }

// decode decodes one msgpack message that must fill msg exactly.
func (c *codecs) decode(msg []byte, v any) (err error) {
	defer func() {
		// The codec reports most errors as values, but a hostile input is
		// not worth a crash if it finds a panic.
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", errFrame, p)
		}
	}()
	if f, ok := v.(*frame); ok && decodeFrame(msg, f) {
		return nil
	}
	c.dec.ResetBytes(msg)
	if err := c.dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errFrame, err)
	}
	if c.dec.NumBytesRead() != len(msg) {
		return fmt.Errorf("%w: %d bytes after the header", errFrame, len(msg)-c.dec.NumBytesRead())
	}
	return nil
}

// proof is what a side sends to show it knows the secret: an HMAC over its
// role and both nonces, so a proof can be neither replayed nor reflected.
func proof(secret []byte, role string, mine, theirs []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(role))
	m.Write(mine)
	m.Write(theirs)
	return m.Sum(nil)
}

// checkFrame validates a header received from a peer before anything is
// allocated or applied for it.
func checkFrame(f *frame, itemMax int) error {
	switch f.Op {
	case opSet:
		if int64(f.VLen) > int64(itemMax) {
			return fmt.Errorf("%w: value of %d bytes (item size max %d)", errFrame, f.VLen, itemMax)
		}
	case opDel, opFlush, opMark:
		if f.VLen != 0 {
			return fmt.Errorf("%w: op %d with a value", errFrame, f.Op)
		}
	default:
		return fmt.Errorf("%w: unknown op %d", errFrame, f.Op)
	}
	if (f.Op == opSet || f.Op == opDel) && (len(f.Key) == 0 || len(f.Key) > store.MaxKeyLen) {
		return fmt.Errorf("%w: key of %d bytes", errFrame, len(f.Key))
	}
	return nil
}

// appendFrame appends f as a frame (length, then its msgpack header) to
// dst. It writes the same msgpack array that the codec writes for frame
// (TestAppendFrameMatchesCodec checks it), by hand: it runs for every
// write with the key's shard locked, and the codec's reflection took a
// quarter of a replicating node's CPU.
func appendFrame(dst []byte, f *frame) []byte {
	at := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0x98) // length placeholder, fixarray of 8
	dst = appendUint(dst, uint64(f.Op))
	dst = appendUint(dst, f.Seq)
	if f.Key == nil {
		dst = append(dst, 0xc0) // nil, as the codec writes a nil slice
	} else {
		dst = append(dst, 0xc4, byte(len(f.Key))) // bin8: keys are at most 250 bytes
		dst = append(dst, f.Key...)
	}
	dst = appendUint(dst, uint64(f.Flags))
	dst = appendInt(dst, f.Exp)
	dst = appendUint(dst, f.CAS)
	dst = appendUint(dst, uint64(f.VLen))
	dst = appendUint(dst, uint64(f.Bits))
	binary.BigEndian.PutUint32(dst[at:], uint32(len(dst)-at-4))
	return dst
}

// appendUint writes v in msgpack's smallest unsigned form.
func appendUint(b []byte, v uint64) []byte {
	switch {
	case v < 0x80:
		return append(b, byte(v))
	case v <= 0xff:
		return append(b, 0xcc, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
}

// appendInt writes v as the codec does: a positive fixint, else the
// smallest signed form.
func appendInt(b []byte, v int64) []byte {
	switch {
	case v > 0x7fff_ffff:
		return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
	case v > 0x7fff:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	case v > 0x7f:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= -32:
		return append(b, byte(v))
	case v >= -128:
		return append(b, 0xd0, byte(v))
	case v >= -32768:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(v))
	case v >= -1<<31:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}

// decodeFrame decodes the frame headers appendFrame writes, by hand: on a
// peer the codec's reflection cost a quarter of the CPU spent applying a
// write. It reports false, leaving f as it was, for anything else that is
// valid msgpack (other integer widths, a string key, more fields), which
// the codec then decodes; FuzzDecodeFrame checks that both agree.
func decodeFrame(msg []byte, f *frame) bool {
	if len(msg) == 0 || msg[0]&0xf0 != 0x90 {
		return false
	}
	n := int(msg[0] & 0x0f)
	if n > 8 {
		return false
	}
	g := *f
	d := msg[1:]
	ok := true
	var v uint64
	// Fields in their wire order; an overflowing integer is the codec's
	// error, so it goes to the codec.
	for i := 0; i < n && ok; i++ {
		switch i {
		case 0:
			v, d, ok = decodeUint(d, math.MaxUint8)
			g.Op = uint8(v)
		case 1:
			g.Seq, d, ok = decodeUint(d, math.MaxUint64)
		case 2:
			g.Key, d, ok = decodeKey(d, g.Key)
		case 3:
			v, d, ok = decodeUint(d, math.MaxUint32)
			g.Flags = uint32(v)
		case 4:
			g.Exp, d, ok = decodeInt(d)
		case 5:
			g.CAS, d, ok = decodeUint(d, math.MaxUint64)
		case 6:
			v, d, ok = decodeUint(d, math.MaxUint32)
			g.VLen = uint32(v)
		case 7:
			v, d, ok = decodeUint(d, math.MaxUint8)
			g.Bits = uint8(v)
		}
	}
	if !ok || len(d) != 0 {
		return false
	}
	*f = g
	return true
}

// decodeUint reads a positive fixint or a uint 8 to 64 of at most limit.
func decodeUint(d []byte, limit uint64) (uint64, []byte, bool) {
	if len(d) == 0 {
		return 0, d, false
	}
	b := d[0]
	if b < 0x80 {
		return uint64(b), d[1:], uint64(b) <= limit
	}
	if b < 0xcc || b > 0xcf {
		return 0, d, false
	}
	w := 1 << (b - 0xcc) // 1, 2, 4 or 8 bytes
	if len(d) < 1+w {
		return 0, d, false
	}
	v := bigEndian(d[1 : 1+w])
	return v, d[1+w:], v <= limit
}

// bigEndian reads an unsigned integer of len(b) bytes.
func bigEndian(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

// decodeInt reads a fixint (positive or negative) or an int 8 to 64.
func decodeInt(d []byte) (int64, []byte, bool) {
	if len(d) == 0 {
		return 0, d, false
	}
	b := d[0]
	if b < 0x80 || b >= 0xe0 {
		return int64(int8(b)), d[1:], true
	}
	if b < 0xd0 || b > 0xd3 {
		return 0, d, false
	}
	w := 1 << (b - 0xd0)
	if len(d) < 1+w {
		return 0, d, false
	}
	shift := 64 - 8*w // sign-extend from w bytes
	return int64(bigEndian(d[1:1+w])<<shift) >> shift, d[1+w:], true
}

// decodeKey reads a bin 8 into key's buffer, or nil.
func decodeKey(d, key []byte) ([]byte, []byte, bool) {
	if len(d) == 0 {
		return key, d, false
	}
	switch d[0] {
	case 0xc0:
		return nil, d[1:], true
	case 0xc4:
		if len(d) < 2 || len(d) < 2+int(d[1]) {
			return key, d, false
		}
		n := int(d[1])
		return append(key[:0], d[2:2+n]...), d[2+n:], true
	}
	return key, d, false
}
