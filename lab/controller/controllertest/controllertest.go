// Package controllertest runs a controller and exporters linked to it
// in-process, for tests that drive leases through the real gRPC wire.
package controllertest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/lease"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/controllerlink"
	"github.com/pogolab/pogo/lab/controller"
)

// Lab is a running controller.
type Lab struct {
	C   *controller.Controller
	Dir string
	// NoTLS: the controller serves plaintext (--insecure-no-tls).
	NoTLS bool
	t     testing.TB
}

// Start runs a controller with embedded etcd (TLS on) until the test ends.
func Start(t testing.TB) *Lab {
	t.Helper()
	dir := t.TempDir()
	return StartIn(t, dir)
}

// StartIn runs a controller on data dir dir (to restart one).
func StartIn(t testing.TB, dir string) *Lab {
	t.Helper()
	return start(t, dir, false, nil)
}

// StartNoTLS runs a plaintext controller (as --insecure-no-tls does).
func StartNoTLS(t testing.TB) *Lab {
	t.Helper()
	return start(t, t.TempDir(), true, nil)
}

// StartWith runs a controller (TLS on) with options changed by set.
func StartWith(t testing.TB, set func(*controller.Options)) *Lab {
	t.Helper()
	return start(t, t.TempDir(), false, set)
}

func start(t testing.TB, dir string, noTLS bool, set func(*controller.Options)) *Lab {
	t.Helper()
	o := controller.Options{DataDir: dir, Listen: "127.0.0.1:0", NoTLS: noTLS, Log: Logger(t)}
	if set != nil {
		set(&o)
	}
	c, err := controller.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	go c.Serve(context.Background())
	t.Cleanup(func() { c.Close() })
	return &Lab{C: c, Dir: dir, NoTLS: o.NoTLS, t: t}
}

// Admin is the controller's admin API.
func (l *Lab) Admin() pb.AdminClient {
	l.t.Helper()
	conn, err := transport.DialAdmin(l.Dir)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { conn.Close() })
	return pb.NewAdminClient(conn)
}

// Token creates an identity and returns its token.
func (l *Lab) Token(kind, name string) string {
	l.t.Helper()
	a := l.Admin()
	var r *pb.CreateIdentityResponse
	var err error
	if kind == "client" {
		r, err = a.CreateClient(context.Background(), &pb.CreateIdentityRequest{Name: name})
	} else {
		r, err = a.CreateExporter(context.Background(), &pb.CreateIdentityRequest{Name: name})
	}
	if err != nil {
		l.t.Fatal(err)
	}
	return r.GetToken()
}

// CA is the controller's CA in PEM.
func (l *Lab) CA() string {
	l.t.Helper()
	data, err := os.ReadFile(filepath.Join(l.Dir, "ca.crt"))
	if err != nil {
		l.t.Fatal(err)
	}
	return string(data)
}

// Client makes a client identity and a lease client for it.
func (l *Lab) Client(name string) *lease.Client {
	l.t.Helper()
	c, err := lease.Dial(lease.Config{Endpoint: l.C.Addr(), Token: l.Token("client", name), CA: l.CA(), NoTLS: l.NoTLS})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { c.Close() })
	return c
}

// Exporter is an in-process exporter linked to the controller.
type Exporter struct {
	Server *exporter.Server
	Link   *controllerlink.Link
	cancel context.CancelFunc
	done   chan struct{}
}

// Stop stops the exporter (as if its process died, but resetting drivers).
func (e *Exporter) Stop() {
	e.cancel()
	<-e.done
}

// Exporter runs an exporter named name with labels and yamlExport (the
// export: section's body) linked to the controller, until the test ends.
func (l *Lab) Exporter(name string, labels map[string]string, token, exportYAML string) *Exporter {
	l.t.Helper()
	if token == "" {
		token = l.Token("exporter", name)
	}
	var lb strings.Builder
	for k, v := range labels {
		fmt.Fprintf(&lb, "    %s: %q\n", k, v)
	}
	text := fmt.Sprintf("apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\nmetadata:\n  name: %s\n  labels:\n%sexport:\n%s", name, lb.String(), exportYAML)
	f, err := config.Parse(name+".yaml", []byte(text))
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var link *controllerlink.Link
	srv, err := exporter.New(ctx, f, &drivers.Host{StateDir: l.t.TempDir()}, exporter.Options{Log: Logger(l.t), Holder: func() (string, bool) { return link.Holder() }})
	if err != nil {
		cancel()
		l.t.Fatal(err)
	}
	rep := &pb.ReportResponse{Name: name, Labels: labels}
	link, err = controllerlink.New(controllerlink.Options{
		Endpoint: l.C.Addr(), Token: token, CA: l.CA(), NoTLS: l.NoTLS, Labels: labels, Report: rep, Log: Logger(l.t),
		OnLease: func(ctx context.Context, old, cur controllerlink.Assignment) bool {
			if old.Lease != "" {
				srv.EndSession("lease " + old.Lease + " ended")
				_ = srv.Reset("lease " + old.Lease + " ended")
			}
			return true
		},
	})
	if err != nil {
		cancel()
		l.t.Fatal(err)
	}
	go srv.Serve(link.Listener())
	done := make(chan struct{})
	go func() {
		defer close(done)
		link.Run(ctx)
		link.Close()
		srv.Stop()
	}()
	e := &Exporter{Server: srv, Link: link, cancel: cancel, done: done}
	l.t.Cleanup(e.Stop)
	return e
}

// WaitOnline waits until the controller sees n exporters online.
func WaitOnline(t testing.TB, c *lease.Client, names ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		es, err := c.Exporters(context.Background(), "")
		if err == nil {
			online := map[string]bool{}
			for _, e := range es {
				online[e.GetName()] = e.GetOnline()
			}
			all := true
			for _, n := range names {
				all = all && online[n]
			}
			if all {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("exporters %v not online after 20s", names)
}

// Dial returns a client for the exporter of a ready lease.
func Dial(t testing.TB, c *lease.Client, id string) *client.Client {
	t.Helper()
	ec, err := c.Exporter(context.Background(), id, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ec.Close() })
	return ec
}

// Logger logs to the test until it ends.
func Logger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done && os.Getenv("POGO_TEST_LOG") != "" {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}
