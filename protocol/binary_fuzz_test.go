package protocol

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

// binSeed builds a request: header fields as given, then body bytes.
func binSeed(magic, op byte, keyLen uint16, extLen byte, bodyLen uint32, body string) []byte {
	var h [BinaryHeaderLen]byte
	h[0], h[1] = magic, op
	binary.BigEndian.PutUint16(h[2:], keyLen)
	h[4] = extLen
	binary.BigEndian.PutUint32(h[8:], bodyLen)
	binary.BigEndian.PutUint32(h[12:], 0xdeadbeef)
	binary.BigEndian.PutUint64(h[16:], 42)
	return append(h[:], body...)
}

// FuzzBinaryParse checks ParseBinary on any input: it never panics, never
// consumes more than it was given, asks for more only when the input is
// short (and then for more than it has), and every slice it returns lies
// where the header says, within the limits.
func FuzzBinaryParse(f *testing.F) {
	f.Add(binSeed(0x80, OpNoop, 0, 0, 0, ""), uint32(1024))
	f.Add(binSeed(0x80, OpGet, 3, 0, 3, "foo"), uint32(1024))
	f.Add(binSeed(0x80, OpSet, 1, 8, 10, "\x00\x00\x00\x01\x00\x00\x00\x00kv"), uint32(1024))
	f.Add(binSeed(0x80, OpSet, 1, 8, 10, "\x00\x00\x00\x01\x00\x00\x00\x00kv"), uint32(0))
	f.Add(binSeed(0x80, OpIncrement, 1, 20, 21, "0123456789abcdefghijk"), uint32(1024))
	f.Add(binSeed(0x80, OpGet, 3, 0, 2, "foo"), uint32(1024))
	f.Add(binSeed(0x80, OpGet, 251, 0, 251, string(bytes.Repeat([]byte("k"), 251))), uint32(1024))
	f.Add(binSeed(0x81, OpNoop, 0, 0, 0, ""), uint32(1024))
	f.Add(binSeed(0x80, OpSet, 1, 8, 1<<30, "\x00\x00\x00\x01\x00\x00\x00\x00k"), uint32(1<<20))
	f.Add(binSeed(0x80, OpGet, 0xffff, 0xff, 0xffffffff, ""), uint32(1<<20))
	f.Add(binSeed(0x80, OpNoop, 0, 0, 0, "")[:10], uint32(1024))
	f.Add(append(binSeed(0x80, OpGet, 1, 0, 1, "k"), binSeed(0x80, OpNoop, 0, 0, 0, "")...), uint32(1024))
	f.Fuzz(func(t *testing.T, data []byte, maxValue uint32) {
		limit := int(maxValue % (1 << 24))
		var r BinaryRequest
		n, err := ParseBinary(data, limit, &r)
		switch err {
		case nil:
			if n > len(data) || n != BinaryHeaderLen+int(r.BodyLen) {
				t.Fatalf("consumed %d of %d, body %d", n, len(data), r.BodyLen)
			}
			if r.KeyLen > MaxKeyLen || len(r.Value) > limit {
				t.Fatalf("key %d, value %d over the limits", r.KeyLen, len(r.Value))
			}
			checkSlices(t, data, &r)
			if !bytes.Equal(r.Value, data[r.HeadLen():n]) {
				t.Fatal("value misplaced")
			}
		case ErrNeedMore:
			if n <= len(data) || n < BinaryHeaderLen {
				t.Fatalf("need %d with %d buffered", n, len(data))
			}
			if n > BinaryHeaderLen+0xff+0xffff+limit {
				t.Fatalf("asks for %d bytes: more than a request within the limit", n)
			}
			// With what it asked for, it must get further.
			more := append(append([]byte{}, data...), make([]byte, n-len(data))...)
			var r2 BinaryRequest
			if n2, err2 := ParseBinary(more, limit, &r2); err2 == ErrNeedMore && n2 <= n {
				t.Fatalf("asked for %d, then for %d", n, n2)
			}
		case ErrBinaryTooLarge:
			if n != r.HeadLen() || n > len(data) || r.ValueLen() <= limit || r.Value != nil {
				t.Fatalf("too large: n %d head %d value %d limit %d", n, r.HeadLen(), r.ValueLen(), limit)
			}
			checkSlices(t, data, &r)
		case ErrBinaryMagic:
			if n != 0 || len(data) < BinaryHeaderLen || data[0] == BinaryRequestMagic {
				t.Fatal("bad magic misreported")
			}
		case ErrBinaryLengths:
			if n != 0 || int(r.KeyLen)+int(r.ExtLen) <= int(r.BodyLen) {
				t.Fatal("lengths misreported")
			}
		case ErrBinaryKeyLen:
			if n != 0 || r.KeyLen <= MaxKeyLen {
				t.Fatal("key length misreported")
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
		if len(data) >= BinaryHeaderLen {
			// The response encoder round-trips the header fields.
			var h BinaryHeader
			DecodeBinaryHeader(data, &h)
			key := data[BinaryHeaderLen:min(len(data), BinaryHeaderLen+int(h.KeyLen))]
			out := AppendBinaryResponse(nil, h.Opcode, h.VBucket, h.Opaque, h.CAS, data[:min(4, len(data))], key, data)
			var g BinaryHeader
			DecodeBinaryHeader(out, &g)
			if g.Magic != BinaryResponseMagic || g.Opcode != h.Opcode || g.VBucket != h.VBucket || g.Opaque != h.Opaque ||
				g.CAS != h.CAS || int(g.KeyLen) != len(key) || g.ExtLen != 4 || len(out) != BinaryHeaderLen+int(g.BodyLen) {
				t.Fatalf("response header %+v does not round-trip %+v", g, h)
			}
		}
	})
}

func checkSlices(t *testing.T, data []byte, r *BinaryRequest) {
	t.Helper()
	e := BinaryHeaderLen + int(r.ExtLen)
	if !bytes.Equal(r.Extras, data[BinaryHeaderLen:e]) || !bytes.Equal(r.Key, data[e:e+int(r.KeyLen)]) {
		t.Fatal("extras or key misplaced")
	}
}

// FuzzBinaryKeys checks BinaryKeys against ParseBinary: on any input it
// returns, in order, the keys of the whole requests ParseBinary frames at
// the front of it, and nothing past the first one it cannot frame.
func FuzzBinaryKeys(f *testing.F) {
	get := binSeed(0x80, OpGet, 3, 0, 3, "foo")
	set := binSeed(0x80, OpSet, 1, 8, 12, "\x00\x00\x00\x01\x00\x00\x00\x00kval")
	noop := binSeed(0x80, OpNoop, 0, 0, 0, "")
	f.Add(slices.Concat(get, set, noop, get), uint8(16))
	f.Add(slices.Concat(get, set, get[:10]), uint8(16))
	f.Add(slices.Concat(get, set, get), uint8(2))
	f.Add(slices.Concat(get, binSeed(0x80, OpGet, 3, 0, 2, "foo"), get), uint8(16))
	f.Add(slices.Concat(set, []byte("garbage that is not a header at all")), uint8(16))
	f.Add(binSeed(0x80, OpGet, 0xffff, 0xff, 0xffffffff, ""), uint8(16))
	f.Fuzz(func(t *testing.T, data []byte, max uint8) {
		keys, span := BinaryKeys(nil, data, int(max))
		if len(keys) > int(max) {
			t.Fatalf("%d keys, max %d", len(keys), max)
		}
		var want [][]byte
		rest := data
		for len(want) < int(max) {
			var r BinaryRequest
			n, err := ParseBinary(rest, 1<<30, &r)
			if err != nil {
				break
			}
			if r.KeyLen > 0 {
				want = append(want, r.Key)
			}
			rest = rest[n:]
		}
		if span != len(data)-len(rest) {
			t.Fatalf("spans %d bytes, ParseBinary framed %d", span, len(data)-len(rest))
		}
		if len(keys) != len(want) {
			t.Fatalf("%d keys, ParseBinary frames %d", len(keys), len(want))
		}
		for i := range keys {
			if !bytes.Equal(keys[i], want[i]) {
				t.Fatalf("key %d: %q, want %q", i, keys[i], want[i])
			}
		}
	})
}
