package bundles_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pogolab/pogo/bundles"
)

func blobCount(t *testing.T, cache string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(cache, "oci", "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Prune removes the bundles no pull used since the cut-off, with the blobs
// only they held, and keeps what the others share.
func TestCachePrune(t *testing.T) {
	ctx := context.Background()
	cache := t.TempDir()
	layout := filepath.Join(t.TempDir(), "layout")
	// Two bundles sharing their kernel, initramfs and device tree: only
	// the manifest.yaml differs.
	oldSrc := synthBundle(t)
	newSrc := filepath.Join(t.TempDir(), "new")
	if err := os.CopyFS(newSrc, os.DirFS(oldSrc)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(newSrc, "manifest.yaml"), []byte(synthManifest+"# newer\n"))
	oldDigest, err := bundles.Push(ctx, oldSrc, bundles.LayoutPrefix+layout+":old")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.Push(ctx, newSrc, bundles.LayoutPrefix+layout+":new"); err != nil {
		t.Fatal(err)
	}
	oldB, err := bundles.Pull(ctx, bundles.LayoutPrefix+layout+":old", cache)
	if err != nil {
		t.Fatal(err)
	}
	newB, err := bundles.Pull(ctx, bundles.LayoutPrefix+layout+":new", cache)
	if err != nil {
		t.Fatal(err)
	}
	// 3 shared files, 2 manifest.yaml, 2 OCI manifests, 1 empty config.
	if n := blobCount(t, cache); n != 8 {
		t.Fatalf("%d blobs cached, want 8", n)
	}
	// A pull is a use: the old bundle was last used a month ago.
	month := time.Now().AddDate(0, -1, 0)
	if err := os.Chtimes(oldB.Dir, month, month); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cache, "files", ".extract-123"), 0o755); err != nil {
		t.Fatal(err)
	}
	cs, err := bundles.List(ctx, cache)
	if err != nil || len(cs) != 2 || cs[0].Digest != newB.Digest || cs[1].Name != "synth" || cs[1].Size < 1<<20 {
		t.Fatalf("list: %+v %v", cs, err)
	}

	removed, err := bundles.Prune(ctx, cache, time.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].Digest != oldDigest {
		t.Fatalf("removed %+v, want only %s", removed, oldDigest)
	}
	if _, err := os.Stat(oldB.Dir); !os.IsNotExist(err) {
		t.Errorf("old bundle's files still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cache, "files", ".extract-123")); !os.IsNotExist(err) {
		t.Errorf("a crashed pull's leftovers still there: %v", err)
	}
	// Its manifest.yaml and OCI manifest went; the shared files stayed.
	if n := blobCount(t, cache); n != 6 {
		t.Errorf("%d blobs left, want 6", n)
	}
	again, err := bundles.Pull(ctx, bundles.LayoutPrefix+layout+":new", cache)
	if err != nil {
		t.Fatal(err)
	}
	if again.Fetched != 0 {
		t.Errorf("the kept bundle fetched %d bytes again", again.Fetched)
	}
	sameFiles(t, again, newSrc)
	// The pruned one comes back, fetching only what it lost.
	back, err := bundles.Pull(ctx, bundles.LayoutPrefix+layout+":old", cache)
	if err != nil {
		t.Fatal(err)
	}
	if back.Fetched == 0 || back.Fetched > 64<<10 {
		t.Errorf("re-pull of the pruned bundle fetched %d bytes, want only its manifests", back.Fetched)
	}
	sameFiles(t, back, oldSrc)

	if removed, err := bundles.Prune(ctx, cache, time.Now().Add(time.Hour)); err != nil || len(removed) != 2 {
		t.Fatalf("prune all: %d removed, %v", len(removed), err)
	}
	if cs, err := bundles.List(ctx, cache); err != nil || len(cs) != 0 {
		t.Fatalf("after pruning all: %+v %v", cs, err)
	}
	if n := blobCount(t, cache); n != 0 {
		t.Errorf("%d blobs left after pruning all", n)
	}
}
