// Package lease is the controller's lease logic without storage: label
// selectors and the fair queue that decides which waiting request gets
// which free exporter.
package lease

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Op is a selector requirement's operator.
type Op int

const (
	Equals Op = iota
	NotEquals
	In
	NotIn
	Exists
	NotExists
)

// Requirement is one comma-separated term of a selector.
type Requirement struct {
	Key    string
	Op     Op
	Values []string
}

// Selector is a parsed Kubernetes-style label selector; all requirements
// must hold. The empty selector matches everything.
type Selector []Requirement

// SyntaxError says where a selector is malformed.
type SyntaxError struct {
	Selector string
	Pos      int
	Msg      string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("selector %q: at column %d: %s", e.Selector, e.Pos+1, e.Msg)
}

// Parse parses `a=b,c!=d,e in (x,y),f notin (z),g,!h` (also `a==b`).
func Parse(s string) (Selector, error) {
	p := &selParser{s: s}
	var sel Selector
	p.space()
	if p.eof() {
		return nil, nil
	}
	for {
		r, err := p.requirement()
		if err != nil {
			return nil, err
		}
		sel = append(sel, r)
		p.space()
		if p.eof() {
			return sel, nil
		}
		if !p.take(",") {
			return nil, p.errf("want , between requirements, got %q", p.rest(8))
		}
		p.space()
		if p.eof() {
			return nil, p.errf("trailing comma")
		}
	}
}

// MustParse is Parse for selectors written in code.
func MustParse(s string) Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

type selParser struct {
	s   string
	pos int
}

func (p *selParser) eof() bool { return p.pos >= len(p.s) }

func (p *selParser) errf(format string, args ...any) error {
	return &SyntaxError{Selector: p.s, Pos: p.pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *selParser) rest(n int) string {
	r := p.s[p.pos:]
	if len(r) > n {
		r = r[:n] + "…"
	}
	return r
}

func (p *selParser) space() {
	for !p.eof() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func (p *selParser) take(tok string) bool {
	if strings.HasPrefix(p.s[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '/'
}

// word reads a label key or value.
func (p *selParser) word() string {
	start := p.pos
	for !p.eof() && nameByte(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

// keyword reports whether the next word is w followed by a non-name byte.
func (p *selParser) keyword(w string) bool {
	if !strings.HasPrefix(p.s[p.pos:], w) {
		return false
	}
	end := p.pos + len(w)
	if end < len(p.s) && nameByte(p.s[end]) {
		return false
	}
	p.pos = end
	return true
}

func (p *selParser) requirement() (Requirement, error) {
	if p.take("!") {
		p.space()
		k := p.word()
		if k == "" {
			return Requirement{}, p.errf("want a label key after !")
		}
		return Requirement{Key: k, Op: NotExists}, nil
	}
	k := p.word()
	if k == "" {
		return Requirement{}, p.errf("want a label key, got %q", p.rest(8))
	}
	p.space()
	switch {
	case p.eof() || p.s[p.pos] == ',':
		return Requirement{Key: k, Op: Exists}, nil
	case p.take("!="):
		return p.value(k, NotEquals)
	case p.take("=="), p.take("="):
		return p.value(k, Equals)
	case p.keyword("notin"):
		return p.set(k, NotIn)
	case p.keyword("in"):
		return p.set(k, In)
	}
	return Requirement{}, p.errf("want =, !=, in or notin after %q, got %q", k, p.rest(8))
}

func (p *selParser) value(k string, op Op) (Requirement, error) {
	p.space()
	v := p.word()
	if !p.eof() && p.s[p.pos] != ',' && p.s[p.pos] != ' ' && p.s[p.pos] != '\t' {
		return Requirement{}, p.errf("bad character %q in the value of %q", p.s[p.pos], k)
	}
	return Requirement{Key: k, Op: op, Values: []string{v}}, nil
}

func (p *selParser) set(k string, op Op) (Requirement, error) {
	p.space()
	if !p.take("(") {
		return Requirement{}, p.errf("want ( after in/notin for %q", k)
	}
	var vals []string
	for {
		p.space()
		v := p.word()
		if v == "" {
			return Requirement{}, p.errf("want a value in the set of %q", k)
		}
		vals = append(vals, v)
		p.space()
		if p.take(")") {
			break
		}
		if !p.take(",") {
			if p.eof() {
				return Requirement{}, p.errf("unclosed ( in the set of %q", k)
			}
			return Requirement{}, p.errf("want , or ) in the set of %q, got %q", k, p.rest(8))
		}
	}
	return Requirement{Key: k, Op: op, Values: vals}, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s {
		v, ok := labels[r.Key]
		switch r.Op {
		case Equals:
			if !ok || v != r.Values[0] {
				return false
			}
		case NotEquals:
			if ok && v == r.Values[0] {
				return false
			}
		case In:
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case NotIn:
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case Exists:
			if !ok {
				return false
			}
		case NotExists:
			if ok {
				return false
			}
		}
	}
	return true
}

// String renders s canonically (sorted set values), so that parsing the
// result gives an equal selector.
func (s Selector) String() string {
	parts := make([]string, 0, len(s))
	for _, r := range s {
		switch r.Op {
		case Equals:
			parts = append(parts, r.Key+"="+r.Values[0])
		case NotEquals:
			parts = append(parts, r.Key+"!="+r.Values[0])
		case In, NotIn:
			vs := slices.Clone(r.Values)
			sort.Strings(vs)
			op := " in "
			if r.Op == NotIn {
				op = " notin "
			}
			parts = append(parts, r.Key+op+"("+strings.Join(vs, ",")+")")
		case Exists:
			parts = append(parts, r.Key)
		case NotExists:
			parts = append(parts, "!"+r.Key)
		}
	}
	return strings.Join(parts, ",")
}
