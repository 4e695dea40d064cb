package server

import (
	"testing"

	"github.com/tandemcache/tandem/protocol"
)

// FuzzInlineOK checks the runner's scan against the parser: a text batch
// of well-formed requests that the scan lets run on the poller must not
// hold, as the parser reads it, a command the poller may not run. (Bad
// data blocks can fool the scan; the handler checks again, see slowCmd.)
func FuzzInlineOK(f *testing.F) {
	for _, s := range []string{
		"get a\r\n", "set a 0 0 1\r\nx\r\nget a\r\n", "stats\r\n", "get a\r\nquit\r\n",
		" stats\r\n", "set a 0 0 5\r\nstats\r\n", "lru_crawler metadump all\r\n", "mg a v\r\nmn\r\n",
		"\x80\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !inlineScan(b, false) {
			return
		}
		var req protocol.Request
		for rest := b; len(rest) > 0; {
			n, err := protocol.Parse(rest, &req)
			if err == protocol.ErrNeedMore {
				return
			}
			if e, isReply := err.(*protocol.ErrorReply); err != nil && (!isReply || e.Close) {
				return // the connection closes
			}
			if err == nil {
				switch req.Cmd {
				case protocol.CmdStats, protocol.CmdSlabs, protocol.CmdLru, protocol.CmdLruCrawler,
					protocol.CmdFlushAll, protocol.CmdShutdown, protocol.CmdCacheMemlimit,
					protocol.CmdWatch, protocol.CmdQuit:
					t.Fatalf("inlineScan(%q) let %q through", b, rest[:n])
				}
				if req.Cmd.IsStorage() {
					if n+req.Bytes+2 > len(rest) || !protocol.DataOK(rest[n:n+req.Bytes+2]) {
						return // a bad block: the handler's own check covers what follows
					}
					n += req.Bytes + 2
				}
			}
			if n <= 0 || n > len(rest) {
				return
			}
			rest = rest[n:]
		}
	})
}
