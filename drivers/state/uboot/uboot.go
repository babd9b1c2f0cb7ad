// Package uboot is the board-state backend of U-Boot boards (kind uboot):
// it binds a board's power and console (and a tftp server for the flasher
// state) and takes the board to off, bootloader (at the U-Boot prompt,
// autoboot stopped), flasher (a flasher bundle netbooted to its shell) or
// os (the installed OS booted from the board's storage, at its shell
// prompt), walking the states between. Every step has its own timeout and
// fails naming itself with the last console lines; a failed transition
// latches the board as broken until a Force or a power-off through the
// exporter. The flasher (drivers/flasher) builds its board handling on it.
package uboot

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
	"github.com/pogolab/pogo/bundles"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/files"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/state"
)

func init() {
	drivers.Register(drivers.Kind{Name: "uboot", New: New})
}

// Steps a transition reports and names in its errors.
const (
	StepPower      = "power"
	StepBootloader = "bootloader"
	StepBundle     = "bundle"
	StepDHCP       = "dhcp"
	StepTFTP       = "tftp"
	StepBoot       = "boot"
	StepOS         = "os"
	StepLogin      = "login"
)

// Config is the uboot node's config.
type Config struct {
	// Prompt is U-Boot's prompt ("=> ").
	Prompt string `yaml:"prompt"`
	// Autoboot is what U-Boot prints while it counts down ("Hit any key
	// to stop autoboot"); Interrupt is what stops it (a space, then
	// Ctrl-C to clear the line).
	Autoboot  string `yaml:"autoboot"`
	Interrupt string `yaml:"interrupt"`
	// BootloaderTimeout is power-on to the U-Boot prompt.
	BootloaderTimeout time.Duration `yaml:"bootloader_timeout"`
	// CommandTimeout bounds a U-Boot or shell command.
	CommandTimeout time.Duration `yaml:"command_timeout"`
	DHCPTimeout    time.Duration `yaml:"dhcp_timeout"`
	DHCPRetries    int           `yaml:"dhcp_retries"`
	TFTPTimeout    time.Duration `yaml:"tftp_timeout"`
	// FlasherTimeout is the flasher's boot command to its shell.
	FlasherTimeout time.Duration `yaml:"flasher_timeout"`
	// OSBootCommand boots the installed OS from the U-Boot prompt
	// (default: U-Boot's own bootcmd; from power-off the board then
	// simply autoboots).
	OSBootCommand string `yaml:"os_boot_command"`
	// OSTimeout is the OS's boot to its shell prompt.
	OSTimeout time.Duration `yaml:"os_timeout"`
	// OSLogin is the OS's login (none when User is empty).
	OSLogin Login `yaml:"os_login"`
	// OSPrompt is the OS shell's prompt ("# ").
	OSPrompt string `yaml:"os_prompt"`
	// CycleDelay is how long the board stays off when a transition power
	// cycles it (0: the power driver's own cycle, or 2s).
	CycleDelay time.Duration `yaml:"cycle_delay"`
	// FlasherBundle is the flasher state's bundle (a directory,
	// oci-layout:PATH or a registry reference); without it the board
	// offers no flasher state of its own (the flasher driver brings its
	// bundle).
	FlasherBundle string `yaml:"flasher_bundle"`
	Variant       string `yaml:"variant"`
	CacheDir      string `yaml:"cache_dir"`
}

// Login is how to reach a shell once a system booted.
type Login struct {
	User        string `yaml:"user"`
	Password    string `yaml:"password"`
	LoginPrompt string `yaml:"login_prompt"`
}

// Defaults fills what is unset with values that work for Debian's U-Boot
// and the virtual board.
func (c *Config) Defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.BootloaderTimeout, 60*time.Second)
	def(&c.CommandTimeout, time.Minute)
	def(&c.DHCPTimeout, 30*time.Second)
	def(&c.TFTPTimeout, 5*time.Minute)
	def(&c.FlasherTimeout, 3*time.Minute)
	def(&c.OSTimeout, 3*time.Minute)
	str := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	str(&c.Prompt, "=> ")
	str(&c.Autoboot, "Hit any key to stop autoboot")
	str(&c.Interrupt, " \x03")
	str(&c.OSPrompt, "# ")
	str(&c.OSLogin.LoginPrompt, "login:")
	if c.DHCPRetries == 0 {
		c.DHCPRetries = 3
	}
	if c.CacheDir == "" {
		c.CacheDir = bundles.DefaultCacheDir()
	}
}

// Check refuses a config that cannot work, naming the field.
func (c *Config) Check() error {
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"bootloader_timeout", c.BootloaderTimeout}, {"command_timeout", c.CommandTimeout},
		{"dhcp_timeout", c.DHCPTimeout}, {"tftp_timeout", c.TFTPTimeout}, {"flasher_timeout", c.FlasherTimeout},
		{"os_timeout", c.OSTimeout}, {"cycle_delay", c.CycleDelay},
	} {
		if d.v < 0 {
			return drivers.FieldErr(d.key, "must not be negative, got %s", d.v)
		}
	}
	if c.DHCPRetries < 0 || c.DHCPRetries > 100 {
		return drivers.FieldErr("dhcp_retries", "want 0 to 100, got %d", c.DHCPRetries)
	}
	if c.OSLogin.Password != "" && c.OSLogin.User == "" {
		return drivers.FieldErr("os_login", "a password needs a user")
	}
	if strings.TrimSpace(c.Prompt) == "" {
		return drivers.FieldErr("prompt", "must not be blank")
	}
	if strings.TrimSpace(c.OSPrompt) == "" {
		return drivers.FieldErr("os_prompt", "must not be blank")
	}
	return nil
}

// FileServer is what the flasher state needs of a tftp server.
type FileServer interface {
	files.Store
	files.Locator
}

// Parts are what a Machine drives.
type Parts struct {
	Power   power.Switcher
	Console console.Attacher
	// TFTP serves the flasher's boot files (nil: no flasher state).
	TFTP FileServer
	// PowerPath is the tree path of the power driver, whose calls through
	// the exporter invalidate the machine's state ("" to not watch).
	PowerPath string
}

// Machine is a U-Boot board's state machine. It implements state.Machine.
type Machine struct {
	cfg     Config
	log     *slog.Logger
	power   power.Switcher
	console console.Attacher
	tftp    FileServer
	stop    func()

	// busy is held by a transition and by the session a caller Acquired.
	busy sync.Mutex

	mu          sync.Mutex
	cur         string
	broken      error
	activity    string
	cancel      context.CancelCauseFunc // of the running transition
	interrupted power.Op

	stagedMu sync.Mutex
	staged   map[string]string
}

var (
	_ state.Machine    = (*Machine)(nil)
	_ drivers.Resetter = (*Machine)(nil)
)

// New builds a machine from its node: children power and console
// (required), tftp (for the flasher state).
func New(_ context.Context, b *drivers.Build) (drivers.Driver, error) {
	var cfg Config
	if err := b.Config.Decode(&cfg); err != nil {
		return nil, err
	}
	sw, err := drivers.ChildAs[power.Switcher](b, "power", "power")
	if err != nil {
		return nil, err
	}
	con, err := drivers.ChildAs[console.Attacher](b, "console", "console")
	if err != nil {
		return nil, err
	}
	p := Parts{Power: sw, Console: con, PowerPath: b.ChildPaths["power"]}
	if _, ok := b.Children["tftp"]; ok {
		if p.TFTP, err = drivers.ChildAs[FileServer](b, "tftp", "files"); err != nil {
			return nil, err
		}
	}
	if cfg.FlasherBundle != "" && p.TFTP == nil {
		return nil, &drivers.ChildError{Name: "tftp", Msg: "required for the flasher state (flasher_bundle is set)"}
	}
	return Open(cfg, p, b.Log)
}

// Open builds a machine from a typed config (the flasher builds its own
// when it has no state child). It fills cfg's defaults.
func Open(cfg Config, p Parts, log *slog.Logger) (*Machine, error) {
	cfg.Defaults()
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if p.Power == nil || p.Console == nil {
		return nil, errors.New("uboot: a machine needs power and a console")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Machine{cfg: cfg, log: log, power: p.Power, console: p.Console, tftp: p.TFTP, cur: state.Unknown, staged: map[string]string{}}
	if p.PowerPath != "" {
		m.stop = power.Watch(func(path string, op power.Op) {
			// A parent's power part (the virtual board's) sits below it.
			if path == p.PowerPath || strings.HasPrefix(path, p.PowerPath+".") {
				m.powerChanged(op)
			}
		})
	}
	return m, nil
}

// Description implements drivers.Describer.
func (m *Machine) Description() string {
	return "U-Boot board states: " + strings.Join(m.states(), ", ")
}

// Close stops watching the power.
func (m *Machine) Close() error {
	if m.stop != nil {
		m.stop()
	}
	return nil
}

// Reset powers the board off and forgets a broken latch (session end).
func (m *Machine) Reset(ctx context.Context) error {
	err := m.power.Off(ctx)
	m.mu.Lock()
	if err == nil {
		m.cur, m.broken = state.Off, nil
	} else {
		m.cur = state.Unknown
	}
	m.mu.Unlock()
	return err
}

// powerChanged is a power call made through the exporter: it ends a
// running transition and invalidates the state; a power-off also clears
// the broken latch (the board is in a known state again).
func (m *Machine) powerChanged(op power.Op) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel != nil {
		m.interrupted = op
		m.cancel(fmt.Errorf("the board was powered %s through the exporter", op))
	}
	if op == power.OpOff {
		m.cur, m.broken = state.Off, nil
	} else {
		m.cur = state.Unknown
	}
}

func (m *Machine) states() []string {
	s := []string{state.Off, state.Bootloader}
	if m.cfg.FlasherBundle != "" {
		s = append(s, state.Flasher)
	}
	return append(s, state.OS)
}

// States implements state.Machine.
func (m *Machine) States(context.Context) ([]string, error) { return m.states(), nil }

// Get implements state.Machine. A power driver that reads its supply
// back overrides the cached state when the board is off.
func (m *Machine) Get(ctx context.Context) (state.Status, error) {
	m.mu.Lock()
	st := state.Status{State: m.cur}
	if m.broken != nil {
		st.Broken = m.broken.Error()
	}
	running := m.cancel != nil
	m.mu.Unlock()
	if r, ok := m.power.(power.Reader); ok && !running {
		ps, err := r.State(ctx)
		if err == nil && ps == power.Off && st.State != state.Off {
			st.State = state.Off
			m.mu.Lock()
			m.cur = state.Off
			m.mu.Unlock()
		}
	}
	return st, nil
}

// Force implements state.Machine.
func (m *Machine) Force(_ context.Context, st string) error {
	if st != state.Unknown && !slices.Contains(m.states(), st) {
		return errdefs.Invalidf("unknown state %q (states: %s)", st, strings.Join(m.states(), ", "))
	}
	m.mu.Lock()
	m.cur, m.broken = st, nil
	m.mu.Unlock()
	return nil
}

// Transition implements state.Machine: the console is held for the
// transition and released once the target is reached.
func (m *Machine) Transition(ctx context.Context, target string, progress func(state.Event)) error {
	s, err := m.Acquire(ctx, target, Options{}, progress)
	if err != nil {
		return err
	}
	if s != nil {
		s.Close()
	}
	return nil
}

// Options tune Acquire.
type Options struct {
	// Netboot replaces the configured flasher bundle (the flasher passes
	// its own).
	Netboot *Netboot
	// Fresh starts from power-off whatever the cached state, and
	// clears a broken latch: the flasher, which retries on its own terms,
	// always boots its flasher anew.
	Fresh bool
	// Holder says who holds the console after the transition ("flashing"),
	// for the busy error other writers get.
	Holder string
	// Console receives the console output while the session lasts.
	Console func([]byte)
}

// Power is the board's power as the machine's users should switch it: it
// keeps the cached state right.
func (m *Machine) Power() power.Switcher { return machinePower{m} }

type machinePower struct{ m *Machine }

func (p machinePower) On(ctx context.Context) error {
	err := p.m.power.On(ctx)
	p.m.setState(state.Unknown)
	return err
}

func (p machinePower) Off(ctx context.Context) error {
	err := p.m.power.Off(ctx)
	if err == nil {
		p.m.setState(state.Off)
	} else {
		p.m.setState(state.Unknown)
	}
	return err
}

func (m *Machine) setState(s string) {
	m.mu.Lock()
	m.cur = s
	m.mu.Unlock()
}

func (m *Machine) busyMsg() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return "board busy: " + m.activity
}

// Acquire takes the board to target and returns its console, held, at
// the target's prompt (nil for off). Close the session to free the board
// for other transitions and the console for other writers.
func (m *Machine) Acquire(ctx context.Context, target string, opts Options, progress func(state.Event)) (_ *Session, err error) {
	if !slices.Contains(m.states(), target) && !(target == state.Flasher && opts.Netboot != nil) {
		return nil, errdefs.Invalidf("unknown state %q (states: %s)", target, strings.Join(m.states(), ", "))
	}
	if !m.busy.TryLock() {
		return nil, fmt.Errorf("%s: %w", m.busyMsg(), errdefs.ErrInUse)
	}
	m.mu.Lock()
	if opts.Fresh {
		m.broken = nil
	}
	if m.broken != nil {
		broken := m.broken
		m.mu.Unlock()
		m.busy.Unlock()
		return nil, fmt.Errorf("%w since a transition failed (%v); force a state or power the board off to clear it: %w", state.ErrBroken, broken, errdefs.ErrPrecondition)
	}
	from := m.cur
	m.activity = "transition to " + target + " in progress"
	ctx, cancel := context.WithCancelCause(ctx)
	m.cancel = cancel
	m.interrupted = ""
	m.mu.Unlock()
	if from != state.Off && !opts.Fresh {
		// A board switched off behind the machine's back is off.
		if r, ok := m.power.(power.Reader); ok {
			if ps, err := r.State(ctx); err == nil && ps == power.Off {
				from = state.Off
			}
		}
	}
	if opts.Fresh {
		from = state.Unknown
	}
	emitEvent := func(e state.Event) {
		if progress != nil {
			progress(e)
		}
	}
	emit := func(step, msg string) {
		m.log.Info("uboot: "+step, "msg", msg)
		emitEvent(state.Event{Step: step, Message: msg})
	}
	reached := func(s string) {
		m.setState(s)
		m.log.Info("uboot: state reached", "state", s)
		emitEvent(state.Event{Reached: s})
	}

	var s *Session
	released := false
	release := func() {
		m.mu.Lock()
		m.activity = ""
		m.mu.Unlock()
		released = true
		m.busy.Unlock()
	}
	defer func() {
		m.mu.Lock()
		m.cancel = nil
		op := m.interrupted
		m.interrupted = ""
		m.mu.Unlock()
		callerGone := ctx.Err() != nil && op == ""
		cancel(nil)
		if err == nil {
			return
		}
		var se *StepError
		stepFailed := errors.As(err, &se)
		if stepFailed && se.Console == "" && s != nil {
			se.Console = lastLines(s.TranscriptTail(600), 3)
		}
		if s != nil {
			s.release = nil
			s.Close()
		}
		switch {
		case op != "":
			// The user switched the power: the state is what they made it.
			err = fmt.Errorf("transition to %s ended: the board was powered %s through the exporter (%v): %w", target, op, err, errdefs.ErrUnavailable)
		case stepFailed && se.Step != StepBundle:
			// Board safety: a failed transition leaves the board off.
			offCtx, c := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			perr := m.power.Off(offCtx)
			c()
			m.mu.Lock()
			m.cur = state.Off
			if perr != nil {
				m.cur = state.Unknown
			}
			if !callerGone {
				// A board failure, not a caller giving up: latch it.
				m.broken = err
			}
			m.mu.Unlock()
		}
		if !released {
			release()
		}
	}()

	plan := m.plan(from, target, opts.Netboot != nil)
	m.log.Info("uboot: transition", "from", from, "to", target, "chain", plan)
	var st *staged
	if slices.Contains(plan, state.Flasher) {
		nb := opts.Netboot
		if nb == nil {
			if nb, err = m.bundle(ctx); err != nil {
				return nil, err
			}
		}
		if st, err = m.prepare(ctx, nb, emit); err != nil {
			return nil, err
		}
	}
	if target != state.Off {
		att, aerr := m.attach(ctx)
		if aerr != nil {
			// Not the board's fault: nothing to latch.
			return nil, fmt.Errorf("attach to the console: %w", aerr)
		}
		s = newSession(att, opts.Console, nil)
	}
	prev := from
	w := &walk{s: s, st: st, emit: emit}
	for _, next := range plan {
		if err := m.step(ctx, w, prev, next); err != nil {
			return nil, err
		}
		reached(next)
		prev = next
	}
	if target == state.Off {
		if s != nil {
			s.Close()
		}
		release()
		return nil, nil
	}
	switch target {
	case state.Bootloader:
		s.prompt = m.cfg.Prompt
	case state.OS:
		s.prompt = m.cfg.OSPrompt
	}
	holder := opts.Holder
	if holder == "" {
		holder = "a client"
	}
	m.mu.Lock()
	m.activity = "held in state " + target + " by " + holder
	m.mu.Unlock()
	s.release = release
	return s, nil
}

// attach takes the console's write side. A client that has just closed
// its writer attachment (j board console, then j state) is detached by
// the exporter a moment later: the attach is tried again for a while.
func (m *Machine) attach(ctx context.Context) (io.ReadWriteCloser, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		att, err := m.console.Attach(context.WithoutCancel(ctx), console.AttachOptions{Write: true, Busy: m.busyMsg})
		if err == nil || !errors.Is(err, errdefs.ErrInUse) || time.Now().After(deadline) {
			return att, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// bundle loads the configured flasher bundle.
func (m *Machine) bundle(ctx context.Context) (*Netboot, error) {
	if m.cfg.FlasherBundle == "" {
		return nil, stepf(StepBundle, "no flasher_bundle configured: %w", errdefs.ErrUnsupported)
	}
	b, err := bundles.Pull(ctx, m.cfg.FlasherBundle, m.cfg.CacheDir)
	if err != nil {
		return nil, &StepError{Step: StepBundle, Err: err}
	}
	return &Netboot{Ref: m.cfg.FlasherBundle, Dir: b.Dir, Spec: &b.Manifest.Spec, Variant: m.cfg.Variant}, nil
}

// plan is the chain of states a transition walks from from to target.
func (m *Machine) plan(from, target string, _ bool) []string {
	if from == target {
		return nil
	}
	switch target {
	case state.Off:
		return []string{state.Off}
	case state.Bootloader:
		return []string{state.Off, state.Bootloader}
	case state.Flasher:
		if from == state.Bootloader {
			return []string{state.Flasher}
		}
		return []string{state.Off, state.Bootloader, state.Flasher}
	case state.OS:
		if from == state.Bootloader {
			return []string{state.OS}
		}
		if m.cfg.OSBootCommand == "" {
			// Power on and let U-Boot boot the OS by itself.
			return []string{state.Off, state.OS}
		}
		return []string{state.Off, state.Bootloader, state.OS}
	}
	return nil
}
