package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/api/pin"
	pb "github.com/pogolab/pogo/api/pogo/v1"
)

// Identity is the key and self-signed certificate one end presents on
// end-to-end tunnels. Nobody signs it: the controller tells each end the
// other's fingerprint over its own authenticated TLS connection, and each
// end demands exactly that certificate.
type Identity struct {
	cert tls.Certificate
	// Fingerprint is the SHA-256 of the certificate (hex).
	Fingerprint string
}

// NewIdentity makes a fresh identity (held in memory only).
func NewIdentity(name string) (*Identity, error) {
	cert, fp, err := pin.SelfSigned(name)
	if err != nil {
		return nil, fmt.Errorf("tunnel identity: %w", err)
	}
	return &Identity{cert: cert, Fingerprint: fp}, nil
}

// End is one side of tunnels: what it trusts the controller with, its
// bearer token and its end-to-end identity.
type End struct {
	// TLS trusts the controller; nil when it serves without TLS.
	TLS    *tls.Config
	Bearer string
	ID     *Identity
	// Exporter: this is the exporter's side (the TLS server of an
	// end-to-end tunnel).
	Exporter bool
}

// Open opens this side's end of a tunnel at the router at addr, as the
// replica's tunnel security sec asks: a TLS leg with the bearer token, or
// a plain leg without it; on an end-to-end tunnel, then TLS with the other
// side, demanding the certificate peer (its fingerprint, as the
// controller gave it).
func (e End) Open(ctx context.Context, addr string, sec pb.TunnelSecurity, streamToken, peer string) (net.Conn, error) {
	tc, hello := e.TLS, Hello{Bearer: e.Bearer, StreamToken: streamToken}
	if sec != pb.TunnelSecurity_TUNNEL_SECURITY_TLS || tc == nil {
		// Never send the bearer token in the clear.
		tc, hello.Bearer = nil, NoBearer
	}
	conn, err := Dial(ctx, addr, tc, hello)
	if err != nil || sec != pb.TunnelSecurity_TUNNEL_SECURITY_E2E {
		return conn, err
	}
	return e.ID.handshake(ctx, conn, peer, e.Exporter)
}

// handshake runs TLS over a paired tunnel end; it closes conn on failure.
func (id *Identity) handshake(ctx context.Context, conn net.Conn, peer string, server bool) (net.Conn, error) {
	if peer == "" {
		conn.Close()
		return nil, fmt.Errorf("end-to-end tunnel: the controller gave no certificate for the other end: %w", errdefs.ErrUnavailable)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{id.cert},
		MinVersion:   tls.VersionTLS13,
		// Trust is the pinned fingerprint, not a chain.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: pin.Verify(map[bool]string{true: "client", false: "exporter"}[server], peer),
	}
	bc := &BatchConn{Conn: conn}
	var t *tls.Conn
	if server {
		tc.ClientAuth = tls.RequireAnyClientCert
		t = tls.Server(bc, tc)
	} else {
		tc.ServerName = "pogo-tunnel"
		t = tls.Client(bc, tc)
	}
	if err := t.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("end-to-end tunnel: tls: %w: %w", err, errdefs.ErrUnavailable)
	}
	return NewTLSConn(t, bc), nil
}
