package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
)

// daemonEnv marks the re-executed child of -d.
const daemonEnv = "TANDEM_DAEMONIZED"

// daemonize starts the same command again in a new session, detached from
// the terminal, and returns; the child serves. Go cannot fork, so -d
// re-executes itself.
func daemonize(stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "tandem: -d: %v\n", err)
		return 71
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(stderr, "tandem: -d: %v\n", err)
		return 71
	}
	defer null.Close()
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), daemonEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	if f, ok := stderr.(*os.File); ok && f != os.Stderr {
		cmd.Stderr = f // a logfile from the config
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "tandem: -d: %v\n", err)
		return 71
	}
	return 0
}

// setup applies the process-wide options before serving.
func setup(o *options) error {
	if o.coredumps {
		lim := syscall.Rlimit{Cur: ^uint64(0), Max: ^uint64(0)}
		if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &lim); err != nil {
			return fmt.Errorf("-r: raising the core file limit: %w", err)
		}
	}
	return nil
}

// dropPrivileges switches to user when running as root, as memcached's -u.
// It is called after the listeners are open, so a privileged port works.
func dropPrivileges(name string) error {
	if os.Geteuid() != 0 || name == "" || name == "root" {
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("can't find the user %s to switch to", name)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("failed to assume the groups of %s: %w", name, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("failed to assume the group of %s: %w", name, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("failed to assume the identity of %s: %w", name, err)
	}
	return nil
}

// thpEnabled is where Linux says whether transparent huge pages are on.
var thpEnabled = "/sys/kernel/mm/transparent_hugepage/enabled"

// hugePagesOff says why -L cannot get huge pages here, or "" if it can:
// the kernel's transparent huge pages must be "always" or "madvise".
func hugePagesOff() string {
	b, err := os.ReadFile(thpEnabled)
	switch {
	case err != nil:
		return "this kernel has no transparent huge pages"
	case bytes.Contains(b, []byte("[never]")):
		return "transparent huge pages are turned off (" + thpEnabled + ")"
	}
	return ""
}

// rlimitMemlock is RLIMIT_MEMLOCK, and mclOnfault MCL_ONFAULT (Linux 4.4),
// which package syscall does not name.
const (
	rlimitMemlock = 8
	mclOnfault    = 4
)

// lockMemory is -k: memcached's mlockall(MCL_CURRENT|MCL_FUTURE) after it
// has dropped its privileges, so that no part of the cache is paged out.
// Under a locked-memory limit memcached's mlockall fails if what it has
// mapped is over the limit already, and otherwise locks and then fails
// the allocations past it; the Go runtime cannot fail an allocation, it
// aborts. So Tandem locks only where no allocation can run into the
// limit: where the kernel lets it lock past the limit (CAP_IPC_LOCK, as
// root after -u root), or with RLIMIT_MEMLOCK unlimited (its soft limit is
// raised to the hard one first); otherwise it runs unlocked. Pages are
// locked as they are first touched (MCL_ONFAULT), not when mapped: a
// thread's 8 MiB stack or a 64-page region of item memory is not made
// resident all at once. It returns what to warn of, or "".
func lockMemory() string {
	if !lockUnlimited() {
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(rlimitMemlock, &lim); err != nil {
			return "-k: memory not locked: reading the locked-memory limit: " + err.Error()
		}
		if lim.Cur != lim.Max {
			raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
			if syscall.Setrlimit(rlimitMemlock, &raised) == nil {
				lim = raised
			}
		}
		if lim.Cur != ^uint64(0) {
			return fmt.Sprintf("-k: memory not locked: the locked-memory limit is %d KiB (ulimit -l), "+
				"and an allocation past it would abort the process; set it to unlimited "+
				"(LimitMEMLOCK=infinity under systemd) or run with CAP_IPC_LOCK", lim.Cur>>10)
		}
	}
	err := syscall.Mlockall(syscall.MCL_CURRENT | syscall.MCL_FUTURE | mclOnfault)
	if err == syscall.EINVAL { // a kernel before 4.4
		err = syscall.Mlockall(syscall.MCL_CURRENT | syscall.MCL_FUTURE)
	}
	if err != nil {
		return "-k invalid, mlockall() failed: " + err.Error() // memcached's words
	}
	return ""
}

// lockUnlimited tells whether the kernel lets this process lock memory past
// its locked-memory limit (CAP_IPC_LOCK in the user namespace that counts,
// which /proc/self/status cannot tell inside a container): it locks one
// page under a limit of 0 for a moment.
func lockUnlimited() bool {
	var old syscall.Rlimit
	if syscall.Getrlimit(rlimitMemlock, &old) != nil {
		return false
	}
	zero := syscall.Rlimit{Cur: 0, Max: old.Max}
	if syscall.Setrlimit(rlimitMemlock, &zero) != nil {
		return false
	}
	defer func() { _ = syscall.Setrlimit(rlimitMemlock, &old) }()
	page, err := syscall.Mmap(-1, 0, os.Getpagesize(), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return false
	}
	defer func() { _ = syscall.Munmap(page) }()
	if syscall.Mlock(page) != nil {
		return false
	}
	_ = syscall.Munlock(page)
	return true
}
