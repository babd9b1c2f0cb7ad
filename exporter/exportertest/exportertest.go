// Package exportertest serves an exporter config in-process on a unix
// socket for tests, so they drive drivers through the real gRPC wire.
package exportertest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
)

// Exporter is a running test exporter.
type Exporter struct {
	Server *exporter.Server
	// Target is the address clients dial ("unix://…").
	Target string
	Dir    string
}

// Serve builds the exporter from yamlText and serves it until the test
// ends. It fails the test on any error.
func Serve(t testing.TB, yamlText string) *Exporter {
	t.Helper()
	return ServeWith(t, yamlText, nil)
}

// ServeWith is Serve with options: set, when not nil, adjusts them,
// knowing the address the exporter will serve (for session hooks).
func ServeWith(t testing.TB, yamlText string, set func(o *exporter.Options, target string)) *Exporter {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "exporter.yaml")
	if err := os.WriteFile(path, []byte(yamlText), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "exporter.sock")
	l, err := transport.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(newTestWriter(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := exporter.Options{Log: log}
	if set != nil {
		set(&opts, "unix://"+sock)
	}
	s, err := exporter.New(context.Background(), f, &drivers.Host{StateDir: filepath.Join(dir, "state")}, opts)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop exporter: %v", err)
		}
	})
	return &Exporter{Server: s, Target: "unix://" + sock, Dir: dir}
}

// Dial connects a client, closed when the test ends.
func (e *Exporter) Dial(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), e.Target, client.Options{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Start serves yamlText and returns a client holding its session.
func Start(t testing.TB, yamlText string) *client.Client {
	t.Helper()
	e := Serve(t, yamlText)
	c := e.Dial(t)
	s, err := c.Open(context.Background(), client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c
}

// testWriter logs to the test until it ends; t.Log after that panics.
type testWriter struct {
	t    testing.TB
	mu   *sync.Mutex
	done *bool
}

func newTestWriter(t testing.TB) testWriter {
	w := testWriter{t: t, mu: &sync.Mutex{}, done: new(bool)}
	t.Cleanup(func() { w.mu.Lock(); *w.done = true; w.mu.Unlock() })
	return w
}

func (w testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !*w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
