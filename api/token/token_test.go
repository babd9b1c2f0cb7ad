package token

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// A stream token opens only with its lab's key, and hides its claims.
func TestStreamTokenSealed(t *testing.T) {
	s := Signer{Key: []byte("lab key")}
	now := time.Now()
	c := StreamClaims{Lease: "lease-4f2a", Exporter: "board-7", Client: "alice", Side: Client, Expires: now.Add(time.Minute)}
	tok := s.Sign(c)
	got, err := s.Verify(tok, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Lease != c.Lease || got.Exporter != c.Exporter || got.Client != c.Client || got.Side != c.Side || got.Nonce == "" {
		t.Fatalf("claims %+v, signed %+v", got, c)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	for _, s := range []string{tok, string(raw)} {
		for _, claim := range []string{c.Lease, c.Exporter, c.Client} {
			if strings.Contains(s, claim) {
				t.Errorf("token shows %q", claim)
			}
		}
	}
	if _, err := (Signer{Key: []byte("other lab")}).Verify(tok, now); err == nil {
		t.Error("another lab's key opened the token")
	}
	if _, err := s.Verify(tok, now.Add(2*time.Minute)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
	if s.Sign(c) == tok {
		t.Error("two tokens for the same claims are equal")
	}
}
