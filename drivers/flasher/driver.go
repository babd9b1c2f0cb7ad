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
	"github.com/pogolab/pogo/drivers/power"
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
	// Prompt is the bootloader prompt.
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
	// DHCPRetries is how many times dhcp is tried in U-Boot.
	DHCPRetries int `yaml:"dhcp_retries"`
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.UBootTimeout, 60*time.Second)
	def(&c.DHCPTimeout, 30*time.Second)
	def(&c.TFTPTimeout, 5*time.Minute)
	def(&c.BootTimeout, 3*time.Minute)
	def(&c.CommandTimeout, time.Minute)
	def(&c.FlashTimeout, 4*time.Hour)
	def(&c.VerifyTimeout, time.Hour)
	def(&c.CycleDelay, 2*time.Second)
	def(&c.RetryBackoff, 5*time.Second)
	if c.Prompt == "" {
		c.Prompt = "=> "
	}
	if c.DHCPRetries == 0 {
		c.DHCPRetries = 3
	}
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
	cfg     Config
	path    string
	log     *slog.Logger
	console console.Attacher
	power   power.Switcher
	tftp    fileServer
	http    fileServer
	// streamHost is where the stream server binds; streamURLHost is the
	// host (no port) boards use to reach it.
	streamHost, streamURLHost string
	owned                     []drivers.Driver

	// busy serializes operations; one board, one flash at a time.
	busy sync.Mutex
	// staged remembers what is on the TFTP server, to skip re-uploads.
	stagedMu sync.Mutex
	staged   map[string]string
}

var _ Programmer = (*Driver)(nil)

// New builds a flasher from its node.
func New(ctx context.Context, b *drivers.Build) (drivers.Driver, error) {
	cfg, err := configOf(b)
	if err != nil {
		return nil, err
	}
	con, err := drivers.ChildAs[console.Attacher](b, "serial", "console")
	if err != nil {
		return nil, err
	}
	sw, err := drivers.ChildAs[power.Switcher](b, "power", "power")
	if err != nil {
		return nil, err
	}
	log := b.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{cfg: cfg, path: b.Path, log: log, console: con, power: sw, staged: map[string]string{}}
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

// servers takes the tftp and http children or creates them.
func (d *Driver) servers(ctx context.Context, b *drivers.Build) error {
	var boardNet networker
	for _, name := range []string{"serial", "power"} {
		if n, ok := b.Children[name].(networker); ok {
			boardNet = n
			break
		}
	}
	hostAddr, tftpAddr := d.cfg.ServerAddress, d.cfg.ServerAddress
	if boardNet != nil && hostAddr == "" {
		_, hostAddr, tftpAddr = boardNet.Network()
	}
	// A virtual board reaches the host's loopback; a real one needs every
	// interface.
	httpListen := "0.0.0.0:0"
	if boardNet != nil {
		httpListen = "127.0.0.1:0"
	}
	need := func(kind, dir, key string, cfgText string) (fileServer, error) {
		if _, ok := b.Children[kind]; ok {
			return drivers.ChildAs[fileServer](b, kind, "files")
		}
		if hostAddr == "" {
			return nil, drivers.FieldErr("server_address", "required to create the %s server (the node has no %s child and the board does not say its network)", kind, kind)
		}
		k, ok := drivers.Lookup(kind)
		if !ok {
			return nil, &drivers.ChildError{Name: kind, Msg: fmt.Sprintf("missing, and the %s kind is not built in to create it", kind)}
		}
		if dir == "" && (b.Host == nil || b.Host.StateDir == "") {
			return nil, drivers.FieldErr(key, "required: the exporter has no state directory to default to")
		}
		if dir == "" {
			dir = filepath.Join(b.Host.StateDir, kind, b.Path)
		}
		cfg, err := drivers.ConfigFromYAML(fmt.Sprintf(cfgText, yamlQuote(dir)))
		if err != nil {
			return nil, err
		}
		drv, err := drivers.New(ctx, k, &drivers.Build{Path: b.Path + "." + kind, Config: cfg, Log: d.log.With("part", kind), Host: b.Host})
		if err != nil {
			var fe *drivers.FieldError
			if errors.As(err, &fe) {
				return nil, drivers.FieldErr(key, "creating the %s server: %s", kind, fe.Msg)
			}
			return nil, fmt.Errorf("create the %s server: %w", kind, err)
		}
		d.owned = append(d.owned, drv)
		fs, ok := drv.(fileServer)
		if !ok {
			return nil, fmt.Errorf("the %s kind does not serve files", kind)
		}
		return fs, nil
	}
	var err error
	// A virtual board's NIC keeps up with bursts: its server sends ahead.
	tftpCfg := "root: %s\nadvertise: " + yamlQuote(tftpAddr) + "\n"
	if boardNet != nil {
		tftpCfg += "window: 8\n"
	}
	if d.tftp, err = need("tftp", d.cfg.TFTPDir, "tftp_dir", tftpCfg); err != nil {
		return err
	}
	if d.http, err = need("http", d.cfg.HTTPDir, "http_dir", "root: %s\nlisten: "+httpListen+"\nadvertise: "+yamlQuote("http://"+hostAddr)+"\n"); err != nil {
		return err
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

func yamlQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Description implements drivers.Describer.
func (d *Driver) Description() string { return "flasher with bundle " + d.cfg.Bundle }

// Reset powers the board off (the exporter calls it at session end).
func (d *Driver) Reset(ctx context.Context) error { return d.power.Off(ctx) }

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
