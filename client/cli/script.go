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

	"github.com/pogolab/pogo/drivers/console/expect"
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
	e := expect.New(sh)
	// What the shell prints goes to out as it comes, without the cursor
	// position requests busybox sends behind its prompt (nobody answers
	// them here).
	show := &cprStripper{w: out}
	e.Tee(show)
	all := func(ok func([]byte) bool) func([]byte) int {
		return func(b []byte) int {
			if ok(b) {
				return len(b)
			}
			return -1
		}
	}
	// The shell's output starts with its prompt.
	if _, err := e.ExpectFunc(ctx, timeout, fmt.Sprintf("prompt %q", prompt), all(func(b []byte) bool { return promptEnds(b, prompt) })); err != nil {
		return fmt.Errorf("script: waiting for the first prompt %q: %w", prompt, shellErr(err, timeout))
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
			_, err := e.ExpectFunc(ctx, timeout, fmt.Sprintf("prompt %q", prompt), all(func(b []byte) bool {
				i := bytes.IndexByte(b, '\n')
				return i >= 0 && (promptEnds(b[i+1:], prompt) || continuation(b[i+1:]))
			}))
			if err != nil {
				return fmt.Errorf("script: after %q: %w", line, shellErr(err, timeout))
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("script: read input: %w", rerr)
		}
	}
	// The transcript ends with the last prompt; close its line. The status
	// query is not shown.
	e.Tee(nil)
	fmt.Fprintln(out)
	return status(ctx, e, sh, timeout)
}

// status asks for $? behind a marker that only the shell's expansion can
// produce (the echo of the command has "$?" where the digits go).
func status(ctx context.Context, e *expect.Expecter, sh io.Writer, timeout time.Duration) error {
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	mark := "pogo-rc-" + hex.EncodeToString(nonce[:]) + "-"
	re := regexp.MustCompile(regexp.QuoteMeta(mark) + `(\d*)\r?\n`)
	if _, err := io.WriteString(sh, "echo "+mark+"$?\n"); err != nil {
		return fmt.Errorf("script: ask for the exit status: %w", err)
	}
	_, m, err := e.ExpectRegexp(ctx, timeout, re)
	if err != nil {
		return fmt.Errorf("script: waiting for the exit status: %w", shellErr(err, timeout))
	}
	if len(m[1]) == 0 {
		return nil // a shell without $?
	}
	code, err := strconv.Atoi(m[1])
	if err != nil || code == 0 {
		return nil
	}
	return &ExitError{Code: code}
}

// shellErr says what a failed wait means for a script.
func shellErr(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, expect.ErrTimeout):
		return fmt.Errorf("no prompt within %s: %w", timeout, err)
	case errors.Is(err, expect.ErrClosed):
		return fmt.Errorf("the shell ended: %w", err)
	}
	return err
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

// cprStripper writes to w without cursor position requests, holding back
// the start of one split across writes (consoles deliver bytes as they
// come).
type cprStripper struct {
	w    io.Writer
	held []byte
}

func (s *cprStripper) Write(c []byte) (int, error) {
	b := bytes.ReplaceAll(append(s.held, c...), cpr, nil)
	s.held = s.held[:0]
	for k := len(cpr) - 1; k > 0; k-- {
		if bytes.HasSuffix(b, cpr[:k]) {
			s.held = append(s.held, b[len(b)-k:]...)
			b = b[:len(b)-k]
			break
		}
	}
	if _, err := s.w.Write(b); err != nil {
		return 0, err
	}
	return len(c), nil
}

var cpr = []byte("\x1b[6n")
