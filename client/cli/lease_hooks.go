package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/client/lease"
)

// afterLeaseWait bounds how long jmp shell waits, after releasing its
// lease, for the exporter's afterLease hook to finish.
const afterLeaseWait = 5 * time.Minute

// hookSettle bounds how long jmp shell waits, for a lease that ended before
// its session opened, for the beforeLease hook's output to arrive.
const hookSettle = 3 * time.Second

// hookWatch shows the lease holder what the exporter's lease hooks do:
// their output on stderr, prefixed with the hook's name, as it comes; a
// Warning: line for a failed hook whose onFailure is warn; and a failure
// that ends the lease (endLease, exit) ends the shell's wait at once.
type hookWatch struct {
	w      io.Writer
	fatal  func(reason string)
	cancel context.CancelFunc
	// over is closed when the watch stops.
	over chan struct{}

	mu         sync.Mutex
	configured []string
	// afterDone is closed when the afterLease hook is done (or skipped).
	afterDone chan struct{}
	afterOnce sync.Once
	// beforeDone is closed when the beforeLease hook is done.
	beforeDone chan struct{}
	beforeOnce sync.Once
}

func watchHooks(ctx context.Context, lc *lease.Client, id string, w io.Writer, fatal func(string)) *hookWatch {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &hookWatch{w: w, fatal: fatal, cancel: cancel, over: make(chan struct{}), afterDone: make(chan struct{}), beforeDone: make(chan struct{})}
	go func() {
		defer close(h.over)
		_ = lc.WatchHooks(ctx, id, h.event)
	}()
	return h
}

// printHook shows a hook event on w: a line of output prefixed with the
// hook's name, a Warning: line for a failed hook whose onFailure is warn.
// It returns the failure of a hook that ends the lease (endLease, exit).
func printHook(w io.Writer, e *pb.HookEvent) (fatal string) {
	switch {
	case e.GetHook() == "":
	case !e.GetDone():
		fmt.Fprintf(w, "[%s] %s\n", e.GetHook(), e.GetLine())
	case e.GetError() != "":
		msg := fmt.Sprintf("%s hook failed: %s", e.GetHook(), e.GetError())
		if e.GetOnFailure() == "warn" {
			fmt.Fprintf(w, "Warning: %s\n", msg)
			return ""
		}
		return fmt.Sprintf("%s (onFailure: %s)", msg, e.GetOnFailure())
	}
	return ""
}

func (h *hookWatch) event(e *pb.HookEvent) bool {
	if len(e.GetConfigured()) > 0 {
		h.mu.Lock()
		h.configured = e.GetConfigured()
		h.mu.Unlock()
	}
	if fatal := printHook(h.w, e); fatal != "" {
		h.fatal(fatal)
	}
	if e.GetDone() && e.GetHook() == "beforeLease" {
		h.beforeOnce.Do(func() { close(h.beforeDone) })
	}
	if e.GetDone() && e.GetHook() == "afterLease" {
		h.afterOnce.Do(func() { close(h.afterDone) })
		return false
	}
	return true
}

// waitAfter waits, after the lease's release, for its afterLease hook to
// finish when the exporter has one, then stops the watch.
func (h *hookWatch) waitAfter(ctx context.Context) {
	defer h.stop()
	h.mu.Lock()
	wait := slices.Contains(h.configured, "afterLease")
	h.mu.Unlock()
	if !wait {
		return
	}
	t := time.NewTimer(afterLeaseWait)
	defer t.Stop()
	select {
	case <-h.afterDone:
	case <-h.over:
	case <-t.C:
		fmt.Fprintf(h.w, "jmp shell: gave up waiting for the afterLease hook after %s\n", afterLeaseWait)
	case <-ctx.Done():
	}
}

// settle waits, up to d, until the watch has shown the beforeLease hook
// to its end, when the exporter has one; the watch may still be replaying
// it when the lease is already seen ended.
func (h *hookWatch) settle(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		h.mu.Lock()
		configured := h.configured
		h.mu.Unlock()
		if configured != nil && !slices.Contains(configured, "beforeLease") {
			return
		}
		select {
		case <-h.beforeDone:
			return
		case <-h.over:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (h *hookWatch) stop() {
	h.cancel()
	<-h.over
}
