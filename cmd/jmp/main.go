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
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/pogolab/pogo/bundles"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/cli"
	_ "github.com/pogolab/pogo/drivers/all"
	"github.com/pogolab/pogo/drivers/power/ykush"
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
	level := setupLog()
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
	addLogFlags(root, level)
	root.AddCommand(daemon.Command(), cli.Shell(daemon.ServeLocal), controller.Command(), bmcsim.Command(), bundles.Command(), versionCommand())
	root.AddCommand(cli.Commands()...)
	return exit(root.ExecuteContext(ctx), "jmp")
}

// versionCommand prints the version and, with jmp's -v, the build's
// features: a jmp built without cgo has no USB, so no YKUSH power.
func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version (with -v, also the build's features: cgo, USB)",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "jmp", version)
			if v, _ := cmd.Flags().GetCount("verbose"); v == 0 {
				return
			}
			fmt.Fprintf(out, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			cgo := "no"
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "CGO_ENABLED" && s.Value == "1" {
						cgo = "yes"
					}
				}
			}
			fmt.Fprintln(out, "cgo:", cgo)
			if usb, err := ykush.USB(); err != nil {
				fmt.Fprintln(out, "usb: no:", err)
			} else {
				fmt.Fprintln(out, "usb:", usb, "(YKUSH power)")
			}
		},
	}
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

// envLog sets the log level (debug, info, warn, error) of jmp and j.
const envLog = "POGO_LOG"

// setupLog installs the default logger at the level POGO_LOG names, or
// else the command's default, and returns the level for the flags to
// change.
func setupLog() *slog.LevelVar {
	// Daemons log what they do; interactive commands only warnings.
	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	if len(os.Args) > 1 && (os.Args[1] == "run" || os.Args[1] == "controller" || os.Args[1] == "bmc-sim") {
		level.Set(slog.LevelInfo)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	if l := os.Getenv(envLog); l != "" {
		if err := level.UnmarshalText([]byte(l)); err != nil {
			slog.Warn("ignoring "+envLog+"; want debug, info, warn or error", "value", l)
		}
	}
	return level
}

// addLogFlags gives every jmp command -v (info; -vv debug) and
// --log-level, which win over POGO_LOG. The level is exported in POGO_LOG
// too, so the j commands of a jmp shell log alike.
func addLogFlags(root *cobra.Command, level *slog.LevelVar) {
	var (
		verbose int
		name    string
	)
	f := root.PersistentFlags()
	f.CountVarP(&verbose, "verbose", "v", "log more: -v info (every step with its duration), -vv debug")
	f.StringVar(&name, "log-level", "", "log level: debug, info, warn or error (default warn, info for run, controller and bmc-sim; or $"+envLog+")")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		switch {
		case name != "":
			var l slog.Level
			if err := l.UnmarshalText([]byte(name)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", name)
			}
			level.Set(l)
		case verbose == 1:
			level.Set(min(level.Level(), slog.LevelInfo))
		case verbose > 1:
			level.Set(slog.LevelDebug)
		default:
			return nil
		}
		return os.Setenv(envLog, level.Level().String())
	}
}
