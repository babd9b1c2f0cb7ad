package qemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/console/expect"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/storage"
	"github.com/pogolab/pogo/exporter/exportertest"
)

func boardYAML(disk string, extra ...string) string {
	return fmt.Sprintf(`apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata: {name: qemu-test}
export:
  board:
    type: qemu
    config:
      disk: %s
      disk_size: 64M
      memory: 256M
%s`, disk, strings.Join(extra, "\n"))
}

// qemuPIDs lists the QEMU processes whose command line names disk.
func qemuPIDs(t testing.TB, disk string) []string {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.HasPrefix(b, []byte("qemu-system")) || bytes.Contains(b, []byte("/qemu-system")) {
			if bytes.Contains(b, []byte("file="+disk+"\x00")) {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// TestPowerAndConsoleOverTheWire powers the board on through the exporter,
// catches U-Boot from its first line, cuts the power and checks nothing of
// QEMU is left.
func TestPowerAndConsoleOverTheWire(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	// Registered first, so it runs after the exporter has stopped.
	t.Cleanup(func() {
		if pids := qemuPIDs(t, disk); len(pids) > 0 {
			t.Errorf("qemu processes left behind: %v", pids)
		}
	})
	c := exportertest.Start(t, boardYAML(disk))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, con := c.Power("board"), c.Console("board")

	if st, err := p.State(ctx); err != nil || st != power.Off {
		t.Fatalf("state before power on = %v, %v; want off", st, err)
	}
	a, err := con.Attach(ctx, console.AttachOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	e := expect.New(a)
	if err := p.On(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := p.State(ctx); err != nil || st != power.On {
		t.Fatalf("state after power on = %v, %v; want on", st, err)
	}
	if got := qemuPIDs(t, disk); len(got) != 1 {
		t.Fatalf("want one qemu process for the disk, got %v", got)
	}
	// The first line U-Boot prints, before anything else, proves output
	// was caught from the first instruction.
	before, err := e.Expect(ctx, 30*time.Second, "U-Boot 2023.01")
	if err != nil {
		t.Fatalf("no U-Boot banner: %v\n%s", err, e.Transcript())
	}
	if strings.Trim(before, "\r\n") != "" {
		t.Fatalf("output before U-Boot's banner: %q", before)
	}
	if _, err := e.Expect(ctx, 30*time.Second, "Hit any key to stop autoboot"); err != nil {
		t.Fatalf("no autoboot prompt: %v\n%s", err, e.Transcript())
	}
	if err := e.Send(" "); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Expect(ctx, 10*time.Second, "=> "); err != nil {
		t.Fatalf("no U-Boot prompt: %v\n%s", err, e.Transcript())
	}
	if err := e.SendLine("echo pogo-$((1+1))x; setexpr v 6 * 7; echo v=${v}"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Expect(ctx, 10*time.Second, "v=2a"); err != nil {
		t.Fatalf("U-Boot did not run the command: %v\n%s", err, e.Transcript())
	}

	// Storage is refused while the board runs.
	d := storage.NewClient(c.Conn(), "board")
	if _, err := d.Write(ctx, strings.NewReader("x"), storage.WriteOptions{}); !errors.Is(err, errdefs.ErrPrecondition) {
		t.Fatalf("write while on: err = %v, want ErrPrecondition", err)
	}
	if in, err := d.Info(ctx); err != nil || !in.Busy {
		t.Fatalf("info while on = %+v, %v; want busy", in, err)
	}

	if err := p.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := p.State(ctx); err != nil || st != power.Off {
		t.Fatalf("state after power off = %v, %v; want off", st, err)
	}
	if pids := qemuPIDs(t, disk); len(pids) > 0 {
		t.Fatalf("qemu still running after power off: %v", pids)
	}

	// The console outlives the power cycle: the same attachment sees the
	// second boot.
	if err := p.Cycle(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Expect(ctx, 30*time.Second, "U-Boot 2023.01"); err != nil {
		t.Fatalf("no banner after power on again: %v\n%s", err, e.Transcript())
	}
	sb, err := con.Scrollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(sb, []byte("U-Boot 2023.01")); n < 2 {
		t.Fatalf("scrollback holds %d U-Boot banners, want both boots", n)
	}
	if err := p.Off(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestStorageOverTheWire writes an image into the board's disk and reads
// it back through the exporter.
func TestStorageOverTheWire(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	c := exportertest.Start(t, boardYAML(disk))
	ctx := context.Background()
	d := storage.NewClient(c.Conn(), "board")

	in, err := d.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if in.Size != 64<<20 || in.Path != disk || in.Busy || in.Allocated != 0 {
		t.Fatalf("info of a fresh disk = %+v", in)
	}
	// Old contents beyond the image stay unless truncate is asked for.
	if _, err := d.Write(ctx, bytes.NewReader(bytes.Repeat([]byte{0xee}, 4<<20)), storage.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 3<<20+123)
	rand.Read(img)
	copy(img[1<<20:], make([]byte, 1<<20)) // a zero run, left as a hole
	n, err := d.Write(ctx, bytes.NewReader(img), storage.WriteOptions{Size: int64(len(img))})
	if err != nil || n != int64(len(img)) {
		t.Fatalf("write = %d, %v", n, err)
	}
	var got bytes.Buffer
	if _, err := d.Read(ctx, &got, 0, 4<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes()[:len(img)], img) || got.Bytes()[len(img)] != 0xee {
		t.Fatal("disk does not hold the image followed by the old contents")
	}

	if _, err := d.Write(ctx, bytes.NewReader(img), storage.WriteOptions{Truncate: true}); err != nil {
		t.Fatal(err)
	}
	got.Reset()
	if _, err := d.Read(ctx, &got, 0, 0); err != nil {
		t.Fatal(err)
	}
	if got.Len() != 64<<20 || !bytes.Equal(got.Bytes()[:len(img)], img) || bytes.IndexFunc(got.Bytes()[len(img):], func(r rune) bool { return r != 0 }) >= 0 {
		t.Fatal("truncating write did not leave the image followed by zeros on a disk of unchanged size")
	}
	if in, _ := d.Info(ctx); in.Size != 64<<20 || in.Allocated >= int64(len(img)) {
		t.Fatalf("after a truncating write: %+v; want size 64 MiB and the zero run left sparse", in)
	}

	// Bad requests name what is wrong.
	_, err = d.Write(ctx, bytes.NewReader(img[:10]), storage.WriteOptions{Size: 20})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "10 of the announced 20") {
		t.Fatalf("short stream: %v", err)
	}
	_, err = d.Write(ctx, bytes.NewReader(make([]byte, 65<<20)), storage.WriteOptions{})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "larger than the disk") {
		t.Fatalf("oversized image: %v", err)
	}
	if _, err := d.Read(ctx, &got, 64<<20, 1); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("read past the end: %v", err)
	}
}

// TestBadConfig checks that bad input fails before any power-on, naming
// the key and what to do.
func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		yaml, field, want string
	}{
		{"qemu: /nonexistent/qemu-system-aarch64", "qemu", "qemu-system-arm"},
		{"bios: /nonexistent/u-boot.bin", "bios", "u-boot-qemu"},
		{"arch: riscv", "arch", "aarch64 or x86_64"},
		{"kvm: maybe", "kvm", "auto, on or off"},
		{"disk: " + file + "/disk.img", "disk", "not a directory"},
		{"disk_size: 12Q", "disk_size", "not a size"},
		{"memory: 10M", "memory", "at least 64M"},
		{"cpus: -1", "cpus", "between 1 and 64"},
		{"hostfwd: [tcp::22]", "hostfwd", "hostport-"},
	} {
		cfg, err := drivers.ConfigFromYAML(tc.yaml)
		if err != nil {
			t.Fatal(err)
		}
		var c Config
		if err := cfg.Decode(&c); err != nil {
			t.Fatal(err)
		}
		if c.Disk == "" {
			c.Disk = filepath.Join(dir, "ok.img")
		}
		_, err = New(c, dir, "board", nil)
		var fe *drivers.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v; want a FieldError on %s mentioning %q", tc.yaml, err, tc.field, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"64M": 64 << 20, "1G": 1 << 30, "512KiB": 512 << 10, "2GB": 2 << 30, "4096": 4096, "1t": 1 << 40, "100B": 100} {
		if got, err := parseSize(in, 1); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if got, _ := parseSize("1024", 1<<20); got != 1<<30 {
		t.Errorf("plain memory number = %d, want MiB", got)
	}
	for _, in := range []string{"", "M", "-1M", "1.5G", "0", "1X", "99999999999T"} {
		if _, err := parseSize(in, 1); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"64M", "1GiB", "12", "", "9223372036854775807", "1KB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s, 1<<20)
		if err == nil && (n <= 0 || n > 1<<50) {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
	})
}

func FuzzDecodeReply(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}`,
		`{"return": {}, "id": 1}`,
		`{"return": {"status": "running", "running": true}, "id": 2}`,
		`{"error": {"class": "GenericError", "desc": "nope"}, "id": 3}`,
		`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}`,
		`[]`, `{"id": "x"}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReply(b)
		if err == nil && r.Return == nil && r.Error == nil && r.Event == "" && r.QMP == nil {
			t.Fatalf("accepted %q as a message of no kind", b)
		}
	})
}
