package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// matrixEntry is one workload of -matrix: "proto/pN/S:G", optionally
// followed by "/mK" for K keys per get. The other flags give the rest.
type matrixEntry struct {
	Spec                 string
	Proto                Protocol
	Pipeline             int
	SetWeight, GetWeight int
	MultiGet             int // 0: the -multiget flag's
}

// parseMatrix parses -matrix's comma-separated workloads.
func parseMatrix(s string) ([]matrixEntry, error) {
	var out []matrixEntry
	for _, spec := range strings.Split(s, ",") {
		spec = strings.TrimSpace(spec)
		bad := fmt.Errorf("-matrix workload %q: want proto/pN/SET:GET[/mK], e.g. text/p16/1:10", spec)
		f := strings.Split(spec, "/")
		if len(f) != 3 && len(f) != 4 {
			return nil, bad
		}
		e := matrixEntry{Spec: spec}
		var err error
		if e.Proto, err = parseProtocol(f[0]); err != nil {
			return nil, bad
		}
		p, ok := strings.CutPrefix(f[1], "p")
		if e.Pipeline, err = strconv.Atoi(p); !ok || err != nil || e.Pipeline < 1 {
			return nil, bad
		}
		if e.SetWeight, e.GetWeight, err = parseRatio(f[2]); err != nil {
			return nil, bad
		}
		if len(f) == 4 {
			m, ok := strings.CutPrefix(f[3], "m")
			if e.MultiGet, err = strconv.Atoi(m); !ok || err != nil || e.MultiGet < 1 {
				return nil, bad
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// apply returns cfg with the entry's settings.
func (e matrixEntry) apply(cfg Config) Config {
	cfg.Proto, cfg.Pipeline, cfg.SetWeight, cfg.GetWeight = e.Proto, e.Pipeline, e.SetWeight, e.GetWeight
	if e.MultiGet > 0 {
		cfg.MultiGet = e.MultiGet
	}
	return cfg
}

// Matrix is -matrix's result: a comparison per workload, in order.
type Matrix struct {
	Workloads []*Comparison `json:"workloads"`
}

// runMatrix runs compare for each workload in turn, printing each
// comparison to out as it finishes.
func runMatrix(ctx context.Context, cfg Config, entries []matrixEntry, specs []serverSpec, rounds int,
	readyTimeout time.Duration, out, log io.Writer) (*Matrix, error) {
	m := &Matrix{}
	for i, e := range entries {
		fmt.Fprintf(log, "matrix %d/%d: %s\n", i+1, len(entries), e.Spec)
		c, err := compare(ctx, e.apply(cfg), specs, rounds, readyTimeout, log)
		if err != nil {
			return nil, fmt.Errorf("matrix %s: %w", e.Spec, err)
		}
		c.Spec = e.Spec
		printComparison(out, c)
		fmt.Fprintln(out)
		m.Workloads = append(m.Workloads, c)
	}
	return m, nil
}

// printMatrixSummary writes one line per workload and server: the compare
// tables' main columns, ratios to each workload's first server.
func printMatrixSummary(w io.Writer, m *Matrix) {
	fmt.Fprintf(w, "summary: medians; ratio = this server / the first, per workload\n")
	fmt.Fprintf(w, "%-22s %-12s %12s %6s %9s %9s %6s %14s %6s %7s\n", "workload", "server", "req/s", "ratio",
		"p50", "p99", "ratio", "srv cpu s/Mreq", "ratio", "errors")
	for _, c := range m.Workloads {
		base := c.Rows[0]
		for _, r := range c.Rows {
			fmt.Fprintf(w, "%-22s %-12s %12.0f %6s %9s %9s %6s %14.3f %6s %7d\n", c.Spec, r.Name,
				r.Throughput, ratio(r.Throughput, base.Throughput), fmtUS(r.P50), fmtUS(r.P99),
				ratio(r.P99, base.P99), r.CPUPerM, ratio(r.CPUPerM, base.CPUPerM), r.Errors)
		}
	}
}
