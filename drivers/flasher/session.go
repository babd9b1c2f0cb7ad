package flasher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/console/expect"
)

// session is the board's console under the flasher's control: an
// expecter fed by a pump that can later hand the console over to a shell
// client.
type session struct {
	att    io.ReadWriteCloser
	e      *expect.Expecter
	log    *slog.Logger
	emit   func(Event)
	prompt string // the bootloader prompt

	mu    sync.Mutex
	dest  io.Writer // where console output goes: the expecter, then a shell
	pw    *io.PipeWriter
	debug bool
	done  chan struct{}
}

// openSession attaches to the console as writer before the board powers
// on, so no output is missed.
func (d *Driver) openSession(ctx context.Context, emit func(Event), debug bool) (*session, error) {
	att, err := d.console.Attach(context.WithoutCancel(ctx), console.AttachOptions{Write: true})
	if err != nil {
		return nil, fmt.Errorf("attach to the console: %w", err)
	}
	pr, pw := io.Pipe()
	s := &session{att: att, log: d.log, emit: emit, prompt: d.cfg.Prompt, dest: pw, pw: pw, debug: debug, done: make(chan struct{})}
	s.e = expect.New(struct {
		io.Reader
		io.Writer
	}{pr, att})
	go s.pump()
	return s, nil
}

// pump copies console output to the current destination.
func (s *session) pump() {
	defer close(s.done)
	buf := make([]byte, 32<<10)
	for {
		n, err := s.att.Read(buf)
		if n > 0 {
			// The lock is held across the write so handOver never switches
			// destinations under a chunk in flight.
			s.mu.Lock()
			if s.debug {
				s.emit(Event{Console: append([]byte(nil), buf[:n]...)})
			}
			if s.dest != nil {
				_, _ = s.dest.Write(buf[:n])
			}
			s.mu.Unlock()
		}
		if err != nil {
			s.mu.Lock()
			if s.pw != nil {
				s.pw.CloseWithError(fmt.Errorf("console: %w", err))
			} else if c, ok := s.dest.(io.Closer); ok {
				c.Close()
			}
			s.mu.Unlock()
			return
		}
	}
}

// handOver sends console output to w from now on: first consumed (the
// prompt the expecter matched), then what the expecter read but did not
// match (busybox's cursor query behind its prompt), then the live console.
func (s *session) handOver(w io.WriteCloser, consumed string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pw.Close()
	s.pw = nil
	_, _ = io.WriteString(w, consumed)
	_, _ = w.Write(s.e.Rest())
	s.dest = w
}

func (s *session) close() {
	s.att.Close()
	<-s.done
}

func (s *session) transcriptTail(n int) string {
	t := s.e.Transcript()
	if len(t) > n {
		t = t[len(t)-n:]
	}
	return t
}

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

// waitBootloader stops autoboot and waits for the prompt.
func (s *session) waitBootloader(ctx context.Context, timeout time.Duration) error {
	i, _, err := s.e.ExpectAny(ctx, timeout, "Hit any key to stop autoboot", "autoboot:", s.prompt)
	if err != nil {
		if errors.Is(err, expect.ErrTimeout) {
			return stepf(PhaseBootloader, "no U-Boot prompt after %s (last output: %q)", timeout, lastLine(s.transcriptTail(400)))
		}
		return &stepErr{PhaseBootloader, err}
	}
	if i < 2 {
		// Any key stops the countdown; a second one is harmless at the
		// prompt. Ctrl-C also clears a partly typed line.
		if err := s.e.Send(" \x03"); err != nil {
			return &stepErr{PhaseBootloader, err}
		}
		if _, err := s.e.Expect(ctx, 10*time.Second, s.prompt); err != nil {
			return stepf(PhaseBootloader, "autoboot interrupted but no prompt %q after 10s", s.prompt)
		}
	}
	// Settle: whatever the keys caused, end at a fresh prompt.
	if _, _, err := s.run(ctx, 10*time.Second, "true", s.prompt); err != nil {
		return &stepErr{PhaseBootloader, err}
	}
	return nil
}

var rcMarker = regexp.MustCompile(`pogo-rc=(\d+)`)

// run types cmd followed by an echo of its status and returns its output
// (without the echoed command line) and status. The echoed command shows
// "pogo-rc=$?" literally, so only the real status matches.
func (s *session) run(ctx context.Context, timeout time.Duration, cmd, prompt string) (string, int, error) {
	if err := s.e.SendLine(cmd + "; echo pogo-rc=$?"); err != nil {
		return "", -1, err
	}
	before, m, err := s.e.ExpectRegexp(ctx, timeout, rcMarker)
	if err != nil {
		if errors.Is(err, expect.ErrTimeout) {
			return before, -1, fmt.Errorf("%q did not finish within %s (last output: %q)", cmd, timeout, lastLine(before))
		}
		return before, -1, fmt.Errorf("%q: %w", cmd, err)
	}
	rc, _ := strconv.Atoi(m[1])
	if _, err := s.e.Expect(ctx, 10*time.Second, prompt); err != nil {
		return before, rc, fmt.Errorf("%q: no prompt afterwards: %w", cmd, err)
	}
	out := before
	if i := strings.Index(out, "\n"); i >= 0 {
		out = out[i+1:]
	}
	return strings.TrimSpace(strings.ReplaceAll(out, "\r", "")), rc, nil
}

// lastLine is the last non-empty line of s, cleaned for messages.
func lastLine(s string) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r", ""), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(stripEscapes(lines[i]))
		if l != "" && l != "=>" && l != "#" {
			return l
		}
	}
	return ""
}

var escapes = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func stripEscapes(s string) string { return escapes.ReplaceAllString(s, "") }

// errorLine picks the line of U-Boot output that says what went wrong.
func errorLine(out string) string {
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r", ""), "\n") {
		ll := strings.ToLower(l)
		if strings.Contains(ll, "error") || strings.Contains(ll, "not found") || strings.Contains(ll, "failed") ||
			strings.Contains(ll, "timeout") || strings.Contains(ll, "retry count exceeded") || strings.Contains(ll, "bad ") {
			return strings.TrimSpace(l)
		}
	}
	if l := lastLine(out); l != "" {
		return l
	}
	return "no output"
}
