// Command jmp is pogo's CLI: `jmp run` serves an exporter, `jmp shell`
// holds one, and — invoked as j inside a shell — it drives the drivers.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/pogolab/pogo/bundles"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/cli"
	_ "github.com/pogolab/pogo/drivers/all"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/daemon"
	"github.com/pogolab/pogo/lab/bmcsim"
	"github.com/pogolab/pogo/lab/controller"
)

var version = "dev"

func main() {
	os.Exit(run())
}

func run() int {
	ctx := context.Background()
	setupLog()
	if filepath.Base(os.Args[0]) == "j" {
		return runJ(ctx)
	}
	exporter.Version = version
	root := &cobra.Command{
		Use:           "jmp",
		Short:         "pogo: lease, flash and test boards, real or virtual",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(daemon.Command(), cli.Shell(daemon.ServeLocal), controller.Command(), bmcsim.Command(), bundles.Command(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "jmp", version) },
	})
	root.AddCommand(cli.Commands()...)
	return exit(root.ExecuteContext(ctx), "jmp")
}

func runJ(ctx context.Context) int {
	c, err := client.FromEnv(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "j:", err)
		return 2
	}
	defer c.Close()
	root, err := cli.J(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "j:", err)
		return 1
	}
	return exit(root.ExecuteContext(ctx), "j")
}

func exit(err error, name string) int {
	if err == nil {
		return 0
	}
	var ee *cli.ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	return 1
}

func setupLog() {
	// Daemons log what they do; interactive commands only warnings.
	level := slog.LevelWarn
	if len(os.Args) > 1 && (os.Args[1] == "run" || os.Args[1] == "controller" || os.Args[1] == "bmc-sim") {
		level = slog.LevelInfo
	}
	if l := os.Getenv("POGO_LOG"); l != "" {
		_ = level.UnmarshalText([]byte(l))
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}
