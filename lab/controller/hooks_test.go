package controller_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/client/lease"
	"github.com/pogolab/pogo/exporter/controllerlink"
	"github.com/pogolab/pogo/lab/controller/controllertest"
)

// TestHookEventsReachTheHolder: what an exporter reports of its hooks
// reaches the lease holder's WatchHooks, in order, replayed to a late
// watcher, and to nobody else; Drain returns once the controller has
// acted on everything sent before it.
func TestHookEventsReachTheHolder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lab := controllertest.Start(t)
	assigned := make(chan controllerlink.Assignment, 8)
	link, err := controllerlink.New(controllerlink.Options{Endpoint: lab.C.Addr(), Token: lab.Token("exporter", "sink"), CA: lab.CA(), Labels: map[string]string{"sink": "yes"}, Log: controllertest.Logger(t),
		OnLease: func(_ context.Context, _, cur controllerlink.Assignment) bool { assigned <- cur; return true }})
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	t.Cleanup(func() { stop(); link.Close() })
	go link.Run(lctx)
	alice, bob := lab.Client("alice"), lab.Client("bob")
	controllertest.WaitOnline(t, alice, "sink")
	l, err := alice.Create(ctx, lease.Request{Selector: "sink", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if l, err = alice.Wait(ctx, l.GetId(), nil); err != nil {
		t.Fatal(err)
	}
	id := l.GetId()
	for a := range assigned {
		if a.Lease == id {
			break
		}
	}

	var got []string
	watched := make(chan error, 1)
	go func() {
		watched <- alice.WatchHooks(ctx, id, func(e *pb.HookEvent) bool {
			got = append(got, eventString(e))
			return true
		})
	}()
	link.Hook(&pb.HookEvent{LeaseId: "not-my-lease", Hook: "beforeLease", Line: "forged"})
	link.Hook(&pb.HookEvent{LeaseId: id, Configured: []string{"beforeLease", "afterLease"}})
	link.Hook(&pb.HookEvent{LeaseId: id, Hook: "beforeLease", Line: "BEFORE_HOOK: one"})
	link.Hook(&pb.HookEvent{LeaseId: id, Hook: "beforeLease", Done: true, Error: "exit status 1: boom", OnFailure: "warn"})
	link.EndLease(id, "enough")
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	if err := link.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	// Drained: the lease's end is already on record.
	if l, err := alice.Get(ctx, id); err != nil || l.GetState() != pb.LeaseState_LEASE_STATE_ENDED || l.GetReason() != "ended by exporter sink: enough" {
		t.Fatalf("after Drain the lease is %v (%q), %v", l.GetState(), l.GetReason(), err)
	}
	// The link is gone (the exporter would exit now): the watch ends.
	select {
	case err := <-watched:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WatchHooks did not end when the exporter's link ended")
	}
	want := "configured beforeLease,afterLease|beforeLease: BEFORE_HOOK: one|beforeLease done warn exit status 1: boom"
	if strings.Join(got, "|") != want {
		t.Errorf("events\n %s\nwant\n %s", strings.Join(got, "|"), want)
	}
	// A late watcher gets the same, replayed.
	var late []string
	if err := alice.WatchHooks(ctx, id, func(e *pb.HookEvent) bool { late = append(late, eventString(e)); return true }); err != nil || strings.Join(late, "|") != want {
		t.Errorf("late watcher: %q, %v", late, err)
	}
	// Another client may not watch alice's lease.
	err = bob.WatchHooks(ctx, id, func(*pb.HookEvent) bool { t.Error("bob saw an event"); return true })
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("bob watching alice's lease: %v, want NotFound", err)
	}
}

func eventString(e *pb.HookEvent) string {
	switch {
	case e.GetHook() == "":
		return "configured " + strings.Join(e.GetConfigured(), ",")
	case !e.GetDone():
		return e.GetHook() + ": " + e.GetLine()
	}
	return e.GetHook() + " done " + e.GetOnFailure() + " " + e.GetError()
}
