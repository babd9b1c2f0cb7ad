// Package pin is how pogo trusts a certificate without a CA: by its
// fingerprint, the SHA-256 of its DER in lower-case hex, which the other
// side learned over a channel it already trusts (printed by jmp run, or
// handed out by the controller).
package pin

import (
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
	"strings"
	"time"
)

// SelfSigned makes a P-256 key and a self-signed certificate for name
// (and hosts, as DNS names) and returns it with its fingerprint.
func SelfSigned(name string, hosts ...string) (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		// Pinning ignores the dates; keep them out of the way.
		NotAfter:    time.Now().AddDate(10, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    hosts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, Fingerprint(der), nil
}

// Fingerprint is the SHA-256 of a certificate's DER, as pinned.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// Normalize accepts a fingerprint as people paste it: upper or lower
// case, with a "sha256:" prefix or colons between bytes.
func Normalize(fp string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(fp, "sha256:"), ":", ""))
}

// Verify is a tls.Config VerifyPeerCertificate that accepts exactly the
// certificate with fingerprint want; peer names the other side in errors.
// Use it with InsecureSkipVerify, which turns off the chain check it
// replaces.
func Verify(peer, want string) func([][]byte, [][]*x509.Certificate) error {
	want = Normalize(want)
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New(peer + " sent no certificate")
		}
		if got := Fingerprint(raw[0]); got != want {
			return fmt.Errorf("%s certificate fingerprint %s does not match the expected %s", peer, got, want)
		}
		return nil
	}
}
