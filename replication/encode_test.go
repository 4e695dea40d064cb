package replication

import (
	"bytes"
	"testing"
)

// appendFrame writes by hand what the codec writes for a frame: the peers
// decode it with the codec, so the two must agree byte for byte over every
// integer width and both key forms.
func TestAppendFrameMatchesCodec(t *testing.T) {
	c := newCodecs()
	frames := []frame{
		{Op: opSet, Seq: 1, Key: []byte("k"), Flags: 3, Exp: 1700000000, CAS: 1 << 60, VLen: 100, Bits: bitBinaryKey},
		{Op: opDel, Seq: 1 << 40, Key: []byte("x"), CAS: 12345},
		{Op: opMark, Seq: 255},
		{Op: opSet, Seq: 256, Flags: 65535, VLen: 65536, Key: bytes.Repeat([]byte("a"), 250)},
		{Op: opAck, Seq: 1<<32 - 1},
		{Op: opAck, Seq: 1 << 32, Flags: 1<<32 - 1},
		{Op: opNack, CAS: 1<<64 - 1},
	}
	for _, exp := range []int64{0, 1, 127, 128, 200, 32767, 32768, 40000, 1<<31 - 1, 1 << 31, 1 << 33,
		-1, -32, -33, -128, -129, -32768, -32769, -1 << 31, -1<<31 - 1, -1 << 40} {
		frames = append(frames, frame{Op: opFlush, Exp: exp})
	}
	for _, f := range frames {
		want := c.appendMsg(nil, &f)
		got := appendFrame(nil, &f)
		if !bytes.Equal(got, want) {
			t.Errorf("frame %+v:\n got % x\nwant % x", f, got, want)
		}
		// And the hand decoder reads every one of them back.
		var back frame
		if !decodeFrame(got[4:], &back) || !sameFrame(back, f) {
			t.Errorf("frame %+v: decodeFrame gave %+v", f, back)
		}
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	f := frame{Op: opSet, Seq: 123456, Key: []byte("bench:0000042"), Flags: 7, Exp: 1700000000, CAS: 1 << 60, VLen: 100}
	buf := make([]byte, 0, 256)
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = appendFrame(buf[:0], &f)
		}
	})
	b.Run("codec", func(b *testing.B) {
		c := newCodecs()
		b.ReportAllocs()
		for b.Loop() {
			buf = c.appendMsg(buf[:0], &f)
		}
	})
}

func BenchmarkDecodeFrame(b *testing.B) {
	f := frame{Op: opSet, Seq: 123456, Key: []byte("bench:0000042"), Flags: 7, Exp: 1700000000, CAS: 1 << 60, VLen: 100}
	msg := appendFrame(nil, &f)[4:]
	var got frame
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !decodeFrame(msg, &got) {
				b.Fatal("not decoded")
			}
		}
	})
	b.Run("codec", func(b *testing.B) {
		c := newCodecs()
		b.ReportAllocs()
		for b.Loop() {
			c.dec.ResetBytes(msg)
			if err := c.dec.Decode(&got); err != nil {
				b.Fatal(err)
			}
		}
	})
}
