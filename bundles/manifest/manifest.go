// Package manifest reads a flasher bundle's manifest.yaml: Jumpstarter's
// FlashBundleManifest (apiVersion jumpstarter.dev/v1alpha1). Every problem
// comes back as one *Error naming the file, line and field.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/pogolab/pogo/api/errdefs"
)

// APIVersion and Kind are what a manifest must declare.
const (
	APIVersion = "jumpstarter.dev/v1alpha1"
	Kind       = "FlashBundleManifest"
	// FileName is the manifest's name at the bundle root.
	FileName = "manifest.yaml"
)

// Manifest describes a flasher bundle.
type Manifest struct {
	APIVersion string
	Kind       string
	Name       string
	Spec       Spec

	files []FileRef
}

// Spec is how to boot the board into the flasher and where to write.
type Spec struct {
	Manufacturer string
	Link         string
	// Bootcmd is the U-Boot command that boots the loaded flasher.
	Bootcmd       string
	DefaultTarget string
	// Targets maps a name (what --partition takes) to where to write.
	Targets          map[string]Target
	Login            Login
	PreflashCommands []string
	Kernel           *Load
	Initram          *Load
	DTB              *DTB
}

// TargetNames lists the targets sorted.
func (s *Spec) TargetNames() []string {
	names := make([]string, 0, len(s.Targets))
	for n := range s.Targets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Target is a block device: a /dev path, or a /sys/class/block lookup of the
// device whose sysfs path contains an address (a controller's, such as
// "4fb0000"), for boards whose device numbering is not stable.
type Target struct {
	// Device is set for a /dev path.
	Device string
	// Lookup is the address for "/sys/class/block#<addr>".
	Lookup string
}

// SysBlockPrefix starts a lookup target.
const SysBlockPrefix = "/sys/class/block#"

func (t Target) String() string {
	if t.Lookup != "" {
		return SysBlockPrefix + t.Lookup
	}
	return t.Device
}

// Login is how to reach a shell once the flasher booted. Type "busybox"
// with no Username means there is no login: wait for Prompt.
type Login struct {
	Type        string
	LoginPrompt string
	Username    string
	Password    string
	Prompt      string
}

// Load is a file tftpbooted to an address.
type Load struct {
	// File is a path inside the bundle (slash-separated, no "..").
	File string
	// Address is the load address as written; U-Boot reads it as hex.
	Address string
}

// DTB selects a device tree.
type DTB struct {
	Default  string
	Address  string
	Variants map[string]Variant
}

// Variant is a device tree file to load, a boot command to use instead of
// Spec.Bootcmd, or both.
type Variant struct {
	File    string
	Bootcmd string
}

// FileRef is a bundle path the manifest names, with where it is named.
type FileRef struct {
	Field string
	Path  string
	Line  int
}

// Files lists every bundle path the manifest names.
func (m *Manifest) Files() []FileRef { return m.files }

// Error is a manifest problem at a place in the file.
type Error = errdefs.FileError

// Parse checks data as the manifest named name (for messages).
func Parse(name string, data []byte) (*Manifest, error) {
	p := &parser{file: name}
	return p.parse(data)
}

type parser struct {
	file  string
	files []FileRef
}

func (p *parser) errf(n *yaml.Node, field, format string, args ...any) *Error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &Error{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// mapping walks a mapping's pairs, refusing duplicate and unknown keys.
func (p *parser) mapping(n *yaml.Node, field string, known []string, f func(k, v *yaml.Node) error) error {
	if n.Kind == yaml.AliasNode {
		return p.errf(n, field, "YAML aliases are not supported")
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return p.errf(n, field, "must be a mapping")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return p.errf(k, field, "keys must be strings")
		}
		name := join(field, k.Value)
		if seen[k.Value] {
			return p.errf(k, name, "duplicate key")
		}
		seen[k.Value] = true
		if known != nil && !slices.Contains(known, k.Value) {
			return p.errf(k, name, "unknown key (known: %s)", strings.Join(known, ", "))
		}
		if v.Kind == yaml.AliasNode {
			return p.errf(v, name, "YAML aliases are not supported")
		}
		if err := f(k, v); err != nil {
			return err
		}
	}
	return nil
}

// str reads a scalar (numbers and booleans as written) into out.
func (p *parser) str(n *yaml.Node, field string, out *string) error {
	if n.Kind != yaml.ScalarNode {
		return p.errf(n, field, "want a string")
	}
	if n.Tag == "!!null" {
		*out = ""
		return nil
	}
	*out = n.Value
	return nil
}

// line reads a command typed on the board console: one line only.
func (p *parser) line(n *yaml.Node, field string, out *string) error {
	if err := p.str(n, field, out); err != nil {
		return err
	}
	if strings.ContainsAny(*out, "\n\r\x00\x03\x04") {
		return p.errf(n, field, "must be a single line (it is typed on the board console)")
	}
	return nil
}

func (p *parser) required(n *yaml.Node, field, v string) error {
	if strings.TrimSpace(v) == "" {
		return p.errf(n, field, "required")
	}
	return nil
}

func (p *parser) parse(data []byte) (*Manifest, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); errors.Is(err, io.EOF) {
		return nil, &Error{File: p.file, Msg: "empty manifest"}
	} else if err != nil {
		return nil, &Error{File: p.file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: p.file, Msg: "empty manifest"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, p.errf(root, "", "a manifest is a mapping with apiVersion, kind, metadata and spec")
	}
	m := &Manifest{}
	var specKey, specNode *yaml.Node
	err := p.mapping(root, "", []string{"apiVersion", "kind", "metadata", "spec"}, func(k, v *yaml.Node) error {
		switch k.Value {
		case "apiVersion":
			if err := p.str(v, "apiVersion", &m.APIVersion); err != nil {
				return err
			}
			if m.APIVersion != APIVersion {
				return p.errf(v, "apiVersion", "must be %s, got %q", APIVersion, m.APIVersion)
			}
		case "kind":
			if err := p.str(v, "kind", &m.Kind); err != nil {
				return err
			}
			if m.Kind != Kind {
				return p.errf(v, "kind", "must be %s, got %q", Kind, m.Kind)
			}
		case "metadata":
			// Jumpstarter's metadata may carry more (labels, annotations);
			// only name matters here.
			return p.mapping(v, "metadata", nil, func(k, v *yaml.Node) error {
				if k.Value == "name" {
					return p.str(v, "metadata.name", &m.Name)
				}
				return nil
			})
		case "spec":
			specKey, specNode = k, v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ field, v string }{{"apiVersion", m.APIVersion}, {"kind", m.Kind}, {"metadata.name", m.Name}} {
		if f.v == "" {
			return nil, p.errf(root, f.field, "required key is missing")
		}
	}
	if specNode == nil {
		return nil, p.errf(root, "spec", "required key is missing")
	}
	if err := p.spec(specKey, specNode, &m.Spec); err != nil {
		return nil, err
	}
	m.files = p.files
	return m, nil
}

var specKeys = []string{"manufacturer", "link", "bootcmd", "shelltype", "default_target", "targets", "login",
	"preflash_commands", "kernel", "initram", "dtb"}

func (p *parser) spec(key, n *yaml.Node, s *Spec) error {
	s.Login = Login{Type: "busybox", LoginPrompt: "login:", Prompt: "#"}
	var bootNode, defaultNode, kernelNode *yaml.Node
	err := p.mapping(n, "spec", specKeys, func(k, v *yaml.Node) error {
		field := "spec." + k.Value
		switch k.Value {
		case "manufacturer":
			return p.str(v, field, &s.Manufacturer)
		case "link":
			return p.str(v, field, &s.Link)
		case "bootcmd":
			bootNode = v
			return p.line(v, field, &s.Bootcmd)
		case "shelltype":
			// Older Jumpstarter manifests name the shell here.
			var t string
			if err := p.str(v, field, &t); err != nil {
				return err
			}
			if t != "busybox" {
				return p.errf(v, field, "only busybox is supported, got %q", t)
			}
		case "default_target":
			defaultNode = v
			return p.str(v, field, &s.DefaultTarget)
		case "targets":
			return p.targets(v, s)
		case "login":
			return p.login(v, &s.Login)
		case "preflash_commands":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				return nil
			}
			if v.Kind != yaml.SequenceNode {
				return p.errf(v, field, "want a list of commands")
			}
			for i, c := range v.Content {
				var cmd string
				if err := p.line(c, fmt.Sprintf("%s[%d]", field, i), &cmd); err != nil {
					return err
				}
				if err := p.required(c, fmt.Sprintf("%s[%d]", field, i), cmd); err != nil {
					return err
				}
				s.PreflashCommands = append(s.PreflashCommands, cmd)
			}
		case "kernel":
			kernelNode = v
			l, err := p.load(v, field, true)
			s.Kernel = l
			return err
		case "initram":
			l, err := p.load(v, field, true)
			s.Initram = l
			return err
		case "dtb":
			return p.dtb(k, v, s)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s.Bootcmd == "" {
		return p.errf(orNode(bootNode, key), "spec.bootcmd", "required: the U-Boot command that boots the flasher")
	}
	if s.Kernel == nil {
		return p.errf(orNode(kernelNode, key), "spec.kernel", "required: the flasher kernel (file and address)")
	}
	if s.DefaultTarget != "" {
		if _, ok := s.Targets[s.DefaultTarget]; !ok {
			return p.errf(defaultNode, "spec.default_target", "%q is not one of the targets (%s)", s.DefaultTarget, strings.Join(s.TargetNames(), ", "))
		}
	}
	return nil
}

func orNode(a, b *yaml.Node) *yaml.Node {
	if a != nil {
		return a
	}
	return b
}

func (p *parser) targets(n *yaml.Node, s *Spec) error {
	s.Targets = map[string]Target{}
	return p.mapping(n, "spec.targets", nil, func(k, v *yaml.Node) error {
		field := "spec.targets." + k.Value
		if k.Value == "" || strings.ContainsAny(k.Value, " \t\n/") {
			return p.errf(k, field, "a target name is a word without spaces or slashes")
		}
		var t string
		if err := p.str(v, field, &t); err != nil {
			return err
		}
		target, err := ParseTarget(t)
		if err != nil {
			return p.errf(v, field, "%v", err)
		}
		s.Targets[k.Value] = target
		return nil
	})
}

// ParseTarget reads a target as the manifest (or --partition) gives it:
// "/dev/NAME" or "/sys/class/block#ADDR".
func ParseTarget(t string) (Target, error) {
	if addr, ok := strings.CutPrefix(t, SysBlockPrefix); ok {
		if addr == "" || strings.ContainsAny(addr, " \t\n/'\"$`\\;") {
			return Target{}, fmt.Errorf("%q: want %sADDRESS with a plain address", t, SysBlockPrefix)
		}
		return Target{Lookup: addr}, nil
	}
	// The device is typed into the board's shell: refuse anything a shell
	// would interpret.
	if !strings.HasPrefix(t, "/dev/") || path.Clean(t) != t || len(t) == len("/dev/") ||
		strings.ContainsAny(t, " \t\n'\"$`\\;&|<>()*?[]{}~") {
		return Target{}, fmt.Errorf("%q: want a /dev path (like /dev/mmcblk0) or %sADDRESS", t, SysBlockPrefix)
	}
	return Target{Device: t}, nil
}

func (p *parser) login(n *yaml.Node, l *Login) error {
	var userNode, passNode *yaml.Node
	err := p.mapping(n, "spec.login", []string{"type", "login_prompt", "username", "password", "prompt"}, func(k, v *yaml.Node) error {
		field := "spec.login." + k.Value
		switch k.Value {
		case "type":
			if err := p.str(v, field, &l.Type); err != nil {
				return err
			}
			if l.Type == "" {
				l.Type = "busybox"
			}
			if l.Type != "busybox" {
				return p.errf(v, field, "only busybox is supported, got %q", l.Type)
			}
		case "login_prompt":
			if err := p.str(v, field, &l.LoginPrompt); err != nil {
				return err
			}
			return p.required(v, field, l.LoginPrompt)
		case "username":
			userNode = v
			return p.str(v, field, &l.Username)
		case "password":
			passNode = v
			return p.str(v, field, &l.Password)
		case "prompt":
			if err := p.str(v, field, &l.Prompt); err != nil {
				return err
			}
			return p.required(v, field, l.Prompt)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if l.Password != "" && l.Username == "" {
		return p.errf(orNode(passNode, userNode), "spec.login.password", "a password without a username")
	}
	return nil
}

func (p *parser) load(n *yaml.Node, field string, needAddr bool) (*Load, error) {
	l := &Load{}
	var fileNode, addrNode *yaml.Node
	err := p.mapping(n, field, []string{"file", "address"}, func(k, v *yaml.Node) error {
		switch k.Value {
		case "file":
			fileNode = v
			return p.str(v, field+".file", &l.File)
		case "address":
			addrNode = v
			return p.str(v, field+".address", &l.Address)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if n.Kind == yaml.ScalarNode {
		return nil, p.errf(n, field, "want a mapping with file and address")
	}
	if err := p.bundlePath(orNode(fileNode, n), field+".file", &l.File); err != nil {
		return nil, err
	}
	if needAddr {
		if err := p.address(orNode(addrNode, n), field+".address", l.Address); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// bundlePath checks a bundle path: relative, slash-separated, no "..", no
// characters a shell or TFTP client would trip on.
func (p *parser) bundlePath(n *yaml.Node, field string, f *string) error {
	if *f == "" {
		return p.errf(n, field, "required: a path inside the bundle")
	}
	if err := CheckPath(*f); err != nil {
		return p.errf(n, field, "%v", err)
	}
	*f = path.Clean(*f)
	p.files = append(p.files, FileRef{Field: field, Path: *f, Line: n.Line})
	return nil
}

// CheckPath refuses a bundle path that could leave the bundle or confuse a
// shell or TFTP client.
func CheckPath(f string) error {
	switch {
	case strings.HasPrefix(f, "/"):
		return fmt.Errorf("%q is absolute: paths are relative to the bundle root", f)
	case strings.ContainsAny(f, "\\\x00\n\r\t '\"$`;&|<>*?"):
		return fmt.Errorf("%q: use plain file names (no spaces, quotes, backslashes or shell characters)", f)
	case slices.Contains(strings.Split(f, "/"), ".."):
		return fmt.Errorf("%q leaves the bundle (\"..\")", f)
	case path.Clean(f) == ".":
		return fmt.Errorf("%q names the bundle root, not a file", f)
	}
	return nil
}

func (p *parser) address(n *yaml.Node, field, a string) error {
	if a == "" {
		return p.errf(n, field, "required: a load address like 0x40400000")
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(a, "0x"), "0X")
	if _, err := strconv.ParseUint(digits, 16, 64); err != nil {
		return p.errf(n, field, "want a hex address like 0x40400000, got %q", a)
	}
	return nil
}

func (p *parser) dtb(key, n *yaml.Node, s *Spec) error {
	d := &DTB{Variants: map[string]Variant{}}
	var defNode, addrNode *yaml.Node
	needAddr := false
	err := p.mapping(n, "spec.dtb", []string{"default", "address", "variants"}, func(k, v *yaml.Node) error {
		field := "spec.dtb." + k.Value
		switch k.Value {
		case "default":
			defNode = v
			return p.str(v, field, &d.Default)
		case "address":
			addrNode = v
			return p.str(v, field, &d.Address)
		case "variants":
			return p.mapping(v, field, nil, func(k, v *yaml.Node) error {
				vf := field + "." + k.Value
				var vr Variant
				var fileNode *yaml.Node
				err := p.mapping(v, vf, []string{"file", "bootcmd"}, func(k, v *yaml.Node) error {
					if k.Value == "file" {
						fileNode = v
						return p.str(v, vf+".file", &vr.File)
					}
					return p.line(v, vf+".bootcmd", &vr.Bootcmd)
				})
				if err != nil {
					return err
				}
				if v.Kind != yaml.MappingNode || (vr.File == "" && vr.Bootcmd == "") {
					return p.errf(v, vf, "want a mapping with file, bootcmd or both")
				}
				if vr.File != "" {
					needAddr = true
					if err := p.bundlePath(fileNode, vf+".file", &vr.File); err != nil {
						return err
					}
				}
				d.Variants[k.Value] = vr
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if d.Default != "" {
		if _, ok := d.Variants[d.Default]; !ok {
			names := make([]string, 0, len(d.Variants))
			for v := range d.Variants {
				names = append(names, v)
			}
			sort.Strings(names)
			return p.errf(defNode, "spec.dtb.default", "%q is not one of the variants (%s)", d.Default, strings.Join(names, ", "))
		}
	}
	if needAddr || d.Address != "" {
		if err := p.address(orNode(addrNode, key), "spec.dtb.address", d.Address); err != nil {
			return err
		}
	}
	s.DTB = d
	return nil
}
