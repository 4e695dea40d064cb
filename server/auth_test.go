package server

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func writeUsers(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestLoadAuthFile(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		ok, bad    [][2]string // user, password pairs that must and must not pass
		malformed  bool
	}{
		{name: "two users", file: "a:b\nc:d\n", ok: [][2]string{{"a", "b"}, {"c", "d"}}, bad: [][2]string{{"a", "d"}, {"a", ""}, {"", "b"}, {"a", "bb"}}},
		{name: "colon in password", file: "a:b:c\n", ok: [][2]string{{"a", "b:c"}}, bad: [][2]string{{"a", "b"}}},
		{name: "crlf", file: "a:b\r\n", ok: [][2]string{{"a", "b"}}, bad: [][2]string{{"a", "b\r"}}},
		{name: "no final newline", file: "a:b", ok: [][2]string{{"a", "b"}}},
		{name: "empty password", file: "a:\n", ok: [][2]string{{"a", ""}}},
		{name: "empty file", file: "", bad: [][2]string{{"", ""}}},
		{name: "no colon", file: "a:b\nab\n", malformed: true},
		{name: "empty line", file: "a:b\n\nc:d\n", malformed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := LoadAuthFile(writeUsers(t, tc.file))
			if tc.malformed {
				require.ErrorIs(t, err, ErrAuthFileMalformed)
				return
			}
			require.NoError(t, err)
			for _, p := range tc.ok {
				require.True(t, u.Check([]byte(p[0]), []byte(p[1])), "%q", p)
			}
			for _, p := range tc.bad {
				require.False(t, u.Check([]byte(p[0]), []byte(p[1])), "%q", p)
			}
		})
	}
	_, err := LoadAuthFile(filepath.Join(t.TempDir(), "missing"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestLoadSASLUsers(t *testing.T) {
	u, err := LoadSASLUsers(writeUsers(t, "junk\n\na:b:extra\nc:d\r\na:other\n"))
	require.NoError(t, err)
	require.True(t, u.Check([]byte("a"), []byte("b")))        // the password ends at ':'
	require.False(t, u.Check([]byte("a"), []byte("b:extra"))) // ...
	require.False(t, u.Check([]byte("a"), []byte("other")))   // the first line for a user counts
	require.True(t, u.Check([]byte("c"), []byte("d")))
	require.False(t, u.Check([]byte("junk"), []byte("")))
	_, err = LoadSASLUsers(filepath.Join(t.TempDir(), "missing"))
	require.Error(t, err)
}
