package bmc

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/bmc"
	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/drivers/bmc/ipmi"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/specs/board"
)

const (
	user    = "root"
	pass    = "0penBmc"
	goodSig = "good-signature"
)

// simOpts shape one simulator process.
type simOpts struct {
	// gated makes verification and update wait for release(), so a spec
	// can look at the BMC while each action runs.
	gated bool
	// standIns replace the default stand-in of a unit.
	standIns map[string]string
	args     []string
}

// sim is a `jmp bmc-sim` process on a loopback UDP port.
type sim struct {
	port  int
	dir   string // gates and pid files
	state string // --state-dir: where the staged files land
	out   *syncBuffer
	done  chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	GinkgoWriter.Write(p)
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var servingRE = regexp.MustCompile(`msg="bmc simulator serving" addr=127\.0\.0\.1:(\d+)`)

// startSim runs the simulator with one example config of lab/bmcsim. The
// default stand-ins accept only goodSig and apply the update by copying
// the staged image to <image>.applied.
func startSim(ctx context.Context, example string, o simOpts) *sim {
	GinkgoHelper()
	root, err := board.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	s := &sim{dir: GinkgoT().TempDir(), out: &syncBuffer{}, done: make(chan struct{})}
	s.state = filepath.Join(s.dir, "state")
	cfgDir := filepath.Join(s.dir, "config")
	Expect(os.MkdirAll(cfgDir, 0o755)).To(Succeed())
	data, err := os.ReadFile(filepath.Join(root, "lab", "bmcsim", "examples", example))
	Expect(err).NotTo(HaveOccurred())
	Expect(os.WriteFile(filepath.Join(cfgDir, example), data, 0o644)).To(Succeed())

	verify := `test "$(cat "$BMCSIM_HASH")" = ` + goodSig
	update := `cp "$BMCSIM_IMAGE" "$BMCSIM_IMAGE.applied"`
	if o.gated {
		verify = s.gate("verify") + verify
		update = s.gate("update") + update
	}
	units := map[string]string{
		"phosphor-ipmi-flash-bmc-prepare.target":  "true",
		"phosphor-ipmi-flash-bmc-verify.target":   verify,
		"phosphor-ipmi-flash-bmc-update.target":   update,
		"phosphor-ipmi-flash-bios-prepare.target": "true",
		"phosphor-ipmi-flash-bios-verify.target":  verify,
		"phosphor-ipmi-flash-bios-update.target":  update,
	}
	for k, v := range o.standIns {
		units[k] = v
	}
	args := []string{"bmc-sim", "--listen", "127.0.0.1:0", "--user", user, "--password", pass,
		"--config-dir", cfgDir, "--state-dir", s.state, "--reboot-time", "1s"}
	for _, k := range slices.Sorted(maps.Keys(units)) {
		args = append(args, "--stand-in", k+"="+units[k])
	}
	args = append(args, o.args...)
	cmd := exec.Command(jmp, args...)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	Expect(cmd.Start()).To(Succeed())
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	DeferCleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-s.done
			Fail("bmc-sim did not stop on SIGTERM")
		}
		Expect(cmd.ProcessState.Success()).To(BeTrue(), "bmc-sim exit status: %v", cmd.ProcessState)
	})
	Eventually(ctx, func() string { return s.out.String() }).WithTimeout(10*time.Second).
		Should(MatchRegexp(servingRE.String()), "bmc-sim did not start serving")
	s.port, _ = strconv.Atoi(servingRE.FindStringSubmatch(s.out.String())[1])
	return s
}

// gate is a shell prefix that waits until release(name).
func (s *sim) gate(name string) string {
	return fmt.Sprintf(`while [ ! -e %q ]; do sleep 0.02; done; `, filepath.Join(s.dir, "go-"+name))
}

func (s *sim) release(name string) {
	GinkgoHelper()
	Expect(os.WriteFile(filepath.Join(s.dir, "go-"+name), nil, 0o644)).To(Succeed())
}

var transitionRE = regexp.MustCompile(`msg="flash state" from=\w+ to=(\w+)`)

// transitions are the flash states the simulator entered, from its log.
func (s *sim) transitions() []string {
	var out []string
	for _, m := range transitionRE.FindAllStringSubmatch(s.out.String(), -1) {
		out = append(out, m[1])
	}
	return out
}

// logged counts the simulator's log lines containing msg.
func (s *sim) logged(msg string) int { return strings.Count(s.out.String(), msg) }

// staged reads a file the flash handler wrote (path as configured).
func (s *sim) staged(path string) []byte {
	b, _ := os.ReadFile(filepath.Join(s.state, path))
	return b
}

func (s *sim) exists(path string) bool {
	_, err := os.Stat(filepath.Join(s.state, path))
	return err == nil
}

// exporterYAML serves the simulator as the bmc driver named bmc.
func (s *sim) exporterYAML(extra ...string) string {
	y := fmt.Sprintf("export:\n  bmc:\n    type: bmc\n    config:\n      host: 127.0.0.1\n      port: %d\n      username: %s\n      password: %s\n      timeout: 200ms\n", s.port, user, pass)
	for _, e := range extra {
		y += "      " + e + "\n"
	}
	return y
}

// held is an in-process exporter serving yamlText on a unix socket and a
// client holding its session, all through the real gRPC wire.
type held struct {
	*client.Client
	bmc   *bmc.Client
	spool string
}

func serve(ctx context.Context, yamlText string) *held {
	GinkgoHelper()
	dir := GinkgoT().TempDir()
	path := filepath.Join(dir, "exporter.yaml")
	Expect(os.WriteFile(path, []byte(yamlText), 0o644)).To(Succeed())
	f, err := config.Load(path)
	Expect(err).NotTo(HaveOccurred())
	l, err := transport.ListenUnix(filepath.Join(dir, "e.sock"))
	Expect(err).NotTo(HaveOccurred())
	log := slog.New(slog.NewTextHandler(GinkgoWriter, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := exporter.New(ctx, f, &drivers.Host{StateDir: filepath.Join(dir, "state")}, exporter.Options{Log: log})
	if err != nil {
		l.Close()
	}
	Expect(err).NotTo(HaveOccurred())
	go srv.Serve(l)
	DeferCleanup(func() { Expect(srv.Stop()).To(Succeed()) })
	c, err := client.Dial(ctx, "unix://"+filepath.Join(dir, "e.sock"), client.Options{Name: "bmc-specs"})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(c.Close)
	sess, err := c.Open(ctx, client.SessionOptions{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(sess.Close)
	return &held{Client: c, bmc: bmc.NewClient(c.Conn(), "bmc"), spool: filepath.Join(dir, "state", "bmc-spool")}
}

// ids lists the blobs through the exporter.
func (h *held) ids(ctx context.Context) []string {
	GinkgoHelper()
	bs, err := h.bmc.Blobs(ctx)
	Expect(err).NotTo(HaveOccurred())
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		Expect(b.Err).NotTo(HaveOccurred(), "stat %s", b.ID)
		out = append(out, b.ID)
	}
	return out
}

func (h *held) spoolEmpty() {
	GinkgoHelper()
	ents, _ := os.ReadDir(h.spool)
	Expect(ents).To(BeEmpty(), "spooled image left on the exporter")
}

// events records an update's progress as the client receives it.
type events struct {
	mu   sync.Mutex
	list []blob.Progress
}

func (e *events) add(p blob.Progress) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, p)
}

func (e *events) seen(phase blob.Phase, msg string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.ContainsFunc(e.list, func(p blob.Progress) bool { return p.Phase == phase && (msg == "" || p.Message == msg) })
}

func (e *events) phases() []blob.Phase {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []blob.Phase
	for _, p := range e.list {
		if len(out) == 0 || out[len(out)-1] != p.Phase {
			out = append(out, p.Phase)
		}
	}
	return out
}

// start runs an update in the background; the channel yields its result.
func (h *held) start(ctx context.Context, req bmc.Request) (*events, <-chan error) {
	ev := &events{}
	req.Progress = ev.add
	done := make(chan error, 1)
	go func() {
		defer GinkgoRecover()
		done <- h.bmc.Update(ctx, req)
	}()
	return ev, done
}

func request(typ string, img []byte, sig string) bmc.Request {
	return bmc.Request{Type: typ, Image: bytes.NewReader(img), Size: int64(len(img)), Signature: []byte(sig)}
}

func randomImage(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// jshell runs script in `jmp shell` on an exporter config naming the
// simulator, so j is the real CLI talking to the exporter it holds.
func jshell(ctx context.Context, yamlText, script string) (stdout, stderr string, code int) {
	GinkgoHelper()
	dir := GinkgoT().TempDir()
	cfg := filepath.Join(dir, "exporter.yaml")
	Expect(os.WriteFile(cfg, []byte(yamlText), 0o644)).To(Succeed())
	cmd := exec.CommandContext(ctx, jmp, "shell", "--exporter-config", cfg, "--", "sh", "-c", script)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err := cmd.Run()
	fmt.Fprintf(GinkgoWriter, "$ %s\n%s%s", script, out.String(), errb.String())
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	}
	Expect(err).NotTo(HaveOccurred())
	return out.String(), errb.String(), 0
}

// writeFile puts data in a fresh file and returns its path.
func writeFile(name string, data []byte) string {
	GinkgoHelper()
	p := filepath.Join(GinkgoT().TempDir(), name)
	Expect(os.WriteFile(p, data, 0o644)).To(Succeed())
	return p
}

// ipmitool runs Debian's ipmitool against the simulator.
func ipmitool(ctx context.Context, port int, userName, password string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	all := append([]string{"-I", "lanplus", "-H", "127.0.0.1", "-p", strconv.Itoa(port), "-U", userName, "-P", password, "-N", "1", "-R", "2"}, args...)
	out, err := exec.CommandContext(ctx, "ipmitool", all...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// blobRaw sends one blob command through ipmitool raw and decodes the
// reply body.
func blobRaw(ctx context.Context, port int, sub blob.Subcommand, body []byte) ([]byte, error) {
	args := []string{"raw", "0x2e", "0x80"}
	for _, b := range blob.EncodeRequest(sub, body) {
		args = append(args, fmt.Sprintf("0x%02x", b))
	}
	out, err := ipmitool(ctx, port, user, pass, args...)
	if err != nil {
		return nil, err
	}
	var resp []byte
	for _, f := range strings.Fields(out) {
		v, err := strconv.ParseUint(f, 16, 8)
		if err != nil {
			return nil, fmt.Errorf("ipmitool output %q: %w", out, err)
		}
		resp = append(resp, byte(v))
	}
	return blob.DecodeResponse(resp)
}

// dialDirect is a host talking to the simulator without the exporter (a
// crashed earlier run, say).
func dialDirect(ctx context.Context, s *sim) *blob.Client {
	GinkgoHelper()
	tr, err := ipmi.Dial(ctx, ipmi.Config{Host: "127.0.0.1", Port: s.port, Username: user, Password: pass, Timeout: 200 * time.Millisecond})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _ = tr.Close(context.Background()) })
	return &blob.Client{T: tr}
}

// jshellTTY is jshell with the command on a pseudo-terminal, as a person
// at a shell runs it.
func jshellTTY(ctx context.Context, yamlText, script string) (output string, code int) {
	GinkgoHelper()
	cfg := writeFile("exporter.yaml", []byte(yamlText))
	cmd := exec.CommandContext(ctx, jmp, "shell", "--exporter-config", cfg, "--", "sh", "-c", script)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	Expect(err).NotTo(HaveOccurred())
	// Reading ends with EIO once the last holder of the terminal exits.
	out, _ := io.ReadAll(tty)
	tty.Close()
	err = cmd.Wait()
	fmt.Fprintf(GinkgoWriter, "$ %s (on a terminal)\n%q\n", script, out)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	Expect(err).NotTo(HaveOccurred())
	return string(out), 0
}
