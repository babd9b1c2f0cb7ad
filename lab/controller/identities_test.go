package controller_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/lease"
	"github.com/pogolab/pogo/lab/controller/controllertest"
)

// The machine running these may be busy (QEMU suites in parallel): waits
// are generous, and only ever polls.
const patience = 60 * time.Second

// eventually polls f until it returns nil, failing with its last error
// after patience.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not so after %s: %v", what, patience, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*patience)
	t.Cleanup(cancel)
	return ctx
}

func identities(t *testing.T, admin pb.AdminClient) map[string]*pb.Identity {
	t.Helper()
	r, err := admin.ListIdentities(testCtx(t), &pb.ListIdentitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*pb.Identity{}
	for _, id := range r.GetIdentities() {
		out[id.GetKind().String()+"/"+id.GetName()] = id
	}
	return out
}

// watchFinal follows a lease from now on and yields its final version.
// It returns once the watch has seen the lease's current state, so that
// the stream was opened before whatever the test does next.
func watchFinal(t *testing.T, c *lease.Client, id string) <-chan *pb.Lease {
	t.Helper()
	started := make(chan struct{})
	out := make(chan *pb.Lease, 1)
	go func() {
		var last *pb.Lease
		err := c.Watch(testCtx(t), id, func(l *pb.Lease) bool {
			if last == nil {
				close(started)
			}
			last = l
			return true
		})
		if err != nil {
			t.Errorf("watch lease %s: %v", id, err)
		}
		if last == nil {
			close(started)
		}
		out <- last
	}()
	select {
	case <-started:
	case <-time.After(patience):
		t.Fatalf("watch of lease %s saw nothing in %s", id, patience)
	}
	return out
}

func finalOf(t *testing.T, ch <-chan *pb.Lease, id string) *pb.Lease {
	t.Helper()
	select {
	case l := <-ch:
		if l == nil {
			t.Fatalf("lease %s: no final version", id)
		}
		return l
	case <-time.After(patience):
		t.Fatalf("lease %s not final %s after the deletion", id, patience)
	}
	return nil
}

func powerIs(path, want string) func() error {
	return func() error {
		b, _ := os.ReadFile(path)
		if string(b) != want+"\n" {
			return fmt.Errorf("power file %q, want %q", b, want)
		}
		return nil
	}
}

// exporterLink is an exporter speaking ExporterLink by hand, to see
// exactly what the controller answers.
// handLink registers name with token and opens its Listen stream by hand,
// past the first (empty) assignment.
func handLink(ctx context.Context, t *testing.T, lab *controllertest.Lab, token, name string) pb.ExporterLink_ListenClient {
	t.Helper()
	link := exporterLink(t, lab, token)
	if _, err := link.Register(ctx, &pb.RegisterRequest{Labels: map[string]string{"board": "rpi"}, Report: &pb.ReportResponse{Name: name}}); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithTimeout(ctx, patience)
	t.Cleanup(cancel)
	listen, err := link.Listen(lctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := listen.Recv(); err != nil {
		t.Fatal(err)
	}
	return listen
}

func exporterLink(t *testing.T, lab *controllertest.Lab, token string) pb.ExporterLinkClient {
	t.Helper()
	conn, err := transport.DialController(lab.C.Addr(), token, lab.CA(), false, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewExporterLinkClient(conn)
}

func TestListIdentities(t *testing.T) {
	ctx := testCtx(t)
	start := time.Now().Add(-time.Second)
	lab := controllertest.Start(t)
	admin := lab.Admin()
	alice := lab.Client("alice")
	lab.Client("bob")
	if _, err := admin.SetPolicy(ctx, &pb.Policy{Client: "alice", Priority: 3, Selector: "board=qemu"}); err != nil {
		t.Fatal(err)
	}
	exp, _ := powerExport(t)
	lab.Exporter("board1", map[string]string{"board": "qemu"}, "", exp)
	lab.Token("exporter", "board2") // never registers
	if _, err := admin.SetExporterEnabled(ctx, &pb.SetExporterEnabledRequest{Name: "board2", Enabled: false}); err != nil {
		t.Fatal(err)
	}
	controllertest.WaitOnline(t, alice, "board1")

	r, err := admin.ListIdentities(ctx, &pb.ListIdentitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, id := range r.GetIdentities() {
		order = append(order, id.GetKind().String()+"/"+id.GetName())
		if c := id.GetCreated().AsTime(); c.Before(start) || c.After(time.Now()) {
			t.Errorf("%s created %v, want between %v and now", id.GetName(), c, start)
		}
	}
	want := []string{"IDENTITY_KIND_CLIENT/alice", "IDENTITY_KIND_CLIENT/bob", "IDENTITY_KIND_EXPORTER/board1", "IDENTITY_KIND_EXPORTER/board2"}
	if !slices.Equal(order, want) {
		t.Fatalf("identities %v, want %v", order, want)
	}
	ids := identities(t, admin)
	if p := ids["IDENTITY_KIND_CLIENT/alice"].GetPolicy(); p.GetPriority() != 3 || p.GetSelector() != "board=qemu" {
		t.Errorf("alice's policy %v", p)
	}
	if p := ids["IDENTITY_KIND_CLIENT/bob"].GetPolicy(); p.GetPriority() != 0 || p.GetSelector() != "" {
		t.Errorf("bob's policy %v, want the default", p)
	}
	if e := ids["IDENTITY_KIND_EXPORTER/board1"]; !e.GetEnabled() || !e.GetOnline() || e.GetRegistered() == nil || e.GetPolicy() != nil {
		t.Errorf("board1 %v, want enabled, online, registered, no policy", e)
	}
	if e := ids["IDENTITY_KIND_EXPORTER/board2"]; e.GetEnabled() || e.GetOnline() || e.GetRegistered() != nil {
		t.Errorf("board2 %v, want disabled, offline, never registered", e)
	}
}

// Deleting a client refuses its token and ends its ready and pending
// leases, which frees the board for others.
func TestDeleteClient(t *testing.T) {
	ctx := testCtx(t)
	lab := controllertest.Start(t)
	admin := lab.Admin()
	exp, state := powerExport(t)
	lab.Exporter("board1", map[string]string{"board": "qemu"}, "", exp)
	alice := lab.Client("alice")
	bob := lab.Client("bob")
	if _, err := admin.SetPolicy(ctx, &pb.Policy{Client: "alice", Priority: 2}); err != nil {
		t.Fatal(err)
	}
	controllertest.WaitOnline(t, alice, "board1")

	ready, err := alice.Create(ctx, lease.Request{Selector: "board=qemu", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ready, err = alice.Wait(ctx, ready.GetId(), nil); err != nil {
		t.Fatal(err)
	}
	pending, err := alice.Create(ctx, lease.Request{Selector: "board=qemu", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if pending.GetState() != pb.LeaseState_LEASE_STATE_PENDING {
		t.Fatalf("second lease %v, want pending behind the first", pending.GetState())
	}
	ec := controllertest.Dial(t, alice, ready.GetId())
	sess, err := ec.Open(ctx, client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ec.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "board on", powerIs(state, "on"))
	readyEnd := watchFinal(t, alice, ready.GetId())
	pendingEnd := watchFinal(t, alice, pending.GetId())

	r, err := admin.DeleteIdentity(ctx, &pb.DeleteIdentityRequest{Kind: pb.IdentityKind_IDENTITY_KIND_CLIENT, Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	got := r.GetEndedLeases()
	slices.Sort(got)
	want := []string{ready.GetId(), pending.GetId()}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("ended leases %v, want %v", got, want)
	}

	// The token is refused at once, like a rotated one.
	if _, err := alice.List(ctx, true); !errors.Is(err, errdefs.ErrUnauthorized) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("alice's call after her deletion: %v, want unknown or revoked token", err)
	}
	for _, c := range []struct {
		ch <-chan *pb.Lease
		id string
	}{{readyEnd, ready.GetId()}, {pendingEnd, pending.GetId()}} {
		l := finalOf(t, c.ch, c.id)
		if l.GetState() != pb.LeaseState_LEASE_STATE_ENDED || !strings.Contains(l.GetReason(), "client alice deleted") {
			t.Errorf("lease %s after deleting alice: %v (%s), want ended by the deletion", c.id, l.GetState(), l.GetReason())
		}
	}
	// The exporter was told: the session ends and the board is reset.
	select {
	case <-sess.Done():
	case <-time.After(patience):
		t.Fatal("alice's session survives her deletion")
	}
	eventually(t, "board off after the deletion", powerIs(state, "off"))

	// The board is free: bob gets it.
	bl, err := bob.Create(ctx, lease.Request{Selector: "board=qemu", Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if bl, err = bob.Wait(ctx, bl.GetId(), nil); err != nil || bl.GetExporter() != "board1" {
		t.Fatalf("bob's lease after alice's deletion: %v %v", bl, err)
	}

	ids := identities(t, admin)
	if _, ok := ids["IDENTITY_KIND_CLIENT/alice"]; ok {
		t.Error("alice still listed")
	}
	if _, ok := ids["IDENTITY_KIND_CLIENT/bob"]; !ok {
		t.Error("bob no longer listed")
	}
	// Her policy went with her: a new alice starts from the default.
	lab.Token("client", "alice")
	if p := identities(t, admin)["IDENTITY_KIND_CLIENT/alice"].GetPolicy(); p.GetPriority() != 0 {
		t.Errorf("re-created alice's policy %v, want the default", p)
	}
}

// Deleting an exporter ends the lease on it and its link, and its token
// cannot register again.
func TestDeleteExporter(t *testing.T) {
	ctx := testCtx(t)
	lab := controllertest.Start(t)
	admin := lab.Admin()
	exp, state := powerExport(t)
	tok1 := lab.Token("exporter", "board1")
	board1 := lab.Exporter("board1", map[string]string{"board": "qemu"}, tok1, exp)
	alice := lab.Client("alice")

	// board2 speaks ExporterLink by hand, to see its link end.
	tok2 := lab.Token("exporter", "board2")
	listen := handLink(ctx, t, lab, tok2, "board2")
	controllertest.WaitOnline(t, alice, "board1", "board2")

	l, err := alice.Create(ctx, lease.Request{Selector: "board=qemu", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if l, err = alice.Wait(ctx, l.GetId(), nil); err != nil {
		t.Fatal(err)
	}
	ec := controllertest.Dial(t, alice, l.GetId())
	sess, err := ec.Open(ctx, client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ec.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "board on", powerIs(state, "on"))
	end := watchFinal(t, alice, l.GetId())

	r, err := admin.DeleteIdentity(ctx, &pb.DeleteIdentityRequest{Kind: pb.IdentityKind_IDENTITY_KIND_EXPORTER, Name: "board1"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.GetEndedLeases(), []string{l.GetId()}) {
		t.Errorf("ended leases %v, want [%s]", r.GetEndedLeases(), l.GetId())
	}
	if got := finalOf(t, end, l.GetId()); got.GetState() != pb.LeaseState_LEASE_STATE_ENDED || !strings.Contains(got.GetReason(), "exporter board1 deleted") {
		t.Errorf("lease after deleting its exporter: %v (%s), want ended by the deletion", got.GetState(), got.GetReason())
	}
	// The exporter heard of it before its link ended: session over, board off.
	eventually(t, "board1 told its lease ended", func() error {
		if a := board1.Link.Current(); a.Lease != "" {
			return fmt.Errorf("board1 still serves lease %s", a.Lease)
		}
		return nil
	})
	select {
	case <-sess.Done():
	case <-time.After(patience):
		t.Fatal("the session survives its exporter's deletion")
	}
	eventually(t, "board off after the deletion", powerIs(state, "off"))
	if _, err := alice.Tunnel(ctx, l.GetId()); !errors.Is(err, errdefs.ErrExpired) {
		t.Errorf("dial the ended lease: %v", err)
	}

	if _, err := admin.DeleteIdentity(ctx, &pb.DeleteIdentityRequest{Kind: pb.IdentityKind_IDENTITY_KIND_EXPORTER, Name: "board2"}); err != nil {
		t.Fatal(err)
	}
	// board2's link ends with the deletion, after the assignment it had.
	for {
		m, err := listen.Recv()
		if err == nil {
			if m.GetLease().GetLeaseId() != "" {
				t.Fatalf("board2 assigned %v after its deletion", m.GetLease())
			}
			continue
		}
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "board2") {
			t.Fatalf("board2's link ended with %v, want Unauthenticated naming it", err)
		}
		t.Log(err)
		break
	}
	// Neither can come back with its old token, even once the name is
	// created again.
	lab.Token("exporter", "board2")
	for name, tok := range map[string]string{"board1": tok1, "board2": tok2} {
		c := exporterLink(t, lab, tok)
		_, err := c.Register(ctx, &pb.RegisterRequest{Labels: map[string]string{"board": "qemu"}}, grpc.WaitForReady(true))
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s registers again with its old token: %v", name, err)
		}
		if st, err := c.Listen(ctx, grpc.WaitForReady(true)); err == nil {
			if _, err := st.Recv(); status.Code(err) != codes.Unauthenticated {
				t.Errorf("%s listens again with its old token: %v", name, err)
			}
		}
	}
	// Nothing is granted board1 any more; it is not even known.
	if _, err := alice.Create(ctx, lease.Request{Exporter: "board1", Duration: time.Minute}); !errors.Is(err, errdefs.ErrPrecondition) {
		t.Errorf("lease of deleted board1: %v, want unsatisfiable", err)
	}
	eventually(t, "no exporter links left", func() error {
		if n := exporterLinks(t, lab); n != 0 {
			return fmt.Errorf("%v exporter links", n)
		}
		es, err := alice.Exporters(ctx, "")
		if err != nil {
			return err
		}
		for _, e := range es {
			if e.GetName() == "board1" || e.GetOnline() {
				return fmt.Errorf("exporter %s still listed (online %v)", e.GetName(), e.GetOnline())
			}
		}
		return nil
	})
	ids := identities(t, admin)
	if _, ok := ids["IDENTITY_KIND_EXPORTER/board1"]; ok {
		t.Error("board1 still listed")
	}
	if e := ids["IDENTITY_KIND_EXPORTER/board2"]; e == nil || e.GetRegistered() != nil || e.GetOnline() {
		t.Errorf("re-created board2 %v, want new, never registered and offline", e)
	}
}

func TestDeleteUnknown(t *testing.T) {
	ctx := testCtx(t)
	lab := controllertest.Start(t)
	admin := lab.Admin()
	lab.Token("client", "alice")
	for _, c := range []struct {
		kind pb.IdentityKind
		name string
	}{
		{pb.IdentityKind_IDENTITY_KIND_CLIENT, "nobody"},
		{pb.IdentityKind_IDENTITY_KIND_EXPORTER, "ghost"},
		// A client is not an exporter of the same name.
		{pb.IdentityKind_IDENTITY_KIND_EXPORTER, "alice"},
	} {
		_, err := admin.DeleteIdentity(ctx, &pb.DeleteIdentityRequest{Kind: c.kind, Name: c.name})
		if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), `"`+c.name+`"`) {
			t.Errorf("delete %v %s: %v, want NotFound naming it", c.kind, c.name, err)
		} else {
			t.Log(err)
		}
	}
	if _, err := admin.DeleteIdentity(ctx, &pb.DeleteIdentityRequest{Name: "alice"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("delete without a kind: %v, want InvalidArgument", err)
	}
	if _, err := admin.DeleteIdentity(ctx, &pb.DeleteIdentityRequest{Kind: pb.IdentityKind_IDENTITY_KIND_CLIENT, Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.DeleteIdentity(ctx, &pb.DeleteIdentityRequest{Kind: pb.IdentityKind_IDENTITY_KIND_CLIENT, Name: "alice"}); status.Code(err) != codes.NotFound {
		t.Errorf("delete alice twice: %v, want NotFound", err)
	}
}

// exporterLinks is the controller's count of open Listen streams.
func exporterLinks(t *testing.T, lab *controllertest.Lab) float64 {
	t.Helper()
	mfs, err := lab.C.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "pogo_controller_exporter_links" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no pogo_controller_exporter_links metric")
	return 0
}

// TestRotateEndsExporterLink: rotating an exporter's token ends the link
// it holds with the old one, and only the new token links again.
func TestRotateEndsExporterLink(t *testing.T) {
	ctx := testCtx(t)
	lab := controllertest.Start(t)
	old := lab.Token("exporter", "board3")
	listen := handLink(ctx, t, lab, old, "board3")
	r, err := lab.Admin().CreateExporter(ctx, &pb.CreateIdentityRequest{Name: "board3", Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = listen.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "token rotated") {
		t.Fatalf("the old token's link ended with %v, want Unauthenticated saying the token rotated", err)
	}
	if st, err := exporterLink(t, lab, old).Listen(ctx); err == nil {
		if _, err := st.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("the old token links again: %v", err)
		}
	}
	st, err := exporterLink(t, lab, r.GetToken()).Listen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatalf("the new token's link: %v", err)
	}
}

// TestDeleteExporterEndsWhatOnlyItCouldServe: pending requests that name
// a deleted exporter, or whose selector only it matched, end
// Unsatisfiable; one another exporter can serve stays pending.
func TestDeleteExporterEndsWhatOnlyItCouldServe(t *testing.T) {
	ctx := testCtx(t)
	lab := controllertest.Start(t)
	exp1, _ := powerExport(t)
	exp2, _ := powerExport(t)
	lab.Exporter("board1", map[string]string{"board": "qemu", "lab": "a"}, "", exp1)
	lab.Exporter("board2", map[string]string{"board": "qemu", "lab": "b"}, "", exp2)
	alice := lab.Client("alice")
	controllertest.WaitOnline(t, alice, "board1", "board2")
	// alice holds both boards, so every other request waits.
	for _, name := range []string{"board1", "board2"} {
		l, err := alice.Create(ctx, lease.Request{Exporter: name, Duration: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Wait(ctx, l.GetId(), nil); err != nil {
			t.Fatal(err)
		}
	}
	pending := map[string]lease.Request{
		"by name":         {Exporter: "board1", Duration: time.Hour},
		"only board1":     {Selector: "lab=a", Duration: time.Hour},
		"either board":    {Selector: "board=qemu", Duration: time.Hour},
		"by other's name": {Exporter: "board2", Duration: time.Hour},
	}
	ids := map[string]string{}
	for what, r := range pending {
		l, err := alice.Create(ctx, r)
		if err != nil || l.GetState() != pb.LeaseState_LEASE_STATE_PENDING {
			t.Fatalf("%s: %v %v, want pending", what, l.GetState(), err)
		}
		ids[what] = l.GetId()
	}
	if _, err := lab.Admin().DeleteIdentity(ctx, &pb.DeleteIdentityRequest{Kind: pb.IdentityKind_IDENTITY_KIND_EXPORTER, Name: "board1"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]pb.LeaseState{
		"by name":         pb.LeaseState_LEASE_STATE_UNSATISFIABLE,
		"only board1":     pb.LeaseState_LEASE_STATE_UNSATISFIABLE,
		"either board":    pb.LeaseState_LEASE_STATE_PENDING,
		"by other's name": pb.LeaseState_LEASE_STATE_PENDING,
	}
	for what, st := range want {
		l, err := alice.Get(ctx, ids[what])
		if err != nil {
			t.Fatal(err)
		}
		if l.GetState() != st {
			t.Errorf("%s: %v (%s), want %v", what, l.GetState(), l.GetReason(), st)
		}
		if st == pb.LeaseState_LEASE_STATE_UNSATISFIABLE && !strings.Contains(l.GetReason(), "no exporter matches") {
			t.Errorf("%s: reason %q", what, l.GetReason())
		}
	}
}
