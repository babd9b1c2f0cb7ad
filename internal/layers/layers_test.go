package layers

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, dir string, patterns ...string) (string, Graph) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	module, g, err := Load(ctx, dir, patterns...)
	if err != nil {
		t.Fatal(err)
	}
	return module, g
}

// TestModule holds pogo to its layers (docs/architecture.md).
func TestModule(t *testing.T) {
	module, g := load(t, ".", "github.com/pogolab/pogo/...")
	if _, ok := g[module+"/client/cli"]; !ok {
		t.Fatalf("go list found no %s/client/cli: the graph is not this module's", module)
	}
	for _, v := range Check(g, module) {
		t.Errorf("%s", v)
	}
}

// TestPlanted runs the check on a module with bad imports planted in it.
func TestPlanted(t *testing.T) {
	module, g := load(t, filepath.Join("testdata", "planted"), "./...")
	var got []string
	for _, v := range Check(g, module) {
		got = append(got, strings.ReplaceAll(v.String(), module+"/", ""))
	}
	want := []string{
		"client/cli -> exporter: the client shares only api and drivers with the exporter",
		"drivers/power -> exporter/exportertest: only tests may import a test harness",
		"drivers/power -> exporter/exportertest: drivers sit under the exporter and the client",
		"drivers/power -> exporter/exportertest -> client/cli: drivers sit under the exporter and the client",
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestEtcdChain: the client's dependency set must not gain etcd's server,
// however many packages away; the error names the whole chain.
func TestEtcdChain(t *testing.T) {
	const m = "github.com/pogolab/pogo"
	g := Graph{
		m + "/client/cli":                 {"fmt", m + "/client/lease"},
		m + "/client/lease":               {m + "/api/token", "example.com/kv"},
		m + "/api/token":                  {"crypto/sha256"},
		"example.com/kv":                  {"go.etcd.io/etcd/server/v3/embed"},
		"go.etcd.io/etcd/server/v3/embed": nil,
		m + "/lab/controller":             {"go.etcd.io/etcd/server/v3/embed", m + "/client/lease"},
	}
	var got []string
	for _, v := range Check(g, m) {
		got = append(got, strings.Join(v.Chain, " -> "))
	}
	want := []string{
		m + "/client/cli -> " + m + "/client/lease -> example.com/kv -> go.etcd.io/etcd/server/v3/embed",
		m + "/client/lease -> example.com/kv -> go.etcd.io/etcd/server/v3/embed",
	}
	if !slices.Equal(got, want) {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
