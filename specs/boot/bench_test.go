package boot

import (
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
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/tftp"
	"github.com/pogolab/pogo/exporter/exportertest"
	"github.com/pogolab/pogo/specs/board"
)

// samples is how many boots each median is taken over.
const samples = 5

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

// directQEMU starts QEMU by hand with the UART on stdio: the baseline
// without pogo (no exporter, gRPC, pty or console hub in between).
func directQEMU(b *testing.B, extra ...string) (*expect.Expecter, func()) {
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
// U-Boot's prompt answers, against QEMU started by hand (median of 5).
func BenchmarkPowerOnToUBootPrompt(b *testing.B) {
	ctx := context.Background()
	bd, e := benchBoard(b)
	var pogo, direct []time.Duration
	for i := 0; i < b.N; i++ {
		for range samples {
			must(b, bd.Power().Off(ctx))
			t0 := time.Now()
			must(b, bd.Power().On(ctx))
			must(b, board.StopAutoboot(ctx, e, time.Minute))
			pogo = append(pogo, time.Since(t0))
			must(b, bd.Power().Off(ctx))

			t0 = time.Now()
			de, stop := directQEMU(b, "-bios", ubootBin)
			err := board.StopAutoboot(ctx, de, time.Minute)
			direct = append(direct, time.Since(t0))
			stop()
			must(b, err)
		}
	}
	b.ReportMetric(median(pogo), "s/pogo-uboot-prompt")
	b.ReportMetric(median(direct), "s/direct-uboot-prompt")
	b.ReportMetric(median(pogo)/median(direct), "pogo/direct")
}

// BenchmarkPowerOnToBusybox: power on, TFTP-boot the flasher from U-Boot,
// until its shell prompt; against QEMU booting the same kernel and
// initramfs directly (-kernel, no U-Boot or TFTP) (median of 5).
func BenchmarkPowerOnToBusybox(b *testing.B) {
	ctx := context.Background()
	assets := benchAssets(b)
	bd, e := benchBoard(b)
	for _, name := range []string{"Image", "initramfs.cpio.gz"} {
		f, err := os.Open(filepath.Join(assets, name))
		must(b, err)
		_, err = bd.TFTP().Put(ctx, name, f)
		f.Close()
		must(b, err)
	}
	server, prefix, err := bd.TFTPLocation(ctx)
	must(b, err)
	uboot := func(cmd string) {
		b.Helper()
		_, err := board.UBoot(ctx, e, time.Minute, cmd)
		must(b, err)
	}
	var pogo, direct []time.Duration
	for i := 0; i < b.N; i++ {
		for range samples {
			must(b, bd.Power().Off(ctx))
			t0 := time.Now()
			must(b, bd.Power().On(ctx))
			must(b, board.StopAutoboot(ctx, e, time.Minute))
			uboot("setenv autoload no; dhcp; setenv serverip " + server + "; setenv tftpblocksize 1468")
			uboot("tftpboot " + kernelAddr + " " + prefix + "Image")
			uboot("tftpboot " + initrdAddr + " " + prefix + "initramfs.cpio.gz")
			uboot("setenv bootargs console=ttyAMA0 rdinit=/init")
			must(b, e.SendLine("booti "+kernelAddr+" "+initrdAddr+":${filesize} ${fdtcontroladdr}"))
			_, err := e.Expect(ctx, 2*time.Minute, "pogo-flasher ready")
			must(b, err)
			_, err = e.Expect(ctx, 10*time.Second, "# ")
			must(b, err)
			pogo = append(pogo, time.Since(t0))
			must(b, bd.Power().Off(ctx))

			t0 = time.Now()
			de, stop := directQEMU(b, "-kernel", filepath.Join(assets, "Image"), "-initrd", filepath.Join(assets, "initramfs.cpio.gz"), "-append", "console=ttyAMA0 rdinit=/init")
			_, err = de.Expect(ctx, 2*time.Minute, "pogo-flasher ready")
			if err == nil {
				_, err = de.Expect(ctx, 10*time.Second, "# ")
			}
			direct = append(direct, time.Since(t0))
			stop()
			must(b, err)
		}
	}
	b.ReportMetric(median(pogo), "s/pogo-busybox-prompt")
	b.ReportMetric(median(direct), "s/direct-kernel-busybox-prompt")
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
