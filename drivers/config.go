package drivers

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Config is a node's `config:` mapping as written in exporter.yaml.
type Config struct {
	node *yaml.Node
	// keyLine is where the `config:` key stands, for keys that are missing.
	keyLine int
}

// NewConfig wraps a YAML node (nil for an absent config).
func NewConfig(n *yaml.Node) Config { return Config{node: n} }

// NewConfigAt wraps the value of a `config:` key standing at keyLine.
func NewConfigAt(n *yaml.Node, keyLine int) Config { return Config{node: n, keyLine: keyLine} }

// ConfigFromYAML parses text as a config mapping (for tests and tools).
func ConfigFromYAML(text string) (Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return Config{}, err
	}
	if len(doc.Content) == 0 {
		return Config{}, nil
	}
	return Config{node: doc.Content[0]}, nil
}

// FieldError is a problem with one config key. Line is filled in by Decode
// (or by the exporter) from where the key stands in the file.
type FieldError struct {
	Field string
	Line  int
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("config.%s: %s", e.Field, e.Msg) }

// FieldErr reports a problem with one config key from a driver's own
// validation.
func FieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Line returns the line of key in the config, or of the config itself
// when the key is absent, or 0.
func (c Config) Line(key string) int {
	if c.node == nil {
		return 0
	}
	if c.node.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(c.node.Content); i += 2 {
			if c.node.Content[i].Value == key {
				return c.node.Content[i].Line
			}
		}
	}
	return c.node.Line
}

// Decode fills the struct v points to from the config. Keys are matched by
// the fields' yaml tags; a tag option `required` (`yaml:"url,required"`) makes a
// key mandatory. Unknown keys, missing required keys and values of the wrong
// type are FieldErrors with the key's line. Durations take Go syntax ("2s").
func (c Config) Decode(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("drivers: Decode needs a pointer to a struct, got %T", v)
	}
	fields := map[string]reflect.Value{}
	var required, known []string
	collect(rv.Elem(), fields, &required, &known)

	seen := map[string]bool{}
	if c.node != nil && !(c.node.Kind == yaml.ScalarNode && c.node.Tag == "!!null") {
		if c.node.Kind != yaml.MappingNode {
			return &FieldError{Line: c.node.Line, Msg: "must be a mapping of keys to values"}
		}
		for i := 0; i+1 < len(c.node.Content); i += 2 {
			k, val := c.node.Content[i], c.node.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				sort.Strings(known)
				return &FieldError{Field: k.Value, Line: k.Line, Msg: fmt.Sprintf("unknown key (known: %s)", strings.Join(known, ", "))}
			}
			if seen[k.Value] {
				return &FieldError{Field: k.Value, Line: k.Line, Msg: "given twice"}
			}
			seen[k.Value] = true
			if err := val.Decode(f.Addr().Interface()); err != nil {
				var te *yaml.TypeError
				if !errors.As(err, &te) {
					// A field's own UnmarshalYAML said what is wrong.
					return &FieldError{Field: k.Value, Line: val.Line, Msg: err.Error()}
				}
				return &FieldError{Field: k.Value, Line: val.Line, Msg: typeMessage(f.Type(), val)}
			}
		}
	}
	for _, r := range required {
		if !seen[r] {
			line := c.keyLine
			if line == 0 && c.node != nil {
				line = c.node.Line
			}
			return &FieldError{Field: r, Line: line, Msg: "required key is missing"}
		}
	}
	return nil
}

func collect(v reflect.Value, fields map[string]reflect.Value, required, known *[]string) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") && sf.Type.Kind() == reflect.Struct {
			collect(v.Field(i), fields, required, known)
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		fields[name] = v.Field(i)
		*known = append(*known, name)
		if strings.Contains(opts, "required") {
			*required = append(*required, name)
		}
	}
}

func typeMessage(t reflect.Type, val *yaml.Node) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	want := t.Kind().String()
	switch {
	case t.String() == "time.Duration":
		want = `a duration like "2s"`
	case t.Kind() == reflect.Slice:
		want = "a list"
	case t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		want = "a mapping"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		want = "an integer"
	case t.Kind() == reflect.Bool:
		want = "true or false"
	case t.Kind() == reflect.String:
		want = "a string"
	}
	got := val.Value
	if val.Kind != yaml.ScalarNode {
		got = map[yaml.Kind]string{yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}[val.Kind]
	} else {
		got = fmt.Sprintf("%q", got)
	}
	return fmt.Sprintf("want %s, got %s", want, got)
}

// Has says whether key is in the config.
func (c Config) Has(key string) bool {
	if c.node == nil || c.node.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(c.node.Content); i += 2 {
		if c.node.Content[i].Value == key {
			return true
		}
	}
	return false
}
