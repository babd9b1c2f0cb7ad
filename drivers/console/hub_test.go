package console

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
)

// The ring must always hold exactly the last size bytes published.
func TestRingKeepsTheTail(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 7, 64, 1000} {
		h := NewHub(nil, size)
		var all []byte
		for i := 0; i < 500; i++ {
			p := make([]byte, r.IntN(3*size)+1)
			for j := range p {
				p[j] = byte(r.IntN(256))
			}
			h.Publish(p)
			all = append(all, p...)
			got, _ := h.Scrollback(context.Background())
			want := all[max(0, len(all)-size):]
			if !bytes.Equal(got, want) {
				t.Fatalf("size %d after %d writes: scrollback differs from the last %d bytes", size, i+1, len(want))
			}
		}
	}
}

func TestSlowReaderIsCutOffNotTheBoard(t *testing.T) {
	h := NewHub(nil, 16)
	a, err := h.Attach(context.Background(), AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := 0; i < 20; i++ {
		h.Publish(chunk) // must not block although nobody reads
	}
	buf := make([]byte, 10)
	if _, err := a.Read(buf); err != ErrSlowReader {
		t.Fatalf("read after overflow: %v, want ErrSlowReader", err)
	}
}
