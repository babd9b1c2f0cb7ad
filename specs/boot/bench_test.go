package boot

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/storage"
	"github.com/pogolab/pogo/drivers/tftp"
	"github.com/pogolab/pogo/exporter/exportertest"
	"github.com/pogolab/pogo/specs/board"
)

// samples is how many boots of each path an iteration times; the
// figures are medians over all iterations.
const samples = 5

// longSamples is samples for the steps that boot Linux.
const longSamples = 3

const ubootBin = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"

func median(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2].Seconds()
}

func benchAssets(b *testing.B) string {
	b.Helper()
	dir, err := board.Assets(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return dir
}

// benchBoard is the configured board with its console under expect.
func benchBoard(b *testing.B) (*board.Board, *expect.Expecter) {
	b.Helper()
	ctx := context.Background()
	bd, err := board.Open(ctx, board.Options{Log: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bd.Close() })
	a, err := bd.Console().Attach(ctx, console.AttachOptions{Write: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	return bd, expect.New(a)
}

// pogoBoot powers the board on through the exporter and runs step on its
// console; the time is from the power-on call to step's end.
func pogoBoot(ctx context.Context, bd *board.Board, e *expect.Expecter, step func(context.Context, *expect.Expecter) error) (time.Duration, error) {
	if err := bd.Power().Off(ctx); err != nil {
		return 0, err
	}
	e.Discard()
	t0 := time.Now()
	if err := bd.Power().On(ctx); err != nil {
		return 0, err
	}
	err := step(ctx, e)
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("%w\nconsole:\n%s", err, e.Transcript())
	}
	return d, bd.Power().Off(ctx)
}

// directStdio starts QEMU by hand the plain way, the UART on stdio
// (-nographic): the first baseline, kept for comparison with the
// driver's command line.
func directStdio(b *testing.B, extra ...string) (*expect.Expecter, func()) {
	b.Helper()
	disk := filepath.Join(b.TempDir(), "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(disk, 64<<20); err != nil {
		b.Fatal(err)
	}
	args := append([]string{"-M", "virt", "-cpu", "cortex-a57", "-m", "1024", "-nographic",
		"-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0",
		"-drive", "if=none,file=" + disk + ",format=raw,id=d0", "-device", "virtio-blk-device,drive=d0"}, extra...)
	cmd := exec.Command("qemu-system-aarch64", args...)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	e := expect.New(struct {
		io.Reader
		io.Writer
	}{out, in})
	return e, func() { cmd.Process.Kill(); cmd.Wait() }
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPowerOnToUBootPrompt: power on through the exporter until
// U-Boot's prompt, against QEMU started by hand with the driver's command
// line and expect on its pty (pogo/direct), and against the plain by-hand
// start with the UART on stdio (pogo/direct-stdio); median of 5 a run.
func BenchmarkPowerOnToUBootPrompt(b *testing.B) {
	ctx := context.Background()
	bd, e := benchBoard(b)
	lab := newDirectLab(b)
	var pogo, direct, stdio []time.Duration
	for i := 0; i < b.N; i++ {
		for range samples {
			d, err := pogoBoot(ctx, bd, e, untilBootloader)
			must(b, err)
			pogo = append(pogo, d)

			d, err = lab.ToBootloader(ctx)
			must(b, err)
			direct = append(direct, d)

			t0 := time.Now()
			de, stop := directStdio(b, "-bios", ubootBin)
			err = untilBootloader(ctx, de)
			stdio = append(stdio, time.Since(t0))
			stop()
			must(b, err)
		}
	}
	b.ReportMetric(median(pogo), "s/pogo-uboot-prompt")
	b.ReportMetric(median(direct), "s/direct-uboot-prompt")
	b.ReportMetric(median(stdio), "s/direct-stdio-uboot-prompt")
	b.ReportMetric(median(pogo)/median(direct), "pogo/direct")
	b.ReportMetric(median(pogo)/median(stdio), "pogo/direct-stdio")
}

// BenchmarkPowerOnToBusybox: power on, then as the flasher boots its
// bundle (U-Boot interrupted, DHCP, TFTP of the bundle's kernel and
// initramfs, its boot command) until the flasher's shell answers;
// through the exporter (its console, its tftp node) against QEMU started
// by hand with the driver's command line and the same tftp driver
// started outside an exporter (median of 3 a run).
func BenchmarkPowerOnToBusybox(b *testing.B) {
	ctx := context.Background()
	bd, e := benchBoard(b)
	lab := newDirectLab(b)
	m, dir := flasherBundle(b)
	tftpURL, err := bd.TFTP().URL(ctx)
	must(b, err)
	fb := flasherRecipe(b, m, dir, tftpURL, func(name string, r io.Reader) error {
		_, err := bd.TFTP().Put(ctx, name, r)
		return err
	})
	dfb := lab.directTFTP(b)
	var pogo, direct []time.Duration
	for i := 0; i < b.N; i++ {
		for range longSamples {
			d, err := pogoBoot(ctx, bd, e, func(ctx context.Context, e *expect.Expecter) error { return untilFlasher(ctx, e, fb) })
			must(b, err)
			pogo = append(pogo, d)

			d, err = lab.ToFlasher(ctx, dfb)
			must(b, err)
			direct = append(direct, d)
		}
	}
	b.ReportMetric(median(pogo), "s/pogo-flasher-shell")
	b.ReportMetric(median(direct), "s/direct-flasher-shell")
	b.ReportMetric(median(pogo)/median(direct), "pogo/direct")
}

// BenchmarkPowerOnToOS: the demo OS on the board's disk, power on without
// a key until its shell answers (U-Boot's own bootcmd); through the
// exporter against QEMU started by hand with the driver's command line
// (median of 3 a run).
func BenchmarkPowerOnToOS(b *testing.B) {
	ctx := context.Background()
	assets := benchAssets(b)
	img, err := os.ReadFile(filepath.Join(assets, "demo-os.img"))
	must(b, err)
	v, err := os.ReadFile(filepath.Join(assets, "demo-os.version"))
	must(b, err)
	version := strings.TrimSpace(string(v))
	bd, e := benchBoard(b)
	must(b, bd.Power().Off(ctx))
	_, err = bd.Storage().Write(ctx, bytes.NewReader(img), storage.WriteOptions{Size: int64(len(img)), Truncate: true})
	must(b, err)
	lab := newDirectLab(b)
	must(b, lab.InstallOS(img))
	syscall.Sync() // the exporter's write as well: no writeback during a timed boot
	step := func(ctx context.Context, e *expect.Expecter) error { return untilOS(ctx, e, version) }
	var pogo, direct []time.Duration
	for i := 0; i < b.N; i++ {
		for range longSamples {
			d, err := pogoBoot(ctx, bd, e, step)
			must(b, err)
			pogo = append(pogo, d)

			d, err = lab.ToOS(ctx, version)
			must(b, err)
			direct = append(direct, d)
		}
	}
	b.ReportMetric(median(pogo), "s/pogo-os-shell")
	b.ReportMetric(median(direct), "s/direct-os-shell")
	b.ReportMetric(median(pogo)/median(direct), "pogo/direct")
}

// BenchmarkTFTPUBoot: U-Boot fetches a 32 MiB file at tftpblocksize 1468
// from our tftp driver and from Debian's tftpd-hpa serving the same file,
// alternating (one of them owns port 69 at a time).
func BenchmarkTFTPUBoot(b *testing.B) {
	if _, err := exec.LookPath("in.tftpd"); err != nil {
		b.Skip("in.tftpd not installed (Debian package tftpd-hpa)")
	}
	ctx := context.Background()
	const size = 32 << 20
	root := b.TempDir()
	must(b, os.Chmod(root, 0o755))
	dir := filepath.Join(root, "bench")
	must(b, os.Mkdir(dir, 0o755))
	data := make([]byte, size)
	rand.Read(data)
	must(b, os.WriteFile(filepath.Join(dir, "file32"), data, 0o644))

	c := exportertest.Start(b, fmt.Sprintf(`apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata: {name: bench}
export:
  board:
    type: qemu
    config: {disk: %s, disk_size: 64M, memory: 256M}
`, filepath.Join(b.TempDir(), "disk.img")))
	a, err := c.Console("board").Attach(ctx, console.AttachOptions{Write: true})
	must(b, err)
	defer a.Close()
	e := expect.New(a)
	must(b, c.Power("board").On(ctx))
	must(b, board.StopAutoboot(ctx, e, time.Minute))
	_, err = board.UBoot(ctx, e, time.Minute, "setenv autoload no; dhcp; setenv serverip 127.0.0.1; setenv tftpblocksize 1468")
	must(b, err)
	fetch := func() time.Duration {
		b.Helper()
		t0 := time.Now()
		out, err := board.UBoot(ctx, e, 5*time.Minute, "tftpboot "+kernelAddr+" bench/file32")
		d := time.Since(t0)
		must(b, err)
		if !strings.Contains(out, fmt.Sprintf("Bytes transferred = %d", size)) {
			b.Fatalf("tftpboot did not fetch the whole file:\n%s", out)
		}
		// Untimed: the board's CRC of what it loaded (U-Boot's "==> " would
		// pass for its "=> " prompt, so the digest is matched first).
		must(b, e.SendLine(fmt.Sprintf("crc32 %s %#x", kernelAddr, size)))
		_, m, err := e.ExpectRegexp(ctx, time.Minute, regexp.MustCompile(`==> ([0-9a-f]{8})`))
		must(b, err)
		if want := fmt.Sprintf("%08x", crc32.ChecksumIEEE(data)); m[1] != want {
			b.Fatalf("the board loaded data with CRC %s, want %s", m[1], want)
		}
		_, err = e.Expect(ctx, time.Minute, "=> ")
		must(b, err)
		return d
	}

	// Lock-step (window 1, every board's default) and the virtual board's
	// window of 8 (exporter.yaml), each against tftpd-hpa.
	var lockstep, windowed, theirs []time.Duration
	ours := func(window int) time.Duration {
		d, err := tftp.Start(tftp.Config{Root: dir, Subdir: "bench", Window: window}, nil)
		must(b, err)
		defer d.Close()
		if !d.Serving() {
			b.Skip("another pogo process serves port 69; the baseline needs the port")
		}
		return fetch()
	}
	for i := 0; i < b.N; i++ {
		for range 3 {
			lockstep = append(lockstep, ours(1))
			windowed = append(windowed, ours(8))

			cmd := exec.Command("in.tftpd", "-L", "-s", root, "-a", "0.0.0.0:69")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			must(b, cmd.Start())
			time.Sleep(200 * time.Millisecond) // let it bind
			theirs = append(theirs, fetch())
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	mbps := func(d []time.Duration) float64 { return size / 1e6 / median(d) }
	b.ReportMetric(mbps(lockstep), "MB/s-pogo-lockstep")
	b.ReportMetric(mbps(windowed), "MB/s-pogo-window8")
	b.ReportMetric(mbps(theirs), "MB/s-tftpd-hpa")
	b.ReportMetric(mbps(lockstep)/mbps(theirs), "lockstep/tftpd-hpa")
	b.ReportMetric(mbps(windowed)/mbps(theirs), "window8/tftpd-hpa")
}
