package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/power"
)

func init() { RegisterVerbs("power", powerVerbs) }

func powerVerbs(c *client.Client, path string) []*cobra.Command {
	p := c.Power(path)
	var delay time.Duration
	cycle := &cobra.Command{
		Use:   "cycle",
		Short: "Power off, wait, power on",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return p.Cycle(cmd.Context(), delay)
		},
	}
	cycle.Flags().DurationVar(&delay, "delay", 0, "time to stay off (default: the driver's)")
	return []*cobra.Command{
		{
			Use: "on", Short: "Power on", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return p.On(cmd.Context()) },
		},
		{
			Use: "off", Short: "Power off", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error { return p.Off(cmd.Context()) },
		},
		cycle,
		{
			Use: "status", Short: "Print on, off or unknown", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				s, err := p.State(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), s)
				return nil
			},
		},
	}
}

var _ power.Reader = (*power.Client)(nil)
