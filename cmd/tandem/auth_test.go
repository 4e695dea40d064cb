package main

// Authentication: SASL PLAIN over the binary protocol (-S) and ascii
// authentication (-Y), compared with Debian's memcached where it can be.
//
// Debian's memcached 1.6.18 is built with SASL but without
// ENABLE_SASL_PWDB: it ignores MEMCACHED_SASL_PWDB and checks passwords in
// Cyrus SASL's sasldb, and it refuses to start with -S unless it finds a
// SASL configuration (SASL_CONF_PATH). The test writes one; if saslpasswd2
// (Debian's sasl2-bin) is installed it also puts the test user in a sasldb,
// so that memcached can accept the right password. Without it, the cases in
// which a right password must succeed run against tandem alone and are
// checked against memcached's answers written out below (recorded from
// memcached with such a sasldb).

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	authUser = "difftest"
	authPass = "secret"
)

// plain is a SASL PLAIN message: authzid NUL authcid NUL password.
func plain(authz, user, pass string) string { return authz + "\x00" + user + "\x00" + pass }

// saslCase is a binary exchange on one connection. The exchange ends with a
// VERSION request (allowed before authenticating) whose response marks the
// end, unless the server is expected to close the connection.
type saslCase struct {
	name   string
	send   []byte
	closes bool
	// needsUser: memcached answers it as tandem must only if it knows the
	// test user (sasldb); otherwise tandem alone is checked against want.
	needsUser bool
	// want is memcached's answer (normalizeBinary form, CAS shown as
	// <cas>), checked when memcached cannot be asked.
	want string
}

func saslCases() []saslCase {
	auth := func(mech, msg string, opaque uint32) bpkt {
		p := breq(bSASLAuth, mech, nil, msg)
		p.opaque = opaque
		return p
	}
	step := func(mech, msg string, opaque uint32) bpkt {
		p := breq(bSASLStep, mech, nil, msg)
		p.opaque = opaque
		return p
	}
	ok := plain("", authUser, authPass)
	set := breq(bSet, "sasl-k", flagsExp(7, 0), "v")
	get := breq(bGet, "sasl-k", nil, "")
	miss := breq(bGet, "sasl-never-set", nil, "") // cases run in turn on the same servers
	const (
		authOK   = "magic=0x81 op=%#x keylen=0 extlen=0 type=0 status=0x0 bodylen=13 opaque=%#x cas=0 body=\"Authenticated\"\n"
		authFail = "magic=0x81 op=%#x keylen=0 extlen=0 type=0 status=0x20 bodylen=13 opaque=%#x cas=0 body=\"Auth failure.\"\n"
		setOK    = "magic=0x81 op=0x1 keylen=0 extlen=0 type=0 status=0x0 bodylen=0 opaque=0x101 cas=<cas> body=\"\"\n"
		getHit   = "magic=0x81 op=0x0 keylen=0 extlen=4 type=0 status=0x0 bodylen=5 opaque=0x1 cas=<cas> body=\"\\x00\\x00\\x00\\av\"\n"
		cont     = "magic=0x81 op=0x21 keylen=0 extlen=0 type=0 status=0x21 bodylen=0 opaque=0x1 cas=0 body=\"\"\n"
		mechs    = "magic=0x81 op=0x20 keylen=0 extlen=0 type=0 status=0x0 bodylen=5 opaque=0x2001 cas=0 body=\"PLAIN\"\n"
		version  = "magic=0x81 op=0xb keylen=0 extlen=0 type=0 status=0x0 bodylen=6 opaque=0xfeedface cas=0 body=\"1.6.18\"\n"
	)
	return []saslCase{
		{name: "list-mechs", send: cat(breq(bSASLList, "", nil, ""))},
		{name: "right-password", send: cat(auth("PLAIN", ok, 1), set, get), needsUser: true,
			want: fmt.Sprintf(authOK, bSASLAuth, 1) + setOK + getHit + version},
		{name: "authzid-same-user", send: cat(auth("PLAIN", plain(authUser, authUser, authPass), 1)), needsUser: true,
			want: fmt.Sprintf(authOK, bSASLAuth, 1) + version},
		{name: "mechanism-any-case", send: cat(auth("plain", ok, 1)), needsUser: true,
			want: fmt.Sprintf(authOK, bSASLAuth, 1) + version},
		{name: "wrong-password", send: cat(auth("PLAIN", plain("", authUser, "wrong"), 1))},
		{name: "password-prefix", send: cat(auth("PLAIN", plain("", authUser, "secre"), 1))},
		{name: "unknown-user", send: cat(auth("PLAIN", plain("", "nobody", authPass), 1))},
		{name: "authzid-other-user", send: cat(auth("PLAIN", plain("other", authUser, authPass), 1))},
		{name: "no-nul", send: cat(auth("PLAIN", authUser+authPass, 1))},
		{name: "trailing-nul", send: cat(auth("PLAIN", ok+"\x00", 1))},
		{name: "unknown-mechanism", send: cat(auth("CRAM-MD5", ok, 1))},
		{name: "mechanism-too-long", send: cat(auth(strings.Repeat("P", 33), ok, 1))},
		{name: "wrong-then-right", send: cat(auth("PLAIN", plain("", authUser, "wrong"), 1), auth("PLAIN", ok, 2), miss),
			needsUser: true,
			want: fmt.Sprintf(authFail, bSASLAuth, 1) + fmt.Sprintf(authOK, bSASLAuth, 2) +
				"magic=0x81 op=0x0 keylen=0 extlen=0 type=0 status=0x1 bodylen=9 opaque=0x1 cas=0 body=\"Not found\"\n" + version},
		{name: "continue-then-step", send: cat(auth("PLAIN", "", 1), step("PLAIN", ok, 2), miss), needsUser: true,
			want: cont + fmt.Sprintf(authOK, bSASLStep, 2) +
				"magic=0x81 op=0x0 keylen=0 extlen=0 type=0 status=0x1 bodylen=9 opaque=0x1 cas=0 body=\"Not found\"\n" + version},
		{name: "step-retried", send: cat(auth("PLAIN", "", 1), step("PLAIN", plain("", authUser, "wrong"), 2), step("X", ok, 3)),
			needsUser: true,
			want:      cont + fmt.Sprintf(authFail, bSASLStep, 2) + fmt.Sprintf(authOK, bSASLStep, 3) + version},
		{name: "step-empty", send: cat(auth("PLAIN", "", 1), step("PLAIN", "", 2))},
		{name: "step-without-auth", send: cat(step("PLAIN", ok, 1))},
		{name: "step-after-failed-auth", send: cat(auth("PLAIN", plain("", authUser, "wrong"), 1), step("PLAIN", ok, 2))},
		{name: "step-after-success", send: cat(auth("PLAIN", ok, 1), step("PLAIN", ok, 2), get), needsUser: true, closes: true,
			want: fmt.Sprintf(authOK, bSASLAuth, 1) + fmt.Sprintf(authFail, bSASLStep, 2) + fmt.Sprintf(authFail, bGet, 1)},
		{name: "failed-reauth-unauthenticates", send: cat(auth("PLAIN", ok, 1), auth("PLAIN", plain("", authUser, "x"), 2), get),
			needsUser: true, closes: true,
			want: fmt.Sprintf(authOK, bSASLAuth, 1) + fmt.Sprintf(authFail, bSASLAuth, 2) + fmt.Sprintf(authFail, bGet, 1)},
		{name: "list-unauthenticates", send: cat(auth("PLAIN", ok, 1), breq(bSASLList, "", nil, ""), get),
			needsUser: true, closes: true,
			want: fmt.Sprintf(authOK, bSASLAuth, 1) + mechs + fmt.Sprintf(authFail, bGet, 1)},
		{name: "list-with-key", send: cat(breq(bSASLList, "x", nil, "")), closes: true},
		{name: "auth-with-extras", send: cat(breq(bSASLAuth, "PLAIN", u32(0), ok)), closes: true},
		{name: "auth-without-mechanism", send: cat(breq(bSASLAuth, "", nil, ok)), closes: true},
		// Before authenticating, anything but the SASL commands and
		// VERSION is refused and the connection closed.
		{name: "unauthenticated-get", send: cat(get), closes: true},
		{name: "unauthenticated-set", send: cat(set, get), closes: true},
		{name: "unauthenticated-noop", send: cat(breq(bNoop, "", nil, "")), closes: true},
		{name: "unauthenticated-stat", send: cat(breq(bStat, "", nil, "")), closes: true},
		{name: "unauthenticated-quit", send: cat(breq(bQuit, "", nil, "")), closes: true},
		{name: "unauthenticated-flush", send: cat(breq(bFlush, "", nil, "")), closes: true},
		{name: "unauthenticated-getq", send: cat(breq(bGetQ, "sasl-k", nil, "")), closes: true},
		{name: "unauthenticated-unknown-opcode", send: cat(breq(0x50, "", nil, "")), closes: true},
		{name: "unauthenticated-key-too-long", send: cat(breq(bGet, strings.Repeat("k", 300), nil, "")), closes: true},
		{name: "bad-lengths-first", send: cat(bpkt{op: bGet, key: []byte("kkkkkkkkkk"), keyLen: -1, extLen: -1, bodyLen: 2}), closes: true},
	}
}

// saslExchange sends c.send on a fresh connection and returns the
// responses: up to the VERSION appended as an end marker, or to EOF.
func saslExchange(addr string, c saslCase) ([]byte, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(scriptTimeout))
	send := c.send
	if !c.closes {
		send = append(append([]byte{}, send...), bpkt{op: bVersion, opaque: endOpaque, keyLen: -1, extLen: -1, bodyLen: -1}.bytes()...)
	}
	writeErr := make(chan error, 1)
	go func() { _, err := conn.Write(send); writeErr <- err }()
	var reply []byte
	buf := make([]byte, 64<<10)
	for {
		if !c.closes && hasEndVersion(reply) {
			break
		}
		n, err := conn.Read(buf)
		reply = append(reply, buf[:n]...)
		if err == nil {
			continue
		}
		if c.closes && (errors.Is(err, io.EOF) || isPeerClosed(err)) {
			return reply, nil
		}
		return reply, fmt.Errorf("read: %w", err)
	}
	if err := <-writeErr; err != nil {
		return reply, fmt.Errorf("write: %w", err)
	}
	return reply, nil
}

func hasEndVersion(b []byte) bool {
	ps, _ := splitPackets(b)
	return len(ps) > 0 && ps[len(ps)-1].hdr[1] == bVersion && binary.BigEndian.Uint32(ps[len(ps)-1].hdr[12:]) == endOpaque
}

// saslServers starts tandem and memcached with -S. It reports whether
// memcached knows the test user.
func saslServers(t *testing.T) (tandem, memcached string, userKnown bool) {
	dir := t.TempDir()
	pwdb := filepath.Join(dir, "pwdb")
	require.NoError(t, os.WriteFile(pwdb, []byte("other:pw2\n"+authUser+":"+authPass+"\n"), 0o600))
	conf := "mech_list: plain\n"
	if saslpasswd, err := exec.LookPath("saslpasswd2"); err == nil {
		db := filepath.Join(dir, "sasldb2")
		cmd := exec.Command(saslpasswd, "-p", "-c", "-f", db, "-a", "memcached", authUser)
		cmd.Stdin = strings.NewReader(authPass)
		if out, err := cmd.CombinedOutput(); err == nil {
			conf += "sasldb_path: " + db + "\n"
			userKnown = true
		} else {
			t.Logf("saslpasswd2 failed (%v): %s", err, out)
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "memcached.conf"), []byte(conf), 0o600))
	t.Setenv("MEMCACHED_SASL_PWDB", pwdb) // tandem's users; Debian's memcached ignores it
	t.Setenv("SASL_CONF_PATH", dir)       // memcached's SASL configuration
	memcached = startServer(t, memcachedPath, []string{"-S"})
	tandem = startServer(t, e2eBinary(t), []string{"-S"})
	return tandem, memcached, userKnown
}

// TestSASL runs SASL exchanges on tandem -S and memcached -S.
func TestSASL(t *testing.T) {
	tandem, memcached, userKnown := saslServers(t)
	if !userKnown {
		t.Log("saslpasswd2 (Debian's sasl2-bin) is not installed: memcached cannot accept the test user, " +
			"so the cases needing a successful login check tandem against recorded memcached answers")
	}
	for _, c := range saslCases() {
		t.Run(c.name, func(t *testing.T) {
			var tb, mb []byte
			var terr, merr error
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); tb, terr = saslExchange(tandem, c) }()
			compare := userKnown || !c.needsUser
			if compare {
				mb, merr = saslExchange(memcached, c)
			}
			wg.Wait()
			require.NoError(t, terr, "tandem: responses so far:\n%s", normalizeBinary(tb))
			got := normalizeBinary(tb)
			if compare {
				require.NoError(t, merr, "memcached: responses so far:\n%s", normalizeBinary(mb))
				want := normalizeBinary(mb)
				require.Equal(t, want, got, "request: %q", c.send)
				if c.want != "" {
					require.Equal(t, c.want, want, "memcached no longer answers as recorded")
				}
				return
			}
			require.Equal(t, c.want, got, "request: %q", c.send)
		})
	}

	t.Run("ascii-refused", func(t *testing.T) {
		// memcached waits for a whole 24-byte header before it sees the bad
		// magic and closes; tandem closes at once. Neither answers.
		c, err := net.DialTimeout("tcp", tandem, time.Second)
		require.NoError(t, err)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(scriptTimeout))
		_, err = io.WriteString(c, "set k 0 0 24\r\n"+strings.Repeat("v", 24)+"\r\nget k\r\n")
		require.NoError(t, err)
		b, err := io.ReadAll(c)
		require.True(t, err == nil || isPeerClosed(err), "%v", err)
		require.Empty(t, b)
	})

	t.Run("stats", func(t *testing.T) {
		// Fresh servers: count two logins, one failed.
		tandem, memcached, userKnown := saslServers(t)
		addrs := []string{tandem}
		if userKnown {
			addrs = append(addrs, memcached)
		}
		for _, addr := range addrs {
			stat := breq(bStat, "", nil, "")
			settings := breq(bStat, "settings", nil, "")
			send := cat(breq(bSASLAuth, "PLAIN", nil, plain("", authUser, "bad")),
				breq(bSASLAuth, "PLAIN", nil, plain("", authUser, authPass)), stat, settings)
			b, err := saslExchange(addr, saslCase{send: send})
			require.NoError(t, err)
			stats := map[string]string{}
			ps, _ := splitPackets(b)
			for _, p := range ps {
				if kl := int(binary.BigEndian.Uint16(p.hdr[2:])); p.hdr[1] == bStat && kl > 0 {
					stats[string(p.body[:kl])] = string(p.body[kl:])
				}
			}
			require.Equal(t, "2", stats["auth_cmds"], addr)
			require.Equal(t, "1", stats["auth_errors"], addr)
			require.Equal(t, "yes", stats["auth_enabled_sasl"], addr)
			require.Equal(t, "no", stats["auth_enabled_ascii"], addr)
			require.Equal(t, "binary", stats["binding_protocol"], addr)
		}
	})
}

// asciiAuthCases are sent in parts; each part is sent once the replies to
// the previous one are in (memcached keeps only the last reply to an auth
// exchange of one batch of input, so how requests are batched matters).
var asciiAuthCases = []struct {
	name  string
	parts []string
}{
	{"ok", []string{"set any 0 0 15\r\ndifftest secret\r\n", "set a-ok 0 0 1\r\nx\r\nget a-ok\r\n"}},
	{"ok-in-parts", []string{"set any 0 0 15\r\n", "difftest secret\r\n", "version\r\n"}},
	{"ok-then-pipelined", []string{"set any 0 0 15\r\ndifftest secret\r\nversion\r\n"}},
	{"second-user", []string{"set any 0 0 9\r\nother pw2\r\nversion\r\n"}},
	{"failure", []string{"set any 0 0 12\r\ndifftest bad\r\n", "version\r\n"}},
	{"failure-then-ok", []string{"set any 0 0 12\r\ndifftest bad\r\n", "set any 0 0 15\r\ndifftest secret\r\n", "version\r\n"}},
	{"failure-pipelined", []string{"set any 0 0 12\r\ndifftest bad\r\nversion\r\n"}},
	{"unauthenticated", []string{"get k\r\n", "version\r\n", "set any 0 0 15\r\ndifftest secret\r\n"}},
	{"meta-before", []string{"mn\r\n"}},
	{"bad-termination", []string{"set any 0 0 3\r\nabcde\r\n", "version\r\n"}},
	{"one-token", []string{"set any 0 0 8\r\ndifftest\r\n", "version\r\n"}},
	{"three-tokens", []string{"set any 0 0 19\r\ndifftest secret xyz\r\n", "version\r\n"}},
	{"extra-spaces", []string{"set any 0 0 17\r\n difftest  secret\r\n", "version\r\n"}},
	{"noreply-ignored", []string{"set any 0 0 15 noreply\r\ndifftest secret\r\n", "version\r\n"}},
	{"add-is-not-auth", []string{"add any 0 0 15\r\ndifftest secret\r\n", "version\r\n"}},
	{"bad-size", []string{"set any 0 0 x\r\n", "version\r\n"}},
	{"short-set", []string{"set any 0 15\r\n", "version\r\n"}},
	{"lf-line", []string{"set any 0 0 15\ndifftest secret\r\n", "version\r\n"}},
	{"empty-line", []string{"\r\n", "version\r\n"}},
	{"binary-is-text", []string{"\x80\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
	{"no-newline-closes", []string{strings.Repeat("x", 3000), "version\r\n"}},
	{"flush-after-ok", []string{"set any 0 0 15\r\ndifftest secret\r\n", "flush_all\r\n"}},
}

// asciiExchange sends parts on a fresh connection. After each part it reads
// until want[i] bytes came (when want is given) or the server is silent for
// idleGap, and returns what each part got.
func asciiExchange(addr string, parts []string, want []int) ([]string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	got := make([]string, 0, len(parts))
	buf := make([]byte, 4096)
	for i, p := range parts {
		_ = c.SetWriteDeadline(time.Now().Add(scriptTimeout))
		if _, err := io.WriteString(c, p); err != nil {
			if isPeerClosed(err) {
				got = append(got, "<closed>")
				return got, nil
			}
			return got, err
		}
		var b []byte
		for {
			if want != nil && len(b) >= want[i] {
				_ = c.SetReadDeadline(time.Now().Add(idleGap / 3)) // nothing more may come
			} else if want != nil {
				_ = c.SetReadDeadline(time.Now().Add(scriptTimeout))
			} else {
				_ = c.SetReadDeadline(time.Now().Add(idleGap))
			}
			n, err := c.Read(buf)
			b = append(b, buf[:n]...)
			if err == nil {
				continue
			}
			if isTimeout(err) {
				break
			}
			if errors.Is(err, io.EOF) || isPeerClosed(err) {
				got = append(got, string(b)+"<closed>")
				return got, nil
			}
			return got, err
		}
		got = append(got, string(b))
	}
	return got, nil
}

// TestASCIIAuth compares tandem -Y and memcached -Y, part by part.
func TestASCIIAuth(t *testing.T) {
	pw := filepath.Join("testdata", "diff", "auth.pw")
	memcached := startServer(t, memcachedPath, []string{"-Y", pw})
	tandem := startServer(t, e2eBinary(t), []string{"-Y", pw})
	for _, tc := range asciiAuthCases {
		t.Run(tc.name, func(t *testing.T) {
			want, err := asciiExchange(memcached, tc.parts, nil)
			require.NoError(t, err)
			lens := make([]int, len(want))
			for i, w := range want {
				lens[i] = len(strings.TrimSuffix(w, "<closed>"))
			}
			got, err := asciiExchange(tandem, tc.parts, lens)
			require.NoError(t, err)
			require.Equal(t, want, got, "parts: %q", tc.parts)
		})
	}

	t.Run("stats", func(t *testing.T) {
		for _, bin := range []string{memcachedPath, e2eBinary(t)} {
			addr := startServer(t, bin, []string{"-Y", pw})
			fail, err := asciiExchange(addr, []string{"set a 0 0 10\r\nother nope\r\n"}, []int{len("CLIENT_ERROR authentication failure\r\n")})
			require.NoError(t, err)
			require.Equal(t, []string{"CLIENT_ERROR authentication failure\r\n"}, fail)

			c, err := net.DialTimeout("tcp", addr, time.Second)
			require.NoError(t, err)
			defer c.Close()
			r := bufio.NewReader(c)
			require.Equal(t, "STORED\r\n", roundTrip(t, c, r, "set a 0 0 9\r\nother pw2\r\n"))
			stats := map[string]string{}
			for _, req := range []string{"stats\r\n", "stats settings\r\n"} {
				_, err := io.WriteString(c, req)
				require.NoError(t, err)
				for {
					line, err := r.ReadString('\n')
					require.NoError(t, err)
					if line == "END\r\n" {
						break
					}
					if f := strings.Fields(line); len(f) == 3 {
						stats[f[1]] = f[2]
					}
				}
			}
			require.Equal(t, "2", stats["auth_cmds"], bin)
			require.Equal(t, "1", stats["auth_errors"], bin)
			require.Equal(t, "no", stats["auth_enabled_sasl"], bin)
			require.Equal(t, pw, stats["auth_enabled_ascii"], bin)
			require.Equal(t, "ascii", stats["binding_protocol"], bin)
		}
	})
}

// TestAuthFlags checks the flag handling against memcached's: the
// protocol each implies, the conflicts, and the files that stop the start.
func TestAuthFlags(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		proto string
		err   string
	}{
		{[]string{"-S"}, "binary", ""},
		{[]string{"-S", "-B", "binary"}, "binary", ""},
		{[]string{"-S", "-B", "ascii"}, "", "ERROR: You cannot allow the ASCII protocol while using SASL."},
		{[]string{"-S", "-B", "auto"}, "", "ERROR: You cannot allow the ASCII protocol while using SASL."},
		{[]string{"-Y", "f"}, "ascii", ""},
		{[]string{"-Y", "f", "-S"}, "ascii", ""},
		{[]string{"-Y", "f", "-B", "auto"}, "", "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens."},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o, err := parseArgs(asUser(tc.args...), &bytes.Buffer{})
			if tc.err != "" {
				require.EqualError(t, err, tc.err)
				var out bytes.Buffer
				require.Equal(t, 64, run(asUser(tc.args...), &out, &out)) // EX_USAGE, as memcached
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.proto, o.protocol)
		})
	}

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	for _, tc := range []struct {
		name string
		args []string
		env  string // MEMCACHED_SASL_PWDB; "-" leaves it unset
		out  *regexp.Regexp
	}{
		{"sasl-without-pwdb", []string{"-S"}, "-", regexp.MustCompile(`-S needs MEMCACHED_SASL_PWDB`)},
		{"sasl-missing-pwdb", []string{"-S"}, filepath.Join(dir, "none"), regexp.MustCompile(`could not read the SASL password file`)},
		{"authfile-missing", []string{"-Y", filepath.Join(dir, "none")}, "-", regexp.MustCompile(`^Could not open authfile \[.*none\] for reading`)},
		{"authfile-malformed", []string{"-Y", write("bad", "a:b\nno colon\n")}, "-", regexp.MustCompile(`^Authfile \[.*bad\] has a malformed entry. Should be 'user:password'`)},
		{"authfile-empty-line", []string{"-Y", write("empty-line", "a:b\n\n")}, "-", regexp.MustCompile(`malformed entry`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env == "-" {
				t.Setenv("MEMCACHED_SASL_PWDB", "")
				os.Unsetenv("MEMCACHED_SASL_PWDB")
			} else {
				t.Setenv("MEMCACHED_SASL_PWDB", tc.env)
			}
			var out bytes.Buffer
			require.Equal(t, 1, run(asUser(append(tc.args, "-p", "0", "-l", "127.0.0.1")...), &out, &out)) // EXIT_FAILURE, as memcached
			require.Regexp(t, tc.out, out.String())
		})
	}
}
