package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync/atomic"
)

// Options shape a Stream.
type Options struct {
	// Format forces a compression; Auto (the zero value) detects it.
	Format Format
	// SHA256 is the expected hex sha256 of the uncompressed image; empty
	// means only compute it.
	SHA256 string
	// SourceSize is the size of the (compressed) source when known (file
	// size, Content-Length); 0 or less means unknown.
	SourceSize int64
	// Progress, when set, is called every ProgressEvery image bytes and once
	// at the end.
	Progress func(Progress)
	// ProgressEvery defaults to 4 MiB.
	ProgressEvery int64
}

// Progress is a snapshot of a Stream.
type Progress struct {
	// Source counts compressed bytes taken from the source (read-ahead
	// included); SourceTotal is Options.SourceSize, or -1 when unknown.
	Source, SourceTotal int64
	// Image counts uncompressed bytes delivered.
	Image int64
	// Done is set on the last call, after the checksum was checked.
	Done bool
}

// Percent is how far through the source the stream is, or -1 if unknown.
func (p Progress) Percent() float64 {
	if p.SourceTotal <= 0 {
		return -1
	}
	return 100 * float64(p.Source) / float64(p.SourceTotal)
}

// ChecksumError is a whole-image sha256 mismatch.
type ChecksumError struct {
	Want, Got string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("image sha256 mismatch: expected %s, got %s", e.Want, e.Got)
}

// Stream reads an image source as its uncompressed bytes, hashing them on
// the way. Its Read returns a *ChecksumError instead of io.EOF when an
// expected SHA256 was given and does not match, so a consumer that streams
// to the end cannot miss the mismatch.
type Stream struct {
	src    *countReader
	dec    io.ReadCloser
	format Format
	hash   hash.Hash
	want   string
	n      int64
	opts   Options
	next   int64
	err    error
}

// Open starts the pipeline on src (the caller closes src).
func Open(src io.Reader, opts Options) (*Stream, error) {
	want := strings.ToLower(strings.TrimSpace(opts.SHA256))
	if want != "" {
		if b, err := hex.DecodeString(want); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("expected sha256 %q: want 64 hex digits", opts.SHA256)
		}
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 4 << 20
	}
	cr := &countReader{r: src}
	dec, f, err := Decompress(cr, opts.Format)
	if err != nil {
		return nil, err
	}
	return &Stream{src: cr, dec: dec, format: f, hash: sha256.New(), want: want, opts: opts, next: opts.ProgressEvery}, nil
}

// Format is the compression that was undone.
func (s *Stream) Format() Format { return s.format }

// Read delivers uncompressed image bytes.
func (s *Stream) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.dec.Read(p)
	if n > 0 {
		s.hash.Write(p[:n])
		s.n += int64(n)
		if s.opts.Progress != nil && s.n >= s.next {
			s.next = s.n + s.opts.ProgressEvery
			s.opts.Progress(s.progress(false))
		}
	}
	if err == io.EOF {
		if s.want != "" && s.Sum() != s.want {
			err = &ChecksumError{Want: s.want, Got: s.Sum()}
		}
		if s.opts.Progress != nil {
			s.opts.Progress(s.progress(err == io.EOF))
		}
	}
	if err != nil {
		s.err = err
	}
	return n, err
}

func (s *Stream) progress(done bool) Progress {
	total := s.opts.SourceSize
	if total <= 0 {
		total = -1
	}
	return Progress{Source: s.src.n.Load(), SourceTotal: total, Image: s.n, Done: done}
}

// Sum is the hex sha256 of the image bytes read so far.
func (s *Stream) Sum() string { return hex.EncodeToString(s.hash.Sum(nil)) }

// SourceRead is the number of source (compressed) bytes the decoder took
// so far; safe to call while another goroutine reads.
func (s *Stream) SourceRead() int64 { return s.src.n.Load() }

// Size is the number of image bytes read so far.
func (s *Stream) Size() int64 { return s.n }

// Close releases the decoder.
func (s *Stream) Close() error { return s.dec.Close() }

// countReader counts what the decoder took from the source. Decoders may
// read ahead on a goroutine of their own (zstd does), hence the atomic.
type countReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
