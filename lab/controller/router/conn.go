// Package router splices byte streams: a client and an exporter each open
// a Router.Stream with the same signed stream token and the router copies
// frames between them. Conn turns either end into a net.Conn, so the
// exporter's gRPC API runs through the tunnel unchanged.
package router

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	pb "github.com/pogolab/pogo/api/pogo/v1"
)

// MaxFrame is the largest frame a Conn writes: big enough to amortise the
// per-message cost, well under gRPC's 4 MiB message limit.
const MaxFrame = 256 << 10

// FrameStream is either end of a Router.Stream.
type FrameStream interface {
	Send(*pb.Frame) error
	Recv() (*pb.Frame, error)
}

// Conn is a net.Conn over a frame stream.
type Conn struct {
	s      FrameStream
	cancel context.CancelFunc
	local  net.Addr
	remote net.Addr

	rmu  sync.Mutex
	rbuf []byte

	wmu sync.Mutex

	once   sync.Once
	closed chan struct{}
	// OnClose runs once when the conn closes.
	OnClose func()
}

// Addr is a tunnel end's address.
type Addr string

func (a Addr) Network() string { return "pogo-tunnel" }
func (a Addr) String() string  { return string(a) }

// NewConn wraps s; cancel ends the stream (its context's cancel).
func NewConn(s FrameStream, cancel context.CancelFunc, local, remote string) *Conn {
	return &Conn{s: s, cancel: cancel, local: Addr(local), remote: Addr(remote), closed: make(chan struct{})}
}

func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.rbuf) == 0 {
		f, err := c.s.Recv()
		if err != nil {
			select {
			case <-c.closed:
				return 0, net.ErrClosed
			default:
			}
			if errors.Is(err, io.EOF) {
				return 0, io.EOF
			}
			return 0, err
		}
		c.rbuf = f.GetData()
	}
	n := copy(p, c.rbuf)
	c.rbuf = c.rbuf[n:]
	return n, nil
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n := 0
	for len(p) > 0 {
		k := min(len(p), MaxFrame)
		if err := c.s.Send(&pb.Frame{Data: p[:k]}); err != nil {
			select {
			case <-c.closed:
				return n, net.ErrClosed
			default:
			}
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// Close ends the stream in both directions.
func (c *Conn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		if c.cancel != nil {
			c.cancel()
		}
		if c.OnClose != nil {
			c.OnClose()
		}
	})
	return nil
}

// Done is closed when the conn is closed.
func (c *Conn) Done() <-chan struct{} { return c.closed }

func (c *Conn) LocalAddr() net.Addr  { return c.local }
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// Deadlines are not supported: gRPC, the only user, does not set them.
func (c *Conn) SetDeadline(t time.Time) error      { return deadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return deadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return deadline(t) }

func deadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return os.ErrNoDeadline
}
