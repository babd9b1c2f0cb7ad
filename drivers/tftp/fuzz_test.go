package tftp

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers/files"
)

// FuzzOpen feeds raw request filenames to the resolver: whatever it
// opens must lie inside the named board's directory, and everything else
// must be refused or not found.
func FuzzOpen(f *testing.F) {
	for _, s := range []string{
		"b/ok", "b/d/f", "b/../b/ok", "../etc/passwd", "/etc/passwd", "b//etc/passwd", "b/escape",
		"b/inside", "b/etc/passwd", "b/d/../../../x", "b/./ok", "./b/ok", "b\\..\\..\\etc", "b/\x00", "b/%2e%2e/x",
		"b/d/up/ok", "b/" + strings.Repeat("../", 20) + "etc/passwd", "", "/", "b", "b/",
	} {
		f.Add(s)
	}
	hostDir, root, outside := f.TempDir(), f.TempDir(), f.TempDir()
	os.WriteFile(filepath.Join(root, "ok"), []byte("ok"), 0o644)
	os.MkdirAll(filepath.Join(root, "d"), 0o755)
	os.WriteFile(filepath.Join(root, "d", "f"), []byte("f"), 0o644)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "escape"))
	os.Symlink("/etc", filepath.Join(root, "etc"))
	os.Symlink("ok", filepath.Join(root, "inside"))
	os.Symlink("..", filepath.Join(root, "d", "up"))
	e := &endpoint{dir: filepath.Join(hostDir, "port-1"), log: slog.New(slog.DiscardHandler)}
	os.MkdirAll(filepath.Join(e.dir, "boards"), 0o755)
	reg, err := e.register("b", root, 1)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { e.unregister(reg) })
	realRoot, _ := filepath.EvalSymlinks(root)

	f.Fuzz(func(t *testing.T, name string) {
		file, _, board, err := e.open(name)
		if err != nil {
			if !errors.Is(err, files.ErrRefused) && !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrInvalid) {
				// Other failures (a name through a regular file, say)
				// must still not open anything.
				t.Logf("%q: %v", name, err)
			}
			return
		}
		defer file.Close()
		got, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(file.Fd())))
		if err != nil {
			t.Fatal(err)
		}
		if board != "b" || !strings.HasPrefix(got, realRoot+"/") {
			t.Fatalf("%q opened %s (board %q), outside %s", name, got, board, realRoot)
		}
	})
}
