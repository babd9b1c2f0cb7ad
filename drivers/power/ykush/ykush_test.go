package ykush

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/power"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// open builds a driver from YAML against bus, as the factory does.
func open(t *testing.T, b bus, yaml string) (*Driver, error) {
	t.Helper()
	c, err := drivers.ConfigFromYAML(yaml)
	if err != nil {
		t.Fatal(err)
	}
	s, err := parseConfig(c)
	if err != nil {
		return nil, err
	}
	return newDriver(ctxT(t), s, usbOf(b), slog.New(slog.DiscardHandler))
}

// usbs gives each test bus one shared usb, as drivers.Host gives a host's
// drivers.
var usbs sync.Map // bus → *usb

func usbOf(b bus) *usb {
	v, _ := usbs.LoadOrStore(b, &usb{bus: b})
	return v.(*usb)
}

func mustOpen(t *testing.T, b bus, yaml string) *Driver {
	t.Helper()
	d, err := open(t, b, yaml)
	if err != nil {
		t.Fatalf("build %q: %v", yaml, err)
	}
	return d
}

func wantState(t *testing.T, d *Driver, want power.State) {
	t.Helper()
	got, err := d.State(ctxT(t))
	if err != nil || got != want {
		t.Fatalf("state = %v, %v; want %v", got, err, want)
	}
}

var allModels = []struct {
	name  string
	pid   uint16
	ports []int
}{
	{"YKUSH", 0xF2F7, []int{1, 2, 3}},
	{"YKUSH legacy", 0x0042, []int{1, 2, 3}},
	{"YKUSH3", 0xF11B, []int{1, 2, 3, 4}},
	{"YKUSHXS", 0xF0CD, []int{1}},
}

func TestEveryCommandPerModel(t *testing.T) {
	for _, m := range allModels {
		for _, port := range append([]string{"all"}, strings.Fields(strings.Trim(fmt.Sprint(m.ports), "[]"))...) {
			t.Run(m.name+"/port "+port, func(t *testing.T) {
				ctx := ctxT(t)
				hub := newFakeHub("YK"+m.name+port, m.pid)
				b := &fakeBus{hubs: []*fakeHub{hub}}
				// Jumpstarter's shape: port as a string.
				d := mustOpen(t, b, fmt.Sprintf("port: %q\ndelay: 10ms\n", port))
				defer d.Close()
				covered := d.ports()
				onAll := func(want bool) {
					t.Helper()
					for _, p := range covered {
						if hub.isOn(p) != want {
							t.Fatalf("hub port %d on = %v, want %v (commands %x)", p, hub.isOn(p), want, hub.commands())
						}
					}
				}

				if err := d.On(ctx); err != nil {
					t.Fatal(err)
				}
				onAll(true)
				wantState(t, d, power.On)
				if err := d.Off(ctx); err != nil {
					t.Fatal(err)
				}
				onAll(false)
				wantState(t, d, power.Off)

				hub.clear()
				if err := power.Cycle(ctx, d, 0); err != nil {
					t.Fatal(err)
				}
				onAll(true)
				cmds := hub.commands()
				down, up := -1, -1
				for i, c := range cmds {
					if c&0xF0 == cmdDown && down < 0 {
						down = i
					}
					if c&0xF0 == cmdUp && up < 0 {
						up = i
					}
				}
				if down < 0 || up < down {
					t.Fatalf("cycle sent %x, want down before up", cmds)
				}

				if err := d.Reset(ctx); err != nil {
					t.Fatal(err)
				}
				onAll(false)
			})
		}
	}
}

func TestCommandBytes(t *testing.T) {
	tests := []struct {
		pid  uint16
		port string
		on   []byte // up command then status reads
	}{
		{0xF2F7, "2", []byte{0x12, 0x22}},
		{0xF2F7, "all", []byte{0x1A, 0x21, 0x22, 0x23}},
		{0xF11B, "4", []byte{0x14, 0x24}},
		{0xF0CD, "all", []byte{0x11, 0x21}}, // one port: no all command
		{0x0042, "3", []byte{0x13, 0x23}},
	}
	for _, tt := range tests {
		hub := newFakeHub(fmt.Sprintf("B%x%s", tt.pid, tt.port), tt.pid)
		d := mustOpen(t, &fakeBus{hubs: []*fakeHub{hub}}, "port: "+tt.port)
		if err := d.On(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if got := hub.commands(); !bytes.Equal(got, tt.on) {
			t.Errorf("%s port %s: on sent %x, want %x", d.model.name, tt.port, got, tt.on)
		}
	}
}

func TestLegacyFirmwareTakesSixByteReports(t *testing.T) {
	hub := newFakeHub("OLD1", 0x0042)
	d := mustOpen(t, &fakeBus{hubs: []*fakeHub{hub}}, "port: 1")
	if d.model.report != 6 {
		t.Fatalf("report size = %d, want 6", d.model.report)
	}
	if err := d.On(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// The same fake as a current YKUSH refuses 6-byte reports, and the
	// legacy one 64-byte reports: the size really is per model.
	d.model = models[0xF2F7]
	if err := d.Off(ctxT(t)); err == nil || !strings.Contains(err.Error(), "takes 6") {
		t.Fatalf("64-byte report to legacy firmware: err = %v", err)
	}
}

func TestPortRange(t *testing.T) {
	tests := []struct {
		pid  uint16
		port string
		msg  string
	}{
		{0xF0CD, "2", "must be 1..1 or all for YKUSHXS"},
		{0xF2F7, "4", "must be 1..3 or all for YKUSH"},
		{0x0042, "4", "must be 1..3 or all"},
		{0xF11B, "5", "must be 1..4 or all, got 5"}, // config bound
		{0xF2F7, "0", "must be 1..4 or all, got 0"},
		{0xF2F7, "-1", "must be 1..4 or all"},
		{0xF2F7, "two", "port number"},
		{0xF2F7, "1.5", "port number"},
	}
	for _, tt := range tests {
		_, err := open(t, &fakeBus{hubs: []*fakeHub{newFakeHub("R1", tt.pid)}}, "port: "+tt.port)
		var fe *drivers.FieldError
		if !errors.As(err, &fe) || fe.Field != "port" || !strings.Contains(fe.Msg, tt.msg) {
			t.Errorf("pid %x port %s: err = %v, want port error %q", tt.pid, tt.port, err, tt.msg)
		}
	}
	if _, err := open(t, &fakeBus{hubs: []*fakeHub{newFakeHub("R3", 0xF11B)}}, "port: 4"); err != nil {
		t.Errorf("YKUSH3 port 4: %v", err)
	}
}

func TestDiscovery(t *testing.T) {
	two := &fakeBus{hubs: []*fakeHub{newFakeHub("YK1", 0xF2F7), newFakeHub("YK2", 0xF0CD)}}
	tests := []struct {
		name, yaml string
		b          bus
		check      func(*Driver, error) bool
	}{
		{"none attached", "port: 1", &fakeBus{}, func(_ *Driver, err error) bool {
			return errors.Is(err, errdefs.ErrNotFound) && strings.Contains(err.Error(), "no YKUSH hub attached")
		}},
		{"two without serial", "port: 1", two, func(_ *Driver, err error) bool {
			var fe *drivers.FieldError
			return errors.As(err, &fe) && fe.Field == "serial" && strings.Contains(fe.Msg, "YK1 (YKUSH), YK2 (YKUSHXS)")
		}},
		{"serial picks one", "serial: YK2\nport: 1", two, func(d *Driver, err error) bool {
			return err == nil && d.model.name == "YKUSHXS" && d.Description() == "YKUSHXS YK2 port 1"
		}},
		{"unknown serial lists the others", "serial: YK9", two, func(_ *Driver, err error) bool {
			return errors.Is(err, errdefs.ErrNotFound) && strings.Contains(err.Error(), `"YK9"`) && strings.Contains(err.Error(), "YK1 (YKUSH)")
		}},
		{"one hub needs no serial, port defaults to all", "", &fakeBus{hubs: []*fakeHub{newFakeHub("ONLY", 0xF11B)}}, func(d *Driver, err error) bool {
			return err == nil && d.port == 0 && d.Description() == "YKUSH3 ONLY all ports"
		}},
		{"listing fails", "", &fakeBus{listErr: errors.New("no usbfs")}, func(_ *Driver, err error) bool {
			return err != nil && strings.Contains(err.Error(), "ykush: list hubs: no usbfs")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := open(t, tt.b, tt.yaml)
			if !tt.check(d, err) {
				t.Fatalf("driver %+v, err %v", d, err)
			}
		})
	}
}

func TestDefaultAppliedAtReset(t *testing.T) {
	for _, tt := range []struct {
		def       string
		start     bool // port 1 on before reset
		want      bool
		wantSends bool
	}{
		{"", true, false, true},
		{"off", true, false, true},
		{"on", false, true, true},
		{"keep", true, true, false},
		{"keep", false, false, false},
	} {
		hub := newFakeHub("D1", 0xF2F7)
		hub.on[1] = tt.start
		yaml := "port: 1"
		if tt.def != "" {
			yaml += "\ndefault: " + tt.def
		}
		d := mustOpen(t, &fakeBus{hubs: []*fakeHub{hub}}, yaml)
		if err := d.Reset(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		if hub.isOn(1) != tt.want || (len(hub.commands()) > 0) != tt.wantSends {
			t.Errorf("default %q from on=%v: on=%v after reset, commands %x", tt.def, tt.start, hub.isOn(1), hub.commands())
		}
	}
}

func TestFaults(t *testing.T) {
	t.Run("port that does not switch", func(t *testing.T) {
		hub := newFakeHub("F1", 0xF2F7)
		hub.stuck[2] = true
		d := mustOpen(t, &fakeBus{hubs: []*fakeHub{hub}}, "port: 2")
		err := d.On(ctxT(t))
		if err == nil || !strings.Contains(err.Error(), "YKUSH F1 port 2 reads off after switching on") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("mixed ports read unknown", func(t *testing.T) {
		hub := newFakeHub("F2", 0xF2F7)
		hub.on[1] = true
		d := mustOpen(t, &fakeBus{hubs: []*fakeHub{hub}}, "port: all")
		wantState(t, d, power.Unknown)
	})
	t.Run("hub refuses", func(t *testing.T) {
		hub := newFakeHub("F3", 0xF2F7)
		hub.refuse = true
		d := mustOpen(t, &fakeBus{hubs: []*fakeHub{hub}}, "port: 3")
		err := d.Off(ctxT(t))
		if err == nil || !strings.Contains(err.Error(), "hub refused command 0x03") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unplugged after build", func(t *testing.T) {
		b := &fakeBus{hubs: []*fakeHub{newFakeHub("F4", 0xF2F7)}}
		d := mustOpen(t, b, "port: 1")
		b.unplug("F4")
		err := d.On(ctxT(t))
		if err == nil || !strings.Contains(err.Error(), "ykush: open YKUSH F4") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("cancel during cycle", func(t *testing.T) {
		hub := newFakeHub("F5", 0xF2F7)
		d := mustOpen(t, &fakeBus{hubs: []*fakeHub{hub}}, "port: 1\ndelay: 1h")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := d.Cycle(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		if hub.isOn(1) {
			t.Fatal("port on after an interrupted cycle")
		}
	})
}

// Drivers for different ports of one hub take turns on its interface;
// the fake refuses a second concurrent claim as libusb would.
func TestPortsShareOneHub(t *testing.T) {
	hub := newFakeHub("S1", 0xF2F7)
	b := &fakeBus{hubs: []*fakeHub{hub}}
	var ds []*Driver
	for p := 1; p <= 3; p++ {
		ds = append(ds, mustOpen(t, b, fmt.Sprintf("serial: S1\nport: %d", p)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 30)
	for i := 0; i < 10; i++ {
		for _, d := range ds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := d.On(ctxT(t)); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestFactory(t *testing.T) {
	k, ok := drivers.Lookup("jumpstarter_driver_yepkit.driver.Ykush")
	if !ok || k.Name != "ykush" {
		t.Fatal("ykush kind not registered under its Jumpstarter alias")
	}
	cfg, _ := drivers.ConfigFromYAML("serial: NOSUCHHUB\nport: \"1\"\n")
	_, err := drivers.New(ctxT(t), k, &drivers.Build{Path: "power", Config: cfg, Log: slog.New(slog.DiscardHandler), Host: &drivers.Host{}})
	if err == nil {
		t.Fatal("factory built a driver for a hub that is not attached")
	}
	bs, berr := openBus()
	if c, ok := bs.(io.Closer); ok {
		c.Close()
	}
	if errors.Is(berr, errNoUSB) {
		if err.Error() != "ykush: built without USB support (CGO_ENABLED=0)" {
			t.Fatalf("err = %v", err)
		}
		return
	}
	t.Logf("factory without the hub: %v", err)
	// Config errors come before any USB access.
	cfg, _ = drivers.ConfigFromYAML("port: 9\n")
	_, err = drivers.New(ctxT(t), k, &drivers.Build{Config: cfg})
	var fe *drivers.FieldError
	if !errors.As(err, &fe) || fe.Field != "port" {
		t.Fatalf("err = %v, want a port FieldError", err)
	}
}
