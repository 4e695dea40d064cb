package store

import (
	"encoding/binary"

	"github.com/tandemcache/tandem/slab"
)

// An item lives in slab memory, little-endian:
//
//	off  size  field
//	0    4     exp    expiry in store seconds, 0 = never
//	4    4     time   bits 0-29: last store or read bump, store seconds
//	                  (memcached's it->time; 2^30 s is 34 years of uptime);
//	                  bit 30: fetched; bit 31: referenced (see offRef)
//	8    4     meta   bits 0-19: value length (vlenChained: chained);
//	                  bits 20-23: state bits (bitFlags...); bits 24-31: key
//	                  length, 0 in the raw chunks of a chained item
//	12   8     cas    only when CAS is enabled (-C removes it, as in memcached)
//	hdr  4     flags  client flags, only when non-zero
//	...        key, then the value
//
// All of it is guarded by the lock of the item's shard. There are no LRU
// links: eviction goes round the class's chunks with a clock hand (see
// evictOne). Packing the state into spare bits of the time and the lengths
// keeps the header at 20 bytes (12 with -C).
//
// An item whose size passes the largest chunk is chained: the head chunk
// holds, after the key, the value length (4 bytes) and the refs of the other
// chunks (4 bytes each), then the first part of the value. The other chunks
// are raw: their first 4 bytes name the head, their key length is 0 (a key
// never is), and the value continues at rawHdr. All chunks of a chained
// item are of the largest class, so the clock hand of that class frees
// whole chains.
const (
	offExp   = 0
	offTime  = 4
	offVlen  = 8
	offBits  = 10 // state bits in the high nibble, the value length's top in the low
	offKlen  = 11
	offCAS   = 12
	baseHdr  = 12 // header without CAS
	rawHdr   = 12
	flagsLen = 4

	timeMask = 1<<30 - 1
	// offRef is the time's top byte: fetchedBit, and refBit, set when the
	// item is read or stored in place, cleared when the clock hand passes
	// it, which gives it a second chance.
	offRef     = offTime + 3
	fetchedBit = 0x40
	refBit     = 0x80

	// vlenChained in the length field marks a chained item; its length
	// follows the key. An unchained value is smaller than the largest
	// chunk, at most 1 MiB (Config.ChunkMax), so it never reaches it.
	vlenChained = 1<<20 - 1
)

// State bits of head.bits. The high nibble is stored as it is at offBits;
// bitFetched lives in the time (fetchedBit) and bitChained is vlenChained.
const (
	bitFetched   = 1 << 0 // read at least once since stored
	bitChained   = 1 << 1
	bitFlags     = 1 << 4 // client flags stored after the header
	bitStale     = 1 << 5 // invalidated (meta I): served with X until replaced
	bitTokenSent = 1 << 6 // a recache win token (W) was handed out
	bitBinaryKey = 1 << 7 // stored with a base64 key (meta b): shown encoded

	storedBits = 0xf0
)

// MaxKeyLen is memcached's key length limit.
const MaxKeyLen = 250

func u32(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }

func put32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }

// layout describes where the parts of one item lie in its head chunk.
type layout struct {
	keyOff   int // start of the key
	valOff   int // start of the value (of its first part, when chained)
	headVal  int // value bytes in the head chunk
	vlen     int
	nchunks  int // 1 when not chained
	chainOff int // the value length word, then the chain table, when chained
}

// plan computes the layout of a new item and the class of its head chunk.
func (s *Store) plan(klen int, flags uint32, vlen int) (layout, int) {
	l := layout{keyOff: s.hdr, vlen: vlen, nchunks: 1}
	if flags != 0 {
		l.keyOff += flagsLen
	}
	total := l.keyOff + klen + vlen
	if cls := s.slab.ClassFor(total); cls != 0 {
		l.valOff = l.keyOff + klen
		l.headVal = vlen
		return l, cls
	}
	cs := s.chunkMax
	fixed := l.keyOff + klen + 4 // value length word
	per := cs - rawHdr - 4       // each extra chunk adds payload and a table entry
	extra := (vlen - (cs - fixed) + per - 1) / per
	if extra < 1 {
		extra = 1
	}
	l.nchunks = 1 + extra
	l.chainOff = l.keyOff + klen
	l.valOff = fixed + 4*extra
	l.headVal = cs - l.valOff
	if l.headVal < 0 {
		// The chain table alone would overflow the head: only possible with
		// a tiny chunk max and a huge value. Refuse it as too large.
		return l, 0
	}
	return l, s.largest
}

// isRaw tells whether the header b is a raw chunk of a chained item: its
// key length is 0, which a key never is.
func isRaw(b []byte) bool { return b[offKlen] == 0 }

// rawHead is the head named by the raw chunk b, read without a lock: it is
// checked to be a chunk of the largest class, where every chain lies,
// before anyone follows it.
func (s *Store) rawHead(b []byte) (slab.Ref, bool) {
	h := slab.Ref(u32(b, 0))
	cls, ok := s.slab.Chunk(h)
	return h, ok && cls == s.largest
}

// head is a decoded view of an item header. It is a copy: changing it does
// not change the item.
type head struct {
	exp, time uint32
	bits      uint8
	klen      int
	cas       uint64
	flags     uint32
	keyOff    int
	vlen      int
}

func (s *Store) readHead(r slab.Ref) head {
	b := s.slab.Bytes(r, s.hdr)
	tw := u32(b, offTime)
	h := head{
		exp:    u32(b, offExp),
		time:   tw & timeMask,
		bits:   b[offBits] & storedBits,
		klen:   int(b[offKlen]),
		keyOff: s.hdr,
		vlen:   int(b[offVlen]) | int(b[offVlen+1])<<8 | int(b[offBits]&^storedBits)<<16,
	}
	if b[offRef]&fetchedBit != 0 {
		h.bits |= bitFetched
	}
	if s.useCAS {
		h.cas = binary.LittleEndian.Uint64(b[offCAS:])
	}
	if h.bits&bitFlags != 0 {
		h.flags = u32(s.slab.Bytes(r, s.hdr+flagsLen), s.hdr)
		h.keyOff += flagsLen
	}
	if h.vlen == vlenChained {
		h.bits |= bitChained
		h.vlen = int(u32(s.slab.Bytes(r, h.keyOff+h.klen+4), h.keyOff+h.klen))
	}
	return h
}

// key returns the item's key, aliasing slab memory.
func (s *Store) key(r slab.Ref) []byte {
	b := s.slab.Bytes(r, s.hdr)
	koff := s.hdr
	if b[offBits]&bitFlags != 0 {
		koff += flagsLen
	}
	return s.slab.Bytes(r, koff+int(b[offKlen]))[koff:]
}

// setBits sets and clears state bits; bitChained cannot be changed.
func (s *Store) setBits(r slab.Ref, set, clear uint8) {
	b := s.slab.Bytes(r, s.hdr)
	b[offBits] = b[offBits]&^(clear&storedBits) | set&storedBits
	if set&bitFetched != 0 {
		b[offRef] |= fetchedBit
	} else if clear&bitFetched != 0 {
		b[offRef] &^= fetchedBit
	}
}

// referenced tells whether item r was used since the clock hand passed it.
func (s *Store) referenced(r slab.Ref) bool { return s.slab.Bytes(r, s.hdr)[offRef]&refBit != 0 }

func (s *Store) setRef(r slab.Ref, ref bool) {
	b := s.slab.Bytes(r, s.hdr)
	if ref {
		b[offRef] |= refBit
	} else {
		b[offRef] &^= refBit
	}
}

func (s *Store) setExp(r slab.Ref, exp uint32) { put32(s.slab.Bytes(r, s.hdr), offExp, exp) }

func (s *Store) setCAS(r slab.Ref, cas uint64) {
	if s.useCAS {
		binary.LittleEndian.PutUint64(s.slab.Bytes(r, s.hdr)[offCAS:], cas)
	}
}

// writeFields writes an item's header, unreferenced, then its key: for a
// new item (refs are its chunks, refs[0] the head) and for an overwrite in
// place. Value bytes are written with a valueWriter.
func (s *Store) writeFields(refs []slab.Ref, l layout, key []byte, flags uint32, exp, now uint32, cas uint64) {
	b := s.slab.Bytes(refs[0], l.valOff)
	put32(b, offExp, exp)
	put32(b, offTime, now&timeMask)
	var bits uint8
	if flags != 0 {
		bits |= bitFlags
		put32(b, s.hdr, flags)
	}
	vl := l.vlen
	if l.nchunks > 1 {
		vl = vlenChained
		put32(b, l.chainOff, uint32(l.vlen))
		for i, r := range refs[1:] {
			put32(b, l.chainOff+4+4*i, uint32(r))
			rb := s.slab.Bytes(r, rawHdr)
			put32(rb, 0, uint32(refs[0]))
			put32(rb, offVlen, 0) // key length 0: raw
		}
	}
	b[offVlen], b[offVlen+1] = byte(vl), byte(vl>>8)
	b[offBits] = byte(vl>>16) | bits
	b[offKlen] = byte(len(key))
	if s.useCAS {
		binary.LittleEndian.PutUint64(b[offCAS:], cas)
	}
	copy(b[l.keyOff:], key)
}

// chain returns the refs of a chained item's extra chunks, aliasing the
// head's chain table: 4 bytes each.
func (s *Store) chain(r slab.Ref, h *head) []byte {
	off := h.keyOff + h.klen + 4
	n := s.extraChunks(h)
	return s.slab.Bytes(r, off+4*n)[off:]
}

func (s *Store) extraChunks(h *head) int {
	fixed := h.keyOff + h.klen + 4
	per := s.chunkMax - rawHdr - 4
	n := (h.vlen - (s.chunkMax - fixed) + per - 1) / per
	return max(n, 1)
}

// spans calls fn with the value's bytes in order, one slice per chunk.
func (s *Store) spans(r slab.Ref, h *head, fn func([]byte)) {
	if h.bits&bitChained == 0 {
		off := h.keyOff + h.klen
		fn(s.slab.Bytes(r, off+h.vlen)[off:])
		return
	}
	chain := s.chain(r, h)
	n := len(chain) / 4
	valOff := h.keyOff + h.klen + 4 + 4*n
	first := s.chunkMax - valOff
	fn(s.slab.Bytes(r, s.chunkMax)[valOff:])
	left := h.vlen - first
	for i := 0; i < n; i++ {
		c := slab.Ref(u32(chain, 4*i))
		part := min(left, s.chunkMax-rawHdr)
		fn(s.slab.Bytes(c, rawHdr+part)[rawHdr:])
		left -= part
	}
}

// appendValue appends the value of item r to dst.
func (s *Store) appendValue(dst []byte, r slab.Ref, h *head) []byte {
	if h.bits&bitChained == 0 {
		off := h.keyOff + h.klen
		return append(dst, s.slab.Bytes(r, off+h.vlen)[off:]...)
	}
	s.spans(r, h, func(b []byte) { dst = append(dst, b...) })
	return dst
}

// valueWriter copies bytes into a new item's value, across its chunks.
type valueWriter struct {
	s    *Store
	refs []slab.Ref
	l    layout
	pos  int // value bytes written so far
}

func (w *valueWriter) write(p []byte) {
	s := w.s
	for len(p) > 0 {
		var dst []byte
		if w.pos < w.l.headVal {
			dst = s.slab.Bytes(w.refs[0], w.l.valOff+w.l.headVal)[w.l.valOff+w.pos:]
		} else {
			per := s.chunkMax - rawHdr
			i := (w.pos - w.l.headVal) / per
			off := (w.pos - w.l.headVal) % per
			end := min(per, w.l.vlen-w.l.headVal-i*per)
			dst = s.slab.Bytes(w.refs[1+i], rawHdr+end)[rawHdr+off:]
		}
		n := copy(dst, p)
		p = p[n:]
		w.pos += n
	}
}

// size is the memory an item takes in its chunks, for the "bytes" stat.
func (l *layout) size() int {
	if l.nchunks == 1 {
		return l.valOff + l.vlen
	}
	return l.valOff + l.vlen + (l.nchunks-1)*rawHdr
}
