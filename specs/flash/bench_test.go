package flash

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/flasher"
	"github.com/pogolab/pogo/drivers/storage"
	"github.com/pogolab/pogo/specs/board"
)

// benchLab prepares a bundle and serves a virtual board with explicit
// tftp and http nodes (the baseline fetches from the same http server).
func benchLab(b *testing.B, diskSize string) (*board.Board, *flasher.Client, string) {
	b.Helper()
	root, err := board.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	assets := os.Getenv(board.EnvAssets)
	if assets == "" {
		assets = filepath.Join(root, "build", "board")
		if out, err := exec.Command("bash", filepath.Join(root, "lab", "board", "build.sh"), assets).CombinedOutput(); err != nil {
			b.Fatalf("board assets: %v\n%s", err, out)
		}
	}
	dir := b.TempDir()
	bundle := filepath.Join(dir, "bundle")
	if err := os.MkdirAll(filepath.Join(bundle, "data"), 0o755); err != nil {
		b.Fatal(err)
	}
	for _, f := range []string{"Image", "initramfs.cpio.gz"} {
		p := filepath.Join(bundle, "data", f)
		data, err := os.ReadFile(filepath.Join(assets, f))
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	m, err := os.ReadFile(filepath.Join(root, "bundles", "qemu-arm64", "manifest.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "manifest.yaml"), m, 0o644); err != nil {
		b.Fatal(err)
	}
	cfg := filepath.Join(dir, "exporter.yaml")
	text := fmt.Sprintf(`apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata: {name: flash-bench}
export:
  board:
    type: qemu
    config: {disk: %s, disk_size: %s, memory: 1024}
  tftp:
    type: tftp
    config: {advertise: 127.0.0.1, window: 8}
  http:
    type: http
    config: {listen: "127.0.0.1:0", advertise: "http://10.0.2.2"}
  storage:
    type: flasher
    config: {flasher_bundle: %s, cache_dir: %s}
    children:
      serial: {ref: board}
      power: {ref: board}
      tftp: {ref: tftp}
      http: {ref: http}
`, filepath.Join(dir, "disk.img"), diskSize, bundle, filepath.Join(dir, "cache"))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Setenv(board.EnvConfig, cfg)
	ctx := context.Background()
	bd, err := board.Open(ctx, board.Options{Log: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bd.Close() })
	// Allocate the whole disk file first: writes into a fresh sparse file
	// are slower, which would favour whichever run comes second.
	info, err := bd.Storage().Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bd.Storage().Write(ctx, io.LimitReader(patternReader{}, info.Size), storage.WriteOptions{Size: info.Size}); err != nil {
		b.Fatal(err)
	}
	return bd, flasher.NewClient(bd.Client.Conn(), "storage"), dir
}

func randomFile(b *testing.B, path string, size int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{1})
	if _, err := io.CopyN(f, r, size); err != nil {
		b.Fatal(err)
	}
}

var doneRe = regexp.MustCompile(`pogo-done=(\d+)`)

// BenchmarkFlashThroughput compares the write step of a flash (upload →
// exporter stream → board wget | dd) with the raw `wget -O - URL | dd
// of=/dev/vda bs=1M` from the same http server on the same board.
func BenchmarkFlashThroughput(b *testing.B) {
	const size = 64 << 20
	bd, fl, dir := benchLab(b, "128M")
	img := filepath.Join(dir, "bench.img")
	randomFile(b, img, size)
	ctx := context.Background()
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := bd.HTTP().Put(ctx, "bench.img", f); err != nil {
		b.Fatal(err)
	}
	base, err := bd.HTTP().URL(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var flashRate, rawRate float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Baseline: the raw pipeline typed into the flasher's own shell.
		sh, err := fl.BusyboxShell(ctx, flasher.ShellOptions{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		e := expect.New(sh)
		start := time.Now()
		if err := e.SendLine("wget -q -O - " + base + "bench.img | dd of=/dev/vda bs=1M 2>/dev/null; echo pogo-done=$?"); err != nil {
			b.Fatal(err)
		}
		_, m, err := e.ExpectRegexp(ctx, 5*time.Minute, doneRe)
		raw := time.Since(start)
		sh.Close()
		if err != nil || m[1] != "0" {
			b.Fatalf("baseline wget | dd: %v %v", m, err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		res, err := fl.Flash(ctx, flasher.Image{Reader: f, Size: size, Name: "bench.img"}, flasher.FlashOptions{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		flashRate = float64(size) / res.Write.Seconds() / 1e6
		rawRate = float64(size) / raw.Seconds() / 1e6
	}
	b.StopTimer()
	b.ReportMetric(flashRate, "flash-MB/s")
	b.ReportMetric(rawRate, "wget-dd-MB/s")
	b.ReportMetric(flashRate/rawRate, "x-vs-wget-dd")
}

// BenchmarkBmapFlash flashes a 256 MiB image with 25% of it mapped, with
// its bmap and whole, and reports how much faster the bmap flash is.
func BenchmarkBmapFlash(b *testing.B) {
	const size, chunk = 256 << 20, 1 << 20
	_, fl, dir := benchLab(b, "512M")
	img := filepath.Join(dir, "sparse.img")
	f, err := os.Create(img)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{2})
	buf := make([]byte, chunk)
	for off := int64(0); off < size; off += 4 * chunk {
		_, _ = io.ReadFull(r, buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("bmaptool", "create", img, "-o", img+".bmap").CombinedOutput(); err != nil {
		b.Fatalf("bmaptool create: %v\n%s", err, out)
	}
	bmap, err := os.ReadFile(img + ".bmap")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	flash := func(bm []byte) flasher.Result {
		f, err := os.Open(img)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		res, err := fl.Flash(ctx, flasher.Image{Reader: f, Size: size, Name: "sparse.img"}, flasher.FlashOptions{Bmap: bm}, nil)
		if err != nil {
			b.Fatal(err)
		}
		return res
	}
	var whole, mapped flasher.Result
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		whole = flash(nil)
		mapped = flash(bmap)
	}
	b.StopTimer()
	b.ReportMetric(whole.Write.Seconds()/mapped.Write.Seconds(), "x-write-step")
	b.ReportMetric(whole.Duration.Seconds()/mapped.Duration.Seconds(), "x-whole-flash")
	b.ReportMetric(mapped.Write.Seconds(), "bmap-write-s")
	b.ReportMetric(whole.Write.Seconds(), "whole-write-s")
}
