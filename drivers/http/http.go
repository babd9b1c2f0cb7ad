// Package http is the http driver: an HTTP server for boards (kernels,
// images to flash) over a directory clients fill through the files
// capability. GET and HEAD only, with Range, Content-Length, Last-Modified
// and ETag; bodies go out with sendfile, so large images stream at wire
// speed. Names are resolved with os.Root: .., absolute paths and symlinks
// leaving the directory are refused (403) and logged.
//
// Config:
//
//	root:      directory served (created when absent; default
//	           <exporter state dir>/http/<node path>)
//	listen:    address to bind (default 127.0.0.1:0, a free port)
//	advertise: the URL boards use, e.g. http://10.0.2.2 for the virtual
//	           board; without a port the bound port is added (default
//	           http://<bound address>)
package http

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/files"
)

func init() {
	drivers.Register(drivers.Kind{
		Name:    "http",
		Aliases: []string{"jumpstarter_driver_http.driver.HttpServer"},
		New:     New,
	})
}

// Config is the http node's config.
type Config struct {
	Root      string `yaml:"root"`
	Listen    string `yaml:"listen"`
	Advertise string `yaml:"advertise"`
}

// Driver is a running HTTP file server.
type Driver struct {
	*files.Dir
	log  *slog.Logger
	srv  *nethttp.Server
	addr *net.TCPAddr
	url  string

	requests, refused, bytes atomic.Int64
}

// New builds the driver from its node and starts serving.
func New(_ context.Context, b *drivers.Build) (drivers.Driver, error) {
	var cfg Config
	if err := b.Config.Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Root == "" {
		if b.Host == nil || b.Host.StateDir == "" {
			return nil, drivers.FieldErr("root", "required: the exporter has no state directory to default to")
		}
		cfg.Root = filepath.Join(b.Host.StateDir, "http", b.Path)
	}
	return Start(cfg, b.Log)
}

// Start serves cfg.Root (required) until the driver is closed: what New
// does for a node, for a driver that needs a server of its own (the
// flasher).
func Start(cfg Config, log *slog.Logger) (*Driver, error) {
	if cfg.Root == "" {
		return nil, drivers.FieldErr("root", "required")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return nil, drivers.FieldErr("listen", "want host:port, got %q", cfg.Listen)
	}
	var adv *url.URL
	if cfg.Advertise != "" {
		u, err := url.Parse(cfg.Advertise)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, drivers.FieldErr("advertise", "want a URL like http://10.0.2.2:8080, got %q", cfg.Advertise)
		}
		adv = u
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, listenErr(cfg.Listen, err)
	}
	dir, err := files.OpenDir(cfg.Root)
	if err != nil {
		l.Close()
		return nil, drivers.FieldErr("root", "%v", err)
	}
	d := &Driver{Dir: dir, log: log, addr: l.Addr().(*net.TCPAddr)}
	d.url = advertised(adv, d.addr)
	d.srv = &nethttp.Server{
		Handler:           d,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := d.srv.Serve(l); err != nil && !errors.Is(err, nethttp.ErrServerClosed) {
			log.Error("http: serve", "err", err)
		}
	}()
	log.Info("http: serving", "dir", dir.Path(), "addr", d.addr.String(), "url", d.url)
	return d, nil
}

// listenErr names the port when it is taken, the commonest mistake.
func listenErr(listen string, err error) error {
	_, port, _ := net.SplitHostPort(listen)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return drivers.FieldErr("listen", "http: port %s is in use by another process", port)
	case errors.Is(err, syscall.EACCES):
		return drivers.FieldErr("listen", "http: binding port %s needs root or CAP_NET_BIND_SERVICE", port)
	}
	return drivers.FieldErr("listen", "http: %v", err)
}

// advertised is the URL boards use: adv with the bound port filled in
// when it names none, or the bound address itself.
func advertised(adv *url.URL, addr *net.TCPAddr) string {
	port := strconv.Itoa(addr.Port)
	if adv == nil {
		host := addr.IP.String()
		if addr.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
		return "http://" + net.JoinHostPort(host, port) + "/"
	}
	u := *adv
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	return u.String()
}

// Addr is the bound address.
func (d *Driver) Addr() *net.TCPAddr { return d.addr }

// URL implements files.Locator.
func (d *Driver) URL(context.Context) (string, error) { return d.url, nil }

// Description implements drivers.Describer.
func (d *Driver) Description() string {
	return fmt.Sprintf("http %s serving %s", d.url, d.Path())
}

// Close stops the server, giving requests in flight a moment to end.
func (d *Driver) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.srv.Shutdown(ctx); err != nil {
		d.srv.Close()
	}
	return d.Dir.Close()
}

func (d *Driver) ServeHTTP(w nethttp.ResponseWriter, r *nethttp.Request) {
	if r.Method != nethttp.MethodGet && r.Method != nethttp.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		nethttp.Error(w, "only GET and HEAD are served", nethttp.StatusMethodNotAllowed)
		return
	}
	d.requests.Add(1)
	name := strings.TrimPrefix(r.URL.Path, "/")
	f, fi, err := d.Open(name)
	if err != nil {
		switch {
		case errors.Is(err, files.ErrRefused):
			d.refused.Add(1)
			d.log.Warn("http: refused", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
			nethttp.Error(w, "forbidden", nethttp.StatusForbidden)
		case errors.Is(err, errdefs.ErrNotFound), errors.Is(err, errdefs.ErrInvalid):
			d.log.Debug("http: not found", "remote", r.RemoteAddr, "path", r.URL.Path, "err", err)
			nethttp.NotFound(w, r)
		default:
			d.log.Error("http: open", "path", r.URL.Path, "err", err)
			nethttp.Error(w, "cannot open file", nethttp.StatusInternalServerError)
		}
		return
	}
	defer f.Close()
	// Uploads replace files by rename, so size and mtime identify content.
	w.Header().Set("ETag", fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano()))
	cw := &countingWriter{ResponseWriter: w}
	start := time.Now()
	nethttp.ServeContent(cw, r, name, fi.ModTime(), f)
	d.bytes.Add(cw.n)
	dur := time.Since(start)
	d.log.Debug("http: served", "remote", r.RemoteAddr, "method", r.Method, "path", name,
		"range", r.Header.Get("Range"), "bytes", cw.n, "duration", dur, "MB/s", mbps(cw.n, dur))
}

func mbps(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(n)/d.Seconds()/1e6, 'f', 1, 64)
}

// countingWriter counts body bytes; ReadFrom keeps the server's sendfile
// path, which a plain wrapper would hide.
type countingWriter struct {
	nethttp.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.ResponseWriter.(io.ReaderFrom).ReadFrom(r)
	c.n += n
	return n, err
}

func (c *countingWriter) Unwrap() nethttp.ResponseWriter { return c.ResponseWriter }

// Stats are the server's counters since it started.
type Stats struct {
	Requests, Refused, Bytes int64
}

// Stats returns the counters.
func (d *Driver) Stats() Stats {
	return Stats{Requests: d.requests.Load(), Refused: d.refused.Load(), Bytes: d.bytes.Load()}
}

var (
	descRequests = prometheus.NewDesc("pogo_http_requests_total", "GET and HEAD requests received.", []string{"url"}, nil)
	descRefused  = prometheus.NewDesc("pogo_http_refused_total", "Requests refused for leaving the served directory.", []string{"url"}, nil)
	descBytes    = prometheus.NewDesc("pogo_http_sent_bytes_total", "Body bytes sent.", []string{"url"}, nil)
)

// Describe implements prometheus.Collector; the driver registers nowhere
// by itself, whoever exposes metrics registers it.
func (d *Driver) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descRefused
	ch <- descBytes
}

// Collect implements prometheus.Collector.
func (d *Driver) Collect(ch chan<- prometheus.Metric) {
	s := d.Stats()
	ch <- prometheus.MustNewConstMetric(descRequests, prometheus.CounterValue, float64(s.Requests), d.url)
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(s.Refused), d.url)
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.Bytes), d.url)
}

var (
	_ files.Store          = (*Driver)(nil)
	_ files.Locator        = (*Driver)(nil)
	_ prometheus.Collector = (*Driver)(nil)
)
