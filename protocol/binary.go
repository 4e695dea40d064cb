package protocol

import (
	"encoding/binary"
	"errors"
	"math"
)

// memcached's binary protocol (doc/protocol-binary.txt): every request and
// response is a 24-byte big-endian header followed by a body of extras, key
// and value, in that order. The body length in the header covers all three.

const (
	// BinaryRequestMagic is the first byte of every request.
	BinaryRequestMagic = 0x80
	// BinaryResponseMagic is the first byte of every response.
	BinaryResponseMagic = 0x81
	// BinaryHeaderLen is the size of a request or response header.
	BinaryHeaderLen = 24
)

// Binary opcodes memcached 1.6 knows. The …Q variants are quiet: a success
// gets no response (for the gets, a miss gets none).
const (
	OpGet       = 0x00
	OpSet       = 0x01
	OpAdd       = 0x02
	OpReplace   = 0x03
	OpDelete    = 0x04
	OpIncrement = 0x05
	OpDecrement = 0x06
	OpQuit      = 0x07
	OpFlush     = 0x08
	OpGetQ      = 0x09
	OpNoop      = 0x0a
	OpVersion   = 0x0b
	OpGetK      = 0x0c
	OpGetKQ     = 0x0d
	OpAppend    = 0x0e
	OpPrepend   = 0x0f
	OpStat      = 0x10
	OpSetQ      = 0x11
	OpAddQ      = 0x12
	OpReplaceQ  = 0x13
	OpDeleteQ   = 0x14
	OpIncrQ     = 0x15
	OpDecrQ     = 0x16
	OpQuitQ     = 0x17
	OpFlushQ    = 0x18
	OpAppendQ   = 0x19
	OpPrependQ  = 0x1a
	OpTouch     = 0x1c
	OpGAT       = 0x1d
	OpGATQ      = 0x1e
	OpSASLList  = 0x20
	OpSASLAuth  = 0x21
	OpSASLStep  = 0x22
	OpGATK      = 0x23
	OpGATKQ     = 0x24
)

// Binary response status codes.
const (
	StatusOK             = 0x00
	StatusKeyNotFound    = 0x01
	StatusKeyExists      = 0x02
	StatusTooLarge       = 0x03
	StatusInvalid        = 0x04
	StatusNotStored      = 0x05
	StatusDeltaBadval    = 0x06
	StatusAuthError      = 0x20
	StatusAuthContinue   = 0x21 // SASL: send the next message with SASL_STEP
	StatusUnknownCommand = 0x81
	StatusNoMemory       = 0x82
	StatusTempFailure    = 0x86 // memcached's ETMPFAIL: used for a write replication could not acknowledge
)

// StatusText is the body memcached sends with an error status when it has
// no more specific message ("" for the statuses it never sends that way).
func StatusText(status uint16) string {
	switch status {
	case StatusKeyNotFound:
		return "Not found"
	case StatusKeyExists:
		return "Data exists for key."
	case StatusTooLarge:
		return "Too large."
	case StatusInvalid:
		return "Invalid arguments"
	case StatusNotStored:
		return "Not stored."
	case StatusDeltaBadval:
		return "Non-numeric server-side value for incr or decr"
	case StatusAuthError:
		return "Auth failure."
	case StatusUnknownCommand:
		return "Unknown command"
	case StatusNoMemory:
		return "Out of memory"
	}
	return ""
}

// Errors ParseBinary returns besides ErrNeedMore.
var (
	// ErrBinaryMagic: the first byte is not BinaryRequestMagic. memcached
	// closes the connection without a reply.
	ErrBinaryMagic = errors.New("protocol: bad binary request magic")
	// ErrBinaryLengths: the extras and key are longer than the body.
	// memcached answers Unknown command and closes.
	ErrBinaryLengths = errors.New("protocol: binary key and extras longer than the body")
	// ErrBinaryKeyLen: the key is longer than MaxKeyLen. memcached answers
	// Invalid arguments and closes.
	ErrBinaryKeyLen = errors.New("protocol: binary key longer than 250 bytes")
	// ErrBinaryTooLarge: the value is longer than the caller's limit. The
	// header, extras and key are parsed; the value is not buffered.
	ErrBinaryTooLarge = errors.New("protocol: binary value larger than the limit")
)

// BinaryHeader is a decoded request header.
type BinaryHeader struct {
	Magic    uint8
	Opcode   uint8
	KeyLen   uint16
	ExtLen   uint8
	DataType uint8
	VBucket  uint16 // the status in a response
	BodyLen  uint32 // extras + key + value
	Opaque   uint32 // echoed in the response
	CAS      uint64
}

// DecodeBinaryHeader decodes the header at the front of buf, which must hold
// at least BinaryHeaderLen bytes. It checks nothing.
func DecodeBinaryHeader(buf []byte, h *BinaryHeader) {
	_ = buf[BinaryHeaderLen-1]
	h.Magic = buf[0]
	h.Opcode = buf[1]
	h.KeyLen = binary.BigEndian.Uint16(buf[2:])
	h.ExtLen = buf[4]
	h.DataType = buf[5]
	h.VBucket = binary.BigEndian.Uint16(buf[6:])
	h.BodyLen = binary.BigEndian.Uint32(buf[8:])
	h.Opaque = binary.BigEndian.Uint32(buf[12:])
	h.CAS = binary.BigEndian.Uint64(buf[16:])
}

// HeadLen is the length of the header, extras and key: what memcached reads
// before it looks at the opcode.
func (h *BinaryHeader) HeadLen() int { return BinaryHeaderLen + int(h.ExtLen) + int(h.KeyLen) }

// ValueLen is the body length beyond the extras and key; callers check
// first that it is not negative (ParseBinary does).
func (h *BinaryHeader) ValueLen() int { return int(h.BodyLen) - int(h.ExtLen) - int(h.KeyLen) }

// BinaryRequest is one parsed request. Extras, Key and Value alias the
// parsed buffer: valid until it changes.
type BinaryRequest struct {
	BinaryHeader
	Extras []byte
	Key    []byte
	Value  []byte // nil when ParseBinary returned ErrBinaryTooLarge
}

// ParseBinary parses the request at the front of buf into r, reading at most
// maxValue value bytes. It returns:
//
//   - (n, nil): a whole request of n bytes (header and body);
//   - (n, ErrNeedMore): buf is incomplete; n > len(buf) bytes are needed;
//   - (n, ErrBinaryTooLarge): header, extras and key parsed (n bytes), the
//     value of r.ValueLen() bytes is longer than maxValue and not read;
//   - (0, ErrBinaryMagic / ErrBinaryLengths / ErrBinaryKeyLen): a request
//     that cannot be framed; r's header is decoded for the last two.
//
// Lengths are checked in that order: the magic and the header's lengths as
// soon as the header is complete, the key length once the header, extras
// and key are buffered (memcached waits for them too). ParseBinary never
// asks for more than BinaryHeaderLen+255+65535 bytes before the value, and
// never for a value longer than maxValue.
func ParseBinary(buf []byte, maxValue int, r *BinaryRequest) (int, error) {
	if len(buf) < BinaryHeaderLen {
		return BinaryHeaderLen, ErrNeedMore
	}
	if buf[0] != BinaryRequestMagic {
		return 0, ErrBinaryMagic
	}
	DecodeBinaryHeader(buf, &r.BinaryHeader)
	r.Extras, r.Key, r.Value = nil, nil, nil
	if r.ValueLen() < 0 {
		return 0, ErrBinaryLengths
	}
	head := r.HeadLen()
	if len(buf) < head {
		return head, ErrNeedMore
	}
	if r.KeyLen > MaxKeyLen {
		return 0, ErrBinaryKeyLen
	}
	r.Extras = buf[BinaryHeaderLen : BinaryHeaderLen+int(r.ExtLen)]
	r.Key = buf[BinaryHeaderLen+int(r.ExtLen) : head]
	if r.ValueLen() > maxValue {
		return head, ErrBinaryTooLarge
	}
	total := head + r.ValueLen()
	if len(buf) < total {
		return total, ErrNeedMore
	}
	r.Value = buf[head:total]
	return total, nil
}

// BinaryKeys appends to dst the keys of the whole requests at the front of
// buf, until dst holds max keys or ParseBinary stops at a request (one that
// is incomplete or cannot be framed). It also returns how many bytes of buf
// the requests it looked at span. The keys alias buf. A server uses them to
// prefetch a pipelined batch before it runs each request.
func BinaryKeys(dst [][]byte, buf []byte, max int) ([][]byte, int) {
	var r BinaryRequest
	n := 0
	for len(dst) < max {
		m, err := ParseBinary(buf[n:], math.MaxInt, &r)
		if err != nil {
			break
		}
		if len(r.Key) > 0 {
			dst = append(dst, r.Key)
		}
		n += m
	}
	return dst, n
}

// AppendBinaryHeader appends a response header: magic 0x81, the request's
// opcode and opaque, the status, and the lengths of a body of extLen extras,
// keyLen key bytes and valueLen value bytes. The caller appends the body.
func AppendBinaryHeader(dst []byte, opcode uint8, status uint16, extLen, keyLen, valueLen int, opaque uint32, cas uint64) []byte {
	var h [BinaryHeaderLen]byte
	h[0] = BinaryResponseMagic
	h[1] = opcode
	binary.BigEndian.PutUint16(h[2:], uint16(keyLen))
	h[4] = uint8(extLen)
	binary.BigEndian.PutUint16(h[6:], status)
	binary.BigEndian.PutUint32(h[8:], uint32(extLen+keyLen+valueLen))
	binary.BigEndian.PutUint32(h[12:], opaque)
	binary.BigEndian.PutUint64(h[16:], cas)
	return append(dst, h[:]...)
}

// AppendBinaryResponse appends a whole response with a body of extras, key
// and value (any may be nil).
func AppendBinaryResponse(dst []byte, opcode uint8, status uint16, opaque uint32, cas uint64, extras, key, value []byte) []byte {
	dst = AppendBinaryHeader(dst, opcode, status, len(extras), len(key), len(value), opaque, cas)
	dst = append(dst, extras...)
	dst = append(dst, key...)
	return append(dst, value...)
}

// AppendBinaryError appends an error response whose body is msg (no extras,
// no key), as memcached's write_bin_error.
func AppendBinaryError(dst []byte, opcode uint8, status uint16, opaque uint32, msg string) []byte {
	dst = AppendBinaryHeader(dst, opcode, status, 0, 0, len(msg), opaque, 0)
	return append(dst, msg...)
}

// AppendBinaryStat appends one STAT response packet: key name, value value.
// An empty name and value make the packet that ends a STAT reply.
func AppendBinaryStat(dst []byte, opaque uint32, name string, value []byte) []byte {
	dst = AppendBinaryHeader(dst, OpStat, StatusOK, 0, len(name), len(value), opaque, 0)
	dst = append(dst, name...)
	return append(dst, value...)
}
