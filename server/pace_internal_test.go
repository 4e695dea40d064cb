package server

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFdinfoData(t *testing.T) {
	info := []byte("pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1057\n" +
		"tfd:        7 events: 80002019 data:     7f3a5c001230  pos:0 ino:5a3 sdev:8\n" +
		"tfd:       12 events:     2009 data:     c000123456  pos:0 ino:5b1 sdev:8\n")
	for _, tc := range []struct {
		name string
		info []byte
		fd   int
		data uint64
		ok   bool
	}{
		{"first", info, 7, 0x7f3a5c001230, true},
		{"second", info, 12, 0xc000123456, true},
		{"absent", info, 1, 0, false},
		{"prefix of another fd", info, 2, 0, false},
		{"empty", nil, 7, 0, false},
		{"bad data", []byte("tfd: 7 events: 19 data: zz pos:0\n"), 7, 0, false},
		{"short line", []byte("tfd: 7 events: 19\n"), 7, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, ok := fdinfoData(tc.info, tc.fd)
			require.Equal(t, tc.ok, ok)
			require.Equal(t, tc.data, data)
		})
	}
}
