package states

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/storage"
	"github.com/pogolab/pogo/specs/board"
)

// BenchmarkStateFromOff times power-off → bootloader and → os through the
// board's states against the same step scripted by hand on the same
// exporter's console in the same run (power on, expect, a key): the
// ratio is what the state machine costs. Goal: ≤ 1.05.
func BenchmarkStateFromOff(b *testing.B) {
	ctx := context.Background()
	assets, err := board.Assets(ctx)
	if err != nil {
		b.Fatal(err)
	}
	os.Setenv(board.EnvConfig, benchConfig(b))
	defer os.Unsetenv(board.EnvConfig)
	bd, err := board.Open(ctx, board.Options{Log: bytes.NewBuffer(nil)})
	if err != nil {
		b.Fatal(err)
	}
	defer bd.Close()
	img, err := os.ReadFile(filepath.Join(assets, "demo-os.img"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := bd.Storage().Write(ctx, bytes.NewReader(img), storage.WriteOptions{Size: int64(len(img)), Truncate: true}); err != nil {
		b.Fatal(err)
	}
	off := func() {
		if err := bd.Power().Off(ctx); err != nil {
			b.Fatal(err)
		}
	}
	// byHand powers on and waits for want on the console, typing key
	// when the countdown shows (bootloader) or not (os).
	byHand := func(want string, stop bool) time.Duration {
		a, err := bd.Console().Attach(ctx, console.AttachOptions{Write: true})
		if err != nil {
			b.Fatal(err)
		}
		defer a.Close()
		e := expect.New(a)
		start := time.Now()
		if err := bd.Power().On(ctx); err != nil {
			b.Fatal(err)
		}
		if stop {
			if err := board.StopAutoboot(ctx, e, time.Minute); err != nil {
				b.Fatal(err)
			}
		} else if _, err := e.Expect(ctx, 3*time.Minute, want); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	viaState := func(target string) time.Duration {
		start := time.Now()
		if _, err := bd.InState(ctx, target); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var hand, state [2]time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off()
		hand[0] += byHand(board.UBootPrompt, true)
		off()
		state[0] += viaState("bootloader")
		off()
		hand[1] += byHand("pogo demo OS version", false)
		off()
		state[1] += viaState("os")
	}
	b.StopTimer()
	off()
	n := float64(b.N)
	b.ReportMetric(state[0].Seconds()/n, "bootloader-s")
	b.ReportMetric(hand[0].Seconds()/n, "bootloader-byhand-s")
	b.ReportMetric(state[0].Seconds()/hand[0].Seconds(), "bootloader-ratio")
	b.ReportMetric(state[1].Seconds()/n, "os-s")
	b.ReportMetric(hand[1].Seconds()/n, "os-banner-byhand-s")
	b.ReportMetric(state[1].Seconds()/hand[1].Seconds(), "os-ratio")
}

// benchConfig is the suite's virtual board with states, written outside
// Ginkgo.
func benchConfig(b *testing.B) string {
	dir := b.TempDir()
	path := filepath.Join(dir, "exporter.yaml")
	text := `kind: ExporterConfig
export:
  board:
    type: qemu
    config: {disk: ` + filepath.Join(dir, "disk.img") + `, disk_size: 128M, memory: 1024}
  state:
    type: uboot
    children:
      power: {ref: board}
      console: {ref: board}
`
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	return path
}
