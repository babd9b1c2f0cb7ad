// Package expect automates a console: send text, wait for a literal or a
// regular expression with a timeout, and keep a transcript. It is what the
// flasher and the specs use to drive U-Boot and busybox shells.
package expect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ErrTimeout is wrapped by every Expect that runs out of time.
var ErrTimeout = errors.New("timed out")

// ErrClosed is wrapped by every Expect whose console ended first.
var ErrClosed = errors.New("console closed")

// Expecter reads a console in the background and matches against what
// has not been consumed yet.
type Expecter struct {
	w io.Writer
	r io.Reader
	// LineEnd ends SendLine's lines; "\n" by default (a carriage return
	// as well would make U-Boot repeat the last command).
	LineEnd string

	mu         sync.Mutex
	cond       *sync.Cond
	pending    []byte
	transcript bytes.Buffer
	err        error
	tee        io.Writer
}

// New starts reading rw. Close rw to stop the reader.
func New(rw io.ReadWriter) *Expecter {
	e := &Expecter{w: rw, r: rw, LineEnd: "\n"}
	e.cond = sync.NewCond(&e.mu)
	go e.read()
	return e
}

// Tee copies everything read to w as well (for --console-debug).
func (e *Expecter) Tee(w io.Writer) {
	e.mu.Lock()
	e.tee = w
	e.mu.Unlock()
}

func (e *Expecter) read() {
	buf := make([]byte, 32<<10)
	for {
		n, err := e.r.Read(buf)
		e.mu.Lock()
		if n > 0 {
			e.pending = append(e.pending, buf[:n]...)
			e.transcript.Write(buf[:n])
			if e.tee != nil {
				_, _ = e.tee.Write(buf[:n])
			}
		}
		if err != nil {
			e.err = err
		}
		e.cond.Broadcast()
		e.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Send writes s as is.
func (e *Expecter) Send(s string) error {
	_, err := io.WriteString(e.w, s)
	if err != nil {
		return fmt.Errorf("expect: send: %w", err)
	}
	return nil
}

// SendLine writes s and a line end.
func (e *Expecter) SendLine(s string) error { return e.Send(s + e.LineEnd) }

// Expect waits up to timeout for literal and returns what came before it;
// the match and everything before it are consumed.
func (e *Expecter) Expect(ctx context.Context, timeout time.Duration, literal string) (string, error) {
	before, _, err := e.wait(ctx, timeout, fmt.Sprintf("%q", literal), func(b []byte) (int, int, []string) {
		i := bytes.Index(b, []byte(literal))
		if i < 0 {
			return -1, -1, nil
		}
		return i, i + len(literal), []string{literal}
	})
	return before, err
}

// ExpectRegexp waits for re and returns what came before the match and the
// match with its groups.
func (e *Expecter) ExpectRegexp(ctx context.Context, timeout time.Duration, re *regexp.Regexp) (string, []string, error) {
	return e.wait(ctx, timeout, "/"+re.String()+"/", func(b []byte) (int, int, []string) {
		loc := re.FindSubmatchIndex(b)
		if loc == nil {
			return -1, -1, nil
		}
		var groups []string
		for i := 0; i+1 < len(loc); i += 2 {
			if loc[i] < 0 {
				groups = append(groups, "")
				continue
			}
			groups = append(groups, string(b[loc[i]:loc[i+1]]))
		}
		return loc[0], loc[1], groups
	})
}

// ExpectFunc waits for match to accept what has been read and not yet
// consumed, and returns that text up to the end match gives (the rest
// stays pending). match returns -1 while it waits for more; what names the
// wait in errors. It is how a caller waits for something a literal or a
// regexp cannot say: a prompt at the very end of the output, after a
// command's echo (cli.Script).
func (e *Expecter) ExpectFunc(ctx context.Context, timeout time.Duration, what string, match func(pending []byte) (end int)) (string, error) {
	before, _, err := e.wait(ctx, timeout, what, func(b []byte) (int, int, []string) {
		end := match(b)
		if end < 0 {
			return -1, -1, nil
		}
		return end, end, nil
	})
	return before, err
}

// ExpectAny waits for the first of several literals and returns its index.
func (e *Expecter) ExpectAny(ctx context.Context, timeout time.Duration, literals ...string) (int, string, error) {
	quoted := make([]string, len(literals))
	for i, l := range literals {
		quoted[i] = regexp.QuoteMeta(l)
	}
	re := regexp.MustCompile(strings.Join(quoted, "|"))
	before, m, err := e.ExpectRegexp(ctx, timeout, re)
	if err != nil {
		return -1, before, err
	}
	for i, l := range literals {
		if m[0] == l {
			return i, before, nil
		}
	}
	return -1, before, nil
}

func (e *Expecter) wait(ctx context.Context, timeout time.Duration, what string, match func([]byte) (int, int, []string)) (string, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		e.mu.Lock()
		e.cond.Broadcast()
		e.mu.Unlock()
	})
	defer stop()
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		if s, end, m := match(e.pending); s >= 0 {
			before := string(e.pending[:s])
			e.pending = append([]byte(nil), e.pending[end:]...)
			return before, m, nil
		}
		if e.err != nil {
			return string(e.pending), nil, fmt.Errorf("expect %s: %w: %w", what, ErrClosed, e.err)
		}
		if err := ctx.Err(); err != nil {
			tail := lastLines(string(e.pending), 3)
			if errors.Is(err, context.DeadlineExceeded) {
				return string(e.pending), nil, fmt.Errorf("expect: no %s after %s (last output: %q): %w", what, timeout, tail, ErrTimeout)
			}
			return string(e.pending), nil, fmt.Errorf("expect %s: %w", what, err)
		}
		e.cond.Wait()
	}
}

// Discard drops what has been read but not matched.
func (e *Expecter) Discard() {
	e.mu.Lock()
	e.pending = nil
	e.mu.Unlock()
}

// Rest waits until the source has ended (its reader closed) and returns
// what was read but not matched: how a caller takes the console over
// from the expecter without losing a byte.
func (e *Expecter) Rest() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.err == nil {
		e.cond.Wait()
	}
	rest := e.pending
	e.pending = nil
	return rest
}

// Transcript returns everything read so far.
func (e *Expecter) Transcript() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.transcript.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\r\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "\n")
	if len(out) > 300 {
		out = out[len(out)-300:]
	}
	return out
}
