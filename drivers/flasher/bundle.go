package flasher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/pogolab/pogo/bundles"
	"github.com/pogolab/pogo/bundles/manifest"
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

// open opens a bundle file, refusing anything that leaves the directory.
func (b *bundle) open(name string) (*os.File, os.FileInfo, error) {
	if err := manifest.CheckPath(name); err != nil {
		return nil, nil, fmt.Errorf("flasher bundle %s: %w", b.ref, err)
	}
	root, err := os.OpenRoot(b.dir)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		return nil, nil, fmt.Errorf("flasher bundle %s: %w", b.ref, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// bootFiles are what U-Boot loads, with their addresses, and the command
// that boots them.
type bootFiles struct {
	loads   []load
	bootcmd string
}

type load struct {
	what, file, addr string
}

// boot lists what U-Boot loads and runs to start the flasher, with the
// device tree variant asked for ("" for the bundle's default).
func (b *bundle) boot(variant string) (bootFiles, error) {
	s := b.spec
	var bf bootFiles
	if s.Kernel == nil {
		return bf, fmt.Errorf("flasher bundle %s: the manifest has no kernel", b.ref)
	}
	bf.loads = append(bf.loads, load{"kernel", s.Kernel.File, s.Kernel.Address})
	if s.Initram != nil && s.Initram.File != "" {
		bf.loads = append(bf.loads, load{"initram", s.Initram.File, s.Initram.Address})
	}
	bf.bootcmd = s.Bootcmd
	if variant == "" && s.DTB != nil {
		variant = s.DTB.Default
	}
	if variant != "" {
		var names []string
		if s.DTB != nil {
			names = slices.Sorted(maps.Keys(s.DTB.Variants))
		}
		if !slices.Contains(names, variant) {
			return bf, fmt.Errorf("flasher bundle %s: no device tree variant %q (variants: %s)", b.ref, variant, strings.Join(names, ", "))
		}
		v := s.DTB.Variants[variant]
		if v.File != "" {
			// The device tree goes last: a bootcmd using ${filesize} means
			// the initramfs size in the virtual board's manifest, so keep
			// the initramfs last unless there is a dtb to load.
			bf.loads = append([]load{{"dtb", v.File, s.DTB.Address}}, bf.loads...)
		}
		if v.Bootcmd != "" {
			bf.bootcmd = v.Bootcmd
		}
	}
	if bf.bootcmd == "" {
		return bf, fmt.Errorf("flasher bundle %s: the manifest has no bootcmd", b.ref)
	}
	return bf, nil
}

// stage puts the boot files on the TFTP server under a directory named
// after their content, skipping what is there already, and returns their
// TFTP names by bundle path.
func (d *Driver) stage(ctx context.Context, b *bundle, bf bootFiles) (map[string]string, error) {
	names := map[string]string{}
	for _, l := range bf.loads {
		f, fi, err := b.open(l.file)
		if err != nil {
			return nil, err
		}
		key := fmt.Sprintf("%s|%s|%d|%d", b.dir, l.file, fi.Size(), fi.ModTime().UnixNano())
		sum := sha256.Sum256([]byte(key))
		name := "flasher/" + hex.EncodeToString(sum[:6]) + "/" + path.Base(l.file)
		d.stagedMu.Lock()
		done := d.staged[name] == key
		d.stagedMu.Unlock()
		if !done {
			if _, err := d.tftp.Put(ctx, name, f); err != nil {
				f.Close()
				return nil, fmt.Errorf("stage %s on the tftp server: %w", l.file, err)
			}
			d.stagedMu.Lock()
			d.staged[name] = key
			d.stagedMu.Unlock()
		}
		f.Close()
		names[l.file] = name
	}
	return names, nil
}
