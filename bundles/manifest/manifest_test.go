package manifest_test

import (
	"os"
	"path"
	"strings"
	"testing"

	"github.com/pogolab/pogo/bundles/manifest"
)

// full uses every field, in the shape of Jumpstarter's bundles.
const full = `apiVersion: jumpstarter.dev/v1alpha1
kind: FlashBundleManifest
metadata:
  name: test-bundle
spec:
  manufacturer: The pogo authors
  link: "https://example.invalid/board"
  bootcmd: "booti 0x82000000 - 0x84000000"
  shelltype: busybox
  default_target: usd
  login:
    type: busybox
    login_prompt: "login:"
    username: root
    password: secret
    prompt: "#"
  targets:
    usd: "/sys/class/block#4fb0000"
    emmc: /dev/mmcblk0
  preflash_commands:
    - "dd if=/dev/zero of=/dev/mmcblk0 bs=512 count=34"
  kernel:
    file: data/Image
    address: "0x82000000"
  initram:
    file: data/./initramfs.cpio.gz
    address: 0x83000000
  dtb:
    default: evm
    address: "0x84000000"
    variants:
      evm:
        file: data/dtbs/evm.dtb
      sk:
        bootcmd: "bootm 0x90000000#sk"
`

func TestParseFull(t *testing.T) {
	m, err := manifest.Parse("manifest.yaml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	s := m.Spec
	if m.Name != "test-bundle" || s.Bootcmd != "booti 0x82000000 - 0x84000000" || s.DefaultTarget != "usd" {
		t.Errorf("top: %+v", m)
	}
	if s.Targets["usd"].Lookup != "4fb0000" || s.Targets["emmc"].Device != "/dev/mmcblk0" || s.Targets["usd"].String() != "/sys/class/block#4fb0000" {
		t.Errorf("targets: %+v", s.Targets)
	}
	if s.Login != (manifest.Login{Type: "busybox", LoginPrompt: "login:", Username: "root", Password: "secret", Prompt: "#"}) {
		t.Errorf("login: %+v", s.Login)
	}
	if s.Kernel.File != "data/Image" || s.Initram.File != "data/initramfs.cpio.gz" || s.Initram.Address != "0x83000000" {
		t.Errorf("loads: %+v %+v", s.Kernel, s.Initram)
	}
	if s.DTB.Default != "evm" || s.DTB.Variants["evm"].File != "data/dtbs/evm.dtb" || s.DTB.Variants["sk"].Bootcmd != "bootm 0x90000000#sk" {
		t.Errorf("dtb: %+v", s.DTB)
	}
	var files []string
	for _, f := range m.Files() {
		files = append(files, f.Field+"="+f.Path)
	}
	if got := strings.Join(files, " "); got != "spec.kernel.file=data/Image spec.initram.file=data/initramfs.cpio.gz spec.dtb.variants.evm.file=data/dtbs/evm.dtb" {
		t.Errorf("files: %s", got)
	}
}

func TestDefaults(t *testing.T) {
	m, err := manifest.Parse("m.yaml", []byte(`apiVersion: jumpstarter.dev/v1alpha1
kind: FlashBundleManifest
metadata: {name: x}
spec:
  bootcmd: bootm
  kernel: {file: k.itb, address: "90000000"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Spec.Login != (manifest.Login{Type: "busybox", LoginPrompt: "login:", Prompt: "#"}) {
		t.Errorf("login defaults: %+v", m.Spec.Login)
	}
}

// TestQEMUBundle checks the virtual board's manifest in this repo.
func TestQEMUBundle(t *testing.T) {
	data, err := os.ReadFile("../qemu-arm64/manifest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse("qemu-arm64/manifest.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Spec.Targets[m.Spec.DefaultTarget].Device != "/dev/vda" || m.Spec.Login.Prompt != "# " || m.Spec.Login.Username != "" {
		t.Errorf("qemu-arm64: %+v", m.Spec)
	}
	if !strings.Contains(m.Spec.Bootcmd, "booti 0x40400000 0x48000000:${filesize} ${fdtcontroladdr}") {
		t.Errorf("bootcmd %q", m.Spec.Bootcmd)
	}
}

func TestParseErrors(t *testing.T) {
	head := "apiVersion: jumpstarter.dev/v1alpha1\nkind: FlashBundleManifest\nmetadata:\n  name: b\n"
	spec := head + "spec:\n  bootcmd: bootm\n  kernel:\n    file: k\n    address: \"0x1000\"\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"empty", "", "m.yaml: empty manifest"},
		{"not yaml", "a: [", "m.yaml: line 1: did not find expected node content"},
		{"list", "- a\n", "m.yaml:1: a manifest is a mapping"},
		{"api version", strings.Replace(head, "v1alpha1", "v2", 1) + "spec: {}\n", "m.yaml:1: apiVersion: must be jumpstarter.dev/v1alpha1"},
		{"kind", strings.Replace(head, "FlashBundleManifest", "ExporterConfig", 1), "m.yaml:2: kind: must be FlashBundleManifest"},
		{"no name", "apiVersion: jumpstarter.dev/v1alpha1\nkind: FlashBundleManifest\nspec: {}\n", "m.yaml:1: metadata.name: required key is missing"},
		{"no spec", head, "m.yaml:1: spec: required key is missing"},
		{"unknown top key", head + "extra: 1\n", "m.yaml:5: extra: unknown key"},
		{"unknown spec key", spec + "  bootargs: x\n", "m.yaml:10: spec.bootargs: unknown key (known: manufacturer"},
		{"duplicate key", spec + "  bootcmd: other\n", "m.yaml:10: spec.bootcmd: duplicate key"},
		{"no bootcmd", head + "spec:\n  kernel: {file: k, address: \"1\"}\n", "m.yaml:5: spec.bootcmd: required"},
		{"multi-line bootcmd", head + "spec:\n  bootcmd: \"a\\nb\"\n", "m.yaml:6: spec.bootcmd: must be a single line"},
		{"no kernel", head + "spec:\n  bootcmd: bootm\n", "m.yaml:5: spec.kernel: required"},
		{"kernel scalar", head + "spec:\n  bootcmd: bootm\n  kernel: data/k\n", "m.yaml:7: spec.kernel: must be a mapping"},
		{"kernel no file", head + "spec:\n  bootcmd: bootm\n  kernel:\n    address: \"1\"\n", "m.yaml:8: spec.kernel.file: required"},
		{"kernel no address", head + "spec:\n  bootcmd: bootm\n  kernel:\n    file: k\n", "m.yaml:8: spec.kernel.address: required"},
		{"bad address", head + "spec:\n  bootcmd: bootm\n  kernel:\n    file: k\n    address: 0xZZ\n", "m.yaml:9: spec.kernel.address: want a hex address"},
		{"traversal", head + "spec:\n  bootcmd: bootm\n  kernel:\n    file: data/../../etc/passwd\n    address: \"1\"\n", "m.yaml:8: spec.kernel.file: \"data/../../etc/passwd\" leaves the bundle"},
		{"absolute", head + "spec:\n  bootcmd: bootm\n  kernel:\n    file: /boot/Image\n    address: \"1\"\n", "m.yaml:8: spec.kernel.file: \"/boot/Image\" is absolute"},
		{"shell chars", head + "spec:\n  bootcmd: bootm\n  kernel:\n    file: \"a;reboot\"\n    address: \"1\"\n", "spec.kernel.file: \"a;reboot\": use plain file names"},
		{"dot", spec + "  initram:\n    file: ./\n    address: \"1\"\n", "m.yaml:11: spec.initram.file: \"./\" names the bundle root"},
		{"default target missing", spec + "  default_target: usd\n  targets:\n    emmc: /dev/mmcblk0\n", "m.yaml:10: spec.default_target: \"usd\" is not one of the targets (emmc)"},
		{"target not dev", spec + "  targets:\n    emmc: /tmp/x\n", "m.yaml:11: spec.targets.emmc: \"/tmp/x\": want a /dev path"},
		{"target shell", spec + "  targets:\n    emmc: \"/dev/sda;rm\"\n", "spec.targets.emmc: \"/dev/sda;rm\": want a /dev path"},
		{"target lookup empty", spec + "  targets:\n    emmc: \"/sys/class/block#\"\n", "spec.targets.emmc: \"/sys/class/block#\": want /sys/class/block#ADDRESS"},
		{"target list", spec + "  targets: [a]\n", "m.yaml:10: spec.targets: must be a mapping"},
		{"login type", spec + "  login:\n    type: systemd\n", "m.yaml:11: spec.login.type: only busybox"},
		{"shelltype", spec + "  shelltype: bash\n", "m.yaml:10: spec.shelltype: only busybox"},
		{"login empty prompt", spec + "  login:\n    prompt: \"\"\n", "m.yaml:11: spec.login.prompt: required"},
		{"password alone", spec + "  login:\n    password: x\n", "m.yaml:11: spec.login.password: a password without a username"},
		{"preflash scalar", spec + "  preflash_commands: dd\n", "m.yaml:10: spec.preflash_commands: want a list"},
		{"preflash map", spec + "  preflash_commands:\n    - {a: b}\n", "m.yaml:11: spec.preflash_commands[0]: want a string"},
		{"dtb default", spec + "  dtb:\n    default: x\n    address: \"1\"\n    variants:\n      y: {file: y.dtb}\n", "m.yaml:11: spec.dtb.default: \"x\" is not one of the variants (y)"},
		{"dtb variant empty", spec + "  dtb:\n    variants:\n      y: {}\n", "m.yaml:12: spec.dtb.variants.y: want a mapping with file, bootcmd or both"},
		{"dtb variant scalar", spec + "  dtb:\n    variants:\n      y: y.dtb\n", "m.yaml:12: spec.dtb.variants.y: must be a mapping"},
		{"dtb file needs address", spec + "  dtb:\n    variants:\n      y: {file: y.dtb}\n", "m.yaml:10: spec.dtb.address: required"},
		{"dtb traversal", spec + "  dtb:\n    address: \"1\"\n    variants:\n      y: {file: ../y.dtb}\n", "m.yaml:13: spec.dtb.variants.y.file: \"../y.dtb\" leaves the bundle"},
		{"alias", "apiVersion: &a jumpstarter.dev/v1alpha1\nkind: *a\n", "m.yaml:2: kind: YAML aliases are not supported"},
	} {
		_, err := manifest.Parse("m.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v\n want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	data, _ := os.ReadFile("../qemu-arm64/manifest.yaml")
	f.Add(data)
	f.Add([]byte("apiVersion: jumpstarter.dev/v1alpha1\nkind: FlashBundleManifest\nmetadata: {name: a}\nspec: {bootcmd: b, kernel: {file: ../k, address: 1}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := manifest.Parse("f.yaml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		// Whatever parses keeps every file inside the bundle and has what
		// the flasher needs.
		for _, f := range m.Files() {
			if manifest.CheckPath(f.Path) != nil || path.IsAbs(f.Path) || strings.HasPrefix(f.Path, "..") {
				t.Fatalf("accepted path %q at %s", f.Path, f.Field)
			}
		}
		if m.Spec.Bootcmd == "" || m.Spec.Kernel == nil || m.Spec.Kernel.Address == "" {
			t.Fatalf("accepted without bootcmd or kernel: %+v", m.Spec)
		}
		if m.Spec.DefaultTarget != "" {
			if _, ok := m.Spec.Targets[m.Spec.DefaultTarget]; !ok {
				t.Fatalf("default target %q not in targets", m.Spec.DefaultTarget)
			}
		}
		for name, tg := range m.Spec.Targets {
			if _, err := manifest.ParseTarget(tg.String()); err != nil {
				t.Fatalf("target %s=%v does not parse again: %v", name, tg, err)
			}
		}
	})
}
