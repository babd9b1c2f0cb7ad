package tunnel

import (
	"strings"
	"testing"
)

// FuzzParseHello: a hello line comes from anyone who can reach the port.
func FuzzParseHello(f *testing.F) {
	f.Add(Hello{Bearer: "pogo.c.YWxpY2U.00", StreamToken: "eyJsIjoi.sig"}.String())
	f.Add("POGO-TUNNEL/1  x")
	f.Add("PRI * HTTP/2.0")
	f.Fuzz(func(t *testing.T, line string) {
		line = strings.TrimSuffix(line, "\n")
		h, err := ParseHello(line)
		if err != nil {
			return
		}
		if got := h.String(); got != line+"\n" {
			t.Fatalf("hello %q re-encodes as %q", line, got)
		}
	})
}

// FuzzParseReply: a reply line comes from whatever answers at the
// router's address.
func FuzzParseReply(f *testing.F) {
	f.Add("OK")
	f.Add("ERR unauthorized bad token")
	f.Add("ERR")
	f.Fuzz(func(t *testing.T, line string) {
		err := ParseReply(line)
		if (err == nil) != (line == "OK") {
			t.Fatalf("reply %q: err %v", line, err)
		}
	})
}
