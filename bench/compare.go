package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverSpec is one -compare server: a name and a command line in which
// {port} stands for the port to listen on.
type serverSpec struct {
	Name string
	Args []string
}

// parseSpec parses "name=command args...". The command is split on spaces:
// no shell quoting.
func parseSpec(s string) (serverSpec, error) {
	name, cmd, ok := strings.Cut(s, "=")
	args := strings.Fields(cmd)
	if !ok || name == "" || len(args) == 0 {
		return serverSpec{}, fmt.Errorf("-compare %q: want name=command", s)
	}
	if !strings.Contains(cmd, "{port}") {
		return serverSpec{}, fmt.Errorf("-compare %q: the command needs {port}", s)
	}
	return serverSpec{Name: name, Args: args}, nil
}

// server is a server process the tool started.
type server struct {
	cmd    *exec.Cmd
	addr   string
	output bytes.Buffer  // stdout and stderr; read only after exited
	exited chan struct{} // closed once the process has been waited for
	// readyIn is the time from just before exec to the first answered
	// "version", to within readyPoll.
	readyIn time.Duration
}

// readyPoll is the wait between attempts to reach a starting server: a
// refused connect costs microseconds, and start-up times are milliseconds.
const readyPoll = time.Millisecond

// startServer starts spec on a free port and waits until it answers
// "version", or fails after readyTimeout.
func startServer(spec serverSpec, readyTimeout time.Duration) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := make([]string, len(spec.Args))
	for i, a := range spec.Args {
		args[i] = strings.ReplaceAll(a, "{port}", strconv.Itoa(port))
	}
	s := &server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = &s.output, &s.output
	// Should the tool die without stopping it, the kernel kills the server.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.Name, err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	deadline := time.Now().Add(readyTimeout)
	for {
		if ready(s.addr) {
			s.readyIn = time.Since(start)
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("%s exited before it was ready: %s", spec.Name, s.output.String())
		case <-time.After(readyPoll):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s not ready after %v", spec.Name, readyTimeout)
		}
	}
}

// ready reports whether a server answers "version" at addr.
func ready(addr string) bool {
	nc, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(time.Second))
	if _, err := nc.Write([]byte("version\r\n")); err != nil {
		return false
	}
	l, err := bufio.NewReader(nc).ReadString('\n')
	return err == nil && strings.HasPrefix(l, "VERSION ")
}

// stop kills the server and waits for it to exit.
func (s *server) stop() {
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// freePort asks the kernel for a port that is free right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// CompareRow is one server's medians over the rounds.
type CompareRow struct {
	Name        string  `json:"name"`
	Throughput  float64 `json:"throughput_rps"`
	P50         float64 `json:"p50_us"`
	P99         float64 `json:"p99_us"`
	CPUPerM     float64 `json:"server_cpu_s_per_million_requests"`
	Errors      int64   `json:"errors"` // summed over the rounds
	ClientBound int     `json:"client_bound_rounds"`
	OtherCores  float64 `json:"other_cores"` // median of the runs' OtherCores
	ReadyMS     float64 `json:"ready_ms"`    // exec to first answered "version"
	IdleRSS     float64 `json:"idle_rss_bytes"`
	// RSSPerKey is (RSS after prefill - idle RSS) / keys, in bytes; 0
	// without a prefill.
	RSSPerKey float64 `json:"rss_per_key_bytes"`
}

// Comparison is compare mode's result.
type Comparison struct {
	Spec     string       `json:"matrix_spec,omitempty"` // the -matrix workload, if any
	Workload string       `json:"workload"`
	Rounds   int          `json:"rounds"`
	Rows     []CompareRow `json:"rows"`
	Runs     []*Result    `json:"runs"`
}

// compare runs cfg against each server in rounds; round r starts at the
// server r places down the list, so that no server always goes first.
// Each run gets a fresh server process, killed after it.
func compare(ctx context.Context, cfg Config, specs []serverSpec, rounds int, readyTimeout time.Duration,
	log io.Writer) (*Comparison, error) {
	out := &Comparison{Workload: cfg.String(), Rounds: rounds}
	byName := map[string][]*Result{}
	for r := 0; r < rounds; r++ {
		for i := range specs {
			spec := specs[(i+r)%len(specs)]
			fmt.Fprintf(log, "round %d/%d: %s\n", r+1, rounds, spec.Name)
			srv, err := startServer(spec, readyTimeout)
			if err != nil {
				return nil, err
			}
			c := cfg
			c.Servers = []string{srv.addr}
			c.ServerPID = srv.cmd.Process.Pid
			res, err := Run(ctx, c)
			srv.stop()
			if err != nil {
				return nil, fmt.Errorf("%s round %d: %w", spec.Name, r+1, err)
			}
			res.Name, res.Round = spec.Name, r+1
			res.ReadyMS = float64(srv.readyIn) / float64(time.Millisecond)
			fmt.Fprintf(log, "  %.0f req/s  p50 %s  p99 %s  errors %d\n", res.Throughput,
				fmtUS(res.Ops["all"].Latency.P50), fmtUS(res.Ops["all"].Latency.P99), res.ErrorTotal)
			out.Runs = append(out.Runs, res)
			byName[spec.Name] = append(byName[spec.Name], res)
		}
	}
	for _, spec := range specs {
		rs := byName[spec.Name]
		row := CompareRow{Name: spec.Name}
		row.Throughput = median(rs, func(r *Result) float64 { return r.Throughput })
		row.P50 = median(rs, func(r *Result) float64 { return r.Ops["all"].Latency.P50 })
		row.P99 = median(rs, func(r *Result) float64 { return r.Ops["all"].Latency.P99 })
		row.CPUPerM = median(rs, func(r *Result) float64 {
			if r.ServerCPU == nil {
				return 0
			}
			return r.ServerCPU.PerMillion
		})
		row.OtherCores = median(rs, func(r *Result) float64 { return r.OtherCores })
		row.ReadyMS = median(rs, func(r *Result) float64 { return r.ReadyMS })
		row.IdleRSS = median(rs, func(r *Result) float64 {
			if r.ServerRSS == nil {
				return 0
			}
			return float64(r.ServerRSS.IdleBytes)
		})
		row.RSSPerKey = median(rs, func(r *Result) float64 {
			if r.ServerRSS == nil {
				return 0
			}
			return r.ServerRSS.PerKey
		})
		for _, r := range rs {
			row.Errors += r.ErrorTotal
			if r.ClientBound {
				row.ClientBound++
			}
		}
		out.Rows = append(out.Rows, row)
	}
	if len(out.Rows) == 0 {
		return nil, errors.New("no servers to compare")
	}
	return out, nil
}

func median(rs []*Result, f func(*Result) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// printComparison writes the table of medians, each with its ratio to the
// first server's.
func printComparison(w io.Writer, c *Comparison) {
	fmt.Fprintf(w, "workload: %s\nmedians of %d rounds; ratio = this server / %s\n", c.Workload, c.Rounds,
		c.Rows[0].Name)
	fmt.Fprintf(w, "%-12s %12s %6s %9s %6s %9s %6s %14s %6s %7s %12s %11s %8s %6s %11s %6s %11s %6s\n",
		"server", "req/s", "ratio", "p50", "ratio", "p99", "ratio", "srv cpu s/Mreq", "ratio", "errors",
		"client-bound", "other load", "ready ms", "ratio", "idle RSS MB", "ratio", "RSS per key", "ratio")
	base := c.Rows[0]
	for _, r := range c.Rows {
		perKey := "-"
		if r.RSSPerKey != 0 {
			perKey = strconv.FormatFloat(r.RSSPerKey, 'f', 0, 64) + " B"
		}
		fmt.Fprintf(w, "%-12s %12.0f %6s %9s %6s %9s %6s %14.3f %6s %7d %10d/%d %11.2f %8.1f %6s %11.1f %6s %11s %6s\n",
			r.Name, r.Throughput, ratio(r.Throughput, base.Throughput),
			fmtUS(r.P50), ratio(r.P50, base.P50),
			fmtUS(r.P99), ratio(r.P99, base.P99),
			r.CPUPerM, ratio(r.CPUPerM, base.CPUPerM),
			r.Errors, r.ClientBound, c.Rounds, r.OtherCores,
			r.ReadyMS, ratio(r.ReadyMS, base.ReadyMS),
			r.IdleRSS/(1<<20), ratio(r.IdleRSS, base.IdleRSS),
			perKey, ratio(r.RSSPerKey, base.RSSPerKey))
	}
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64)
}
