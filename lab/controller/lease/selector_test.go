package lease

import (
	"errors"
	"testing"
)

func TestSelectorMatches(t *testing.T) {
	labels := map[string]string{"board": "qemu", "lab": "ci", "arch": "arm64"}
	for _, tc := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"board=qemu", true},
		{"board==qemu", true},
		{"board=rpi", false},
		{"board=qemu,lab=ci", true},
		{"board=qemu, lab=dev", false},
		{"board!=rpi", true},
		{"board!=qemu", false},
		{"missing!=x", true},
		{"arch in (arm64,amd64)", true},
		{"arch in (amd64)", false},
		{"missing in (a)", false},
		{"arch notin (amd64, riscv)", true},
		{"arch notin (arm64)", false},
		{"missing notin (a)", true},
		{"lab", true},
		{"missing", false},
		{"!missing", true},
		{"!lab", false},
		{"board=qemu,arch in (arm64),!gpu,lab", true},
		{"in=x", false},
		{"notin", false},
	} {
		sel, err := Parse(tc.sel)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.sel, err)
		}
		if got := sel.Matches(labels); got != tc.want {
			t.Errorf("%q matches %v = %v, want %v", tc.sel, labels, got, tc.want)
		}
	}
}

func TestSelectorErrors(t *testing.T) {
	for _, s := range []string{
		"=x", "a=b,", "a=b,,c", "a in", "a in (", "a in ()", "a in (x", "a in (x y)",
		"a notin x", "!", "a=b c", "a ~ b", "a=b$", ",",
	} {
		_, err := Parse(s)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) = %v, want a SyntaxError", s, err)
			continue
		}
		t.Logf("%q: %v", s, err)
	}
}

func TestSelectorString(t *testing.T) {
	s := MustParse(" a = b , c!=d,e in (y, x), f notin (z),g,! h")
	if got, want := s.String(), "a=b,c!=d,e in (x,y),f notin (z),g,!h"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"a=b,c!=d,e in (x,y),f notin (z),g,!h", "board==qemu", "", "a in (", "!x,y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q): error %v is not a SyntaxError", s, err)
			}
			return
		}
		// The canonical form must parse back to the same canonical form.
		again, err := Parse(sel.String())
		if err != nil {
			t.Fatalf("Parse(%q) ok but its String %q fails: %v", s, sel.String(), err)
		}
		if again.String() != sel.String() {
			t.Fatalf("round trip of %q: %q then %q", s, sel.String(), again.String())
		}
		_ = sel.Matches(map[string]string{"a": "b"})
	})
}
