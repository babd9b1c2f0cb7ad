package blob

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// Transport carries one IPMI request to the BMC and returns the response
// data without the completion code. A non-zero completion code must be
// reported as an error implementing CompletionCoder.
type Transport interface {
	RawCommand(ctx context.Context, netFn, cmd byte, data []byte) ([]byte, error)
}

// Reconnector is implemented by transports that can re-establish their
// session, which is what a host must do after the BMC rebooted.
type Reconnector interface {
	Reconnect(ctx context.Context) error
}

// CompletionCoder exposes the IPMI completion code of a failed command.
type CompletionCoder interface {
	CompletionCode() byte
}

// CCError is a non-zero IPMI completion code.
type CCError struct{ CC byte }

func (e *CCError) Error() string        { return fmt.Sprintf("ipmi completion code %#02x", e.CC) }
func (e *CCError) CompletionCode() byte { return e.CC }

// CompletionCode extracts the IPMI completion code from err, if any.
func CompletionCode(err error) (byte, bool) {
	var c CompletionCoder
	if errors.As(err, &c) {
		return c.CompletionCode(), true
	}
	return 0, false
}

// Client issues blob subcommands over a Transport.
type Client struct {
	T Transport
}

func (c *Client) call(ctx context.Context, sub Subcommand, body []byte) ([]byte, error) {
	resp, err := c.T.RawCommand(ctx, NetFn, Command, EncodeRequest(sub, body))
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", sub, err)
	}
	out, err := DecodeResponse(resp)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", sub, err)
	}
	return out, nil
}

func cstr(id string) []byte { return append([]byte(id), 0) }

// Count returns the number of blobs the BMC lists.
func (c *Client) Count(ctx context.Context) (uint32, error) {
	b, err := c.call(ctx, GetCount, nil)
	if err != nil {
		return 0, err
	}
	if len(b) < 4 {
		return 0, fmt.Errorf("blob get-count: %w", ErrShortResponse)
	}
	return binary.LittleEndian.Uint32(b), nil
}

// Enumerate returns the id of blob idx.
func (c *Client) Enumerate(ctx context.Context, idx uint32) (string, error) {
	b, err := c.call(ctx, Enumerate, binary.LittleEndian.AppendUint32(nil, idx))
	if err != nil {
		return "", err
	}
	id, ok := CString(b)
	if !ok {
		return "", fmt.Errorf("blob enumerate %d: malformed id % x", idx, b)
	}
	return id, nil
}

// List returns every blob id, which is GetCount then Enumerate as the BMC
// builds its list on GetCount.
func (c *Client) List(ctx context.Context) ([]string, error) {
	n, err := c.Count(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, n)
	for i := uint32(0); i < n; i++ {
		id, err := c.Enumerate(ctx, i)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Open opens id and returns the session.
func (c *Client) Open(ctx context.Context, id string, flags uint16) (uint16, error) {
	body := binary.LittleEndian.AppendUint16(nil, flags)
	b, err := c.call(ctx, Open, append(body, cstr(id)...))
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", id, err)
	}
	if len(b) < 2 {
		return 0, fmt.Errorf("open %s: %w", id, ErrShortResponse)
	}
	return binary.LittleEndian.Uint16(b), nil
}

// Read reads up to size bytes at off.
func (c *Client) Read(ctx context.Context, session uint16, off, size uint32) ([]byte, error) {
	body := binary.LittleEndian.AppendUint16(nil, session)
	body = binary.LittleEndian.AppendUint32(body, off)
	body = binary.LittleEndian.AppendUint32(body, size)
	return c.call(ctx, Read, body)
}

// Write writes data at off.
func (c *Client) Write(ctx context.Context, session uint16, off uint32, data []byte) error {
	body := binary.LittleEndian.AppendUint16(make([]byte, 0, 6+len(data)), session)
	body = binary.LittleEndian.AppendUint32(body, off)
	_, err := c.call(ctx, Write, append(body, data...))
	return err
}

// WriteMeta writes transport metadata at off.
func (c *Client) WriteMeta(ctx context.Context, session uint16, off uint32, data []byte) error {
	body := binary.LittleEndian.AppendUint16(nil, session)
	body = binary.LittleEndian.AppendUint32(body, off)
	_, err := c.call(ctx, WriteMeta, append(body, data...))
	return err
}

// Commit commits the session with optional data.
func (c *Client) Commit(ctx context.Context, session uint16, data []byte) error {
	body := binary.LittleEndian.AppendUint16(nil, session)
	body = append(body, byte(len(data)))
	_, err := c.call(ctx, Commit, append(body, data...))
	return err
}

// Close closes the session.
func (c *Client) Close(ctx context.Context, session uint16) error {
	_, err := c.call(ctx, Close, binary.LittleEndian.AppendUint16(nil, session))
	return err
}

// Delete deletes id.
func (c *Client) Delete(ctx context.Context, id string) error {
	if _, err := c.call(ctx, Delete, cstr(id)); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}

// Stat reports the state of id.
func (c *Client) Stat(ctx context.Context, id string) (Meta, error) {
	b, err := c.call(ctx, Stat, cstr(id))
	if err != nil {
		return Meta{}, fmt.Errorf("stat %s: %w", id, err)
	}
	return DecodeMeta(b)
}

// SessionStat reports the state of an open session.
func (c *Client) SessionStat(ctx context.Context, session uint16) (Meta, error) {
	b, err := c.call(ctx, SessionStat, binary.LittleEndian.AppendUint16(nil, session))
	if err != nil {
		return Meta{}, err
	}
	return DecodeMeta(b)
}
