package boot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/storage"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/specs/board"
)

// Load addresses on the virt machine (RAM from 0x40000000).
const (
	kernelAddr = "0x40400000"
	initrdAddr = "0x48000000"
	scratch    = "0x50000000"
)

var assets string

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	assets, err = board.Assets(ctx)
	Expect(err).NotTo(HaveOccurred())
}, NodeTimeout(16*time.Minute))

// session is one spec's board with its console under expect.
type session struct {
	*board.Board
	a io.Closer
	e *expect.Expecter
}

// open gets the board, powered off. The console is attached (as writer,
// so no output is missed) by attach, once the board is in the state the
// spec needs.
func open(ctx SpecContext) *session {
	b, err := board.Get(ctx)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(b.Close)
	Expect(b.Power().Off(ctx)).To(Succeed())
	s := &session{Board: b}
	// On failure the console transcript tells what the board did.
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() && s.e != nil {
			AddReportEntry("console", string(s.e.Transcript()))
		}
	})
	// Power off whatever happens (the exporter does as well on Close).
	DeferCleanup(func(ctx SpecContext) { _ = b.Power().Off(ctx) }, NodeTimeout(30*time.Second))
	return s
}

// attach takes the console as writer (replaying the scrollback when
// asked) until detach.
func (s *session) attach(ctx context.Context, replay bool) {
	GinkgoHelper()
	a, err := s.Console().Attach(context.WithoutCancel(ctx), console.AttachOptions{Write: true, Replay: replay})
	Expect(err).NotTo(HaveOccurred())
	s.a = a
	s.e = expect.New(a)
	DeferCleanup(a.Close)
}

// detach frees the console for a state transition.
func (s *session) detach() {
	GinkgoHelper()
	Expect(s.a.Close()).To(Succeed())
}

// inState takes the board to target through its states and checks the
// chain it walked ended there.
func (s *session) inState(ctx context.Context, target string) []string {
	GinkgoHelper()
	walked, err := s.InState(ctx, target)
	Expect(err).NotTo(HaveOccurred())
	Expect(walked).NotTo(BeEmpty())
	Expect(walked[len(walked)-1]).To(Equal(target))
	return walked
}

func (s *session) expect(ctx context.Context, timeout time.Duration, literal string) string {
	GinkgoHelper()
	out, err := s.e.Expect(ctx, timeout, literal)
	Expect(err).NotTo(HaveOccurred())
	return out
}

func (s *session) uboot(ctx context.Context, timeout time.Duration, cmd string) string {
	GinkgoHelper()
	out, err := board.UBoot(ctx, s.e, timeout, cmd)
	Expect(err).NotTo(HaveOccurred())
	return out
}

// powerOnToPrompt takes the board to its U-Boot prompt and attaches.
func (s *session) powerOnToPrompt(ctx context.Context) {
	GinkgoHelper()
	s.inState(ctx, "bootloader")
	s.attach(ctx, false)
}

func (s *session) diskPath(ctx context.Context) string {
	GinkgoHelper()
	in, err := s.Storage().Info(ctx)
	Expect(err).NotTo(HaveOccurred())
	return in.Path
}

func readFile(name string) []byte {
	GinkgoHelper()
	b, err := os.ReadFile(filepath.Join(assets, name))
	Expect(err).NotTo(HaveOccurred())
	return b
}

var transferred = regexp.MustCompile(`Bytes transferred = (\d+)`)

var _ = Describe("The virtual board", Label("qemu", "boot"), func() {
	It("boots a kernel and initramfs over TFTP from the U-Boot prompt", func(ctx SpecContext) {
		s := open(ctx)
		Expect(s.Paths.TFTP).NotTo(BeEmpty(), "the exporter needs a tftp driver")
		disk := s.diskPath(ctx)
		for _, name := range []string{"Image", "initramfs.cpio.gz"} {
			f, err := os.Open(filepath.Join(assets, name))
			Expect(err).NotTo(HaveOccurred())
			_, err = s.TFTP().Put(ctx, name, f)
			f.Close()
			Expect(err).NotTo(HaveOccurred())
		}
		server, prefix, err := s.TFTPLocation(ctx)
		Expect(err).NotTo(HaveOccurred())

		s.powerOnToPrompt(ctx)
		Expect(s.uboot(ctx, 30*time.Second, "setenv autoload no; dhcp")).To(ContainSubstring("DHCP client bound to address 10.0.2.15"))
		s.uboot(ctx, 5*time.Second, "setenv serverip "+server+"; setenv tftpblocksize 1468")
		for _, f := range []struct{ addr, name string }{{kernelAddr, "Image"}, {initrdAddr, "initramfs.cpio.gz"}} {
			out := s.uboot(ctx, 90*time.Second, fmt.Sprintf("tftpboot %s %s%s", f.addr, prefix, f.name))
			m := transferred.FindStringSubmatch(out)
			Expect(m).NotTo(BeNil(), "tftpboot %s: %s", f.name, out)
			Expect(m[1]).To(Equal(fmt.Sprint(len(readFile(f.name)))), "bytes of %s", f.name)
		}
		s.uboot(ctx, 5*time.Second, "setenv bootargs console=ttyAMA0 rdinit=/init")
		Expect(s.e.SendLine("booti " + kernelAddr + " " + initrdAddr + ":${filesize} ${fdtcontroladdr}")).To(Succeed())
		s.expect(ctx, 120*time.Second, "pogo-flasher ready ip=10.0.2.15")
		s.expect(ctx, 10*time.Second, "# ")
		Expect(s.e.SendLine(`echo "r=$((6*7))-$(uname -m)"`)).To(Succeed())
		s.expect(ctx, 10*time.Second, "r=42-aarch64")

		Expect(s.Power().Off(ctx)).To(Succeed())
		Expect(s.Power().State(ctx)).To(Equal(power.Off))
		if s.Local {
			Expect(board.ProcessesUsing("file="+disk)).To(BeEmpty(), "qemu processes of this board")
		}
	}, SpecTimeout(5*time.Minute))

	It("boots the demo OS written to its disk without help", func(ctx SpecContext) {
		s := open(ctx)
		img := readFile("demo-os.img")
		version := strings.TrimSpace(string(readFile("demo-os.version")))
		n, err := s.Storage().Write(ctx, bytes.NewReader(img), storage.WriteOptions{Size: int64(len(img)), Truncate: true})
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(int64(len(img))))

		Expect(s.inState(ctx, "os")).To(Equal([]string{"off", "os"}), "U-Boot booted the OS by itself")
		// The banner is in the scrollback; the shell answers.
		s.attach(ctx, true)
		s.expect(ctx, 5*time.Second, "pogo demo OS version "+version)
		Expect(s.e.SendLine("cat /etc/pogo/version")).To(Succeed())
		s.expect(ctx, 10*time.Second, "cat /etc/pogo/version")
		s.expect(ctx, 10*time.Second, version)
	}, SpecTimeout(3*time.Minute))

	It("comes back to U-Boot after a power cut mid-boot, its disk intact", func(ctx SpecContext) {
		s := open(ctx)
		img := readFile("demo-os.img")
		_, err := s.Storage().Write(ctx, bytes.NewReader(img), storage.WriteOptions{Truncate: true})
		Expect(err).NotTo(HaveOccurred())

		// U-Boot writes a marker block past the partition, then boots.
		const block = 0x19000 // 50 MiB, in the demo image's free space
		s.powerOnToPrompt(ctx)
		s.uboot(ctx, 10*time.Second, "virtio scan")
		Expect(s.uboot(ctx, 10*time.Second, fmt.Sprintf("mw.b %s 0x5a 0x200; virtio write %s 0x%x 1", scratch, scratch, block))).
			To(ContainSubstring("1 blocks written: OK"))
		Expect(s.e.SendLine("boot")).To(Succeed())
		s.expect(ctx, 60*time.Second, "Starting kernel")

		// Pull the plug while the kernel boots, then power on again.
		Expect(s.Power().Off(ctx)).To(Succeed())
		st, err := s.State().Get(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.State).To(Equal("off"), "a power-off through the exporter is seen by the board's states")
		s.detach()
		s.inState(ctx, "bootloader")
		Expect(s.Power().Off(ctx)).To(Succeed())

		var disk bytes.Buffer
		_, err = s.Storage().Read(ctx, &disk, 0, int64(len(img)))
		Expect(err).NotTo(HaveOccurred())
		got := disk.Bytes()
		const boot = 48 << 20 // the boot partition ends here
		Expect(bytes.Equal(got[:boot], img[:boot])).To(BeTrue(), "the boot partition changed")
		Expect(got[block*512:block*512+512]).To(Equal(bytes.Repeat([]byte{0x5a}, 512)), "the marker block U-Boot wrote")
	}, SpecTimeout(4*time.Minute))
})

var _ = Describe("A virtual board config", Label("qemu", "boot"), func() {
	build := func(ctx context.Context, boardConfig string) error {
		dir := GinkgoT().TempDir()
		path := filepath.Join(dir, "exporter.yaml")
		text := "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\nmetadata: {name: bad}\nexport:\n  board:\n    type: qemu\n    config:\n" + boardConfig
		Expect(os.WriteFile(path, []byte(text), 0o644)).To(Succeed())
		f, err := config.Load(path)
		Expect(err).NotTo(HaveOccurred())
		s, err := exporter.New(ctx, f, &drivers.Host{StateDir: dir}, exporter.Options{})
		if err == nil {
			s.Stop()
		}
		return err
	}

	It("names the Debian package when QEMU is missing", func(ctx SpecContext) {
		err := build(ctx, "      qemu: /nonexistent/qemu-system-aarch64\n")
		Expect(err).To(MatchError(And(ContainSubstring("exporter.yaml:8"), ContainSubstring("config.qemu"), ContainSubstring("qemu-system-arm"))))
	})

	It("names the Debian package when U-Boot is missing", func(ctx SpecContext) {
		err := build(ctx, "      bios: /nonexistent/u-boot.bin\n")
		Expect(err).To(MatchError(And(ContainSubstring("config.bios"), ContainSubstring("u-boot-qemu"))))
	})

	It("refuses an unwritable disk path before any power-on", func(ctx SpecContext) {
		file := filepath.Join(GinkgoT().TempDir(), "a-file")
		Expect(os.WriteFile(file, nil, 0o644)).To(Succeed())
		err := build(ctx, "      disk: "+file+"/disk.img\n")
		Expect(err).To(MatchError(And(ContainSubstring("config.disk"), ContainSubstring("not a directory"))))
		Expect(board.ProcessesUsing(file)).To(BeEmpty())
	})
})
