package main

import (
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// pacer waits for an open-loop worker's next send time. It arms a timerfd
// and waits for it in the Go runtime's network poller, so that the
// goroutine parks without holding a processor and wakes within
// microseconds.
//
// The two obvious ways are both wrong here. Go's timers wake up to a
// millisecond late when the process is idle (the runtime sleeps in
// epoll_pwait, whose timeout counts milliseconds). A nanosleep is punctual
// but holds its processor for the whole sleep: with as many sleeping
// workers as processors, nothing is left to run the goroutines whose
// replies have arrived, and they wait for the next sleep to end, up to one
// interval. Open loop counts that wait as the server's latency (at 2,000
// requests/s over 4 connections: p50 ~600 µs against either server, where
// ~110 µs is right).
type pacer struct {
	// fd is f's descriptor, kept apart: f.Fd() would put f in blocking
	// mode, and rc.Control would cost a closure per sleep.
	fd int
	f  *os.File // the timerfd, registered with the runtime's poller
	rc syscall.RawConn
}

func newPacer() (*pacer, error) {
	const tfdNonblock, tfdCloexec = syscall.O_NONBLOCK, syscall.O_CLOEXEC
	r, _, e := syscall.RawSyscall(syscall.SYS_TIMERFD_CREATE, 1 /* CLOCK_MONOTONIC */, tfdNonblock|tfdCloexec, 0)
	if e != 0 {
		return nil, fmt.Errorf("bench: timerfd_create: %w", e)
	}
	f := os.NewFile(r, "timerfd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: timerfd: %w", err)
	}
	return &pacer{fd: int(r), f: f, rc: rc}, nil
}

// sleepUntil waits until t (or returns at once when t has passed).
func (p *pacer) sleepUntil(t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	// struct itimerspec: no interval, one expiry d from now.
	spec := [2]syscall.Timespec{{}, syscall.NsecToTimespec(int64(d))}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_TIMERFD_SETTIME, uintptr(p.fd), 0, uintptr(unsafe.Pointer(&spec)), 0, 0, 0); e != 0 {
		time.Sleep(d)
		return
	}
	var buf [8]byte
	_ = p.rc.Read(func(fd uintptr) bool {
		_, err := syscall.Read(int(fd), buf[:])
		return err != syscall.EAGAIN
	})
}

func (p *pacer) close() { p.f.Close() }
