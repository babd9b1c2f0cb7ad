// Package controllerlink connects an exporter out to a lab controller:
// it registers, keeps the Listen stream open (reconnecting with backoff),
// follows the lease the controller assigns, runs the lease hooks and turns
// the controller's dial requests into router tunnels that it yields as a
// net.Listener for the exporter's gRPC server.
package controllerlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/transport"
	wire "github.com/pogolab/pogo/api/tunnel"
)

// Options configure a Link.
type Options struct {
	Endpoint string
	Token    string
	// CA is the controller's CA as PEM text or a file path.
	CA       string
	Insecure bool
	// NoTLS dials without TLS (a controller run with --insecure-no-tls).
	NoTLS  bool
	Labels map[string]string
	Report *pb.ReportResponse
	Log    *slog.Logger
	// OnLease is called, one call at a time and in order, whenever the
	// assigned lease changes. The link admits tunnels of the new lease
	// only after it returns true (so beforeLease hooks finish first); false
	// admits none (a failed hook is ending the lease).
	OnLease func(ctx context.Context, old, cur Assignment) bool
}

// Assignment is the lease the exporter serves; zero means free.
type Assignment struct {
	Lease  string
	Client string
	End    time.Time
}

// Link is an exporter's connection to its controller.
type Link struct {
	o    Options
	conn *grpc.ClientConn
	log  *slog.Logger
	// end opens the exporter's tunnel ends.
	end wire.End

	accept chan net.Conn
	closed chan struct{}
	once   sync.Once

	mu      sync.Mutex
	cur     Assignment // what the controller said last
	ready   string     // lease whose OnLease has run
	hook    string     // holder name while a hook runs
	tunnels map[*tunnel]string
	// out holds messages for the controller, sent in order.
	out chan outMsg
	// draining: the link is ending for good (Drain); no reconnect.
	draining bool

	updates chan Assignment
	online  chan bool

	// CountBytes, when set, is told the bytes each tunnel read and wrote.
	CountBytes func(in, out int)
}

// New dials the controller (lazily: Run connects and reconnects).
func New(o Options) (*Link, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	conn, err := transport.DialController(o.Endpoint, o.Token, o.CA, o.Insecure, o.NoTLS)
	if err != nil {
		return nil, err
	}
	var tc *tls.Config
	if !o.NoTLS {
		// Conn accepted the same CA a moment ago.
		tc, _ = transport.ControllerTLS(o.CA, o.Insecure)
	}
	id, err := wire.NewIdentity("exporter")
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &Link{
		o: o, conn: conn, end: wire.End{TLS: tc, Bearer: o.Token, ID: id, Exporter: true}, log: o.Log.With("controller", o.Endpoint),
		accept: make(chan net.Conn), closed: make(chan struct{}),
		tunnels: map[*tunnel]string{}, out: make(chan outMsg, 256),
		updates: make(chan Assignment, 64), online: make(chan bool, 1),
	}, nil
}

// Holder is exporter.Options.Holder: the client the current lease names,
// or the hook's name while a hook holds the exporter.
func (l *Link) Holder() (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hook != "" {
		return l.hook, true
	}
	if l.cur.Lease == "" || l.ready != l.cur.Lease || !time.Now().Before(l.cur.End) {
		return "", false
	}
	return l.cur.Client, true
}

// Current is the lease the controller assigned last.
func (l *Link) Current() Assignment {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur
}

// SetHook makes name the holder while a hook runs ("" ends it).
func (l *Link) SetHook(name string) {
	l.mu.Lock()
	l.hook = name
	l.mu.Unlock()
}

// outMsg is a message for the controller; sent, when set, is closed once
// it (or, with no message, everything before it) is sent.
type outMsg struct {
	m    *pb.ExporterMessage
	sent chan struct{}
	// last ends the stream: sent is closed once the controller has
	// handled everything before it and hung up.
	last bool
}

func (l *Link) enqueue(m outMsg) {
	select {
	case l.out <- m:
	default:
		l.log.Warn("controller send queue full; dropping a message")
	}
}

// EndLease asks the controller to end lease id.
func (l *Link) EndLease(id, reason string) {
	l.enqueue(outMsg{m: &pb.ExporterMessage{Kind: &pb.ExporterMessage_EndLease{EndLease: &pb.EndLeaseRequest{LeaseId: id, Reason: reason}}}})
}

// Hook reports a hook event to the controller, which passes it on to the
// lease holder.
func (l *Link) Hook(e *pb.HookEvent) {
	l.enqueue(outMsg{m: &pb.ExporterMessage{Kind: &pb.ExporterMessage_Hook{Hook: e}}})
}

// Drain ends the link for good once everything queued so far reached the
// controller and was handled (an exporter about to exit), or ctx ends.
func (l *Link) Drain(ctx context.Context) error {
	l.mu.Lock()
	l.draining = true
	l.mu.Unlock()
	done := make(chan struct{})
	select {
	case l.out <- outMsg{sent: done, last: true}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run keeps the exporter registered and listening until ctx ends,
// reconnecting with backoff.
func (l *Link) Run(ctx context.Context) error {
	go l.follow(ctx)
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := l.session(ctx)
		if ctx.Err() != nil {
			break
		}
		l.mu.Lock()
		draining := l.draining
		l.mu.Unlock()
		if draining {
			return nil
		}
		if errors.Is(err, errdefs.ErrUnauthorized) {
			l.log.Error("controller refused the exporter token; retrying in 30s", "err", err)
			sleep(ctx, 30*time.Second)
			continue
		}
		if time.Since(start) > 30*time.Second {
			backoff = 200 * time.Millisecond
		}
		l.log.Warn("controller link down; reconnecting", "err", err, "in", backoff)
		sleep(ctx, backoff+time.Duration(rand.Int64N(int64(backoff/2+1))))
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

func (l *Link) session(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cli := pb.NewExporterLinkClient(l.conn)
	if _, err := cli.Register(ctx, &pb.RegisterRequest{Labels: l.o.Labels, Report: l.o.Report, TunnelCertSha256: l.end.ID.Fingerprint}, grpc.WaitForReady(false)); err != nil {
		return fmt.Errorf("register: %w", errdefs.FromGRPC(err))
	}
	stream, err := cli.Listen(ctx)
	if err != nil {
		return fmt.Errorf("listen: %w", errdefs.FromGRPC(err))
	}
	l.log.Info("connected to controller")
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			var o outMsg
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				o.m = &pb.ExporterMessage{Kind: &pb.ExporterMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}}
			case o = <-l.out:
			}
			if o.m != nil {
				if err := stream.Send(o.m); err != nil {
					// Lost with the stream, as a heartbeat would be.
					cancel()
					return
				}
			}
			if o.last {
				// The controller reads every message before our end of
				// the stream, then ends it: then all were handled.
				_ = stream.CloseSend()
				<-ctx.Done()
			}
			if o.sent != nil {
				close(o.sent)
			}
			if o.last {
				return
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if err != nil {
			return errdefs.FromGRPC(err)
		}
		switch k := m.GetKind().(type) {
		case *pb.ControllerMessage_Lease:
			a := Assignment{Lease: k.Lease.GetLeaseId(), Client: k.Lease.GetClient()}
			if k.Lease.GetEnd() != nil {
				a.End = k.Lease.GetEnd().AsTime()
			}
			l.mu.Lock()
			l.cur = a
			l.mu.Unlock()
			l.updates <- a
		case *pb.ControllerMessage_Dial:
			go l.dial(ctx, k.Dial)
		}
	}
}

// follow runs OnLease for each change, in order, and ends a lease locally
// when its end passes while the controller cannot be reached.
func (l *Link) follow(ctx context.Context) {
	var last Assignment
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	apply := func(a Assignment) {
		if a.Lease == last.Lease {
			last = a
			return
		}
		l.closeTunnels(last.Lease)
		admit := true
		if l.o.OnLease != nil {
			admit = l.o.OnLease(ctx, last, a)
		}
		l.mu.Lock()
		l.ready = ""
		if admit {
			l.ready = a.Lease
		}
		l.mu.Unlock()
		last = a
	}
	for {
		if last.Lease != "" {
			timer.Reset(time.Until(last.End) + 50*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			l.closeTunnels(last.Lease)
			return
		case a := <-l.updates:
			timer.Stop()
			apply(a)
		case <-timer.C:
			if last.Lease != "" && !time.Now().Before(last.End) {
				l.log.Info("lease ended by its clock (controller unreachable?)", "lease", last.Lease)
				apply(Assignment{})
			}
		}
	}
}

func (l *Link) dial(ctx context.Context, dr *pb.DialRequest) {
	// Wait for the lease's OnLease (beforeLease hook) to have run.
	deadline := time.Now().Add(10 * time.Minute)
	early := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		cur, ready := l.cur, l.ready
		l.mu.Unlock()
		if cur.Lease == dr.GetLeaseId() && ready == cur.Lease {
			break
		}
		// The dial may overtake the lease assignment (another replica
		// granted it); a dial for a lease that never comes times out.
		if cur.Lease != dr.GetLeaseId() && time.Now().After(early) {
			l.log.Warn("dial request for a lease this exporter does not serve", "lease", dr.GetLeaseId(), "current", cur.Lease)
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		sleep(ctx, 5*time.Millisecond)
	}
	addr := dr.GetRouter()
	if addr == "" {
		addr = l.o.Endpoint
	}
	tctx, cancel := context.WithTimeout(ctx, wire.PairTimeout+wire.HelloTimeout)
	raw, err := l.end.Open(tctx, addr, dr.GetSecurity(), dr.GetStreamToken(), dr.GetClientCertSha256())
	cancel()
	if err != nil {
		l.log.Warn("open tunnel end", "lease", dr.GetLeaseId(), "router", addr, "err", err)
		return
	}
	c := &tunnel{Conn: raw, remote: tunnelAddr("client " + dr.GetClient())}
	c.onClose = func() {
		l.mu.Lock()
		delete(l.tunnels, c)
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.tunnels[c] = dr.GetLeaseId()
	l.mu.Unlock()
	var nc net.Conn = c
	if l.CountBytes != nil {
		nc = countConn{Conn: c, count: l.CountBytes}
	}
	select {
	case l.accept <- nc:
	case <-l.closed:
		c.Close()
	}
}

func (l *Link) closeTunnels(lease string) {
	if lease == "" {
		return
	}
	l.mu.Lock()
	var cs []*tunnel
	for c, id := range l.tunnels {
		if id == lease {
			cs = append(cs, c)
		}
	}
	l.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// Listener yields the tunnels as connections for the exporter's server.
func (l *Link) Listener() net.Listener { return (*listener)(l) }

type listener Link

func (ln *listener) Accept() (net.Conn, error) {
	select {
	case c := <-ln.accept:
		return c, nil
	case <-ln.closed:
		return nil, net.ErrClosed
	}
}

func (ln *listener) Close() error {
	(*Link)(ln).once.Do(func() { close(ln.closed) })
	return nil
}

func (ln *listener) Addr() net.Addr { return tunnelAddr("controller " + ln.o.Endpoint) }

// Close closes the connection to the controller.
func (l *Link) Close() error {
	l.Listener().Close()
	return l.conn.Close()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

type countConn struct {
	net.Conn
	count func(in, out int)
}

func (c countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.count(n, 0)
	return n, err
}

func (c countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.count(0, n)
	return n, err
}

// tunnel is an open tunnel end, tracked so a lease's end closes it.
type tunnel struct {
	net.Conn
	remote  net.Addr
	once    sync.Once
	onClose func()
}

func (t *tunnel) Close() error {
	err := t.Conn.Close()
	t.once.Do(func() {
		if t.onClose != nil {
			t.onClose()
		}
	})
	return err
}

func (t *tunnel) RemoteAddr() net.Addr { return t.remote }

type tunnelAddr string

func (a tunnelAddr) Network() string { return "pogo-tunnel" }
func (a tunnelAddr) String() string  { return string(a) }
