package bundles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/gofrs/flock"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"

	"github.com/pogolab/pogo/bundles/manifest"
)

// maxManifestBytes bounds what is read of an OCI manifest and of
// manifest.yaml from a source that may be hostile.
const maxManifestBytes = 4 << 20

// Pull makes the bundle at ref available on local disk under cacheDir (see
// DefaultCacheDir) and returns it with its checked manifest. A plain
// directory is used in place; an OCI layout or registry bundle is copied
// into cacheDir/oci (blobs addressed by digest, so a second pull of the same
// digest fetches no blob) and extracted to cacheDir/files/<digest>.
// Processes sharing cacheDir take turns through cacheDir/lock.
func Pull(ctx context.Context, ref, cacheDir string) (*Bundle, error) {
	l, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	if l.kind == kindDir {
		return loadDir(ref, l.path)
	}
	src, tag, err := source(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	desc, err := src.Resolve(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, notFound(l, tag, err))
	}
	if desc.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("bundle %s: %s is a %s, not an OCI image manifest", ref, desc.Digest, desc.MediaType)
	}
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	unlock, err := lockCache(ctx, cacheDir)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	defer unlock()

	b := &Bundle{Info: Info{Ref: ref, Digest: desc.Digest.String()}, Dir: filepath.Join(cacheDir, "files", desc.Digest.Encoded())}
	store, err := oci.NewWithContext(ctx, filepath.Join(cacheDir, "oci"))
	if err != nil {
		return nil, fmt.Errorf("bundle cache %s: %w", cacheDir, err)
	}
	var fetched atomic.Int64
	opts := oras.CopyGraphOptions{
		PreCopy: func(_ context.Context, d ocispec.Descriptor) error {
			fetched.Add(d.Size)
			return nil
		},
	}
	start := time.Now()
	if err := oras.CopyGraph(ctx, src, store, desc, opts); err != nil {
		return nil, fmt.Errorf("bundle %s: copy from %s: %w", ref, where(l), err)
	}
	b.Fetched = fetched.Load()
	if l.kind == kindRegistry {
		// The layout keeps the name it came by, so `oras` and the GC see it.
		if err := store.Tag(ctx, desc, l.reg.String()); err != nil {
			return nil, fmt.Errorf("bundle cache %s: tag %s: %w", cacheDir, ref, err)
		}
	}
	mf, err := readOCIManifest(ctx, store, desc)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	b.ArtifactType = artifactType(mf)
	if b.Files, err = layerFiles(mf); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	if _, err := os.Stat(b.Dir); errors.Is(err, fs.ErrNotExist) {
		if err := extract(ctx, store, mf, b.Dir); err != nil {
			return nil, fmt.Errorf("bundle %s: %w", ref, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("bundle cache: %w", err)
	}
	root, err := os.OpenRoot(b.Dir)
	if err != nil {
		return nil, fmt.Errorf("bundle cache: %w", err)
	}
	defer root.Close()
	if b.Manifest, err = readManifest(root, manifest.FileName); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	touch(b.Dir)
	slog.Debug("bundle pulled", "ref", ref, "digest", b.Digest, "fetched", b.Fetched, "dir", b.Dir, "took", time.Since(start))
	return b, nil
}

// lockCache takes the cache's cross-process lock; oci.Store's index.json
// and the extraction are not safe to share otherwise.
func lockCache(ctx context.Context, cacheDir string) (func(), error) {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("bundle cache: %w", err)
	}
	fl := flock.New(filepath.Join(cacheDir, "lock"))
	ok, err := fl.TryLockContext(ctx, 50*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("bundle cache %s: lock: %w", cacheDir, err)
	}
	if !ok {
		return nil, fmt.Errorf("bundle cache %s: lock: %w", cacheDir, ctx.Err())
	}
	return func() { _ = fl.Unlock() }, nil
}

func readOCIManifest(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) (*ocispec.Manifest, error) {
	if desc.Size > maxManifestBytes {
		return nil, fmt.Errorf("OCI manifest %s is %d bytes (limit %d)", desc.Digest, desc.Size, maxManifestBytes)
	}
	data, err := content.FetchAll(ctx, f, desc)
	if err != nil {
		return nil, fmt.Errorf("OCI manifest %s: %w", desc.Digest, err)
	}
	var mf ocispec.Manifest
	if err := json.Unmarshal(data, &mf); err != nil {
		return nil, fmt.Errorf("OCI manifest %s: %w", desc.Digest, err)
	}
	return &mf, nil
}

func artifactType(mf *ocispec.Manifest) string {
	if mf.ArtifactType != "" {
		return mf.ArtifactType
	}
	return mf.Config.MediaType
}

// layerFiles names every layer by its title annotation, refusing names
// that would leave the bundle and duplicates.
func layerFiles(mf *ocispec.Manifest) ([]File, error) {
	seen := map[string]bool{}
	var files []File
	hasManifest := false
	for i, l := range mf.Layers {
		name := l.Annotations[ocispec.AnnotationTitle]
		if name == "" {
			return nil, fmt.Errorf("layer %d (%s) has no %s annotation: not a file bundle", i, l.Digest, ocispec.AnnotationTitle)
		}
		if err := manifest.CheckPath(name); err != nil {
			return nil, fmt.Errorf("layer %d (%s): file name %w", i, l.Digest, err)
		}
		name = path.Clean(name)
		if seen[name] {
			return nil, fmt.Errorf("layer %d (%s): file %s appears twice", i, l.Digest, name)
		}
		seen[name] = true
		hasManifest = hasManifest || name == manifest.FileName
		files = append(files, File{Name: name, Size: l.Size, Digest: l.Digest.String(), MediaType: l.MediaType})
	}
	if !hasManifest {
		return nil, fmt.Errorf("no %s layer: not a flasher bundle", manifest.FileName)
	}
	return files, nil
}

// extract writes every layer to its name under dir, through a temporary
// directory renamed into place so a crash leaves no half bundle.
func extract(ctx context.Context, store content.Fetcher, mf *ocispec.Manifest, dir string) (err error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("bundle cache: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), extractPrefix)
	if err != nil {
		return fmt.Errorf("bundle cache: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return fmt.Errorf("bundle cache: %w", err)
	}
	defer root.Close()
	for _, l := range mf.Layers {
		name := path.Clean(l.Annotations[ocispec.AnnotationTitle])
		if err := extractOne(ctx, store, root, l, name); err != nil {
			return fmt.Errorf("extract %s: %w", name, err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("bundle cache: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("bundle cache: %w", err)
	}
	return nil
}

func extractOne(ctx context.Context, store content.Fetcher, root *os.Root, l ocispec.Descriptor, name string) error {
	if d := path.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	rc, err := store.Fetch(ctx, l)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	vr := content.NewVerifyReader(rc, l)
	if _, err := io.Copy(f, vr); err != nil {
		f.Close()
		return err
	}
	if err := vr.Verify(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
