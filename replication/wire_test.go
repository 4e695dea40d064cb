package replication

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/store"
)

// testItemMax is the item size limit the wire tests check frames against:
// the store's default.
const testItemMax = 1 << 20

func reader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// prefixed puts the u32 length in front of a raw msgpack message.
func prefixed(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

// sampleFrames are valid frames, one or more of each op.
func sampleFrames() []frame {
	return []frame{
		{Op: opSet, Seq: 1, Key: []byte("k"), Flags: 0xdeadbeef, Exp: 1767225600, CAS: 1<<63 | 5, VLen: 3},
		{Op: opSet, Seq: 1 << 40, Key: bytes.Repeat([]byte("x"), 250), VLen: testItemMax, Bits: bitBinaryKey},
		{Op: opSet, Key: []byte("resync item, seq 0"), CAS: 1},
		{Op: opDel, Seq: 7, Key: []byte("gone"), CAS: 99},
		{Op: opFlush, Seq: 8, Exp: 1767225600, CAS: 123456},
		{Op: opFlush, Seq: 9},
		{Op: opMark, Seq: 10},
		{Op: opAck, Seq: 1<<64 - 1},
		{Op: opNack, CAS: 1<<63 | 77},
	}
}

func TestFrameRoundTrip(t *testing.T) {
	enc, dec := newCodecs(), newCodecs()
	var stream []byte
	for _, f := range sampleFrames() {
		b := enc.appendMsg(nil, &f)
		require.Equal(t, uint32(len(b)-4), binary.BigEndian.Uint32(b), "length prefix")
		var got frame
		buf, err := dec.readMsg(reader(b), nil, maxHeader, &got)
		require.NoError(t, err)
		require.Equal(t, f, got)
		require.LessOrEqual(t, cap(buf), maxHeader)
		stream = enc.appendMsg(stream, &f)
	}

	// Many frames in one stream, through one reused decoder, scratch
	// buffer and frame, as a link reads them.
	r := reader(stream)
	var buf []byte
	var got frame
	for _, f := range sampleFrames() {
		var err error
		buf, err = dec.readMsg(r, buf, maxHeader, &got)
		require.NoError(t, err)
		require.Equal(t, f.Op, got.Op)
		require.Equal(t, f.Seq, got.Seq)
		require.Equal(t, f.CAS, got.CAS)
		require.True(t, bytes.Equal(f.Key, got.Key), "key %q, got %q", f.Key, got.Key)
	}
	_, err := dec.readMsg(r, buf, maxHeader, &got)
	require.ErrorIs(t, err, io.EOF)
}

func TestHelloRoundTrip(t *testing.T) {
	tests := []hello{
		{Magic: magic, Version: version, Node: "a:1", Group: "tandem", NodeNum: 1023, Nonce: bytes.Repeat([]byte{7}, nonceLen)},
		{Magic: magic, Version: version, Node: "b", Group: "g", NodeNum: 2, Nonce: make([]byte, nonceLen),
			Proof: proof([]byte("s"), "listener", []byte("x"), []byte("y"))},
		{Proof: []byte("p")},
		{Err: "wrong shared secret"},
		{},
	}
	c := newCodecs()
	for _, h := range tests {
		b := c.appendMsg(nil, &h)
		var got hello
		_, err := c.readMsg(reader(b), nil, maxHello, &got)
		require.NoError(t, err)
		require.Equal(t, h, got)
	}
}

func TestReadMsgRejects(t *testing.T) {
	c := newCodecs()
	valid := c.appendMsg(nil, &frame{Op: opSet, Seq: 1, Key: []byte("key"), VLen: 1})
	msg := valid[4:]

	tests := []struct {
		name  string
		in    []byte
		limit int
		isErr error // errors.Is target
	}{
		{"empty input", nil, maxHeader, io.EOF},
		{"partial length", []byte{0, 0}, maxHeader, io.ErrUnexpectedEOF},
		{"zero length", []byte{0, 0, 0, 0, 0x90}, maxHeader, errFrame},
		{"just over the limit", prefixed(make([]byte, maxHeader+1)), maxHeader, errFrame},
		{"over a small limit", valid, len(msg) - 1, errFrame},
		{"4 GiB claimed", []byte{0xff, 0xff, 0xff, 0xff, 0x98}, maxHeader, errFrame},
		{"truncated body", valid[:len(valid)-1], maxHeader, io.ErrUnexpectedEOF},
		{"length only", valid[:4], maxHeader, io.EOF},
		{"trailing byte", prefixed(append(append([]byte{}, msg...), 0)), maxHeader, errFrame},
		{"two messages in one", prefixed(append(append([]byte{}, msg...), msg...)), maxHeader, errFrame},
		{"reserved byte c1", prefixed([]byte{0xc1}), maxHeader, errFrame},
		{"array of garbage", prefixed([]byte{0x92, 0xc1, 0xc1}), maxHeader, errFrame},
		{"string, not an array", prefixed([]byte{0xa3, 'a', 'b', 'c'}), maxHeader, errFrame},
		{"op overflows uint8", prefixed([]byte{0x91, 0xcd, 1, 0}), maxHeader, errFrame},
		{"negative op", prefixed([]byte{0x91, 0xff}), maxHeader, errFrame},
		{"float op", prefixed([]byte{0x91, 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}), maxHeader, errFrame},
		{"key claims more than the message", prefixed([]byte{0x93, 1, 1, 0xc6, 0x7f, 0xff, 0xff, 0xff}), maxHeader, errFrame},
		{"array claims 2^32-1 fields", prefixed([]byte{0xdd, 0xff, 0xff, 0xff, 0xff, 1}), maxHeader, errFrame},
		{"truncated msgpack", prefixed(msg[:len(msg)-1]), maxHeader, errFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f frame
			buf, err := c.readMsg(reader(tt.in), nil, tt.limit, &f)
			require.Error(t, err)
			require.ErrorIs(t, err, tt.isErr)
			require.LessOrEqual(t, cap(buf), max(tt.limit, maxHeader))
		})
	}
	// The codec is still usable after all of that.
	var f frame
	_, err := c.readMsg(reader(valid), nil, maxHeader, &f)
	require.NoError(t, err)
	require.Equal(t, []byte("key"), f.Key)
}

func TestReadMsgHugeLengthDoesNotAllocate(t *testing.T) {
	c := newCodecs()
	in := []byte{0xff, 0xff, 0xff, 0xf0}
	var f frame
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	for range 100 {
		buf, err := c.readMsg(reader(in), nil, maxHeader, &f)
		require.ErrorIs(t, err, errFrame)
		require.Zero(t, cap(buf))
	}
	runtime.ReadMemStats(&ms1)
	// 100 bufio readers of 4 KiB and 100 errors; a single allocation of
	// the claimed length would be 4 GiB.
	require.Less(t, ms1.TotalAlloc-ms0.TotalAlloc, uint64(4<<20))
}

func TestReadMsgReusesBuffer(t *testing.T) {
	c := newCodecs()
	b := c.appendMsg(nil, &frame{Op: opMark, Seq: 1})
	scratch := make([]byte, 0, 64)
	var f frame
	buf, err := c.readMsg(reader(b), scratch, maxHeader, &f)
	require.NoError(t, err)
	require.Equal(t, &scratch[:1][0], &buf[0], "a large enough scratch buffer is reused")

	// A buffer that must grow grows to the limit, once.
	big := c.appendMsg(nil, &frame{Op: opSet, Key: bytes.Repeat([]byte("k"), 200)})
	buf, err = c.readMsg(reader(big), buf[:0], maxHeader, &f)
	require.NoError(t, err)
	require.Equal(t, maxHeader, cap(buf))
}

func TestCheckFrame(t *testing.T) {
	key := []byte("k")
	tests := []struct {
		name string
		f    frame
		ok   bool
	}{
		{"set", frame{Op: opSet, Key: key, VLen: 10}, true},
		{"set empty value", frame{Op: opSet, Key: key}, true},
		{"set at item max", frame{Op: opSet, Key: key, VLen: testItemMax}, true},
		{"set over item max", frame{Op: opSet, Key: key, VLen: testItemMax + 1}, false},
		{"set 4 GiB value", frame{Op: opSet, Key: key, VLen: 1<<32 - 1}, false},
		{"set 250-byte key", frame{Op: opSet, Key: bytes.Repeat(key, 250)}, true},
		{"set 251-byte key", frame{Op: opSet, Key: bytes.Repeat(key, 251)}, false},
		{"set no key", frame{Op: opSet}, false},
		{"set empty key", frame{Op: opSet, Key: []byte{}}, false},
		{"del", frame{Op: opDel, Key: key, CAS: 1}, true},
		{"del no key", frame{Op: opDel}, false},
		{"del 251-byte key", frame{Op: opDel, Key: bytes.Repeat(key, 251)}, false},
		{"del with value", frame{Op: opDel, Key: key, VLen: 1}, false},
		{"flush", frame{Op: opFlush, Exp: 5, CAS: 5}, true},
		{"flush with value", frame{Op: opFlush, VLen: 1}, false},
		{"mark", frame{Op: opMark, Seq: 3}, true},
		{"mark with value", frame{Op: opMark, VLen: 1 << 31}, false},
		{"op 0", frame{Op: 0, Key: key}, false},
		{"ack is not sent to a listener", frame{Op: opAck, Seq: 1}, false},
		{"nack is not sent to a listener", frame{Op: opNack, CAS: 1}, false},
		{"op 7", frame{Op: 7, Key: key}, false},
		{"op 255", frame{Op: 255, Key: key}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkFrame(&tt.f, testItemMax)
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, errFrame)
			}
		})
	}
}

func TestProof(t *testing.T) {
	secret := []byte("secret")
	a, b := bytes.Repeat([]byte{1}, nonceLen), bytes.Repeat([]byte{2}, nonceLen)
	base := proof(secret, "dialer", a, b)
	require.Len(t, base, 32)
	require.Equal(t, base, proof(secret, "dialer", a, b), "deterministic")

	others := map[string][]byte{
		"other role":     proof(secret, "listener", a, b),
		"nonces swapped": proof(secret, "dialer", b, a),
		"reflected":      proof(secret, "listener", b, a),
		"other secret":   proof([]byte("secreT"), "dialer", a, b),
		"no secret":      proof(nil, "dialer", a, b),
		"other nonce":    proof(secret, "dialer", a, a),
	}
	for name, p := range others {
		require.NotEqual(t, base, p, name)
	}
}

// FuzzFrame feeds arbitrary bytes to a link's receiving side: frames are
// read and checked as receive does, a set's value is read after its
// header, and a frame that passes checkFrame must survive a re-encoding
// unchanged. Nothing may panic, and no buffer may grow past the limits
// that checkFrame and readMsg enforce. The same bytes are also read as a
// handshake.
func FuzzFrame(f *testing.F) {
	c := newCodecs()
	for _, fr := range sampleFrames() {
		b := c.appendMsg(nil, &fr)
		f.Add(b)
		f.Add(b[:len(b)-1])
		if fr.VLen > 0 && fr.VLen < 64 {
			f.Add(append(b, bytes.Repeat([]byte("v"), int(fr.VLen))...))
		}
	}
	var stream []byte
	for _, fr := range sampleFrames()[2:] {
		stream = c.appendMsg(stream, &fr)
	}
	f.Add(stream)
	f.Add(c.appendMsg(nil, &hello{Magic: magic, Version: version, Node: "n", Group: "tandem", Nonce: make([]byte, nonceLen)}))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(prefixed([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}))
	f.Add(prefixed([]byte{0x93, 1, 1, 0xc6, 0x7f, 0xff, 0xff, 0xff}))
	f.Add(prefixed([]byte{0x98, 1, 1, 0xc4, 1, 'k', 0, 0, 0, 0xce, 0xff, 0xff, 0xff, 0xff, 0}))

	f.Fuzz(func(t *testing.T, in []byte) {
		r := reader(in)
		dec, enc := newCodecs(), newCodecs()
		var (
			fr  frame
			buf []byte
		)
		// A link reuses one frame and one scratch buffer: so does this.
		for range 16 {
			var err error
			buf, err = dec.readMsg(r, buf, maxHeader, &fr)
			if cap(buf) > maxHeader {
				t.Fatalf("scratch buffer grew to %d bytes", cap(buf))
			}
			if err != nil {
				break
			}
			if checkFrame(&fr, testItemMax) != nil {
				break
			}
			if len(fr.Key) > 250 || int(fr.VLen) > testItemMax {
				t.Fatalf("checkFrame passed %+v", fr)
			}
			// Re-encoding a checked frame and reading it back is the
			// identity (a nil and an empty key are alike to the store).
			var again frame
			b := enc.appendMsg(nil, &fr)
			_, err = newCodecs().readMsg(reader(b), nil, maxHeader, &again)
			if err != nil {
				t.Fatalf("re-encoded %+v does not decode: %v", fr, err)
			}
			if !sameFrame(fr, again) {
				t.Fatalf("frame %+v came back as %+v", fr, again)
			}
			if fr.Op == opSet {
				if _, err := r.Discard(int(fr.VLen)); err != nil {
					break
				}
			}
		}

		var h hello
		hbuf, _ := newCodecs().readMsg(reader(in), nil, maxHello, &h)
		if cap(hbuf) > maxHello {
			t.Fatalf("hello buffer grew to %d bytes", cap(hbuf))
		}
	})
}

// sameFrame compares two frames, taking a nil key and an empty one as equal.
func sameFrame(a, b frame) bool {
	return a.Op == b.Op && a.Seq == b.Seq && bytes.Equal(a.Key, b.Key) && a.Flags == b.Flags &&
		a.Exp == b.Exp && a.CAS == b.CAS && a.VLen == b.VLen && a.Bits == b.Bits
}

// FuzzDecodeFrame checks the hand-written header decoder against the codec:
// whatever decodeFrame accepts, the codec decodes to the same frame from
// the same starting frame, using every byte. (What it declines goes to the
// codec, so together they accept exactly what the codec accepts.)
func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range sampleFrames() {
		b := appendFrame(nil, &fr)
		f.Add(b[4:])
		f.Add(b[4 : len(b)-1])
	}
	f.Add([]byte{0x92, 1, 2})
	f.Add([]byte{0x99, 1, 2, 0xc0, 3, 4, 5, 6, 7, 9})
	f.Add([]byte{0x91, 0xff})
	f.Add([]byte{0x91, 0xcd, 1, 0})
	f.Add([]byte{0x93, 1, 2, 0xa1, 'x'})
	f.Add([]byte{0x95, 1, 2, 0xc4, 1, 'x', 0xd0, 5})
	f.Add([]byte{0x95, 1, 2, 0xc4, 1, 'x', 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe})
	f.Add([]byte{0x90})
	f.Add([]byte{0xc0})
	f.Fuzz(func(t *testing.T, in []byte) {
		start := frame{Op: 9, Seq: 9, Key: []byte("start"), Flags: 9, Exp: 9, CAS: 9, VLen: 9, Bits: 9}
		hand := start
		hand.Key = bytes.Clone(start.Key)
		if !decodeFrame(in, &hand) {
			return
		}
		c := newCodecs()
		byCodec := start
		byCodec.Key = bytes.Clone(start.Key)
		c.dec.ResetBytes(in)
		err := c.dec.Decode(&byCodec)
		require.NoError(t, err, "decodeFrame accepted % x", in)
		require.Equal(t, len(in), c.dec.NumBytesRead(), "decodeFrame used all of % x", in)
		require.True(t, sameFrame(hand, byCodec), "% x: by hand %+v, by the codec %+v", in, hand, byCodec)
	})
}

// FuzzPeekBatch checks the peer's batch path against its frame-at-a-time
// path: the frames peekBatch decodes where they lie in the read buffer are
// the frames readMsg and checkFrame read from the same bytes, in order,
// with the same values, and they take the bytes it says.
func FuzzPeekBatch(f *testing.F) {
	var stream []byte
	for _, fr := range sampleFrames() {
		if fr.Op == opSet || fr.Op == opDel {
			stream = appendFrame(stream, &fr)
			stream = append(stream, bytes.Repeat([]byte("v"), int(fr.VLen))...)
		}
	}
	f.Add(stream)
	f.Add(stream[:len(stream)-1])
	many := []byte{}
	for i := range 20 {
		fr := frame{Op: opSet, Seq: uint64(i + 1), Key: []byte{'k', byte('a' + i)}, CAS: uint64(i + 100), VLen: uint32(i)}
		many = appendFrame(many, &fr)
		many = append(many, bytes.Repeat([]byte{byte(i)}, i)...)
	}
	f.Add(many)
	f.Add(appendFrame(appendFrame(nil, &frame{Op: opDel, Seq: 1, Key: []byte("k"), CAS: 1}), &frame{Op: opMark, Seq: 1}))
	f.Add(appendFrame(nil, &frame{Op: opDel, Seq: 1, Key: []byte("k"), CAS: 1, VLen: 1}))

	f.Fuzz(func(t *testing.T, in []byte) {
		// A link reuses its batch: the frames decoded last must not leak
		// into these.
		var rc receiver
		rc.peekBatch(many, testItemMax, store.PrefetchMax)
		n, used := rc.peekBatch(in, testItemMax, store.PrefetchMax)
		if n < 0 || n > len(rc.batch) || used < 0 || used > len(in) || (n == 0) != (used == 0) {
			t.Fatalf("peekBatch: %d frames in %d of %d bytes", n, used, len(in))
		}
		r := reader(in)
		c := newCodecs()
		took := 0
		for i := range n {
			var fr frame
			hdr, err := c.readMsg(r, nil, maxHeader, &fr)
			if err != nil {
				t.Fatalf("frame %d of the batch does not read alone: %v", i, err)
			}
			if err := checkFrame(&fr, testItemMax); err != nil || (fr.Op != opSet && fr.Op != opDel) {
				t.Fatalf("frame %d of the batch, %+v, is not a valid set or delete (%v)", i, fr, err)
			}
			if !sameFrame(fr, rc.batch[i]) {
				t.Fatalf("frame %d: batch %+v, alone %+v", i, rc.batch[i], fr)
			}
			val := make([]byte, fr.VLen)
			if _, err := io.ReadFull(r, val); err != nil {
				t.Fatalf("frame %d's value: %v", i, err)
			}
			if !bytes.Equal(val, rc.vals[i]) {
				t.Fatalf("frame %d: batch value %q, alone %q", i, rc.vals[i], val)
			}
			took += 4 + len(hdr) + len(val)
		}
		if took != used {
			t.Fatalf("the batch took %d bytes, reading alone %d", used, took)
		}
	})
}
