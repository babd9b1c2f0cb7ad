package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/controllerlink"
	"github.com/pogolab/pogo/exporter/hooks"
)

// runLinked is `jmp run` for an exporter that belongs to a controller: it
// serves the tree on its local socket (for hooks and the host's own use,
// lease holder only) and through router tunnels, and follows the lease.
func runLinked(ctx context.Context, cmd *cobra.Command, f *config.File, socket, stateDir, metricsListen string) error {
	log := slog.Default().With("exporter", f.Metadata.Name)
	if f.Endpoint == "" || f.Token == "" {
		return fmt.Errorf("%s: a controller needs both endpoint and token", f.Path)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if socket == "" {
		socket = DefaultSocket(f.Metadata.Name)
	}
	l, err := transport.ListenUnix(socket)
	if err != nil {
		return err
	}
	defer os.Remove(socket)
	// link is assigned before anything is served: the Holder closure reads
	// it on every session request.
	var link *controllerlink.Link
	// serving is the lease driver calls and hooks act for (the ended
	// lease while its afterLease hook runs).
	var serving atomic.Pointer[drivers.Lease]
	srv, err := exporter.New(ctx, f, &drivers.Host{StateDir: stateDir}, exporter.Options{
		Log:        log,
		LeaseHooks: true,
		Holder: func() (string, bool) {
			if link == nil {
				return "", false
			}
			return link.Holder()
		},
		Lease: func() (drivers.Lease, bool) {
			if l := serving.Load(); l != nil {
				return *l, true
			}
			return drivers.Lease{}, false
		},
	})
	if err != nil {
		l.Close()
		return err
	}
	defer func() {
		if serr := srv.Stop(); serr != nil {
			log.Error("closing drivers", "err", serr)
		}
	}()
	target := "unix://" + socket
	hookDir, err := os.MkdirTemp("", "pogo-hooks-")
	if err != nil {
		l.Close()
		return err
	}
	defer os.RemoveAll(hookDir)
	for _, w := range hooks.Check(f.Hooks) {
		log.Warn("hook will not work as in Jumpstarter", "problem", w)
	}
	runner := &hooks.Runner{Hooks: f.Hooks, Dir: hookDir, Log: log,
		// A hook holds a session (opened in-process) that its j commands
		// reach on the local socket, as the lease holder would; power stays
		// as the script leaves it.
		Open: func(ctx context.Context, which string) (hooks.Reach, func(), error) {
			name := "hook:" + which
			link.SetHook(name)
			token, end, err := srv.OpenSession(name, true)
			if err != nil {
				link.SetHook("")
				return hooks.Reach{}, nil, err
			}
			return hooks.Reach{Host: target, Session: token}, func() {
				end()
				link.SetHook("")
			}, nil
		},
	}
	m := newExporterMetrics()
	lh := &leaseHooks{runner: runner, log: log, stop: cancel}
	link, err = controllerlink.New(controllerlink.Options{
		Endpoint: f.Endpoint, Token: f.Token, CA: f.TLS.CA, Insecure: f.TLS.Insecure,
		Labels: f.Metadata.Labels, Report: srv.Report(), Log: log,
		OnLease: func(ctx context.Context, old, cur controllerlink.Assignment) bool {
			if old.Lease != "" {
				l := drivers.Lease{ID: old.Lease, Client: old.Client}
				serving.Store(&l)
				srv.EndSession("lease " + old.Lease + " ended")
				// afterLease sees the board as the lease left it; then
				// the board goes to its safe state whatever the hook did.
				lh.after(ctx, l)
				_ = srv.Reset("lease " + old.Lease + " ended")
				m.leased.Set(0)
				serving.Store(nil)
				if f.ExitOnLeaseEnd {
					log.Info("exitOnLeaseEnd: the lease is over; exporter exits", "lease", old.Lease)
					lh.flush(ctx)
					cancel(nil)
					return false
				}
			}
			if cur.Lease != "" {
				l := drivers.Lease{ID: cur.Lease, Client: cur.Client}
				serving.Store(&l)
				if !lh.before(ctx, l) {
					return false
				}
				m.leased.Set(1)
				log.Info("leased", "lease", cur.Lease, "client", cur.Client, "until", cur.End.Format(time.RFC3339))
			}
			return true
		},
	})
	if err != nil {
		l.Close()
		return err
	}
	go srv.Serve(l)
	lh.link = link
	defer link.Close()
	link.CountBytes = func(in, out int) {
		m.bytes.WithLabelValues("in").Add(float64(in))
		m.bytes.WithLabelValues("out").Add(float64(out))
	}
	go srv.Serve(link.Listener())
	if metricsListen != "" {
		if err := registerServer(m.reg, srv); err != nil {
			return err
		}
		stop, err := serveMetrics(metricsListen, m.reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	fmt.Fprintf(cmd.OutOrStdout(), "exporter %s serving unix://%s and through controller %s\n", f.Metadata.Name, socket, f.Endpoint)
	go link.Run(ctx)
	<-ctx.Done()
	log.Info("stopping exporter")
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

type exporterMetrics struct {
	reg    *prometheus.Registry
	leased prometheus.Gauge
	bytes  *prometheus.CounterVec
}

func newExporterMetrics() *exporterMetrics {
	m := &exporterMetrics{
		reg:    prometheus.NewRegistry(),
		leased: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pogo_exporter_leased", Help: "1 while a lease holds the exporter."}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pogo_exporter_stream_bytes_total", Help: "Bytes through router tunnels, by direction.",
		}, []string{"direction"}),
	}
	m.reg.MustRegister(m.leased, m.bytes)
	return m
}
