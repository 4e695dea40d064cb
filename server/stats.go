package server

import (
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/tandemcache/tandem/protocol"
	"github.com/tandemcache/tandem/store"
)

// stats answers "stats" and its groups with the fields memcached 1.6.18
// prints, in its order, so that memcached_exporter and memcstat work.
// Fields for machinery Tandem does not have (libevent, extstore, the
// segmented LRU's hot/warm moves) are printed with the value memcached has
// when that machinery is idle, so tools that require them keep working.
func (c *conn) stats() {
	a := c.req.Args
	w := statWriter{c: c}
	if len(a) == 0 {
		c.generalStats(w)
		w.end()
		return
	}
	switch string(a[0]) {
	case "settings":
		c.settingsStats(w)
	case "items":
		c.itemStats(w)
	case "slabs":
		c.slabStats(w)
	case "sizes":
		c.sizesStats(w)
	case "sizes_enable", "sizes_disable":
		c.sizesSwitch(w, string(a[0]) == "sizes_enable")
		return // memcached 1.6.18 ends these with no END
	case "conns":
		c.connStats(w)
	case "replication":
		if c.s.repl == nil {
			c.out = protocol.AppendLine(c.out, "ERROR")
			return
		}
		c.s.repl.Stats(w.str)
	case "reset":
		c.resetStats()
		c.out = protocol.AppendLine(c.out, "RESET")
		return
	case "cachedump":
		c.cachedump()
		return
	case "detail":
		if len(a) >= 2 {
			switch string(a[1]) {
			case "on", "off":
				c.s.detail.on.Store(string(a[1]) == "on")
				c.out = protocol.AppendLine(c.out, "OK")
				return
			case "dump":
				c.out = c.s.detail.dump(c.out)
				return
			}
		}
		c.out = protocol.AppendLine(c.out, "CLIENT_ERROR usage: stats detail on|off|dump")
		return
	default:
		c.out = protocol.AppendLine(c.out, "ERROR")
		return
	}
	w.end()
}

// statWriter writes stats in a connection's protocol: "STAT name value"
// lines for text, one STAT packet each for binary. Both protocols share the
// functions that list the stats through it.
type statWriter struct {
	c      *conn
	binary bool
	opaque uint32 // binary: the STAT request's opaque, echoed in each packet
}

func (w statWriter) uint(name string, v uint64) {
	c := w.c
	if w.binary {
		var b [20]byte // the longest uint64
		c.out = protocol.AppendBinaryStat(c.out, w.opaque, name, strconv.AppendUint(b[:0], v, 10))
		return
	}
	c.out = append(c.out, "STAT "...)
	c.out = append(c.out, name...)
	c.out = append(c.out, ' ')
	c.out = strconv.AppendUint(c.out, v, 10)
	c.out = append(c.out, protocol.CRLF...)
}

func (w statWriter) str(name, v string) {
	if w.binary {
		w.c.out = protocol.AppendBinaryStat(w.c.out, w.opaque, name, []byte(v))
		return
	}
	w.c.out = protocol.AppendStat(w.c.out, name, []byte(v))
}

// end closes a list of stats: "END" for text, an empty packet for binary.
func (w statWriter) end() {
	if w.binary {
		w.c.out = protocol.AppendBinaryStat(w.c.out, w.opaque, "", nil)
		return
	}
	w.c.out = append(w.c.out, "END\r\n"...)
}

// settingsStats prints "stats settings": the table cmd made at start, with
// the settings that commands change at run time read as they are now.
func (c *conn) settingsStats(w statWriter) {
	for _, kv := range c.s.cfg.Settings {
		switch kv[0] {
		case "detail_enabled": // stats detail on|off
			kv[1] = "no"
			if c.s.detail.on.Load() {
				kv[1] = "yes"
			}
		case "verbosity": // verbosity N
			kv[1] = strconv.Itoa(int(c.s.verbosity.Load()))
		case "maxbytes": // cache_memlimit N
			kv[1] = strconv.FormatInt(c.s.store.MemoryLimit(), 10)
		case "slab_automove": // slabs automove N
			kv[1] = strconv.Itoa(int(c.s.automove.Load()))
		case "oldest": // flush_all
			kv[1] = strconv.FormatUint(uint64(c.s.store.OldestLive()), 10)
		case "track_sizes": // stats sizes_enable|sizes_disable
			kv[1] = "no"
			if c.s.store.SizesTracked() {
				kv[1] = "yes"
			}
		}
		w.str(kv[0], kv[1])
	}
}

// sizesStats prints "stats sizes": items per 32-byte bucket with
// -o track_sizes, as memcached, or that tracking is off.
func (c *conn) sizesStats(w statWriter) {
	if !c.s.store.Sizes(func(size, n int64) { w.uint(strconv.FormatInt(size, 10), uint64(n)) }) {
		w.str("sizes_status", "disabled")
	}
}

// sizesSwitch answers "stats sizes_enable" and "sizes_disable": the size
// histogram turned on (counting the items stored from then on) or off.
func (c *conn) sizesSwitch(w statWriter, on bool) {
	switch {
	case c.s.store.TrackSizes(on) != nil:
		w.str("sizes_status", "error")
		w.str("sizes_error", "cas_support_disabled")
	case on:
		w.str("sizes_status", "enabled")
	default:
		w.str("sizes_status", "disabled")
	}
}

// resetStats zeroes the counters "stats reset" resets.
func (c *conn) resetStats() {
	c.s.store.ResetStats()
	c.s.bytesRead.Store(0)
	c.s.bytesWritten.Store(0)
	c.s.totalConns.Store(0)
	c.s.rejected.Store(0)
	c.s.connYields.Store(0)
	c.s.authCmds.Store(0)
	c.s.authErrors.Store(0)
	c.s.detail.reset() // memcached clears the prefix stats too
}

func rusage(tv syscall.Timeval) string {
	return strconv.FormatInt(int64(tv.Sec), 10) + "." + leftPad6(int64(tv.Usec))
}

func leftPad6(n int64) string {
	s := strconv.FormatInt(n, 10)
	for len(s) < 6 {
		s = "0" + s
	}
	return s
}

func (c *conn) generalStats(w statWriter) {
	s := c.s
	st := s.store.Stats()
	now := time.Now()
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	w.uint("pid", uint64(os.Getpid()))
	w.uint("uptime", uint64(now.Sub(s.start)/time.Second))
	w.uint("time", uint64(now.Unix()))
	w.str("version", Version)
	w.str("libevent", "netpoll")
	w.uint("pointer_size", 64)
	w.str("rusage_user", rusage(ru.Utime))
	w.str("rusage_system", rusage(ru.Stime))
	w.uint("max_connections", uint64(s.cfg.MaxConns))
	w.uint("curr_connections", uint64(s.currConns.Load()))
	w.uint("total_connections", uint64(s.totalConns.Load()))
	w.uint("rejected_connections", uint64(s.rejected.Load()))
	w.uint("connection_structures", uint64(s.currConns.Load()))
	for _, n := range []string{"response_obj_oom", "response_obj_count", "response_obj_bytes",
		"read_buf_count", "read_buf_bytes", "read_buf_bytes_free", "read_buf_oom", "reserved_fds"} {
		w.uint(n, 0)
	}
	w.uint("cmd_get", st.CmdGet)
	w.uint("cmd_set", st.CmdSet)
	w.uint("cmd_flush", st.CmdFlush)
	w.uint("cmd_touch", st.CmdTouch)
	w.uint("cmd_meta", s.cmdMeta.Load())
	w.uint("get_hits", st.GetHits)
	w.uint("get_misses", st.GetMisses)
	w.uint("get_expired", st.GetExpired)
	w.uint("get_flushed", st.GetFlushed)
	w.uint("delete_misses", st.DeleteMisses)
	w.uint("delete_hits", st.DeleteHits)
	w.uint("incr_misses", st.IncrMisses)
	w.uint("incr_hits", st.IncrHits)
	w.uint("decr_misses", st.DecrMisses)
	w.uint("decr_hits", st.DecrHits)
	w.uint("cas_misses", st.CasMisses)
	w.uint("cas_hits", st.CasHits)
	w.uint("cas_badval", st.CasBadval)
	w.uint("touch_hits", st.TouchHits)
	w.uint("touch_misses", st.TouchMisses)
	w.uint("store_too_large", st.StoreTooLarge)
	w.uint("store_no_memory", st.StoreNoMemory)
	w.uint("auth_cmds", s.authCmds.Load())
	w.uint("auth_errors", s.authErrors.Load())
	w.uint("bytes_read", s.bytesRead.Load())
	w.uint("bytes_written", s.bytesWritten.Load())
	w.uint("limit_maxbytes", uint64(st.LimitMaxbytes))
	w.uint("accepting_conns", 1)
	w.uint("listen_disabled_num", 0)
	w.uint("time_in_listen_disabled_us", 0)
	w.uint("threads", uint64(max(s.cfg.Threads, 1)))
	w.uint("conn_yields", s.connYields.Load())
	w.uint("hash_power_level", uint64(hashPower(st.HashBytes)))
	w.uint("hash_bytes", uint64(st.HashBytes))
	w.uint("hash_is_expanding", 0)
	for _, n := range []string{"slab_reassign_rescues", "slab_reassign_chunk_rescues",
		"slab_reassign_evictions_nomem", "slab_reassign_inline_reclaim", "slab_reassign_busy_items",
		"slab_reassign_busy_deletes", "slab_reassign_running"} {
		w.uint(n, 0)
	}
	w.uint("slabs_moved", st.SlabsMoved)
	w.uint("lru_crawler_running", 0)
	w.uint("lru_crawler_starts", st.CrawlerStarts)
	w.uint("lru_maintainer_juggles", 0)
	w.uint("malloc_fails", 0)
	// Tandem's event sites write lines straight into the watchers' buffers:
	// memcached's per-worker buffers, and so their drops, do not exist.
	w.uint("log_worker_dropped", 0)
	w.uint("log_worker_written", s.watch.gid.Load())
	w.uint("log_watcher_skipped", s.watch.skipped.Load())
	w.uint("log_watcher_sent", s.watch.sent.Load())
	w.uint("log_watchers", uint64(s.watch.watchers()))
	w.uint("unexpected_napi_ids", 0)
	w.uint("round_robin_fallback", 0)
	w.uint("bytes", uint64(st.Bytes))
	w.uint("curr_items", st.CurrItems)
	w.uint("total_items", st.TotalItems)
	w.uint("slab_global_page_pool", 0)
	w.uint("expired_unfetched", st.ExpiredUnfetched)
	w.uint("evicted_unfetched", st.EvictedUnfetched)
	w.uint("evicted_active", 0)
	w.uint("evictions", st.Evictions)
	w.uint("reclaimed", st.Reclaimed)
	w.uint("crawler_reclaimed", st.CrawlerReclaimed)
	w.uint("crawler_items_checked", st.CrawlerItemsChecked)
	for _, n := range []string{"lrutail_reflocked", "moves_to_cold", "moves_to_warm",
		"moves_within_lru", "direct_reclaims", "lru_bumps_dropped"} {
		w.uint(n, 0)
	}
	if s.repl != nil {
		s.repl.Summary(w.str)
	}
}

// hashPower is log2 of the index slots, memcached's hash_power_level.
func hashPower(bytes int64) int {
	p := 0
	for n := bytes / 8; n > 1; n >>= 1 {
		p++
	}
	return p
}

func (c *conn) itemStats(w statWriter) {
	for _, cs := range c.s.store.Classes(nil) {
		if cs.Number == 0 {
			continue
		}
		p := "items:" + strconv.Itoa(cs.Class) + ":"
		w.uint(p+"number", uint64(cs.Number))
		w.uint(p+"number_hot", 0)
		w.uint(p+"number_warm", 0)
		w.uint(p+"number_cold", uint64(cs.Number))
		w.uint(p+"age_hot", 0)
		w.uint(p+"age_warm", 0)
		w.uint(p+"age", uint64(cs.Age))
		w.uint(p+"mem_requested", uint64(cs.MemRequested))
		w.uint(p+"evicted", cs.Evicted)
		w.uint(p+"evicted_nonzero", cs.EvictedNonzero)
		w.uint(p+"evicted_time", uint64(cs.EvictedTime))
		w.uint(p+"outofmemory", cs.OutOfMemory)
		w.uint(p+"tailrepairs", 0)
		w.uint(p+"reclaimed", cs.Reclaimed)
		w.uint(p+"expired_unfetched", cs.ExpiredUnfetched)
		w.uint(p+"evicted_unfetched", cs.EvictedUnfetched)
		w.uint(p+"evicted_active", 0)
		w.uint(p+"crawler_reclaimed", cs.CrawlerReclaimed)
		w.uint(p+"crawler_items_checked", cs.CrawlerItemsChecked)
		for _, n := range []string{"lrutail_reflocked", "moves_to_cold", "moves_to_warm",
			"moves_within_lru", "direct_reclaims", "hits_to_hot", "hits_to_warm", "hits_to_cold", "hits_to_temp"} {
			w.uint(p+n, 0)
		}
	}
}

func (c *conn) slabStats(w statWriter) {
	classes := c.s.store.Classes(nil)
	for _, cs := range classes {
		p := strconv.Itoa(cs.Class) + ":"
		w.uint(p+"chunk_size", uint64(cs.ChunkSize))
		w.uint(p+"chunks_per_page", uint64(cs.ChunksPerPage))
		w.uint(p+"total_pages", uint64(cs.TotalPages))
		w.uint(p+"total_chunks", uint64(cs.TotalChunks))
		w.uint(p+"used_chunks", uint64(cs.UsedChunks))
		w.uint(p+"free_chunks", uint64(cs.FreeChunks))
		w.uint(p+"free_chunks_end", uint64(cs.FreeChunksEnd))
		w.uint(p+"get_hits", cs.GetHits)
		w.uint(p+"cmd_set", cs.CmdSet)
		w.uint(p+"delete_hits", cs.DeleteHits)
		w.uint(p+"incr_hits", cs.IncrHits)
		w.uint(p+"decr_hits", cs.DecrHits)
		w.uint(p+"cas_hits", cs.CasHits)
		w.uint(p+"cas_badval", cs.CasBadval)
		w.uint(p+"touch_hits", cs.TouchHits)
	}
	w.uint("active_slabs", uint64(len(classes)))
	w.uint("total_malloced", uint64(c.s.store.Stats().TotalMalloced))
}

func (c *conn) connStats(w statWriter) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	now := c.s.store.Unix() // the clock of lastActive
	// The store's clock may lag the wall clock by a tick, and the wall
	// clock may step back: never a negative age.
	since := func(t int64) uint64 { return uint64(max(now-t, 0)) }
	for _, ln := range c.s.lns {
		fd := 0
		if f, ok := ln.(interface{ Fd() int }); ok {
			fd = f.Fd()
		}
		p := strconv.Itoa(fd) + ":"
		w.str(p+"addr", addrString(ln.Addr().Network(), ln.Addr().String()))
		w.str(p+"state", "conn_listening")
		w.uint(p+"secs_since_last_cmd", since(c.s.start.Unix()))
	}
	for o := range c.s.conns {
		fd := 0
		if f, ok := o.nc.(interface{ Fd() int }); ok {
			fd = f.Fd()
		}
		p := strconv.Itoa(fd) + ":"
		w.str(p+"addr", addrString(o.nc.RemoteAddr().Network(), o.nc.RemoteAddr().String()))
		w.str(p+"listen_addr", addrString(o.nc.LocalAddr().Network(), o.nc.LocalAddr().String()))
		state := "conn_waiting"
		if o == c {
			state = "conn_parse_cmd"
		}
		w.str(p+"state", state)
		w.uint(p+"secs_since_last_cmd", since(o.lastActive.Load()))
	}
}

func addrString(network, addr string) string {
	if network == "unix" {
		return "unix:" + addr
	}
	return "tcp:" + addr
}

// cachedump answers "stats cachedump <class> <limit>": an ITEM line per
// item of the class, in the order of the class's memory, as memcached 1.6 (an item
// that never expires shows 0 s; older versions showed the server's start
// time).
func (c *conn) cachedump() {
	a := c.req.Args
	switch {
	case c.s.cfg.DisableDumping:
		c.out = protocol.AppendLine(c.out, "CLIENT_ERROR stats cachedump not allowed")
		return
	case len(a) < 3:
		c.out = protocol.AppendLine(c.out, "CLIENT_ERROR bad command line")
		return
	}
	cls, ok1 := protocol.ParseUint32(a[1])
	limit, ok2 := protocol.ParseUint32(a[2])
	switch {
	case !ok1 || !ok2:
		c.out = protocol.AppendLine(c.out, protocol.ErrFormat.Reply)
		return
	case int(cls) > c.s.store.NumClasses():
		c.out = protocol.AppendLine(c.out, "CLIENT_ERROR Illegal slab id")
		return
	}
	c.s.store.Dump(int(cls), int(limit), func(e store.DumpEntry) bool {
		c.out = append(c.out, "ITEM "...)
		c.out = append(c.out, e.Key...)
		c.out = append(c.out, " ["...)
		c.out = strconv.AppendInt(c.out, int64(e.Len), 10)
		c.out = append(c.out, " b; "...)
		c.out = strconv.AppendInt(c.out, e.Exptime, 10)
		c.out = append(c.out, " s]\r\n"...)
		return true
	})
	c.out = append(c.out, "END\r\n"...)
}
