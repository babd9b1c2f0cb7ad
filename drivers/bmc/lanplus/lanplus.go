// Package lanplus carries blob commands to a BMC over IPMI v2.0 RMCP+ using
// github.com/bougou/go-ipmi, so the same transport drives the simulator and
// a real OpenBMC.
package lanplus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
)

// Config says how to reach the BMC.
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

// Transport is a blob.Transport over one lanplus session.
type Transport struct {
	cfg Config

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

// Dial opens a session.
func Dial(ctx context.Context, cfg Config) (*Transport, error) {
	if cfg.Port == 0 {
		cfg.Port = 623
	}
	t := &Transport{cfg: cfg}
	c, err := t.connect(ctx)
	if err != nil {
		return nil, err
	}
	t.c = c
	return t, nil
}

func (t *Transport) connect(ctx context.Context) (*client.Client, error) {
	c, err := client.NewClient(t.cfg.Host, t.cfg.Port, t.cfg.Username, t.cfg.Password)
	if err != nil {
		return nil, fmt.Errorf("lanplus client %s:%d: %w", t.cfg.Host, t.cfg.Port, err)
	}
	c = c.WithInterface(client.InterfaceLanplus)
	if t.cfg.Timeout > 0 {
		c = c.WithTimeout(t.cfg.Timeout)
	}
	if t.cfg.Retries > 0 {
		c = c.WithRetry(t.cfg.Retries)
	}
	if t.cfg.CipherSuite > 0 {
		c = c.WithCipherSuiteID(types.CipherSuiteID(t.cfg.CipherSuite))
	}
	if err := c.Connect(ctx); err != nil {
		return nil, fmt.Errorf("lanplus connect %s:%d: %w", t.cfg.Host, t.cfg.Port, err)
	}
	return c, nil
}

// RawCommand implements blob.Transport.
func (t *Transport) RawCommand(ctx context.Context, netFn, cmd byte, data []byte) ([]byte, error) {
	t.mu.Lock()
	c := t.c
	t.mu.Unlock()
	if c == nil {
		return nil, errors.New("lanplus: not connected")
	}
	res, err := c.RawCommand(ctx, types.NetFn(netFn), cmd, data, "")
	if err != nil {
		var re *types.ResponseError
		if errors.As(err, &re) && re.CompletionCode() != 0 {
			return nil, &CCError{CC: byte(re.CompletionCode()), Err: fmt.Errorf("netfn %#02x cmd %#02x: %w", netFn, cmd, err)}
		}
		return nil, fmt.Errorf("netfn %#02x cmd %#02x: %w", netFn, cmd, err)
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
		closeQuietly(old)
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

// closeQuietly closes a session that may belong to a rebooted BMC; the
// Close Session request is bounded so it cannot stall a reconnect.
func closeQuietly(c *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = c.Close(ctx)
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
		return fmt.Errorf("lanplus close: %w", err)
	}
	return nil
}
