package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/lab/controller/controllertest"
)

// jmpAdmin runs `jmp admin --data-dir DIR args…` and returns its output.
func jmpAdmin(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := adminCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"--data-dir", dir}, args...))
	cmd.SilenceUsage = true
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestAdminIdentities(t *testing.T) {
	lab := controllertest.Start(t)
	for _, args := range [][]string{
		{"create", "client", "alice"},
		{"create", "client", "bob"},
		{"create", "exporter", "board1"},
		{"policy", "alice", "--priority", "2", "-l", "board=qemu"},
		{"policy", "carol", "--priority", "5"}, // before carol exists
		{"disable", "exporter", "board1"},
	} {
		if out, err := jmpAdmin(t, lab.Dir, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}

	out, err := jmpAdmin(t, lab.Dir, "get", "identities")
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out)
	for _, re := range []string{
		`(?m)^KIND +NAME +CREATED +DETAILS$`,
		`(?m)^client +alice +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +priority 2, selector board=qemu$`,
		`(?m)^client +bob +\S+ \S+ +priority 0, all exporters$`,
		`(?m)^exporter +board1 +\S+ \S+ +disabled, offline, never registered$`,
		`(?m)^client +carol +priority 5, all exporters, policy only: no such client yet$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("get identities: no line matching %s", re)
		}
	}

	out, err = jmpAdmin(t, lab.Dir, "get", "identities", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ids []struct {
		Kind, Name string
		Policy     struct{ Priority int }
	}
	if err := json.Unmarshal([]byte(out), &ids); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if len(ids) != 4 || ids[0].Name != "alice" || ids[0].Kind != "IDENTITY_KIND_CLIENT" || ids[0].Policy.Priority != 2 || ids[2].Name != "carol" || ids[2].Policy.Priority != 5 || ids[3].Name != "board1" {
		t.Errorf("-o json: %+v", ids)
	}
	if _, err := jmpAdmin(t, lab.Dir, "get", "identities", "-o", "xml"); err == nil {
		t.Error("-o xml accepted")
	}

	out, err = jmpAdmin(t, lab.Dir, "delete", "client", "alice")
	if err != nil || strings.TrimSpace(out) != "client alice deleted" {
		t.Fatalf("delete client alice: %q %v", out, err)
	}
	if out, err = jmpAdmin(t, lab.Dir, "delete", "exporter", "board1"); err != nil || strings.TrimSpace(out) != "exporter board1 deleted" {
		t.Fatalf("delete exporter board1: %q %v", out, err)
	}
	_, err = jmpAdmin(t, lab.Dir, "delete", "exporter", "board1")
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "board1") {
		t.Errorf("delete exporter board1 again: %v, want not found naming it", err)
	}
	if _, err := jmpAdmin(t, lab.Dir, "delete", "policy", "bob"); err == nil {
		t.Error("delete policy accepted")
	}
	out, err = jmpAdmin(t, lab.Dir, "get", "identities")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "alice") || strings.Contains(out, "board1") || !strings.Contains(out, "bob") {
		t.Errorf("after the deletions:\n%s", out)
	}
}

// `jmp admin --data-dir ctl …` with a path relative to the working
// directory, as `jmp controller --data-dir ctl` takes it.
func TestAdminRelativeDataDir(t *testing.T) {
	lab := controllertest.Start(t)
	t.Chdir(filepath.Dir(lab.Dir))
	if out, err := jmpAdmin(t, filepath.Base(lab.Dir), "create", "client", "alice"); err != nil {
		t.Fatalf("relative --data-dir %s: %v\n%s", filepath.Base(lab.Dir), err, out)
	}
	out, err := jmpAdmin(t, "./"+filepath.Base(lab.Dir), "get", "identities")
	if err != nil || !strings.Contains(out, "alice") {
		t.Fatalf("get identities: %v\n%s", err, out)
	}
}
