package router

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/api/pin"
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

// Client runs the client side of an end-to-end tunnel over conn (a tunnel
// end the router has paired), demanding the exporter certificate
// peer. It closes conn on failure.
func (id *Identity) Client(ctx context.Context, conn net.Conn, peer string) (net.Conn, error) {
	return id.handshake(ctx, conn, peer, false)
}

// Server runs the exporter side of an end-to-end tunnel over conn,
// demanding the client certificate peer. It closes conn on failure.
func (id *Identity) Server(ctx context.Context, conn net.Conn, peer string) (net.Conn, error) {
	return id.handshake(ctx, conn, peer, true)
}

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
	bc := &batchConn{Conn: conn}
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
	return newTLSConn(t, bc), nil
}
