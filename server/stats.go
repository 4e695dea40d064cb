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
	if len(a) == 0 {
		c.generalStats()
		return
	}
	switch string(a[0]) {
	case "settings":
		for _, kv := range c.s.cfg.Settings {
			c.out = protocol.AppendStat(c.out, kv[0], []byte(kv[1]))
		}
	case "items":
		c.itemStats()
	case "slabs":
		c.slabStats()
	case "sizes":
		c.out = append(c.out, "STAT sizes_status disabled\r\n"...)
	case "conns":
		c.connStats()
	case "reset":
		c.s.store.ResetStats()
		c.s.bytesRead.Store(0)
		c.s.bytesWritten.Store(0)
		c.s.totalConns.Store(0)
		c.s.rejected.Store(0)
		c.s.connYields.Store(0)
		c.out = protocol.AppendLine(c.out, "RESET")
		return
	case "cachedump":
		c.cachedump()
		return
	case "detail":
		if len(a) >= 2 {
			switch string(a[1]) {
			case "on", "off":
				c.out = protocol.AppendLine(c.out, "OK")
				return
			case "dump":
				c.out = protocol.AppendLine(c.out, "END")
				return
			}
		}
		c.out = protocol.AppendLine(c.out, "CLIENT_ERROR usage: stats detail on|off|dump")
		return
	default:
		c.out = protocol.AppendLine(c.out, "ERROR")
		return
	}
	c.out = append(c.out, "END\r\n"...)
}

func (c *conn) stat(name string, v uint64) {
	c.out = append(c.out, "STAT "...)
	c.out = append(c.out, name...)
	c.out = append(c.out, ' ')
	c.out = strconv.AppendUint(c.out, v, 10)
	c.out = append(c.out, protocol.CRLF...)
}

func (c *conn) statStr(name, v string) { c.out = protocol.AppendStat(c.out, name, []byte(v)) }

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

func (c *conn) generalStats() {
	s := c.s
	st := s.store.Stats()
	now := time.Now()
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	c.stat("pid", uint64(os.Getpid()))
	c.stat("uptime", uint64(now.Sub(s.start)/time.Second))
	c.stat("time", uint64(now.Unix()))
	c.statStr("version", Version)
	c.statStr("libevent", "netpoll")
	c.stat("pointer_size", 64)
	c.statStr("rusage_user", rusage(ru.Utime))
	c.statStr("rusage_system", rusage(ru.Stime))
	c.stat("max_connections", uint64(s.cfg.MaxConns))
	c.stat("curr_connections", uint64(s.currConns.Load()))
	c.stat("total_connections", uint64(s.totalConns.Load()))
	c.stat("rejected_connections", uint64(s.rejected.Load()))
	c.stat("connection_structures", uint64(s.currConns.Load()))
	for _, n := range []string{"response_obj_oom", "response_obj_count", "response_obj_bytes",
		"read_buf_count", "read_buf_bytes", "read_buf_bytes_free", "read_buf_oom", "reserved_fds"} {
		c.stat(n, 0)
	}
	c.stat("cmd_get", st.CmdGet)
	c.stat("cmd_set", st.CmdSet)
	c.stat("cmd_flush", st.CmdFlush)
	c.stat("cmd_touch", st.CmdTouch)
	c.stat("cmd_meta", s.cmdMeta.Load())
	c.stat("get_hits", st.GetHits)
	c.stat("get_misses", st.GetMisses)
	c.stat("get_expired", st.GetExpired)
	c.stat("get_flushed", st.GetFlushed)
	c.stat("delete_misses", st.DeleteMisses)
	c.stat("delete_hits", st.DeleteHits)
	c.stat("incr_misses", st.IncrMisses)
	c.stat("incr_hits", st.IncrHits)
	c.stat("decr_misses", st.DecrMisses)
	c.stat("decr_hits", st.DecrHits)
	c.stat("cas_misses", st.CasMisses)
	c.stat("cas_hits", st.CasHits)
	c.stat("cas_badval", st.CasBadval)
	c.stat("touch_hits", st.TouchHits)
	c.stat("touch_misses", st.TouchMisses)
	c.stat("store_too_large", st.StoreTooLarge)
	c.stat("store_no_memory", st.StoreNoMemory)
	c.stat("auth_cmds", 0)
	c.stat("auth_errors", 0)
	c.stat("bytes_read", s.bytesRead.Load())
	c.stat("bytes_written", s.bytesWritten.Load())
	c.stat("limit_maxbytes", uint64(st.LimitMaxbytes))
	c.stat("accepting_conns", 1)
	c.stat("listen_disabled_num", 0)
	c.stat("time_in_listen_disabled_us", 0)
	c.stat("threads", uint64(max(s.cfg.Threads, 1)))
	c.stat("conn_yields", s.connYields.Load())
	c.stat("hash_power_level", uint64(hashPower(st.HashBytes)))
	c.stat("hash_bytes", uint64(st.HashBytes))
	c.stat("hash_is_expanding", 0)
	for _, n := range []string{"slab_reassign_rescues", "slab_reassign_chunk_rescues",
		"slab_reassign_evictions_nomem", "slab_reassign_inline_reclaim", "slab_reassign_busy_items",
		"slab_reassign_busy_deletes", "slab_reassign_running"} {
		c.stat(n, 0)
	}
	c.stat("slabs_moved", st.SlabsMoved)
	c.stat("lru_crawler_running", 0)
	c.stat("lru_crawler_starts", st.CrawlerStarts)
	c.stat("lru_maintainer_juggles", 0)
	c.stat("malloc_fails", 0)
	for _, n := range []string{"log_worker_dropped", "log_worker_written", "log_watcher_skipped",
		"log_watcher_sent", "log_watchers", "unexpected_napi_ids", "round_robin_fallback"} {
		c.stat(n, 0)
	}
	c.stat("bytes", uint64(st.Bytes))
	c.stat("curr_items", st.CurrItems)
	c.stat("total_items", st.TotalItems)
	c.stat("slab_global_page_pool", 0)
	c.stat("expired_unfetched", st.ExpiredUnfetched)
	c.stat("evicted_unfetched", st.EvictedUnfetched)
	c.stat("evicted_active", 0)
	c.stat("evictions", st.Evictions)
	c.stat("reclaimed", st.Reclaimed)
	c.stat("crawler_reclaimed", st.CrawlerReclaimed)
	c.stat("crawler_items_checked", st.CrawlerItemsChecked)
	for _, n := range []string{"lrutail_reflocked", "moves_to_cold", "moves_to_warm",
		"moves_within_lru", "direct_reclaims", "lru_bumps_dropped"} {
		c.stat(n, 0)
	}
	c.out = append(c.out, "END\r\n"...)
}

// hashPower is log2 of the index slots, memcached's hash_power_level.
func hashPower(bytes int64) int {
	p := 0
	for n := bytes / 8; n > 1; n >>= 1 {
		p++
	}
	return p
}

func (c *conn) itemStats() {
	for _, cs := range c.s.store.Classes(nil) {
		if cs.Number == 0 {
			continue
		}
		p := "items:" + strconv.Itoa(cs.Class) + ":"
		c.stat(p+"number", uint64(cs.Number))
		c.stat(p+"number_hot", 0)
		c.stat(p+"number_warm", 0)
		c.stat(p+"number_cold", uint64(cs.Number))
		c.stat(p+"age_hot", 0)
		c.stat(p+"age_warm", 0)
		c.stat(p+"age", uint64(cs.Age))
		c.stat(p+"mem_requested", uint64(cs.MemRequested))
		c.stat(p+"evicted", cs.Evicted)
		c.stat(p+"evicted_nonzero", cs.EvictedNonzero)
		c.stat(p+"evicted_time", uint64(cs.EvictedTime))
		c.stat(p+"outofmemory", cs.OutOfMemory)
		c.stat(p+"tailrepairs", 0)
		c.stat(p+"reclaimed", cs.Reclaimed)
		c.stat(p+"expired_unfetched", cs.ExpiredUnfetched)
		c.stat(p+"evicted_unfetched", cs.EvictedUnfetched)
		c.stat(p+"evicted_active", 0)
		c.stat(p+"crawler_reclaimed", cs.CrawlerReclaimed)
		c.stat(p+"crawler_items_checked", cs.CrawlerItemsChecked)
		for _, n := range []string{"lrutail_reflocked", "moves_to_cold", "moves_to_warm",
			"moves_within_lru", "direct_reclaims", "hits_to_hot", "hits_to_warm", "hits_to_cold", "hits_to_temp"} {
			c.stat(p+n, 0)
		}
	}
}

func (c *conn) slabStats() {
	classes := c.s.store.Classes(nil)
	for _, cs := range classes {
		p := strconv.Itoa(cs.Class) + ":"
		c.stat(p+"chunk_size", uint64(cs.ChunkSize))
		c.stat(p+"chunks_per_page", uint64(cs.ChunksPerPage))
		c.stat(p+"total_pages", uint64(cs.TotalPages))
		c.stat(p+"total_chunks", uint64(cs.TotalChunks))
		c.stat(p+"used_chunks", uint64(cs.UsedChunks))
		c.stat(p+"free_chunks", uint64(cs.FreeChunks))
		c.stat(p+"free_chunks_end", uint64(cs.FreeChunksEnd))
		c.stat(p+"get_hits", cs.GetHits)
		c.stat(p+"cmd_set", cs.CmdSet)
		c.stat(p+"delete_hits", cs.DeleteHits)
		c.stat(p+"incr_hits", cs.IncrHits)
		c.stat(p+"decr_hits", cs.DecrHits)
		c.stat(p+"cas_hits", cs.CasHits)
		c.stat(p+"cas_badval", cs.CasBadval)
		c.stat(p+"touch_hits", cs.TouchHits)
	}
	c.stat("active_slabs", uint64(len(classes)))
	c.stat("total_malloced", uint64(c.s.store.Stats().TotalMalloced))
}

func (c *conn) connStats() {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	now := time.Now().Unix()
	for _, ln := range c.s.lns {
		fd := 0
		if f, ok := ln.(interface{ Fd() int }); ok {
			fd = f.Fd()
		}
		p := strconv.Itoa(fd) + ":"
		c.statStr(p+"addr", addrString(ln.Addr().Network(), ln.Addr().String()))
		c.statStr(p+"state", "conn_listening")
		c.stat(p+"secs_since_last_cmd", uint64(now-c.s.start.Unix()))
	}
	for o := range c.s.conns {
		fd := 0
		if f, ok := o.nc.(interface{ Fd() int }); ok {
			fd = f.Fd()
		}
		p := strconv.Itoa(fd) + ":"
		c.statStr(p+"addr", addrString(o.nc.RemoteAddr().Network(), o.nc.RemoteAddr().String()))
		c.statStr(p+"listen_addr", addrString(o.nc.LocalAddr().Network(), o.nc.LocalAddr().String()))
		state := "conn_waiting"
		if o == c {
			state = "conn_parse_cmd"
		}
		c.statStr(p+"state", state)
		c.stat(p+"secs_since_last_cmd", uint64(now-o.lastActive.Load()))
	}
}

func addrString(network, addr string) string {
	if network == "unix" {
		return "unix:" + addr
	}
	return "tcp:" + addr
}

// cachedump answers "stats cachedump <class> <limit>": an ITEM line per
// item of the class, most recently used first, as memcached (an item that
// never expires shows the server's start time).
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
	started := c.s.store.Started()
	c.s.store.Dump(int(cls), int(limit), func(e store.DumpEntry) bool {
		c.out = append(c.out, "ITEM "...)
		c.out = append(c.out, e.Key...)
		c.out = append(c.out, " ["...)
		c.out = strconv.AppendInt(c.out, int64(e.Len), 10)
		c.out = append(c.out, " b; "...)
		exp := e.Exptime
		if exp == 0 {
			exp = started
		}
		c.out = strconv.AppendInt(c.out, exp, 10)
		c.out = append(c.out, " s]\r\n"...)
		return true
	})
	c.out = append(c.out, "END\r\n"...)
}
