package controller_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/lease"
	"github.com/pogolab/pogo/drivers/power"
	_ "github.com/pogolab/pogo/drivers/power/command"
	"github.com/pogolab/pogo/lab/controller/controllertest"
)

func powerExport(t *testing.T) (string, string) {
	state := filepath.Join(t.TempDir(), "power")
	return "  power:\n    type: command-power\n    config:\n      on: echo on > " + state + "\n      off: echo off > " + state + "\n      status: grep -q on " + state + "\n      delay: 10ms\n", state
}

func TestLeaseThroughRouter(t *testing.T) {
	ctx := context.Background()
	lab := controllertest.Start(t)
	exp, state := powerExport(t)
	lab.Exporter("board1", map[string]string{"board": "qemu", "lab": "ci"}, "", exp)
	alice := lab.Client("alice")
	controllertest.WaitOnline(t, alice, "board1")

	l, err := alice.Create(ctx, lease.Request{Selector: "board=qemu,lab in (ci,dev)", Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	l, err = alice.Wait(ctx, l.GetId(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.GetExporter() != "board1" {
		t.Fatalf("granted %s", l.GetExporter())
	}
	ec := controllertest.Dial(t, alice, l.GetId())
	sess, err := ec.Open(ctx, client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ec.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := ec.Power("power").State(ctx); err != nil || st != power.On {
		t.Fatalf("state %v %v", st, err)
	}
	b, _ := os.ReadFile(state)
	if string(b) != "on\n" {
		t.Fatalf("power file %q", b)
	}

	// bob reaches nothing: no lease to dial, and a lying session name is
	// refused by the exporter itself.
	bob := lab.Client("bob")
	if _, err := bob.Tunnel(ctx, l.GetId()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("bob dials alice's lease: %v", err)
	}

	if _, err := alice.Release(ctx, l.GetId()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("session not ended by release")
	}
	// The tunnel closes as the exporter resets the board: allow it a moment.
	deadline := time.Now().Add(10 * time.Second)
	for b, _ = os.ReadFile(state); string(b) != "off\n"; b, _ = os.ReadFile(state) {
		if time.Now().After(deadline) {
			t.Fatalf("power after release %q, want off", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := alice.Tunnel(ctx, l.GetId()); !errors.Is(err, errdefs.ErrExpired) {
		t.Fatalf("dial released lease: %v", err)
	}
}

func TestLeaseErrors(t *testing.T) {
	ctx := context.Background()
	lab := controllertest.Start(t)
	alice := oneBoard(t, lab)

	if _, err := alice.Create(ctx, lease.Request{Selector: "board=rpi", Duration: time.Minute}); !errors.Is(err, errdefs.ErrPrecondition) {
		t.Fatalf("unsatisfiable: %v", err)
	} else {
		t.Log(err)
	}
	if _, err := alice.Create(ctx, lease.Request{Selector: "board in (", Duration: time.Minute}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("bad selector: %v", err)
	} else {
		t.Log(err)
	}
	if _, err := alice.Create(ctx, lease.Request{Selector: "board", Duration: 0}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("zero duration: %v", err)
	}
	l, err := alice.Create(ctx, lease.Request{Selector: "board", Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if l, err = alice.Wait(ctx, l.GetId(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Extend(ctx, l.GetId(), -time.Minute); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("shorten: %v", err)
	} else {
		t.Log(err)
	}
	l2, err := alice.Extend(ctx, l.GetId(), time.Second)
	if err != nil || !l2.GetEnd().AsTime().After(l.GetEnd().AsTime()) {
		t.Fatalf("extend: %v %v", l2, err)
	}
	// The lease expires by itself; waiting for it reports it.
	start := time.Now()
	err = alice.Watch(ctx, l.GetId(), func(*pb.Lease) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	got, _ := alice.Get(ctx, l.GetId())
	if got.GetState() != pb.LeaseState_LEASE_STATE_ENDED || time.Since(start) > 5*time.Second {
		t.Fatalf("after expiry: %v", got)
	}
	if _, err := alice.Tunnel(ctx, l.GetId()); !errors.Is(err, errdefs.ErrExpired) {
		t.Fatalf("dial expired: %v", err)
	} else {
		t.Log(err)
	}
	bad, err := lease.Dial(lease.Config{Endpoint: lab.C.Addr(), Token: "pogo.c.YWxpY2U." + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", CA: lab.CA()})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.List(ctx, false); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	} else {
		t.Log(err)
	}
}

// oneBoard links exporter board1 (board=qemu, a command power switch) to
// lab and returns client alice once she sees it online.
func oneBoard(t *testing.T, lab *controllertest.Lab) *lease.Client {
	t.Helper()
	exp, _ := powerExport(t)
	lab.Exporter("board1", map[string]string{"board": "qemu"}, "", exp)
	alice := lab.Client("alice")
	controllertest.WaitOnline(t, alice, "board1")
	return alice
}

// ready leases what sel selects for c for a minute and returns the lease
// once it is Ready.
func ready(t *testing.T, c *lease.Client, sel string) string {
	t.Helper()
	ctx := context.Background()
	l, err := c.Create(ctx, lease.Request{Selector: sel, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(ctx, l.GetId(), nil); err != nil {
		t.Fatal(err)
	}
	return l.GetId()
}
