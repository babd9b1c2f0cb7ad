package pin

import (
	"strings"
	"testing"
)

func TestVerify(t *testing.T) {
	cert, fp, err := SelfSigned("a", "a.lab")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := SelfSigned("b")
	if err != nil {
		t.Fatal(err)
	}
	if len(fp) != 64 || fp != Fingerprint(cert.Certificate[0]) {
		t.Fatalf("fingerprint %q", fp)
	}
	// As people paste it: upper case, with a prefix and colons.
	var pasted strings.Builder
	pasted.WriteString("sha256:")
	for i := 0; i < len(fp); i += 2 {
		if i > 0 {
			pasted.WriteByte(':')
		}
		pasted.WriteString(strings.ToUpper(fp[i : i+2]))
	}
	v := Verify("exporter", pasted.String())
	if err := v(cert.Certificate, nil); err != nil {
		t.Errorf("its own certificate: %v", err)
	}
	if err := v(other.Certificate, nil); err == nil || !strings.Contains(err.Error(), "exporter certificate fingerprint") {
		t.Errorf("another certificate: %v", err)
	}
	if err := v(nil, nil); err == nil || !strings.Contains(err.Error(), "exporter sent no certificate") {
		t.Errorf("no certificate: %v", err)
	}
}
