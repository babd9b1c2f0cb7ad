package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/lab/controller/lease"
	"github.com/pogolab/pogo/lab/controller/store"
)

// maxBatch bounds the grants committed in one etcd transaction.
const maxBatch = store.MaxGrants

// schedule runs on every replica: whenever the state changes (a lease is
// requested or ends, an exporter comes online, is enabled) or a begin or
// end time passes, it grants what can be granted and expires what is due.
// Grants are transactions comparing revisions, so replicas racing each
// other never both win.
func (c *Controller) schedule() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for c.ctx.Err() == nil {
		changed := c.cache.Changed()
		next := c.scheduleOnce(c.ctx)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Until(next))
		select {
		case <-changed:
		case <-timer.C:
		case <-c.ctx.Done():
			return
		}
	}
}

type grant struct {
	l   *store.Lease
	e   *store.Exporter
	now time.Time
}

// scheduleOnce does one round and returns when the next timed event is.
func (c *Controller) scheduleOnce(ctx context.Context) time.Time {
	now := time.Now()
	next := now.Add(time.Hour)
	var (
		reqs    []lease.Request
		exps    []lease.Exporter
		byID    = map[string]*store.Lease{}
		expByN  = map[string]*store.Exporter{}
		expired []*store.Lease
		stale   []*store.Lease
		invalid []*store.Lease
		// orphans are ready leases whose client or exporter was deleted
		// (the deletion ends them itself, except a lease requested as
		// the client was deleted): lease id → reason.
		orphans = map[string]string{}
		rev     int64
	)
	c.cache.Read(func(v *store.View) {
		rev = v.Rev
		keep := now.Add(-c.opts.Retention)
		for _, l := range v.Leases {
			switch l.State {
			case store.Ended, store.Unsatisfiable, store.Invalid:
				end := l.End
				if end.IsZero() {
					end = l.Created
				}
				if !end.After(keep) {
					stale = append(stale, l)
				} else if t := end.Add(c.opts.Retention); t.Before(next) {
					next = t
				}
			case store.Ready:
				if v.Clients[l.Client] == nil {
					orphans[l.ID] = "client " + l.Client + " deleted"
				} else if v.Exporters[l.Exporter] == nil {
					orphans[l.ID] = "exporter " + l.Exporter + " deleted"
				} else if !l.End.After(now) {
					expired = append(expired, l)
				} else if l.End.Before(next) {
					next = l.End
				}
			case store.Pending:
				if v.Clients[l.Client] == nil {
					invalid = append(invalid, l)
					continue
				}
				if l.Begin.After(now) && l.Begin.Before(next) {
					next = l.Begin
				}
				byID[l.ID] = l
				reqs = append(reqs, c.request(v, l))
			}
		}
		if len(reqs) == 0 {
			return
		}
		for name, e := range v.Exporters {
			_, online := v.Online[name]
			_, taken := v.Assign[name]
			avail := online && !taken && !e.Disabled && !e.Registered.IsZero()
			if avail {
				expByN[name] = e
			}
			exps = append(exps, lease.Exporter{Name: name, Labels: e.Labels, Available: avail})
		}
	})
	for _, l := range expired {
		if err := c.finish(ctx, l.ID, store.Ended, "expired at "+l.End.Format(time.RFC3339)); err != nil {
			c.log.Warn("expire lease", "lease", l.ID, "err", err)
		}
	}
	for _, l := range invalid {
		_ = c.finish(ctx, l.ID, store.Invalid, "client "+l.Client+" no longer exists")
	}
	for id, reason := range orphans {
		if err := c.finish(ctx, id, store.Ended, reason); err != nil {
			c.log.Warn("end lease of a deleted identity", "lease", id, "err", err)
		}
	}
	c.purge(ctx, stale)
	if len(reqs) == 0 {
		return next
	}
	gs := lease.Schedule(now, reqs, exps)
	if len(gs) == 0 {
		return next
	}
	batch := make([]grant, 0, len(gs))
	for _, g := range gs {
		batch = append(batch, grant{l: byID[g.Lease], e: expByN[g.Exporter], now: now})
	}
	// Batches are disjoint, so they commit concurrently: etcd folds
	// concurrent proposals into one WAL sync instead of one per batch.
	var wg sync.WaitGroup
	for len(batch) > 0 {
		n := min(len(batch), maxBatch)
		part := batch[:n]
		batch = batch[n:]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok := c.commitGrants(ctx, part); !ok && len(part) > 1 {
				// Someone else changed part of the state: grant one by
				// one, letting each compare decide.
				for _, g := range part {
					c.commitGrants(ctx, []grant{g})
				}
			}
		}()
	}
	wg.Wait()
	_ = rev
	return next
}

// request is l as the queue sees it, with its client's policy.
func (c *Controller) request(v *store.View, l *store.Lease) lease.Request {
	r := lease.Request{ID: l.ID, Priority: l.Priority, Seq: l.Create, Begin: l.Begin, Name: l.ExporterName, Selector: c.selectors.get(l.Selector)}
	if p := v.Policies[l.Client]; p != nil && p.Selector != "" {
		r.Policy = c.selectors.get(p.Selector)
	}
	return r
}

// commitGrants grants in one transaction: every lease must be unchanged
// and pending, every exporter unchanged (so still enabled), unassigned and
// online.
func (c *Controller) commitGrants(ctx context.Context, gs []grant) bool {
	sg := make([]store.Grant, 0, len(gs))
	for _, g := range gs {
		sg = append(sg, store.Grant{Lease: g.l, Exporter: g.e, At: g.now})
	}
	_, rev, err := c.st.Grant(ctx, sg)
	if err != nil {
		if !errors.Is(err, store.ErrChanged) {
			c.log.Warn("grant", "err", err)
		}
		return false
	}
	for _, g := range gs {
		c.m.grantLatency.Observe(g.now.Sub(g.l.Created).Seconds())
		c.log.Info("lease granted", "lease", g.l.ID, "client", g.l.Client, "exporter", g.e.Name, "waited", g.now.Sub(g.l.Created).Round(time.Millisecond))
	}
	_ = c.cache.WaitRev(ctx, rev)
	return true
}

// finish moves a lease into a final state, freeing its exporter. It is a
// no-op on a lease that is already final.
func (c *Controller) finish(ctx context.Context, id string, state store.State, reason string) error {
	_, err := c.modifyLease(ctx, id, func(l *store.Lease) error {
		if l.Final() {
			return errFinal
		}
		n, err := l.Finish(state, reason, time.Now())
		if err != nil {
			return err
		}
		*l = *n
		return nil
	})
	if err == errFinal {
		return nil
	}
	return err
}

var errFinal = fmt.Errorf("lease is final")

// modifyLease rewrites a lease with f against its latest version in etcd
// and waits until the cache has it; a lease leaving Ready frees its
// exporter in the same transaction.
func (c *Controller) modifyLease(ctx context.Context, id string, f func(*store.Lease) error) (*store.Lease, error) {
	l, rev, err := c.st.ModifyLease(ctx, id, f)
	if err != nil {
		return l, err
	}
	_ = c.cache.WaitRev(ctx, rev)
	return l, nil
}

// endLease ends a lease on behalf of its exporter.
func (c *Controller) endLease(ctx context.Context, id, exporter, reason string) error {
	var cur *store.Lease
	c.cache.Read(func(v *store.View) { cur = v.Leases[id] })
	if cur == nil || cur.Exporter != exporter {
		return fmt.Errorf("lease %q is not on exporter %s: %w", id, exporter, errdefs.ErrNotFound)
	}
	return c.finish(ctx, id, store.Ended, reason)
}

// purge deletes final leases past the retention period, so the store
// does not grow forever. Final leases never change, so there is nothing
// to compare; every replica may do it.
func (c *Controller) purge(ctx context.Context, ls []*store.Lease) {
	if len(ls) == 0 {
		return
	}
	if err := c.st.PurgeLeases(ctx, ls); err != nil {
		c.log.Warn("delete ended leases", "err", err)
		return
	}
	c.log.Info("deleted ended leases past retention", "count", len(ls), "retention", c.opts.Retention)
}
