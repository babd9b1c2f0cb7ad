package drivers_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pogolab/pogo/drivers"
)

type level int

func (l *level) UnmarshalYAML(n *yaml.Node) error {
	switch n.Value {
	case "low":
		*l = 1
	case "high":
		*l = 2
	default:
		return errors.New(`must be low or high`)
	}
	return nil
}

type cfg struct {
	Host    string        `yaml:"host,required"`
	Port    *int          `yaml:"port"`
	Delay   time.Duration `yaml:"delay"`
	Level   level         `yaml:"level"`
	Labels  []string      `yaml:"labels"`
	Enabled bool          `yaml:"enabled"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"host: a\nport: 7\ndelay: 2s\nlevel: high\nlabels: [x]\nenabled: true\n", ""},
		{"port: 7\n", "config.host: required key is missing"},
		{"host: a\nprot: 7\n", "config.prot: unknown key (known: delay, enabled, host, labels, level, port)"},
		{"host: a\nport: x\n", `config.port: want an integer, got "x"`},
		{"host: a\ndelay: 5\n", `config.delay: want a duration like "2s", got "5"`},
		{"host: a\nlevel: medium\n", "config.level: must be low or high"},
		{"host: a\nlabels: x\n", `config.labels: want a list, got "x"`},
		{"host: a\nenabled: maybe\n", `config.enabled: want true or false, got "maybe"`},
		{"host: a\nhost: b\n", "config.host: given twice"},
		{"[1, 2]", "must be a mapping"},
	} {
		c, err := drivers.ConfigFromYAML(tc.yaml)
		if err != nil {
			t.Fatal(err)
		}
		var v cfg
		err = c.Decode(&v)
		if tc.want == "" {
			if err != nil || v.Host != "a" || *v.Port != 7 || v.Delay != 2*time.Second || v.Level != 2 || !v.Enabled {
				t.Errorf("%q: %+v %v", tc.yaml, v, err)
			}
			continue
		}
		var fe *drivers.FieldError
		if !errors.As(err, &fe) || fe.Line == 0 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v (line %v), want %q", tc.yaml, err, fe, tc.want)
		}
	}
}
