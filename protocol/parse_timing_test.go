package protocol

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Benchmarks of Parse on the commonest lines. Each reports allocations (0
// is the promise, checked by TestParseAllocs); the baseline is finding the
// newline, the least any parser must do, measured in the same run.

var benchLines = []struct {
	name string
	line []byte
}{
	{"get", []byte("get user:1234567890\r\n")},
	{"get 10 keys", []byte("get " + strings.TrimSpace(strings.Repeat("user:1234567890 ", 10)) + "\r\n")},
	{"set", []byte("set user:1234567890 0 3600 100\r\n")},
	{"mg", []byte("mg user:1234567890 v f t c k O123\r\n")},
	{"ms", []byte("ms user:1234567890 100 T3600 F5 c\r\n")},
	{"mg base64", []byte("mg dXNlcjoxMjM0NTY3ODkw b v\r\n")},
}

func TestParseAllocs(t *testing.T) {
	var r Request
	for _, l := range benchLines {
		t.Run(l.name, func(t *testing.T) {
			_, err := Parse(l.line, &r) // grow the Request's slices once
			require.NoError(t, err)
			var n int
			allocs := testing.AllocsPerRun(1000, func() { n, err = Parse(l.line, &r) })
			require.NoError(t, err)
			require.Equal(t, len(l.line), n)
			require.Zero(t, allocs)
		})
	}
}

func BenchmarkParse(b *testing.B) {
	for _, l := range benchLines {
		b.Run(l.name, func(b *testing.B) {
			var r Request
			b.ReportAllocs()
			b.SetBytes(int64(len(l.line)))
			for b.Loop() {
				if _, err := Parse(l.line, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseParallel: one Request per goroutine, as one per connection.
func BenchmarkParseParallel(b *testing.B) {
	for _, l := range benchLines {
		b.Run(l.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(l.line)))
			b.RunParallel(func(pb *testing.PB) {
				var r Request
				for pb.Next() {
					if _, err := Parse(l.line, &r); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkParseBaseline finds the end of the line and nothing more.
func BenchmarkParseBaseline(b *testing.B) {
	for _, l := range benchLines {
		b.Run(l.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(l.line)))
			n := 0
			for b.Loop() {
				n += bytes.IndexByte(l.line, '\n')
			}
			_ = n
		})
	}
}
