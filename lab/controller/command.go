package controller

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/transport"

	"github.com/spf13/cobra"
)

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
	f.StringVar(&o.DataDir, "data-dir", transport.ControllerDataDir(), "state directory (embedded etcd, CA, admin.sock)")
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

var tunnelSecurity = map[string]pb.TunnelSecurity{
	"e2e":   pb.TunnelSecurity_TUNNEL_SECURITY_E2E,
	"tls":   pb.TunnelSecurity_TUNNEL_SECURITY_TLS,
	"plain": pb.TunnelSecurity_TUNNEL_SECURITY_PLAIN,
}
