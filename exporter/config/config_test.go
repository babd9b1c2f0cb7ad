package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/pogolab/pogo/drivers"
	_ "github.com/pogolab/pogo/drivers/power/command"
	_ "github.com/pogolab/pogo/drivers/serial"
	"github.com/pogolab/pogo/exporter/config"
)

const good = `apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata:
  namespace: lab
  name: board-1
  labels:
    board: rpi4
endpoint: grpc.lab:443
token: abc
tls:
  insecure: false
  ca: ""
hooks:
  afterLease:
    script: j power off
    timeout: 30
    onFailure: warn
export:
  storage:
    type: command-power
    config:
      on: "true"
      off: "true"
    children:
      serial:
        ref: serial
  serial:
    type: jumpstarter_driver_pyserial.driver.PySerial
    config:
      url: /dev/null
      baudrate: 115200
  group:
    children:
      power:
        ref: storage
`

func TestParseGood(t *testing.T) {
	f, err := config.Parse("exporter.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata.Name != "board-1" || f.Metadata.Labels["board"] != "rpi4" || f.Endpoint != "grpc.lab:443" {
		t.Errorf("metadata/endpoint not read: %+v %q", f.Metadata, f.Endpoint)
	}
	if h := f.Hooks.AfterLease; h == nil || h.Script != "j power off" || h.Timeout.Seconds() != 30 {
		t.Errorf("hook not read: %+v", h)
	}
	var paths []string
	var walk func([]*config.Node)
	walk = func(ns []*config.Node) {
		for _, n := range ns {
			paths = append(paths, n.Path+"="+n.Type+n.Ref)
			walk(n.Children)
		}
	}
	walk(f.Export)
	want := "storage=command-power storage.serial=serial serial=jumpstarter_driver_pyserial.driver.PySerial group= group.power=storage"
	if got := strings.Join(paths, " "); got != want {
		t.Errorf("tree:\n got %s\nwant %s", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	head := "apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"syntax", head + "export: [\n", "exporter.yaml: "},
		{"no export", head, "exporter.yaml:1: export: required key is missing"},
		{"wrong kind", "kind: Foo\nexport: {}\n", "exporter.yaml:1: kind: must be ExporterConfig"},
		{"unknown top key", head + "exprt: {}\n", "exporter.yaml:3: exprt: unknown key"},
		{"unknown type", head + "export:\n  p:\n    type: relay\n", `exporter.yaml:5: export.p.type: unknown driver type "relay" (pogo has: `},
		{"jumpstarter type we lack", head + "export:\n  p:\n    type: jumpstarter_driver_can.driver.Can\n", `exporter.yaml:5: export.p.type: Jumpstarter driver "jumpstarter_driver_can.driver.Can" has no pogo equivalent`},
		{"type not a string", head + "export:\n  p:\n    type: [a]\n", "exporter.yaml:5: export.p.type: want a string"},
		{"config without type", head + "export:\n  p:\n    config: {a: 1}\n", "exporter.yaml:5: export.p.config: config without a type"},
		{"empty node", head + "export:\n  p:\n", "exporter.yaml:4: export.p: empty node"},
		{"unknown node key", head + "export:\n  p:\n    typ: serial\n", "exporter.yaml:5: export.p.typ: unknown key"},
		{"duplicate name", head + "export:\n  p:\n    ref: q\n  p:\n    ref: q\n", "exporter.yaml:6: export.p: duplicate name"},
		{"dotted name", head + "export:\n  a.b:\n    ref: q\n", "exporter.yaml:4: export.a.b: a driver name must be non-empty without dots"},
		{"dangling ref", head + "export:\n  p:\n    ref: nowhere\n", `exporter.yaml:4: export.p.ref: dangling ref "nowhere"`},
		{"ref with type", head + "export:\n  p:\n    ref: q\n    type: serial\n", "exporter.yaml:5: export.p.ref: a ref node has nothing else"},
		{"cyclic ref", head + "export:\n  a:\n    ref: b\n  b:\n    ref: a\n", "export.a: cyclic ref: a → b → a"},
		{"ref to ancestor", head + "export:\n  a:\n    children:\n      b:\n        ref: a\n", "cyclic ref: a → a.b → a"},
		{"bad hook failure mode", head + "hooks:\n  beforeLease:\n    script: x\n    onFailure: panic\nexport: {}\n", "exporter.yaml:6: hooks.beforeLease.onFailure: must be warn, endLease or exit"},
		{"hook without script", head + "hooks:\n  afterLease:\n    timeout: 3\nexport: {}\n", "hooks.afterLease.script: required key is missing"},
		{"bad labels", head + "metadata:\n  labels: [a]\nexport: {}\n", "exporter.yaml:4: metadata.labels: must be a mapping"},
		{"tls insecure not bool", head + "tls:\n  insecure: maybe\nexport: {}\n", "exporter.yaml:4: tls.insecure: want true or false"},
		{"exitOnLeaseEnd not bool", head + "exitOnLeaseEnd: sometimes\nexport: {}\n", "exporter.yaml:3: exitOnLeaseEnd: want true or false"},
		{"empty exec", head + "hooks:\n  beforeLease:\n    exec: \"\"\n    script: x\nexport: {}\n", "exporter.yaml:5: hooks.beforeLease.exec: names no interpreter"},
		{"unknown hook key", head + "hooks:\n  beforeLease:\n    script: x\n    shell: bash\nexport: {}\n", "exporter.yaml:6: hooks.beforeLease.shell: unknown key (known: script, exec, timeout, onFailure)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("exporter.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *config.Error: %v", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n got %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestJumpstarterKeys: exec and exitOnLeaseEnd load as Jumpstarter's
// e2e fragments write them.
func TestJumpstarterKeys(t *testing.T) {
	f, err := config.Parse("exporter.yaml", []byte(`exitOnLeaseEnd: true
hooks:
  beforeLease:
    exec: /bin/bash
    script: |
      [[ -n "$LEASE_NAME" ]] && echo "BASH_HOOK: lease=$LEASE_NAME"
    timeout: 60
    onFailure: endLease
export:
  power:
    type: command-power
    config: {on: "true", off: "true"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if !f.ExitOnLeaseEnd {
		t.Error("exitOnLeaseEnd not read")
	}
	h := f.Hooks.BeforeLease
	if h == nil || h.Exec != "/bin/bash" || h.OnFailure != "endLease" || h.Timeout.Seconds() != 60 || !strings.HasPrefix(h.Script, "[[ -n") {
		t.Errorf("hook not read: %+v", h)
	}
	if f, err := config.Parse("exporter.yaml", []byte(good)); err != nil || f.ExitOnLeaseEnd {
		t.Errorf("exitOnLeaseEnd defaults to false: %v %v", f, err)
	}
}

func TestAliasesResolve(t *testing.T) {
	k, ok := drivers.Lookup("jumpstarter_driver_pyserial.driver.PySerial")
	if !ok || k.Name != "serial" {
		t.Fatalf("PySerial alias resolves to %v, %v", k, ok)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("kind: ExporterConfig\nexport:\n  a:\n    ref: a\n"))
	f.Add([]byte("export:\n  a:\n    children:\n      b: {ref: a}\n"))
	f.Add([]byte("export: {p: {type: serial, config: {url: 3}}}"))
	f.Add([]byte("exitOnLeaseEnd: true\nhooks:\n  beforeLease:\n    exec: /bin/bash\n    script: /tmp/x.py\n    timeout: 5\nexport: {}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		f, err := config.Parse("fuzz.yaml", data)
		if err == nil && f == nil {
			t.Fatal("nil file without error")
		}
		if err != nil {
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a *config.Error: %v", err)
			}
		}
	})
}
