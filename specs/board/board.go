// Package board gives every spec suite its board: a connected client
// holding the exporter's session, and where the board's parts are in the
// export tree. Inside `jmp shell` it is the shell's exporter (JMP_HOST);
// otherwise the suite serves an exporter config in-process: the file named
// by POGO_EXPORTER_CONFIG, by default the repo's virtual board.
//
// Specs written against it run unchanged on the virtual board and on a
// real one.
package board

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/files"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/state"
	"github.com/pogolab/pogo/drivers/storage"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
)

// Environment variables that choose the board.
const (
	// EnvConfig names the exporter config served in-process.
	EnvConfig = "POGO_EXPORTER_CONFIG"
	// EnvBoard names the board's node when the tree has several.
	EnvBoard = "POGO_BOARD"
	// EnvAssets names a directory of board assets to use as is, instead
	// of building them into build/board.
	EnvAssets = "POGO_BOARD_ASSETS"
)

// DefaultLabelFilter leaves out what `go test ./...` must not need.
const DefaultLabelFilter = "!hardware && !long"

// Paths are where the board's parts are in the export tree ("" when the
// exporter has no such part).
type Paths struct {
	Power, Console, Storage string
	// TFTP and HTTP are the file servers the board boots from.
	TFTP, HTTP string
	// State is the board's state machine (off, bootloader, flasher, os).
	State string
}

// Board is a held exporter and its board's parts.
type Board struct {
	Client *client.Client
	Paths  Paths
	// Local tells the exporter runs in this process, so host-side checks
	// (processes, files) see what it does.
	Local bool
	// Target is the exporter's address, for a second client on the same
	// session (client.Dial(ctx, b.Target, client.Options{Session:
	// b.Client.Token()})).
	Target string

	closers []func() error
}

// Options tune Open.
type Options struct {
	// Log receives an in-process exporter's log (default GinkgoWriter).
	Log io.Writer
}

// Get connects to the board: the enclosing jmp shell's exporter, or an
// in-process one serving EnvConfig (default: the repo's virtual board).
// Close it when done.
func Get(ctx context.Context) (*Board, error) { return Open(ctx, Options{}) }

// Open is Get with options (benchmarks keep the exporter's log quiet).
func Open(ctx context.Context, opts Options) (*Board, error) {
	if opts.Log == nil {
		opts.Log = ginkgo.GinkgoWriter
	}
	b := &Board{}
	if os.Getenv(rpcmeta.EnvHost) != "" {
		c, err := client.FromEnv(ctx)
		if err != nil {
			return nil, err
		}
		b.Client = c
		b.Target = os.Getenv(rpcmeta.EnvHost)
		b.closers = append(b.closers, c.Close)
	} else if err := b.serve(ctx, opts); err != nil {
		b.Close()
		return nil, err
	}
	if err := b.discover(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// ConfigPath is the exporter config Get serves: EnvConfig (relative to
// the repo root when not found as given) or the repo's virtual board.
func ConfigPath() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := os.Getenv(EnvConfig)
	if p == "" {
		for _, name := range []string{"exporter.yaml"} {
			if _, err := os.Stat(filepath.Join(root, name)); err == nil {
				return filepath.Join(root, name), nil
			}
		}
		return "", fmt.Errorf("no exporter config: set %s or add exporter.yaml to %s", EnvConfig, root)
	}
	if _, err := os.Stat(p); err != nil && !filepath.IsAbs(p) {
		p = filepath.Join(root, p)
	}
	return p, nil
}

func (b *Board) serve(ctx context.Context, opts Options) error {
	path, err := ConfigPath()
	if err != nil {
		return err
	}
	f, err := config.Load(path)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "pogo-spec-")
	if err != nil {
		return err
	}
	b.closers = append(b.closers, func() error { return os.RemoveAll(dir) })
	l, err := transport.ListenUnix(filepath.Join(dir, "exporter.sock"))
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(opts.Log, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := exporter.New(ctx, f, &drivers.Host{StateDir: filepath.Join(dir, "state")}, exporter.Options{Log: log})
	if err != nil {
		l.Close()
		return err
	}
	go s.Serve(l)
	b.closers = append(b.closers, s.Stop)
	c, err := client.Dial(ctx, "unix://"+l.Addr().String(), client.Options{Name: "specs"})
	if err != nil {
		return err
	}
	b.closers = append(b.closers, c.Close)
	sess, err := c.Open(ctx, client.SessionOptions{})
	if err != nil {
		return err
	}
	b.closers = append(b.closers, sess.Close)
	b.Client, b.Local, b.Target = c, true, "unix://"+l.Addr().String()
	return nil
}

// discover finds the board in the exporter's tree: EnvBoard, or the first
// top-level node with power and a console. A part is <board>.<capability>
// when the tree has it, else the board node itself or one of its children.
func (b *Board) discover(ctx context.Context) error {
	rep, err := b.Client.Report(ctx)
	if err != nil {
		return err
	}
	nodes := map[string]*pb.DriverNode{}
	for _, n := range rep.GetDrivers() {
		nodes[n.GetPath()] = n
	}
	serves := func(path, capability string) bool {
		n, ok := nodes[path]
		if !ok {
			return false
		}
		for _, i := range n.GetInterfaces() {
			if i == capability {
				return true
			}
		}
		return false
	}
	find := func(root, capability string) string {
		if serves(root+"."+capability, capability) {
			return root + "." + capability
		}
		if serves(root, capability) {
			return root
		}
		for _, n := range rep.GetDrivers() {
			if n.GetParentPath() == root && serves(n.GetPath(), capability) {
				return n.GetPath()
			}
		}
		return ""
	}
	root := os.Getenv(EnvBoard)
	if root == "" {
		for _, n := range rep.GetDrivers() {
			if n.GetParentPath() == "" && find(n.GetPath(), "power") != "" && find(n.GetPath(), "console") != "" {
				root = n.GetPath()
				break
			}
		}
	}
	if _, ok := nodes[root]; !ok {
		var all []string
		for p := range nodes {
			all = append(all, p)
		}
		return fmt.Errorf("exporter %s has no board (a node with power and console; set %s): drivers %s", rep.GetName(), EnvBoard, strings.Join(all, ", "))
	}
	b.Paths = Paths{Power: find(root, "power"), Console: find(root, "console"), Storage: find(root, "storage")}
	// The board's states: a uboot node of its own, else the one a flasher
	// built (<flasher>.state).
	for _, n := range rep.GetDrivers() {
		if b.Paths.State == "" && serves(n.GetPath(), "state") {
			b.Paths.State = n.GetPath()
		}
	}
	for _, n := range rep.GetDrivers() {
		switch {
		case n.GetKind() == "tftp" && b.Paths.TFTP == "":
			b.Paths.TFTP = n.GetPath()
		case n.GetKind() == "http" && b.Paths.HTTP == "":
			b.Paths.HTTP = n.GetPath()
		}
	}
	return nil
}

// Close ends the session and stops an in-process exporter (powering the
// board off).
func (b *Board) Close() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i]())
	}
	b.closers = nil
	return errors.Join(errs...)
}

// Power is the board's power switch.
func (b *Board) Power() *power.Client { return b.Client.Power(b.Paths.Power) }

// Console is the board's console.
func (b *Board) Console() *console.Client { return b.Client.Console(b.Paths.Console) }

// Storage is the board's disk.
func (b *Board) Storage() *storage.Client { return storage.NewClient(b.Client.Conn(), b.Paths.Storage) }

// State is the board's state machine.
func (b *Board) State() *state.Client { return state.NewClient(b.Client.Conn(), b.Paths.State) }

// InState takes the board to target (off, bootloader, flasher, os) and
// returns the states the transition walked: what a suite's BeforeEach
// asks for instead of scripting the board. The console is free again
// when it returns.
func (b *Board) InState(ctx context.Context, target string) ([]string, error) {
	if b.Paths.State == "" {
		return nil, fmt.Errorf("the exporter has no board states (no driver serves state)")
	}
	var events []state.Event
	err := b.State().Transition(ctx, target, func(e state.Event) {
		events = append(events, e)
		if e.Reached != "" {
			fmt.Fprintf(ginkgo.GinkgoWriter, "board state: %s\n", e.Reached)
		}
	})
	return state.Walked(events), err
}

// TFTP is the TFTP server the board boots from.
func (b *Board) TFTP() *files.Client { return files.NewClient(b.Client.Conn(), b.Paths.TFTP) }

// HTTP is the HTTP server the board fetches from.
func (b *Board) HTTP() *files.Client { return files.NewClient(b.Client.Conn(), b.Paths.HTTP) }

// TFTPLocation returns the TFTP server's address and the prefix of the
// names the board fetches (U-Boot: `setenv serverip ADDR; tftpboot X
// PREFIXfile`).
func (b *Board) TFTPLocation(ctx context.Context) (server, prefix string, err error) {
	raw, err := b.TFTP().URL(ctx)
	if err != nil {
		return "", "", err
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "tftp" {
		return "", "", fmt.Errorf("tftp driver %s gave URL %q, want tftp://server/prefix", b.Paths.TFTP, raw)
	}
	return u.Host, strings.TrimPrefix(u.Path, "/"), nil
}

// RepoRoot is the directory holding go.mod, found from the working
// directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Assets returns the virtual board's assets directory (Image,
// initramfs.cpio.gz, demo-os.img, demo-os.version): EnvAssets as is, or
// build/board built by lab/board/build.sh, which returns at once when
// nothing changed.
func Assets(ctx context.Context) (string, error) {
	if d := os.Getenv(EnvAssets); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(root, "build", "board")
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "lab", "board", "build.sh"), out)
	cmd.Stdout, cmd.Stderr = ginkgo.GinkgoWriter, ginkgo.GinkgoWriter
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build board assets (bash lab/board/build.sh %s): %w", out, err)
	}
	return out, nil
}

// ProcessesUsing lists the pids of processes whose command line contains
// s (a board's disk path names its QEMU).
func ProcessesUsing(s string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	self := fmt.Sprint(os.Getpid())
	for _, e := range ents {
		if e.Name() == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			out = append(out, e.Name())
		}
	}
	return out
}

// RunSpecs runs the suite's Ginkgo specs with the label filter
// DefaultLabelFilter unless -ginkgo.label-filter was given, since
// `go test ./...` must pass without extra flags.
func RunSpecs(t *testing.T, suite string) bool {
	gomega.RegisterFailHandler(ginkgo.Fail)
	sc, rc := ginkgo.GinkgoConfiguration()
	if sc.LabelFilter == "" {
		sc.LabelFilter = DefaultLabelFilter
	}
	return ginkgo.RunSpecs(t, suite, sc, rc)
}
