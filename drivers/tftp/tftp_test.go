package tftp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pin/tftp/v3"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/files"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/exportertest"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// fetch reads name from the server at addr with pin/tftp's client.
func fetch(addr, name string, blksize int) ([]byte, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return nil, err
	}
	c.SetTimeout(2 * time.Second)
	c.SetRetries(3)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, err
	}
	// The negotiated size is only readable before the transfer.
	n, ok := wt.(tftp.IncomingTransfer).Size()
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, err
	}
	if !ok || n != int64(buf.Len()) {
		return nil, fmt.Errorf("tsize %d (negotiated %v) for %d bytes", n, ok, buf.Len())
	}
	return buf.Bytes(), nil
}

// hpaGet fetches name with Debian's tftp-hpa client into a file and
// returns its content and the client's output.
func hpaGet(t *testing.T, addr *net.UDPAddr, name string) ([]byte, string, error) {
	t.Helper()
	if _, err := exec.LookPath("tftp"); err != nil {
		t.Skip("Debian's tftp-hpa client is missing: apt-get install tftp-hpa")
	}
	out := filepath.Join(t.TempDir(), "got")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "tftp", "-m", "binary", addr.IP.String(), strconv.Itoa(addr.Port), "-c", "get", name, out)
	msg, err := cmd.CombinedOutput()
	// tftp-hpa exits 0 even when the server refuses; its message tells.
	if err == nil && len(bytes.TrimSpace(msg)) > 0 {
		err = errors.New(strings.TrimSpace(string(msg)))
	}
	b, _ := os.ReadFile(out)
	return b, string(msg), err
}

// serve starts an exporter with one tftp node and returns its files
// client and driver.
func serve(t *testing.T, cfg string) (*files.Client, *Driver) {
	t.Helper()
	e := exportertest.Serve(t, "kind: ExporterConfig\nexport:\n  tftp:\n    type: tftp\n    config:\n"+cfg)
	c := e.Dial(t)
	if _, err := c.Open(ctxT(t), clientSession()); err != nil {
		t.Fatal(err)
	}
	d, ok := e.Server.Tree().Lookup("tftp")
	if !ok {
		t.Fatal("no tftp driver in the tree")
	}
	return files.NewClient(c.Conn(), "tftp"), d.(*Driver)
}

func indent(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "      %s: %s\n", kv[i], kv[i+1])
	}
	return b.String()
}

// privateCfg is a server on a free port of its own.
func privateCfg(t *testing.T, subdir string) string {
	return indent("root", t.TempDir(), "listen", "127.0.0.1:0", "subdir", subdir, "host_dir", t.TempDir())
}

func TestPutAndFetch(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	fc, d := serve(t, privateCfg(t, "board1"))
	data := random(4<<20 + 333)
	if _, err := fc.Put(ctx, "Image", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.Put(ctx, "dtb/virt.dtb", strings.NewReader("dtb")); err != nil {
		t.Fatal(err)
	}
	u, err := fc.URL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addr := d.Addr()
	if u != fmt.Sprintf("tftp://%s/board1/", addr) {
		t.Fatalf("URL %q for %s", u, addr)
	}
	list, err := fc.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "Image" || list[1].Name != "dtb/virt.dtb" {
		t.Fatalf("list: %+v %v", list, err)
	}
	for _, bs := range []int{0, 1468, 65464} {
		got, err := fetch(addr.String(), "board1/Image", bs)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("blksize %d: %d bytes, %v", bs, len(got), err)
		}
	}
	got, msg, err := hpaGet(t, addr, "board1/dtb/virt.dtb")
	if err != nil || string(got) != "dtb" {
		t.Fatalf("tftp-hpa: %q %v (%s)", got, err, msg)
	}
	got, msg, err = hpaGet(t, addr, "board1/Image")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("tftp-hpa: %d bytes %v (%s)", len(got), err, msg)
	}
	if err := fc.Remove(ctx, "Image"); err != nil {
		t.Fatal(err)
	}
	if _, err := fetch(addr.String(), "board1/Image", 1468); err == nil || !strings.Contains(err.Error(), "file not found") {
		t.Fatalf("removed file: %v", err)
	}
	waitStats(t, d, func(st Stats) bool {
		return st.Transfers == 5 && st.Bytes == 4*int64(len(data))+3 && st.NotFound == 1 && st.Seconds > 0
	})
}

func TestTraversalRefused(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	_, d := serve(t, indent("root", root, "listen", "127.0.0.1:0", "subdir", "b", "host_dir", t.TempDir()))
	os.WriteFile(filepath.Join(root, "ok"), []byte("fine"), 0o644)
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("secret"), 0o644)
	os.Symlink(outside, filepath.Join(root, "escape"))
	os.Symlink("/etc", filepath.Join(root, "etc"))
	addr := d.Addr()
	if got, err := fetch(addr.String(), "b/ok", 1468); err != nil || string(got) != "fine" {
		t.Fatalf("b/ok: %q %v", got, err)
	}
	refused := []string{
		"../etc/passwd", "/etc/passwd", "b/../../etc/passwd", "b//etc/passwd",
		"b/escape", "b/etc/passwd", "b/../b/../../" + filepath.Base(filepath.Dir(outside)) + "/secret", "./b/ok",
	}
	for _, name := range refused {
		if got, err := fetch(addr.String(), name, 1468); err == nil || !strings.Contains(err.Error(), "access violation") {
			t.Errorf("pin client %q: %q, %v; want an access violation", name, got, err)
		}
		got, msg, err := hpaGet(t, addr, name)
		if err == nil || !strings.Contains(msg, "access violation") || len(got) > 0 {
			t.Errorf("tftp-hpa %q: %q, %v (%s); want an access violation", name, got, err, msg)
		}
	}
	for _, name := range []string{"other/ok", "b/missing", "ok"} {
		if _, err := fetch(addr.String(), name, 0); err == nil || !strings.Contains(err.Error(), "file not found") {
			t.Errorf("%q: %v; want file not found", name, err)
		}
	}
	// Refusals that name no board are not counted against one.
	waitStats(t, d, func(st Stats) bool { return st.Refused == 2*5 && st.Transfers == 1 })
}

// skipUnlessBind69 skips when this process may not bind privileged ports.
func skipUnlessBind69(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		t.Skipf("binding UDP port 69 is not permitted here (run as root or grant CAP_NET_BIND_SERVICE): %v", err)
	}
}

// TestPort69 serves on the real TFTP port, sharing it with whatever pogo
// process already does (other test packages running in parallel).
func TestPort69(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	rootA, rootB := t.TempDir(), t.TempDir()
	// A foreign server (another package's tftpd-hpa baseline) may hold the
	// port for a while.
	deadline := time.Now().Add(60 * time.Second)
	dA, err := Start(Config{Root: rootA}, slog.New(slog.DiscardHandler))
	for (errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, errdefs.ErrUnavailable)) && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		dA, err = Start(Config{Root: rootA}, slog.New(slog.DiscardHandler))
	}
	skipUnlessBind69(t, err)
	if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, errdefs.ErrUnavailable) {
		t.Skipf("port 69 stayed taken by a server that is not pogo's for a minute: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer dA.Close()
	fcB, dB := serve(t, indent("root", rootB))
	data := random(1<<20 + 5)
	os.WriteFile(filepath.Join(rootA, "a.bin"), data, 0o644)
	if _, err := fcB.Put(ctx, "b.bin", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if dA.Serving() && dB.Serving() {
		t.Fatal("two drivers of one host both serve port 69")
	}
	if dA.Subdir() == dB.Subdir() {
		t.Fatalf("default subdirs collide: %s", dA.Subdir())
	}
	u, _ := fcB.URL(ctx)
	if u != "tftp://127.0.0.1/"+dB.Subdir()+"/" {
		t.Fatalf("URL %q", u)
	}
	for _, name := range []string{dA.Subdir() + "/a.bin", dB.Subdir() + "/b.bin"} {
		for _, bs := range []int{1468, 65464} {
			got, err := fetch("127.0.0.1:69", name, bs)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s at blksize %d: %d bytes, %v", name, bs, len(got), err)
			}
		}
		got, msg, err := hpaGet(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 69}, name)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("tftp-hpa %s: %d bytes, %v (%s)", name, len(got), err, msg)
		}
		if _, msg, err := hpaGet(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 69}, "../etc/passwd"); err == nil || !strings.Contains(msg, "access violation") {
			t.Fatalf("tftp-hpa traversal on port 69: %v (%s)", err, msg)
		}
	}
	waitStats(t, dA, func(st Stats) bool { return st.Transfers == 3 })
	waitStats(t, dB, func(st Stats) bool { return st.Transfers == 3 })
}

func TestPortBusy(t *testing.T) {
	t.Parallel()
	busy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.LocalAddr().(*net.UDPAddr).Port
	_, err = Start(Config{Root: t.TempDir(), Listen: busy.LocalAddr().String(), HostDir: t.TempDir()}, nil)
	want := fmt.Sprintf("tftp: port %d is in use by another process", port)
	if err == nil || err.Error() != want || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("got %v, want %q", err, want)
	}
	// Through an exporter the error names the config line.
	err = buildErr(t, indent("root", t.TempDir(), "listen", busy.LocalAddr().String(), "host_dir", t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "exporter.yaml:7: export.tftp.config.listen") {
		t.Fatalf("through the exporter: %v", err)
	}
}

func buildErr(t *testing.T, cfg string) error {
	dir := t.TempDir()
	text := "kind: ExporterConfig\nexport:\n  tftp:\n    type: tftp\n    config:\n" + cfg
	f, err := config.Parse(filepath.Join(dir, "exporter.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	s, err := exporter.New(context.Background(), f, &drivers.Host{StateDir: dir}, exporter.Options{})
	if err == nil {
		s.Stop()
	}
	return err
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	hd := t.TempDir()
	held, err := Start(Config{Root: t.TempDir(), Listen: freePort(t), Subdir: "taken", HostDir: hd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	root := t.TempDir()
	for _, tc := range []struct{ cfg, want string }{
		{indent("root", root, "listen", "69"), "config.listen: want [ip]:port"},
		{indent("root", root, "listen", "localhost:69"), `config.listen: host "localhost" is not an IP address`},
		{indent("root", root, "listen", ":70000"), "config.listen: port \"70000\" is not a number"},
		{indent("root", root, "subdir", "../up"), "config.subdir: want one name"},
		{indent("root", root, "subdir", "a/b"), "config.subdir: want one name"},
		{indent("root", root, "subdir", ".hidden"), "config.subdir: want one name"},
		{indent("root", root, "advertise", "tftp://x/"), "config.advertise: want a host"},
		{indent("root", file, "listen", "127.0.0.1:0"), "config.root: create directory"},
		{indent("root", root, "blksize", "1468"), "config.blksize: unknown key"},
		{indent("root", root, "window", "61"), "config.window: want 1 (lock-step) to 60 blocks, got 61"},
		{indent("root", root, "window", "-2"), "config.window: want 1 (lock-step) to 60 blocks, got -2"},
		{indent("root", root, "window", "many"), "config.window:"},
		{indent("root", root, "listen", "127.0.0.1:6969", "host_dir", file), "config.host_dir: tftp: create"},
		{indent("root", root, "listen", "127.0.0.1:"+strconv.Itoa(held.Addr().Port), "host_dir", hd, "subdir", "taken"), `config.subdir: tftp: subdir "taken" is already served for another exporter (pid ` + strconv.Itoa(os.Getpid())},
	} {
		err := buildErr(t, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "exporter.yaml:") {
			t.Errorf("%s got  %v\nwant %q with file:line", tc.cfg, err, tc.want)
		}
	}
}

// TestHelperHolder is the other process of TestCrossProcessTakeover.
func TestHelperHolder(t *testing.T) {
	cfg := os.Getenv("POGO_TFTP_HELPER")
	if cfg == "" {
		t.Skip("helper process for TestCrossProcessTakeover")
	}
	var c Config
	f := strings.Split(cfg, "|")
	c.Root, c.Listen, c.HostDir, c.Subdir = f[0], f[1], f[2], f[3]
	d, err := Start(c, nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("serving", d.Serving())
	io.Copy(io.Discard, os.Stdin)
	d.Close()
}

// TestCrossProcessTakeover runs a second process holding a port, shares
// it from this one, kills the holder and checks this process takes over.
func TestCrossProcessTakeover(t *testing.T) {
	t.Parallel()
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	listen := probe.LocalAddr().String()
	probe.Close()
	hostDir, childRoot, root := t.TempDir(), t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(childRoot, "c"), []byte("from the child's board"), 0o644)
	os.WriteFile(filepath.Join(root, "p"), []byte("from this board"), 0o644)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHolder$")
	cmd.Env = append(os.Environ(), "POGO_TFTP_HELPER="+strings.Join([]string{childRoot, listen, hostDir, "child"}, "|"))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "serving true\n" {
		t.Fatalf("helper: %q", line)
	}

	d, err := Start(Config{Root: root, Listen: listen, HostDir: hostDir, Subdir: "parent"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Serving() {
		t.Fatal("this process serves a port another process holds")
	}
	// The holder process serves this process's board.
	if got, err := fetch(listen, "parent/p", 1468); err != nil || string(got) != "from this board" {
		t.Fatalf("parent/p through the holder: %q %v", got, err)
	}
	if got, err := fetch(listen, "child/c", 1468); err != nil || string(got) != "from the child's board" {
		t.Fatalf("child/c: %q %v", got, err)
	}
	if _, err := Start(Config{Root: t.TempDir(), Listen: listen, HostDir: hostDir, Subdir: "child"}, nil); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("already served for another exporter (pid %d)", cmd.Process.Pid)) {
		t.Fatalf("subdir of the other process: %v", err)
	}
	// Counted by the other process, read here.
	waitStats(t, d, func(st Stats) bool { return st.Transfers == 1 })
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for !d.Serving() {
		if time.Now().After(deadline) {
			t.Fatal("no takeover after the holder died")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := fetch(listen, "parent/p", 65464); err != nil || string(got) != "from this board" {
		t.Fatalf("parent/p after takeover: %q %v", got, err)
	}
	// The dead process's board is gone with it: its directory is still
	// linked, but a new exporter may claim the subdir.
	d2, err := Start(Config{Root: t.TempDir(), Listen: listen, HostDir: hostDir, Subdir: "child"}, nil)
	if err != nil {
		t.Fatalf("claim the dead process's subdir: %v", err)
	}
	d2.Close()
	waitStats(t, d, func(st Stats) bool { return st.Transfers == 2 })
}

// freePort returns 127.0.0.1:P for a UDP port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	return probe.LocalAddr().String()
}

// TestHolderAddressMustCover refuses to share a port whose holder binds a
// narrower address than asked for, and shares one that covers it.
func TestHolderAddressMustCover(t *testing.T) {
	t.Parallel()
	hd := t.TempDir()
	listen := freePort(t)
	a, err := Start(Config{Root: t.TempDir(), Listen: listen, HostDir: hd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, port, _ := net.SplitHostPort(listen)
	_, err = Start(Config{Root: t.TempDir(), Listen: ":" + port, HostDir: hd}, nil)
	want := fmt.Sprintf("tftp: port %s is served by pogo (pid %d) on %s, which does not cover 0.0.0.0:%s", port, os.Getpid(), listen, port)
	if err == nil || err.Error() != "config.listen: "+want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	b, err := Start(Config{Root: t.TempDir(), Listen: listen, HostDir: hd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Serving() || !a.Serving() {
		t.Fatal("the second driver should share the first one's server")
	}
}

// TestPrivatePortNotShared checks a port 0 server keeps its registry to
// itself: asking for its bound port finds the port busy.
func TestPrivatePortNotShared(t *testing.T) {
	t.Parallel()
	hd := t.TempDir()
	a, err := Start(Config{Root: t.TempDir(), Listen: "127.0.0.1:0", HostDir: hd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = Start(Config{Root: t.TempDir(), Listen: a.Addr().String(), HostDir: hd}, nil)
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("%v", err)
	}
}

func clientSession() client.SessionOptions { return client.SessionOptions{} }

// waitStats waits for d's counters to satisfy ok: the server counts a
// transfer after the client's last ACK, so a client may finish first.
func waitStats(t *testing.T, d *Driver, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := d.Stats()
		if err == nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v (%v)", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReserve hands a port to a foreign server and back.
func TestReserve(t *testing.T) {
	t.Parallel()
	hd, listen := t.TempDir(), freePort(t)
	addr, _ := net.ResolveUDPAddr("udp4", listen)
	a, err := Start(Config{Root: t.TempDir(), Listen: listen, HostDir: hd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Reserve(ctx, hd, addr.Port); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("still served by pogo (pid %d)", os.Getpid())) {
		t.Fatalf("reserve a served port: %v", err)
	}
	a.Close()
	release, err := Reserve(ctxT(t), hd, addr.Port)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := net.ListenUDP("udp4", addr)
	if err != nil {
		t.Fatalf("bind the reserved port: %v", err)
	}
	_, err = Start(Config{Root: t.TempDir(), Listen: listen, HostDir: hd}, nil)
	if want := fmt.Sprintf("tftp: port %d is reserved for another TFTP server by pid %d", addr.Port, os.Getpid()); err == nil || err.Error() != want {
		t.Fatalf("start on a reserved port: %v, want %s", err, want)
	}
	foreign.Close()
	release()
	b, err := Start(Config{Root: t.TempDir(), Listen: listen, HostDir: hd}, nil)
	if err != nil {
		t.Fatalf("start after release: %v", err)
	}
	b.Close()
}

// What docs/tftp-http.md promises: a name that tries to leave the board's
// directory is an access violation logged as a warning; a name outside any
// registered subdir (none, or another board's that is not here) is "file
// not found", logged at info.
func TestRefusalsWarnMissesInform(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "Image"), []byte("kernel"), 0o644)
	// slog's handler serialises its writes; the file is read back whole.
	logs, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	d, err := Start(Config{Root: root, Listen: "127.0.0.1:0", Subdir: "b", HostDir: t.TempDir()}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	addr := d.Addr().String()
	lines := func(name string) []string {
		var out []string
		b, _ := os.ReadFile(logs.Name())
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "file="+name+" ") || strings.Contains(l, `file="`+name+`"`) {
				out = append(out, l)
			}
		}
		return out
	}
	for _, tc := range []struct{ name, answer, level, msg string }{
		{"../etc/passwd", "access violation", "level=WARN", `msg="tftp: refused"`},
		{"b/../../etc/passwd", "access violation", "level=WARN", `msg="tftp: refused"`},
		{"Image", "file not found", "level=INFO", `msg="tftp: not found"`},
		{"other/Image", "file not found", "level=INFO", `msg="tftp: not found"`},
	} {
		if _, err := fetch(addr, tc.name, 0); err == nil || !strings.Contains(err.Error(), tc.answer) {
			t.Errorf("%q: %v; want %q", tc.name, err, tc.answer)
		}
		var ls []string
		for deadline := time.Now().Add(5 * time.Second); len(ls) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			ls = lines(tc.name)
		}
		if len(ls) != 1 || !strings.Contains(ls[0], tc.level) || !strings.Contains(ls[0], tc.msg) {
			t.Errorf("%q logged %q; want one %s %s line", tc.name, ls, tc.level, tc.msg)
		}
	}
}
