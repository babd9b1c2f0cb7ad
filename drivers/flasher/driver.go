package flasher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/bundles"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/files"
	"github.com/pogolab/pogo/drivers/http"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/state/uboot"
	"github.com/pogolab/pogo/drivers/tftp"
)

func init() {
	drivers.Register(drivers.Kind{
		Name: "flasher",
		// Jumpstarter's flasher classes all share one implementation and
		// differ only by their bundle, which the config names.
		Aliases: []string{
			"jumpstarter_driver_flashers.driver.BaseFlasher",
			"jumpstarter_driver_flashers.driver.TIJ784S4Flasher",
			"jumpstarter_driver_flashers.driver.RCarS4Flasher",
		},
		New: New,
	})
}

// defaultBundles are the bundles of Jumpstarter's board flashers, used
// when the config names none.
var defaultBundles = map[string]string{
	"jumpstarter_driver_flashers.driver.TIJ784S4Flasher": "quay.io/jumpstarter-dev/jumpstarter-flasher-ti-j784s4:latest",
	"jumpstarter_driver_flashers.driver.RCarS4Flasher":   "quay.io/jumpstarter-dev/jumpstarter-flasher-rcar-s4:latest",
}

// configOf decodes, completes and checks a node's config.
func configOf(b *drivers.Build) (Config, error) {
	var cfg Config
	if err := b.Config.Decode(&cfg); err != nil {
		return cfg, err
	}
	if !b.Config.Has("flasher_bundle") {
		def, ok := defaultBundles[b.Type]
		if !ok {
			return cfg, drivers.FieldErr("flasher_bundle", "required key is missing (only %s have a default)", strings.Join(slices.Sorted(maps.Keys(defaultBundles)), " and "))
		}
		cfg.Bundle = def
	}
	cfg.defaults()
	return cfg, cfg.check()
}

// Config is the flasher node's config.
type Config struct {
	// Bundle is the flasher bundle: a plain directory, "oci-layout:PATH"
	// or a registry reference. Required, except for Jumpstarter's board
	// flashers, which have their default (defaultBundles).
	Bundle string `yaml:"flasher_bundle"`
	// Variant is the device tree variant to boot the flasher with
	// (default: the bundle's dtb.default).
	Variant string `yaml:"variant"`
	// DefaultTarget is the target to flash when none is asked for
	// (default: the bundle's default_target).
	DefaultTarget string `yaml:"default_target"`
	// CacheDir holds pulled bundles and spooled uploads.
	CacheDir string `yaml:"cache_dir"`
	// TFTPDir and HTTPDir are the roots of the tftp and http servers the
	// driver creates when the node has no such children.
	TFTPDir string `yaml:"tftp_dir"`
	HTTPDir string `yaml:"http_dir"`
	// ServerAddress is the exporter host's address as the board sees it,
	// for servers the driver creates (default: what a virtual board says).
	ServerAddress string `yaml:"server_address"`
	// StreamListen is where the image stream server binds (default: the
	// http server's address with a free port).
	StreamListen string `yaml:"stream_listen"`
	// The board-handling keys below configure the state machine the
	// flasher builds when it has no state child (drivers/state/uboot,
	// which has their defaults): the bootloader prompt, power-on to the
	// prompt, dhcp, tftpboot, the flasher's boot to its shell.
	Prompt string `yaml:"bootloader_prompt"`

	UBootTimeout   time.Duration `yaml:"uboot_timeout"`
	DHCPTimeout    time.Duration `yaml:"dhcp_timeout"`
	TFTPTimeout    time.Duration `yaml:"tftp_timeout"`
	BootTimeout    time.Duration `yaml:"boot_timeout"`
	CommandTimeout time.Duration `yaml:"command_timeout"`
	FlashTimeout   time.Duration `yaml:"flash_timeout"`
	VerifyTimeout  time.Duration `yaml:"verify_timeout"`
	CycleDelay     time.Duration `yaml:"cycle_delay"`
	// Retries is how many times a failed flash is tried again.
	Retries      int           `yaml:"retries"`
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// DHCPRetries is how many times the state machine tries dhcp.
	DHCPRetries int `yaml:"dhcp_retries"`
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.CommandTimeout, time.Minute)
	def(&c.FlashTimeout, 4*time.Hour)
	def(&c.VerifyTimeout, time.Hour)
	def(&c.CycleDelay, 2*time.Second)
	def(&c.RetryBackoff, 5*time.Second)
	if c.CacheDir == "" {
		c.CacheDir = bundles.DefaultCacheDir()
	}
}

func (c *Config) check() error {
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"uboot_timeout", c.UBootTimeout}, {"dhcp_timeout", c.DHCPTimeout}, {"tftp_timeout", c.TFTPTimeout},
		{"boot_timeout", c.BootTimeout}, {"command_timeout", c.CommandTimeout}, {"flash_timeout", c.FlashTimeout},
		{"verify_timeout", c.VerifyTimeout}, {"cycle_delay", c.CycleDelay}, {"retry_backoff", c.RetryBackoff},
	} {
		if d.v < 0 {
			return drivers.FieldErr(d.key, "must not be negative, got %s", d.v)
		}
	}
	if c.Retries < 0 || c.Retries > 100 {
		return drivers.FieldErr("retries", "want 0 to 100, got %d", c.Retries)
	}
	if c.DHCPRetries < 0 || c.DHCPRetries > 100 {
		return drivers.FieldErr("dhcp_retries", "want 0 to 100, got %d", c.DHCPRetries)
	}
	if c.StreamListen != "" {
		if _, _, err := net.SplitHostPort(c.StreamListen); err != nil {
			return drivers.FieldErr("stream_listen", "want host:port, got %q", c.StreamListen)
		}
	}
	if c.ServerAddress != "" && (strings.ContainsAny(c.ServerAddress, "/ :") || net.ParseIP(c.ServerAddress) == nil && !validHost(c.ServerAddress)) {
		return drivers.FieldErr("server_address", "want a host name or IP address, got %q", c.ServerAddress)
	}
	if strings.TrimSpace(c.Bundle) == "" {
		return drivers.FieldErr("flasher_bundle", "must not be empty")
	}
	return nil
}

func validHost(h string) bool {
	for _, r := range h {
		if !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return h != ""
}

// networker is a board that knows its network (the virtual board): its
// address and the host's, and where it reaches the host's TFTP port.
type networker interface {
	Network() (board, host, tftp string)
}

// fileServer is what the flasher needs of its tftp and http children.
type fileServer interface {
	files.Store
	files.Locator
}

// Driver is a flasher.
type Driver struct {
	cfg  Config
	path string
	log  *slog.Logger
	// machine takes the board to its states; power is the machine's view
	// of the board's power, which keeps its state right.
	machine *uboot.Machine
	power   power.Switcher
	http    fileServer
	// streamHost is where the stream server binds; streamURLHost is the
	// host (no port) boards use to reach it.
	streamHost, streamURLHost string
	// owned are the servers and the state machine the driver created.
	owned []drivers.Driver

	// busy serializes operations; one board, one flash at a time.
	busy sync.Mutex
}

var _ Programmer = (*Driver)(nil)

// New builds a flasher from its node: a state child (a uboot node, by
// ref) drives the board, or the flasher builds a state machine of its own
// from its serial and power children and its config.
func New(ctx context.Context, b *drivers.Build) (drivers.Driver, error) {
	cfg, err := configOf(b)
	if err != nil {
		return nil, err
	}
	log := b.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{cfg: cfg, path: b.Path, log: log}
	if err := d.servers(ctx, b); err != nil {
		d.Close()
		return nil, err
	}
	bun, err := d.checkBundleRef(ctx, cfg.Bundle)
	if err != nil {
		d.Close()
		return nil, drivers.FieldErr("flasher_bundle", "%v", err)
	}
	if err := checkChoices(bun, cfg); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// checkChoices checks the node's variant and default_target against a
// bundle read at start-up (a registry bundle is checked when flashing).
func checkChoices(b *bundle, cfg Config) error {
	if b == nil {
		return nil
	}
	if cfg.Variant != "" {
		if _, err := b.boot(cfg.Variant); err != nil {
			return drivers.FieldErr("variant", "%v", err)
		}
	}
	if cfg.DefaultTarget != "" {
		if _, _, err := chooseTarget(b.spec, cfg.DefaultTarget); err != nil {
			return drivers.FieldErr("default_target", "%v", err)
		}
	}
	return nil
}

// machineConfig is the state machine a flasher without a state child
// builds: its timeouts and prompt are the flasher's keys.
func machineConfig(cfg Config, sw power.Switcher) uboot.Config {
	delay := cfg.CycleDelay
	if _, native := sw.(power.Cycler); native && delay == 2*time.Second {
		// The driver's own cycle knows its supply's off time.
		delay = 0
	}
	return uboot.Config{
		Prompt:            cfg.Prompt,
		BootloaderTimeout: cfg.UBootTimeout,
		CommandTimeout:    cfg.CommandTimeout,
		DHCPTimeout:       cfg.DHCPTimeout,
		DHCPRetries:       cfg.DHCPRetries,
		TFTPTimeout:       cfg.TFTPTimeout,
		FlasherTimeout:    cfg.BootTimeout,
		CycleDelay:        delay,
		CacheDir:          cfg.CacheDir,
		// j storage state flasher boots the flasher's own bundle.
		FlasherBundle: cfg.Bundle,
		Variant:       cfg.Variant,
	}
}

// servers takes the state machine, the tftp and http children or creates
// them.
func (d *Driver) servers(ctx context.Context, b *drivers.Build) error {
	var boardNet networker
	for _, name := range []string{"serial", "power", "state"} {
		if n, ok := b.Children[name].(networker); ok {
			boardNet = n
			break
		}
	}
	hostAddr, tftpAddr := d.cfg.ServerAddress, d.cfg.ServerAddress
	if boardNet != nil && hostAddr == "" {
		_, hostAddr, tftpAddr = boardNet.Network()
	}
	stateDir := func(kind, key string) (string, error) {
		if b.Host == nil || b.Host.StateDir == "" {
			return "", drivers.FieldErr(key, "required: the exporter has no state directory to default to")
		}
		return filepath.Join(b.Host.StateDir, kind, b.Path), nil
	}
	// created reports a server the driver made, or the field to blame.
	created := func(kind, key string, drv drivers.Driver, err error) (fileServer, error) {
		if err != nil {
			var fe *drivers.FieldError
			if errors.As(err, &fe) {
				return nil, drivers.FieldErr(key, "creating the %s server: %s", kind, fe.Msg)
			}
			return nil, fmt.Errorf("create the %s server: %w", kind, err)
		}
		d.owned = append(d.owned, drv)
		return drv.(fileServer), nil
	}
	needAddr := func(kind string) error {
		if hostAddr == "" {
			return drivers.FieldErr("server_address", "required to create the %s server (the node has no %s child and the board does not say its network)", kind, kind)
		}
		return nil
	}

	if _, ok := b.Children["state"]; ok {
		m, err := drivers.ChildAs[*uboot.Machine](b, "state", "U-Boot board states (kind uboot)")
		if err != nil {
			return err
		}
		d.machine = m
	} else {
		con, err := drivers.ChildAs[console.Attacher](b, "serial", "console")
		if err != nil {
			return err
		}
		sw, err := drivers.ChildAs[power.Switcher](b, "power", "power")
		if err != nil {
			return err
		}
		var tftpSrv fileServer
		if _, ok := b.Children["tftp"]; ok {
			if tftpSrv, err = drivers.ChildAs[fileServer](b, "tftp", "files"); err != nil {
				return err
			}
		} else {
			if err := needAddr("tftp"); err != nil {
				return err
			}
			root := d.cfg.TFTPDir
			if root == "" {
				if root, err = stateDir("tftp", "tftp_dir"); err != nil {
					return err
				}
			}
			tcfg := tftp.Config{Root: root, Advertise: tftpAddr}
			if boardNet != nil {
				// A virtual board's NIC keeps up with bursts: its server
				// sends ahead.
				tcfg.Window = 8
			}
			srv, err := tftp.StartFor(tcfg, b.Host, d.log.With("part", "tftp"))
			if tftpSrv, err = created("tftp", "tftp_dir", srv, err); err != nil {
				return err
			}
		}
		m, err := uboot.Open(machineConfig(d.cfg, sw), uboot.Parts{Power: sw, Console: con, TFTP: tftpSrv, PowerPath: b.ChildPaths["power"]}, d.log.With("part", "state"))
		if err != nil {
			return err
		}
		d.machine = m
		d.owned = append(d.owned, m)
	}
	d.power = d.machine.Power()

	if _, ok := b.Children["http"]; ok {
		h, err := drivers.ChildAs[fileServer](b, "http", "files")
		if err != nil {
			return err
		}
		d.http = h
	} else {
		if err := needAddr("http"); err != nil {
			return err
		}
		root := d.cfg.HTTPDir
		if root == "" {
			var err error
			if root, err = stateDir("http", "http_dir"); err != nil {
				return err
			}
		}
		// A virtual board reaches the host's loopback; a real one needs
		// every interface.
		listen := "0.0.0.0:0"
		if boardNet != nil {
			listen = "127.0.0.1:0"
		}
		srv, err := http.Start(http.Config{Root: root, Listen: listen, Advertise: "http://" + hostAddr}, d.log.With("part", "http"))
		if d.http, err = created("http", "http_dir", srv, err); err != nil {
			return err
		}
	}
	// The stream server sits next to the http server, where the board
	// already reaches the exporter.
	base, err := d.http.URL(ctx)
	if err != nil {
		return fmt.Errorf("http server URL: %w", err)
	}
	u, err := url.Parse(base)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("http server URL %q is not a URL with a host", base)
	}
	d.streamURLHost = u.Hostname()
	d.streamHost = "0.0.0.0:0"
	if a, ok := d.http.(interface{ Addr() *net.TCPAddr }); ok && a.Addr() != nil {
		d.streamHost = net.JoinHostPort(a.Addr().IP.String(), "0")
	}
	if d.cfg.StreamListen != "" {
		d.streamHost = d.cfg.StreamListen
	}
	return nil
}

// Parts serves the state machine the flasher built as <path>.state.
func (d *Driver) Parts() []drivers.Part {
	for _, o := range d.owned {
		if o == drivers.Driver(d.machine) {
			return []drivers.Part{{Name: "state", Kind: "uboot", Driver: d.machine}}
		}
	}
	return nil
}

// Description implements drivers.Describer.
func (d *Driver) Description() string { return "flasher with bundle " + d.cfg.Bundle }

// Reset powers the board off and clears its state machine's broken latch
// (the exporter calls it at session end).
func (d *Driver) Reset(ctx context.Context) error { return d.machine.Reset(ctx) }

// Close closes the servers the driver created.
func (d *Driver) Close() error {
	var errs []error
	for i := len(d.owned) - 1; i >= 0; i-- {
		errs = append(errs, d.owned[i].Close())
	}
	d.owned = nil
	return errors.Join(errs...)
}

// lock takes the driver for one operation.
func (d *Driver) lock() (func(), error) {
	if !d.busy.TryLock() {
		return nil, fmt.Errorf("flasher %s: another flash or shell is running: %w", d.path, errdefs.ErrInUse)
	}
	return d.busy.Unlock, nil
}

func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	return nil
}
