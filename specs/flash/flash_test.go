package flash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/specs/board"
)

// lab is what the suite prepares once: jmp, the flasher bundle and the
// images.
var lab struct {
	dir, jmp, bundle, assets string
	// img is the demo OS image, imgXZ the same compressed, sum its sha256.
	img, imgXZ, sum, version string
}

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	lab.assets, err = board.Assets(ctx)
	Expect(err).NotTo(HaveOccurred())
	root, err := board.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	lab.dir, err = os.MkdirTemp("", "pogo-flash-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, lab.dir)

	lab.jmp = filepath.Join(lab.dir, "jmp")
	build := exec.CommandContext(ctx, "go", "build", "-o", lab.jmp, "./cmd/jmp")
	build.Dir = root
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "go build ./cmd/jmp: %s", out)

	lab.bundle = makeBundle(root, lab.assets, filepath.Join(lab.dir, "bundle"))
	lab.img = filepath.Join(lab.assets, "demo-os.img")
	data, err := os.ReadFile(lab.img)
	Expect(err).NotTo(HaveOccurred())
	lab.sum = sha(data)
	lab.imgXZ = filepath.Join(lab.dir, "demo-os.img.xz")
	run(ctx, "sh", "-c", `xz -T2 -1 -c "$1" > "$2"`, "xz", lab.img, lab.imgXZ)
	v, err := os.ReadFile(filepath.Join(lab.assets, "demo-os.version"))
	Expect(err).NotTo(HaveOccurred())
	lab.version = strings.TrimSpace(string(v))
}, NodeTimeout(16*time.Minute))

func run(ctx context.Context, name string, args ...string) {
	GinkgoHelper()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "%s %v: %s", name, args, out)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// makeBundle lays out the virtual board's flasher bundle: the repo's
// manifest and the kernel and initramfs from the board assets.
func makeBundle(root, assets, dir string) string {
	GinkgoHelper()
	Expect(os.MkdirAll(filepath.Join(dir, "data"), 0o755)).To(Succeed())
	m, err := os.ReadFile(filepath.Join(root, "bundles", "qemu-arm64", "manifest.yaml"))
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(dir, "manifest.yaml"), m, 0o644)).To(Succeed())
	for _, f := range []string{"Image", "initramfs.cpio.gz"} {
		from, to := filepath.Join(assets, f), filepath.Join(dir, "data", f)
		if os.Link(from, to) != nil {
			b, err := os.ReadFile(from)
			Expect(err).NotTo(HaveOccurred())
			Expect(os.WriteFile(to, b, 0o644)).To(Succeed())
		}
	}
	return dir
}

// exporterConfig writes a virtual board with a flasher node named storage
// whose disk is <name>.img in the suite's directory, so it outlives the
// jmp shell that flashed it.
func exporterConfig(name string, boardExtra, flasherExtra []string) (cfg, disk string) {
	GinkgoHelper()
	disk = filepath.Join(lab.dir, name+".img")
	text := fmt.Sprintf(`apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata: {name: %s}
export:
  board:
    type: qemu
    config:
      disk: %s
      disk_size: 128M
      memory: 1024
%s
  storage:
    type: jumpstarter_driver_flashers.driver.BaseFlasher
    config:
      flasher_bundle: %s
      cache_dir: %s
%s
    children:
      serial: {ref: board}
      power: {ref: board}
`, name, disk, indent(boardExtra), lab.bundle, filepath.Join(lab.dir, "cache"), indent(flasherExtra))
	cfg = filepath.Join(lab.dir, name+".yaml")
	Expect(os.WriteFile(cfg, []byte(text), 0o644)).To(Succeed())
	return cfg, disk
}

func indent(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("      " + l + "\n")
	}
	return b.String()
}

// jmpShell runs `jmp shell --exporter-config cfg -- j ARGS…` and returns
// its combined output and exit code.
func jmpShell(ctx context.Context, cfg string, args ...string) (string, int) {
	GinkgoHelper()
	return jmpShellIn(ctx, cfg, "", args...)
}

// jmpShellIn is jmpShell with stdin piped from in.
func jmpShellIn(ctx context.Context, cfg, in string, args ...string) (string, int) {
	GinkgoHelper()
	cmd := exec.CommandContext(ctx, lab.jmp, append([]string{"shell", "--exporter-config", cfg, "--", "j"}, args...)...)
	cmd.Stdin = strings.NewReader(in)
	cmd.Env = withoutJMP(os.Environ())
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, GinkgoWriter)
	cmd.Stderr = cmd.Stdout
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	Expect(err).NotTo(HaveOccurred())
	return out.String(), 0
}

// withoutJMP drops an enclosing jmp shell's variables: the subprocess
// serves its own exporter.
func withoutJMP(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "JMP_") {
			out = append(out, e)
		}
	}
	return out
}

// openBoard serves cfg in-process (after the jmp shell ended) to look at
// the disk and boot the board.
func openBoard(ctx context.Context, cfg string) *board.Board {
	GinkgoHelper()
	os.Setenv(board.EnvConfig, cfg)
	DeferCleanup(os.Unsetenv, board.EnvConfig)
	b, err := board.Open(ctx, board.Options{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _ = b.Close() })
	return b
}

func readDisk(ctx context.Context, b *board.Board, n int64) []byte {
	GinkgoHelper()
	var buf bytes.Buffer
	_, err := b.Storage().Read(ctx, &buf, 0, n)
	Expect(err).NotTo(HaveOccurred())
	return buf.Bytes()
}

// bootsDemo takes the board to its OS (board.InState) and checks the
// flashed OS's banner on the way.
func bootsDemo(ctx context.Context, b *board.Board) {
	GinkgoHelper()
	DeferCleanup(func(ctx SpecContext) { _ = b.Power().Off(ctx) }, NodeTimeout(30*time.Second))
	walked, err := b.InState(ctx, "os")
	Expect(err).NotTo(HaveOccurred(), "the flashed OS did not boot")
	Expect(walked).To(HaveLen(2))
	a, err := b.Console().Attach(context.WithoutCancel(ctx), console.AttachOptions{Replay: true})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(a.Close)
	e := expect.New(a)
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			AddReportEntry("console", e.Transcript())
		}
	})
	_, err = e.Expect(ctx, 10*time.Second, "pogo demo OS version "+lab.version)
	Expect(err).NotTo(HaveOccurred(), "the flashed OS's banner")
}

func noQEMU(disk string) {
	GinkgoHelper()
	Eventually(func() []string { return board.ProcessesUsing("file=" + disk) }).
		WithTimeout(10 * time.Second).Should(BeEmpty())
}

var _ = Describe("j storage flash", Label("qemu", "flash"), func() {
	It("writes the xz-compressed demo OS with its checksum, and the board boots it", func(ctx SpecContext) {
		cfg, disk := exporterConfig("plain", nil, nil)
		out, code := jmpShell(ctx, cfg, "storage", "flash", lab.imgXZ, "--os-image-checksum", lab.sum)
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("flashed demo-os.img.xz to /dev/vda"))
		Expect(out).To(ContainSubstring(lab.sum))
		noQEMU(disk)

		b := openBoard(ctx, cfg)
		st, err := b.Power().State(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(st).To(Equal(power.Off))
		data, err := os.ReadFile(lab.img)
		Expect(err).NotTo(HaveOccurred())
		Expect(sha(readDisk(ctx, b, int64(len(data))))).To(Equal(lab.sum), "the disk holds the image")
		bootsDemo(ctx, b)
	}, SpecTimeout(4*time.Minute))

	It("refuses an image whose checksum differs, naming both, with the board off", func(ctx SpecContext) {
		cfg, disk := exporterConfig("badsum", nil, nil)
		wrong := strings.Repeat("0123456789abcdef", 4)
		sumFile := filepath.Join(lab.dir, "wrong.sha256")
		Expect(os.WriteFile(sumFile, []byte(wrong+"  demo-os.img\n"), 0o644)).To(Succeed())
		out, code := jmpShell(ctx, cfg, "storage", "flash", lab.imgXZ, "--os-image-checksum-file", sumFile)
		Expect(code).NotTo(Equal(0), out)
		Expect(out).To(ContainSubstring("expected " + wrong))
		Expect(out).To(ContainSubstring("got " + lab.sum))
		Expect(out).To(ContainSubstring("poweroff: powering the board off"))
		noQEMU(disk)
	}, SpecTimeout(3*time.Minute))

	It("writes only the mapped ranges of a bmap'd image, which boots", func(ctx SpecContext) {
		cfg, disk := exporterConfig("bmap", nil, nil)
		// The demo OS with its unpartitioned tail (48-64 MiB, zeros) as a
		// hole: what the bmap leaves out is truly free, so the pattern there
		// cannot break the boot. Its block map and the image compressed
		// beside it (IMAGE.bmap is found by name).
		img, bm := sparseFixture(ctx, filepath.Join(lab.dir, "bmap-images"))
		prefill(ctx, cfg)

		out, code := jmpShell(ctx, cfg, "storage", "flash", img+".xz", "--os-image-checksum", lab.sum)
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("using block map " + img + ".bmap"))
		noQEMU(disk)

		b := openBoard(ctx, cfg)
		onlyMapped(ctx, b, bm)
		bootsDemo(ctx, b)
	}, SpecTimeout(4*time.Minute))

	It("pulls an oci:// image on the exporter and writes it", func(ctx SpecContext) {
		host := startRegistry(ctx)
		xzData, err := os.ReadFile(lab.imgXZ)
		Expect(err).NotTo(HaveOccurred())
		pushImage(ctx, host, "pogo/demo-os", "1", "demo-os.img.xz", xzData)
		cfg, disk := exporterConfig("oci", nil, nil)
		out, code := jmpShell(ctx, cfg, "storage", "flash", "oci://"+host+"/pogo/demo-os:1", "--os-image-checksum", lab.sum)
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring(lab.sum))
		noQEMU(disk)

		b := openBoard(ctx, cfg)
		data, err := os.ReadFile(lab.img)
		Expect(err).NotTo(HaveOccurred())
		Expect(sha(readDisk(ctx, b, int64(len(data))))).To(Equal(lab.sum))
	}, SpecTimeout(3*time.Minute))

	It("fails clearly when the board never shows a U-Boot prompt, leaving nothing behind", func(ctx SpecContext) {
		// Firmware that is not U-Boot: zeros the CPU runs silently.
		bios := filepath.Join(lab.dir, "silent.bin")
		Expect(os.WriteFile(bios, make([]byte, 64<<10), 0o644)).To(Succeed())
		cfg, disk := exporterConfig("silent", []string{"bios: " + bios}, []string{"uboot_timeout: 5s"})
		out, code := jmpShell(ctx, cfg, "storage", "flash", lab.imgXZ)
		Expect(code).NotTo(Equal(0), out)
		Expect(out).To(ContainSubstring("bootloader: no U-Boot prompt after 5s"))
		noQEMU(disk)
		Expect(board.ProcessesUsing(bios)).To(BeEmpty())
	}, SpecTimeout(2*time.Minute))

	It("runs piped commands in the bootloader and busybox shells and exits with the last status", func(ctx SpecContext) {
		cfg, disk := exporterConfig("scripted", nil, nil)
		out, code := jmpShellIn(ctx, cfg, "echo uboot-says-${board}\nversion\n", "storage", "bootloader-shell")
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("uboot-says-qemu-arm\r"), "U-Boot expanded its own variable")
		Expect(out).To(MatchRegexp(`=> version\r?\nU-Boot 20`))
		noQEMU(disk)

		script := "grep -c ^processor /proc/cpuinfo\nfor d in vda; do\n  test -b /dev/$d && echo has-$d\ndone\nls /nonexistent\n"
		out, code = jmpShellIn(ctx, cfg, script, "storage", "busybox-shell")
		Expect(code).To(Equal(1), "ls' status comes back as the exit code\n%s", out)
		Expect(out).To(MatchRegexp(`# grep -c \^processor /proc/cpuinfo\r?\n1\r?\n`))
		Expect(out).To(ContainSubstring("has-vda"))
		Expect(out).To(ContainSubstring("/nonexistent: No such file or directory"))
		Expect(out).NotTo(ContainSubstring("pogo-rc-"))
		noQEMU(disk)
	}, SpecTimeout(4*time.Minute))
})

// patternReader repeats a marker that no image holds.
type patternReader struct{}

func (patternReader) Read(p []byte) (int, error) {
	const pat = "POGO-UNWRITTEN!\n"
	for i := range p {
		p[i] = pat[i%len(pat)]
	}
	return len(p), nil
}

// holey copies the first keep bytes of src to dst and leaves the rest of
// its size a hole.
func holey(src, dst string, keep int64) {
	GinkgoHelper()
	in, err := os.Open(src)
	Expect(err).NotTo(HaveOccurred())
	defer in.Close()
	fi, err := in.Stat()
	Expect(err).NotTo(HaveOccurred())
	out, err := os.Create(dst)
	Expect(err).NotTo(HaveOccurred())
	defer out.Close()
	_, err = io.CopyN(out, in, keep)
	Expect(err).NotTo(HaveOccurred())
	Expect(out.Truncate(fi.Size())).To(Succeed())
}
