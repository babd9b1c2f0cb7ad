package board

import (
	"context"
	"fmt"
	"time"

	"github.com/pogolab/pogo/drivers/console/expect"
)

// UBootPrompt is U-Boot's prompt on the virtual board (and Debian's
// U-Boot builds in general).
const UBootPrompt = "=> "

// UBoot runs a U-Boot command at the prompt (reach it with
// InState(ctx, "bootloader")) and returns its output up to the next
// prompt.
func UBoot(ctx context.Context, e *expect.Expecter, timeout time.Duration, cmd string) (string, error) {
	if err := e.SendLine(cmd); err != nil {
		return "", err
	}
	out, err := e.Expect(ctx, timeout, UBootPrompt)
	if err != nil {
		return out, fmt.Errorf("u-boot %q: %w", cmd, err)
	}
	return out, nil
}

// StopAutoboot waits for U-Boot's countdown, stops it with a key and
// waits for the prompt, on a console the caller drives itself. Specs reach
// the prompt with InState(ctx, "bootloader"); this is for benchmarks that
// time the raw power-on-to-prompt path against a QEMU started by hand.
func StopAutoboot(ctx context.Context, e *expect.Expecter, timeout time.Duration) error {
	if _, err := e.Expect(ctx, timeout, "Hit any key to stop autoboot"); err != nil {
		return fmt.Errorf("u-boot countdown: %w", err)
	}
	if err := e.Send(" "); err != nil {
		return err
	}
	if _, err := e.Expect(ctx, 10*time.Second, UBootPrompt); err != nil {
		return fmt.Errorf("u-boot prompt: %w", err)
	}
	return nil
}
