package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Protocol selects the wire format the generator speaks.
type Protocol uint8

const (
	// ProtoText is memcached's classic text protocol: get and set.
	ProtoText Protocol = iota
	// ProtoMeta is the meta text protocol: mg and ms.
	ProtoMeta
	// ProtoBinary is the binary protocol: GET and SET opcodes.
	ProtoBinary
)

func (p Protocol) String() string {
	switch p {
	case ProtoText:
		return "text"
	case ProtoMeta:
		return "meta"
	case ProtoBinary:
		return "binary"
	}
	return "unknown"
}

func parseProtocol(s string) (Protocol, error) {
	switch s {
	case "text":
		return ProtoText, nil
	case "meta":
		return ProtoMeta, nil
	case "binary":
		return ProtoBinary, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want text, meta or binary)", s)
}

// ReplyKind classifies one reply, whatever the protocol.
type ReplyKind uint8

const (
	// ReplyValue is one item: text VALUE, meta VA, a successful binary GET.
	ReplyValue ReplyKind = iota
	// ReplyEnd is text END, the end of a get's items.
	ReplyEnd
	// ReplyMiss is meta EN or binary status 0x0001 (key not found).
	ReplyMiss
	// ReplyStored is STORED, HD, or a successful binary SET.
	ReplyStored
	// ReplyNotStored is NOT_STORED, NS, or binary status 0x0005.
	ReplyNotStored
	// ReplyError is ERROR, CLIENT_ERROR, SERVER_ERROR or another binary status.
	ReplyError
	// ReplyNoop is meta MN or a binary NOOP response: the end of a
	// multi-get's replies.
	ReplyNoop
)

// Reply is one parsed reply. Key, Value and Msg alias the parsed buffer: they
// are valid only until the caller reuses or refills that buffer.
type Reply struct {
	Kind   ReplyKind
	Key    []byte // text VALUE's key, meta's k flag; nil otherwise
	Value  []byte
	Flags  uint32
	Msg    []byte // the error line (text, meta) or body (binary) of a ReplyError
	Status uint16 // binary status; 0 for the text protocols
	Opaque uint32 // binary opaque; 0 for the text protocols
}

// errMalformed is returned by the parsers when the bytes cannot be a reply:
// the stream is out of step and the connection must be dropped.
var errMalformed = errors.New("malformed reply")

// maxLine bounds a reply line. A longer line without "\r\n" is an error, not
// a reason to buffer forever: memcached's longest lines (VALUE with a 250-byte
// key and a CAS) are well under 400 bytes.
const maxLine = 2048

const (
	binHeaderLen = 24   // every binary packet starts with a 24-byte header
	binReqMagic  = 0x80 // request packets
	binResMagic  = 0x81 // response packets
	binOpGet     = 0x00
	binOpSet     = 0x01
	binOpNoop    = 0x0a
	binOpGetK    = 0x0c
	binOpGetKQ   = 0x0d // quiet: a miss sends no packet
	binSetExtras = 8    // SET extras: flags (4) and exptime (4)
	binGetExtras = 4    // GET response extras: flags (4)

	binStatusOK        = 0x0000
	binStatusNotFound  = 0x0001
	binStatusNotStored = 0x0005
)

// appendTextGet appends "get k1 k2 ...\r\n".
func appendTextGet(dst []byte, keys ...[]byte) []byte {
	dst = append(dst, "get"...)
	for _, k := range keys {
		dst = append(dst, ' ')
		dst = append(dst, k...)
	}
	return append(dst, "\r\n"...)
}

// appendTextSet appends "set key flags exptime bytes\r\nvalue\r\n".
func appendTextSet(dst, key []byte, flags uint32, exptime int64, value []byte) []byte {
	dst = append(dst, "set "...)
	dst = append(dst, key...)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(flags), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, exptime, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(len(value)), 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// appendMetaGet appends "mg key v f k\r\n": value, client flags and key, so
// that a hit can be checked against the key asked for.
func appendMetaGet(dst, key []byte) []byte {
	dst = append(dst, "mg "...)
	dst = append(dst, key...)
	return append(dst, " v f k\r\n"...)
}

// appendMetaNoop appends "mn\r\n", which the server answers with "MN" once
// it has answered every request before it.
func appendMetaNoop(dst []byte) []byte { return append(dst, "mn\r\n"...) }

// appendMetaSet appends "ms key bytes F<flags> T<exptime>\r\nvalue\r\n".
func appendMetaSet(dst, key []byte, flags uint32, exptime int64, value []byte) []byte {
	dst = append(dst, "ms "...)
	dst = append(dst, key...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(len(value)), 10)
	dst = append(dst, " F"...)
	dst = strconv.AppendUint(dst, uint64(flags), 10)
	dst = append(dst, " T"...)
	dst = strconv.AppendInt(dst, exptime, 10)
	dst = append(dst, "\r\n"...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// appendBinaryHeader appends a request header; all fields big-endian.
func appendBinaryHeader(dst []byte, op uint8, keyLen, extLen int, bodyLen int, opaque uint32) []byte {
	var h [binHeaderLen]byte
	h[0] = binReqMagic
	h[1] = op
	binary.BigEndian.PutUint16(h[2:], uint16(keyLen))
	h[4] = uint8(extLen)
	// h[5] data type and h[6:8] vbucket stay 0.
	binary.BigEndian.PutUint32(h[8:], uint32(bodyLen))
	binary.BigEndian.PutUint32(h[12:], opaque)
	// h[16:24] CAS stays 0: unconditional.
	return append(dst, h[:]...)
}

// appendBinaryGet appends a GET request packet.
func appendBinaryGet(dst, key []byte, opaque uint32) []byte {
	dst = appendBinaryHeader(dst, binOpGet, len(key), 0, len(key), opaque)
	return append(dst, key...)
}

// appendBinaryGetKQ appends a GETKQ request packet: a hit's response
// carries the key, a miss sends nothing.
func appendBinaryGetKQ(dst, key []byte, opaque uint32) []byte {
	dst = appendBinaryHeader(dst, binOpGetKQ, len(key), 0, len(key), opaque)
	return append(dst, key...)
}

// appendBinaryNoop appends a NOOP request packet: its response follows the
// responses to every request before it.
func appendBinaryNoop(dst []byte, opaque uint32) []byte {
	return appendBinaryHeader(dst, binOpNoop, 0, 0, 0, opaque)
}

// appendBinarySet appends a SET request packet with extras flags and exptime.
func appendBinarySet(dst, key []byte, flags uint32, exptime int64, value []byte, opaque uint32) []byte {
	dst = appendBinaryHeader(dst, binOpSet, len(key), binSetExtras, binSetExtras+len(key)+len(value), opaque)
	dst = binary.BigEndian.AppendUint32(dst, flags)
	dst = binary.BigEndian.AppendUint32(dst, uint32(exptime))
	dst = append(dst, key...)
	return append(dst, value...)
}

// line returns the first "\r\n"-terminated line of buf without its
// terminator and the bytes it spans, or n == 0 if the line is incomplete.
func line(buf []byte) (l []byte, n int, err error) {
	i := bytes.Index(buf, []byte("\r\n"))
	if i < 0 {
		if len(buf) > maxLine {
			return nil, 0, errMalformed
		}
		return nil, 0, nil
	}
	return buf[:i], i + 2, nil
}

// parseErrorLine recognises the error lines both text protocols share.
func parseErrorLine(l []byte, r *Reply) bool {
	if bytes.Equal(l, []byte("ERROR")) || bytes.HasPrefix(l, []byte("CLIENT_ERROR")) ||
		bytes.HasPrefix(l, []byte("SERVER_ERROR")) {
		r.Kind, r.Msg = ReplyError, l
		return true
	}
	return false
}

// dataBlock returns the n-byte data block that follows a header line of hl
// bytes, checking its "\r\n" terminator; total == 0 means incomplete.
func dataBlock(buf []byte, hl, n int) (data []byte, total int, err error) {
	if n < 0 {
		return nil, 0, errMalformed
	}
	end := hl + n + 2
	if len(buf) < end {
		return nil, 0, nil
	}
	if buf[end-2] != '\r' || buf[end-1] != '\n' {
		return nil, 0, errMalformed
	}
	return buf[hl : hl+n], end, nil
}

// ParseTextReply parses one text-protocol reply from the start of buf into r:
// one VALUE item, END, or a storage or error line. It returns the bytes
// consumed; 0 with a nil error means buf holds no complete reply yet.
func ParseTextReply(buf []byte, r *Reply) (int, error) {
	*r = Reply{}
	l, hl, err := line(buf)
	if hl == 0 {
		return 0, err
	}
	switch {
	case bytes.Equal(l, []byte("END")):
		r.Kind = ReplyEnd
		return hl, nil
	case bytes.Equal(l, []byte("STORED")):
		r.Kind = ReplyStored
		return hl, nil
	case bytes.Equal(l, []byte("NOT_STORED")), bytes.Equal(l, []byte("EXISTS")),
		bytes.Equal(l, []byte("NOT_FOUND")):
		r.Kind = ReplyNotStored
		return hl, nil
	case parseErrorLine(l, r):
		return hl, nil
	case !bytes.HasPrefix(l, []byte("VALUE ")):
		return 0, errMalformed
	}
	// VALUE <key> <flags> <bytes> [<cas>]
	key, rest := field(l[len("VALUE "):])
	f, rest := field(rest)
	sz, rest := field(rest)
	_, rest = field(rest) // the CAS, if asked for
	flags, ok1 := parseUint(f, math.MaxUint32)
	size, ok2 := parseUint(sz, math.MaxInt32)
	if !ok1 || !ok2 || len(key) == 0 || len(rest) != 0 {
		return 0, errMalformed
	}
	data, n, err := dataBlock(buf, hl, int(size))
	if n == 0 {
		return 0, err
	}
	r.Kind, r.Key, r.Flags, r.Value = ReplyValue, key, uint32(flags), data
	return n, nil
}

// field returns the first space-separated token of b and the rest after it.
func field(b []byte) (tok, rest []byte) {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return b, nil
	}
	return b[:i], b[i+1:]
}

// parseUint parses a non-empty decimal number no larger than limit.
func parseUint(b []byte, limit int) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, n <= uint64(limit)
}

// ParseMetaReply parses one meta-protocol reply (VA, EN, HD, NS, MN or an error
// line) from the start of buf into r, as ParseTextReply. Of the returned
// flags it reads f (client flags) and k (key).
func ParseMetaReply(buf []byte, r *Reply) (int, error) {
	*r = Reply{}
	l, hl, err := line(buf)
	if hl == 0 {
		return 0, err
	}
	if parseErrorLine(l, r) {
		return hl, nil
	}
	if len(l) < 2 || (len(l) > 2 && l[2] != ' ') {
		return 0, errMalformed
	}
	switch string(l[:2]) {
	case "MN":
		r.Kind = ReplyNoop
		return hl, nil
	case "EN":
		r.Kind = ReplyMiss
		return hl, nil
	case "HD":
		r.Kind = ReplyStored
		return hl, nil
	case "NS", "EX", "NF":
		r.Kind = ReplyNotStored
		return hl, nil
	case "VA":
	default:
		return 0, errMalformed
	}
	sz, rest := field(l[2:])
	size, ok := parseUint(sz, math.MaxInt32)
	if !ok {
		return 0, errMalformed
	}
	for len(rest) > 0 {
		var tok []byte
		if tok, rest = field(rest); len(tok) == 0 {
			continue
		}
		switch tok[0] {
		case 'f':
			v, ok := parseUint(tok[1:], math.MaxUint32)
			if !ok {
				return 0, errMalformed
			}
			r.Flags = uint32(v)
		case 'k':
			r.Key = tok[1:]
		}
	}
	data, n, err := dataBlock(buf, hl, int(size))
	if n == 0 {
		return 0, err
	}
	r.Kind, r.Value = ReplyValue, data
	return n, nil
}

// ParseBinaryReply parses one binary response packet (GET, GETK, GETKQ, SET
// or NOOP) from the start of buf into r, as ParseTextReply. maxBody bounds
// the body a header may announce, so that a corrupt length fails instead of
// waiting for gigabytes.
func ParseBinaryReply(buf []byte, r *Reply, maxBody int) (int, error) {
	*r = Reply{}
	if len(buf) < binHeaderLen {
		return 0, nil
	}
	if buf[0] != binResMagic {
		return 0, errMalformed
	}
	op := buf[1]
	keyLen := int(binary.BigEndian.Uint16(buf[2:]))
	extLen := int(buf[4])
	status := binary.BigEndian.Uint16(buf[6:])
	body := int(binary.BigEndian.Uint32(buf[8:]))
	if body > maxBody || keyLen+extLen > body {
		return 0, errMalformed
	}
	n := binHeaderLen + body
	if len(buf) < n {
		return 0, nil
	}
	r.Status = status
	r.Opaque = binary.BigEndian.Uint32(buf[12:])
	b := buf[binHeaderLen:n]
	isGet := op == binOpGet || op == binOpGetK || op == binOpGetKQ
	switch {
	case status == binStatusNotFound && isGet:
		r.Kind = ReplyMiss
	case status == binStatusNotStored:
		r.Kind = ReplyNotStored
	case status != binStatusOK:
		r.Kind, r.Msg = ReplyError, b
	case op == binOpSet:
		r.Kind = ReplyStored
	case op == binOpNoop:
		r.Kind = ReplyNoop
	case isGet:
		if extLen != binGetExtras {
			return 0, errMalformed
		}
		r.Kind = ReplyValue
		r.Flags = binary.BigEndian.Uint32(b)
		if keyLen > 0 {
			r.Key = b[extLen : extLen+keyLen]
		}
		r.Value = b[extLen+keyLen:]
	default:
		return 0, errMalformed
	}
	return n, nil
}
