// Package hooks runs exporter.yaml's beforeLease and afterLease scripts
// with Jumpstarter's meaning: script is the script's text or names a file
// to run, exec is the interpreter, a .py file runs with python3, and the
// script sees the lease in LEASE_NAME/CLIENT_NAME (and JMP_LEASE_ID/
// JMP_LEASE_CLIENT) with j wired to the exporter itself.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter/config"
)

// Hook names.
const (
	Before = "beforeLease"
	After  = "afterLease"
)

// onFailure policies.
const (
	Warn     = "warn"
	EndLease = "endLease"
	Exit     = "exit"
)

// Reach is how a hook's j reaches the exporter: JMP_HOST, the session
// token the hook holds, and any more of j's environment (a direct-mode
// exporter's passphrase and fingerprint).
type Reach struct {
	Host, Session string
	Env           []string
}

// Runner runs the hooks of one exporter.
type Runner struct {
	Hooks config.Hooks
	// Open gives the hook a session on the exporter (power left as the
	// script leaves it) and a func that ends it.
	Open func(ctx context.Context, which string) (Reach, func(), error)
	// Dir is a private directory for the j symlink.
	Dir string
	Log *slog.Logger
}

// Error is a failed hook with its onFailure policy.
type Error struct {
	Hook      string
	OnFailure string
	Err       error
}

func (e *Error) Error() string { return fmt.Sprintf("%s hook failed: %v", e.Hook, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Has reports whether hook which is configured.
func (r *Runner) Has(which string) bool { return r.hook(which) != nil }

func (r *Runner) hook(which string) *config.Hook {
	if which == After {
		return r.Hooks.AfterLease
	}
	return r.Hooks.BeforeLease
}

// Run runs hook which for lease l, passing each line the script writes
// (stdout and stderr) to out as it comes; nil when no such hook is
// configured, an *Error when it fails.
func (r *Runner) Run(ctx context.Context, which string, l drivers.Lease, out func(line string)) error {
	hook := r.hook(which)
	if hook == nil {
		return nil
	}
	if err := r.run(ctx, which, hook, l, out); err != nil {
		return &Error{Hook: which, OnFailure: hook.OnFailure, Err: err}
	}
	return nil
}

func (r *Runner) run(ctx context.Context, which string, hook *config.Hook, l drivers.Lease, out func(string)) error {
	reach, done, err := r.Open(ctx, which)
	if err != nil {
		return fmt.Errorf("open a session on the exporter: %w", err)
	}
	defer done()
	bin := filepath.Join(r.Dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	if self, err := os.Executable(); err == nil {
		_ = os.Remove(filepath.Join(bin, "j"))
		_ = os.Symlink(self, filepath.Join(bin, "j"))
	}
	hctx, cancel := context.WithTimeout(ctx, hook.Timeout)
	defer cancel()
	name, args := Command(hook)
	cmd := exec.CommandContext(hctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Kill the whole process group: a script's children must not outlive it.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	lw := &lineWriter{f: func(line string) {
		r.Log.Info("hook output", "hook", which, "lease", l.ID, "line", line)
		if out != nil {
			out(line)
		}
	}}
	cmd.Stdout, cmd.Stderr = lw, lw
	cmd.Env = append(os.Environ(), l.Env()...)
	cmd.Env = append(cmd.Env,
		rpcmeta.EnvHost+"="+reach.Host,
		rpcmeta.EnvSession+"="+reach.Session,
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
	)
	cmd.Env = append(cmd.Env, reach.Env...)
	start := time.Now()
	err = cmd.Run()
	lw.Close()
	r.Log.Info("hook ran", "hook", which, "lease", l.ID, "took", time.Since(start).Round(time.Millisecond), "err", err)
	if errors.Is(hctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("timed out after %s", hook.Timeout)
	}
	if err != nil {
		if last := lw.Last(); last != "" {
			return fmt.Errorf("%w: %s", err, last)
		}
		return err
	}
	return nil
}

// Command is what runs hook h: a script naming a file runs that file
// (with Exec, python3 for .py, itself when executable, or /bin/sh); any
// other script runs as `Exec -c script` (Exec defaults to /bin/sh).
func Command(h *config.Hook) (string, []string) {
	if file, ok := scriptFile(h.Script); ok {
		switch {
		case h.Exec != "":
			return h.Exec, []string{file}
		case strings.HasSuffix(file, ".py"):
			return "python3", []string{file}
		}
		if st, err := os.Stat(file); err == nil && st.Mode()&0o111 != 0 {
			return file, nil
		}
		return "/bin/sh", []string{file}
	}
	sh := h.Exec
	if sh == "" {
		sh = "/bin/sh"
	}
	return sh, []string{"-c", h.Script}
}

// scriptFile is the file a script names: one line holding a path (with a
// slash) to an existing regular file.
func scriptFile(script string) (string, bool) {
	s := strings.TrimSpace(script)
	if s == "" || strings.ContainsAny(s, "\n \t;|&$") || !strings.Contains(s, "/") {
		return "", false
	}
	st, err := os.Stat(s)
	if err != nil || !st.Mode().IsRegular() {
		return "", false
	}
	return s, true
}

var jumpstarterImport = regexp.MustCompile(`^\s*(from\s+jumpstarter[\w.]*\s+import\b.*|import\s+jumpstarter[\w.]*.*)$`)

// Check returns start-up warnings for hooks pogo runs differently from
// Jumpstarter: a script importing Jumpstarter's Python API, which pogo
// does not provide.
func Check(h config.Hooks) []string {
	var warns []string
	for _, which := range []string{Before, After} {
		hook := h.BeforeLease
		if which == After {
			hook = h.AfterLease
		}
		if hook == nil {
			continue
		}
		text, where := hook.Script, "hooks."+which+".script"
		if file, ok := scriptFile(hook.Script); ok {
			b, err := os.ReadFile(file)
			if err != nil {
				continue
			}
			text, where = string(b), file
		}
		for i, line := range strings.Split(text, "\n") {
			if jumpstarterImport.MatchString(line) {
				warns = append(warns, fmt.Sprintf("%s:%d: %q imports Jumpstarter's Python API, which pogo does not provide: drive the exporter with j commands (j power on) instead", where, i+1, strings.TrimSpace(line)))
			}
		}
	}
	return warns
}

// lineWriter passes each complete line to f.
type lineWriter struct {
	mu   sync.Mutex
	buf  []byte
	last string
	f    func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	// A runaway line without newline is cut rather than held forever.
	if len(w.buf) > 64<<10 {
		w.emit(string(w.buf))
		w.buf = nil
	}
	return len(p), nil
}

func (w *lineWriter) emit(line string) {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) != "" {
		w.last = line
	}
	w.f(line)
}

// Close passes on a last line without newline.
func (w *lineWriter) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(string(w.buf))
		w.buf = nil
	}
}

// Last is the last non-blank line written.
func (w *lineWriter) Last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

var _ io.Writer = (*lineWriter)(nil)
