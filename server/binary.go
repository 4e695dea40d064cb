package server

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/tandemcache/tandem/protocol"
	"github.com/tandemcache/tandem/store"
)

// The binary protocol, as memcached 1.6.18's proto_bin.c answers it. What
// memcached does with malformed requests is kept too, since clients and
// proxies have been written against it:
//
//   - a bad magic closes the connection without a reply;
//   - a key and extras longer than the body: Unknown command, then close;
//   - a key over 250 bytes, or lengths an opcode does not allow: Invalid
//     arguments, then close;
//   - an unknown opcode: Unknown command, and memcached then drops the body
//     length in bytes after the extras and key it already read;
//   - an opcode taking no value reads only its extras and key: extra body
//     bytes are read as the next request.

// binQuiet maps each quiet opcode to its loud one.
var binQuiet = [256]uint8{
	protocol.OpGetQ:     protocol.OpGet,
	protocol.OpGetKQ:    protocol.OpGetK,
	protocol.OpSetQ:     protocol.OpSet,
	protocol.OpAddQ:     protocol.OpAdd,
	protocol.OpReplaceQ: protocol.OpReplace,
	protocol.OpDeleteQ:  protocol.OpDelete,
	protocol.OpIncrQ:    protocol.OpIncrement,
	protocol.OpDecrQ:    protocol.OpDecrement,
	protocol.OpQuitQ:    protocol.OpQuit,
	protocol.OpFlushQ:   protocol.OpFlush,
	protocol.OpAppendQ:  protocol.OpAppend,
	protocol.OpPrependQ: protocol.OpPrepend,
	protocol.OpGATQ:     protocol.OpGAT,
	protocol.OpGATKQ:    protocol.OpGATK,
}

// noAutoCreate is the incr/decr expiry that means: fail on a missing key
// instead of creating it with the initial value.
const noAutoCreate = 0xffffffff

// binRequest is the request being run: it lives on processBinary's stack
// and its slices alias the connection's input.
type binRequest struct {
	protocol.BinaryRequest
	op    uint8 // the loud opcode
	quiet bool
}

// processBinary runs the binary request at the front of buf and returns the
// bytes consumed, or how many must be buffered before it can run. A value
// too large to store is answered at once and dropped as it arrives
// (c.swallow), never buffered.
func (c *conn) processBinary(buf []byte) (used, want int) {
	var r binRequest
	// Parse the header, extras and key; the value is looked at below,
	// once the opcode says whether there is one.
	n, err := protocol.ParseBinary(buf, 0, &r.BinaryRequest)
	switch err {
	case nil, protocol.ErrBinaryTooLarge, protocol.ErrBinaryKeyLen:
	case protocol.ErrNeedMore:
		return 0, n
	case protocol.ErrBinaryLengths:
		c.binError(&r, protocol.StatusUnknownCommand)
		c.closing = true
		return len(buf), 0
	default: // ErrBinaryMagic
		if c.s.verbosity.Load() == 1 {
			// (-vv logs it after the header's dump: logBinary.)
			fmt.Fprintf(c.s.cfg.Log, "Invalid magic:  %x\n", buf[0])
		}
		c.closing = true
		return len(buf), 0
	}
	if c.inline && !inlineOp(r.Opcode) {
		c.detachReq = true // one the runner's scan missed: not on the poller
		return 0, 0
	}
	if c.s.cfg.SASL != nil && !c.saslAllowed(r.Opcode) {
		// memcached checks this before the key length, and closes.
		c.binError(&r, protocol.StatusAuthError)
		c.closing = true
		return len(buf), 0
	}
	if err == protocol.ErrBinaryKeyLen {
		return c.binInvalid(&r, buf)
	}
	head := n
	r.op, r.quiet = r.Opcode, false
	if q := binQuiet[r.Opcode]; q != 0 || r.Opcode == protocol.OpGetQ {
		r.op, r.quiet = q, true
	}
	ext, key, body := int(r.ExtLen), int(r.KeyLen), int(r.BodyLen)
	vlen := r.ValueLen()
	ok := true
	switch r.op {
	case protocol.OpVersion, protocol.OpNoop, protocol.OpQuit:
		ok = ext == 0 && key == 0 && body == 0
	case protocol.OpFlush:
		ok = key == 0 && body == ext && (ext == 0 || ext == 4)
	case protocol.OpSet, protocol.OpAdd, protocol.OpReplace:
		ok = ext == 8 && key != 0
	case protocol.OpGet, protocol.OpGetK, protocol.OpDelete:
		ok = ext == 0 && key != 0 && body == key
	case protocol.OpIncrement, protocol.OpDecrement:
		ok = ext == 20 && key != 0 && body == key+ext
	case protocol.OpAppend, protocol.OpPrepend:
		ok = ext == 0 && key != 0
	case protocol.OpStat:
		ok = ext == 0
	case protocol.OpTouch, protocol.OpGAT, protocol.OpGATK:
		ok = ext == 4 && key != 0
	case protocol.OpSASLList:
		// Without SASL memcached answers the SASL commands Unknown
		// command, after checking their lengths.
		if ext != 0 || key != 0 || body != 0 {
			return c.binInvalid(&r, buf)
		}
		if c.s.cfg.SASL == nil {
			c.binError(&r, protocol.StatusUnknownCommand)
		} else {
			c.saslList(&r)
		}
		return head, 0
	case protocol.OpSASLAuth, protocol.OpSASLStep:
		if ext != 0 || key == 0 {
			return c.binInvalid(&r, buf)
		}
		switch {
		case c.s.cfg.SASL == nil:
			c.binError(&r, protocol.StatusUnknownCommand)
		case key > saslMechMax:
			c.binError(&r, protocol.StatusInvalid)
		case vlen > c.s.store.ItemSizeMax():
			// memcached reads the message into an item: one too large
			// for it is refused as memory it could not allocate.
			c.binError(&r, protocol.StatusNoMemory)
		default:
			n, err := protocol.ParseBinary(buf, vlen, &r.BinaryRequest)
			if err != nil { // ErrNeedMore
				return 0, n
			}
			c.saslAuth(&r)
			return n, 0
		}
		c.swallow = vlen
		return head, 0
	default:
		// memcached drops the whole body length after the extras and key
		// it has read: more than the request's body when they are not
		// empty. Kept, so that the bytes after it are read as memcached
		// reads them.
		c.binError(&r, protocol.StatusUnknownCommand)
		c.swallow = body
		return head, 0
	}
	if !ok {
		return c.binInvalid(&r, buf)
	}
	// A retrieval's reply may be larger than its request over UDP.
	c.retrieval = r.op == protocol.OpGet || r.op == protocol.OpGetK || r.op == protocol.OpGAT || r.op == protocol.OpGATK
	mark := len(c.out)
	if c.s.repl != nil && binaryWrite(r.op) {
		if err := c.s.repl.Writable(); err != nil {
			c.binErrorMsg(&r, protocol.StatusTempFailure, err.Error())
			c.swallow = vlen
			return head, 0
		}
		used, want = c.binWrite(&r, buf, head, vlen)
		if want == 0 {
			c.wrote(mark, &r)
			if c.s.repl.Behind() {
				c.throttle() // the peers are far behind the writes
			}
		}
		return used, want
	}
	return c.binWrite(&r, buf, head, vlen)
}

// binWrite runs a request whose lengths were checked: storage commands once
// their value is buffered, the others at once.
func (c *conn) binWrite(r *binRequest, buf []byte, head, vlen int) (used, want int) {
	ext, key := int(r.ExtLen), int(r.KeyLen)
	switch r.op {
	case protocol.OpSet, protocol.OpAdd, protocol.OpReplace, protocol.OpAppend, protocol.OpPrepend:
		var flags uint32
		if ext == 8 {
			flags = binary.BigEndian.Uint32(r.Extras)
		}
		if c.s.store.TooLarge(key, flags, vlen) {
			c.s.store.CountTooLarge()
			if r.op == protocol.OpSet {
				// As memcached (and text set): a failed set leaves no
				// stale value behind.
				c.watchLookup(r.Key)
				_ = c.s.store.Delete(r.Key, store.DeleteOptions{})
			}
			c.binError(r, protocol.StatusTooLarge)
			c.swallow = vlen
			return head, 0
		}
		n, err := protocol.ParseBinary(buf, c.s.store.ItemSizeMax(), &r.BinaryRequest)
		if err != nil { // ErrNeedMore: TooLarge bounds the value
			return 0, n
		}
		c.binStore(r, flags)
		return n, 0
	}
	c.binRun(r)
	return head, 0
}

// binInvalid answers Invalid arguments and closes, as memcached does for a
// request whose lengths its opcode does not allow.
func (c *conn) binInvalid(r *binRequest, buf []byte) (used, want int) {
	c.binError(r, protocol.StatusInvalid)
	c.closing = true
	return len(buf), 0
}

// binError answers r with status and memcached's message for it.
func (c *conn) binError(r *binRequest, status uint16) {
	c.binErrorMsg(r, status, protocol.StatusText(status))
}

func (c *conn) binErrorMsg(r *binRequest, status uint16, msg string) {
	c.out = protocol.AppendBinaryError(c.out, r.Opcode, status, r.Opaque, msg)
}

// binOK answers a success with an empty body, unless the request is quiet.
func (c *conn) binOK(r *binRequest, cas uint64) {
	if !r.quiet {
		c.out = protocol.AppendBinaryHeader(c.out, r.Opcode, protocol.StatusOK, 0, 0, 0, r.Opaque, cas)
	}
}

// binStore runs set, add, replace, append and prepend with the value read.
func (c *conn) binStore(r *binRequest, flags uint32) {
	o := store.SetOptions{Flags: flags, CAS: r.CAS}
	if r.ExtLen == 8 {
		o.Exptime = int64(binary.BigEndian.Uint32(r.Extras[4:]))
	}
	switch r.op {
	case protocol.OpSet:
		o.Mode = store.ModeSet
	case protocol.OpAdd:
		o.Mode = store.ModeAdd
	case protocol.OpReplace:
		o.Mode = store.ModeReplace
	case protocol.OpAppend:
		o.Mode = store.ModeAppend
	case protocol.OpPrepend:
		o.Mode = store.ModePrepend
	}
	if r.CAS != 0 && o.Mode != store.ModeAppend && o.Mode != store.ModePrepend {
		// memcached turns set, add and replace with a CAS into a cas:
		// add too, so an add with a CAS needs the key present.
		o.Mode = store.ModeCAS
	}
	c.s.detail.record(r.Key, detailSet, false)
	c.watchLookup(r.Key)
	cas, err := c.s.store.Set(r.Key, r.Value, o)
	if o.Mode == store.ModeCAS && err == nil {
		c.casWrote = cas
	}
	if c.s.watch.wants(watchMutations) {
		c.logStore(r.Key, o.Mode, err, o.Flags, o.Exptime, len(r.Value))
	}
	switch err {
	case nil:
		c.binOK(r, cas)
	case store.ErrExists:
		c.binError(r, protocol.StatusKeyExists)
	case store.ErrNotFound:
		c.binError(r, protocol.StatusKeyNotFound)
	case store.ErrNotStored:
		// memcached names a refused add or replace by its cause.
		switch o.Mode {
		case store.ModeAdd:
			c.binError(r, protocol.StatusKeyExists)
		case store.ModeReplace:
			c.binError(r, protocol.StatusKeyNotFound)
		default:
			c.binError(r, protocol.StatusNotStored)
		}
	case store.ErrTooLarge:
		c.binError(r, protocol.StatusTooLarge)
	default:
		c.binErrorMsg(r, protocol.StatusNoMemory, "Out of memory allocating item")
	}
}

// binRun runs a request that has no value.
func (c *conn) binRun(r *binRequest) {
	switch r.op {
	case protocol.OpGet, protocol.OpGetK, protocol.OpTouch, protocol.OpGAT, protocol.OpGATK:
		c.binGet(r)
	case protocol.OpDelete:
		c.s.detail.record(r.Key, detailDel, false)
		c.watchLookup(r.Key)
		switch c.s.store.Delete(r.Key, store.DeleteOptions{CAS: r.CAS}) {
		case nil:
			c.binOK(r, 0)
		case store.ErrExists:
			c.binError(r, protocol.StatusKeyExists)
		default:
			c.binError(r, protocol.StatusKeyNotFound)
		}
	case protocol.OpIncrement, protocol.OpDecrement:
		c.binArith(r)
	case protocol.OpQuit:
		c.binOK(r, 0)
		c.closing, c.quitting = true, true
	case protocol.OpFlush:
		if c.s.cfg.DisableFlush {
			c.binError(r, protocol.StatusAuthError)
			return
		}
		var delay int64
		if r.ExtLen == 4 {
			delay = int64(binary.BigEndian.Uint32(r.Extras))
		}
		c.s.store.FlushAll(delay)
		c.binOK(r, 0)
	case protocol.OpNoop:
		c.binOK(r, 0)
	case protocol.OpVersion:
		c.out = protocol.AppendBinaryHeader(c.out, r.Opcode, protocol.StatusOK, 0, 0, len(Version), r.Opaque, 0)
		c.out = append(c.out, Version...)
	case protocol.OpStat:
		c.binStats(r)
	}
}

// binGet runs the get and touch family. The store callback appends the hit
// in place (it does not escape, so it costs no allocation).
func (c *conn) binGet(r *binRequest) {
	var o store.GetOptions
	if r.op == protocol.OpTouch || r.op == protocol.OpGAT || r.op == protocol.OpGATK {
		o.Touch, o.Exptime = true, int64(binary.BigEndian.Uint32(r.Extras))
	}
	if c.s.watch.wants(watchFetchers) {
		o.Miss = &c.miss
	}
	found := false
	err := c.s.store.Get(r.Key, o, func(it store.Item) {
		found = true
		if c.s.watch.wants(watchFetchers) {
			c.logFetch(it.Key(), "found", it.Class(), it.Len())
		}
		withKey := r.op == protocol.OpGetK || r.op == protocol.OpGATK
		vlen := it.Len()
		if r.op == protocol.OpTouch {
			vlen = 0 // touch answers with the flags alone
		}
		keyLen := 0
		if withKey {
			keyLen = int(r.KeyLen)
		}
		c.out = protocol.AppendBinaryHeader(c.out, r.Opcode, protocol.StatusOK, 4, keyLen, vlen, r.Opaque, it.CAS)
		c.out = binary.BigEndian.AppendUint32(c.out, it.Flags)
		if withKey {
			c.out = append(c.out, r.Key...)
		}
		if vlen > 0 {
			c.out = it.AppendValue(c.out)
		}
	})
	c.s.detail.record(r.Key, detailGet, found)
	if !found && c.s.watch.wants(watchFetchers) {
		c.logMiss(r.Key, o.Miss)
	}
	if found || err == nil || r.quiet {
		return
	}
	if r.op == protocol.OpGetK || r.op == protocol.OpGATK {
		// A keyed miss echoes the key instead of a message.
		c.out = protocol.AppendBinaryResponse(c.out, r.Opcode, protocol.StatusKeyNotFound, r.Opaque, 0, nil, r.Key, nil)
		return
	}
	c.binError(r, protocol.StatusKeyNotFound)
}

func (c *conn) binArith(r *binRequest) {
	e := r.Extras
	exp := binary.BigEndian.Uint32(e[16:])
	o := store.ArithOptions{
		Decr:  r.op == protocol.OpDecrement,
		Delta: binary.BigEndian.Uint64(e),
		CAS:   r.CAS,
	}
	if exp != noAutoCreate {
		o.Vivify, o.Initial, o.VivifyExptime = true, binary.BigEndian.Uint64(e[8:]), int64(exp)
	}
	c.watchLookup(r.Key)
	res, err := c.s.store.Arith(r.Key, o)
	if res.Created {
		c.logCreated(r.Key, res.Value, o.VivifyExptime)
	}
	switch err {
	case nil:
		if !r.quiet {
			c.out = protocol.AppendBinaryHeader(c.out, r.Opcode, protocol.StatusOK, 0, 0, 8, r.Opaque, res.CAS)
			c.out = binary.BigEndian.AppendUint64(c.out, res.Value)
		}
	case store.ErrNotFound:
		c.binError(r, protocol.StatusKeyNotFound)
	case store.ErrNonNumeric:
		c.binError(r, protocol.StatusDeltaBadval)
	case store.ErrExists:
		c.binError(r, protocol.StatusKeyExists)
	default:
		// memcached tells a failed create from a failed grow.
		msg := "Out of memory incrementing value"
		if o.Vivify && c.s.store.Get(r.Key, store.GetOptions{Peek: true}, func(store.Item) {}) != nil {
			msg = "Out of memory allocating new item"
		}
		c.binErrorMsg(r, protocol.StatusNoMemory, msg)
	}
}

// binStats answers STAT: no key for the general stats, or a group. Groups
// are matched as memcached's process_bin_stat matches them: "reset",
// "settings" and "detail" by prefix, the others exactly; "conns" is a text
// protocol group only.
func (c *conn) binStats(r *binRequest) {
	w := statWriter{c: c, binary: true, opaque: r.Opaque}
	k := string(r.Key)
	switch {
	case len(k) == 0:
		c.generalStats(w)
	case strings.HasPrefix(k, "reset"):
		c.resetStats()
	case strings.HasPrefix(k, "settings"):
		c.settingsStats(w)
	case strings.HasPrefix(k, "detail"):
		switch sub := k[len("detail"):]; {
		case strings.HasPrefix(sub, " dump"):
			w.str("detailed", string(c.s.detail.dump(nil)))
		case strings.HasPrefix(sub, " on"), strings.HasPrefix(sub, " off"):
			c.s.detail.on.Store(strings.HasPrefix(sub, " on"))
		default:
			c.binError(r, protocol.StatusKeyNotFound)
			return
		}
	case k == "items":
		c.itemStats(w)
	case k == "slabs":
		c.slabStats(w)
	case k == "sizes":
		c.sizesStats(w)
	case k == "sizes_enable", k == "sizes_disable":
		c.sizesSwitch(w, k == "sizes_enable")
		return // memcached 1.6.18 sends no closing packet for these
	default:
		c.binError(r, protocol.StatusKeyNotFound)
		return
	}
	w.end()
}

// logBinary writes what memcached 1.6.18's -vv shows of a binary request
// at the front of buf and its reply: the request's header in hex, a line
// naming the command (in memcached's words for each), and for each reply
// packet the error it carries and its header in hex. A quiet request that
// sends nothing logs no reply.
func (c *conn) logBinary(buf, reply []byte) {
	if len(buf) < protocol.BinaryHeaderLen {
		return
	}
	fd := c.fd
	if c.udp {
		fd = c.udpFd
	}
	b := fmt.Appendf(nil, "<%d Read binary protocol data:", fd)
	b = appendHexRows(b, fmt.Sprintf("\n<%d   ", fd), buf[:protocol.BinaryHeaderLen])
	if buf[0] != protocol.BinaryRequestMagic {
		b = fmt.Appendf(b, "Invalid magic:  %x\n", buf[0]) // and the connection closes
		_, _ = c.s.cfg.Log.Write(b)
		return
	}
	op := buf[1]
	if q := binQuiet[op]; q != 0 || op == protocol.OpGetQ {
		op = q
	}
	kl, el := int(binary.BigEndian.Uint16(buf[2:])), int(buf[4])
	bl := int(binary.BigEndian.Uint32(buf[8:]))
	refused := len(reply) >= protocol.BinaryHeaderLen &&
		(reply[7] == protocol.StatusInvalid || reply[7] == protocol.StatusUnknownCommand || reply[7] == protocol.StatusAuthError)
	if key := buf[protocol.BinaryHeaderLen:]; !refused && len(key) >= el+kl {
		ext, key := key[:el], key[el:el+kl]
		switch op {
		case protocol.OpSet, protocol.OpAdd, protocol.OpReplace:
			name := "SET"
			if op == protocol.OpAdd {
				name = "ADD"
			} else if op == protocol.OpReplace {
				name = "REPLACE"
			}
			b = fmt.Appendf(b, "<%d %s %s Value len is %d\n", fd, name, key, bl-kl-el)
		case protocol.OpAppend, protocol.OpPrepend:
			b = fmt.Appendf(b, "Value len is %d\n", bl-kl-el)
		case protocol.OpGet, protocol.OpGetK:
			b = fmt.Appendf(b, "<%d GET %s\n", fd, key)
		case protocol.OpTouch, protocol.OpGAT, protocol.OpGATK:
			b = fmt.Appendf(b, "<%d TOUCH %s\n", fd, key)
		case protocol.OpIncrement, protocol.OpDecrement:
			if len(ext) == 20 {
				b = fmt.Appendf(b, "incr %s %d, %d, %d\n", key, int64(binary.BigEndian.Uint64(ext)),
					binary.BigEndian.Uint64(ext[8:]), int32(binary.BigEndian.Uint32(ext[16:])))
			}
		case protocol.OpDelete:
			b = fmt.Appendf(b, "Deleting %s\n", key)
		case protocol.OpStat:
			b = fmt.Appendf(b, "<%d STATS %s\n", fd, key)
		}
	}
	for len(reply) >= protocol.BinaryHeaderLen {
		h := reply[:protocol.BinaryHeaderLen]
		if op == protocol.OpStat && h[6] == 0 && h[7] == 0 {
			break // memcached builds stats packets without logging them
		}
		end := min(len(reply), protocol.BinaryHeaderLen+int(binary.BigEndian.Uint32(h[8:])))
		skip := min(end, protocol.BinaryHeaderLen+int(h[4])+int(binary.BigEndian.Uint16(h[2:])))
		if (h[6] != 0 || h[7] != 0) && skip < end {
			// (A GETK miss carries its key, not a message: memcached
			// builds it without its error path.)
			b = fmt.Appendf(b, ">%d Writing an error: %s\n", fd, reply[skip:end])
		}
		var dump [protocol.BinaryHeaderLen]byte
		copy(dump[:], h)
		switch op {
		case protocol.OpGet, protocol.OpGetK, protocol.OpTouch, protocol.OpGAT, protocol.OpGATK:
			// memcached dumps a hit's header before it sets the CAS.
			clear(dump[16:])
		}
		b = fmt.Appendf(b, ">%d Writing bin response:", fd)
		b = appendHexRows(b, fmt.Sprintf("\n>%d  ", fd), dump[:])
		reply = reply[end:]
	}
	_, _ = c.s.cfg.Log.Write(b)
}

// appendHexRows appends p as memcached dumps a header: four bytes a row,
// each row after prefix, then a newline.
func appendHexRows(b []byte, prefix string, p []byte) []byte {
	for i, x := range p {
		if i%4 == 0 {
			b = append(b, prefix...)
		}
		b = fmt.Appendf(b, " 0x%02x", x)
	}
	return append(b, '\n')
}
