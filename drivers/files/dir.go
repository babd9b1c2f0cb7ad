package files

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/pogolab/pogo/api/errdefs"
)

// tempPrefix marks uploads in progress; such files are neither listed nor
// served.
const tempPrefix = ".pogo-put-"

// ErrRefused is wrapped by errors for names that point outside the
// directory (.., absolute paths, escaping symlinks).
var ErrRefused = fmt.Errorf("refused: path leaves the served directory: %w", errdefs.ErrInvalid)

// Dir is a Store over a directory. Every name is resolved inside it with
// os.Root, so neither .., absolute paths nor symlinks reach outside.
type Dir struct {
	root *os.Root
}

// OpenDir opens (creating it when absent) the directory at dir.
func OpenDir(dir string) (*Dir, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create directory %s: %w", dir, err)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", dir, err)
	}
	return &Dir{root: r}, nil
}

// Path is the directory's path.
func (d *Dir) Path() string { return d.root.Name() }

// Close releases the directory.
func (d *Dir) Close() error { return d.root.Close() }

// CheckName validates a client-supplied name: a non-empty, slash-separated
// path that stays inside the directory and is not an upload in progress.
func CheckName(name string) error {
	switch {
	case name == "":
		return errdefs.Invalidf("empty file name")
	case !utf8.ValidString(name) || strings.ContainsRune(name, 0):
		return errdefs.Invalidf("file name %q is not valid UTF-8 text", name)
	case !filepath.IsLocal(name):
		return fmt.Errorf("file name %q: %w", name, ErrRefused)
	}
	for _, part := range strings.Split(name, "/") {
		if strings.HasPrefix(part, tempPrefix) {
			return errdefs.Invalidf("file name %q: names starting with %s are reserved for uploads", name, tempPrefix)
		}
	}
	return nil
}

// Open opens the regular file name inside root for reading. Names leaving
// root fail with ErrRefused, missing files with errdefs.ErrNotFound.
func Open(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	if err := CheckName(name); err != nil {
		return nil, nil, err
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, nil, mapErr(name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is not a regular file: %w", name, errdefs.ErrNotFound)
	}
	return f, fi, nil
}

// Open opens the regular file name for reading.
func (d *Dir) Open(name string) (*os.File, fs.FileInfo, error) { return Open(d.root, name) }

// mapErr turns an os.Root error into pogo's vocabulary: a name that passed
// CheckName but still fails other than by absence left the root through a
// symlink.
func mapErr(name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w", name, errdefs.ErrNotFound)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: %w", name, err)
	case strings.Contains(err.Error(), "escapes"):
		return fmt.Errorf("file name %q: %w", name, ErrRefused)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// Put implements Store. The content goes to a hidden temporary file that
// is renamed into place once complete; on error it is removed.
func (d *Dir) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	if err := CheckName(name); err != nil {
		return 0, err
	}
	dir := path.Dir(name)
	if dir != "." {
		if err := d.root.MkdirAll(dir, 0o755); err != nil {
			return 0, fmt.Errorf("put %s: create %s: %w", name, dir, mapErr(dir, err))
		}
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(dir, tempPrefix+hex.EncodeToString(rnd[:]))
	f, err := d.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", name, mapErr(tmp, err))
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		if rerr := d.root.Rename(tmp, name); rerr != nil {
			err = mapErr(name, rerr)
		}
	}
	if err != nil {
		_ = d.root.Remove(tmp)
		return n, fmt.Errorf("put %s: %w", name, err)
	}
	return n, nil
}

// List implements Store.
func (d *Dir) List(ctx context.Context) ([]Info, error) {
	var out []Info
	err := fs.WalkDir(d.root.FS(), ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(e.Name(), tempPrefix) || !e.Type().IsRegular() {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while listing
			}
			return err
		}
		out = append(out, Info{Name: p, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", d.Path(), err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove implements Store. Only regular files (and symlinks) are removed.
func (d *Dir) Remove(_ context.Context, name string) error {
	if err := CheckName(name); err != nil {
		return err
	}
	fi, err := d.root.Lstat(name)
	if err != nil {
		return fmt.Errorf("remove: %w", mapErr(name, err))
	}
	if fi.IsDir() {
		return errdefs.Invalidf("remove %s: is a directory", name)
	}
	if err := d.root.Remove(name); err != nil {
		return fmt.Errorf("remove: %w", mapErr(name, err))
	}
	return nil
}

var _ Store = (*Dir)(nil)
