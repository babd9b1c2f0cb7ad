package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/hooks"
)

// SessionHooks runs exporter.yaml's lease hooks around each session, for
// an exporter without a controller (direct and local mode): the session
// is the lease. beforeLease runs before the client gets its token, its
// output streamed to the client on the session; afterLease runs when the
// session ends (the client closing it, or the exporter stopping), before
// the board is reset.
type SessionHooks struct {
	// Host is JMP_HOST for the hooks' j: this server's own address.
	Host string
	// Env is more of j's environment (JMP_PASSPHRASE, JMP_FINGERPRINT).
	Env []string
	// Dir is a private directory for the hooks' j symlink.
	Dir string
	// Exit makes the exporter exit: with the hook's error for onFailure:
	// exit, with nil after the first session for exitOnLeaseEnd.
	Exit func(error)
}

type sessionHookRunner struct {
	o              *SessionHooks
	runner         hooks.Runner
	exitOnLeaseEnd bool
	log            *slog.Logger
}

func newSessionHookRunner(f *config.File, o *SessionHooks, log *slog.Logger) *sessionHookRunner {
	for _, w := range hooks.Check(f.Hooks) {
		log.Warn("hook will not work as in Jumpstarter", "problem", w)
	}
	return &sessionHookRunner{o: o, runner: hooks.Runner{Hooks: f.Hooks, Dir: o.Dir, Log: log}, exitOnLeaseEnd: f.ExitOnLeaseEnd, log: log}
}

// hookSession is one session's hooks.
type hookSession struct {
	r      *sessionHookRunner
	s      *Server
	stream pb.Exporter_SessionServer
	sess   *session
	lease  drivers.Lease
	// smu serialises sends on the session stream.
	smu sync.Mutex
	// endedByHook: beforeLease failed with endLease or exit.
	endedByHook bool
}

// begin is called with s.mu held, s.session being the client's new
// session: while beforeLease runs, the hook holds the exporter instead.
func (r *sessionHookRunner) begin(s *Server, stream pb.Exporter_SessionServer, holder string) *hookSession {
	h := &hookSession{r: r, s: s, stream: stream, sess: s.session, lease: drivers.Lease{ID: sessionLeaseID(), Client: holder}}
	s.lease = h.lease
	if r.runner.Has(hooks.Before) {
		s.session = h.hookSession(hooks.Before)
	}
	return h
}

// hookSession is a session for hook which, sharing the client session's
// end: stopping the exporter ends either.
func (h *hookSession) hookSession(which string) *session {
	return &session{token: newToken(), holder: "hook:" + which, since: time.Now(), keep: true, end: h.sess.end, ended: h.sess.ended}
}

func (h *hookSession) run(ctx context.Context, which string, hs *session) error {
	r := h.r.runner
	r.Open = func(context.Context, string) (hooks.Reach, func(), error) {
		return hooks.Reach{Host: h.r.o.Host, Session: hs.token, Env: h.r.o.Env}, func() {}, nil
	}
	err := r.Run(drivers.WithLease(ctx, h.lease), which, h.lease, func(line string) {
		h.send(&pb.HookEvent{LeaseId: h.lease.ID, Hook: which, Line: line})
	})
	done := &pb.HookEvent{LeaseId: h.lease.ID, Hook: which, Done: true}
	var he *hooks.Error
	if errors.As(err, &he) {
		done.Error, done.OnFailure = he.Err.Error(), he.OnFailure
	}
	h.send(done)
	return err
}

func (h *hookSession) send(e *pb.HookEvent) {
	_ = sendEvent(h.stream, h, &pb.SessionEvent{Hook: e})
}

// sendEvent sends on a session stream, serialised with its hooks' sends.
func sendEvent(stream pb.Exporter_SessionServer, h *hookSession, e *pb.SessionEvent) error {
	if h != nil {
		h.smu.Lock()
		defer h.smu.Unlock()
	}
	return stream.Send(e)
}

// before runs beforeLease; an error refuses the session (the hook failed
// with endLease or exit, or the exporter is stopping).
func (h *hookSession) before() error {
	s := h.s
	var configured []string
	for _, w := range []string{hooks.Before, hooks.After} {
		if h.r.runner.Has(w) {
			configured = append(configured, w)
		}
	}
	h.send(&pb.HookEvent{LeaseId: h.lease.ID, Configured: configured})
	if !h.r.runner.Has(hooks.Before) {
		return nil
	}
	s.mu.Lock()
	hs := s.session
	s.mu.Unlock()
	// Stopping the exporter cuts the hook short.
	ctx, cancel := context.WithCancel(context.WithoutCancel(h.stream.Context()))
	defer cancel()
	go func() {
		select {
		case <-h.sess.end:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := h.run(ctx, hooks.Before, hs)
	stopping := false
	select {
	case <-h.sess.end:
		stopping = true
	default:
	}
	var he *hooks.Error
	fatal := errors.As(err, &he) && he.OnFailure != hooks.Warn
	if !fatal && !stopping {
		if err != nil {
			h.r.log.Warn("hook failed", "lease", h.lease.ID, "err", err)
		}
		s.mu.Lock()
		s.session = h.sess
		s.mu.Unlock()
		return nil
	}
	// The session never starts: the board goes back to its safe state and
	// the exporter is free (or exits).
	h.endedByHook = true
	_ = s.Reset("beforeLease hook ended the session")
	s.mu.Lock()
	s.session = nil
	s.lease = drivers.Lease{}
	s.mu.Unlock()
	close(h.sess.ended)
	if stopping && !fatal {
		return fmt.Errorf("exporter %s is shutting down: %w", s.name, errdefs.ErrUnavailable)
	}
	h.r.log.Error("hook failed; session refused", "lease", h.lease.ID, "onFailure", he.OnFailure, "err", err)
	if he.OnFailure == hooks.Exit && h.r.o.Exit != nil {
		h.r.o.Exit(fmt.Errorf("exporter exits: %w", err))
	}
	return fmt.Errorf("%v (onFailure: %s): %w", err, he.OnFailure, errdefs.ErrUnavailable)
}

// after runs afterLease as the session ends, the hook holding the
// exporter; the client, if still listening, sees its output.
func (h *hookSession) after() {
	if !h.r.runner.Has(hooks.After) {
		return
	}
	s := h.s
	hs := h.hookSession(hooks.After)
	s.mu.Lock()
	s.session = hs
	s.mu.Unlock()
	err := h.run(context.Background(), hooks.After, hs)
	s.mu.Lock()
	s.session = h.sess
	s.mu.Unlock()
	var he *hooks.Error
	if errors.As(err, &he) {
		if he.OnFailure == hooks.Exit && h.r.o.Exit != nil {
			h.r.log.Error("hook failed; exporter exits", "lease", h.lease.ID, "err", err)
			h.r.o.Exit(fmt.Errorf("exporter exits: %w", err))
			return
		}
		h.r.log.Warn("hook failed", "lease", h.lease.ID, "err", err)
	}
}

// finish runs once the session is over: exitOnLeaseEnd ends the
// exporter after its first session.
func (h *hookSession) finish() {
	h.s.mu.Lock()
	if h.s.lease == h.lease {
		h.s.lease = drivers.Lease{}
	}
	h.s.mu.Unlock()
	if h.r.exitOnLeaseEnd && h.r.o.Exit != nil {
		h.r.log.Info("exitOnLeaseEnd: the session is over; exporter exits", "lease", h.lease.ID)
		h.r.o.Exit(nil)
	}
}

// sessionLeaseID names a session's stand-in lease (LEASE_NAME).
func sessionLeaseID() string {
	t := newToken()
	return t[0:8] + "-" + t[8:12] + "-" + t[12:16] + "-" + t[16:20] + "-" + t[20:32]
}
