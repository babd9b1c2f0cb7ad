package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/lease"
)

// leaseProxy serves a leased exporter on a local socket for the commands
// of jmp shell. It holds the exporter's session itself and forwards every
// driver call with the current session token, so that when the tunnel
// drops (controller restart, exporter restart) it reopens the session and
// the shell's next command works with the same JMP_SESSION. It answers
// Exporter.Session locally, ending that stream when the lease ends.
type leaseProxy struct {
	lc  *lease.Client
	l   *pb.Lease
	up  *client.Client
	log *slog.Logger

	mu     sync.Mutex
	ended  chan struct{}
	reason string
	// final: the controller said the lease is over (not just unreachable).
	final bool
	once  sync.Once
	// opened is closed once the first session is open.
	opened   chan struct{}
	openOnce sync.Once
}

// proxyToken is the JMP_SESSION the shell's commands present; the proxy
// swaps in the real one.
const proxyToken = "lease-proxy"

func newLeaseProxy(ctx context.Context, lc *lease.Client, l *pb.Lease) (*leaseProxy, error) {
	up, err := lc.Exporter(ctx, l.GetId(), client.Options{Name: lc.Name()})
	if err != nil {
		return nil, err
	}
	return &leaseProxy{lc: lc, l: l, up: up, log: slog.Default(), ended: make(chan struct{}), opened: make(chan struct{})}, nil
}

func (p *leaseProxy) end(reason string) {
	p.once.Do(func() {
		p.mu.Lock()
		p.reason = reason
		p.mu.Unlock()
		close(p.ended)
	})
}

// Reason says why the lease ended.
func (p *leaseProxy) Reason() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// over says whether the controller ended the lease.
func (p *leaseProxy) over() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.final
}

// hold keeps the upstream session open for the lease's life.
func (p *leaseProxy) hold(ctx context.Context) {
	go func() {
		err := p.lc.Watch(ctx, p.l.GetId(), func(l *pb.Lease) bool {
			if l.GetState() != pb.LeaseState_LEASE_STATE_READY && l.GetState() != pb.LeaseState_LEASE_STATE_PENDING {
				p.mu.Lock()
				p.final = true
				p.mu.Unlock()
				p.end(lease.Ended(l).Error())
				return false
			}
			return true
		})
		if err != nil && ctx.Err() == nil {
			p.end(err.Error())
		}
	}()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		// Power stays as it is when the tunnel drops; the exporter resets
		// the board when the lease ends.
		sess, err := p.up.Open(ctx, client.SessionOptions{KeepPower: true})
		if err != nil {
			p.log.Debug("open session on leased exporter", "err", err)
			select {
			case <-p.ended:
				return
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		p.openOnce.Do(func() { close(p.opened) })
		select {
		case <-sess.Done():
			fmt.Fprintln(os.Stderr, "jmp shell: lost the exporter; reconnecting…")
		case <-p.ended:
			sess.Close()
			return
		case <-ctx.Done():
			sess.Close()
			return
		}
	}
}

func (p *leaseProxy) serve(l net.Listener) *grpc.Server {
	s := grpc.NewServer(transport.ServerOptions(grpc.UnknownServiceHandler(p.handle), grpc.ForceServerCodec(rawCodec{}))...)
	go s.Serve(l)
	return s
}

func (p *leaseProxy) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	if method == pb.Exporter_Session_FullMethodName {
		return p.session(ss)
	}
	ctx := ss.Context()
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		if k == rpcmeta.SessionKey || strings.HasPrefix(k, ":") || k == "content-type" || k == "user-agent" || strings.HasPrefix(k, "grpc-") {
			continue
		}
		out[k] = v
	}
	cs, err := p.up.Conn().NewStream(metadata.NewOutgoingContext(ctx, out), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	go func() {
		for {
			var f rawFrame
			if err := ss.RecvMsg(&f); err != nil {
				_ = cs.CloseSend()
				return
			}
			if err := cs.SendMsg(&f); err != nil {
				return
			}
		}
	}()
	first := true
	for {
		var f rawFrame
		err := cs.RecvMsg(&f)
		if first {
			if h, herr := cs.Header(); herr == nil {
				_ = ss.SendHeader(h)
			}
			first = false
		}
		if errors.Is(err, io.EOF) {
			ss.SetTrailer(cs.Trailer())
			return nil
		}
		if err != nil {
			return err
		}
		if err := ss.SendMsg(&f); err != nil {
			return err
		}
	}
}

// session answers Exporter.Session for runHeld: the session is the
// lease, held by the proxy; the stream ends with a message when the lease
// ends.
func (p *leaseProxy) session(ss grpc.ServerStream) error {
	var f rawFrame
	if err := ss.RecvMsg(&f); err != nil {
		return err
	}
	ev, _ := proto.Marshal(&pb.SessionEvent{Token: proxyToken})
	if err := ss.SendMsg(&rawFrame{b: ev}); err != nil {
		return err
	}
	gone := make(chan struct{})
	go func() {
		for {
			var f rawFrame
			if ss.RecvMsg(&f) != nil {
				close(gone)
				return
			}
		}
	}()
	select {
	case <-gone:
		return nil
	case <-p.ended:
		msg, _ := proto.Marshal(&pb.SessionEvent{Message: p.Reason()})
		_ = ss.SendMsg(&rawFrame{b: msg})
		return nil
	}
}

type rawFrame struct{ b []byte }

// rawCodec passes messages through without decoding them.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*rawFrame)
	if !ok {
		return nil, fmt.Errorf("proxy codec: unexpected %T", v)
	}
	return f.b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*rawFrame)
	if !ok {
		return fmt.Errorf("proxy codec: unexpected %T", v)
	}
	f.b = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// The environment jmp shell -l gives the command: which lease it got and
// on which exporter, so a job need not parse jmp's output.
const (
	envExporter       = "JMP_EXPORTER"
	envLease          = "JMP_LEASE"
	envExporterLabels = "JMP_EXPORTER_LABELS"
)

// shellLease requests a lease, waits for it, and runs the command through
// the proxy; the lease is released at exit unless keepLease.
func shellLease(ctx context.Context, req lease.Request, leaseID string, keepLease bool, h held, args []string) error {
	cfg, err := lease.LoadConfig(lease.ConfigPath())
	if err != nil {
		return err
	}
	lc, err := lease.Dial(*cfg)
	if err != nil {
		return err
	}
	defer lc.Close()
	return leaseShell(ctx, lc, req, leaseID, keepLease, h, args)
}

func leaseShell(ctx context.Context, lc *lease.Client, req lease.Request, leaseID string, keepLease bool, h held, args []string) error {
	var (
		l   *pb.Lease
		err error
	)
	// p, once set, knows whether the lease has already ended.
	var p *leaseProxy
	if leaseID != "" {
		if l, err = lc.Get(ctx, leaseID); err != nil {
			return err
		}
	} else {
		if l, err = lc.Create(ctx, req); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "jmp shell: lease %s requested (%s, %s)\n", l.GetId(), describeReq(req), req.Duration)
	}
	id := l.GetId()
	// hooks shows the exporter's lease hooks; set once the lease is ready.
	var hooks *hookWatch
	if !keepLease && leaseID == "" {
		defer func() {
			if p != nil && p.over() {
				// Nothing to release, and the controller may no longer
				// know this client: the reason was said already.
				return
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if _, err := lc.Release(rctx, id); err != nil {
				fmt.Fprintf(os.Stderr, "jmp shell: release lease %s: %v\n", id, err)
			}
			if hooks != nil {
				hooks.waitAfter(ctx)
			}
		}()
	} else if leaseID == "" {
		defer fmt.Fprintf(os.Stderr, "jmp shell: lease %s kept (jmp delete lease %s to release it)\n", id, id)
	}
	last := int32(-1)
	l, err = lc.Wait(ctx, id, func(l *pb.Lease) {
		if l.GetQueuePosition() != last {
			last = l.GetQueuePosition()
			fmt.Fprintf(os.Stderr, "jmp shell: waiting for an exporter: %d ahead in the queue\n", last)
		}
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "jmp shell: lease %s ready on %s until %s\n", id, l.GetExporter(), l.GetEnd().AsTime().Local().Format(time.TimeOnly))
	env := []string{envExporter + "=" + l.GetExporter(), envLease + "=" + id, envExporterLabels + "=" + exporterLabels(ctx, lc, l.GetExporter())}
	p, err = newLeaseProxy(ctx, lc, l)
	if err != nil {
		return err
	}
	defer p.up.Close()
	dir, err := os.MkdirTemp("", "jmp-shell-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := dir + "/exporter.sock"
	ln, err := transport.ListenUnix(sock)
	if err != nil {
		return err
	}
	s := p.serve(ln)
	defer s.Stop()
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hooks = watchHooks(ctx, lc, id, os.Stderr, func(r string) { p.end("lease " + id + ": " + r) })
	if keepLease || leaseID != "" {
		defer hooks.stop()
	}
	go p.hold(hctx)
	// The command starts once the exporter is held, so its first j works.
	select {
	case <-p.opened:
	case <-p.ended:
		// A lease a beforeLease hook ended can be seen ended before the
		// hook's replayed output arrives: let the watch show it first.
		hooks.settle(ctx, hookSettle)
		return errors.New(p.Reason())
	case <-time.After(60 * time.Second):
		return fmt.Errorf("lease %s: could not open a session on exporter %s within 60s", id, l.GetExporter())
	}
	err = runHeld(ctx, "unix://"+sock, client.Options{Name: lc.Name()}, h, dir, args, env...)
	if r := p.Reason(); r != "" {
		fmt.Fprintln(os.Stderr, "jmp shell:", r)
	}
	return err
}

// exporterLabels is the exporter's labels as a selector that matches them
// (a=b,c=d, sorted), or empty when the controller does not say.
func exporterLabels(ctx context.Context, lc *lease.Client, name string) string {
	es, err := lc.Exporters(ctx, "")
	if err != nil {
		slog.Warn("jmp shell: exporter labels", "exporter", name, "err", err)
		return ""
	}
	for _, e := range es {
		if e.GetName() == name {
			kv := make([]string, 0, len(e.GetLabels()))
			for k, v := range e.GetLabels() {
				kv = append(kv, k+"="+v)
			}
			sort.Strings(kv)
			return strings.Join(kv, ",")
		}
	}
	return ""
}

func describeReq(r lease.Request) string {
	switch {
	case r.Selector != "" && r.Exporter != "":
		return "selector " + r.Selector + ", exporter " + r.Exporter
	case r.Exporter != "":
		return "exporter " + r.Exporter
	case r.Selector != "":
		return "selector " + r.Selector
	}
	return "any exporter"
}
