package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/state"
)

func init() { RegisterNodeCommand("state", stateCommand) }

// stateCommand makes a state driver's node the command: `j state` prints
// the state, `j state os` goes there, `j state --force off` declares it.
func stateCommand(c *client.Client, path string, cmd *cobra.Command) {
	m := state.NewClient(c.Conn(), path)
	var force bool
	cmd.Use = cmd.Name() + " [STATE]"
	cmd.Short = "Print the board's state, or take it to STATE (off, bootloader, flasher, os)"
	cmd.Long = `Without an argument, print the board's state (and why it is broken, if a
transition failed). With STATE, take the board there, printing each step and
each state it passes. --force declares the state without acting, which also
clears a broken board.`
	cmd.Args = cobra.MaximumNArgs(1)
	cmd.Flags().BoolVar(&force, "force", false, "declare STATE without acting (clears a broken board)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		switch {
		case len(args) == 0 && force:
			return fmt.Errorf("--force needs a STATE")
		case len(args) == 0:
			st, err := m.Get(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), st.State)
			if st.Broken != "" {
				fmt.Fprintln(cmd.OutOrStdout(), "broken: "+st.Broken)
			}
			return nil
		case force:
			return m.Force(ctx, args[0])
		}
		return transition(ctx, m, args[0], cmd.OutOrStdout())
	}
}

// transition goes to target, printing progress to w.
func transition(ctx context.Context, m state.Machine, target string, w io.Writer) error {
	start := time.Now()
	err := m.Transition(ctx, target, func(e state.Event) {
		at := time.Since(start).Seconds()
		if e.Reached != "" {
			fmt.Fprintf(w, "%6.1fs → %s\n", at, e.Reached)
			return
		}
		fmt.Fprintf(w, "%6.1fs   %s: %s\n", at, e.Step, e.Message)
	})
	if err != nil {
		return err
	}
	return nil
}

// reachState takes the exporter's board to target (jmp shell --state):
// the board's state driver is the first node serving the capability.
func reachState(ctx context.Context, c *client.Client, target string, w io.Writer) error {
	rep, err := c.Report(ctx)
	if err != nil {
		return err
	}
	var paths []string
	for _, n := range rep.GetDrivers() {
		for _, i := range n.GetInterfaces() {
			if i == "state" {
				paths = append(paths, n.GetPath())
			}
		}
	}
	if len(paths) == 0 {
		return fmt.Errorf("the exporter has no board states (no driver serves state)")
	}
	m := state.NewClient(c.Conn(), paths[0])
	names, err := m.States(ctx)
	if err != nil {
		return err
	}
	ok := false
	for _, n := range names {
		ok = ok || n == target
	}
	if !ok {
		return fmt.Errorf("no state %q: the board (%s) offers %s", target, paths[0], strings.Join(names, ", "))
	}
	return transition(ctx, m, target, w)
}
