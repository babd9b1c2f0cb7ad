package bmcsim

import (
	"context"
	"crypto/rand"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/drivers/bmc/ipmi"
)

func TestBadPacketsGetIPMIErrors(t *testing.T) {
	s := startSim(t)
	tr := dialSim(t, s, 0)
	ctx := context.Background()
	raw := func(data []byte) error {
		_, err := tr.RawCommand(ctx, blob.NetFn, blob.Command, data)
		return err
	}
	good := blob.EncodeRequest(blob.Stat, []byte("/flash/image\x00"))
	badCRC := append([]byte(nil), good...)
	badCRC[4] ^= 0xff
	oversized := blob.EncodeRequest(blob.Write, make([]byte, 2000))
	cases := []struct {
		name string
		data []byte
		cc   byte
	}{
		{"bad crc", badCRC, blob.CCUnspecifiedError},
		{"truncated", good[:5], blob.CCReqDataLen},
		{"no subcommand", good[:3], blob.CCReqDataLen},
		{"unknown subcommand", []byte{0xcf, 0xc2, 0x00, 0x7f}, blob.CCInvalidField},
		{"oversized", oversized, blob.CCReqDataTooLong},
		{"unknown session", blob.EncodeRequest(blob.Close, []byte{0x34, 0x12}), blob.CCUnspecifiedError},
		{"enumerate past end", blob.EncodeRequest(blob.Enumerate, []byte{99, 0, 0, 0}), blob.CCInvalidField},
		{"id not terminated", blob.EncodeRequest(blob.Stat, []byte("/flash/image")), blob.CCReqDataLen},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := raw(tc.data)
			cc, ok := blob.CompletionCode(err)
			if !ok || cc != tc.cc {
				t.Errorf("got %v (cc %#02x), want cc %#02x", err, cc, tc.cc)
			}
		})
	}
	// A client reading a blob response names what went wrong.
	c := &blob.Client{T: tr}
	if _, err := c.Stat(ctx, "/flash/missing"); err == nil || !strings.Contains(err.Error(), "stat /flash/missing") {
		t.Errorf("client error %v does not name the blob", err)
	}

	// Garbage datagrams of every size are dropped without harm.
	conn, err := net.Dial("udp", net.JoinHostPort(s.Host, strconv.Itoa(s.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, n := range []int{0, 1, 4, 5, 16, 17, 40, 200, 1500, 9000, 60000} {
		junk := make([]byte, n)
		_, _ = rand.Read(junk)
		if n >= 5 {
			copy(junk, []byte{0x06, 0x00, 0xff, 0x07, 0x06})
		}
		_, _ = conn.Write(junk)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Count(ctx); err != nil {
		t.Fatalf("simulator stopped answering after garbage: %v", err)
	}
}

func TestWrongCredentials(t *testing.T) {
	s := startSim(t)
	for _, tc := range []struct{ user, pass string }{{testUser, "wrong"}, {"nobody", testPass}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := ipmi.Dial(ctx, ipmi.Config{Host: s.Host, Port: s.Port, Username: tc.user, Password: tc.pass,
			Timeout: 150 * time.Millisecond, Retries: 1})
		cancel()
		if err == nil {
			t.Errorf("%s/%s: session opened", tc.user, tc.pass)
			continue
		}
		if !strings.Contains(err.Error(), "lanplus connect") {
			t.Errorf("error %v does not say what failed", err)
		}
	}
	if _, err := (&blob.Client{T: dialSim(t, s, 0)}).Count(context.Background()); err != nil {
		t.Fatal(err)
	}
}
