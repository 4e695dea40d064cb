package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// proc is a tandem process started by a test, killed at cleanup.
type proc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, bin, args...)
}

// startProcEnv is startProc with env added to the test's environment.
func startProcEnv(t *testing.T, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &lockedBuffer{}, exited: make(chan struct{})}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitExit waits for the process to end and returns its exit code.
func (p *proc) waitExit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("tandem did not exit within %v; output:\n%s", within, p.out.String())
		return -1
	}
}

// dialWait dials until the server accepts, within a deadline.
func dialWait(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout(network, addr, 100*time.Millisecond)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("no server on %s %s: %v", network, addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// roundTrip sends req and reads one reply line.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, req string) string {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := io.WriteString(c, req)
	require.NoError(t, err)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	return line
}

// statLine sends a stats command and returns the line of the named stat.
func statLine(t *testing.T, c net.Conn, r *bufio.Reader, req, name string) string {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := io.WriteString(c, req)
	require.NoError(t, err)
	found := ""
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		if line == "END\r\n" {
			return found
		}
		if strings.HasPrefix(line, "STAT "+name+" ") {
			found = line
		}
	}
}

func tcpArgs(port int, extra ...string) []string {
	return append([]string{"-u", "root", "-l", "127.0.0.1", "-p", strconv.Itoa(port)}, extra...)
}

func TestLifecycle(t *testing.T) {
	bin := buildTandem(t)

	t.Run("SIGTERM stops it cleanly", func(t *testing.T) {
		port := freePort(t)
		p := startProc(t, bin, tcpArgs(port)...)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		c := dialWait(t, "tcp", addr)
		defer c.Close()
		require.Equal(t, "STORED\r\n", roundTrip(t, c, bufio.NewReader(c), "set k 0 0 1\r\nv\r\n"))
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		require.Equal(t, 0, p.waitExit(t, 10*time.Second), p.out.String())
		_, err := net.DialTimeout("tcp", addr, time.Second)
		require.Error(t, err, "nothing listens after shutdown")
	})

	t.Run("-t above the processors", func(t *testing.T) {
		// memcached's default -t 4 on a 2-CPU machine: 2 event loops, and
		// stats still reports the threads asked for, as memcached does.
		port := freePort(t)
		p := startProcEnv(t, []string{"GOMAXPROCS=2"}, bin, tcpArgs(port, "-v")...)
		c := dialWait(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		defer c.Close()
		r := bufio.NewReader(c)
		require.Equal(t, "STAT threads 4\r\n", statLine(t, c, r, "stats\r\n", "threads"))
		require.Equal(t, "STAT num_threads 4\r\n", statLine(t, c, r, "stats settings\r\n", "num_threads"))
		require.Contains(t, p.out.String(), "tandem: -t 4: 2 event loops, one per processor Go may use")
	})

	t.Run("shutdown command needs -A", func(t *testing.T) {
		port := freePort(t)
		p := startProc(t, bin, tcpArgs(port, "-A")...)
		c := dialWait(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		defer c.Close()
		r := bufio.NewReader(c)
		require.Equal(t, "CLIENT_ERROR invalid shutdown mode\r\n", roundTrip(t, c, r, "shutdown now\r\n"))
		_, err := io.WriteString(c, "shutdown\r\n")
		require.NoError(t, err)
		require.Equal(t, 0, p.waitExit(t, 10*time.Second))
	})

	t.Run("unix socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "tandem.sock")
		startProc(t, bin, "-u", "root", "-s", sock, "-a", "0766")
		c := dialWait(t, "unix", sock)
		defer c.Close()
		r := bufio.NewReader(c)
		require.Equal(t, "STORED\r\n", roundTrip(t, c, r, "set k 0 0 2\r\nhi\r\n"))
		require.Equal(t, "VALUE k 0 2\r\n", roundTrip(t, c, r, "get k\r\n"))
		fi, err := os.Stat(sock)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o766), fi.Mode().Perm())
	})

	t.Run("connection limit", func(t *testing.T) {
		port := freePort(t)
		startProc(t, bin, tcpArgs(port, "-c", "3")...)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		var held []net.Conn
		for i := 0; i < 3; i++ {
			c := dialWait(t, "tcp", addr)
			defer c.Close()
			require.Equal(t, "VERSION 1.6.18\r\n", roundTrip(t, c, bufio.NewReader(c), "version\r\n"))
			held = append(held, c)
		}
		extra := dialWait(t, "tcp", addr)
		defer extra.Close()
		require.NoError(t, extra.SetDeadline(time.Now().Add(5*time.Second)))
		all, err := io.ReadAll(extra)
		require.NoError(t, err, "the server closes the connection over the limit")
		require.Equal(t, "ERROR Too many open connections\r\n", string(all))

		// A freed slot is usable again, and the refusal was counted.
		held[0].Close()
		deadline := time.Now().Add(5 * time.Second)
		for {
			c := dialWait(t, "tcp", addr)
			require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
			_, _ = io.WriteString(c, "stats\r\n")
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil && strings.HasPrefix(line, "STAT ") {
				break
			}
			require.True(t, time.Now().Before(deadline), "no slot freed: %q %v", line, err)
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("idle timeout", func(t *testing.T) {
		port := freePort(t)
		startProc(t, bin, tcpArgs(port, "-o", "idle_timeout=1")...)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		// A watcher sends nothing and is not timed out, as in memcached.
		w := dialWait(t, "tcp", addr)
		defer w.Close()
		wr := bufio.NewReader(w)
		require.Equal(t, "OK\r\n", roundTrip(t, w, wr, "watch connevents\r\n"))
		c := dialWait(t, "tcp", addr)
		defer c.Close()
		r := bufio.NewReader(c)
		require.Equal(t, "VERSION 1.6.18\r\n", roundTrip(t, c, r, "version\r\n"))
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		_, err := r.ReadByte()
		require.ErrorIs(t, err, io.EOF, "an idle connection is closed after about a second")
		// The watcher saw that close, for idleness, and is still open.
		require.NoError(t, w.SetReadDeadline(time.Now().Add(5*time.Second)))
		for {
			line, err := wr.ReadString('\n')
			require.NoError(t, err, "the watcher stays open")
			if strings.Contains(line, "type=conn_close") {
				require.Contains(t, line, " reason=idle_timeout ")
				break
			}
		}
	})

	t.Run("daemon with pid file", func(t *testing.T) {
		port := freePort(t)
		pidfile := filepath.Join(t.TempDir(), "tandem.pid")
		p := startProc(t, bin, tcpArgs(port, "-d", "-P", pidfile)...)
		require.Equal(t, 0, p.waitExit(t, 10*time.Second), "the parent returns at once")
		c := dialWait(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
		defer c.Close()
		require.Equal(t, "VERSION 1.6.18\r\n", roundTrip(t, c, bufio.NewReader(c), "version\r\n"))
		var pid int
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, err := os.ReadFile(pidfile)
			if err == nil {
				pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
				if err == nil {
					break
				}
			}
			require.True(t, time.Now().Before(deadline), "no pid file: %v", err)
			time.Sleep(10 * time.Millisecond)
		}
		daemon, err := os.FindProcess(pid)
		require.NoError(t, err)
		require.NoError(t, daemon.Signal(syscall.SIGTERM))
		deadline = time.Now().Add(10 * time.Second)
		for daemon.Signal(syscall.Signal(0)) == nil {
			require.True(t, time.Now().Before(deadline), "the daemon did not stop on SIGTERM")
			time.Sleep(20 * time.Millisecond)
		}
		_, err = os.Stat(pidfile)
		require.True(t, errors.Is(err, os.ErrNotExist), "the pid file is removed on exit")
	})
}

// TestLargePages: with -L the item memory is backed by transparent huge
// pages where the kernel has them turned on; where it has not, tandem says
// so and serves from small pages.
func TestLargePages(t *testing.T) {
	bin := e2eBinary(t)
	port := freePort(t)
	p := startProc(t, bin, tcpArgs(port, "-L", "-m", "256")...)
	c := dialWait(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
	defer c.Close()
	r := bufio.NewReader(c)
	if why := hugePagesOff(); why != "" {
		require.Contains(t, p.out.String(), "tandem: warning: -L: "+why)
		require.Equal(t, "STORED\r\n", roundTrip(t, c, r, "set k 0 0 1\r\nv\r\n"))
		return
	}
	// 24 MiB of items, written 64 at a time: enough to fill several
	// 2 MiB-aligned stretches of a slab region.
	value := strings.Repeat("v", 1000)
	var batch strings.Builder
	for i := range 24 << 10 {
		fmt.Fprintf(&batch, "set key%d 0 0 %d noreply\r\n%s\r\n", i, len(value), value)
		if i%64 == 63 {
			require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
			_, err := io.WriteString(c, batch.String())
			require.NoError(t, err)
			batch.Reset()
		}
	}
	require.Equal(t, "VALUE key0 0 1000\r\n", roundTrip(t, c, r, "get key0\r\n"), "the writes are applied")
	rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p.cmd.Process.Pid))
	require.NoError(t, err)
	m := regexp.MustCompile(`AnonHugePages:\s+(\d+) kB`).FindSubmatch(rollup)
	require.NotNil(t, m, "%s", rollup)
	kb, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	require.Greater(t, kb, 0, "no huge pages after 24 MiB of items:\n%s", rollup)
	t.Logf("AnonHugePages %d kB after 24 MiB of items", kb)
}

// TestLockMemory: -k locks the process's memory (mlockall) where nothing
// can run into the locked-memory limit: where the kernel lets it lock past
// the limit (as root here with -u root), or with an unlimited ulimit -l. After -u nobody, without the
// capability and under a limit, it says why it does not lock and serves
// unlocked.
func TestLockMemory(t *testing.T) {
	bin := e2eBinary(t)
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(rlimitMemlock, &lim))
	for _, tc := range []struct {
		user string
		lock bool // expected to lock
	}{
		{"root", os.Geteuid() == 0 && lockUnlimited() || lim.Max == ^uint64(0)},
		{"nobody", lim.Max == ^uint64(0)},
	} {
		t.Run(tc.user, func(t *testing.T) {
			if tc.user == "nobody" && os.Geteuid() != 0 {
				t.Skip("-u nobody needs root") // CI runs as root
			}
			port := freePort(t)
			p := startProc(t, bin, "-u", tc.user, "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-k", "-m", "64")
			c := dialWait(t, "tcp", "127.0.0.1:"+strconv.Itoa(port))
			defer c.Close()
			r := bufio.NewReader(c)
			require.Equal(t, "STORED\r\n", roundTrip(t, c, r, "set k 0 0 1\r\nv\r\n"))
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
			require.NoError(t, err)
			m := regexp.MustCompile(`(?m)^VmLck:\s+(\d+) kB$`).FindSubmatch(status)
			require.NotNil(t, m, "%s", status)
			locked, _ := strconv.Atoi(string(m[1]))
			if tc.lock {
				require.Greater(t, locked, 0)
				require.NotContains(t, p.out.String(), "-k")
			} else {
				require.Zero(t, locked)
				// The warning comes before the first reply, through a pipe.
				require.Eventually(t, func() bool {
					return strings.Contains(p.out.String(), "tandem: warning: -k: memory not locked: the locked-memory limit is")
				}, 10*time.Second, 10*time.Millisecond, "%s", p.out.String())
			}
		})
	}
}

// TestListenBacklog: -b sets the listening sockets' backlog, as memcached's
// (Go listens with the system's somaxconn), and memcached's default 1024
// applies without it; ss shows a listening socket's backlog as its Send-Q.
func TestListenBacklog(t *testing.T) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Fatalf("ss not found (%v): install the Debian package iproute2", err)
	}
	bin := e2eBinary(t)
	def := 1024 // the kernel caps a backlog at somaxconn
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			def = min(def, n)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{{[]string{"-b", "7"}, "7"}, {nil, strconv.Itoa(def)}} {
		port := freePort(t)
		startProc(t, bin, tcpArgs(port, tc.args...)...)
		dialWait(t, "tcp", "127.0.0.1:"+strconv.Itoa(port)).Close()
		out, err := exec.Command("ss", "-ltnH", "sport = :"+strconv.Itoa(port)).Output()
		require.NoError(t, err)
		f := strings.Fields(string(out))
		require.GreaterOrEqual(t, len(f), 3, "ss: %q", out)
		require.Equal(t, tc.want, f[2], "ss: %q", out)
	}
}
