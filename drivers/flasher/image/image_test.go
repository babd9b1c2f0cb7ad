package image_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pogolab/pogo/drivers/flasher/image"
)

// semiCompressible makes n bytes that compress about 2:1: each 4 KiB
// block is half random and half a repeated line of text, like a disk image
// with code and zeroed slack.
func semiCompressible(n int, seed uint64) []byte {
	rng := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	out := make([]byte, n)
	text := []byte("pogo image block: the quick brown fox jumps over the lazy dog 0123456789\n")
	for off := 0; off < n; off += 4096 {
		end := min(off+4096, n)
		mid := min(off+2048, end)
		for i := off; i < mid; i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8 && i+j < mid; j++ {
				out[i+j] = byte(v >> (8 * j))
			}
		}
		for i := mid; i < end; i++ {
			out[i] = text[(i-mid)%len(text)]
		}
	}
	return out
}

// tool is a compressor binary and its arguments, writing to stdout.
type tool struct {
	format image.Format
	bin    string
	args   []string
}

var tools = []tool{
	{image.Raw, "", nil},
	{image.Gzip, "gzip", []string{"-c", "-6"}},
	{image.XZ, "xz", []string{"-c", "-T1", "-3"}},
	{image.Zstd, "zstd", []string{"-c", "-q", "-3"}},
	{image.Bzip2, "bzip2", []string{"-c", "-6"}},
}

// compress runs the real tool on data (Debian packages gzip, xz-utils,
// zstd, bzip2; `make deps` installs them).
func compress(tb testing.TB, tl tool, data []byte) []byte {
	tb.Helper()
	if tl.bin == "" {
		return data
	}
	if _, err := exec.LookPath(tl.bin); err != nil {
		tb.Fatalf("%s not installed (run make deps): %v", tl.bin, err)
	}
	cmd := exec.Command(tl.bin, tl.args...)
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s: %v: %s", tl.bin, err, stderr.String())
	}
	return out.Bytes()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestStreamFormats(t *testing.T) {
	data := semiCompressible(3<<20+123, 1)
	want := sum(data)
	for _, tl := range tools {
		t.Run(tl.format.String(), func(t *testing.T) {
			comp := compress(t, tl, data)
			// Two concatenated streams are one image (pigz, pzstd and
			// `cat a.xz b.xz` make such files).
			twice := append(bytes.Clone(comp), compress(t, tl, data)...)
			for _, tc := range []struct {
				name string
				src  []byte
				img  []byte
			}{{"single", comp, data}, {"concatenated", twice, append(bytes.Clone(data), data...)}} {
				if tl.format == image.Raw && tc.name == "concatenated" {
					continue
				}
				var calls []image.Progress
				s, err := image.Open(bytes.NewReader(tc.src), image.Options{
					SHA256:        strings.ToUpper(sum(tc.img)),
					SourceSize:    int64(len(tc.src)),
					ProgressEvery: 1 << 20,
					Progress:      func(p image.Progress) { calls = append(calls, p) },
				})
				if err != nil {
					t.Fatal(err)
				}
				if s.Format() != tl.format {
					t.Errorf("%s: detected %v, want %v", tc.name, s.Format(), tl.format)
				}
				got, err := io.ReadAll(s)
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				s.Close()
				if !bytes.Equal(got, tc.img) {
					t.Fatalf("%s: %d bytes out, want %d (content differs)", tc.name, len(got), len(tc.img))
				}
				if tc.name == "single" && s.Sum() != want {
					t.Errorf("Sum %s, want %s", s.Sum(), want)
				}
				if len(calls) < 3 {
					t.Fatalf("%s: %d progress calls, want one per MiB and a last", tc.name, len(calls))
				}
				last := calls[len(calls)-1]
				if !last.Done || last.Image != int64(len(tc.img)) || last.Source != int64(len(tc.src)) || last.Percent() != 100 {
					t.Errorf("%s: last progress %+v", tc.name, last)
				}
			}
		})
	}
}

func TestStreamChecksumMismatch(t *testing.T) {
	data := semiCompressible(1<<20, 2)
	wrong := sum([]byte("another image"))
	for _, tl := range tools {
		t.Run(tl.format.String(), func(t *testing.T) {
			s, err := image.Open(bytes.NewReader(compress(t, tl, data)), image.Options{SHA256: wrong})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = io.Copy(io.Discard, s)
			var ce *image.ChecksumError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a checksum error", err)
			}
			for _, h := range []string{wrong, sum(data)} {
				if !strings.Contains(err.Error(), h) {
					t.Errorf("error %q does not show %s", err, h)
				}
			}
			// The error sticks: a consumer reading again does not see EOF.
			if _, err2 := s.Read(make([]byte, 10)); err2 != err {
				t.Errorf("second read: %v", err2)
			}
		})
	}
}

func TestStreamTruncated(t *testing.T) {
	data := semiCompressible(1<<20, 3)
	for _, tl := range tools[1:] {
		t.Run(tl.format.String(), func(t *testing.T) {
			comp := compress(t, tl, data)
			s, err := image.Open(bytes.NewReader(comp[:len(comp)/2]), image.Options{})
			if err == nil {
				_, err = io.Copy(io.Discard, s)
				s.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tl.format.String()) {
				t.Fatalf("truncated %v: got %v, want an error naming the format", tl.format, err)
			}
		})
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name string
		head []byte
		want image.Format
	}{
		{"empty", nil, image.Raw},
		{"mbr", append(make([]byte, 510), 0x55, 0xaa), image.Raw},
		{"BZh text is not bzip2", []byte("BZh9 not a bzip2 stream"), image.Raw},
		{"gzip magic", []byte{0x1f, 0x8b, 8, 0}, image.Gzip},
		{"xz short", []byte{0xfd, '7', 'z', 'X', 'Z'}, image.Raw},
	} {
		s, err := image.Open(bytes.NewReader(tc.head), image.Options{})
		if tc.want == image.Gzip {
			// A bare magic is detected, then refused by the decoder.
			if err == nil || !strings.Contains(err.Error(), "gzip") {
				t.Errorf("%s: got %v, want a gzip error", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s.Format() != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, s.Format(), tc.want)
		}
	}
	if _, err := image.Open(bytes.NewReader(nil), image.Options{SHA256: "abc"}); err == nil || !strings.Contains(err.Error(), "64 hex") {
		t.Errorf("short expected hash accepted: %v", err)
	}
}

// sparseImage writes a sparse file of size bytes with data at the given
// (offset, length) extents and returns its bytes as they read back.
func sparseImage(t testing.TB, path string, size int64, extents [][2]int64, seed uint64) []byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for i, e := range extents {
		if _, err := f.WriteAt(semiCompressible(int(e[1]), seed+uint64(i)), e[0]); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// bmaptool runs Debian's `bmaptool create` on img.
func bmaptool(t testing.TB, img string) []byte {
	t.Helper()
	if _, err := exec.LookPath("bmaptool"); err != nil {
		t.Fatalf("bmaptool not installed (run make deps; Debian bmap-tools): %v", err)
	}
	out, err := exec.Command("bmaptool", "create", img).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("bmaptool create: %v: %s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	return out
}
