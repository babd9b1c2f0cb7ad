package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEmbedded(t *testing.T) {
	ctx := context.Background()
	start := time.Now()
	s := open(t, t.TempDir())
	t.Logf("ready in %v", time.Since(start))
	defer s.Close()
	if _, err := s.PutClient(ctx, &Identity{Name: "x", TokenHash: "h"}, false); err != nil {
		t.Fatal(err)
	}
	id, _, err := s.GetClient(ctx, "x")
	if err != nil || id == nil || id.TokenHash != "h" || id.Mod == 0 {
		t.Fatal(id, err)
	}
	if _, err := s.PutClient(ctx, &Identity{Name: "x"}, false); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("second client x: %v, want ErrExists", err)
	}
}

func TestEmbeddedRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, dir)
	if _, err := s.PutClient(ctx, &Identity{Name: "x", TokenHash: "h"}, false); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir)
	defer s.Close()
	id, _, err := s.GetClient(ctx, "x")
	if err != nil || id == nil || id.TokenHash != "h" {
		t.Fatal(id, err)
	}
}

func TestTransitions(t *testing.T) {
	all := []State{Pending, Ready, Ended, Unsatisfiable, Invalid}
	allowed := map[[2]State]bool{
		{Pending, Pending}: true, {Pending, Ready}: true, {Pending, Ended}: true,
		{Pending, Unsatisfiable}: true, {Pending, Invalid}: true,
		{Ready, Ready}: true, {Ready, Ended}: true,
	}
	for _, from := range all {
		for _, to := range all {
			err := from.Transition(to)
			if allowed[[2]State{from, to}] != (err == nil) {
				t.Errorf("%s → %s: %v", from, to, err)
			}
			if err != nil && !errors.Is(err, ErrTransition) {
				t.Errorf("%s → %s: %v does not wrap ErrTransition", from, to, err)
			}
		}
	}
	if err := Pending.Transition("granted"); err == nil {
		t.Error("pending → an unknown state allowed")
	}
	var l Lease
	if err := l.State.UnmarshalJSON([]byte(`"granted"`)); err == nil {
		t.Error("unknown state read from a record")
	}
}

// TestLeaseOps drives leases through the store's operations on a real
// etcd: a grant needs the exporter online and free, a second grant of
// the same exporter loses, and ModifyLease refuses what the state
// machine does not allow.
func TestLeaseOps(t *testing.T) {
	ctx := context.Background()
	s := open(t, t.TempDir())
	defer s.Close()
	if _, err := s.CreateExporter(ctx, &Exporter{Name: "e1"}); err != nil {
		t.Fatal(err)
	}
	e, _, err := s.GetExporter(ctx, "e1")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a := &Lease{ID: "a", Client: "c", State: Pending, Duration: time.Hour, Created: now}
	b := &Lease{ID: "b", Client: "c", State: Pending, Duration: time.Hour, Created: now}
	if _, err := s.CreateLeases(ctx, []*Lease{{ID: "r", State: Ready}}); !errors.Is(err, ErrTransition) {
		t.Fatalf("create a ready lease: %v, want ErrTransition", err)
	}
	if _, err := s.CreateLeases(ctx, []*Lease{a}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateLeases(ctx, []*Lease{a}); !errors.Is(err, errdefs.ErrExists) {
		t.Fatalf("lease id taken twice: %v", err)
	}
	read := func(id string) *Lease {
		l, _, err := s.ModifyLease(ctx, id, func(*Lease) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a = read("a")
	if _, _, err := s.Grant(ctx, []Grant{{Lease: a, Exporter: e, At: now}}); !errors.Is(err, ErrChanged) {
		t.Fatalf("grant on an offline exporter: %v, want ErrChanged", err)
	}
	sess, err := s.NewSession(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutOnline(ctx, "e1", &Online{Replica: "r"}, sess); err != nil {
		t.Fatal(err)
	}
	got, _, err := s.Grant(ctx, []Grant{{Lease: a, Exporter: e, At: now}})
	if err != nil || got[0].State != Ready || got[0].Exporter != "e1" {
		t.Fatal(got, err)
	}
	// b is new: granted as it is stored, but e1 is taken.
	if _, _, err := s.Grant(ctx, []Grant{{Lease: b, Exporter: e, At: now}}); !errors.Is(err, ErrChanged) {
		t.Fatalf("double grant of e1: %v, want ErrChanged", err)
	}
	if _, _, err := s.ModifyLease(ctx, "a", func(l *Lease) error { l.State = Pending; return nil }); !errors.Is(err, ErrTransition) {
		t.Fatalf("ready → pending: %v, want ErrTransition", err)
	}
	ended, _, err := s.ModifyLease(ctx, "a", func(l *Lease) error {
		n, err := l.Finish(Ended, "done", time.Now())
		if err == nil {
			*l = *n
		}
		return err
	})
	if err != nil || ended.State != Ended {
		t.Fatal(ended, err)
	}
	if _, err := ended.Finish(Ended, "again", time.Now()); !errors.Is(err, ErrTransition) {
		t.Fatalf("ending an ended lease: %v", err)
	}
	// Ending a freed e1: b, new, gets it now.
	e, _, _ = s.GetExporter(ctx, "e1")
	got, _, err = s.Grant(ctx, []Grant{{Lease: b, Exporter: e, At: now}})
	if err != nil || got[0].Create == 0 {
		t.Fatal(got, err)
	}
	if err := s.PurgeLeases(ctx, []*Lease{got[0]}); !errors.Is(err, ErrTransition) {
		t.Fatalf("purge a live lease: %v", err)
	}
	if err := s.PurgeLeases(ctx, []*Lease{ended}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ModifyLease(ctx, "a", func(*Lease) error { return nil }); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("purged lease: %v", err)
	}
}
