package server

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDetail(t *testing.T) {
	d := detail{delim: ':'}
	d.record([]byte("user:1"), detailGet, true) // off: not counted
	require.Equal(t, "END\r\n", string(d.dump(nil)))

	d.on.Store(true)
	d.record([]byte("user:1"), detailGet, true)
	d.record([]byte("user:2"), detailGet, false)
	d.record([]byte("user:3"), detailSet, false)
	d.record([]byte("cart:9"), detailDel, false)
	d.record([]byte("noprefix"), detailGet, true) // no delimiter: not counted
	require.Equal(t, "PREFIX cart get 0 hit 0 set 0 del 1\r\n"+
		"PREFIX user get 2 hit 1 set 1 del 0\r\nEND\r\n", string(d.dump(nil)))

	d.on.Store(false) // off keeps what was counted, as memcached
	require.Contains(t, string(d.dump(nil)), "PREFIX user")
	d.reset()
	require.Equal(t, "END\r\n", string(d.dump(nil)))

	d.on.Store(true)
	for i := 0; i < maxPrefixes+10; i++ {
		d.record(strconv.AppendInt(nil, int64(i), 10), detailSet, false)
		d.record(append(strconv.AppendInt(nil, int64(i), 10), ":x"...), detailSet, false)
	}
	require.Equal(t, maxPrefixes, len(d.prefixes), "the table is bounded")
}

// TestDetailSetting: stats settings follows stats detail on and off.
func TestDetailSetting(t *testing.T) {
	s := &Server{cfg: Config{Settings: [][2]string{{"detail_enabled", "no"}}}}
	c := &conn{s: s}
	setting := func() string {
		c.out = c.out[:0]
		c.settingsStats(statWriter{c: c})
		return string(c.out)
	}
	require.Equal(t, "STAT detail_enabled no\r\n", setting())
	s.detail.on.Store(true)
	require.Equal(t, "STAT detail_enabled yes\r\n", setting())
}
