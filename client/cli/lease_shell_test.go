package cli

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/client/lease"
	_ "github.com/pogolab/pogo/drivers/power/command"
	"github.com/pogolab/pogo/lab/controller/controllertest"
)

// captureStderr collects what jmp shell prints to stderr until the
// returned function is called.
func captureStderr(t *testing.T) func() string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	got := make(chan string)
	go func() { b, _ := io.ReadAll(r); got <- string(b) }()
	return func() string {
		os.Stderr = old
		w.Close()
		return <-got
	}
}

// A job inside jmp shell -l learns its exporter, lease and labels from
// the environment; when its client is deleted mid-lease it hears one
// reason, the right one, and no failed release.
func TestLeaseShellEnvAndClientDeleted(t *testing.T) {
	lab := controllertest.Start(t)
	lab.Exporter("board1", map[string]string{"board": "qemu", "lab": "ci"}, "",
		"  power:\n    type: command-power\n    config: {on: \"true\", off: \"true\"}\n")
	lc := lab.Client("alice")
	controllertest.WaitOnline(t, lc, "board1")

	envFile := filepath.Join(t.TempDir(), "env")
	script := `echo "$JMP_EXPORTER $JMP_LEASE $JMP_EXPORTER_LABELS" > ` + envFile + `.tmp && mv ` + envFile + `.tmp ` + envFile + `; exec sleep 30`
	stderr := captureStderr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- leaseShell(ctx, lc, lease.Request{Selector: "board=qemu", Duration: time.Minute}, "", false, held{}, []string{"sh", "-c", script})
	}()

	var env string
	for deadline := time.Now().Add(30 * time.Second); env == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(envFile)
		env = strings.TrimSpace(string(b))
	}
	if !regexp.MustCompile(`^board1 [0-9a-f]{12} board=qemu,lab=ci$`).MatchString(env) {
		t.Errorf("JMP_EXPORTER JMP_LEASE JMP_EXPORTER_LABELS = %q, want board1, the lease id, board=qemu,lab=ci", env)
	}

	if _, err := lab.Admin().DeleteIdentity(ctx, &pb.DeleteIdentityRequest{Kind: pb.IdentityKind_IDENTITY_KIND_CLIENT, Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("jmp shell still runs 30s after its client was deleted")
	}
	out := stderr()
	t.Log("\n" + out)
	if err == nil {
		t.Error("jmp shell: no error after the lease ended under it")
	}
	if n := strings.Count(out, "client alice deleted"); n != 1 {
		t.Errorf("the reason appears %d times, want once", n)
	}
	for _, noise := range []string{"expired", "release lease", "revoked"} {
		if strings.Contains(out, noise) {
			t.Errorf("stderr says %q", noise)
		}
	}
}
