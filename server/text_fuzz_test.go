package server

import (
	"io"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tandemcache/tandem/store"
)

// FuzzTextServer feeds any bytes to a text connection of a real server
// (socketless: replies stay in the connection), whole and in small pieces,
// batch prefetching included: the server must never panic, consume more
// than it was given or ask for less than it has.
func FuzzTextServer(f *testing.F) {
	for _, s := range []string{
		"set a 0 0 1\r\nx\r\nget a\r\nget a b\r\ngets a\r\n",
		"get a\r\nget b\r\nset c 0 0 2\r\nhi\r\nmg c v\r\nmn\r\n",
		"ms k 3 T0\r\nabc\r\nma n N0 J5\r\nmd k q\r\nmg k v\r\n",
		"set k 0 0 10\r\nabc\r\nget k\r\n",
		"incr n 1\r\ndecr n 1\r\ntouch k 10\r\ngat 10 a b c\r\n",
		"append k 0 0 1\r\nz\r\nprepend k 0 0 1\r\ny\r\ncas k 0 0 1 1\r\nq\r\n",
		"mg Yg== b v\r\nms Yw== 1 b\r\nx\r\nget c\r\n",
		"bogus\r\nget " + string(make([]byte, 300)) + "\r\nset k 0 0 -1\r\n",
		"flush_all 0\r\nversion\r\nverbosity 1\r\nstats\r\nstats slabs\r\n",
		"watch bogus\r\nwatch fetchers mutations\r\nget a\r\nwatch\r\n",
		// -vv: every request is logged as memcached does (logExchange).
		"verbosity 2\r\nset a 0 0 1 noreply\r\nx\r\nget a zz a\r\nincr a 1 noreply\r\nmn\r\nme a\r\nstats\r\n",
		"verbosity 2\r\nset v 0 0 13\r\nVALUE v 0 1\r\n\r\nget v\r\nbogus\r\nverbosity 0\r\n",
	} {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(7))
	}
	st, err := store.New(store.Config{MemoryLimit: 8 << 20, ItemSizeMax: 4 << 10})
	require.NoError(f, err)
	defer st.Close()
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Log: io.Discard, ReqsPerEvent: 1 << 30}, st)
	require.NoError(f, err)
	defer s.closeListeners()
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		if len(data) == 0 || data[0] == binaryMagic {
			return // a binary connection: FuzzBinaryServer
		}
		feedChunks(t, newConn(s, nil), data, int(chunk))
	})
}
