package cli

import (
	"bytes"
	"strings"
	"testing"
)

func filterAll(chunks ...string) string {
	var out bytes.Buffer
	f := &queryFilter{w: &out}
	for _, c := range chunks {
		f.Write([]byte(c))
	}
	f.Flush()
	return out.String()
}

func TestQueryFilter(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// Asked of the terminal: shown, not sent.
		{"~ # \x1b[6n", "~ # ^[[6n"},
		{"\x1b[c\x1b[0c\x1b[>c\x1b[=c", "^[[c^[[0c^[[>c^[[=c"},
		{"\x1b[?6n\x1b[5n", "^[[?6n^[[5n"},
		{"\x1b[14t\x1b[21t", "^[[14t^[[21t"},
		{"\x1b[?2026$p\x1b[>q\x1b[?u", "^[[?2026$p^[[>q^[[?u"},
		{"\x1b]11;?\x07", "^[]11;?^G"},
		{"\x1b]10;?\x1b\\after", "^[]10;?^[\\after"},
		{"\x1bP$qm\x1b\\", "^[P$qm^[\\"},
		{"\x1bZ\x05", "^[Z^E"},
		// Everything else passes as it is.
		{"plain text\r\n", "plain text\r\n"},
		{"\x1b[1;31mred\x1b[0m \x1b[2J\x1b[H\x1b[?25l\x1b[?25h", "\x1b[1;31mred\x1b[0m \x1b[2J\x1b[H\x1b[?25l\x1b[?25h"},
		{"\x1b7\x1b8\x1b(B", "\x1b7\x1b8\x1b(B"},
		{"ünïcödé ✓", "ünïcödé ✓"},
		// A string ended by another ESC sequence: that one is read afresh.
		{"\x1b]0;title\x1b[31mx", "^[]0;title\x1b[31mx"},
		// Malformed CSI: shown, the byte after it read afresh.
		{"\x1b[12\nok", "^[[12\nok"},
		// An unfinished sequence at the end is shown.
		{"end\x1b[", "end^[["},
	} {
		if got := filterAll(tc.in); got != tc.want {
			t.Errorf("filter(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A query split across two reads is still caught.
func TestQueryFilterSplit(t *testing.T) {
	in := "a\x1b[6nb\x1b]11;?\x1b\\c"
	want := filterAll(in)
	for i := range len(in) + 1 {
		if got := filterAll(in[:i], in[i:]); got != want {
			t.Errorf("split at %d: %q, want %q", i, got, want)
		}
	}
}

// checkNoQuery fails when out still holds a sequence a terminal answers.
func checkNoQuery(t *testing.T, in []byte, out string) {
	t.Helper()
	if strings.ContainsRune(out, ctlENQ) {
		t.Fatalf("filter(%q) = %q: ENQ passed", in, out)
	}
	for i := 0; i < len(out); i++ {
		if out[i] != ctlESC || i+1 >= len(out) {
			if out[i] == ctlESC {
				t.Fatalf("filter(%q) = %q: a lone ESC at the end passed", in, out)
			}
			continue
		}
		switch out[i+1] {
		case ']', 'P', '_', '^', 'X', 'Z':
			t.Fatalf("filter(%q) = %q: ESC %c passed", in, out, out[i+1])
		case '[':
			j := i + 2
			for j < len(out) && out[j] >= 0x20 && out[j] <= 0x3f {
				j++
			}
			if j >= len(out) || out[j] < 0x40 || out[j] > 0x7e {
				t.Fatalf("filter(%q) = %q: an unfinished CSI passed", in, out)
			}
			if csiQuery([]byte(out[i : j+1])) {
				t.Fatalf("filter(%q) = %q: query %q passed", in, out, out[i:j+1])
			}
		}
	}
}

func FuzzQueryFilter(f *testing.F) {
	for _, s := range []string{"\x1b[6n", "\x1b]11;?\x07", "\x1bP$qm\x1b\\", "\x1b[31mx", "\x1b\x1b[c", "\x1b]\x1b\x1b[6n", "plain"} {
		f.Add([]byte(s), uint(2))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint) {
		whole := filterAll(string(in))
		checkNoQuery(t, in, whole)
		i := int(split % uint(len(in)+1))
		if got := filterAll(string(in[:i]), string(in[i:])); got != whole {
			t.Fatalf("filter(%q) split at %d = %q, whole %q", in, i, got, whole)
		}
		if !bytes.ContainsAny(in, "\x1b\x05") && whole != string(in) {
			t.Fatalf("filter(%q) = %q: text without ESC or ENQ changed", in, whole)
		}
	})
}
