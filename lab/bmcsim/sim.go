// Package bmcsim is a BMC simulator for firmware update tests: it loads
// phosphor-ipmi-flash configurations, runs the flash blob state machine
// behind the OpenBMC blob protocol, and serves it over IPMI v2.0 RMCP+ so
// real ipmitool and real update clients can drive it.
package bmcsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/lab/bmcsim/blobs"
	"github.com/pogolab/pogo/lab/bmcsim/flash"
	"github.com/pogolab/pogo/lab/bmcsim/flashconfig"
	"github.com/pogolab/pogo/lab/bmcsim/rmcp"
)

// Config configures a Simulator.
type Config struct {
	User, Password string
	ConfigDirs     []string
	// StandIns maps systemd units to shell commands run instead of the
	// unit where systemd is not running.
	StandIns map[string]string
	// RebootTime is how long the BMC stays off the network after a reboot
	// action (default 3 s).
	RebootTime time.Duration
	// StateDir re-roots every file the flash handler writes; empty means
	// the paths of the configuration are used as they are.
	StateDir string
	// HashPath overrides where /flash/hash is stored.
	HashPath string
	// SessionExpiry expires idle blob sessions (default 10 min).
	SessionExpiry time.Duration
	// MaxRequest caps IPMI request data (default 1024).
	MaxRequest int
	Log        *slog.Logger
}

// Simulator is a running BMC simulator.
type Simulator struct {
	cfg    Config
	log    *slog.Logger
	flash  *flash.Handler
	mgr    *blobs.Manager
	srv    *rmcp.Server
	Config flashconfig.Result

	mu       sync.Mutex
	reboots  int
	down     bool
	rebootCh chan struct{}
}

// New loads the configuration and builds a simulator; invalid entries are
// logged and skipped.
func New(cfg Config) (*Simulator, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.RebootTime <= 0 {
		cfg.RebootTime = 3 * time.Second
	}
	if cfg.User == "" {
		return nil, errors.New("bmc simulator: user is required")
	}
	res, err := flashconfig.LoadDirs(cfg.ConfigDirs...)
	if err != nil {
		return nil, fmt.Errorf("bmc simulator: %w", err)
	}
	for _, p := range res.Problems {
		cfg.Log.Error("flash config entry skipped", "file", p.File, "index", p.Index, "reason", p.Reason)
	}
	for _, w := range res.Warnings {
		cfg.Log.Warn("flash config", "file", w.File, "index", w.Index, "warning", w.Reason)
	}
	s := &Simulator{cfg: cfg, log: cfg.Log, Config: res, rebootCh: make(chan struct{}, 1)}
	runner := &flash.Runner{StandIns: cfg.StandIns, Systemd: flash.SystemdRunning(), Log: cfg.Log}
	if !runner.Systemd {
		cfg.Log.Info("systemd is not running: systemd actions use stand-in commands", "stand_ins", len(cfg.StandIns))
	}
	s.flash = flash.New(flash.Options{
		Entries:  res.Entries,
		HashPath: cfg.HashPath,
		Root:     cfg.StateDir,
		Runner:   runner,
		Reboot:   s.requestReboot,
		Log:      cfg.Log,
	})
	cleanup := &flash.Cleanup{Files: s.flash.StagedFiles, Log: cfg.Log}
	s.mgr = blobs.NewManager(cfg.Log, cfg.SessionExpiry, s.flash, cleanup)
	s.srv = rmcp.New(rmcp.Config{
		User:       cfg.User,
		Password:   cfg.Password,
		Handler:    s.command,
		MaxRequest: cfg.MaxRequest,
		Log:        cfg.Log,
	})
	return s, nil
}

func (s *Simulator) command(_ context.Context, netFn, cmd byte, data []byte) (byte, []byte) {
	if netFn == blob.NetFn && cmd == blob.Command {
		resp, cc := s.mgr.Process(data)
		return cc, resp
	}
	return blob.CCInvalidCommand, nil
}

// requestReboot is the reboot action; it only signals because it runs under
// the handler's locks.
func (s *Simulator) requestReboot() {
	select {
	case s.rebootCh <- struct{}{}:
	default:
	}
}

// Flash exposes the firmware handler for inspection.
func (s *Simulator) Flash() *flash.Handler { return s.flash }

// Blobs exposes the blob manager for inspection.
func (s *Simulator) Blobs() *blobs.Manager { return s.mgr }

// Reboots reports how many reboots completed.
func (s *Simulator) Reboots() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reboots
}

// Down reports whether the simulated BMC is rebooting.
func (s *Simulator) Down() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

// Serve serves on conn until ctx is done, then aborts running actions.
func (s *Simulator) Serve(ctx context.Context, conn net.PacketConn) error {
	s.log.Info("bmc simulator serving", "addr", conn.LocalAddr().String(), "blobs", s.mgr.IDs())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.housekeeping(ctx)
	}()
	err := s.srv.Serve(ctx, conn)
	wg.Wait()
	// Stand-in processes must not outlive the simulator.
	s.flash.Reset()
	return err
}

// ListenAndServe binds addr (UDP) and serves until ctx is done.
func (s *Simulator) ListenAndServe(ctx context.Context, addr string) error {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("bmc simulator listen %s: %w", addr, err)
	}
	return s.Serve(ctx, conn)
}

func (s *Simulator) housekeeping(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.mgr.ExpireStale()
		case <-s.rebootCh:
			s.reboot(ctx)
		}
	}
}

// reboot takes the BMC off the network and brings it back with every
// session and the flash state gone, as a real BMC reboot would.
func (s *Simulator) reboot(ctx context.Context) {
	// Give the reply to the commit a moment to leave, as a BMC does while
	// systemd starts shutting down.
	select {
	case <-ctx.Done():
		return
	case <-time.After(50 * time.Millisecond):
	}
	s.log.Info("bmc rebooting", "off_network_for", s.cfg.RebootTime)
	s.mu.Lock()
	s.down = true
	s.mu.Unlock()
	s.srv.SetOffline(true)
	s.flash.Reset()
	s.mgr.Reset()
	select {
	case <-ctx.Done():
	case <-time.After(s.cfg.RebootTime):
	}
	s.srv.SetOffline(false)
	s.mu.Lock()
	s.down = false
	s.reboots++
	s.mu.Unlock()
	s.log.Info("bmc back after reboot")
}
