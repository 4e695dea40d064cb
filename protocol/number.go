package protocol

// memcached parses every number with C's strtoull/strtol followed by its own
// checks (safe_strtoull, safe_strtoul, safe_strtol in util.c). Clients see
// the quirks, so they are reproduced exactly: leading white space and a sign
// are accepted, the number must end at the end of the token or at white
// space, out-of-range values fail, and the 32-bit variants truncate what the
// 64-bit C library returned.

func isSpace(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' }

// strtou parses like strtoull in base 10: it returns the value (negated
// modulo 2^64 after a '-'), whether a '-' was seen, and whether the parse
// succeeded and ended at the end of b or at white space.
func strtou(b []byte) (n uint64, neg, ok bool) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		neg = b[i] == '-'
		i++
	}
	start := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, neg, false // ERANGE
		}
		n = n*10 + d
	}
	// The C functions stop at a NUL as at the end of the string.
	if i == start || (i < len(b) && !isSpace(b[i]) && b[i] != 0) {
		return 0, neg, false
	}
	if neg {
		n = -n
	}
	return n, neg, true
}

// ParseUint64 is memcached's safe_strtoull: "-5" fails, but "-0" is 0 and a
// '-' whose negation still fits a signed 64-bit number is accepted (as C's
// strtoull negates), because only a result negative as int64 is checked.
func ParseUint64(b []byte) (uint64, bool) {
	n, neg, ok := strtou(b)
	if !ok || (neg && int64(n) < 0) {
		return 0, false
	}
	return n, true
}

// ParseUint32 is memcached's safe_strtoul, for the server's own commands.
func ParseUint32(b []byte) (uint32, bool) { return parseUint32(b) }

// ParseInt32 is memcached's safe_strtol.
func ParseInt32(b []byte) (int32, bool) { return parseInt32(b) }

// parseUint32 is safe_strtoul on a 64-bit system: parsed as 64 bits, then
// truncated to 32 (so flags 4294967296 are stored as 0, as in memcached).
func parseUint32(b []byte) (uint32, bool) {
	n, ok := ParseUint64(b)
	return uint32(n), ok
}

// parseInt32 is safe_strtol into an int32: strtol's 64-bit range check
// (ERANGE past 2^63-1, or -2^63), then truncation to 32 bits.
func parseInt32(b []byte) (int32, bool) {
	i := 0
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	neg := false
	if i < len(b) && (b[i] == '+' || b[i] == '-') {
		neg = b[i] == '-'
		i++
	}
	limit := uint64(1<<63 - 1)
	if neg {
		limit = 1 << 63
	}
	start := i
	var n uint64
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if n > (limit-d)/10 {
			return 0, false // ERANGE, checked before n can wrap
		}
		n = n*10 + d
	}
	if i == start || (i < len(b) && !isSpace(b[i]) && b[i] != 0) {
		return 0, false
	}
	if neg {
		return int32(-int64(n)), true
	}
	return int32(int64(n)), true
}
