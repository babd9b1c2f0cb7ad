package drivers

import (
	"errors"
	"io"

	"github.com/pogolab/pogo/api/errdefs"
)

// ChunkReader reads the bytes of a client stream whose header (received
// already) is followed by chunk messages: the one reader behind every
// upload (flasher, bmc, storage, files). The stream's end is io.EOF.
type ChunkReader[M any] struct {
	recv  func() (M, error)
	chunk func(M) ([]byte, error)
	want  int64
	got   int64
	pend  []byte
	err   error
}

// NewChunkReader reads the messages recv returns; chunk gives a message's
// bytes, or an error for a message that is no chunk (a second header).
// want, when not negative, is the size the header announced: a stream
// that ends short of it or runs past it fails with errdefs.ErrInvalid.
func NewChunkReader[M any](recv func() (M, error), chunk func(M) ([]byte, error), want int64) *ChunkReader[M] {
	return &ChunkReader[M]{recv: recv, chunk: chunk, want: want}
}

func (r *ChunkReader[M]) Read(p []byte) (int, error) {
	r.next()
	if len(r.pend) == 0 {
		return 0, r.err
	}
	n := copy(p, r.pend)
	r.pend = r.pend[n:]
	return n, nil
}

// WriteTo writes each chunk as it arrives, so io.Copy makes one write per
// message instead of copying through a small buffer.
func (r *ChunkReader[M]) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		r.next()
		if len(r.pend) > 0 {
			n, err := w.Write(r.pend)
			total += int64(n)
			r.pend = r.pend[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if errors.Is(r.err, io.EOF) {
			return total, nil
		}
		return total, r.err
	}
}

// next receives until a chunk with bytes is in pend, or err is set.
func (r *ChunkReader[M]) next() {
	for len(r.pend) == 0 && r.err == nil {
		m, err := r.recv()
		switch {
		case errors.Is(err, io.EOF):
			r.err = io.EOF
			if r.want >= 0 && r.got != r.want {
				r.err = errdefs.Invalidf("upload ended after %d bytes of the announced %d", r.got, r.want)
			}
			return
		case err != nil:
			r.err = err
			return
		}
		b, err := r.chunk(m)
		if err != nil {
			r.err = err
			return
		}
		r.got += int64(len(b))
		if r.want >= 0 && r.got > r.want {
			r.err = errdefs.Invalidf("upload is longer than the announced %d bytes", r.want)
			return
		}
		r.pend = b
	}
}
