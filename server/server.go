// Package server owns client connections: it accepts them on netpoll event
// loops, reads requests with package protocol, runs them against a
// store.Store and writes the replies, one write per batch of pipelined
// requests.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/tandemcache/tandem/store"
)

// Version is what "version" and "stats" report: a memcached version, since
// clients parse it to pick features.
const Version = "1.6.18"

// Protocol is what a server accepts (memcached's -B).
type Protocol uint8

// The -B choices.
const (
	ProtocolAuto   Protocol = iota // detected from each connection's first byte
	ProtocolASCII                  // text and meta only
	ProtocolBinary                 // binary only
)

// Config sets up a Server. Zero fields take the defaults noted.
type Config struct {
	// Listen are TCP addresses, host:port. Empty with no UnixSocket means
	// ":11211".
	Listen []string
	// UDPPort, if not 0, also serves UDP on that port of each Listen host
	// (-U).
	UDPPort int
	// UnixSocket, if set, is a unix socket path to listen on (-s); TCP is
	// then off, as in memcached. UnixMask is its permission mask (-a),
	// default 0700.
	UnixSocket string
	UnixMask   os.FileMode
	// Backlog is the listen backlog (-b), capped by the system's somaxconn;
	// 0 leaves Go's default, somaxconn itself.
	Backlog int
	// MaxConns is the connection limit (-c). Default 1024.
	MaxConns int
	// ReqsPerEvent is how many requests one connection may run before its
	// replies are flushed and it yields (-R). Default 20.
	ReqsPerEvent int
	// IdleTimeout closes connections idle that long (-o idle_timeout); 0 off.
	IdleTimeout time.Duration
	// Protocol restricts the protocols served (-B). Default auto.
	Protocol Protocol
	// EnableShutdown allows the shutdown command (-A).
	EnableShutdown bool
	// DisableFlush refuses flush_all (-F).
	DisableFlush bool
	// DisableDumping refuses stats cachedump and lru_crawler metadump (-X).
	DisableDumping bool
	// DisableWatch refuses watch (-W).
	DisableWatch bool
	// NoSlabReassign refuses slabs reassign (-o no_slab_reassign).
	NoSlabReassign bool
	// WriteTimeout bounds how long a reply may wait for a client that does
	// not read: netpoll keeps reading a connection's input while its
	// handler is blocked writing, so a client that sends without reading
	// would otherwise make the server buffer without end. Default 30 s.
	WriteTimeout time.Duration
	// MaxInput is the most unprocessed input one connection may have
	// buffered before it is closed. Default 64 MiB.
	MaxInput int
	// DetailDelimiter ends a key's prefix for "stats detail" (-D). Default ':'.
	DetailDelimiter byte
	// Verbosity is memcached's -v level: 1 errors, 2 also each command.
	Verbosity int
	// Log receives verbose output. Default os.Stderr.
	Log io.Writer
	// Settings are the name/value lines of "stats settings", filled by cmd
	// from the flags it parsed.
	Settings [][2]string
	// Threads is reported in "stats" (memcached's -t).
	Threads int
	// OnShutdown is called when a client sends an allowed shutdown command.
	OnShutdown func(graceful bool)
	// SASL, if set, turns on SASL PLAIN authentication against these
	// users (-S): binary commands other than the SASL ones and VERSION are
	// refused until a connection authenticates. Set Protocol to binary
	// with it, as memcached does.
	SASL *Users
	// Replicator, if set, makes every write wait for the replication peers
	// before its reply goes out (package replication). Nil: replication
	// is off and costs one nil check per write.
	Replicator Replicator
	// LowLatency runs small batches of requests on the network poller's
	// own goroutine instead of handing them to a pool goroutine
	// (--low-latency, inline.go): a fraction of the latency at low load.
	// The process needs a spare processor (GOMAXPROCS above the number of
	// pollers) or its CPU at low load grows several times. Ignored with a
	// Replicator.
	LowLatency bool
	// AuthFile, if set, turns on ascii authentication against these users
	// (-Y): a text connection must first send an auth set. Set Protocol to
	// ascii with it, as memcached does.
	AuthFile *Users
}

// Replicator is what the server needs of replication. It is an interface
// so that server does not import replication: cmd wires the two.
type Replicator interface {
	// Head is the sequence number of the newest write handed to the
	// peers; a write whose store call has returned is at or below it.
	Head() uint64
	// Await reports whether the writes up to seq are decided now: nil
	// when they satisfy the ack rule, or an error that says why they
	// cannot (the reply to such a write becomes a SERVER_ERROR with it).
	// If not decided yet, it calls a.Acked(seq, err) once they are, from
	// another goroutine. A connection waits in one Await at a time.
	Await(seq uint64, a interface{ Acked(seq uint64, err error) }) (bool, error)
	// Wait blocks until the writes up to seq are decided.
	Wait(seq uint64) error
	// Met tells whether the writes up to seq meet the ack rule now.
	Met(seq uint64) bool
	// Behind tells, cheaply, whether the peers are too far behind the
	// writes; Throttle then blocks until they are not, for at most the
	// replication timeout. A connection that wrote asks after each write,
	// and throttles with its reading paused.
	Behind() bool
	Throttle()
	// Writable returns an error when a write would not be acknowledged
	// now (quorum lost): the write is then refused without applying it.
	Writable() error
	// Overruled tells whether a peer refused the state with this CAS
	// because it already held a newer one: a concurrent write of the key
	// on another node won. Asked once the write is decided.
	Overruled(cas uint64) bool
	// Summary lists the repl_* fields of "stats".
	Summary(fn func(name, value string))
	// Stats lists the lines of "stats replication".
	Stats(fn func(name, value string))
}

// Server serves the memcached protocols for one store.
type Server struct {
	cfg   Config
	store *store.Store
	loop  netpoll.EventLoop
	lns   []net.Listener
	udp   []net.PacketConn
	start time.Time

	maxInput int
	pauseAt  int // where a connection's reading pauses (pace.go)
	detail   detail
	watch    watchHub
	repl     Replicator // cfg.Replicator; nil when replication is off

	mu    sync.Mutex
	conns map[*conn]struct{}

	// Counters for "stats".
	currConns, totalConns, rejected atomic.Int64
	bytesRead, bytesWritten         atomic.Uint64
	noInline                        atomic.Bool // no handler runs on a poller any more (inline.go)
	connYields, cmdMeta, udpDropped atomic.Uint64
	authCmds, authErrors            atomic.Uint64
	verbosity                       atomic.Int32
	automove                        atomic.Int32 // "slabs automove N", for stats settings
	crawlerOff                      atomic.Bool  // lru_crawler disable
}

// New prepares a server over st and opens its listeners.
func New(cfg Config, st *store.Store) (*Server, error) {
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 1024
	}
	if cfg.ReqsPerEvent == 0 {
		cfg.ReqsPerEvent = 20
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.MaxInput == 0 {
		cfg.MaxInput = 64 << 20
	}
	if cfg.UnixMask == 0 {
		cfg.UnixMask = 0o700
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	if len(cfg.Listen) == 0 && cfg.UnixSocket == "" {
		cfg.Listen = []string{":11211"}
	}
	s := &Server{cfg: cfg, store: st, start: time.Now(), conns: map[*conn]struct{}{}, repl: cfg.Replicator}
	s.detail.delim = cfg.DetailDelimiter
	if s.detail.delim == 0 {
		s.detail.delim = ':'
	}
	st.SetEvictHook(s.logEviction)
	// One whole item (with its command line) must always fit.
	s.maxInput = max(cfg.MaxInput, 2*st.ItemSizeMax())
	s.pauseAt = min(pauseAt, s.maxInput/8)
	s.verbosity.Store(int32(cfg.Verbosity))
	for _, kv := range cfg.Settings {
		if kv[0] == "slab_automove" {
			n, _ := strconv.Atoi(kv[1])
			s.automove.Store(int32(n))
		}
	}
	if err := s.listen(); err != nil {
		s.closeListeners()
		return nil, err
	}
	if cfg.LowLatency {
		inlineUsed.Store(true)
	}
	handler := s.onPlainRequest
	if s.repl != nil {
		handler = s.onReplicatedRequest
	}
	loop, err := netpoll.NewEventLoop(handler,
		netpoll.WithOnPrepare(s.onPrepare),
		netpoll.WithOnDisconnect(s.onDisconnect))
	if err != nil {
		s.closeListeners()
		return nil, fmt.Errorf("server: starting the event loop: %w", err)
	}
	s.loop = loop
	return s, nil
}

func (s *Server) listen() error {
	if s.cfg.UnixSocket != "" {
		_ = os.Remove(s.cfg.UnixSocket) // a stale socket from a previous run
		ln, err := netpoll.CreateListener("unix", s.cfg.UnixSocket)
		if err != nil {
			return fmt.Errorf("server: listening on unix socket %s: %w", s.cfg.UnixSocket, err)
		}
		if err := s.setBacklog(ln.Fd()); err != nil {
			ln.Close()
			return err
		}
		if err := os.Chmod(s.cfg.UnixSocket, s.cfg.UnixMask); err != nil {
			ln.Close()
			return fmt.Errorf("server: setting the mode of %s: %w", s.cfg.UnixSocket, err)
		}
		s.lns = append(s.lns, ln)
		s.logListening(ln.Fd(), s.listenName())
		return nil
	}
	for _, addr := range s.cfg.Listen {
		ln, err := netpoll.CreateListener("tcp", addr)
		if err != nil {
			return fmt.Errorf("server: listening on %s: %w", addr, err)
		}
		if err := s.setBacklog(ln.Fd()); err != nil {
			ln.Close()
			return err
		}
		s.lns = append(s.lns, ln)
		s.logListening(ln.Fd(), s.listenName())
		if s.cfg.UDPPort != 0 {
			host, _, _ := net.SplitHostPort(addr)
			uaddr := net.JoinHostPort(host, strconv.Itoa(s.cfg.UDPPort))
			pc, err := net.ListenPacket("udp", uaddr)
			if err != nil {
				return fmt.Errorf("server: listening on udp %s: %w", uaddr, err)
			}
			s.udp = append(s.udp, pc)
			s.logListening(packetFd(pc), "udp")
		}
	}
	return nil
}

// setBacklog gives a listening socket the backlog of -b, as memcached's
// listen(fd, backlog). Go listens with the system's somaxconn; Linux lets
// listen be called again on a listening socket to change its backlog.
func (s *Server) setBacklog(fd int) error {
	if s.cfg.Backlog <= 0 {
		return nil
	}
	if err := syscall.Listen(fd, s.cfg.Backlog); err != nil {
		return fmt.Errorf("server: setting the listen backlog to %d: %w", s.cfg.Backlog, err)
	}
	return nil
}

// logListening writes memcached's -vv line for a listening socket.
func (s *Server) logListening(fd int, what string) {
	if s.verbosity.Load() >= 2 {
		fmt.Fprintf(s.cfg.Log, "<%d server listening (%s)\n", fd, what)
	}
}

// packetFd is a UDP socket's descriptor, for -vv lines; -1 if unknown.
func packetFd(pc net.PacketConn) int {
	fd := -1
	if sc, ok := pc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			_ = raw.Control(func(f uintptr) { fd = int(f) })
		}
	}
	return fd
}

// listenName is how memcached's -vv names what a listener accepts.
func (s *Server) listenName() string {
	switch s.cfg.Protocol {
	case ProtocolASCII:
		return "ascii"
	case ProtocolBinary:
		return "binary"
	}
	return "auto-negotiate"
}

// protoName names a connection's protocol in memcached's -vv lines.
func protoName(binary bool) string {
	if binary {
		return "binary"
	}
	return "ascii"
}

// UDPAddrs are the UDP addresses the server listens on.
func (s *Server) UDPAddrs() []net.Addr {
	var a []net.Addr
	for _, pc := range s.udp {
		a = append(a, pc.LocalAddr())
	}
	return a
}

// Addrs are the addresses the server listens on.
func (s *Server) Addrs() []net.Addr {
	var a []net.Addr
	for _, ln := range s.lns {
		a = append(a, ln.Addr())
	}
	return a
}

// Serve accepts connections until Shutdown; it returns nil after a
// shutdown.
func (s *Server) Serve() error {
	if s.cfg.IdleTimeout > 0 {
		stop := make(chan struct{})
		defer close(stop)
		go s.sweepIdle(stop)
	}
	for _, pc := range s.udp {
		go s.serveUDP(pc)
	}
	errc := make(chan error, len(s.lns))
	for _, ln := range s.lns {
		go func(ln net.Listener) { errc <- s.loop.Serve(ln) }(ln)
	}
	var first error
	for range s.lns {
		if err := <-errc; err != nil && first == nil && !errors.Is(err, net.ErrClosed) {
			first = err
		}
	}
	return first
}

// Shutdown stops accepting, lets requests in flight finish until ctx ends,
// then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	// Replies held for the peers' acks are owed to connections netpoll
	// counts as idle and would close at once. Each is decided within the
	// replication timeout, so they get up to half the grace period; under
	// steady writes some connection is always holding, and the other half
	// is netpoll's, to let busy connections finish.
	hold := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		hold, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
		defer cancel()
	}
	// Likewise a connection handed to a goroutine of its own (inline.go),
	// which netpoll counts as idle.
	holding := func(c *conn) bool { return c.held.active.Load() || c.detached.Load() }
	for len(s.connsWhere(holding)) > 0 && hold.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	for _, c := range s.connsWhere(func(*conn) bool { return true }) {
		c.closeWhy.Store(closeShutdown) // for watch's conn_close lines
	}
	s.stopInline() // netpoll's Shutdown closes connections without c.mu
	err := s.loop.Shutdown(ctx)
	s.closeListeners()
	for _, c := range s.connsWhere(func(*conn) bool { return true }) {
		c.closeExternal()
	}
	if s.cfg.UnixSocket != "" {
		_ = os.Remove(s.cfg.UnixSocket)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return nil // the stragglers were closed above
	}
	return err
}

// sweepIdle closes connections with no request for IdleTimeout (memcached's
// -o idle_timeout). netpoll's own idle timeout is only TCP keep-alive.
func (s *Server) sweepIdle(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			// The store's clock, which stamped lastActive.
			limit := s.store.Unix() - int64(s.cfg.IdleTimeout/time.Second)
			// A watcher sends nothing by design; memcached does not time
			// watchers out either.
			idle := func(c *conn) bool { return c.lastActive.Load() < limit && c.watcher.Load() == nil }
			for _, c := range s.connsWhere(idle) {
				c.closeWhy.Store(closeIdle)
				c.closeExternal()
			}
		}
	}
}

// connsWhere returns the open connections that match. Callers close them
// after s.mu is released: netpoll runs the close callback, which takes
// s.mu, inside Close.
func (s *Server) connsWhere(match func(*conn) bool) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*conn
	for c := range s.conns {
		if match(c) {
			out = append(out, c)
		}
	}
	return out
}

func (s *Server) closeListeners() {
	for _, ln := range s.lns {
		ln.Close()
	}
	for _, pc := range s.udp {
		pc.Close()
	}
}

type ctxKey struct{}

// onPrepare runs before the connection is registered with a poller: it
// enforces the connection limit and attaches the connection's state.
func (s *Server) onPrepare(nc netpoll.Connection) context.Context {
	c := newConn(s, nc)
	s.totalConns.Add(1)
	if s.currConns.Add(1) > int64(s.cfg.MaxConns) {
		// memcached answers and closes (maxconns_fast).
		s.currConns.Add(-1)
		s.rejected.Add(1)
		c.rejected = true
		c.noInline = true // its handler closes it
		c.out = append(c.out, "ERROR Too many open connections\r\n"...)
		c.flush()
		nc.Close()
		return context.WithValue(context.Background(), ctxKey{}, c)
	}
	_ = nc.SetWriteTimeout(s.cfg.WriteTimeout)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	if s.watch.wants(watchConnEvents) {
		c.logConn(false)
	}
	if s.verbosity.Load() >= 2 {
		// memcached's -vv lines for a connection's life.
		switch s.cfg.Protocol {
		case ProtocolASCII:
			fmt.Fprintf(s.cfg.Log, "<%d new ascii client connection.\n", c.fd)
		case ProtocolBinary:
			fmt.Fprintf(s.cfg.Log, "<%d new binary client connection.\n", c.fd)
		default:
			fmt.Fprintf(s.cfg.Log, "<%d new auto-negotiating client connection\n", c.fd)
		}
	}
	_ = nc.AddCloseCallback(func(netpoll.Connection) error {
		if s.verbosity.Load() >= 2 {
			fmt.Fprintf(s.cfg.Log, "<%d connection closed.\n", c.fd)
		}
		// Runs before netpoll's own callback closes the socket.
		c.wmu.Lock()
		c.gone = true
		c.wmu.Unlock()
		if w := c.watcher.Load(); w != nil {
			s.watch.remove(w)
		}
		if s.watch.wants(watchConnEvents) {
			c.logConn(true)
		}
		if s.repl != nil {
			c.dropHeld()
		}
		s.currConns.Add(-1)
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		return nil
	})
	return context.WithValue(context.Background(), ctxKey{}, c)
}

func (s *Server) onDisconnect(ctx context.Context, nc netpoll.Connection) {}

func (s *Server) onRequest(ctx context.Context, nc netpoll.Connection) error {
	c, _ := ctx.Value(ctxKey{}).(*conn)
	if c == nil || c.rejected {
		nc.Close()
		return nil
	}
	defer func() {
		// A bug in one request must not take the server down: log it and
		// drop this connection only.
		if p := recover(); p != nil {
			fmt.Fprintf(s.cfg.Log, "tandem: panic serving %s: %v\n", nc.RemoteAddr(), p)
			r := nc.Reader()
			c.drop(r, r.Len())
		}
	}()
	c.serve()
	return nil
}

// netpoll runs most batches on a new goroutine, which starts with the
// runtime's smallest stack (2 KiB). Every request path outgrows it, and
// growing it deep in a request copies and re-walks a dozen frames: 3.0 and
// 3.5% of the CPU in two profiles of unpipelined gets and sets, a quarter
// of a replicating node's. The handlers below grow it first, two frames
// deep (1.3 and 2.7% in the same profiles); a goroutine that runs several
// batches grows it once.
// The sizes are the smallest that profiles of unpipelined 1:10 traffic
// (text and binary) and of replicated sets show no growth beyond.

// onPlainRequest is the handler when replication is off: 4 KiB.
func (s *Server) onPlainRequest(ctx context.Context, nc netpoll.Connection) error {
	growStack4K()
	return s.onRequest(ctx, nc)
}

// onReplicatedRequest is the handler when replication is on: a replicated
// write's call chain (store, observer, link buffer) needs 8 KiB.
func (s *Server) onReplicatedRequest(ctx context.Context, nc netpoll.Connection) error {
	growStack8K()
	return s.onRequest(ctx, nc)
}

// stackSink is never set: it keeps the growStack functions' frames from
// being optimised away without ever touching them.
var stackSink byte

// The growStack functions are not inlined: their frames must be gone again
// before the request runs, leaving the grown stack free. The runtime grows
// a stack to the next power of two that holds the frame, what is in use
// and its guard: 2 KiB of frame gives 4 KiB, 6 KiB gives 8 KiB.
//
//go:noinline
func growStack4K() {
	if stackSink != 0 {
		var pad [2 << 10]byte
		stackSink = pad[stackSink]
	}
}

//go:noinline
func growStack8K() {
	if stackSink != 0 {
		var pad [6 << 10]byte
		stackSink = pad[stackSink]
	}
}
