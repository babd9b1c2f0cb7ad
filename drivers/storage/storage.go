// Package storage is the storage capability: a board's disk as the host
// sees it, written and read while the board is off. The virtual board's
// disk file implements it; a later flasher adds writing through the board.
// Like power and console, the package holds the interface, the exporter's
// gRPC service and the client that implements the interface over the wire.
package storage

import (
	"context"
	"io"
)

// Disk is a board's disk, reachable from the host.
type Disk interface {
	// Info describes the disk.
	Info(ctx context.Context) (Info, error)
	// Write copies r onto the disk from offset 0 and returns the bytes
	// written.
	Write(ctx context.Context, r io.Reader, opts WriteOptions) (int64, error)
	// Read copies length bytes from offset (to the end when length is 0)
	// into w and returns the bytes copied.
	Read(ctx context.Context, w io.Writer, offset, length int64) (int64, error)
}

// Info describes a disk.
type Info struct {
	// Size is the disk's size in bytes.
	Size int64
	// Path is the disk's file on the exporter host, if it is one.
	Path string
	// Allocated is what the disk takes on the host (less when sparse).
	Allocated int64
	// Busy tells the disk is in use by the running board.
	Busy bool
}

// WriteOptions tune Write.
type WriteOptions struct {
	// Size, when not zero, is the image's length: a shorter or longer
	// stream is an error.
	Size int64
	// Truncate zeroes the disk beyond the image.
	Truncate bool
}
