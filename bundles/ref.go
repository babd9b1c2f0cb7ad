package bundles

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// LayoutPrefix starts a reference to a local OCI layout:
// "oci-layout:PATH", "oci-layout:PATH:TAG" or "oci-layout:PATH@DIGEST".
const LayoutPrefix = "oci-layout:"

// DirPrefix forces a reference to mean a plain directory.
const DirPrefix = "dir:"

type refKind int

const (
	kindDir refKind = iota
	kindLayout
	kindRegistry
)

// location is a parsed bundle reference.
type location struct {
	kind refKind
	// path is the directory (kindDir) or the OCI layout (kindLayout).
	path string
	// reg is the registry reference (kindRegistry).
	reg registry.Reference
	// tag is the tag or digest to resolve (layout and registry).
	tag string
}

func (l location) String() string {
	switch l.kind {
	case kindDir:
		return l.path
	case kindLayout:
		return LayoutPrefix + l.path + ":" + l.tag
	}
	return l.reg.String()
}

// parseRef reads a bundle reference:
//   - "oci-layout:PATH[:TAG|@DIGEST]": an OCI image layout directory;
//   - "dir:PATH", or any existing directory: a plain bundle directory (or a
//     layout, when it holds an oci-layout file);
//   - otherwise a registry reference "HOST/REPO[:TAG|@DIGEST]" (an "oci://"
//     prefix is allowed), tag "latest" when none is given.
func parseRef(ref string) (location, error) {
	if ref == "" {
		return location{}, errors.New("empty bundle reference")
	}
	if rest, ok := strings.CutPrefix(ref, LayoutPrefix); ok {
		p, tag := splitLayoutRef(rest)
		if p == "" {
			return location{}, fmt.Errorf("bundle reference %q: no layout path", ref)
		}
		return location{kind: kindLayout, path: p, tag: tag}, nil
	}
	if rest, ok := strings.CutPrefix(ref, DirPrefix); ok {
		return localDir(rest), nil
	}
	if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
		return localDir(ref), nil
	}
	if strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, ".") {
		return location{}, fmt.Errorf("bundle reference %q: no such directory", ref)
	}
	r, err := registry.ParseReference(strings.TrimPrefix(ref, "oci://"))
	if err != nil {
		return location{}, fmt.Errorf("bundle reference %q: %w", ref, err)
	}
	tag := r.Reference
	if tag == "" {
		tag = "latest"
		r.Reference = tag
	}
	return location{kind: kindRegistry, reg: r, tag: tag}, nil
}

func localDir(p string) location {
	if _, err := os.Stat(filepath.Join(p, "oci-layout")); err == nil {
		return location{kind: kindLayout, path: p}
	}
	return location{kind: kindDir, path: p}
}

// splitLayoutRef splits "PATH:TAG" or "PATH@DIGEST"; a colon followed by a
// slash belongs to the path.
func splitLayoutRef(s string) (string, string) {
	if i := strings.LastIndex(s, "@"); i >= 0 {
		return s[:i], s[i+1:]
	}
	if i := strings.LastIndex(s, ":"); i >= 0 && !strings.Contains(s[i+1:], "/") {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// isLoopback tells registries spoken to in plain HTTP: localhost and
// loopback addresses, as docker and oras do.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func repository(l location) (*remote.Repository, error) { return Repository(l.reg) }

// Repository opens the registry repository ref names, the way every pogo
// pull and push does: plain HTTP for loopback registries, credentials from
// the docker config file ($DOCKER_CONFIG/config.json or
// ~/.docker/config.json, including its credential helpers).
func Repository(ref registry.Reference) (*remote.Repository, error) {
	repo, err := remote.NewRepository(ref.Registry + "/" + ref.Repository)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", ref.Registry, err)
	}
	repo.PlainHTTP = isLoopback(ref.Registry)
	store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
	if err != nil {
		return nil, fmt.Errorf("registry %s: docker credentials: %w", ref.Registry, err)
	}
	repo.Client = &auth.Client{
		Client:     retry.DefaultClient,
		Cache:      auth.NewCache(),
		Credential: credentials.Credential(store),
	}
	repo.Client.(*auth.Client).SetUserAgent("pogo")
	return repo, nil
}

// source opens l as something to copy from and names the reference to
// resolve in it.
func source(ctx context.Context, l location) (oras.ReadOnlyTarget, string, error) {
	switch l.kind {
	case kindRegistry:
		repo, err := repository(l)
		if err != nil {
			return nil, "", err
		}
		return repo, l.tag, nil
	case kindLayout:
		store, err := oci.NewFromFS(ctx, os.DirFS(l.path))
		if err != nil {
			return nil, "", fmt.Errorf("OCI layout %s: %w", l.path, err)
		}
		tag := l.tag
		if tag == "" {
			var tags []string
			if err := store.Tags(ctx, "", func(ts []string) error { tags = append(tags, ts...); return nil }); err != nil {
				return nil, "", fmt.Errorf("OCI layout %s: %w", l.path, err)
			}
			sort.Strings(tags)
			if len(tags) != 1 {
				return nil, "", fmt.Errorf("OCI layout %s has tags [%s]: name one as %s%s:TAG", l.path, strings.Join(tags, " "), LayoutPrefix, l.path)
			}
			tag = tags[0]
		}
		return store, tag, nil
	}
	return nil, "", fmt.Errorf("%s is a plain directory, not an OCI source", l.path)
}

// where names the source in errors: "registry HOST" or "OCI layout PATH".
func where(l location) string {
	if l.kind == kindRegistry {
		return "registry " + l.reg.Registry
	}
	return "OCI layout " + l.path
}

// notFound turns oras's not-found into a message naming the tag.
func notFound(l location, tag string, err error) error {
	if errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("%s: %s not found: %w", where(l), tag, err)
	}
	return fmt.Errorf("%s: resolve %s: %w", where(l), tag, err)
}
