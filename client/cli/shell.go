// Package cli holds the client-side commands: `jmp shell` and the `j`
// commands that run inside it. Each capability contributes its verbs in
// one place, written against the capability's interface.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/lease"
)

// ExitError carries a command's exit status out of `jmp shell`.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// LocalExporter serves the exporter config at cfgPath in this process, on
// a unix socket in dir, for `jmp shell --exporter-config`; stop ends it
// (resetting the drivers). cmd/jmp gives exporter/daemon's.
type LocalExporter func(ctx context.Context, cfgPath, dir string) (target string, stop func() error, err error)

// Shell returns `jmp shell`; local serves --exporter-config.
func Shell(local LocalExporter) *cobra.Command {
	var (
		cfgPath, addr, passphrase, fingerprint, ca string
		insecure, keep                             bool
		toState                                    string
		selector, exporterName, leaseID, begin     string
		duration                                   time.Duration
		keepLease                                  bool
	)
	cmd := &cobra.Command{
		Use:   "shell [-- command…]",
		Short: "Hold an exporter and run a shell (or a command) with j wired to it",
		Long: `Open a session on an exporter and run $SHELL, or the given command, with
JMP_HOST set so that j drives the exporter's drivers. With --exporter-config
the exporter runs inside this process; with --exporter it is a jmp run in
direct mode; with -l (or --name, --lease) it leases one from the controller
(jmp login first), waits in the queue, and reaches it through the router,
releasing the lease at exit unless --keep. When the command exits, the board is put into its safe state
(power off) and the exit status is the command's.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if passphrase == "" {
				passphrase = os.Getenv("JMP_PASSPHRASE")
			}
			leased := selector != "" || exporterName != "" || leaseID != ""
			switch {
			case leased && (cfgPath != "" || addr != ""):
				return errors.New("give a lease (-l, --name, --lease) or an exporter (--exporter-config, --exporter), not both")
			case leased:
				req := lease.Request{Selector: selector, Exporter: exporterName, Duration: duration, Tags: map[string]string{"by": "jmp shell"}}
				if begin != "" {
					t, err := parseBegin(begin)
					if err != nil {
						return err
					}
					req.Begin = t
				}
				return shellLease(ctx, req, leaseID, keepLease, held{keep, toState}, args)
			case cfgPath != "" && addr != "":
				return errors.New("give either --exporter-config or --exporter, not both")
			case cfgPath != "":
				return shellLocal(ctx, local, cfgPath, held{keep, toState}, args)
			case addr != "":
				opts := client.Options{Passphrase: passphrase, Fingerprint: fingerprint, CAFile: ca, Insecure: insecure}
				return shellDirect(ctx, addr, opts, held{keep, toState}, args)
			}
			return errors.New("say which exporter: -l SELECTOR (leased from the controller), --exporter-config FILE (local) or --exporter HOST:PORT (direct)")
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "exporter-config", "c", "", "serve this exporter config in-process")
	f.StringVar(&addr, "exporter", "", "exporter address HOST:PORT (direct mode)")
	f.StringVar(&passphrase, "passphrase", "", "direct-mode passphrase (default $JMP_PASSPHRASE)")
	f.StringVar(&fingerprint, "fingerprint", "", "exporter TLS certificate fingerprint, as printed by jmp run")
	f.StringVar(&ca, "ca", "", "CA certificate that signed the exporter's certificate")
	f.BoolVar(&insecure, "insecure", false, "skip TLS verification (testing only)")
	f.BoolVar(&keep, "keep-power", false, "leave the board as it is at exit instead of powering it off")
	f.StringVarP(&toState, "state", "s", "", "take the board to this state (off, bootloader, flasher, os) before running the command")
	f.StringVarP(&selector, "selector", "l", "", "lease an exporter matching this label selector (a=b,c!=d,e in (x,y),!f)")
	f.StringVar(&exporterName, "name", "", "lease the exporter of this name")
	f.StringVar(&leaseID, "lease", "", "use this existing lease (not released at exit)")
	f.DurationVar(&duration, "duration", 30*time.Minute, "lease duration")
	f.StringVar(&begin, "begin", "", "start the lease no earlier than this (RFC 3339 time, or a duration from now)")
	f.BoolVar(&keepLease, "keep", false, "keep the lease at exit instead of releasing it")
	return cmd
}

// held says how runHeld holds the exporter.
type held struct {
	keepPower bool
	// state is where the board goes before the command runs ("": as is).
	state string
}

func shellLocal(ctx context.Context, local LocalExporter, cfgPath string, h held, args []string) error {
	dir, err := os.MkdirTemp("", "jmp-shell-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	target, stop, err := local(ctx, cfgPath, dir)
	if err != nil {
		return err
	}
	defer stop()
	return runHeld(ctx, target, client.Options{}, h, dir, args)
}

func shellDirect(ctx context.Context, addr string, opts client.Options, h held, args []string) error {
	dir, err := os.MkdirTemp("", "jmp-shell-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	return runHeld(ctx, addr, opts, h, dir, args)
}

// runHeld opens the session, runs the command with j on its PATH and env
// added to its environment, and ends the session when the command exits.
func runHeld(ctx context.Context, target string, opts client.Options, h held, dir string, args []string, env ...string) error {
	c, err := client.Dial(ctx, target, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	// Hooks of an exporter without a controller come on the session.
	sess, err := c.Open(ctx, client.SessionOptions{KeepPower: h.keepPower, OnHook: func(e *pb.HookEvent) { printHook(os.Stderr, e) }})
	if err != nil {
		return err
	}
	defer sess.Close()
	if h.state != "" {
		if err := reachState(ctx, c, h.state, os.Stderr); err != nil {
			return fmt.Errorf("--state %s: %w", h.state, err)
		}
	}

	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.Symlink(self, filepath.Join(bin, "j")); err != nil {
		return err
	}
	if len(args) == 0 {
		sh := os.Getenv("SHELL")
		if sh == "" {
			sh = "/bin/sh"
		}
		args = []string{sh}
	}
	path := os.Getenv("PATH")
	cmd := exec.Command(lookPath(args[0], bin+string(os.PathListSeparator)+path), args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(),
		rpcmeta.EnvHost+"="+target,
		rpcmeta.EnvSession+"="+sess.Token,
		"PATH="+bin+string(os.PathListSeparator)+path,
	)
	cmd.Env = append(cmd.Env, env...)
	if opts.Passphrase != "" {
		cmd.Env = append(cmd.Env, rpcmeta.EnvPassphrase+"="+opts.Passphrase)
	}
	if opts.Fingerprint != "" {
		cmd.Env = append(cmd.Env, rpcmeta.EnvFingerprint+"="+opts.Fingerprint)
	}
	if opts.CAFile != "" {
		ca, err := filepath.Abs(opts.CAFile)
		if err != nil {
			return err
		}
		cmd.Env = append(cmd.Env, rpcmeta.EnvCA+"="+ca)
	}
	if opts.Insecure {
		cmd.Env = append(cmd.Env, rpcmeta.EnvInsecure+"=1")
	}
	// The terminal's ^C belongs to the command; SIGTERM is passed on.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", args[0], err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			if s != os.Interrupt {
				_ = cmd.Process.Signal(s)
			}
		case <-sess.Done():
			fmt.Fprintln(os.Stderr, "jmp shell: the exporter ended the session")
			_ = cmd.Process.Signal(syscall.SIGHUP)
			<-waited
			return &ExitError{Code: 1}
		case err := <-waited:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return &ExitError{Code: 128 + int(ws.Signal())}
				}
				return &ExitError{Code: ee.ExitCode()}
			}
			return err
		}
	}
}

// lookPath finds name in path (the command's PATH, which puts j first)
// rather than in this process's PATH.
func lookPath(name, path string) string {
	if strings.ContainsRune(name, '/') {
		return name
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return name
}
