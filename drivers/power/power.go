// Package power is the power capability: the interfaces a power driver
// implements, the gRPC service that exposes it on the exporter and the
// client that implements the same interfaces over the wire.
//
// Backends live in sub-packages (command, ykush, snmp); the virtual board's
// power is part of drivers/qemu.
package power

import (
	"context"
	"sync"
	"time"
)

// Switcher turns a supply on and off. Every power driver implements it.
type Switcher interface {
	On(ctx context.Context) error
	Off(ctx context.Context) error
}

// Cycler is a Switcher that cycles natively (a PDU's reboot command). A
// zero delay means the driver's default.
type Cycler interface {
	Cycle(ctx context.Context, delay time.Duration) error
}

// Reader reads the supply's state back.
type Reader interface {
	State(ctx context.Context) (State, error)
}

// State is a supply's state.
type State int

const (
	Unknown State = iota
	On
	Off
)

func (s State) String() string {
	switch s {
	case On:
		return "on"
	case Off:
		return "off"
	}
	return "unknown"
}

// Cycle turns s off, waits delay and turns it on, using s's own Cycle when
// it has one.
func Cycle(ctx context.Context, s Switcher, delay time.Duration) error {
	if c, ok := s.(Cycler); ok {
		return c.Cycle(ctx, delay)
	}
	return OffWaitOn(ctx, s.Off, s.On, delay)
}

// OffWaitOn cycles by hand: off, delay, on. Drivers without a native cycle
// pass their own switch functions (ones that run under a lock they hold).
// A context that ends during the wait returns ctx.Err() itself.
func OffWaitOn(ctx context.Context, off, on func(context.Context) error, delay time.Duration) error {
	if err := off(ctx); err != nil {
		return err
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	return on(ctx)
}

// Op is a power call made through the exporter's power service.
type Op string

const (
	OpOn    Op = "on"
	OpOff   Op = "off"
	OpCycle Op = "cycle"
)

var (
	wmu      sync.Mutex
	watchers = map[*func(string, Op)]struct{}{}
)

// Watch calls f with the tree path and the call after every successful
// power call made through the exporter's power service (a user's `j board
// power off`), so a driver that keeps state about a board
// (drivers/state/uboot) learns the board was switched behind its back.
// Calls drivers make on a switcher themselves are not reported. stop ends
// the watch.
func Watch(f func(path string, op Op)) (stop func()) {
	wmu.Lock()
	defer wmu.Unlock()
	p := &f
	watchers[p] = struct{}{}
	return func() {
		wmu.Lock()
		defer wmu.Unlock()
		delete(watchers, p)
	}
}

func notify(path string, op Op) {
	wmu.Lock()
	var fs []func(string, Op)
	for f := range watchers {
		fs = append(fs, *f)
	}
	wmu.Unlock()
	for _, f := range fs {
		f(path, op)
	}
}
