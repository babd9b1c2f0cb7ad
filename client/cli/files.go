package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/files"
)

func init() { RegisterVerbs("files", filesVerbs) }

func filesVerbs(c *client.Client, path string) []*cobra.Command {
	fc := files.NewClient(c.Conn(), path)
	return []*cobra.Command{
		{
			Use:   "put LOCAL [NAME]",
			Short: "Upload a local file (NAME defaults to its base name)",
			Args:  cobra.RangeArgs(1, 2),
			RunE: func(cmd *cobra.Command, args []string) error {
				name := filepath.Base(args[0])
				if len(args) == 2 {
					name = args[1]
				}
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				start := time.Now()
				n, err := fc.Put(cmd.Context(), name, f)
				if err != nil {
					return err
				}
				d := time.Since(start)
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %d bytes in %s (%.1f MB/s)\n", name, n, d.Round(time.Millisecond), float64(n)/d.Seconds()/1e6)
				return nil
			},
		},
		{
			Use: "ls", Short: "List the served files", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				infos, err := fc.List(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				for _, i := range infos {
					fmt.Fprintf(tw, "%d\t%s\t%s\n", i.Size, i.ModTime.Local().Format(time.DateTime), i.Name)
				}
				return tw.Flush()
			},
		},
		{
			Use: "rm NAME...", Short: "Remove served files", Args: cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				for _, n := range args {
					if err := fc.Remove(cmd.Context(), n); err != nil {
						return err
					}
				}
				return nil
			},
		},
		{
			Use: "url", Short: "Print the URL boards fetch the files from", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				u, err := fc.URL(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), u)
				return nil
			},
		},
	}
}
