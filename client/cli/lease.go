package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/client/lease"
)

// Commands returns the controller-facing commands: login, create, get,
// update, delete and admin.
func Commands() []*cobra.Command {
	return []*cobra.Command{loginCmd(), createCmd(), getCmd(), updateCmd(), deleteCmd(), adminCmd()}
}

func leaseClient() (*lease.Client, error) {
	cfg, err := lease.LoadConfig(lease.ConfigPath())
	if err != nil {
		return nil, err
	}
	return lease.Dial(*cfg)
}

func loginCmd() *cobra.Command {
	var cfg lease.Config
	var caFile string
	cmd := &cobra.Command{
		Use:   "login --endpoint HOST:PORT --token TOKEN [--ca CA.crt]",
		Short: "Save the controller endpoint and your token in " + lease.ConfigPath(),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Endpoint == "" || cfg.Token == "" {
				return errors.New("jmp login needs --endpoint and --token (jmp admin create client NAME prints a token)")
			}
			if caFile != "" {
				data, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("read CA: %w", err)
				}
				cfg.CA = string(data)
			}
			lc, err := lease.Dial(cfg)
			if err != nil {
				return err
			}
			defer lc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			if _, err := lc.List(ctx, false); err != nil {
				return fmt.Errorf("check login at %s: %w", cfg.Endpoint, err)
			}
			path := lease.ConfigPath()
			if err := cfg.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s as %s (%s)\n", cfg.Endpoint, lc.Name(), path)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Endpoint, "endpoint", "", "controller address HOST:PORT")
	f.StringVar(&cfg.Token, "token", "", "client token from jmp admin create client")
	f.StringVar(&caFile, "ca", "", "controller CA certificate (jmp admin ca prints it)")
	f.BoolVar(&cfg.Insecure, "insecure", false, "do not verify the controller's certificate (testing only)")
	f.BoolVar(&cfg.NoTLS, "no-tls", false, "plaintext, for a controller run with --insecure-no-tls")
	return cmd
}

// parseBegin reads an RFC 3339 time or a duration from now.
func parseBegin(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--begin %q: want an RFC 3339 time (2026-11-23T18:00:00Z) or a duration from now (2h)", s)
	}
	return t, nil
}

func createCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "create", Short: "Create a lease"}
	var (
		r         lease.Request
		tags      []string
		begin     string
		wait      bool
		outFormat string
	)
	lc := &cobra.Command{
		Use:   "lease -l SELECTOR --duration D",
		Short: "Request a lease of an exporter matching a label selector (or --name)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var err error
			if r.Tags, err = parseTags(tags); err != nil {
				return err
			}
			if begin != "" {
				if r.Begin, err = parseBegin(begin); err != nil {
					return err
				}
			}
			c, err := leaseClient()
			if err != nil {
				return err
			}
			defer c.Close()
			l, err := c.Create(ctx, r)
			if err != nil {
				return err
			}
			if wait {
				last := int32(-1)
				if l, err = c.Wait(ctx, l.GetId(), func(l *pb.Lease) {
					if l.GetQueuePosition() != last {
						last = l.GetQueuePosition()
						fmt.Fprintf(os.Stderr, "lease %s: %d ahead in the queue\n", l.GetId(), last)
					}
				}); err != nil {
					return err
				}
			}
			return printLeases(cmd.OutOrStdout(), outFormat, []*pb.Lease{l})
		},
	}
	f := lc.Flags()
	f.StringVarP(&r.Selector, "selector", "l", "", "label selector (a=b,c!=d,e in (x,y),f notin (z),g,!h)")
	f.StringVar(&r.Exporter, "name", "", "exporter name")
	f.DurationVar(&r.Duration, "duration", 30*time.Minute, "how long to hold the exporter once granted")
	f.StringVar(&begin, "begin", "", "grant no earlier than this (RFC 3339 time or duration from now)")
	f.StringArrayVar(&tags, "tag", nil, "metadata k=v (repeatable)")
	f.IntVar(&r.Priority, "priority", 0, "queue priority (at most your policy's; default: your policy's)")
	f.BoolVar(&wait, "wait", false, "wait until the lease is ready")
	f.StringVarP(&outFormat, "output", "o", "", "output: wide, yaml or json")
	cmd.AddCommand(lc)
	return cmd
}

func parseTags(tags []string) (map[string]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--tag %q: want key=value", t)
		}
		out[k] = v
	}
	return out, nil
}

func getCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "get", Short: "List exporters or leases"}
	var sel, out string
	var all bool
	ex := &cobra.Command{
		Use:     "exporters",
		Aliases: []string{"exporter"},
		Short:   "List the exporters you may lease",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := leaseClient()
			if err != nil {
				return err
			}
			defer c.Close()
			es, err := c.Exporters(cmd.Context(), sel)
			if err != nil {
				return err
			}
			return printExporters(cmd.OutOrStdout(), out, es)
		},
	}
	ex.Flags().StringVarP(&sel, "selector", "l", "", "label selector")
	ex.Flags().StringVarP(&out, "output", "o", "", "output: wide, yaml or json")
	ls := &cobra.Command{
		Use:     "leases",
		Aliases: []string{"lease"},
		Short:   "List your leases",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := leaseClient()
			if err != nil {
				return err
			}
			defer c.Close()
			l, err := c.List(cmd.Context(), all)
			if err != nil {
				return err
			}
			return printLeases(cmd.OutOrStdout(), out, l)
		},
	}
	ls.Flags().BoolVarP(&all, "all", "a", false, "include ended leases")
	ls.Flags().StringVarP(&out, "output", "o", "", "output: wide, yaml or json")
	cmd.AddCommand(ex, ls)
	return cmd
}

func updateCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "update", Short: "Update a lease"}
	var extend time.Duration
	lc := &cobra.Command{
		Use:   "lease ID --extend D",
		Short: "Lengthen a lease (leases never get shorter)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if extend <= 0 {
				return fmt.Errorf("--extend %s: give a positive duration; leases only ever get longer", extend)
			}
			c, err := leaseClient()
			if err != nil {
				return err
			}
			defer c.Close()
			l, err := c.Extend(cmd.Context(), args[0], extend)
			if err != nil {
				return err
			}
			return printLeases(cmd.OutOrStdout(), "", []*pb.Lease{l})
		},
	}
	lc.Flags().DurationVar(&extend, "extend", 0, "add this much to the lease")
	cmd.AddCommand(lc)
	return cmd
}

func deleteCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "delete", Short: "Release leases"}
	var all bool
	lc := &cobra.Command{
		Use:   "lease ID… | --all",
		Short: "Release (or cancel) leases",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return errors.New("give lease IDs or --all")
			}
			c, err := leaseClient()
			if err != nil {
				return err
			}
			defer c.Close()
			if all {
				ls, err := c.List(cmd.Context(), false)
				if err != nil {
					return err
				}
				for _, l := range ls {
					args = append(args, l.GetId())
				}
			}
			var errs []error
			for _, id := range args {
				if _, err := c.Release(cmd.Context(), id); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "lease %s released\n", id)
			}
			return errors.Join(errs...)
		},
	}
	lc.Flags().BoolVar(&all, "all", false, "release all your leases")
	cmd.AddCommand(lc)
	return cmd
}

func stateName(s pb.LeaseState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "LEASE_STATE_"))
}

func printLeases(w io.Writer, format string, ls []*pb.Lease) error {
	if format == "json" || format == "yaml" {
		return printStructured(w, format, ls)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tEXPORTER\tSELECTOR\tQUEUE\tEND\tREASON")
	for _, l := range ls {
		end, queue := "", ""
		if l.GetEnd() != nil {
			end = l.GetEnd().AsTime().Local().Format(time.DateTime)
		}
		if l.GetState() == pb.LeaseState_LEASE_STATE_PENDING {
			queue = fmt.Sprint(l.GetQueuePosition())
		}
		sel := l.GetSelector()
		if l.GetExporterName() != "" {
			sel = strings.TrimPrefix(sel+",name="+l.GetExporterName(), ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.GetId(), stateName(l.GetState()), l.GetExporter(), sel, queue, end, l.GetReason())
	}
	return tw.Flush()
}

func printExporters(w io.Writer, format string, es []*pb.ExporterInfo) error {
	if format == "json" || format == "yaml" {
		return printStructured(w, format, es)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	hdr := "NAME\tONLINE\tENABLED\tLABELS\tLEASED BY\tLEASE END"
	if format == "wide" {
		hdr += "\tDRIVERS"
	}
	fmt.Fprintln(tw, hdr)
	for _, e := range es {
		var labels []string
		for k, v := range e.GetLabels() {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		end := ""
		if e.GetLeaseEnd() != nil {
			end = e.GetLeaseEnd().AsTime().Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%v\t%v\t%s\t%s\t%s", e.GetName(), e.GetOnline(), e.GetEnabled(), strings.Join(labels, ","), e.GetLeasedBy(), end)
		if format == "wide" {
			var ds []string
			for _, d := range e.GetReport().GetDrivers() {
				if d.GetKind() != "" {
					ds = append(ds, d.GetPath()+":"+d.GetKind())
				}
			}
			fmt.Fprintf(tw, "\t%s", strings.Join(ds, ","))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// printStructured prints protobuf messages as a JSON or YAML list.
func printStructured[T proto.Message](w io.Writer, format string, ms []T) error {
	items := make([]any, 0, len(ms))
	for _, m := range ms {
		b, err := protojson.Marshal(m)
		if err != nil {
			return err
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		items = append(items, v)
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(items)
	}
	return yaml.NewEncoder(w).Encode(items)
}

func adminCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Administer the controller (on its host, through admin.sock in its data dir)",
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", transport.ControllerDataDir(), "the controller's data dir")
	admin := func() (pb.AdminClient, func(), error) {
		conn, err := transport.DialAdmin(dataDir)
		if err != nil {
			return nil, nil, err
		}
		return pb.NewAdminClient(conn), func() { conn.Close() }, nil
	}
	var rotate bool
	create := &cobra.Command{
		Use:       "create client|exporter NAME",
		Short:     "Create a client or exporter and print its token (shown once)",
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"client", "exporter"},
		RunE: func(cmd *cobra.Command, args []string) error {
			a, done, err := admin()
			if err != nil {
				return err
			}
			defer done()
			req := &pb.CreateIdentityRequest{Name: args[1], Rotate: rotate}
			var r *pb.CreateIdentityResponse
			switch args[0] {
			case "client":
				r, err = a.CreateClient(cmd.Context(), req)
			case "exporter":
				r, err = a.CreateExporter(cmd.Context(), req)
			default:
				return fmt.Errorf("create %q: want client or exporter", args[0])
			}
			if err != nil {
				return fromGRPC(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), r.GetToken())
			return nil
		},
	}
	create.Flags().BoolVar(&rotate, "rotate", false, "replace the token of an existing identity")
	ca := &cobra.Command{
		Use:   "ca",
		Short: "Print the controller's CA certificate (give it to jmp login --ca and exporter.yaml tls.ca)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, done, err := admin()
			if err != nil {
				return err
			}
			defer done()
			r, err := a.GetCA(cmd.Context(), &pb.GetCARequest{})
			if err != nil {
				return fromGRPC(err)
			}
			fmt.Fprint(cmd.OutOrStdout(), r.GetPem())
			return nil
		},
	}
	enable := func(use string, on bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " exporter NAME",
			Short: strings.ToUpper(use[:1]) + use[1:] + " an exporter (a disabled one is never granted)",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				if args[0] != "exporter" {
					return fmt.Errorf("%s %q: only exporters can be %sd", use, args[0], use)
				}
				a, done, err := admin()
				if err != nil {
					return err
				}
				defer done()
				if _, err := a.SetExporterEnabled(cmd.Context(), &pb.SetExporterEnabledRequest{Name: args[1], Enabled: on}); err != nil {
					return fromGRPC(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "exporter %s %sd\n", args[1], use)
				return nil
			},
		}
	}
	var prio int
	var sel string
	policy := &cobra.Command{
		Use:   "policy CLIENT [--priority N] [--selector SEL]",
		Short: "Set a client's queue priority and the exporters it may see and lease",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, done, err := admin()
			if err != nil {
				return err
			}
			defer done()
			p, err := a.SetPolicy(cmd.Context(), &pb.Policy{Client: args[0], Priority: int32(prio), Selector: sel})
			if err != nil {
				return fromGRPC(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "client %s: priority %d, selector %q\n", p.GetClient(), p.GetPriority(), p.GetSelector())
			return nil
		},
	}
	policy.Flags().IntVar(&prio, "priority", 0, "queue priority (higher is served first)")
	policy.Flags().StringVarP(&sel, "selector", "l", "", "exporters the client may see and lease (empty: all)")
	cmd.AddCommand(create, ca, enable("disable", false), enable("enable", true), policy)
	cmd.AddCommand(adminIdentityCmds(admin)...)
	return cmd
}
