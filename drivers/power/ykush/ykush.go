// Package ykush is the power backend for Yepkit YKUSH switchable USB hubs
// (YKUSH, YKUSH3, YKUSHXS): one downstream port, or all of them, per
// driver. It speaks the hubs' HID command protocol; the USB transport is
// gousb and needs cgo. Built without cgo the kind still exists so an
// exporter.yaml naming it fails with a clear message.
package ykush

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/power"
)

func init() {
	drivers.Register(drivers.Kind{
		Name:    "ykush",
		Aliases: []string{"jumpstarter_driver_yepkit.driver.Ykush"},
		New: func(ctx context.Context, b *drivers.Build) (drivers.Driver, error) {
			cfg, err := parseConfig(b.Config)
			if err != nil {
				return nil, err
			}
			bs, owned, err := sharedBus(b.Host)
			if err != nil {
				return nil, err
			}
			d, err := newDriver(ctx, cfg, bs, b.Log)
			if err != nil {
				if owned != nil {
					owned.Close()
				}
				return nil, err
			}
			d.owned = owned
			return d, nil
		},
	})
}

// hid is one opened hub's HID interface: send a command report, read the
// reply report.
type hid interface {
	Exchange(ctx context.Context, report []byte) ([]byte, error)
	Close() error
}

// hubInfo describes an attached hub.
type hubInfo struct {
	Serial  string
	Product uint16
}

// bus finds and opens hubs. The gousb implementation is in usb_cgo.go;
// tests use a fake hub that implements the command table.
type bus interface {
	Hubs(ctx context.Context) ([]hubInfo, error)
	Open(ctx context.Context, serial string) (hid, error)
}

// VendorID is Yepkit's (Microchip's) USB vendor id.
const VendorID = 0x04D8

// model is what a product id says about a hub.
type model struct {
	name  string
	ports int
	// extra is a port number the hub answers beyond ports (YKUSH3's 4),
	// 0 when none. It is not part of "all".
	extra int
	// report is the HID report size: 64, or 6 on the first YKUSH firmware.
	report int
}

var models = map[uint16]model{
	0xF2F7: {name: "YKUSH", ports: 3, report: 64},
	0x0042: {name: "YKUSH (legacy firmware)", ports: 3, report: 6},
	0xF11B: {name: "YKUSH3", ports: 3, extra: 4, report: 64},
	0xF0CD: {name: "YKUSHXS", ports: 1, report: 64},
}

func knownProduct(pid uint16) bool { _, ok := models[pid]; return ok }

// Commands: the high nibble is the operation, the low one the port (A
// for all). A reply's byte 0 is 0x01 when the hub accepted the command;
// a status reply's byte 1 is 0x1N for on, 0x0N for off.
const (
	cmdDown   = 0x00
	cmdUp     = 0x10
	cmdStatus = 0x20
	portAll   = 0x0A
	replyOK   = 0x01
)

// Driver switches one port (or all ports) of one hub.
type Driver struct {
	bus bus
	// hub is held for each exchange with the hub (usb.hubLock).
	hub    *sync.Mutex
	serial string
	model  model
	// port is 1..N, or 0 for all.
	port  int
	def   string
	delay time.Duration
	log   *slog.Logger
	owned io.Closer

	// mu keeps a cycle's off and on together against other callers.
	mu sync.Mutex
}

var (
	_ power.Switcher   = (*Driver)(nil)
	_ power.Cycler     = (*Driver)(nil)
	_ power.Reader     = (*Driver)(nil)
	_ drivers.Resetter = (*Driver)(nil)
)

// usb is what the ykush drivers of one host share (drivers.Host): the bus,
// and a lock per hub, since drivers for different ports of one hub share
// its single HID interface, which only one can claim.
type usb struct {
	bus
	mu    sync.Mutex
	locks map[string]*sync.Mutex // by serial
}

// hubLock is the lock of the hub with serial.
func (u *usb) hubLock(serial string) *sync.Mutex {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.locks == nil {
		u.locks = map[string]*sync.Mutex{}
	}
	if u.locks[serial] == nil {
		u.locks[serial] = new(sync.Mutex)
	}
	return u.locks[serial]
}

// Close closes the bus, when it holds anything to close.
func (u *usb) Close() error {
	if c, ok := u.bus.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func newDriver(ctx context.Context, cfg settings, bs *usb, log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hubs, err := bs.Hubs(ctx)
	if err != nil {
		return nil, fmt.Errorf("ykush: list hubs: %w", err)
	}
	var found []string
	var match []hubInfo
	for _, h := range hubs {
		found = append(found, fmt.Sprintf("%s (%s)", h.Serial, models[h.Product].name))
		if cfg.serial == "" || h.Serial == cfg.serial {
			match = append(match, h)
		}
	}
	list := "none"
	if len(found) > 0 {
		list = strings.Join(found, ", ")
	}
	switch {
	case len(match) == 0 && cfg.serial != "":
		return nil, fmt.Errorf("ykush: no hub with serial %q attached (found: %s): %w", cfg.serial, list, errdefs.ErrNotFound)
	case len(match) == 0:
		return nil, fmt.Errorf("ykush: no YKUSH hub attached (vendor %04x): %w", VendorID, errdefs.ErrNotFound)
	case len(match) > 1 && cfg.serial == "":
		return nil, drivers.FieldErr("serial", "is required: %d hubs are attached (%s)", len(match), list)
	case len(match) > 1:
		return nil, fmt.Errorf("ykush: %d hubs share serial %q; tell them apart by unplugging one: %w", len(match), cfg.serial, errdefs.ErrInvalid)
	}
	h := match[0]
	m := models[h.Product]
	if cfg.port > m.ports && cfg.port != m.extra {
		valid := fmt.Sprintf("1..%d", m.ports)
		if m.extra != 0 {
			valid += fmt.Sprintf(", %d", m.extra)
		}
		return nil, drivers.FieldErr("port", "must be %s or all for %s %s, got %d", valid, m.name, h.Serial, cfg.port)
	}
	return &Driver{bus: bs, hub: bs.hubLock(h.Serial), serial: h.Serial, model: m, port: cfg.port, def: cfg.def, delay: cfg.delay, log: log}, nil
}

// On powers the port up and checks it reads back on.
func (d *Driver) On(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.switchTo(ctx, true)
}

// Off powers the port down and checks it reads back off.
func (d *Driver) Off(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.switchTo(ctx, false)
}

// Cycle switches off, waits delay (the configured delay when zero) and
// switches on: the hubs have no cycle command.
func (d *Driver) Cycle(ctx context.Context, delay time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if delay == 0 {
		delay = d.delay
	}
	off := func(ctx context.Context) error { return d.switchTo(ctx, false) }
	on := func(ctx context.Context) error { return d.switchTo(ctx, true) }
	err := power.OffWaitOn(ctx, off, on, delay)
	if err != nil && err == ctx.Err() {
		return fmt.Errorf("ykush: cycle %s: %w", d.what(), ctx.Err())
	}
	return err
}

// State reads the port; for all ports it is On or Off only when every
// port agrees, else Unknown.
func (d *Driver) State(ctx context.Context) (power.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var st power.State
	err := d.session(ctx, func(h hid) error {
		var err error
		st, err = d.state(ctx, h)
		return err
	})
	return st, err
}

// Reset applies the configured safe state.
func (d *Driver) Reset(ctx context.Context) error {
	switch d.def {
	case "on":
		return d.On(ctx)
	case "off":
		return d.Off(ctx)
	}
	return nil
}

// Close releases the USB context when this driver opened it; the hub
// itself is only held during an operation.
func (d *Driver) Close() error {
	if d.owned != nil {
		return d.owned.Close()
	}
	return nil
}

// Description names the hub and port for reports.
func (d *Driver) Description() string { return d.what() }

func (d *Driver) what() string {
	p := "all ports"
	if d.port != 0 {
		p = fmt.Sprintf("port %d", d.port)
	}
	return fmt.Sprintf("%s %s %s", d.model.name, d.serial, p)
}

func (d *Driver) switchTo(ctx context.Context, on bool) error {
	op, want := byte(cmdDown), power.Off
	if on {
		op, want = cmdUp, power.On
	}
	return d.session(ctx, func(h hid) error {
		if d.port == 0 && d.model.ports > 1 {
			if _, err := d.command(ctx, h, op|portAll); err != nil {
				return err
			}
		} else {
			for _, p := range d.ports() {
				if _, err := d.command(ctx, h, op|byte(p)); err != nil {
					return err
				}
			}
		}
		// The hub switches at once; a short grace covers a slow reply.
		deadline := time.Now().Add(time.Second)
		for {
			st, err := d.state(ctx, h)
			if err != nil {
				return err
			}
			if st == want {
				d.log.Debug("ykush: switched", "hub", d.serial, "port", d.port, "state", want)
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("ykush: %s reads %s after switching %s", d.what(), st, want)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("ykush: %s: waiting for %s: %w", d.what(), want, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}

// ports lists the port numbers the driver covers.
func (d *Driver) ports() []int {
	if d.port != 0 {
		return []int{d.port}
	}
	var ps []int
	for p := 1; p <= d.model.ports; p++ {
		ps = append(ps, p)
	}
	return ps
}

func (d *Driver) state(ctx context.Context, h hid) (power.State, error) {
	var states []power.State
	for _, p := range d.ports() {
		b, err := d.command(ctx, h, cmdStatus|byte(p))
		if err != nil {
			return power.Unknown, err
		}
		switch b {
		case cmdUp | byte(p):
			states = append(states, power.On)
		case cmdDown | byte(p):
			states = append(states, power.Off)
		default:
			return power.Unknown, fmt.Errorf("ykush: %s: status of port %d reads %#02x, want %#02x or %#02x", d.what(), p, b, cmdUp|p, cmdDown|p)
		}
	}
	if slices.Contains(states, power.On) && slices.Contains(states, power.Off) {
		return power.Unknown, nil
	}
	return states[0], nil
}

// command sends one command and returns the reply's status byte.
func (d *Driver) command(ctx context.Context, h hid, cmd byte) (byte, error) {
	report := make([]byte, d.model.report)
	report[0] = cmd
	reply, err := h.Exchange(ctx, report)
	if err != nil {
		return 0, fmt.Errorf("ykush: %s: command %#02x: %w", d.what(), cmd, err)
	}
	if len(reply) < 2 {
		return 0, fmt.Errorf("ykush: %s: command %#02x: reply of %d bytes, want %d", d.what(), cmd, len(reply), d.model.report)
	}
	if reply[0] != replyOK {
		return 0, fmt.Errorf("ykush: %s: hub refused command %#02x (reply %#02x %#02x)", d.what(), cmd, reply[0], reply[1])
	}
	return reply[1], nil
}

// session opens the hub for f and closes it after, so a replugged hub
// needs nothing and other tools can use it between operations.
func (d *Driver) session(ctx context.Context, f func(hid) error) error {
	d.hub.Lock()
	defer d.hub.Unlock()
	h, err := d.bus.Open(ctx, d.serial)
	if err != nil {
		return fmt.Errorf("ykush: open %s %s: %w", d.model.name, d.serial, err)
	}
	err = f(h)
	if cerr := h.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("ykush: close %s: %w", d.serial, cerr)
	}
	return err
}

// sharedBus returns the host's one USB context, or a private one the
// caller must close when there is no Host (tools, tests).
func sharedBus(host *drivers.Host) (*usb, io.Closer, error) {
	if host == nil {
		b, err := openBus()
		if err != nil {
			return nil, nil, err
		}
		u := &usb{bus: b}
		return u, u, nil
	}
	v, err := host.Shared("ykush.usb", func() (any, error) {
		b, err := openBus()
		if err != nil {
			return nil, err
		}
		return &usb{bus: b}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return v.(*usb), nil, nil
}

// errNoUSB is what a build without cgo says when a ykush node is built.
var errNoUSB = errors.New("ykush: built without USB support (CGO_ENABLED=0)")
