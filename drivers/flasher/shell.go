package flasher

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/pogolab/pogo/drivers/state"
)

// BootloaderShell implements Programmer: the board's bootloader state,
// with its console handed over.
func (d *Driver) BootloaderShell(ctx context.Context, opts ShellOptions, events func(Event)) (Shell, error) {
	return d.shell(ctx, opts, events, false)
}

// BusyboxShell implements Programmer: the board's flasher state, with its
// console handed over.
func (d *Driver) BusyboxShell(ctx context.Context, opts ShellOptions, events func(Event)) (Shell, error) {
	return d.shell(ctx, opts, events, true)
}

func (d *Driver) shell(ctx context.Context, opts ShellOptions, events func(Event), busybox bool) (_ Shell, err error) {
	emit := syncEmit(events)
	unlock, err := d.lock()
	if err != nil {
		return nil, err
	}
	target := state.Bootloader
	var b *bundle
	if busybox {
		target = state.Flasher
		ref := d.cfg.Bundle
		if opts.Bundle != "" {
			ref = opts.Bundle
		}
		if b, err = d.loadBundle(ctx, ref); err != nil {
			unlock()
			return nil, &stepErr{PhaseBundle, err}
		}
	}
	s, err := d.reach(ctx, target, b, emit, opts.ConsoleDebug)
	if err != nil {
		unlock()
		return nil, err
	}
	sh := &shellConn{d: d, s: s, unlock: unlock, prompt: s.us.Prompt()}
	// The console output from now on goes to the shell's reader; the
	// prompt the state machine consumed is shown first.
	sh.out = newBufPipe()
	s.us.StopConsole()
	s.us.HandOver(sh.out, sh.prompt)
	return sh, nil
}

// shellConn is a shell handed to a client; closing it powers the board
// off and frees the flasher.
type shellConn struct {
	d      *Driver
	s      *session
	unlock func()
	out    *bufPipe
	prompt string
	once   sync.Once
}

func (c *shellConn) Read(p []byte) (int, error)  { return c.out.Read(p) }
func (c *shellConn) Write(p []byte) (int, error) { return c.s.us.Write(p) }

// Prompt implements Shell.
func (c *shellConn) Prompt() string { return c.prompt }

func (c *shellConn) Close() error {
	var err error
	c.once.Do(func() {
		c.s.close()
		if c.out != nil {
			c.out.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = c.d.power.Off(ctx)
		c.unlock()
	})
	return err
}

// bufPipe is a pipe whose writer never blocks: the console pump must not
// stall on a slow shell client (console output is small).
type bufPipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte
	closed bool
}

func newBufPipe() *bufPipe {
	p := &bufPipe{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *bufPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, io.ErrClosedPipe
	}
	p.buf = append(p.buf, b...)
	p.cond.Broadcast()
	return len(b), nil
}

func (p *bufPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 && !p.closed {
		p.cond.Wait()
	}
	if len(p.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}

func (p *bufPipe) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	return nil
}
