package flasher

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/power"
)

// shellPrompt is the flasher shell's prompt per the bundle (busybox's
// "# " by default).
func shellPrompt(b *bundle) string {
	if b.spec.Login.Prompt != "" {
		return b.spec.Login.Prompt
	}
	return "# "
}

// tftpServer is the server address U-Boot's serverip takes and the
// prefix of the names the board fetches.
func (d *Driver) tftpServer(ctx context.Context) (string, string, error) {
	raw, err := d.tftp.URL(ctx)
	if err != nil {
		return "", "", fmt.Errorf("tftp server URL: %w", err)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "tftp" || u.Hostname() == "" {
		return "", "", fmt.Errorf("tftp server URL %q: want tftp://server/prefix", raw)
	}
	if p := u.Port(); p != "" && p != "69" {
		return "", "", fmt.Errorf("tftp server %s listens on port %s: U-Boot only fetches from port 69", raw, p)
	}
	return u.Hostname(), strings.TrimPrefix(u.Path, "/"), nil
}

// powerCycle turns the board off and on again.
func (d *Driver) powerCycle(ctx context.Context) error {
	delay := d.cfg.CycleDelay
	if _, native := d.power.(power.Cycler); native && d.cfg.CycleDelay == 2*time.Second {
		// The driver's own cycle knows its supply's off time.
		delay = 0
	}
	if err := power.Cycle(ctx, d.power, delay); err != nil {
		return &stepErr{PhasePower, fmt.Errorf("power cycle: %w", err)}
	}
	return nil
}

// toBootloader stages the boot files (so a failure there costs no power
// cycle), power cycles the board and stops at the U-Boot prompt.
func (d *Driver) toBootloader(ctx context.Context, s *session, b *bundle, emit func(Event)) (bootFiles, map[string]string, error) {
	emit(Event{Phase: PhaseBundle, Message: "staging the flasher's boot files on the tftp server"})
	bf, err := b.boot(d.cfg.Variant)
	if err != nil {
		return bf, nil, &stepErr{PhaseBundle, err}
	}
	start := time.Now()
	names, err := d.stage(ctx, b, bf)
	if err != nil {
		return bf, nil, &stepErr{PhaseBundle, err}
	}
	d.log.Info("flasher: boot files staged", "bundle", b.ref, "duration", time.Since(start))
	emit(Event{Phase: PhasePower, Message: "power cycling the board"})
	if err := d.powerCycle(ctx); err != nil {
		return bf, nil, err
	}
	emit(Event{Phase: PhaseBootloader, Message: "waiting for the U-Boot prompt"})
	start = time.Now()
	if err := s.waitBootloader(ctx, d.cfg.UBootTimeout); err != nil {
		return bf, nil, err
	}
	d.log.Info("flasher: at the U-Boot prompt", "after", time.Since(start))
	return bf, names, nil
}

// bootFlasher takes the board from power-on to the flasher's shell.
func (d *Driver) bootFlasher(ctx context.Context, s *session, b *bundle, emit func(Event)) error {
	bf, names, err := d.toBootloader(ctx, s, b, emit)
	if err != nil {
		return err
	}
	server, prefix, err := d.tftpServer(ctx)
	if err != nil {
		return &stepErr{PhaseTFTP, err}
	}
	uboot := func(timeout time.Duration, cmd string) (string, int, error) {
		return s.run(ctx, timeout, cmd, s.prompt)
	}

	emit(Event{Phase: PhaseDHCP, Message: "dhcp"})
	if _, _, err := uboot(d.cfg.CommandTimeout, "setenv autoload no"); err != nil {
		return &stepErr{PhaseDHCP, err}
	}
	var dhcpOut string
	for try := 0; ; try++ {
		start := time.Now()
		out, rc, err := uboot(d.cfg.DHCPTimeout, "dhcp")
		if err != nil {
			return &stepErr{PhaseDHCP, err}
		}
		if rc == 0 {
			d.log.Info("flasher: dhcp", "duration", time.Since(start), "tries", try+1)
			break
		}
		dhcpOut = out
		if try+1 >= d.cfg.DHCPRetries {
			return stepf(PhaseDHCP, "no address after %d tries: %s", try+1, errorLine(dhcpOut))
		}
		d.log.Warn("flasher: dhcp failed, trying again", "try", try+1, "err", errorLine(out))
	}
	if _, rc, err := uboot(d.cfg.CommandTimeout, "setenv serverip "+server); err != nil || rc != 0 {
		return stepf(PhaseTFTP, "setenv serverip %s: %v (status %d)", server, err, rc)
	}
	for _, l := range bf.loads {
		name := prefix + names[l.file]
		emit(Event{Phase: PhaseTFTP, Message: fmt.Sprintf("tftpboot %s %s", l.addr, name)})
		start := time.Now()
		out, rc, err := uboot(d.cfg.TFTPTimeout, fmt.Sprintf("tftpboot %s %s", l.addr, name))
		if err != nil {
			return stepf(PhaseTFTP, "tftpboot %s: %w", l.what, err)
		}
		if rc != 0 {
			return stepf(PhaseTFTP, "tftpboot %s (%s from %s): %s", l.what, name, server, errorLine(out))
		}
		d.log.Info("flasher: tftpboot", "file", name, "duration", time.Since(start))
	}

	emit(Event{Phase: PhaseBoot, Message: "booting the flasher: " + bf.bootcmd})
	start := time.Now()
	if err := s.e.SendLine(bf.bootcmd); err != nil {
		return &stepErr{PhaseBoot, err}
	}
	if err := d.login(ctx, s, b); err != nil {
		return err
	}
	d.log.Info("flasher: shell reached", "after boot command", time.Since(start))
	return nil
}

// login waits for the flasher to boot and logs in per the manifest.
func (d *Driver) login(ctx context.Context, s *session, b *bundle) error {
	l := b.spec.Login
	prompt := shellPrompt(b)
	loginPrompt := l.LoginPrompt
	if loginPrompt == "" {
		loginPrompt = "login:"
	}
	wants := []string{prompt, s.prompt, "Kernel panic"}
	if l.Username != "" {
		wants[0] = loginPrompt
	}
	i, before, err := s.e.ExpectAny(ctx, d.cfg.BootTimeout, wants...)
	if err != nil {
		if errors.Is(err, expect.ErrTimeout) {
			return stepf(PhaseBoot, "no %q from the flasher within %s (last output: %q)", wants[0], d.cfg.BootTimeout, lastLine(before))
		}
		return &stepErr{PhaseBoot, err}
	}
	switch i {
	case 1:
		return stepf(PhaseBoot, "the boot command returned to U-Boot: %s", errorLine(before))
	case 2:
		return stepf(PhaseBoot, "the flasher kernel panicked: %s", lastLine(s.transcriptTail(400)))
	}
	if l.Username != "" {
		if err := s.e.SendLine(l.Username); err != nil {
			return &stepErr{PhaseLogin, err}
		}
		if l.Password != "" {
			if _, err := s.e.Expect(ctx, d.cfg.CommandTimeout, "assword:"); err != nil {
				return stepf(PhaseLogin, "no password prompt: %w", err)
			}
			if err := s.e.SendLine(l.Password); err != nil {
				return &stepErr{PhaseLogin, err}
			}
		}
		if _, err := s.e.Expect(ctx, d.cfg.CommandTimeout, prompt); err != nil {
			return stepf(PhaseLogin, "no shell prompt %q after logging in as %s: %w", prompt, l.Username, err)
		}
	}
	// A "# " in boot messages could have matched, and keys typed before
	// the shell owns the console are lost: a command round trip, repeated
	// until it comes back, proves the shell is listening.
	deadline := time.Now().Add(d.cfg.CommandTimeout)
	for try := 0; ; try++ {
		_, rc, err := s.run(ctx, 3*time.Second, "true", prompt)
		if err == nil && rc == 0 {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return stepf(PhaseLogin, "the shell does not answer after %d tries: %v", try+1, err)
		}
		// Ctrl-C drops whatever is left on the shell's line.
		if err := s.e.Send("\x03"); err != nil {
			return &stepErr{PhaseLogin, err}
		}
	}
}
