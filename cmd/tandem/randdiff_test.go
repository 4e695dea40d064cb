package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRandomDifferential sends random sequences of text and meta commands,
// one command at a time, to Debian's memcached and to Tandem, and requires
// the same replies, CAS values, TTLs and last-access times masked. The
// scripted differential test checks the cases someone thought of; this
// one finds the combinations nobody wrote down (it found four in the
// eighteenth session: see docs/compatibility.md).
//
// The grammar leaves out what memcached itself answers differently from
// one run to the next (docs/compatibility.md, "Known differences"): an
// incr or decr whose result is shorter than the value (memcached pads it
// in place or makes a new item, depending on whether anything else holds
// the item at that moment), and arithmetic on values of whitespace only
// (memcached's parser reads past the value). So arithmetic only meets
// digit strings without leading zeros, with deltas that cannot make them
// shorter, and the other values are letters. One memcached bug Tandem does
// not copy is still within the grammar: an ma with T whose result is longer
// than the value loses the TTL in memcached. These 200 seeds do not meet
// it; more seeds may (seed 312 does).
func TestRandomDifferential(t *testing.T) {
	if _, err := os.Stat(memcachedPath); err != nil {
		t.Fatalf("%s not found (%v): install the Debian package memcached", memcachedPath, err)
	}
	randCompare(t, 200, 18, "rd", func(g randScript) string { return g.command() }, randExchange,
		func(cmd string) string { return fmt.Sprintf("%q", cmd) })
}

// randCompare runs seeds random sequences of 150 requests made by next
// through memcached and Tandem with exchange, and fails at the first
// request whose replies differ, showing the requests before it.
func randCompare[R any](t *testing.T, seeds int, stream uint64, prefix string, next func(randScript) R,
	exchange func(*testing.T, string, []R) []string, show func(R) string) {
	servers := []string{startServer(t, memcachedPath, nil), startServer(t, e2eBinary(t), nil)}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			g := randScript{rng: rand.New(rand.NewPCG(seed, stream)), prefix: fmt.Sprintf("%s%d:", prefix, seed)}
			reqs := make([]R, 150)
			for i := range reqs {
				reqs[i] = next(g)
			}
			var replies [2][]string
			for i, addr := range servers {
				replies[i] = exchange(t, addr, reqs)
			}
			for i := range reqs {
				if replies[0][i] != replies[1][i] {
					var before []string
					for _, r := range reqs[max(0, i-8):i] {
						before = append(before, show(r))
					}
					t.Fatalf("request %d %s:\nmemcached %q\ntandem    %q\nthe requests before it: %s",
						i, show(reqs[i]), replies[0][i], replies[1][i], strings.Join(before, " "))
				}
			}
		})
	}
}

// randExchange sends each command followed by "mn" on one connection and
// returns each reply, up to and including its MN, masked.
func randExchange(t *testing.T, addr string, cmds []string) []string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	require.NoError(t, err)
	defer c.Close()
	out := make([]string, len(cmds))
	buf := make([]byte, 64<<10)
	for i, cmd := range cmds {
		require.NoError(t, c.SetDeadline(time.Now().Add(scriptTimeout)))
		_, err := c.Write([]byte(cmd + "mn\r\n"))
		require.NoError(t, err)
		want := 1 + strings.Count(cmd, "mn\r\n")
		var got []byte
		for bytes.Count(got, []byte("MN\r\n")) < want {
			n, err := c.Read(buf)
			require.NoError(t, err, "reply to %q from %s, so far %q", cmd, addr, got)
			got = append(got, buf[:n]...)
		}
		out[i] = randMask(string(got))
	}
	return out
}

var (
	randCAS   = regexp.MustCompile(`(?m)^(VALUE \S+ \d+ \d+) \d+`)
	randFlags = regexp.MustCompile(` ([ctl])\d+`)
)

// randMask hides what differs between two servers by design: CAS values,
// and the seconds in TTLs and last-access times (a second may tick between
// the two servers' answers).
func randMask(s string) string {
	s = randCAS.ReplaceAllString(s, "$1 CAS")
	return randFlags.ReplaceAllString(s, " ${1}N")
}

// randScript makes the commands. Text keys hold letters; numeric keys hold
// digit strings with no leading zero, and are the only ones arithmetic
// meets.
type randScript struct {
	rng    *rand.Rand
	prefix string
}

func (g randScript) pick(s ...string) string { return s[g.rng.IntN(len(s))] }

func (g randScript) textKey() string    { return g.prefix + g.pick("a", "b", "c") }
func (g randScript) numKey() string     { return g.prefix + g.pick("n1", "n2") }
func (g randScript) anyKey() string     { return g.pick(g.textKey(), g.numKey()) }
func (g randScript) exptime() string    { return g.pick("0", "0", "1000", "-1", "2592001", "3000") }
func (g randScript) flagsValue() string { return fmt.Sprint(g.rng.IntN(70000)) }

func (g randScript) letters() string {
	b := make([]byte, g.rng.IntN(13))
	for i := range b {
		b[i] = "xyz-"[g.rng.IntN(4)]
	}
	return string(b)
}

// digits is a number without leading zeros, short enough that small
// increments never wrap.
func (g randScript) digits() string {
	n := 1 + g.rng.IntN(15)
	b := []byte{byte('1' + g.rng.IntN(9))}
	for len(b) < n {
		b = append(b, byte('0'+g.rng.IntN(10)))
	}
	return string(b)
}

// flags returns up to max of choices, in random order, space-separated.
func (g randScript) flags(max int, choices ...string) string {
	g.rng.Shuffle(len(choices), func(i, j int) { choices[i], choices[j] = choices[j], choices[i] })
	return strings.Join(choices[:g.rng.IntN(max+1)], " ")
}

func meta(cmd, key, flags string) string {
	return strings.TrimRight(cmd+" "+key+" "+flags, " ")
}

func (g randScript) command() string {
	switch r := g.rng.IntN(100); {
	case r < 14: // storage of letters
		v := g.letters()
		noreply := ""
		if g.rng.IntN(10) == 0 {
			noreply = " noreply"
		}
		return fmt.Sprintf("%s %s %s %s %d%s\r\n%s\r\n", g.pick("set", "add", "replace", "append", "prepend"),
			g.textKey(), g.flagsValue(), g.exptime(), len(v), noreply, v)
	case r < 22: // storage of digits (append keeps a number a number)
		v := g.digits()
		return fmt.Sprintf("%s %s %s %s %d\r\n%s\r\n", g.pick("set", "add", "replace", "append"),
			g.numKey(), g.flagsValue(), g.exptime(), len(v), v)
	case r < 25:
		v := g.letters()
		return fmt.Sprintf("cas %s 0 %s %d %s\r\n%s\r\n", g.anyKey(), g.exptime(), len(v), g.pick("1", "2", "12345"), v)
	case r < 37:
		keys := []string{g.anyKey()}
		for g.rng.IntN(3) == 0 {
			keys = append(keys, g.anyKey())
		}
		return g.pick("get", "gets", "gat 1000", "gats 0", "gat -1") + " " + strings.Join(keys, " ") + "\r\n"
	case r < 45: // arithmetic that never shortens a number
		if g.rng.IntN(3) == 0 {
			return fmt.Sprintf("decr %s 0\r\n", g.numKey())
		}
		return fmt.Sprintf("incr %s %d\r\n", g.numKey(), g.rng.IntN(10))
	case r < 48: // arithmetic on letters: an error either way
		return fmt.Sprintf("%s %s 1\r\n", g.pick("incr", "decr"), g.textKey())
	case r < 52:
		return fmt.Sprintf("delete %s\r\n", g.anyKey())
	case r < 55:
		return fmt.Sprintf("touch %s %s\r\n", g.anyKey(), g.exptime())
	case r < 67:
		return meta("mg", g.anyKey(), g.flags(5, "v", "f", "t", "s", "k", "Oab", "q", "h", "l", "c", "N1000", "R30", "T2000", "u")) + "\r\n"
	case r < 75:
		v := g.letters()
		return meta("ms", g.textKey(), fmt.Sprintf("%d %s", len(v), g.flags(3, "F5", "T1000", "I", "q", "c", "k", "Oxy", "C1", g.pick("MS", "ME", "MA", "MP", "MR")))) + "\r\n" + v + "\r\n"
	case r < 78:
		v := g.digits()
		return meta("ms", g.numKey(), fmt.Sprintf("%d %s", len(v), g.flags(2, "F5", "T1000", "q", "c", "k", g.pick("MS", "ME", "MA")))) + "\r\n" + v + "\r\n"
	case r < 86:
		return meta("ma", g.numKey(), g.flags(4, "N1000", "J13", "D7", "MI", "M+", "q", "t", "c", "v", "k", "Oz", "T500")) + "\r\n"
	case r < 88:
		return meta("ma", g.textKey(), g.flags(2, "q", "v", "N0")) + "\r\n"
	case r < 95:
		return meta("md", g.anyKey(), g.flags(2, "q", "I", "T30", "C1", "k", "Oq")) + "\r\n"
	case r < 97:
		return "mn\r\n"
	default: // errors both servers answer without closing
		return g.pick("bogus\r\n", "get\r\n", "set "+g.textKey()+" 0 0 x\r\n", "incr "+g.numKey()+" abc\r\n",
			"touch "+g.textKey()+" abc\r\n", "mg "+g.textKey()+" v v\r\n", "ma "+g.numKey()+" MX\r\n", "md "+g.textKey()+" Tfoo\r\n")
	}
}

// TestRandomDifferentialBinary is TestRandomDifferential for the binary
// protocol: random requests of every storage, retrieval, arithmetic,
// touch and delete opcode, quiet ones included, each followed by a NOOP,
// compared as the binary differential test compares them (normalizeBinary:
// CAS values masked).
func TestRandomDifferentialBinary(t *testing.T) {
	if _, err := os.Stat(memcachedPath); err != nil {
		t.Fatalf("%s not found (%v): install the Debian package memcached", memcachedPath, err)
	}
	randCompare(t, 100, 19, "rb", func(g randScript) bpkt { return g.binRequest() }, randBinExchange,
		func(r bpkt) string { return fmt.Sprintf("%x", r.bytes()) })
}

// randBinExchange sends each request followed by a NOOP on one connection
// and returns each one's responses, normalized.
func randBinExchange(t *testing.T, addr string, reqs []bpkt) []string {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	require.NoError(t, err)
	defer c.Close()
	noop := bpkt{op: bNoop, opaque: endOpaque, keyLen: -1, extLen: -1, bodyLen: -1}.bytes()
	out := make([]string, len(reqs))
	buf := make([]byte, 64<<10)
	for i, r := range reqs {
		require.NoError(t, c.SetDeadline(time.Now().Add(scriptTimeout)))
		_, err := c.Write(append(r.bytes(), noop...))
		require.NoError(t, err)
		var got []byte
		for !hasEndNoop(got) {
			n, err := c.Read(buf)
			require.NoError(t, err, "responses to %x from %s, so far %x", r.bytes(), addr, got)
			got = append(got, buf[:n]...)
		}
		out[i] = normalizeBinary(got)
	}
	return out
}

// binRequest makes one request; as in command, arithmetic meets only
// numbers it cannot shorten.
func (g randScript) binRequest() bpkt {
	exp := func() uint32 { return uint32([]int64{0, 0, 1000, 2592001, 0xffffffff}[g.rng.IntN(5)]) }
	cas := func() uint64 { return []uint64{0, 0, 0, 1, 12345}[g.rng.IntN(5)] }
	switch r := g.rng.IntN(100); {
	case r < 15:
		op := []byte{bSet, bAdd, bReplace, bSetQ, bAddQ, bReplaceQ}[g.rng.IntN(6)]
		return breq(op, g.textKey(), flagsExp(uint32(g.rng.IntN(70000)), exp()), g.letters()).withCAS(cas())
	case r < 22:
		op := []byte{bSet, bAdd, bReplace, bSetQ}[g.rng.IntN(4)]
		return breq(op, g.numKey(), flagsExp(uint32(g.rng.IntN(70000)), exp()), g.digits()).withCAS(cas())
	case r < 28:
		op := []byte{bAppend, bPrepend, bAppendQ, bPrependQ}[g.rng.IntN(4)]
		return breq(op, g.textKey(), nil, g.letters()).withCAS(cas())
	case r < 31:
		return breq([]byte{bAppend, bAppendQ}[g.rng.IntN(2)], g.numKey(), nil, g.digits())
	case r < 50:
		return breq([]byte{bGet, bGetQ, bGetK, bGetKQ}[g.rng.IntN(4)], g.anyKey(), nil, "")
	case r < 60:
		return breq([]byte{bIncr, bIncrQ}[g.rng.IntN(2)], g.numKey(), arithExt(uint64(g.rng.IntN(10)), uint64(1+g.rng.IntN(99)), exp()), "").withCAS(cas())
	case r < 63:
		return breq([]byte{bDecr, bDecrQ}[g.rng.IntN(2)], g.numKey(), arithExt(0, 7, exp()), "")
	case r < 66:
		return breq([]byte{bIncr, bDecr}[g.rng.IntN(2)], g.textKey(), arithExt(1, 5, 0xffffffff), "")
	case r < 75:
		return breq([]byte{bDelete, bDeleteQ}[g.rng.IntN(2)], g.anyKey(), nil, "").withCAS(cas())
	case r < 88:
		return breq([]byte{bTouch, bGAT, bGATQ, bGATK, bGATKQ}[g.rng.IntN(5)], g.anyKey(), u32(exp()), "")
	case r < 95:
		return breq([]byte{bNoop, bVersion}[g.rng.IntN(2)], "", nil, "")
	default:
		// Unknown, without a body to swallow. (A request whose lengths
		// its opcode does not allow closes the connection: the scripted
		// binary test has those.)
		return breq(0x99, "", nil, "")
	}
}
