package lease_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/specs/board"
)

// jmp is the binary built once per suite.
var jmp string

// proc is a process the spec started; it is killed (group and all) when
// the spec ends.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuf
	done chan struct{}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(env []string, args ...string) *proc {
	GinkgoHelper()
	cmd := exec.Command(jmp, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{cmd: cmd, out: &syncBuf{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	Expect(cmd.Start()).To(Succeed())
	go func() { _ = cmd.Wait(); close(p.done) }()
	DeferCleanup(func() { p.stop(syscall.SIGTERM) })
	return p
}

// stop signals the process group and waits, killing after 10 s.
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func freePort() string {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	defer l.Close()
	return l.Addr().String()
}

// lab is a controller with its exporters and clients, all processes.
type lab struct {
	dir     string
	addr    string
	dataDir string
	ctl     *proc
	extra   []string // extra controller flags
}

func newLab(extra ...string) *lab {
	GinkgoHelper()
	dir := GinkgoT().TempDir()
	l := &lab{dir: dir, addr: freePort(), dataDir: filepath.Join(dir, "ctl"), extra: extra}
	l.startController()
	return l
}

func (l *lab) startController() {
	GinkgoHelper()
	args := append([]string{"controller", "--data-dir", l.dataDir, "--listen", l.addr}, l.extra...)
	l.ctl = start(nil, args...)
	Eventually(func() error {
		c, err := net.Dial("tcp", l.addr)
		if err == nil {
			c.Close()
		}
		return err
	}, 30*time.Second, 50*time.Millisecond).Should(Succeed(), func() string { return l.ctl.out.String() })
}

// admin runs jmp admin and returns its output.
func (l *lab) admin(args ...string) string {
	GinkgoHelper()
	out, err := exec.Command(jmp, append([]string{"admin", "--data-dir", l.dataDir}, args...)...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	return strings.TrimSpace(string(out))
}

func (l *lab) caFile() string {
	return filepath.Join(l.dataDir, "ca.crt")
}

// exporter starts `jmp run` for an exporter whose power is a file; its
// hooks record each lease in rec (the exporter's own record).
type exporterProc struct {
	name, cfg, power, rec, sock string
	p                           *proc
}

func (l *lab) exporter(name, labels string) *exporterProc {
	GinkgoHelper()
	return l.exporterAt(name, labels, l.addr, l.admin("create", "exporter", name))
}

func (l *lab) exporterAt(name, labels, endpoint, token string) *exporterProc {
	GinkgoHelper()
	d := filepath.Join(l.dir, "exp-"+name)
	Expect(os.MkdirAll(d, 0o755)).To(Succeed())
	e := &exporterProc{name: name, cfg: filepath.Join(d, "exporter.yaml"), power: filepath.Join(d, "power"), rec: filepath.Join(d, "record"), sock: filepath.Join(d, "exporter.sock")}
	yaml := fmt.Sprintf(`apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata:
  name: %s
  labels: {%s}
endpoint: %s
token: %s
tls:
  ca: %s
hooks:
  beforeLease:
    script: echo "start $JMP_LEASE_ID $JMP_LEASE_CLIENT $(date +%%s.%%N)" >> %s
  afterLease:
    script: j power off && echo "end $JMP_LEASE_ID $JMP_LEASE_CLIENT $(date +%%s.%%N)" >> %s
export:
  power:
    type: command-power
    config:
      on: echo on > %s
      off: echo off > %s
      status: grep -q on %s
      delay: 10ms
`, name, labels, endpoint, token, l.caFile(), e.rec, e.rec, e.power, e.power, e.power)
	Expect(os.WriteFile(e.cfg, []byte(yaml), 0o644)).To(Succeed())
	e.start()
	return e
}

func (e *exporterProc) start() {
	GinkgoHelper()
	e.p = start(nil, "run", "-c", e.cfg, "--socket", e.sock)
}

func (e *exporterProc) powerState() string {
	b, _ := os.ReadFile(e.power)
	return strings.TrimSpace(string(b))
}

// user is a client identity with its own config file.
type user struct {
	name string
	env  []string
}

func (l *lab) user(name string) *user {
	GinkgoHelper()
	tok := l.admin("create", "client", name)
	cfg := filepath.Join(l.dir, "client-"+name+".yaml")
	u := &user{name: name, env: []string{"POGO_CLIENT_CONFIG=" + cfg}}
	out, err := u.jmp("login", "--endpoint", l.addr, "--token", tok, "--ca", l.caFile())
	Expect(err).NotTo(HaveOccurred(), out)
	return u
}

// jmp runs a short jmp command as the user.
func (u *user) jmp(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, jmp, args...)
	cmd.Env = append(os.Environ(), u.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// shell starts `jmp shell` as the user in the background.
func (u *user) shell(args ...string) *proc {
	GinkgoHelper()
	return start(u.env, append([]string{"shell"}, args...)...)
}

func exitCode(p *proc) int {
	return p.cmd.ProcessState.ExitCode()
}

var _ = SynchronizedBeforeSuite(func() []byte {
	root, err := board.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	dir, err := os.MkdirTemp("", "pogo-lease-spec-")
	Expect(err).NotTo(HaveOccurred())
	bin := filepath.Join(dir, "jmp")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/jmp")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	return []byte(bin)
}, func(b []byte) {
	jmp = string(b)
	DeferCleanup(func() { os.RemoveAll(filepath.Dir(jmp)) })
})
