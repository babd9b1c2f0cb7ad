package exporter_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/exportertest"
)

// hookExporter serves yaml (with $DIR, a directory of the test's) on a
// unix socket with session hooks, as jmp run does without a controller.
func hookExporter(t *testing.T, yaml string) (target, dir string, exits chan error) {
	t.Helper()
	dir = t.TempDir()
	exits = make(chan error, 4)
	e := exportertest.ServeWith(t, strings.ReplaceAll(yaml, "$DIR", dir), func(o *exporter.Options, target string) {
		o.SessionHooks = &exporter.SessionHooks{Host: target, Dir: filepath.Join(dir, "hooks"), Exit: func(err error) { exits <- err }}
	})
	return e.Target, dir, exits
}

type hookLines struct {
	mu sync.Mutex
	l  []string
}

func (h *hookLines) on(e *pb.HookEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case e.GetHook() == "":
		h.l = append(h.l, "configured "+strings.Join(e.GetConfigured(), ","))
	case !e.GetDone():
		h.l = append(h.l, e.GetHook()+": "+e.GetLine())
	default:
		h.l = append(h.l, e.GetHook()+" done "+e.GetOnFailure()+" "+e.GetError())
	}
}

func (h *hookLines) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.l, "\n")
}

const sessionHookYAML = `kind: ExporterConfig
export:
  power:
    type: command-power
    config:
      on: echo "on $LEASE_NAME $CLIENT_NAME" >> $DIR/power
      off: echo "off $JMP_LEASE_ID" >> $DIR/power
hooks:
  beforeLease:
    script: |
      echo "BEFORE_HOOK_DIRECT: lease=$LEASE_NAME client=$CLIENT_NAME"
    timeout: 60
    onFailure: warn
  afterLease:
    script: |
      echo "AFTER_HOOK_DIRECT: executed"
    timeout: 60
    onFailure: warn
`

// TestSessionHooks: without a controller the session is the lease; the
// client sees beforeLease's output before its token and afterLease's
// before Close returns, and command power sees the lease too.
func TestSessionHooks(t *testing.T) {
	ctx := context.Background()
	target, dir, _ := hookExporter(t, sessionHookYAML)
	c, err := client.Dial(ctx, target, client.Options{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got hookLines
	sess, err := c.Open(ctx, client.SessionOptions{OnHook: got.on})
	if err != nil {
		t.Fatal(err)
	}
	before := got.String()
	m := regexp.MustCompile(`(?m)^beforeLease: BEFORE_HOOK_DIRECT: lease=([0-9a-f-]{36}) client=alice$`).FindStringSubmatch(before)
	if m == nil || !strings.HasPrefix(before, "configured beforeLease,afterLease\n") || strings.Contains(before, "AFTER") {
		t.Fatalf("before the token the client saw:\n%s", before)
	}
	lease := m[1]
	if err := c.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	want := "configured beforeLease,afterLease\nbeforeLease: BEFORE_HOOK_DIRECT: lease=" + lease + " client=alice\nbeforeLease done  \nafterLease: AFTER_HOOK_DIRECT: executed\nafterLease done  "
	if got.String() != want {
		t.Errorf("hook events:\n%s\nwant\n%s", got.String(), want)
	}
	// The reset after afterLease ran with the lease in its context.
	b, _ := os.ReadFile(filepath.Join(dir, "power"))
	if want := "on " + lease + " alice\noff " + lease + "\n"; string(b) != want {
		t.Errorf("power commands saw\n%q, want\n%q", b, want)
	}
}

func TestSessionHookFailureModes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		mode string
		exit bool
	}{{"endLease", false}, {"exit", true}, {"warn", false}} {
		t.Run(tc.mode, func(t *testing.T) {
			target, _, exits := hookExporter(t, `kind: ExporterConfig
export:
  power:
    type: command-power
    config: {on: "true", off: "true"}
hooks:
  beforeLease:
    script: |
      echo "HOOK_FAIL: will fail"
      exit 1
    timeout: 60
    onFailure: `+tc.mode+`
  afterLease:
    script: |
      echo "AFTER_SHOULD_NOT_RUN: this proves afterLease was skipped"
    timeout: 60
    onFailure: warn
`)
			c, err := client.Dial(ctx, target, client.Options{Name: "bob"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var got hookLines
			sess, err := c.Open(ctx, client.SessionOptions{OnHook: got.on})
			if tc.mode == "warn" {
				if err != nil {
					t.Fatalf("warn refused the session: %v", err)
				}
				sess.Close()
				if !strings.Contains(got.String(), "beforeLease done warn exit status 1: HOOK_FAIL: will fail") || !strings.Contains(got.String(), "AFTER_SHOULD_NOT_RUN") {
					t.Errorf("events:\n%s", got.String())
				}
				return
			}
			want := "beforeLease hook failed: exit status 1: HOOK_FAIL: will fail (onFailure: " + tc.mode + ")"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("open: %v, want %q", err, want)
			}
			if strings.Contains(got.String(), "AFTER") || !strings.Contains(got.String(), "beforeLease: HOOK_FAIL: will fail") {
				t.Errorf("events:\n%s", got.String())
			}
			select {
			case err := <-exits:
				if !tc.exit || err == nil || !strings.Contains(err.Error(), "exporter exits: beforeLease hook failed") {
					t.Errorf("exporter exit %v", err)
				}
			default:
				if tc.exit {
					t.Error("onFailure: exit did not make the exporter exit")
				}
			}
			// The exporter is free again (for endLease).
			if !tc.exit {
				_, err := c.Open(ctx, client.SessionOptions{})
				if err == nil || errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("second session: %v, want the hook's failure again", err)
				}
			}
		})
	}
}

func TestExitOnLeaseEndAfterOneSession(t *testing.T) {
	ctx := context.Background()
	target, _, exits := hookExporter(t, "kind: ExporterConfig\nexitOnLeaseEnd: true\nexport:\n  power:\n    type: command-power\n    config: {on: \"true\", off: \"true\"}\n")
	c, err := client.Dial(ctx, target, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.Open(ctx, client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exits:
		t.Fatalf("exited before the session ended: %v", err)
	default:
	}
	sess.Close()
	if err := <-exits; err != nil {
		t.Errorf("exit cause %v, want nil (a clean exit)", err)
	}
}

func TestHooksRefusedWhereTheyCannotRun(t *testing.T) {
	f, err := config.Parse("x.yaml", []byte("kind: ExporterConfig\nexitOnLeaseEnd: true\nhooks:\n  beforeLease:\n    script: 'true'\nexport:\n  power:\n    type: command-power\n    config: {on: \"true\", off: \"true\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = exporter.New(context.Background(), f, &drivers.Host{}, exporter.Options{})
	if err == nil || !strings.Contains(err.Error(), "x.yaml: hooks.beforeLease, exitOnLeaseEnd: this exporter cannot run lease hooks") {
		t.Errorf("got %v", err)
	}
}
