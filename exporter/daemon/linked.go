package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/controllerlink"
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
	srv, err := exporter.New(ctx, f, &drivers.Host{StateDir: stateDir}, exporter.Options{
		Log: log,
		Holder: func() (string, bool) {
			if link == nil {
				return "", false
			}
			return link.Holder()
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
	hooks := &controllerlink.Hooks{
		Before: f.Hooks.BeforeLease, After: f.Hooks.AfterLease, Target: target, Dir: hookDir, Log: log,
		Open: func(holder string) (string, func(), error) { return srv.OpenSession(holder, true) },
	}
	m := newExporterMetrics()
	link, err = controllerlink.New(controllerlink.Options{
		Endpoint: f.Endpoint, Token: f.Token, CA: f.TLS.CA, Insecure: f.TLS.Insecure,
		Labels: f.Metadata.Labels, Report: srv.Report(), Log: log,
		OnLease: func(ctx context.Context, old, cur controllerlink.Assignment) {
			if old.Lease != "" {
				srv.EndSession("lease " + old.Lease + " ended")
				// Leased sessions keep power across tunnel drops, so the
				// lease end is when the board goes off.
				_ = srv.Reset("lease " + old.Lease + " ended")
				m.leased.Set(0)
				handleHook(ctx, log, link, cancel, hooks.Run(ctx, "afterLease", old), old)
			}
			if cur.Lease != "" {
				handleHook(ctx, log, link, cancel, hooks.Run(ctx, "beforeLease", cur), cur)
				m.leased.Set(1)
				log.Info("leased", "lease", cur.Lease, "client", cur.Client, "until", cur.End.Format(time.RFC3339))
			}
		},
	})
	if err != nil {
		l.Close()
		return err
	}
	go srv.Serve(l)
	hooks.Link = link
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

func handleHook(ctx context.Context, log *slog.Logger, link *controllerlink.Link, stop context.CancelCauseFunc, err error, a controllerlink.Assignment) {
	var he *controllerlink.HookError
	if !errors.As(err, &he) {
		return
	}
	switch he.OnFailure {
	case "endLease":
		log.Error("hook failed; ending the lease", "lease", a.Lease, "err", err)
		link.EndLease(a.Lease, err.Error())
	case "exit":
		log.Error("hook failed; exporter exits", "lease", a.Lease, "err", err)
		stop(fmt.Errorf("exporter exits: %w", err))
	default:
		log.Warn("hook failed", "lease", a.Lease, "err", err)
	}
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
