package image

import (
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// RangeError is a mapped range whose bytes do not match the bmap.
type RangeError struct {
	Range     Range
	Offset    int64
	Want, Got string
	// Short is set when the image ended inside the range.
	Short bool
}

func (e *RangeError) Error() string {
	if e.Short {
		return fmt.Sprintf("bmap range %v (line %d, offset %d): image ends inside the range", e.Range, e.Range.Line, e.Offset)
	}
	return fmt.Sprintf("bmap range %v (line %d, offset %d): checksum mismatch: bmap says %s, image has %s", e.Range, e.Range.Line, e.Offset, e.Want, e.Got)
}

// Mapped reads an image stream range by range, skipping unmapped blocks:
// Next moves to the next mapped range, Read reads its bytes and returns a
// *RangeError instead of io.EOF when the range's checksum does not match.
// Skipping seeks when the source is an io.Seeker and otherwise reads and
// discards (so a hashing Stream underneath still sees every byte).
type Mapped struct {
	b      *Bmap
	src    io.Reader
	pos    int64 // image offset of the next byte src yields
	i      int   // index of the current range; -1 before the first
	left   int64 // bytes of the current range not yet read
	h      hash.Hash
	err    error
	seeker io.Seeker
}

// Mapped starts reading src (positioned at the image start) by b's ranges.
func (b *Bmap) Mapped(src io.Reader) *Mapped {
	m := &Mapped{b: b, src: src, i: -1, h: b.newHash()}
	if s, ok := src.(io.Seeker); ok {
		m.seeker = s
	}
	return m
}

// Next skips to the next mapped range and returns it with its byte offset
// and length. After the last range it consumes the rest of the image (or
// nothing, when seeking) and returns io.EOF.
func (m *Mapped) Next() (r Range, offset, length int64, err error) {
	if m.err != nil {
		return Range{}, 0, 0, m.err
	}
	if m.i >= 0 && m.left > 0 {
		// The caller did not read the whole range; drain it so its
		// checksum is still checked.
		if _, err := io.Copy(io.Discard, m); err != nil {
			return Range{}, 0, 0, err
		}
	}
	m.i++
	if m.i >= len(m.b.Ranges) {
		m.err = m.finish()
		return Range{}, 0, 0, m.err
	}
	r = m.b.Ranges[m.i]
	off := m.b.Offset(r)
	if err := m.skip(off); err != nil {
		m.err = err
		return Range{}, 0, 0, err
	}
	m.left = m.b.Length(r)
	m.h.Reset()
	return r, off, m.left, nil
}

func (m *Mapped) skip(to int64) error {
	if to == m.pos {
		return nil
	}
	if m.seeker != nil {
		if _, err := m.seeker.Seek(to, io.SeekStart); err != nil {
			return fmt.Errorf("seek image to %d: %w", to, err)
		}
		m.pos = to
		return nil
	}
	n, err := io.CopyN(io.Discard, m.src, to-m.pos)
	m.pos += n
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("image ends at %d bytes, before the bmap's range at offset %d (bmap ImageSize %d)", m.pos, to, m.b.ImageSize)
	}
	return err
}

// finish consumes what follows the last range, checking the image is as
// long as the bmap says.
func (m *Mapped) finish() error {
	if m.seeker != nil {
		return io.EOF
	}
	if err := m.skip(m.b.ImageSize); err != nil {
		return err
	}
	var one [1]byte
	for {
		n, err := m.src.Read(one[:])
		if n > 0 {
			return fmt.Errorf("image is longer than the bmap's ImageSize %d: wrong .bmap for this image?", m.b.ImageSize)
		}
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		if err != nil {
			return err
		}
	}
}

// Read reads the current range's bytes.
func (m *Mapped) Read(p []byte) (int, error) {
	if m.i < 0 || m.i >= len(m.b.Ranges) {
		return 0, io.EOF
	}
	if m.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > m.left {
		p = p[:m.left]
	}
	n, err := m.src.Read(p)
	m.h.Write(p[:n])
	m.pos += int64(n)
	m.left -= int64(n)
	r := m.b.Ranges[m.i]
	if m.left == 0 {
		if got := hex.EncodeToString(m.h.Sum(nil)); r.Checksum != "" && got != r.Checksum {
			m.err = &RangeError{Range: r, Offset: m.b.Offset(r), Want: r.Checksum, Got: got}
			return n, m.err
		}
		return n, nil
	}
	if errors.Is(err, io.EOF) {
		m.err = &RangeError{Range: r, Offset: m.b.Offset(r), Short: true}
		return n, m.err
	}
	return n, err
}

// CopyTo writes every mapped range of the image to dst at its offset and
// returns the bytes written.
func (m *Mapped) CopyTo(dst io.WriterAt) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		_, off, _, err := m.Next()
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		for {
			n, err := m.Read(buf)
			if n > 0 {
				if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
					return total, fmt.Errorf("write image at %d: %w", off, werr)
				}
				off += int64(n)
				total += int64(n)
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return total, err
			}
			if m.left == 0 {
				break
			}
		}
	}
}
