package protocol

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseBinary(t *testing.T) {
	set := binSeed(0x80, OpSet, 1, 8, 12, "\x00\x00\x00\x07\x00\x00\x00\x09kval")
	for _, tc := range []struct {
		name  string
		buf   []byte
		limit int
		n     int
		err   error
	}{
		{"empty", nil, 10, 24, ErrNeedMore},
		{"short header", set[:23], 10, 24, ErrNeedMore},
		{"no key yet", set[:24+8], 10, 24 + 9, ErrNeedMore},
		{"no value yet", set[:24+9+2], 10, 24 + 12, ErrNeedMore},
		{"whole", set, 10, 24 + 12, nil},
		{"whole with more after", append(append([]byte{}, set...), 0x80, 0x0a), 10, 24 + 12, nil},
		{"value too large", set[:24+9], 2, 24 + 9, ErrBinaryTooLarge},
		{"bad magic", binSeed(0x81, OpNoop, 0, 0, 0, ""), 10, 0, ErrBinaryMagic},
		{"key longer than body", binSeed(0x80, OpGet, 3, 0, 2, "foo"), 10, 0, ErrBinaryLengths},
		{"extras and key longer than body", binSeed(0x80, OpSet, 1, 8, 8, ""), 10, 0, ErrBinaryLengths},
		{"key 251", binSeed(0x80, OpGet, 251, 0, 251, string(make([]byte, 251))), 10, 0, ErrBinaryKeyLen},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r BinaryRequest
			n, err := ParseBinary(tc.buf, tc.limit, &r)
			require.Equal(t, tc.err, err)
			require.Equal(t, tc.n, n)
		})
	}
	var r BinaryRequest
	_, err := ParseBinary(set, 10, &r)
	require.NoError(t, err)
	require.Equal(t, uint8(OpSet), r.Opcode)
	require.Equal(t, uint32(0xdeadbeef), r.Opaque)
	require.Equal(t, uint64(42), r.CAS)
	require.Equal(t, "\x00\x00\x00\x07\x00\x00\x00\x09", string(r.Extras))
	require.Equal(t, "k", string(r.Key))
	require.Equal(t, "val", string(r.Value))
}

func TestAppendBinary(t *testing.T) {
	got := AppendBinaryError(nil, OpGet, StatusKeyNotFound, 7, StatusText(StatusKeyNotFound))
	require.Equal(t, "\x81\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x00Not found", string(got))
	got = AppendBinaryResponse(nil, OpGetK, StatusOK, 1, 0x0102030405060708, []byte{0, 0, 0, 5}, []byte("k"), []byte("v"))
	require.Equal(t, "\x81\x0c\x00\x01\x04\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x01\x01\x02\x03\x04\x05\x06\x07\x08\x00\x00\x00\x05kv", string(got))
	got = AppendBinaryStat(nil, 3, "", nil)
	require.Equal(t, "\x81\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00", string(got))
}

// TestBinaryNoAlloc: parsing a request and encoding its response allocate
// nothing once the output buffer has grown.
func TestBinaryNoAlloc(t *testing.T) {
	set := binSeed(0x80, OpSet, 1, 8, 12, "\x00\x00\x00\x07\x00\x00\x00\x09kval")
	out := make([]byte, 0, 256)
	var r BinaryRequest
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := ParseBinary(set, 1<<20, &r); err != nil {
			t.Fatal(err)
		}
		out = AppendBinaryResponse(out[:0], r.Opcode, StatusOK, r.Opaque, 1, r.Extras[:4], r.Key, r.Value)
		out = AppendBinaryError(out, r.Opcode, StatusTooLarge, r.Opaque, StatusText(StatusTooLarge))
	})
	require.Zero(t, allocs)
}
