package bundles

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/oci"

	"github.com/pogolab/pogo/bundles/manifest"
)

// Cached is one bundle in a cache directory.
type Cached struct {
	Digest string
	// Name is manifest.yaml's metadata.name ("" when it cannot be read).
	Name string
	// Refs are the registry references it was pulled by.
	Refs []string
	// Size is the bytes of its extracted files.
	Size int64
	// LastUsed is when a pull last returned it.
	LastUsed time.Time
	Dir      string
}

// extractPrefix starts the temporary directories extract renames into
// place; one left behind is a crashed pull.
const extractPrefix = ".extract-"

// touch records that a cached bundle was used now.
func touch(dir string) {
	now := time.Now()
	_ = os.Chtimes(dir, now, now)
}

// List reports the bundles in cacheDir, most recently used first.
func List(ctx context.Context, cacheDir string) ([]Cached, error) {
	unlock, err := lockCache(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	store, err := openStore(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	return list(ctx, cacheDir, store)
}

// list reads the cache; store (nil when the cache has no OCI layout yet)
// names the references.
func list(ctx context.Context, cacheDir string, store *oci.Store) ([]Cached, error) {
	ents, err := os.ReadDir(filepath.Join(cacheDir, "files"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bundle cache %s: %w", cacheDir, err)
	}
	refs := map[string][]string{}
	if store != nil {
		_ = store.Tags(ctx, "", func(tags []string) error {
			for _, t := range tags {
				if d, err := store.Resolve(ctx, t); err == nil && t != d.Digest.String() {
					refs[d.Digest.String()] = append(refs[d.Digest.String()], t)
				}
			}
			return nil
		})
	}
	var out []Cached
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(cacheDir, "files", e.Name())
		fi, err := os.Stat(dir)
		if err != nil {
			continue
		}
		c := Cached{Digest: "sha256:" + e.Name(), Dir: dir, LastUsed: fi.ModTime()}
		c.Refs = refs[c.Digest]
		_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if i, err := d.Info(); err == nil {
					c.Size += i.Size()
				}
			}
			return nil
		})
		if data, err := os.ReadFile(filepath.Join(dir, manifest.FileName)); err == nil {
			if m, err := manifest.Parse(manifest.FileName, data); err == nil {
				c.Name = m.Name
			}
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastUsed.After(out[j].LastUsed) })
	return out, nil
}

// openStore opens the cache's OCI layout, or returns nil when there is
// none yet.
func openStore(ctx context.Context, cacheDir string) (*oci.Store, error) {
	dir := filepath.Join(cacheDir, "oci")
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	store, err := oci.NewWithContext(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("bundle cache %s: %w", cacheDir, err)
	}
	return store, nil
}

// Prune removes from cacheDir every bundle not used since before
// (its files, its OCI manifest and the blobs no kept bundle shares),
// and what crashed pulls left behind, and returns what it removed. A
// bundle a flash is using right now was pulled when the flash began, so
// a cut-off in the past never removes it.
func Prune(ctx context.Context, cacheDir string, before time.Time) ([]Cached, error) {
	unlock, err := lockCache(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	store, err := openStore(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	all, err := list(ctx, cacheDir, store)
	if err != nil {
		return nil, err
	}
	var removed []Cached
	for _, c := range all {
		if !c.LastUsed.Before(before) {
			continue
		}
		if store != nil {
			if err := deleteManifest(ctx, store, filepath.Join(cacheDir, "oci"), c.Digest); err != nil {
				return removed, fmt.Errorf("bundle cache %s: remove %s: %w", cacheDir, c.Digest, err)
			}
		}
		if err := os.RemoveAll(c.Dir); err != nil {
			return removed, fmt.Errorf("bundle cache %s: %w", cacheDir, err)
		}
		removed = append(removed, c)
	}
	ents, _ := os.ReadDir(filepath.Join(cacheDir, "files"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), extractPrefix) {
			_ = os.RemoveAll(filepath.Join(cacheDir, "files", e.Name()))
		}
	}
	return removed, nil
}

// deleteManifest removes an OCI manifest and, through the store's garbage
// collection, the blobs only it referenced.
func deleteManifest(ctx context.Context, store *oci.Store, root, dgst string) error {
	d, err := digest.Parse(dgst)
	if err != nil {
		return err
	}
	fi, err := os.Stat(filepath.Join(root, ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return store.Delete(ctx, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: fi.Size()})
}
