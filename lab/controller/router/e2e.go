package router

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
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

// NewIdentity makes a fresh P-256 identity (held in memory only).
func NewIdentity(name string) (*Identity, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tunnel key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("tunnel certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("tunnel certificate: %w", err)
	}
	sum := sha256.Sum256(der)
	return &Identity{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, Fingerprint: hex.EncodeToString(sum[:])}, nil
}

// pin accepts exactly the certificate whose SHA-256 is want.
func pin(want string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("no certificate presented")
		}
		sum := sha256.Sum256(raw[0])
		if got := hex.EncodeToString(sum[:]); got != want {
			return fmt.Errorf("certificate %.16s… is not the expected %.16s…", got, want)
		}
		return nil
	}
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
		VerifyPeerCertificate: pin(peer),
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
