package hooks_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/hooks"
)

// run runs h as beforeLease for a lease and returns its output lines.
func run(t *testing.T, h *config.Hook, onLine func(string)) ([]string, error) {
	t.Helper()
	var mu sync.Mutex
	var lines []string
	opened, closed := 0, 0
	r := &hooks.Runner{
		Hooks: config.Hooks{BeforeLease: h},
		Dir:   t.TempDir(),
		Log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Open: func(context.Context, string) (hooks.Reach, func(), error) {
			opened++
			return hooks.Reach{Host: "unix:///nowhere.sock", Session: "tok", Env: []string{"EXTRA=1"}}, func() { closed++ }, nil
		},
	}
	err := r.Run(context.Background(), hooks.Before, drivers.Lease{ID: "0b7c-lease", Client: "alice"}, func(l string) {
		mu.Lock()
		lines = append(lines, l)
		mu.Unlock()
		if onLine != nil {
			onLine(l)
		}
	})
	if opened != 1 || closed != 1 {
		t.Errorf("session opened %d, closed %d times; want 1, 1", opened, closed)
	}
	return lines, err
}

func hook(script string) *config.Hook {
	return &config.Hook{Script: script, Timeout: 10 * time.Second, OnFailure: "warn"}
}

func TestEnvironment(t *testing.T) {
	lines, err := run(t, hook(`echo "lease=$LEASE_NAME client=$CLIENT_NAME id=$JMP_LEASE_ID by=$JMP_LEASE_CLIENT host=$JMP_HOST session=$JMP_SESSION extra=$EXTRA"; command -v j`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "lease=0b7c-lease client=alice id=0b7c-lease by=alice host=unix:///nowhere.sock session=tok extra=1"
	if len(lines) != 2 || lines[0] != want || filepath.Base(lines[1]) != "j" {
		t.Errorf("got %q, want [%q …/j]", lines, want)
	}
}

func TestExecPicksInterpreter(t *testing.T) {
	h := hook(`[[ -n "$LEASE_NAME" ]] && echo "BASH_HOOK: lease=$LEASE_NAME"`)
	if _, err := run(t, h, nil); err == nil {
		t.Error("[[ ]] ran under /bin/sh (dash) without error; the test cannot tell the interpreters apart")
	}
	h.Exec = "/bin/bash"
	lines, err := run(t, h, nil)
	if err != nil || len(lines) != 1 || lines[0] != "BASH_HOOK: lease=0b7c-lease" {
		t.Errorf("exec /bin/bash: %q, %v", lines, err)
	}
}

func TestScriptFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exe := write("hook.sh", "#!/bin/sh\necho \"SCRIPTFILE_HOOK: $LEASE_NAME\"\n", 0o755)
	plain := write("plain.sh", "echo \"PLAIN: $CLIENT_NAME\"\n", 0o644)
	py := write("hook.py", "import os\nprint('PYTHON_HOOK: lease=' + os.environ['LEASE_NAME'])\n", 0o644)
	bash := write("b.sh", "[[ 1 == 1 ]] && echo BASH_FILE\n", 0o644)
	for _, tc := range []struct {
		name string
		h    *config.Hook
		want string
	}{
		{"executable file", hook(exe), "SCRIPTFILE_HOOK: 0b7c-lease"},
		{"file with trailing newline", hook(exe + "\n"), "SCRIPTFILE_HOOK: 0b7c-lease"},
		{"non-executable file", hook(plain), "PLAIN: alice"},
		{".py runs with python3", hook(py), "PYTHON_HOOK: lease=0b7c-lease"},
		{"file with exec", &config.Hook{Script: bash, Exec: "/bin/bash", Timeout: 10 * time.Second}, "BASH_FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, err := run(t, tc.h, nil)
			if err != nil || len(lines) != 1 || lines[0] != tc.want {
				t.Errorf("got %q, %v; want [%q]", lines, err, tc.want)
			}
		})
	}
	// A script that only looks like a path is a script.
	if name, args := hooks.Command(hook(filepath.Join(dir, "missing.sh"))); name != "/bin/sh" || args[0] != "-c" {
		t.Errorf("missing file: %s %q", name, args)
	}
}

// TestOutputStreams: each line reaches the caller while the script still
// runs (the script waits for a file the test writes on seeing the line).
func TestOutputStreams(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "seen")
	lines, err := run(t, hook("echo first; while [ ! -e "+flag+" ]; do sleep 0.05; done; echo second"), func(l string) {
		if l == "first" {
			_ = os.WriteFile(flag, nil, 0o644)
		}
	})
	if err != nil || strings.Join(lines, ",") != "first,second" {
		t.Errorf("got %q, %v", lines, err)
	}
}

func TestFailure(t *testing.T) {
	h := hook("echo 'HOOK_FAIL_ENDLEASE: will fail and end lease'; exit 1")
	h.OnFailure = "endLease"
	_, err := run(t, h, nil)
	var he *hooks.Error
	if !errors.As(err, &he) || he.OnFailure != "endLease" || he.Hook != "beforeLease" {
		t.Fatalf("got %v, want a *hooks.Error with onFailure endLease", err)
	}
	if want := "beforeLease hook failed: exit status 1: HOOK_FAIL_ENDLEASE: will fail and end lease"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestTimeoutKillsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	h := hook("echo 'HOOK_TIMEOUT: starting'; sleep 30 & echo $! > " + pidFile + "; wait")
	h.Timeout = 300 * time.Millisecond
	start := time.Now()
	lines, err := run(t, h, nil)
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Fatalf("got %v, want a timeout", err)
	}
	if time.Since(start) > 5*time.Second || len(lines) != 1 {
		t.Errorf("took %s, lines %q", time.Since(start), lines)
	}
	b, _ := os.ReadFile(pidFile)
	pid := strings.TrimSpace(string(b))
	if pid == "" {
		t.Fatal("no pid recorded")
	}
	// Gone (or a zombie awaiting its reaper) within moments: SIGKILL went
	// to the whole group.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil || strings.Contains(string(st), ") Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the script's child %s outlived the timeout: %s", pid, st)
		}
	}
}

func TestCheckNamesJumpstarterImport(t *testing.T) {
	py := filepath.Join(t.TempDir(), "hook.py")
	if err := os.WriteFile(py, []byte("import os\nfrom jumpstarter.utils.env import env\n\nwith env() as client:\n    client.power.on()\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	warns := hooks.Check(config.Hooks{
		BeforeLease: hook(py),
		AfterLease:  &config.Hook{Exec: "python3", Script: "import jumpstarter\nprint(1)\n"},
	})
	if len(warns) != 2 {
		t.Fatalf("got %q, want 2 warnings", warns)
	}
	if want := py + `:2: "from jumpstarter.utils.env import env" imports Jumpstarter's Python API`; !strings.HasPrefix(warns[0], want) {
		t.Errorf("warning %q, want it to start %q", warns[0], want)
	}
	if !strings.HasPrefix(warns[1], `hooks.afterLease.script:1: "import jumpstarter"`) {
		t.Errorf("warning %q", warns[1])
	}
	if w := hooks.Check(config.Hooks{BeforeLease: hook("echo jumpstarter; j power on")}); len(w) != 0 {
		t.Errorf("a shell hook got warnings: %q", w)
	}
}
