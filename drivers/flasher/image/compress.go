// Package image is the exporter-side image pipeline of the flasher: it
// undoes compression (found by magic bytes, not by file name), hashes the
// uncompressed image while it streams and, given a bmaptool block map,
// yields only the mapped ranges with each range's checksum verified.
package image

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Format is how an image stream is compressed.
type Format int

const (
	// Auto asks Open to detect the format by magic bytes.
	Auto Format = iota
	// Raw is an uncompressed image.
	Raw
	Gzip
	XZ
	Zstd
	Bzip2
)

var formatNames = map[Format]string{Auto: "auto", Raw: "raw", Gzip: "gzip", XZ: "xz", Zstd: "zstd", Bzip2: "bzip2"}

func (f Format) String() string {
	if s, ok := formatNames[f]; ok {
		return s
	}
	return fmt.Sprintf("format(%d)", int(f))
}

// ParseFormat maps a name (as String returns, or a file suffix like "gz",
// "zst", "bz2") to a Format.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case "raw", "none", "img":
		return Raw, nil
	case "gzip", "gz":
		return Gzip, nil
	case "xz":
		return XZ, nil
	case "zstd", "zst":
		return Zstd, nil
	case "bzip2", "bz2":
		return Bzip2, nil
	}
	return Auto, fmt.Errorf("unknown compression %q (want auto, raw, gzip, xz, zstd or bzip2)", s)
}

var (
	magicGzip = []byte{0x1f, 0x8b}
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
	// A bzip2 stream is "BZh", a block-size digit, then either the first
	// block's magic (pi) or the end-of-stream magic (sqrt(pi)) for an empty
	// stream; checking all ten bytes keeps raw images starting "BZh" raw.
	bzBlock = []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}
	bzEnd   = []byte{0x17, 0x72, 0x45, 0x38, 0x50, 0x90}
)

// Detect names the compression of the stream behind br without consuming
// it. Anything without a known magic is Raw.
func Detect(br *bufio.Reader) (Format, error) {
	head, err := br.Peek(10)
	if err != nil && !errors.Is(err, io.EOF) {
		return Auto, fmt.Errorf("read image header: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, magicXZ):
		return XZ, nil
	case bytes.HasPrefix(head, magicZstd):
		return Zstd, nil
	case bytes.HasPrefix(head, magicGzip):
		return Gzip, nil
	case len(head) == 10 && bytes.HasPrefix(head, []byte("BZh")) && head[3] >= '1' && head[3] <= '9' &&
		(bytes.Equal(head[4:], bzBlock) || bytes.Equal(head[4:], bzEnd)):
		return Bzip2, nil
	}
	return Raw, nil
}

// Decompress detects the format of src (unless f names one) and returns a
// reader of the uncompressed bytes. Close releases decoder resources; it does
// not close src.
func Decompress(src io.Reader, f Format) (io.ReadCloser, Format, error) {
	br, ok := src.(*bufio.Reader)
	if !ok || br.Size() < 64<<10 {
		br = bufio.NewReaderSize(src, 256<<10)
	}
	if f == Auto {
		var err error
		if f, err = Detect(br); err != nil {
			return nil, Auto, err
		}
	}
	var (
		r   io.ReadCloser
		err error
	)
	switch f {
	case Raw:
		r = io.NopCloser(br)
	case Gzip:
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(br); err == nil {
			r = zr
		}
	case XZ:
		var xr *xz.Reader
		if xr, err = xz.NewReader(br); err == nil {
			r = io.NopCloser(xr)
		}
	case Zstd:
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(br); err == nil {
			r = zstdCloser{zr}
		}
	case Bzip2:
		r = io.NopCloser(bzip2.NewReader(br))
	default:
		return nil, f, fmt.Errorf("unsupported compression %v", f)
	}
	if err != nil {
		return nil, f, fmt.Errorf("open %v stream: %w", f, err)
	}
	return formatErrors{r, f}, f, nil
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

// formatErrors names the format in decoder errors ("xz: unexpected EOF"
// alone does not tell the user the image was truncated).
type formatErrors struct {
	io.ReadCloser
	f Format
}

func (r formatErrors) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("decompress %v image: %w", r.f, err)
	}
	return n, err
}
