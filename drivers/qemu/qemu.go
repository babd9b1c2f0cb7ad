// Package qemu is the virtual board: an emulated arm64 (or x86_64) machine
// running Debian's U-Boot, exported like a real board. Its parts are a
// power switch (starting and killing QEMU), the UART (a pty read through
// the same serial driver as a real tty) and the disk (a raw image file the
// storage capability writes and reads while the board is off).
//
// The board is one driver; it serves power, console and storage itself
// and offers them as parts (<name>.power, <name>.console, <name>.storage)
// to an exporter tree that exposes a driver's parts.
package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	goserial "go.bug.st/serial"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/serial"
	"github.com/pogolab/pogo/drivers/storage"
)

// Network facts of QEMU's user networking, the same for every board.
const (
	// BoardIP is the address the board gets by DHCP.
	BoardIP = "10.0.2.15"
	// HostIP is where the board reaches the exporter host: UDP and TCP to
	// it arrive on the host's 127.0.0.1.
	HostIP = "10.0.2.2"
	// HostTFTP is where the board reaches the host's TFTP port: QEMU
	// answers UDP port 69 on HostIP with its own TFTP server, while
	// 127.0.0.1, routed through the board's gateway, is the host's loopback.
	HostTFTP = "127.0.0.1"
)

func init() {
	drivers.Register(drivers.Kind{
		Name: "qemu",
		New: func(ctx context.Context, b *drivers.Build) (drivers.Driver, error) {
			var c Config
			if err := b.Config.Decode(&c); err != nil {
				return nil, err
			}
			return New(c, b.Host.StateDir, b.Path, b.Log)
		},
	})
}

// Board is a virtual board. It implements power.Switcher, power.Cycler,
// power.Reader, console.Attacher and storage.Disk.
type Board struct {
	name string
	set  *setup
	log  *slog.Logger
	hub  *console.Hub
	disk *storage.File
	uart *uartWriter

	mu        sync.Mutex
	run       *run // nil while off
	diskUsers int
	closed    bool
}

// run is one power-on: a QEMU process and what is attached to it.
type run struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process is reaped
	qmp    *qmp
	port   *serial.Port
	att    io.ReadWriteCloser // the board hub's view of the port
	dir    string             // QMP socket's directory
	stderr *tailBuffer
	err    error // why the process exited, once exited is closed
}

// New checks c and returns a board that is off. Its disk is created (or
// checked writable) now, so a bad path fails before any power-on.
func New(c Config, stateDir, name string, log *slog.Logger) (*Board, error) {
	if log == nil {
		log = slog.Default()
	}
	s, err := c.check(stateDir, name)
	if err != nil {
		return nil, err
	}
	b := &Board{name: name, set: s, log: log, uart: &uartWriter{}}
	b.disk = &storage.File{Path: s.disk, Guard: b.guardDisk}
	if err := b.disk.Create(s.diskSize); err != nil {
		return nil, drivers.FieldErr("disk", "%s: %v", s.disk, err)
	}
	b.hub = console.NewHub(b.uart, s.scroll)
	return b, nil
}

// Network returns the board's address, the host's address as the board
// sees it, and the address of the host's TFTP server for the board.
func (b *Board) Network() (board, host, tftp string) { return BoardIP, HostIP, HostTFTP }

// Description implements drivers.Describer.
func (b *Board) Description() string {
	accel := "TCG"
	if b.set.kvm {
		accel = "KVM"
	}
	return fmt.Sprintf("virtual %s board (QEMU %s, %s), disk %s, board %s, host %s, tftp server %s", b.set.arch.machine, accel, filepath.Base(b.set.bios), b.set.disk, BoardIP, HostIP, HostTFTP)
}

// guardDisk lets storage touch the disk only while the board is off, and
// keeps the board off while it does.
func (b *Board) guardDisk() (func(), error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.run != nil {
		return nil, fmt.Errorf("board %s is powered on: power the board off first: %w", b.name, errdefs.ErrPrecondition)
	}
	b.diskUsers++
	return func() {
		b.mu.Lock()
		b.diskUsers--
		b.mu.Unlock()
	}, nil
}

// On implements power.Switcher: open the UART's pty and attach to it,
// then start QEMU on it, so the console has its output from the first
// instruction.
func (b *Board) On(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("board %s: closed: %w", b.name, errdefs.ErrUnavailable)
	}
	if b.run != nil {
		return nil
	}
	if b.diskUsers > 0 {
		return fmt.Errorf("board %s: its disk is being read or written over storage: %w", b.name, errdefs.ErrInUse)
	}
	r, err := b.start(ctx)
	if err != nil {
		return fmt.Errorf("board %s: power on: %w", b.name, err)
	}
	b.run = r
	go b.reap(r)
	return nil
}

func (b *Board) start(ctx context.Context) (r *run, err error) {
	// Unix socket paths are short; keep the socket out of deep state dirs.
	dir, err := os.MkdirTemp("", "pogo-qemu-")
	if err != nil {
		return nil, err
	}
	r = &run{dir: dir, exited: make(chan struct{}), stderr: &tailBuffer{max: 4 << 10}}
	defer func() {
		if err != nil {
			b.stop(r)
		}
	}()

	// The UART is a pty of ours: QEMU gets its master end, the serial
	// driver reads its tty end as it reads a real board's, and is reading
	// before QEMU runs.
	master, tty, err := pty.Open()
	if err != nil {
		return r, fmt.Errorf("open a pty for the UART: %w", err)
	}
	defer master.Close() // QEMU holds its own copy once started
	r.port, err = serial.Open(tty.Name(), &goserial.Mode{BaudRate: 115200, DataBits: 8}, serial.Options{Scrollback: 4 << 10, Name: b.name, Log: b.log})
	tty.Close()
	if err != nil {
		return r, fmt.Errorf("open UART %s: %w", tty.Name(), err)
	}
	if r.att, err = r.port.Attach(ctx, console.AttachOptions{Write: true}); err != nil {
		return r, fmt.Errorf("attach UART: %w", err)
	}
	go b.pump(r.att)
	b.uart.set(r.att)

	sock := filepath.Join(dir, "qmp.sock")
	r.cmd = exec.Command(b.set.qemu, b.set.args(sock, b.name)...)
	r.cmd.ExtraFiles = []*os.File{master} // uartFD
	r.cmd.Stdout = r.stderr
	r.cmd.Stderr = r.stderr
	// Its own process group, so power off kills whatever QEMU started, and
	// death with the exporter, so no crash leaves a board running.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		close(r.exited)
		r.cmd = nil
		return r, fmt.Errorf("start %s (Debian package %s): %w", b.set.qemu, b.set.arch.qemuPackage, err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.exited)
	}()
	b.log.Info("qemu started", "pid", r.cmd.Process.Pid, "args", strings.Join(r.cmd.Args, " "))

	// The guest runs already; QMP up tells QEMU started well (or why not).
	if r.qmp, err = b.connect(ctx, r, sock); err != nil {
		return r, err
	}
	return r, nil
}

// connect waits for QEMU's QMP socket, failing early with QEMU's own words
// when it exits instead.
func (b *Board) connect(ctx context.Context, r *run, sock string) (*qmp, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(sock); err == nil {
			q, err := dialQMP(ctx, sock)
			if err == nil {
				return q, nil
			}
			b.log.Debug("qmp connect", "err", err)
		}
		select {
		case <-r.exited:
			return nil, fmt.Errorf("qemu exited at start (%v): %s", r.err, strings.TrimSpace(r.stderr.String()))
		case <-ctx.Done():
			return nil, fmt.Errorf("qemu's QMP socket did not come up: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pump copies the port's output into the board's hub, which outlives the
// port across power cycles.
func (b *Board) pump(att io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := att.Read(buf)
		if n > 0 {
			b.hub.Publish(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// reap notices QEMU exiting by itself (the guest powered off, or QEMU
// crashed) and tidies up so the board reads as off.
func (b *Board) reap(r *run) {
	<-r.exited
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.run != r {
		return // powered off on purpose
	}
	b.log.Warn("qemu exited by itself", "err", r.err, "stderr", strings.TrimSpace(r.stderr.String()))
	b.stop(r)
	b.run = nil
}

// stop kills the process group (pulling the plug, no guest shutdown),
// waits for it and releases what the run held.
func (b *Board) stop(r *run) {
	// The UART goes first: a pty whose QEMU end vanished makes the serial
	// reader complain until it is closed.
	b.uart.set(nil)
	if r.att != nil {
		r.att.Close()
	}
	if r.port != nil {
		r.port.Close()
	}
	if r.cmd != nil && r.cmd.Process != nil {
		select {
		case <-r.exited:
		default:
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		}
		<-r.exited
	}
	if r.qmp != nil {
		r.qmp.Close()
	}
	os.RemoveAll(r.dir)
}

// Off implements power.Switcher: a hard stop, like pulling the plug.
func (b *Board) Off(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.run == nil {
		return nil
	}
	r := b.run
	b.run = nil
	b.stop(r)
	b.log.Info("qemu stopped", "pid", r.cmd.Process.Pid)
	return nil
}

// Cycle implements power.Cycler; a zero delay is the configured default.
func (b *Board) Cycle(ctx context.Context, delay time.Duration) error {
	if delay == 0 {
		delay = b.set.cycle
	}
	return power.OffWaitOn(ctx, b.Off, b.On, delay)
}

// State implements power.Reader from QEMU's own status.
func (b *Board) State(ctx context.Context) (power.State, error) {
	b.mu.Lock()
	r := b.run
	b.mu.Unlock()
	if r == nil {
		return power.Off, nil
	}
	var st qmpStatus
	if err := r.qmp.do(ctx, "query-status", nil, &st); err != nil {
		select {
		case <-r.exited:
			return power.Off, nil
		default:
		}
		return power.Unknown, fmt.Errorf("board %s: %w", b.name, err)
	}
	// Paused or shut down, the supply is still on.
	return power.On, nil
}

// Attach implements console.Attacher.
func (b *Board) Attach(ctx context.Context, opts console.AttachOptions) (io.ReadWriteCloser, error) {
	return b.hub.Attach(ctx, opts)
}

// Scrollback implements console.Attacher.
func (b *Board) Scrollback(ctx context.Context) ([]byte, error) { return b.hub.Scrollback(ctx) }

// Info implements storage.Disk.
func (b *Board) Info(ctx context.Context) (storage.Info, error) { return b.disk.Info(ctx) }

// Write implements storage.Disk; refused while the board runs.
func (b *Board) Write(ctx context.Context, r io.Reader, opts storage.WriteOptions) (int64, error) {
	return b.disk.Write(ctx, r, opts)
}

// Read implements storage.Disk; refused while the board runs.
func (b *Board) Read(ctx context.Context, w io.Writer, offset, length int64) (int64, error) {
	return b.disk.Read(ctx, w, offset, length)
}

// Reset implements drivers.Resetter: the safe state is off.
func (b *Board) Reset(ctx context.Context) error { return b.Off(ctx) }

// Close powers the board off and detaches every console client.
func (b *Board) Close() error {
	err := b.Off(context.Background())
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return errors.Join(err, b.hub.Close())
}

// Parts returns the board's power, console and storage as drivers of
// their own, for a tree that exposes them as <name>.power and so on. They
// belong to the board: closing them does nothing.
func (b *Board) Parts() []drivers.Part {
	return []drivers.Part{
		{Name: "power", Kind: "qemu.power", Driver: &powerPart{b}},
		{Name: "console", Kind: "qemu.console", Driver: &consolePart{b}},
		{Name: "storage", Kind: "qemu.storage", Driver: &storagePart{b}},
	}
}

type powerPart struct{ b *Board }

func (p *powerPart) On(ctx context.Context) error  { return p.b.On(ctx) }
func (p *powerPart) Off(ctx context.Context) error { return p.b.Off(ctx) }
func (p *powerPart) Cycle(ctx context.Context, d time.Duration) error {
	return p.b.Cycle(ctx, d)
}
func (p *powerPart) State(ctx context.Context) (power.State, error) { return p.b.State(ctx) }
func (p *powerPart) Description() string                            { return "power of " + p.b.name + " (starts and kills QEMU)" }
func (p *powerPart) Close() error                                   { return nil }

type consolePart struct{ b *Board }

func (c *consolePart) Attach(ctx context.Context, o console.AttachOptions) (io.ReadWriteCloser, error) {
	return c.b.Attach(ctx, o)
}
func (c *consolePart) Scrollback(ctx context.Context) ([]byte, error) { return c.b.Scrollback(ctx) }
func (c *consolePart) Description() string                            { return "UART of " + c.b.name }
func (c *consolePart) Close() error                                   { return nil }

type storagePart struct{ b *Board }

func (s *storagePart) Info(ctx context.Context) (storage.Info, error) { return s.b.Info(ctx) }
func (s *storagePart) Write(ctx context.Context, r io.Reader, o storage.WriteOptions) (int64, error) {
	return s.b.Write(ctx, r, o)
}
func (s *storagePart) Read(ctx context.Context, w io.Writer, off, n int64) (int64, error) {
	return s.b.Read(ctx, w, off, n)
}
func (s *storagePart) Description() string { return "disk of " + s.b.name + " (" + s.b.set.disk + ")" }
func (s *storagePart) Close() error        { return nil }

var (
	_ power.Cycler     = (*Board)(nil)
	_ power.Reader     = (*Board)(nil)
	_ console.Attacher = (*Board)(nil)
	_ storage.Disk     = (*Board)(nil)
	_ drivers.Resetter = (*Board)(nil)
)

// uartWriter sends console input to the running board's UART; while the
// board is off input goes nowhere, as on a real unpowered serial line.
type uartWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (u *uartWriter) set(w io.Writer) {
	u.mu.Lock()
	u.w = w
	u.mu.Unlock()
}

func (u *uartWriter) Write(p []byte) (int, error) {
	u.mu.Lock()
	w := u.w
	u.mu.Unlock()
	if w == nil {
		return len(p), nil
	}
	return w.Write(p)
}

// tailBuffer keeps the last max bytes written (QEMU's messages).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if over := t.b.Len() - t.max; over > 0 {
		t.b.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}
