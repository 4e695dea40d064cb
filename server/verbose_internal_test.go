package server

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestVerboseGet: -vv names each hit of a get once, even when a value holds
// what looks like another VALUE line, and ends with END.
func TestVerboseGet(t *testing.T) {
	c := binTestConn(t, nil)
	var log bytes.Buffer
	c.s.cfg.Log = &log
	c.s.verbosity.Store(2)
	c.fd = 7
	tricky := "x\r\nVALUE fake 0 1\r\ny"
	c.process([]byte(fmt.Sprintf("set a 0 0 %d\r\n%s\r\nset b 0 0 1\r\nz\r\n", len(tricky), tricky)))
	log.Reset()
	c.process([]byte("get a zz b\r\n"))
	require.Equal(t, "<7 get a zz b\n>7 sending key a\n>7 sending key b\n>7 END\n", log.String())
}
