package protocol

// Meta holds the flags of a meta command (mg, ms, md, ma), parsed as
// memcached 1.6.18's _meta_flag_preparse does. Flags keeps the flag tokens in
// request order: replies echo return flags in that order.
type Meta struct {
	Flags [][]byte

	Base64     bool // b: the key is base64; Request.Key holds it decoded
	Value      bool // v
	Quiet      bool // q
	NoUpdate   bool // u
	Invalidate bool // I
	HasTTL     bool // T
	TTL        int64
	Vivify     bool // N
	VivifyTTL  int64
	Recache    bool // R
	RecacheTTL int64
	HasCAS     bool // C
	CAS        uint64
	Flags32    uint32 // F
	Mode       byte   // M
	Initial    uint64 // J
	Delta      uint64 // D (default 1)
	Opaque     []byte // O, with its letter
	RawKey     []byte // the key as sent (base64 when Base64)
}

// Meta command errors, memcached 1.6.18's exact strings.
var (
	ErrMetaDuplicate  = &ErrorReply{Reply: "CLIENT_ERROR duplicate flag"}
	ErrMetaInvalid    = &ErrorReply{Reply: "CLIENT_ERROR invalid flag"}
	ErrMetaInvalidDup = &ErrorReply{Reply: "CLIENT_ERROR invalid or duplicate flag"}
	ErrMetaBadToken   = &ErrorReply{Reply: "CLIENT_ERROR bad token in command line format"}
	ErrMetaKeyDecode  = &ErrorReply{Reply: "CLIENT_ERROR error decoding key"}
	ErrMetaModeLen    = &ErrorReply{Reply: "CLIENT_ERROR incorrect length for M token"}
	ErrMetaInitial    = &ErrorReply{Reply: "CLIENT_ERROR invalid numeric initial value"}
	ErrMetaDelta      = &ErrorReply{Reply: "CLIENT_ERROR invalid numeric delta value"}
	ErrMetaTooLong    = &ErrorReply{Reply: "CLIENT_ERROR options flags are too long"}
	ErrMetaSetTooLong = &ErrorReply{Reply: "CLIENT_ERROR options flags too long"} // ms says it without "are"
	ErrMetaOpaque     = &ErrorReply{Reply: "CLIENT_ERROR opaque token too long"}
	ErrMetaSetMode    = &ErrorReply{Reply: "CLIENT_ERROR invalid mode for ms M token"}
	ErrMetaArithMode  = &ErrorReply{Reply: "CLIENT_ERROR invalid mode for ma M token"}
	ErrTooLarge       = &ErrorReply{Reply: "SERVER_ERROR object too large for cache"}
	ErrNoMemory       = &ErrorReply{Reply: "SERVER_ERROR out of memory storing object"}
)

func parseMeta(line []byte, r *Request) error {
	t := r.toks
	switch t[0][1] {
	case 'n':
		r.Cmd = CmdMetaNoop
		return nil
	case 'g':
		r.Cmd = CmdMetaGet
	case 's':
		r.Cmd = CmdMetaSet
	case 'd':
		r.Cmd = CmdMetaDelete
	case 'a':
		r.Cmd = CmdMetaArith
	case 'e':
		r.Cmd = CmdMetaDebug
		return parseMetaDebug(r, t)
	default:
		return ErrUnknown
	}
	if len(t) < 2 {
		return ErrUnknown
	}
	if len(t[1]) > MaxKeyLen {
		return ErrFormat
	}
	r.Key, r.Meta.RawKey = t[1], t[1]
	first := 2
	if r.Cmd == CmdMetaSet {
		if len(t) < 3 {
			return ErrFormat
		}
		if len(t) > maxMetaTokens {
			return ErrMetaSetTooLong
		}
		vlen, ok := parseInt32(t[2])
		if !ok || vlen < 0 || vlen > 1<<31-1-2 {
			return ErrFormat
		}
		r.Bytes = int(vlen)
		first = 3
		// From here on an error still swallows the data block.
		if err := r.Meta.preparse(r, t[first:]); err != nil {
			r.SwallowErr = err
			return nil
		}
		switch r.Meta.Mode {
		case 0, 'E', 'A', 'P', 'R', 'S':
		default:
			r.SwallowErr = ErrMetaSetMode
		}
		return nil
	}
	if len(t) > maxMetaTokens {
		if r.Cmd == CmdMetaGet {
			return ErrMetaTooLong
		}
		return ErrMetaSetTooLong // md and ma say it as ms does
	}
	err := r.Meta.preparse(r, t[first:])
	switch {
	case err == nil:
	case r.Cmd == CmdMetaGet || err == ErrMetaOpaque:
		return err
	default:
		// md and ma report every flag problem alike.
		return ErrMetaInvalidDup
	}
	if r.Cmd == CmdMetaArith {
		switch r.Meta.Mode {
		case 0, 'I', '+', 'D', '-': // 1.6.18 refuses lower case
		default:
			return ErrMetaArithMode
		}
	}
	return nil
}

// preparse reads the flags, as memcached's _meta_flag_preparse: a repeated
// or unknown flag fails at once; a bad argument is remembered and reported
// after the rest are read.
func (m *Meta) preparse(r *Request, flags [][]byte) *ErrorReply {
	m.Delta = 1
	var seen [2]uint64
	var bad *ErrorReply
	badF := false // a bad F leaves no message of its own (see below)
	for _, f := range flags {
		c := f[0]
		if c >= 127 || seen[c>>6]&(1<<(c&63)) != 0 {
			return ErrMetaDuplicate
		}
		seen[c>>6] |= 1 << (c & 63)
		m.Flags = append(m.Flags, f)
		arg := f[1:]
		var err *ErrorReply
		switch c {
		case 'b':
			if n := decodeBase64(r.keyBuffer(), r.Key); n == 0 {
				err = ErrMetaKeyDecode
			} else {
				r.Key = r.keyBuf[:n]
				m.Base64 = true
			}
		case 'N':
			m.Vivify = true
			m.VivifyTTL, err = metaTTL(arg)
		case 'T':
			m.HasTTL = true
			m.TTL, err = metaTTL(arg)
		case 'R':
			m.Recache = true
			m.RecacheTTL, err = metaTTL(arg)
		case 'O':
			if len(f) > maxOpaque {
				return ErrMetaOpaque
			}
			m.Opaque = f
		case 'P', 'L', 'k', 's', 't', 'c', 'f', 'l', 'h':
		case 'v':
			m.Value = true
		case 'u':
			m.NoUpdate = true
		case 'q':
			m.Quiet = true
		case 'F':
			v, ok := parseUint32(arg)
			badF = badF || !ok
			m.Flags32 = v
		case 'C':
			v, ok := ParseUint64(arg)
			if !ok {
				err = ErrMetaBadToken
			}
			m.CAS, m.HasCAS = v, ok
		case 'M':
			if len(f) != 2 {
				err = ErrMetaModeLen
			} else {
				m.Mode = f[1]
			}
		case 'J':
			v, ok := ParseUint64(arg)
			if !ok {
				err = ErrMetaInitial
			}
			m.Initial = v
		case 'D':
			v, ok := ParseUint64(arg)
			if !ok {
				err = ErrMetaDelta
			}
			m.Delta = v
		case 'I':
			m.Invalidate = true
		default:
			return ErrMetaInvalid
		}
		if err != nil {
			bad = err
		}
	}
	if bad == nil && badF {
		// memcached's F sets no error text: the reply is the default one,
		// unless another flag set its own.
		return ErrFormat
	}
	return bad
}

// decodeBase64 decodes src into dst as memcached's base64_decode (Jouni
// Malinen's) does: bytes outside the alphabet are skipped, the alphabet's
// characters (with '=') must come in groups of four, and decoding stops
// after the first group with padding. It returns the decoded length, 0 if
// the input is not acceptable.
func decodeBase64(dst, src []byte) int {
	const invalid = 0x80
	val := func(c byte) byte {
		switch {
		case c >= 'A' && c <= 'Z':
			return c - 'A'
		case c >= 'a' && c <= 'z':
			return c - 'a' + 26
		case c >= '0' && c <= '9':
			return c - '0' + 52
		case c == '+':
			return 62
		case c == '/':
			return 63
		case c == '=':
			return 0
		}
		return invalid
	}
	count := 0
	for _, c := range src {
		if val(c) != invalid {
			count++
		}
	}
	if count == 0 || count%4 != 0 || count/4*3 > len(dst) {
		return 0
	}
	var block [4]byte
	n, pos, pad := 0, 0, 0
	for _, c := range src {
		v := val(c)
		if v == invalid {
			continue
		}
		if c == '=' {
			pad++
		}
		block[n] = v
		if n++; n < 4 {
			continue
		}
		dst[pos] = block[0]<<2 | block[1]>>4
		dst[pos+1] = block[1]<<4 | block[2]>>2
		dst[pos+2] = block[2]<<6 | block[3]
		pos += 3
		n = 0
		if pad > 0 {
			if pad > 2 {
				return 0 // invalid padding
			}
			pos -= pad
			break
		}
	}
	return pos
}

// metaTTL parses a T, N or R token: a 32-bit exptime, as memcached.
func metaTTL(arg []byte) (int64, *ErrorReply) {
	v, ok := parseInt32(arg)
	if !ok {
		return 0, ErrMetaBadToken
	}
	return int64(v), nil
}

// parseMetaDebug reads "me <key> [b]".
func parseMetaDebug(r *Request, t [][]byte) error {
	if len(t) < 2 || len(t[1]) > MaxKeyLen {
		return ErrFormat
	}
	r.Key, r.Meta.RawKey = t[1], t[1]
	if len(t) >= 3 && string(t[2]) == "b" {
		n := decodeBase64(r.keyBuffer(), t[1])
		if n == 0 {
			return ErrFormat // me says so, unlike the other meta commands
		}
		r.Key = r.keyBuf[:n]
		r.Meta.Base64 = true
	}
	return nil
}
