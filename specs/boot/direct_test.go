package boot

// The by-hand baselines the board benchmarks are measured against: the
// virtual board started with QEMU's own command line as the qemu driver
// builds it, its UART's pty read by an Expecter in this process. No
// exporter, gRPC, serial driver or console hub is in between; the steps
// done on the console are the same functions the exporter path runs.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/pogolab/pogo/bundles/manifest"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/qemu"
	"github.com/pogolab/pogo/drivers/tftp"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/specs/board"
)

// Steps: each takes a board whose console was attached before power-on
// to a state, doing on the console what the flasher does today, and
// returns once the state is proven.

// untilBootloader: U-Boot's countdown interrupted, its prompt shown.
func untilBootloader(ctx context.Context, e *expect.Expecter) error {
	return board.StopAutoboot(ctx, e, time.Minute)
}

// flasherBoot is how U-Boot netboots the flasher: what it fetches from
// which TFTP server, and the bundle's boot command and shell prompt.
type flasherBoot struct {
	server, prefix string
	loads          []flasherLoad
	bootcmd        string
	prompt         string
}

type flasherLoad struct{ addr, name string }

// untilFlasher: U-Boot interrupted, then as drivers/flasher/boot.go does
// it: DHCP, the serverip, a tftpboot of each of the bundle's files, its
// boot command; done when the flasher's busybox shell answers a command.
func untilFlasher(ctx context.Context, e *expect.Expecter, fb flasherBoot) error {
	if err := untilBootloader(ctx, e); err != nil {
		return err
	}
	cmds := []string{"setenv autoload no", "dhcp", "setenv serverip " + fb.server}
	for _, l := range fb.loads {
		cmds = append(cmds, "tftpboot "+l.addr+" "+fb.prefix+l.name)
	}
	for _, c := range cmds {
		out, err := board.UBoot(ctx, e, 2*time.Minute, c)
		if err != nil {
			return err
		}
		if strings.Contains(out, "ERROR") || strings.Contains(out, "Retry count exceeded") {
			return fmt.Errorf("u-boot %q failed: %s", c, strings.TrimSpace(out))
		}
	}
	if err := e.SendLine(fb.bootcmd); err != nil {
		return err
	}
	if _, err := e.Expect(ctx, 2*time.Minute, "pogo-flasher ready"); err != nil {
		return fmt.Errorf("flasher boot: %w", err)
	}
	return shellAnswers(ctx, e, fb.prompt)
}

// untilOS: no key pressed, U-Boot's own bootcmd boots the disk's OS;
// done when the demo OS has printed its banner and its shell answers a
// command.
func untilOS(ctx context.Context, e *expect.Expecter, version string) error {
	if _, err := e.Expect(ctx, 2*time.Minute, "pogo demo OS version "+version); err != nil {
		return fmt.Errorf("demo OS banner: %w", err)
	}
	return shellAnswers(ctx, e, "# ")
}

// shellAnswers waits for the prompt, then proves the shell reads the
// console with a command round trip, repeated (after a Ctrl-C) while keys
// typed before the shell owned the console go unanswered.
func shellAnswers(ctx context.Context, e *expect.Expecter, prompt string) error {
	if _, err := e.Expect(ctx, time.Minute, prompt); err != nil {
		return fmt.Errorf("shell prompt: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The echoed command line shows the expression, only the shell's
		// answer shows its value.
		if err := e.SendLine("echo pogo-$((6*7))"); err != nil {
			return err
		}
		_, err := e.Expect(ctx, 3*time.Second, "pogo-42")
		if err == nil {
			_, err = e.Expect(ctx, 10*time.Second, prompt)
			return err
		}
		if !errors.Is(err, expect.ErrTimeout) || time.Now().After(deadline) {
			return fmt.Errorf("the shell does not answer: %w", err)
		}
		if err := e.Send("\x03"); err != nil {
			return err
		}
	}
}

// directLab is the virtual board of the exporter config the specs serve
// (board.ConfigPath), set up to be started by hand: its qemu node's
// config with a disk of its own, and its tftp node's config.
type directLab struct {
	qemu qemu.Config
	name string
	tftp tftp.Config
	dir  string
}

// newDirectLab reads the exporter config and creates the board's disk
// (through qemu.New, as the exporter does). It skips tb when the config
// has no virtual board.
func newDirectLab(tb testing.TB) *directLab {
	tb.Helper()
	p, err := board.ConfigPath()
	if err != nil {
		tb.Fatal(err)
	}
	f, err := config.Load(p)
	if err != nil {
		tb.Fatal(err)
	}
	l := &directLab{dir: tb.TempDir()}
	var haveQEMU bool
	for _, n := range f.Export {
		switch {
		case n.Type == "qemu" && !haveQEMU:
			if err := n.Config.Decode(&l.qemu); err != nil {
				tb.Fatal(err)
			}
			l.name, haveQEMU = n.Path, true
		case n.Type == "tftp" && l.tftp.Listen == "":
			if err := n.Config.Decode(&l.tftp); err != nil {
				tb.Fatal(err)
			}
			if l.tftp.Listen == "" {
				l.tftp.Listen = tftp.DefaultListen
			}
		}
	}
	if !haveQEMU {
		tb.Skipf("%s has no qemu board to start by hand", p)
	}
	l.qemu.Disk = filepath.Join(l.dir, "disk.img")
	b, err := qemu.New(l.qemu, l.dir, l.name, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	b.Close()
	return l
}

// InstallOS puts img at the start of the board's disk, as a storage
// write does (untimed set-up, once: the demo OS leaves its disk alone).
func (l *directLab) InstallOS(img []byte) error {
	f, err := os.OpenFile(l.qemu.Disk, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(img, 0); err != nil {
		f.Close()
		return err
	}
	// On disk before QEMU runs, so no writeback competes with a boot.
	return errors.Join(f.Sync(), f.Close())
}

// boot starts QEMU by hand with the qemu driver's command line, runs step
// on its UART and kills QEMU. The time is from just before the pty is
// opened to step's end.
func (l *directLab) boot(ctx context.Context, step func(context.Context, *expect.Expecter) error) (time.Duration, error) {
	t0 := time.Now()
	master, tty, err := pty.Open()
	if err != nil {
		return 0, err
	}
	defer tty.Close()
	// Fd puts the tty in blocking mode: the Expecter's reads wait in the
	// kernel, as the serial driver's do, not in Go's poller. They end when
	// QEMU dies and the master end closes.
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil {
		master.Close()
		return 0, err
	}
	bin, args, err := qemu.Command(l.qemu, l.dir, l.name, filepath.Join(l.dir, "qmp.sock"))
	if err != nil {
		master.Close()
		return 0, err
	}
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{master}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	master.Close()
	if err != nil {
		return 0, err
	}
	e := expect.New(tty)
	err = step(ctx, e)
	d := time.Since(t0)
	cmd.Process.Kill()
	cmd.Wait()
	if err != nil {
		return d, fmt.Errorf("%w (qemu: %s)\nconsole:\n%s", err, strings.TrimSpace(stderr.String()), e.Transcript())
	}
	return d, nil
}

// ToBootloader is the direct figure for power-on → U-Boot prompt.
func (l *directLab) ToBootloader(ctx context.Context) (time.Duration, error) {
	return l.boot(ctx, untilBootloader)
}

// ToFlasher is the direct figure for power-on → flasher shell.
func (l *directLab) ToFlasher(ctx context.Context, fb flasherBoot) (time.Duration, error) {
	return l.boot(ctx, func(ctx context.Context, e *expect.Expecter) error { return untilFlasher(ctx, e, fb) })
}

// ToOS is the direct figure for power-on → the OS on the disk (see
// InstallOS) answering at its shell.
func (l *directLab) ToOS(ctx context.Context, version string) (time.Duration, error) {
	return l.boot(ctx, func(ctx context.Context, e *expect.Expecter) error { return untilOS(ctx, e, version) })
}

// flasherBundle is the virtual board's flasher bundle (exporter.yaml's
// flasher_bundle, built by `make bundle`): its manifest and directory.
func flasherBundle(tb testing.TB) (*manifest.Manifest, string) {
	tb.Helper()
	root, err := board.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(root, "build", "bundle", "qemu-arm64")
	data, err := os.ReadFile(filepath.Join(dir, manifest.FileName))
	if err != nil {
		tb.Skipf("no flasher bundle (make bundle): %v", err)
	}
	m, err := manifest.Parse(filepath.Join(dir, manifest.FileName), data)
	if err != nil {
		tb.Fatal(err)
	}
	if m.Spec.Kernel == nil || m.Spec.Initram == nil {
		tb.Fatalf("bundle %s: want a kernel and an initramfs", dir)
	}
	return m, dir
}

// flasherRecipe is how U-Boot boots the bundle's flasher from a TFTP
// server at the tftp:// URL where put stored the files under their base
// names.
func flasherRecipe(tb testing.TB, m *manifest.Manifest, dir, tftpURL string, put func(name string, r io.Reader) error) flasherBoot {
	tb.Helper()
	u, err := url.Parse(tftpURL)
	if err != nil || u.Scheme != "tftp" {
		tb.Fatalf("tftp URL %q: want tftp://server/prefix", tftpURL)
	}
	fb := flasherBoot{server: u.Hostname(), prefix: strings.TrimPrefix(u.Path, "/"), bootcmd: m.Spec.Bootcmd, prompt: m.Spec.Login.Prompt}
	if fb.prompt == "" {
		fb.prompt = "# "
	}
	// As the flasher: the kernel, then the initramfs last, so ${filesize}
	// in the boot command is its size.
	for _, ld := range []*manifest.Load{m.Spec.Kernel, m.Spec.Initram} {
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(ld.File)))
		if err != nil {
			tb.Fatal(err)
		}
		err = put(path.Base(ld.File), f)
		f.Close()
		if err != nil {
			tb.Fatal(err)
		}
		fb.loads = append(fb.loads, flasherLoad{ld.Address, path.Base(ld.File)})
	}
	return fb
}

// directTFTP serves the bundle's flasher files with the tftp driver of
// exporter.yaml's tftp node, started outside any exporter (sharing port
// 69 as exporters do), and returns how U-Boot boots them.
func (l *directLab) directTFTP(tb testing.TB) flasherBoot {
	tb.Helper()
	m, dir := flasherBundle(tb)
	cfg := l.tftp
	cfg.Root = filepath.Join(l.dir, "tftp")
	if err := os.MkdirAll(cfg.Root, 0o755); err != nil {
		tb.Fatal(err)
	}
	d, err := tftp.Start(cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	raw, err := d.URL(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return flasherRecipe(tb, m, dir, raw, func(name string, r io.Reader) error {
		f, err := os.Create(filepath.Join(cfg.Root, name))
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		return errors.Join(err, f.Close())
	})
}
