package server

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"

	"github.com/tandemcache/tandem/protocol"
)

// Authentication, as memcached 1.6.18 does it:
//
//   - SASL (-S) on the binary protocol, mechanism PLAIN only, against a file
//     of user:password lines (memcached's MEMCACHED_SASL_PWDB);
//   - ascii authentication (-Y authfile): the first command of a text
//     connection is "set <any> <flags> <exptime> <bytes>" whose data is
//     "user password".
//
// Each forces its protocol (cmd sets Config.Protocol): SASL binary only,
// ascii authentication text only.

// Users is a set of user names and passwords. It is read-only once loaded,
// so connections share it without locking.
type Users struct {
	entries []userEntry
}

type userEntry struct {
	user, pass []byte
}

// ErrAuthFileMalformed is returned by LoadAuthFile for a line that is not
// user:password (an empty line included), as memcached refuses to start.
var ErrAuthFileMalformed = errors.New("malformed entry")

// LoadAuthFile reads a -Y authfile: one "user:password" line per user; the
// user ends at the first ':', the password at the end of the line (it may
// hold ':'). memcached reads at most 8 entries and ignores the rest; Tandem
// reads them all.
func LoadAuthFile(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	u := &Users{}
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = cutAt(line, '\r')
		user, pass, ok := bytes.Cut(cutAt(line, 0), []byte(":"))
		if !ok {
			return nil, fmt.Errorf("%w: line %d: %q", ErrAuthFileMalformed, n, line)
		}
		u.entries = append(u.entries, userEntry{user: user, pass: pass})
	}
	return u, nil
}

// LoadSASLUsers reads memcached's MEMCACHED_SASL_PWDB file: "user:password"
// lines, where the password ends at the end of the line or at a further
// ':'. As in memcached, the first line naming a user is the one checked, and
// lines without ':' are skipped.
func LoadSASLUsers(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	u := &Users{}
	seen := map[string]bool{}
	for _, line := range bytes.Split(data, []byte("\n")) {
		line = cutAt(cutAt(line, '\r'), 0)
		user, rest, ok := bytes.Cut(line, []byte(":"))
		if !ok || seen[string(user)] {
			continue
		}
		seen[string(user)] = true
		u.entries = append(u.entries, userEntry{user: user, pass: cutAt(rest, ':')})
	}
	return u, nil
}

// cutAt returns b up to the first c.
func cutAt(b []byte, c byte) []byte {
	if i := bytes.IndexByte(b, c); i >= 0 {
		return b[:i]
	}
	return b
}

// Check reports whether user and pass match an entry. Every entry is
// compared, in constant time for equal lengths, so that the time taken
// tells nothing of which user exists or how much of a password was right.
func (u *Users) Check(user, pass []byte) bool {
	match := 0
	for _, e := range u.entries {
		match |= subtle.ConstantTimeCompare(user, e.user) & subtle.ConstantTimeCompare(pass, e.pass)
	}
	return match == 1
}

// authState is one connection's authentication.
type authState struct {
	ok bool // authenticated
	// SASL: a PLAIN exchange was started by SASL_AUTH and may take a
	// SASL_STEP (started && !done), as memcached's sasl_started and the
	// SASL library's "done" flag.
	started, done bool
	// asciiData: -Y, the auth set line was read and its data block of this
	// many bytes (with its \r\n) is awaited; 0 when waiting for a line.
	asciiData int
}

const (
	// saslMechMax is memcached's MAX_SASL_MECH_LEN: a longer mechanism name
	// is refused with Invalid arguments.
	saslMechMax = 32
	// asciiAuthLineMax: memcached closes a connection that sent this many
	// bytes with no newline before authenticating.
	asciiAuthLineMax = 2048
	// asciiAuthReadMax is memcached's read buffer (READ_BUFFER_SIZE): an
	// auth data block that cannot fit in it closes the connection.
	asciiAuthReadMax = 16384
)

// saslAllowed reports whether opcode may run on this connection: before
// authenticating, only the SASL commands and VERSION may.
func (c *conn) saslAllowed(opcode uint8) bool {
	switch opcode {
	case protocol.OpSASLList, protocol.OpSASLAuth, protocol.OpSASLStep, protocol.OpVersion:
		return true
	}
	return c.auth.ok
}

// saslList answers SASL_LIST_MECHS. memcached's SASL library forgets the
// authenticated user when asked, so the connection must authenticate again.
func (c *conn) saslList(r *binRequest) {
	c.auth.ok = false
	c.out = protocol.AppendBinaryResponse(c.out, r.Opcode, protocol.StatusOK, r.Opaque, 0, nil, nil, []byte("PLAIN"))
}

// saslAuth runs SASL_AUTH or SASL_STEP with the mechanism in r.Key and the
// client's message in r.Value. As in memcached, any attempt first drops the
// connection's authentication: a failed one leaves it unauthenticated.
//
// PLAIN (RFC 4616) is "authzid NUL authcid NUL password"; the authzid may be
// empty or the authcid. SASL_AUTH with no message answers AUTH_CONTINUE and
// the message then comes with SASL_STEP (whose mechanism is not looked at);
// a failed step may be retried, a step after success fails.
func (c *conn) saslAuth(r *binRequest) {
	a := &c.auth
	a.ok = false
	ok := false
	if r.Opcode == protocol.OpSASLAuth {
		a.started, a.done = false, false
		if bytes.EqualFold(r.Key, []byte("PLAIN")) {
			if len(r.Value) == 0 {
				a.started = true
				c.out = protocol.AppendBinaryHeader(c.out, r.Opcode, protocol.StatusAuthContinue, 0, 0, 0, r.Opaque, 0)
				return
			}
			ok = c.checkPlain(r.Value)
			a.started, a.done = ok, ok
		}
	} else if a.started && !a.done {
		ok = c.checkPlain(r.Value)
		a.done = ok
	}
	c.s.authCmds.Add(1)
	if !ok {
		c.s.authErrors.Add(1)
		c.binError(r, protocol.StatusAuthError)
		return
	}
	a.ok = true
	c.out = protocol.AppendBinaryResponse(c.out, r.Opcode, protocol.StatusOK, r.Opaque, 0, nil, nil, []byte("Authenticated"))
}

// checkPlain checks a PLAIN message against the SASL users.
func (c *conn) checkPlain(msg []byte) bool {
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 {
		return false
	}
	authz, user, pass := parts[0], parts[1], parts[2]
	if len(user) == 0 || len(authz) > 0 && !bytes.Equal(authz, user) {
		return false
	}
	return c.s.cfg.SASL.Check(user, pass)
}

// text runs the text request at the front of buf: the auth exchange while
// a -Y connection has not authenticated, the request itself otherwise.
func (c *conn) text(buf []byte) (used, want int) {
	if c.s.cfg.AuthFile != nil && !c.auth.ok {
		return c.asciiAuth(buf)
	}
	return c.one(buf)
}

// asciiAuth reads what a -Y connection sends before it has authenticated,
// as memcached's try_read_command_asciiauth: a line "set <key> <flags>
// <exptime> <bytes>" (only "set" and the byte count are looked at; noreply
// is ignored), then a data block "user password". Any other line is
// answered CLIENT_ERROR unauthenticated.
func (c *conn) asciiAuth(buf []byte) (used, want int) {
	a := &c.auth
	if a.asciiData == 0 {
		if len(buf) < 2 {
			return 0, 2 // no request is this short
		}
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if len(buf) > asciiAuthLineMax {
				c.closing = true
				return len(buf), 0
			}
			return 0, len(buf) + 1
		}
		f := fields(buf[:i])
		n, ok := uint32(0), false
		if len(f) >= 5 && string(f[0]) == "set" {
			n, ok = protocol.ParseUint32(f[4]) // the \r is still there: it ends the number
		}
		if !ok {
			c.authReply("CLIENT_ERROR unauthenticated")
			return i + 1, 0
		}
		a.asciiData = int(n) + 2
		return i + 1, 0
	}
	if len(buf) < a.asciiData {
		if len(buf) >= asciiAuthReadMax {
			c.closing = true
			return len(buf), 0
		}
		return 0, min(a.asciiData, asciiAuthReadMax)
	}
	used, a.asciiData = a.asciiData, 0
	data := buf[:used]
	if !bytes.HasSuffix(data, []byte("\r\n")) {
		c.authReply("CLIENT_ERROR bad command line termination")
		return used, 0
	}
	f := fields(data[:len(data)-2])
	if len(f) < 2 {
		c.authReply("CLIENT_ERROR bad authentication token format")
		return used, 0
	}
	c.s.authCmds.Add(1)
	if !c.s.cfg.AuthFile.Check(f[0], f[1]) {
		c.s.authErrors.Add(1)
		c.authReply("CLIENT_ERROR authentication failure")
		return used, 0
	}
	a.ok = true
	c.authReply("STORED")
	return used, 0
}

// authReply answers an auth exchange. memcached writes each of these
// replies into the same response slot until it flushes, so of the replies
// to one batch of pipelined input only the last is sent ("set a 0 0 3\r\n
// a b\r\nversion\r\n" sent at once gets only "CLIENT_ERROR
// unauthenticated"). Before authentication c.out holds nothing else.
func (c *conn) authReply(s string) {
	c.out = protocol.AppendLine(c.out[:0], s)
}

// fields splits a line at spaces as memcached's tokenize_command: runs of
// spaces separate, other white space belongs to the tokens, and a NUL ends
// the line.
func fields(line []byte) [][]byte {
	line = cutAt(line, 0)
	var f [][]byte
	for _, t := range bytes.Split(line, []byte(" ")) {
		if len(t) > 0 {
			f = append(f, t)
		}
	}
	return f
}
