package flasher

import (
	"context"
	"fmt"
	"time"

	"github.com/pogolab/pogo/drivers/state/uboot"
)

// session is the board's console held by the flasher once the state
// machine reached the flasher's shell.
type session struct {
	us *uboot.Session
}

func (s *session) run(ctx context.Context, timeout time.Duration, cmd, prompt string) (string, int, error) {
	return s.us.Run(ctx, timeout, cmd, prompt)
}

func (s *session) close() { s.us.Close() }

// stepErr names a failed step.
type stepErr struct {
	phase string
	err   error
}

func (e *stepErr) Error() string { return e.phase + ": " + e.err.Error() }
func (e *stepErr) Unwrap() error { return e.err }

func stepf(phase, format string, args ...any) error {
	return &stepErr{phase: phase, err: fmt.Errorf(format, args...)}
}

// lastLine is the last non-empty line of s, cleaned for messages.
func lastLine(s string) string { return uboot.LastLine(s) }
