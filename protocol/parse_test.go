package protocol

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every expectation below is what memcached 1.6.18 does with the same line,
// checked against a live server (printf 'LINE\r\n' | nc -q1 127.0.0.1 PORT).

// want is the parsed request expected from a line. Every field is compared,
// so a field left at zero must be zero: nothing may leak from a previous
// parse into the reused Request.
type want struct {
	cmd     Command
	key     string
	keys    []string
	args    []string
	flags   uint32
	exptime int64
	bytes   int
	cas     uint64
	delta   uint64
	noreply bool
	swallow *ErrorReply
	meta    *wantMeta // meta commands only
}

// wantMeta is the expected Meta of a meta command. Flags are the flag
// tokens in request order.
type wantMeta struct {
	flags      []string
	rawKey     string
	base64     bool
	value      bool
	quiet      bool
	noUpdate   bool
	invalidate bool
	hasTTL     bool
	ttl        int64
	vivify     bool
	vivifyTTL  int64
	recache    bool
	recacheTTL int64
	hasCAS     bool
	cas        uint64
	flags32    uint32
	mode       byte
	initial    uint64
	delta      uint64
	opaque     string
}

type parseCase struct {
	name string
	in   string
	n    int   // bytes consumed; 0 means the whole input
	err  error // nil, ErrNeedMore or an *ErrorReply (compared by reply and Close)
	want want  // compared when err is nil or an *ErrorReply with NoReply set
}

var (
	key250 = strings.Repeat("k", MaxKeyLen)
	key251 = strings.Repeat("k", MaxKeyLen+1)
	// opaque32 is the longest O token memcached takes: the letter and 31
	// characters make MFLAG_MAX_OPAQUE_LENGTH (32).
	opaque32 = "O" + strings.Repeat("1", maxOpaque-1)
	opaque33 = "O" + strings.Repeat("1", maxOpaque)
	// flags17 is the most flags a meta command may carry (MFLAG_MAX_OPT_LENGTH).
	flags17 = "s t c f l h u q k O1 P L T1 N1 R1 v b"
)

func parseCases() []parseCase {
	return []parseCase{
		// Storage commands: <cmd> <key> <flags> <exptime> <bytes> [noreply].
		{name: "set", in: "set k 1 2 3\r\n", want: want{cmd: CmdSet, key: "k", flags: 1, exptime: 2, bytes: 3}},
		{name: "set bare LF", in: "set k 0 0 1\na\r\n", n: 12, want: want{cmd: CmdSet, key: "k", bytes: 1}},
		{name: "set noreply", in: "set k 0 0 1 noreply\r\n", want: want{cmd: CmdSet, key: "k", bytes: 1, noreply: true}},
		{name: "set runs of spaces", in: "set  k  0  0  1 \r\n", want: want{cmd: CmdSet, key: "k", bytes: 1}},
		{name: "add", in: "add k 0 0 1\r\n", want: want{cmd: CmdAdd, key: "k", bytes: 1}},
		{name: "replace", in: "replace k 0 0 1\r\n", want: want{cmd: CmdReplace, key: "k", bytes: 1}},
		{name: "append", in: "append k 0 0 1\r\n", want: want{cmd: CmdAppend, key: "k", bytes: 1}},
		{name: "prepend", in: "prepend k 0 0 1\r\n", want: want{cmd: CmdPrepend, key: "k", bytes: 1}},
		{name: "cas", in: "cas k 0 0 1 99\r\n", want: want{cmd: CmdCas, key: "k", bytes: 1, cas: 99}},
		{name: "cas noreply", in: "cas k 0 0 1 99 noreply\r\n", want: want{cmd: CmdCas, key: "k", bytes: 1, cas: 99, noreply: true}},
		{name: "set zero bytes", in: "set k 0 0 0\r\n", want: want{cmd: CmdSet, key: "k"}},
		{name: "set 3 args", in: "set k 0 0\r\n", err: ErrUnknown},
		{name: "set 6 args", in: "set k 0 0 1 noreply extra\r\n", err: ErrUnknown},
		{name: "set only", in: "set\r\n", err: ErrUnknown},
		{name: "cas 4 args", in: "cas k 0 0 1\r\n", err: ErrUnknown},
		{name: "cas 7 args", in: "cas k 0 0 1 2 noreply x\r\n", err: ErrUnknown},
		{name: "set too many tokens", in: "set k 0 0 1" + strings.Repeat(" x", 25) + "\r\n", err: ErrUnknown},

		// Numbers, parsed as memcached's safe_strto* do.
		{name: "flags 2^32-1", in: "set k 4294967295 0 1\r\n", want: want{cmd: CmdSet, key: "k", flags: 4294967295, bytes: 1}},
		{name: "flags 2^32 truncates to 0", in: "set k 4294967296 0 1\r\n", want: want{cmd: CmdSet, key: "k", bytes: 1}},
		{name: "flags 2^32+7 truncates", in: "set k 4294967303 0 1\r\n", want: want{cmd: CmdSet, key: "k", flags: 7, bytes: 1}},
		{name: "flags 2^64 out of range", in: "set k 18446744073709551616 0 1\r\n", err: ErrFormat},
		{name: "flags negative", in: "set k -1 0 1\r\n", err: ErrFormat},
		{name: "flags -0", in: "set k -0 0 1\r\n", want: want{cmd: CmdSet, key: "k", bytes: 1}},
		{name: "flags 12abc", in: "set k 12abc 0 1\r\n", err: ErrFormat},
		{name: "flags empty-ish", in: "set k + 0 1\r\n", err: ErrFormat},
		{name: "flags with noreply", in: "set k abc 0 1 noreply\r\n", err: ErrFormat, want: want{noreply: true}},
		{name: "exptime 12abc", in: "set k 0 12abc 1\r\n", err: ErrFormat},
		{name: "exptime negative", in: "set k 0 -5 1\r\n", want: want{cmd: CmdSet, key: "k", exptime: -5, bytes: 1}},
		{name: "exptime 2^32 truncates to 0", in: "set k 0 4294967296 1\r\n", want: want{cmd: CmdSet, key: "k", bytes: 1}},
		{name: "exptime int64 max truncates to -1", in: "set k 0 9223372036854775807 1\r\n", want: want{cmd: CmdSet, key: "k", exptime: -1, bytes: 1}},
		{name: "exptime past int64", in: "set k 0 9223372036854775808 1\r\n", err: ErrFormat},
		{name: "exptime int64 min", in: "set k 0 -9223372036854775808 1\r\n", want: want{cmd: CmdSet, key: "k", bytes: 1}},
		{name: "exptime below int64", in: "set k 0 -9223372036854775809 1\r\n", err: ErrFormat},
		{name: "exptime 2^64", in: "set k 0 18446744073709551616 1\r\n", err: ErrFormat},
		{name: "exptime 2^65", in: "set k 0 36893488147419103232 1\r\n", err: ErrFormat},
		{name: "bytes 2^64+1", in: "set k 0 0 18446744073709551617\r\n", err: ErrFormat},
		{name: "touch 2^64", in: "touch k 18446744073709551616\r\n", err: ErrExptime},
		{name: "mg T 2^64", in: "mg k T18446744073709551616\r\n", err: ErrMetaBadToken},
		{name: "bytes negative", in: "set k 0 0 -1\r\n", err: ErrFormat},
		{name: "bytes 12abc", in: "set k 0 0 12abc\r\n", err: ErrFormat},
		{name: "bytes plus sign", in: "set k 0 0 +1\r\n", want: want{cmd: CmdSet, key: "k", bytes: 1}},
		{name: "bytes leading zero", in: "set k 0 0 01\r\n", want: want{cmd: CmdSet, key: "k", bytes: 1}},
		{name: "bytes int32 max", in: "set k 0 0 2147483647\r\n", err: ErrFormat},
		{name: "bytes int32 max-1", in: "set k 0 0 2147483646\r\n", err: ErrFormat},
		{name: "bytes int32 max-2", in: "set k 0 0 2147483645\r\n", want: want{cmd: CmdSet, key: "k", bytes: 2147483645}},
		{name: "bytes 2^32+1 truncates to 1", in: "set k 0 0 4294967297\r\n", want: want{cmd: CmdSet, key: "k", bytes: 1}},
		{name: "bytes 2^32-1 truncates to -1", in: "set k 0 0 4294967295\r\n", err: ErrFormat},
		{name: "cas unique negative", in: "cas k 0 0 1 -1\r\n", err: ErrFormat},
		{name: "cas unique abc", in: "cas k 0 0 1 abc\r\n", err: ErrFormat},
		{name: "cas unique uint64 max", in: "cas k 0 0 1 18446744073709551615\r\n", want: want{cmd: CmdCas, key: "k", bytes: 1, cas: 1<<64 - 1}},
		{name: "cas unique int64 max", in: "cas k 0 0 1 9223372036854775807\r\n", want: want{cmd: CmdCas, key: "k", bytes: 1, cas: 1<<63 - 1}},

		// Keys: at most 250 bytes.
		{name: "set key 250", in: "set " + key250 + " 0 0 1\r\n", want: want{cmd: CmdSet, key: key250, bytes: 1}},
		{name: "set key 251", in: "set " + key251 + " 0 0 1\r\n", err: ErrFormat},
		{name: "set key 251 noreply", in: "set " + key251 + " 0 0 1 noreply\r\n", err: ErrFormat, want: want{noreply: true}},
		{name: "incr key 251", in: "incr " + key251 + " 1\r\n", err: ErrFormat},
		{name: "delete key 251", in: "delete " + key251 + "\r\n", err: ErrFormat},
		{name: "touch key 251", in: "touch " + key251 + " 1\r\n", err: ErrFormat},
		{name: "get key 250", in: "get " + key250 + "\r\n", want: want{cmd: CmdGet, keys: []string{key250}}},
		// A get with a long key fails as a whole: the server checks the keys
		// as it answers, so that it can drop the values found before.
		{name: "get key 251", in: "get " + key251 + "\r\n", want: want{cmd: CmdGet, keys: []string{key251}}},
		{name: "key of 3000 bytes", in: "set " + strings.Repeat("k", 3000) + " 0 0 1\r\n", err: ErrFormat},

		// Retrieval.
		{name: "get", in: "get k\r\n", want: want{cmd: CmdGet, keys: []string{"k"}}},
		{name: "get bare LF", in: "get k\n", want: want{cmd: CmdGet, keys: []string{"k"}}},
		{name: "get many", in: "get a b  c\r\n", want: want{cmd: CmdGet, keys: []string{"a", "b", "c"}}},
		{name: "get noreply is a key", in: "get k noreply\r\n", want: want{cmd: CmdGet, keys: []string{"k", "noreply"}}},
		{name: "get past MAX_TOKENS", in: "get " + strings.Join(manyKeys(40), " ") + "\r\n", want: want{cmd: CmdGet, keys: manyKeys(40)}},
		{name: "gets", in: "gets a b\r\n", want: want{cmd: CmdGets, keys: []string{"a", "b"}}},
		{name: "gat", in: "gat 10 a b\r\n", want: want{cmd: CmdGat, exptime: 10, keys: []string{"a", "b"}}},
		{name: "gats negative", in: "gats -1 a\r\n", want: want{cmd: CmdGats, exptime: -1, keys: []string{"a"}}},
		{name: "gat bad exptime", in: "gat abc k\r\n", err: ErrExptime},
		{name: "get no key", in: "get\r\n", err: ErrUnknown},
		{name: "get space no key", in: "get \r\n", err: ErrUnknown},
		{name: "gat no exptime", in: "gat\r\n", err: ErrUnknown},
		{name: "gats no exptime", in: "gats\r\n", err: ErrUnknown},
		// memcached walks zero keys and answers END.
		{name: "gat no key", in: "gat 10\r\n", want: want{cmd: CmdGat, exptime: 10}},
		{name: "gats no key", in: "gats 10\r\n", want: want{cmd: CmdGats, exptime: 10}},
		{name: "upper case", in: "GET k\r\n", err: ErrUnknown},

		// incr and decr.
		{name: "incr", in: "incr k 5\r\n", want: want{cmd: CmdIncr, key: "k", delta: 5}},
		{name: "decr", in: "decr k 18446744073709551615\r\n", want: want{cmd: CmdDecr, key: "k", delta: 1<<64 - 1}},
		{name: "incr noreply", in: "incr k 1 noreply\r\n", want: want{cmd: CmdIncr, key: "k", delta: 1, noreply: true}},
		{name: "incr delta 2^64", in: "incr k 18446744073709551616\r\n", err: ErrDelta},
		{name: "incr delta negative", in: "incr k -1\r\n", err: ErrDelta},
		{name: "incr delta abc", in: "incr k abc\r\n", err: ErrDelta},
		{name: "incr delta abc noreply", in: "incr k abc noreply\r\n", err: ErrDelta, want: want{noreply: true}},
		{name: "incr no delta", in: "incr k\r\n", err: ErrUnknown},
		{name: "incr 3 args", in: "incr k 1 noreply x\r\n", err: ErrUnknown},

		// delete takes a legacy "0" and nothing else.
		{name: "delete", in: "delete k\r\n", want: want{cmd: CmdDelete, key: "k"}},
		{name: "delete 0", in: "delete k 0\r\n", want: want{cmd: CmdDelete, key: "k"}},
		{name: "delete 1", in: "delete k 1\r\n", err: ErrDeleteArgs},
		{name: "delete noreply", in: "delete k noreply\r\n", want: want{cmd: CmdDelete, key: "k", noreply: true}},
		{name: "delete 0 noreply", in: "delete k 0 noreply\r\n", want: want{cmd: CmdDelete, key: "k", noreply: true}},
		{name: "delete 1 noreply", in: "delete k 1 noreply\r\n", err: ErrDeleteArgs, want: want{noreply: true}},
		{name: "delete 0 0", in: "delete k 0 0\r\n", err: ErrDeleteArgs},
		{name: "delete no key", in: "delete\r\n", err: ErrUnknown},
		{name: "delete 4 args", in: "delete k 0 noreply x\r\n", err: ErrUnknown},

		// touch, flush_all.
		{name: "touch", in: "touch k 10\r\n", want: want{cmd: CmdTouch, key: "k", exptime: 10}},
		{name: "touch noreply", in: "touch k 10 noreply\r\n", want: want{cmd: CmdTouch, key: "k", exptime: 10, noreply: true}},
		{name: "touch bad exptime", in: "touch k abc\r\n", err: ErrExptime},
		{name: "touch no exptime", in: "touch k\r\n", err: ErrUnknown},
		{name: "flush_all", in: "flush_all\r\n", want: want{cmd: CmdFlushAll}},
		{name: "flush_all delay", in: "flush_all 10\r\n", want: want{cmd: CmdFlushAll, exptime: 10}},
		{name: "flush_all negative", in: "flush_all -1\r\n", want: want{cmd: CmdFlushAll, exptime: -1}},
		{name: "flush_all noreply", in: "flush_all noreply\r\n", want: want{cmd: CmdFlushAll, noreply: true}},
		{name: "flush_all delay noreply", in: "flush_all 5 noreply\r\n", want: want{cmd: CmdFlushAll, exptime: 5, noreply: true}},
		{name: "flush_all two numbers", in: "flush_all 1 2\r\n", want: want{cmd: CmdFlushAll, exptime: 1}},
		{name: "flush_all bad delay", in: "flush_all abc\r\n", err: ErrExptime},
		{name: "flush_all 3 args", in: "flush_all 0 noreply x\r\n", err: ErrUnknown},

		// Other commands.
		{name: "version", in: "version\r\n", want: want{cmd: CmdVersion}},
		{name: "version extra", in: "version extra\r\n", want: want{cmd: CmdVersion, args: []string{"extra"}}},
		{name: "quit", in: "quit\r\n", want: want{cmd: CmdQuit}},
		{name: "verbosity", in: "verbosity 1\r\n", want: want{cmd: CmdVerbosity, args: []string{"1"}}},
		{name: "verbosity noreply", in: "verbosity 1 noreply\r\n", want: want{cmd: CmdVerbosity, noreply: true, args: []string{"1", "noreply"}}},
		{name: "verbosity no level", in: "verbosity\r\n", err: ErrUnknown},
		{name: "verbosity 3 args", in: "verbosity 1 2 3\r\n", err: ErrUnknown},
		{name: "cache_memlimit", in: "cache_memlimit 64\r\n", want: want{cmd: CmdCacheMemlimit, args: []string{"64"}}},
		{name: "cache_memlimit no arg", in: "cache_memlimit\r\n", err: ErrUnknown},
		{name: "stats", in: "stats\r\n", want: want{cmd: CmdStats}},
		{name: "stats items", in: "stats items\r\n", want: want{cmd: CmdStats, args: []string{"items"}}},
		{name: "lru no arg", in: "lru\r\n", err: ErrUnknown},
		{name: "unknown", in: "foo\r\n", err: ErrUnknown},
		{name: "one letter", in: "x\r\n", err: ErrUnknown},

		// Line ends.
		{name: "empty CRLF", in: "\r\n", err: ErrUnknown},
		{name: "empty LF", in: "\n", err: ErrUnknown},
		{name: "spaces", in: "   \r\n", err: ErrUnknown},
		{name: "double CR", in: "version\r\r\n", err: ErrUnknown},
		{name: "bare LF", in: "version\n", want: want{cmd: CmdVersion}},
		{name: "CR inside", in: "ver\rsion\r\n", err: ErrUnknown},
		// memcached reads the line as a C string.
		{name: "NUL ends the line", in: "version\x00garbage\r\n", want: want{cmd: CmdVersion}},
		{name: "NUL in a get", in: "get a\x00 b\r\n", want: want{cmd: CmdGet, keys: []string{"a"}}},
		{name: "NUL first", in: "\x00version\r\n", err: ErrUnknown},
		{name: "only the first line", in: "version\r\nquit\r\n", n: 9, want: want{cmd: CmdVersion}},
		{name: "no newline", in: "version", err: ErrNeedMore, n: -1},
		{name: "CR no LF", in: "version\r", err: ErrNeedMore, n: -1},
		{name: "empty", in: "", err: ErrNeedMore, n: -1},
		{name: "HTTP", in: "GET / HTTP/1.1\r\n", err: ErrHTTP},
		{name: "HTTP unknown verb", in: "foo HTTP/1.0\r\n", err: ErrHTTP},

		// Long lines: 2048 bytes without a newline close the connection,
		// unless the line is a get or gets after at most 100 spaces.
		{name: "2048 without newline", in: strings.Repeat("x", MaxLine), err: ErrNeedMore, n: -1},
		{name: "2049 without newline", in: strings.Repeat("x", MaxLine+1), err: ErrLineTooLong},
		{name: "3000-byte set without newline", in: "set " + strings.Repeat("k", 3000), err: ErrLineTooLong},
		{name: "long get", in: "get " + strings.Repeat("k ", 2000), err: ErrNeedMore, n: -1},
		{name: "long gets", in: "gets " + strings.Repeat("k ", 2000), err: ErrNeedMore, n: -1},
		{name: "long get after 100 spaces", in: strings.Repeat(" ", 100) + "get " + strings.Repeat("k ", 2000), err: ErrNeedMore, n: -1},
		{name: "long get after 101 spaces", in: strings.Repeat(" ", 101) + "get " + strings.Repeat("k ", 2000), err: ErrLineTooLong},
		{name: "long gat", in: "gat 1 " + strings.Repeat("k ", 2000), err: ErrLineTooLong},
		{name: "long mg", in: "mg " + strings.Repeat("k", 3000), err: ErrLineTooLong},
		{name: "16000-byte line", in: "set " + strings.Repeat("k", 16000) + " 0 0 1\r\n", err: ErrFormat},
		{name: "17000-byte line", in: "set " + strings.Repeat("k", 17000) + " 0 0 1\r\n", err: ErrLineTooLong},
		{name: "17000-byte get", in: "get " + strings.Repeat("k ", 8500) + "\r\n", want: want{cmd: CmdGet, keys: slices.Repeat([]string{"k"}, 8500)}},
		{name: "long get with newline", in: "get " + strings.Join(manyKeys(1000), " ") + "\r\n", want: want{cmd: CmdGet, keys: manyKeys(1000)}},

		// Meta commands.
		{name: "mn", in: "mn\r\n", want: want{cmd: CmdMetaNoop}},
		{name: "mn extra", in: "mn extra\r\n", want: want{cmd: CmdMetaNoop}},
		{name: "m", in: "m\r\n", err: ErrUnknown},
		{name: "mz", in: "mz k\r\n", err: ErrUnknown},
		{name: "mgx", in: "mgx k\r\n", err: ErrUnknown},
		{name: "mg no key", in: "mg\r\n", err: ErrUnknown},
		{name: "md no key", in: "md\r\n", err: ErrUnknown},
		{name: "ma no key", in: "ma\r\n", err: ErrUnknown},
		{name: "me no key", in: "me\r\n", err: ErrFormat},
		{name: "ms no key", in: "ms\r\n", err: ErrUnknown},
		{name: "ms no length", in: "ms k\r\n", err: ErrFormat},
		{name: "mg", in: "mg k\r\n", want: want{cmd: CmdMetaGet, key: "k", meta: &wantMeta{rawKey: "k", delta: 1}}},
		{name: "mg runs of spaces", in: "mg  k  v\r\n", want: want{cmd: CmdMetaGet, key: "k",
			meta: &wantMeta{rawKey: "k", flags: []string{"v"}, value: true, delta: 1}}},
		{name: "mg all flags", in: "mg k v s t c f l h u q k O123 P L T30 N40 R50\r\n", want: want{cmd: CmdMetaGet, key: "k",
			meta: &wantMeta{rawKey: "k", flags: strings.Fields("v s t c f l h u q k O123 P L T30 N40 R50"),
				value: true, quiet: true, noUpdate: true, hasTTL: true, ttl: 30, vivify: true, vivifyTTL: 40,
				recache: true, recacheTTL: 50, opaque: "O123", delta: 1}}},
		{name: "mg key 250", in: "mg " + key250 + " v\r\n", want: want{cmd: CmdMetaGet, key: key250,
			meta: &wantMeta{rawKey: key250, flags: []string{"v"}, value: true, delta: 1}}},
		{name: "mg key 251", in: "mg " + key251 + " v\r\n", err: ErrFormat},
		{name: "ms key 251", in: "ms " + key251 + " 1\r\n", err: ErrFormat},
		{name: "md key 251", in: "md " + key251 + "\r\n", err: ErrFormat},
		{name: "ma key 251", in: "ma " + key251 + "\r\n", err: ErrFormat},
		{name: "me key 251", in: "me " + key251 + "\r\n", err: ErrFormat},
		{name: "mg duplicate flag", in: "mg k v v\r\n", err: ErrMetaDuplicate},
		{name: "mg duplicate C", in: "mg k C1 C2\r\n", err: ErrMetaDuplicate},
		{name: "mg invalid flag", in: "mg k !\r\n", err: ErrMetaInvalid},
		{name: "mg invalid letter", in: "mg k X\r\n", err: ErrMetaInvalid},
		{name: "mg E is invalid", in: "mg k E5\r\n", err: ErrMetaInvalid},
		{name: "mg flag byte 200", in: "mg k \xc8\r\n", err: ErrMetaDuplicate},
		{name: "mg bad T", in: "mg k Tabc v\r\n", err: ErrMetaBadToken},
		{name: "mg empty T", in: "mg k T\r\n", err: ErrMetaBadToken},
		{name: "mg T past int64", in: "mg k T99999999999999999999 v\r\n", err: ErrMetaBadToken},
		{name: "mg bad T then invalid flag", in: "mg k Tabc X\r\n", err: ErrMetaInvalid},
		{name: "mg bad C", in: "mg k Cabc v\r\n", err: ErrMetaBadToken},
		{name: "mg bad N", in: "mg k N9223372036854775808\r\n", err: ErrMetaBadToken},
		{name: "mg F", in: "mg k F5\r\n", want: want{cmd: CmdMetaGet, key: "k",
			meta: &wantMeta{rawKey: "k", flags: []string{"F5"}, flags32: 5, delta: 1}}},
		// A bad F sets no message of its own: memcached reports it with its
		// default "bad command line format", or with the message another
		// bad flag left, in any order.
		{name: "mg bad F", in: "mg k Fabc\r\n", err: ErrFormat},
		{name: "mg bad F then bad T", in: "mg k Fabc Tabc\r\n", err: ErrMetaBadToken},
		{name: "mg bad T then bad F", in: "mg k Tabc Fabc\r\n", err: ErrMetaBadToken},
		{name: "mg bad b then bad F", in: "mg k b Fabc\r\n", err: ErrMetaKeyDecode},
		{name: "mg bad F then bad b", in: "mg k Fabc b\r\n", err: ErrMetaKeyDecode},
		{name: "mg opaque 32", in: "mg k " + opaque32 + "\r\n", want: want{cmd: CmdMetaGet, key: "k",
			meta: &wantMeta{rawKey: "k", flags: []string{opaque32}, opaque: opaque32, delta: 1}}},
		{name: "mg opaque 33", in: "mg k " + opaque33 + "\r\n", err: ErrMetaOpaque},
		{name: "mg empty opaque", in: "mg k O\r\n", want: want{cmd: CmdMetaGet, key: "k",
			meta: &wantMeta{rawKey: "k", flags: []string{"O"}, opaque: "O", delta: 1}}},
		{name: "mg 17 flags", in: "mg Zm9v " + flags17 + "\r\n", want: want{cmd: CmdMetaGet, key: "foo",
			meta: &wantMeta{rawKey: "Zm9v", flags: strings.Fields(flags17), base64: true, value: true, quiet: true,
				noUpdate: true, hasTTL: true, ttl: 1, vivify: true, vivifyTTL: 1, recache: true, recacheTTL: 1,
				opaque: "O1", delta: 1}}},
		{name: "mg 18 flags", in: "mg Zm9v " + flags17 + " E1\r\n", err: ErrMetaTooLong},

		// Base64 keys.
		{name: "mg base64", in: "mg Zm9v b v\r\n", want: want{cmd: CmdMetaGet, key: "foo",
			meta: &wantMeta{rawKey: "Zm9v", base64: true, flags: []string{"b", "v"}, value: true, delta: 1}}},
		{name: "mg base64 padded", in: "mg Zm8= b\r\n", want: want{cmd: CmdMetaGet, key: "fo",
			meta: &wantMeta{rawKey: "Zm8=", base64: true, flags: []string{"b"}, delta: 1}}},
		{name: "mg base64 one char", in: "mg k b\r\n", err: ErrMetaKeyDecode},
		{name: "mg base64 one char a", in: "mg a b\r\n", err: ErrMetaKeyDecode},
		{name: "mg base64 all padding", in: "mg ==== b\r\n", err: ErrMetaKeyDecode},
		// memcached's base64_decode skips characters outside the alphabet.
		{name: "mg base64 stray char", in: "mg Zm9v! b\r\n", want: want{cmd: CmdMetaGet, key: "foo",
			meta: &wantMeta{rawKey: "Zm9v!", base64: true, flags: []string{"b"}, delta: 1}}},
		{name: "ms base64 stray char", in: "ms Zm!9v 1 b\r\n", want: want{cmd: CmdMetaSet, key: "foo", bytes: 1,
			meta: &wantMeta{rawKey: "Zm!9v", base64: true, flags: []string{"b"}, delta: 1}}},
		{name: "mg base64 data after padding", in: "mg Zm9vYg==Zm9v b\r\n", want: want{cmd: CmdMetaGet, key: "foob",
			meta: &wantMeta{rawKey: "Zm9vYg==Zm9v", base64: true, flags: []string{"b"}, delta: 1}}},

		// ms: errors after the length still swallow the data block.
		{name: "ms", in: "ms k 2 T0 F5 c k O123\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 2,
			meta: &wantMeta{rawKey: "k", flags: strings.Fields("T0 F5 c k O123"), hasTTL: true, flags32: 5, opaque: "O123", delta: 1}}},
		{name: "ms CAS and invalidate", in: "ms k 0 C77 I MS q\r\n", want: want{cmd: CmdMetaSet, key: "k",
			meta: &wantMeta{rawKey: "k", flags: strings.Fields("C77 I MS q"), hasCAS: true, cas: 77, invalidate: true, mode: 'S', quiet: true, delta: 1}}},
		{name: "ms bad length", in: "ms k abc\r\n", err: ErrFormat},
		{name: "ms negative length", in: "ms k -1\r\n", err: ErrFormat},
		{name: "ms length int32 max-1", in: "ms k 2147483646\r\n", err: ErrFormat},
		{name: "ms bad mode", in: "ms k 1 MX\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaSetMode,
			meta: &wantMeta{rawKey: "k", flags: []string{"MX"}, mode: 'X', delta: 1}}},
		{name: "ms lower-case mode", in: "ms k 1 Ms\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaSetMode,
			meta: &wantMeta{rawKey: "k", flags: []string{"Ms"}, mode: 's', delta: 1}}},
		{name: "ms mode length", in: "ms k 1 Mxy\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaModeLen,
			meta: &wantMeta{rawKey: "k", flags: []string{"Mxy"}, delta: 1}}},
		{name: "ms empty mode", in: "ms k 1 M\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaModeLen,
			meta: &wantMeta{rawKey: "k", flags: []string{"M"}, delta: 1}}},
		{name: "ms duplicate", in: "ms k 1 v v\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaDuplicate,
			meta: &wantMeta{rawKey: "k", flags: []string{"v"}, value: true, delta: 1}}},
		{name: "ms invalid", in: "ms k 1 X\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaInvalid,
			meta: &wantMeta{rawKey: "k", flags: []string{"X"}, delta: 1}}},
		{name: "ms noreply is not a flag", in: "ms k 1 noreply\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaInvalid,
			meta: &wantMeta{rawKey: "k", flags: []string{"noreply"}, delta: 1}}},
		{name: "ms bad T", in: "ms k 1 Tabc\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaBadToken,
			meta: &wantMeta{rawKey: "k", flags: []string{"Tabc"}, hasTTL: true, delta: 1}}},
		{name: "ms empty C", in: "ms k 1 C\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaBadToken,
			meta: &wantMeta{rawKey: "k", flags: []string{"C"}, delta: 1}}},
		{name: "ms opaque 33", in: "ms k 1 " + opaque33 + "\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaOpaque,
			meta: &wantMeta{rawKey: "k", flags: []string{opaque33}, delta: 1}}},
		{name: "ms bad F", in: "ms k 1 Fabc\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrFormat,
			meta: &wantMeta{rawKey: "k", flags: []string{"Fabc"}, delta: 1}}},
		{name: "ms bad F before bad mode", in: "ms k 1 MX Fabc\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrFormat,
			meta: &wantMeta{rawKey: "k", flags: []string{"MX", "Fabc"}, mode: 'X', delta: 1}}},
		{name: "ms bad T then bad F", in: "ms k 1 Tabc Fabc\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaBadToken,
			meta: &wantMeta{rawKey: "k", flags: []string{"Tabc", "Fabc"}, hasTTL: true, delta: 1}}},
		// ms has its length among the 19 tokens, so it takes 16 flags.
		{name: "ms 16 flags", in: "ms k 1 " + strings.Repeat("x ", 15) + "y\r\n", want: want{cmd: CmdMetaSet, key: "k", bytes: 1, swallow: ErrMetaInvalid,
			meta: &wantMeta{rawKey: "k", flags: []string{"x"}, delta: 1}}},
		{name: "ms 17 flags", in: "ms k 1 " + strings.Repeat("x ", 16) + "y\r\n", err: ErrMetaSetTooLong},

		// md and ma report every flag problem alike, except a long opaque.
		{name: "md", in: "md k q I T30 C5 k O1\r\n", want: want{cmd: CmdMetaDelete, key: "k",
			meta: &wantMeta{rawKey: "k", flags: strings.Fields("q I T30 C5 k O1"), quiet: true, invalidate: true,
				hasTTL: true, ttl: 30, hasCAS: true, cas: 5, opaque: "O1", delta: 1}}},
		{name: "md duplicate", in: "md k v v\r\n", err: ErrMetaInvalidDup},
		{name: "md invalid", in: "md k X\r\n", err: ErrMetaInvalidDup},
		{name: "md bad F", in: "md k Fabc\r\n", err: ErrMetaInvalidDup},
		{name: "md opaque 33", in: "md k " + opaque33 + "\r\n", err: ErrMetaOpaque},
		{name: "md 18 flags", in: "md k " + strings.Repeat("b ", 17) + "b\r\n", err: ErrMetaSetTooLong},
		{name: "ma", in: "ma k N0 J5 D3 MD v\r\n", want: want{cmd: CmdMetaArith, key: "k",
			meta: &wantMeta{rawKey: "k", flags: strings.Fields("N0 J5 D3 MD v"), vivify: true, initial: 5, delta: 3, mode: 'D', value: true}}},
		{name: "ma default delta", in: "ma k\r\n", want: want{cmd: CmdMetaArith, key: "k", meta: &wantMeta{rawKey: "k", delta: 1}}},
		{name: "ma mode +", in: "ma k M+\r\n", want: want{cmd: CmdMetaArith, key: "k", meta: &wantMeta{rawKey: "k", flags: []string{"M+"}, mode: '+', delta: 1}}},
		{name: "ma mode -", in: "ma k M-\r\n", want: want{cmd: CmdMetaArith, key: "k", meta: &wantMeta{rawKey: "k", flags: []string{"M-"}, mode: '-', delta: 1}}},
		{name: "ma bad mode", in: "ma k MX\r\n", err: ErrMetaArithMode},
		{name: "ma lower-case i", in: "ma k Mi\r\n", err: ErrMetaArithMode},
		{name: "ma lower-case d", in: "ma k Md\r\n", err: ErrMetaArithMode},
		{name: "ma mode length", in: "ma k Mii\r\n", err: ErrMetaInvalidDup},
		{name: "ma empty mode", in: "ma k M\r\n", err: ErrMetaInvalidDup},
		{name: "ma bad delta", in: "ma k Dabc\r\n", err: ErrMetaInvalidDup},
		{name: "ma negative delta", in: "ma k D-1\r\n", err: ErrMetaInvalidDup},
		{name: "ma empty delta", in: "ma k D\r\n", err: ErrMetaInvalidDup},
		{name: "ma bad initial", in: "ma k Jabc\r\n", err: ErrMetaInvalidDup},
		{name: "ma invalid", in: "ma k X\r\n", err: ErrMetaInvalidDup},
		{name: "ma 18 flags", in: "ma k " + strings.Repeat("q ", 17) + "q\r\n", err: ErrMetaSetTooLong},

		// me <key> [b].
		{name: "me", in: "me k\r\n", want: want{cmd: CmdMetaDebug, key: "k", meta: &wantMeta{rawKey: "k"}}},
		{name: "me ignores other tokens", in: "me k c\r\n", want: want{cmd: CmdMetaDebug, key: "k", meta: &wantMeta{rawKey: "k"}}},
		{name: "me base64", in: "me Zm9v b\r\n", want: want{cmd: CmdMetaDebug, key: "foo", meta: &wantMeta{rawKey: "Zm9v", base64: true}}},
		{name: "me bad base64", in: "me k b\r\n", err: ErrFormat},
	}
}

func manyKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key%d", i)
	}
	return keys
}

func TestParse(t *testing.T) {
	// One Request for every case, as a connection reuses one: each parse
	// must start from a clean state.
	var r Request
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			require.Empty(t, checkParse(tc, &r))
		})
	}
}

// checkParse parses tc.in and describes how the result differs from the
// expectation ("" when it does not).
func checkParse(tc parseCase, r *Request) string {
	buf := []byte(tc.in)
	n, err := Parse(buf, r)
	wantN := tc.n
	switch {
	case wantN == 0:
		wantN = len(buf)
	case wantN < 0:
		wantN = 0
	}
	if n != wantN {
		return fmt.Sprintf("consumed %d bytes, want %d (err %v)", n, wantN, err)
	}
	if msg := compareErr(err, tc.err); msg != "" {
		return msg
	}
	switch {
	case err == nil:
	case errors.Is(err, ErrNeedMore):
		return ""
	default:
		// With an error only noreply matters: it silences the reply.
		if r.NoReply != tc.want.noreply {
			return fmt.Sprintf("noreply %v, want %v", r.NoReply, tc.want.noreply)
		}
		return ""
	}
	got := gotWant(r)
	if tc.want.meta == nil {
		got.meta = nil
	}
	w := tc.want
	if w.keys == nil {
		w.keys = []string{}
	}
	if w.args == nil {
		w.args = []string{}
	}
	if w.meta != nil && w.meta.flags == nil {
		w.meta.flags = []string{}
	}
	if msg := diff(got, w); msg != "" {
		return msg
	}
	return checkAliasing(buf, r)
}

func compareErr(got, want error) string {
	if want == nil || got == nil || errors.Is(want, ErrNeedMore) {
		if got != want {
			return fmt.Sprintf("error %v, want %v", got, want)
		}
		return ""
	}
	g, ok := got.(*ErrorReply)
	if !ok {
		return fmt.Sprintf("error %v (%T), want %v", got, got, want)
	}
	w := want.(*ErrorReply)
	if g.Reply != w.Reply || g.Close != w.Close {
		return fmt.Sprintf("error %+v, want %+v", *g, *w)
	}
	return ""
}

func gotWant(r *Request) want {
	m := &r.Meta
	g := want{
		cmd: r.Cmd, key: string(r.Key), keys: strs(r.Keys), args: strs(r.Args), flags: r.Flags,
		exptime: r.Exptime, bytes: r.Bytes, cas: r.CAS, delta: r.Delta, noreply: r.NoReply, swallow: r.SwallowErr,
		meta: &wantMeta{
			flags: strs(m.Flags), rawKey: string(m.RawKey), base64: m.Base64, value: m.Value, quiet: m.Quiet,
			noUpdate: m.NoUpdate, invalidate: m.Invalidate, hasTTL: m.HasTTL, ttl: m.TTL, vivify: m.Vivify,
			vivifyTTL: m.VivifyTTL, recache: m.Recache, recacheTTL: m.RecacheTTL, hasCAS: m.HasCAS, cas: m.CAS,
			flags32: m.Flags32, mode: m.Mode, initial: m.Initial, delta: m.Delta, opaque: string(m.Opaque),
		},
	}
	return g
}

func diff(got, w want) string {
	gm, wm := got.meta, w.meta
	got.meta, w.meta = nil, nil
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", w) {
		return fmt.Sprintf("request\n got %+v\nwant %+v", got, w)
	}
	if wm != nil && fmt.Sprintf("%+v", *gm) != fmt.Sprintf("%+v", *wm) {
		return fmt.Sprintf("meta\n got %+v\nwant %+v", *gm, *wm)
	}
	return ""
}

func strs(b [][]byte) []string {
	s := make([]string, len(b))
	for i := range b {
		s[i] = string(b[i])
	}
	return s
}

// checkAliasing: keys and tokens point into the parsed buffer (except a
// decoded base64 key, which lives in the Request).
func checkAliasing(buf []byte, r *Request) string {
	inside := func(b []byte) bool { return len(b) == 0 || aliases(buf, b) }
	all := slices.Concat(r.Keys, r.Args, r.Meta.Flags, [][]byte{r.Meta.RawKey, r.Meta.Opaque})
	if !r.Meta.Base64 {
		all = append(all, r.Key)
	}
	for _, b := range all {
		if !inside(b) {
			return fmt.Sprintf("%q does not alias the input", b)
		}
	}
	return ""
}

// aliases reports whether b lies within buf: a sub-slice of buf ends its
// capacity where buf does.
func aliases(buf, b []byte) bool {
	if cap(b) == 0 || cap(b) > cap(buf) || &b[:cap(b)][cap(b)-1] != &buf[:cap(buf)][cap(buf)-1] {
		return false
	}
	off := cap(buf) - cap(b)
	return off+len(b) <= len(buf)
}

// TestParseSequence parses a pipeline the way a connection does: each parse
// starts where the previous line (and its data block) ended.
func TestParseSequence(t *testing.T) {
	in := []byte("set a 1 2 3\r\nabc\r\nget a b\r\nmg a v q O9\r\ndelete a\nincr n 7 noreply\r\nmn\r\n")
	type step struct {
		cmd  Command
		key  string
		data int
	}
	steps := []step{{CmdSet, "a", 5}, {CmdGet, "", 0}, {CmdMetaGet, "a", 0}, {CmdDelete, "a", 0}, {CmdIncr, "n", 0}, {CmdMetaNoop, "", 0}}
	var r Request
	pos := 0
	for i, s := range steps {
		n, err := Parse(in[pos:], &r)
		require.NoError(t, err, "step %d", i)
		require.Equal(t, s.cmd, r.Cmd, "step %d", i)
		require.Equal(t, s.key, string(r.Key), "step %d", i)
		if r.Cmd.IsStorage() {
			require.Equal(t, 3, r.Bytes)
			require.True(t, DataOK(in[pos+n:pos+n+s.data]))
		}
		pos += n + s.data
	}
	require.Equal(t, len(in), pos)
	_, err := Parse(in[pos:], &r)
	require.ErrorIs(t, err, ErrNeedMore)
}

func TestTextKeys(t *testing.T) {
	cases := []struct {
		name string
		in   string
		max  int
		keys []string
		span int // -1: all of in
	}{
		{"gets and sets", "get a\r\nset b 0 0 3\r\nxyz\r\ngat 1 c\r\nget d\r\n", 16, []string{"a", "b", "c", "d"}, -1},
		{"meta", "mg a v\r\nms b 2 T0\r\nhi\r\nmd c q\r\nma d\r\nmn\r\n", 16, []string{"a", "b", "c", "d"}, -1},
		{"keyless commands are stepped over", "version\r\nget a\r\nflush_all\r\ntouch b 1\r\nincr c 1\r\n", 16, []string{"a", "b", "c"}, -1},
		{"bare newlines", "get a\nset b 0 0 1\nx\r\nget c\n", 16, []string{"a", "b", "c"}, -1},
		{"a multi-get is stepped over", "get a\r\ngets b c\r\nget d\r\n", 16, []string{"a", "d"}, -1},
		{"a multi-gat is stepped over", "gat 10 a b\r\n", 16, nil, -1},
		{"max requests", "version\r\nversion\r\nget a\r\n", 2, nil, 18},
		{"max stops at a request", "get a\r\nget b\r\nget c\r\n", 2, []string{"a", "b"}, 14},
		{"incomplete line", "get a\r\nget b", 16, []string{"a"}, 7},
		{"incomplete data block", "get a\r\nset b 0 0 10\r\nabc", 16, []string{"a"}, 7},
		{"data block past the buffer by its CRLF", "set b 0 0 3\r\nabc", 16, nil, 0},
		{"an error is stepped over", "get a\r\nbogus\r\nget b\r\n", 16, []string{"a", "b"}, -1},
		{"a bad length is an error line", "get a\r\nset b 0 0 -1\r\nget c\r\n", 16, []string{"a", "c"}, -1},
		{"a base64 key is not taken", "get a\r\nmg Yg== b v\r\nms Yw== 1 b\r\nx\r\nget c\r\n", 16, []string{"a", "c"}, -1},
		{"a value holding a newline", "set a 0 0 5\r\nhe\nlo\r\nget b\r\n", 16, []string{"a", "b"}, -1},
		{"empty", "", 16, nil, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var r Request
			keys, span := TextKeys(nil, []byte(c.in), c.max, &r)
			got := make([]string, len(keys))
			for i, k := range keys {
				got[i] = string(k)
			}
			if c.keys == nil {
				c.keys = []string{}
			}
			require.Equal(t, c.keys, got)
			if c.span < 0 {
				c.span = len(c.in)
			}
			require.Equal(t, c.span, span)
		})
	}
}

func TestDataOK(t *testing.T) {
	for _, tc := range []struct {
		block string
		ok    bool
	}{
		{"abc\r\n", true}, {"\r\n", true}, {"abc\n\r", false}, {"abcd\n", false}, {"abc\r\r", false}, {"\n", false}, {"", false},
	} {
		require.Equal(t, tc.ok, DataOK([]byte(tc.block)), "%q", tc.block)
	}
}

func TestNumbers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		u64  uint64
		ok64 bool
		i32  int32
		ok32 bool
	}{
		{"0", 0, true, 0, true},
		{"18446744073709551615", 1<<64 - 1, true, -1, false},
		{"18446744073709551616", 0, false, 0, false},
		{"18446744073709551617", 0, false, 0, false},
		{"99999999999999999999", 0, false, 0, false},
		{"9223372036854775807", 1<<63 - 1, true, -1, true},
		{"-0", 0, true, 0, true},
		{"-1", 0, false, -1, true},
		// strtoull negates "-N" modulo 2^64; memcached only refuses a
		// result that is negative as int64, so -(2^63+1) comes through.
		{"-9223372036854775809", 1<<63 - 1, true, 0, false},
		{" 5", 5, true, 5, true},
		{"+5", 5, true, 5, true},
		{"5 ", 5, true, 5, true},
		{"5x", 0, false, 0, false},
		{"", 0, false, 0, false},
		{"-", 0, false, 0, false},
		{"4294967297", 4294967297, true, 1, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, ok := ParseUint64([]byte(tc.in))
			require.Equal(t, tc.ok64, ok, "ParseUint64")
			require.Equal(t, tc.u64, u, "ParseUint64")
			i, ok := parseInt32([]byte(tc.in))
			require.Equal(t, tc.ok32, ok, "parseInt32")
			if ok {
				require.Equal(t, tc.i32, i, "parseInt32")
			}
		})
	}
}

func TestReplyEncoders(t *testing.T) {
	dst := []byte("x")
	dst = AppendValueHeader(dst, []byte("k"), 4294967295, 10, 0, false)
	dst = AppendValueHeader(dst, []byte("k"), 0, 0, 1<<64-1, true)
	dst = AppendLine(dst, "END")
	dst = AppendStat(dst, "pid", []byte("7"))
	require.Equal(t, "xVALUE k 4294967295 10\r\nVALUE k 0 0 18446744073709551615\r\nEND\r\nSTAT pid 7\r\n", string(dst))
}
