package controller_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/api/token"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/api/tunnel"
	"github.com/pogolab/pogo/lab/controller"
	"github.com/pogolab/pogo/lab/controller/controllertest"
)

// Ended leases leave etcd once the retention period has passed.
func TestEndedLeasesDeleted(t *testing.T) {
	ctx := context.Background()
	lab := controllertest.StartWith(t, func(o *controller.Options) { o.Retention = time.Second })
	alice := oneBoard(t, lab)
	id := ready(t, alice, "board")
	if _, err := alice.Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	if ls, err := alice.List(ctx, true); err != nil || len(ls) != 1 {
		t.Fatalf("just after release: %d leases, %v", len(ls), err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := alice.Get(ctx, id)
		if errors.Is(err, errdefs.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ended lease still there 10s after a 1s retention: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Tunnel ends the router refuses get one clear error.
func TestTunnelRefused(t *testing.T) {
	ctx := context.Background()
	lab := controllertest.Start(t)
	tok := lab.Token("client", "alice")
	tc, err := transport.ControllerTLS(lab.CA(), false)
	if err != nil {
		t.Fatal(err)
	}
	forged := token.Signer{Key: []byte("not the cluster key")}.Sign(token.StreamClaims{Lease: "x", Exporter: "e", Client: "alice", Expires: time.Now().Add(time.Minute)})
	_, err = tunnel.Dial(ctx, lab.C.Addr(), tc, tunnel.Hello{Bearer: tok, StreamToken: forged})
	if !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("forged stream token: %v", err)
	}
	t.Log(err)
	_, err = tunnel.Dial(ctx, lab.C.Addr(), tc, tunnel.Hello{Bearer: "pogo.c.x.y", StreamToken: forged})
	if !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("bad bearer: %v", err)
	}
}
