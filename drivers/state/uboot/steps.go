package uboot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/state"
)

// walk is one transition's way through its chain.
type walk struct {
	s     *Session
	st    *staged
	emit  func(step, msg string)
	wasOn bool // the board was on before the walk switched it off
}

// step takes the board from prev to next, one link of the chain.
func (m *Machine) step(ctx context.Context, w *walk, prev, next string) error {
	switch next {
	case state.Off:
		w.wasOn = prev != state.Off
		w.emit(StepPower, "powering the board off")
		if err := m.power.Off(ctx); err != nil {
			return &StepError{Step: StepPower, Err: fmt.Errorf("power off: %w", err)}
		}
		return nil
	case state.Bootloader:
		if err := m.powerOn(ctx, w); err != nil {
			return err
		}
		w.emit(StepBootloader, "waiting for the U-Boot prompt")
		start := time.Now()
		if err := m.waitBootloader(ctx, w.s); err != nil {
			return err
		}
		m.log.Info("uboot: at the U-Boot prompt", "after", time.Since(start))
		return nil
	case state.Flasher:
		return m.netboot(ctx, w.s, w.st, w.emit)
	case state.OS:
		if prev == state.Bootloader {
			cmd := m.cfg.OSBootCommand
			if cmd == "" {
				cmd = "run bootcmd"
			}
			w.emit(StepOS, "booting the OS: "+cmd)
			if err := w.s.e.SendLine(cmd); err != nil {
				return &StepError{Step: StepOS, Err: err}
			}
		} else {
			if err := m.powerOn(ctx, w); err != nil {
				return err
			}
			w.emit(StepOS, "U-Boot boots the OS")
		}
		return m.waitOS(ctx, w.s)
	}
	return fmt.Errorf("no way to state %q", next)
}

// powerOn switches the board on, after the cycle delay when the walk
// switched it off.
func (m *Machine) powerOn(ctx context.Context, w *walk) error {
	if w.wasOn {
		delay := m.cfg.CycleDelay
		if _, native := m.power.(power.Cycler); delay == 0 && !native {
			delay = 2 * time.Second
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return &StepError{Step: StepPower, Err: context.Cause(ctx)}
			case <-t.C:
			}
		}
	}
	w.emit(StepPower, "powering the board on")
	if err := m.power.On(ctx); err != nil {
		return &StepError{Step: StepPower, Err: fmt.Errorf("power on: %w", err)}
	}
	return nil
}

// waitBootloader stops autoboot and waits for the prompt.
func (m *Machine) waitBootloader(ctx context.Context, s *Session) error {
	timeout := m.cfg.BootloaderTimeout
	i, _, err := s.e.ExpectAny(ctx, timeout, m.cfg.Autoboot, m.cfg.Prompt)
	if err != nil {
		if errors.Is(err, expect.ErrTimeout) {
			return stepf(StepBootloader, "no U-Boot prompt after %s (no %q nor %q; last output: %q)", timeout, m.cfg.Autoboot, m.cfg.Prompt, LastLine(s.TranscriptTail(400)))
		}
		return &StepError{Step: StepBootloader, Err: err}
	}
	if i == 0 {
		// Any key stops the countdown; a second one is harmless at the
		// prompt. Ctrl-C also clears a partly typed line.
		if err := s.e.Send(m.cfg.Interrupt); err != nil {
			return &StepError{Step: StepBootloader, Err: err}
		}
		if _, err := s.e.Expect(ctx, 10*time.Second, m.cfg.Prompt); err != nil {
			return stepf(StepBootloader, "autoboot interrupted but no prompt %q after 10s", m.cfg.Prompt)
		}
	}
	// Settle: whatever the keys caused, end at a fresh prompt.
	if _, _, err := s.Run(ctx, 10*time.Second, "true", m.cfg.Prompt); err != nil {
		return &StepError{Step: StepBootloader, Err: err}
	}
	return nil
}

// waitOS waits for U-Boot to start the OS's kernel, then for the OS's
// shell.
func (m *Machine) waitOS(ctx context.Context, s *Session) error {
	start := time.Now()
	i, before, err := s.e.ExpectAny(ctx, m.cfg.OSTimeout, "Starting kernel", m.cfg.Prompt)
	if err != nil {
		if errors.Is(err, expect.ErrTimeout) {
			return stepf(StepOS, "U-Boot did not start a kernel within %s (last output: %q)", m.cfg.OSTimeout, LastLine(s.TranscriptTail(400)))
		}
		return &StepError{Step: StepOS, Err: err}
	}
	if i == 1 {
		return stepf(StepOS, "U-Boot found nothing to boot and stopped at its prompt: %s", ErrorLine(before))
	}
	lg := login{prompt: m.cfg.OSPrompt, loginPrompt: m.cfg.OSLogin.LoginPrompt, user: m.cfg.OSLogin.User, password: m.cfg.OSLogin.Password,
		what: "the OS", timeout: m.cfg.OSTimeout - time.Since(start)}
	if err := m.login(ctx, s, StepOS, lg); err != nil {
		return err
	}
	m.log.Info("uboot: OS shell reached", "after", time.Since(start))
	return nil
}

// login is how a booted system's shell is reached.
type login struct {
	prompt, loginPrompt, user, password string
	// what names the system in errors ("the flasher").
	what    string
	timeout time.Duration
}

// login waits for a system to boot (its login or shell prompt, or U-Boot
// again, or a panic) and logs in.
func (m *Machine) login(ctx context.Context, s *Session, step string, l login) error {
	if l.loginPrompt == "" {
		l.loginPrompt = "login:"
	}
	wants := []string{l.prompt, m.cfg.Prompt, "Kernel panic"}
	if l.user != "" {
		wants[0] = l.loginPrompt
	}
	i, before, err := s.e.ExpectAny(ctx, l.timeout, wants...)
	if err != nil {
		if errors.Is(err, expect.ErrTimeout) {
			return stepf(step, "no %q from %s within %s (last output: %q)", wants[0], l.what, l.timeout, LastLine(before))
		}
		return &StepError{Step: step, Err: err}
	}
	switch i {
	case 1:
		return stepf(step, "the boot command returned to U-Boot: %s", ErrorLine(before))
	case 2:
		return stepf(step, "%s's kernel panicked: %s", l.what, LastLine(s.TranscriptTail(400)))
	}
	if l.user != "" {
		if err := s.e.SendLine(l.user); err != nil {
			return &StepError{Step: StepLogin, Err: err}
		}
		if l.password != "" {
			if _, err := s.e.Expect(ctx, m.cfg.CommandTimeout, "assword:"); err != nil {
				return stepf(StepLogin, "no password prompt: %w", err)
			}
			if err := s.e.SendLine(l.password); err != nil {
				return &StepError{Step: StepLogin, Err: err}
			}
		}
		if _, err := s.e.Expect(ctx, m.cfg.CommandTimeout, l.prompt); err != nil {
			return stepf(StepLogin, "no shell prompt %q after logging in as %s: %w", l.prompt, l.user, err)
		}
	}
	// A prompt in boot messages could have matched, and keys typed before
	// the shell owns the console are lost: a command round trip, repeated
	// until it comes back, proves the shell is listening.
	// Each try waits longer: a loaded host's emulated board can take
	// seconds to answer.
	deadline := time.Now().Add(m.cfg.CommandTimeout)
	for try := 0; ; try++ {
		wait := min(time.Duration(try+1)*3*time.Second, 15*time.Second)
		_, rc, err := s.Run(ctx, wait, "true", l.prompt)
		if err == nil && rc == 0 {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return stepf(StepLogin, "the shell does not answer after %d tries: %v", try+1, err)
		}
		// Ctrl-C drops whatever is left on the shell's line.
		if err := s.e.Send("\x03"); err != nil {
			return &StepError{Step: StepLogin, Err: err}
		}
	}
}
