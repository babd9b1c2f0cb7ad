package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
)

// Well-known blob ids of phosphor-ipmi-flash.
const (
	HashBlob    = "/flash/hash"
	VerifyBlob  = "/flash/verify"
	UpdateBlob  = "/flash/update"
	CleanupBlob = "/flash/cleanup"
	ActivePfx   = "/flash/active/"
)

// Phase names one step of the update; errors and progress carry it.
type Phase string

// Update phases in the order they run.
const (
	PhaseCheck   Phase = "check"
	PhaseStale   Phase = "stale-cleanup"
	PhaseUpload  Phase = "upload"
	PhaseHash    Phase = "hash"
	PhaseVerify  Phase = "verify"
	PhaseUpdate  Phase = "update"
	PhaseCleanup Phase = "cleanup"
)

// ErrActionFailed is returned when the BMC reports the verify or update
// action as failed; retrying cannot help so it is never retried.
var ErrActionFailed = errors.New("BMC reported failed")

// ErrTimeout is returned when an action did not finish in time.
var ErrTimeout = errors.New("timed out waiting for the BMC")

// ErrChunkTooLarge is returned when the BMC refuses a write as longer than
// it takes (completion code 0xc8); the same chunk size would fail again, so
// it is never retried.
var ErrChunkTooLarge = errors.New("chunk too large for the BMC")

// SessionTimeout is how long phosphor-ipmi-blobs keeps a blob session
// without commands before it expires it.
const SessionTimeout = 10 * time.Minute

// PhaseError names the phase an update failed in.
type PhaseError struct {
	Phase Phase
	Err   error
}

func (e *PhaseError) Error() string { return string(e.Phase) + ": " + e.Err.Error() }
func (e *PhaseError) Unwrap() error { return e.Err }

// Progress is reported to Updater.Progress as the update advances.
type Progress struct {
	Phase   Phase
	Done    int64 // bytes sent in upload phases
	Total   int64
	Message string
}

// Request describes one firmware update.
type Request struct {
	// Type is the flash blob to write: "image", "tarball", "bios" or a full
	// "/flash/..." id.
	Type      string
	Image     io.ReaderAt
	ImageSize int64
	Signature []byte
	// IgnoreUpdate skips polling the update action, for BMCs that reboot
	// as soon as the update is committed.
	IgnoreUpdate bool
}

// Updater runs the burn_my_bmc sequence over a Client. Zero durations and
// counts take the defaults documented on each field.
type Updater struct {
	Client *Client
	// ChunkSize is the write payload per IPMI request (default 512), small
	// enough for the request limit of a real OpenBMC LAN channel.
	ChunkSize int
	// PollStart and PollMax bound the SessionStat backoff (50 ms → 1 s).
	PollStart, PollMax time.Duration
	// ActionTimeout bounds each verify/update poll (default 30 min).
	ActionTimeout time.Duration
	// Retries is the number of attempts per step (default 3).
	Retries int
	// RetryDelay separates attempts (default 1 s).
	RetryDelay time.Duration
	// Progress, when set, is called synchronously as the update advances.
	Progress func(Progress)
	Log      *slog.Logger
}

func (u *Updater) chunk() int   { return cmp(u.ChunkSize, 512) }
func (u *Updater) retries() int { return cmp(u.Retries, 3) }
func (u *Updater) pollStart() time.Duration {
	return cmp(u.PollStart, 50*time.Millisecond)
}
func (u *Updater) pollMax() time.Duration { return cmp(u.PollMax, time.Second) }
func (u *Updater) actionTimeout() time.Duration {
	return cmp(u.ActionTimeout, 30*time.Minute)
}
func (u *Updater) retryDelay() time.Duration { return cmp(u.RetryDelay, time.Second) }

func (u *Updater) log() *slog.Logger {
	if u.Log != nil {
		return u.Log
	}
	return slog.Default()
}

func cmp[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func (u *Updater) report(p Progress) {
	if u.Progress != nil {
		u.Progress(p)
	}
}

// BlobID maps an update type to its blob id.
func BlobID(typ string) string {
	if strings.HasPrefix(typ, "/flash/") {
		return typ
	}
	return "/flash/" + typ
}

// Update uploads, verifies and applies a firmware image. On any failure it
// closes what it opened, removes active markers and commits /flash/cleanup
// so the BMC is left ready for the next attempt.
func (u *Updater) Update(ctx context.Context, req Request) (err error) {
	id := BlobID(req.Type)
	var open sessionTracker
	defer func() {
		var held *heldErr
		if err == nil || errors.As(err, &held) {
			// Another session's update is not ours to clean up.
			return
		}
		// The caller's ctx may be what failed (abort), yet the BMC must
		// still be told, so cleanup gets its own bounded context.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if cerr := u.cleanup(cctx, &open); cerr != nil {
			u.log().Warn("cleanup after failed update", "err", cerr)
			err = errors.Join(err, &PhaseError{PhaseCleanup, cerr})
		}
	}()

	u.report(Progress{Phase: PhaseCheck, Message: "listing blobs"})
	if err := u.step(ctx, PhaseCheck, func() error { return u.check(ctx, id) }); err != nil {
		return err
	}
	if err := u.step(ctx, PhaseStale, func() error { return u.cleanStale(ctx) }); err != nil {
		return err
	}
	if err := u.step(ctx, PhaseUpload, func() error {
		return u.upload(ctx, &open, PhaseUpload, id, req.Image, req.ImageSize)
	}); err != nil {
		return err
	}
	if err := u.step(ctx, PhaseHash, func() error {
		sig := req.Signature
		return u.upload(ctx, &open, PhaseHash, HashBlob, bytesReaderAt(sig), int64(len(sig)))
	}); err != nil {
		return err
	}
	if err := u.action(ctx, &open, PhaseVerify, VerifyBlob, false); err != nil {
		return err
	}
	if err := u.action(ctx, &open, PhaseUpdate, UpdateBlob, req.IgnoreUpdate); err != nil {
		return err
	}
	u.report(Progress{Phase: PhaseUpdate, Message: "done"})
	return nil
}

// sessionTracker remembers the one session the updater holds so cleanup can
// close it.
type sessionTracker struct {
	id    uint16
	valid bool
}

func (s *sessionTracker) set(id uint16) { s.id, s.valid = id, true }
func (s *sessionTracker) clear()        { s.valid = false }

// step runs fn up to Retries times; BMC-reported action failures, chunks
// too large, blobs not offered, refused credentials and context
// cancellation end it at once.
func (u *Updater) step(ctx context.Context, phase Phase, fn func() error) error {
	var err error
	for attempt := 1; attempt <= u.retries(); attempt++ {
		if err = fn(); err == nil {
			return nil
		}
		if errors.Is(err, ErrActionFailed) || errors.Is(err, ErrChunkTooLarge) || errors.Is(err, errdefs.ErrUnsupported) ||
			errors.Is(err, errdefs.ErrUnauthorized) || ctx.Err() != nil {
			break
		}
		u.log().Warn("update step failed", "phase", phase, "attempt", attempt, "err", err)
		if attempt == u.retries() {
			break
		}
		if rerr := u.reconnectIfLost(ctx, err); rerr != nil {
			u.log().Warn("reconnect", "err", rerr)
		}
		if werr := sleep(ctx, u.retryDelay()); werr != nil {
			err = werr
			break
		}
	}
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = fmt.Errorf("%w: %w", ctx.Err(), err)
	}
	return &PhaseError{phase, err}
}

// reconnectIfLost re-establishes the session when err came from the
// transport rather than from the BMC's blob handler.
func (u *Updater) reconnectIfLost(ctx context.Context, err error) error {
	if _, ok := CompletionCode(err); ok {
		return nil
	}
	r, ok := u.Client.T.(Reconnector)
	if !ok {
		return nil
	}
	return r.Reconnect(ctx)
}

// Check tells, before the image is at hand, whether the BMC offers the
// blob of typ over IPMI, so that a caller need not fetch an image the BMC
// would refuse. It reports no progress; Update checks again.
func (u *Updater) Check(ctx context.Context, typ string) error {
	return u.step(ctx, PhaseCheck, func() error { return u.check(ctx, BlobID(typ)) })
}

func (u *Updater) check(ctx context.Context, id string) error {
	ids, err := u.Client.List(ctx)
	if err != nil {
		return err
	}
	for _, want := range []string{id, HashBlob} {
		if !slices.Contains(ids, want) {
			return fmt.Errorf("BMC does not offer %s (blobs: %s): %w", want, strings.Join(ids, ", "), errdefs.ErrUnsupported)
		}
	}
	m, err := u.Client.Stat(ctx, id)
	if err != nil {
		return err
	}
	if m.State&TransportIPMI == 0 {
		return fmt.Errorf("%s does not accept the ipmi transport (state %#04x): %w", id, m.State, errdefs.ErrUnsupported)
	}
	return nil
}

// cleanStale removes markers a crashed earlier run left behind; the BMC
// would otherwise refuse to start a new upload.
func (u *Updater) cleanStale(ctx context.Context) error {
	ids, err := u.Client.List(ctx)
	if err != nil {
		return err
	}
	stale := false
	for _, id := range ids {
		if strings.HasPrefix(id, ActivePfx) {
			stale = true
			u.report(Progress{Phase: PhaseStale, Message: "deleting stale " + id})
			refusedAt := time.Now()
			if err := u.Client.Delete(ctx, id); err != nil {
				if cc, ok := CompletionCode(err); ok && cc == CCUnspecifiedError {
					return heldError(id, refusedAt, err)
				}
				return err
			}
		}
	}
	if stale && slices.Contains(ids, CleanupBlob) {
		return u.commitCleanup(ctx)
	}
	return nil
}

// heldError explains the BMC refusing to delete an active marker: a flash
// blob is open in a session not ours. The protocol does not say whose, nor
// when it last spoke, so the expiry given is the latest an abandoned
// session can last.
func heldError(id string, at time.Time, err error) error {
	return &heldErr{msg: fmt.Sprintf("delete %s: another session holds a flash blob open on the BMC "+
		"(an update from another host, or a run that died mid-upload); the BMC expires a session after %s without commands, "+
		"so an abandoned one is gone by %s at the latest", id, SessionTimeout, at.Add(SessionTimeout).Format("15:04:05 MST")), err: err}
}

// heldErr keeps the BMC's completion code for errors.As and matches
// errdefs.ErrInUse, without repeating the code's text.
type heldErr struct {
	msg string
	err error
}

func (e *heldErr) Error() string   { return e.msg }
func (e *heldErr) Unwrap() []error { return []error{e.err, errdefs.ErrInUse} }

func (u *Updater) commitCleanup(ctx context.Context) error {
	s, err := u.Client.Open(ctx, CleanupBlob, FlagWrite)
	if err != nil {
		return err
	}
	cerr := u.Client.Commit(ctx, s, nil)
	if err := u.Client.Close(ctx, s); err != nil && cerr == nil {
		cerr = err
	}
	if cerr != nil {
		return fmt.Errorf("commit %s: %w", CleanupBlob, cerr)
	}
	return nil
}

func (u *Updater) upload(ctx context.Context, open *sessionTracker, phase Phase, id string, r io.ReaderAt, size int64) error {
	if open.valid {
		// A previous attempt died mid-upload; the BMC keeps one flash
		// session at a time, so free it first.
		_ = u.Client.Close(ctx, open.id)
		open.clear()
	}
	s, err := u.Client.Open(ctx, id, FlagWrite|TransportIPMI)
	if err != nil {
		return err
	}
	open.set(s)
	buf := make([]byte, u.chunk())
	var off int64
	for off < size {
		n, rerr := r.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if n == 0 && rerr != nil {
			return fmt.Errorf("read %s source at %d: %w", phase, off, rerr)
		}
		if err := u.Client.Write(ctx, s, uint32(off), buf[:n]); err != nil {
			if cc, ok := CompletionCode(err); ok && cc == CCReqDataTooLong {
				return fmt.Errorf("write %s at %d: the BMC refused a request carrying %d image bytes as too long; lower chunk_size (now %d; 512 suits an OpenBMC LAN channel): %w: %w",
					id, off, n, u.chunk(), ErrChunkTooLarge, err)
			}
			return fmt.Errorf("write %s at %d: %w", id, off, err)
		}
		off += int64(n)
		u.report(Progress{Phase: phase, Done: off, Total: size})
	}
	if err := u.Client.Close(ctx, s); err != nil {
		return fmt.Errorf("close %s: %w", id, err)
	}
	open.clear()
	return nil
}

// action opens and commits the verify or update blob and polls it to
// completion.
func (u *Updater) action(ctx context.Context, open *sessionTracker, phase Phase, id string, noPoll bool) error {
	var s uint16
	if err := u.step(ctx, phase, func() error {
		if !open.valid {
			var err error
			if s, err = u.Client.Open(ctx, id, FlagWrite); err != nil {
				return err
			}
			open.set(s)
		}
		return u.Client.Commit(ctx, s, nil)
	}); err != nil {
		return err
	}
	if noPoll {
		// The BMC is expected to reboot now; the session dies with it.
		open.clear()
		u.report(Progress{Phase: phase, Message: "committed; not waiting for the result"})
		return nil
	}
	status, err := u.poll(ctx, phase, s)
	if err != nil {
		var lost *lostError
		if phase == PhaseUpdate && errors.As(err, &lost) {
			open.clear()
			return u.awaitReboot(ctx, lost)
		}
		return &PhaseError{phase, err}
	}
	if err := u.Client.Close(ctx, s); err != nil && status == StatusSuccess {
		return &PhaseError{phase, fmt.Errorf("close %s: %w", id, err)}
	}
	open.clear()
	if status != StatusSuccess {
		return &PhaseError{phase, ErrActionFailed}
	}
	u.report(Progress{Phase: phase, Message: "success"})
	return nil
}

// lostError marks a poll that failed because the BMC stopped answering.
type lostError struct{ err error }

func (e *lostError) Error() string { return "BMC stopped answering: " + e.err.Error() }
func (e *lostError) Unwrap() error { return e.err }

func (u *Updater) poll(ctx context.Context, phase Phase, s uint16) (ActionStatus, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, u.actionTimeout(), ErrTimeout)
	defer cancel()
	delay := u.pollStart()
	failures := 0
	last := ActionStatus(255)
	for {
		m, err := u.Client.SessionStat(ctx, s)
		switch {
		case err != nil && ctx.Err() != nil:
			return 0, context.Cause(ctx)
		case err != nil:
			failures++
			if failures >= u.retries() {
				if _, ok := CompletionCode(err); !ok {
					return 0, &lostError{err}
				}
				return 0, err
			}
		case len(m.Metadata) < 1:
			return 0, fmt.Errorf("session stat without action status (state %#04x)", m.State)
		default:
			failures = 0
			st := ActionStatus(m.Metadata[0])
			if st != last {
				u.report(Progress{Phase: phase, Message: st.String()})
				last = st
			}
			switch st {
			case StatusSuccess:
				return st, nil
			case StatusFailed:
				return st, nil
			}
		}
		if err := sleep(ctx, delay); err != nil {
			return 0, context.Cause(ctx)
		}
		delay = min(delay*2, u.pollMax())
	}
}

// awaitReboot handles a BMC that went away while the update ran: it waits
// for the BMC to return and accepts the update when the BMC came back with
// its flash state reset, which is what a completed reboot-based update
// looks like from the host.
func (u *Updater) awaitReboot(ctx context.Context, lost *lostError) error {
	u.report(Progress{Phase: PhaseUpdate, Message: "BMC stopped answering; waiting for it to come back"})
	ctx, cancel := context.WithTimeoutCause(ctx, u.actionTimeout(), ErrTimeout)
	defer cancel()
	delay := u.pollStart()
	for {
		if r, ok := u.Client.T.(Reconnector); ok {
			if err := r.Reconnect(ctx); err != nil {
				u.log().Debug("BMC not back yet", "err", err)
				if err := sleep(ctx, delay); err != nil {
					return &PhaseError{PhaseUpdate, fmt.Errorf("%w: %w", context.Cause(ctx), lost)}
				}
				delay = min(delay*2, u.pollMax())
				continue
			}
		}
		ids, err := u.Client.List(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return &PhaseError{PhaseUpdate, fmt.Errorf("%w: %w", context.Cause(ctx), lost)}
			}
			if err := sleep(ctx, delay); err != nil {
				return &PhaseError{PhaseUpdate, fmt.Errorf("%w: %w", context.Cause(ctx), lost)}
			}
			delay = min(delay*2, u.pollMax())
			continue
		}
		for _, id := range ids {
			if id == UpdateBlob || strings.HasPrefix(id, ActivePfx) {
				return &PhaseError{PhaseUpdate, fmt.Errorf("BMC came back with the update still pending (%s): %w", id, lost)}
			}
		}
		u.report(Progress{Phase: PhaseUpdate, Message: "BMC rebooted; update applied"})
		return nil
	}
}

func (u *Updater) cleanup(ctx context.Context, open *sessionTracker) error {
	u.report(Progress{Phase: PhaseCleanup, Message: "cleaning up"})
	var errs []error
	if open.valid {
		// Closing a verify/update session aborts its running action.
		if err := u.Client.Close(ctx, open.id); err != nil {
			errs = append(errs, fmt.Errorf("close session %d: %w", open.id, err))
		}
		open.clear()
	}
	ids, err := u.Client.List(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, id := range ids {
		if strings.HasPrefix(id, ActivePfx) {
			if err := u.Client.Delete(ctx, id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if slices.Contains(ids, CleanupBlob) {
		if err := u.commitCleanup(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
