package bundles

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/file"
	"oras.land/oras-go/v2/content/oci"
)

// Push checks the bundle directory dir (its manifest and every file it
// names) and pushes all its files to ref, a registry reference or
// "oci-layout:PATH[:TAG]", as an artifact of type ArtifactType with one
// layer per file. It returns the manifest digest.
//
// The manifest's creation time is $SOURCE_DATE_EPOCH when set, else the
// newest file's mtime, so pushing the same files twice gives the same
// digest and every cache keeps its copy.
func Push(ctx context.Context, dir, ref string) (string, error) {
	b, err := loadDir(dir, dir)
	if err != nil {
		return "", err
	}
	l, err := parseRef(ref)
	if err != nil {
		return "", err
	}
	if l.kind == kindDir {
		return "", fmt.Errorf("push to %s: a plain directory is not a push target; use %sPATH or a registry reference", ref, LayoutPrefix)
	}
	tag := l.tag
	if tag == "" {
		tag = "latest"
	}

	fs, err := file.New(b.Dir)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", dir, err)
	}
	defer fs.Close()
	var layers []ocispec.Descriptor
	var newest time.Time
	for _, f := range b.Files {
		desc, err := fs.Add(ctx, f.Name, f.MediaType, "")
		if err != nil {
			return "", fmt.Errorf("push %s: add %s: %w", dir, f.Name, err)
		}
		layers = append(layers, desc)
		if fi, err := os.Stat(filepath.Join(b.Dir, filepath.FromSlash(f.Name))); err == nil && fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
	}
	created := newest.UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if secs, err := strconv.ParseInt(s, 10, 64); err == nil {
			created = time.Unix(secs, 0).UTC()
		}
	}
	desc, err := oras.PackManifest(ctx, fs, oras.PackManifestVersion1_1, ArtifactType, oras.PackManifestOptions{
		Layers: layers,
		ManifestAnnotations: map[string]string{
			ocispec.AnnotationCreated: created.Format(time.RFC3339),
		},
	})
	if err != nil {
		return "", fmt.Errorf("push %s: pack: %w", dir, err)
	}
	if err := fs.Tag(ctx, desc, tag); err != nil {
		return "", fmt.Errorf("push %s: %w", dir, err)
	}

	var dst oras.Target
	switch l.kind {
	case kindLayout:
		store, err := oci.NewWithContext(ctx, l.path)
		if err != nil {
			return "", fmt.Errorf("push to OCI layout %s: %w", l.path, err)
		}
		dst = store
	case kindRegistry:
		repo, err := repository(l)
		if err != nil {
			return "", err
		}
		dst = repo
	}
	if _, err := oras.Copy(ctx, fs, tag, dst, tag, oras.DefaultCopyOptions); err != nil {
		return "", fmt.Errorf("push %s to %s: %w", dir, where(l), err)
	}
	return desc.Digest.String(), nil
}
