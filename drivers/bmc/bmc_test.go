package bmc_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/bmc"
	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/exportertest"
	"github.com/pogolab/pogo/lab/bmcsim"
	"github.com/pogolab/pogo/lab/bmcsim/flash"
)

const (
	user    = "root"
	pass    = "0penBmc"
	goodSig = "good-signature"
)

// sim is a BMC simulator serving real lanplus on a loopback UDP port.
type sim struct {
	*bmcsim.Simulator
	addr  *net.UDPAddr
	state string
}

// startSim serves the named example config; verification accepts only
// goodSig and the update copies the staged image aside.
func startSim(t testing.TB, example string, over map[string]string) *sim {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "lab", "bmcsim", "examples", example))
	if err != nil {
		t.Fatal(err)
	}
	cfgDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(cfgDir, example), data, 0o644); err != nil {
		t.Fatal(err)
	}
	verify := `test "$(cat "$BMCSIM_HASH")" = ` + goodSig
	update := `cp "$BMCSIM_IMAGE" "$BMCSIM_IMAGE.applied"`
	standIns := map[string]string{
		"phosphor-ipmi-flash-bmc-prepare.target":  "true",
		"phosphor-ipmi-flash-bmc-verify.target":   verify,
		"phosphor-ipmi-flash-bmc-update.target":   update,
		"phosphor-ipmi-flash-bios-prepare.target": "true",
		"phosphor-ipmi-flash-bios-verify.target":  verify,
		"phosphor-ipmi-flash-bios-update.target":  update,
	}
	for k, v := range over {
		standIns[k] = v
	}
	state := t.TempDir()
	s, err := bmcsim.New(bmcsim.Config{
		User: user, Password: pass, ConfigDirs: []string{cfgDir}, StandIns: standIns,
		RebootTime: 300 * time.Millisecond, StateDir: state,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("simulator: %v", err)
		}
	})
	return &sim{Simulator: s, addr: conn.LocalAddr().(*net.UDPAddr), state: state}
}

func (s *sim) exporterYAML(extra string) string {
	return fmt.Sprintf(`export:
  bmc:
    type: bmc
    config:
      host: 127.0.0.1
      port: %d
      username: %s
      password: %s
      timeout: 200ms
%s`, s.addr.Port, user, pass, extra)
}

func image(t testing.TB, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func request(typ string, img []byte, sig string) bmc.Request {
	return bmc.Request{Type: typ, Image: bytes.NewReader(img), Size: int64(len(img)), Signature: []byte(sig)}
}

// spoolEmpty checks the exporter left no spooled image behind.
func spoolEmpty(t *testing.T, e *exportertest.Exporter) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(e.Dir, "state", "bmc-spool"))
	if len(ents) != 0 {
		t.Errorf("spooled image left behind: %v", ents)
	}
}

func TestUpdateThroughTheWire(t *testing.T) {
	s := startSim(t, "config-static-bmc.json", nil)
	// 500-byte chunks straddle the spool reader's 1 MiB blocks.
	e := exportertest.Serve(t, s.exporterYAML("      chunk_size: 500\n"))
	c := open(t, e)
	d := bmc.NewClient(c.Conn(), "bmc")
	ctx := context.Background()

	bs, err := d.Blobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.ID)
		if b.ID == "/flash/image" && b.State&bmc.State(blob.TransportIPMI) == 0 {
			t.Errorf("/flash/image state %v lacks ipmi", b.State)
		}
	}
	if want := []string{blob.HashBlob, "/flash/image", blob.CleanupBlob}; !slices.Equal(ids, want) {
		t.Fatalf("blobs %v, want %v", ids, want)
	}

	img := image(t, 1<<20+300<<10+7)
	var mu sync.Mutex
	var phases []blob.Phase
	req := request("image", img, goodSig)
	req.Progress = func(p blob.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}
	if err := d.Update(ctx, req); err != nil {
		t.Fatalf("update: %v", err)
	}
	want := []blob.Phase{bmc.PhaseReceive, blob.PhaseCheck, blob.PhaseUpload, blob.PhaseHash, blob.PhaseVerify, blob.PhaseUpdate}
	if !slices.Equal(phases, want) {
		t.Errorf("progress phases %v, want %v", phases, want)
	}
	applied, err := os.ReadFile(filepath.Join(s.state, "run/initramfs/bmc-image.applied"))
	if err != nil || !bytes.Equal(applied, img) {
		t.Errorf("applied image differs from the upload (%d bytes, %v)", len(applied), err)
	}
	if s.Flash().State() != flash.NotYetStarted {
		t.Errorf("BMC left in %v", s.Flash().State())
	}
	spoolEmpty(t, e)

	b, err := d.Stat(ctx, "/flash/image")
	if err != nil || b.State.String() != "ipmi" {
		t.Errorf("stat /flash/image: %+v %v", b, err)
	}
	if _, err := d.Stat(ctx, "/flash/nope"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "/flash/nope") {
		t.Errorf("stat of a missing blob: %v", err)
	}
}

func open(t testing.TB, e *exportertest.Exporter) *client.Client {
	t.Helper()
	c := e.Dial(t)
	sess, err := c.Open(context.Background(), client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return c
}

func TestFailureNamesThePhaseAcrossTheWire(t *testing.T) {
	s := startSim(t, "config-bios.json", nil)
	e := exportertest.Serve(t, s.exporterYAML(""))
	d := bmc.NewClient(open(t, e).Conn(), "bmc")
	err := d.Update(context.Background(), request("bios", image(t, 5000), "forged"))
	var pe *blob.PhaseError
	if !errors.As(err, &pe) || pe.Phase != blob.PhaseVerify || !errors.Is(err, blob.ErrActionFailed) {
		t.Fatalf("error %v (%T) does not name the verify phase", err, err)
	}
	if err.Error() != "verify: BMC reported failed" {
		t.Errorf("error text %q", err)
	}
	if slices.Contains(s.Flash().Transitions(), flash.UpdatePending) {
		t.Error("/flash/update appeared after a failed verification")
	}
	spoolEmpty(t, e)

	// A type the BMC does not offer fails the check phase.
	err = d.Update(context.Background(), request("tarball", image(t, 100), goodSig))
	if !errors.As(err, &pe) || pe.Phase != blob.PhaseCheck || !strings.Contains(err.Error(), "does not offer /flash/tarball") {
		t.Errorf("tarball on a bios-only BMC: %v", err)
	}
}

func TestBadRequests(t *testing.T) {
	s := startSim(t, "config-static-bmc.json", nil)
	e := exportertest.Serve(t, s.exporterYAML(""))
	c := open(t, e)
	d := bmc.NewClient(c.Conn(), "bmc")
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  bmc.Request
		want string
	}{
		{"no signature", request("image", []byte("x"), ""), "signature is empty"},
		{"empty image", request("image", nil, goodSig), "image is empty"},
		{"bad blob id", request("/tmp/x", []byte("x"), goodSig), "must be /flash/<name>"},
		{"slash in type", request("a/b", []byte("x"), goodSig), "want image, tarball, bios"},
	} {
		if err := d.Update(ctx, tc.req); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	// A raw stream that lies about the size: the server refuses it
	// whatever the client library checks.
	raw := pb.NewBmcClient(c.Conn())
	for _, tc := range []struct {
		name   string
		size   int64
		chunks [][]byte
		want   string
	}{
		{"short", 10, [][]byte{[]byte("12345")}, "image ended after 5 of 10 bytes"},
		{"long", 4, [][]byte{[]byte("12345")}, "longer than the 4 bytes announced"},
		{"second header", 10, nil, "second header"},
	} {
		rctx := rpcmeta.WithPath(ctx, "bmc")
		st, err := raw.Update(rctx)
		if err != nil {
			t.Fatal(err)
		}
		hdr := &pb.BmcUpdateRequest{Msg: &pb.BmcUpdateRequest_Header{Header: &pb.BmcUpdateHeader{Type: "image", ImageSize: tc.size, Signature: []byte(goodSig)}}}
		_ = st.Send(hdr)
		for _, ch := range tc.chunks {
			_ = st.Send(&pb.BmcUpdateRequest{Msg: &pb.BmcUpdateRequest_Chunk{Chunk: ch}})
		}
		if tc.chunks == nil {
			_ = st.Send(hdr)
		}
		_ = st.CloseSend()
		var rerr error
		for rerr == nil {
			_, rerr = st.Recv()
		}
		if err := errdefs.FromGRPC(rerr); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "receive: ") {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	spoolEmpty(t, e)
	if s.Blobs().OpenSessions() != 0 || s.Flash().State() != flash.NotYetStarted {
		t.Errorf("bad requests reached the BMC: state %v", s.Flash().State())
	}
}

func TestConcurrentUpdateRefusedAndSessionEndAborts(t *testing.T) {
	s := startSim(t, "config-static-bmc.json", map[string]string{"phosphor-ipmi-flash-bmc-verify.target": "exec sleep 30"})
	e := exportertest.Serve(t, s.exporterYAML(""))
	c := e.Dial(t)
	sess, err := c.Open(context.Background(), client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := bmc.NewClient(c.Conn(), "bmc")
	verifying := make(chan struct{})
	var once sync.Once
	req := request("image", image(t, 2000), goodSig)
	req.Progress = func(p blob.Progress) {
		if p.Phase == blob.PhaseVerify && p.Message == "running" {
			once.Do(func() { close(verifying) })
		}
	}
	done := make(chan error, 1)
	go func() { done <- d.Update(context.Background(), req) }()
	select {
	case <-verifying:
	case err := <-done:
		t.Fatalf("update ended before verifying: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("verify never started")
	}
	if err := d.Update(context.Background(), request("image", []byte("x"), goodSig)); !errors.Is(err, errdefs.ErrInUse) {
		t.Errorf("second update: %v", err)
	}
	// Blobs answer while the update holds the BMC.
	bs, err := d.Blobs(context.Background())
	if err != nil || !slices.ContainsFunc(bs, func(b bmc.Blob) bool { return b.ID == blob.VerifyBlob }) {
		t.Errorf("blobs during verify: %+v %v", bs, err)
	}
	// Ending the session resets the driver: the update is aborted and
	// cleaned up on the BMC.
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("update survived the end of its session")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("update still running after the session ended")
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Flash().State() != flash.NotYetStarted && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if tr := s.Flash().Transitions(); s.Flash().State() != flash.NotYetStarted || !slices.Contains(tr, flash.VerificationStarted) || slices.Contains(tr, flash.VerificationCompleted) {
		t.Errorf("abort left state %v (transitions %v)", s.Flash().State(), tr)
	}
	spoolEmpty(t, e)
}

func TestOpenInterface(t *testing.T) {
	for _, p := range []string{"/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists: this host has a real BMC, which a test must not update", p)
		}
	}
	e := exportertest.Serve(t, "export:\n  bmc:\n    type: bmc\n    config:\n      interface: open\n")
	d := bmc.NewClient(open(t, e).Conn(), "bmc")
	_, err := d.Blobs(context.Background())
	if !errors.Is(err, errdefs.ErrUnsupported) || !strings.Contains(err.Error(), "no IPMI device on this host") {
		t.Fatalf("blobs over a missing /dev/ipmi0: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ cfg, want string }{
		{"username: u", "config.host: required with interface lanplus"},
		{"host: h\n      interface: serial", `config.interface: "serial" is not lanplus or open`},
		{"host: h\n      port: 70000", "config.port: 70000 is not a UDP port"},
		{"host: h\n      chunk_size: 4", "config.chunk_size: 4 is outside"},
		{"host: h\n      cipher_suite: -1", "config.cipher_suite"},
		{"host: h\n      timeout: soon", "config.timeout"},
		{"interface: open\n      host: h", "config.host: interface open"},
		{"host: h\n      chunk: 5", "config.chunk: unknown key"},
	} {
		text := "export:\n  bmc:\n    type: bmc\n    config:\n      " + tc.cfg + "\n"
		f, err := config.Parse("exporter.yaml", []byte(text))
		if err == nil {
			var s *exporter.Server
			s, err = exporter.New(context.Background(), f, &drivers.Host{StateDir: t.TempDir()}, exporter.Options{})
			if err == nil {
				s.Stop()
			}
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "exporter.yaml:") {
			t.Errorf("%q: got %v, want %q with file:line", tc.cfg, err, tc.want)
		}
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[bmc.State]string{
		0:      "-",
		0x0100: "ipmi",
		0x0006: "open-write|committing",
		0x0012: "open-write|commit-error",
		0x8000: "0x8000",
	} {
		if got := s.String(); got != want {
			t.Errorf("%#04x: %q, want %q", uint16(s), got, want)
		}
	}
}

// FuzzRequestCheck feeds Check what a client may put in an update header:
// it never panics, and what it accepts names a /flash/ blob the BMC can
// parse (no NUL) with a size a blob offset addresses.
func FuzzRequestCheck(f *testing.F) {
	f.Add("image", int64(1), []byte("sig"))
	f.Add("/flash/bios", int64(1<<32-1), []byte("s"))
	f.Add("/flash/", int64(5), []byte("s"))
	f.Add("a\x00b", int64(5), []byte("s"))
	f.Add("tarball", int64(-1), []byte{})
	f.Fuzz(func(t *testing.T, typ string, size int64, sig []byte) {
		r := bmc.Request{Type: typ, Size: size, Signature: sig}
		if r.Check() != nil {
			return
		}
		id := blob.BlobID(typ)
		if !strings.HasPrefix(id, "/flash/") || len(id) == len("/flash/") || strings.ContainsRune(id, 0) {
			t.Errorf("accepted type %q gives blob id %q", typ, id)
		}
		if size <= 0 || size > bmc.MaxImage || len(sig) == 0 || len(sig) > bmc.MaxSignature {
			t.Errorf("accepted size %d signature %d bytes", size, len(sig))
		}
	})
}

// lazyImage yields size zero bytes on demand and counts what was read.
type lazyImage struct {
	mu   sync.Mutex
	read int64
}

func (l *lazyImage) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(p)
	l.read += int64(len(p))
	return len(p), nil
}

func (l *lazyImage) n() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.read
}

// A blob the BMC does not offer is found before the image streams: the
// client sends no more than gRPC's flow-control window of a 256 MiB image.
func TestUnofferedBlobFailsBeforeTheImageStreams(t *testing.T) {
	s := startSim(t, "config-bios.json", nil)
	e := exportertest.Serve(t, s.exporterYAML(""))
	d := bmc.NewClient(open(t, e).Conn(), "bmc")
	img := &lazyImage{}
	var phases []blob.Phase
	err := d.Update(context.Background(), bmc.Request{Type: "image", Image: img, Size: 256 << 20, Signature: []byte(goodSig),
		Progress: func(p blob.Progress) { phases = append(phases, p.Phase) }})
	var pe *blob.PhaseError
	if !errors.As(err, &pe) || pe.Phase != blob.PhaseCheck || !strings.Contains(err.Error(), "does not offer /flash/image") {
		t.Fatalf("image on a bios-only BMC: %v", err)
	}
	if n := img.n(); n > 16<<20 {
		t.Errorf("the client streamed %d MiB of the image before the check failed", n>>20)
	}
	if slices.Contains(phases, bmc.PhaseReceive) {
		t.Errorf("progress %v: the exporter received image bytes before the check", phases)
	}
	spoolEmpty(t, e)
}

// A chunk_size above the BMC's request limit (the simulator takes 1024
// bytes of request data) fails at the first write with a hint, not after
// three identical retries.
func TestChunkSizeAboveTheBMCLimit(t *testing.T) {
	s := startSim(t, "config-static-bmc.json", nil)
	e := exportertest.Serve(t, s.exporterYAML("      chunk_size: 4096\n"))
	d := bmc.NewClient(open(t, e).Conn(), "bmc")
	err := d.Update(context.Background(), request("image", image(t, 20<<10), goodSig))
	var pe *blob.PhaseError
	if !errors.As(err, &pe) || pe.Phase != blob.PhaseUpload {
		t.Fatalf("error %v, want the upload phase", err)
	}
	for _, want := range []string{"write /flash/image at 0", "lower chunk_size (now 4096"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if s.Flash().State() != flash.NotYetStarted {
		t.Errorf("BMC left in %v", s.Flash().State())
	}
	spoolEmpty(t, e)
}
