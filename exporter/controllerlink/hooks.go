package controllerlink

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/exporter/config"
)

// Hooks runs exporter.yaml's beforeLease/afterLease scripts with j wired
// to the exporter itself: the hook holds a session on the exporter, and its
// j reaches it on the local socket (power is left as the script leaves it).
type Hooks struct {
	Before, After *config.Hook
	// Target is the exporter's local socket ("unix://…").
	Target string
	// Open opens a session for holder that keeps power at its end
	// (exporter.Server.OpenSession).
	Open func(holder string) (token string, end func(), err error)
	// Dir is a private directory for the j symlink.
	Dir  string
	Link *Link
	Log  *slog.Logger
}

// HookError is a failed hook with its onFailure policy.
type HookError struct {
	Which     string
	OnFailure string
	Err       error
}

func (e *HookError) Error() string { return fmt.Sprintf("%s hook: %v", e.Which, e.Err) }
func (e *HookError) Unwrap() error { return e.Err }

// Run runs hook "beforeLease" or "afterLease" for lease a; nil when no
// such hook is configured.
func (h *Hooks) Run(ctx context.Context, which string, a Assignment) error {
	hook := h.Before
	if which == "afterLease" {
		hook = h.After
	}
	if hook == nil {
		return nil
	}
	err := h.run(ctx, which, hook, a)
	if err != nil {
		return &HookError{Which: which, OnFailure: hook.OnFailure, Err: err}
	}
	return nil
}

func (h *Hooks) run(ctx context.Context, which string, hook *config.Hook, a Assignment) error {
	name := "hook:" + which
	h.Link.SetHook(name)
	defer h.Link.SetHook("")
	token, end, err := h.Open(name)
	if err != nil {
		return fmt.Errorf("open a session on the exporter: %w", err)
	}
	defer end()
	bin := filepath.Join(h.Dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	if self, err := os.Executable(); err == nil {
		_ = os.Remove(filepath.Join(bin, "j"))
		_ = os.Symlink(self, filepath.Join(bin, "j"))
	}
	hctx, cancel := context.WithTimeout(ctx, hook.Timeout)
	defer cancel()
	cmd := exec.CommandContext(hctx, "/bin/sh", "-c", hook.Script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Kill the whole process group: a script's children must not outlive it.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(),
		rpcmeta.EnvHost+"="+h.Target,
		rpcmeta.EnvSession+"="+token,
		"JMP_LEASE_ID="+a.Lease,
		"JMP_LEASE_CLIENT="+a.Client,
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
	)
	start := time.Now()
	err = cmd.Run()
	h.Log.Info("hook ran", "hook", which, "lease", a.Lease, "took", time.Since(start).Round(time.Millisecond), "err", err, "output", strings.TrimSpace(out.String()))
	if hctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("timed out after %s", hook.Timeout)
	}
	if err != nil {
		return fmt.Errorf("%w: %s", err, lastLine(out.String()))
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
