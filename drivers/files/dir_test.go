package files

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pogolab/pogo/api/errdefs"
)

func TestCheckName(t *testing.T) {
	for name, want := range map[string]error{
		"Image": nil, "boot/Image": nil, "a/../b": nil, "x.pogo-put-1": nil,
		"": errdefs.ErrInvalid, "../x": ErrRefused, "/etc/passwd": ErrRefused, "a/../../b": ErrRefused,
		"a/.pogo-put-1": errdefs.ErrInvalid, "bad\x00name": errdefs.ErrInvalid, "\xff": errdefs.ErrInvalid,
	} {
		err := CheckName(name)
		if (want == nil) != (err == nil) || (want != nil && !errors.Is(err, want)) {
			t.Errorf("%q: %v, want %v", name, err, want)
		}
	}
}

// failing yields some content, then an error.
type failing struct{ sent bool }

func (f *failing) Read(p []byte) (int, error) {
	if !f.sent {
		f.sent = true
		return copy(p, "partial"), nil
	}
	return 0, errors.New("connection lost")
}

// TestPutReplacesOnlyWhenComplete checks a failed upload leaves the old
// file as it was and no temporary file behind.
func TestPutReplacesOnlyWhenComplete(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d, err := OpenDir(filepath.Join(dir, "served"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Put(ctx, "img", strings.NewReader("old")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(ctx, "img", &failing{}); err == nil || !strings.Contains(err.Error(), "connection lost") {
		t.Fatalf("failed put: %v", err)
	}
	f, _, err := d.Open("img")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "old" {
		t.Fatalf("content after a failed put: %q", b)
	}
	ents, _ := os.ReadDir(d.Path())
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.Put(cctx, "img", strings.NewReader("new")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled put: %v", err)
	}
	if _, _, err := d.Open("missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("open missing: %v", err)
	}
	os.Mkdir(filepath.Join(d.Path(), "sub"), 0o755)
	if _, _, err := d.Open("sub"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("open a directory: %v", err)
	}
}
