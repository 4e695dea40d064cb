package server

import (
	"bytes"
	"os"
	"strconv"
	"sync"
	"syscall"
)

// Reading at the handler's pace.
//
// memcached stops reading a connection while it works through what it has
// read, and TCP's window then holds the client back: a bulk load piped in
// with nc runs at the server's speed. netpoll (v0.7.2) has no such switch:
// its poller reads whatever arrives into the connection's buffer however
// far behind the handler is. On loopback nc sends several times faster
// than sets of small values are stored, so a bulk load piled up input
// until the connection's bound (MaxInput) closed it, and the rest of the
// load was lost.
//
// So the handler, which is what consumes that input, takes the socket out
// of its poller's read interest once pauseAt or more is buffered, and puts
// it back once less than a quarter of that is left, and always before it
// waits for more input or returns. flush does the same while the client's
// socket is too full for its replies. It does this with
// epoll_ctl(EPOLL_CTL_MOD) on the poller's epoll set and the event data netpoll registered the socket with
// (both found in /proc/self/fdinfo), so that to netpoll the socket is only
// quiet for a while. While paused it is polled for errors alone:
// EPOLLRDHUP is left out too, because netpoll, told of a hang-up it cannot
// read past, closes the connection, and a client that sends its last
// requests and shuts down its side must still have all of them answered.
//
// Only the handler may do this (or a detached goroutine, under wmu while
// the connection is not gone: inline.go's readDetached): netpoll closes the
// socket (whose number may then be reused) only after the handler has
// returned. netpoll itself would
// set the mask again only from its writer, which Tandem does not use.
// Where the lookup fails (no /proc), reading is never paused and the
// input bound is what is left.
const (
	// pauseAt is where reading pauses (a quarter of it is where it
	// resumes), or an eighth of the connection's input bound if that is
	// less (a test's small bound).
	pauseAt = 4 << 20
	// peekMax is the most input one pass of the handler looks at (unless
	// the request at its front needs more): a pass over a large backlog
	// copies it out of netpoll's buffer in one piece, and between passes
	// the handler looks at how much is waiting.
	peekMax = 1 << 20

	// netpoll's interest for a connection that is not waiting to write
	// (PollReadable, PollRW2R).
	netpollRead = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLERR
)

// readGate is a connection's entry in its poller's epoll set.
type readGate struct {
	epfd   int    // the poller's epoll set, once looked up
	data   uint64 // the event data netpoll gave the socket
	known  bool   // epfd and data are set
	failed bool   // the lookup failed: never pause
	paused bool
}

// pace pauses or resumes reading c's socket for n bytes buffered.
func (c *conn) pace(n int) {
	switch {
	case n >= c.s.pauseAt && !c.gate.paused:
		c.setReading(false)
	case n < c.s.pauseAt/4 && c.gate.paused:
		c.setReading(true)
	}
}

// paced tells whether c's reading is paced: then the input bound applies
// to a single request only, since what is buffered stays near pauseAt.
func (c *conn) paced() bool {
	return c.fd >= 0 && c.gate.known && !c.inline
}

// pauseReading takes c's socket out of its poller's read interest, if it
// is not already.
func (c *conn) pauseReading() {
	if !c.gate.paused {
		c.setReading(false)
	}
}

// resumeReading puts c's socket back in its poller's read interest before
// the handler waits for input or returns.
func (c *conn) resumeReading() {
	if c.gate.paused {
		c.setReading(true)
	}
}

func (c *conn) setReading(on bool) {
	g := &c.gate
	if g.failed || c.fd < 0 {
		return
	}
	if !g.known {
		epfd, data, ok := epollEntry(c.fd)
		if !ok {
			g.failed = true
			return
		}
		g.epfd, g.data, g.known = epfd, data, true
	}
	events := uint32(syscall.EPOLLERR)
	if on {
		events = netpollRead
	}
	// The event data is netpoll's pointer to the socket's operator, kept
	// as it is; Fd and Pad are the two halves of epoll_data.
	ev := syscall.EpollEvent{Events: events, Fd: int32(g.data), Pad: int32(g.data >> 32)}
	if err := syscall.EpollCtl(g.epfd, syscall.EPOLL_CTL_MOD, c.fd, &ev); err != nil {
		// ENOENT: the poller already dropped the socket (the client
		// hung up); netpoll closes it once the handler returns.
		g.paused = false
		return
	}
	g.paused = !on
}

// epollSets caches the process's epoll descriptors: netpoll's pollers are
// made when the first server starts and live as long as the process.
var epollSets struct {
	sync.Mutex
	fds []int
}

// epollEntry finds the epoll set that polls fd, and the data it reports
// for it, from /proc/self/fdinfo: among the epoll sets seen before, then
// (the first time, or for a set made since) among all of the process's.
func epollEntry(fd int) (epfd int, data uint64, ok bool) {
	epollSets.Lock()
	defer epollSets.Unlock()
	if epfd, data, ok = findEntry(epollSets.fds, fd); !ok {
		epollSets.fds = listEpolls()
		epfd, data, ok = findEntry(epollSets.fds, fd)
	}
	return epfd, data, ok
}

// findEntry looks for fd in the fdinfo of each epoll set of sets.
func findEntry(sets []int, fd int) (epfd int, data uint64, ok bool) {
	for _, e := range sets {
		info, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(e))
		if err != nil {
			continue
		}
		if d, found := fdinfoData(info, fd); found {
			return e, d, true
		}
	}
	return 0, 0, false
}

// listEpolls lists the process's epoll descriptors.
func listEpolls() []int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var fds []int
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "anon_inode:[eventpoll]" {
			if n, err := strconv.Atoi(e.Name()); err == nil {
				fds = append(fds, n)
			}
		}
	}
	return fds
}

// fdinfoData finds fd in the fdinfo of an epoll set, whose lines for the
// descriptors it polls read "tfd: <fd> events: <hex> data: <hex> ...",
// and returns its data.
func fdinfoData(info []byte, fd int) (uint64, bool) {
	for line := range bytes.Lines(info) {
		f := bytes.Fields(line)
		if len(f) < 6 || string(f[0]) != "tfd:" || string(f[2]) != "events:" || string(f[4]) != "data:" {
			continue
		}
		if n, err := strconv.Atoi(string(f[1])); err != nil || n != fd {
			continue
		}
		d, err := strconv.ParseUint(string(f[5]), 16, 64)
		return d, err == nil
	}
	return 0, false
}
