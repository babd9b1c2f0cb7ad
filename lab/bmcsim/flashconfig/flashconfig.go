// Package flashconfig loads phosphor-ipmi-flash handler configurations: JSON
// files holding arrays of {blob, handler, actions} entries, as documented by
// phosphor-ipmi-flash. Invalid entries are reported and skipped so one bad
// entry cannot take the other handlers down, which is how the BMC daemon
// behaves too.
package flashconfig

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Action types.
const (
	TypeSkip              = "skip"
	TypeSystemd           = "systemd"
	TypeFileSystemdVerify = "fileSystemdVerify"
	TypeFileSystemdUpdate = "fileSystemdUpdate"
	TypeReboot            = "reboot"
)

// DefaultMode is the systemd job mode when an action gives none.
const DefaultMode = "replace"

// BlobPrefix is required of every configured blob id.
const BlobPrefix = "/flash/"

// Handler says where received bytes go.
type Handler struct {
	Type string `json:"type"`
	Path string `json:"path"`
}

// Action is one preparation, verification or update action.
type Action struct {
	Type string `json:"type"`
	Unit string `json:"unit,omitempty"`
	Mode string `json:"mode,omitempty"`
	// Path is the status file of fileSystemdVerify/fileSystemdUpdate.
	Path string `json:"path,omitempty"`
}

// Actions groups the three actions of an entry.
type Actions struct {
	Preparation  *Action `json:"preparation"`
	Verification *Action `json:"verification"`
	Update       *Action `json:"update"`
}

// Entry is one flash handler configuration.
type Entry struct {
	Blob    string   `json:"blob"`
	Handler *Handler `json:"handler"`
	Actions *Actions `json:"actions"`

	// Source and Index locate the entry for diagnostics.
	Source string `json:"-"`
	Index  int    `json:"-"`
}

// Problem is an entry or file that was skipped.
type Problem struct {
	File   string
	Index  int // -1 when the whole file is unusable
	Reason string
}

func (p Problem) String() string {
	if p.Index < 0 {
		return fmt.Sprintf("%s: %s", p.File, p.Reason)
	}
	return fmt.Sprintf("%s[%d]: %s", p.File, p.Index, p.Reason)
}

// Result is what loading produced.
type Result struct {
	Entries []Entry
	// Problems lists skipped entries and files.
	Problems []Problem
	// Warnings are kept entries that deserve attention, such as duplicate
	// blob ids (the first one loaded wins, as on the BMC).
	Warnings []Problem
}

// LoadDirs loads every *.json file of dirs, in lexical order per dir.
func LoadDirs(dirs ...string) (Result, error) {
	var res Result
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			return res, fmt.Errorf("list config dir %s: %w", dir, err)
		}
		if _, err := os.Stat(dir); err != nil {
			return res, fmt.Errorf("config dir: %w", err)
		}
		sort.Strings(files)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				res.Problems = append(res.Problems, Problem{f, -1, err.Error()})
				continue
			}
			res.add(Parse(f, data))
		}
	}
	res.markDuplicates()
	return res, nil
}

func (r *Result) add(o Result) {
	r.Entries = append(r.Entries, o.Entries...)
	r.Problems = append(r.Problems, o.Problems...)
	r.Warnings = append(r.Warnings, o.Warnings...)
}

func (r *Result) markDuplicates() {
	first := map[string]Entry{}
	for _, e := range r.Entries {
		if f, ok := first[e.Blob]; ok {
			r.Warnings = append(r.Warnings, Problem{e.Source, e.Index,
				fmt.Sprintf("duplicate blob id %s (first defined in %s[%d], which wins)", e.Blob, f.Source, f.Index)})
			continue
		}
		first[e.Blob] = e
	}
}

// Parse decodes one configuration file's contents. name labels problems.
func Parse(name string, data []byte) Result {
	var res Result
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		res.Problems = append(res.Problems, Problem{name, -1, "not a JSON array: " + err.Error()})
		return res
	}
	for i, r := range raw {
		e, err := parseEntry(r)
		if err != nil {
			res.Problems = append(res.Problems, Problem{name, i, err.Error()})
			continue
		}
		e.Source, e.Index = name, i
		res.Entries = append(res.Entries, e)
	}
	return res
}

func parseEntry(raw json.RawMessage) (Entry, error) {
	var e Entry
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&e); err != nil {
		return e, fmt.Errorf("entry: %w", err)
	}
	if e.Blob == "" {
		return e, fmt.Errorf("missing blob")
	}
	if !strings.HasPrefix(e.Blob, BlobPrefix) || len(e.Blob) == len(BlobPrefix) {
		return e, fmt.Errorf("blob %q must start with %s", e.Blob, BlobPrefix)
	}
	if e.Handler == nil {
		return e, fmt.Errorf("missing handler")
	}
	switch e.Handler.Type {
	case "file":
		if e.Handler.Path == "" {
			return e, fmt.Errorf("handler type file requires path")
		}
	case "":
		return e, fmt.Errorf("handler missing type")
	default:
		return e, fmt.Errorf("unknown handler type %q", e.Handler.Type)
	}
	if e.Actions == nil {
		return e, fmt.Errorf("missing actions")
	}
	checks := []struct {
		name    string
		a       *Action
		allowed []string
	}{
		{"preparation", e.Actions.Preparation, []string{TypeSystemd, TypeSkip}},
		{"verification", e.Actions.Verification, []string{TypeSystemd, TypeFileSystemdVerify, TypeSkip}},
		{"update", e.Actions.Update, []string{TypeSystemd, TypeFileSystemdUpdate, TypeReboot, TypeSkip}},
	}
	for _, c := range checks {
		if err := checkAction(c.a, c.allowed); err != nil {
			return e, fmt.Errorf("%s action: %w", c.name, err)
		}
	}
	return e, nil
}

func checkAction(a *Action, allowed []string) error {
	if a == nil {
		return fmt.Errorf("missing")
	}
	ok := false
	for _, t := range allowed {
		ok = ok || a.Type == t
	}
	if !ok {
		return fmt.Errorf("type %q not allowed here (want one of %s)", a.Type, strings.Join(allowed, ", "))
	}
	switch a.Type {
	case TypeSystemd:
		if a.Unit == "" {
			return fmt.Errorf("systemd requires unit")
		}
	case TypeFileSystemdVerify, TypeFileSystemdUpdate:
		if a.Unit == "" {
			return fmt.Errorf("%s requires unit", a.Type)
		}
		if a.Path == "" {
			return fmt.Errorf("%s requires path", a.Type)
		}
	}
	if a.Type != TypeSkip && a.Type != TypeReboot && a.Mode == "" {
		a.Mode = DefaultMode
	}
	return nil
}
