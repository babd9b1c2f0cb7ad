package states

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/state"
	"github.com/pogolab/pogo/drivers/storage"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/specs/board"
)

// lab is what the suite prepares once: the board assets, a flasher
// bundle made of them, and jmp.
var lab struct {
	dir, assets, bundle, jmp, version string
}

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	lab.assets, err = board.Assets(ctx)
	Expect(err).NotTo(HaveOccurred())
	root, err := board.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	lab.dir, err = os.MkdirTemp("", "pogo-states-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, lab.dir)
	v, err := os.ReadFile(filepath.Join(lab.assets, "demo-os.version"))
	Expect(err).NotTo(HaveOccurred())
	lab.version = strings.TrimSpace(string(v))

	// The virtual board's bundle: the repo's manifest, the assets' kernel
	// and flasher initramfs.
	lab.bundle = filepath.Join(lab.dir, "bundle")
	Expect(os.MkdirAll(filepath.Join(lab.bundle, "data"), 0o755)).To(Succeed())
	m, err := os.ReadFile(filepath.Join(root, "bundles", "qemu-arm64", "manifest.yaml"))
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(lab.bundle, "manifest.yaml"), m, 0o644)).To(Succeed())
	for _, f := range []string{"Image", "initramfs.cpio.gz"} {
		if os.Link(filepath.Join(lab.assets, f), filepath.Join(lab.bundle, "data", f)) != nil {
			b, err := os.ReadFile(filepath.Join(lab.assets, f))
			Expect(err).NotTo(HaveOccurred())
			Expect(os.WriteFile(filepath.Join(lab.bundle, "data", f), b, 0o644)).To(Succeed())
		}
	}

	lab.jmp = filepath.Join(lab.dir, "jmp")
	build := exec.CommandContext(ctx, "go", "build", "-o", lab.jmp, "./cmd/jmp")
	build.Dir = root
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "go build ./cmd/jmp: %s", out)
}, NodeTimeout(16*time.Minute))

// exporterConfig writes a virtual board with its states; stateExtra are
// more lines of the uboot node's config. The disk is <name>.img in the
// suite's directory.
func exporterConfig(name string, stateExtra ...string) string {
	GinkgoHelper()
	var extra strings.Builder
	for _, l := range stateExtra {
		extra.WriteString("      " + l + "\n")
	}
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
  tftp:
    type: tftp
    config: {advertise: 127.0.0.1, window: 8}
  state:
    type: uboot
    config:
      flasher_bundle: %s
      cache_dir: %s
%s    children:
      power: {ref: board}
      console: {ref: board}
      tftp: {ref: tftp}
`, name, filepath.Join(lab.dir, name+".img"), lab.bundle, filepath.Join(lab.dir, "cache"), extra.String())
	path := filepath.Join(lab.dir, name+".yaml")
	Expect(os.WriteFile(path, []byte(text), 0o644)).To(Succeed())
	return path
}

// openBoard serves cfg in-process and holds its session.
func openBoard(ctx context.Context, cfg string) *board.Board {
	GinkgoHelper()
	os.Setenv(board.EnvConfig, cfg)
	DeferCleanup(os.Unsetenv, board.EnvConfig)
	b, err := board.Open(ctx, board.Options{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _ = b.Close() })
	Expect(b.Paths.State).To(Equal("state"))
	return b
}

// shellSays runs cmd at the board's shell (the state's console, free
// after a transition) and waits for want.
func shellSays(ctx context.Context, b *board.Board, cmd, want string) {
	GinkgoHelper()
	a, err := b.Console().Attach(context.WithoutCancel(ctx), console.AttachOptions{Write: true})
	Expect(err).NotTo(HaveOccurred())
	defer a.Close()
	e := expect.New(a)
	Expect(e.SendLine(cmd)).To(Succeed())
	_, err = e.Expect(ctx, 20*time.Second, want)
	Expect(err).NotTo(HaveOccurred(), "%q at the shell: %s", cmd, e.Transcript())
}

// walk takes the board to target and checks the chain of states the
// transition reported.
func walk(ctx context.Context, b *board.Board, target string, chain ...string) {
	GinkgoHelper()
	start := time.Now()
	walked, err := b.InState(ctx, target)
	Expect(err).NotTo(HaveOccurred(), "to %s", target)
	Expect(walked).To(Equal(chain), "the chain to %s", target)
	st, err := b.State().Get(ctx)
	Expect(err).NotTo(HaveOccurred())
	Expect(st).To(Equal(state.Status{State: target}))
	By(fmt.Sprintf("%s in %s via %v", target, time.Since(start).Round(100*time.Millisecond), walked))
}

var _ = Describe("Board states", Label("qemu", "boot"), func() {
	It("reach every state from off and from each other, walking the chain", func(ctx SpecContext) {
		b := openBoard(ctx, exporterConfig("walk"))
		img, err := os.ReadFile(filepath.Join(lab.assets, "demo-os.img"))
		Expect(err).NotTo(HaveOccurred())
		Expect(b.Power().Off(ctx)).To(Succeed())
		_, err = b.Storage().Write(ctx, bytes.NewReader(img), storage.WriteOptions{Size: int64(len(img)), Truncate: true})
		Expect(err).NotTo(HaveOccurred())
		names, err := b.State().States(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(names).To(Equal([]string{"off", "bootloader", "flasher", "os"}))

		// Every ordered pair of states, each state reached from off: a
		// cycle through all twelve transitions.
		walk(ctx, b, "bootloader", "off", "bootloader")
		shellSays(ctx, b, "echo at-$board", "at-qemu")
		walk(ctx, b, "flasher", "flasher")
		shellSays(ctx, b, "cat /etc/pogo/role", "flasher")
		walk(ctx, b, "os", "off", "os")
		shellSays(ctx, b, "cat /etc/pogo/version", lab.version)
		walk(ctx, b, "flasher", "off", "bootloader", "flasher")
		walk(ctx, b, "bootloader", "off", "bootloader")
		walk(ctx, b, "os", "os")
		shellSays(ctx, b, "cat /etc/pogo/role", "demo")
		walk(ctx, b, "bootloader", "off", "bootloader")
		walk(ctx, b, "off", "off")
		walk(ctx, b, "os", "off", "os")
		walk(ctx, b, "off", "off")
		walk(ctx, b, "flasher", "off", "bootloader", "flasher")
		walk(ctx, b, "off", "off")
		walk(ctx, b, "off") // already there: nothing to walk
		if b.Local {
			Expect(board.ProcessesUsing(filepath.Join(lab.dir, "walk.img"))).To(BeEmpty())
		}
	}, SpecTimeout(15*time.Minute))

	It("latches a board whose U-Boot never shows the countdown as broken until forced", func(ctx SpecContext) {
		b := openBoard(ctx, exporterConfig("wrongprompt", `autoboot: "Press the any key"`, `prompt: "uboot> "`, "bootloader_timeout: 5s"))
		_, err := b.InState(ctx, "bootloader")
		Expect(err).To(MatchError(ContainSubstring("bootloader: no U-Boot prompt after 5s")))
		Expect(err).To(MatchError(ContainSubstring(`"Press the any key"`)))
		Expect(err).To(MatchError(ContainSubstring("last output")), "the error carries the console")
		st, err := b.State().Get(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(st.State).To(Equal("off"), "a failed transition leaves the board off")
		Expect(st.Broken).To(ContainSubstring("bootloader: no U-Boot prompt"))

		start := time.Now()
		_, err = b.InState(ctx, "os")
		Expect(time.Since(start)).To(BeNumerically("<", 2*time.Second), "a broken board fails at once")
		Expect(err).To(MatchError(And(ContainSubstring("board is broken"), ContainSubstring("bootloader: no U-Boot prompt after 5s"))))
		Expect(errors.Is(err, errdefs.ErrPrecondition)).To(BeTrue())

		out, code := j(ctx, b, "state")
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("broken: bootloader: no U-Boot prompt after 5s"))
		// j state --force off clears it: the next transition runs again.
		out, code = j(ctx, b, "state", "--force", "off")
		Expect(code).To(Equal(0), out)
		st, err = b.State().Get(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(st).To(Equal(state.Status{State: "off"}))
		_, err = b.InState(ctx, "bootloader")
		Expect(err).To(MatchError(ContainSubstring("bootloader: no U-Boot prompt after 5s")))
		Expect(err).NotTo(MatchError(ContainSubstring("board is broken")))
		// A power-off through the exporter clears it as well.
		Expect(b.Power().Off(ctx)).To(Succeed())
		st, err = b.State().Get(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(st).To(Equal(state.Status{State: "off"}))
	}, SpecTimeout(3*time.Minute))

	It("ends a transition the user powers off, refuses a second writer and lets a reader watch", func(ctx SpecContext) {
		b := openBoard(ctx, exporterConfig("interrupt"))
		img, err := os.ReadFile(filepath.Join(lab.assets, "demo-os.img"))
		Expect(err).NotTo(HaveOccurred())
		_, err = b.Storage().Write(ctx, bytes.NewReader(img), storage.WriteOptions{Size: int64(len(img)), Truncate: true})
		Expect(err).NotTo(HaveOccurred())

		// A second client of the same exporter and session.
		c2, err := client.Dial(ctx, b.Target, client.Options{Session: b.Client.Token(), Name: "second"})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(c2.Close)
		con2 := c2.Console(b.Paths.Console)

		var mu sync.Mutex
		var events []state.Event
		poweredOn := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			defer GinkgoRecover()
			var once sync.Once
			done <- b.State().Transition(ctx, "os", func(e state.Event) {
				mu.Lock()
				events = append(events, e)
				mu.Unlock()
				if e.Step == "os" {
					once.Do(func() { close(poweredOn) })
				}
			})
		}()
		Eventually(poweredOn).WithTimeout(30 * time.Second).Should(BeClosed())

		_, err = con2.Attach(ctx, console.AttachOptions{Write: true})
		Expect(err).To(MatchError(ContainSubstring("board busy: transition to os in progress")))
		Expect(errors.Is(err, errdefs.ErrInUse)).To(BeTrue())
		r, err := con2.Attach(ctx, console.AttachOptions{Replay: true})
		Expect(err).NotTo(HaveOccurred(), "a read-only attach during a transition")
		defer r.Close()
		re := expect.New(r)
		_, err = re.Expect(ctx, 60*time.Second, "Starting kernel")
		Expect(err).NotTo(HaveOccurred(), "the reader sees the board boot")

		Expect(b.Power().Off(ctx)).To(Succeed())
		var terr error
		Eventually(done).WithTimeout(10 * time.Second).Should(Receive(&terr))
		Expect(terr).To(MatchError(ContainSubstring("transition to os ended: the board was powered off through the exporter")))
		st, err := b.State().Get(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(st).To(Equal(state.Status{State: "off"}), "not broken: the user switched it off")
		mu.Lock()
		Expect(state.Walked(events)).To(Equal([]string{"off"}))
		mu.Unlock()

		// The console is free again for the second client.
		w, err := con2.Attach(ctx, console.AttachOptions{Write: true})
		Expect(err).NotTo(HaveOccurred())
		Expect(w.Close()).To(Succeed())
	}, SpecTimeout(3*time.Minute))

	It("goes to a state before jmp shell runs the command, and j state prints it", func(ctx SpecContext) {
		cfg := exporterConfig("cli")
		out, code := jmpShell(ctx, cfg, "--state", "bootloader", "state")
		Expect(code).To(Equal(0), out)
		Expect(out).To(MatchRegexp(`→ off\r?\n`))
		Expect(out).To(MatchRegexp(`→ bootloader\r?\n`))
		Expect(out).To(MatchRegexp(`(?m)^bootloader\r?$`), "j state prints the state")

		out, code = jmpShell(ctx, cfg, "--state", "nowhere", "state")
		Expect(code).NotTo(Equal(0), out)
		Expect(out).To(ContainSubstring(`--state nowhere: no state "nowhere": the board (state) offers off, bootloader, flasher, os`))
	}, SpecTimeout(3*time.Minute))
})

var _ = Describe("A uboot state config", Label("qemu", "boot"), func() {
	build := func(ctx context.Context, stateNode string) error {
		dir := GinkgoT().TempDir()
		path := filepath.Join(dir, "exporter.yaml")
		text := "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\nmetadata: {name: bad}\nexport:\n  board:\n    type: qemu\n  state:\n    type: uboot\n" + stateNode
		Expect(os.WriteFile(path, []byte(text), 0o644)).To(Succeed())
		f, err := config.Load(path)
		Expect(err).NotTo(HaveOccurred())
		s, err := exporter.New(ctx, f, &drivers.Host{StateDir: dir}, exporter.Options{})
		if err == nil {
			s.Stop()
		}
		return err
	}

	It("refuses a missing console, naming the node's line", func(ctx SpecContext) {
		err := build(ctx, "    children:\n      power: {ref: board}\n")
		Expect(err).To(MatchError(And(ContainSubstring("exporter.yaml:7"), ContainSubstring("export.state.children.console"), ContainSubstring("missing"))))
	})

	It("refuses a negative timeout, naming its line", func(ctx SpecContext) {
		err := build(ctx, "    config:\n      os_timeout: -5s\n    children:\n      power: {ref: board}\n      console: {ref: board}\n")
		Expect(err).To(MatchError(And(ContainSubstring("exporter.yaml:10"), ContainSubstring("config.os_timeout"), ContainSubstring("must not be negative"))))
	})

	It("refuses an unknown key, naming its line", func(ctx SpecContext) {
		err := build(ctx, "    config:\n      bootlaoder_timeout: 5s\n    children:\n      power: {ref: board}\n      console: {ref: board}\n")
		Expect(err).To(MatchError(And(ContainSubstring("exporter.yaml:10"), ContainSubstring("bootlaoder_timeout"))))
	})
})

// j runs `j ARGS…` as inside the jmp shell holding b.
func j(ctx context.Context, b *board.Board, args ...string) (string, int) {
	GinkgoHelper()
	link := filepath.Join(lab.dir, "j")
	if _, err := os.Lstat(link); err != nil {
		Expect(os.Symlink(lab.jmp, link)).To(Succeed())
	}
	cmd := exec.CommandContext(ctx, link, args...)
	cmd.Env = append(os.Environ(), rpcmeta.EnvHost+"="+b.Target, rpcmeta.EnvSession+"="+b.Client.Token())
	out, err := cmd.CombinedOutput()
	GinkgoWriter.Printf("j %v: %s", args, out)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	Expect(err).NotTo(HaveOccurred())
	return string(out), 0
}

// jmpShell runs `jmp shell --exporter-config cfg [--state S] -- j ARGS…`
// and returns its combined output and exit code.
func jmpShell(ctx context.Context, cfg string, args ...string) (string, int) {
	GinkgoHelper()
	shellArgs := []string{"shell", "--exporter-config", cfg}
	if len(args) >= 2 && args[0] == "--state" {
		shellArgs = append(shellArgs, args[:2]...)
		args = args[2:]
	}
	cmd := exec.CommandContext(ctx, lab.jmp, append(append(shellArgs, "--", "j"), args...)...)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "JMP_") {
			env = append(env, e)
		}
	}
	cmd.Env = env
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
