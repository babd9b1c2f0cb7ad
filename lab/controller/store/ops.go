package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pogolab/pogo/api/errdefs"
)

// The operations below are every write the controller makes. Each is one
// etcd transaction comparing the revisions its caller read, so replicas
// racing each other never both win; ErrChanged says someone else did.

// ErrChanged is the error for a write whose records changed since they
// were read; read again and retry (or give up) as the caller sees fit.
var ErrChanged = errors.New("records changed since read")

// MaxTxnOps is etcd's default --max-txn-ops: the most compares, and the
// most operations, one transaction may carry.
const MaxTxnOps = 128

// Compares per record in one transaction of each kind.
const (
	grantCmps  = 4
	createCmps = 1
)

// MaxGrants is the most grants one Grant call may carry.
const MaxGrants = MaxTxnOps / grantCmps

// MaxCreates is the most leases one CreateLeases call may carry.
const MaxCreates = MaxTxnOps / createCmps

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Records are plain structs; this cannot fail.
		panic(err)
	}
	return string(b)
}

func (s *Store) commit(ctx context.Context, cmps []clientv3.Cmp, ops ...clientv3.Op) (int64, error) {
	tr, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, err
	}
	if !tr.Succeeded {
		return 0, ErrChanged
	}
	return tr.Header.Revision, nil
}

// CreateLeases stores new lease requests in one transaction and returns
// its revision. An id already taken fails the whole batch with
// ErrChanged (ErrExists for a batch of one).
func (s *Store) CreateLeases(ctx context.Context, ls []*Lease) (int64, error) {
	if len(ls) > MaxCreates {
		return 0, fmt.Errorf("%d leases in one transaction: at most %d", len(ls), MaxCreates)
	}
	cmps := make([]clientv3.Cmp, 0, len(ls))
	ops := make([]clientv3.Op, 0, len(ls))
	for _, l := range ls {
		if !l.State.Initial() {
			return 0, fmt.Errorf("create lease %s as %s: %w", l.ID, l.State, ErrTransition)
		}
		key := LeasesPrefix + l.ID
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		ops = append(ops, clientv3.OpPut(key, jsonString(l)))
	}
	rev, err := s.commit(ctx, cmps, ops...)
	switch {
	case errors.Is(err, ErrChanged) && len(ls) == 1:
		return 0, fmt.Errorf("lease id %s collided; try again: %w", ls[0].ID, errdefs.ErrExists)
	case err != nil && !errors.Is(err, ErrChanged):
		return 0, fmt.Errorf("store leases: %w", err)
	}
	return rev, err
}

// A Grant gives Exporter, as read, to Lease at At. Lease is either a
// pending lease as read (Mod set) or a new request not stored yet (Mod
// zero), which the grant stores already granted.
type Grant struct {
	Lease    *Lease
	Exporter *Exporter
	At       time.Time
}

// Grant commits grants in one transaction: every lease must be unchanged
// (or, if new, its id free), every exporter unchanged (so still enabled),
// unassigned and online. It returns the granted records and the
// revision, or ErrChanged when any compare failed (nothing is granted).
func (s *Store) Grant(ctx context.Context, gs []Grant) ([]*Lease, int64, error) {
	if len(gs) > MaxGrants {
		return nil, 0, fmt.Errorf("%d grants in one transaction: at most %d", len(gs), MaxGrants)
	}
	cmps := make([]clientv3.Cmp, 0, grantCmps*len(gs))
	ops := make([]clientv3.Op, 0, 2*len(gs))
	out := make([]*Lease, 0, len(gs))
	for _, g := range gs {
		nl, err := g.Lease.Grant(g.Exporter.Name, g.At)
		if err != nil {
			return nil, 0, err
		}
		lk := LeasesPrefix + g.Lease.ID
		ek := ExportersPrefix + g.Exporter.Name
		ak := AssignPrefix + g.Exporter.Name
		ok := OnlinePrefix + g.Exporter.Name
		lc := clientv3.Compare(clientv3.ModRevision(lk), "=", g.Lease.Mod)
		if g.Lease.Mod == 0 {
			lc = clientv3.Compare(clientv3.CreateRevision(lk), "=", 0)
		}
		cmps = append(cmps, lc,
			clientv3.Compare(clientv3.ModRevision(ek), "=", g.Exporter.Mod),
			clientv3.Compare(clientv3.CreateRevision(ak), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(ok), ">", 0),
		)
		ops = append(ops, clientv3.OpPut(lk, jsonString(nl)), clientv3.OpPut(ak, g.Lease.ID))
		out = append(out, nl)
	}
	rev, err := s.commit(ctx, cmps, ops...)
	if err != nil {
		if !errors.Is(err, ErrChanged) {
			err = fmt.Errorf("grant transaction: %w", err)
		}
		return nil, 0, err
	}
	for _, l := range out {
		l.Mod = rev
		if l.Create == 0 {
			l.Create = rev
		}
	}
	return out, rev, nil
}

// leaseWrite is the compare and the operations that store l over the
// version read at l.Mod; a final lease also frees its exporter if the
// assignment still names it.
func leaseWrite(l *Lease) ([]clientv3.Cmp, []clientv3.Op) {
	key := LeasesPrefix + l.ID
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", l.Mod)}
	ops := []clientv3.Op{clientv3.OpPut(key, jsonString(l))}
	if l.Final() && l.Exporter != "" {
		ak := AssignPrefix + l.Exporter
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(ak), "=", l.ID)}, []clientv3.Op{clientv3.OpDelete(ak)}, nil))
	}
	return cmps, ops
}

// get reads one record; nil when the key is absent.
func get[T any](ctx context.Context, s *Store, key string, meta func(*T, Meta)) (*T, int64, error) {
	r, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	if len(r.Kvs) == 0 {
		return nil, r.Header.Revision, nil
	}
	v := new(T)
	if err := json.Unmarshal(r.Kvs[0].Value, v); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", key, err)
	}
	meta(v, Meta{Create: r.Kvs[0].CreateRevision, Mod: r.Kvs[0].ModRevision})
	return v, r.Header.Revision, nil
}

// ModifyLease rewrites lease id with f against its latest version in
// etcd, retrying when another writer got there first, and returns the
// record written and its revision. The change must be a transition the
// state machine allows; a lease leaving Ready frees its exporter in the
// same transaction. An error from f is returned as is, with the lease.
func (s *Store) ModifyLease(ctx context.Context, id string, f func(*Lease) error) (*Lease, int64, error) {
	for {
		l, _, err := get(ctx, s, LeasesPrefix+id, func(l *Lease, m Meta) { l.Meta = m })
		if err != nil {
			return nil, 0, fmt.Errorf("read lease %s: %w", id, err)
		}
		if l == nil {
			return nil, 0, fmt.Errorf("lease %q: %w", id, errdefs.ErrNotFound)
		}
		from := l.State
		if err := f(l); err != nil {
			return l, 0, err
		}
		if err := from.Transition(l.State); err != nil {
			return l, 0, fmt.Errorf("lease %s: %w", id, err)
		}
		cmps, ops := leaseWrite(l)
		rev, err := s.commit(ctx, cmps, ops...)
		if errors.Is(err, ErrChanged) {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("write lease %s: %w", id, err)
		}
		l.Mod = rev
		return l, rev, nil
	}
}

// PurgeLeases deletes final leases (past retention), at most MaxTxnOps
// per transaction. Final leases never change, so there is nothing to
// compare.
func (s *Store) PurgeLeases(ctx context.Context, ls []*Lease) error {
	for len(ls) > 0 {
		n := min(len(ls), MaxTxnOps)
		ops := make([]clientv3.Op, 0, n)
		for _, l := range ls[:n] {
			if !l.Final() {
				return fmt.Errorf("purge lease %s: it is %s, not final: %w", l.ID, l.State, ErrTransition)
			}
			ops = append(ops, clientv3.OpDelete(LeasesPrefix+l.ID))
		}
		if _, err := s.commit(ctx, nil, ops...); err != nil {
			return fmt.Errorf("delete ended leases: %w", err)
		}
		ls = ls[n:]
	}
	return nil
}

// GetLease reads a lease (nil if absent) and the revision it was read
// at.
func (s *Store) GetLease(ctx context.Context, id string) (*Lease, int64, error) {
	return get(ctx, s, LeasesPrefix+id, func(r *Lease, m Meta) { r.Meta = m })
}

// GetClient reads a client identity (nil if absent) and the revision it
// was read at.
func (s *Store) GetClient(ctx context.Context, name string) (*Identity, int64, error) {
	return get(ctx, s, ClientsPrefix+name, func(r *Identity, m Meta) { r.Meta = m })
}

// GetExporter reads an exporter (nil if absent) and the revision it was
// read at.
func (s *Store) GetExporter(ctx context.Context, name string) (*Exporter, int64, error) {
	return get(ctx, s, ExportersPrefix+name, func(r *Exporter, m Meta) { r.Meta = m })
}

// PutClient stores a client identity: a new one (ErrExists if the name is
// taken), or over whatever is there when replace is set.
func (s *Store) PutClient(ctx context.Context, id *Identity, replace bool) (int64, error) {
	key := ClientsPrefix + id.Name
	var cmps []clientv3.Cmp
	if !replace {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	}
	rev, err := s.commit(ctx, cmps, clientv3.OpPut(key, jsonString(id)))
	if errors.Is(err, ErrChanged) {
		return 0, fmt.Errorf("client %q already exists (rotate its token with --rotate): %w", id.Name, errdefs.ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("store client %s: %w", id.Name, err)
	}
	return rev, nil
}

// CreateExporter stores a new exporter (ErrExists if the name is taken).
func (s *Store) CreateExporter(ctx context.Context, e *Exporter) (int64, error) {
	key := ExportersPrefix + e.Name
	rev, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, clientv3.OpPut(key, jsonString(e)))
	if errors.Is(err, ErrChanged) {
		return 0, fmt.Errorf("exporter %q already exists (rotate its token with --rotate): %w", e.Name, errdefs.ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("store exporter %s: %w", e.Name, err)
	}
	return rev, nil
}

// ModifyExporter rewrites an exporter record with f, retrying when
// another writer got there first, and returns the revision written.
func (s *Store) ModifyExporter(ctx context.Context, name string, f func(*Exporter) error) (int64, error) {
	key := ExportersPrefix + name
	for {
		e, _, err := s.GetExporter(ctx, name)
		if err != nil {
			return 0, fmt.Errorf("read exporter %s: %w", name, err)
		}
		if e == nil {
			return 0, fmt.Errorf("exporter %q: %w", name, errdefs.ErrNotFound)
		}
		if err := f(e); err != nil {
			return 0, err
		}
		rev, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", e.Mod)}, clientv3.OpPut(key, jsonString(e)))
		if errors.Is(err, ErrChanged) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("write exporter %s: %w", name, err)
		}
		return rev, nil
	}
}

// PutPolicy stores a client's policy.
func (s *Store) PutPolicy(ctx context.Context, p *Policy) (int64, error) {
	r, err := s.cli.Put(ctx, PoliciesPrefix+p.Client, jsonString(p))
	if err != nil {
		return 0, fmt.Errorf("store policy: %w", err)
	}
	return r.Header.Revision, nil
}

// DeleteClient deletes client c, as read, with its policy and writes the
// final records of its live leases (each read at its Mod; their
// exporters are freed), in one transaction.
func (s *Store) DeleteClient(ctx context.Context, c *Identity, ended []*Lease) (int64, error) {
	key := ClientsPrefix + c.Name
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", c.Mod)}
	ops := []clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(PoliciesPrefix + c.Name)}
	for _, l := range ended {
		if !l.Final() {
			return 0, fmt.Errorf("delete client %s: its lease %s would stay %s: %w", c.Name, l.ID, l.State, ErrTransition)
		}
		lc, lo := leaseWrite(l)
		cmps, ops = append(cmps, lc...), append(ops, lo...)
	}
	rev, err := s.commit(ctx, cmps, ops...)
	if err != nil && !errors.Is(err, ErrChanged) {
		return 0, fmt.Errorf("delete client %s: %w", c.Name, err)
	}
	return rev, err
}

// DeleteExporter deletes exporter e, as read, with its online record and
// assignment, in one transaction. held is the lease the assignment named
// when read ("" for none); ended, if not nil, is that lease's final
// record.
func (s *Store) DeleteExporter(ctx context.Context, e *Exporter, held string, ended *Lease) (int64, error) {
	key := ExportersPrefix + e.Name
	ak := AssignPrefix + e.Name
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", e.Mod)}
	ops := []clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(OnlinePrefix + e.Name), clientv3.OpDelete(ak)}
	if held == "" {
		// A grant since would have created it.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(ak), "=", 0))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.Value(ak), "=", held))
	}
	if ended != nil {
		if !ended.Final() {
			return 0, fmt.Errorf("delete exporter %s: its lease %s would stay %s: %w", e.Name, ended.ID, ended.State, ErrTransition)
		}
		// The assignment goes with the exporter, above.
		lk := LeasesPrefix + ended.ID
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(lk), "=", ended.Mod))
		ops = append(ops, clientv3.OpPut(lk, jsonString(ended)))
	}
	rev, err := s.commit(ctx, cmps, ops...)
	if err != nil && !errors.Is(err, ErrChanged) {
		return 0, fmt.Errorf("delete exporter %s: %w", e.Name, err)
	}
	return rev, err
}

// Session is an etcd lease that records (online keys) hang off: they
// vanish when it is revoked or not kept alive.
type Session int64

// NewSession takes a session that lives ttl unless kept alive.
func (s *Store) NewSession(ctx context.Context, ttl time.Duration) (Session, error) {
	g, err := s.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return 0, fmt.Errorf("etcd lease: %w", err)
	}
	return Session(g.ID), nil
}

// KeepAlive keeps sess alive until ctx ends; it returns when the session
// is lost (or ctx ends).
func (s *Store) KeepAlive(ctx context.Context, sess Session) error {
	ka, err := s.cli.KeepAlive(ctx, clientv3.LeaseID(sess))
	if err != nil {
		return err
	}
	for range ka {
	}
	return ctx.Err()
}

// Revoke ends sess and deletes the records hanging off it.
func (s *Store) Revoke(ctx context.Context, sess Session) error {
	_, err := s.cli.Revoke(ctx, clientv3.LeaseID(sess))
	return err
}

// PutOnline marks exporter name online on sess and returns the revision.
func (s *Store) PutOnline(ctx context.Context, name string, on *Online, sess Session) (int64, error) {
	r, err := s.cli.Put(ctx, OnlinePrefix+name, jsonString(on), clientv3.WithLease(clientv3.LeaseID(sess)))
	if err != nil {
		return 0, fmt.Errorf("mark exporter %s online: %w", name, err)
	}
	return r.Header.Revision, nil
}

// DropOnline deletes exporter name's online record unless it changed
// since rev (a newer link rewrote it).
func (s *Store) DropOnline(ctx context.Context, name string, rev int64) error {
	key := OnlinePrefix + name
	_, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rev)}, clientv3.OpDelete(key))
	return err
}

// CreateOnce returns the value at key, creating it with make if absent;
// a racing replica's value wins.
func (s *Store) CreateOnce(ctx context.Context, key string, make func() (string, error)) (string, error) {
	r, err := s.cli.Get(ctx, key)
	if err != nil {
		return "", err
	}
	if len(r.Kvs) > 0 {
		return string(r.Kvs[0].Value), nil
	}
	v, err := make()
	if err != nil {
		return "", err
	}
	tr, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, v)).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return "", err
	}
	if !tr.Succeeded {
		return string(tr.Responses[0].GetResponseRange().Kvs[0].Value), nil
	}
	return v, nil
}
