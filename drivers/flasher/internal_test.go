package flasher

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/bundles/manifest"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/state/uboot"
)

// covers checks that pieces write exactly [off, off+n) in order.
func covers(t testing.TB, off, n int64, ps []ddPiece) {
	t.Helper()
	pos := off
	for _, p := range ps {
		if p.bs <= 0 || p.count <= 0 || p.bs > 1<<20 {
			t.Fatalf("ddPieces(%d, %d): bad piece %+v", off, n, p)
		}
		if p.seek*p.bs != pos {
			t.Fatalf("ddPieces(%d, %d): piece %+v starts at %d, want %d", off, n, p, p.seek*p.bs, pos)
		}
		pos += p.bs * p.count
	}
	if pos != off+n {
		t.Fatalf("ddPieces(%d, %d) = %+v ends at %d", off, n, ps, pos)
	}
	if len(ps) > 3 {
		t.Fatalf("ddPieces(%d, %d) = %d pieces, want at most 3", off, n, len(ps))
	}
}

func TestDDPieces(t *testing.T) {
	for _, c := range []struct{ off, n int64 }{
		{0, 4096}, {0, 1 << 20}, {0, 64 << 20}, {4096, 8192}, {4096, 3 << 20}, {(1 << 20) - 4096, 4096 * 3},
		{12345, 7}, {0, 1}, {5 << 20, 1<<20 + 512},
	} {
		covers(t, c.off, c.n, ddPieces(c.off, c.n))
	}
	// Aligned ranges use 1 MiB blocks.
	if ps := ddPieces(1<<20, 8<<20); len(ps) != 1 || ps[0].bs != 1<<20 {
		t.Fatalf("aligned range: %+v", ps)
	}
}

func FuzzDDPieces(f *testing.F) {
	f.Add(int64(0), int64(4096))
	f.Add(int64(4096), int64(3<<20))
	f.Fuzz(func(t *testing.T, off, n int64) {
		if off < 0 || n <= 0 || off > 1<<50 || n > 1<<40 {
			return
		}
		covers(t, off, n, ddPieces(off, n))
	})
}

// FuzzConsoleParsing feeds console output (outside input) to what reads
// it: no panics, and markers are found only as the board prints them.
func FuzzConsoleParsing(f *testing.F) {
	f.Add("true; echo pogo-rc=$?\r\npogo-rc=0\r\n# \x1b[6n")
	f.Add("tftpboot 0x40400000 x\r\nTFTP error: 'File not found' (1)\r\n=> ")
	f.Add("pogo-dev=/dev/vda\r\npogo-dev=/dev/${d##*/}")
	f.Fuzz(func(t *testing.T, s string) {
		_ = lastLine(s)
		for _, m := range devRe.FindAllStringSubmatch(s, -1) {
			if strings.Contains(m[1], "$") {
				t.Fatalf("device %q taken from an echoed command", m[1])
			}
		}
	})
}

func TestCheckRequest(t *testing.T) {
	up := Image{Reader: strings.NewReader("x")}
	for _, c := range []struct {
		name string
		img  Image
		opts FlashOptions
		want error
		msg  string
	}{
		{"no source", Image{}, FlashOptions{}, errdefs.ErrInvalid, "exactly one"},
		{"two sources", Image{Reader: strings.NewReader("x"), URL: "http://h/i"}, FlashOptions{}, errdefs.ErrInvalid, "exactly one"},
		{"bad url", Image{URL: "ftp://h/i"}, FlashOptions{}, errdefs.ErrInvalid, "http:// or https://"},
		{"bad sum", up, FlashOptions{SHA256: "abc"}, errdefs.ErrInvalid, "64 hex digits"},
		{"bad bmap", up, FlashOptions{Bmap: []byte("<bmap>")}, errdefs.ErrInvalid, "bmap"},
		{"direct upload", up, FlashOptions{Direct: true}, errdefs.ErrInvalid, "URL"},
		{"direct zstd", Image{URL: "http://h/i.zst"}, FlashOptions{Direct: true}, errdefs.ErrUnsupported, "zstd"},
	} {
		_, err := checkRequest(c.img, c.opts)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v; want %v mentioning %q", c.name, err, c.want, c.msg)
		}
	}
	p, err := checkRequest(Image{URL: "https://h/os.img.xz"}, FlashOptions{Direct: true})
	if err != nil || !p.direct || p.unpack != "xzcat" {
		t.Fatalf("direct xz: %+v, %v", p, err)
	}
	p, err = checkRequest(Image{URL: "https://h/os.img.xz"}, FlashOptions{Direct: true, ForceExporterHTTP: true})
	if err != nil || p.direct {
		t.Fatalf("force-exporter-http must win over direct: %+v, %v", p, err)
	}
}

func TestChooseTarget(t *testing.T) {
	spec := &manifest.Spec{DefaultTarget: "emmc", Targets: map[string]manifest.Target{
		"emmc": {Device: "/dev/mmcblk0"}, "usd": {Lookup: "4fb0000"},
	}}
	if tg, _, err := chooseTarget(spec, ""); err != nil || tg.Device != "/dev/mmcblk0" {
		t.Fatalf("default: %v %v", tg, err)
	}
	if tg, _, err := chooseTarget(spec, "usd"); err != nil || tg.Lookup != "4fb0000" {
		t.Fatalf("named: %v %v", tg, err)
	}
	if tg, _, err := chooseTarget(spec, "/dev/sda"); err != nil || tg.Device != "/dev/sda" {
		t.Fatalf("path: %v %v", tg, err)
	}
	for _, bad := range []string{"nvme", "/dev/sda; rm -rf /", "/dev/../etc"} {
		if _, _, err := chooseTarget(spec, bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("partition %q: err = %v, want invalid", bad, err)
		}
	}
	if _, _, err := chooseTarget(&manifest.Spec{Targets: map[string]manifest.Target{"a": {Device: "/dev/a"}, "b": {Device: "/dev/b"}}}, ""); err == nil || !strings.Contains(err.Error(), "a, b") {
		t.Fatalf("no default among several: %v", err)
	}
}

// TestSpoolReplays: readers follow the upload while it arrives and a
// second reader (a retry) gets the same bytes.
func TestSpoolReplays(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 300000)
	pr, pw := io.Pipe()
	s, err := newSpool(t.TempDir(), pr, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	go func() {
		for i := 0; i < len(data); i += 65536 {
			pw.Write(data[i:min(i+65536, len(data))])
		}
		pw.Close()
	}()
	for try := 0; try < 2; try++ {
		r, _, _ := s.open(context.Background())
		got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(r, 10)))
		if err != nil || string(got) != "0123456789" {
			t.Fatalf("try %d: head %q %v", try, got, err)
		}
		rest, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(append(got, rest...), data) {
			t.Fatalf("try %d: %d bytes, %v", try, len(got)+len(rest), err)
		}
		r.Close()
	}
}

func TestSpoolShortUpload(t *testing.T) {
	s, err := newSpool(t.TempDir(), strings.NewReader("abc"), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	r, _, _ := s.open(context.Background())
	_, err = io.ReadAll(r)
	if !errors.Is(err, errUpload) || !strings.Contains(err.Error(), "3 bytes of 10") {
		t.Fatalf("err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, _ := io.Pipe()
	s2, _ := newSpool(t.TempDir(), pr, 0)
	defer s2.close()
	r2, _, _ := s2.open(ctx)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if _, err := r2.Read(make([]byte, 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting reader after cancel: %v", err)
	}
}

// TestStreamServerOneShot: the image goes to the first fetch only, a
// failed producer cuts the body, and unknown paths are refused.
func TestStreamServerOneShot(t *testing.T) {
	s, err := newStreamServer("127.0.0.1:0", "127.0.0.1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.setScript("w.sh", "echo hi\n")
	s.setImage(func(w io.Writer) error { _, err := io.WriteString(w, "IMAGE"); return err })
	get := func(u string) (int, string, error) {
		resp, err := http.Get(u)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	if code, body, err := get(s.url("image")); code != 200 || body != "IMAGE" || err != nil {
		t.Fatalf("first fetch: %d %q %v", code, body, err)
	}
	if err := <-s.result; err != nil {
		t.Fatal(err)
	}
	if code, _, _ := get(s.url("image")); code != http.StatusGone {
		t.Fatalf("second fetch: %d", code)
	}
	if code, body, _ := get(s.url("w.sh")); code != 200 || body != "echo hi\n" {
		t.Fatalf("script: %d %q", code, body)
	}
	if code, _, _ := get(strings.Replace(s.url("w.sh"), s.token, "guess", 1)); code != 404 {
		t.Fatalf("wrong token: %d", code)
	}
	s.setImage(func(w io.Writer) error {
		w.Write(bytes.Repeat([]byte("x"), 3<<20))
		return errors.New("checksum mismatch")
	})
	_, body, err := get(s.url("image"))
	if err == nil {
		t.Fatalf("a failed image read whole (%d bytes) without error", len(body))
	}
	if perr := <-s.result; perr == nil || !strings.Contains(perr.Error(), "checksum") {
		t.Fatalf("producer error = %v", perr)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		yaml, field, want string
	}{
		{"cache_dir: /x", "flasher_bundle", "required key is missing"},
		{"flasher_bundle: ''", "flasher_bundle", "must not be empty"},
		{"flasher_bundle: b\nretries: -1", "retries", "want 0 to 100"},
		{"flasher_bundle: b\nuboot_timeout: -3s", "uboot_timeout", "negative"},
		{"flasher_bundle: b\nuboot_timeout: soon", "uboot_timeout", ""},
		{"flasher_bundle: b\nstream_listen: nope", "stream_listen", "host:port"},
		{"flasher_bundle: b\nserver_address: 'http://x'", "server_address", "host name or IP"},
		{"flasher_bundle: b\nbogus: 1", "bogus", "unknown key"},
	} {
		cfg, err := drivers.ConfigFromYAML(c.yaml)
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(context.Background(), &drivers.Build{Path: "storage", Config: cfg})
		var fe *drivers.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(fe.Msg, c.want) {
			t.Errorf("%q: err = %v; want a FieldError on %s mentioning %q", c.yaml, err, c.field, c.want)
		}
	}
	// Children: serial and power are required and must serve their
	// capability.
	cfg, _ := drivers.ConfigFromYAML("flasher_bundle: ./nowhere")
	_, err := New(context.Background(), &drivers.Build{Path: "storage", Config: cfg})
	var ce *drivers.ChildError
	if !errors.As(err, &ce) || ce.Name != "serial" {
		t.Fatalf("no children: err = %v", err)
	}
}

// Jumpstarter's board flashers have a default bundle; the others must
// name one.
func TestDefaultBundles(t *testing.T) {
	for _, c := range []struct {
		typ, yaml, want, err string
	}{
		{"jumpstarter_driver_flashers.driver.TIJ784S4Flasher", "cache_dir: /x", "quay.io/jumpstarter-dev/jumpstarter-flasher-ti-j784s4:latest", ""},
		{"jumpstarter_driver_flashers.driver.RCarS4Flasher", "variant: s4sk", "quay.io/jumpstarter-dev/jumpstarter-flasher-rcar-s4:latest", ""},
		{"jumpstarter_driver_flashers.driver.RCarS4Flasher", "flasher_bundle: ./mine", "./mine", ""},
		{"jumpstarter_driver_flashers.driver.BaseFlasher", "cache_dir: /x", "", "only jumpstarter_driver_flashers.driver.RCarS4Flasher and jumpstarter_driver_flashers.driver.TIJ784S4Flasher have a default"},
		{"flasher", "variant: a", "", "required key is missing"},
	} {
		cfg, err := drivers.ConfigFromYAML(c.yaml)
		if err != nil {
			t.Fatal(err)
		}
		got, err := configOf(&drivers.Build{Path: "storage", Type: c.typ, Config: cfg})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s %q: err = %v, want %q", c.typ, c.yaml, err, c.err)
			}
			continue
		}
		if err != nil || got.Bundle != c.want {
			t.Errorf("%s %q: bundle %q, %v; want %q", c.typ, c.yaml, got.Bundle, err, c.want)
		}
	}
}

// The node's variant picks the device tree the flasher boots with.
func TestBootVariant(t *testing.T) {
	b := &bundle{ref: "b", spec: &manifest.Spec{
		Bootcmd: "booti 0x1 - 0x2",
		Kernel:  &manifest.Load{File: "Image", Address: "0x1"},
		DTB: &manifest.DTB{Default: "spider", Address: "0x2", Variants: map[string]manifest.Variant{
			"spider": {File: "spider.dtb"},
			"s4sk":   {File: "s4sk.dtb", Bootcmd: "bootm 0x1#s4sk"},
		}},
	}}
	dtb := func(bf uboot.Boot) string {
		for _, l := range bf.Loads {
			if l.What == "dtb" {
				return l.File
			}
		}
		return ""
	}
	if bf, err := b.boot(""); err != nil || dtb(bf) != "spider.dtb" || bf.Bootcmd != "booti 0x1 - 0x2" {
		t.Errorf("default: %+v %v", bf, err)
	}
	if bf, err := b.boot("s4sk"); err != nil || dtb(bf) != "s4sk.dtb" || bf.Bootcmd != "bootm 0x1#s4sk" {
		t.Errorf("s4sk: %+v %v", bf, err)
	}
	if _, err := b.boot("nope"); err == nil || !strings.Contains(err.Error(), `no device tree variant "nope" (variants: s4sk, spider)`) {
		t.Errorf("unknown variant: %v", err)
	}
	b.spec.DTB = nil
	if _, err := b.boot("s4sk"); err == nil || !strings.Contains(err.Error(), "variants: )") {
		t.Errorf("variant of a bundle without device trees: %v", err)
	}
}

// A local bundle is read at start-up, so the node's variant and
// default_target are checked then, each error naming its key.
func TestCheckChoices(t *testing.T) {
	b := &bundle{ref: "b", spec: &manifest.Spec{
		Bootcmd: "booti 0x1 - 0x2",
		Kernel:  &manifest.Load{File: "Image", Address: "0x1"},
		DTB:     &manifest.DTB{Default: "a", Address: "0x2", Variants: map[string]manifest.Variant{"a": {File: "a.dtb"}}},
		Targets: map[string]manifest.Target{"emmc": {Device: "/dev/mmcblk0"}},
	}}
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{}, ""},
		{Config{Variant: "a", DefaultTarget: "emmc"}, ""},
		{Config{DefaultTarget: "/dev/sda"}, ""},
		{Config{Variant: "b"}, "variant"},
		{Config{DefaultTarget: "nvme"}, "default_target"},
	} {
		err := checkChoices(b, c.cfg)
		var fe *drivers.FieldError
		if c.field == "" && err != nil || c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field) {
			t.Errorf("%+v: err = %v, want a problem with %q", c.cfg, err, c.field)
		}
	}
	if err := checkChoices(nil, Config{Variant: "any"}); err != nil {
		t.Errorf("a registry bundle is checked when flashing: %v", err)
	}
}
