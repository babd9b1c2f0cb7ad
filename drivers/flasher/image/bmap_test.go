package image_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pogolab/pogo/drivers/flasher/image"
)

// extents of the 8 MiB test image: a partition table, a file system head,
// a short file, and a last block that is not whole (the image size is not
// a multiple of 4 KiB).
const bmapImageSize = 8<<20 + 1000

var bmapExtents = [][2]int64{{0, 4096}, {1 << 20, 300 << 10}, {5<<20 + 8192, 5000}, {8 << 20, 1000}}

// bmapFixture makes a sparse image and its .bmap with bmaptool.
func bmapFixture(t testing.TB) (dir, img string, data, bmapData []byte) {
	t.Helper()
	dir = t.TempDir()
	img = filepath.Join(dir, "disk.img")
	data = sparseImage(t, img, bmapImageSize, bmapExtents, 10)
	bmapData = bmaptool(t, img)
	return dir, img, data, bmapData
}

func TestBmapParseBmaptool(t *testing.T) {
	_, _, data, bm := bmapFixture(t)
	b, err := image.ParseBmap("disk.img.bmap", bm)
	if err != nil {
		t.Fatal(err)
	}
	if b.ImageSize != bmapImageSize || b.BlockSize != 4096 || b.BlocksCount != (bmapImageSize+4095)/4096 || b.ChecksumType != "sha256" {
		t.Fatalf("header: %+v", b)
	}
	if len(b.Ranges) != len(bmapExtents) {
		t.Fatalf("ranges %v, want %d", b.Ranges, len(bmapExtents))
	}
	// Every range's checksum is the sha256 of its bytes, the last one short.
	for _, r := range b.Ranges {
		off, n := b.Offset(r), b.Length(r)
		s := sha256.Sum256(data[off : off+n])
		if hex.EncodeToString(s[:]) != r.Checksum {
			t.Errorf("range %v: checksum does not cover bytes %d+%d", r, off, n)
		}
	}
	if last := b.Ranges[len(b.Ranges)-1]; b.Length(last) != 1000 {
		t.Errorf("last range length %d, want 1000", b.Length(last))
	}
	if b.MappedBytes() != b.MappedBlocksCount*4096-(4096-1000) {
		t.Errorf("MappedBytes %d", b.MappedBytes())
	}
}

// prefilled is a destination file full of 0xAA, so the test can tell
// which bytes were written.
func prefilled(t testing.TB, path string, n int) *os.File {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xaa}, n), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestBmapCopyOnlyMapped(t *testing.T) {
	dir, img, data, bm := bmapFixture(t)
	b, err := image.ParseBmap("disk.img.bmap", bm)
	if err != nil {
		t.Fatal(err)
	}
	xzImg := compress(t, tools[2], data)
	for _, tc := range []struct {
		name string
		open func() io.Reader
	}{
		// A raw file is seekable: unmapped blocks are not even read.
		{"raw file", func() io.Reader {
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		}},
		// Through the decompressing, hashing stream: unmapped bytes are
		// read and hashed, not written.
		{"xz stream", func() io.Reader {
			s, err := image.Open(bytes.NewReader(xzImg), image.Options{SHA256: sum(data)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := prefilled(t, filepath.Join(dir, "dst-"+strings.ReplaceAll(tc.name, " ", "-")), len(data))
			n, err := b.Mapped(tc.open()).CopyTo(dst)
			if err != nil {
				t.Fatal(err)
			}
			if n != b.MappedBytes() {
				t.Errorf("wrote %d bytes, want %d", n, b.MappedBytes())
			}
			got, _ := os.ReadFile(dst.Name())
			mapped := make([]bool, len(data))
			for _, r := range b.Ranges {
				for i := b.Offset(r); i < b.Offset(r)+b.Length(r); i++ {
					mapped[i] = true
				}
			}
			for i := range got {
				if mapped[i] && got[i] != data[i] {
					t.Fatalf("mapped byte %d: %#x, want %#x", i, got[i], data[i])
				}
				if !mapped[i] && got[i] != 0xaa {
					t.Fatalf("unmapped byte %d was written", i)
				}
			}
		})
	}
}

func TestBmapRangeMismatch(t *testing.T) {
	dir, img, data, bm := bmapFixture(t)
	b, err := image.ParseBmap("disk.img.bmap", bm)
	if err != nil {
		t.Fatal(err)
	}
	// Corrupt one byte inside the second range after the bmap was made.
	bad := bytes.Clone(data)
	bad[1<<20+777] ^= 0xff
	_, err = b.Mapped(bytes.NewReader(bad)).CopyTo(prefilled(t, filepath.Join(dir, "dst"), len(data)))
	var re *image.RangeError
	if !errors.As(err, &re) {
		t.Fatalf("got %v, want a range error", err)
	}
	want := b.Ranges[1]
	if re.Range.First != want.First || !strings.Contains(err.Error(), want.String()) || !strings.Contains(err.Error(), want.Checksum) {
		t.Errorf("error %q does not name range %v and its checksum", err, want)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("line %d", want.Line)) {
		t.Errorf("error %q does not give the bmap line %d", err, want.Line)
	}

	// An image shorter or longer than the bmap says.
	for _, tc := range []struct {
		name string
		img  []byte
		want string
	}{
		{"short inside a range", data[:1<<20+100], "image ends inside the range"},
		{"short before a range", data[:3<<20], "before the bmap's range"},
		{"long", append(bytes.Clone(data), 0), "longer than the bmap's ImageSize"},
	} {
		_, err := b.Mapped(io.MultiReader(bytes.NewReader(tc.img))).CopyTo(prefilled(t, filepath.Join(dir, "dst2"), len(data)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
	_ = img
}

// rehash recomputes BmapFileChecksum after a test edits a bmap, so the
// edit is judged on its own and not caught by the file checksum.
func rehash(bm []byte) []byte {
	re := regexp.MustCompile(`<BmapFileChecksum>\s*([0-9a-fA-F]*)\s*</BmapFileChecksum>`)
	m := re.FindSubmatchIndex(bm)
	if m == nil {
		return bm
	}
	out := bytes.Clone(bm)
	copy(out[m[2]:m[3]], bytes.Repeat([]byte("0"), m[3]-m[2]))
	s := sha256.Sum256(out)
	copy(out[m[2]:m[3]], hex.EncodeToString(s[:]))
	return out
}

func TestBmapMalformed(t *testing.T) {
	_, _, _, bm := bmapFixture(t)
	good := string(bm)
	sub := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	firstSum := regexp.MustCompile(`chksum="([0-9a-f]+)"`).FindStringSubmatch(good)[1]
	for _, tc := range []struct {
		name, bmap string
		rehash     bool
		want       string
	}{
		{"edited without new file checksum", sub("<BlockSize> 4096", "<BlockSize> 4097"), false, "BmapFileChecksum: file was modified"},
		{"not xml", "hello", false, "no <bmap> element"},
		{"truncated", good[:len(good)/2], false, "unexpected EOF"},
		{"other root", "<?xml version=\"1.0\"?><manifest/>", false, "want a single <bmap> root"},
		{"version 3", sub(`version="2.0"`, `version="3.0"`), true, "unsupported bmap format version"},
		{"negative size", sub("<ImageSize> 8389608", "<ImageSize> -1"), true, ":26: ImageSize: want a non-negative integer"},
		{"size disagrees", sub("<ImageSize> 8389608", "<ImageSize> 9389608"), true, "BlocksCount: is 2049 but ImageSize 9389608"},
		{"zero block size", sub("<BlockSize> 4096", "<BlockSize> 0"), true, "BlockSize: must be between"},
		{"mapped count", regexp.MustCompile(`<MappedBlocksCount>[^<]*<`).ReplaceAllString(good, "<MappedBlocksCount> 1 <"), true, "MappedBlocksCount: is 1"},
		{"checksum type", sub("<ChecksumType> sha256", "<ChecksumType> md5"), true, "want sha256 or sha1"},
		{"bad range", sub("> 0 </Range>", "> 7-3 </Range>"), true, `Range: want "first-last"`},
		{"range past end", sub("> 2048 </Range>", "> 4000 </Range>"), true, "past the image's last block 2048"},
		{"overlap", sub("> 0 </Range>", "> 300 </Range>"), true, "overlaps or precedes"},
		{"short range checksum", sub(firstSum, firstSum[:10]), true, "Range.chksum: want 64 hex digits"},
		{"unknown element", sub("<BlockMap>", "<Extra>1</Extra><BlockMap>"), true, "Extra: unknown element"},
		{"duplicate element", sub("<BlockMap>", "<BlockSize>4096</BlockSize><BlockMap>"), true, "BlockSize: duplicate element"},
		{"element in range", sub("> 0 </Range>", "><b/>0</Range>"), true, "unexpected element <b>"},
		{"missing block map", regexp.MustCompile(`(?s)<BlockMap>.*</BlockMap>`).ReplaceAllString(good, ""), true, "BlockMap: required element is missing"},
	} {
		data := []byte(tc.bmap)
		if tc.rehash {
			data = rehash(data)
		}
		_, err := image.ParseBmap("x.bmap", data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "x.bmap") {
			t.Errorf("%s: error %q does not name the file", tc.name, err)
		}
	}
}

func FuzzParseBmap(f *testing.F) {
	f.Add([]byte(`<?xml version="1.0" ?>
<bmap version="2.0">
  <ImageSize> 8192 </ImageSize>
  <BlockSize> 4096 </BlockSize>
  <BlocksCount> 2 </BlocksCount>
  <MappedBlocksCount> 1 </MappedBlocksCount>
  <ChecksumType> sha256 </ChecksumType>
  <BmapFileChecksum> 0000000000000000000000000000000000000000000000000000000000000000 </BmapFileChecksum>
  <BlockMap>
    <Range chksum="ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7"> 1 </Range>
  </BlockMap>
</bmap>`))
	f.Add([]byte(`<bmap version="1.2"><ImageSize>1</ImageSize><BlockSize>1</BlockSize><BlocksCount>1</BlocksCount><MappedBlocksCount>1</MappedBlocksCount><BlockMap><Range sha1="x">0-0</Range></BlockMap></bmap>`))
	f.Add([]byte("<bmap"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := image.ParseBmap("f.bmap", rehash(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.bmap") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		var prev int64 = -1
		for _, r := range b.Ranges {
			if r.First <= prev || r.Last < r.First || r.Last >= b.BlocksCount {
				t.Fatalf("accepted bad range %v (prev %d, blocks %d)", r, prev, b.BlocksCount)
			}
			prev = r.Last
		}
		if b.MappedBytes() > b.ImageSize {
			t.Fatalf("maps %d bytes of a %d-byte image", b.MappedBytes(), b.ImageSize)
		}
		// A parsed map drives a copy without panicking.
		if b.ImageSize < 1<<16 {
			_, _ = b.Mapped(bytes.NewReader(make([]byte, b.ImageSize))).CopyTo(discardAt{})
		}
	})
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
