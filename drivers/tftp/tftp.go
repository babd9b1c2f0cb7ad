// Package tftp is the tftp driver: a read-only TFTP server (RFC 1350 with
// the blksize and tsize options) for boards that fetch kernels and
// initramfs images from U-Boot, over a directory clients fill through the
// files capability.
//
// One server per host. Boards reach a lab host's TFTP server on port 69
// only (the virtual board reaches this server as 127.0.0.1:69 through its
// gateway: QEMU answers 10.0.2.2:69 with its own built-in TFTP server), so
// every board of the host shares one server, each under its own subdir: a
// board fetches <subdir>/<file>. Every pogo process on the host, and every
// exporter within one, coordinates through a registry directory per port,
// <host_dir>/port-<N>/:
//
//   - lock: whoever holds its flock(2) serves the port; it writes its pid
//     and bound address into it. The kernel drops the lock when the holder
//     exits or crashes.
//   - boards/<subdir>: a symlink to that board's directory, with
//     boards/<subdir>.lock flocked by the process that registered it (a
//     second exporter asking for the same subdir is refused) and
//     boards/<subdir>.stats, the board's transfer counters kept by the
//     holder.
//
// The first process binds the port; the others find the lock held, check
// that the holder's address covers theirs, register their subdir and poll
// the lock every 250 ms, taking the port over when the holder goes away. If
// the lock is free but the port is bound by something else (tftpd-hpa,
// say), starting fails with "tftp: port 69 is in use by another process".
// A listen port of 0 gets a private server on a free port (tests).
// Reserve keeps pogo off a port while a foreign server (tftpd-hpa as a
// benchmark baseline) binds it.
//
// The holder resolves each request by reading the subdir's symlink and
// opening the rest of the name with os.Root in that directory: .., absolute
// paths and symlinks escaping the board's directory are refused as an
// access violation and logged as a warning. A name outside any registered
// subdir (no subdir, or one no board here registered) is only "file not
// found", logged at info: that is a board with the wrong subdir, not an
// attack.
//
// Block sizes are whatever the client asks for up to 65464, not clamped to
// the interface MTU (see endpoint.tryServe). Each transfer is logged with
// its bytes, duration and MB/s; counters per board are in Driver.Stats and,
// for Prometheus, the driver is a prometheus.Collector that registers
// nowhere by itself.
package tftp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/files"
)

func init() {
	drivers.Register(drivers.Kind{
		Name:    "tftp",
		Aliases: []string{"jumpstarter_driver_tftp.driver.Tftp"},
		New:     New,
	})
}

// DefaultListen is where boards look for a TFTP server.
const DefaultListen = ":69"

// MaxWindow is the largest send window pin/tftp keeps.
const MaxWindow = 60

// Config is the tftp node's config; it is also what Start takes.
type Config struct {
	// Root is the board's directory (created when absent; default
	// <exporter state dir>/tftp/<node path>).
	Root string `yaml:"root"`
	// Listen is the address to bind (default :69, every IPv4 address).
	Listen string `yaml:"listen"`
	// Subdir is the first component of the names this board fetches
	// (default a name derived from Root).
	Subdir string `yaml:"subdir"`
	// HostDir is where the processes sharing a port coordinate (default
	// DefaultHostDir()).
	HostDir string `yaml:"host_dir"`
	// Advertise is the server address as the board sees it, for URL
	// (default the bound address; 127.0.0.1 for the virtual board).
	Advertise string `yaml:"advertise"`
	// Window is how many blocks the server sends before it waits for their
	// acknowledgements (pin/tftp's anticipation): 1, the default, is
	// RFC 1350 lock-step. A larger window needs a board whose network
	// driver keeps up with bursts (the virtual board does; many U-Boot NIC
	// drivers have few receive buffers). It applies to this board's
	// transfers whichever process serves the port, capped so one burst
	// stays within 64 KiB (a window of 65464-byte blocks is lock-step).
	Window int `yaml:"window"`
}

// DefaultHostDir is /run/pogo/tftp for root, else under
// $XDG_RUNTIME_DIR or the temporary directory, per user.
func DefaultHostDir() string {
	if os.Geteuid() == 0 {
		return "/run/pogo/tftp"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "pogo", "tftp")
	}
	return filepath.Join(os.TempDir(), "pogo-"+strconv.Itoa(os.Getuid()), "tftp")
}

// Driver is one board's share of the host's TFTP server.
type Driver struct {
	*files.Dir
	ep     *endpoint
	ownsEP bool
	reg    *registration
	url    string
}

// New builds the driver from its node.
func New(_ context.Context, b *drivers.Build) (drivers.Driver, error) {
	var cfg Config
	if err := b.Config.Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Root == "" {
		if b.Host == nil || b.Host.StateDir == "" {
			return nil, drivers.FieldErr("root", "required: the exporter has no state directory to default to")
		}
		cfg.Root = filepath.Join(b.Host.StateDir, "tftp", b.Path)
	}
	return start(cfg, b.Host, b.Log)
}

// Start serves cfg.Root outside an exporter (benchmarks, tools): on port
// 69 by default, sharing it with pogo exporters on the host. Close the
// driver to stop.
func Start(cfg Config, log *slog.Logger) (*Driver, error) {
	if cfg.Root == "" {
		return nil, drivers.FieldErr("root", "required")
	}
	return start(cfg, nil, log)
}

// StartFor serves cfg.Root for a driver of an exporter (the flasher's own
// server when its node has no tftp child), sharing the host's port through
// host's registry.
func StartFor(cfg Config, host *drivers.Host, log *slog.Logger) (*Driver, error) {
	if cfg.Root == "" {
		return nil, drivers.FieldErr("root", "required")
	}
	return start(cfg, host, log)
}

func start(cfg Config, host *drivers.Host, log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if _, _, err := parseListen(cfg.Listen); err != nil {
		return nil, drivers.FieldErr("listen", "%v", err)
	}
	if cfg.HostDir == "" {
		cfg.HostDir = DefaultHostDir()
	}
	abs, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, drivers.FieldErr("root", "%v", err)
	}
	if cfg.Subdir == "" {
		sum := sha256.Sum256([]byte(abs))
		cfg.Subdir = "b-" + hex.EncodeToString(sum[:6])
	}
	if !boardName.MatchString(cfg.Subdir) {
		return nil, drivers.FieldErr("subdir", "want one name of letters, digits, '.', '_' or '-' (not starting with '.' or '-', at most 64), got %q", cfg.Subdir)
	}
	if cfg.Advertise != "" {
		if u, err := url.Parse("tftp://" + cfg.Advertise); err != nil || u.Host != cfg.Advertise || u.Hostname() == "" {
			return nil, drivers.FieldErr("advertise", "want a host or host:port like 10.0.2.2, got %q", cfg.Advertise)
		}
	}

	if cfg.Window == 0 {
		cfg.Window = 1
	}
	if cfg.Window < 1 || cfg.Window > MaxWindow {
		return nil, drivers.FieldErr("window", "want 1 (lock-step) to %d blocks, got %d", MaxWindow, cfg.Window)
	}
	dir, err := files.OpenDir(abs)
	if err != nil {
		return nil, drivers.FieldErr("root", "%v", err)
	}
	d := &Driver{Dir: dir}
	open := func() (any, error) { return openEndpoint(cfg.Listen, cfg.HostDir, log) }
	if host != nil {
		v, err := host.Shared("tftp:"+cfg.HostDir+":"+cfg.Listen, open)
		if err != nil {
			dir.Close()
			return nil, err
		}
		d.ep = v.(*endpoint)
	} else {
		v, err := open()
		if err != nil {
			dir.Close()
			return nil, err
		}
		d.ep, d.ownsEP = v.(*endpoint), true
	}
	if d.reg, err = d.ep.register(cfg.Subdir, abs, cfg.Window); err != nil {
		d.closeEP()
		dir.Close()
		return nil, err
	}
	server := cfg.Advertise
	if server == "" {
		a := d.ep.boundAddr()
		server = a.IP.String()
		if a.Port != 69 {
			server = a.String()
		}
	}
	d.url = "tftp://" + server + "/" + cfg.Subdir + "/"
	log.Info("tftp: board subdir registered", "subdir", cfg.Subdir, "dir", abs, "url", d.url)
	return d, nil
}

func (d *Driver) closeEP() {
	if d.ownsEP {
		d.ep.Close()
	}
}

// Close leaves the host's server (and stops it when the driver started
// it outside an exporter; an exporter's Host closes it).
func (d *Driver) Close() error {
	d.ep.unregister(d.reg)
	d.closeEP()
	return d.Dir.Close()
}

// Subdir is the first component of the names this board fetches.
func (d *Driver) Subdir() string { return d.reg.name }

// Addr is the address TFTP clients on this host send requests to.
func (d *Driver) Addr() *net.UDPAddr { return d.ep.boundAddr() }

// Serving tells whether this process serves the port (or another pogo
// process does, for it).
func (d *Driver) Serving() bool { return d.ep.holding() }

// URL implements files.Locator: tftp://<server>/<subdir>/; U-Boot fetches
// a file with `tftpboot ADDR <subdir>/<file>`.
func (d *Driver) URL(context.Context) (string, error) { return d.url, nil }

// Description implements drivers.Describer.
func (d *Driver) Description() string {
	return fmt.Sprintf("tftp %s serving %s", d.url, d.Path())
}

// Stats returns the board's counters since it was registered, whichever
// process served the transfers.
func (d *Driver) Stats() (Stats, error) { return readStats(d.reg.link + ".stats") }

var (
	descTransfers = prometheus.NewDesc("pogo_tftp_transfers_total", "TFTP read requests by result.", []string{"subdir", "result"}, nil)
	descBytes     = prometheus.NewDesc("pogo_tftp_sent_bytes_total", "Bytes sent by TFTP transfers.", []string{"subdir"}, nil)
	descSeconds   = prometheus.NewDesc("pogo_tftp_transfer_seconds_total", "Time spent in TFTP transfers.", []string{"subdir"}, nil)
)

// Describe implements prometheus.Collector.
func (d *Driver) Describe(ch chan<- *prometheus.Desc) {
	ch <- descTransfers
	ch <- descBytes
	ch <- descSeconds
}

// Collect implements prometheus.Collector.
func (d *Driver) Collect(ch chan<- prometheus.Metric) {
	s, err := d.Stats()
	if err != nil {
		return
	}
	n := d.reg.name
	for result, v := range map[string]int64{"ok": s.Transfers, "failed": s.Failed, "not_found": s.NotFound, "refused": s.Refused} {
		ch <- prometheus.MustNewConstMetric(descTransfers, prometheus.CounterValue, float64(v), n, result)
	}
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.Bytes), n)
	ch <- prometheus.MustNewConstMetric(descSeconds, prometheus.CounterValue, s.Seconds, n)
}

var (
	_ files.Store          = (*Driver)(nil)
	_ files.Locator        = (*Driver)(nil)
	_ prometheus.Collector = (*Driver)(nil)
)
