package image

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/pogolab/pogo/api/errdefs"
)

// Bmap is a bmaptool block map: which blocks of an image hold data, with a
// checksum per range of blocks.
type Bmap struct {
	Version           string
	ImageSize         int64
	BlockSize         int64
	BlocksCount       int64
	MappedBlocksCount int64
	// ChecksumType is "sha256" or "sha1".
	ChecksumType string
	// FileChecksum is the BmapFileChecksum (already verified by Parse).
	FileChecksum string
	Ranges       []Range
}

// Range is blocks First..Last (inclusive) of the image.
type Range struct {
	First, Last int64
	// Checksum is the hex digest of the range's bytes (may be empty: old
	// bmaps and `bmaptool create --no-checksum` have none).
	Checksum string
	// Line is where the Range element stands in the .bmap file.
	Line int
}

func (r Range) String() string {
	if r.First == r.Last {
		return strconv.FormatInt(r.First, 10)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// Offset is the byte offset of r in the image.
func (b *Bmap) Offset(r Range) int64 { return r.First * b.BlockSize }

// Length is the byte length of r; the last block may be short when the
// image size is not a multiple of the block size.
func (b *Bmap) Length(r Range) int64 {
	end := (r.Last + 1) * b.BlockSize
	if end > b.ImageSize {
		end = b.ImageSize
	}
	return end - b.Offset(r)
}

// MappedBytes is the sum of every range's length.
func (b *Bmap) MappedBytes() int64 {
	var n int64
	for _, r := range b.Ranges {
		n += b.Length(r)
	}
	return n
}

func (b *Bmap) newHash() hash.Hash {
	if b.ChecksumType == "sha1" {
		return sha1.New()
	}
	return sha256.New()
}

// BmapError is a problem in a .bmap file at a line.
type BmapError = errdefs.FileError

// LoadBmap reads and checks the .bmap file at path.
func LoadBmap(path string) (*Bmap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bmap: %w", err)
	}
	return ParseBmap(path, data)
}

// limits keep a hostile .bmap from asking for absurd work.
const (
	maxBmapSize   = 64 << 20
	maxBlockSize  = 1 << 30
	maxImageBytes = 1 << 50
)

// ParseBmap checks data as the .bmap named name: the format version, the
// sizes agreeing with each other, ranges ascending without overlap and
// inside the image, checksum lengths, and BmapFileChecksum (bmaptool's
// rule: the digest of the whole file with the checksum's own digits
// replaced by ASCII zeros).
func ParseBmap(name string, data []byte) (*Bmap, error) {
	if len(data) > maxBmapSize {
		return nil, &BmapError{File: name, Msg: fmt.Sprintf("file is %d bytes; a bmap is at most %d", len(data), maxBmapSize)}
	}
	p := bmapParser{name: name, data: data, dec: xml.NewDecoder(bytes.NewReader(data))}
	b, err := p.parse()
	if err != nil {
		return nil, err
	}
	return b, nil
}

type bmapParser struct {
	name string
	data []byte
	dec  *xml.Decoder
	// sumStart/sumEnd bound the BmapFileChecksum text in data.
	sumStart, sumEnd int64
	sumLine          int
}

func (p *bmapParser) errf(line int, field, format string, args ...any) error {
	return &BmapError{File: p.name, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (p *bmapParser) line() int {
	l, _ := p.dec.InputPos()
	return l
}

// text reads the character data of the element just opened, up to its end.
func (p *bmapParser) text(field string) (string, int64, int64, error) {
	var sb strings.Builder
	start, end := int64(-1), int64(-1)
	for {
		before := p.dec.InputOffset()
		tok, err := p.dec.Token()
		if err != nil {
			return "", 0, 0, p.errf(p.line(), field, "%s", xmlMsg(err))
		}
		switch t := tok.(type) {
		case xml.CharData:
			if start < 0 {
				start = before
			}
			end = p.dec.InputOffset()
			sb.Write(t)
		case xml.Comment, xml.ProcInst:
		case xml.StartElement:
			return "", 0, 0, p.errf(p.line(), field, "unexpected element <%s> inside", t.Name.Local)
		case xml.EndElement:
			return strings.TrimSpace(sb.String()), start, end, nil
		}
	}
}

func xmlMsg(err error) string {
	if errors.Is(err, io.EOF) {
		return "unexpected end of file"
	}
	return strings.TrimPrefix(err.Error(), "XML syntax error on ")
}

func (p *bmapParser) integer(field string, line int, s string, out *int64) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return p.errf(line, field, "want a non-negative integer, got %q", s)
	}
	*out = v
	return nil
}

func (p *bmapParser) parse() (*Bmap, error) {
	b := &Bmap{}
	seen := map[string]int{}
	rootSeen, inRoot, inMap := false, false, false
	for {
		tok, err := p.dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, p.errf(p.line(), "", "%s", xmlMsg(err))
		}
		line := p.line()
		switch t := tok.(type) {
		case xml.StartElement:
			name := t.Name.Local
			switch {
			case !inRoot:
				if name != "bmap" || rootSeen {
					return nil, p.errf(line, name, "want a single <bmap> root element")
				}
				rootSeen, inRoot = true, true
				for _, a := range t.Attr {
					if a.Name.Local == "version" {
						b.Version = a.Value
					}
				}
				if err := p.version(line, b); err != nil {
					return nil, err
				}
			case inMap:
				if name != "Range" {
					return nil, p.errf(line, "BlockMap."+name, "unexpected element (want Range)")
				}
				r, err := p.rangeElem(t, line, b)
				if err != nil {
					return nil, err
				}
				b.Ranges = append(b.Ranges, r)
			default:
				if prev, dup := seen[name]; dup {
					return nil, p.errf(line, name, "duplicate element (first at line %d)", prev)
				}
				seen[name] = line
				if name == "BlockMap" {
					inMap = true
					continue
				}
				v, start, end, err := p.text(name)
				if err != nil {
					return nil, err
				}
				switch name {
				case "ImageSize":
					err = p.integer(name, line, v, &b.ImageSize)
				case "BlockSize":
					err = p.integer(name, line, v, &b.BlockSize)
				case "BlocksCount":
					err = p.integer(name, line, v, &b.BlocksCount)
				case "MappedBlocksCount":
					err = p.integer(name, line, v, &b.MappedBlocksCount)
				case "ChecksumType":
					b.ChecksumType = strings.ToLower(v)
					if b.ChecksumType != "sha256" && b.ChecksumType != "sha1" {
						err = p.errf(line, name, "want sha256 or sha1, got %q", v)
					}
				case "BmapFileChecksum", "BmapFileSHA1":
					b.FileChecksum = strings.ToLower(v)
					p.sumStart, p.sumEnd, p.sumLine = start, end, line
					if name == "BmapFileSHA1" && b.ChecksumType == "" {
						b.ChecksumType = "sha1"
					}
				default:
					// bmaptool files carry only the elements above; anything
					// else is a sign of a different format.
					err = p.errf(line, name, "unknown element")
				}
				if err != nil {
					return nil, err
				}
			}
		case xml.EndElement:
			switch {
			case inMap:
				inMap = false
			case inRoot:
				inRoot = false
			}
		case xml.CharData:
			if inRoot && !inMap && len(bytes.TrimSpace(t)) > 0 {
				return nil, p.errf(line, "bmap", "unexpected text %q", truncate(string(bytes.TrimSpace(t)), 40))
			}
		}
	}
	if !rootSeen {
		return nil, p.errf(0, "bmap", "no <bmap> element: not a bmaptool file")
	}
	for _, name := range []string{"ImageSize", "BlockSize", "BlocksCount", "MappedBlocksCount", "BlockMap"} {
		if _, ok := seen[name]; !ok {
			return nil, p.errf(0, name, "required element is missing")
		}
	}
	if b.ChecksumType == "" {
		if !strings.HasPrefix(b.Version, "1.") {
			return nil, p.errf(0, "ChecksumType", "required element is missing")
		}
		b.ChecksumType = "sha1"
	}
	if err := p.verifyFile(b); err != nil {
		return nil, err
	}
	return b, p.check(b, seen)
}

func (p *bmapParser) version(line int, b *Bmap) error {
	major, _, _ := strings.Cut(b.Version, ".")
	if major != "1" && major != "2" {
		return p.errf(line, "bmap.version", "unsupported bmap format version %q (want 1.x or 2.x)", b.Version)
	}
	return nil
}

func (p *bmapParser) rangeElem(t xml.StartElement, line int, b *Bmap) (Range, error) {
	r := Range{Line: line}
	for _, a := range t.Attr {
		if a.Name.Local == "chksum" || a.Name.Local == "sha1" {
			r.Checksum = strings.ToLower(strings.TrimSpace(a.Value))
		}
	}
	v, _, _, err := p.text("Range")
	if err != nil {
		return r, err
	}
	first, last, isRange := strings.Cut(v, "-")
	if !isRange {
		last = first
	}
	f, err1 := strconv.ParseInt(strings.TrimSpace(first), 10, 64)
	l, err2 := strconv.ParseInt(strings.TrimSpace(last), 10, 64)
	if err1 != nil || err2 != nil || f < 0 || l < f {
		return r, p.errf(line, "Range", "want \"first-last\" or a single block number with first <= last, got %q", v)
	}
	r.First, r.Last = f, l
	return r, nil
}

func (p *bmapParser) check(b *Bmap, seen map[string]int) error {
	if b.BlockSize <= 0 || b.BlockSize > maxBlockSize {
		return p.errf(seen["BlockSize"], "BlockSize", "must be between 1 and %d, got %d", maxBlockSize, b.BlockSize)
	}
	if b.ImageSize > maxImageBytes {
		return p.errf(seen["ImageSize"], "ImageSize", "%d bytes is beyond any disk", b.ImageSize)
	}
	if want := (b.ImageSize + b.BlockSize - 1) / b.BlockSize; b.BlocksCount != want {
		return p.errf(seen["BlocksCount"], "BlocksCount", "is %d but ImageSize %d / BlockSize %d gives %d blocks", b.BlocksCount, b.ImageSize, b.BlockSize, want)
	}
	sumLen := sha256.Size * 2
	if b.ChecksumType == "sha1" {
		sumLen = sha1.Size * 2
	}
	var mapped int64
	for i, r := range b.Ranges {
		if r.Last >= b.BlocksCount {
			return p.errf(r.Line, "Range", "%v is past the image's last block %d", r, b.BlocksCount-1)
		}
		if i > 0 && r.First <= b.Ranges[i-1].Last {
			return p.errf(r.Line, "Range", "%v overlaps or precedes range %v (ranges must ascend)", r, b.Ranges[i-1])
		}
		if r.Checksum != "" && !isHex(r.Checksum, sumLen) {
			return p.errf(r.Line, "Range.chksum", "want %d hex digits of %s, got %q", sumLen, b.ChecksumType, truncate(r.Checksum, 80))
		}
		mapped += r.Last - r.First + 1
	}
	if mapped != b.MappedBlocksCount {
		return p.errf(seen["MappedBlocksCount"], "MappedBlocksCount", "is %d but the ranges map %d blocks", b.MappedBlocksCount, mapped)
	}
	return nil
}

// verifyFile checks BmapFileChecksum first, so an edited file is reported
// as edited rather than by whatever the edit broke.
func (p *bmapParser) verifyFile(b *Bmap) error {
	sumLen := sha256.Size * 2
	if b.ChecksumType == "sha1" {
		sumLen = sha1.Size * 2
	}
	if b.FileChecksum == "" {
		if strings.HasPrefix(b.Version, "1.") {
			return nil // 1.0–1.2 had no file checksum
		}
		return p.errf(0, "BmapFileChecksum", "required element is missing")
	}
	if !isHex(b.FileChecksum, sumLen) {
		return p.errf(p.sumLine, "BmapFileChecksum", "want %d hex digits of %s, got %q", sumLen, b.ChecksumType, truncate(b.FileChecksum, 80))
	}
	raw := p.data[p.sumStart:p.sumEnd]
	i := bytes.Index(bytes.ToLower(raw), []byte(b.FileChecksum))
	if i < 0 {
		return p.errf(p.sumLine, "BmapFileChecksum", "checksum text is escaped; cannot verify it")
	}
	zeroed := bytes.Clone(p.data)
	copy(zeroed[p.sumStart+int64(i):], bytes.Repeat([]byte("0"), len(b.FileChecksum)))
	h := b.newHash()
	h.Write(zeroed)
	if got := hex.EncodeToString(h.Sum(nil)); got != b.FileChecksum {
		return p.errf(p.sumLine, "BmapFileChecksum", "file was modified: it says %s but the file hashes to %s", b.FileChecksum, got)
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
