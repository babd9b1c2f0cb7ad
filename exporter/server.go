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
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
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
	// AlwaysReset makes Stop reset the drivers even when no session touched
	// them since the last reset: a daemon cannot know what happened to the
	// hardware meanwhile. An in-process shell exporter can.
	AlwaysReset bool
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
	if host == nil {
		host = &drivers.Host{}
	}
	t, err := Build(ctx, f, host, log)
	if err != nil {
		return nil, err
	}
	s := &Server{tree: t, name: f.Metadata.Name, labels: f.Metadata.Labels, opts: opts, log: log, logs: tee, started: time.Now(), dirty: true}
	if s.name == "" {
		s.name = "exporter"
	}
	sopts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.unaryGuard),
		grpc.ChainStreamInterceptor(s.streamGuard),
		grpc.MaxRecvMsgSize(16 << 20),
		// Large windows keep bulk streams (images, consoles) at wire speed.
		grpc.InitialWindowSize(4 << 20),
		grpc.InitialConnWindowSize(16 << 20),
		grpc.WriteBufferSize(1 << 20),
		grpc.ReadBufferSize(1 << 20),
	}
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
		s.resetAll("exporter stopping")
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

func (s *Server) resetAll(why string) {
	ctx, cancel := context.WithTimeout(context.Background(), resetTimeout)
	defer cancel()
	if err := s.tree.Reset(ctx); err != nil {
		s.log.Error("reset to safe state failed", "why", why, "err", err)
		return
	}
	s.mu.Lock()
	s.dirty = false
	s.mu.Unlock()
	s.log.Info("drivers reset to safe state", "why", why)
}

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

const exporterService_ = "/pogo.v1.Exporter/"

func (s *Server) guard(ctx context.Context, method string) error {
	if err := s.checkPassphrase(ctx); err != nil {
		return errdefs.ToGRPC(err)
	}
	if strings.HasPrefix(method, exporterService_) {
		return nil
	}
	return errdefs.ToGRPC(s.checkSession(ctx))
}

func (s *Server) unaryGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.guard(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) streamGuard(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.guard(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

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
	holder := req.GetClient()
	if holder == "" {
		holder = "anonymous"
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errdefs.ToGRPC(fmt.Errorf("exporter %s is shutting down: %w", s.name, errdefs.ErrUnavailable))
	}
	if s.opts.Holder != nil {
		if want, leased := s.opts.Holder(); !leased || want != holder {
			s.mu.Unlock()
			return errdefs.ToGRPC(fmt.Errorf("exporter %s is not leased to %s: %w", s.name, holder, errdefs.ErrNotHeld))
		}
	}
	if cur := s.session; cur != nil {
		s.mu.Unlock()
		return errdefs.ToGRPC(fmt.Errorf("exporter %s in use by %s since %s: %w", s.name, cur.holder, cur.since.Format(time.RFC3339), errdefs.ErrInUse))
	}
	sess := &session{token: newToken(), holder: holder, since: time.Now(), keep: req.GetKeepPower(), end: make(chan struct{}), ended: make(chan struct{})}
	s.session = sess
	s.dirty = true
	s.mu.Unlock()
	s.log.Info("session started", "holder", holder)
	s.tree.each(func(d drivers.Driver) {
		if o, ok := d.(drivers.SessionObserver); ok {
			o.SessionStart(holder)
		}
	})

	defer func() {
		if !sess.keep {
			s.resetAll("session of " + holder + " ended")
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
		s.log.Info("session ended", "holder", holder)
	}()

	if err := stream.Send(&pb.SessionEvent{Token: sess.token, Since: timestamppb.New(sess.since)}); err != nil {
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
	case err := <-recvDone:
		if errors.Is(err, io.EOF) {
			return nil
		}
		return nil // the client went away; the session ends either way
	case <-sess.end:
		_ = stream.Send(&pb.SessionEvent{Message: "session ended by the exporter"})
		return nil
	}
}

func (e *exporterService) Report(ctx context.Context, _ *pb.ReportRequest) (*pb.ReportResponse, error) {
	t := e.s.tree
	r := &pb.ReportResponse{Name: e.s.name, Labels: e.s.labels}
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
	return r, nil
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
