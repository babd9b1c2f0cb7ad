package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/pogolab/pogo/api/pogo/v1"
)

// adminIdentityCmds are `jmp admin get identities` and `jmp admin delete
// client|exporter NAME`; admin dials the controller's admin.sock.
func adminIdentityCmds(admin func() (pb.AdminClient, func(), error)) []*cobra.Command {
	var out string
	get := &cobra.Command{Use: "get", Short: "List identities"}
	ids := &cobra.Command{
		Use:     "identities",
		Aliases: []string{"identity"},
		Short:   "List every client (with its policy) and exporter (with its state)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out != "" && out != "json" && out != "yaml" {
				return fmt.Errorf("-o %q: want json or yaml (default: a table)", out)
			}
			a, done, err := admin()
			if err != nil {
				return err
			}
			defer done()
			r, err := a.ListIdentities(cmd.Context(), &pb.ListIdentitiesRequest{})
			if err != nil {
				return fromGRPC(err)
			}
			return printIdentities(cmd.OutOrStdout(), out, r.GetIdentities())
		},
	}
	ids.Flags().StringVarP(&out, "output", "o", "", "output: yaml or json")
	get.AddCommand(ids)

	del := &cobra.Command{
		Use:       "delete client|exporter NAME",
		Short:     "Delete a client or exporter: revoke its token and end its leases",
		Args:      cobra.ExactArgs(2),
		ValidArgs: []string{"client", "exporter"},
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, ok := map[string]pb.IdentityKind{"client": pb.IdentityKind_IDENTITY_KIND_CLIENT, "exporter": pb.IdentityKind_IDENTITY_KIND_EXPORTER}[args[0]]
			if !ok {
				return fmt.Errorf("delete %q: want client or exporter", args[0])
			}
			a, done, err := admin()
			if err != nil {
				return err
			}
			defer done()
			r, err := a.DeleteIdentity(cmd.Context(), &pb.DeleteIdentityRequest{Kind: kind, Name: args[1]})
			if err != nil {
				return fromGRPC(err)
			}
			msg := fmt.Sprintf("%s %s deleted", args[0], args[1])
			if ls := r.GetEndedLeases(); len(ls) > 0 {
				msg += "; leases ended: " + strings.Join(ls, ", ")
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	return []*cobra.Command{get, del}
}

func kindName(k pb.IdentityKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "IDENTITY_KIND_"))
}

func printIdentities(w io.Writer, format string, ids []*pb.Identity) error {
	if format == "json" || format == "yaml" {
		return printStructured(w, format, ids)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tCREATED\tDETAILS")
	for _, id := range ids {
		var details []string
		switch id.GetKind() {
		case pb.IdentityKind_IDENTITY_KIND_CLIENT:
			details = append(details, fmt.Sprintf("priority %d", id.GetPolicy().GetPriority()))
			if s := id.GetPolicy().GetSelector(); s != "" {
				details = append(details, "selector "+s)
			} else {
				details = append(details, "all exporters")
			}
		case pb.IdentityKind_IDENTITY_KIND_EXPORTER:
			details = append(details, map[bool]string{true: "enabled", false: "disabled"}[id.GetEnabled()],
				map[bool]string{true: "online", false: "offline"}[id.GetOnline()])
			if id.GetRegistered() == nil {
				details = append(details, "never registered")
			}
		}
		created := ""
		if id.GetCreated() != nil {
			created = id.GetCreated().AsTime().Local().Format(time.DateTime)
		} else if id.GetKind() == pb.IdentityKind_IDENTITY_KIND_CLIENT {
			details = append(details, "policy only: no such client yet")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", kindName(id.GetKind()), id.GetName(), created, strings.Join(details, ", "))
	}
	return tw.Flush()
}
