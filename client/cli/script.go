package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Script runs the lines of in on a console shell whose prompt ends with
// prompt, copying what the shell prints to out, as a terminal would show
// it. A line is sent only once the shell has prompted again (or asked for
// a continuation line), so a console's small input buffer never overflows
// and typed-ahead input never echoes into a command's output. Blank lines
// are skipped: U-Boot repeats its last command on one.
//
// After the last line Script asks the shell for the last exit status
// ($?) and returns an *ExitError when it is not zero. Each line may run
// for timeout before Script gives up.
func Script(ctx context.Context, sh io.ReadWriter, prompt string, in io.Reader, out io.Writer, timeout time.Duration) error {
	if prompt == "" {
		return errors.New("script: the shell did not say what its prompt is")
	}
	r := newShellReader(sh)
	// The shell's output starts with its prompt.
	if err := r.await(ctx, timeout, out, func(b []byte) bool { return promptEnds(b, prompt) }); err != nil {
		return fmt.Errorf("script: waiting for the first prompt %q: %w", prompt, err)
	}
	lines := bufio.NewReader(in)
	for {
		line, rerr := lines.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if strings.TrimSpace(line) != "" {
			if _, err := io.WriteString(sh, line+"\n"); err != nil {
				return fmt.Errorf("script: send %q: %w", line, err)
			}
			// The echo of the line ends at its newline; the prompt is
			// looked for after it, so a line mentioning the prompt cannot
			// end the wait.
			err := r.await(ctx, timeout, out, func(b []byte) bool {
				i := bytes.IndexByte(b, '\n')
				return i >= 0 && (promptEnds(b[i+1:], prompt) || continuation(b[i+1:]))
			})
			if err != nil {
				return fmt.Errorf("script: after %q: %w", line, err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("script: read input: %w", rerr)
		}
	}
	// The transcript ends with the last prompt; close its line.
	fmt.Fprintln(out)
	return r.status(ctx, sh, timeout)
}

// status asks for $? behind a marker that only the shell's expansion can
// produce (the echo of the command has "$?" where the digits go).
func (r *shellReader) status(ctx context.Context, sh io.Writer, timeout time.Duration) error {
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	mark := "pogo-rc-" + hex.EncodeToString(nonce[:]) + "-"
	re := regexp.MustCompile(regexp.QuoteMeta(mark) + `(\d*)\r?\n`)
	if _, err := io.WriteString(sh, "echo "+mark+"$?\n"); err != nil {
		return fmt.Errorf("script: ask for the exit status: %w", err)
	}
	var m [][]byte
	err := r.await(ctx, timeout, io.Discard, func(b []byte) bool {
		m = re.FindSubmatch(b)
		return m != nil
	})
	if err != nil {
		return fmt.Errorf("script: waiting for the exit status: %w", err)
	}
	if len(m[1]) == 0 {
		return nil // a shell without $?
	}
	code, err := strconv.Atoi(string(m[1]))
	if err != nil || code == 0 {
		return nil
	}
	return &ExitError{Code: code}
}

// promptEnds says whether the shell's output ends with its prompt, after
// any control sequences it sends behind it (busybox asks for the cursor
// position with ESC [ 6 n).
func promptEnds(b []byte, prompt string) bool {
	return bytes.HasSuffix(trimCSI(b), []byte(prompt))
}

// continuation says whether the shell asks for the rest of a command
// (PS2 of busybox and of U-Boot's hush).
func continuation(b []byte) bool {
	b = trimCSI(b)
	return bytes.Equal(b, []byte("> ")) || bytes.HasSuffix(b, []byte("\n> "))
}

var trailingCSI = regexp.MustCompile(`(\x1b\[[0-9;?]*[@-~])+$`)

func trimCSI(b []byte) []byte {
	if loc := trailingCSI.FindIndex(b); loc != nil {
		return b[:loc[0]]
	}
	return b
}

// shellReader reads a shell in the background so waits can time out.
type shellReader struct {
	chunks chan []byte
	err    error // set before chunks closes
	seen   []byte
	held   []byte // a cursor position request's start, not yet written
}

func newShellReader(r io.Reader) *shellReader {
	s := &shellReader{chunks: make(chan []byte, 64)}
	go func() {
		defer close(s.chunks)
		for {
			buf := make([]byte, 32<<10)
			n, err := r.Read(buf)
			if n > 0 {
				s.chunks <- buf[:n]
			}
			if err != nil {
				s.err = err
				return
			}
		}
	}()
	return s
}

// await copies output to out until done holds for the output seen since
// the previous await returned, which it then consumes. The cursor position
// requests busybox sends behind its prompt are not copied: nobody answers
// them here.
func (s *shellReader) await(ctx context.Context, timeout time.Duration, out io.Writer, done func([]byte) bool) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		if done(s.seen) {
			s.seen = s.seen[:0]
			return nil
		}
		select {
		case c, ok := <-s.chunks:
			if !ok {
				if s.err == nil || errors.Is(s.err, io.EOF) {
					return errors.New("the shell ended")
				}
				return fmt.Errorf("the shell ended: %w", s.err)
			}
			if _, err := s.strip(out, c); err != nil {
				return err
			}
			s.seen = append(s.seen, c...)
		case <-t.C:
			return fmt.Errorf("no prompt within %s (last output %q)", timeout, lastN(s.seen, 80))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// strip writes c to out without cursor position requests, holding back
// the start of one split across reads (consoles deliver bytes as they
// come).
func (s *shellReader) strip(out io.Writer, c []byte) (int, error) {
	b := bytes.ReplaceAll(append(s.held, c...), cpr, nil)
	s.held = s.held[:0]
	for k := len(cpr) - 1; k > 0; k-- {
		if bytes.HasSuffix(b, cpr[:k]) {
			s.held = append(s.held, b[len(b)-k:]...)
			b = b[:len(b)-k]
			break
		}
	}
	return out.Write(b)
}

var cpr = []byte("\x1b[6n")

func lastN(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
