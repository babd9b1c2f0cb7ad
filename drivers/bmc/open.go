package bmc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers/bmc/blob"
)

// ipmiDevices are where the OpenIPMI driver (ipmi_devintf) puts the first
// system interface, in the order go-ipmi probes them.
var ipmiDevices = []string{"/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"}

// openTransport carries blob commands over the host's own system interface
// (KCS/BT through the kernel driver): the in-band path burn_my_bmc uses
// from the host the BMC manages.
type openTransport struct {
	timeout time.Duration

	mu sync.Mutex
	c  *client.Client
}

func dialOpen(ctx context.Context, timeout time.Duration) (*openTransport, error) {
	t := &openTransport{timeout: timeout}
	c, err := t.connect(ctx)
	if err != nil {
		return nil, err
	}
	t.c = c
	return t, nil
}

func (t *openTransport) connect(ctx context.Context) (*client.Client, error) {
	present := false
	for _, p := range ipmiDevices {
		if _, err := os.Stat(p); err == nil {
			present = true
			break
		}
	}
	if !present {
		return nil, fmt.Errorf("interface open: no IPMI device on this host (looked for %v; the host needs a BMC and the ipmi_si and ipmi_devintf modules): %w",
			ipmiDevices, errdefs.ErrUnsupported)
	}
	c, err := client.NewOpenClient()
	if err != nil {
		return nil, fmt.Errorf("interface open: %w", err)
	}
	if t.timeout > 0 {
		c = c.WithTimeout(t.timeout)
	}
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("interface open: %w: %w", err, errdefs.ErrUnavailable)
	}
	return c, nil
}

// RawCommand implements blob.Transport.
func (t *openTransport) RawCommand(ctx context.Context, netFn, cmd byte, data []byte) ([]byte, error) {
	t.mu.Lock()
	c := t.c
	t.mu.Unlock()
	if c == nil {
		return nil, errors.New("interface open: not connected")
	}
	res, err := c.RawCommand(ctx, types.NetFn(netFn), cmd, data, "")
	if err != nil {
		var re *types.ResponseError
		if errors.As(err, &re) && re.CompletionCode() != 0 {
			return nil, &ccError{cc: byte(re.CompletionCode()), err: err}
		}
		return nil, fmt.Errorf("interface open: netfn %#02x cmd %#02x: %w", netFn, cmd, err)
	}
	return res.Response, nil
}

// Reconnect implements blob.Reconnector: the device is reopened, which is
// all a host can do after its BMC rebooted.
func (t *openTransport) Reconnect(ctx context.Context) error {
	t.mu.Lock()
	old := t.c
	t.c = nil
	t.mu.Unlock()
	if old != nil {
		_ = old.Close(ctx)
	}
	c, err := t.connect(ctx)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.c = c
	t.mu.Unlock()
	return nil
}

// Close releases the device.
func (t *openTransport) Close(ctx context.Context) error {
	t.mu.Lock()
	c := t.c
	t.c = nil
	t.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Close(ctx)
}

// ccError is a completion code from the in-band interface.
type ccError struct {
	cc  byte
	err error
}

func (e *ccError) Error() string        { return fmt.Sprintf("interface open: %v", e.err) }
func (e *ccError) Unwrap() error        { return e.err }
func (e *ccError) CompletionCode() byte { return e.cc }

var _ blob.CompletionCoder = (*ccError)(nil)
