package bmc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/drivers/bmc/ipmi"
)

func init() {
	drivers.Register(drivers.Kind{Name: "bmc", New: newDriver})
}

// Interfaces a `bmc` node may name.
const (
	Lanplus = "lanplus"
	Open    = "open"
)

type config struct {
	Host     string `yaml:"host"`
	Port     int    `yaml:"port"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Interface is lanplus (default) or open, the in-band /dev/ipmi0.
	Interface string `yaml:"interface"`
	// CipherSuite pins an RMCP+ cipher suite; 0 takes the best offered.
	CipherSuite int `yaml:"cipher_suite"`
	// ChunkSize is the image bytes per IPMI write (default 512, which a
	// real OpenBMC LAN channel accepts).
	ChunkSize int `yaml:"chunk_size"`
	// Timeout is the wait for each IPMI response before a resend
	// (default 1s).
	Timeout time.Duration `yaml:"timeout"`
	// ActionTimeout bounds each verify and update action (default 30m).
	ActionTimeout time.Duration `yaml:"action_timeout"`
}

// Limits of chunk_size: the write header is 12 bytes and IPMI messages
// beyond 64 KiB do not exist.
const (
	minChunk = 16
	maxChunk = 60 << 10
)

func (c *config) check() error {
	switch c.Interface {
	case "":
		c.Interface = Lanplus
	case Lanplus, Open:
	default:
		return drivers.FieldErr("interface", "%q is not lanplus or open", c.Interface)
	}
	if c.Interface == Lanplus && c.Host == "" {
		return drivers.FieldErr("host", "required with interface lanplus")
	}
	if c.Interface == Open && c.Host != "" {
		return drivers.FieldErr("host", "interface open talks to this host's own BMC; remove host or use lanplus")
	}
	if c.Port == 0 {
		c.Port = 623
	}
	if c.Port < 1 || c.Port > 65535 {
		return drivers.FieldErr("port", "%d is not a UDP port", c.Port)
	}
	if c.CipherSuite < 0 || c.CipherSuite > 255 {
		return drivers.FieldErr("cipher_suite", "%d is not a cipher suite id (0 picks one)", c.CipherSuite)
	}
	if c.ChunkSize != 0 && (c.ChunkSize < minChunk || c.ChunkSize > maxChunk) {
		return drivers.FieldErr("chunk_size", "%d is outside %d..%d", c.ChunkSize, minChunk, maxChunk)
	}
	if c.Timeout < 0 {
		return drivers.FieldErr("timeout", "negative")
	}
	if c.ActionTimeout < 0 {
		return drivers.FieldErr("action_timeout", "negative")
	}
	return nil
}

// Driver is a BMC reached over IPMI. It implements Updater and Inspector.
type Driver struct {
	cfg   config
	path  string
	log   *slog.Logger
	spool string
	link  *link

	// busy admits one update at a time; a second is refused, not queued,
	// since the BMC's flash handler holds one update anyway.
	busy sync.Mutex
	rmu  sync.Mutex
	run  *running
}

type running struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newDriver(_ context.Context, b *drivers.Build) (drivers.Driver, error) {
	var cfg config
	if err := b.Config.Decode(&cfg); err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	spool := b.Host.StateDir
	if spool == "" {
		spool = os.TempDir()
	}
	d := &Driver{cfg: cfg, path: b.Path, log: b.Log, spool: filepath.Join(spool, "bmc-spool")}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.link = &link{dial: d.dial}
	return d, nil
}

// dial opens the transport the config names. It is called lazily, so an
// exporter starts while its BMC is down.
func (d *Driver) dial(ctx context.Context) (transport, error) {
	if d.cfg.Interface == Open {
		t, err := ipmi.DialOpen(ctx, d.cfg.Timeout)
		if err != nil {
			return nil, err
		}
		return t, nil
	}
	t, err := ipmi.Dial(ctx, ipmi.Config{
		Host: d.cfg.Host, Port: d.cfg.Port, Username: d.cfg.Username, Password: d.cfg.Password,
		CipherSuite: d.cfg.CipherSuite, Timeout: d.cfg.Timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, loginError(err))
	}
	return t, nil
}

// loginError classifies a failed lanplus login. go-ipmi reports the
// attempts of every cipher suite as text (%v), so its
// ErrRAKPAuthentication is matched by message.
func loginError(err error) error {
	msg := err.Error()
	for _, refusal := range []string{client.ErrRAKPAuthentication.Error(), "Unauthorized name", "Invalid integrity check value"} {
		if strings.Contains(msg, refusal) {
			return errdefs.ErrUnauthorized
		}
	}
	return errdefs.ErrUnavailable
}

// Description implements drivers.Describer.
func (d *Driver) Description() string {
	if d.cfg.Interface == Open {
		return "BMC in-band (/dev/ipmi0)"
	}
	return fmt.Sprintf("BMC %s@%s:%d (lanplus)", d.cfg.Username, d.cfg.Host, d.cfg.Port)
}

// Update implements Updater: it spools the image, then runs the
// burn_my_bmc sequence. The spool file is removed whatever happens.
func (d *Driver) Update(ctx context.Context, req Request) error {
	if err := req.Check(); err != nil {
		return fmt.Errorf("bmc %s: %w: %w", d.path, err, errdefs.ErrInvalid)
	}
	if !d.busy.TryLock() {
		return fmt.Errorf("bmc %s: an update is already running: %w", d.path, errdefs.ErrInUse)
	}
	defer d.busy.Unlock()
	d.link.begin()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &running{cancel: cancel, done: make(chan struct{})}
	d.rmu.Lock()
	d.run = r
	d.rmu.Unlock()
	defer func() {
		d.rmu.Lock()
		d.run = nil
		d.rmu.Unlock()
		close(r.done)
	}()

	report := req.Progress
	if report == nil {
		report = func(blob.Progress) {}
	}
	u := &blob.Updater{
		Client:        &blob.Client{T: d.link},
		ChunkSize:     d.cfg.ChunkSize,
		ActionTimeout: d.cfg.ActionTimeout,
		Progress:      report,
		Log:           d.log,
	}
	// A blob the BMC does not offer (or a BMC that is not there) fails
	// before the client streams the whole image.
	if err := u.Check(ctx, req.Type); err != nil {
		return err
	}
	img, err := d.receive(ctx, req, report)
	if err != nil {
		return &blob.PhaseError{Phase: PhaseReceive, Err: err}
	}
	defer func() {
		img.Close()
		if err := os.Remove(img.Name()); err != nil {
			d.log.Warn("remove spooled image", "file", img.Name(), "err", err)
		}
	}()
	start := time.Now()
	err = u.Update(ctx, blob.Request{
		Type: req.Type, Image: &blockReader{r: img}, ImageSize: req.Size,
		Signature: req.Signature, IgnoreUpdate: req.IgnoreUpdate,
	})
	if err != nil {
		d.log.Warn("bmc update failed", "type", req.Type, "err", err)
		return err
	}
	d.log.Info("bmc update done", "type", req.Type, "bytes", req.Size, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// receive copies the image into a spool file: the BMC takes it at IPMI
// speed (a few MB/s) and retries need to re-read it, neither of which a
// client's stream should wait on.
func (d *Driver) receive(ctx context.Context, req Request, report func(blob.Progress)) (*os.File, error) {
	if err := os.MkdirAll(d.spool, 0o700); err != nil {
		return nil, fmt.Errorf("spool directory: %w", err)
	}
	f, err := os.CreateTemp(d.spool, "image-*")
	if err != nil {
		return nil, fmt.Errorf("spool image: %w", err)
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	w := &progressWriter{w: f, total: req.Size, report: report}
	n, err := io.CopyN(w, req.Image, req.Size)
	switch {
	case ctx.Err() != nil:
		return fail(ctx.Err())
	case errors.Is(err, io.EOF):
		return fail(fmt.Errorf("image ended after %d of %d bytes: %w", n, req.Size, errdefs.ErrInvalid))
	case err != nil:
		return fail(fmt.Errorf("image after %d bytes: %w", n, err))
	}
	var one [1]byte
	if m, _ := req.Image.Read(one[:]); m > 0 {
		return fail(fmt.Errorf("image is longer than the %d bytes announced: %w", req.Size, errdefs.ErrInvalid))
	}
	report(blob.Progress{Phase: PhaseReceive, Done: n, Total: req.Size})
	return f, nil
}

type progressWriter struct {
	w      io.Writer
	done   int64
	total  int64
	last   int64
	report func(blob.Progress)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.done-p.last >= 1<<20 {
		p.last = p.done
		p.report(blob.Progress{Phase: PhaseReceive, Done: p.done, Total: p.total})
	}
	return n, err
}

// Blobs implements Inspector.
func (d *Driver) Blobs(ctx context.Context) ([]Blob, error) {
	var out []Blob
	err := d.inspect(ctx, func(c *blob.Client) error {
		ids, err := c.List(ctx)
		if err != nil {
			return err
		}
		out = make([]Blob, 0, len(ids))
		for _, id := range ids {
			m, err := c.Stat(ctx, id)
			if _, isCC := blob.CompletionCode(err); err != nil && !isCC {
				return err
			}
			out = append(out, toBlob(id, m, err))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bmc %s: list blobs: %w", d.path, err)
	}
	return out, nil
}

// Stat implements Inspector.
func (d *Driver) Stat(ctx context.Context, id string) (Blob, error) {
	if id == "" || len(id) > 255 || strings.ContainsRune(id, 0) {
		return Blob{}, fmt.Errorf("bmc %s: blob id %q: want a non-empty id without NUL, at most 255 bytes: %w", d.path, id, errdefs.ErrInvalid)
	}
	var b Blob
	err := d.inspect(ctx, func(c *blob.Client) error {
		m, err := c.Stat(ctx, id)
		if err != nil {
			return err
		}
		b = toBlob(id, m, nil)
		return nil
	})
	if err != nil {
		if _, isCC := blob.CompletionCode(err); isCC {
			// The blob handler refuses ids it does not know.
			err = fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
		}
		return Blob{}, fmt.Errorf("bmc %s: %w", d.path, err)
	}
	return b, nil
}

func toBlob(id string, m blob.Meta, err error) Blob {
	return Blob{ID: id, State: State(m.State), Size: m.Size, Metadata: m.Metadata, Err: err}
}

// inspect runs fn, and once more on a fresh session when the first try
// lost the BMC (an idle RMCP+ session expires; a BMC reboot ends it).
func (d *Driver) inspect(ctx context.Context, fn func(*blob.Client) error) error {
	d.link.begin()
	c := &blob.Client{T: d.link}
	err := fn(c)
	if err == nil || ctx.Err() != nil {
		return err
	}
	var de *dialError
	if _, isCC := blob.CompletionCode(err); isCC || errors.As(err, &de) {
		return err
	}
	if rerr := d.link.Reconnect(ctx); rerr != nil {
		return rerr
	}
	return fn(c)
}

// Reset implements drivers.Resetter: an update still running when its
// session ends is aborted, and Reset waits for its cleanup on the BMC.
func (d *Driver) Reset(ctx context.Context) error {
	d.rmu.Lock()
	r := d.run
	d.rmu.Unlock()
	if r == nil {
		return nil
	}
	r.cancel()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bmc %s: waiting for the aborted update to clean up: %w", d.path, ctx.Err())
	}
}

// Close implements drivers.Driver. A BMC that does not answer the Close
// Session request is not an error of ours: the socket is closed anyway and
// the BMC expires the session.
func (d *Driver) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	err := d.Reset(ctx)
	cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer ccancel()
	if cerr := d.link.Close(cctx); cerr != nil {
		d.log.Debug("close BMC session", "err", cerr)
	}
	return err
}

// transport is what the driver needs of a connection to the BMC.
type transport interface {
	blob.Transport
	blob.Reconnector
	Close(ctx context.Context) error
}

// link is the driver's one connection to the BMC, opened on first use.
// It serialises exchanges: go-ipmi's client keeps one sequence number and
// one socket, and an update and a blob listing may run at once.
type link struct {
	dial func(ctx context.Context) (transport, error)

	mu sync.Mutex
	t  transport
	// refused remembers the BMC turning our credentials down, so the
	// retries of one operation do not log in again: each failed login
	// holds one of the BMC's few session slots until it times out.
	refused error
}

// dialError is a failure to open the session, as opposed to losing one.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// begin starts an operation, which tries the credentials afresh.
func (l *link) begin() {
	l.mu.Lock()
	l.refused = nil
	l.mu.Unlock()
}

func (l *link) connectLocked(ctx context.Context) error {
	if l.refused != nil {
		return l.refused
	}
	t, err := l.dial(ctx)
	if err != nil {
		err = &dialError{err}
		if errors.Is(err, errdefs.ErrUnauthorized) {
			l.refused = err
		}
		return err
	}
	l.t = t
	return nil
}

func (l *link) RawCommand(ctx context.Context, netFn, cmd byte, data []byte) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t == nil {
		if err := l.connectLocked(ctx); err != nil {
			return nil, err
		}
	}
	return l.t.RawCommand(ctx, netFn, cmd, data)
}

// Reconnect implements blob.Reconnector: the old session is dropped
// without waiting on a BMC that may be gone, and a new one opened.
func (l *link) Reconnect(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t != nil {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		_ = l.t.Close(cctx)
		cancel()
		l.t = nil
	}
	return l.connectLocked(ctx)
}

func (l *link) Close(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t == nil {
		return nil
	}
	err := l.t.Close(ctx)
	l.t = nil
	return err
}

// blockReader serves the updater's small reads (one IPMI chunk each) from
// 1 MiB blocks of the spool file instead of a pread per chunk.
type blockReader struct {
	r   io.ReaderAt
	off int64
	buf []byte
}

const readBlock = 1 << 20

func (b *blockReader) ReadAt(p []byte, off int64) (int, error) {
	if off < b.off || off+int64(len(p)) > b.off+int64(len(b.buf)) {
		if b.buf == nil || cap(b.buf) < max(readBlock, len(p)) {
			b.buf = make([]byte, max(readBlock, len(p)))
		}
		n, err := b.r.ReadAt(b.buf[:cap(b.buf)], off)
		b.off, b.buf = off, b.buf[:n]
		if n < len(p) {
			copy(p, b.buf)
			if err == nil {
				err = io.EOF
			}
			return n, err
		}
	}
	return copy(p, b.buf[off-b.off:]), nil
}
