package server

import (
	"encoding/base64"
	"strconv"

	"github.com/tandemcache/tandem/protocol"
	"github.com/tandemcache/tandem/store"
)

// Meta replies echo the return flags in the order the request gave them,
// each after a space; memcached 1.6.18 was probed for every shape used here.

// appendKeyFlag appends " k<key>" for a miss or failure: the key as sent,
// followed by " b" when it was base64.
func (c *conn) appendKeyFlag(m *protocol.Meta) {
	c.out = append(c.out, " k"...)
	c.out = append(c.out, m.RawKey...)
	if m.Base64 {
		c.out = append(c.out, " b"...)
	}
}

// appendItemKey appends " k<key>" for a hit, as memcached: the stored key,
// base64-encoded and followed by " b" only if it was stored with b.
func (c *conn) appendItemKey(it store.Item) {
	c.out = append(c.out, " k"...)
	if it.BinaryKey() {
		c.out = base64.StdEncoding.AppendEncode(c.out, it.Key())
		c.out = append(c.out, " b"...)
		return
	}
	c.out = append(c.out, it.Key()...)
}

// appendOpaqueKey appends the O and k flags, the only ones echoed on
// misses and failures.
func (c *conn) appendOpaqueKey(m *protocol.Meta) {
	for _, f := range m.Flags {
		c.appendEcho(m, f)
	}
}

// appendEcho appends flag f if it is one that is echoed as the request
// gave it: O (opaque) or k (the key).
func (c *conn) appendEcho(m *protocol.Meta, f []byte) {
	switch f[0] {
	case 'O':
		c.out = append(c.out, ' ')
		c.out = append(c.out, f...)
	case 'k':
		c.appendKeyFlag(m)
	}
}

func (c *conn) metaGet() {
	r := &c.req
	m := &r.Meta
	opts := store.GetOptions{
		Touch: m.HasTTL, Exptime: m.TTL,
		NoBump: m.NoUpdate,
		Vivify: m.Vivify, VivifyExptime: m.VivifyTTL,
		Recache: m.Recache, RecacheExptime: m.RecacheTTL,
		Tokens: true,
	}
	watching := c.s.watch.wants(watchFetchers)
	if watching {
		opts.Miss = &c.miss
	}
	if err := c.s.store.Get(r.Key, opts, c.metaHit); err == nil {
		return
	}
	if watching {
		c.logMiss(r.Key, opts.Miss)
	}
	if m.Quiet {
		return
	}
	c.out = append(c.out, "EN"...)
	c.appendOpaqueKey(m)
	c.out = append(c.out, protocol.CRLF...)
}

// appendMetaHit is the store callback of mg.
func (c *conn) appendMetaHit(it store.Item) {
	if c.s.watch.wants(watchFetchers) {
		c.logFetch(it.Key(), "found", it.Class(), it.Len())
	}
	m := &c.req.Meta
	if m.Value {
		c.out = append(c.out, "VA "...)
		c.out = strconv.AppendInt(c.out, int64(it.Len()), 10)
	} else {
		c.out = append(c.out, "HD"...)
	}
	// memcached applies T (and N to an item it just made) in flag order: a
	// t before them reports the TTL before.
	touched := false
	for _, f := range m.Flags {
		switch f[0] {
		case 'T':
			touched = true
		case 'N':
			touched = touched || it.Created
		case 's':
			c.out = append(c.out, " s"...)
			c.out = strconv.AppendInt(c.out, int64(it.Len()), 10)
		case 't':
			ttl := it.TTL
			if (m.HasTTL || it.Created) && !touched {
				ttl = it.PrevTTL
			}
			c.out = append(c.out, " t"...)
			c.out = strconv.AppendInt(c.out, ttl, 10)
		case 'c':
			c.out = append(c.out, " c"...)
			c.out = strconv.AppendUint(c.out, it.CAS, 10)
		case 'f':
			c.out = append(c.out, " f"...)
			c.out = strconv.AppendUint(c.out, uint64(it.Flags), 10)
		case 'l':
			c.out = append(c.out, " l"...)
			c.out = strconv.AppendInt(c.out, it.LastAccess, 10)
		case 'h':
			if it.Fetched {
				c.out = append(c.out, " h1"...)
			} else {
				c.out = append(c.out, " h0"...)
			}
		case 'O':
			c.out = append(c.out, ' ')
			c.out = append(c.out, f...)
		case 'k':
			c.appendItemKey(it)
		}
	}
	if it.TokenSent {
		c.out = append(c.out, " Z"...)
	}
	if it.Stale {
		c.out = append(c.out, " X"...)
	}
	if it.Won {
		c.out = append(c.out, " W"...)
	}
	c.out = append(c.out, protocol.CRLF...)
	if m.Value {
		c.out = it.AppendValue(c.out)
		c.out = append(c.out, protocol.CRLF...)
	}
}

func (c *conn) metaSet(value []byte) {
	r := &c.req
	m := &r.Meta
	o := store.SetOptions{Flags: m.Flags32, Invalidate: m.Invalidate, BinaryKey: m.Base64}
	if m.HasTTL {
		o.Exptime = m.TTL
	}
	switch m.Mode {
	case 'E':
		o.Mode = store.ModeAdd
	case 'A':
		o.Mode = store.ModeAppend
	case 'P':
		o.Mode = store.ModePrepend
	case 'R':
		o.Mode = store.ModeReplace
	}
	if m.HasCAS {
		o.CAS = m.CAS
		if o.Mode == store.ModeSet || o.Mode == store.ModeReplace {
			o.Mode = store.ModeCAS
		}
	}
	// ms N (autovivify on append) is documented, but memcached 1.6.18
	// answers NS: so does Tandem.
	c.watchLookup(r.Key)
	cas, err := c.s.store.Set(r.Key, value, o)
	if m.HasCAS && err == nil {
		c.casWrote = cas
	}
	if c.s.watch.wants(watchMutations) {
		c.logStore(r.Key, o.Mode, err, o.Flags, o.Exptime, len(value))
	}
	var code string
	switch err {
	case nil:
		if m.Quiet {
			return
		}
		code = "HD"
	case store.ErrNotStored:
		code = "NS"
	case store.ErrExists:
		code = "EX"
	case store.ErrNotFound:
		code = "NF"
	default:
		c.out = protocol.AppendLine(c.out, storeReply(err))
		return
	}
	c.out = append(c.out, code...)
	for _, f := range m.Flags {
		if f[0] != 'c' {
			c.appendEcho(m, f)
			continue
		}
		if err != nil {
			cas = 0 // memcached shows the CAS of the item not stored
		}
		c.out = append(c.out, " c"...)
		c.out = strconv.AppendUint(c.out, cas, 10)
	}
	c.out = append(c.out, protocol.CRLF...)
}

func (c *conn) metaDelete() {
	r := &c.req
	m := &r.Meta
	o := store.DeleteOptions{Invalidate: m.Invalidate, Touch: m.HasTTL, Exptime: m.TTL}
	if m.HasCAS {
		o.CAS = m.CAS
	}
	c.watchLookup(r.Key)
	switch c.s.store.Delete(r.Key, o) {
	case nil:
		if m.Quiet {
			return
		}
		c.out = append(c.out, "HD"...)
	case store.ErrExists:
		c.out = append(c.out, "EX"...)
	default:
		c.out = append(c.out, "NF"...)
	}
	c.appendOpaqueKey(m)
	c.out = append(c.out, protocol.CRLF...)
}

func (c *conn) metaArith() {
	r := &c.req
	m := &r.Meta
	o := store.ArithOptions{
		Decr:  m.Mode == 'D' || m.Mode == 'd' || m.Mode == '-',
		Delta: m.Delta,
		Touch: m.HasTTL, Exptime: m.TTL,
		Vivify: m.Vivify, Initial: m.Initial, VivifyExptime: m.VivifyTTL,
	}
	if m.HasCAS {
		o.CAS = m.CAS
	}
	if m.HasTTL && m.Vivify {
		for _, f := range m.Flags { // which of T and N comes last
			if f[0] == 'T' || f[0] == 'N' {
				o.VivifyLast = f[0] == 'N'
			}
		}
	}
	c.watchLookup(r.Key)
	res, err := c.s.store.Arith(r.Key, o)
	if res.Created {
		c.logCreated(r.Key, res.Value, 0) // memcached sets the TTL after
	}
	switch err {
	case nil:
	case store.ErrNotFound:
		c.out = append(c.out, "NF"...)
		c.appendOpaqueKey(m)
		c.out = append(c.out, protocol.CRLF...)
		return
	case store.ErrExists:
		c.out = append(c.out, "EX"...)
		c.appendOpaqueKey(m)
		c.out = append(c.out, protocol.CRLF...)
		return
	case store.ErrNonNumeric:
		c.out = protocol.AppendLine(c.out, "CLIENT_ERROR cannot increment or decrement non-numeric value")
		return
	default:
		c.out = protocol.AppendLine(c.out, "SERVER_ERROR out of memory")
		return
	}
	if m.Quiet && !res.Created {
		return // memcached answers an ma that made its item even with q
	}
	var num [20]byte
	digits := strconv.AppendUint(num[:0], res.Value, 10)
	if m.Value {
		c.out = append(c.out, "VA "...)
		c.out = strconv.AppendInt(c.out, int64(len(digits)), 10)
	} else {
		c.out = append(c.out, "HD"...)
	}
	// memcached applies T and N and prints t in the order of the flags:
	// t shows the TTL as the flags before it left it.
	ttl := res.PrevTTL
	for _, f := range m.Flags {
		switch f[0] {
		case 'c':
			c.out = append(c.out, " c"...)
			c.out = strconv.AppendUint(c.out, res.CAS, 10)
		case 't':
			c.out = append(c.out, " t"...)
			c.out = strconv.AppendInt(c.out, ttl, 10)
		case 'T':
			ttl = c.s.store.TTLOf(m.TTL)
		case 'N':
			if res.Created {
				ttl = c.s.store.TTLOf(m.VivifyTTL)
			}
		default:
			c.appendEcho(m, f)
		}
	}
	c.out = append(c.out, protocol.CRLF...)
	if m.Value {
		c.out = append(c.out, digits...)
		c.out = append(c.out, protocol.CRLF...)
	}
}

// metaDebug answers "me": the item's metadata without touching it.
func (c *conn) metaDebug() {
	r := &c.req
	c.watchLookup(r.Key)
	found := false
	_ = c.s.store.Get(r.Key, store.GetOptions{Peek: true}, func(it store.Item) {
		found = true
		c.out = append(c.out, "ME "...)
		if it.BinaryKey() {
			c.out = base64.StdEncoding.AppendEncode(c.out, it.Key())
		} else {
			c.out = append(c.out, it.Key()...)
		}
		c.out = append(c.out, " exp="...)
		c.out = strconv.AppendInt(c.out, it.TTL, 10)
		c.out = appendItemFields(c.out, it.LastAccess, it.CAS, it.Fetched, it.Class(),
			c.s.store.MemcachedSize(len(it.Key()), it.Flags, it.Len()))
		c.out = append(c.out, protocol.CRLF...)
	})
	if !found {
		c.out = protocol.AppendLine(c.out, "EN")
	}
}

// appendItemFields appends the fields "me" and "lru_crawler metadump"
// share: " la=<n> cas=<n> fetch=yes|no cls=<n> size=<n>".
func appendItemFields(dst []byte, la int64, cas uint64, fetched bool, cls, size int) []byte {
	dst = append(dst, " la="...)
	dst = strconv.AppendInt(dst, la, 10)
	dst = append(dst, " cas="...)
	dst = strconv.AppendUint(dst, cas, 10)
	if fetched {
		dst = append(dst, " fetch=yes"...)
	} else {
		dst = append(dst, " fetch=no"...)
	}
	dst = append(dst, " cls="...)
	dst = strconv.AppendInt(dst, int64(cls), 10)
	dst = append(dst, " size="...)
	return strconv.AppendInt(dst, int64(size), 10)
}
