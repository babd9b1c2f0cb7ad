// Package snmp is the power backend for network PDUs and PoE switches
// driven over SNMP v1, v2c or v3. One outlet per driver; a vendor is a
// preset naming the outlet's control and status OIDs, and "generic" takes
// them from the config. It reads the outlet back after every switch.
//
// It is not an SNMP toolkit: walks, traps and MIB parsing are out of scope.
package snmp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/power"
)

func init() {
	drivers.Register(drivers.Kind{
		Name:    "snmp",
		Aliases: []string{"jumpstarter_driver_snmp.driver.SNMPServer"},
		New: func(ctx context.Context, b *drivers.Build) (drivers.Driver, error) {
			s, err := parseConfig(b.Config)
			if err != nil {
				return nil, err
			}
			log := b.Log
			if log == nil {
				log = slog.New(slog.DiscardHandler)
			}
			d := &Driver{s: s, log: log}
			if s.table.status == nil {
				log.Warn("snmp: no status_oid: switches are not verified and status reads unknown", "outlet", s.outlet)
			}
			return d, nil
		},
	})
}

// Driver switches one PDU outlet.
type Driver struct {
	s   settings
	log *slog.Logger
	// mu keeps one operation at a time on the outlet, so a cycle's off and
	// on are not interleaved with another caller's switch.
	mu sync.Mutex
}

var (
	_ power.Switcher   = (*Driver)(nil)
	_ power.Cycler     = (*Driver)(nil)
	_ power.Reader     = (*Driver)(nil)
	_ drivers.Resetter = (*Driver)(nil)
)

// On switches the outlet on and waits until it reads back on.
func (d *Driver) On(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.switchTo(ctx, true)
}

// Off switches the outlet off and waits until it reads back off.
func (d *Driver) Off(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.switchTo(ctx, false)
}

// Cycle uses the PDU's own reboot command when the preset has one and no
// delay is asked for (the PDU then applies its configured reboot delay);
// otherwise it switches off, waits delay (or the configured delay) and
// switches on.
func (d *Driver) Cycle(ctx context.Context, delay time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if delay == 0 && d.s.table.cycle != nil {
		// No read-back: during the PDU's reboot delay the outlet may
		// read either way.
		return d.set(ctx, *d.s.table.cycle)
	}
	if delay == 0 {
		delay = d.s.delay
	}
	off := func(ctx context.Context) error { return d.switchTo(ctx, false) }
	on := func(ctx context.Context) error { return d.switchTo(ctx, true) }
	err := power.OffWaitOn(ctx, off, on, delay)
	if err != nil && err == ctx.Err() {
		return fmt.Errorf("snmp: cycle outlet %s on %s: %w", d.s.outlet, d.addr(), ctx.Err())
	}
	return err
}

// State reads the outlet's status OID; Unknown when the preset has none.
func (d *Driver) State(ctx context.Context) (power.State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.s.table.status
	if st == nil {
		return power.Unknown, nil
	}
	v, err := d.get(ctx, st.oid)
	if err != nil {
		return power.Unknown, err
	}
	on, known := st.state(v)
	switch {
	case !known:
		return power.Unknown, nil
	case on:
		return power.On, nil
	}
	return power.Off, nil
}

// Reset applies the configured safe state.
func (d *Driver) Reset(ctx context.Context) error {
	switch d.s.def {
	case "on":
		return d.On(ctx)
	case "off":
		return d.Off(ctx)
	}
	return nil
}

// Close has nothing to release: every operation opens its own socket.
func (d *Driver) Close() error { return nil }

// Description names the PDU and outlet for reports.
func (d *Driver) Description() string {
	return fmt.Sprintf("%s outlet %s on %s (SNMPv%s)", d.s.preset, d.s.outlet, d.addr(), d.s.version)
}

func (d *Driver) addr() string {
	return net.JoinHostPort(d.s.host, strconv.Itoa(int(d.s.port)))
}

// switchTo sets the outlet and polls its status until it agrees: PDUs
// apply a switch asynchronously (Eaton's command is a delay in seconds,
// APC may sequence outlets), so one read right after the set can lag.
func (d *Driver) switchTo(ctx context.Context, on bool) error {
	a, want := d.s.table.off, "off"
	if on {
		a, want = d.s.table.on, "on"
	}
	if err := d.set(ctx, a); err != nil {
		return err
	}
	st := d.s.table.status
	if st == nil {
		return nil
	}
	deadline := time.Now().Add(d.s.timeout)
	for {
		v, err := d.get(ctx, st.oid)
		if err != nil {
			return fmt.Errorf("snmp: read back outlet %s after switching %s: %w", d.s.outlet, want, err)
		}
		if got, known := st.state(v); known && got == on {
			d.log.Debug("snmp: outlet switched", "outlet", d.s.outlet, "state", want, "host", d.addr())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("snmp: outlet %s on %s: %s reads %d %s after switching %s (on is %v, off is %v)",
				d.s.outlet, d.addr(), st.oid, v, stateWord(st, v), want, st.on, st.off)
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("snmp: outlet %s on %s: waiting for %s: %w", d.s.outlet, d.addr(), want, ctx.Err())
		case <-t.C:
		}
	}
}

func stateWord(st *status, v int) string {
	on, known := st.state(v)
	switch {
	case !known:
		return "(neither on nor off)"
	case on:
		return "(on)"
	}
	return "(off)"
}

func (d *Driver) set(ctx context.Context, a action) error {
	what := fmt.Sprintf("set %s=%d", a.oid, a.value)
	d.log.Debug("snmp: "+what, "host", d.addr())
	pkt, err := d.do(ctx, what, func(g *gosnmp.GoSNMP) (*gosnmp.SnmpPacket, error) {
		return g.Set([]gosnmp.SnmpPDU{{Name: a.oid, Type: gosnmp.Integer, Value: a.value}})
	})
	if err != nil {
		return err
	}
	if pkt.Error != gosnmp.NoError {
		return &AgentError{Addr: d.addr(), Op: "set", OID: a.oid, Value: strconv.Itoa(a.value), Status: pkt.Error}
	}
	return nil
}

func (d *Driver) get(ctx context.Context, oid string) (int, error) {
	what := "get " + oid
	pkt, err := d.do(ctx, what, func(g *gosnmp.GoSNMP) (*gosnmp.SnmpPacket, error) {
		return g.Get([]string{oid})
	})
	if err != nil {
		return 0, err
	}
	if pkt.Error != gosnmp.NoError {
		return 0, &AgentError{Addr: d.addr(), Op: "get", OID: oid, Status: pkt.Error}
	}
	if len(pkt.Variables) != 1 {
		return 0, fmt.Errorf("snmp: %s on %s: reply has %d values, want 1", what, d.addr(), len(pkt.Variables))
	}
	v := pkt.Variables[0]
	switch v.Type {
	case gosnmp.NoSuchObject, gosnmp.NoSuchInstance, gosnmp.EndOfMibView, gosnmp.Null:
		return 0, fmt.Errorf("snmp: %s on %s: agent has no such object (wrong outlet, or the preset does not match this PDU)", what, d.addr())
	}
	n := gosnmp.ToBigInt(v.Value)
	if (v.Type != gosnmp.Integer && v.Type != gosnmp.Gauge32 && v.Type != gosnmp.Uinteger32) || !n.IsInt64() {
		return 0, fmt.Errorf("snmp: %s on %s: reply is %s %v, want an integer", what, d.addr(), v.Type, v.Value)
	}
	return int(n.Int64()), nil
}

// do runs one request on a fresh session. A session per operation costs a
// socket and, for v3, an engine discovery; in exchange a PDU that reboots
// (new engine boots, new address from DNS) needs no reconnect logic.
func (d *Driver) do(ctx context.Context, what string, f func(*gosnmp.GoSNMP) (*gosnmp.SnmpPacket, error)) (*gosnmp.SnmpPacket, error) {
	g := &gosnmp.GoSNMP{
		Target:    d.s.host,
		Port:      d.s.port,
		Transport: "udp",
		Community: d.s.community,
		Version:   d.s.version,
		Context:   ctx,
		Timeout:   d.s.timeout,
		Retries:   d.s.retries,
		MaxOids:   gosnmp.MaxOids,
	}
	if d.s.version == gosnmp.Version3 {
		g.SecurityModel = gosnmp.UserSecurityModel
		g.MsgFlags = gosnmp.NoAuthNoPriv
		if d.s.auth != gosnmp.NoAuth {
			g.MsgFlags = gosnmp.AuthNoPriv
			if d.s.priv != gosnmp.NoPriv {
				g.MsgFlags = gosnmp.AuthPriv
			}
		}
		g.SecurityParameters = &gosnmp.UsmSecurityParameters{
			UserName:                 d.s.user,
			AuthenticationProtocol:   d.s.auth,
			AuthenticationPassphrase: d.s.authPass,
			PrivacyProtocol:          d.s.priv,
			PrivacyPassphrase:        d.s.privPass,
		}
	}
	if err := g.Connect(); err != nil {
		return nil, fmt.Errorf("snmp: %s on %s: %w: %w", what, d.addr(), errdefs.ErrUnavailable, err)
	}
	defer g.Conn.Close()
	pkt, err := f(g)
	if err == nil {
		return pkt, nil
	}
	tries := d.s.retries + 1
	switch {
	case expired(ctx) != nil:
		return nil, fmt.Errorf("snmp: %s on %s: %w", what, d.addr(), expired(ctx))
	case isTimeout(err):
		plural := "s"
		if tries == 1 {
			plural = ""
		}
		return nil, fmt.Errorf("snmp: %s on %s: no reply to %d request%s of %s (agent down or unreachable, or it dropped a wrong community/user): %w",
			what, d.addr(), tries, plural, d.s.timeout, errdefs.ErrUnavailable)
	case badCredentials(err):
		return nil, fmt.Errorf("snmp: %s on %s: agent rejected SNMPv3 user %q (check user, protocols and passwords): %w",
			what, d.addr(), d.s.user, err)
	case isRefused(err):
		return nil, fmt.Errorf("snmp: %s on %s: nothing listens there (agent down?): %w: %w", what, d.addr(), errdefs.ErrUnavailable, err)
	}
	return nil, fmt.Errorf("snmp: %s on %s: %w", what, d.addr(), err)
}

// expired is ctx.Err(), also when the deadline has passed but the
// context's timer has not fired yet: gosnmp stops at the deadline itself.
func expired(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, gosnmp.ErrMaxRetriesExceeded)
}

func badCredentials(err error) bool {
	return errors.Is(err, gosnmp.ErrWrongDigest) || errors.Is(err, gosnmp.ErrUnknownUsername) ||
		errors.Is(err, gosnmp.ErrDecryption) || errors.Is(err, gosnmp.ErrUnknownSecurityLevel) ||
		// gosnmp v1.47.0 reports a reply signed with another key (the
		// agent's report to a wrong password) with no sentinel.
		strings.Contains(err.Error(), "not authentic")
}

func isRefused(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}

// AgentError is an error status in the agent's reply. gosnmp returns
// these as a successful exchange; the driver turns them into errors.
type AgentError struct {
	Addr   string
	Op     string
	OID    string
	Value  string // empty for a get
	Status gosnmp.SNMPError
}

func (e *AgentError) Error() string {
	what := e.Op + " " + e.OID
	if e.Value != "" {
		what += "=" + e.Value
	}
	return fmt.Sprintf("snmp: %s on %s: agent replied %s%s", what, e.Addr, statusName(e.Status), hint(e.Status))
}

// statusName spells a status as RFC 3416 does (noAccess, wrongValue).
func statusName(s gosnmp.SNMPError) string {
	n := s.String()
	if n == "" || n[0] < 'A' || n[0] > 'Z' {
		return n
	}
	return string(n[0]+'a'-'A') + n[1:]
}

func hint(s gosnmp.SNMPError) string {
	switch s {
	case gosnmp.NoAccess, gosnmp.AuthorizationError, gosnmp.ReadOnly:
		return " (the community or user may read but not write; check rwcommunity/rwuser on the PDU)"
	case gosnmp.WrongValue, gosnmp.BadValue, gosnmp.WrongType, gosnmp.InconsistentValue:
		return " (the PDU refuses this value; check preset or on/off/cycle values)"
	case gosnmp.NoSuchName, gosnmp.NotWritable, gosnmp.NoCreation, gosnmp.InconsistentName:
		return " (no such outlet, or the preset does not match this PDU)"
	}
	return ""
}
