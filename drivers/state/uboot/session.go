package uboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pogolab/pogo/drivers/console/expect"
)

// Session is the board's console held for a transition and, after
// Acquire, by its caller: an expecter fed by a pump that can hand the
// console over to a shell client. Close releases the console and the
// board.
type Session struct {
	att     io.ReadWriteCloser
	e       *expect.Expecter
	prompt  string // the prompt of the state reached
	release func()

	mu      sync.Mutex
	dest    io.Writer // the expecter, then a shell
	pw      *io.PipeWriter
	console func([]byte)
	done    chan struct{}
	once    sync.Once
}

func newSession(att io.ReadWriteCloser, console func([]byte), release func()) *Session {
	pr, pw := io.Pipe()
	s := &Session{att: att, dest: pw, pw: pw, console: console, release: release, done: make(chan struct{})}
	s.e = expect.New(struct {
		io.Reader
		io.Writer
	}{pr, att})
	go s.pump()
	return s
}

// pump copies console output to the current destination.
func (s *Session) pump() {
	defer close(s.done)
	buf := make([]byte, 32<<10)
	for {
		n, err := s.att.Read(buf)
		if n > 0 {
			// The lock is held across the write so HandOver never switches
			// destinations under a chunk in flight.
			s.mu.Lock()
			if s.console != nil {
				s.console(append([]byte(nil), buf[:n]...))
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

// Expecter is the console under expect.
func (s *Session) Expecter() *expect.Expecter { return s.e }

// Prompt is the prompt of the state reached ("=> ", "# ").
func (s *Session) Prompt() string { return s.prompt }

// Write sends p to the console.
func (s *Session) Write(p []byte) (int, error) { return s.att.Write(p) }

// StopConsole stops copying console output to the Acquire's Console func.
func (s *Session) StopConsole() {
	s.mu.Lock()
	s.console = nil
	s.mu.Unlock()
}

// HandOver sends console output to w from now on: first consumed (the
// prompt the expecter matched), then what the expecter read but did not
// match (busybox's cursor query behind its prompt), then the live console.
func (s *Session) HandOver(w io.WriteCloser, consumed string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pw.Close()
	s.pw = nil
	_, _ = io.WriteString(w, consumed)
	_, _ = w.Write(s.e.Rest())
	s.dest = w
}

// Close detaches from the console and frees the board for the next
// transition. The board keeps its power.
func (s *Session) Close() {
	s.once.Do(func() {
		s.att.Close()
		<-s.done
		if s.release != nil {
			s.release()
		}
	})
}

// TranscriptTail is the last n bytes the console printed.
func (s *Session) TranscriptTail(n int) string {
	t := s.e.Transcript()
	if len(t) > n {
		t = t[len(t)-n:]
	}
	return t
}

var rcMarker = regexp.MustCompile(`pogo-rc=(\d+)`)

// Run types cmd followed by an echo of its status at a shell or U-Boot
// prompt and returns its output (without the echoed command line) and
// status. The echoed command shows "pogo-rc=$?" literally, so only the
// real status matches.
func (s *Session) Run(ctx context.Context, timeout time.Duration, cmd, prompt string) (string, int, error) {
	if err := s.e.SendLine(cmd + "; echo pogo-rc=$?"); err != nil {
		return "", -1, err
	}
	before, m, err := s.e.ExpectRegexp(ctx, timeout, rcMarker)
	if err != nil {
		if errors.Is(err, expect.ErrTimeout) {
			return before, -1, fmt.Errorf("%q did not finish within %s (last output: %q)", cmd, timeout, LastLine(before))
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

// StepError is a failed step of a transition: it names the step and
// carries the last console lines.
type StepError struct {
	Step string
	Err  error
	// Console is the last lines the board printed.
	Console string
}

func (e *StepError) Error() string {
	msg := e.Step + ": " + e.Err.Error()
	if e.Console != "" && !strings.Contains(msg, "last output") {
		msg += fmt.Sprintf(" (last console lines: %q)", e.Console)
	}
	return msg
}

func (e *StepError) Unwrap() error { return e.Err }

func stepf(step, format string, args ...any) error {
	return &StepError{Step: step, Err: fmt.Errorf(format, args...)}
}

// LastLine is the last non-empty line of s, cleaned for messages.
func LastLine(s string) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r", ""), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(stripEscapes(lines[i]))
		if l != "" && l != "=>" && l != "#" {
			return l
		}
	}
	return ""
}

// lastLines is the last n non-empty lines of s, cleaned.
func lastLines(s string, n int) string {
	var out []string
	lines := strings.Split(strings.ReplaceAll(s, "\r", ""), "\n")
	for i := len(lines) - 1; i >= 0 && len(out) < n; i-- {
		if l := strings.TrimSpace(stripEscapes(lines[i])); l != "" {
			out = append([]string{l}, out...)
		}
	}
	return strings.Join(out, "\n")
}

var escapes = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func stripEscapes(s string) string { return escapes.ReplaceAllString(s, "") }

// ErrorLine picks the line of U-Boot output that says what went wrong.
func ErrorLine(out string) string {
	for _, l := range strings.Split(strings.ReplaceAll(out, "\r", ""), "\n") {
		ll := strings.ToLower(l)
		if strings.Contains(ll, "error") || strings.Contains(ll, "not found") || strings.Contains(ll, "failed") ||
			strings.Contains(ll, "timeout") || strings.Contains(ll, "retry count exceeded") || strings.Contains(ll, "bad ") {
			return strings.TrimSpace(l)
		}
	}
	if l := LastLine(out); l != "" {
		return l
	}
	return "no output"
}
