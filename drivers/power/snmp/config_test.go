package snmp

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/pogolab/pogo/drivers"
)

func parse(yaml string) (settings, error) {
	c, err := drivers.ConfigFromYAML(yaml)
	if err != nil {
		return settings{}, err
	}
	return parseConfig(c)
}

func TestConfigDefaults(t *testing.T) {
	s, err := parse("host: pdu.lab\noutlet: 3\n")
	if err != nil {
		t.Fatal(err)
	}
	if s.port != 161 || s.version != gosnmp.Version2c || s.community != "private" || s.preset != "apc" ||
		s.timeout != 5*time.Second || s.retries != 2 || s.def != "off" || s.delay != 2*time.Second {
		t.Fatalf("defaults = %+v", s)
	}
	if s.table.on.oid != "1.3.6.1.4.1.318.1.1.4.4.2.1.3.3" || s.table.cycle.value != 3 {
		t.Fatalf("apc table = %+v", s.table)
	}
}

func TestConfigShapes(t *testing.T) {
	tests := []struct {
		name, yaml string
		check      func(settings) bool
	}{
		{"servertech plain outlet is tower 1 infeed 1", "host: h\npreset: servertech\noutlet: 4\n",
			func(s settings) bool { return s.table.on.oid == "1.3.6.1.4.1.1718.3.2.3.1.11.1.1.4" }},
		{"servertech T.I.O", "host: h\npreset: ServerTech\noutlet: 2.1.7\n",
			func(s settings) bool { return s.table.status.oid == "1.3.6.1.4.1.1718.3.2.3.1.10.2.1.7" }},
		{"eaton on and off differ", "host: h\npreset: eaton\noutlet: 5\n",
			func(s settings) bool {
				return s.table.on.oid != s.table.off.oid && s.table.cycle == nil && s.table.status.oid == "1.3.6.1.4.1.534.6.6.7.6.6.1.2.0.5"
			}},
		{"user alone means v3", "host: h\nuser: u\noutlet: 1\n",
			func(s settings) bool {
				return s.version == gosnmp.Version3 && s.auth == gosnmp.NoAuth && s.priv == gosnmp.NoPriv
			}},
		{"jumpstarter keys", "host: h\nuser: u\nplug: 32\nauth_protocol: SHA\nauth_key: abcdefgh\npriv_protocol: AES\npriv_key: 12345678\ntimeout: 2.5\nquiescent_period: 3\n",
			func(s settings) bool {
				return s.preset == "raritan" && s.outlet == "32" && s.authPass == "abcdefgh" && s.privPass == "12345678" &&
					s.timeout == 2500*time.Millisecond && s.delay == 3*time.Second
			}},
		{"jumpstarter oid is generic 1/0", "host: h\nuser: u\nplug: 2\noid: 1.3.6.1.4.1.99.1\n",
			func(s settings) bool {
				return s.preset == "generic" && s.table.on == action{"1.3.6.1.4.1.99.1.2", 1} && s.table.off.value == 0 && s.table.status == nil
			}},
		{"generic status defaults to the set values", "host: h\npreset: generic\noutlet: 1\nset_oid: 1.3.6.1.{outlet}\non: 5\noff: 6\nstatus_oid: 1.3.6.2.{outlet}\n",
			func(s settings) bool { return s.table.status.on[0] == 5 && s.table.status.off[0] == 6 }},
		{"v1", "host: h\nversion: 1\ncommunity: c\noutlet: 1\n",
			func(s settings) bool { return s.version == gosnmp.Version1 && s.community == "c" }},
		{"v3 sha512 aes256c", "host: h\nversion: v3\nuser: u\nauth_protocol: sha512\nauth_password: 12345678\npriv_protocol: AES256C\npriv_password: 12345678\noutlet: 1\n",
			func(s settings) bool { return s.auth == gosnmp.SHA512 && s.priv == gosnmp.AES256C }},
		{"keep", "host: h\noutlet: 1\ndefault: keep\n", func(s settings) bool { return s.def == "keep" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parse(tt.yaml)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(s) {
				t.Fatalf("settings = %+v", s)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		yaml, field, msg string
	}{
		{"outlet: 1\n", "host", "required"},
		{"host: h\n", "outlet", "required"},
		{"host: h\noutlet: 1\nport: 0\n", "port", "1..65535"},
		{"host: h\noutlet: 1\nport: x\n", "port", "want"},
		{"host: h\noutlet: 1\nversion: 4\n", "version", "1, 2c or 3"},
		{"host: h\noutlet: 1\nbogus: 1\n", "bogus", "unknown key"},
		{"host: h\noutlet: 0\n", "outlet", "from 1"},
		{"host: h\noutlet: 1.2\n", "outlet", "outlet number for preset apc"},
		{"host: h\nplug: x\n", "plug", "outlet number"},
		{"host: h\noutlet: 1\nplug: 1\n", "plug", "another name for outlet"},
		{"host: h\npreset: servertech\noutlet: 1.2\n", "outlet", "tower.infeed.outlet"},
		{"host: h\npreset: nope\noutlet: 1\n", "preset", "unknown preset"},
		{"host: h\noutlet: 1\nset_oid: 1.2.{outlet}\n", "set_oid", "only for preset generic"},
		{"host: h\noutlet: 1\npreset: generic\non: 1\noff: 2\n", "set_oid", "required"},
		{"host: h\noutlet: 1\npreset: generic\nset_oid: 1.3.6\non: 1\noff: 2\n", "set_oid", "{outlet}"},
		{"host: h\noutlet: 1\npreset: generic\nset_oid: 1.x.{outlet}\non: 1\noff: 2\n", "set_oid", "numeric OID"},
		{"host: h\noutlet: 1\npreset: generic\nset_oid: 1.3.{outlet}\non: 1\n", "off", "required"},
		{"host: h\noutlet: 1\npreset: generic\nset_oid: 1.3.{outlet}\non: 1\noff: 99999999999\n", "off", "Integer32"},
		{"host: h\noutlet: 1\npreset: generic\nset_oid: 1.3.{outlet}\non: 1\noff: 2\nstatus_on: [1]\n", "status_on", "status_oid"},
		{"host: h\noutlet: 1\npreset: generic\nset_oid: 1.3.{outlet}\non: 1\noff: 2\nstatus_oid: 1.4.{outlet}\nstatus_on: [1]\n", "status_off", "must list"},
		{"host: h\noutlet: 1\npreset: generic\nset_oid: 1.3.{outlet}\non: 1\noff: 2\nstatus_oid: 1.4.{outlet}\nstatus_on: [1]\nstatus_off: [1]\n", "status_off", "also in status_on"},
		{"host: h\noutlet: 1\npreset: apc\noid: 1.3.6\n", "oid", "either oid or a preset"},
		{"host: h\noutlet: 1\ntimeout: soon\n", "timeout", "duration"},
		{"host: h\noutlet: 1\ntimeout: -1s\n", "timeout", "more than 0"},
		{"host: h\noutlet: 1\ntimeout: NaN\n", "timeout", "duration"},
		{"host: h\noutlet: 1\ndelay: 2s\nquiescent_period: 2\n", "quiescent_period", "give only one"},
		{"host: h\noutlet: 1\nretries: 11\n", "retries", "0..10"},
		{"host: h\noutlet: 1\ndefault: maybe\n", "default", "on, off or keep"},
		{"host: h\noutlet: 1\nuser: u\nversion: 2c\n", "user", "version 3 only"},
		{"host: h\noutlet: 1\nuser: u\ncommunity: c\n", "community", "versions 1 and 2c"},
		{"host: h\noutlet: 1\nversion: 3\n", "user", "required for version 3"},
		{"host: h\noutlet: 1\nuser: u\nauth_protocol: SHA1024\n", "auth_protocol", "must be one of"},
		{"host: h\noutlet: 1\nuser: u\npriv_protocol: ROT13\n", "priv_protocol", "must be one of"},
		{"host: h\noutlet: 1\nuser: u\nauth_protocol: SHA\nauth_password: short\n", "auth_password", "at least 8"},
		{"host: h\noutlet: 1\nuser: u\nauth_password: longenough\n", "auth_password", "NoAuth"},
		{"host: h\noutlet: 1\nuser: u\npriv_protocol: AES\npriv_password: longenough\n", "priv_protocol", "needs an auth_protocol"},
		{"host: h\noutlet: 1\nuser: u\nauth_protocol: MD5\nauth_password: longenough\npriv_protocol: DES\n", "priv_password", "at least 8"},
		{"host: h\noutlet: 1\nuser: u\nauth_password: a\nauth_key: b\n", "auth_key", "another name"},
		{"- a\n- b\n", "", "mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.field+"/"+tt.msg, func(t *testing.T) {
			_, err := parse(tt.yaml)
			var fe *drivers.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a FieldError", err)
			}
			if fe.Field != tt.field || !strings.Contains(fe.Msg, tt.msg) {
				t.Fatalf("err = %v, want field %q mentioning %q", err, tt.field, tt.msg)
			}
		})
	}
}

func FuzzConfigSNMP(f *testing.F) {
	for _, s := range []string{
		"host: h\noutlet: 1\n",
		"host: h\npreset: servertech\noutlet: 1.1.3\n",
		"host: h\nuser: u\nplug: 3\noid: 1.3.6.1.4.1.13742.6.4.1.2.1.2.1\ntimeout: 5.0\n",
		"host: h\npreset: generic\noutlet: 1\nset_oid: 1.3.{outlet}\non: 1\noff: 2\nstatus_oid: 1.4.{outlet}\nstatus_on: [1]\nstatus_off: [0]\n",
		"host: h\nversion: 3\nuser: u\nauth_protocol: SHA\nauth_password: 12345678\npriv_protocol: AES\npriv_password: 12345678\noutlet: 2\n",
		"host: h\noutlet: 1\ntimeout: 1e308\n",
		"",
		"[",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, yaml string) {
		s, err := parse(yaml)
		if err != nil {
			return
		}
		// Whatever validates must be usable as is.
		if s.host == "" || s.port == 0 || s.timeout <= 0 || s.delay <= 0 || s.outlet == "" {
			t.Fatalf("accepted incomplete settings %+v from %q", s, yaml)
		}
		for _, oid := range []string{s.table.on.oid, s.table.off.oid} {
			if !validOID(oid) {
				t.Fatalf("accepted bad OID %q from %q", oid, yaml)
			}
		}
	})
}
