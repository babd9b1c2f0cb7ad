package bmcsim

import (
	"encoding/binary"
	"slices"

	"context"
	"fmt"
	"github.com/pogolab/pogo/drivers/bmc/blob"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func needIpmitool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ipmitool")
	if err != nil {
		t.Skip("ipmitool not installed (apt-get install -y ipmitool); skipping real-ipmitool interop")
	}
	return p
}

// ipmitool runs the real binary against s and returns its stdout.
func (s *testSim) ipmitool(t *testing.T, user, pass string, extra ...string) (string, error) {
	t.Helper()
	bin := needIpmitool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-I", "lanplus", "-H", s.Host, "-p", strconv.Itoa(s.Port), "-U", user, "-P", pass, "-N", "1", "-R", "2"}
	if v := os.Getenv("BMCSIM_IPMITOOL_V"); v != "" {
		args = append(args, v)
	}
	args = append(args, extra...)
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %w: %s", strings.Join(extra, " "), err, out)
	}
	return string(out), nil
}

// rawBytes parses ipmitool raw output ("cf c2 00 ...") into bytes.
func rawBytes(t *testing.T, out string) []byte {
	t.Helper()
	var b []byte
	for _, f := range strings.Fields(out) {
		v, err := strconv.ParseUint(f, 16, 8)
		if err != nil {
			t.Fatalf("ipmitool output %q: %v", out, err)
		}
		b = append(b, byte(v))
	}
	return b
}

func TestIpmitoolRawGetCount(t *testing.T) {
	s := startSim(t, withConfigDir(exampleDir(t, "config-static-bmc.json")))
	for _, suite := range []string{"", "17", "3"} {
		t.Run("suite="+suite, func(t *testing.T) {
			args := []string{}
			if suite != "" {
				args = append(args, "-C", suite)
			}
			args = append(args, "raw", "0x2e", "0x80", "0xcf", "0xc2", "0x00", "0x00")
			out, err := s.ipmitool(t, testUser, testPass, args...)
			if err != nil {
				t.Fatal(err)
			}
			body, err := blob.DecodeResponse(rawBytes(t, out))
			if err != nil || len(body) != 4 || binary.LittleEndian.Uint32(body) != 3 {
				t.Fatalf("get count over ipmitool: % x (%v), want 3 blobs", body, err)
			}
		})
	}
}

// blobRaw sends one blob subcommand through real ipmitool and returns the
// decoded reply body.
func (s *testSim) blobRaw(t *testing.T, sub blob.Subcommand, body []byte) ([]byte, error) {
	t.Helper()
	args := []string{"raw", "0x2e", "0x80"}
	for _, b := range blob.EncodeRequest(sub, body) {
		args = append(args, fmt.Sprintf("0x%02x", b))
	}
	out, err := s.ipmitool(t, testUser, testPass, args...)
	if err != nil {
		return nil, err
	}
	return blob.DecodeResponse(rawBytes(t, out))
}

func TestIpmitoolListsAndStatsBlobs(t *testing.T) {
	s := startSim(t)
	body, err := s.blobRaw(t, blob.GetCount, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint32(body)
	var ids []string
	for i := uint32(0); i < n; i++ {
		body, err := s.blobRaw(t, blob.Enumerate, binary.LittleEndian.AppendUint32(nil, i))
		if err != nil {
			t.Fatal(err)
		}
		id, ok := blob.CString(body)
		if !ok {
			t.Fatalf("enumerate %d: % x", i, body)
		}
		ids = append(ids, id)
	}
	if want := s.Blobs().IDs(); !slices.Equal(ids, want) {
		t.Fatalf("ipmitool listed %v, simulator has %v", ids, want)
	}
	for _, id := range []string{"/flash/image", "/flash/bios", blob.HashBlob} {
		body, err := s.blobRaw(t, blob.Stat, append([]byte(id), 0))
		if err != nil {
			t.Fatal(err)
		}
		m, err := blob.DecodeMeta(body)
		if err != nil || m.State&blob.TransportIPMI == 0 {
			t.Errorf("stat %s: %+v %v", id, m, err)
		}
	}
	// An unknown blob is an IPMI error that ipmitool reports, not a hang.
	_, err = s.blobRaw(t, blob.Stat, []byte("/flash/nope\x00"))
	if err == nil || !strings.Contains(err.Error(), "rsp=0xff") {
		t.Errorf("stat of a missing blob: %v", err)
	}
}

func TestIpmitoolErrorCodes(t *testing.T) {
	s := startSim(t)
	cases := []struct {
		name string
		data []string
		rsp  string
	}{
		{"bad crc", []string{"0xcf", "0xc2", "0x00", "0x08", "0x00", "0x00", "0x2f", "0x00"}, "rsp=0xff"},
		{"truncated oen", []string{"0xcf", "0xc2"}, "rsp=0xc7"},
		{"short body", []string{"0xcf", "0xc2", "0x00", "0x06", "0x01"}, "rsp=0xc7"},
		{"unknown subcommand", []string{"0xcf", "0xc2", "0x00", "0x42"}, "rsp=0xcc"},
		{"wrong oen", []string{"0x57", "0x01", "0x00", "0x00"}, "rsp=0xc1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.ipmitool(t, testUser, testPass, append([]string{"raw", "0x2e", "0x80"}, tc.data...)...)
			if err == nil || !strings.Contains(err.Error(), tc.rsp) {
				t.Errorf("got %v, want %s", err, tc.rsp)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		_, err := s.ipmitool(t, testUser, "wrong", "raw", "0x2e", "0x80", "0xcf", "0xc2", "0x00", "0x00")
		if err == nil || !strings.Contains(err.Error(), "Unable to establish IPMI v2 / RMCP+ session") {
			t.Errorf("wrong password: %v", err)
		}
	})
	t.Run("wrong user", func(t *testing.T) {
		_, err := s.ipmitool(t, "nobody", testPass, "raw", "0x2e", "0x80", "0xcf", "0xc2", "0x00", "0x00")
		if err == nil || !strings.Contains(err.Error(), "Unable to establish IPMI v2 / RMCP+ session") {
			t.Errorf("wrong user: %v", err)
		}
	})
	t.Run("mc info", func(t *testing.T) {
		out, err := s.ipmitool(t, testUser, testPass, "mc", "info")
		if err != nil || !strings.Contains(out, "IPMI Version") {
			t.Errorf("mc info: %v\n%s", err, out)
		}
	})
}
