// Package host holds the lab host's set-up scripts; its test keeps the
// GitHub workflow on the one package list, lab/host/packages.txt.
package host

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// packages reads packages.txt as deps.sh does: words, '#' to the end of a
// line is a comment.
func packages(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("packages.txt")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		out = append(out, strings.Fields(line)...)
	}
	return out
}

// installLine matches a shell line that installs packages, and its words.
var installLine = regexp.MustCompile(`\b(?:apt-get|apt|aptitude)\s+(?:-\S+\s+)*install\b(.*)|\bdpkg\s+(?:-\S+\s+)*-i\b`)

type workflow struct {
	Jobs map[string]struct {
		Steps []struct {
			Name string `yaml:"name"`
			Uses string `yaml:"uses"`
			Run  string `yaml:"run"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// checkWorkflow returns what in a workflow breaks the one-list rule: a step
// that installs packages itself (and any package it names that the list
// lacks), or no step running deps.sh.
func checkWorkflow(name string, src []byte, list []string) []string {
	var w workflow
	if err := yaml.Unmarshal(src, &w); err != nil {
		return []string{fmt.Sprintf("%s: %v", name, err)}
	}
	var problems []string
	runsDeps := false
	for job, j := range w.Jobs {
		for i, s := range j.Steps {
			where := fmt.Sprintf("%s: job %s, step %d (%s)", name, job, i+1, cmp(s.Name, s.Uses))
			if strings.Contains(s.Uses, "apt") {
				problems = append(problems, where+": installs packages through "+s.Uses+": run lab/host/deps.sh instead")
			}
			if strings.Contains(s.Run, "lab/host/deps.sh") {
				runsDeps = true
			}
			for _, line := range strings.Split(strings.ReplaceAll(s.Run, "\\\n", " "), "\n") {
				m := installLine.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				problems = append(problems, where+": installs packages itself ("+strings.TrimSpace(line)+"): add them to lab/host/packages.txt and run lab/host/deps.sh")
				for _, p := range strings.Fields(m[1]) {
					if !strings.HasPrefix(p, "-") && !strings.ContainsAny(p, "$\"'") && !slices.Contains(list, p) {
						problems = append(problems, where+": names Debian package "+p+", which lab/host/packages.txt does not")
					}
				}
			}
		}
	}
	if !runsDeps {
		problems = append(problems, name+": no step runs lab/host/deps.sh")
	}
	slices.Sort(problems)
	return problems
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestWorkflowsUseTheOneList(t *testing.T) {
	list := packages(t)
	files, _ := filepath.Glob("../../.github/workflows/*.yml")
	if len(files) == 0 {
		t.Fatal("no workflows found")
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range checkWorkflow(filepath.Base(f), src, list) {
			t.Error(p)
		}
	}
}

// TestCheckWorkflowCatches plants the two ways a workflow drifts from the list.
func TestCheckWorkflowCatches(t *testing.T) {
	list := []string{"qemu-system-arm", "socat"}
	bad := `
jobs:
  test:
    steps:
      - name: packages
        run: |
          sudo apt-get update
          sudo apt-get install -y --no-install-recommends \
            qemu-system-arm kmod
      - run: make test
`
	got := strings.Join(checkWorkflow("bad.yml", []byte(bad), list), "\n")
	for _, want := range []string{"installs packages itself", "names Debian package kmod", "no step runs lab/host/deps.sh"} {
		if !strings.Contains(got, want) {
			t.Errorf("planted workflow: no %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "package qemu-system-arm") {
		t.Errorf("a listed package was reported:\n%s", got)
	}
	good := "jobs:\n  t:\n    steps:\n      - run: bash lab/host/deps.sh\n      - run: make test\n"
	if p := checkWorkflow("good.yml", []byte(good), list); len(p) != 0 {
		t.Errorf("clean workflow reported: %v", p)
	}
}

// TestDepsListsThePackagesFile: deps.sh installs exactly packages.txt.
func TestDepsListsThePackagesFile(t *testing.T) {
	out, err := exec.Command("bash", "deps.sh", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Fields(string(out)), packages(t); !slices.Equal(got, want) {
		t.Fatalf("deps.sh --list = %v, packages.txt = %v", got, want)
	}
	for _, p := range []string{"libprotobuf-dev", "gcc", "pkg-config", "libusb-1.0-0-dev"} {
		if !slices.Contains(packages(t), p) {
			t.Errorf("packages.txt lacks %s (make test and make build need it on a new machine)", p)
		}
	}
}
