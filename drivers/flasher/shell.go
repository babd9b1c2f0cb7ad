package flasher

import (
	"context"
	"io"
	"sync"
	"time"
)

// BootloaderShell implements Programmer.
func (d *Driver) BootloaderShell(ctx context.Context, opts ShellOptions, events func(Event)) (Shell, error) {
	return d.shell(ctx, opts, events, false)
}

// BusyboxShell implements Programmer.
func (d *Driver) BusyboxShell(ctx context.Context, opts ShellOptions, events func(Event)) (Shell, error) {
	return d.shell(ctx, opts, events, true)
}

func (d *Driver) shell(ctx context.Context, opts ShellOptions, events func(Event), busybox bool) (_ Shell, err error) {
	emit := syncEmit(events)
	unlock, err := d.lock()
	if err != nil {
		return nil, err
	}
	ref := d.cfg.Bundle
	if opts.Bundle != "" {
		ref = opts.Bundle
	}
	b, err := d.loadBundle(ctx, ref)
	if err != nil {
		unlock()
		return nil, &stepErr{PhaseBundle, err}
	}
	s, err := d.openSession(ctx, emit, opts.ConsoleDebug)
	if err != nil {
		unlock()
		return nil, err
	}
	sh := &shellConn{d: d, s: s, unlock: unlock}
	defer func() {
		if err != nil {
			sh.Close()
		}
	}()
	prompt := d.cfg.Prompt
	if busybox {
		if err := d.bootFlasher(ctx, s, b, emit); err != nil {
			return nil, err
		}
		prompt = shellPrompt(b)
	} else if _, _, err := d.toBootloader(ctx, s, b, emit); err != nil {
		return nil, err
	}
	sh.prompt = prompt
	// The console output from now on goes to the shell's reader; the
	// prompt the flasher consumed is shown first.
	sh.out = newBufPipe()
	s.mu.Lock()
	s.debug = false
	s.mu.Unlock()
	s.handOver(sh.out, prompt)
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
func (c *shellConn) Write(p []byte) (int, error) { return c.s.att.Write(p) }

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
