package controller

import (
	"fmt"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultDataDir is where `jmp controller` keeps its state by default.
func DefaultDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "pogo", "controller")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "pogo-controller")
	}
	return filepath.Join(home, ".local", "state", "pogo", "controller")
}

// Command returns `jmp controller`.
func Command() *cobra.Command {
	var (
		o         Options
		endpoints string
		tunnels   = "e2e" // Options' zero value too
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the lab controller: exporter registry, lease queue and router",
		Long: `Run a lab controller replica. By default it starts an embedded etcd in
--data-dir; with --etcd-endpoints several replicas share an external etcd
cluster. TLS is on: a CA is made on first start (jmp admin ca prints it)
and every replica issues its own server certificate from it. Create
identities with jmp admin create client|exporter NAME.

Tunnels between clients and exporters (--tunnel-security):
  e2e    TLS between client and exporter, each pinning the certificate
         the controller vouches for; the router splices plain TCP legs
         and cannot read or alter the bytes (default)
  tls    TLS legs ended by the router, which sees the bytes; for
         networks that pass only TLS
  plain  no TLS on the tunnels (the API keeps it): trusted networks only,
         where it is fastest`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			sec, ok := tunnelSecurity[tunnels]
			if !ok {
				return fmt.Errorf("--tunnel-security %q: want e2e, tls or plain", tunnels)
			}
			o.Tunnels = sec
			if endpoints != "" {
				o.EtcdEndpoints = strings.Split(endpoints, ",")
			}
			o.Log = slog.Default()
			c, err := New(ctx, o)
			if err != nil {
				return err
			}
			defer c.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "controller serving %s (data dir %s)\n", c.Addr(), o.DataDir)
			if a := c.MetricsAddr(); a != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "metrics on http://%s/metrics\n", a)
			}
			return c.Serve(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data-dir", DefaultDataDir(), "state directory (embedded etcd, CA, admin.sock)")
	f.StringVar(&o.Listen, "listen", ":8082", "gRPC address for clients, exporters and the router")
	f.StringVar(&o.Advertise, "advertise", "", "address clients and exporters reach this replica at (default: the listen address)")
	f.StringVar(&endpoints, "etcd-endpoints", "", "external etcd cluster, comma-separated (default: embedded etcd)")
	f.StringSliceVar(&o.TLSHosts, "tls-san", nil, "extra names or IPs for the server certificate")
	f.BoolVar(&o.NoTLS, "insecure-no-tls", false, "serve without TLS (testing only)")
	f.StringVar(&tunnels, "tunnel-security", tunnels, "how client-exporter tunnels are protected: e2e, tls or plain (see above)")
	f.StringVar(&o.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics on this address")
	f.DurationVar(&o.Retention, "lease-retention", DefaultRetention, "delete ended leases from etcd this long after they end")
	return cmd
}

// DialAdmin connects to the Admin service of the controller whose data
// dir is dir.
func DialAdmin(dir string) (*grpc.ClientConn, error) {
	// unix:// wants an absolute path: unix://ctl/admin.sock reads ctl as
	// an authority.
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	sock := AdminSocket(abs)
	if _, err := os.Stat(sock); err != nil {
		return nil, fmt.Errorf("no controller admin socket at %s (is jmp controller running with --data-dir %s?): %w", sock, dir, err)
	}
	return grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

var tunnelSecurity = map[string]pb.TunnelSecurity{
	"e2e":   pb.TunnelSecurity_TUNNEL_SECURITY_E2E,
	"tls":   pb.TunnelSecurity_TUNNEL_SECURITY_TLS,
	"plain": pb.TunnelSecurity_TUNNEL_SECURITY_PLAIN,
}
