package snmp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/power"
)

// build makes a driver the way the exporter does: by kind name from YAML.
func build(t *testing.T, kind, yaml string) *Driver {
	t.Helper()
	d, err := tryBuild(kind, yaml)
	if err != nil {
		t.Fatalf("build %s:\n%s\n%v", kind, yaml, err)
	}
	return d
}

func tryBuild(kind, yaml string) (*Driver, error) {
	k, ok := drivers.Lookup(kind)
	if !ok {
		return nil, fmt.Errorf("kind %s not registered", kind)
	}
	cfg, err := drivers.ConfigFromYAML(yaml)
	if err != nil {
		return nil, err
	}
	d, err := drivers.New(context.Background(), k, &drivers.Build{Path: "power", Config: cfg, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	return d.(*Driver), nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// security is the credential part of a config for each version.
var security = map[string]string{
	"v1":              "version: 1\ncommunity: " + rwCommunity + "\n",
	"v2c":             "version: 2c\ncommunity: " + rwCommunity + "\n",
	"v3-authPriv-AES": fmt.Sprintf("version: 3\nuser: %s\nauth_protocol: SHA\nauth_password: %s\npriv_protocol: AES\npriv_password: %s\n", v3User, v3Auth, v3Priv),
	"v3-authPriv-DES": fmt.Sprintf("version: \"3\"\nuser: %s\nauth_protocol: MD5\nauth_password: %s\npriv_protocol: DES\npriv_password: %s\n", v3DESUser, v3Auth, v3Priv),
}

func TestPresetsAgainstSnmpd(t *testing.T) {
	a := startAgent(t)
	// Each preset with its outlet and the status OID the agent keeps.
	cases := []struct {
		preset, outlet, status string
		on, off                string
	}{
		{"apc", "1", "1.3.6.1.4.1.318.1.1.4.4.2.1.3.1", "1", "2"},
		{"apc-rpdu", "2", "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.2", "1", "2"},
		{"apc-rpdu2", "3", "1.3.6.1.4.1.318.1.1.26.9.2.3.1.5.3", "2", "1"},
		{"raritan", "2", "1.3.6.1.4.1.13742.6.4.1.2.1.3.1.2", "7", "8"},
		{"eaton", "4", "1.3.6.1.4.1.534.6.6.7.6.6.1.2.0.4", "1", "0"},
		{"servertech", "1.1.3", "1.3.6.1.4.1.1718.3.2.3.1.10.1.1.3", "5", "4"},
		{"cyberpower", "1", "1.3.6.1.4.1.3808.1.1.3.3.5.1.1.4.1", "1", "2"},
		{"poe-rfc3621", "4", "1.3.6.1.2.1.105.1.1.1.3.1.4", "1", "2"},
	}
	for _, sec := range []string{"v1", "v2c", "v3-authPriv-AES", "v3-authPriv-DES"} {
		for _, c := range cases {
			t.Run(sec+"/"+c.preset, func(t *testing.T) {
				ctx := ctxT(t)
				d := build(t, "snmp", fmt.Sprintf("host: 127.0.0.1\nport: %d\npreset: %s\noutlet: %q\ntimeout: 5s\nretries: 1\ndelay: 10ms\n%s",
					a.port, c.preset, c.outlet, security[sec]))
				defer d.Close()
				if err := d.On(ctx); err != nil {
					t.Fatalf("on: %v", err)
				}
				if got := a.read(t, c.status); got != c.on {
					t.Fatalf("agent's %s = %s after on, want %s", c.status, got, c.on)
				}
				checkState(t, d, power.On)
				if err := d.Off(ctx); err != nil {
					t.Fatalf("off: %v", err)
				}
				if got := a.read(t, c.status); got != c.off {
					t.Fatalf("agent's %s = %s after off, want %s", c.status, got, c.off)
				}
				checkState(t, d, power.Off)
				// Native reboot where the preset has one, else off/delay/on.
				if err := power.Cycle(ctx, d, 0); err != nil {
					t.Fatalf("cycle: %v", err)
				}
				checkState(t, d, power.On)
				if err := power.Cycle(ctx, d, 20*time.Millisecond); err != nil {
					t.Fatalf("cycle with delay: %v", err)
				}
				checkState(t, d, power.On)
				if err := d.Reset(ctx); err != nil {
					t.Fatalf("reset: %v", err)
				}
				checkState(t, d, power.Off)
			})
		}
	}
}

func checkState(t *testing.T, d *Driver, want power.State) {
	t.Helper()
	got, err := d.State(ctxT(t))
	if err != nil {
		t.Fatalf("state: %v", err)
	}
	if got != want {
		t.Fatalf("state = %s, want %s", got, want)
	}
}

func TestNativeCycleUsesRebootValue(t *testing.T) {
	a := startAgent(t)
	ctx := ctxT(t)
	d := build(t, "snmp", fmt.Sprintf("host: 127.0.0.1\nport: %d\npreset: raritan\noutlet: 1\ncommunity: %s\n", a.port, rwCommunity))
	if err := d.Cycle(ctx, 0); err != nil {
		t.Fatal(err)
	}
	// The pass script stores the last value written to a control OID.
	if got := a.read(t, "1.3.6.1.4.1.13742.6.4.1.2.1.2.1.1"); got != "2" {
		t.Fatalf("raritan control OID = %s after cycle, want 2 (cycle)", got)
	}
}

func TestGenericAndJumpstarterShapes(t *testing.T) {
	a := startAgent(t)
	tests := []struct {
		name, yaml string
		state      power.State // after On
	}{
		{"generic with status map", fmt.Sprintf(`
host: 127.0.0.1
port: %d
community: %s
preset: generic
outlet: 2
set_oid: 1.3.6.1.4.1.318.1.1.26.9.2.4.1.5.{outlet}
on: 1
off: 2
cycle: 3
status_oid: .1.3.6.1.4.1.318.1.1.26.9.2.3.1.5.{outlet}
status_on: [2]
status_off: [1]
`, a.port, rwCommunity), power.On},
		{"generic without status", fmt.Sprintf(`
host: 127.0.0.1
port: %d
version: 1
community: %s
preset: generic
outlet: 3
set_oid: 1.3.6.1.4.1.318.1.1.4.4.2.1.3.{outlet}
on: 1
off: 2
`, a.port, rwCommunity), power.Unknown},
		// Jumpstarter's own example: v3 user, plug, oid, NONE protocols,
		// null keys and a timeout in seconds.
		{"jumpstarter with oid", fmt.Sprintf(`
host: 127.0.0.1
user: %s
plug: 3
port: %d
oid: "1.3.6.1.4.1.13742.6.4.1.2.1.2.1"
auth_protocol: "NONE"
auth_key: null
priv_protocol: "NONE"
priv_key: null
timeout: 5.0
`, v3NoAuth, a.port), power.Unknown},
		{"jumpstarter without oid is raritan", fmt.Sprintf(`
host: 127.0.0.1
user: %s
plug: 4
port: %d
timeout: 3
quiescent_period: 1
`, v3NoAuth, a.port), power.On},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			d, err := tryBuild("jumpstarter_driver_snmp.driver.SNMPServer", tt.yaml)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.On(ctx); err != nil {
				t.Fatalf("on: %v", err)
			}
			got, err := d.State(ctx)
			if err != nil || got != tt.state {
				t.Fatalf("state = %v, %v; want %v", got, err, tt.state)
			}
			if err := d.Off(ctx); err != nil {
				t.Fatalf("off: %v", err)
			}
		})
	}
	// Jumpstarter writes 1 and 0 to oid.plug.
	if got := a.read(t, "1.3.6.1.4.1.13742.6.4.1.2.1.3.1.3"); got != "8" {
		t.Fatalf("raritan outlet 3 status = %s after jumpstarter-style off, want 8", got)
	}
}

func TestAgentErrors(t *testing.T) {
	a := startAgent(t)
	// Generous timeouts: a loaded machine forks the pass script slowly.
	base := fmt.Sprintf("host: 127.0.0.1\nport: %d\ntimeout: 5s\nretries: 1\n", a.port)
	quick := fmt.Sprintf("host: 127.0.0.1\nport: %d\ntimeout: 300ms\nretries: 0\n", a.port)
	apcOutlet1 := "1.3.6.1.4.1.318.1.1.4.4.2.1.3.1"
	tests := []struct {
		name, yaml string
		status     gosnmp.SNMPError // 0: not an AgentError
		want       []string         // substrings of the message
	}{
		{"read-only community v2c", base + "community: public\noutlet: 1\n",
			gosnmp.NoAccess, []string{"127.0.0.1:", apcOutlet1 + "=1", "noAccess"}},
		{"read-only community v1", base + "version: 1\ncommunity: public\noutlet: 1\n",
			gosnmp.NoSuchName, []string{"127.0.0.1:", apcOutlet1 + "=1", "noSuchName"}},
		{"rejected value", base + "community: private\npreset: generic\noutlet: 1\nset_oid: 1.3.6.1.4.1.318.1.1.4.4.2.1.3.{outlet}\non: 9\noff: 2\n",
			gosnmp.WrongValue, []string{"127.0.0.1:", apcOutlet1 + "=9", "wrongValue"}},
		{"rejected value v1", base + "version: 1\ncommunity: private\npreset: generic\noutlet: 1\nset_oid: 1.3.6.1.4.1.318.1.1.4.4.2.1.3.{outlet}\non: 9\noff: 2\n",
			gosnmp.BadValue, []string{apcOutlet1 + "=9", "badValue"}},
		{"no such outlet", base + "community: private\noutlet: 77\n",
			gosnmp.NotWritable, []string{"1.3.6.1.4.1.318.1.1.4.4.2.1.3.77=1", "no such outlet"}},
		{"unknown community is dropped", quick + "community: nosuch\noutlet: 1\n",
			0, []string{"127.0.0.1:", apcOutlet1 + "=1", "no reply to 1 request of 300ms"}},
		{"wrong v3 password", base + fmt.Sprintf("user: %s\nauth_protocol: SHA\nauth_password: wrongpassword\npriv_protocol: AES\npriv_password: %s\noutlet: 1\n", v3User, v3Priv),
			0, []string{"127.0.0.1:", "rejected SNMPv3 user \"pogo\""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := build(t, "snmp", tt.yaml)
			err := d.On(ctxT(t))
			if err == nil {
				t.Fatal("on succeeded, want an error")
			}
			var ae *AgentError
			if tt.status != 0 {
				if !errors.As(err, &ae) || ae.Status != tt.status {
					t.Fatalf("err = %v, want agent status %v", err, tt.status)
				}
			}
			t.Log(err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestAgentDown(t *testing.T) {
	// A bound socket that never answers: a hung or firewalled agent.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	port := silent.LocalAddr().(*net.UDPAddr).Port
	d := build(t, "snmp", fmt.Sprintf("host: 127.0.0.1\nport: %d\noutlet: 1\ntimeout: 200ms\nretries: 1\n", port))
	start := time.Now()
	err = d.Off(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) || !strings.Contains(err.Error(), "no reply to 2 requests") {
		t.Fatalf("err = %v, want a timeout naming the host", err)
	}
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("err = %v, want it to wrap errdefs.ErrUnavailable", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %s, want about 2×200ms", el)
	}
	if _, err := d.State(ctxT(t)); err == nil {
		t.Error("state succeeded against a silent agent")
	}

	// Nothing listening: the kernel refuses at once.
	silent.Close()
	err = d.On(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("err = %v, want an unavailable error naming the host", err)
	}
	t.Log(err)
}

func TestStoppedAgent(t *testing.T) {
	a := startAgent(t)
	d := build(t, "snmp", fmt.Sprintf("host: 127.0.0.1\nport: %d\ncommunity: private\noutlet: 1\ntimeout: 1s\nretries: 0\n", a.port))
	if err := d.On(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	a.stop()
	err := d.Off(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", a.port)) || !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("err = %v, want an unavailable error naming the host", err)
	}
}

func TestCancelledContext(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	d := build(t, "snmp", fmt.Sprintf("host: 127.0.0.1\nport: %d\noutlet: 1\ntimeout: 10s\n", silent.LocalAddr().(*net.UDPAddr).Port))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = d.On(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("took %s; the context deadline was 200ms", el)
	}
}
