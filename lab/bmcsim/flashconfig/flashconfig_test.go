package flashconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `{"blob": "/flash/image", "handler": {"type": "file", "path": "/tmp/img"},
 "actions": {"preparation": {"type": "skip"}, "verification": {"type": "fileSystemdVerify", "unit": "v.service", "path": "/tmp/v"},
 "update": {"type": "reboot"}}}`

// entry builds a one-entry file from good with one substitution.
func entry(old, new string) string { return "[" + strings.Replace(good, old, new, 1) + "]" }

func TestParseInvalidEntries(t *testing.T) {
	cases := []struct{ name, file, reason string }{
		{"not an array", `{"blob": "/flash/x"}`, "not a JSON array"},
		{"broken json", `[{`, "not a JSON array"},
		{"entry not an object", `[42]`, "entry:"},
		{"null entry", `[null]`, "missing blob"},
		{"missing blob", entry(`"blob": "/flash/image",`, ``), "missing blob"},
		{"blob outside /flash", entry(`/flash/image`, `/tmp/image`), "must start with /flash/"},
		{"blob is only the prefix", entry(`/flash/image`, `/flash/`), "must start with /flash/"},
		{"missing handler", entry(`"handler": {"type": "file", "path": "/tmp/img"},`, ``), "missing handler"},
		{"handler without type", entry(`"type": "file", `, ``), "handler missing type"},
		{"unknown handler type", entry(`"type": "file"`, `"type": "lpc"`), "unknown handler type"},
		{"file handler without path", entry(`, "path": "/tmp/img"`, ``), "requires path"},
		{"missing actions", `[{"blob": "/flash/image", "handler": {"type": "file", "path": "/p"}}]`, "missing actions"},
		{"missing preparation", entry(`"preparation": {"type": "skip"}, `, ``), "preparation action: missing"},
		{"missing verification", entry(`"verification": {"type": "fileSystemdVerify", "unit": "v.service", "path": "/tmp/v"},`, ``), "verification action: missing"},
		{"missing update", entry(`,
 "update": {"type": "reboot"}`, ``), "update action: missing"},
		{"preparation reboot", entry(`"preparation": {"type": "skip"}`, `"preparation": {"type": "reboot"}`), "preparation action: type \"reboot\" not allowed"},
		{"preparation file verify", entry(`"preparation": {"type": "skip"}`, `"preparation": {"type": "fileSystemdVerify", "unit": "u", "path": "/p"}`), "not allowed"},
		{"verification reboot", entry(`"type": "fileSystemdVerify", "unit": "v.service", "path": "/tmp/v"`, `"type": "reboot"`), "verification action: type \"reboot\" not allowed"},
		{"verification fileSystemdUpdate", entry(`"type": "fileSystemdVerify"`, `"type": "fileSystemdUpdate"`), "not allowed"},
		{"update fileSystemdVerify", entry(`"update": {"type": "reboot"}`, `"update": {"type": "fileSystemdVerify", "unit": "u", "path": "/p"}`), "update action: type"},
		{"unknown action type", entry(`"update": {"type": "reboot"}`, `"update": {"type": "magic"}`), "not allowed"},
		{"systemd without unit", entry(`"preparation": {"type": "skip"}`, `"preparation": {"type": "systemd"}`), "systemd requires unit"},
		{"file verify without unit", entry(`"unit": "v.service", `, ``), "requires unit"},
		{"file verify without path", entry(`, "path": "/tmp/v"`, ``), "requires path"},
		{"wrong field type", entry(`"blob": "/flash/image"`, `"blob": 7`), "entry:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := Parse("x.json", []byte(tc.file))
			if len(res.Entries) != 0 || len(res.Problems) != 1 {
				t.Fatalf("entries %d problems %v", len(res.Entries), res.Problems)
			}
			p := res.Problems[0]
			if p.File != "x.json" || !strings.Contains(p.Reason, tc.reason) {
				t.Errorf("problem %v, want reason containing %q", p, tc.reason)
			}
		})
	}
}

func TestParseDefaultsAndIndex(t *testing.T) {
	file := `[` + good + `, {"blob": "bad"}, ` + strings.Replace(good, `{"type": "skip"}`, `{"type": "systemd", "unit": "p.target"}`, 1) + `]`
	res := Parse("f.json", []byte(file))
	if len(res.Entries) != 2 || len(res.Problems) != 1 || res.Problems[0].Index != 1 {
		t.Fatalf("entries %d problems %v", len(res.Entries), res.Problems)
	}
	if res.Entries[1].Index != 2 || res.Entries[1].Actions.Preparation.Mode != DefaultMode {
		t.Errorf("entry %+v", res.Entries[1].Actions.Preparation)
	}
	if res.Entries[0].Actions.Verification.Mode != DefaultMode || res.Entries[0].Actions.Update.Mode != "" {
		t.Error("mode defaults wrong")
	}
}

func TestLoadDirsExamplesAndDuplicates(t *testing.T) {
	res, err := LoadDirs("../examples")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != 3 || len(res.Problems) != 0 {
		t.Fatalf("entries %d problems %v", len(res.Entries), res.Problems)
	}
	// Both static bmc configs define /flash/image: warned, both kept.
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].Reason, "duplicate blob id /flash/image") {
		t.Errorf("warnings %v", res.Warnings)
	}
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "a.json"), []byte("[]"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "b.json"), []byte("nope"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "c.txt"), []byte("nope"), 0o644)
	res, err = LoadDirs(dir)
	if err != nil || len(res.Problems) != 1 || res.Problems[0].Index != -1 {
		t.Errorf("%v %v", res.Problems, err)
	}
	if _, err := LoadDirs(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing dir accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("[" + good + "]"))
	f.Add([]byte(`[{"blob": "/flash/bios", "handler": {"type": "file", "path": "/tmp/bios-image"}, "actions": {"preparation": {"type": "systemd", "unit": "a"}, "verification": {"type": "systemd", "unit": "b"}, "update": {"type": "systemd", "unit": "c", "mode": "fail"}}}]`))
	f.Add([]byte(`[null, 1, "x", {}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		res := Parse("fuzz.json", data)
		for _, e := range res.Entries {
			if !strings.HasPrefix(e.Blob, BlobPrefix) || e.Handler == nil || e.Handler.Path == "" ||
				e.Actions == nil || e.Actions.Preparation == nil || e.Actions.Verification == nil || e.Actions.Update == nil {
				t.Fatalf("invalid entry accepted: %+v", e)
			}
		}
	})
}
