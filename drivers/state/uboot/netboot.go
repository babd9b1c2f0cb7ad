package uboot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/pogolab/pogo/bundles/manifest"
)

// Netboot is what the flasher state boots: a flasher bundle's files and
// manifest, and the device tree variant to use ("" for the bundle's
// default).
type Netboot struct {
	// Ref names the bundle in messages.
	Ref string
	// Dir holds the bundle's files.
	Dir     string
	Spec    *manifest.Spec
	Variant string
}

// Boot is what U-Boot loads, with their addresses, and the command that
// boots them.
type Boot struct {
	Loads   []Load
	Bootcmd string
}

// Load is one file U-Boot fetches.
type Load struct {
	What, File, Addr string
}

// Files lists what U-Boot loads and runs to start the flasher.
func (n *Netboot) Files() (Boot, error) {
	s := n.Spec
	var bf Boot
	if s.Kernel == nil {
		return bf, fmt.Errorf("flasher bundle %s: the manifest has no kernel", n.Ref)
	}
	bf.Loads = append(bf.Loads, Load{"kernel", s.Kernel.File, s.Kernel.Address})
	if s.Initram != nil && s.Initram.File != "" {
		bf.Loads = append(bf.Loads, Load{"initram", s.Initram.File, s.Initram.Address})
	}
	bf.Bootcmd = s.Bootcmd
	variant := n.Variant
	if variant == "" && s.DTB != nil {
		variant = s.DTB.Default
	}
	if variant != "" {
		var names []string
		if s.DTB != nil {
			names = slices.Sorted(maps.Keys(s.DTB.Variants))
		}
		if !slices.Contains(names, variant) {
			return bf, fmt.Errorf("flasher bundle %s: no device tree variant %q (variants: %s)", n.Ref, variant, strings.Join(names, ", "))
		}
		v := s.DTB.Variants[variant]
		if v.File != "" {
			// The device tree goes last: a bootcmd using ${filesize} means
			// the initramfs size in the virtual board's manifest, so keep
			// the initramfs last unless there is a dtb to load.
			bf.Loads = append([]Load{{"dtb", v.File, s.DTB.Address}}, bf.Loads...)
		}
		if v.Bootcmd != "" {
			bf.Bootcmd = v.Bootcmd
		}
	}
	if bf.Bootcmd == "" {
		return bf, fmt.Errorf("flasher bundle %s: the manifest has no bootcmd", n.Ref)
	}
	return bf, nil
}

// open opens a bundle file, refusing anything that leaves the directory.
func (n *Netboot) open(name string) (*os.File, os.FileInfo, error) {
	if err := manifest.CheckPath(name); err != nil {
		return nil, nil, fmt.Errorf("flasher bundle %s: %w", n.Ref, err)
	}
	root, err := os.OpenRoot(n.Dir)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	f, err := root.Open(name)
	if err != nil {
		return nil, nil, fmt.Errorf("flasher bundle %s: %w", n.Ref, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// stage puts the boot files on the TFTP server under a directory named
// after their content, skipping what is there already, and returns their
// TFTP names by bundle path.
func (m *Machine) stage(ctx context.Context, n *Netboot, bf Boot) (map[string]string, error) {
	names := map[string]string{}
	for _, l := range bf.Loads {
		f, fi, err := n.open(l.File)
		if err != nil {
			return nil, err
		}
		key := fmt.Sprintf("%s|%s|%d|%d", n.Dir, l.File, fi.Size(), fi.ModTime().UnixNano())
		sum := sha256.Sum256([]byte(key))
		name := "flasher/" + hex.EncodeToString(sum[:6]) + "/" + path.Base(l.File)
		m.stagedMu.Lock()
		done := m.staged[name] == key
		m.stagedMu.Unlock()
		if !done {
			if _, err := m.tftp.Put(ctx, name, f); err != nil {
				f.Close()
				return nil, fmt.Errorf("stage %s on the tftp server: %w", l.File, err)
			}
			m.stagedMu.Lock()
			m.staged[name] = key
			m.stagedMu.Unlock()
		}
		f.Close()
		names[l.File] = name
	}
	return names, nil
}

// tftpServer is the server address U-Boot's serverip takes and the
// prefix of the names the board fetches.
func (m *Machine) tftpServer(ctx context.Context) (string, string, error) {
	raw, err := m.tftp.URL(ctx)
	if err != nil {
		return "", "", fmt.Errorf("tftp server URL: %w", err)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "tftp" || u.Hostname() == "" {
		return "", "", fmt.Errorf("tftp server URL %q: want tftp://server/prefix", raw)
	}
	if p := u.Port(); p != "" && p != "69" {
		return "", "", fmt.Errorf("tftp server %s listens on port %s: U-Boot only fetches from port 69", raw, p)
	}
	return u.Hostname(), strings.TrimPrefix(u.Path, "/"), nil
}

// staged is a netboot whose files are on the TFTP server.
type staged struct {
	nb    *Netboot
	boot  Boot
	names map[string]string
}

// prepare stages the flasher's boot files before any power cycle, so a
// failure there costs none.
func (m *Machine) prepare(ctx context.Context, nb *Netboot, emit func(step, msg string)) (*staged, error) {
	if m.tftp == nil {
		return nil, stepf(StepBundle, "the flasher state needs a tftp server: give the node a tftp child")
	}
	emit(StepBundle, "staging the flasher's boot files on the tftp server")
	bf, err := nb.Files()
	if err != nil {
		return nil, &StepError{Step: StepBundle, Err: err}
	}
	start := time.Now()
	names, err := m.stage(ctx, nb, bf)
	if err != nil {
		return nil, &StepError{Step: StepBundle, Err: err}
	}
	m.log.Info("uboot: flasher boot files staged", "bundle", nb.Ref, "duration", time.Since(start))
	return &staged{nb: nb, boot: bf, names: names}, nil
}

// netboot takes the board from the U-Boot prompt to the flasher's shell:
// dhcp, tftpboot, the bundle's boot command, its login.
func (m *Machine) netboot(ctx context.Context, s *Session, st *staged, emit func(step, msg string)) error {
	server, prefix, err := m.tftpServer(ctx)
	if err != nil {
		return &StepError{Step: StepTFTP, Err: err}
	}
	prompt := m.cfg.Prompt
	uboot := func(timeout time.Duration, cmd string) (string, int, error) {
		return s.Run(ctx, timeout, cmd, prompt)
	}
	emit(StepDHCP, "dhcp")
	if _, _, err := uboot(m.cfg.CommandTimeout, "setenv autoload no"); err != nil {
		return &StepError{Step: StepDHCP, Err: err}
	}
	for try := 0; ; try++ {
		start := time.Now()
		out, rc, err := uboot(m.cfg.DHCPTimeout, "dhcp")
		if err != nil {
			return &StepError{Step: StepDHCP, Err: err}
		}
		if rc == 0 {
			m.log.Info("uboot: dhcp", "duration", time.Since(start), "tries", try+1)
			break
		}
		if try+1 >= m.cfg.DHCPRetries {
			return stepf(StepDHCP, "no address after %d tries: %s", try+1, ErrorLine(out))
		}
		m.log.Warn("uboot: dhcp failed, trying again", "try", try+1, "err", ErrorLine(out))
	}
	if _, rc, err := uboot(m.cfg.CommandTimeout, "setenv serverip "+server); err != nil || rc != 0 {
		return stepf(StepTFTP, "setenv serverip %s: %v (status %d)", server, err, rc)
	}
	for _, l := range st.boot.Loads {
		name := prefix + st.names[l.File]
		emit(StepTFTP, fmt.Sprintf("tftpboot %s %s", l.Addr, name))
		start := time.Now()
		out, rc, err := uboot(m.cfg.TFTPTimeout, fmt.Sprintf("tftpboot %s %s", l.Addr, name))
		if err != nil {
			return stepf(StepTFTP, "tftpboot %s: %w", l.What, err)
		}
		if rc != 0 {
			return stepf(StepTFTP, "tftpboot %s (%s from %s): %s", l.What, name, server, ErrorLine(out))
		}
		m.log.Info("uboot: tftpboot", "file", name, "duration", time.Since(start))
	}
	emit(StepBoot, "booting the flasher: "+st.boot.Bootcmd)
	start := time.Now()
	if err := s.e.SendLine(st.boot.Bootcmd); err != nil {
		return &StepError{Step: StepBoot, Err: err}
	}
	l := st.nb.Spec.Login
	lg := login{prompt: l.Prompt, loginPrompt: l.LoginPrompt, user: l.Username, password: l.Password, what: "the flasher", timeout: m.cfg.FlasherTimeout}
	if lg.prompt == "" {
		lg.prompt = "# "
	}
	if err := m.login(ctx, s, StepBoot, lg); err != nil {
		return err
	}
	s.prompt = lg.prompt
	m.log.Info("uboot: flasher shell reached", "after boot command", time.Since(start))
	return nil
}
