package drivers_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
)

// msg is a stream message: a chunk, or a header when head is set.
type msg struct {
	data []byte
	head bool
}

func reader(want int64, msgs ...msg) *drivers.ChunkReader[msg] {
	recv := func() (msg, error) {
		if len(msgs) == 0 {
			return msg{}, io.EOF
		}
		m := msgs[0]
		msgs = msgs[1:]
		return m, nil
	}
	chunk := func(m msg) ([]byte, error) {
		if m.head {
			return nil, errdefs.Invalidf("a second header")
		}
		return m.data, nil
	}
	return drivers.NewChunkReader(recv, chunk, want)
}

func TestChunkReader(t *testing.T) {
	abc := []msg{{data: []byte("ab")}, {}, {data: []byte("c")}}
	for _, tc := range []struct {
		name string
		want int64
		msgs []msg
		out  string // content, or the error's text
		ok   bool
	}{
		{"unsized", -1, abc, "abc", true},
		{"sized", 3, abc, "abc", true},
		{"short", 4, abc, "upload ended after 3 bytes of the announced 4", false},
		{"long", 2, abc, "upload is longer than the announced 2 bytes", false},
		{"second header", -1, []msg{{data: []byte("a")}, {head: true}}, "a second header", false},
	} {
		for _, via := range []string{"Read", "WriteTo"} {
			r := reader(tc.want, tc.msgs...)
			var out bytes.Buffer
			var err error
			if via == "Read" {
				_, err = io.Copy(&out, struct{ io.Reader }{r})
			} else {
				_, err = r.WriteTo(&out)
			}
			switch {
			case tc.ok && (err != nil || out.String() != tc.out):
				t.Errorf("%s via %s: %q, %v; want %q", tc.name, via, out.String(), err, tc.out)
			case !tc.ok && (!errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.out)):
				t.Errorf("%s via %s: %v; want %q", tc.name, via, err, tc.out)
			}
		}
	}
}
