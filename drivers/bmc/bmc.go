// Package bmc is the BMC firmware capability: the interfaces a BMC driver
// implements, the `bmc` kind that reaches an OpenBMC over IPMI (lanplus or
// the in-band /dev/ipmi0), the gRPC service that exposes it on the
// exporter and the client that implements the same interfaces over the
// wire.
//
// The blob protocol and the burn_my_bmc sequence live in drivers/bmc/blob,
// the lanplus transport in drivers/bmc/lanplus; this package does not speak
// bytes to the BMC itself.
package bmc

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/pogolab/pogo/drivers/bmc/blob"
)

// Updater applies firmware images through the BMC's flash blobs.
type Updater interface {
	Update(ctx context.Context, req Request) error
}

// Inspector reads the BMC's blob list.
type Inspector interface {
	Blobs(ctx context.Context) ([]Blob, error)
	Stat(ctx context.Context, id string) (Blob, error)
}

// PhaseReceive is the image reaching the driver before the BMC sees any of
// it (over the wire: the client's stream being spooled on the exporter).
const PhaseReceive blob.Phase = "receive"

// MaxSignature bounds the signature; real ones are a few hundred bytes.
const MaxSignature = 64 << 10

// MaxImage is the largest image a blob offset (u32) can address.
const MaxImage = 1<<32 - 1

// Request is one firmware update.
type Request struct {
	// Type is the flash blob to write: "image", "tarball", "bios" or a full
	// "/flash/..." id.
	Type string
	// Image yields exactly Size bytes.
	Image     io.Reader
	Size      int64
	Signature []byte
	// IgnoreUpdate commits the update without polling it, for BMCs that
	// reboot the moment it starts.
	IgnoreUpdate bool
	// Progress, when set, is called as the update advances, from the
	// goroutine running Update.
	Progress func(blob.Progress)
}

// Check reports what is wrong with r before anything is sent.
func (r Request) Check() error {
	switch {
	case r.Type == "":
		return fmt.Errorf("update type is empty (want image, tarball, bios or /flash/<name>)")
	case strings.ContainsRune(r.Type, 0):
		return fmt.Errorf("update type %q holds a NUL byte", r.Type)
	case strings.HasPrefix(r.Type, "/") && (!strings.HasPrefix(r.Type, "/flash/") || len(r.Type) == len("/flash/")):
		return fmt.Errorf("update type %q: a blob id must be /flash/<name>", r.Type)
	case !strings.HasPrefix(r.Type, "/") && strings.Contains(r.Type, "/"):
		return fmt.Errorf("update type %q: want image, tarball, bios or /flash/<name>", r.Type)
	case r.Size <= 0:
		return fmt.Errorf("image size %d: the image is empty", r.Size)
	case r.Size > MaxImage:
		return fmt.Errorf("image size %d: larger than a blob offset can address (%d)", r.Size, int64(MaxImage))
	case len(r.Signature) == 0:
		return fmt.Errorf("signature is empty: the BMC verifies the image against it")
	case len(r.Signature) > MaxSignature:
		return fmt.Errorf("signature is %d bytes, more than %d", len(r.Signature), MaxSignature)
	}
	return nil
}

// Blob is one blob as Stat reports it.
type Blob struct {
	ID       string
	State    State
	Size     uint32
	Metadata []byte
	// Err is why a listed blob could not be stat'ed (Blobs only).
	Err error
}

// State holds a blob's state flags; upload blobs carry the transports
// they accept in the upper byte.
type State uint16

var stateNames = []struct {
	bit  uint16
	name string
}{
	{blob.StateOpenRead, "open-read"},
	{blob.StateOpenWrite, "open-write"},
	{blob.StateCommitting, "committing"},
	{blob.StateCommitted, "committed"},
	{blob.StateCommitError, "commit-error"},
	{blob.TransportIPMI, "ipmi"},
	{blob.TransportP2A, "p2a"},
	{blob.TransportLPC, "lpc"},
	{blob.TransportNet, "net"},
}

// String lists the set flags ("open-write|committing"), "-" for none.
func (s State) String() string {
	var parts []string
	rest := uint16(s)
	for _, n := range stateNames {
		if rest&n.bit != 0 {
			parts = append(parts, n.name)
			rest &^= n.bit
		}
	}
	if rest != 0 {
		parts = append(parts, fmt.Sprintf("%#04x", rest))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "|")
}
