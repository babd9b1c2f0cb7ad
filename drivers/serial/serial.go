// Package serial is the console driver for real serial ports (and ptys)
// through go.bug.st/serial. Its output goes into a console.Hub, so any
// number of clients read it and reattaching replays the scrollback.
package serial

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	goserial "go.bug.st/serial"

	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
)

// Config is the `serial` kind's config.
type Config struct {
	// URL is the device path (/dev/ttyUSB0, /dev/serial/by-id/…, a pty).
	URL      string `yaml:"url,required"`
	Baudrate int    `yaml:"baudrate"`
	// Parity is none, odd, even, mark or space.
	Parity   string  `yaml:"parity"`
	Stopbits float64 `yaml:"stopbits"`
	Databits int     `yaml:"databits"`
	// Scrollback is how many bytes of output are kept for replay.
	Scrollback int `yaml:"scrollback"`
	// LogDir, when set, receives one console log file per session.
	LogDir string `yaml:"log_dir"`
}

func init() {
	drivers.Register(drivers.Kind{
		Name:    "serial",
		Aliases: []string{"jumpstarter_driver_pyserial.driver.PySerial"},
		New: func(ctx context.Context, b *drivers.Build) (drivers.Driver, error) {
			var c Config
			if err := b.Config.Decode(&c); err != nil {
				return nil, err
			}
			mode, err := c.Mode()
			if err != nil {
				return nil, err
			}
			return Open(c.URL, mode, Options{Scrollback: c.Scrollback, LogDir: c.LogDir, Name: b.Path, Log: b.Log})
		},
	})
}

// Mode checks the config and turns it into the port mode.
func (c Config) Mode() (*goserial.Mode, error) {
	m := &goserial.Mode{BaudRate: 115200, DataBits: 8}
	if c.Baudrate < 0 {
		return nil, drivers.FieldErr("baudrate", "must be positive, got %d", c.Baudrate)
	}
	if c.Baudrate > 0 {
		m.BaudRate = c.Baudrate
	}
	switch c.Databits {
	case 0:
	case 5, 6, 7, 8:
		m.DataBits = c.Databits
	default:
		return nil, drivers.FieldErr("databits", "must be 5, 6, 7 or 8, got %d", c.Databits)
	}
	parities := map[string]goserial.Parity{"": goserial.NoParity, "none": goserial.NoParity, "n": goserial.NoParity,
		"odd": goserial.OddParity, "o": goserial.OddParity, "even": goserial.EvenParity, "e": goserial.EvenParity,
		"mark": goserial.MarkParity, "m": goserial.MarkParity, "space": goserial.SpaceParity, "s": goserial.SpaceParity}
	p, ok := parities[strings.ToLower(c.Parity)]
	if !ok {
		return nil, drivers.FieldErr("parity", "must be none, odd, even, mark or space, got %q", c.Parity)
	}
	m.Parity = p
	switch c.Stopbits {
	case 0, 1:
		m.StopBits = goserial.OneStopBit
	case 1.5:
		m.StopBits = goserial.OnePointFiveStopBits
	case 2:
		m.StopBits = goserial.TwoStopBits
	default:
		return nil, drivers.FieldErr("stopbits", "must be 1, 1.5 or 2, got %v", c.Stopbits)
	}
	if c.Scrollback < 0 {
		return nil, drivers.FieldErr("scrollback", "must not be negative, got %d", c.Scrollback)
	}
	return m, nil
}

// Options tune a Port.
type Options struct {
	Scrollback int
	LogDir     string
	// Name is used in log file names and messages.
	Name string
	Log  *slog.Logger
}

// Port is an open serial port behind a console hub. It implements
// console.Attacher.
type Port struct {
	*console.Hub
	url  string
	port goserial.Port
	log  *slog.Logger
	opts Options

	done chan struct{}
	wg   sync.WaitGroup

	logMu   sync.Mutex
	logFile *os.File
}

// readTimeout bounds each Read so the reader notices Close.
const readTimeout = 200 * time.Millisecond

// maxSelectFD is where go.bug.st/serial's select-based Read panics.
const maxSelectFD = 1024

// Open opens the device at url.
func Open(url string, mode *goserial.Mode, opts Options) (*Port, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if _, err := os.Stat(url); err != nil {
		return nil, drivers.FieldErr("url", "%v", err)
	}
	p, err := goserial.Open(url, mode)
	if err != nil {
		return nil, fmt.Errorf("serial %s: open: %w", url, err)
	}
	fd := portFD(p)
	if fd >= maxSelectFD {
		p.Close()
		return nil, fmt.Errorf("serial %s: file descriptor %d is ≥ %d, which go.bug.st/serial cannot read; the exporter has too many files open", url, fd, maxSelectFD)
	}
	if fd >= 0 {
		// The library opens without O_CLOEXEC: keep the port out of the
		// processes the exporter starts (a virtual board's QEMU).
		syscall.CloseOnExec(int(fd))
	}
	if err := p.SetReadTimeout(readTimeout); err != nil {
		p.Close()
		return nil, fmt.Errorf("serial %s: set read timeout: %w", url, err)
	}
	s := &Port{url: url, port: p, log: opts.Log, opts: opts, done: make(chan struct{})}
	s.Hub = console.NewHub(p, opts.Scrollback)
	s.Hub.OnClose(s.closePort)
	s.wg.Add(1)
	go s.readLoop()
	return s, nil
}

// portFD digs the descriptor out of the library's port, which does not
// export it, so we can refuse one its Read would panic on.
func portFD(p goserial.Port) int64 {
	v := reflect.ValueOf(p)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return -1
	}
	f := v.FieldByName("handle")
	if !f.IsValid() || !f.CanInt() {
		return -1
	}
	return f.Int()
}

func (s *Port) readLoop() {
	defer s.wg.Done()
	defer func() {
		// The library panics on descriptors it cannot select on; never let
		// that take the exporter down.
		if r := recover(); r != nil {
			s.log.Error("serial read failed", "url", s.url, "panic", r)
		}
	}()
	buf := make([]byte, 4096)
	for {
		n, err := s.port.Read(buf)
		select {
		case <-s.done:
			return
		default:
		}
		if n > 0 {
			s.Hub.Publish(buf[:n])
		}
		if err != nil {
			var pe *goserial.PortError
			if errors.As(err, &pe) && pe.Code() == goserial.PortClosed {
				return
			}
			s.log.Warn("serial read", "url", s.url, "err", err)
			// A pty whose far end is not open yet reports EIO; wait and retry.
			time.Sleep(100 * time.Millisecond)
		}
		// n == 0 && err == nil is the library's read timeout.
	}
}

func (s *Port) closePort() error {
	close(s.done)
	err := s.port.Close()
	s.wg.Wait()
	s.SessionEnd()
	return err
}

// SessionStart opens a console log file for the session when log_dir is set.
func (s *Port) SessionStart(holder string) {
	if s.opts.LogDir == "" {
		return
	}
	s.SessionEnd()
	if err := os.MkdirAll(s.opts.LogDir, 0o755); err != nil {
		s.log.Warn("console log", "err", err)
		return
	}
	name := fmt.Sprintf("%s-%s.log", strings.ReplaceAll(s.opts.Name, "/", "_"), time.Now().UTC().Format("20060102T150405Z"))
	f, err := os.OpenFile(filepath.Join(s.opts.LogDir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.log.Warn("console log", "err", err)
		return
	}
	fmt.Fprintf(f, "# console %s, session of %s, %s\n", s.url, holder, time.Now().UTC().Format(time.RFC3339))
	s.logMu.Lock()
	s.logFile = f
	s.logMu.Unlock()
	s.Hub.SetLog(f)
}

// SessionEnd closes the session's console log file.
func (s *Port) SessionEnd() {
	s.logMu.Lock()
	f := s.logFile
	s.logFile = nil
	s.logMu.Unlock()
	if f != nil {
		s.Hub.SetLog(nil)
		f.Close()
	}
}

// Description implements drivers.Describer.
func (s *Port) Description() string { return "serial port " + s.url }
