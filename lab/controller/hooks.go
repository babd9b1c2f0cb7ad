package controller

import (
	"sync"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/lab/controller/store"
)

// Hook events are kept in memory on the replica the exporter reports to,
// for the lease holder's WatchHooks: a hook's output is for the person
// waiting on it, not for the record.
const (
	maxHookEvents = 4096
	hookKeep      = 10 * time.Minute
)

// hookLog holds the hook events of recent leases.
type hookLog struct {
	mu   sync.Mutex
	runs map[string]*hookRun // by lease id
}

type hookRun struct {
	exporter string
	events   []*pb.HookEvent
	// finished: afterLease is done; offline: the exporter's link ended.
	finished, offline bool
	changed           time.Time
	wake              chan struct{} // closed (and replaced) on each change
}

func (h *hookLog) run(lease string) *hookRun {
	if h.runs == nil {
		h.runs = map[string]*hookRun{}
	}
	r := h.runs[lease]
	if r == nil {
		r = &hookRun{wake: make(chan struct{}), changed: time.Now()}
		h.runs[lease] = r
	}
	return r
}

func (r *hookRun) touch() {
	r.changed = time.Now()
	close(r.wake)
	r.wake = make(chan struct{})
}

// add records an event exporter reported.
func (h *hookLog) add(exporter string, e *pb.HookEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, r := range h.runs {
		if time.Since(r.changed) > hookKeep && (r.finished || r.offline || time.Since(r.changed) > 24*time.Hour) {
			delete(h.runs, id)
		}
	}
	r := h.run(e.GetLeaseId())
	r.exporter, r.offline = exporter, false
	if len(r.events) < maxHookEvents {
		r.events = append(r.events, e)
	}
	if e.GetDone() && e.GetHook() == "afterLease" {
		r.finished = true
	}
	r.touch()
}

// offline marks the runs of exporter's leases as cut short.
func (h *hookLog) exporterOffline(exporter string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.runs {
		if r.exporter == exporter && !r.finished {
			r.offline = true
			r.touch()
		}
	}
}

// since returns the events of lease from index i on, whether no more will
// come, and a channel closed on the next change.
func (h *hookLog) since(lease string, i int) ([]*pb.HookEvent, bool, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.run(lease)
	var out []*pb.HookEvent
	if i < len(r.events) {
		out = append(out, r.events[i:]...)
	}
	return out, r.finished || r.offline, r.wake
}

// hookEvent takes an exporter's hook event, for a lease it serves.
func (c *Controller) hookEvent(exporter string, e *pb.HookEvent) {
	ok := false
	c.cache.Read(func(v *store.View) {
		l := v.Leases[e.GetLeaseId()]
		ok = l != nil && l.Exporter == exporter
	})
	if !ok {
		c.log.Warn("hook event for a lease the exporter does not serve", "exporter", exporter, "lease", e.GetLeaseId())
		return
	}
	c.hooks.add(exporter, e)
}

func (s *leaseService) WatchHooks(req *pb.GetLeaseRequest, stream pb.Leases_WatchHooksServer) error {
	ctx := stream.Context()
	if _, err := s.c.own(ctx, req.GetId()); err != nil {
		return errdefs.ToGRPC(err)
	}
	next := 0
	for {
		evs, over, wake := s.c.hooks.since(req.GetId(), next)
		for _, e := range evs {
			if err := stream.Send(e); err != nil {
				return err
			}
		}
		next += len(evs)
		if over {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		}
	}
}
