package bundles_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pogolab/pogo/bundles"
)

func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := bundles.Command()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestCLI(t *testing.T) {
	reg := startRegistry(t, "", "")
	dockerConfig(t, reg.Host, "", "")
	src := synthBundle(t)
	ref := reg.Host + "/pogo/cli:v1"

	out, err := runCLI(t, "push", src, ref)
	if err != nil || !strings.Contains(out, "digest sha256:") {
		t.Fatalf("push: %v\n%s", err, out)
	}
	digest := strings.TrimSpace(out[strings.Index(out, "sha256:"):])

	out, err = runCLI(t, "inspect", ref)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"synth", digest, bundles.ArtifactType, "data/Image @ 0x40400000", "disk=/dev/vda (default)", "virt=data/dtbs/virt.dtb", "data/initramfs.cpio.gz"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out, err = runCLI(t, "inspect", "--json", ref)
	var info bundles.Info
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || info.Digest != digest {
		t.Errorf("inspect --json: %v\n%s", err, out)
	}

	cache := t.TempDir()
	out, err = runCLI(t, "pull", "--cache-dir", cache, ref)
	if err != nil || !strings.Contains(out, "dir     "+filepath.Join(cache, "files")) || !strings.Contains(out, "fetched 1") {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	out, err = runCLI(t, "pull", "--cache-dir", cache, ref)
	if err != nil || !strings.Contains(out, "fetched 0 bytes") {
		t.Errorf("second pull: %v\n%s", err, out)
	}

	// The cache: listed with the reference it came by, then pruned.
	out, err = runCLI(t, "ls", "--cache-dir", cache)
	if err != nil || !strings.Contains(out, digest[:19]) || !strings.Contains(out, ref) || !strings.Contains(out, "synth") {
		t.Errorf("ls: %v\n%s", err, out)
	}
	out, err = runCLI(t, "prune", "--cache-dir", cache)
	if err != nil || !strings.Contains(out, "freed 0 B in 0 bundles") {
		t.Errorf("prune of a fresh cache: %v\n%s", err, out)
	}
	out, err = runCLI(t, "prune", "--cache-dir", cache, "--all")
	if err != nil || !strings.Contains(out, "removed "+digest[:19]) || !strings.Contains(out, "in 1 bundles") {
		t.Errorf("prune --all: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "prune", "--cache-dir", cache, "--unused-for", "0s"); err == nil {
		t.Error("prune --unused-for 0s succeeded")
	}

	if _, err := runCLI(t, "pull", "127.0.0.1:1/nothing:v1"); err == nil || !strings.Contains(err.Error(), "registry 127.0.0.1:1") {
		t.Errorf("unreachable: %v", err)
	}
	if _, err := runCLI(t, "push", src); err == nil {
		t.Errorf("push with one argument succeeded")
	}
}
