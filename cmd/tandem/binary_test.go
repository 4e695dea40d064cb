package main

// Binary protocol end-to-end tests: libmemcached's memccapable (its text and
// binary suites) against tandem, and TestBinaryDifferential, which sends the
// same binary request sequences to Debian's memcached and to tandem (both
// started by the test) and requires the same responses.
//
// BIN_DIFF_SELF=1 go test -v -run TestBinaryDifferential ./cmd/tandem
//
// compares memcached with a second memcached instead (nothing is built) and
// logs every response, to check the cases and the normalisation.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// memccapableAllTests is how many tests memccapable runs without -a: the
// 27 ascii tests and the 27 binary ones of Debian 12's libmemcached-tools.
const memccapableAllTests = 54

var anyPassLine = regexp.MustCompile(`(?m)^(ascii|binary) .*\[pass\]\s*$`)

// TestMemccapableBinary runs libmemcached's whole conformance suite, text
// and binary protocol.
func TestMemccapableBinary(t *testing.T) {
	_, port := e2eServer(t)
	memccapableAll(t, strconv.Itoa(port))
}

// memccapableAll runs memccapable's whole suite against a server on port.
func memccapableAll(t *testing.T, port string) {
	t.Helper()
	out, err := e2eRun(t, memccapablePath, "-h", "127.0.0.1", "-p", port)
	passed := len(anyPassLine.FindAllString(out, -1))
	if err != nil || !strings.Contains(out, "All tests passed") || passed != memccapableAllTests {
		t.Fatalf("memccapable: %v; %d of %d tests passed; output:\n%s", err, passed, memccapableAllTests, out)
	}
}

// TestMemccapableLowLatency runs the same suite against a server that
// answers small requests on its pollers (--low-latency).
func TestMemccapableLowLatency(t *testing.T) {
	addr := startServer(t, e2eBinary(t), []string{"--low-latency"})
	memccapableAll(t, addr[strings.LastIndexByte(addr, ':')+1:])
}

// TestLibmemcachedToolsBinary drives the server with libmemcached's command
// line tools in binary mode (--binary): a real binary client for set, get,
// touch, delete, flush and stat, and memcslap's multi-threaded load with
// quiet sets (--noreply) and multi-gets.
func TestLibmemcachedToolsBinary(t *testing.T) {
	if _, err := exec.LookPath(memccapablePath); err != nil {
		t.Fatalf("libmemcached-tools not found (%v): install the Debian package libmemcached-tools", err)
	}
	addr, _ := e2eServer(t)
	servers := "--servers=" + addr
	dir := t.TempDir()
	file := filepath.Join(dir, "item.txt")
	require.NoError(t, os.WriteFile(file, []byte("hello binary\n"), 0o600))
	run := func(wantOK bool, name string, args ...string) string {
		t.Helper()
		out, err := e2eRun(t, name, append([]string{"--binary", servers}, args...)...)
		if wantOK {
			require.NoError(t, err, "%s %v: %s", name, args, out)
		} else {
			require.Error(t, err, "%s %v: %s", name, args, out)
		}
		return out
	}
	run(true, "memccp", "--flag=7", "--expire=0", file)
	require.Equal(t, "key: item.txt\nflags: 7\nvalue: hello binary\n\n", run(true, "memccat", "-v", "--flag", "item.txt"))
	run(true, "memcexist", "item.txt")
	run(true, "memctouch", "--expire=100", "item.txt")
	run(false, "memccat", "missing.txt")
	run(true, "memcrm", "item.txt")
	run(false, "memcexist", "item.txt")
	stats := run(true, "memcstat")
	for _, s := range []string{"\tversion: 1.6.18\n", "\tcurr_items: ", "\tget_hits: ", "\tbytes_read: "} {
		require.Contains(t, stats, s)
	}
	run(true, "memccp", file)
	run(true, "memcflush")
	run(false, "memccat", "item.txt")
	for _, test := range []string{"set", "get", "mget"} {
		run(true, "memcslap", "--concurrency=2", "--execute-number=2000", "--test="+test)
		run(true, "memcslap", "--noreply", "--concurrency=2", "--execute-number=2000", "--test="+test)
	}
}

// Binary opcodes, as the cases below use them.
const (
	bGet, bSet, bAdd, bReplace, bDelete, bIncr, bDecr, bQuit, bFlush, bGetQ = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09
	bNoop, bVersion, bGetK, bGetKQ, bAppend, bPrepend, bStat, bSetQ         = 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11
	bAddQ, bReplaceQ, bDeleteQ, bIncrQ, bDecrQ, bQuitQ, bFlushQ, bAppendQ   = 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19
	bPrependQ, bTouch, bGAT, bGATQ, bGATK, bGATKQ                           = 0x1a, 0x1c, 0x1d, 0x1e, 0x23, 0x24
	bSASLList, bSASLAuth, bSASLStep                                         = 0x20, 0x21, 0x22
)

// endOpaque marks the NOOP the harness appends: the exchange is over when
// its response arrives.
const endOpaque = 0xfeedface

// bpkt describes one request; zero lengths mean "the real ones".
type bpkt struct {
	magic    byte // 0 means 0x80
	op       byte
	key, ext []byte
	val      []byte
	cas      uint64
	opaque   uint32
	keyLen   int // -1: use len(key)
	extLen   int // -1: use len(ext)
	bodyLen  int // -1: the real body length
	dataType byte
	vbucket  uint16
}

func (p bpkt) bytes() []byte {
	magic := p.magic
	if magic == 0 {
		magic = 0x80
	}
	kl, el, bl := len(p.key), len(p.ext), len(p.key)+len(p.ext)+len(p.val)
	if p.keyLen >= 0 {
		kl = p.keyLen
	}
	if p.extLen >= 0 {
		el = p.extLen
	}
	if p.bodyLen >= 0 {
		bl = p.bodyLen
	}
	var h [24]byte
	h[0], h[1] = magic, p.op
	binary.BigEndian.PutUint16(h[2:], uint16(kl))
	h[4], h[5] = byte(el), p.dataType
	binary.BigEndian.PutUint16(h[6:], p.vbucket)
	binary.BigEndian.PutUint32(h[8:], uint32(bl))
	binary.BigEndian.PutUint32(h[12:], p.opaque)
	binary.BigEndian.PutUint64(h[16:], p.cas)
	b := append(h[:], p.ext...)
	b = append(b, p.key...)
	return append(b, p.val...)
}

// breq builds a well-formed request; opaque is a running number so that
// responses can be told apart.
func breq(op byte, key string, ext []byte, val string) bpkt {
	return bpkt{op: op, key: []byte(key), ext: ext, val: []byte(val), opaque: uint32(op)<<8 | 1, keyLen: -1, extLen: -1, bodyLen: -1}
}

func (p bpkt) withCAS(cas uint64) bpkt { p.cas = cas; return p }

func flagsExp(flags, exp uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, flags), exp)
}

func arithExt(delta, initial uint64, exp uint32) []byte {
	b := binary.BigEndian.AppendUint64(nil, delta)
	b = binary.BigEndian.AppendUint64(b, initial)
	return binary.BigEndian.AppendUint32(b, exp)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func cat(ps ...bpkt) []byte {
	var b []byte
	for _, p := range ps {
		b = append(b, p.bytes()...)
	}
	return b
}

// How an exchange ends.
const (
	endNoop  = iota // the harness appends a NOOP and reads up to its response
	endClose        // the server must close the connection
	endIdle         // the server must stay silent (an incomplete request)
)

type binCase struct {
	name string
	send []byte
	// then, if set, is sent after the responses to send have arrived,
	// built from the last non-zero CAS in them (CAS values differ between
	// the servers).
	then func(cas uint64) []byte
	end  int
	// args are extra server flags: the case runs on a pair of servers of
	// its own, started with them.
	args string
}

// binCases are the sequences compared. Keys are distinct per case.
func binCases() []binCase {
	const big = 1 << 20 // memcached's default -I
	// fit is the longest value an item with a 3-byte key and no flags may
	// have: memcached counts a 48-byte header, the key and a NUL, the
	// value and CRLF, and 8 bytes of CAS.
	const fit = big - 48 - 3 - 1 - 2 - 8
	fe := flagsExp(0, 0)
	v := func(n int) string { return strings.Repeat("v", n) }
	cs := []binCase{
		{name: "noop", send: cat(breq(bNoop, "", nil, ""))},
		{name: "version", send: cat(breq(bVersion, "", nil, ""))},
		{name: "version-with-key", send: cat(breq(bVersion, "k", nil, "")), end: endClose},
		{name: "get-miss", send: cat(breq(bGet, "a1", nil, ""))},
		{name: "getk-miss", send: cat(breq(bGetK, "a2", nil, ""))},
		{name: "getq-miss", send: cat(breq(bGetQ, "a3", nil, ""))},
		{name: "getkq-miss", send: cat(breq(bGetKQ, "a4", nil, ""))},
		{name: "set-get", send: cat(breq(bSet, "a5", flagsExp(0xdeadbeef, 0), "hello"), breq(bGet, "a5", nil, ""))},
		{name: "set-getk", send: cat(breq(bSet, "a6", flagsExp(7, 0), "hello"), breq(bGetK, "a6", nil, ""))},
		{name: "set-getq-getkq", send: cat(breq(bSet, "a7", fe, "x"), breq(bGetQ, "a7", nil, ""), breq(bGetKQ, "a7", nil, ""), breq(bGetQ, "a7-miss", nil, ""))},
		{name: "setq-get", send: cat(breq(bSetQ, "a8", flagsExp(1, 0), "quiet"), breq(bGet, "a8", nil, ""))},
		{name: "set-empty-value", send: cat(breq(bSet, "a9", fe, ""), breq(bGet, "a9", nil, ""))},
		{name: "set-binary-value", send: cat(breq(bSet, "b1", fe, "\x00\r\n\x80\xff"), breq(bGetK, "b1", nil, ""))},
		{name: "add", send: cat(breq(bAdd, "b2", fe, "1"), breq(bAdd, "b2", fe, "2"), breq(bGet, "b2", nil, ""))},
		{name: "addq", send: cat(breq(bAddQ, "b3", fe, "1"), breq(bAddQ, "b3", fe, "2"), breq(bGet, "b3", nil, ""))},
		{name: "replace", send: cat(breq(bReplace, "b4", fe, "1"), breq(bSet, "b4", fe, "1"), breq(bReplace, "b4", fe, "2"), breq(bGet, "b4", nil, ""))},
		{name: "replaceq", send: cat(breq(bReplaceQ, "b5", fe, "1"), breq(bSet, "b5", fe, "1"), breq(bReplaceQ, "b5", fe, "2"), breq(bGet, "b5", nil, ""))},
		{name: "set-cas-mismatch", send: cat(breq(bSet, "b6", fe, "1"), breq(bSet, "b6", fe, "2").withCAS(1<<60), breq(bGet, "b6", nil, ""))},
		{name: "set-cas-missing", send: cat(breq(bSet, "b7", fe, "1").withCAS(12345))},
		{name: "add-cas-missing", send: cat(breq(bAdd, "b8", fe, "1").withCAS(12345))},
		{name: "add-cas-mismatch", send: cat(breq(bSet, "b9", fe, "1"), breq(bAdd, "b9", fe, "2").withCAS(1<<60))},
		{name: "replace-cas-mismatch", send: cat(breq(bSet, "c1", fe, "1"), breq(bReplace, "c1", fe, "2").withCAS(1<<60))},
		{name: "setq-cas-mismatch", send: cat(breq(bSet, "c2", fe, "1"), breq(bSetQ, "c2", fe, "2").withCAS(1<<60))},
		{name: "set-cas-ok", send: cat(breq(bSet, "c3", fe, "1")),
			then: func(cas uint64) []byte {
				return cat(breq(bSet, "c3", fe, "2").withCAS(cas), breq(bSet, "c3", fe, "3").withCAS(cas), breq(bGet, "c3", nil, ""))
			}},
		{name: "add-cas-ok", send: cat(breq(bSet, "c4", fe, "1")),
			then: func(cas uint64) []byte { return cat(breq(bAdd, "c4", fe, "2").withCAS(cas), breq(bGet, "c4", nil, "")) }},
		{name: "replaceq-cas-ok", send: cat(breq(bSet, "c5", fe, "1")),
			then: func(cas uint64) []byte {
				return cat(breq(bReplaceQ, "c5", fe, "2").withCAS(cas), breq(bGet, "c5", nil, ""))
			}},
		{name: "delete", send: cat(breq(bSet, "c6", fe, "1"), breq(bDelete, "c6", nil, ""), breq(bDelete, "c6", nil, ""), breq(bGet, "c6", nil, ""))},
		{name: "deleteq", send: cat(breq(bSet, "c7", fe, "1"), breq(bDeleteQ, "c7", nil, ""), breq(bDeleteQ, "c7", nil, ""))},
		{name: "delete-cas-mismatch", send: cat(breq(bSet, "c8", fe, "1"), breq(bDelete, "c8", nil, "").withCAS(1<<60), breq(bGet, "c8", nil, ""))},
		{name: "delete-cas-ok", send: cat(breq(bSet, "c9", fe, "1")),
			then: func(cas uint64) []byte {
				return cat(breq(bDelete, "c9", nil, "").withCAS(cas), breq(bGet, "c9", nil, ""))
			}},
		{name: "delete-with-extras", send: cat(breq(bDelete, "d1", u32(0), "")), end: endClose},
		{name: "incr-create", send: cat(breq(bIncr, "d2", arithExt(1, 10, 0), ""), breq(bIncr, "d2", arithExt(5, 10, 0), ""), breq(bDecr, "d2", arithExt(3, 0, 0), ""), breq(bGet, "d2", nil, ""))},
		{name: "incr-no-create", send: cat(breq(bIncr, "d3", arithExt(1, 10, 0xffffffff), ""), breq(bDecr, "d3", arithExt(1, 10, 0xffffffff), ""), breq(bGet, "d3", nil, ""))},
		{name: "incrq-decrq", send: cat(breq(bIncrQ, "d4", arithExt(1, 7, 0), ""), breq(bIncrQ, "d4", arithExt(1, 7, 0), ""), breq(bDecrQ, "d4", arithExt(2, 7, 0), ""), breq(bDecrQ, "d4-miss", arithExt(2, 7, 0xffffffff), ""), breq(bGet, "d4", nil, ""))},
		{name: "incr-non-numeric", send: cat(breq(bSet, "d5", fe, "abc"), breq(bIncr, "d5", arithExt(1, 0, 0), ""), breq(bDecr, "d5", arithExt(1, 0, 0), ""))},
		{name: "incr-empty-value", send: cat(breq(bSet, "d6", fe, ""), breq(bIncr, "d6", arithExt(1, 0, 0), ""))},
		{name: "incr-cas-mismatch", send: cat(breq(bSet, "d7", fe, "5"), breq(bIncr, "d7", arithExt(1, 0, 0), "").withCAS(1<<60), breq(bGet, "d7", nil, ""))},
		{name: "incr-cas-missing-creates", send: cat(breq(bIncr, "d8", arithExt(1, 3, 0), "").withCAS(1<<60), breq(bGet, "d8", nil, ""))},
		{name: "incr-cas-ok", send: cat(breq(bSet, "d9", fe, "5")),
			then: func(cas uint64) []byte {
				return cat(breq(bIncr, "d9", arithExt(2, 0, 0), "").withCAS(cas), breq(bGet, "d9", nil, ""))
			}},
		{name: "decr-floor", send: cat(breq(bSet, "e1", fe, "5"), breq(bDecr, "e1", arithExt(100, 0, 0), ""), breq(bGet, "e1", nil, ""))},
		{name: "incr-wrap", send: cat(breq(bSet, "e2", fe, "18446744073709551615"), breq(bIncr, "e2", arithExt(2, 0, 0), ""), breq(bGet, "e2", nil, ""))},
		{name: "incr-grows", send: cat(breq(bSet, "e3", flagsExp(9, 0), "99"), breq(bIncr, "e3", arithExt(1, 0, 0), ""), breq(bGet, "e3", nil, ""))},
		{name: "decr-shrinks-padded", send: cat(breq(bSet, "e4", fe, "100"), breq(bDecr, "e4", arithExt(1, 0, 0), ""), breq(bGet, "e4", nil, ""))},
		{name: "incr-short-extras", send: cat(breq(bIncr, "e5", arithExt(1, 0, 0)[:12], "")), end: endClose},
		{name: "incr-with-value", send: cat(breq(bIncr, "e6", arithExt(1, 0, 0), "x")), end: endClose},
		{name: "append-prepend", send: cat(breq(bSet, "e7", flagsExp(3, 0), "mid"), breq(bAppend, "e7", nil, ">"), breq(bPrepend, "e7", nil, "<"), breq(bGet, "e7", nil, ""))},
		{name: "append-missing", send: cat(breq(bAppend, "e8", nil, "x"), breq(bPrepend, "e8", nil, "x"), breq(bAppendQ, "e8", nil, "x"), breq(bPrependQ, "e8", nil, "x"))},
		{name: "appendq-prependq", send: cat(breq(bSet, "e9", fe, "m"), breq(bAppendQ, "e9", nil, "a"), breq(bPrependQ, "e9", nil, "p"), breq(bGet, "e9", nil, ""))},
		{name: "append-cas-mismatch", send: cat(breq(bSet, "f1", fe, "m"), breq(bAppend, "f1", nil, "a").withCAS(1<<60), breq(bGet, "f1", nil, ""))},
		{name: "prepend-cas-ok", send: cat(breq(bSet, "f2", fe, "m")),
			then: func(cas uint64) []byte {
				return cat(breq(bPrepend, "f2", nil, "p").withCAS(cas), breq(bGet, "f2", nil, ""))
			}},
		{name: "append-with-extras", send: cat(breq(bAppend, "f3", flagsExp(0, 0), "x")), end: endClose},
		{name: "append-no-key", send: cat(breq(bAppend, "", nil, "x")), end: endClose},
		{name: "flush", send: cat(breq(bSet, "f4", fe, "1"), breq(bFlush, "", nil, ""), breq(bGet, "f4", nil, ""))},
		{name: "flushq", send: cat(breq(bSet, "f5", fe, "1"), breq(bFlushQ, "", nil, ""), breq(bGet, "f5", nil, ""))},
		{name: "flush-delayed", send: cat(breq(bSet, "f6", fe, "1"), breq(bFlush, "", u32(100), ""), breq(bGet, "f6", nil, ""), breq(bFlush, "", u32(0), ""), breq(bGet, "f6", nil, ""))},
		{name: "flush-bad-extras", send: cat(breq(bFlush, "", u32(0)[:2], "")), end: endClose},
		{name: "flush-with-key", send: cat(breq(bFlush, "k", nil, "")), end: endClose},
		{name: "touch", send: cat(breq(bSet, "f7", flagsExp(5, 0), "v"), breq(bTouch, "f7", u32(1000), ""), breq(bTouch, "f7-miss", u32(1000), ""), breq(bGet, "f7", nil, ""))},
		{name: "touch-expires", send: cat(breq(bSet, "f8", fe, "v"), breq(bTouch, "f8", u32(1000000000), ""), breq(bGet, "f8", nil, ""))},
		{name: "touch-cas-ignored", send: cat(breq(bSet, "f9", fe, "v"), breq(bTouch, "f9", u32(0), "").withCAS(1<<60))},
		{name: "touch-no-extras", send: cat(breq(bTouch, "g1", nil, "")), end: endClose},
		{name: "gat", send: cat(breq(bSet, "g2", flagsExp(5, 0), "val"), breq(bGAT, "g2", u32(1000), ""), breq(bGAT, "g2-miss", u32(0), ""))},
		{name: "gatq", send: cat(breq(bSet, "g3", flagsExp(5, 0), "val"), breq(bGATQ, "g3", u32(1000), ""), breq(bGATQ, "g3-miss", u32(0), ""))},
		{name: "gatk", send: cat(breq(bSet, "g4", flagsExp(5, 0), "val"), breq(bGATK, "g4", u32(1000), ""), breq(bGATK, "g4-miss", u32(0), ""))},
		{name: "gatkq", send: cat(breq(bSet, "g5", flagsExp(5, 0), "val"), breq(bGATKQ, "g5", u32(1000), ""), breq(bGATKQ, "g5-miss", u32(0), ""))},
		{name: "gat-expires", send: cat(breq(bSet, "g6", fe, "v"), breq(bGAT, "g6", u32(1000000000), ""), breq(bGet, "g6", nil, ""))},
		{name: "stat-general", send: cat(breq(bStat, "", nil, ""))},
		{name: "stat-settings", send: cat(breq(bStat, "settings", nil, ""))},
		{name: "stat-items", send: cat(breq(bSet, "g7", fe, "v"), breq(bStat, "items", nil, ""))},
		{name: "stat-slabs", send: cat(breq(bSet, "g8", fe, "v"), breq(bStat, "slabs", nil, ""))},
		{name: "stat-sizes", send: cat(breq(bStat, "sizes", nil, ""))},
		// Turned on while the server runs: the items stored since count.
		{name: "stat-sizes-runtime", send: cat(breq(bSet, "g9", fe, "old"), breq(bStat, "sizes_enable", nil, ""), breq(bStat, "sizes", nil, ""),
			breq(bSet, "g10", fe, "new"), breq(bStat, "sizes", nil, ""), breq(bStat, "sizes_disable", nil, ""), breq(bStat, "sizes", nil, ""))},
		{name: "stat-unknown-groups", send: cat(breq(bStat, "bogus", nil, ""), breq(bStat, "conns", nil, ""), breq(bStat, "cachedump 1 1", nil, ""), breq(bStat, "item", nil, ""))},
		{name: "stat-detail", send: cat(breq(bStat, "detail dump", nil, ""), breq(bStat, "detail on", nil, ""), breq(bStat, "detail off", nil, ""), breq(bStat, "detail", nil, ""), breq(bStat, "detail x", nil, ""))},
		{name: "stat-reset", send: cat(breq(bStat, "reset", nil, ""), breq(bStat, "resetting", nil, ""))},
		{name: "stat-with-extras", send: cat(breq(bStat, "", u32(0), "")), end: endClose},
		{name: "quit", send: cat(breq(bQuit, "", nil, "")), end: endClose},
		{name: "quitq", send: cat(breq(bQuitQ, "", nil, "")), end: endClose},
		{name: "quit-after-sets", send: cat(breq(bSetQ, "g9", fe, "1"), breq(bGetQ, "g9", nil, ""), breq(bQuit, "", nil, ""), breq(bNoop, "", nil, "")), end: endClose},
		{name: "quit-with-key", send: cat(breq(bQuit, "k", nil, "")), end: endClose},
		{name: "noop-with-body", send: cat(breq(bNoop, "", nil, "x")), end: endClose},
		{name: "unknown-opcode", send: cat(breq(0x45, "", nil, ""), breq(0xff, "", nil, ""))},
		{name: "unknown-opcode-value", send: cat(breq(0x45, "", nil, "xyz"))},
		// memcached drops body-length bytes after the key it has read: the
		// three filler bytes are eaten, then the NOOP is read.
		{name: "unknown-opcode-key-overswallow", send: append(cat(breq(0x45, "abc", nil, "")), "zzz"...)},
		{name: "range-opcodes", send: cat(breq(0x30, "", nil, ""), breq(0x31, "", nil, ""), breq(0x3c, "", nil, ""), breq(0x1b, "", nil, ""), breq(0x25, "", nil, ""))},
		{name: "sasl-list-mechs", send: cat(breq(bSASLList, "", nil, ""))},
		{name: "sasl-auth", send: cat(breq(bSASLAuth, "PLAIN", nil, "\x00u\x00p"), breq(bSASLStep, "PLAIN", nil, "x"))},
		{name: "sasl-list-with-key", send: cat(breq(bSASLList, "k", nil, "")), end: endClose},
		{name: "sasl-auth-no-key", send: cat(breq(bSASLAuth, "", nil, "x")), end: endClose},
		{name: "bad-magic-after-noop", send: cat(breq(bNoop, "", nil, ""), bpkt{magic: 0x81, op: bNoop, keyLen: -1, extLen: -1, bodyLen: -1}), end: endClose},
		// memcached drops the successful responses still queued when it
		// closes on a bad magic (error responses and NOOP's are written at
		// once); tandem sends them. So these cases end in an error first.
		{name: "bad-magic-zero", send: append(cat(breq(bSet, "h1", fe, "v"), breq(bGet, "h1-miss", nil, "")), make([]byte, 24)...), end: endClose},
		{name: "text-after-binary", send: append(cat(breq(bNoop, "", nil, "")), "get foo bar baz\r\nversion\r\n"...), end: endClose},
		{name: "short-header", send: cat(breq(bNoop, "", nil, ""), breq(bNoop, "", nil, ""))[:24+10], end: endIdle},
		{name: "partial-body", send: cat(breq(bSet, "h2", fe, "value"))[:24+10], end: endIdle},
		{name: "partial-key", send: cat(breq(bNoop, "", nil, ""), breq(bGet, "h3-long-key", nil, ""))[:24+24+5], end: endIdle},
		{name: "key-longer-than-body", send: cat(bpkt{op: bGet, key: []byte("abc"), keyLen: -1, extLen: -1, bodyLen: 2}), end: endClose},
		{name: "extras-longer-than-body", send: cat(bpkt{op: bSet, key: []byte("k"), ext: fe, val: []byte("v"), keyLen: -1, extLen: -1, bodyLen: 5}), end: endClose},
		{name: "key-251", send: cat(breq(bGet, strings.Repeat("k", 251), nil, "")), end: endClose},
		{name: "key-250", send: cat(breq(bSet, strings.Repeat("k", 250), fe, "v"), breq(bGetK, strings.Repeat("k", 250), nil, ""))},
		{name: "get-with-extras", send: cat(breq(bGet, "h4", u32(1), "")), end: endClose},
		{name: "get-with-value", send: cat(breq(bGet, "h5", nil, "x")), end: endClose},
		{name: "get-no-key", send: cat(breq(bGet, "", nil, "")), end: endClose},
		{name: "get-huge-body", send: cat(bpkt{op: bGet, key: []byte("h6"), keyLen: -1, extLen: -1, bodyLen: 1 << 30}), end: endClose},
		{name: "set-extras-4", send: cat(breq(bSet, "h7", u32(0), "v")), end: endClose},
		{name: "set-no-key", send: cat(breq(bSet, "", fe, "v")), end: endClose},
		{name: "set-too-large", send: cat(breq(bSet, "h8", fe, "old"), breq(bSet, "h8", fe, v(big)), breq(bGet, "h8", nil, ""))},
		{name: "setq-too-large", send: cat(breq(bSetQ, "h9", fe, v(big)), breq(bGet, "h9", nil, ""))},
		{name: "add-too-large-keeps-old", send: cat(breq(bSet, "i1", fe, "old"), breq(bAdd, "i1", fe, v(big)), breq(bReplace, "i1", fe, v(big)), breq(bGet, "i1", nil, ""))},
		{name: "set-fits-exactly", send: cat(breq(bSet, "i02", fe, v(fit)), breq(bSet, "i03", fe, v(fit+1)), breq(bGetQ, "i02", nil, ""), breq(bGetQ, "i03", nil, ""))},
		{name: "set-too-large-flags", send: cat(breq(bSet, "i04", flagsExp(1, 0), v(fit)), breq(bGetQ, "i04", nil, ""))},
		{name: "append-too-large", send: cat(breq(bSet, "i3", fe, "x"), breq(bAppend, "i3", nil, v(big)), breq(bPrependQ, "i3", nil, v(big)), breq(bGet, "i3", nil, ""))},
		{name: "append-combined-too-large", send: cat(breq(bSet, "i4", fe, v(600000)), breq(bAppend, "i4", nil, v(600000)), breq(bGetQ, "i4-none", nil, ""))},
		{name: "large-value", send: cat(breq(bSet, "i5", fe, v(500000)), breq(bGet, "i5", nil, ""))},
		{name: "set-exptime-past", send: cat(breq(bSet, "i6", fe, "v"), breq(bSet, "i6", flagsExp(0, 1000000000), "v"), breq(bGet, "i6", nil, ""))},
		{name: "set-exptime-future", send: cat(breq(bSet, "i7", flagsExp(0, 3600), "v"), breq(bSet, "i8", flagsExp(0, 0xffffffff), "v"), breq(bGet, "i7", nil, ""), breq(bGet, "i8", nil, ""))},
		{name: "datatype-vbucket-ignored", send: cat(bpkt{op: bSet, key: []byte("i9"), ext: fe, val: []byte("v"), keyLen: -1, extLen: -1, bodyLen: -1, dataType: 1, vbucket: 7}, bpkt{op: bGet, key: []byte("i9"), keyLen: -1, extLen: -1, bodyLen: -1, dataType: 3, vbucket: 0xffff})},
		{name: "touch-body-longer", send: cat(bpkt{op: bTouch, key: []byte("j1"), ext: u32(0), val: breq(bNoop, "", nil, "").bytes(), keyLen: -1, extLen: -1, bodyLen: -1, opaque: 9})},
	}
	// A pipeline of quiet commands ended by the harness's NOOP.
	var quiet []bpkt
	for i := 0; i < 20; i++ {
		k := fmt.Sprintf("j2-%d", i)
		quiet = append(quiet, breq(bSetQ, k, flagsExp(uint32(i), 0), strconv.Itoa(i*i)))
	}
	for i := 0; i < 25; i++ {
		quiet = append(quiet, breq(bGetKQ, fmt.Sprintf("j2-%d", i), nil, ""))
	}
	for i := 0; i < 25; i++ {
		quiet = append(quiet, breq(bDeleteQ, fmt.Sprintf("j2-%d", i), nil, ""))
	}
	cs = append(cs, binCase{name: "quiet-pipeline", send: cat(quiet...)})

	// Replies larger than one write (memcached's and tandem's batching
	// differ; the bytes must not).
	batch := []bpkt{breq(bSet, "j3", flagsExp(3, 0), v(3000))}
	for i := 0; i < 200; i++ {
		batch = append(batch, breq(bGetKQ, "j3", nil, ""), breq(bGetQ, "j3-miss", nil, ""))
	}
	cs = append(cs, binCase{name: "large-quiet-batch", send: cat(batch...)})
	cs = append(cs, binCase{name: "key-any-bytes", send: cat(breq(bSet, "j4 \r\n\x00\xff", flagsExp(1, 0), "v"), breq(bGetK, "j4 \r\n\x00\xff", nil, ""), breq(bDelete, "j4 \r\n\x00\xff", nil, ""))})
	cs = append(cs, binCase{name: "gat-clears-ttl", send: cat(breq(bSet, "j5", flagsExp(0, 1), "v"), breq(bGAT, "j5", u32(0), ""), breq(bTouch, "j5", u32(0), ""))})
	cs = append(cs, binCase{name: "incr-chained-value", send: cat(breq(bSet, "j6", fe, v(600000)), breq(bIncr, "j6", arithExt(1, 0, 0), ""))})
	cs = append(cs, binCase{name: "text-mixed-in-binary", send: append(cat(breq(bGet, "j7", nil, "")), "set j7 0 0 1\r\nx\r\nget j7\r\nversion\r\n"...), end: endClose})

	cs = append(cs, binCase{name: "flush-disabled", args: "-F", send: cat(breq(bFlush, "", nil, ""), breq(bFlushQ, "", u32(10), ""))})
	// With -M and 2 MB, six 300 kB items fit in both servers; the rest
	// fail for lack of memory. (How many small items still fit differs:
	// tandem's slab pages are not memcached's.)
	var full []bpkt
	for i := 0; i < 10; i++ {
		full = append(full, breq(bSet, fmt.Sprintf("k1-%d", i), fe, v(300000)))
	}
	full = append(full, breq(bSetQ, "k1-10", fe, v(300000)))
	cs = append(cs, binCase{name: "out-of-memory", args: "-M -m 2", send: cat(full...)})
	return cs
}

// binExchange runs c against addr on a fresh connection, after flushing the
// cache on another one, and returns the raw responses.
func binExchange(addr string, c binCase) ([]byte, error) {
	if err := flush(addr); err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline := time.Now().Add(scriptTimeout)
	_ = conn.SetDeadline(deadline)
	noop := bpkt{op: bNoop, opaque: endOpaque, keyLen: -1, extLen: -1, bodyLen: -1}.bytes()

	var reply []byte
	buf := make([]byte, 64<<10)
	parts := [][]byte{c.send}
	if c.then != nil {
		parts = append(parts, nil)
	}
	for i, part := range parts {
		if i > 0 {
			cas, ok := lastBinCAS(reply)
			if !ok {
				return reply, errors.New("no CAS in the responses for the second part")
			}
			part = c.then(cas)
		}
		last := i == len(parts)-1
		if !last || c.end == endNoop {
			part = append(append([]byte{}, part...), noop...)
		}
		writeErr := make(chan error, 1)
		go func(b []byte) { _, err := conn.Write(b); writeErr <- err }(part)
		if last && c.end != endNoop {
			if c.end == endIdle {
				_ = conn.SetReadDeadline(time.Now().Add(idleGap))
			}
			for {
				n, err := conn.Read(buf)
				reply = append(reply, buf[:n]...)
				if err == nil {
					continue
				}
				switch {
				case c.end == endClose && (errors.Is(err, io.EOF) || isPeerClosed(err)):
					return reply, nil
				case c.end == endIdle && isTimeout(err):
					return reply, nil
				case errors.Is(err, io.EOF):
					return reply, errors.New("connection closed by the server, but the case does not end in a close")
				}
				return reply, fmt.Errorf("read: %w", err)
			}
		}
		for !hasEndNoop(reply) {
			n, err := conn.Read(buf)
			reply = append(reply, buf[:n]...)
			if err != nil && !hasEndNoop(reply) {
				return reply, fmt.Errorf("read: %w", err)
			}
		}
		if err := <-writeErr; err != nil {
			return reply, fmt.Errorf("write: %w", err)
		}
	}
	return reply, nil
}

type binPacket struct {
	hdr  [24]byte
	body []byte
}

// splitPackets cuts b into response packets; a partial one is returned as
// rest.
func splitPackets(b []byte) (ps []binPacket, rest []byte) {
	for len(b) >= 24 {
		n := 24 + int(binary.BigEndian.Uint32(b[8:]))
		if len(b) < n {
			break
		}
		var p binPacket
		copy(p.hdr[:], b)
		p.body = b[24:n]
		ps = append(ps, p)
		b = b[n:]
	}
	return ps, b
}

func hasEndNoop(b []byte) bool {
	ps, _ := splitPackets(b)
	return len(ps) > 0 && ps[len(ps)-1].hdr[1] == bNoop && binary.BigEndian.Uint32(ps[len(ps)-1].hdr[12:]) == endOpaque
}

func lastBinCAS(b []byte) (uint64, bool) {
	ps, _ := splitPackets(b)
	for i := len(ps) - 1; i >= 0; i-- {
		if cas := binary.BigEndian.Uint64(ps[i].hdr[16:]); cas != 0 {
			return cas, true
		}
	}
	return 0, false
}

// normalizeBinary renders responses for comparison: each packet's header
// fields and body, with a non-zero CAS shown as <cas> (CAS values differ
// between servers; 0 against non-zero is still a difference). A run of
// STAT packets becomes the sorted set of their names, slab class numbers
// replaced (values, and the classes items land in, differ).
func normalizeBinary(b []byte) string {
	ps, rest := splitPackets(b)
	var out strings.Builder
	var stats []string
	flushStats := func() {
		sort.Strings(stats)
		for i, s := range stats {
			if i == 0 || s != stats[i-1] {
				fmt.Fprintf(&out, "  STAT %s\n", s)
			}
		}
		stats = stats[:0]
	}
	for _, p := range ps {
		h := p.hdr
		status := binary.BigEndian.Uint16(h[6:])
		keyLen := int(binary.BigEndian.Uint16(h[2:]))
		extLen := int(h[4])
		if h[1] == bStat && status == 0 && keyLen > 0 && keyLen <= len(p.body) {
			stats = append(stats, slabClassStat.ReplaceAllString(string(p.body[:keyLen]), "${1}<cls>:"))
			continue
		}
		flushStats()
		cas := "0"
		if binary.BigEndian.Uint64(h[16:]) != 0 {
			cas = "<cas>"
		}
		body := p.body
		fmt.Fprintf(&out, "magic=%#x op=%#x keylen=%d extlen=%d type=%d status=%#x bodylen=%d opaque=%#x cas=%s body=%q\n",
			h[0], h[1], keyLen, extLen, h[5], status, len(body), binary.BigEndian.Uint32(h[12:]), cas, shorten(body))
	}
	flushStats()
	if len(rest) > 0 {
		fmt.Fprintf(&out, "partial packet %q\n", rest)
	}
	return out.String()
}

// TestBinaryDifferential sends each binary case to memcached and to tandem
// and requires the same responses (see normalizeBinary).
func TestBinaryDifferential(t *testing.T) {
	if _, err := os.Stat(memcachedPath); err != nil {
		t.Fatalf("%s not found (%v): install the Debian package memcached", memcachedPath, err)
	}
	self := os.Getenv("BIN_DIFF_SELF") == "1"
	cases := binCases()
	if len(cases) < 60 {
		t.Fatalf("only %d cases", len(cases))
	}
	other := memcachedPath
	if !self {
		other = e2eBinary(t)
	}
	type pair struct{ ref, other string }
	pairs := map[string]pair{}
	for _, c := range cases {
		if _, ok := pairs[c.args]; !ok {
			extra := strings.Fields(c.args)
			pairs[c.args] = pair{startServer(t, memcachedPath, extra), startServer(t, other, extra)}
		}
	}
	names := map[string]bool{}
	for _, c := range cases {
		if names[c.name] {
			t.Fatalf("duplicate case %s", c.name)
		}
		names[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			var rb, ob []byte
			var rerr, oerr error
			var wg sync.WaitGroup
			wg.Add(2)
			p := pairs[c.args]
			go func() { defer wg.Done(); rb, rerr = binExchange(p.ref, c) }()
			go func() { defer wg.Done(); ob, oerr = binExchange(p.other, c) }()
			wg.Wait()
			nr, no := normalizeBinary(rb), normalizeBinary(ob)
			if self {
				t.Logf("memcached:\n%s", nr)
			}
			if rerr != nil {
				t.Fatalf("memcached: %v\nresponses:\n%s", rerr, nr)
			}
			if oerr != nil || nr != no {
				t.Errorf("responses differ (tandem error: %v)\nrequest: %q\nmemcached:\n%s\ntandem:\n%s", oerr, shorten(c.send), nr, no)
			}
		})
	}
}
