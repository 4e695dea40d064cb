package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Config describes one workload. main fills it from the flags.
type Config struct {
	// Servers are host:port addresses. Reads go to the first; writes go to
	// all of them and are done when all have answered (replication mode).
	Servers []string
	Proto   Protocol
	// Conns is the number of logical connections; each has one socket per
	// server. Default 10.
	Conns int
	// Goroutines drive the connections, each a share of them; 0 means one
	// per connection.
	Goroutines int
	// Pipeline is the requests in flight per connection: a goroutine writes
	// a batch of up to Pipeline requests, then reads all their replies.
	Pipeline int
	// SetWeight:GetWeight is the set:get ratio.
	SetWeight, GetWeight int
	// MultiGet is the keys per get: one text get of that many keys, or
	// that many meta mg followed by mn, or binary GETKQ followed by NOOP.
	MultiGet int
	// Keys is the key space size; keys are KeyPrefix + decimal index.
	Keys      int
	KeyPrefix string
	// Dist is "uniform", "zipf" or "sequential". ZipfS (> 1) is the zipf
	// exponent: larger is more skewed; index 0 is the hottest key.
	Dist  string
	ZipfS float64
	// ValueMin..ValueMax is the value size range in bytes; equal for a
	// fixed size.
	ValueMin, ValueMax int
	// Duration of the measured window, unless Requests > 0: then the run
	// measures that many requests.
	Duration time.Duration
	Requests int64
	// Warmup runs the workload unmeasured before the window.
	Warmup time.Duration
	// Prefill sets every key once before the warm-up.
	Prefill bool
	// Exptime is the exptime every set carries (memcached's: seconds up to
	// 30 days, else a unix time; negative is already expired). 0: never.
	Exptime int64
	// Rate > 0 selects open loop: requests per second over all connections,
	// each connection's requests scheduled at fixed intervals, latency
	// measured from the scheduled time. 0 is closed loop.
	Rate float64
	// VerifyFrac is the fraction of values read that are checked.
	VerifyFrac float64
	// ServerPID, when > 0, is the server process whose CPU time and
	// resident memory are measured.
	ServerPID int
	// Timeout bounds every connect, write and reply; default 5s.
	Timeout time.Duration
	// Progress receives a progress line each second; nil for none.
	Progress io.Writer
	Seed     uint64
}

func (c *Config) String() string {
	var b strings.Builder
	g := c.Goroutines
	if g <= 0 || g > c.Conns {
		g = c.Conns
	}
	fmt.Fprintf(&b, "proto=%s conns=%d goroutines=%d pipeline=%d ratio=%d:%d", c.Proto, c.Conns, g,
		c.Pipeline, c.SetWeight, c.GetWeight)
	if c.MultiGet > 1 {
		fmt.Fprintf(&b, " multiget=%d", c.MultiGet)
	}
	fmt.Fprintf(&b, " keys=%d dist=%s value=%d", c.Keys, c.Dist, c.ValueMin)
	if c.ValueMax != c.ValueMin {
		fmt.Fprintf(&b, "-%d", c.ValueMax)
	}
	if c.Exptime != 0 {
		fmt.Fprintf(&b, " exptime=%d", c.Exptime)
	}
	if c.Rate > 0 {
		fmt.Fprintf(&b, " rate=%.0f", c.Rate)
	}
	if len(c.Servers) > 1 {
		fmt.Fprintf(&b, " replicate=%s", strings.Join(c.Servers, ","))
	}
	return b.String()
}

func (c *Config) check() error {
	switch {
	case len(c.Servers) == 0:
		return errors.New("no server address")
	case c.Conns < 1 || c.Pipeline < 1 || c.Keys < 1 || c.MultiGet < 1:
		return errors.New("conns, pipeline, keys and multiget must be at least 1")
	case c.SetWeight < 0 || c.GetWeight < 0 || c.SetWeight+c.GetWeight == 0:
		return errors.New("ratio needs a positive set or get weight")
	case c.Proto == ProtoBinary && (c.Exptime < 0 || c.Exptime > math.MaxUint32):
		return errors.New("the binary protocol's exptime is 0 to 2^32-1")
	case c.ValueMin < 1 || c.ValueMax < c.ValueMin:
		return errors.New("bad value size range")
	case c.Dist == "zipf" && !(c.ZipfS > 1):
		return errors.New("zipf exponent must be > 1")
	case c.Dist != "uniform" && c.Dist != "zipf" && c.Dist != "sequential":
		return fmt.Errorf("unknown distribution %q", c.Dist)
	case c.Duration <= 0 && c.Requests <= 0:
		return errors.New("need a duration or a request count")
	}
	return nil
}

type opKind uint8

const (
	opGet opKind = iota
	opSet
	numOps
)

var opNames = [numOps]string{"get", "set"}

// maxValue bounds a value a reply may carry (memcached's 1 MiB item limit,
// with room for the key and headers), so a corrupt length fails fast.
const maxValue = 1<<20 + 4096

// conn is one socket with its read buffer. Replies are parsed in place from
// rbuf[r:w].
type conn struct {
	nc   net.Conn
	rbuf []byte
	r, w int
	wbuf []byte
	// readAt is when the last read returned: the arrival time of every
	// reply it completed. One clock read per read, not per reply.
	readAt time.Time
}

// fill reads more bytes, first compacting or growing the buffer if full.
func (c *conn) fill(deadline time.Time) error {
	if c.r > 0 && c.w == len(c.rbuf) {
		c.w = copy(c.rbuf, c.rbuf[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.rbuf) {
		if len(c.rbuf) >= 2*maxValue {
			return errMalformed
		}
		nb := make([]byte, 2*len(c.rbuf))
		c.w = copy(nb, c.rbuf[c.r:c.w])
		c.r, c.rbuf = 0, nb
	}
	_ = c.nc.SetReadDeadline(deadline)
	n, err := c.nc.Read(c.rbuf[c.w:])
	c.readAt = time.Now()
	c.w += n
	if n > 0 {
		return nil
	}
	return err
}

// pending is one request of a batch awaiting its replies.
type pending struct {
	op       opKind
	keys     int       // index of the first key in slot.keyIdx
	nkeys    int       // 1, or MultiGet for a text get
	start    time.Time // when it was sent (closed loop) or scheduled (open loop)
	sent     time.Time // when it was sent
	done     time.Time // when its last reply arrived
	ver      uint64    // a set's value version
	measured bool
	prefill  bool
	verify   bool
	failed   string // an error kind, if the request failed
}

// slot is one logical connection: a socket per server, the batch in flight,
// and (open loop) its schedule.
type slot struct {
	conns   []*conn
	pending []pending
	keyIdx  []uint64
	// Open loop: request k is due at t0 + phase + k*interval.
	phase time.Duration
	next  int64
	done  bool
}

// runState is the state shared by the workers of one run.
type runState struct {
	cfg          *Config
	t0           time.Time
	measureStart time.Time
	measureEnd   time.Time // zero in request-count mode
	interval     time.Duration
	stop         atomic.Bool
	budget       atomic.Int64 // measured requests left in request-count mode
	// maxHeader is the longest value header; values shorter than it cannot
	// be verified.
	maxHeader int
	// rss is the server's resident memory (with ServerPID), or why not.
	rss    *RSS
	rssErr error
}

// worker is one client goroutine with its connections and statistics.
type worker struct {
	run   *runState
	cfg   *Config
	rng   *rand.Rand
	zipf  *rand.Zipf
	seq   uint64
	ver   uint64
	slots []*slot
	pace  *pacer // open loop only
	reply Reply
	key   []byte
	exp   []byte

	// Counted by the worker alone and read once it has ended.
	hits, misses      int64
	verified, vfailed int64

	mu       sync.Mutex // guards what the progress ticker reads below
	hist     [numOps]*hdrhistogram.Histogram
	lag      *hdrhistogram.Histogram // open loop: sent - scheduled
	interval *hdrhistogram.Histogram
	ivOps    int64
	ivErrs   int64
	requests [numOps]int64
	errs     map[string]int64
	unsent   int64
	lastDone time.Time
}

// Run runs the workload once and returns its result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Goroutines <= 0 || cfg.Goroutines > cfg.Conns {
		cfg.Goroutines = cfg.Conns
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	rn := &runState{cfg: &cfg}
	var rss *RSS
	var rssErr error
	if cfg.ServerPID > 0 {
		rss = &RSS{}
		rss.IdleBytes, rssErr = procRSS(cfg.ServerPID)
	}
	rn.maxHeader = len("k= v= ") + len(cfg.KeyPrefix) + len(strconv.Itoa(cfg.Keys-1)) + 20
	ws := make([]*worker, cfg.Goroutines)
	for i := range ws {
		ws[i] = newWorker(i, rn)
		if cfg.Rate > 0 {
			var err error
			if ws[i].pace, err = newPacer(); err != nil {
				closeAll(ws[:i])
				return nil, err
			}
		}
	}
	for i := 0; i < cfg.Conns; i++ {
		s, err := dialSlot(&cfg)
		if err != nil {
			closeAll(ws)
			return nil, err
		}
		if cfg.Rate > 0 {
			// Stagger the connections' schedules across one interval.
			rn.interval = time.Duration(float64(cfg.Conns) / cfg.Rate * 1e9)
			s.phase = rn.interval * time.Duration(i) / time.Duration(cfg.Conns)
		}
		w := ws[i%len(ws)]
		w.slots = append(w.slots, s)
	}
	defer closeAll(ws)
	if rss != nil && rssErr == nil {
		rss.ConnectedBytes, rssErr = procRSS(cfg.ServerPID)
	}

	if cfg.Prefill {
		if err := prefill(ws); err != nil {
			return nil, err
		}
		if rss != nil && rssErr == nil {
			rss.PrefillBytes, rssErr = procRSS(cfg.ServerPID)
			rss.PerKey = float64(rss.PrefillBytes-rss.IdleBytes) / float64(cfg.Keys)
		}
	}
	rn.rss, rn.rssErr = rss, rssErr

	rn.t0 = time.Now()
	rn.measureStart = rn.t0.Add(cfg.Warmup)
	if cfg.Requests > 0 {
		rn.budget.Store(cfg.Requests)
	} else {
		rn.measureEnd = rn.measureStart.Add(cfg.Duration)
	}
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop()
		}()
	}
	finished := make(chan struct{})
	go func() {
		wg.Wait()
		close(finished)
	}()
	return rn.coordinate(ctx, ws, finished)
}

// minInterval is the shortest last interval the series keeps: the window's
// end and its last whole second fall at the same instant, and whichever
// the select takes first leaves the other an interval of microseconds.
const minInterval = 50 * time.Millisecond

// coordinate ticks the progress line and series, reads CPU times at the
// window's edges and stops the workers.
func (rn *runState) coordinate(ctx context.Context, ws []*worker, finished chan struct{}) (*Result, error) {
	cfg := rn.cfg
	res := &Result{Workload: cfg.String(), Errors: map[string]int64{}, TargetRate: cfg.Rate}
	// Ticks fall on whole seconds from the start, and from the start of the
	// measured window once it begins, so that every second of the series
	// lies inside the window; the window's end closes the last one.
	next := rn.t0.Add(time.Second)
	tick := time.NewTimer(time.Until(next))
	defer tick.Stop()
	warm := time.NewTimer(max(time.Until(rn.measureStart), 0))
	defer warm.Stop()
	var end <-chan time.Time
	var srv0, cli0, mach0 time.Duration
	var srvErr error
	measuring, ended := false, false
	last := rn.t0
	tickHist := newHist()
	// interval closes the interval from the last tick to now.
	interval := func(now time.Time, warmup bool) {
		s := rn.collect(ws, tickHist, now.Sub(last))
		last = now
		s.T = now.Sub(rn.measureStart).Seconds()
		s.Warmup = warmup
		if !warmup {
			res.Series = append(res.Series, s)
		}
		rn.progress(s, now)
	}
	for {
		select {
		case <-ctx.Done():
			rn.stop.Store(true)
			<-finished
			return nil, ctx.Err()
		case now := <-warm.C:
			if cfg.Warmup > 0 {
				interval(now, true)
			}
			last, measuring = now, true
			cli0 = selfCPU()
			mach0, _ = machineBusy()
			if cfg.ServerPID > 0 {
				srv0, srvErr = procCPU(cfg.ServerPID)
			}
			if !rn.measureEnd.IsZero() {
				end = time.After(time.Until(rn.measureEnd))
			}
			next = rn.measureStart.Add(time.Second)
			tick.Reset(time.Until(next))
		case now := <-end:
			rn.stop.Store(true)
			ended = true
			tick.Stop()
			if now.Sub(last) >= minInterval {
				interval(now, false)
			}
		case now := <-tick.C:
			interval(now, !measuring)
			next = next.Add(time.Second)
			tick.Reset(time.Until(next))
		case <-finished:
			if measuring && !ended {
				// A run of a request count: its last, partial second.
				if now := time.Now(); now.Sub(last) >= minInterval {
					interval(now, false)
				}
			}
			return rn.result(res, ws, srv0, cli0, mach0, srvErr)
		}
	}
}

// progress prints interval s, which ended at now, to the progress line.
func (rn *runState) progress(s Second, now time.Time) {
	if rn.cfg.Progress == nil {
		return
	}
	phase := "run "
	if s.Warmup {
		phase = "warm"
	}
	fmt.Fprintf(rn.cfg.Progress, "%6.1fs %s %9.0f req/s  p50 %8s  p99 %8s  max %8s  errors %d\n",
		now.Sub(rn.t0).Seconds(), phase, s.Rate, fmtUS(s.P50), fmtUS(s.P99), fmtUS(s.Max), s.Errors)
}

// collect gathers and resets the workers' interval statistics.
func (rn *runState) collect(ws []*worker, h *hdrhistogram.Histogram, elapsed time.Duration) Second {
	h.Reset()
	var s Second
	for _, w := range ws {
		w.mu.Lock()
		h.Merge(w.interval)
		w.interval.Reset()
		s.Ops += w.ivOps
		s.Errors += w.ivErrs
		w.ivOps, w.ivErrs = 0, 0
		w.mu.Unlock()
	}
	s.Elapsed = elapsed.Seconds()
	if s.Elapsed > 0 {
		s.Rate = float64(s.Ops) / s.Elapsed
	}
	l := summarize(h)
	s.P50, s.P99, s.Max = l.P50, l.P99, l.Max
	return s
}

// result merges the workers' statistics once they have all stopped.
func (rn *runState) result(res *Result, ws []*worker, srv0, cli0, mach0 time.Duration,
	srvErr error) (*Result, error) {
	cfg := rn.cfg
	cli1 := selfCPU()
	mach1, machErr := machineBusy()
	var srv1 time.Duration
	if cfg.ServerPID > 0 && srvErr == nil {
		srv1, srvErr = procCPU(cfg.ServerPID)
	}
	if time.Now().Before(rn.measureStart) {
		return nil, errors.New("run ended before the warm-up did")
	}
	var all [numOps]*hdrhistogram.Histogram
	allOps := newHist()
	lag := newHist()
	var lastDone time.Time
	for i := range all {
		all[i] = newHist()
	}
	var requests [numOps]int64
	var hits, misses int64
	for _, w := range ws {
		for i := range all {
			all[i].Merge(w.hist[i])
			allOps.Merge(w.hist[i])
			requests[i] += w.requests[i]
		}
		lag.Merge(w.lag)
		hits += w.hits
		misses += w.misses
		for k, v := range w.errs {
			res.Errors[k] += v
			res.ErrorTotal += v
		}
		res.VerifyChecked += w.verified
		res.VerifyFailed += w.vfailed
		res.Unsent += w.unsent
		if w.lastDone.After(lastDone) {
			lastDone = w.lastDone
		}
	}
	// The window ends at its scheduled end, or (request-count mode, or
	// replies still arriving after it) at the last measured reply.
	end := rn.measureEnd
	if lastDone.After(end) {
		end = lastDone
	}
	res.Elapsed = end.Sub(rn.measureStart).Seconds()
	res.Ops = map[string]*OpResult{}
	for i := range all {
		res.Requests += requests[i]
		res.Ops[opNames[i]] = &OpResult{Requests: requests[i], Latency: summarize(all[i])}
	}
	res.Ops["get"].Hits, res.Ops["get"].Misses = hits, misses
	res.Ops["all"] = &OpResult{Requests: res.Requests, Hits: hits, Misses: misses, Latency: summarize(allOps)}
	if res.Elapsed > 0 {
		res.Throughput = float64(res.Requests) / res.Elapsed
		for _, o := range res.Ops {
			o.Throughput = float64(o.Requests) / res.Elapsed
		}
	}
	if cfg.Rate > 0 {
		l := summarize(lag)
		res.SendLag = &l
	}
	res.ClientCPU = cpuOf(cli1-cli0, res.Elapsed, res.Requests)
	if cfg.ServerPID > 0 {
		if srvErr != nil {
			res.Note = "server cpu: " + srvErr.Error()
		} else {
			c := cpuOf(srv1-srv0, res.Elapsed, res.Requests)
			res.ServerCPU = &c
		}
		if rn.rssErr != nil {
			res.Note = strings.TrimPrefix(res.Note+"; server rss: "+rn.rssErr.Error(), "; ")
		} else {
			res.ServerRSS = rn.rss
		}
	}
	if machErr == nil && mach0 > 0 && res.Elapsed > 0 {
		other := (mach1 - mach0).Seconds() - res.ClientCPU.Seconds
		if res.ServerCPU != nil {
			other -= res.ServerCPU.Seconds
		}
		res.OtherCores = max(other, 0) / res.Elapsed
	}
	res.ClientBound = clientBound(res.ClientCPU.Cores, res.ServerCPU)
	if cfg.VerifyFrac > 0 && cfg.ValueMin < rn.maxHeader {
		res.Note = strings.TrimPrefix(res.Note+"; values shorter than "+strconv.Itoa(rn.maxHeader)+
			" bytes are not verified", "; ")
	}
	return res, nil
}

func newWorker(id int, rn *runState) *worker {
	cfg := rn.cfg
	w := &worker{
		run:      rn,
		cfg:      cfg,
		rng:      rand.New(rand.NewPCG(cfg.Seed, uint64(id)+1)),
		interval: newHist(),
		lag:      newHist(),
		errs:     map[string]int64{},
	}
	for i := range w.hist {
		w.hist[i] = newHist()
	}
	if cfg.Dist == "zipf" {
		w.zipf = rand.NewZipf(w.rng, cfg.ZipfS, 1, uint64(cfg.Keys-1))
	}
	// Sequential workers start spread over the key space.
	w.seq = uint64(id) * uint64(cfg.Keys) / uint64(max(cfg.Goroutines, 1))
	// Versions are unique per worker: its id in the high bits.
	w.ver = uint64(id) << 40
	return w
}

func dialSlot(cfg *Config) (*slot, error) {
	s := &slot{}
	for _, addr := range cfg.Servers {
		nc, err := net.DialTimeout("tcp", addr, cfg.Timeout)
		if err != nil {
			s.close()
			return nil, err
		}
		// 64 KiB holds a 16-deep pipeline of 4 KiB replies; fill grows it
		// for larger values.
		s.conns = append(s.conns, &conn{nc: nc, rbuf: make([]byte, 64<<10)})
	}
	return s, nil
}

func (s *slot) close() {
	for _, c := range s.conns {
		c.nc.Close()
	}
}

func closeAll(ws []*worker) {
	for _, w := range ws {
		if w.pace != nil {
			w.pace.close()
		}
		for _, s := range w.slots {
			s.close()
		}
	}
}

// redial replaces a slot's sockets after an I/O or protocol error: the
// stream is out of step and is never reused.
func (w *worker) redial(s *slot) {
	for !w.run.stop.Load() {
		s.close()
		ns, err := dialSlot(w.cfg)
		if err == nil {
			s.conns = ns.conns
			return
		}
		w.countErr("connect", 1)
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *worker) countErr(kind string, n int64) {
	w.mu.Lock()
	w.errs[kind] += n
	w.ivErrs += n
	w.mu.Unlock()
}

// prefill sets every key once, each worker its connections' share.
func prefill(ws []*worker) error {
	cfg := ws[0].cfg
	const batch = 64 // requests per write: enough to amortise round trips
	var wg sync.WaitGroup
	errc := make(chan error, len(ws))
	nslots := cfg.Conns
	g := 0
	for _, w := range ws {
		first := g
		g += len(w.slots)
		wg.Add(1)
		// One goroutine per worker: a worker's buffers are not shared.
		go func() {
			defer wg.Done()
			for si, s := range w.slots {
				lo, hi := (first+si)*cfg.Keys/nslots, (first+si+1)*cfg.Keys/nslots
				for k := lo; k < hi; k += batch {
					s.pending, s.keyIdx = s.pending[:0], s.keyIdx[:0]
					for i := k; i < min(k+batch, hi); i++ {
						s.keyIdx = append(s.keyIdx, uint64(i))
						w.ver++
						s.pending = append(s.pending, pending{op: opSet, keys: len(s.keyIdx) - 1, nkeys: 1,
							ver: w.ver, prefill: true})
					}
					if err := w.exchange(s); err != nil {
						errc <- fmt.Errorf("prefill: %w", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// loop runs the workload until the run stops.
func (w *worker) loop() {
	rn := w.run
	for !rn.stop.Load() {
		sent := false
		var wake time.Time
		for _, s := range w.slots {
			if s.done {
				continue
			}
			n, due := w.batch(s, time.Now())
			if n == 0 {
				// due is zero for a slot that has finished.
				if !due.IsZero() && (wake.IsZero() || due.Before(wake)) {
					wake = due
				}
				continue
			}
			sent = true
			now := time.Now()
			for i := range s.pending {
				s.pending[i].sent = now
			}
			if err := w.send(s); err != nil {
				w.fail(s, err)
				w.record(s)
			}
		}
		if !sent {
			if wake.IsZero() {
				break // every slot is done
			}
			w.pace.sleepUntil(wake) // wake is set in open loop only
			continue
		}
		for _, s := range w.slots {
			if len(s.pending) == 0 {
				continue
			}
			if err := w.receive(s); err != nil {
				w.fail(s, err)
			}
			w.record(s)
		}
	}
	w.countUnsent()
}

// countUnsent counts, in open loop, the measured requests scheduled before
// the window's end that were never sent.
func (w *worker) countUnsent() {
	rn := w.run
	if rn.cfg.Rate <= 0 || rn.measureEnd.IsZero() {
		return
	}
	end := time.Now()
	if rn.measureEnd.Before(end) {
		end = rn.measureEnd
	}
	for _, s := range w.slots {
		for k := s.next; ; k++ {
			t := rn.t0.Add(s.phase + time.Duration(k)*rn.interval)
			if !t.Before(end) {
				break
			}
			if !t.Before(rn.measureStart) {
				w.unsent++
			}
		}
	}
}

// batch fills s.pending with the next requests. It returns how many; when
// none are due yet (open loop), it returns when the next one is.
func (w *worker) batch(s *slot, now time.Time) (int, time.Time) {
	rn, cfg := w.run, w.cfg
	s.pending, s.keyIdx = s.pending[:0], s.keyIdx[:0]
	for len(s.pending) < cfg.Pipeline {
		start := now
		if cfg.Rate > 0 {
			start = rn.t0.Add(s.phase + time.Duration(s.next)*rn.interval)
			if start.After(now) {
				if len(s.pending) == 0 {
					return 0, start
				}
				break
			}
		}
		if !rn.measureEnd.IsZero() && !start.Before(rn.measureEnd) {
			// Scheduled after the window: this slot is finished.
			s.done = len(s.pending) == 0
			break
		}
		measured := !start.Before(rn.measureStart)
		if measured && rn.measureEnd.IsZero() {
			if rn.budget.Add(-1) < 0 {
				rn.stop.Store(true)
				s.done = len(s.pending) == 0
				break
			}
		}
		s.next++
		p := pending{start: start, measured: measured, nkeys: 1, keys: len(s.keyIdx)}
		if w.rng.IntN(cfg.SetWeight+cfg.GetWeight) < cfg.SetWeight {
			p.op = opSet
			w.ver++
			p.ver = w.ver
		} else {
			p.op = opGet
			p.nkeys = cfg.MultiGet
			p.verify = cfg.VerifyFrac > 0 && cfg.ValueMin >= rn.maxHeader && w.rng.Float64() < cfg.VerifyFrac
		}
		for range p.nkeys {
			s.keyIdx = append(s.keyIdx, w.nextKey())
		}
		s.pending = append(s.pending, p)
	}
	if s.done {
		return 0, time.Time{}
	}
	return len(s.pending), time.Time{}
}

func (w *worker) nextKey() uint64 {
	n := uint64(w.cfg.Keys)
	switch w.cfg.Dist {
	case "zipf":
		return w.zipf.Uint64()
	case "sequential":
		k := w.seq % n
		w.seq++
		return k
	}
	return w.rng.Uint64N(n)
}

// appendKey appends the key of index i.
func (w *worker) appendKey(dst []byte, i uint64) []byte {
	dst = append(dst, w.cfg.KeyPrefix...)
	return strconv.AppendUint(dst, i, 10)
}

// exchange sends s.pending and reads the replies, failing on any error
// reply: prefill uses it to run one batch to completion, unrecorded.
func (w *worker) exchange(s *slot) error {
	if err := w.send(s); err != nil {
		return err
	}
	if err := w.receive(s); err != nil {
		return err
	}
	for i := range s.pending {
		if k := s.pending[i].failed; k != "" {
			return fmt.Errorf("set failed: %s", k)
		}
	}
	return nil
}

// send encodes s.pending into each socket's write buffer and writes it:
// every request to the first server, the sets also to the others.
func (w *worker) send(s *slot) error {
	cfg := w.cfg
	for ci, c := range s.conns {
		c.wbuf = c.wbuf[:0]
		for i := range s.pending {
			p := &s.pending[i]
			if ci > 0 && p.op != opSet {
				continue
			}
			keys := s.keyIdx[p.keys : p.keys+p.nkeys]
			if p.op == opGet {
				c.wbuf = w.appendGet(c.wbuf, keys, uint32(i))
				continue
			}
			w.key = w.appendKey(w.key[:0], keys[0])
			h := mix(w.key, p.ver)
			// The value is encoded after the command, so build it in w.exp.
			w.exp = appendValue(w.exp[:0], w.key, p.ver, h, valueSize(h, cfg.ValueMin, cfg.ValueMax))
			switch cfg.Proto {
			case ProtoText:
				c.wbuf = appendTextSet(c.wbuf, w.key, valueFlags(h), cfg.Exptime, w.exp)
			case ProtoMeta:
				c.wbuf = appendMetaSet(c.wbuf, w.key, valueFlags(h), cfg.Exptime, w.exp)
			case ProtoBinary:
				c.wbuf = appendBinarySet(c.wbuf, w.key, valueFlags(h), cfg.Exptime, w.exp, uint32(i))
			}
		}
		if len(c.wbuf) == 0 {
			continue
		}
		_ = c.nc.SetWriteDeadline(time.Now().Add(cfg.Timeout))
		if _, err := c.nc.Write(c.wbuf); err != nil {
			return err
		}
	}
	return nil
}

// appendGet appends a get of keys. A multi-get is one text get, or for meta
// an mg per key and then mn, for binary a GETKQ per key and then a NOOP, all
// with the request's opaque; the MN or NOOP reply ends it.
func (w *worker) appendGet(dst []byte, keys []uint64, opaque uint32) []byte {
	switch w.cfg.Proto {
	case ProtoText:
		dst = append(dst, "get"...)
		for _, k := range keys {
			dst = append(dst, ' ')
			dst = w.appendKey(dst, k)
		}
		return append(dst, "\r\n"...)
	case ProtoMeta:
		for _, k := range keys {
			w.key = w.appendKey(w.key[:0], k)
			dst = appendMetaGet(dst, w.key)
		}
		if len(keys) > 1 {
			dst = appendMetaNoop(dst)
		}
		return dst
	default:
		if len(keys) == 1 {
			w.key = w.appendKey(w.key[:0], keys[0])
			return appendBinaryGet(dst, w.key, opaque)
		}
		for _, k := range keys {
			w.key = w.appendKey(w.key[:0], k)
			dst = appendBinaryGetKQ(dst, w.key, opaque)
		}
		return appendBinaryNoop(dst, opaque)
	}
}

// next parses the next reply from c, reading more as needed.
func (w *worker) next(c *conn) error {
	deadline := time.Now().Add(w.cfg.Timeout)
	for {
		var n int
		var err error
		buf := c.rbuf[c.r:c.w]
		switch w.cfg.Proto {
		case ProtoText:
			n, err = ParseTextReply(buf, &w.reply)
		case ProtoMeta:
			n, err = ParseMetaReply(buf, &w.reply)
		default:
			n, err = ParseBinaryReply(buf, &w.reply, maxValue)
		}
		if err != nil {
			return err
		}
		if n > 0 {
			c.r += n
			return nil
		}
		if err := c.fill(deadline); err != nil {
			return err
		}
	}
}

// receive reads the replies to s.pending, first from the server that got
// every request, then the set replies from the others. A returned error
// means the sockets are out of step.
func (w *worker) receive(s *slot) error {
	for ci, c := range s.conns {
		for i := range s.pending {
			p := &s.pending[i]
			if ci > 0 && p.op != opSet {
				continue
			}
			var err error
			if p.op == opGet {
				err = w.receiveGet(c, s, p, uint32(i))
			} else {
				err = w.receiveSet(c, p, uint32(i))
			}
			if err != nil {
				return err
			}
			if p.op == opGet || ci == len(s.conns)-1 {
				p.done = c.readAt // a set is done when every server answered
			}
		}
	}
	return nil
}

func (w *worker) receiveSet(c *conn, p *pending, opaque uint32) error {
	if err := w.next(c); err != nil {
		return err
	}
	r := &w.reply
	if w.cfg.Proto == ProtoBinary && r.Opaque != opaque {
		return errOpaque
	}
	switch r.Kind {
	case ReplyStored:
	case ReplyNotStored:
		p.fail("not_stored")
	case ReplyError:
		p.fail(errorKind(r))
	default:
		return errUnexpected
	}
	return nil
}

var (
	errOpaque     = errors.New("reply opaque out of order")
	errUnexpected = errors.New("unexpected reply")
)

// receiveGet reads a get's replies. A text get ends with END; a single meta
// or binary get is one reply; a meta or binary multi-get ends with MN or the
// NOOP response, after a reply per key (meta: VA, EN or an error) or per hit
// (binary GETKQ: misses send nothing).
func (w *worker) receiveGet(c *conn, s *slot, p *pending, opaque uint32) error {
	proto := w.cfg.Proto
	keys := s.keyIdx[p.keys : p.keys+p.nkeys]
	// A multi-get other than text's: replies per key up to a terminator.
	multi := proto != ProtoText && p.nkeys > 1
	hits := 0
	j := 0 // values come in request order; j is the next candidate key
	for {
		if err := w.next(c); err != nil {
			return err
		}
		r := &w.reply
		if proto == ProtoBinary && r.Opaque != opaque {
			return errOpaque
		}
		switch r.Kind {
		case ReplyError:
			p.fail(errorKind(r))
			if multi {
				continue // the other keys' replies and the terminator follow
			}
			return nil
		case ReplyEnd:
			if proto != ProtoText {
				return errUnexpected
			}
			w.countHits(p, hits)
			return nil
		case ReplyNoop:
			if !multi {
				return errUnexpected
			}
			w.countHits(p, hits)
			return nil
		case ReplyMiss:
			if proto == ProtoText {
				return errUnexpected
			}
			if multi {
				continue
			}
			w.countHits(p, 0)
			return nil
		case ReplyValue:
		default:
			return errUnexpected
		}
		// Which key is this? Text, meta and GETKQ name it; binary GET does not.
		key := keys[0]
		if proto != ProtoBinary || multi {
			found := false
			for j < len(keys) && !found {
				w.key = w.appendKey(w.key[:0], keys[j])
				key = keys[j]
				j++
				found = string(w.key) == string(r.Key)
			}
			if !found {
				p.fail("wrong_key")
				return errUnexpected
			}
		}
		hits++
		if p.verify && !p.prefill {
			w.key = w.appendKey(w.key[:0], key)
			w.verified++
			if !verifyValue(w.key, r.Value, r.Flags, w.cfg.ValueMin, w.cfg.ValueMax, &w.exp) {
				w.vfailed++
				p.fail("verify")
			}
		}
		if proto != ProtoText && !multi {
			w.countHits(p, 1)
			return nil
		}
	}
}

// countHits records a get's hits and misses, if it is measured.
func (w *worker) countHits(p *pending, hits int) {
	if !p.measured || p.prefill {
		return
	}
	w.hits += int64(hits)
	w.misses += int64(p.nkeys - hits)
}

func (p *pending) fail(kind string) {
	if p.failed == "" {
		p.failed = kind
	}
}

// errorKind names an error reply: "error", "client_error", "server_error",
// or "status_0xNNNN" for a binary status.
func errorKind(r *Reply) string {
	switch {
	case r.Status != 0:
		return fmt.Sprintf("status_0x%04x", r.Status)
	case strings.HasPrefix(string(r.Msg), "CLIENT_ERROR"):
		return "client_error"
	case strings.HasPrefix(string(r.Msg), "SERVER_ERROR"):
		return "server_error"
	}
	return "error"
}

// fail handles a broken slot: its unanswered requests become errors of the
// error's kind, and the sockets are replaced.
func (w *worker) fail(s *slot, err error) {
	kind := "io"
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		kind = "timeout"
	case errors.Is(err, io.EOF):
		kind = "closed"
	case errors.Is(err, errMalformed), errors.Is(err, errUnexpected), errors.Is(err, errOpaque):
		kind = "protocol"
	}
	for i := range s.pending {
		p := &s.pending[i]
		if p.done.IsZero() {
			p.fail(kind)
			p.done = time.Now()
		}
	}
	if w.cfg.Progress != nil && !w.run.stop.Load() {
		fmt.Fprintf(w.cfg.Progress, "connection error (%s): %v; reconnecting\n", kind, err)
	}
	w.redial(s)
}

// record adds a finished batch's requests to the statistics.
func (w *worker) record(s *slot) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range s.pending {
		p := &s.pending[i]
		if p.prefill {
			continue
		}
		lat := p.done.Sub(p.start)
		record(w.interval, lat)
		w.ivOps++
		if p.failed != "" {
			w.ivErrs++
		}
		if !p.measured {
			continue
		}
		if p.failed != "" {
			w.errs[p.failed]++
		}
		w.requests[p.op]++
		record(w.hist[p.op], lat)
		if w.cfg.Rate > 0 {
			record(w.lag, p.sent.Sub(p.start))
		}
		if p.done.After(w.lastDone) {
			w.lastDone = p.done
		}
	}
	s.pending = s.pending[:0]
}

// Values are derived from their key and a version number, so that a read
// can be checked without remembering what was written: a header
// "k=<key> v=<version> " padded with letters from a generator seeded by
// hash(key, version), its size and client flags also from that hash.

// mix hashes a key and version (FNV-1a, then splitmix64's finaliser).
func mix(key []byte, ver uint64) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range key {
		h ^= uint64(b)
		h *= 1099511628211
	}
	h ^= ver
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

func valueSize(h uint64, lo, hi int) int {
	if hi <= lo {
		return lo
	}
	return lo + int(h%uint64(hi-lo+1))
}

func valueFlags(h uint64) uint32 { return uint32(h >> 32) }

// appendValue appends the value of size bytes for key at version ver, whose
// mix is h.
func appendValue(dst, key []byte, ver, h uint64, size int) []byte {
	start := len(dst)
	dst = append(dst, "k="...)
	dst = append(dst, key...)
	dst = append(dst, " v="...)
	dst = strconv.AppendUint(dst, ver, 10)
	dst = append(dst, ' ')
	s := h
	for len(dst)-start < size {
		s += 0x9e3779b97f4a7c15 // splitmix64
		z := s
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		z ^= z >> 31
		for i := 0; i < 8 && len(dst)-start < size; i++ {
			dst = append(dst, 'a'+byte(z%26))
			z /= 26
		}
	}
	return dst[:start+size]
}

// verifyValue checks a value read for key: it must be the value of some
// version of key, with that version's size and client flags. scratch is
// reused to rebuild the expected value.
func verifyValue(key, value []byte, flags uint32, lo, hi int, scratch *[]byte) bool {
	prefix := len("k=") + len(key) + len(" v=")
	if len(value) < prefix || string(value[:2]) != "k=" || string(value[2:2+len(key)]) != string(key) ||
		string(value[2+len(key):prefix]) != " v=" {
		return false
	}
	end := prefix
	for end < len(value) && value[end] >= '0' && value[end] <= '9' {
		end++
	}
	ver, err := strconv.ParseUint(string(value[prefix:end]), 10, 64)
	if err != nil {
		return false
	}
	h := mix(key, ver)
	size := valueSize(h, lo, hi)
	if len(value) != size || flags != valueFlags(h) {
		return false
	}
	*scratch = appendValue((*scratch)[:0], key, ver, h, size)
	return string(*scratch) == string(value)
}
