package lease_test

import (
	"os"
	"path/filepath"
	"testing"
)

// The queue spec once read an empty file: `date > f` creates f before
// date writes. readLine must not return until the line is there.
func TestReadLineWaitsForContent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "got")
	if _, err := readLine(p); err == nil {
		t.Fatal("missing file: want an error")
	}
	for _, partial := range []string{"", "1764900000.12"} {
		if err := os.WriteFile(p, []byte(partial), 0o644); err != nil {
			t.Fatal(err)
		}
		if l, err := readLine(p); err == nil {
			t.Fatalf("content %q: got line %q, want an error until the line is complete", partial, l)
		}
	}
	if err := os.WriteFile(p, []byte("1764900000.123456789\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := readLine(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseDate(l); err != nil {
		t.Fatalf("parseDate(%q): %v", l, err)
	}
}
