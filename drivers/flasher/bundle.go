package flasher

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/pogolab/pogo/bundles"
	"github.com/pogolab/pogo/bundles/manifest"
	"github.com/pogolab/pogo/drivers/state/uboot"
)

// bundle is a flasher bundle on local disk.
type bundle struct {
	ref  string
	dir  string
	man  *manifest.Manifest
	spec *manifest.Spec
}

// checkBundleRef refuses a reference that cannot work before anything
// runs: a local bundle is read and its manifest checked (and returned); a
// registry is only contacted when flashing (nil, nil).
func (d *Driver) checkBundleRef(ctx context.Context, ref string) (*bundle, error) {
	local := strings.HasPrefix(ref, "/") || strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, bundles.DirPrefix)
	if fi, err := os.Stat(ref); err == nil && fi.IsDir() {
		local = true
	}
	if strings.HasPrefix(ref, bundles.LayoutPrefix) {
		local = true
	}
	if local {
		return d.loadBundle(ctx, ref)
	}
	if strings.ContainsAny(ref, " \t\n") || !strings.Contains(ref, "/") {
		return nil, fmt.Errorf("%q: want a directory, oci-layout:PATH or a registry reference like quay.io/org/bundle:tag", ref)
	}
	return nil, nil
}

// loadBundle makes ref's files available locally (pulled into the cache
// for layouts and registries).
func (d *Driver) loadBundle(ctx context.Context, ref string) (*bundle, error) {
	b, err := bundles.Pull(ctx, ref, d.cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	return &bundle{ref: ref, dir: b.Dir, man: b.Manifest, spec: &b.Manifest.Spec}, nil
}

// netboot is the bundle as the state machine boots it.
func (b *bundle) netboot(variant string) *uboot.Netboot {
	return &uboot.Netboot{Ref: b.ref, Dir: b.dir, Spec: b.spec, Variant: variant}
}

// boot lists what U-Boot loads and runs to start the flasher, with the
// device tree variant asked for ("" for the bundle's default).
func (b *bundle) boot(variant string) (uboot.Boot, error) { return b.netboot(variant).Files() }
