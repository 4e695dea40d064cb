// Package protocol parses memcached's text and meta protocols and encodes
// their replies. It is pure: functions over byte slices, no sockets, no
// storage. A parse reads one command line from the front of a buffer and
// reports how many bytes it took, or that the line is not complete yet;
// parsed keys and tokens alias the buffer. Replies are appended to a
// caller's buffer. Nothing allocates once a Request's slices have grown.
package protocol

import (
	"bytes"
	"errors"
)

// Command identifies a request.
type Command uint8

// The commands. Storage commands (CmdSet to CmdCas, CmdMetaSet) are followed
// by a data block of Request.Bytes bytes and CRLF.
const (
	CmdNone Command = iota
	CmdGet
	CmdGets
	CmdGat
	CmdGats
	CmdSet
	CmdAdd
	CmdReplace
	CmdAppend
	CmdPrepend
	CmdCas
	CmdIncr
	CmdDecr
	CmdDelete
	CmdTouch
	CmdFlushAll
	CmdVersion
	CmdVerbosity
	CmdQuit
	CmdShutdown
	CmdStats
	CmdCacheMemlimit
	CmdSlabs
	CmdLru
	CmdLruCrawler
	CmdWatch
	CmdMetaGet
	CmdMetaSet
	CmdMetaDelete
	CmdMetaArith
	CmdMetaNoop
	CmdMetaDebug
)

// IsRetrieval reports whether the command only reads (get, gets, gat, gats,
// mg).
func (c Command) IsRetrieval() bool { return c >= CmdGet && c <= CmdGats || c == CmdMetaGet }

// IsStorage reports whether a data block follows the command line.
func (c Command) IsStorage() bool { return c >= CmdSet && c <= CmdCas || c == CmdMetaSet }

const (
	// MaxKeyLen is the longest key memcached accepts.
	MaxKeyLen = 250
	// MaxLine is how long a command line may grow without a newline before
	// the connection is closed, unless it is a get or gets (memcached's
	// 2048-byte rule: any other command that long is garbage).
	MaxLine = 2048
	// maxRead is memcached's READ_BUFFER_SIZE.
	maxRead = 16384
	// maxTokens is memcached's MAX_TOKENS: a line is split into at most 23
	// tokens and the rest kept as one; longer get lines are split further.
	maxTokens = 24
	// maxMetaTokens is memcached's MFLAG_MAX_OPT_LENGTH: the command, the
	// key and at most 17 flags (memcached counts its terminal token too).
	maxMetaTokens = 19
	// maxOpaque is memcached's MFLAG_MAX_OPAQUE_LENGTH.
	maxOpaque = 32
)

// ErrorReply is a request error: the reply memcached sends for it, and
// whether memcached then closes the connection.
type ErrorReply struct {
	Reply string
	Close bool
}

func (e *ErrorReply) Error() string { return e.Reply }

// The errors Parse returns.
var (
	ErrUnknown    = &ErrorReply{Reply: "ERROR"}
	ErrFormat     = &ErrorReply{Reply: "CLIENT_ERROR bad command line format"}
	ErrDeleteArgs = &ErrorReply{Reply: "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"}
	ErrExptime    = &ErrorReply{Reply: "CLIENT_ERROR invalid exptime argument"}
	ErrDelta      = &ErrorReply{Reply: "CLIENT_ERROR invalid numeric delta argument"}
	ErrDataChunk  = &ErrorReply{Reply: "CLIENT_ERROR bad data chunk"}
	// ErrLineTooLong: no newline within MaxLine bytes of a line that is not
	// a get; memcached closes without a reply.
	ErrLineTooLong = &ErrorReply{Close: true}
	// ErrHTTP: a line ending in HTTP/x: memcached closes without a reply.
	ErrHTTP = &ErrorReply{Close: true}
)

// ErrNeedMore means the buffer does not hold a whole line yet.
var ErrNeedMore = errors.New("protocol: incomplete request")

// Request is one parsed command. Its slices alias the parsed buffer and are
// valid until that buffer changes; reuse one Request for every parse so
// they keep their capacity.
type Request struct {
	Cmd     Command
	Key     []byte
	Keys    [][]byte // get, gets, gat, gats
	Args    [][]byte // the tokens after the command, for the admin commands
	Flags   uint32
	Exptime int64
	Bytes   int // data block length for storage commands
	CAS     uint64
	Delta   uint64
	NoReply bool
	Meta    Meta

	// SwallowErr, when not nil for a storage command, is the error to answer
	// after swallowing the data block (memcached reads and drops it).
	SwallowErr *ErrorReply

	toks [][]byte
	// keyBuf holds a decoded base64 key. Behind a pointer, made on first
	// use, so that resetting the Request for every parse does not clear
	// 250 bytes.
	keyBuf *[MaxKeyLen]byte
}

func (r *Request) keyBuffer() []byte {
	if r.keyBuf == nil {
		r.keyBuf = new([MaxKeyLen]byte)
	}
	return r.keyBuf[:]
}

// Parse reads one command line from the front of buf into r. It returns the
// length of the line including its newline; for storage commands the data
// block follows and is not part of it. With an error the line is consumed
// (n > 0) and the error's reply is to be sent, except ErrNeedMore (n == 0).
// A line may end in "\r\n" or a bare "\n", as in memcached.
func Parse(buf []byte, r *Request) (n int, err error) {
	nl := bytes.IndexByte(buf, '\n')
	if nl < 0 {
		if len(buf) > MaxLine && !isLongGet(buf) {
			return len(buf), ErrLineTooLong
		}
		return 0, ErrNeedMore
	}
	line := buf[:nl]
	if len(line) > 1 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	// memcached reads at most maxRead bytes at a time and closes when a
	// whole read holds no newline, unless the line is a get.
	if len(line) > maxRead && !isLongGet(line) {
		return nl + 1, ErrLineTooLong
	}
	// memcached handles the line as a C string: a NUL ends it.
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	return nl + 1, parseLine(line, r)
}

// TextKeys appends to dst the keys of the whole requests at the front of
// buf, stepping over the data blocks of storage commands, until it holds
// max keys, has looked at max requests, or meets an incomplete request. It
// takes no key from a request in error, from a multi-get (a batch of its
// own), or from a base64 key (decoded into r, where the next parse would
// overwrite it), and steps over them. It returns the keys, which alias
// buf, and the bytes it stepped over, which end where a request ends. A
// server uses it to prefetch what the lookups of a pipelined batch will
// read; r is scratch, not the Request the server runs.
func TextKeys(dst [][]byte, buf []byte, max int, r *Request) ([][]byte, int) {
	n := 0
	for reqs := 0; reqs < max && len(dst) < max && n < len(buf); reqs++ {
		m, err := Parse(buf[n:], r)
		if err == ErrNeedMore {
			break
		}
		end := n + m
		if err == nil && r.Cmd.IsStorage() {
			// The server reads the data block whatever becomes of the
			// request (a value too large is swallowed).
			if r.Bytes < 0 || r.Bytes > len(buf)-end-2 {
				break
			}
			end += r.Bytes + 2
		}
		switch {
		case err != nil || r.Meta.Base64 || len(r.Keys) > 1:
		case len(r.Keys) == 1:
			dst = append(dst, r.Keys[0])
		case len(r.Key) > 0:
			dst = append(dst, r.Key)
		}
		n = end
	}
	return dst, n
}

// isLongGet: memcached lets only get and gets lines (many keys) pass
// MaxLine, after at most 100 leading spaces.
func isLongGet(buf []byte) bool {
	i := 0
	for i < len(buf) && buf[i] == ' ' {
		i++
	}
	if i > 100 {
		return false
	}
	rest := buf[i:]
	return bytes.HasPrefix(rest, []byte("get ")) || bytes.HasPrefix(rest, []byte("gets "))
}

// tokenize splits line on spaces as memcached's tokenize_command does:
// runs of spaces separate tokens; after max-1 tokens the rest is one token.
func tokenize(line []byte, toks [][]byte, max int) [][]byte {
	toks = toks[:0]
	i := 0
	for i < len(line) {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		if i == len(line) {
			break
		}
		if len(toks) == max-1 {
			toks = append(toks, line[i:])
			break
		}
		j := i
		for j < len(line) && line[j] != ' ' {
			j++
		}
		toks = append(toks, line[i:j])
		i = j
	}
	return toks
}

func reset(r *Request) {
	// Zeroed in place, then the buffers put back: building the new Request
	// as a value first put ~500 bytes on the parser's stack, enough to make
	// a fresh handler goroutine grow its stack on its first request.
	toks, keys, args, flags, kb := r.toks, r.Keys[:0], r.Args[:0], r.Meta.Flags[:0], r.keyBuf
	*r = Request{}
	r.toks, r.Keys, r.Args, r.Meta.Flags, r.keyBuf = toks, keys, args, flags, kb
}

func parseLine(line []byte, r *Request) error {
	reset(r)
	r.toks = tokenize(line, r.toks, maxTokens)
	t := r.toks
	n := len(t) // memcached's ntokens is n+1: it counts a terminal token
	if n == 0 || len(t[0]) < 2 {
		return ErrUnknown
	}
	cmd := t[0]
	if cmd[0] == 'm' && len(cmd) == 2 {
		return parseMeta(line, r)
	}
	switch string(cmd) {
	case "get", "gets", "gat", "gats":
		return parseRetrieval(line, r)
	case "set":
		return parseStore(r, t, CmdSet)
	case "add":
		return parseStore(r, t, CmdAdd)
	case "replace":
		return parseStore(r, t, CmdReplace)
	case "append":
		return parseStore(r, t, CmdAppend)
	case "prepend":
		return parseStore(r, t, CmdPrepend)
	case "cas":
		if n != 6 && n != 7 {
			return ErrUnknown
		}
		r.Cmd = CmdCas
		return parseStorage(r, t, true)
	case "incr", "decr":
		if n != 3 && n != 4 {
			return ErrUnknown
		}
		r.Cmd = CmdIncr
		if cmd[0] == 'd' {
			r.Cmd = CmdDecr
		}
		if err := keyArg(r, t); err != nil {
			return err
		}
		d, ok := ParseUint64(t[2])
		if !ok {
			return ErrDelta
		}
		r.Delta = d
		return nil
	case "delete":
		if n < 2 || n > 4 {
			return ErrUnknown
		}
		r.Cmd = CmdDelete
		if err := keyArg(r, t); err != nil {
			return err
		}
		// memcached accepts a legacy "0" time, and nothing else, before an
		// optional noreply.
		if n > 2 {
			hold0 := string(t[2]) == "0"
			if !(n == 3 && (hold0 || r.NoReply) || n == 4 && hold0 && r.NoReply) {
				return ErrDeleteArgs
			}
		}
		return nil
	case "touch":
		if n != 3 && n != 4 {
			return ErrUnknown
		}
		r.Cmd = CmdTouch
		if err := keyArg(r, t); err != nil {
			return err
		}
		e, ok := parseInt32(t[2])
		if !ok {
			return ErrExptime
		}
		r.Exptime = int64(e)
		return nil
	case "flush_all":
		if n > 3 {
			return ErrUnknown
		}
		r.Cmd = CmdFlushAll
		r.NoReply = noreply(t)
		if n == 2 && !r.NoReply || n == 3 {
			e, ok := parseInt32(t[1])
			if !ok {
				return ErrExptime
			}
			r.Exptime = int64(e)
		}
		return nil
	case "version":
		r.Cmd = CmdVersion
	case "quit":
		r.Cmd = CmdQuit
	case "verbosity":
		if n != 2 && n != 3 {
			return ErrUnknown
		}
		r.Cmd = CmdVerbosity
		r.NoReply = noreply(t)
	case "cache_memlimit":
		if n != 2 && n != 3 {
			return ErrUnknown
		}
		r.Cmd = CmdCacheMemlimit
		r.NoReply = noreply(t)
	case "stats":
		r.Cmd = CmdStats
	case "shutdown":
		r.Cmd = CmdShutdown
	case "slabs":
		r.Cmd = CmdSlabs
	case "lru":
		if n < 2 {
			return ErrUnknown
		}
		r.Cmd = CmdLru
	case "lru_crawler":
		r.Cmd = CmdLruCrawler
	case "watch":
		r.Cmd = CmdWatch
	default:
		if bytes.HasPrefix(t[n-1], []byte("HTTP/")) {
			return ErrHTTP
		}
		return ErrUnknown
	}
	r.Args = append(r.Args, t[1:]...)
	return nil
}

// keyArg takes noreply and the key (the second token) of a text command,
// in memcached's order: noreply is decided first, so even the error for a
// key over 250 bytes goes unanswered on a noreply line.
func keyArg(r *Request, t [][]byte) error {
	r.NoReply = noreply(t)
	if len(t[1]) > MaxKeyLen {
		return ErrFormat
	}
	r.Key = t[1]
	return nil
}

// noreply: memcached looks only at the last token.
func noreply(t [][]byte) bool { return string(t[len(t)-1]) == "noreply" }

// parseStore parses set, add, replace, append and prepend as cmd.
func parseStore(r *Request, t [][]byte, cmd Command) error {
	if len(t) != 5 && len(t) != 6 {
		return ErrUnknown
	}
	r.Cmd = cmd
	return parseStorage(r, t, false)
}

// parseStorage follows memcached's process_update_command: errors in the
// line are answered without reading the data block (which memcached then
// parses as a command), except a value too large, which is swallowed.
func parseStorage(r *Request, t [][]byte, cas bool) error {
	if err := keyArg(r, t); err != nil {
		return err
	}
	flags, ok1 := parseUint32(t[2])
	exp, ok2 := parseInt32(t[3])
	vlen, ok3 := parseInt32(t[4])
	if !ok1 || !ok2 || !ok3 {
		return ErrFormat
	}
	if cas {
		c, ok := ParseUint64(t[5])
		if !ok {
			return ErrFormat
		}
		r.CAS = c
	}
	if vlen < 0 || vlen > 1<<31-1-2 {
		return ErrFormat
	}
	r.Flags, r.Exptime, r.Bytes = flags, int64(exp), int(vlen)
	return nil
}

// parseRetrieval reads get, gets, gat and gats lines, which may hold any
// number of keys.
func parseRetrieval(line []byte, r *Request) error {
	t := r.toks
	if len(t) < 2 {
		return ErrUnknown
	}
	switch string(t[0]) {
	case "get":
		r.Cmd = CmdGet
	case "gets":
		r.Cmd = CmdGets
	case "gat":
		r.Cmd = CmdGat
	case "gats":
		r.Cmd = CmdGats
	}
	// Split the whole line again without the token limit: memcached walks
	// long get lines in pieces with the same result.
	r.toks = tokenize(line, r.toks, 1<<30)
	t = r.toks[1:]
	if r.Cmd == CmdGat || r.Cmd == CmdGats {
		e, ok := parseInt32(t[0])
		if !ok {
			return ErrExptime
		}
		r.Exptime = int64(e)
		t = t[1:] // "gat 100" with no key answers END, as memcached
	}
	r.Keys = append(r.Keys, t...)
	return nil
}

// DataOK reports whether a storage command's data block ends properly:
// memcached requires exactly "\r\n" after the declared bytes.
func DataOK(block []byte) bool {
	n := len(block)
	return n >= 2 && block[n-2] == '\r' && block[n-1] == '\n'
}
