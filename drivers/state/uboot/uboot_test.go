package uboot_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/state"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/exportertest"

	_ "github.com/pogolab/pogo/drivers/qemu"
	_ "github.com/pogolab/pogo/drivers/state/uboot"
)

const boardYAML = `kind: ExporterConfig
export:
  board:
    type: qemu
    config: {memory: 512}
  state:
    type: uboot
    config:
      bootloader_timeout: 90s
    children:
      power: {ref: board}
      console: {ref: board}
`

// Without booting anything: the states offered, Force, a power call
// through the exporter seen by the state, refusals of unknown states.
func TestStateThroughTheWire(t *testing.T) {
	ctx := context.Background()
	c := exportertest.Start(t, boardYAML)
	m := state.NewClient(c.Conn(), "state")
	names, err := m.States(ctx)
	if err != nil || strings.Join(names, ",") != "off,bootloader,os" {
		t.Fatalf("States = %v, %v; want off,bootloader,os (no flasher without a bundle)", names, err)
	}
	if st, err := m.Get(ctx); err != nil || st.State != state.Off {
		t.Fatalf("Get = %+v, %v; want off (the power reads off)", st, err)
	}
	// Force declares a state, but a power driver that reads its supply
	// back wins: this board is off.
	if err := m.Force(ctx, state.Bootloader); err != nil {
		t.Fatal(err)
	}
	if st, _ := m.Get(ctx); st.State != state.Off {
		t.Fatalf("after Force(bootloader) on a board that is off: %+v", st)
	}
	if err := c.Power("board.power").Off(ctx); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []error{m.Force(ctx, "flasher"), m.Transition(ctx, "nowhere", nil)} {
		if !errors.Is(bad, errdefs.ErrInvalid) || !strings.Contains(bad.Error(), "states: off, bootloader, os") {
			t.Errorf("unknown state: %v, want InvalidArgument listing the states", bad)
		}
	}
	var events []state.Event
	if err := m.Transition(ctx, state.Off, func(e state.Event) { events = append(events, e) }); err != nil {
		t.Fatal(err)
	}
	if w := state.Walked(events); len(w) != 0 {
		t.Errorf("off to off walked %v", w)
	}
}

// A real transition to U-Boot's prompt: the chain walked, the console
// held against other writers and readable meanwhile, free afterwards.
func TestToBootloader(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := exportertest.Start(t, boardYAML)
	m := state.NewClient(c.Conn(), "state")
	con := c.Console("board.console")
	var mu sync.Mutex
	var events []state.Event
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		var once sync.Once
		done <- m.Transition(ctx, state.Bootloader, func(e state.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
			if e.Step == "bootloader" {
				once.Do(func() { close(started) })
			}
		})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("transition ended early: %v", err)
	}
	if _, err := con.Attach(ctx, console.AttachOptions{Write: true}); err == nil || !strings.Contains(err.Error(), "board busy: transition to bootloader in progress") {
		t.Errorf("a writer during the transition: %v, want the busy error", err)
	}
	if err := m.Transition(ctx, state.OS, nil); !errors.Is(err, errdefs.ErrInUse) {
		t.Errorf("a second transition: %v, want ErrInUse", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if w := strings.Join(state.Walked(events), ","); w != "off,bootloader" {
		t.Errorf("walked %s, want off,bootloader", w)
	}
	mu.Unlock()
	if st, err := m.Get(ctx); err != nil || st.State != state.Bootloader {
		t.Fatalf("Get = %+v, %v", st, err)
	}
	a, err := con.Attach(ctx, console.AttachOptions{Write: true})
	if err != nil {
		t.Fatalf("the console after the transition: %v", err)
	}
	a.Close()
	if err := c.Power("board.power").Off(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := power.NewClient(c.Conn(), "board.power").State(ctx); err != nil || st != power.Off {
		t.Fatalf("power %v %v", st, err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ node, want string }{
		{"    children:\n      power: {ref: board}\n", "exporter.yaml:5: export.state.children.console: required child is missing"},
		{"    config: {os_timeout: -1s}\n    children: {power: {ref: board}, console: {ref: board}}\n", "exporter.yaml:7: export.state.config.os_timeout: must not be negative"},
		{"    config: {os_login: {password: x}}\n    children: {power: {ref: board}, console: {ref: board}}\n", "export.state.config.os_login: a password needs a user"},
		{"    config: {flasher_bundle: /b}\n    children: {power: {ref: board}, console: {ref: board}}\n", "export.state.children.tftp: required for the flasher state"},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "exporter.yaml")
		text := "kind: ExporterConfig\nexport:\n  board:\n    type: qemu\n  state:\n    type: uboot\n" + tc.node
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		s, err := exporter.New(context.Background(), f, &drivers.Host{StateDir: dir}, exporter.Options{})
		if err == nil {
			s.Stop()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.node, err, tc.want)
		}
	}
}
