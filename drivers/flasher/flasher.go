// Package flasher is the flasher capability and its driver (kind
// flasher): it writes OS images to a board's storage through the board
// itself. The driver asks the board's state machine (drivers/state/uboot:
// its state child, or one it builds from its own config) for the flasher
// state, the bundle's kernel and initramfs netbooted to its busybox shell,
// and then only flashes: it has the shell fetch the image from an HTTP
// stream served by the exporter. Decompression, the sha256 check and bmap
// range selection happen once, on the exporter, while streaming; the board
// reads the target back to verify what it wrote.
//
// Like power and console, the package holds the interface (Programmer), the
// gRPC service that exposes it and the Client that implements it over the
// wire.
package flasher

import (
	"context"
	"io"
	"time"
)

// Programmer writes images to a board (a device programmer, in hardware
// terms) and opens its bootloader and flasher shells.
type Programmer interface {
	// Flash writes img to the board's target; events (which may be nil)
	// receive progress. The board is powered off afterwards, failure or not.
	Flash(ctx context.Context, img Image, opts FlashOptions, events func(Event)) (Result, error)
	// BootloaderShell brings the board to its U-Boot prompt and returns
	// the console as a Shell. Closing it powers the board off.
	BootloaderShell(ctx context.Context, opts ShellOptions, events func(Event)) (Shell, error)
	// BusyboxShell boots the flasher and returns its shell.
	BusyboxShell(ctx context.Context, opts ShellOptions, events func(Event)) (Shell, error)
}

// Shell is an open bootloader or flasher shell: the board's console, whose
// output starts with the prompt the flasher stopped at.
type Shell interface {
	io.ReadWriteCloser
	// Prompt is how the shell's prompt ends ("=> ", "# ").
	Prompt() string
}

// Image is what to flash: exactly one of Reader, URL and OCIRef.
type Image struct {
	// Reader is an uploaded image (any supported compression).
	Reader io.Reader
	// Size is Reader's length when known (for progress).
	Size int64
	// Name is the image's file name (logs, and the compression hint for
	// Direct).
	Name string
	// URL is an http(s) image the exporter fetches (or the board, with
	// FlashOptions.Direct).
	URL string
	// OCIRef is an image in a registry ("registry/repo:tag"), pulled on the
	// exporter.
	OCIRef string
}

// FlashOptions tune Flash.
type FlashOptions struct {
	// Partition is a target name of the bundle or a /dev path; empty means
	// the bundle's default target.
	Partition string
	// SHA256 is the expected hex sha256 of the uncompressed image.
	SHA256 string
	// Bmap is a bmaptool block map: only its mapped ranges are written.
	Bmap []byte
	// Direct has the board fetch URL itself.
	Direct bool
	// ForceExporterHTTP serves URL through the exporter (the default
	// already does; it wins over Direct).
	ForceExporterHTTP bool
	// Bundle replaces the driver's flasher bundle for this call.
	Bundle string
	// ConsoleDebug sends the board's console output as events.
	ConsoleDebug bool
}

// ShellOptions tune the shells.
type ShellOptions struct {
	Bundle       string
	ConsoleDebug bool
}

// Event reports progress: a step starting, write progress, or console
// output (ConsoleDebug).
type Event struct {
	Phase   string
	Message string
	// Done and Total count source bytes (Total 0: unknown); in the
	// verify phase, bytes read back and to read back.
	Done, Total int64
	// Image counts uncompressed bytes sent to the board (read back, in
	// the verify phase).
	Image int64
	// MBps is the step's rate so far in MB/s.
	MBps    float64
	Console []byte
}

// Result describes a finished flash.
type Result struct {
	// SHA256 is the uncompressed image's sha256 (hex).
	SHA256 string
	// Written is how many bytes were written to the target.
	Written int64
	// ImageSize is the uncompressed image size.
	ImageSize int64
	Target    string
	// Duration is the whole flash; Write is the write step alone (the
	// board fetching and writing) and Verify the read-back.
	Duration, Write, Verify time.Duration
	// Verified is how many bytes were read back and compared.
	Verified int64
	// Bmap names the block map used ("" when none; "request" when it
	// came with the request).
	Bmap string
}

// Phases of a flash, in order.
const (
	PhaseImage  = "image"
	PhaseBundle = "bundle"
	// PhaseState reports a board state reached on the way.
	PhaseState      = "state"
	PhasePower      = "power"
	PhaseBootloader = "bootloader"
	PhaseDHCP       = "dhcp"
	PhaseTFTP       = "tftp"
	PhaseBoot       = "boot"
	PhaseLogin      = "login"
	PhasePreflash   = "preflash"
	PhaseTarget     = "target"
	PhaseWrite      = "write"
	PhaseSync       = "sync"
	PhaseVerify     = "verify"
	PhasePowerOff   = "poweroff"
	PhaseRetry      = "retry"
)
