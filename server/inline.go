package server

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/bytedance/gopkg/util/gopool"
	cgopool "github.com/cloudwego/gopkg/concurrency/gopool"
	"github.com/cloudwego/netpoll"
	"github.com/tandemcache/tandem/protocol"
)

// Handlers on the poller's goroutine (--low-latency).
//
// netpoll hands each batch of input to a goroutine of its pool. For a lone
// small request that hand-off is most of the round trip: the poller's
// thread has to wake a second thread to run the new goroutine. With
// LowLatency, a batch of at most inlineMax bytes runs on the poller itself,
// as memcached's worker threads run theirs; larger batches (pipelines, big
// values) keep the pool, where handlers may wait and run side by side.
// Measured (docs/performance.md, twelfth session): p50 of an open-loop
// 2,000 requests/s about 115–150 µs against 600 µs (memcached 122), and
// the same throughput under load with ~5% more CPU and 5–16% higher p99.
// The pollers block in epoll_wait holding a processor each; with none left
// idle, Go's sysmon keeps taking them back and never sleeps (up to 3× the
// CPU per request at low load), so cmd/tandem gives the runtime one
// processor more than it has pollers. It is not the default: an operator
// chooses latency at low load over a little CPU under load.
//
// A handler on the poller must never wait: it would hold up every
// connection of that poller, and waiting for input or for the socket to
// drain means waiting for the poller itself. So:
//   - a batch runs there only if it holds no command that may run long or
//     close the connection (inlineOK), and is not the rest of a partial
//     request;
//   - a partial request is copied out of netpoll's buffer into c.partial
//     (netpoll calls a handler again at once while input is left), and its
//     rest is read on the pool;
//   - when the socket does not take a whole reply, or input is bad enough
//     to close the connection, the connection is handed to a goroutine of
//     its own (detach), which writes the rest, runs what is left, closes
//     it if it must, and gives it back;
//   - the handler never closes the connection: netpoll's Close from a task
//     running on the poller waits for the poller (FDOperator.unused spins
//     on the operator the poller is handling) and never returns.
//
// Any other goroutine that closes a connection (the idle sweeper, Shutdown,
// a detached goroutine) does so through closeExternal, under c.mu, which
// the runner holds while a handler runs on the poller: a Close never lands
// in the middle of an inline handler, and no handler runs inline after it.
// netpoll does not know a detached goroutine is running, and may close the
// connection under it (the client hangs up): it writes under c.wmu and
// stops once the close callback has marked the connection gone, because
// the socket's number may already be another client's.
//
// A replicating server keeps the pool for every batch: its handlers may
// wait for held replies when a connection closes.
const inlineMax = 200

// inlineUsed is set once a server with LowLatency starts: until then the
// runner is netpoll's default and nothing more.
var inlineUsed atomic.Bool

// poolTask is netpoll's default runner: bytedance's gopool, or cloudwego's
// when USE_CLOUDWEGO_GOPOOL is set (as netpoll's internal/runner does).
var poolTask = gopool.CtxGo

func init() {
	if yes, _ := strconv.ParseBool(os.Getenv("USE_CLOUDWEGO_GOPOOL")); yes {
		poolTask = cgopool.CtxGo
	}
	// netpoll reads its runner unguarded from its pollers: set it once,
	// before any of them starts.
	_ = netpoll.Configure(netpoll.Config{Runner: runTask})
}

// runTask is netpoll's runner: it runs a connection's task on the poller
// when the connection may be served there, and on netpoll's pool otherwise.
func runTask(ctx context.Context, f func()) {
	if !inlineUsed.Load() {
		spawn(ctx, f)
		return
	}
	var c *conn
	if ctx != nil {
		c, _ = ctx.Value(ctxKey{}).(*conn)
	}
	if c == nil || !c.s.cfg.LowLatency || c.s.repl != nil || c.fd < 0 {
		spawn(ctx, f)
		return
	}
	r := c.nc.Reader()
	if r.Len() > inlineMax {
		spawn(ctx, f) // a pipeline or a big value
		return
	}
	c.mu.Lock()
	// The task cannot run yet (netpoll holds its processing lock for it)
	// and no detached goroutine has the connection: its state and buffer
	// are ours to look at. Not the rest of a request, nor the tail of a
	// refused value, nor a batch with a slow command.
	if c.noInline || c.detached.Load() || c.s.noInline.Load() || len(c.partial) > 0 || c.swallow > 0 || !c.inlineOK(r) {
		c.mu.Unlock()
		spawn(ctx, f)
		return
	}
	inlineRuns.Add(1)
	c.runInline(f)
	c.mu.Unlock()
}

// spawn starts a task on the pool, and lets it run before the poller goes
// on when the server is nearly idle.
//
// The pool starts a goroutine for the task, which waits in the poller's
// processor's run queue. netpoll's poller, once it has no more events,
// calls runtime.Gosched and then blocks in epoll_wait holding that
// processor, on the bet that Gosched ran what was queued. It usually
// does, but one schedule in 61 takes the global run queue first, where
// Gosched has just put the poller itself: the poller then blocks with the
// handler stranded behind it until another thread steals it (at the next
// request on another poller) or sysmon takes the processor back (after up
// to 10 ms once it has backed off). Under load the next request comes
// within microseconds; at 2,000 requests/s over 4 connections it put p99
// at ~600 µs, the spacing of the requests (memcached ~130 µs;
// docs/performance.md, nineteenth session). A Gosched of ours that takes
// the global queue first moves the processor's count on, so netpoll's own
// then runs the handler. Yielding after every task costs pipelined
// throughput (binary/p16/1:1 0.78×), so only a task that comes more than
// spawnQuiet after the previous one yields.
func spawn(ctx context.Context, f func()) {
	poolTask(ctx, f)
	now := nanotime()
	if now-lastSpawn.Swap(now) > spawnQuiet {
		runtime.Gosched()
	}
}

// spawnQuiet is the gap between tasks beyond which spawn yields: a
// stranded handler waits at most about this long for the next request to
// free it.
const spawnQuiet = int64(100 * time.Microsecond)

// lastSpawn is when spawn last started a task, in nanotime.
var lastSpawn atomic.Int64

var clockStart = time.Now()

// nanotime is a monotonic clock reading in nanoseconds.
func nanotime() int64 { return int64(time.Since(clockStart)) }

// runInline runs a task on the poller, c.mu held. Our handlers recover
// their own panics (onRequest); one in netpoll's code around them would
// end the process here, where gopool would have logged it and gone on. It
// is logged the same way, and the connection, whose state inside netpoll
// is then unknown, is closed from another goroutine (a Close from a task on
// the poller never returns).
func (c *conn) runInline(f func()) {
	c.inline = true
	defer func() {
		c.inline = false
		if p := recover(); p != nil {
			fmt.Fprintf(c.s.cfg.Log, "tandem: panic on a poller serving %s: %v\n", c.nc.RemoteAddr(), p)
			c.noInline = true
			go c.closeExternal()
		}
	}()
	f()
}

// inlineRuns counts the tasks run on a poller, for the tests.
var inlineRuns atomic.Uint64

// inlineOK reports whether the connection's buffered requests look cheap
// (see inlineScan), reading them as its protocol.
func (c *conn) inlineOK(r netpoll.Reader) bool {
	b, err := r.Peek(r.Len())
	if err != nil || len(b) == 0 {
		return false
	}
	binary := c.binary
	if !c.started {
		binary = b[0] == binaryMagic
	}
	return inlineScan(b, binary)
}

// inlineScan reports whether the requests in b are all cheap: none may run
// long or touch every connection (stats, slabs, lru_crawler, flush_all,
// shutdown, ...) or close the connection (quit). Text is judged by the
// word at the start of each line (a line of a value that starts with such
// a word only sends the batch to the pool), binary by each header's
// opcode. A client can still slip one past it (a data block of the wrong
// length makes the parser read a command from the middle of a line), so
// the handler checks each command again (slowCmd) and hands such a one to
// a goroutine of its own.
func inlineScan(b []byte, binary bool) bool {
	if binary {
		var h protocol.BinaryHeader
		for len(b) >= protocol.BinaryHeaderLen {
			protocol.DecodeBinaryHeader(b, &h)
			if h.Magic != binaryMagic || !inlineOp(h.Opcode) {
				return false
			}
			next := protocol.BinaryHeaderLen + int(h.BodyLen)
			if next >= len(b) {
				return true
			}
			b = b[next:]
		}
		return true
	}
	for len(b) > 0 {
		if slowWord(b) {
			return false
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return true
		}
		b = b[i+1:]
	}
	return true
}

// slowWords start the text commands that do not run on the poller.
var slowWords = [][]byte{[]byte("stats"), []byte("slabs"), []byte("lru"), []byte("flush_all"),
	[]byte("shutdown"), []byte("cache_memlimit"), []byte("watch"), []byte("quit")}

func slowWord(line []byte) bool {
	for len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
		line = line[1:] // the parser skips them too
	}
	for _, w := range slowWords {
		if bytes.HasPrefix(line, w) {
			return true
		}
	}
	return false
}

// slowCmd is slowWord for a parsed text or meta command.
func slowCmd(cmd protocol.Command) bool {
	switch cmd {
	case protocol.CmdStats, protocol.CmdSlabs, protocol.CmdLru, protocol.CmdLruCrawler, protocol.CmdFlushAll,
		protocol.CmdShutdown, protocol.CmdCacheMemlimit, protocol.CmdWatch, protocol.CmdQuit:
		return true
	}
	return false
}

// inlineOp is slowWord for binary opcodes: stats, flush, SASL and quit.
func inlineOp(op uint8) bool {
	switch op {
	case protocol.OpStat, protocol.OpFlush, protocol.OpFlushQ, protocol.OpQuit, protocol.OpQuitQ,
		protocol.OpSASLList, protocol.OpSASLAuth, protocol.OpSASLStep:
		return false
	}
	return true
}

// detach hands the connection to a goroutine of its own. The inline
// handler calls it last, having consumed all input: what is left to do is
// in c.out (replies the socket did not take), c.partial (requests not run
// yet) and c.closing.
func (c *conn) detach() {
	c.detachReq = false
	done := make(chan struct{})
	c.detachDone = done
	c.detached.Store(true)
	go c.serveDetached(done)
}

// serveDetached is the detached goroutine: it writes what the socket did
// not take, runs the requests left over (replying after it), closes the
// connection if it must, and gives the connection back to netpoll's tasks
// (which wait for done).
func (c *conn) serveDetached(done chan struct{}) {
	// The runner holds c.mu until the inline handler has returned: from
	// then on only this goroutine touches the connection.
	c.mu.Lock()
	c.mu.Unlock() //nolint:staticcheck // empty on purpose: a barrier
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(c.s.cfg.Log, "tandem: panic serving %s: %v\n", c.nc.RemoteAddr(), p)
			c.closing = true
		}
		if c.closing {
			c.markClose()
			c.closeExternal()
		} else {
			c.readDetached(true)
		}
		c.detached.Store(false)
		close(done)
	}()
	growStack4K()
	// Read no more of the client's requests meanwhile, as a handler on
	// the pool does while a socket is full (flush): netpoll would buffer
	// whatever the client sends for as long as the write takes.
	c.readDetached(false)
	if !c.closing && len(c.partial) > 0 && len(c.partial) >= c.pneed {
		c.runPartial() // its replies go after what c.out holds
	} else {
		c.flush()
	}
}

// readDetached pauses or resumes reading the socket from the detached
// goroutine (pace.go). netpoll does not know that goroutine runs and may
// close the socket under it: under wmu, and only while the close callback
// has not marked the connection gone, the socket is still this client's.
// The tasks that netpoll starts meanwhile wait (waitDetached) and find
// reading as it was left here.
func (c *conn) readDetached(on bool) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.gone {
		return
	}
	if on {
		c.resumeReading()
	} else {
		c.pauseReading()
	}
}

// waitDetached makes a netpoll task wait while a detached goroutine has
// the connection.
func (c *conn) waitDetached() {
	if c.detached.Load() {
		<-c.detachDone
	}
}

// closeExternal closes the connection from a goroutine that is not its
// handler (see the top of this file).
func (c *conn) closeExternal() {
	c.mu.Lock()
	c.noInline = true
	c.nc.Close()
	c.mu.Unlock()
}

// stopInline makes every later task run on netpoll's pool (the runner
// reads s.noInline under c.mu) and waits for the inline handlers running
// now: netpoll's own Shutdown closes idle connections from its goroutine,
// without c.mu.
func (s *Server) stopInline() {
	s.noInline.Store(true)
	for _, c := range s.connsWhere(func(*conn) bool { return true }) {
		c.mu.Lock()
		c.mu.Unlock() //nolint:staticcheck // empty on purpose: a barrier
	}
}
