// Package command is the power backend that runs shell commands: whatever
// switches a board (a relay tool, a vendor CLI) becomes a power driver.
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/power"
)

// Config is the `command-power` kind's config.
type Config struct {
	On  string `yaml:"on,required"`
	Off string `yaml:"off,required"`
	// Cycle defaults to off, delay, on.
	Cycle string `yaml:"cycle"`
	// Status prints on/off/1/0/true/false, or, printing none of those,
	// exits 0 when the board is on (see ParseStatus).
	Status  string        `yaml:"status"`
	Timeout time.Duration `yaml:"timeout"`
	Delay   time.Duration `yaml:"delay"`
}

func init() {
	drivers.Register(drivers.Kind{
		Name: "command-power",
		New: func(ctx context.Context, b *drivers.Build) (drivers.Driver, error) {
			var c Config
			if err := b.Config.Decode(&c); err != nil {
				return nil, err
			}
			return New(c)
		},
	})
}

// Driver runs the configured commands with sh -c; during a lease they see
// JMP_LEASE_ID, JMP_LEASE_CLIENT, LEASE_NAME and CLIENT_NAME.
type Driver struct {
	c Config
}

// New checks c and returns a driver.
func New(c Config) (*Driver, error) {
	if strings.TrimSpace(c.On) == "" {
		return nil, drivers.FieldErr("on", "must not be empty")
	}
	if strings.TrimSpace(c.Off) == "" {
		return nil, drivers.FieldErr("off", "must not be empty")
	}
	if c.Timeout < 0 {
		return nil, drivers.FieldErr("timeout", "must not be negative")
	}
	if c.Delay < 0 {
		return nil, drivers.FieldErr("delay", "must not be negative")
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.Delay == 0 {
		c.Delay = 2 * time.Second
	}
	return &Driver{c: c}, nil
}

func (d *Driver) On(ctx context.Context) error  { _, err := d.run(ctx, "on", d.c.On); return err }
func (d *Driver) Off(ctx context.Context) error { _, err := d.run(ctx, "off", d.c.Off); return err }

// Cycle implements power.Cycler.
func (d *Driver) Cycle(ctx context.Context, delay time.Duration) error {
	if d.c.Cycle != "" {
		_, err := d.run(ctx, "cycle", d.c.Cycle)
		return err
	}
	if delay == 0 {
		delay = d.c.Delay
	}
	return power.OffWaitOn(ctx, d.Off, d.On, delay)
}

// State implements power.Reader; without a status command the state is
// unknown.
func (d *Driver) State(ctx context.Context) (power.State, error) {
	if d.c.Status == "" {
		return power.Unknown, nil
	}
	out, err := d.run(ctx, "status", d.c.Status)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return power.Unknown, err
	}
	return ParseStatus(out, err == nil), nil
}

// ParseStatus reads a status command's result: its standard output, trimmed
// and case-insensitive, when that is on, off, 1, 0, true or false; otherwise
// its exit status, 0 being on. So both `relay 3 get` printing "off" and
// `test -e /run/relay3` work.
func ParseStatus(stdout string, exitedZero bool) power.State {
	switch strings.ToLower(strings.TrimSpace(stdout)) {
	case "on", "1", "true":
		return power.On
	case "off", "0", "false":
		return power.Off
	}
	if exitedZero {
		return power.On
	}
	return power.Off
}

// Reset implements drivers.Resetter: the safe state is off.
func (d *Driver) Reset(ctx context.Context) error { return d.Off(ctx) }

// Close implements drivers.Driver.
func (d *Driver) Close() error { return nil }

// Description implements drivers.Describer.
func (d *Driver) Description() string { return "power by command: " + d.c.On }

// run runs script and returns its standard output; the error carries
// standard error too.
func (d *Driver) run(ctx context.Context, what, script string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.c.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	// Own process group, so a timeout kills the whole pipeline and nothing
	// the command started lingers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	// The lease the call serves, for scripts that log or check it.
	if env := drivers.LeaseEnv(ctx); env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	// Both streams go to out (for the error), stdout alone to stdout; exec
	// copies the two from their own goroutines, so out takes a lock.
	var stdout bytes.Buffer
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = io.MultiWriter(out, &stdout), out
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return "", fmt.Errorf("power %s: %q timed out after %s: %w", what, script, d.c.Timeout, context.DeadlineExceeded)
	}
	if err != nil {
		msg := strings.TrimSpace(out.String())
		if msg != "" {
			msg = ": " + msg
		}
		return stdout.String(), fmt.Errorf("power %s: %q: %w%s", what, script, err, msg)
	}
	return stdout.String(), nil
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
