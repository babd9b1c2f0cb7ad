package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/exporter/controllerlink"
	"github.com/pogolab/pogo/exporter/hooks"
)

// leaseHooks runs a linked exporter's hooks around each lease with
// Jumpstarter's order and failure modes, reporting their output to the
// controller for the lease holder's jmp shell.
type leaseHooks struct {
	runner *hooks.Runner
	link   *controllerlink.Link
	log    *slog.Logger
	// stop makes the exporter exit with its cause (onFailure: exit).
	stop context.CancelCauseFunc
	// endedByHook is the lease a failed beforeLease hook ended: its
	// afterLease hook does not run.
	endedByHook string
}

// before runs beforeLease for l; false means the lease is being ended (or
// the exporter exits) and no tunnel may be admitted.
func (h *leaseHooks) before(ctx context.Context, l drivers.Lease) bool {
	var configured []string
	for _, w := range []string{hooks.Before, hooks.After} {
		if h.runner.Has(w) {
			configured = append(configured, w)
		}
	}
	if len(configured) == 0 {
		return true
	}
	h.link.Hook(&pb.HookEvent{LeaseId: l.ID, Configured: configured})
	if !h.runner.Has(hooks.Before) {
		return true
	}
	err := h.runner.Run(ctx, hooks.Before, l, h.output(l, hooks.Before))
	h.done(l, hooks.Before, err)
	var he *hooks.Error
	if !errors.As(err, &he) {
		return true
	}
	switch he.OnFailure {
	case hooks.EndLease:
		h.log.Error("hook failed; ending the lease", "lease", l.ID, "err", err)
		h.endedByHook = l.ID
		h.link.EndLease(l.ID, err.Error())
		return false
	case hooks.Exit:
		h.endedByHook = l.ID
		h.exit(ctx, l, err)
		return false
	}
	h.log.Warn("hook failed", "lease", l.ID, "err", err)
	return true
}

// after runs afterLease for the ended lease l, unless its beforeLease
// hook ended it; the holder's jmp shell learns either way.
func (h *leaseHooks) after(ctx context.Context, l drivers.Lease) {
	if !h.runner.Has(hooks.Before) && !h.runner.Has(hooks.After) {
		return
	}
	if h.endedByHook == l.ID {
		h.endedByHook = ""
		if h.runner.Has(hooks.After) {
			h.log.Info("afterLease hook skipped: beforeLease ended the lease", "lease", l.ID)
		}
		h.link.Hook(&pb.HookEvent{LeaseId: l.ID, Hook: hooks.After, Done: true})
		return
	}
	err := h.runner.Run(ctx, hooks.After, l, h.output(l, hooks.After))
	h.done(l, hooks.After, err)
	var he *hooks.Error
	if !errors.As(err, &he) {
		return
	}
	if he.OnFailure == hooks.Exit {
		h.exit(ctx, l, err)
		return
	}
	// endLease after the lease: nothing left to end.
	h.log.Warn("hook failed", "lease", l.ID, "err", err)
}

// exit ends the exporter for a failed hook, once the controller has the
// lease's end and the hook's error.
func (h *leaseHooks) exit(ctx context.Context, l drivers.Lease, err error) {
	h.log.Error("hook failed; exporter exits", "lease", l.ID, "err", err)
	reason := fmt.Sprintf("%v (onFailure: exit, the exporter exits)", err)
	h.link.EndLease(l.ID, reason)
	h.flush(ctx)
	h.stop(fmt.Errorf("exporter exits: %w", err))
}

// flush ends the link once the controller has handled everything sent
// (the lease's end, the hook's last words), as the exporter exits.
func (h *leaseHooks) flush(ctx context.Context) {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := h.link.Drain(fctx); err != nil {
		h.log.Warn("could not tell the controller before exiting", "err", err)
	}
}

func (h *leaseHooks) output(l drivers.Lease, which string) func(string) {
	return func(line string) {
		h.link.Hook(&pb.HookEvent{LeaseId: l.ID, Hook: which, Line: line})
	}
}

func (h *leaseHooks) done(l drivers.Lease, which string, err error) {
	e := &pb.HookEvent{LeaseId: l.ID, Hook: which, Done: true}
	var he *hooks.Error
	if errors.As(err, &he) {
		e.Error, e.OnFailure = he.Err.Error(), he.OnFailure
	}
	h.link.Hook(e)
}
