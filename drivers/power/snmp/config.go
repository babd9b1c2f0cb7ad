package snmp

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/pogolab/pogo/drivers"
)

// config is the node's config: mapping. Keys that take several shapes
// (a number or a duration, an outlet number or T.I.O) are strings and
// parsed in validate. The Jumpstarter SNMPServer keys are accepted too:
// plug (outlet), auth_key/priv_key (passwords), oid (a base OID the outlet
// is appended to, 1 on, 0 off), quiescent_period (delay, seconds) and a
// timeout in seconds.
type config struct {
	Host      string `yaml:"host,required"`
	Port      *int   `yaml:"port"`
	Version   string `yaml:"version"`
	Community string `yaml:"community"`

	User         string `yaml:"user"`
	AuthProtocol string `yaml:"auth_protocol"`
	AuthPassword string `yaml:"auth_password"`
	AuthKey      string `yaml:"auth_key"`
	PrivProtocol string `yaml:"priv_protocol"`
	PrivPassword string `yaml:"priv_password"`
	PrivKey      string `yaml:"priv_key"`

	Outlet string `yaml:"outlet"`
	Plug   string `yaml:"plug"`
	Preset string `yaml:"preset"`
	OID    string `yaml:"oid"`

	SetOID    string `yaml:"set_oid"`
	On        *int   `yaml:"on"`
	Off       *int   `yaml:"off"`
	Cycle     *int   `yaml:"cycle"`
	StatusOID string `yaml:"status_oid"`
	StatusOn  []int  `yaml:"status_on"`
	StatusOff []int  `yaml:"status_off"`

	Timeout         string `yaml:"timeout"`
	Retries         *int   `yaml:"retries"`
	Default         string `yaml:"default"`
	Delay           string `yaml:"delay"`
	QuiescentPeriod string `yaml:"quiescent_period"`
}

// settings is a validated config with the preset's OIDs resolved for the
// outlet.
type settings struct {
	host      string
	port      uint16
	version   gosnmp.SnmpVersion
	community string

	user     string
	auth     gosnmp.SnmpV3AuthProtocol
	authPass string
	priv     gosnmp.SnmpV3PrivProtocol
	privPass string

	preset string
	outlet string
	table  preset

	timeout time.Duration
	retries int
	// def is the state Reset applies: "on", "off" or "keep".
	def   string
	delay time.Duration
}

const (
	defaultTimeout = 5 * time.Second
	defaultDelay   = 2 * time.Second
	defaultRetries = 2
	// jumpstarterOn/Off are the values Jumpstarter's driver writes to oid.
	jumpstarterOn  = 1
	jumpstarterOff = 0
)

// parseConfig decodes and validates a node's config.
func parseConfig(c drivers.Config) (settings, error) {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return settings{}, err
	}
	return cfg.validate()
}

func (cfg *config) validate() (settings, error) {
	s := settings{host: strings.TrimSpace(cfg.Host), port: 161, retries: defaultRetries}
	if s.host == "" {
		return s, drivers.FieldErr("host", "must not be empty")
	}
	if cfg.Port != nil {
		if *cfg.Port < 1 || *cfg.Port > 65535 {
			return s, drivers.FieldErr("port", "must be 1..65535, got %d", *cfg.Port)
		}
		s.port = uint16(*cfg.Port)
	}
	if err := cfg.credentials(&s); err != nil {
		return s, err
	}
	if err := cfg.target(&s); err != nil {
		return s, err
	}

	var err error
	if s.timeout, err = seconds("timeout", cfg.Timeout, defaultTimeout); err != nil {
		return s, err
	}
	delayKey, delay := "delay", cfg.Delay
	if cfg.QuiescentPeriod != "" {
		if delay != "" {
			return s, drivers.FieldErr("quiescent_period", "is Jumpstarter's name for delay; give only one")
		}
		delayKey, delay = "quiescent_period", cfg.QuiescentPeriod
	}
	if s.delay, err = seconds(delayKey, delay, defaultDelay); err != nil {
		return s, err
	}
	if cfg.Retries != nil {
		if *cfg.Retries < 0 || *cfg.Retries > 10 {
			return s, drivers.FieldErr("retries", "must be 0..10, got %d", *cfg.Retries)
		}
		s.retries = *cfg.Retries
	}
	switch s.def = strings.ToLower(cfg.Default); s.def {
	case "":
		s.def = "off"
	case "on", "off", "keep":
	default:
		return s, drivers.FieldErr("default", "must be on, off or keep, got %q", cfg.Default)
	}
	return s, nil
}

// credentials fills the version and its security settings. A config with a
// user and no version is v3, as Jumpstarter's driver only speaks v3.
func (cfg *config) credentials(s *settings) error {
	v := strings.TrimPrefix(strings.ToLower(cfg.Version), "v")
	if v == "" {
		v = "2c"
		if cfg.User != "" {
			v = "3"
		}
	}
	switch v {
	case "1":
		s.version = gosnmp.Version1
	case "2", "2c":
		s.version = gosnmp.Version2c
	case "3":
		s.version = gosnmp.Version3
	default:
		return drivers.FieldErr("version", "must be 1, 2c or 3, got %q", cfg.Version)
	}

	authPass, err := alias("auth_password", cfg.AuthPassword, "auth_key", cfg.AuthKey)
	if err != nil {
		return err
	}
	privPass, err := alias("priv_password", cfg.PrivPassword, "priv_key", cfg.PrivKey)
	if err != nil {
		return err
	}
	if s.version != gosnmp.Version3 {
		for _, k := range []struct{ key, val string }{
			{"user", cfg.User}, {"auth_protocol", cfg.AuthProtocol}, {"auth_password", authPass},
			{"priv_protocol", cfg.PrivProtocol}, {"priv_password", privPass},
		} {
			if k.val != "" {
				return drivers.FieldErr(k.key, "is for version 3 only (version is %s)", v)
			}
		}
		s.community = cfg.Community
		if s.community == "" {
			s.community = "private"
		}
		return nil
	}

	if cfg.Community != "" {
		return drivers.FieldErr("community", "is for versions 1 and 2c only; version 3 uses user")
	}
	if s.user = cfg.User; s.user == "" {
		return drivers.FieldErr("user", "is required for version 3")
	}
	if s.auth, err = authProtocol(cfg.AuthProtocol); err != nil {
		return err
	}
	if s.priv, err = privProtocol(cfg.PrivProtocol); err != nil {
		return err
	}
	// net-snmp and RFC 3414 refuse passphrases under 8 characters; saying
	// so here beats an opaque authentication failure at the first switch.
	if s.auth != gosnmp.NoAuth {
		if len(authPass) < 8 {
			return drivers.FieldErr("auth_password", "must be at least 8 characters for auth_protocol %s", cfg.AuthProtocol)
		}
		s.authPass = authPass
	} else if authPass != "" {
		return drivers.FieldErr("auth_password", "is set but auth_protocol is NoAuth; name the protocol (MD5, SHA, SHA256, …)")
	}
	if s.priv != gosnmp.NoPriv {
		if s.auth == gosnmp.NoAuth {
			return drivers.FieldErr("priv_protocol", "needs an auth_protocol: SNMPv3 has no privacy without authentication")
		}
		if len(privPass) < 8 {
			return drivers.FieldErr("priv_password", "must be at least 8 characters for priv_protocol %s", cfg.PrivProtocol)
		}
		s.privPass = privPass
	} else if privPass != "" {
		return drivers.FieldErr("priv_password", "is set but priv_protocol is NoPriv; name the protocol (DES, AES, …)")
	}
	return nil
}

func authProtocol(name string) (gosnmp.SnmpV3AuthProtocol, error) {
	switch strings.ToUpper(name) {
	case "", "NOAUTH", "NONE":
		return gosnmp.NoAuth, nil
	case "MD5":
		return gosnmp.MD5, nil
	case "SHA", "SHA1", "SHA-1":
		return gosnmp.SHA, nil
	case "SHA224":
		return gosnmp.SHA224, nil
	case "SHA256":
		return gosnmp.SHA256, nil
	case "SHA384":
		return gosnmp.SHA384, nil
	case "SHA512":
		return gosnmp.SHA512, nil
	}
	return 0, drivers.FieldErr("auth_protocol", "must be one of MD5, SHA, SHA224, SHA256, SHA384, SHA512, NoAuth; got %q", name)
}

func privProtocol(name string) (gosnmp.SnmpV3PrivProtocol, error) {
	switch strings.ToUpper(name) {
	case "", "NOPRIV", "NONE":
		return gosnmp.NoPriv, nil
	case "DES":
		return gosnmp.DES, nil
	case "AES", "AES128":
		return gosnmp.AES, nil
	case "AES192":
		return gosnmp.AES192, nil
	case "AES256":
		return gosnmp.AES256, nil
	case "AES192C":
		return gosnmp.AES192C, nil
	case "AES256C":
		return gosnmp.AES256C, nil
	}
	return 0, drivers.FieldErr("priv_protocol", "must be one of DES, AES, AES192, AES256, AES192C, AES256C, NoPriv; got %q", name)
}

// target resolves the preset and outlet into the OIDs the driver uses.
func (cfg *config) target(s *settings) error {
	outletKey := "outlet"
	outlet, err := alias("outlet", cfg.Outlet, "plug", cfg.Plug)
	if err != nil {
		return err
	}
	if cfg.Outlet == "" && cfg.Plug != "" {
		outletKey = "plug"
	}
	if outlet == "" {
		return drivers.FieldErr("outlet", "required key is missing")
	}

	s.preset = strings.ToLower(cfg.Preset)
	if cfg.OID != "" {
		if s.preset != "" && s.preset != "generic" {
			return drivers.FieldErr("oid", "is Jumpstarter's base OID; give either oid or a preset, not both")
		}
		if cfg.SetOID != "" {
			return drivers.FieldErr("oid", "is Jumpstarter's name for set_oid without {outlet}; give only one")
		}
		s.preset = "generic"
	}
	if s.preset == "" {
		s.preset = "apc"
		// Jumpstarter's default OID is Raritan's outlet control with 1 on
		// and 0 off, so a Jumpstarter config without oid means raritan.
		if cfg.Plug != "" {
			s.preset = "raritan"
		}
	}

	if s.preset == "generic" {
		if s.table, err = cfg.generic(); err != nil {
			return err
		}
	} else {
		p, ok := presets[s.preset]
		if !ok {
			return drivers.FieldErr("preset", "unknown preset %q (known: %s)", cfg.Preset, strings.Join(presetNames(), ", "))
		}
		for _, k := range []struct {
			key string
			set bool
		}{
			{"set_oid", cfg.SetOID != ""}, {"on", cfg.On != nil}, {"off", cfg.Off != nil},
			{"cycle", cfg.Cycle != nil}, {"status_oid", cfg.StatusOID != ""},
			{"status_on", cfg.StatusOn != nil}, {"status_off", cfg.StatusOff != nil},
		} {
			if k.set {
				return drivers.FieldErr(k.key, "is only for preset generic (preset is %s)", s.preset)
			}
		}
		s.table = p
	}

	if s.outlet, err = outletID(outlet, s.preset, s.table.tio); err != nil {
		return drivers.FieldErr(outletKey, "%v", err)
	}
	s.table = s.table.resolve(s.outlet)
	return nil
}

func (cfg *config) generic() (preset, error) {
	var p preset
	set := cfg.SetOID
	on, off := cfg.On, cfg.Off
	if cfg.OID != "" {
		set = strings.TrimSuffix(cfg.OID, ".") + ".{outlet}"
		if on == nil {
			on = ptr(jumpstarterOn)
		}
		if off == nil {
			off = ptr(jumpstarterOff)
		}
	}
	if set == "" {
		return p, drivers.FieldErr("set_oid", "is required for preset generic")
	}
	if err := checkTemplate("set_oid", set); err != nil {
		return p, err
	}
	for _, v := range []struct {
		key string
		val *int
	}{{"on", on}, {"off", off}, {"cycle", cfg.Cycle}} {
		if v.val == nil {
			if v.key == "cycle" {
				continue
			}
			return p, drivers.FieldErr(v.key, "is required for preset generic")
		}
		if *v.val < math.MinInt32 || *v.val > math.MaxInt32 {
			return p, drivers.FieldErr(v.key, "must fit an SNMP Integer32, got %d", *v.val)
		}
	}
	p.on, p.off = action{set, *on}, action{set, *off}
	if cfg.Cycle != nil {
		p.cycle = &action{set, *cfg.Cycle}
	}

	if cfg.StatusOID == "" {
		if cfg.StatusOn != nil || cfg.StatusOff != nil {
			return p, drivers.FieldErr("status_on", "needs status_oid")
		}
		return p, nil
	}
	if err := checkTemplate("status_oid", cfg.StatusOID); err != nil {
		return p, err
	}
	st := &status{oid: cfg.StatusOID, on: cfg.StatusOn, off: cfg.StatusOff}
	switch {
	case st.on == nil && st.off == nil:
		// The usual case: the control object reads back what was written.
		st.on, st.off = []int{*on}, []int{*off}
	case len(st.on) == 0:
		return p, drivers.FieldErr("status_on", "must list the values that read as on when status_off is given")
	case len(st.off) == 0:
		return p, drivers.FieldErr("status_off", "must list the values that read as off when status_on is given")
	}
	for _, v := range st.on {
		for _, w := range st.off {
			if v == w {
				return p, drivers.FieldErr("status_off", "value %d is also in status_on", v)
			}
		}
	}
	p.status = st
	return p, nil
}

// resolve substitutes the outlet into every OID of p.
func (p preset) resolve(outlet string) preset {
	sub := func(oid string) string { return strings.ReplaceAll(oid, "{outlet}", outlet) }
	p.on.oid, p.off.oid = sub(p.on.oid), sub(p.off.oid)
	if p.cycle != nil {
		c := *p.cycle
		c.oid = sub(c.oid)
		p.cycle = &c
	}
	if p.status != nil {
		st := *p.status
		st.oid = sub(st.oid)
		p.status = &st
	}
	return p
}

// outletID checks an outlet and returns its OID suffix. ServerTech
// addresses an outlet as tower.infeed.outlet ("1.1.3"); a plain number
// there means tower 1, infeed 1. Generic OIDs may take any dotted suffix.
func outletID(s, preset string, tio bool) (string, error) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ".")
	switch {
	case tio && len(parts) == 1:
		parts = []string{"1", "1", parts[0]}
	case tio && len(parts) != 3:
		return "", fmt.Errorf("must be tower.infeed.outlet like 1.1.3 for preset %s, got %q", preset, s)
	case !tio && preset != "generic" && len(parts) != 1:
		return "", fmt.Errorf("must be an outlet number for preset %s, got %q", preset, s)
	}
	for _, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil || n == 0 {
			return "", fmt.Errorf("must be an outlet number from 1 (dotted for tower.infeed.outlet), got %q", s)
		}
	}
	return strings.Join(parts, "."), nil
}

// checkTemplate checks an OID with the {outlet} placeholder.
func checkTemplate(key, oid string) error {
	if !strings.Contains(oid, "{outlet}") {
		return drivers.FieldErr(key, "must contain the {outlet} placeholder, got %q", oid)
	}
	if !validOID(strings.ReplaceAll(oid, "{outlet}", "1")) {
		return drivers.FieldErr(key, "must be a numeric OID like 1.3.6.1.4.1.318.1.1.4.4.2.1.3.{outlet}, got %q", oid)
	}
	return nil
}

func validOID(oid string) bool {
	parts := strings.Split(strings.TrimPrefix(oid, "."), ".")
	if len(parts) < 2 {
		return false
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 32); err != nil {
			return false
		}
	}
	return true
}

// seconds parses a duration in Go syntax ("5s") or, as Jumpstarter writes
// it, a number of seconds (5.0).
func seconds(key, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || math.IsNaN(f) || math.IsInf(f, 0) || f > 3600 {
			return 0, drivers.FieldErr(key, `want a duration like "5s" or seconds up to 3600, got %q`, s)
		}
		d = time.Duration(f * float64(time.Second))
	}
	if d <= 0 || d > time.Hour {
		return 0, drivers.FieldErr(key, "must be more than 0 and at most 1h, got %s", s)
	}
	return d, nil
}

// alias returns whichever of two names for one key was given.
func alias(key, val, other, otherVal string) (string, error) {
	if val != "" && otherVal != "" {
		return "", drivers.FieldErr(other, "is another name for %s; give only one", key)
	}
	if val != "" {
		return val, nil
	}
	return otherVal, nil
}

func presetNames() []string {
	names := []string{"generic"}
	for n := range presets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func ptr[T any](v T) *T { return &v }
