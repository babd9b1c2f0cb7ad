package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/pogolab/pogo/api/errdefs"
)

// DefaultScrollback is the scrollback size when a driver names none.
const DefaultScrollback = 64 << 10

// maxBacklog bounds what a reader that does not keep up may fall behind
// before it is cut off; the board's output never waits for a reader.
const maxBacklog = 16 << 20

// ErrSlowReader ends an attachment that fell too far behind.
var ErrSlowReader = errors.New("console: reader fell behind by more than 16 MiB and was detached")

// Hub fans a port's output out to attachments, keeps the scrollback and
// serialises the single writer's input into the port.
type Hub struct {
	port io.Writer

	mu      sync.Mutex
	ring    []byte
	start   int // index of the oldest byte in ring
	n       int // bytes held in ring
	subs    map[*attachment]struct{}
	writer  *attachment
	closed  bool
	closeFn func() error
	log     io.Writer
}

// NewHub returns a hub that writes input to port and keeps size bytes of
// scrollback (DefaultScrollback when size ≤ 0).
func NewHub(port io.Writer, size int) *Hub {
	if size <= 0 {
		size = DefaultScrollback
	}
	return &Hub{port: port, ring: make([]byte, size), subs: map[*attachment]struct{}{}}
}

// SetLog makes the hub copy all output to w (nil stops it).
func (h *Hub) SetLog(w io.Writer) {
	h.mu.Lock()
	h.log = w
	h.mu.Unlock()
}

// Publish records output read from the port and hands it to every
// attachment. It never blocks on a reader.
func (h *Hub) Publish(p []byte) {
	if len(p) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.appendRing(p)
	if h.log != nil {
		_, _ = h.log.Write(p)
	}
	for a := range h.subs {
		a.push(p)
	}
}

func (h *Hub) appendRing(p []byte) {
	size := len(h.ring)
	if len(p) >= size {
		copy(h.ring, p[len(p)-size:])
		h.start, h.n = 0, size
		return
	}
	for len(p) > 0 {
		end := (h.start + h.n) % size
		if h.n == size { // full: overwrite the oldest
			end = h.start
		}
		c := copy(h.ring[end:], p)
		if end+c > size {
			c = size - end
		}
		p = p[c:]
		if h.n+c > size {
			over := h.n + c - size
			h.start = (h.start + over) % size
			h.n = size
		} else {
			h.n += c
		}
	}
}

func (h *Hub) scrollbackLocked() []byte {
	out := make([]byte, h.n)
	size := len(h.ring)
	first := min(h.n, size-h.start)
	copy(out, h.ring[h.start:h.start+first])
	copy(out[first:], h.ring[:h.n-first])
	return out
}

// Scrollback returns the buffered output.
func (h *Hub) Scrollback(context.Context) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.scrollbackLocked(), nil
}

// Attach implements Attacher.
func (h *Hub) Attach(_ context.Context, opts AttachOptions) (io.ReadWriteCloser, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("console: closed: %w", errdefs.ErrUnavailable)
	}
	if opts.Write && h.writer != nil {
		if h.writer.busy != nil {
			return nil, fmt.Errorf("%s: %w", h.writer.busy(), errdefs.ErrInUse)
		}
		return nil, fmt.Errorf("console: another client is attached as writer: %w", errdefs.ErrInUse)
	}
	a := &attachment{hub: h, write: opts.Write, busy: opts.Busy}
	a.cond = sync.NewCond(&a.mu)
	if opts.Replay {
		a.buf = h.scrollbackLocked()
	}
	h.subs[a] = struct{}{}
	if opts.Write {
		h.writer = a
	}
	return a, nil
}

// OnClose sets a function Close calls after detaching everyone (the
// driver closing its port).
func (h *Hub) OnClose(f func() error) { h.closeFn = f }

// Close detaches every attachment with io.EOF.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	subs := h.subs
	h.subs = map[*attachment]struct{}{}
	h.writer = nil
	f := h.closeFn
	h.mu.Unlock()
	for a := range subs {
		a.end(io.EOF)
	}
	if f != nil {
		return f()
	}
	return nil
}

func (h *Hub) detach(a *attachment) {
	h.mu.Lock()
	delete(h.subs, a)
	if h.writer == a {
		h.writer = nil
	}
	h.mu.Unlock()
}

func (h *Hub) write(p []byte) (int, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("console: closed: %w", errdefs.ErrUnavailable)
	}
	return h.port.Write(p)
}

type attachment struct {
	hub   *Hub
	write bool
	busy  func() string

	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte
	err  error // set once the attachment ends
}

func (a *attachment) push(p []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return
	}
	if len(a.buf)+len(p) > maxBacklog {
		a.err = ErrSlowReader
		a.buf = nil
		go a.hub.detach(a)
	} else {
		a.buf = append(a.buf, p...)
	}
	a.cond.Broadcast()
}

func (a *attachment) end(err error) {
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.cond.Broadcast()
	a.mu.Unlock()
}

func (a *attachment) Read(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.buf) == 0 && a.err == nil {
		a.cond.Wait()
	}
	if len(a.buf) > 0 {
		n := copy(p, a.buf)
		a.buf = a.buf[n:]
		if len(a.buf) == 0 {
			a.buf = nil
		}
		return n, nil
	}
	return 0, a.err
}

func (a *attachment) Write(p []byte) (int, error) {
	if !a.write {
		return 0, fmt.Errorf("console: attached read-only: %w", errdefs.ErrPrecondition)
	}
	a.mu.Lock()
	err := a.err
	a.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return a.hub.write(p)
}

func (a *attachment) Close() error {
	a.end(io.EOF)
	a.hub.detach(a)
	return nil
}
