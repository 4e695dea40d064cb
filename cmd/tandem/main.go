// Command tandem is a memcached-compatible cache server. It takes
// memcached's command line; see tandem -h.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"github.com/tandemcache/tandem/replication"
	"github.com/tandemcache/tandem/server"
	"github.com/tandemcache/tandem/store"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run starts the server with memcached's arguments and returns the exit
// status once it stops.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, stderr)
	if err != nil {
		if errors.Is(err, errHelpShown) {
			return 0
		}
		fmt.Fprintln(stderr, err)
		return 64 // EX_USAGE, as memcached
	}
	switch {
	case o.help:
		usage(stdout)
		return 0
	case o.version:
		fmt.Fprintln(stdout, "memcached "+server.Version+" (tandem)")
		return 0
	case o.license:
		fmt.Fprintln(stdout, "Tandem. See the LICENSE of the source distribution.")
		return 0
	}
	if o.logfile != "" {
		f, err := os.OpenFile(o.logfile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "tandem: opening log file: %v\n", err)
			return 71
		}
		defer f.Close()
		stderr = f
	}
	for _, w := range o.warnings {
		fmt.Fprintln(stderr, "tandem: warning: "+w)
	}
	// The user files are read before daemonizing, so that an error shows.
	users, err := loadUsers(o)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1 // EXIT_FAILURE, as memcached
	}
	if o.daemon && os.Getenv(daemonEnv) == "" {
		return daemonize(stderr)
	}
	if err := setup(o); err != nil {
		fmt.Fprintf(stderr, "tandem: %v\n", err)
		return 71
	}
	return serve(o, users, stderr)
}

// authUsers are the users of -S and -Y; nil when the flag is off.
type authUsers struct {
	sasl, ascii *server.Users
}

// loadUsers reads the password files of -S (named by MEMCACHED_SASL_PWDB,
// as memcached) and -Y. memcached exits with status 1 when it cannot, and
// so does Tandem (memcached also needs a SASL configuration for -S, and
// Debian's build ignores MEMCACHED_SASL_PWDB; Tandem has neither quirk).
func loadUsers(o *options) (authUsers, error) {
	var u authUsers
	var err error
	if o.sasl {
		path := os.Getenv("MEMCACHED_SASL_PWDB")
		if path == "" {
			return u, errors.New("tandem: -S needs MEMCACHED_SASL_PWDB: the path of a file of user:password lines")
		}
		if u.sasl, err = server.LoadSASLUsers(path); err != nil {
			return u, fmt.Errorf("tandem: could not read the SASL password file [%s] (MEMCACHED_SASL_PWDB): %w", path, err)
		}
	}
	if o.authFile != "" {
		u.ascii, err = server.LoadAuthFile(o.authFile)
		switch {
		case errors.Is(err, server.ErrAuthFileMalformed):
			return u, fmt.Errorf("Authfile [%s] has a malformed entry. Should be 'user:password' (%v)", o.authFile, err)
		case err != nil:
			return u, fmt.Errorf("Could not open authfile [%s] for reading: %w", o.authFile, err)
		}
	}
	return u, nil
}

// eventLoops is the number of netpoll pollers for -t threads where the
// runtime runs goroutines on procs processors: -t, but no more than procs.
// memcached's -t counts worker threads, and 4 (its default) is right for it
// on any machine; a poller more than Go has processors only blocks in
// epoll_wait holding one, and Go's sysmon then takes processors back from
// pollers again and again. On 2 CPUs at 2,000 requests/s -t 4 cost 4-5x
// memcached's CPU per request against 1.2-1.5x with 2 pollers, and 2
// pollers were level with 4 under load (docs/performance.md, fifteenth
// session).
func eventLoops(threads, procs int) int {
	return max(min(threads, procs), 1)
}

// lowLatencyProcs is GOMAXPROCS under --low-latency for loops pollers: a
// processor for each and one spare.
func lowLatencyProcs(loops int) int {
	return loops + 1
}

func serve(o *options, users authUsers, stderr io.Writer) int {
	// The runtime's own GOMAXPROCS follows the CPUs this process may use
	// (its cgroup limit included).
	loops := eventLoops(o.threads, runtime.GOMAXPROCS(0))
	if o.verbose > 0 && loops < o.threads {
		fmt.Fprintf(stderr, "tandem: -t %d: %d event loops, one per processor Go may use\n", o.threads, loops)
	}
	// netpoll's pollers play the role of memcached's worker threads.
	if err := netpoll.SetNumLoops(loops); err != nil {
		fmt.Fprintf(stderr, "tandem: setting %d event loops: %v\n", loops, err)
		return 71
	}
	if o.lowLatency && o.peers == nil && os.Getenv("GOMAXPROCS") == "" {
		// Handlers run on the pollers, which block in epoll_wait holding a
		// processor each. With no processor left idle, Go's sysmon takes
		// them back again and again and never sleeps: up to 3x the CPU per
		// request at low load. One spare processor stops that
		// (docs/performance.md, twelfth session). Setting it stops the
		// runtime from following later changes of the CPU limit.
		runtime.GOMAXPROCS(lowLatencyProcs(loops))
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "tandem: --cpuprofile: %v\n", err)
			return 71
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "tandem: --cpuprofile: %v\n", err)
			return 71
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	repl, err := newReplicator(o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "tandem: %v\n", err)
		return 71
	}
	clock := store.NewClock()
	scfg := store.Config{
		MemoryLimit:  o.memory,
		ItemSizeMax:  o.itemMax,
		ChunkMin:     o.chunkMin,
		GrowthFactor: o.factor,
		ChunkMax:     o.chunkMax,
		NoEvict:      o.noEvict,
		NoCAS:        o.noCAS,
		Clock:        clock,
		NoAutomove:   o.automove == 0,
		TrackSizes:   o.trackSizes,
		LargePages:   o.largePages,
	}
	if repl != nil {
		scfg.Observer = repl // not a typed nil: replication off leaves it unset
	}
	st, err := store.New(scfg)
	if err != nil {
		fmt.Fprintf(stderr, "tandem: %v\n", err)
		return 71
	}
	// The store is never closed: after a shutdown's grace period a handler
	// may still be finishing a request, and unmapping its memory under it
	// would crash the exit. The process ends right after; the kernel frees it.

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go clock.Run(ctx) // the store reads this clock; nothing else moves it
	go st.Run(ctx)
	if o.verbose > 1 {
		var b []byte
		st.ClassSizes(func(cls, chunk, perPage int) {
			b = fmt.Appendf(b, "slab class %3d: chunk size %9d perslab %7d\n", cls, chunk, perPage)
		})
		_, _ = stderr.Write(b)
	}

	stop := make(chan bool, 1)
	srvCfg := server.Config{
		Listen:          o.listen,
		UDPPort:         o.udpPort,
		UnixSocket:      o.unixSocket,
		UnixMask:        o.unixMask,
		Backlog:         o.backlog,
		MaxConns:        o.maxConns,
		ReqsPerEvent:    o.reqsPerEvent,
		IdleTimeout:     o.idleTimeout,
		Protocol:        map[string]server.Protocol{"auto": server.ProtocolAuto, "ascii": server.ProtocolASCII, "binary": server.ProtocolBinary}[o.protocol],
		EnableShutdown:  o.enableShutdown,
		DisableFlush:    o.disableFlush,
		DisableDumping:  o.disableDump,
		DisableWatch:    o.disableWatch,
		NoSlabReassign:  o.noSlabReassign,
		Verbosity:       o.verbose,
		DetailDelimiter: o.detailDelim[0],
		Log:             stderr,
		Settings:        o.settings(st.ChunkMax()),
		Threads:         o.threads,
		OnShutdown:      func(graceful bool) { stop <- graceful },
		SASL:            users.sasl,
		AuthFile:        users.ascii,
		LowLatency:      o.lowLatency,
	}
	if repl != nil {
		if err := repl.Start(st); err != nil {
			fmt.Fprintf(stderr, "tandem: %v\n", err)
			return 71
		}
		defer repl.Close()
		srvCfg.Replicator = repl
		// Clients are served only once the peers have refilled this node:
		// the listeners are not open yet, so clients find it down and go
		// to another node meanwhile (replication/warmup.go).
		if o.replWarmup > 0 {
			// Say why the port stays closed when it takes a while.
			slow := time.AfterFunc(time.Second, func() {
				fmt.Fprintln(stderr, "tandem: waiting for the peers to refill this node before serving clients (--repl-warmup)")
			})
			w := repl.WaitRefilled(ctx, o.replWarmup)
			slow.Stop()
			list := func(s []string) string {
				if len(s) == 0 {
					return "none"
				}
				return strings.Join(s, ", ")
			}
			if w.GaveUp() {
				fmt.Fprintf(stderr, "tandem: warning: serving after %v of warmup without a refill from %s (refilled by %s; down: %s)\n",
					w.Waited.Round(time.Millisecond), list(w.Missing), list(w.RefilledBy), list(w.Down))
			} else if o.verbose > 0 {
				fmt.Fprintf(stderr, "tandem: warmup done in %v: refilled by %s; down: %s\n",
					w.Waited.Round(time.Millisecond), list(w.RefilledBy), list(w.Down))
			}
		}
	}
	srv, err := server.New(srvCfg, st)
	if err != nil {
		fmt.Fprintf(stderr, "tandem: %v\n", err)
		return 71
	}
	if o.pidfile != "" {
		if err := os.WriteFile(o.pidfile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
			fmt.Fprintf(stderr, "tandem: writing pid file: %v\n", err)
		}
		defer os.Remove(o.pidfile)
	}
	if err := dropPrivileges(o.user); err != nil {
		fmt.Fprintf(stderr, "tandem: %v\n", err)
		return 71
	}
	if o.lockMem {
		if w := lockMemory(); w != "" {
			fmt.Fprintln(stderr, "tandem: warning: "+w)
		}
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	var exiting atomic.Bool // memcached's -v says so when SIGTERM or SIGINT stops it
	go func() {
		sig := <-sigs
		if sig == syscall.SIGUSR1 {
			if o.verbose > 0 {
				fmt.Fprintln(stderr, "Gracefully stopping")
			}
		} else {
			exiting.Store(true)
		}
		stop <- true
	}()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	if o.verbose > 0 {
		for _, a := range srv.Addrs() {
			fmt.Fprintf(stderr, "tandem: listening on %s\n", a)
		}
	}
	select {
	case err := <-errc:
		if err != nil {
			fmt.Fprintf(stderr, "tandem: %v\n", err)
			return 71
		}
	case graceful := <-stop:
		// Stop accepting, let requests in flight finish, close the rest.
		grace := 100 * time.Millisecond
		if graceful {
			grace = 5 * time.Second
		}
		sctx, scancel := context.WithTimeout(context.Background(), grace)
		_ = srv.Shutdown(sctx)
		scancel()
		if exiting.Load() && o.verbose > 0 {
			fmt.Fprintln(stderr, "Exiting normally")
		}
	}
	return 0
}

// newReplicator builds the replication side from the --peers options, or
// returns nil when replication is off.
func newReplicator(o *options, stderr io.Writer) (*replication.Replicator, error) {
	if len(o.peers) == 0 {
		return nil, nil
	}
	ack, _ := replication.ParseAckRule(o.replAck) // checked by parseArgs
	cfg := replication.Config{
		Listen:     o.replListen,
		Peers:      o.peers,
		NodeID:     o.nodeID,
		Group:      o.replGroup,
		Ack:        ack,
		Timeout:    o.replTimeout,
		MaxPending: int(o.replMaxPending),
	}
	if o.verbose > 0 {
		cfg.Log = stderr
	}
	if o.replSecretFile != "" {
		b, err := os.ReadFile(o.replSecretFile)
		if err != nil {
			return nil, fmt.Errorf("reading --repl-secret-file: %w", err)
		}
		cfg.Secret = bytes.TrimSpace(b)
		if len(cfg.Secret) == 0 {
			return nil, fmt.Errorf("--repl-secret-file %s is empty", o.replSecretFile)
		}
	}
	return replication.New(cfg)
}
