package server

import (
	"bytes"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
)

// detail keeps memcached's "stats detail" counters: gets, hits, sets and
// deletes per key prefix (the key up to the -D delimiter; keys without it
// are not counted). Off by default; when off a request pays one atomic load.
type detail struct {
	on    atomic.Bool
	delim byte

	mu       sync.Mutex
	prefixes map[string]*prefixCounts
}

type prefixCounts struct{ get, hit, set, del uint64 }

// maxPrefixes bounds the table: memcached's grows without limit, which lets
// keys with random prefixes eat the server's memory while detail is on.
const maxPrefixes = 100_000

type detailOp uint8

const (
	detailGet detailOp = iota
	detailSet
	detailDel
)

func (d *detail) record(key []byte, op detailOp, hit bool) {
	if !d.on.Load() {
		return
	}
	i := bytes.IndexByte(key, d.delim)
	if i < 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.prefixes[string(key[:i])]
	if p == nil {
		if d.prefixes == nil {
			d.prefixes = map[string]*prefixCounts{}
		}
		if len(d.prefixes) >= maxPrefixes {
			return
		}
		p = &prefixCounts{}
		d.prefixes[string(key[:i])] = p
	}
	switch op {
	case detailGet:
		p.get++
		if hit {
			p.hit++
		}
	case detailSet:
		p.set++
	case detailDel:
		p.del++
	}
}

// dump appends memcached's "PREFIX <p> get <n> hit <n> set <n> del <n>"
// lines, sorted by prefix, and END.
func (d *detail) dump(dst []byte) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.prefixes))
	for p := range d.prefixes {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, n := range names {
		p := d.prefixes[n]
		dst = append(dst, "PREFIX "...)
		dst = append(dst, n...)
		for _, f := range [...]struct {
			name string
			v    uint64
		}{{" get ", p.get}, {" hit ", p.hit}, {" set ", p.set}, {" del ", p.del}} {
			dst = append(dst, f.name...)
			dst = strconv.AppendUint(dst, f.v, 10)
		}
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "END\r\n"...)
}

func (d *detail) reset() {
	d.mu.Lock()
	d.prefixes = nil
	d.mu.Unlock()
}
