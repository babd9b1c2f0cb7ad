package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// View is the in-memory mirror of the prefix. Records are never modified
// in place (a change replaces the pointer), so a reader may keep pointers
// after unlocking.
type View struct {
	Rev       int64
	Clients   map[string]*Identity
	Exporters map[string]*Exporter
	Online    map[string]*Online
	Leases    map[string]*Lease
	// Assign maps an exporter to the lease holding it.
	Assign   map[string]string
	Policies map[string]*Policy
}

// Cache keeps a View in step with etcd.
type Cache struct {
	cli *clientv3.Client

	mu      sync.RWMutex
	v       View
	changed chan struct{}

	// keyed are waiters for changes of single keys (a lease, an
	// assignment), so that a change wakes only who cares. They have their
	// own lock: thousands of streams come and go on it, and must not
	// queue with the view's readers. A key fires after its change is in
	// the view.
	kmu   sync.Mutex
	keyed map[string]map[*waiter]struct{}
}

// NewCache lists the prefix and watches it until ctx ends.
func NewCache(ctx context.Context, s *Store) (*Cache, error) {
	c := &Cache{cli: s.cli, changed: make(chan struct{}), keyed: map[string]map[*waiter]struct{}{}}
	rev, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	go c.follow(ctx, rev)
	return c, nil
}

func (c *Cache) load(ctx context.Context) (int64, error) {
	r, err := c.cli.Get(ctx, Prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("load state from etcd: %w", err)
	}
	v := View{Clients: map[string]*Identity{}, Exporters: map[string]*Exporter{}, Online: map[string]*Online{},
		Leases: map[string]*Lease{}, Assign: map[string]string{}, Policies: map[string]*Policy{}}
	for _, kv := range r.Kvs {
		v.apply(mvccpb.PUT, kv)
	}
	v.Rev = r.Header.Revision
	c.mu.Lock()
	c.v = v
	c.notifyLocked()
	c.mu.Unlock()
	// A reload may have changed anything.
	c.kmu.Lock()
	for k, ws := range c.keyed {
		for w := range ws {
			w.fire()
		}
		delete(c.keyed, k)
	}
	c.kmu.Unlock()
	return v.Rev, nil
}

func (c *Cache) follow(ctx context.Context, rev int64) {
	for ctx.Err() == nil {
		wc := c.cli.Watch(clientv3.WithRequireLeader(ctx), Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
		for wr := range wc {
			if err := wr.Err(); err != nil {
				break
			}
			c.mu.Lock()
			for _, ev := range wr.Events {
				c.v.apply(ev.Type, ev.Kv)
			}
			if wr.Header.Revision > c.v.Rev {
				c.v.Rev = wr.Header.Revision
			}
			rev = c.v.Rev
			c.notifyLocked()
			c.mu.Unlock()
			c.kmu.Lock()
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				for w := range c.keyed[k] {
					w.fire()
				}
				delete(c.keyed, k)
			}
			c.kmu.Unlock()
		}
		if ctx.Err() != nil {
			return
		}
		// The watch broke (compaction, leader loss, etcd restart): reload
		// everything rather than guess what was missed.
		time.Sleep(200 * time.Millisecond)
		if r, err := c.load(ctx); err == nil {
			rev = r
		}
	}
}

func (c *Cache) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Read runs f with the view locked for reading.
func (c *Cache) Read(f func(v *View)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	f(&c.v)
}

// Changed returns a channel closed at the next change.
func (c *Cache) Changed() <-chan struct{} {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.changed
}

// WaitRev waits until the view has caught up with rev (a write of ours).
func (c *Cache) WaitRev(ctx context.Context, rev int64) error {
	for {
		c.mu.RLock()
		cur, ch := c.v.Rev, c.changed
		c.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (v *View) apply(t mvccpb.Event_EventType, kv *mvccpb.KeyValue) {
	key := string(kv.Key)
	del := t == mvccpb.DELETE
	meta := Meta{Create: kv.CreateRevision, Mod: kv.ModRevision}
	switch {
	case strings.HasPrefix(key, ClientsPrefix):
		applyJSON(v.Clients, strings.TrimPrefix(key, ClientsPrefix), del, kv.Value, func(r *Identity) { r.Meta = meta })
	case strings.HasPrefix(key, ExportersPrefix):
		applyJSON(v.Exporters, strings.TrimPrefix(key, ExportersPrefix), del, kv.Value, func(r *Exporter) { r.Meta = meta })
	case strings.HasPrefix(key, OnlinePrefix):
		applyJSON(v.Online, strings.TrimPrefix(key, OnlinePrefix), del, kv.Value, func(r *Online) { r.Meta = meta })
	case strings.HasPrefix(key, LeasesPrefix):
		applyJSON(v.Leases, strings.TrimPrefix(key, LeasesPrefix), del, kv.Value, func(r *Lease) { r.Meta = meta })
	case strings.HasPrefix(key, PoliciesPrefix):
		applyJSON(v.Policies, strings.TrimPrefix(key, PoliciesPrefix), del, kv.Value, func(r *Policy) { r.Meta = meta })
	case strings.HasPrefix(key, AssignPrefix):
		name := strings.TrimPrefix(key, AssignPrefix)
		if del {
			delete(v.Assign, name)
		} else {
			v.Assign[name] = string(kv.Value)
		}
	}
}

func applyJSON[T any](m map[string]*T, name string, del bool, data []byte, set func(*T)) {
	if del {
		delete(m, name)
		return
	}
	r := new(T)
	if err := json.Unmarshal(data, r); err != nil {
		// A record pogo cannot read is left out rather than crash every
		// replica; it shows up as missing.
		return
	}
	set(r)
	m[name] = r
}

// ChangedKeys returns a channel closed when any of keys changes, and a
// func to stop waiting.
func (c *Cache) ChangedKeys(keys ...string) (<-chan struct{}, func()) {
	w := &waiter{ch: make(chan struct{})}
	c.kmu.Lock()
	for _, k := range keys {
		ws := c.keyed[k]
		if ws == nil {
			ws = map[*waiter]struct{}{}
			c.keyed[k] = ws
		}
		ws[w] = struct{}{}
	}
	c.kmu.Unlock()
	return w.ch, func() {
		c.kmu.Lock()
		for _, k := range keys {
			if ws := c.keyed[k]; ws != nil {
				delete(ws, w)
				if len(ws) == 0 {
					delete(c.keyed, k)
				}
			}
		}
		c.kmu.Unlock()
	}
}

type waiter struct {
	ch   chan struct{}
	once sync.Once
}

func (w *waiter) fire() { w.once.Do(func() { close(w.ch) }) }
