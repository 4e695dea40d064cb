package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/tandemcache/tandem/replication"
)

// options are the parsed command line.
type options struct {
	port, udpPort       int
	listen              []string
	unixSocket          string
	unixMask            os.FileMode
	memory              int64
	maxConns, threads   int
	itemMax             int
	factor              float64
	chunkMin, chunkMax  int
	noEvict, noCAS      bool
	largePages          bool // -L
	verbose             int
	daemon              bool
	pidfile, user       string
	coredumps, lockMem  bool
	reqsPerEvent        int
	protocol            string
	backlog             int
	help, version       bool
	license             bool
	enableShutdown      bool
	disableFlush        bool
	disableDump         bool
	disableWatch        bool
	idleTimeout         time.Duration
	noSlabReassign      bool
	trackSizes          bool
	automove            int
	logfile             string
	warnings            []string
	detailDelim         string
	hashAlgorithm       string
	sasl                bool   // -S
	authFile            string // -Y
	rawListen, extended []string

	// Replication (Tandem's own, long options only).
	peers          []string
	replListen     string
	nodeID         string
	replGroup      string
	replAck        string
	replTimeout    time.Duration
	replWarmup     time.Duration
	replSecretFile string
	replMaxPending int64 // --repl-max-pending, bytes

	cpuProfile string // --cpuprofile: a pprof CPU profile of the whole run
	lowLatency bool   // --low-latency: small batches run on the poller
}

var errHelpShown = errors.New("help shown")

// flagSet declares memcached 1.6's options. Those Tandem does not act on yet
// are accepted with a warning so that existing start scripts keep working.
func flagSet(o *options, out io.Writer) (*pflag.FlagSet, map[string]string) {
	fs := pflag.NewFlagSet("tandem", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.SortFlags = false
	fs.Usage = func() {}
	unsupported := map[string]string{}
	fs.IntVarP(&o.port, "port", "p", 11211, "TCP port to listen on")
	fs.IntVarP(&o.udpPort, "udp-port", "U", 0, "UDP port on the same interfaces (0 = off)")
	fs.StringArrayVarP(&o.rawListen, "listen", "l", nil, "interface to listen on, ADDR or ADDR:PORT; repeatable, comma lists allowed (default all)")
	fs.StringVarP(&o.unixSocket, "unix-socket", "s", "", "unix socket path to listen on (disables TCP)")
	fs.IntVarP(&o.maxConns, "conn-limit", "c", 1024, "max simultaneous connections")
	fs.IntVarP(&o.threads, "threads", "t", 4, "number of event loops")
	fs.Float64VarP(&o.factor, "slab-growth-factor", "f", 1.05, "chunk size growth factor between slab classes")
	fs.IntVarP(&o.chunkMin, "slab-min-size", "n", 48, "minimum space for key, value and flags in the smallest chunk")
	fs.BoolVarP(&o.noEvict, "disable-evictions", "M", false, "return an error on memory exhausted instead of evicting")
	fs.BoolVarP(&o.noCAS, "disable-cas", "C", false, "disable use of CAS")
	fs.BoolVarP(&o.largePages, "enable-largepages", "L", false, "back item memory with transparent huge pages, if the kernel has them")
	fs.CountVarP(&o.verbose, "verbose", "v", "verbose (-vv: very verbose)")
	fs.BoolVarP(&o.daemon, "daemon", "d", false, "run as a daemon")
	fs.StringVarP(&o.pidfile, "pidfile", "P", "", "save the process id in this file")
	fs.StringVarP(&o.user, "user", "u", "", "assume the identity of this user (required when run as root)")
	fs.BoolVarP(&o.coredumps, "enable-coredumps", "r", false, "maximize the core file limit")
	fs.BoolVarP(&o.lockMem, "lock-memory", "k", false, "lock down all paged memory (needs CAP_IPC_LOCK or an unlimited ulimit -l, else a warning and no lock)")
	fs.IntVarP(&o.reqsPerEvent, "max-reqs-per-event", "R", 20, "requests one connection may run before others get a turn")
	fs.StringVarP(&o.protocol, "protocol", "B", "auto", "protocol: auto (detected per connection), ascii or binary")
	fs.IntVarP(&o.backlog, "listen-backlog", "b", 1024, "listen backlog (at most the system's somaxconn)")
	fs.BoolVarP(&o.help, "help", "h", false, "print this help and exit")
	fs.BoolVarP(&o.version, "version", "V", false, "print the version and exit")
	fs.BoolVarP(&o.license, "license", "i", false, "print the license and exit")
	fs.BoolVarP(&o.enableShutdown, "enable-shutdown", "A", false, "enable the ascii shutdown command")
	fs.BoolVarP(&o.disableFlush, "disable-flush-all", "F", false, "refuse flush_all")
	fs.BoolVarP(&o.disableDump, "disable-dumping", "X", false, "refuse stats cachedump and lru_crawler metadump")
	fs.BoolVarP(&o.disableWatch, "disable-watch", "W", false, "refuse watch")
	fs.StringVarP(&o.detailDelim, "", "D", ":", "stats detail key prefix delimiter")
	fs.BoolVarP(&o.sasl, "enable-sasl", "S", false, "require SASL PLAIN authentication (binary protocol only; users in the file named by $MEMCACHED_SASL_PWDB)")
	fs.StringVarP(&o.authFile, "auth-file", "Y", "", "require ascii authentication with the user:password lines of this file (ascii protocol only)")
	fs.StringArrayVarP(&o.extended, "extended", "o", nil, "comma-separated extended options, see below")
	fs.String("config", "", "read options from a file in /etc/memcached.conf format")

	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a pprof CPU profile of the run to this file (written at exit: SIGTERM or SIGINT)")
	fs.BoolVar(&o.lowLatency, "low-latency", false, "answer small requests on the network poller's thread: lower latency at low load, a little more CPU under load (no effect with --peers)")

	// Replication: Tandem's own options, long names only.
	fs.StringSliceVar(&o.peers, "peers", nil, "replication peers, HOST:PORT[,HOST:PORT...] (none: replication off)")
	fs.StringVar(&o.replListen, "repl-listen", "", "this node's replication address, HOST:PORT")
	fs.StringVar(&o.nodeID, "node-id", "", "this node's name in the group (default: --repl-listen)")
	fs.StringVar(&o.replGroup, "repl-group", "tandem", "replica group name; peers of another group are refused")
	fs.StringVar(&o.replAck, "repl-ack", "all", "when a write is acknowledged: all (every in-sync peer has it), quorum (a majority of the group) or async")
	fs.DurationVar(&o.replTimeout, "repl-timeout", 500*time.Millisecond, "how long a write waits for a peer before the peer is marked out of sync")
	fs.DurationVar(&o.replWarmup, "repl-warmup", 5*time.Second, "at start, how long to wait without progress for the peers that are up to refill this node before serving clients anyway (0: serve at once)")
	fs.StringVar(&o.replSecretFile, "repl-secret-file", "", "file holding the shared secret peers must prove")
	fs.String("repl-max-pending", "64m", "bytes of writes a peer's link may hold unsent before the peer is dropped and resynced; writers are held back once a peer is a quarter of this (at most 1m) behind (k, m or g suffix)")

	// memcached options with no effect in Tandem yet: accepted, warned.
	for _, f := range []struct{ long, short, why string }{
		{"memory-file", "e", "warm restart from a memory file is not supported; ignored"},
		{"enable-ssl", "Z", "TLS is not supported; ignored"},
		{"napi_ids", "N", "NAPI ids are not supported; ignored"},
	} {
		if f.long == "memory-file" || f.long == "napi_ids" {
			fs.StringP(f.long, f.short, "", "(not supported: ignored)")
		} else {
			fs.BoolP(f.long, f.short, false, "(not supported: ignored)")
		}
		unsupported[f.long] = f.why
	}
	fs.StringP("unix-mask", "a", "0700", "access mask for the unix socket, in octal")
	fs.StringP("memory-limit", "m", "64", "item memory in megabytes (suffixes k, m, g accepted)")
	fs.StringP("max-item-size", "I", "1m", "largest item, 1k to 1024m (suffixes k, m)")
	return fs, unsupported
}

// parseArgs reads the command line, after the options of a --config file.
func parseArgs(args []string, errOut io.Writer) (*options, error) {
	o := &options{}
	args, logfile, err := expandConfig(args)
	if err != nil {
		return nil, err
	}
	o.logfile = logfile
	fs, unsupported := flagSet(o, errOut)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("tandem: %v (see tandem -h)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("tandem: unexpected argument %q (see tandem -h)", fs.Arg(0))
	}
	if o.help || o.version || o.license {
		return o, nil
	}
	if err := o.checkReplication(); err != nil {
		return nil, err
	}
	fs.Visit(func(f *pflag.Flag) {
		if why, ok := unsupported[f.Name]; ok {
			o.warnings = append(o.warnings, "-"+f.Shorthand+": "+why)
		}
	})
	get := func(name string) string { return fs.Lookup(name).Value.String() }

	if o.memory, err = parseSize(get("memory-limit"), 1<<20); err != nil || o.memory <= 0 {
		return nil, fmt.Errorf("tandem: bad -m %q: a size in megabytes, or with a k, m or g suffix", get("memory-limit"))
	}
	item, err := parseSize(get("max-item-size"), 1)
	if err != nil || item < 1<<10 || item > 1<<30 {
		return nil, fmt.Errorf("tandem: bad -I %q: from 1k to 1024m", get("max-item-size"))
	}
	o.itemMax = int(item)
	if o.replMaxPending, err = parseSize(get("repl-max-pending"), 1); err != nil || o.replMaxPending < 64<<10 || o.replMaxPending > 1<<40 {
		return nil, fmt.Errorf("tandem: bad --repl-max-pending %q: from 64k to 1024g", get("repl-max-pending"))
	}
	if len(o.peers) > 0 && o.replMaxPending < 2*int64(o.itemMax) {
		// One large write alone then passes the bound: every link it goes
		// to is dropped and its peer resynced, at every such write.
		o.warnings = append(o.warnings, fmt.Sprintf("--repl-max-pending %s is less than twice -I %s: a write of a large item drops the links to the peers and resyncs them",
			get("repl-max-pending"), get("max-item-size")))
	}
	m, err := strconv.ParseUint(get("unix-mask"), 8, 32)
	if err != nil {
		return nil, fmt.Errorf("tandem: bad -a %q: an octal mask", get("unix-mask"))
	}
	o.unixMask = os.FileMode(m)
	if o.factor <= 1 {
		return nil, fmt.Errorf("tandem: bad -f %g: must be greater than 1", o.factor)
	}
	if len(o.detailDelim) != 1 {
		return nil, fmt.Errorf("tandem: bad -D %q: one character", o.detailDelim)
	}
	if o.chunkMin < 1 {
		return nil, fmt.Errorf("tandem: bad -n %d: must be positive", o.chunkMin)
	}
	if o.maxConns < 1 || o.threads < 1 || o.reqsPerEvent < 1 {
		return nil, errors.New("tandem: -c, -t and -R must be positive")
	}
	switch o.protocol {
	case "auto", "ascii", "binary":
	default:
		return nil, fmt.Errorf("tandem: bad -B %q: auto, ascii or binary", o.protocol)
	}
	if o.udpPort < 0 || o.udpPort > 65535 {
		return nil, fmt.Errorf("tandem: bad -U %d: a port", o.udpPort)
	}
	// As memcached: SASL implies the binary protocol and ascii
	// authentication the ascii one (which wins when both are given).
	if o.sasl {
		if !fs.Changed("protocol") {
			o.protocol = "binary"
		} else if o.protocol != "binary" {
			return nil, errors.New("ERROR: You cannot allow the ASCII protocol while using SASL.")
		}
	}
	if o.authFile != "" {
		if !fs.Changed("protocol") {
			o.protocol = "ascii"
		} else if o.protocol != "ascii" {
			return nil, errors.New("ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.")
		}
	}
	if o.largePages {
		if why := hugePagesOff(); why != "" {
			o.warnings = append(o.warnings, "-L: "+why+"; item memory uses small pages")
		}
	}
	o.automove = 1
	o.hashAlgorithm = "xxhash"
	if err := o.parseExtended(); err != nil {
		return nil, err
	}
	if o.unixSocket == "" {
		if o.listen, err = listenAddrs(o.rawListen, o.port); err != nil {
			return nil, err
		}
	}
	if os.Geteuid() == 0 && o.user == "" {
		return nil, errors.New("can't run as root without the -u switch")
	}
	return o, nil
}

// parseSize reads a number with an optional k, m or g suffix; a bare
// number is in units.
func parseSize(s string, unit int64) (int64, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	mult := unit
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "g"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, err
	}
	return n * mult, nil
}

// listenAddrs expands -l values (repeatable, comma lists, ADDR or
// ADDR:PORT, memcached's notls: prefix) into host:port addresses.
func listenAddrs(raw []string, port int) ([]string, error) {
	var out []string
	for _, r := range raw {
		for _, a := range strings.Split(r, ",") {
			a = strings.TrimPrefix(strings.TrimSpace(a), "notls:")
			if a == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(a); err == nil {
				out = append(out, a)
				continue
			}
			out = append(out, net.JoinHostPort(strings.Trim(a, "[]"), strconv.Itoa(port)))
		}
	}
	if len(out) == 0 {
		out = []string{":" + strconv.Itoa(port)}
	}
	return out, nil
}

// parseExtended applies the -o suboptions. Known memcached suboptions with
// no effect in Tandem are accepted with a warning; unknown ones are errors,
// as in memcached.
func (o *options) parseExtended() error {
	noEffect := map[string]bool{
		"maxconns_fast": true, "no_maxconns_fast": true, "hashpower": true, "no_hashexpand": true,
		"lru_crawler": true, "no_lru_crawler": true, "lru_maintainer": true,
		"no_lru_maintainer": true, "lru_crawler_sleep": true, "lru_crawler_tocrawl": true,
		"hot_lru_pct": true, "warm_lru_pct": true, "hot_max_factor": true, "warm_max_factor": true,
		"temporary_ttl": true, "tail_repair_time": true, "read_buf_mem_limit": true,
		"modern": true, "no_modern": true, "watcher_logbuf_size": true, "worker_logbuf_size": true,
		"sock_cookie_id": true, "slab_automove_freeratio": true, "slab_automove_window": true,
		"slab_automove_ratio": true, "inline_ascii_resp": true, "no_inline_ascii_resp": true,
		"ext_path": true, "ext_page_size": true, "ext_wbuf_size": true, "ext_threads": true,
		"ext_io_depth": true, "ext_item_size": true, "ext_item_age": true, "ext_low_ttl": true,
		"ext_recache_rate": true, "ext_compact_under": true, "ext_drop_under": true, "ext_max_frag": true,
		"ext_drop_unread": true, "ssl_chain_cert": true, "ssl_key": true, "ssl_verify_mode": true,
		"ssl_keyformat": true, "ssl_ciphers": true, "ssl_ca_cert": true, "ssl_wbuf_size": true,
		"ssl_session_cache": true, "ssl_kernel_tls": true, "ssl_min_version": true,
		"proxy_config": true, "proxy_arg": true, "num_napi_ids": true,
	}
	privileges := map[string]bool{"relaxed_privileges": true, "drop_privileges": true, "no_drop_privileges": true}
	for _, group := range o.extended {
		for _, sub := range strings.Split(group, ",") {
			sub = strings.TrimSpace(sub)
			if sub == "" {
				continue
			}
			name, val, hasVal := strings.Cut(sub, "=")
			switch {
			case name == "idle_timeout":
				n, err := strconv.Atoi(val)
				if err != nil || n < 0 {
					return fmt.Errorf("tandem: bad -o idle_timeout=%q: seconds", val)
				}
				o.idleTimeout = time.Duration(n) * time.Second
			case name == "slab_chunk_max":
				n, err := parseSize(val, 1)
				if err != nil || n < 1 {
					return fmt.Errorf("tandem: bad -o slab_chunk_max=%q", val)
				}
				if !strings.ContainsAny(val, "kKmM") && n < 2048 {
					n <<= 10 // memcached takes small values as kilobytes
				}
				o.chunkMax = int(n)
			case name == "slab_automove":
				o.automove = 1
				if hasVal {
					n, err := strconv.Atoi(val)
					if err != nil || n < 0 || n > 2 {
						return fmt.Errorf("tandem: bad -o slab_automove=%q: 0, 1 or 2", val)
					}
					o.automove = n
				}
			case name == "track_sizes":
				o.trackSizes = true
			case name == "no_slab_automove":
				o.automove = 0
			case name == "slab_reassign":
				o.noSlabReassign = false
			case name == "no_slab_reassign":
				o.noSlabReassign = true
			case name == "hash_algorithm":
				switch val {
				case "murmur3", "jenkins", "xxh3":
					o.warnings = append(o.warnings, "-o hash_algorithm: Tandem always hashes with xxhash; ignored")
				default:
					return fmt.Errorf("tandem: bad -o hash_algorithm=%q", val)
				}
			case privileges[name]:
			case noEffect[name]:
				o.warnings = append(o.warnings, "-o "+name+": no effect in Tandem; ignored")
			default:
				return fmt.Errorf("Illegal suboption %q", sub)
			}
		}
	}
	return nil
}

// expandConfig puts the options of a --config file (Debian's
// /etc/memcached.conf format: one option and its value per line, # starts a
// comment) before the other arguments, so the command line wins. Its
// "logfile PATH" line, which Debian's start script handles, sends the log
// there.
func expandConfig(args []string) ([]string, string, error) {
	var path string
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--config" && i+1 < len(args):
			path = args[i+1]
			i++
		case strings.HasPrefix(a, "--config="):
			path = strings.TrimPrefix(a, "--config=")
		default:
			rest = append(rest, a)
		}
	}
	if path == "" {
		return args, "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("tandem: reading config: %w", err)
	}
	defer f.Close()
	var out []string
	var logfile string
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		l := sc.Text()
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		fields := strings.Fields(l)
		if len(fields) == 0 {
			continue
		}
		if fields[0] == "logfile" {
			if len(fields) != 2 {
				return nil, "", fmt.Errorf("tandem: %s:%d: logfile takes one path", path, line)
			}
			logfile = fields[1]
			continue
		}
		if !strings.HasPrefix(fields[0], "-") {
			return nil, "", fmt.Errorf("tandem: %s:%d: %q is not an option", path, line, fields[0])
		}
		out = append(out, fields[0])
		if len(fields) > 1 {
			out = append(out, strings.Join(fields[1:], " "))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, "", fmt.Errorf("tandem: reading config: %w", err)
	}
	return append(out, rest...), logfile, nil
}

// settings are the lines of "stats settings", in memcached 1.6.18's order.
func (o *options) settings(chunkMax int) [][2]string {
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	inter := "NULL"
	if len(o.rawListen) > 0 {
		inter = strings.Join(o.rawListen, ",")
	}
	socket := "NULL"
	if o.unixSocket != "" {
		socket = o.unixSocket
	}
	proto := map[string]string{"auto": "auto-negotiate", "ascii": "ascii", "binary": "binary"}[o.protocol]
	authASCII := "no" // memcached shows the authfile's path
	if o.authFile != "" {
		authASCII = o.authFile
	}
	i := strconv.Itoa
	return [][2]string{
		{"maxbytes", strconv.FormatInt(o.memory, 10)}, {"maxconns", i(o.maxConns)},
		{"tcpport", i(o.port)}, {"udpport", i(o.udpPort)}, {"inter", inter},
		{"verbosity", i(o.verbose)}, {"oldest", "0"}, {"evictions", map[bool]string{true: "off", false: "on"}[o.noEvict]},
		{"domain_socket", socket}, {"umask", strconv.FormatUint(uint64(o.unixMask), 8)},
		{"shutdown_command", yn(o.enableShutdown)}, {"growth_factor", strconv.FormatFloat(o.factor, 'f', 2, 64)},
		{"chunk_size", i(o.chunkMin)}, {"num_threads", i(o.threads)}, {"num_threads_per_udp", i(o.threads)},
		{"stat_key_prefix", o.detailDelim}, {"detail_enabled", "no"}, {"reqs_per_event", i(o.reqsPerEvent)},
		{"cas_enabled", yn(!o.noCAS)}, {"tcp_backlog", i(o.backlog)}, {"binding_protocol", proto},
		{"auth_enabled_sasl", yn(o.sasl)}, {"auth_enabled_ascii", authASCII}, {"item_size_max", i(o.itemMax)},
		{"maxconns_fast", "yes"}, {"hashpower_init", "0"}, {"slab_reassign", yn(!o.noSlabReassign)},
		{"slab_automove", i(o.automove)}, {"slab_automove_ratio", "0.80"}, {"slab_automove_window", "30"},
		{"slab_chunk_max", i(chunkMax)}, {"lru_crawler", "yes"}, {"lru_crawler_sleep", "100"},
		{"lru_crawler_tocrawl", "0"}, {"tail_repair_time", "0"}, {"flush_enabled", yn(!o.disableFlush)},
		{"dump_enabled", yn(!o.disableDump)}, {"hash_algorithm", o.hashAlgorithm},
		{"lru_maintainer_thread", "yes"}, {"lru_segmented", "no"}, {"hot_lru_pct", "20"},
		{"warm_lru_pct", "40"}, {"hot_max_factor", "0.20"}, {"warm_max_factor", "2.00"},
		{"temp_lru", "no"}, {"temporary_ttl", "61"}, {"idle_timeout", i(int(o.idleTimeout / time.Second))},
		{"watcher_logbuf_size", "262144"}, {"worker_logbuf_size", "65536"}, {"read_buf_mem_limit", "0"},
		{"track_sizes", yn(o.trackSizes)}, {"inline_ascii_response", "no"}, {"ext_item_size", "512"},
		{"ext_item_age", "4294967295"}, {"ext_low_ttl", "0"}, {"ext_recache_rate", "2000"},
		{"ext_wbuf_size", "4194304"}, {"ext_compact_under", "0"}, {"ext_drop_under", "0"},
		{"ext_max_sleep", "1000000"}, {"ext_max_frag", "0.80"}, {"slab_automove_freeratio", "0.010"},
		{"ext_drop_unread", "no"}, {"ssl_enabled", "no"}, {"ssl_chain_cert", "(null)"}, {"ssl_key", "(null)"},
		{"ssl_verify_mode", "0"}, {"ssl_keyformat", "1"}, {"ssl_ciphers", "NULL"}, {"ssl_ca_cert", "NULL"},
		{"ssl_wbuf_size", "16384"}, {"ssl_session_cache", "no"}, {"ssl_kernel_tls", "no"},
		{"ssl_min_version", "tlsv1.2"}, {"num_napi_ids", "(null)"}, {"memory_file", "(null)"},
	}
}

func usage(w io.Writer) {
	var o options
	fs, _ := flagSet(&o, w)
	fmt.Fprintf(w, "tandem %s-compatible cache server\n\nUsage: tandem [options]\n\n", "memcached")
	fs.VisitAll(func(f *pflag.Flag) {
		if strings.HasPrefix(f.Usage, "(not supported") {
			return // -h lists only what Tandem supports
		}
		name := "--" + f.Name
		if f.Name == "" || f.Name == f.Shorthand {
			name = ""
		}
		short := "    "
		if f.Shorthand != "" {
			short = "-" + f.Shorthand + ", "
		}
		def := ""
		switch f.DefValue {
		case "", "false", "0", "[]":
		default:
			def = " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "  %s%-24s %s%s\n", short, name, f.Usage, def)
	})
	fmt.Fprint(w, `
-o options (comma separated, repeatable):
  idle_timeout=SECONDS     close connections idle that long (default 0: never)
  slab_chunk_max=BYTES     largest slab chunk; larger items are chained (default 512k)
  slab_automove=0|1|2      move slab pages between classes as sizes shift (default 1)
  no_slab_automove         same as slab_automove=0
  Other memcached -o options are accepted and ignored with a warning.
`)
}

// checkReplication validates the replication options together.
func (o *options) checkReplication() error {
	if len(o.peers) == 0 {
		for _, f := range []struct{ name, v string }{{"repl-listen", o.replListen}, {"node-id", o.nodeID}, {"repl-secret-file", o.replSecretFile}} {
			if f.v != "" {
				return fmt.Errorf("tandem: --%s needs --peers (replication is off without peers)", f.name)
			}
		}
		return nil
	}
	switch {
	case o.replListen == "":
		return errors.New("tandem: --peers needs --repl-listen, this node's replication address")
	case o.noCAS:
		return errors.New("tandem: replication needs CAS: -C cannot be used with --peers")
	case o.replTimeout <= 0:
		return fmt.Errorf("tandem: bad --repl-timeout %v: must be positive", o.replTimeout)
	case o.replWarmup < 0:
		return fmt.Errorf("tandem: bad --repl-warmup %v: must not be negative", o.replWarmup)
	}
	if _, err := replication.ParseAckRule(o.replAck); err != nil {
		return fmt.Errorf("tandem: bad --repl-ack %q: all, quorum or async", o.replAck)
	}
	for _, p := range append([]string{o.replListen}, o.peers...) {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return fmt.Errorf("tandem: bad replication address %q: HOST:PORT", p)
		}
	}
	return nil
}
