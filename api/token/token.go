// Package auth is the controller's credentials: bearer tokens for clients
// and exporters (kept only as hashes), sealed short-lived stream tokens
// for the router, and the CA and server certificate for TLS.
package token

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Identity kinds.
const (
	Client   = "client"
	Exporter = "exporter"
)

// MetadataKey carries "Bearer <token>" on every call.
const MetadataKey = "authorization"

// StreamTokenKey carries the router stream token.
const StreamTokenKey = "pogo-stream-token"

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// CheckName refuses names that would not fit in keys, labels and tokens.
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("name %q: want 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// NewToken makes a token for an identity and the hash to store.
// The token names its identity so that checking it is one lookup.
func NewToken(kind, name string) (token, hash string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	secret := hex.EncodeToString(b)
	return "pogo." + kind[:1] + "." + base64.RawURLEncoding.EncodeToString([]byte(name)) + "." + secret, Hash(secret)
}

// Hash is what the controller keeps of a token's secret.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// ErrBadToken is a token that is not pogo's shape.
var ErrBadToken = errors.New("malformed token")

// ParseToken splits a token into kind, name and secret.
func ParseToken(tok string) (kind, name, secret string, err error) {
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 4 || parts[0] != "pogo" || len(parts[3]) != 64 {
		return "", "", "", ErrBadToken
	}
	switch parts[1] {
	case "c":
		kind = Client
	case "e":
		kind = Exporter
	default:
		return "", "", "", ErrBadToken
	}
	n, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || CheckName(string(n)) != nil {
		return "", "", "", ErrBadToken
	}
	return kind, string(n), parts[3], nil
}

// Check compares a secret with a stored hash in constant time.
func Check(hash, secret string) bool {
	return subtle.ConstantTimeCompare([]byte(hash), []byte(Hash(secret))) == 1
}

// StreamClaims is what a stream token grants: one end (Side) of one
// tunnel between a lease's client and its exporter. The two ends' tokens
// share the Nonce, which names the tunnel.
type StreamClaims struct {
	Lease    string `json:"l"`
	Exporter string `json:"e"`
	Client   string `json:"c"`
	Side     string `json:"s"`
	// ClientCert is the certificate the client presents on an
	// end-to-end tunnel (SHA-256, hex).
	ClientCert string    `json:"k,omitempty"`
	Expires    time.Time `json:"x"`
	Nonce      string    `json:"n"`
}

// Signer seals stream tokens (AES-256-GCM) with a key all replicas share:
// a token proves a controller of this lab made it, and shows nothing of
// its claims to whoever reads it off a plain tunnel leg.
type Signer struct{ Key []byte }

func (s Signer) aead() cipher.AEAD {
	k := sha256.Sum256(append([]byte("pogo stream token\x00"), s.Key...))
	b, _ := aes.NewCipher(k[:]) // a 32-byte key never fails
	g, _ := cipher.NewGCM(b)
	return g
}

// Sign makes a stream token, with a fresh nonce unless c has one.
func (s Signer) Sign(c StreamClaims) string {
	if c.Nonce == "" {
		n := make([]byte, 12)
		_, _ = rand.Read(n)
		c.Nonce = hex.EncodeToString(n)
	}
	body, _ := json.Marshal(c)
	iv := make([]byte, 12)
	_, _ = rand.Read(iv)
	return s.seal(body, iv)
}

func (s Signer) seal(body, iv []byte) string {
	return base64.RawURLEncoding.EncodeToString(s.aead().Seal(iv, iv, body, nil))
}

// Verify opens a stream token and checks its expiry.
func (s Signer) Verify(tok string, now time.Time) (StreamClaims, error) {
	var c StreamClaims
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) < 12 {
		return c, errors.New("stream token: malformed")
	}
	body, err := s.aead().Open(nil, raw[:12], raw[12:], nil)
	if err != nil {
		return c, errors.New("stream token: not sealed by this lab's controllers")
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return c, fmt.Errorf("stream token: %w", err)
	}
	if now.After(c.Expires) {
		return c, fmt.Errorf("stream token expired at %s", c.Expires.Format(time.RFC3339))
	}
	return c, nil
}
