// Package exporter is the daemon side of pogo: it builds the driver tree
// from exporter.yaml and serves it over gRPC to the one client holding the
// session, resetting every driver to its safe state when the session ends.
package exporter

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter/config"
)

// Version is the exporter's version, set by cmd/jmp.
var Version = "dev"

// resetTimeout bounds putting the board into its safe state.
const resetTimeout = 60 * time.Second

// Options configure a Server.
type Options struct {
	// Passphrase, when set, must accompany every call (direct mode).
	Passphrase string
	// TLS, when set, serves TLS (direct mode over TCP).
	TLS credentials.TransportCredentials
	Log *slog.Logger
	// Holder, when set, restricts sessions to this client name (the lease
	// holder, set by the controller).
	Holder func() (string, bool)
	// Lease, when set, is the lease driver calls serve: it rides in their
	// context (drivers.LeaseFrom) to exporter-side commands.
	Lease func() (drivers.Lease, bool)
	// AlwaysReset makes Stop reset the drivers even when no session touched
	// them since the last reset: a daemon cannot know what happened to the
	// hardware meanwhile. An in-process shell exporter can.
	AlwaysReset bool
	// LeaseHooks says the caller runs the config's lease hooks and honours
	// exitOnLeaseEnd around each lease (an exporter linked to a
	// controller).
	LeaseHooks bool
	// SessionHooks, when set, makes the server run them around each
	// session instead (direct and local mode). With neither, New refuses a
	// config that has them rather than ignore them.
	SessionHooks *SessionHooks
}

// Server serves one driver tree.
type Server struct {
	tree    *Tree
	name    string
	labels  map[string]string
	opts    Options
	log     *slog.Logger
	logs    *logTee
	grpc    *grpc.Server
	started time.Time

	mu      sync.Mutex
	session *session
	closed  bool
	// dirty is set while drivers may be out of their safe state.
	dirty bool
	// hooks runs the lease hooks around sessions (SessionHooks); lease is
	// the session's stand-in lease meanwhile.
	hooks *sessionHookRunner
	lease drivers.Lease
}

type session struct {
	token  string
	holder string
	since  time.Time
	keep   bool
	end    chan struct{} // closed to end the session from the server side
	ended  chan struct{} // closed once reset and released
}

// New builds the tree of f and returns a server for it.
func New(ctx context.Context, f *config.File, host *drivers.Host, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	tee := newLogTee(opts.Log.Handler())
	log := slog.New(tee)
	if !opts.LeaseHooks && opts.SessionHooks == nil {
		if err := refuseLeaseKeys(f); err != nil {
			return nil, err
		}
	}
	if host == nil {
		host = &drivers.Host{}
	}
	t, err := Build(ctx, f, host, log)
	if err != nil {
		return nil, err
	}
	s := &Server{tree: t, name: f.Metadata.Name, labels: f.Metadata.Labels, opts: opts, log: log, logs: tee, started: time.Now(), dirty: true}
	if opts.SessionHooks != nil {
		s.hooks = newSessionHookRunner(f, opts.SessionHooks, log)
	}
	if s.name == "" {
		s.name = "exporter"
	}
	sopts := transport.ServerOptions(
		grpc.ChainUnaryInterceptor(s.unaryGuard),
		grpc.ChainStreamInterceptor(s.streamGuard),
	)
	if opts.TLS != nil {
		sopts = append(sopts, grpc.Creds(opts.TLS))
	}
	s.grpc = grpc.NewServer(sopts...)
	pb.RegisterExporterServer(s.grpc, &exporterService{s: s})
	for _, svc := range drivers.Services() {
		svc.Register(s.grpc, s)
	}
	return s, nil
}

// refuseLeaseKeys fails for a config whose lease keys this server cannot
// honour, rather than ignore them.
func refuseLeaseKeys(f *config.File) error {
	var keys []string
	if f.Hooks.BeforeLease != nil {
		keys = append(keys, "hooks.beforeLease")
	}
	if f.Hooks.AfterLease != nil {
		keys = append(keys, "hooks.afterLease")
	}
	if f.ExitOnLeaseEnd {
		keys = append(keys, "exitOnLeaseEnd")
	}
	if len(keys) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s: this exporter cannot run lease hooks or honour exitOnLeaseEnd (an in-process test exporter): remove them, or serve the config with jmp run",
		f.Path, strings.Join(keys, ", "))
}

// Tree returns the server's driver tree.
func (s *Server) Tree() *Tree { return s.tree }

// Serve serves l until Stop.
func (s *Server) Serve(l net.Listener) error {
	err := s.grpc.Serve(l)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop ends the session (resetting drivers), stops serving and closes
// every driver. Nothing the drivers started survives it.
func (s *Server) Stop() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	sess := s.session
	s.mu.Unlock()
	if sess != nil {
		s.endSession(sess, "exporter stopping")
		<-sess.ended
	} else if s.opts.AlwaysReset || s.isDirty() {
		_ = s.Reset("exporter stopping")
	}
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		s.grpc.Stop()
	}
	return s.tree.Close()
}

// EndSession ends the current session, if any (a lease ended).
func (s *Server) EndSession(reason string) {
	s.mu.Lock()
	sess := s.session
	s.mu.Unlock()
	if sess != nil {
		s.endSession(sess, reason)
		<-sess.ended
	}
}

func (s *Server) endSession(sess *session, reason string) {
	s.mu.Lock()
	select {
	case <-sess.end:
	default:
		s.log.Info("ending session", "holder", sess.holder, "reason", reason)
		close(sess.end)
	}
	s.mu.Unlock()
}

// Reset puts every driver into its safe state (power off), within
// resetTimeout, acting for the current lease; why is logged. Sessions that
// end do it themselves (unless they keep power); a daemon calls it when a
// lease ends.
func (s *Server) Reset(why string) error {
	ctx, cancel := context.WithTimeout(s.withLease(context.Background()), resetTimeout)
	defer cancel()
	if err := s.tree.Reset(ctx); err != nil {
		s.log.Error("reset to safe state failed", "why", why, "err", err)
		return err
	}
	s.mu.Lock()
	s.dirty = false
	s.mu.Unlock()
	s.log.Info("drivers reset to safe state", "why", why)
	return nil
}

// Kind implements drivers.Resolver.
func (s *Server) Kind(d drivers.Driver) string { return s.tree.host.Kind(d) }

// Resolve implements drivers.Resolver.
func (s *Server) Resolve(ctx context.Context) (drivers.Driver, string, error) {
	path := rpcmeta.Incoming(ctx, rpcmeta.PathKey)
	if path == "" {
		return nil, "", errdefs.Invalidf("call names no driver (metadata %q)", rpcmeta.PathKey)
	}
	d, ok := s.tree.Lookup(path)
	if !ok {
		return nil, path, fmt.Errorf("no driver at %q (drivers: %s): %w", path, strings.Join(s.tree.Paths(), ", "), errdefs.ErrNotFound)
	}
	return d, path, nil
}

func (s *Server) checkPassphrase(ctx context.Context) error {
	if s.opts.Passphrase == "" {
		return nil
	}
	got := rpcmeta.Incoming(ctx, rpcmeta.PassphraseKey)
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.Passphrase)) != 1 {
		// Log who and what, never the value presented.
		why := "wrong passphrase"
		if got == "" {
			why = "no passphrase"
		}
		from := "unknown"
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			from = p.Addr.String()
		}
		s.log.Warn("rejected a call: "+why, "peer", from)
		return fmt.Errorf("wrong or missing passphrase: %w", errdefs.ErrUnauthorized)
	}
	return nil
}

// checkSession admits a driver call only from the session holder.
func (s *Server) checkSession(ctx context.Context) error {
	tok := rpcmeta.Incoming(ctx, rpcmeta.SessionKey)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.session == nil {
		return fmt.Errorf("no session: open one before calling drivers (jmp shell does): %w", errdefs.ErrNotHeld)
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.session.token)) != 1 {
		return fmt.Errorf("exporter %s is held by %s since %s: %w", s.name, s.session.holder, s.session.since.Format(time.RFC3339), errdefs.ErrNotHeld)
	}
	return nil
}

func (s *Server) guard(ctx context.Context, method string) error {
	if err := s.checkPassphrase(ctx); err != nil {
		return errdefs.ToGRPC(err)
	}
	if strings.HasPrefix(method, "/"+pb.Exporter_ServiceDesc.ServiceName+"/") {
		return nil
	}
	return errdefs.ToGRPC(s.checkSession(ctx))
}

func (s *Server) unaryGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.guard(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(s.withLease(ctx), req)
}

func (s *Server) streamGuard(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.guard(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	if ctx := s.withLease(ss.Context()); ctx != ss.Context() {
		ss = leaseStream{ServerStream: ss, ctx: ctx}
	}
	return h(srv, ss)
}

// withLease adds the current lease to a driver call's context.
func (s *Server) withLease(ctx context.Context) context.Context {
	if s.opts.Lease == nil {
		s.mu.Lock()
		l := s.lease
		s.mu.Unlock()
		if l.ID != "" {
			return drivers.WithLease(ctx, l)
		}
		return ctx
	}
	if l, ok := s.opts.Lease(); ok {
		return drivers.WithLease(ctx, l)
	}
	return ctx
}

type leaseStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (l leaseStream) Context() context.Context { return l.ctx }

type exporterService struct {
	pb.UnimplementedExporterServer
	s *Server
}

func (e *exporterService) Session(stream pb.Exporter_SessionServer) error {
	s := e.s
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	sess, hs, err := s.startSession(req.GetClient(), req.GetKeepPower(), stream)
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	defer s.finishSession(sess, hs)
	if err := sendEvent(stream, hs, &pb.SessionEvent{Token: sess.token, Since: timestamppb.New(sess.since)}); err != nil {
		return err
	}
	recvDone := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				recvDone <- err
				return
			}
		}
	}()
	select {
	case <-recvDone:
		return nil // the client ended the session or went away: it ends either way
	case <-sess.end:
		_ = sendEvent(stream, hs, &pb.SessionEvent{Message: "session ended by the exporter"})
		return nil
	}
}

// OpenSession opens a session in this process for holder (a lease hook),
// as Exporter.Session does for a remote client: the token goes in the
// calls' metadata. end ends the session and returns once the drivers are
// reset (unless keepPower); the server may end it first (EndSession, Stop).
func (s *Server) OpenSession(holder string, keepPower bool) (token string, end func(), err error) {
	sess, _, err := s.startSession(holder, keepPower, nil)
	if err != nil {
		return "", nil, err
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-sess.end:
		}
		s.finishSession(sess, nil)
	}()
	var once sync.Once
	return sess.token, func() {
		once.Do(func() { close(done) })
		<-sess.ended
	}, nil
}

// startSession admits holder's session when the exporter is free (and, with
// a controller, leased to holder). Given the session's stream and session
// hooks (direct and local mode), the session is the lease: beforeLease runs
// first, its output on the stream, and may refuse the session.
func (s *Server) startSession(holder string, keep bool, stream pb.Exporter_SessionServer) (*session, *hookSession, error) {
	if holder == "" {
		holder = "anonymous"
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("exporter %s is shutting down: %w", s.name, errdefs.ErrUnavailable)
	}
	if s.opts.Holder != nil {
		if want, leased := s.opts.Holder(); !leased || want != holder {
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("exporter %s is not leased to %s: %w", s.name, holder, errdefs.ErrNotHeld)
		}
	}
	if cur := s.session; cur != nil {
		s.mu.Unlock()
		return nil, nil, fmt.Errorf("exporter %s in use by %s since %s: %w", s.name, cur.holder, cur.since.Format(time.RFC3339), errdefs.ErrInUse)
	}
	sess := &session{token: newToken(), holder: holder, since: time.Now(), keep: keep, end: make(chan struct{}), ended: make(chan struct{})}
	s.session = sess
	s.dirty = true
	var hs *hookSession
	if s.hooks != nil && stream != nil {
		hs = s.hooks.begin(s, stream, holder)
	}
	s.mu.Unlock()
	if hs != nil {
		// A refused session is already cleaned up by before.
		if err := hs.before(); err != nil {
			return nil, nil, err
		}
	}
	s.log.Info("session started", "holder", holder)
	s.tree.each(func(d drivers.Driver) {
		if o, ok := d.(drivers.SessionObserver); ok {
			o.SessionStart(holder)
		}
	})
	return sess, hs, nil
}

// finishSession runs afterLease (session hooks), resets the drivers (unless
// the session keeps power) and frees the exporter.
func (s *Server) finishSession(sess *session, hs *hookSession) {
	if hs != nil {
		hs.after()
	}
	if !sess.keep {
		_ = s.Reset("session of " + sess.holder + " ended")
	}
	s.tree.each(func(d drivers.Driver) {
		if o, ok := d.(drivers.SessionObserver); ok {
			o.SessionEnd()
		}
	})
	s.mu.Lock()
	s.session = nil
	s.mu.Unlock()
	close(sess.ended)
	s.log.Info("session ended", "holder", sess.holder)
	if hs != nil {
		hs.finish()
	}
}

func (e *exporterService) Report(ctx context.Context, _ *pb.ReportRequest) (*pb.ReportResponse, error) {
	return e.s.Report(), nil
}

// Report describes the driver tree: what Exporter.Report answers, and what
// an exporter registers with its controller.
func (s *Server) Report() *pb.ReportResponse {
	t := s.tree
	r := &pb.ReportResponse{Name: s.name, Labels: s.labels}
	for _, en := range t.order {
		n := &pb.DriverNode{Path: en.node.Path, Kind: en.kind, Ref: en.node.Ref}
		if i := strings.LastIndex(en.node.Path, "."); i >= 0 {
			n.ParentPath = en.node.Path[:i]
		}
		if en.driver != nil {
			// A parent serves what its parts serve through them; listing it
			// on the parent too would make its j verbs clash with the parts'.
			n.Interfaces = drivers.Interfaces(en.driver)
			if p, parent := en.driver.(drivers.Parent); parent {
				byParts := map[string]bool{}
				for _, part := range p.Parts() {
					for _, i := range drivers.Interfaces(part.Driver) {
						byParts[i] = true
					}
				}
				n.Interfaces = slices.DeleteFunc(n.Interfaces, func(i string) bool { return byParts[i] })
			}
			if d, ok := en.driver.(drivers.Describer); ok {
				n.Description = d.Description()
			}
		}
		r.Drivers = append(r.Drivers, n)
	}
	return r
}

func (e *exporterService) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	s := e.s
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &pb.StatusResponse{Name: s.name, Version: Version, Started: timestamppb.New(s.started)}
	if s.session != nil {
		r.Held, r.Holder, r.Since = true, s.session.holder, timestamppb.New(s.session.since)
	}
	return r, nil
}

func (e *exporterService) Logs(req *pb.LogsRequest, stream pb.Exporter_LogsServer) error {
	recs, c, stop := e.s.logs.book.snapshot(req.GetFollow())
	defer stop()
	for _, r := range recs {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	if c == nil {
		return nil
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case r := <-c:
			if err := stream.Send(r); err != nil {
				return err
			}
		}
	}
}

func newToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Server) isDirty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dirty
}

// Holder names the client holding the session, if any.
func (s *Server) Holder() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.session == nil {
		return "", false
	}
	return s.session.holder, true
}
