package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in nanoseconds, from 1 ns to histMax, with three
// significant digits: 0.1% resolution at any magnitude, the HDR default.
const (
	histMin  = 1
	histMax  = int64(60 * time.Second) // a reply later than this is clamped to it
	histSigs = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSigs) }

// record adds one latency, clamping it into the histogram's range.
func record(h *hdrhistogram.Histogram, d time.Duration) {
	v := int64(d)
	if v < histMin {
		v = histMin
	} else if v > histMax {
		v = histMax
	}
	_ = h.RecordValue(v) // cannot fail: v is in range
}

// Latency is a latency distribution's summary, in microseconds.
type Latency struct {
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p99_9_us"`
	P9999 float64 `json:"p99_99_us"`
	Max   float64 `json:"max_us"`
	Mean  float64 `json:"mean_us"`
}

func summarize(h *hdrhistogram.Histogram) Latency {
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	return Latency{
		P50:   us(h.ValueAtPercentile(50)),
		P90:   us(h.ValueAtPercentile(90)),
		P99:   us(h.ValueAtPercentile(99)),
		P999:  us(h.ValueAtPercentile(99.9)),
		P9999: us(h.ValueAtPercentile(99.99)),
		Max:   us(h.Max()),
		Mean:  h.Mean() / 1e3,
	}
}

// OpResult is what one operation type (get, set, or all of them) measured.
type OpResult struct {
	Requests   int64   `json:"requests"`
	Throughput float64 `json:"throughput_rps"`
	// Hits and Misses count keys, not requests: a multi-get of N keys adds N.
	Hits    int64   `json:"hits,omitempty"`
	Misses  int64   `json:"misses,omitempty"`
	Latency Latency `json:"latency"`
}

// Second is one entry of the per-second series: the interval since the
// previous entry.
type Second struct {
	T       float64 `json:"t_s"` // end of the interval, seconds since measuring began
	Ops     int64   `json:"ops"`
	Rate    float64 `json:"ops_per_s"`
	Errors  int64   `json:"errors"`
	P50     float64 `json:"p50_us"`
	P99     float64 `json:"p99_us"`
	Max     float64 `json:"max_us"`
	Warmup  bool    `json:"warmup,omitempty"`
	Elapsed float64 `json:"-"`
}

// CPU is the processor time a process used during the measured window.
type CPU struct {
	Seconds float64 `json:"seconds"`
	// Cores is Seconds divided by the window's wall time: 1.0 is one core busy.
	Cores float64 `json:"cores"`
	// PerMillion is the CPU seconds spent per million requests.
	PerMillion float64 `json:"cpu_s_per_million_requests"`
}

// Result is the outcome of one run.
type Result struct {
	Name       string               `json:"name,omitempty"` // the server's name in compare mode
	Round      int                  `json:"round,omitempty"`
	Workload   string               `json:"workload"`
	Elapsed    float64              `json:"elapsed_s"` // the measured window
	Requests   int64                `json:"requests"`
	Throughput float64              `json:"throughput_rps"`
	Ops        map[string]*OpResult `json:"ops"` // "get", "set", "all"
	Errors     map[string]int64     `json:"errors"`
	ErrorTotal int64                `json:"error_total"`
	// VerifyChecked counts the read values checked against their key and
	// version; a failed check is also an error of kind "verify".
	VerifyChecked int64 `json:"verify_checked"`
	VerifyFailed  int64 `json:"verify_failed"`
	// Unsent counts open-loop requests whose intended time fell in the window
	// but that were never sent: the client or server could not keep the rate.
	Unsent     int64   `json:"unsent,omitempty"`
	TargetRate float64 `json:"target_rate_rps,omitempty"`
	// SendLag (open loop) is how late requests were sent after their
	// scheduled time; it is part of their latency. A large lag means the
	// client, or a stalled connection, held requests back.
	SendLag   *Latency `json:"send_lag,omitempty"`
	Series    []Second `json:"series"`
	ServerCPU *CPU     `json:"server_cpu,omitempty"`
	// ServerRSS (-pid or compare mode) is the server's resident memory.
	ServerRSS *RSS `json:"server_rss,omitempty"`
	// ReadyMS (compare mode) is how long the server took from exec to its
	// first answer to "version", in milliseconds.
	ReadyMS   float64 `json:"ready_ms,omitempty"`
	ClientCPU CPU     `json:"client_cpu"`
	// OtherCores is the machine's busy CPU during the window not used by
	// this client or the measured server, in cores: other load that makes
	// the run noisy. Without -pid it includes the server.
	OtherCores float64 `json:"other_cores"`
	// ClientBound is set when the client, not the server, may have limited
	// the run: see clientBound.
	ClientBound bool   `json:"client_bound"`
	Note        string `json:"note,omitempty"`
}

// RSS is a server's resident memory (VmRSS) at three points of a run.
type RSS struct {
	// IdleBytes is read before the run connects: right after start in
	// compare mode.
	IdleBytes int64 `json:"idle_bytes"`
	// ConnectedBytes is read once the run's connections are open.
	ConnectedBytes int64 `json:"connected_bytes"`
	// PrefillBytes is read after the prefill set every key; 0 without one.
	PrefillBytes int64 `json:"after_prefill_bytes,omitempty"`
	// PerKey is (PrefillBytes - IdleBytes) / keys: the memory an item costs,
	// the connections' buffers included.
	PerKey float64 `json:"per_key_bytes,omitempty"`
}

// procRSS returns a process's resident set size, VmRSS in
// /proc/PID/status.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				return n << 10, nil
			}
		}
		break
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// clientBound flags a run whose client used 90% of the machine's cores, or,
// when the server's CPU is known, whose client and server together used 90%
// of them with the client taking the larger share.
func clientBound(client float64, server *CPU) bool {
	cores := float64(runtime.NumCPU())
	if client >= 0.9*cores {
		return true
	}
	return server != nil && client+server.Cores >= 0.9*cores && client >= server.Cores
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// Linux architecture Go supports (sysconf would need cgo).
const clockTicks = 100

// procCPU returns a process's user+system CPU time from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after its ')' are
	// state (3), ..., utime (14), stime (15).
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// machineBusy returns the CPU time all processes have used since boot,
// from /proc/stat's first line: every field but idle and iowait.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(first)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, errors.New("parsing /proc/stat")
	}
	var busy int64
	// user nice system idle iowait irq softirq steal; guest time is already
	// counted in user.
	for i, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, errors.New("parsing /proc/stat")
		}
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}

// selfCPU returns this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func cpuOf(d time.Duration, wall float64, requests int64) CPU {
	c := CPU{Seconds: d.Seconds()}
	if wall > 0 {
		c.Cores = c.Seconds / wall
	}
	if requests > 0 {
		c.PerMillion = c.Seconds / (float64(requests) / 1e6)
	}
	return c
}

// printResult writes a run's human-readable report.
func printResult(w io.Writer, r *Result) {
	fmt.Fprintf(w, "workload: %s\n", r.Workload)
	fmt.Fprintf(w, "measured %.2fs: %d requests, %.0f req/s", r.Elapsed, r.Requests, r.Throughput)
	if r.TargetRate > 0 {
		fmt.Fprintf(w, " (target %.0f, unsent %d)", r.TargetRate, r.Unsent)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-4s %10s %10s %9s %9s %9s %9s %9s %9s %9s %10s %10s\n",
		"op", "requests", "req/s", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "hits", "misses")
	for _, name := range []string{"get", "set", "all"} {
		o := r.Ops[name]
		if o == nil || o.Requests == 0 {
			continue
		}
		l := o.Latency
		fmt.Fprintf(w, "%-4s %10d %10.0f %9s %9s %9s %9s %9s %9s %9s %10d %10d\n", name, o.Requests, o.Throughput,
			fmtUS(l.P50), fmtUS(l.P90), fmtUS(l.P99), fmtUS(l.P999), fmtUS(l.P9999), fmtUS(l.Max), fmtUS(l.Mean),
			o.Hits, o.Misses)
	}
	if l := r.SendLag; l != nil {
		fmt.Fprintf(w, "send lag (sent - scheduled, included above): p50 %s  p99 %s  max %s\n",
			fmtUS(l.P50), fmtUS(l.P99), fmtUS(l.Max))
	}
	fmt.Fprintf(w, "errors: %d", r.ErrorTotal)
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		fmt.Fprintf(w, " %s=%d", k, r.Errors[k])
	}
	fmt.Fprintf(w, "\nverify: %d checked, %d failed\n", r.VerifyChecked, r.VerifyFailed)
	if r.ServerCPU != nil {
		fmt.Fprintf(w, "server cpu: %.2fs (%.2f cores), %.3f s per million requests\n",
			r.ServerCPU.Seconds, r.ServerCPU.Cores, r.ServerCPU.PerMillion)
	}
	if m := r.ServerRSS; m != nil {
		fmt.Fprintf(w, "server rss: idle %.1f MB, connected %.1f MB", mb(m.IdleBytes), mb(m.ConnectedBytes))
		if m.PrefillBytes > 0 {
			fmt.Fprintf(w, ", after prefill %.1f MB, %.0f bytes per key", mb(m.PrefillBytes), m.PerKey)
		}
		fmt.Fprintln(w)
	}
	if r.ReadyMS > 0 {
		fmt.Fprintf(w, "server ready in %.1f ms\n", r.ReadyMS)
	}
	fmt.Fprintf(w, "client cpu: %.2fs (%.2f cores), %.3f s per million requests",
		r.ClientCPU.Seconds, r.ClientCPU.Cores, r.ClientCPU.PerMillion)
	if r.ClientBound {
		fmt.Fprint(w, "  CLIENT-BOUND: the client may have limited this run")
	}
	fmt.Fprintf(w, "\nother load: %.2f cores of %d", r.OtherCores, runtime.NumCPU())
	if r.ServerCPU == nil {
		fmt.Fprint(w, " (including the server: no -pid)")
	}
	fmt.Fprintln(w)
	if r.Note != "" {
		fmt.Fprintf(w, "note: %s\n", r.Note)
	}
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// fmtUS formats microseconds with a unit, keeping three significant digits.
func fmtUS(us float64) string {
	switch {
	case us >= 1e6:
		return strconv.FormatFloat(us/1e6, 'f', 2, 64) + "s"
	case us >= 1e3:
		return strconv.FormatFloat(us/1e3, 'f', 2, 64) + "ms"
	case us >= 100:
		return strconv.FormatFloat(us, 'f', 0, 64) + "µs"
	}
	return strconv.FormatFloat(us, 'f', 1, 64) + "µs"
}
