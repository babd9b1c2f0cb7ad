package flasher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/bundles"
)

// MediaTypeBmap marks the layer of an oci:// image artifact that holds
// the image's bmaptool block map. A layer titled "*.bmap"
// (org.opencontainers.image.title) counts as one too.
const MediaTypeBmap = "application/vnd.pogo.bmap.v1+xml"

// ociImage is a resolved oci:// image: its repository and the layers that
// hold the image and its block map (nil: none).
type ociImage struct {
	ref   string
	repo  *remote.Repository
	layer ocispec.Descriptor
	bmap  *ocispec.Descriptor
}

// resolveImage fetches the artifact's manifest and picks its layers: the
// block map (by media type or title) and the image (the only other layer,
// or the largest). Loopback registries are spoken to over plain HTTP;
// credentials come from the docker config.
func resolveImage(ctx context.Context, ref string) (*ociImage, error) {
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, errdefs.Invalidf("oci://%s: %v", ref, err)
	}
	if r.Reference == "" {
		r.Reference = "latest"
	}
	repo, err := bundles.Repository(r)
	if err != nil {
		return nil, fmt.Errorf("oci://%s: %w", ref, err)
	}
	_, raw, err := oras.FetchBytes(ctx, repo, r.Reference, oras.DefaultFetchBytesOptions)
	if err != nil {
		return nil, fmt.Errorf("oci://%s: fetch the manifest: %w", ref, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("oci://%s: the manifest is not an OCI image manifest: %w", ref, err)
	}
	img, err := pickLayers(ref, m.Layers)
	if err != nil {
		return nil, err
	}
	img.repo = repo
	return img, nil
}

// pickLayers chooses the image and block map layers of an artifact.
func pickLayers(ref string, layers []ocispec.Descriptor) (*ociImage, error) {
	img := &ociImage{ref: ref}
	var rest []ocispec.Descriptor
	for _, l := range layers {
		if isBmapLayer(l) {
			if img.bmap != nil {
				return nil, errdefs.Invalidf("oci://%s: two block map layers (%s, %s)", ref, img.bmap.Digest, l.Digest)
			}
			img.bmap = &l
			continue
		}
		rest = append(rest, l)
	}
	if len(rest) == 0 {
		return nil, errdefs.Invalidf("oci://%s: the artifact has no image layer", ref)
	}
	img.layer = rest[0]
	for _, l := range rest[1:] {
		if l.Size > img.layer.Size {
			img.layer = l
		}
	}
	if img.layer.Digest.Algorithm() != "sha256" {
		return nil, fmt.Errorf("oci://%s: layer digest %s: only sha256 is supported: %w", ref, img.layer.Digest, errdefs.ErrUnsupported)
	}
	return img, nil
}

func isBmapLayer(l ocispec.Descriptor) bool {
	return l.MediaType == MediaTypeBmap || strings.HasSuffix(l.Annotations[ocispec.AnnotationTitle], ".bmap")
}

// fetchBmap reads the block map layer.
func (o *ociImage) fetchBmap(ctx context.Context) ([]byte, error) {
	if o.bmap.Size > maxBmapSize {
		return nil, errdefs.Invalidf("oci://%s: block map layer %s is %d bytes; a bmap is at most %d", o.ref, o.bmap.Digest, o.bmap.Size, maxBmapSize)
	}
	data, err := content(ctx, o.repo, *o.bmap)
	if err != nil {
		return nil, fmt.Errorf("oci://%s: fetch the block map layer %s: %w", o.ref, o.bmap.Digest, err)
	}
	return data, nil
}

func content(ctx context.Context, repo *remote.Repository, d ocispec.Descriptor) ([]byte, error) {
	rc, err := repo.Fetch(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(data); int64(len(data)) != d.Size || hex.EncodeToString(sum[:]) != d.Digest.Encoded() {
		return nil, fmt.Errorf("layer %s arrived with other content (%d bytes, want %d)", d.Digest, len(data), d.Size)
	}
	return data, nil
}

// pull fetches the image layer into cacheDir/images/<digest>, where a
// later pull of the same digest finds it.
func (o *ociImage) pull(ctx context.Context, cacheDir string) (string, error) {
	layer := o.layer
	dir := filepath.Join(cacheDir, "images")
	if err := ensureDir(dir); err != nil {
		return "", err
	}
	path := filepath.Join(dir, layer.Digest.Encoded())
	if fi, err := os.Stat(path); err == nil && fi.Size() == layer.Size {
		return path, nil
	}
	rc, err := o.repo.Fetch(ctx, layer)
	if err != nil {
		return "", fmt.Errorf("oci://%s: fetch layer %s: %w", o.ref, layer.Digest, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(dir, ".pull-*")
	if err != nil {
		return "", fmt.Errorf("oci://%s: %w", o.ref, err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("oci://%s: fetch layer %s: %w", o.ref, layer.Digest, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != layer.Digest.Encoded() || n != layer.Size {
		return "", fmt.Errorf("oci://%s: layer %s arrived as sha256:%s (%d bytes, want %d)", o.ref, layer.Digest, got, n, layer.Size)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("oci://%s: %w", o.ref, err)
	}
	return path, nil
}

// ociSource pulls the image layer while the board boots; open waits for
// the pull.
type ociSource struct {
	cancel context.CancelFunc
	done   chan struct{}
	path   string
	err    error
}

func pullInBackground(ctx context.Context, o *ociImage, cacheDir string, log *slog.Logger) *ociSource {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &ociSource{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.path, s.err = o.pull(ctx, cacheDir)
		if s.err == nil {
			log.Info("flasher: image layer pulled", "ref", o.ref, "layer", o.layer.Digest)
		}
	}()
	return s
}

func (s *ociSource) open(ctx context.Context) (io.ReadCloser, int64, error) {
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	if s.err != nil {
		return nil, 0, s.err
	}
	return fileSource{path: s.path}.open(ctx)
}

// close stops a pull still running and waits for it.
func (s *ociSource) close() {
	s.cancel()
	<-s.done
}
