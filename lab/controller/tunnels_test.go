package controller_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/api/tunnel"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/lease"
	"github.com/pogolab/pogo/exporter/controllerlink"
	"github.com/pogolab/pogo/lab/controller"
	"github.com/pogolab/pogo/lab/controller/controllertest"
)

// wire is a TCP proxy that keeps every byte sent towards its target: what
// an eavesdropper between the parties and the controller would see.
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

// wiredLab is a controller with tunnel security sec whose every party
// (client, exporter, tunnel ends) reaches it through a wire, an exporter
// "sink" whose tunnels the test reads, and a lease of client alice on it.
type wiredLab struct {
	lab            *controllertest.Lab
	wire           *wire
	sink           net.Listener
	alice          *lease.Client
	cliTok, expTok string
	lease          string
}

func newWiredLab(t *testing.T, sec pb.TunnelSecurity) *wiredLab {
	ctx := context.Background()
	listen := freeAddr(t)
	w := newWire(t, listen)
	lab := controllertest.StartWith(t, func(o *controller.Options) {
		o.Tunnels, o.Listen, o.Advertise = sec, listen, w.ln.Addr().String()
	})
	wl := &wiredLab{lab: lab, wire: w, cliTok: lab.Token("client", "alice"), expTok: lab.Token("exporter", "sink")}
	link, err := controllerlink.New(controllerlink.Options{Endpoint: lab.C.Addr(), Token: wl.expTok, CA: lab.CA(), Labels: map[string]string{"sink": "yes"}, Log: controllertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	t.Cleanup(func() { cancel(); link.Close() })
	go link.Run(lctx)
	wl.sink = link.Listener()
	if wl.alice, err = lease.Dial(lease.Config{Endpoint: lab.C.Addr(), Token: wl.cliTok, CA: lab.CA()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wl.alice.Close() })
	controllertest.WaitOnline(t, wl.alice, "sink")
	l, err := wl.alice.Create(ctx, lease.Request{Selector: "sink", Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wl.alice.Wait(ctx, l.GetId(), nil); err != nil {
		t.Fatal(err)
	}
	wl.lease = l.GetId()
	return wl
}

// send writes msg through a new tunnel and returns the tunnel's client
// end and what the exporter's end read.
func (wl *wiredLab) send(t *testing.T, msg string) (net.Conn, string) {
	got := make(chan string, 1)
	go func() {
		c, err := wl.sink.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- string(b)
	}()
	c, err := wl.alice.Tunnel(context.Background(), wl.lease)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		return c, s
	case <-time.After(20 * time.Second):
		t.Fatal("the exporter's end read nothing")
	}
	return nil, ""
}

// roundTrip sends a fresh marker through a new tunnel, checks that the
// exporter's end read just that, and returns the client end and the
// marker.
func (wl *wiredLab) roundTrip(t *testing.T) (net.Conn, string) {
	msg := marker()
	c, got := wl.send(t, msg)
	if got != msg {
		t.Fatalf("exporter read %q, want %q", got, msg)
	}
	return c, msg
}

// dial asks the controller for a tunnel by hand, as a client presenting
// certificate fingerprint fp.
func (wl *wiredLab) dial(t *testing.T, fp string) (*pb.DialLeaseResponse, error) {
	conn, err := transport.DialController(wl.lab.C.Addr(), wl.cliTok, wl.lab.CA(), false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	d, err := pb.NewLeasesClient(conn).Dial(context.Background(), &pb.DialLeaseRequest{LeaseId: wl.lease, ClientCertSha256: fp})
	return d, errdefs.FromGRPC(err)
}

func marker() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "pogo-marker-" + hex.EncodeToString(b)
}

// Every mode keeps bearer tokens off the wire and the API on TLS, and a
// stream token seen on the wire opens no second tunnel.
func checkWire(t *testing.T, wl *wiredLab, fp string) {
	if !wl.wire.contains("POGO-TUNNEL/1 - ") {
		t.Error("no plaintext tunnel hello went over the wire")
	}
	if !wl.wire.contains("\x16\x03\x01") {
		t.Error("the API did not speak TLS")
	}
	for name, tok := range map[string]string{"client": wl.cliTok, "exporter": wl.expTok} {
		if wl.wire.contains(tok) {
			t.Errorf("the %s's bearer token crossed the wire in the clear", name)
		}
	}
	d, err := wl.dial(t, fp)
	if err != nil {
		t.Fatal(err)
	}
	hello := tunnel.Hello{Bearer: tunnel.NoBearer, StreamToken: d.GetStreamToken()}
	first, err := tunnel.Dial(context.Background(), d.GetRouter(), nil, hello)
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	if _, err := tunnel.Dial(context.Background(), d.GetRouter(), nil, hello); !errors.Is(err, errdefs.ErrInUse) {
		t.Fatalf("replayed stream token: %v", err)
	}
	// A stream token is its side's alone.
	if _, err := tunnel.Dial(context.Background(), d.GetRouter(), nil, tunnel.Hello{Bearer: wl.expTok, StreamToken: d.GetStreamToken()}); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("client's stream token with the exporter's bearer: %v", err)
	}
}

// The default: TLS between client and exporter over plain TCP legs. The
// bytes are sealed from the wire and the router, and each end demands the
// certificate the controller vouched for.
func TestEndToEndTunnels(t *testing.T) {
	wl := newWiredLab(t, pb.TunnelSecurity_TUNNEL_SECURITY_E2E)
	c, msg := wl.roundTrip(t)
	if _, plain := c.(*net.TCPConn); plain {
		t.Error("end-to-end tunnel end is plain TCP")
	}
	if wl.wire.contains(msg) {
		t.Error("tunnel bytes crossed the wire in the clear")
	}

	own, err := tunnel.NewIdentity("alice")
	if err != nil {
		t.Fatal(err)
	}
	checkWire(t, wl, own.Fingerprint)

	if _, err := wl.dial(t, ""); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("dial without a client certificate: %v", err)
	}
	// Someone with a stream token but not the key it names (one who read
	// it off the wire first, say) gets no tunnel: the exporter demands the
	// named certificate.
	impostor, err := tunnel.NewIdentity("mallory")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e2e := pb.TunnelSecurity_TUNNEL_SECURITY_E2E
	d, err := wl.dial(t, own.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := tunnel.End{ID: impostor}.Open(ctx, d.GetRouter(), e2e, d.GetStreamToken(), d.GetExporterCertSha256())
	if err == nil {
		// A TLS 1.3 client finishes before the server checks its
		// certificate; the refusal shows on the first read.
		_, err = tc.Read(make([]byte, 1))
		tc.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("exporter and an impostor's certificate: %v", err)
	}
	// And the client demands the exporter's certificate.
	if d, err = wl.dial(t, own.Fingerprint); err != nil {
		t.Fatal(err)
	}
	if _, err := (tunnel.End{ID: own}).Open(ctx, d.GetRouter(), e2e, d.GetStreamToken(), impostor.Fingerprint); err == nil || !strings.Contains(err.Error(), "does not match the expected") {
		t.Fatalf("client accepted an exporter certificate it was not told of: %v", err)
	}
}

// --tunnel-security plain: plain TCP legs and plain bytes, for trusted
// networks; bearer tokens still stay off the wire.
func TestPlainTunnels(t *testing.T) {
	wl := newWiredLab(t, pb.TunnelSecurity_TUNNEL_SECURITY_PLAIN)
	c, msg := wl.roundTrip(t)
	if _, plain := c.(*net.TCPConn); !plain {
		t.Errorf("tunnel end is a %T, want plain TCP", c)
	}
	if !wl.wire.contains(msg) {
		t.Error("plain tunnel bytes not seen on the wire: is the recorder broken?")
	}
	checkWire(t, wl, "")
}

// --tunnel-security tls: TLS legs, ended by the router.
func TestTLSTunnels(t *testing.T) {
	wl := newWiredLab(t, pb.TunnelSecurity_TUNNEL_SECURITY_TLS)
	c, msg := wl.roundTrip(t)
	if _, plain := c.(*net.TCPConn); plain {
		t.Error("TLS tunnel end is plain TCP")
	}
	if wl.wire.contains(msg) || wl.wire.contains("POGO-TUNNEL") {
		t.Error("tunnel bytes crossed the wire in the clear")
	}
	// Plaintext tunnel ends are refused, and told why.
	_, err := tunnel.Dial(context.Background(), wl.lab.C.Addr(), nil, tunnel.Hello{Bearer: tunnel.NoBearer, StreamToken: "x.y"})
	if !errors.Is(err, errdefs.ErrUnauthorized) || !strings.Contains(err.Error(), "--tunnel-security") {
		t.Fatalf("plaintext tunnel end at a TLS-legs controller: %v", err)
	}
}

// A controller run with --insecure-no-tls (testing only) routes tunnels
// too.
func TestNoTLSController(t *testing.T) {
	ctx := context.Background()
	lab := controllertest.StartNoTLS(t)
	alice := oneBoard(t, lab)
	id := ready(t, alice, "board")
	ec := controllertest.Dial(t, alice, id)
	if _, err := ec.Open(ctx, client.SessionOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := ec.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}
}
