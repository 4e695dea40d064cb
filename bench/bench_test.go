package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestTextEncoders(t *testing.T) {
	require.Equal(t, "get a bb\r\n", string(appendTextGet(nil, []byte("a"), []byte("bb"))))
	require.Equal(t, "set k 7 0 3\r\nabc\r\n", string(appendTextSet(nil, []byte("k"), 7, 0, []byte("abc"))))
	require.Equal(t, "mg k v f k\r\n", string(appendMetaGet(nil, []byte("k"))))
	require.Equal(t, "ms k 3 F7 T0\r\nabc\r\n", string(appendMetaSet(nil, []byte("k"), 7, 0, []byte("abc"))))
	require.Equal(t, "set k 7 60 3\r\nabc\r\n", string(appendTextSet(nil, []byte("k"), 7, 60, []byte("abc"))))
	require.Equal(t, "ms k 3 F7 T-1\r\nabc\r\n", string(appendMetaSet(nil, []byte("k"), 7, -1, []byte("abc"))))
	require.Equal(t, "mn\r\n", string(appendMetaNoop(nil)))
}

func TestBinaryEncoders(t *testing.T) {
	get := appendBinaryGet(nil, []byte("key"), 9)
	require.Equal(t, []byte{
		0x80, 0x00, 0, 3, 0, 0, 0, 0, // magic, GET, key length 3, no extras
		0, 0, 0, 3, 0, 0, 0, 9, // body 3, opaque 9
		0, 0, 0, 0, 0, 0, 0, 0, // CAS
		'k', 'e', 'y',
	}, get)
	set := appendBinarySet(nil, []byte("k"), 0x01020304, 60, []byte("vv"), 1)
	require.Equal(t, []byte{
		0x80, 0x01, 0, 1, 8, 0, 0, 0, // magic, SET, key length 1, 8 bytes of extras
		0, 0, 0, 11, 0, 0, 0, 1, // body 8+1+2, opaque 1
		0, 0, 0, 0, 0, 0, 0, 0,
		1, 2, 3, 4, 0, 0, 0, 60, // flags, exptime
		'k', 'v', 'v',
	}, set)
	require.Equal(t, []byte{
		0x80, 0x0d, 0, 1, 0, 0, 0, 0, // magic, GETKQ, key length 1
		0, 0, 0, 1, 0, 0, 0, 5, // body 1, opaque 5
		0, 0, 0, 0, 0, 0, 0, 0,
		'k',
	}, appendBinaryGetKQ(nil, []byte("k"), 5))
	require.Equal(t, []byte{
		0x80, 0x0a, 0, 0, 0, 0, 0, 0, // magic, NOOP
		0, 0, 0, 0, 0, 0, 0, 5, // no body, opaque 5
		0, 0, 0, 0, 0, 0, 0, 0,
	}, appendBinaryNoop(nil, 5))
}

// binaryResponse builds a response packet for the parser tests.
func binaryResponse(op uint8, status uint16, extras, key, value []byte, opaque uint32) []byte {
	h := appendBinaryHeader(nil, op, len(key), len(extras), len(extras)+len(key)+len(value), opaque)
	h[0] = binResMagic
	h[6], h[7] = byte(status>>8), byte(status)
	h = append(h, extras...)
	h = append(h, key...)
	return append(h, value...)
}

func TestParseReplies(t *testing.T) {
	type parser func([]byte, *Reply) (int, error)
	text := ParseTextReply
	meta := ParseMetaReply
	bin := func(b []byte, r *Reply) (int, error) { return ParseBinaryReply(b, r, maxValue) }
	tests := []struct {
		name  string
		parse parser
		in    string
		kind  ReplyKind
		key   string
		value string
		flags uint32
		n     int // 0: incomplete
		err   bool
	}{
		{name: "text value", parse: text, in: "VALUE k 5 3\r\nabc\r\nEND\r\n", kind: ReplyValue, key: "k",
			value: "abc", flags: 5, n: 18},
		{name: "text value cas", parse: text, in: "VALUE k 0 1 99\r\nx\r\n", kind: ReplyValue, key: "k",
			value: "x", n: 19},
		{name: "text end", parse: text, in: "END\r\n", kind: ReplyEnd, n: 5},
		{name: "text stored", parse: text, in: "STORED\r\n", kind: ReplyStored, n: 8},
		{name: "text not stored", parse: text, in: "NOT_STORED\r\n", kind: ReplyNotStored, n: 12},
		{name: "text server error", parse: text, in: "SERVER_ERROR out of memory\r\n", kind: ReplyError, n: 28},
		{name: "text error", parse: text, in: "ERROR\r\n", kind: ReplyError, n: 7},
		{name: "text partial line", parse: text, in: "VALUE k 0 3", n: 0},
		{name: "text partial data", parse: text, in: "VALUE k 0 3\r\nab", n: 0},
		{name: "text bad terminator", parse: text, in: "VALUE k 0 3\r\nabcXY", err: true},
		{name: "text garbage", parse: text, in: "HELLO\r\n", err: true},
		{name: "text bad flags", parse: text, in: "VALUE k x 3\r\nabc\r\n", err: true},
		{name: "meta value", parse: meta, in: "VA 3 f7 kkey\r\nabc\r\n", kind: ReplyValue, key: "key",
			value: "abc", flags: 7, n: 19},
		{name: "meta miss", parse: meta, in: "EN\r\n", kind: ReplyMiss, n: 4},
		{name: "meta noop", parse: meta, in: "MN\r\n", kind: ReplyNoop, n: 4},
		{name: "meta stored", parse: meta, in: "HD\r\n", kind: ReplyStored, n: 4},
		{name: "meta not stored", parse: meta, in: "NS\r\n", kind: ReplyNotStored, n: 4},
		{name: "meta client error", parse: meta, in: "CLIENT_ERROR bad data chunk\r\n", kind: ReplyError, n: 29},
		{name: "meta partial", parse: meta, in: "VA 3 f7\r\nab", n: 0},
		{name: "meta garbage", parse: meta, in: "VALUE\r\n", err: true},
		{name: "binary hit", parse: bin,
			in:   string(binaryResponse(binOpGet, 0, []byte{0, 0, 0, 7}, nil, []byte("abc"), 4)),
			kind: ReplyValue, value: "abc", flags: 7, n: 24 + 4 + 3},
		{name: "binary miss", parse: bin, in: string(binaryResponse(binOpGet, 1, nil, nil, []byte("Not found"), 0)),
			kind: ReplyMiss, n: 24 + 9},
		{name: "binary getkq hit", parse: bin,
			in:   string(binaryResponse(binOpGetKQ, 0, []byte{0, 0, 0, 7}, []byte("kk"), []byte("abc"), 4)),
			kind: ReplyValue, key: "kk", value: "abc", flags: 7, n: 24 + 4 + 2 + 3},
		{name: "binary noop", parse: bin, in: string(binaryResponse(binOpNoop, 0, nil, nil, nil, 4)),
			kind: ReplyNoop, n: 24},
		{name: "binary stored", parse: bin, in: string(binaryResponse(binOpSet, 0, nil, nil, nil, 0)),
			kind: ReplyStored, n: 24},
		{name: "binary not stored", parse: bin, in: string(binaryResponse(binOpSet, 5, nil, nil, nil, 0)),
			kind: ReplyNotStored, n: 24},
		{name: "binary error", parse: bin, in: string(binaryResponse(binOpSet, 0x82, nil, nil, []byte("oom"), 0)),
			kind: ReplyError, n: 27},
		{name: "binary partial header", parse: bin, in: "\x81\x00\x00", n: 0},
		{name: "binary partial body", parse: bin,
			in: string(binaryResponse(binOpGet, 0, []byte{0, 0, 0, 7}, nil, []byte("abc"), 0)[:26]), n: 0},
		{name: "binary bad magic", parse: bin, in: string(make([]byte, 24)), err: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r Reply
			n, err := tc.parse([]byte(tc.in), &r)
			if tc.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.n, n)
			if n == 0 {
				return
			}
			require.Equal(t, tc.kind, r.Kind)
			require.Equal(t, tc.key, string(r.Key))
			require.Equal(t, tc.value, string(r.Value))
			require.Equal(t, tc.flags, r.Flags)
		})
	}
}

func FuzzParseReplies(f *testing.F) {
	f.Add([]byte("VALUE k 5 3\r\nabc\r\nEND\r\n"))
	f.Add([]byte("VA 3 f7 kkey\r\nabc\r\n"))
	f.Add(binaryResponse(binOpGet, 0, []byte{0, 0, 0, 7}, nil, []byte("abc"), 4))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Reply
		for _, parse := range []func([]byte, *Reply) (int, error){ParseTextReply, ParseMetaReply,
			func(b []byte, r *Reply) (int, error) { return ParseBinaryReply(b, r, maxValue) }} {
			n, err := parse(b, &r)
			if n < 0 || n > len(b) || (err != nil && n != 0) {
				t.Fatalf("n=%d err=%v for %d bytes", n, err, len(b))
			}
		}
	})
}

func TestValues(t *testing.T) {
	key := []byte("bench:42")
	var scratch []byte
	for ver := uint64(1); ver < 200; ver++ {
		h := mix(key, ver)
		size := valueSize(h, 40, 300)
		require.GreaterOrEqual(t, size, 40)
		require.LessOrEqual(t, size, 300)
		v := appendValue(nil, key, ver, h, size)
		require.Len(t, v, size)
		require.True(t, verifyValue(key, v, valueFlags(h), 40, 300, &scratch))
		require.False(t, verifyValue([]byte("bench:43"), v, valueFlags(h), 40, 300, &scratch), "other key")
		require.False(t, verifyValue(key, v, valueFlags(h)+1, 40, 300, &scratch), "flags")
		bad := bytes.Clone(v)
		bad[len(bad)-1] ^= 1
		require.False(t, verifyValue(key, bad, valueFlags(h), 40, 300, &scratch), "corrupt byte")
		require.False(t, verifyValue(key, v[:len(v)-1], valueFlags(h), 40, 300, &scratch), "truncated")
	}
}

func TestParseFlags(t *testing.T) {
	var out bytes.Buffer
	cfg, o, err := parseFlags([]string{"-proto", "binary", "-ratio", "1:3", "-value", "10-20",
		"-compare", "a=x -p {port}", "-compare", "b=y {port}"}, &out)
	require.NoError(t, err)
	require.Equal(t, ProtoBinary, cfg.Proto)
	require.Equal(t, []int{1, 3, 10, 20}, []int{cfg.SetWeight, cfg.GetWeight, cfg.ValueMin, cfg.ValueMax})
	require.Len(t, o.compare, 2)
	require.Equal(t, []string{"x", "-p", "{port}"}, o.compare[0].Args)
	require.Zero(t, cfg.Exptime)
	cfg, _, err = parseFlags([]string{"-exptime", "60", "-proto", "meta", "-multiget", "4"}, &out)
	require.NoError(t, err)
	require.Equal(t, int64(60), cfg.Exptime)
	require.Equal(t, 4, cfg.MultiGet)
	cfg.Servers, cfg.Conns, cfg.Pipeline, cfg.Keys = []string{"x"}, 1, 1, 1
	require.NoError(t, cfg.check(), "multiget works with meta")
	cfg.Proto, cfg.Exptime = ProtoBinary, -1
	require.Error(t, cfg.check(), "binary exptime is unsigned")
	for _, bad := range [][]string{{"-proto", "udp"}, {"-ratio", "3"}, {"-value", "9-1"},
		{"-compare", "nameonly"}, {"-compare", "a=x -p 1"}} {
		_, _, err := parseFlags(bad, &out)
		require.Error(t, err, bad)
	}
}

// tandemBin is the tandem binary the tests start, built once per run of
// the test binary (TestMain removes it).
var tandemBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tandemBin.dir != "" {
		os.RemoveAll(tandemBin.dir)
	}
	os.Exit(code)
}

// tandemSpec returns how to start tandem, with extra flags if given,
// building it the first time.
func tandemSpec(t *testing.T, extra ...string) serverSpec {
	t.Helper()
	tandemBin.once.Do(func() {
		if tandemBin.dir, tandemBin.err = os.MkdirTemp("", "bench-test"); tandemBin.err != nil {
			return
		}
		tandemBin.path = filepath.Join(tandemBin.dir, "tandem")
		out, err := exec.Command("go", "build", "-o", tandemBin.path, "../cmd/tandem").CombinedOutput()
		if err != nil {
			tandemBin.err = fmt.Errorf("building tandem: %v\n%s", err, out)
		}
	})
	require.NoError(t, tandemBin.err)
	cmd := append([]string{"tandem=" + tandemBin.path, "-u root -p {port} -l 127.0.0.1 -t 2 -m 64"}, extra...)
	spec, err := parseSpec(strings.Join(cmd, " "))
	require.NoError(t, err)
	return spec
}

func startTandem(t *testing.T, spec serverSpec) *server {
	t.Helper()
	srv, err := startServer(spec, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(srv.stop)
	return srv
}

// TestSmoke runs each protocol for well under a second against a real
// tandem and checks that the instrument works, not how fast anything is.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	spec := tandemSpec(t)
	srv := startTandem(t, spec)
	base := Config{
		Servers: []string{srv.addr}, Conns: 4, Pipeline: 8, SetWeight: 1, GetWeight: 4, MultiGet: 1,
		Keys: 2000, KeyPrefix: "smoke:", Dist: "uniform", ValueMin: 100, ValueMax: 100,
		Duration: 700 * time.Millisecond, Warmup: 200 * time.Millisecond, Prefill: true,
		VerifyFrac: 0.5, ServerPID: srv.cmd.Process.Pid, Seed: 1,
	}
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{"text pipelined", func(c *Config) { c.Proto = ProtoText }},
		{"meta pipelined", func(c *Config) { c.Proto = ProtoMeta; c.Dist = "zipf"; c.ZipfS = 1.1 }},
		{"binary pipelined", func(c *Config) { c.Proto = ProtoBinary; c.Dist = "sequential" }},
		{"text multiget sizes", func(c *Config) {
			c.MultiGet, c.ValueMin, c.ValueMax, c.Goroutines = 5, 60, 3000, 2
		}},
		{"text open loop, shared goroutines", func(c *Config) { c.Rate, c.Goroutines = 4000, 2 }},
		{"binary open loop", func(c *Config) { c.Proto, c.Rate, c.Pipeline = ProtoBinary, 4000, 1 }},
		{"meta request count", func(c *Config) { c.Proto, c.Requests, c.Duration = ProtoMeta, 3000, 0 }},
		{"text exptime", func(c *Config) { c.Proto, c.Exptime = ProtoText, 3600 }},
		// Half the keys never set: the multi-gets see hits and misses.
		{"meta multiget", func(c *Config) {
			c.Proto, c.MultiGet, c.SetWeight, c.Keys, c.KeyPrefix = ProtoMeta, 5, 0, 4000, "mgmeta:"
		}},
		{"binary multiget", func(c *Config) {
			c.Proto, c.MultiGet, c.SetWeight, c.Keys, c.KeyPrefix = ProtoBinary, 5, 0, 4000, "mgbin:"
			c.ValueMin, c.ValueMax = 60, 3000
		}},
		{"binary multiget with sets", func(c *Config) { c.Proto, c.MultiGet, c.Rate = ProtoBinary, 3, 4000 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.change(&cfg)
			if cfg.SetWeight == 0 {
				// Prefill only the first half of the keys, from another run.
				half := cfg
				half.Keys, half.Duration, half.Requests, half.Warmup, half.GetWeight = cfg.Keys/2, 0, 1, 0, 0
				half.SetWeight = 1
				_, err := Run(context.Background(), half)
				require.NoError(t, err)
				cfg.Prefill = false
			}
			res, err := Run(context.Background(), cfg)
			require.NoError(t, err)
			checkResult(t, res)
			if cfg.SetWeight == 0 {
				require.Positive(t, res.Ops["get"].Misses)
				// Hits and misses count keys: MultiGet per request.
				g := res.Ops["get"]
				require.Equal(t, g.Requests*int64(cfg.MultiGet), g.Hits+g.Misses)
				require.InDelta(t, 0.5, float64(g.Hits)/float64(g.Hits+g.Misses), 0.1)
			}
			if cfg.Requests > 0 {
				require.Equal(t, cfg.Requests, res.Requests)
			}
			if cfg.Rate > 0 {
				require.NotNil(t, res.SendLag)
				// Loose: the machine may be busy, but not by a factor of two.
				require.InDelta(t, cfg.Rate, res.Throughput, cfg.Rate/2)
			}
			require.NotNil(t, res.ServerCPU)
			// -pid also measures the server's memory.
			require.NotNil(t, res.ServerRSS, res.Note)
			require.Positive(t, res.ServerRSS.IdleBytes)
			require.Positive(t, res.ServerRSS.ConnectedBytes)
			if cfg.Prefill {
				require.Positive(t, res.ServerRSS.PrefillBytes)
			}
		})
	}
}

// TestOpenLoopPacing: at a low rate the latency open loop reports is the
// round trip, not the client's own pacing. Workers that waited for their
// next send in nanosleep held their processors, so with as many workers
// as processors a reply that had arrived waited for the end of the next
// sleep, the next send on another connection: p50 came out just above the
// spacing of sends (500 µs here) against any server, instead of ~0.1 ms.
func TestOpenLoopPacing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	srv := startTandem(t, tandemSpec(t))
	cfg := Config{
		Servers: []string{srv.addr}, Proto: ProtoText, Conns: 4, Pipeline: 1, SetWeight: 1, GetWeight: 10,
		MultiGet: 1, Keys: 1000, KeyPrefix: "pace:", Dist: "uniform", ValueMin: 100, ValueMax: 100,
		Rate: 2000, Duration: 2 * time.Second, Warmup: 300 * time.Millisecond, Prefill: true, VerifyFrac: 0.5, Seed: 1,
	}
	res, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	checkResult(t, res)
	spacing := 1e6 / cfg.Rate // µs between two sends, on any connections
	all := res.Ops["all"].Latency
	t.Logf("p50 %.0f µs, p99 %.0f µs, send lag p50 %.0f µs (sends %.0f µs apart)",
		all.P50, all.P99, res.SendLag.P50, spacing)
	require.Less(t, all.P50, 0.8*spacing, "the median includes the client's pacing")
}

// TestSeriesAndProgress: one line of progress a second, the warm-up's
// marked as such, and a series of whole seconds that covers the measured
// window and nothing else.
func TestSeriesAndProgress(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	srv := startTandem(t, tandemSpec(t))
	var progress bytes.Buffer
	cfg := Config{
		Servers: []string{srv.addr}, Proto: ProtoText, Conns: 2, Pipeline: 2, SetWeight: 1, GetWeight: 1,
		MultiGet: 1, Keys: 1000, KeyPrefix: "series:", Dist: "uniform", ValueMin: 50, ValueMax: 50,
		Duration: 2 * time.Second, Warmup: 300 * time.Millisecond, Prefill: true, VerifyFrac: 0.5,
		Progress: &progress,
	}
	res, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	checkResult(t, res)
	require.Len(t, res.Series, 2, "a 2 s window: two seconds")
	var ops int64
	for i, s := range res.Series {
		require.False(t, s.Warmup)
		require.InDelta(t, float64(i+1), s.T, 0.25, "second %d ends %.2f s into the window", i, s.T)
		require.InDelta(t, 1.0, s.Elapsed, 0.25)
		require.Positive(t, s.Ops)
		require.Positive(t, s.P50)
		ops += s.Ops
	}
	// The series counts what completed inside the window, the result what
	// was sent inside it: they differ by the requests in flight at its
	// edges, where a leaked warm-up (15% of the run) would show.
	require.InDelta(t, float64(res.Requests), float64(ops), 0.05*float64(res.Requests))
	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	require.Len(t, lines, 3, progress.String())
	require.Contains(t, lines[0], " warm ")
	require.Contains(t, lines[1], " run ")
	require.Contains(t, lines[2], " run ")
}

// TestErrorsByKind: a server that cannot store the values answers each
// protocol's way, and the errors are counted by kind.
func TestErrorsByKind(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	srv := startTandem(t, tandemSpec(t, "-I 1k"))
	for _, tc := range []struct {
		proto Protocol
		kind  string
	}{
		{ProtoText, "server_error"},
		{ProtoMeta, "server_error"},
		{ProtoBinary, "status_0x0003"}, // E2BIG
	} {
		t.Run(tc.kind, func(t *testing.T) {
			cfg := Config{
				Servers: []string{srv.addr}, Proto: tc.proto, Conns: 1, Pipeline: 4, SetWeight: 1,
				MultiGet: 1, Keys: 100, KeyPrefix: "big:", Dist: "uniform", ValueMin: 2000, ValueMax: 2000,
				Requests: 200,
			}
			res, err := Run(context.Background(), cfg)
			require.NoError(t, err)
			require.Equal(t, int64(200), res.Requests)
			require.Equal(t, map[string]int64{tc.kind: 200}, res.Errors)
			require.Equal(t, int64(200), res.ErrorTotal)
		})
	}
}

func TestMedian(t *testing.T) {
	of := func(vs ...float64) []*Result {
		rs := make([]*Result, len(vs))
		for i, v := range vs {
			rs[i] = &Result{Throughput: v}
		}
		return rs
	}
	tp := func(r *Result) float64 { return r.Throughput }
	require.Zero(t, median(nil, tp))
	require.Equal(t, 7.0, median(of(7), tp))
	require.Equal(t, 5.0, median(of(9, 1, 5), tp))
	require.Equal(t, 4.0, median(of(9, 1, 3, 5), tp))
}

func TestClientBound(t *testing.T) {
	cores := float64(runtime.NumCPU())
	tests := []struct {
		name   string
		client float64
		server *CPU
		want   bool
	}{
		{"client alone fills the machine", 0.95 * cores, nil, true},
		{"client light, server unknown", 0.5 * cores, nil, false},
		{"together full, client the larger", 0.5 * cores, &CPU{Cores: 0.45 * cores}, true},
		{"together full, server the larger", 0.4 * cores, &CPU{Cores: 0.55 * cores}, false},
		{"room left", 0.3 * cores, &CPU{Cores: 0.3 * cores}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, clientBound(tt.client, tt.server))
		})
	}
}

// TestExptimeExpired sets every key with an exptime that is a unix time in
// the past (beyond 30 days, so absolute): each protocol must carry it, and
// then every get misses.
func TestExptimeExpired(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server")
	}
	srv := startTandem(t, tandemSpec(t))
	for _, proto := range []Protocol{ProtoText, ProtoMeta, ProtoBinary} {
		t.Run(proto.String(), func(t *testing.T) {
			cfg := Config{
				Servers: []string{srv.addr}, Proto: proto, Conns: 2, Pipeline: 4, SetWeight: 1, GetWeight: 4,
				MultiGet: 1, Keys: 300, KeyPrefix: "exp:" + proto.String() + ":", Dist: "uniform",
				ValueMin: 100, ValueMax: 100, Requests: 1000, Prefill: true, VerifyFrac: 1,
				Exptime: 60*60*24*30 + 1,
			}
			res, err := Run(context.Background(), cfg)
			require.NoError(t, err)
			require.Zero(t, res.ErrorTotal, "%v", res.Errors)
			require.Zero(t, res.Ops["get"].Hits)
			require.Positive(t, res.Ops["get"].Misses)
			require.Contains(t, res.Workload, "exptime=2592001")
		})
	}
}

func checkResult(t *testing.T, res *Result) {
	t.Helper()
	require.Positive(t, res.Requests)
	require.Zero(t, res.ErrorTotal, "%v", res.Errors)
	require.Zero(t, res.VerifyFailed)
	require.Positive(t, res.VerifyChecked)
	require.Positive(t, res.Ops["get"].Hits)
	for _, name := range []string{"get", "set", "all"} {
		if res.Ops[name].Requests == 0 {
			continue
		}
		l := res.Ops[name].Latency
		require.Positive(t, l.P50, name)
		require.LessOrEqual(t, l.P50, l.P90, name)
		require.LessOrEqual(t, l.P90, l.P99, name)
		require.LessOrEqual(t, l.P99, l.P999, name)
		require.LessOrEqual(t, l.P999, l.Max, name)
	}
}

func TestReplicate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	spec := tandemSpec(t)
	a, b := startTandem(t, spec), startTandem(t, spec)
	cfg := Config{
		Servers: []string{a.addr, b.addr}, Proto: ProtoText, Conns: 2, Pipeline: 4, SetWeight: 1, GetWeight: 1,
		MultiGet: 1, Keys: 500, KeyPrefix: "rep:", Dist: "uniform", ValueMin: 100, ValueMax: 100,
		Duration: 400 * time.Millisecond, Prefill: true, VerifyFrac: 1,
	}
	res, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	checkResult(t, res)
	// Every key was written to both: reading the second server alone
	// must hit everything and verify.
	cfg.Servers, cfg.SetWeight, cfg.Prefill = []string{b.addr}, 0, false
	res, err = Run(context.Background(), cfg)
	require.NoError(t, err)
	checkResult(t, res)
	require.Zero(t, res.Ops["get"].Misses)
}

func TestCompare(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	spec := tandemSpec(t)
	other := spec
	other.Name = "again"
	cfg := Config{
		Proto: ProtoText, Conns: 2, Pipeline: 4, SetWeight: 1, GetWeight: 4, MultiGet: 1, Keys: 5000,
		KeyPrefix: "cmp:", Dist: "uniform", ValueMin: 100, ValueMax: 100, Duration: 300 * time.Millisecond,
		Prefill: true, VerifyFrac: 0.5,
	}
	var log bytes.Buffer
	c, err := compare(context.Background(), cfg, []serverSpec{spec, other}, 2, 5*time.Second, &log)
	require.NoError(t, err)
	require.Len(t, c.Rows, 2)
	require.Len(t, c.Runs, 4)
	// Rounds alternate which server goes first.
	var order []string
	for _, r := range c.Runs {
		order = append(order, fmt.Sprintf("%s/%d", r.Name, r.Round))
	}
	require.Equal(t, []string{"tandem/1", "again/1", "again/2", "tandem/2"}, order)
	// A row is the median of its server's rounds (two: their mean).
	for _, row := range c.Rows {
		var sum float64
		for _, r := range c.Runs {
			if r.Name == row.Name {
				sum += r.Throughput
			}
		}
		require.InDelta(t, sum/2, row.Throughput, 1e-6, row.Name)
	}
	for _, r := range c.Runs {
		checkResult(t, r)
		require.NotNil(t, r.ServerCPU)
		require.Positive(t, r.ReadyMS)
		require.NotNil(t, r.ServerRSS, r.Note)
	}
	for _, row := range c.Rows {
		require.Positive(t, row.ReadyMS)
		require.Less(t, row.ReadyMS, 5000.0)
		require.Positive(t, row.IdleRSS)
		// 5000 values of 100 bytes: the growth is real but well under a
		// page per key.
		require.Positive(t, row.RSSPerKey)
		require.Less(t, row.RSSPerKey, 4096.0)
	}
	var out bytes.Buffer
	printComparison(&out, c)
	require.True(t, strings.Contains(out.String(), "again"), out.String())
	require.Contains(t, out.String(), "RSS per key")
	t.Log("\n" + out.String())
}

// TestHotPathAllocs guards the per-request code: encoders, parsers and the
// value generator and check allocate nothing once buffers have grown.
func TestHotPathAllocs(t *testing.T) {
	text := []byte("VALUE bench:1 5 3\r\nabc\r\n")
	meta := []byte("VA 3 f7 kbench:1\r\nabc\r\n")
	bin := binaryResponse(binOpGet, 0, []byte{0, 0, 0, 7}, nil, []byte("abc"), 4)
	key := []byte("bench:1")
	h := mix(key, 7)
	value := appendValue(nil, key, 7, h, 100)
	dst := make([]byte, 0, 4096)
	scratch := make([]byte, 0, 4096)
	var r Reply
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = ParseTextReply(text, &r)
		_, _ = ParseMetaReply(meta, &r)
		_, _ = ParseBinaryReply(bin, &r, maxValue)
		d := appendTextGet(dst[:0], key, key)
		d = appendTextSet(d, key, 1, 0, value)
		d = appendMetaGet(d, key)
		d = appendMetaSet(d, key, 1, 0, value)
		d = appendBinaryGet(d, key, 1)
		_ = appendBinarySet(d, key, 1, 0, value, 2)
		scratch = appendValue(scratch[:0], key, 7, h, 100)
		if !verifyValue(key, value, valueFlags(h), 100, 100, &scratch) {
			t.Fatal("value does not verify")
		}
	})
	require.Zero(t, allocs)
}

func TestParseMatrix(t *testing.T) {
	m, err := parseMatrix("text/p16/1:10, binary/p1/1:1/m4")
	require.NoError(t, err)
	require.Equal(t, []matrixEntry{
		{Spec: "text/p16/1:10", Proto: ProtoText, Pipeline: 16, SetWeight: 1, GetWeight: 10},
		{Spec: "binary/p1/1:1/m4", Proto: ProtoBinary, Pipeline: 1, SetWeight: 1, GetWeight: 1, MultiGet: 4},
	}, m)
	for _, bad := range []string{"", "text", "text/p16", "udp/p1/1:1", "text/16/1:1", "text/p0/1:1",
		"text/p1/1", "text/p1/1:1/4", "text/p1/1:1/m0", "text/p1/1:1/m2/x"} {
		_, err := parseMatrix(bad)
		require.Error(t, err, bad)
	}
	var out bytes.Buffer
	_, _, err = parseFlags([]string{"-matrix", "text/p1/1:1"}, &out)
	require.Error(t, err, "-matrix without -compare")
}

// TestMatrix runs two tiny workloads through the command line and checks
// the tables and the JSON.
func TestMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	spec := tandemSpec(t)
	js := filepath.Join(t.TempDir(), "m.json")
	var stdout, stderr bytes.Buffer
	code := run([]string{"-compare", "tandem=" + strings.Join(spec.Args, " "),
		"-matrix", "text/p4/1:4,binary/p1/1:1/m3", "-rounds", "1", "-duration", "200ms", "-warmup", "50ms",
		"-conns", "2", "-keys", "500", "-verify", "1", "-quiet", "-json", js}, &stdout, &stderr)
	require.Zero(t, code, stderr.String())
	s := stdout.String()
	require.Equal(t, 2, strings.Count(s, "workload: "), s)
	require.Contains(t, s, "summary")
	require.Contains(t, s, "binary/p1/1:1/m3")
	b, err := os.ReadFile(js)
	require.NoError(t, err)
	var m Matrix
	require.NoError(t, json.Unmarshal(b, &m))
	require.Len(t, m.Workloads, 2)
	require.Contains(t, m.Workloads[1].Workload, "proto=binary conns=2 goroutines=2 pipeline=1 ratio=1:1 multiget=3")
	for _, c := range m.Workloads {
		require.Len(t, c.Runs, 1)
		checkResult(t, c.Runs[0])
	}
	t.Log("\n" + s)
}
