package bundles_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/oci"

	"github.com/pogolab/pogo/bundles"
)

const synthManifest = `apiVersion: jumpstarter.dev/v1alpha1
kind: FlashBundleManifest
metadata:
  name: synth
spec:
  manufacturer: pogo tests
  bootcmd: "booti 0x40400000 0x48000000:${filesize} 0x47000000"
  default_target: disk
  targets:
    disk: /dev/vda
  kernel:
    file: data/Image
    address: "0x40400000"
  initram:
    file: data/initramfs.cpio.gz
    address: "0x48000000"
  dtb:
    default: virt
    address: "0x47000000"
    variants:
      virt:
        file: data/dtbs/virt.dtb
`

// synthBundle writes a small bundle directory: the manifest above and
// random files it names.
func synthBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	files := map[string]int{"data/Image": 1 << 20, "data/initramfs.cpio.gz": 300 << 10, "data/dtbs/virt.dtb": 4000}
	for name, size := range files {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		writeFile(t, filepath.Join(dir, name), b)
	}
	writeFile(t, filepath.Join(dir, "manifest.yaml"), []byte(synthManifest))
	return dir
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// sameFiles checks that every file of the bundle has the content of the
// source directory's.
func sameFiles(t *testing.T, b *bundles.Bundle, srcDir string) {
	t.Helper()
	for _, name := range []string{"manifest.yaml", "data/Image", "data/initramfs.cpio.gz", "data/dtbs/virt.dtb"} {
		p, err := b.Path(name)
		if err != nil {
			t.Fatal(err)
		}
		if fileSum(t, p) != fileSum(t, filepath.Join(srcDir, name)) {
			t.Errorf("%s differs after the pull", name)
		}
	}
}

func TestPushPullRegistry(t *testing.T) {
	reg := startRegistry(t, "", "")
	dockerConfig(t, reg.Host, "", "")
	ctx := context.Background()
	src := synthBundle(t)
	ref := reg.Host + "/pogo/synth:v1"

	digest, err := bundles.Push(ctx, src, ref)
	if err != nil {
		t.Fatal(err)
	}
	// Same files, same digest: every cache keyed by it stays warm.
	again, err := bundles.Push(ctx, src, reg.Host+"/pogo/synth:v1-again")
	if err != nil || again != digest {
		t.Fatalf("second push: %s %v, want the same digest %s", again, err, digest)
	}

	info, err := bundles.Inspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if info.Digest != digest || info.ArtifactType != bundles.ArtifactType || info.Manifest.Name != "synth" || len(info.Files) != 4 {
		t.Fatalf("inspect: %+v", info)
	}
	if n := reg.BlobGets(); n != 1 {
		t.Errorf("inspect fetched %d blobs, want only manifest.yaml", n)
	}

	cache := t.TempDir()
	before := reg.BlobGets()
	b, err := bundles.Pull(ctx, ref, cache)
	if err != nil {
		t.Fatal(err)
	}
	// Four files and the (empty) config blob.
	if got := reg.BlobGets() - before; got != 5 {
		t.Errorf("first pull fetched %d blobs, want 5", got)
	}
	if b.Digest != digest || b.Fetched < 1<<20 || b.Manifest.Spec.DTB.Variants["virt"].File != "data/dtbs/virt.dtb" {
		t.Errorf("pulled %+v", b)
	}
	if !strings.HasPrefix(b.Dir, cache) {
		t.Errorf("files in %s, not under the cache %s", b.Dir, cache)
	}
	sameFiles(t, b, src)

	// Second pull, by tag and by digest: no blob crosses the wire.
	before = reg.BlobGets()
	for _, r := range []string{ref, "oci://" + ref, reg.Host + "/pogo/synth@" + digest} {
		b2, err := bundles.Pull(ctx, r, cache)
		if err != nil {
			t.Fatal(err)
		}
		if b2.Fetched != 0 || b2.Dir != b.Dir {
			t.Errorf("pull %s again: fetched %d bytes into %s", r, b2.Fetched, b2.Dir)
		}
	}
	if got := reg.BlobGets() - before; got != 0 {
		t.Errorf("second pulls fetched %d blobs from the registry, want 0", got)
	}

	// The cache is a valid OCI layout: pull from it as a source.
	lb, err := bundles.Pull(ctx, bundles.LayoutPrefix+filepath.Join(cache, "oci")+"@"+digest, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, lb, src)

	_, err = bundles.Pull(ctx, reg.Host+"/pogo/synth:nope", cache)
	if err == nil || !strings.Contains(err.Error(), "registry "+reg.Host+": nope not found") {
		t.Errorf("missing tag: %v", err)
	}
}

// TestPullConcurrent pulls one bundle into one fresh cache from two
// processes and from four goroutines at once: the lock makes every pull
// succeed and the blobs cross the wire once.
func TestPullConcurrent(t *testing.T) {
	reg := startRegistry(t, "", "")
	dockerConfig(t, reg.Host, "", "")
	ctx := context.Background()
	src := synthBundle(t)
	ref := reg.Host + "/pogo/synth:v1"
	if _, err := bundles.Push(ctx, src, ref); err != nil {
		t.Fatal(err)
	}

	cache := t.TempDir()
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPull$", "-test.v")
		cmd.Env = append(os.Environ(), "POGO_TEST_PULL_REF="+ref, "POGO_TEST_PULL_CACHE="+cache)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, &out)
	}
	var dirs []string
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("process %d: %v\n%s", i, err, outs[i])
		}
		for line := range strings.Lines(outs[i].String()) {
			if d, ok := strings.CutPrefix(strings.TrimSpace(line), "pulled-dir="); ok {
				dirs = append(dirs, d)
			}
		}
	}
	if len(dirs) != 2 || dirs[0] != dirs[1] {
		t.Fatalf("processes pulled into %v", dirs)
	}
	if got := reg.BlobGets(); got != 5 {
		t.Errorf("two processes fetched %d blobs, want 5 (one copy)", got)
	}

	cache2 := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	got := make([]*bundles.Bundle, 4)
	for i := range 4 {
		wg.Go(func() { got[i], errs[i] = bundles.Pull(ctx, ref, cache2) })
	}
	wg.Wait()
	fetchers := 0
	for i := range 4 {
		if errs[i] != nil {
			t.Fatalf("goroutine %d: %v", i, errs[i])
		}
		sameFiles(t, got[i], src)
		if got[i].Fetched > 0 {
			fetchers++
		}
	}
	if fetchers != 1 {
		t.Errorf("%d goroutines fetched blobs, want exactly 1", fetchers)
	}
}

// TestHelperPull is the body of TestPullConcurrent's child processes.
func TestHelperPull(t *testing.T) {
	ref := os.Getenv("POGO_TEST_PULL_REF")
	if ref == "" {
		t.Skip("run by TestPullConcurrent")
	}
	b, err := bundles.Pull(context.Background(), ref, os.Getenv("POGO_TEST_PULL_CACHE"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("pulled-dir=%s\n", b.Dir)
}

func TestRegistryAuth(t *testing.T) {
	reg := startRegistry(t, "lab", "s3cret")
	ctx := context.Background()
	src := synthBundle(t)
	ref := reg.Host + "/pogo/synth:v1"

	for _, tc := range []struct{ user, password, want string }{
		{"", "", "basic credential not found"},
		{"lab", "wrong", "401"},
	} {
		dockerConfig(t, reg.Host, tc.user, tc.password)
		_, err := bundles.Push(ctx, src, ref)
		if err == nil || !strings.Contains(err.Error(), "registry "+reg.Host) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("push as %q/%q: %v, want %q", tc.user, tc.password, err, tc.want)
		}
	}

	dockerConfig(t, reg.Host, "lab", "s3cret")
	if _, err := bundles.Push(ctx, src, ref); err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Pull(ctx, ref, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, b, src)
}

func TestUnreachableRegistry(t *testing.T) {
	dockerConfig(t, "", "", "")
	host := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := bundles.Pull(ctx, host+"/pogo/synth:v1", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "registry "+host) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("got %v, want an error naming registry %s", err, host)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %v to give up on a refused connection", time.Since(start))
	}
	_, err = bundles.Inspect(ctx, host+"/pogo/synth:v1")
	if err == nil || !strings.Contains(err.Error(), "registry "+host) {
		t.Errorf("inspect: %v", err)
	}
}

func TestLocalLayoutAndDir(t *testing.T) {
	ctx := context.Background()
	src := synthBundle(t)
	layout := filepath.Join(t.TempDir(), "layout")
	digest, err := bundles.Push(ctx, src, bundles.LayoutPrefix+layout+":v2")
	if err != nil {
		t.Fatal(err)
	}
	// By tag, by digest, and by path alone (the layout has one tag).
	for _, ref := range []string{bundles.LayoutPrefix + layout + ":v2", bundles.LayoutPrefix + layout + "@" + digest, layout} {
		b, err := bundles.Pull(ctx, ref, t.TempDir())
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if b.Digest != digest {
			t.Errorf("%s: digest %s, want %s", ref, b.Digest, digest)
		}
		sameFiles(t, b, src)
	}

	// A plain directory is used in place.
	b, err := bundles.Pull(ctx, src, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b.Dir != src || b.Digest != "" || len(b.Files) != 4 {
		t.Errorf("plain dir: %+v", b)
	}
	info, err := bundles.Inspect(ctx, bundles.DirPrefix+src)
	if err != nil || info.Manifest.Name != "synth" {
		t.Errorf("inspect dir: %+v %v", info, err)
	}
	if _, err := bundles.Pull(ctx, "/nonexistent/bundle", ""); err == nil || !strings.Contains(err.Error(), "no such directory") {
		t.Errorf("missing dir: %v", err)
	}
}

// evilLayout writes an OCI layout whose layers carry the given file names,
// as a hostile or broken pusher could.
func evilLayout(t *testing.T, names ...string) string {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "layout")
	store, err := oci.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	var layers []ocispec.Descriptor
	for _, n := range names {
		data := []byte("content of " + n)
		if n == "manifest.yaml" {
			data = []byte(synthManifest)
		}
		d, err := oras.PushBytes(ctx, store, "application/octet-stream", data)
		if err != nil {
			t.Fatal(err)
		}
		d.Annotations = map[string]string{ocispec.AnnotationTitle: n}
		layers = append(layers, d)
	}
	desc, err := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, bundles.ArtifactType, oras.PackManifestOptions{Layers: layers})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Tag(ctx, desc, "evil"); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestHostileBundles(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		files []string
		want  string
	}{
		{"traversal", []string{"manifest.yaml", "../../escaped"}, `file name "../../escaped" leaves the bundle`},
		{"absolute", []string{"manifest.yaml", "/tmp/escaped"}, `file name "/tmp/escaped" is absolute`},
		{"duplicate", []string{"manifest.yaml", "data/Image", "data/./Image"}, "file data/Image appears twice"},
		{"no manifest", []string{"data/Image"}, "no manifest.yaml layer"},
		{"missing file", []string{"manifest.yaml", "data/Image"}, `manifest.yaml:15: spec.initram.file: "data/initramfs.cpio.gz" is not in the bundle`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layout := evilLayout(t, tc.files...)
			cache := t.TempDir()
			_, err := bundles.Pull(ctx, bundles.LayoutPrefix+layout+":evil", cache)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("pull: %v, want %q", err, tc.want)
			}
			_, err = bundles.Inspect(ctx, bundles.LayoutPrefix+layout+":evil")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("inspect: %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(cache, "..", "escaped")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a file escaped the cache")
			}
		})
	}

	// A plain directory whose file is a symlink out of the bundle.
	src := synthBundle(t)
	img := filepath.Join(src, "data", "Image")
	os.Remove(img)
	if err := os.Symlink("/etc/passwd", img); err != nil {
		t.Fatal(err)
	}
	_, err := bundles.Pull(ctx, src, "")
	if err == nil || !strings.Contains(err.Error(), "spec.kernel.file") || !strings.Contains(err.Error(), "escapes") {
		t.Errorf("symlink escape: %v", err)
	}
	if _, err := bundles.Push(ctx, src, bundles.LayoutPrefix+t.TempDir()); err == nil {
		t.Errorf("pushed a bundle with a symlink out of it")
	}

	// A malformed manifest is refused before anything is pushed.
	bad := synthBundle(t)
	writeFile(t, filepath.Join(bad, "manifest.yaml"), []byte(strings.Replace(synthManifest, "default_target: disk", "default_target: emmc", 1)))
	_, err = bundles.Push(ctx, bad, bundles.LayoutPrefix+t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `manifest.yaml:8: spec.default_target: "emmc" is not one of the targets (disk)`) {
		t.Errorf("malformed manifest: %v", err)
	}
}

// TestQEMUBundleRegistry pushes and pulls the virtual board's real bundle
// (build/board from lab/board/build.sh) through the registry.
func TestQEMUBundleRegistry(t *testing.T) {
	board, _ := filepath.Abs("../build/board")
	if _, err := os.Stat(filepath.Join(board, "Image")); err != nil {
		t.Skipf("no board assets in %s: run `bash lab/board/build.sh build/board` (make assets)", board)
	}
	out := filepath.Join(t.TempDir(), "qemu-arm64")
	if b, err := exec.Command("bash", "qemu-arm64/build.sh", board, out).CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	reg := startRegistry(t, "", "")
	dockerConfig(t, reg.Host, "", "")
	ctx := context.Background()
	ref := reg.Host + "/pogo/flasher-qemu-arm64:latest"
	digest, err := bundles.Push(ctx, out, ref)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Pull(ctx, ref, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if b.Digest != digest || b.Manifest.Name != "qemu-arm64" {
		t.Fatalf("pulled %+v", b.Info)
	}
	for file, asset := range map[string]string{b.Manifest.Spec.Kernel.File: "Image", b.Manifest.Spec.Initram.File: "initramfs.cpio.gz"} {
		p, err := b.Path(file)
		if err != nil {
			t.Fatal(err)
		}
		if fileSum(t, p) != fileSum(t, filepath.Join(board, asset)) {
			t.Errorf("%s differs from %s", file, asset)
		}
	}
	var m ocispec.Manifest
	data, _ := os.ReadFile(filepath.Join(b.Dir, "..", "..", "oci", "blobs", "sha256", strings.TrimPrefix(digest, "sha256:")))
	if err := json.Unmarshal(data, &m); err != nil || m.ArtifactType != bundles.ArtifactType || len(m.Layers) != 3 {
		t.Errorf("cached OCI manifest: %v %+v", err, m)
	}
}
