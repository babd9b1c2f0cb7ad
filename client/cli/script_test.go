package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// ptyShell starts an interactive /bin/sh on a real pty, as a board's
// console shell is, with prompt "board# ".
func ptyShell(t *testing.T) *os.File {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-i")
	cmd.Env = []string{"PS1=board# ", "PS2=> ", "PATH=/usr/bin:/bin", "HOME=/"}
	f, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		f.Close()
	})
	return f
}

func TestScriptRunsLinesInTurnAndReturnsStatus(t *testing.T) {
	sh := ptyShell(t)
	script := "echo one\n\nfor i in 1 2; do\necho loop$i\ndone\n" +
		// Output that mentions the prompt does not end a line's wait.
		"echo 'fake board# '; sleep 0.3; echo after-sleep\n" +
		"(exit 3)\n"
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Script(ctx, sh, "board# ", strings.NewReader(script), &out, 10*time.Second)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Fatalf("Script: %v, want exit status 3\n%s", err, out.String())
	}
	got := out.String()
	last := -1
	for _, want := range []string{"echo one", "one\r\n", "loop1\r\n", "loop2\r\n", "fake board# \r\n", "after-sleep\r\n", "(exit 3)"} {
		i := strings.Index(got[last+1:], want)
		if i < 0 {
			t.Fatalf("output lacks %q after offset %d:\n%q", want, last, got)
		}
		last += 1 + i
	}
	if strings.Contains(got, "pogo-rc-") {
		t.Errorf("the status query leaked into the output:\n%q", got)
	}
	if !strings.HasSuffix(got, "board# \n") {
		t.Errorf("output should end with the last prompt and a newline:\n%q", got)
	}
}

func TestScriptSuccessAndEmptyInput(t *testing.T) {
	for _, script := range []string{"true\n", "", "echo no-newline-at-end"} {
		sh := ptyShell(t)
		var out bytes.Buffer
		if err := Script(context.Background(), sh, "board# ", strings.NewReader(script), &out, 10*time.Second); err != nil {
			t.Errorf("script %q: %v\n%q", script, err, out.String())
		}
	}
}

func TestScriptTimesOutOnALineThatNeverReturns(t *testing.T) {
	sh := ptyShell(t)
	var out bytes.Buffer
	err := Script(context.Background(), sh, "board# ", strings.NewReader("echo start; sleep 30\necho never\n"), &out, 500*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `after "echo start; sleep 30"`) || !strings.Contains(err.Error(), "no prompt within 500ms") {
		t.Fatalf("Script: %v, want a timeout naming the line", err)
	}
	if strings.Contains(out.String(), "echo never") {
		t.Errorf("a line was sent before the shell prompted:\n%q", out.String())
	}
}

func TestScriptShellEnds(t *testing.T) {
	sh := ptyShell(t)
	err := Script(context.Background(), sh, "board# ", strings.NewReader("exit 0\necho never\n"), &bytes.Buffer{}, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "the shell ended") {
		t.Fatalf("Script: %v, want the shell ended", err)
	}
}

func TestScriptWrongPrompt(t *testing.T) {
	sh := ptyShell(t)
	err := Script(context.Background(), sh, "=> ", strings.NewReader("true\n"), &bytes.Buffer{}, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), `first prompt "=> "`) {
		t.Fatalf("Script: %v, want a first-prompt error", err)
	}
}

func TestPromptMatching(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want bool
	}{
		{"/ # ", true},
		{"/ # \x1b[6n", true},
		{"/tmp # \x1b[6n\x1b[?25h", true},
		{"/ #", false},
		{"# x", false},
	} {
		if got := promptEnds([]byte(tc.out), "# "); got != tc.want {
			t.Errorf("promptEnds(%q) = %v", tc.out, got)
		}
	}
	if !continuation([]byte("> ")) || !continuation([]byte("x\r\n> \x1b[6n")) || continuation([]byte("a> ")) {
		t.Error("continuation prompt matching")
	}
}

func TestCursorQueriesStrippedAcrossReads(t *testing.T) {
	var out bytes.Buffer
	s := cprStripper{w: &out}
	for _, c := range []string{"/ # \x1b", "[6", "nls\r\n", "a\x1b[6n\x1b[6nb\x1b[", "1mc"} {
		if _, err := s.Write([]byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := out.String(), "/ # ls\r\nab\x1b[1mc"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
