// Package layers states which of pogo's packages may import which
// (docs/architecture.md has the same rules as a table) and checks an
// import graph against them; its test runs the check on this module.
package layers

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
)

// Rule forbids the packages under From to depend, directly or through
// others, on any package under one of Forbid. Paths are prefixes: "client"
// is client and everything below it. A path whose first element has no
// dot is inside the module.
type Rule struct {
	From   string
	Forbid []string
	Why    string
}

// Rules are pogo's layers: api <- drivers <- exporter; client beside the
// exporter; lab/ and cmd/jmp on top.
var Rules = []Rule{
	{From: "api", Forbid: []string{"bundles", "drivers", "exporter", "client", "lab", "cmd", "specs"}, Why: "api is the bottom layer"},
	{From: "bundles", Forbid: []string{"drivers", "exporter", "client", "lab", "cmd", "specs"}, Why: "bundles is a library under the drivers"},
	{From: "drivers", Forbid: []string{"exporter", "client", "lab", "cmd", "specs"}, Why: "drivers sit under the exporter and the client"},
	{From: "exporter", Forbid: []string{"client", "lab", "cmd", "specs"}, Why: "the exporter shares only api and drivers with the client"},
	{From: "client", Forbid: []string{"exporter", "lab", "cmd", "specs"}, Why: "the client shares only api and drivers with the exporter"},
	{From: "client", Forbid: []string{"go.etcd.io/etcd/server"}, Why: "the client library does not carry etcd's server"},
	{From: "lab", Forbid: []string{"cmd", "specs"}, Why: "only cmd/jmp wires everything"},
}

// Harnesses are test-harness packages: they may cross the layers, and only
// tests may import them.
var Harnesses = []string{"exporter/exportertest", "lab/controller/controllertest"}

// Graph maps a package's import path to the paths it imports (test files
// left out).
type Graph map[string][]string

// Violation is one package crossing a rule, with the import chain that does.
type Violation struct {
	Chain []string // from the offending package to the forbidden one
	Why   string
}

func (v Violation) String() string { return strings.Join(v.Chain, " -> ") + ": " + v.Why }

// Check returns the violations of Rules and Harnesses by the module's
// packages in g, one per package and forbidden prefix.
func Check(g Graph, module string) []Violation {
	abs := func(p string) string {
		if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") {
			return p
		}
		return module + "/" + p
	}
	under := func(p, prefix string) bool { return p == prefix || strings.HasPrefix(p, prefix+"/") }
	harness := func(p string) bool {
		for _, h := range Harnesses {
			if under(p, abs(h)) {
				return true
			}
		}
		return false
	}
	var out []Violation
	for _, pkg := range sorted(g) {
		if !under(pkg, module) || harness(pkg) {
			continue
		}
		for _, imp := range g[pkg] {
			if harness(imp) {
				out = append(out, Violation{Chain: []string{pkg, imp}, Why: "only tests may import a test harness"})
			}
		}
		for _, r := range Rules {
			if !under(pkg, abs(r.From)) {
				continue
			}
			for _, f := range r.Forbid {
				if chain := path(g, pkg, func(p string) bool { return under(p, abs(f)) }); chain != nil {
					out = append(out, Violation{Chain: chain, Why: r.Why})
				}
			}
		}
	}
	return out
}

// path is the shortest import chain from pkg to a package bad accepts, or
// nil.
func path(g Graph, pkg string, bad func(string) bool) []string {
	prev := map[string]string{pkg: ""}
	queue := []string{pkg}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, imp := range g[p] {
			if _, seen := prev[imp]; seen {
				continue
			}
			prev[imp] = p
			if bad(imp) {
				chain := []string{imp}
				for q := p; q != ""; q = prev[q] {
					chain = append([]string{q}, chain...)
				}
				return chain
			}
			queue = append(queue, imp)
		}
	}
	return nil
}

func sorted(g Graph) []string {
	keys := make([]string, 0, len(g))
	for k := range g {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Load runs `go list -deps` on patterns in dir and returns the module's
// path and the import graph of everything the patterns need.
func Load(ctx context.Context, dir string, patterns ...string) (module string, g Graph, err error) {
	mod := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Path}}")
	mod.Dir = dir
	out, err := mod.Output()
	if err != nil {
		return "", nil, fmt.Errorf("go list -m in %s: %w", dir, stderr(err))
	}
	module = strings.TrimSpace(string(out))
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}"}, patterns...)
	list := exec.CommandContext(ctx, "go", args...)
	list.Dir = dir
	if out, err = list.Output(); err != nil {
		return "", nil, fmt.Errorf("go list -deps in %s: %w", dir, stderr(err))
	}
	g = Graph{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			g[f[0]] = f[1:]
		}
	}
	return module, g, sc.Err()
}

func stderr(err error) error {
	if ee, ok := err.(*exec.ExitError); ok && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	return err
}
