package flasher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/bundles"
)

func init() { pullImage = pullOCIImage }

// pullOCIImage fetches the image layer of an OCI artifact (one layer, or
// the largest) into cacheDir/images/<digest>, where a later pull of the
// same digest finds it. Loopback registries are spoken to over plain HTTP;
// credentials come from the docker config.
func pullOCIImage(ctx context.Context, ref, cacheDir string) (string, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return "", errdefs.Invalidf("oci://%s: %v", ref, err)
	}
	if r.Reference == "" {
		r.Reference = "latest"
	}
	repo, err := bundles.Repository(r)
	if err != nil {
		return "", fmt.Errorf("oci://%s: %w", ref, err)
	}

	_, raw, err := oras.FetchBytes(ctx, repo, r.Reference, oras.DefaultFetchBytesOptions)
	if err != nil {
		return "", fmt.Errorf("oci://%s: fetch the manifest: %w", ref, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", fmt.Errorf("oci://%s: the manifest is not an OCI image manifest: %w", ref, err)
	}
	if len(m.Layers) == 0 {
		return "", fmt.Errorf("oci://%s: the artifact has no layers", ref)
	}
	layer := m.Layers[0]
	for _, l := range m.Layers[1:] {
		if l.Size > layer.Size {
			layer = l
		}
	}
	if layer.Digest.Algorithm() != "sha256" {
		return "", fmt.Errorf("oci://%s: layer digest %s: only sha256 is supported", ref, layer.Digest)
	}
	dir := filepath.Join(cacheDir, "images")
	if err := ensureDir(dir); err != nil {
		return "", err
	}
	path := filepath.Join(dir, layer.Digest.Encoded())
	if fi, err := os.Stat(path); err == nil && fi.Size() == layer.Size {
		return path, nil
	}
	rc, err := repo.Fetch(ctx, layer)
	if err != nil {
		return "", fmt.Errorf("oci://%s: fetch layer %s: %w", ref, layer.Digest, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(dir, ".pull-*")
	if err != nil {
		return "", fmt.Errorf("oci://%s: %w", ref, err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("oci://%s: fetch layer %s: %w", ref, layer.Digest, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != layer.Digest.Encoded() || n != layer.Size {
		return "", fmt.Errorf("oci://%s: layer %s arrived as sha256:%s (%d bytes, want %d)", ref, layer.Digest, got, n, layer.Size)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("oci://%s: %w", ref, err)
	}
	return path, nil
}
