// Package console is the console capability: a board's serial line with
// one writer, any number of readers and a scrollback that outlives
// detaching clients. Hub is the exporter-side implementation every console
// driver (serial, the virtual board's UART) builds on; Client is the same
// interface over the wire.
package console

import (
	"context"
	"io"
)

// Attacher is a console that clients attach to.
type Attacher interface {
	// Attach returns a view of the console's output from now on, preceded
	// by the scrollback when opts.Replay is set. Writes are refused unless
	// opts.Write was granted.
	Attach(ctx context.Context, opts AttachOptions) (io.ReadWriteCloser, error)
	// Scrollback returns the buffered output.
	Scrollback(ctx context.Context) ([]byte, error)
}

// AttachOptions say how to attach.
type AttachOptions struct {
	// Write asks for the writer role, which one attachment holds at a time.
	Write bool
	// Replay sends the scrollback before live output.
	Replay bool
	// Busy, for an exporter-side writer (a board-state transition), says
	// why the console is taken; other writers are refused with it ("board
	// busy: transition to os in progress"). Not sent over the wire.
	Busy func() string
}
