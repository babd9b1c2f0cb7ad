package ykush

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers"
)

func parse(yaml string) (settings, error) {
	c, err := drivers.ConfigFromYAML(yaml)
	if err != nil {
		return settings{}, err
	}
	return parseConfig(c)
}

func TestConfig(t *testing.T) {
	tests := []struct {
		yaml string
		want settings
	}{
		{"", settings{def: "off", delay: 2 * time.Second}},
		{"serial: YK12345\nport: \"1\"\n", settings{serial: "YK12345", port: 1, def: "off", delay: 2 * time.Second}},
		{"port: 3\ndefault: keep\ndelay: 500ms\n", settings{port: 3, def: "keep", delay: 500 * time.Millisecond}},
		{"port: ALL\ndefault: On\ndelay: 1.5\n", settings{def: "on", delay: 1500 * time.Millisecond}},
	}
	for _, tt := range tests {
		got, err := parse(tt.yaml)
		if err != nil || got != tt.want {
			t.Errorf("parse(%q) = %+v, %v; want %+v", tt.yaml, got, err, tt.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ yaml, field, msg string }{
		{"port: 5\n", "port", "1..4"},
		{"port: [1]\n", "port", "string"},
		{"default: maybe\n", "default", "on, off or keep"},
		{"delay: 0s\n", "delay", "more than 0"},
		{"delay: forever\n", "delay", "duration"},
		{"delay: .inf\n", "delay", "duration"},
		{"baud: 9600\n", "baud", "unknown key"},
	}
	for _, tt := range tests {
		_, err := parse(tt.yaml)
		var fe *drivers.FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field || !strings.Contains(fe.Msg, tt.msg) {
			t.Errorf("parse(%q): err = %v, want %s error %q", tt.yaml, err, tt.field, tt.msg)
		}
	}
}

func FuzzConfigYkush(f *testing.F) {
	for _, s := range []string{"", "serial: A\nport: \"2\"\n", "port: all\ndefault: keep\ndelay: 3\n", "port: 1e9\n", "{", "- 1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, yaml string) {
		s, err := parse(yaml)
		if err != nil {
			return
		}
		if s.port < 0 || s.port > maxPort || s.delay <= 0 || (s.def != "on" && s.def != "off" && s.def != "keep") {
			t.Fatalf("accepted %+v from %q", s, yaml)
		}
		// Validated settings against a fake hub must build or fail cleanly.
		hub := newFakeHub("FZ", 0xF0CD)
		s.serial = ""
		if d, err := newDriver(t.Context(), s, usbOf(&fakeBus{hubs: []*fakeHub{hub}}), nil); err == nil && d.port > 1 {
			t.Fatalf("YKUSHXS accepted port %d", d.port)
		}
	})
}
