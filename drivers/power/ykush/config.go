package ykush

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pogolab/pogo/drivers"
)

// config is the node's config: mapping. port is a string because
// Jumpstarter writes it as one ("1"); "all" (the default, as in
// Jumpstarter) switches every downstream port. delay takes "2s" or a
// number of seconds.
type config struct {
	Serial  string `yaml:"serial"`
	Port    string `yaml:"port"`
	Default string `yaml:"default"`
	Delay   string `yaml:"delay"`
}

type settings struct {
	serial string
	// port is 1..4, or 0 for all; the model bounds it further.
	port  int
	def   string
	delay time.Duration
}

// maxPort is the highest port any model answers (YKUSH3's 4).
const maxPort = 4

func parseConfig(c drivers.Config) (settings, error) {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return settings{}, err
	}
	return cfg.validate()
}

func (cfg *config) validate() (settings, error) {
	s := settings{serial: strings.TrimSpace(cfg.Serial), delay: 2 * time.Second}
	switch p := strings.ToLower(strings.TrimSpace(cfg.Port)); p {
	case "", "all":
	default:
		n, err := strconv.Atoi(p)
		if err != nil {
			return s, drivers.FieldErr("port", "must be a port number 1..%d or all, got %q", maxPort, cfg.Port)
		}
		if n < 1 || n > maxPort {
			return s, drivers.FieldErr("port", "must be 1..%d or all, got %d", maxPort, n)
		}
		s.port = n
	}
	switch s.def = strings.ToLower(cfg.Default); s.def {
	case "":
		s.def = "off"
	case "on", "off", "keep":
	default:
		return s, drivers.FieldErr("default", "must be on, off or keep, got %q", cfg.Default)
	}
	if cfg.Delay != "" {
		d, err := time.ParseDuration(cfg.Delay)
		if err != nil {
			f, ferr := strconv.ParseFloat(cfg.Delay, 64)
			if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) || f > 3600 {
				return s, drivers.FieldErr("delay", `want a duration like "2s" or seconds up to 3600, got %q`, cfg.Delay)
			}
			d = time.Duration(f * float64(time.Second))
		}
		if d <= 0 || d > time.Hour {
			return s, drivers.FieldErr("delay", "must be more than 0 and at most 1h, got %s", cfg.Delay)
		}
		s.delay = d
	}
	return s, nil
}
