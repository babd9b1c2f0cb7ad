package flasher_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/files"
	"github.com/pogolab/pogo/drivers/flasher"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/storage"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/exportertest"

	_ "github.com/pogolab/pogo/drivers/http"
	_ "github.com/pogolab/pogo/drivers/qemu"
	_ "github.com/pogolab/pogo/drivers/tftp"
)

// repoRoot is the directory holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// assets builds (or finds up to date) the virtual board's assets.
func assets(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("POGO_BOARD_ASSETS"); d != "" {
		return d
	}
	root := repoRoot(t)
	out := filepath.Join(root, "build", "board")
	cmd := exec.Command("bash", filepath.Join(root, "lab", "board", "build.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build board assets: %v\n%s", err, b)
	}
	return out
}

// makeBundle assembles the virtual board's flasher bundle in a directory.
func makeBundle(t testing.TB, assetDir string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bundle")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := os.ReadFile(filepath.Join(repoRoot(t), "bundles", "qemu-arm64", "manifest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.yaml"), m, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"Image", "initramfs.cpio.gz"} {
		linkOrCopy(t, filepath.Join(assetDir, f), filepath.Join(dir, "data", f))
	}
	return dir
}

func linkOrCopy(t testing.TB, from, to string) {
	t.Helper()
	if err := os.Link(from, to); err == nil {
		return
	}
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func flashYAML(bundle, cache string, flasherExtra ...string) string {
	return fmt.Sprintf(`apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata: {name: flash-test}
export:
  board:
    type: qemu
    config:
      disk_size: 128M
      memory: 1024
  storage:
    type: flasher
    config:
      flasher_bundle: %s
      cache_dir: %s
%s
    children:
      serial: {ref: board}
      power: {ref: board}
`, bundle, cache, strings.Join(flasherExtra, "\n"))
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func xz(t testing.TB, in string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(in)+".xz")
	cmd := exec.Command("sh", "-c", "xz -T2 -1 -c \"$1\" > \"$2\"", "xz", in, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("xz: %v\n%s", err, b)
	}
	return out
}

// TestFlashAndBoot flashes the demo OS, xz-compressed, through the wire,
// checks the disk holds it byte for byte and that the board boots it.
func TestFlashAndBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	a := assets(t)
	c := exportertest.Start(t, flashYAML(makeBundle(t, a), t.TempDir()))
	ctx := ctxT(t, 4*time.Minute)
	img, err := os.ReadFile(filepath.Join(a, "demo-os.img"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(xz(t, filepath.Join(a, "demo-os.img")))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	fl := flasher.NewClient(c.Conn(), "storage")
	var phases []string
	var conLog bytes.Buffer
	res, err := fl.Flash(ctx, flasher.Image{Reader: f, Size: fi.Size(), Name: "demo-os.img.xz"},
		flasher.FlashOptions{SHA256: sum(img), ConsoleDebug: true}, func(e flasher.Event) {
			conLog.Write(e.Console)
			if e.Message != "" {
				phases = append(phases, e.Phase+": "+e.Message)
			}
		})
	if err != nil {
		t.Fatalf("flash: %v\nsteps:\n%s\nconsole:\n%q", err, strings.Join(phases, "\n"), tail(conLog.String(), 3000))
	}
	t.Logf("flashed %d bytes in %s (write %s, %.1f MB/s)", res.Written, res.Duration, res.Write, float64(res.Written)/res.Write.Seconds()/1e6)
	if res.SHA256 != sum(img) || res.ImageSize != int64(len(img)) || res.Target != "/dev/vda" {
		t.Fatalf("result = %+v", res)
	}
	// The write step ends with its exact figures, after the last tick.
	wantWrote := fmt.Sprintf("write: wrote %.1f MB to /dev/vda in ", float64(len(img))/1e6)
	if !slices.ContainsFunc(phases, func(p string) bool { return strings.HasPrefix(p, wantWrote) }) {
		t.Errorf("no %q line in the steps:\n%s", wantWrote, strings.Join(phases, "\n"))
	}
	pw := power.NewClient(c.Conn(), "board.power")
	if st, err := pw.State(ctx); err != nil || st != power.Off {
		t.Fatalf("after the flash the board is %v (%v), want off", st, err)
	}
	var disk bytes.Buffer
	if _, err := storage.NewClient(c.Conn(), "board.storage").Read(ctx, &disk, 0, int64(len(img))); err != nil {
		t.Fatal(err)
	}
	if got := sum(disk.Bytes()); got != sum(img) {
		t.Fatalf("disk sha256 %s, image %s", got, sum(img))
	}
	version, _ := os.ReadFile(filepath.Join(a, "demo-os.version"))
	con, err := c.Console("board.console").Attach(ctx, consoleWriter())
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	e := expect.New(con)
	if err := pw.On(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pw.Off(context.Background()) })
	want := "pogo demo OS version " + strings.TrimSpace(string(version))
	if _, err := e.Expect(ctx, 90*time.Second, want); err != nil {
		t.Fatalf("the flashed OS did not boot: %v", err)
	}
}

// TestChecksumMismatch: a wrong expected sha256 fails naming both hashes
// and leaves the board off.
func TestChecksumMismatch(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	a := assets(t)
	c := exportertest.Start(t, flashYAML(makeBundle(t, a), t.TempDir(), "      retries: 2"))
	ctx := ctxT(t, 4*time.Minute)
	img, err := os.ReadFile(filepath.Join(a, "demo-os.img"))
	if err != nil {
		t.Fatal(err)
	}
	wrong := strings.Repeat("ab", 32)
	fl := flasher.NewClient(c.Conn(), "storage")
	_, err = fl.Flash(ctx, flasher.Image{Reader: bytes.NewReader(img), Size: int64(len(img))}, flasher.FlashOptions{SHA256: wrong}, nil)
	if err == nil {
		t.Fatal("flash with a wrong checksum succeeded")
	}
	if !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), sum(img)) {
		t.Fatalf("error %q does not name both hashes", err)
	}
	if strings.Contains(err.Error(), "attempts") {
		t.Fatalf("a checksum mismatch was retried: %v", err)
	}
	if st, err := power.NewClient(c.Conn(), "board.power").State(ctx); err != nil || st != power.Off {
		t.Fatalf("board is %v (%v) after a failed flash, want off", st, err)
	}
}

// TestSilentBoard: a board that never shows U-Boot fails with a clear
// error at the bootloader step, retried, and leaves no QEMU behind.
func TestSilentBoard(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	a := assets(t)
	// Not U-Boot: an empty "firmware" the CPU spins in silently.
	bios := filepath.Join(t.TempDir(), "silent.bin")
	if err := os.WriteFile(bios, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(flashYAML(makeBundle(t, a), t.TempDir(), "      uboot_timeout: 3s\n      retries: 1\n      retry_backoff: 100ms"),
		"      memory: 1024\n", "      memory: 1024\n      bios: "+bios+"\n", 1)
	c := exportertest.Start(t, cfg)
	ctx := ctxT(t, 2*time.Minute)
	fl := flasher.NewClient(c.Conn(), "storage")
	_, err := fl.Flash(ctx, flasher.Image{Reader: strings.NewReader("x")}, flasher.FlashOptions{}, nil)
	if err == nil || !strings.Contains(err.Error(), "no U-Boot prompt after 3s") || !strings.Contains(err.Error(), "2 attempts") {
		t.Fatalf("err = %v; want no U-Boot prompt after 3s, after 2 attempts", err)
	}
	if st, err := power.NewClient(c.Conn(), "board.power").State(ctx); err != nil || st != power.Off {
		t.Fatalf("board is %v (%v), want off", st, err)
	}
	if pids := qemuWith(bios); len(pids) > 0 {
		t.Fatalf("QEMU left running: %v", pids)
	}
}

func qemuWith(s string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) && bytes.Contains(b, []byte("qemu-system")) {
			out = append(out, e.Name())
		}
	}
	return out
}

func consoleWriter() console.AttachOptions { return console.AttachOptions{Write: true} }

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestShells opens the bootloader and busybox shells through the wire and
// checks closing them powers the board off.
func TestShells(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	a := assets(t)
	c := exportertest.Start(t, flashYAML(makeBundle(t, a), t.TempDir()))
	ctx := ctxT(t, 3*time.Minute)
	fl := flasher.NewClient(c.Conn(), "storage")
	pw := power.NewClient(c.Conn(), "board.power")
	for _, tc := range []struct {
		name               string
		open               func(context.Context, flasher.ShellOptions, func(flasher.Event)) (flasher.Shell, error)
		cmd, reply, prompt string
	}{
		{"bootloader", fl.BootloaderShell, "version", "U-Boot 20", "=> "},
		{"busybox", fl.BusyboxShell, "uname -m", "aarch64", "# "},
	} {
		sh, err := tc.open(ctx, flasher.ShellOptions{}, nil)
		if err != nil {
			t.Fatalf("%s shell: %v", tc.name, err)
		}
		if got := sh.Prompt(); got != tc.prompt {
			t.Errorf("%s shell prompt %q, want %q", tc.name, got, tc.prompt)
		}
		e := expect.New(sh)
		if err := e.SendLine(tc.cmd); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Expect(ctx, 20*time.Second, tc.reply); err != nil {
			t.Fatalf("%s shell: %v", tc.name, err)
		}
		// A second operation waits its turn.
		if _, err := fl.Flash(ctx, flasher.Image{URL: "http://127.0.0.1:1/x"}, flasher.FlashOptions{}, nil); !errors.Is(err, errdefs.ErrInUse) {
			t.Fatalf("flash during a shell: %v, want in use", err)
		}
		if err := sh.Close(); err != nil {
			t.Fatal(err)
		}
		if st, err := pw.State(ctx); err != nil || st != power.Off {
			t.Fatalf("%s shell closed: board %v (%v), want off", tc.name, st, err)
		}
	}
}

// TestURLSources flashes an http URL fetched by the exporter and the same
// URL fetched by the board itself (--direct, busybox xzcat).
func TestURLSources(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	a := assets(t)
	cfg := strings.Replace(flashYAML(makeBundle(t, a), t.TempDir()), "      power: {ref: board}\n",
		"      power: {ref: board}\n      http: {ref: http}\n", 1) + `  http:
    type: http
    config: {listen: "127.0.0.1:0", advertise: "http://10.0.2.2"}
`
	c := exportertest.Start(t, cfg)
	ctx := ctxT(t, 4*time.Minute)
	img, err := os.ReadFile(filepath.Join(a, "demo-os.img"))
	if err != nil {
		t.Fatal(err)
	}
	xzf, err := os.Open(xz(t, filepath.Join(a, "demo-os.img")))
	if err != nil {
		t.Fatal(err)
	}
	defer xzf.Close()
	hc := files.NewClient(c.Conn(), "http")
	if _, err := hc.Put(ctx, "demo-os.img.xz", xzf); err != nil {
		t.Fatal(err)
	}
	base, err := hc.URL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	boardURL := base + "demo-os.img.xz"
	// The exporter reaches the same server on loopback.
	hostURL := strings.Replace(boardURL, "10.0.2.2", "127.0.0.1", 1)
	fl := flasher.NewClient(c.Conn(), "storage")
	for _, tc := range []struct {
		name string
		url  string
		opts flasher.FlashOptions
	}{
		{"exporter fetches", hostURL, flasher.FlashOptions{SHA256: sum(img)}},
		{"board fetches", boardURL, flasher.FlashOptions{SHA256: sum(img), Direct: true}},
	} {
		res, err := fl.Flash(ctx, flasher.Image{URL: tc.url}, tc.opts, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if res.SHA256 != sum(img) || res.ImageSize != int64(len(img)) {
			t.Fatalf("%s: result %+v", tc.name, res)
		}
		var disk bytes.Buffer
		if _, err := storage.NewClient(c.Conn(), "board.storage").Read(ctx, &disk, 0, int64(len(img))); err != nil {
			t.Fatal(err)
		}
		if sum(disk.Bytes()) != sum(img) {
			t.Fatalf("%s: the disk does not hold the image", tc.name)
		}
		// Wipe the image's first MiB so the next case proves itself.
		if _, err := storage.NewClient(c.Conn(), "board.storage").Write(ctx, bytes.NewReader(make([]byte, 1<<20)), storage.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBundleErrorAtStart: a broken bundle manifest stops the exporter
// before anything runs, naming the exporter config's line and the
// manifest's.
func TestBundleErrorAtStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "manifest.yaml"), []byte(`apiVersion: jumpstarter.dev/v1alpha1
kind: FlashBundleManifest
metadata: {name: broken}
spec:
  bootcmd: booti
  kernel:
    file: data/missing
    address: "0x40400000"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	text := flashYAML(dir, t.TempDir())
	f, err := config.Parse("exporter.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	_, err = exporter.New(context.Background(), f, &drivers.Host{StateDir: t.TempDir()}, exporter.Options{})
	if err == nil {
		t.Fatal("an exporter with a broken bundle started")
	}
	t.Log(err)
	for _, want := range []string{"exporter.yaml:", "flasher_bundle", "manifest.yaml:7", "data/missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
