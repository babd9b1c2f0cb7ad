package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/lab/controller/lease"
	"github.com/pogolab/pogo/lab/controller/store"
)

// maxBatch bounds the grants committed in one etcd transaction: each
// grant is 4 compares, and etcd refuses a transaction with more than
// --max-txn-ops (default 128) compares or operations.
const maxBatch = 32

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

var selectors sync.Map // string → lease.Selector

func parsedSelector(s string) lease.Selector {
	if v, ok := selectors.Load(s); ok {
		return v.(lease.Selector)
	}
	sel, err := lease.Parse(s)
	if err != nil {
		// Stored selectors were checked on the way in; one that fails now
		// matches nothing rather than everything.
		sel = lease.Selector{{Key: "pogo.invalid/selector", Op: lease.Exists}}
	}
	selectors.Store(s, sel)
	return sel
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
		stale   []string
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
					stale = append(stale, l.ID)
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
	r := lease.Request{ID: l.ID, Priority: l.Priority, Seq: l.Create, Begin: l.Begin, Name: l.ExporterName, Selector: parsedSelector(l.Selector)}
	if p := v.Policies[l.Client]; p != nil && p.Selector != "" {
		r.Policy = parsedSelector(p.Selector)
	}
	return r
}

// commitGrants grants in one transaction: every lease must be unchanged
// and pending, every exporter unchanged (so still enabled), unassigned and
// online.
func (c *Controller) commitGrants(ctx context.Context, gs []grant) bool {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	for _, g := range gs {
		lk := store.LeasesPrefix + g.l.ID
		ek := store.ExportersPrefix + g.e.Name
		ak := store.AssignPrefix + g.e.Name
		ok := store.OnlinePrefix + g.e.Name
		cmps = append(cmps,
			clientv3.Compare(clientv3.ModRevision(lk), "=", g.l.Mod),
			clientv3.Compare(clientv3.ModRevision(ek), "=", g.e.Mod),
			clientv3.Compare(clientv3.CreateRevision(ak), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(ok), ">", 0),
		)
		nl := g.l.Clone()
		nl.State, nl.Exporter, nl.Granted, nl.End, nl.Reason = store.Ready, g.e.Name, g.now, g.now.Add(g.l.Duration), ""
		ops = append(ops, clientv3.OpPut(lk, jsonString(nl)), clientv3.OpPut(ak, g.l.ID))
	}
	tr, err := c.st.Client.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		c.log.Warn("grant transaction", "err", err)
		return false
	}
	if !tr.Succeeded {
		return false
	}
	for _, g := range gs {
		c.m.grantLatency.Observe(g.now.Sub(g.l.Created).Seconds())
		c.log.Info("lease granted", "lease", g.l.ID, "client", g.l.Client, "exporter", g.e.Name, "waited", g.now.Sub(g.l.Created).Round(time.Millisecond))
	}
	_ = c.cache.WaitRev(ctx, tr.Header.Revision)
	return true
}

// finish moves a lease into a final state, freeing its exporter. It is a
// no-op on a lease that is already final.
func (c *Controller) finish(ctx context.Context, id, state, reason string) error {
	_, err := c.modifyLease(ctx, id, func(l *store.Lease) error {
		if !endRecord(l, state, reason, time.Now()) {
			return errFinal
		}
		return nil
	})
	if err == errFinal {
		return nil
	}
	return err
}

var errFinal = fmt.Errorf("lease is final")

// endRecord moves l into a final state at now; false if it already was.
func endRecord(l *store.Lease, state, reason string, now time.Time) bool {
	if l.Final() {
		return false
	}
	l.State, l.Reason = state, reason
	if l.End.IsZero() || l.End.After(now) {
		l.End = now
	}
	return true
}

// leaseWrite is the compare and the operations that store l over the
// version read at l.Mod; free also deletes its exporter's assignment if it
// still names l (a lease leaving Ready).
func leaseWrite(l *store.Lease, free bool) ([]clientv3.Cmp, []clientv3.Op) {
	key := store.LeasesPrefix + l.ID
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", l.Mod)}
	ops := []clientv3.Op{clientv3.OpPut(key, jsonString(l))}
	if free && l.Exporter != "" {
		ak := store.AssignPrefix + l.Exporter
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(ak), "=", l.ID)}, []clientv3.Op{clientv3.OpDelete(ak)}, nil))
	}
	return cmps, ops
}

// modifyLease rewrites a lease with f against its latest version in
// etcd; a lease leaving Ready frees its exporter in the same transaction.
func (c *Controller) modifyLease(ctx context.Context, id string, f func(*store.Lease) error) (*store.Lease, error) {
	key := store.LeasesPrefix + id
	for {
		r, err := c.st.Client.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("read lease %s: %w", id, err)
		}
		if len(r.Kvs) == 0 {
			return nil, fmt.Errorf("lease %q: %w", id, errdefs.ErrNotFound)
		}
		var l store.Lease
		if err := jsonUnmarshal(r.Kvs[0].Value, &l); err != nil {
			return nil, fmt.Errorf("lease %s record: %w", id, err)
		}
		l.Meta = store.Meta{Create: r.Kvs[0].CreateRevision, Mod: r.Kvs[0].ModRevision}
		wasReady := l.State == store.Ready
		if err := f(&l); err != nil {
			return &l, err
		}
		cmps, ops := leaseWrite(&l, wasReady && l.State != store.Ready)
		tr, err := c.st.Client.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("write lease %s: %w", id, err)
		}
		if tr.Succeeded {
			_ = c.cache.WaitRev(ctx, tr.Header.Revision)
			l.Mod = tr.Header.Revision
			return &l, nil
		}
	}
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
func (c *Controller) purge(ctx context.Context, ids []string) {
	for len(ids) > 0 {
		n := min(len(ids), 128)
		ops := make([]clientv3.Op, 0, n)
		for _, id := range ids[:n] {
			ops = append(ops, clientv3.OpDelete(store.LeasesPrefix+id))
		}
		if _, err := c.st.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
			c.log.Warn("delete ended leases", "err", err)
			return
		}
		c.log.Info("deleted ended leases past retention", "count", n, "retention", c.opts.Retention)
		ids = ids[n:]
	}
}
