// Package ipmi carries blob commands to a BMC through github.com/bougou/go-ipmi:
// out of band over IPMI v2.0 RMCP+ (lanplus), or in band through the host's
// own system interface (the kernel's /dev/ipmi0). The same transport drives
// the simulator and a real OpenBMC.
package ipmi

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
)

// Config says how to reach a BMC over lanplus.
type Config struct {
	Host     string
	Port     int // default 623
	Username string
	Password string
	// CipherSuite pins a suite (e.g. 3 or 17); 0 lets the client pick the
	// best one the BMC lists.
	CipherSuite int
	// Timeout is the per-attempt response timeout (default 1 s) and
	// Retries the resends per command (default 4), go-ipmi's lanplus
	// defaults.
	Timeout time.Duration
	Retries int
}

// Transport is a blob.Transport over one IPMI session.
type Transport struct {
	// name prefixes errors: "lanplus" or "interface open".
	name    string
	connect func(ctx context.Context) (*client.Client, error)
	// closeOld drops a session that may belong to a BMC that rebooted.
	closeOld func(c *client.Client)

	mu sync.Mutex
	c  *client.Client
}

// CCError is a non-zero completion code from the BMC.
type CCError struct {
	CC  byte
	Err error
}

func (e *CCError) Error() string        { return e.Err.Error() }
func (e *CCError) Unwrap() error        { return e.Err }
func (e *CCError) CompletionCode() byte { return e.CC }

// Dial opens a lanplus session.
func Dial(ctx context.Context, cfg Config) (*Transport, error) {
	if cfg.Port == 0 {
		cfg.Port = 623
	}
	connect := func(ctx context.Context) (*client.Client, error) {
		c, err := client.NewClient(cfg.Host, cfg.Port, cfg.Username, cfg.Password)
		if err != nil {
			return nil, fmt.Errorf("lanplus client %s:%d: %w", cfg.Host, cfg.Port, err)
		}
		c = c.WithInterface(client.InterfaceLanplus)
		if cfg.Timeout > 0 {
			c = c.WithTimeout(cfg.Timeout)
		}
		if cfg.Retries > 0 {
			c = c.WithRetry(cfg.Retries)
		}
		if cfg.CipherSuite > 0 {
			c = c.WithCipherSuiteID(types.CipherSuiteID(cfg.CipherSuite))
		}
		if err := c.Connect(ctx); err != nil {
			return nil, fmt.Errorf("lanplus connect %s:%d: %w", cfg.Host, cfg.Port, err)
		}
		return c, nil
	}
	// The Close Session request to a BMC that may have rebooted is bounded
	// so it cannot stall a reconnect.
	closeOld := func(c *client.Client) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_ = c.Close(ctx)
	}
	return dial(ctx, &Transport{name: "lanplus", connect: connect, closeOld: closeOld})
}

// devices are where the OpenIPMI driver (ipmi_devintf) puts the first
// system interface, in the order go-ipmi probes them.
var devices = []string{"/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"}

// DialOpen opens the host's own system interface (KCS/BT through the
// kernel driver): the in-band path burn_my_bmc uses from the host the BMC
// manages.
func DialOpen(ctx context.Context, timeout time.Duration) (*Transport, error) {
	connect := func(ctx context.Context) (*client.Client, error) {
		present := false
		for _, p := range devices {
			if _, err := os.Stat(p); err == nil {
				present = true
				break
			}
		}
		if !present {
			return nil, fmt.Errorf("interface open: no IPMI device on this host (looked for %v; the host needs a BMC and the ipmi_si and ipmi_devintf modules): %w",
				devices, errdefs.ErrUnsupported)
		}
		c, err := client.NewOpenClient()
		if err != nil {
			return nil, fmt.Errorf("interface open: %w", err)
		}
		if timeout > 0 {
			c = c.WithTimeout(timeout)
		}
		if err := c.Connect(ctx); err != nil {
			return nil, fmt.Errorf("interface open: %w: %w", err, errdefs.ErrUnavailable)
		}
		return c, nil
	}
	closeOld := func(c *client.Client) { _ = c.Close(context.Background()) }
	return dial(ctx, &Transport{name: "interface open", connect: connect, closeOld: closeOld})
}

func dial(ctx context.Context, t *Transport) (*Transport, error) {
	c, err := t.connect(ctx)
	if err != nil {
		return nil, err
	}
	t.c = c
	return t, nil
}

// RawCommand implements blob.Transport.
func (t *Transport) RawCommand(ctx context.Context, netFn, cmd byte, data []byte) ([]byte, error) {
	t.mu.Lock()
	c := t.c
	t.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("%s: not connected", t.name)
	}
	res, err := c.RawCommand(ctx, types.NetFn(netFn), cmd, data, "")
	if err != nil {
		err = fmt.Errorf("%s: netfn %#02x cmd %#02x: %w", t.name, netFn, cmd, err)
		var re *types.ResponseError
		if errors.As(err, &re) && re.CompletionCode() != 0 {
			return nil, &CCError{CC: byte(re.CompletionCode()), Err: err}
		}
		return nil, err
	}
	return res.Response, nil
}

// Reconnect implements blob.Reconnector: it drops the old session without
// waiting on a BMC that may be gone and opens a new one.
func (t *Transport) Reconnect(ctx context.Context) error {
	t.mu.Lock()
	old := t.c
	t.c = nil
	t.mu.Unlock()
	if old != nil {
		t.closeOld(old)
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

// Close ends the session.
func (t *Transport) Close(ctx context.Context) error {
	t.mu.Lock()
	c := t.c
	t.c = nil
	t.mu.Unlock()
	if c == nil {
		return nil
	}
	if err := c.Close(ctx); err != nil {
		return fmt.Errorf("%s close: %w", t.name, err)
	}
	return nil
}
