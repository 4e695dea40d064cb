// Command bench is a load generator for memcached-compatible servers: text,
// meta and binary protocols, closed or open loop, HDR latency histograms,
// a correctness sample, server and client CPU, and a compare mode that runs
// the same workload against several servers it starts itself. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "bench: cpu profile:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()

	var out any
	if len(o.matrix) > 0 {
		m, err := runMatrix(ctx, cfg, o.matrix, o.compare, o.rounds, o.readyTimeout, stdout, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		printMatrixSummary(stdout, m)
		out = m
	} else if len(o.compare) > 0 {
		c, err := compare(ctx, cfg, o.compare, o.rounds, o.readyTimeout, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		printComparison(stdout, c)
		out = c
	} else {
		res, err := Run(ctx, cfg)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		printResult(stdout, res)
		out = res
	}
	if o.json != "" {
		b, err := json.MarshalIndent(out, "", "  ")
		if err == nil {
			err = os.WriteFile(o.json, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "bench: writing json:", err)
			return 1
		}
	}
	return 0
}

// options are the flags that are not part of the workload.
type options struct {
	json         string
	compare      []serverSpec
	matrix       []matrixEntry
	rounds       int
	readyTimeout time.Duration
	cpuprofile   string
}

func parseFlags(args []string, stderr io.Writer) (Config, options, error) {
	var cfg Config
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "127.0.0.1:11211", "server `host:port`")
	replicate := fs.String("replicate", "", "comma-separated `addrs`: reads to the first, writes to all (replaces -server)")
	proto := fs.String("proto", "text", "protocol: text (get/set), meta (mg/ms) or binary (GET/SET)")
	fs.IntVar(&cfg.Conns, "conns", 10, "connections (one socket per server each)")
	fs.IntVar(&cfg.Goroutines, "goroutines", 0, "client goroutines sharing the connections (0: one per connection)")
	fs.IntVar(&cfg.Pipeline, "pipeline", 1, "requests in flight per connection")
	ratio := fs.String("ratio", "1:10", "set:get `ratio`")
	fs.IntVar(&cfg.MultiGet, "multiget", 1, "keys per get (text: one get; meta: mg each and mn; binary: GETKQ each and NOOP)")
	fs.IntVar(&cfg.Keys, "keys", 100000, "key space size")
	fs.StringVar(&cfg.KeyPrefix, "key-prefix", "bench:", "key prefix")
	fs.StringVar(&cfg.Dist, "dist", "uniform", "key distribution: uniform, zipf or sequential")
	fs.Float64Var(&cfg.ZipfS, "zipf-s", 1.1, "zipf exponent (> 1; larger is more skewed)")
	value := fs.String("value", "100", "value size in bytes, `N` or MIN-MAX")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured duration")
	fs.Int64Var(&cfg.Requests, "requests", 0, "measured requests; overrides -duration when > 0")
	fs.DurationVar(&cfg.Warmup, "warmup", time.Second, "unmeasured warm-up before the measured window")
	fs.BoolVar(&cfg.Prefill, "prefill", true, "set every key once before the warm-up")
	fs.Int64Var(&cfg.Exptime, "exptime", 0, "exptime of every set (seconds, or a unix time beyond 30 days; 0: never)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: requests/s over all connections (0: closed loop)")
	fs.Float64Var(&cfg.VerifyFrac, "verify", 0.05, "fraction of values read that are verified")
	fs.IntVar(&cfg.ServerPID, "pid", 0, "server `pid` whose CPU time and RSS are measured (from /proc)")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "connect, write and reply timeout")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "random seed")
	quiet := fs.Bool("quiet", false, "no progress line")
	fs.StringVar(&o.json, "json", "", "write the full result to `file` as JSON")
	fs.Func("compare", "`name=command`: start and measure this server; {port} in the command is "+
		"replaced by a free port; repeat for each server", func(s string) error {
		spec, err := parseSpec(s)
		o.compare = append(o.compare, spec)
		return err
	})
	matrix := fs.String("matrix", "", "compare mode: comma-separated `workloads` proto/pN/SET:GET[/mK] run in turn, "+
		"e.g. text/p16/1:10,binary/p1/1:1")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write this client's CPU profile to `file`")
	fs.IntVar(&o.rounds, "rounds", 3, "compare mode: alternating rounds")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 5*time.Second, "compare mode: how long a server may take to start")
	if err := fs.Parse(args); err != nil {
		return cfg, o, err
	}
	if fs.NArg() > 0 {
		return cfg, o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if cfg.Proto, err = parseProtocol(*proto); err != nil {
		return cfg, o, err
	}
	if cfg.SetWeight, cfg.GetWeight, err = parseRatio(*ratio); err != nil {
		return cfg, o, err
	}
	if cfg.ValueMin, cfg.ValueMax, err = parseRange(*value); err != nil {
		return cfg, o, err
	}
	cfg.Servers = []string{*server}
	if *replicate != "" {
		cfg.Servers = strings.Split(*replicate, ",")
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	if len(o.compare) > 0 && (*replicate != "" || cfg.ServerPID != 0) {
		return cfg, o, errors.New("-compare starts its own servers: no -replicate or -pid")
	}
	if *matrix != "" {
		if len(o.compare) == 0 {
			return cfg, o, errors.New("-matrix needs -compare servers")
		}
		if o.matrix, err = parseMatrix(*matrix); err != nil {
			return cfg, o, err
		}
	}
	if o.rounds < 1 {
		return cfg, o, errors.New("-rounds must be at least 1")
	}
	return cfg, o, nil
}

// parseRatio parses "S:G".
func parseRatio(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, ":")
	x, err1 := strconv.Atoi(a)
	y, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || x < 0 || y < 0 || x+y == 0 {
		return 0, 0, fmt.Errorf("-ratio %q: want SET:GET, e.g. 1:10", s)
	}
	return x, y, nil
}

// parseRange parses "N" or "MIN-MAX".
func parseRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || lo < 1 || hi < lo {
		return 0, 0, fmt.Errorf("-value %q: want N or MIN-MAX", s)
	}
	return lo, hi, nil
}
