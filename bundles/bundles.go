// Package bundles moves flasher bundles: a manifest.yaml (see
// bundles/manifest) plus the files it names (kernel, initramfs, device
// trees), stored as an OCI artifact (artifact type
// application/vnd.oci.bundle.v1, one layer per file named by its title
// annotation) in a registry or an OCI layout, or kept as a plain directory.
//
// Pull caches by digest in an OCI layout under a cache directory shared by
// every process on the host (a file lock guards it), so a second pull of the
// same digest fetches nothing, and extracts the files to a directory of
// their own per digest.
package bundles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pogolab/pogo/bundles/manifest"
)

// ArtifactType marks a flasher bundle in a registry (Jumpstarter's).
const ArtifactType = "application/vnd.oci.bundle.v1"

// Info describes a bundle without needing its files locally.
type Info struct {
	// Ref is the reference as given.
	Ref string
	// Digest is the OCI manifest digest ("" for a plain directory).
	Digest       string
	ArtifactType string
	Manifest     *manifest.Manifest
	Files        []File
}

// File is one file of a bundle.
type File struct {
	// Name is the slash-separated path in the bundle ("data/Image").
	Name      string
	Size      int64
	Digest    string
	MediaType string
}

// Bundle is a bundle whose files are on local disk.
type Bundle struct {
	Info
	// Dir holds the files under their names; treat it as read-only (it is
	// the cache, or the user's directory).
	Dir string
	// Fetched is how many bytes this pull transferred from the source (0
	// when everything was cached).
	Fetched int64
}

// Path is the local path of a bundle file, checked to stay inside Dir
// (symlinks included).
func (b *Bundle) Path(name string) (string, error) {
	if err := manifest.CheckPath(name); err != nil {
		return "", fmt.Errorf("bundle %s: %w", b.Ref, err)
	}
	root, err := os.OpenRoot(b.Dir)
	if err != nil {
		return "", fmt.Errorf("bundle %s: %w", b.Ref, err)
	}
	defer root.Close()
	fi, err := root.Stat(name)
	if err != nil {
		return "", fmt.Errorf("bundle %s: file %s: %w", b.Ref, name, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("bundle %s: %s is not a regular file", b.Ref, name)
	}
	return filepath.Join(b.Dir, filepath.FromSlash(path.Clean(name))), nil
}

// Open opens a bundle file for reading, refusing anything that resolves
// outside Dir.
func (b *Bundle) Open(name string) (*os.File, error) {
	if err := manifest.CheckPath(name); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", b.Ref, err)
	}
	root, err := os.OpenRoot(b.Dir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", b.Ref, err)
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", b.Ref, err)
	}
	return f, nil
}

// DefaultCacheDir is where bundles are cached when the caller does not
// say: /var/lib/pogo/flasher for root (shared by the exporter's drivers),
// else the user's cache directory.
func DefaultCacheDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/pogo/flasher"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "pogo", "flasher")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("pogo-flasher-%d", os.Geteuid()))
}

// loadDir reads a plain bundle directory: its manifest and every file the
// manifest names, resolved inside the directory.
func loadDir(ref, dir string) (*Bundle, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	defer root.Close()
	m, err := readManifest(root, filepath.Join(abs, manifest.FileName))
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	files, err := listFiles(root)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	return &Bundle{Info: Info{Ref: ref, Manifest: m, Files: files}, Dir: abs}, nil
}

// readManifest parses manifest.yaml in root and checks that every file it
// names is a regular file inside root.
func readManifest(root *os.Root, display string) (*manifest.Manifest, error) {
	data, err := root.ReadFile(manifest.FileName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no %s at the bundle root", manifest.FileName)
	}
	if err != nil {
		return nil, err
	}
	m, err := manifest.Parse(display, data)
	if err != nil {
		return nil, err
	}
	for _, f := range m.Files() {
		fi, err := root.Stat(f.Path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, &manifest.Error{File: display, Line: f.Line, Field: f.Field, Msg: fmt.Sprintf("%q is not in the bundle", f.Path)}
		case err != nil:
			// os.Root refuses symlinks that lead out of the bundle.
			return nil, &manifest.Error{File: display, Line: f.Line, Field: f.Field, Msg: fmt.Sprintf("%q: %v", f.Path, err)}
		case !fi.Mode().IsRegular():
			return nil, &manifest.Error{File: display, Line: f.Line, Field: f.Field, Msg: fmt.Sprintf("%q is not a regular file", f.Path)}
		}
	}
	return m, nil
}

// listFiles walks root and lists its regular files (following symlinks
// that stay inside), skipping dot files.
func listFiles(root *os.Root) ([]File, error) {
	var files []File
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != "." && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if err := manifest.CheckPath(p); err != nil {
			return fmt.Errorf("bundle file name: %w", err)
		}
		fi, err := root.Stat(p)
		if err != nil {
			return fmt.Errorf("bundle file %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("bundle file %s: not a regular file", p)
		}
		files = append(files, File{Name: p, Size: fi.Size(), MediaType: mediaType(p)})
		return nil
	})
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, err
}

func mediaType(name string) string {
	switch path.Ext(name) {
	case ".yaml", ".yml":
		return "application/yaml"
	}
	return "application/octet-stream"
}
