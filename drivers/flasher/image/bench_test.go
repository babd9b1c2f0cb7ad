package image_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/flasher/image"
)

const benchImageSize = 64 << 20

var (
	benchOnce   sync.Once
	benchImage  []byte
	benchByKind = map[image.Format][]byte{}
)

// benchFixtures compresses one 64 MiB semi-compressible image with each
// real tool, once per test binary.
func benchFixtures(b *testing.B) {
	benchOnce.Do(func() {
		benchImage = semiCompressible(benchImageSize, 42)
		for _, tl := range tools {
			if tl.format == image.XZ {
				tl.args = []string{"-c", "-T0", "-3"}
			}
			benchByKind[tl.format] = compress(b, tl, benchImage)
		}
	})
}

// BenchmarkDecompress measures the exporter's pipeline (detect, decompress,
// sha256) per format against the Debian command-line tool decompressing
// the same bytes to /dev/null in the same run: x_cli > 1 means pogo is
// faster than `xz -dc`, `gzip -dc`, ….
func BenchmarkDecompress(b *testing.B) {
	benchFixtures(b)
	for _, tl := range tools {
		comp := benchByKind[tl.format]
		b.Run(tl.format.String(), func(b *testing.B) {
			b.SetBytes(benchImageSize)
			var goTime, cliTime time.Duration
			for b.Loop() {
				start := time.Now()
				s, err := image.Open(bytes.NewReader(comp), image.Options{SHA256: sum(benchImage)})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, s); err != nil {
					b.Fatal(err)
				}
				s.Close()
				goTime += time.Since(start)
				if tl.bin == "" {
					continue
				}
				b.StopTimer()
				cmd := exec.Command(tl.bin, "-dc")
				cmd.Stdin = bytes.NewReader(comp)
				start = time.Now()
				if err := cmd.Run(); err != nil {
					b.Fatal(err)
				}
				cliTime += time.Since(start)
				b.StartTimer()
			}
			b.ReportMetric(float64(len(comp))/float64(benchImageSize), "ratio")
			if cliTime > 0 {
				b.ReportMetric(float64(cliTime)/float64(goTime), "x_cli")
			}
		})
	}
}

// BenchmarkBmapVsWhole streams a 256 MiB image with 25% of it mapped into
// a file, once whole (io.Copy, the dd baseline) and once through the bmap;
// x_whole is how many times faster the bmap copy is. The "stream" variant
// reads every byte (as after decompression) and writes only mapped ones.
func BenchmarkBmapVsWhole(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	img := filepath.Join(dir, "disk.img")
	var extents [][2]int64
	for off := int64(0); off < size; off += 4 << 20 {
		extents = append(extents, [2]int64{off, 1 << 20})
	}
	sparseImage(b, img, size, extents, 7)
	bm, err := image.ParseBmap("disk.img.bmap", bmaptool(b, img))
	if err != nil {
		b.Fatal(err)
	}
	if got := float64(bm.MappedBytes()) / size; got < 0.24 || got > 0.26 {
		b.Fatalf("mapped %.2f of the image, want 0.25", got)
	}
	for _, mode := range []string{"seek", "stream"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(size)
			dst, err := os.Create(filepath.Join(dir, "dst-"+mode))
			if err != nil {
				b.Fatal(err)
			}
			defer dst.Close()
			var whole, mapped time.Duration
			for b.Loop() {
				src, err := os.Open(img)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if _, err := dst.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(dst, src); err != nil {
					b.Fatal(err)
				}
				whole += time.Since(start)
				if _, err := src.Seek(0, io.SeekStart); err != nil {
					b.Fatal(err)
				}
				var r io.Reader = src
				if mode == "stream" {
					r = struct{ io.Reader }{src} // hide Seek
				}
				start = time.Now()
				if _, err := bm.Mapped(r).CopyTo(dst); err != nil {
					b.Fatal(err)
				}
				mapped += time.Since(start)
				src.Close()
			}
			b.ReportMetric(float64(whole)/float64(mapped), "x_whole")
			b.ReportMetric(float64(size)/mapped.Seconds()*float64(b.N)/1e6, "bmap_MB/s")
			b.ReportMetric(float64(size)/whole.Seconds()*float64(b.N)/1e6, "whole_MB/s")
		})
	}
}
