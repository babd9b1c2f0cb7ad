package bundles

import (
	"context"
	"fmt"

	"oras.land/oras-go/v2/content"

	"github.com/pogolab/pogo/bundles/manifest"
)

// Inspect describes the bundle at ref without fetching its large files: it
// reads the OCI manifest and manifest.yaml only (a plain directory is read
// in place). The manifest is checked, but file presence only as far as the
// OCI manifest lists them.
func Inspect(ctx context.Context, ref string) (*Info, error) {
	l, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	if l.kind == kindDir {
		b, err := loadDir(ref, l.path)
		if err != nil {
			return nil, err
		}
		return &b.Info, nil
	}
	src, tag, err := source(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	desc, err := src.Resolve(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, notFound(l, tag, err))
	}
	mf, err := readOCIManifest(ctx, src, desc)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	info := &Info{Ref: ref, Digest: desc.Digest.String(), ArtifactType: artifactType(mf)}
	if info.Files, err = layerFiles(mf); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", ref, err)
	}
	have := map[string]bool{}
	for i, f := range info.Files {
		have[f.Name] = true
		if f.Name != manifest.FileName {
			continue
		}
		l := mf.Layers[i]
		if l.Size > maxManifestBytes {
			return nil, fmt.Errorf("bundle %s: %s is %d bytes (limit %d)", ref, manifest.FileName, l.Size, maxManifestBytes)
		}
		data, err := content.FetchAll(ctx, src, l)
		if err != nil {
			return nil, fmt.Errorf("bundle %s: fetch %s: %w", ref, manifest.FileName, err)
		}
		if info.Manifest, err = manifest.Parse(manifest.FileName, data); err != nil {
			return nil, fmt.Errorf("bundle %s: %w", ref, err)
		}
	}
	for _, f := range info.Manifest.Files() {
		if !have[f.Path] {
			return nil, fmt.Errorf("bundle %s: %v", ref, &manifest.Error{File: manifest.FileName, Line: f.Line, Field: f.Field, Msg: fmt.Sprintf("%q is not in the bundle", f.Path)})
		}
	}
	return info, nil
}
