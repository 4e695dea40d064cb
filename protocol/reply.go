package protocol

import "strconv"

// CRLF ends every reply line.
const CRLF = "\r\n"

// AppendLine appends s and CRLF.
func AppendLine(dst []byte, s string) []byte { return append(append(dst, s...), CRLF...) }

// AppendValueHeader appends "VALUE <key> <flags> <bytes>[ <cas>]\r\n", the
// line before each value in a get, gets, gat or gats reply.
func AppendValueHeader(dst, key []byte, flags uint32, n int, cas uint64, withCAS bool) []byte {
	dst = append(dst, "VALUE "...)
	dst = append(dst, key...)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, uint64(flags), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(n), 10)
	if withCAS {
		dst = append(dst, ' ')
		dst = strconv.AppendUint(dst, cas, 10)
	}
	return append(dst, CRLF...)
}

// AppendStat appends "STAT <name> <value>\r\n".
func AppendStat(dst []byte, name string, value []byte) []byte {
	dst = append(dst, "STAT "...)
	dst = append(dst, name...)
	dst = append(dst, ' ')
	dst = append(dst, value...)
	return append(dst, CRLF...)
}
