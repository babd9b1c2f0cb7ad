package controller_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/lease"
	"github.com/pogolab/pogo/exporter/controllerlink"
	"github.com/pogolab/pogo/lab/controller"
	"github.com/pogolab/pogo/lab/controller/controllertest"
	"github.com/pogolab/pogo/lab/controller/router"
)

// wire is a TCP proxy that keeps every byte sent towards its target: what
// an eavesdropper on the network between the parties and the controller
// would see.
type wire struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	seen   bytes.Buffer
}

func newWire(t *testing.T, target string) *wire {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go w.relay(c)
		}
	}()
	return w
}

func (w *wire) relay(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", w.target)
	if err != nil {
		return
	}
	defer s.Close()
	go func() { _, _ = io.Copy(c, s); c.Close() }()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			w.mu.Lock()
			w.seen.Write(buf[:n])
			w.mu.Unlock()
			if _, err := s.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (w *wire) contains(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Contains(w.seen.Bytes(), []byte(s))
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// With --plaintext-tunnels the tunnel legs are plain TCP, the API keeps
// TLS, no bearer token crosses the wire in the clear, and a stream token
// seen on the wire opens no second tunnel.
func TestPlaintextTunnels(t *testing.T) {
	ctx := context.Background()
	listen := freeAddr(t)
	w := newWire(t, listen)
	lab := controllertest.StartWith(t, func(o *controller.Options) {
		o.PlainTunnels, o.Listen, o.Advertise = true, listen, w.ln.Addr().String()
	})
	exp, _ := powerExport(t)
	expTok := lab.Token("exporter", "board1")
	lab.Exporter("board1", map[string]string{"board": "qemu"}, expTok, exp)
	cliTok := lab.Token("client", "alice")
	alice, err := lease.Dial(lease.Config{Endpoint: lab.C.Addr(), Token: cliTok, CA: lab.CA()})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	controllertest.WaitOnline(t, alice, "board1")
	l, err := alice.Create(ctx, lease.Request{Selector: "board=qemu", Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Wait(ctx, l.GetId(), nil); err != nil {
		t.Fatal(err)
	}

	tc, err := alice.Tunnel(ctx, l.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tc.(*net.TCPConn); !ok {
		t.Errorf("tunnel end is a %T, want plain TCP", tc)
	}
	tc.Close()
	ec := controllertest.Dial(t, alice, l.GetId())
	if _, err := ec.Open(ctx, client.SessionOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ec.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}

	if !w.contains("POGO-TUNNEL/1 - ") {
		t.Error("no plaintext tunnel hello went over the wire")
	}
	if !w.contains("\x16\x03\x01") {
		t.Error("the API did not speak TLS")
	}
	for name, tok := range map[string]string{"client": cliTok, "exporter": expTok} {
		if w.contains(tok) {
			t.Errorf("the %s's bearer token crossed the wire in the clear", name)
		}
	}

	// Replay a stream token: the first use opens a tunnel, the second
	// nothing.
	conn, err := controllerlink.Conn(lab.C.Addr(), cliTok, lab.CA(), false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d, err := pb.NewLeasesClient(conn).Dial(ctx, &pb.DialLeaseRequest{LeaseId: l.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if !d.GetPlaintext() {
		t.Fatal("dial response does not say plaintext")
	}
	hello := router.Hello{Bearer: router.NoBearer, StreamToken: d.GetStreamToken()}
	first, err := router.Dial(ctx, d.GetRouter(), nil, hello)
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	_, err = router.Dial(ctx, d.GetRouter(), nil, hello)
	if !errors.Is(err, errdefs.ErrInUse) {
		t.Fatalf("replayed stream token: %v", err)
	}
	t.Log(err)
	// A stream token is its side's alone: with a bearer token of the
	// other side it opens nothing.
	if _, err := router.Dial(ctx, d.GetRouter(), nil, router.Hello{Bearer: expTok, StreamToken: d.GetStreamToken()}); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("client's stream token with the exporter's bearer: %v", err)
	}
}

// A controller without --plaintext-tunnels refuses a plaintext tunnel end
// and says why.
func TestPlaintextTunnelRefused(t *testing.T) {
	lab := controllertest.Start(t)
	_, err := router.Dial(context.Background(), lab.C.Addr(), nil, router.Hello{Bearer: router.NoBearer, StreamToken: "x.y"})
	if !errors.Is(err, errdefs.ErrUnauthorized) || !strings.Contains(err.Error(), "--plaintext-tunnels") {
		t.Fatalf("plaintext tunnel end at a TLS-only controller: %v", err)
	}
}

// A controller run with --insecure-no-tls (testing only) routes tunnels
// too.
func TestNoTLSController(t *testing.T) {
	ctx := context.Background()
	lab := controllertest.StartNoTLS(t)
	exp, _ := powerExport(t)
	lab.Exporter("board1", map[string]string{"board": "qemu"}, "", exp)
	alice := lab.Client("alice")
	controllertest.WaitOnline(t, alice, "board1")
	l, err := alice.Create(ctx, lease.Request{Selector: "board", Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Wait(ctx, l.GetId(), nil); err != nil {
		t.Fatal(err)
	}
	ec := controllertest.Dial(t, alice, l.GetId())
	if _, err := ec.Open(ctx, client.SessionOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ec.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}
}
