package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/client"
)

// Verbs builds a capability's subcommands for the driver at path.
type Verbs func(c *client.Client, path string) []*cobra.Command

// NodeCommand makes a driver's own j command act for a capability (j
// board.state os), rather than adding verbs under it.
type NodeCommand func(c *client.Client, path string, cmd *cobra.Command)

var (
	vmu          sync.Mutex
	verbs        = map[string]Verbs{}
	nodeCommands = map[string]NodeCommand{}
)

// RegisterNodeCommand sets how a driver serving capability runs as a
// command itself.
func RegisterNodeCommand(capability string, f NodeCommand) {
	vmu.Lock()
	defer vmu.Unlock()
	nodeCommands[capability] = f
}

// RegisterVerbs adds the j subcommands of a capability ("power").
func RegisterVerbs(capability string, v Verbs) {
	vmu.Lock()
	defer vmu.Unlock()
	verbs[capability] = v
}

// J builds the j command for the exporter c is connected to: one
// subcommand per driver, and under it the verbs of each capability it
// serves and its children.
func J(ctx context.Context, c *client.Client) (*cobra.Command, error) {
	rep, err := c.Report(ctx)
	if err != nil {
		return nil, fmt.Errorf("ask the exporter for its drivers: %w", err)
	}
	root := &cobra.Command{
		Use:           "j",
		Short:         "Drive the exporter held by this jmp shell",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printTree(cmd.OutOrStdout(), rep)
		},
	}
	cmds := map[string]*cobra.Command{"": root}
	vmu.Lock()
	defer vmu.Unlock()
	for _, n := range rep.GetDrivers() {
		name := n.GetPath()[strings.LastIndex(n.GetPath(), ".")+1:]
		short := n.GetDescription()
		if short == "" {
			short = strings.Join(append([]string{n.GetKind()}, n.GetInterfaces()...), " ")
		}
		cmd := &cobra.Command{Use: name, Short: short, Args: cobra.NoArgs}
		cmd.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		for _, capability := range n.GetInterfaces() {
			if v, ok := verbs[capability]; ok {
				cmd.AddCommand(v(c, n.GetPath())...)
			}
			if f, ok := nodeCommands[capability]; ok {
				f(c, n.GetPath(), cmd)
			}
		}
		cmds[n.GetPath()] = cmd
		if parent, ok := cmds[n.GetParentPath()]; ok {
			parent.AddCommand(cmd)
		}
	}
	return root, nil
}

func printTree(w io.Writer, rep *pb.ReportResponse) error {
	fmt.Fprintf(w, "exporter %s", rep.GetName())
	if len(rep.GetLabels()) > 0 {
		var ls []string
		for k, v := range rep.GetLabels() {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		fmt.Fprintf(w, " (%s)", strings.Join(ls, ","))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tKIND\tSERVES\tDESCRIPTION")
	for _, n := range rep.GetDrivers() {
		depth := strings.Count(n.GetPath(), ".")
		name := strings.Repeat("  ", depth) + n.GetPath()[strings.LastIndex(n.GetPath(), ".")+1:]
		kind := n.GetKind()
		if n.GetRef() != "" {
			kind = "→ " + n.GetRef()
		}
		if kind == "" {
			kind = "(group)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, kind, strings.Join(n.GetInterfaces(), ","), n.GetDescription())
	}
	return tw.Flush()
}
