package flash

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/lab/bmcsim/flashconfig"
)

// action is a triggerable preparation, verification or update step, the
// simulator's counterpart of phosphor's TriggerableActionInterface.
type action interface {
	trigger(env []string) error
	abort()
	status() blob.ActionStatus
}

// Runner decides how systemd units are started. Where systemd runs, units are
// started with systemctl; elsewhere (CI) a configured stand-in command per
// unit plays the unit, its exit code being the job result.
type Runner struct {
	// StandIns maps a unit name to a shell command.
	StandIns map[string]string
	// Systemd reports whether systemctl may be used for units without a
	// stand-in.
	Systemd bool
	Log     *slog.Logger
}

// SystemdRunning reports whether the host runs systemd, using the same test
// as sd_booted(3).
func SystemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func (r *Runner) newAction(a *flashconfig.Action, resolve func(string) string, reboot func()) action {
	switch a.Type {
	case flashconfig.TypeSkip:
		return &skipAction{}
	case flashconfig.TypeReboot:
		return &rebootAction{reboot: reboot}
	case flashconfig.TypeSystemd:
		return &unitAction{r: r, unit: a.Unit, mode: a.Mode}
	case flashconfig.TypeFileSystemdVerify, flashconfig.TypeFileSystemdUpdate:
		return &fileStatusAction{unitAction: unitAction{r: r, unit: a.Unit, mode: a.Mode}, path: resolve(a.Path)}
	}
	// The loader rejects other types; keep the handler safe regardless.
	return &failAction{}
}

type skipAction struct{ triggered bool }

func (s *skipAction) trigger([]string) error { s.triggered = true; return nil }
func (s *skipAction) abort()                 {}
func (s *skipAction) status() blob.ActionStatus {
	if s.triggered {
		return blob.StatusSuccess
	}
	return blob.StatusUnknown
}

type failAction struct{}

func (failAction) trigger([]string) error    { return fmt.Errorf("unsupported action") }
func (failAction) abort()                    {}
func (failAction) status() blob.ActionStatus { return blob.StatusFailed }

// rebootAction never completes from the host's point of view: the BMC goes
// away instead.
type rebootAction struct {
	reboot    func()
	triggered bool
}

func (r *rebootAction) trigger([]string) error {
	r.triggered = true
	if r.reboot != nil {
		r.reboot()
	}
	return nil
}
func (r *rebootAction) abort() {}
func (r *rebootAction) status() blob.ActionStatus {
	if r.triggered {
		return blob.StatusRunning
	}
	return blob.StatusUnknown
}

// unitAction starts a systemd unit (or its stand-in) and tracks the job.
type unitAction struct {
	r    *Runner
	unit string
	mode string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	result blob.ActionStatus
	ran    bool
}

func (u *unitAction) trigger(env []string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.cmd != nil && !u.finished() {
		return nil // already running; phosphor triggers are idempotent
	}
	var cmd *exec.Cmd
	if sc, ok := u.r.StandIns[u.unit]; ok {
		u.r.Log.Info("systemd not used: running stand-in for unit", "unit", u.unit, "mode", u.mode, "command", sc)
		cmd = exec.Command("/bin/sh", "-c", sc)
	} else if u.r.Systemd {
		cmd = exec.Command("systemctl", "start", "--job-mode="+u.mode, u.unit)
	} else {
		u.r.Log.Error("systemd is not running and unit has no stand-in; failing the action", "unit", u.unit)
		return fmt.Errorf("unit %s: systemd not running and no stand-in configured", u.unit)
	}
	cmd.Env = append(os.Environ(), append(env, "BMCSIM_UNIT="+u.unit, "BMCSIM_MODE="+u.mode)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start unit %s: %w", u.unit, err)
	}
	u.cmd, u.done, u.ran = cmd, make(chan struct{}), true
	u.result = blob.StatusRunning
	done := u.done
	go func() {
		err := cmd.Wait()
		u.mu.Lock()
		defer u.mu.Unlock()
		if err == nil {
			u.result = blob.StatusSuccess
		} else {
			u.result = blob.StatusFailed
		}
		u.r.Log.Info("unit finished", "unit", u.unit, "result", u.result.String(), "output", strings.TrimSpace(out.String()))
		close(done)
	}()
	return nil
}

func (u *unitAction) finished() bool {
	select {
	case <-u.done:
		return true
	default:
		return false
	}
}

func (u *unitAction) abort() {
	u.mu.Lock()
	cmd, done := u.cmd, u.done
	u.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	u.r.Log.Info("aborting unit", "unit", u.unit)
	// The stand-in may have children; kill its whole process group.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if _, ok := u.r.StandIns[u.unit]; !ok && u.r.Systemd {
		_ = exec.CommandContext(context.Background(), "systemctl", "stop", u.unit).Run()
	}
	<-done
}

func (u *unitAction) status() blob.ActionStatus {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.ran {
		return blob.StatusUnknown
	}
	return u.result
}

// fileStatusAction starts its unit but takes the result from the first word
// of a status file the unit writes.
type fileStatusAction struct {
	unitAction
	path string
}

func (f *fileStatusAction) trigger(env []string) error {
	// A result left over from an earlier run must not pass for this one.
	_ = os.Remove(f.path)
	return f.unitAction.trigger(append(env, "BMCSIM_STATUS_FILE="+f.path))
}

func (f *fileStatusAction) status() blob.ActionStatus {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return blob.StatusUnknown
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return blob.StatusUnknown
	}
	switch fields[0] {
	case "running":
		return blob.StatusRunning
	case "success":
		return blob.StatusSuccess
	case "failed":
		return blob.StatusFailed
	}
	return blob.StatusUnknown
}
