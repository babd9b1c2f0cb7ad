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

// maxNew bounds the new requests one scheduling round takes; more wait
// for the next round.
const maxNew = 1024

// schedule runs on every replica: whenever the state changes (a lease is
// requested or ends, an exporter comes online, is enabled) or a begin or
// end time passes, it grants what can be granted and expires what is due.
// New requests of this replica join the round before they are stored, so
// a request an exporter is free for is stored already granted: one
// transaction and one cache update instead of two of each. Grants are
// transactions comparing revisions, so replicas racing each other never
// both win.
func (c *Controller) schedule() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var news []*createReq
	for c.ctx.Err() == nil {
		changed := c.cache.Changed()
		next := c.scheduleOnce(c.ctx, news)
		news = nil
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Until(next))
		select {
		case <-changed:
		case r := <-c.creates:
			news = append(news, r)
		case <-timer.C:
		case <-c.ctx.Done():
			return
		}
		// Whatever else queued meanwhile joins this round.
	drain:
		for len(news) < maxNew {
			select {
			case r := <-c.creates:
				news = append(news, r)
			default:
				break drain
			}
		}
	}
}

type grant struct {
	// req is set for a new request, not stored yet.
	req *createReq
	l   *store.Lease
	e   *store.Exporter
	now time.Time
}

// scheduleOnce does one round, with news the requests not yet stored,
// and returns when the next timed event is.
func (c *Controller) scheduleOnce(ctx context.Context, news []*createReq) time.Time {
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
		fresh   = map[string]*createReq{}
	)
	c.cache.Read(func(v *store.View) {
		// New requests queue behind every stored one of their priority.
		for i, r := range news {
			if r.l.State == store.Pending {
				q := c.request(v, r.l)
				q.Seq = v.Rev + 1 + int64(i)
				reqs = append(reqs, q)
				byID[r.l.ID], fresh[r.l.ID] = r.l, r
			}
		}
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
	var gs []lease.Grant
	if len(reqs) > 0 {
		gs = lease.Schedule(now, reqs, exps)
	}
	batch := make([]grant, 0, len(gs))
	for _, g := range gs {
		batch = append(batch, grant{req: fresh[g.Lease], l: byID[g.Lease], e: expByN[g.Exporter], now: now})
		delete(fresh, g.Lease)
	}
	// What is left of news is stored as requested.
	var toStore []*createReq
	for _, r := range news {
		if _, ok := fresh[r.l.ID]; ok || r.l.State != store.Pending {
			toStore = append(toStore, r)
		}
	}
	c.commitRound(ctx, batch, toStore)
	return next
}

// commitRound commits a round's grants and stores its new requests that
// were not granted, answering each new request, and waits until the
// cache has it all (so the next round starts from it). Batches are
// disjoint, so they commit concurrently: etcd folds concurrent proposals
// into one WAL sync instead of one per batch.
func (c *Controller) commitRound(ctx context.Context, gs []grant, news []*createReq) {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		last int64
		// lost are new requests whose grant lost a race: they are
		// stored pending instead.
		lost []*createReq
	)
	seen := func(rev int64) {
		mu.Lock()
		last = max(last, rev)
		mu.Unlock()
	}
	for len(gs) > 0 {
		part := gs[:min(len(gs), maxBatch)]
		gs = gs[len(part):]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rev, ok := c.commitGrants(ctx, part); ok {
				seen(rev)
				return
			}
			// Someone else changed part of the state: grant one by one,
			// letting each compare decide.
			for _, g := range part {
				if len(part) > 1 {
					if rev, ok := c.commitGrants(ctx, []grant{g}); ok {
						seen(rev)
						continue
					}
				}
				if g.req != nil {
					mu.Lock()
					lost = append(lost, g.req)
					mu.Unlock()
				}
			}
		}()
	}
	for len(news) > 0 {
		part := news[:min(len(news), maxCreates)]
		news = news[len(part):]
		wg.Add(1)
		go func() { defer wg.Done(); seen(c.storeNew(part)) }()
	}
	wg.Wait()
	if len(lost) > 0 {
		seen(c.storeNew(lost))
	}
	if last > 0 {
		_ = c.cache.WaitRev(ctx, last)
	}
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
// and pending (or new, its id free), every exporter unchanged (so still
// enabled), unassigned and online. New requests granted are answered.
func (c *Controller) commitGrants(ctx context.Context, gs []grant) (int64, bool) {
	sg := make([]store.Grant, 0, len(gs))
	for _, g := range gs {
		sg = append(sg, store.Grant{Lease: g.l, Exporter: g.e, At: g.now})
	}
	_, rev, err := c.st.Grant(ctx, sg)
	if err != nil {
		if !errors.Is(err, store.ErrChanged) {
			c.log.Warn("grant", "err", err)
		}
		return 0, false
	}
	for _, g := range gs {
		if g.req != nil {
			g.req.rev = rev
			g.req.done <- nil
		}
		c.m.grantLatency.Observe(g.now.Sub(g.l.Created).Seconds())
		c.log.Info("lease granted", "lease", g.l.ID, "client", g.l.Client, "exporter", g.e.Name, "waited", g.now.Sub(g.l.Created).Round(time.Millisecond))
	}
	return rev, true
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
