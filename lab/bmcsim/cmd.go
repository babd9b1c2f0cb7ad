package bmcsim

import (
	"context"
	"fmt"
	"log/slog"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// Command returns the bmc-sim command.
func Command() *cobra.Command {
	var (
		listen, user, password, stateDir, hashPath string
		configDirs, standIns                       []string
		rebootTime, expiry                         time.Duration
		maxRequest                                 int
	)
	cmd := &cobra.Command{
		Use:   "bmc-sim",
		Short: "Simulate an OpenBMC that accepts firmware updates over IPMI lanplus",
		Long: `bmc-sim serves IPMI v2.0 RMCP+ (lanplus, cipher suites 3 and 17) on UDP and
implements the OpenBMC blob protocol with the phosphor-ipmi-flash firmware
handler configured by the *.json files of --config-dir. Where systemd is not
running, systemd units are played by --stand-in unit=command (the exit code is
the job result); commands see BMCSIM_IMAGE, BMCSIM_HASH, BMCSIM_BLOB,
BMCSIM_UNIT and, for fileSystemd* actions, BMCSIM_STATUS_FILE.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			si := map[string]string{}
			for _, kv := range standIns {
				unit, command, ok := strings.Cut(kv, "=")
				if !ok || unit == "" {
					return fmt.Errorf("--stand-in %q: want unit=command", kv)
				}
				si[unit] = command
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			sim, err := New(Config{
				User:          user,
				Password:      password,
				ConfigDirs:    configDirs,
				StandIns:      si,
				RebootTime:    rebootTime,
				StateDir:      stateDir,
				HashPath:      hashPath,
				SessionExpiry: expiry,
				MaxRequest:    maxRequest,
				Log:           slog.Default(),
			})
			if err != nil {
				return err
			}
			return sim.ListenAndServe(ctx, listen)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:623", "UDP address to serve RMCP+ on")
	f.StringVar(&user, "user", "", "IPMI user name")
	f.StringVar(&password, "password", "", "IPMI password")
	f.StringArrayVar(&configDirs, "config-dir", nil, "directory of phosphor-ipmi-flash *.json configs (repeatable)")
	f.StringArrayVar(&standIns, "stand-in", nil, "unit=shell command played instead of a systemd unit (repeatable)")
	f.DurationVar(&rebootTime, "reboot-time", 3*time.Second, "how long a reboot keeps the BMC off the network")
	f.StringVar(&stateDir, "state-dir", "", "re-root every file the flash handler writes under this directory")
	f.StringVar(&hashPath, "hash-path", "", "where /flash/hash is stored (default /tmp/bmc.sig)")
	f.DurationVar(&expiry, "session-expiry", 10*time.Minute, "expire blob sessions idle this long")
	f.IntVar(&maxRequest, "max-request", 1024, "largest IPMI request data accepted")
	_ = cmd.MarkFlagRequired("user")
	_ = cmd.MarkFlagRequired("config-dir")
	return cmd
}

// Main runs Command with ctx; handy for a standalone binary.
func Main(ctx context.Context, args []string) error {
	c := Command()
	c.SetArgs(args)
	return c.ExecuteContext(ctx)
}
