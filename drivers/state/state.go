// Package state is the board-state capability: one way to take a board to
// a named state (off, bootloader, flasher, os) and to know which state it
// is in. A backend (drivers/state/uboot) walks the chain of states a
// transition needs, latches the first failure as broken and reports each
// step; the gRPC adapter serves any driver implementing Machine and Client
// implements Machine over the wire.
package state

import (
	"context"
	"errors"
)

// State names the virtual board's states; a backend may offer others.
const (
	Unknown    = "unknown"
	Off        = "off"
	Bootloader = "bootloader"
	Flasher    = "flasher"
	OS         = "os"
)

// Machine is a board that can be taken to a named state.
type Machine interface {
	// Get returns the current state (Unknown when it cannot tell) and
	// the failure that latched the board as broken, if any.
	Get(ctx context.Context) (Status, error)
	// Transition goes to target, walking the states between; progress
	// (which may be nil) receives each step and each state reached.
	Transition(ctx context.Context, target string, progress func(Event)) error
	// Force declares the current state without acting and clears a
	// broken latch.
	Force(ctx context.Context, state string) error
	// States lists the states the board offers.
	States(ctx context.Context) ([]string, error)
}

// Status is where a board is.
type Status struct {
	State string
	// Broken is the first failure of a transition; later transitions fail
	// with it until a Force or a power-off.
	Broken string
}

// Event is a transition's progress: a state reached, or a step begun.
type Event struct {
	// Reached names the state just reached ("" for a step).
	Reached string
	// Step names what is being done ("power", "bootloader", "dhcp", …).
	Step    string
	Message string
}

// ErrBroken is wrapped by a transition refused because an earlier one
// failed.
var ErrBroken = errors.New("board is broken")

// Walked lists the states a transition reached, in order, from its events.
func Walked(events []Event) []string {
	var out []string
	for _, e := range events {
		if e.Reached != "" {
			out = append(out, e.Reached)
		}
	}
	return out
}
