// Package daemon is `jmp run`: the exporter as a long-running service on a
// lab host.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/credentials"

	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
)

// Command returns `jmp run`.
func Command() *cobra.Command {
	var (
		cfgPath, listen, socket, certFile, keyFile, passphrase, stateDir, metricsListen string
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run an exporter: serve the drivers of an exporter.yaml",
		Long: `Run an exporter on this lab host. Local mode serves a unix socket; direct
mode (--listen) serves TCP with TLS and needs a passphrase. On SIGTERM every
driver is put into its safe state (power off) and closed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if passphrase == "" {
				passphrase = os.Getenv("JMP_PASSPHRASE")
			}
			return run(ctx, cmd, cfgPath, listen, socket, certFile, keyFile, passphrase, stateDir, metricsListen)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "exporter-config", "c", "exporter.yaml", "exporter config file")
	f.StringVar(&listen, "listen", "", "serve TCP with TLS on this address (direct mode)")
	f.StringVar(&socket, "socket", "", "unix socket path (default: $XDG_RUNTIME_DIR/pogo/NAME.sock)")
	f.StringVar(&certFile, "tls-cert", "", "TLS certificate (default: a self-signed one)")
	f.StringVar(&keyFile, "tls-key", "", "TLS key")
	f.StringVar(&passphrase, "passphrase", "", "passphrase clients must present (default $JMP_PASSPHRASE)")
	f.StringVar(&stateDir, "state-dir", "", "directory for driver state")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus /metrics on this address")
	return cmd
}

func run(ctx context.Context, cmd *cobra.Command, cfgPath, listen, socket, certFile, keyFile, passphrase, stateDir, metricsListen string) error {
	log := slog.Default()
	f, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if f.Endpoint != "" || f.Token != "" {
		if listen != "" {
			return fmt.Errorf("%s names a controller: the exporter is reached through it, not --listen", cfgPath)
		}
		return runLinked(ctx, cmd, f, socket, stateDir, metricsListen)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hookDir, err := os.MkdirTemp("", "pogo-hooks-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(hookDir)
	// Without a controller the session is the lease: hooks run around
	// each one, their j reaching this exporter as a client would.
	hooks := &exporter.SessionHooks{Dir: hookDir, Exit: func(err error) { cancel(err) }}
	opts := exporter.Options{Log: log, Passphrase: passphrase, AlwaysReset: true, SessionHooks: hooks}
	var l net.Listener
	if listen != "" {
		if passphrase == "" {
			return fmt.Errorf("--listen needs --passphrase (or JMP_PASSPHRASE): direct mode must not be open to anyone who can reach the port")
		}
		tc, fp, err := exporter.TLSConfig(certFile, keyFile)
		if err != nil {
			return err
		}
		opts.TLS = credentials.NewTLS(tc)
		if l, err = net.Listen("tcp", listen); err != nil {
			return fmt.Errorf("listen on %s: %w", listen, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "exporter %s serving %s\nfingerprint sha256:%s\nconnect: jmp shell --exporter %s --fingerprint %s --passphrase …\n", f.Metadata.Name, l.Addr(), fp, l.Addr(), fp)
		hooks.Host = loopback(l.Addr())
		hooks.Env = []string{rpcmeta.EnvPassphrase + "=" + passphrase, rpcmeta.EnvFingerprint + "=" + fp}
	} else {
		if socket == "" {
			socket = DefaultSocket(f.Metadata.Name)
		}
		if l, err = transport.ListenUnix(socket); err != nil {
			return err
		}
		defer os.Remove(socket)
		fmt.Fprintf(cmd.OutOrStdout(), "exporter %s serving unix://%s\n", f.Metadata.Name, socket)
		hooks.Host = "unix://" + socket
	}
	s, err := exporter.New(ctx, f, &drivers.Host{StateDir: stateDir}, opts)
	if err != nil {
		l.Close()
		return err
	}
	if metricsListen != "" {
		reg := prometheus.NewRegistry()
		if err := registerServer(reg, s); err != nil {
			l.Close()
			s.Stop()
			return err
		}
		stop, err := serveMetrics(metricsListen, reg)
		if err != nil {
			l.Close()
			s.Stop()
			return err
		}
		defer stop()
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case <-ctx.Done():
		log.Info("stopping exporter")
		if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
			err = cause
		}
	case err = <-errc:
	}
	if serr := s.Stop(); serr != nil {
		log.Error("closing drivers", "err", serr)
	}
	return err
}

// loopback is addr with an unspecified host (":9090", "[::]:9090") made
// the loopback address, for the exporter's own hooks to dial.
func loopback(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// DefaultSocket is where `jmp run` serves in local mode.
func DefaultSocket(name string) string {
	if name == "" {
		name = "exporter"
	}
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("pogo-%d", os.Getuid()))
	}
	return filepath.Join(dir, "pogo", name+".sock")
}

// ServeLocal serves the exporter config at cfgPath in this process on a
// unix socket in dir (jmp shell --exporter-config) and returns its target;
// stop ends the session, resets the drivers and closes them.
func ServeLocal(ctx context.Context, cfgPath, dir string) (target string, stop func() error, err error) {
	f, err := config.Load(cfgPath)
	if err != nil {
		return "", nil, err
	}
	sock := filepath.Join(dir, "exporter.sock")
	l, err := transport.ListenUnix(sock)
	if err != nil {
		return "", nil, err
	}
	// The shell's session is the lease the config's hooks run around.
	hooks := &exporter.SessionHooks{Host: "unix://" + sock, Dir: filepath.Join(dir, "hooks")}
	srv, err := exporter.New(ctx, f, &drivers.Host{StateDir: filepath.Join(dir, "state")}, exporter.Options{Log: slog.Default(), SessionHooks: hooks})
	if err != nil {
		l.Close()
		return "", nil, err
	}
	go srv.Serve(l)
	return "unix://" + sock, srv.Stop, nil
}
