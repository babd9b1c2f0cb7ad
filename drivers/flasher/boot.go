package flasher

import (
	"context"

	"github.com/pogolab/pogo/drivers/state"
	"github.com/pogolab/pogo/drivers/state/uboot"
)

// shellPrompt is the flasher shell's prompt per the bundle (busybox's
// "# " by default).
func shellPrompt(b *bundle) string {
	if b.spec.Login.Prompt != "" {
		return b.spec.Login.Prompt
	}
	return "# "
}

// reach takes the board to a state through the board's state machine,
// freshly from power-off, and holds its console: the flasher's one way
// to a bootloader or flasher shell. State steps are reported as flasher
// phases of the same names.
func (d *Driver) reach(ctx context.Context, target string, b *bundle, emit func(Event), debug bool) (*session, error) {
	opts := uboot.Options{Fresh: true, Holder: "the flasher (" + d.path + ")"}
	if b != nil {
		opts.Netboot = b.netboot(d.cfg.Variant)
	}
	if debug {
		opts.Console = func(p []byte) { emit(Event{Console: p}) }
	}
	us, err := d.machine.Acquire(ctx, target, opts, func(e state.Event) {
		if e.Reached != "" {
			emit(Event{Phase: PhaseState, Message: "the board is in state " + e.Reached})
			return
		}
		emit(Event{Phase: e.Step, Message: e.Message})
	})
	if err != nil {
		return nil, err
	}
	return &session{us: us}, nil
}
