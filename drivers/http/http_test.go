package http_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/client/cli"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/files"
	_ "github.com/pogolab/pogo/drivers/http"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/exportertest"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// start serves an http node with root and returns its files client, the
// URL it advertises and the root.
func start(t testing.TB, extra string) (*files.Client, string, string) {
	t.Helper()
	root := t.TempDir()
	c := exportertest.Start(t, fmt.Sprintf("kind: ExporterConfig\nexport:\n  http:\n    type: http\n    config:\n      root: %s\n%s", root, extra))
	fc := files.NewClient(c.Conn(), "http")
	u, err := fc.URL(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return fc, u, root
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func get(t *testing.T, req *nethttp.Request) (*nethttp.Response, []byte) {
	t.Helper()
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestPutListRemoveOverWire(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	fc, u, root := start(t, "")
	data := random(t, 3<<20+17)
	local := filepath.Join(t.TempDir(), "Image")
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(local)
	defer f.Close()
	n, err := fc.Put(ctx, "boot/Image", f)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("put: %d %v", n, err)
	}
	if _, err := fc.Put(ctx, "cmdline", strings.NewReader("console=ttyAMA0")); err != nil {
		t.Fatal(err)
	}
	list, err := fc.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "boot/Image" || list[0].Size != int64(len(data)) || list[1].Name != "cmdline" || list[1].Size != 15 {
		t.Fatalf("list: %+v", list)
	}
	if time.Since(list[0].ModTime) > time.Minute {
		t.Fatalf("mod time %v", list[0].ModTime)
	}
	onDisk, err := os.ReadFile(filepath.Join(root, "boot", "Image"))
	if err != nil || !bytes.Equal(onDisk, data) {
		t.Fatalf("stored content differs (%v)", err)
	}
	resp, body := get(t, mustReq(t, "GET", u+"boot/Image"))
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("GET: %s, %d bytes", resp.Status, len(body))
	}

	for _, bad := range []string{"../escape", "/etc/passwd", "", "a/../../b", "x/.pogo-put-1"} {
		_, err := fc.Put(ctx, bad, strings.NewReader("x"))
		if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("put %q: want ErrInvalid, got %v", bad, err)
		}
	}
	if err := fc.Remove(ctx, "boot/Image"); err != nil {
		t.Fatal(err)
	}
	if err := fc.Remove(ctx, "boot/Image"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second remove: want ErrNotFound, got %v", err)
	}
	if err := fc.Remove(ctx, "boot"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("remove a directory: want ErrInvalid, got %v", err)
	}
	if err := fc.Remove(ctx, "../etc/passwd"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("remove outside: want ErrInvalid, got %v", err)
	}
	list, _ = fc.List(ctx)
	if len(list) != 1 || list[0].Name != "cmdline" {
		t.Fatalf("list after remove: %+v", list)
	}
	resp, _ = get(t, mustReq(t, "GET", u+"boot/Image"))
	if resp.StatusCode != 404 {
		t.Fatalf("GET removed file: %s", resp.Status)
	}
}

// TestPutSizeMismatch checks an upload that ends short of its announced
// size, or runs past it, is refused and leaves nothing behind.
func TestPutSizeMismatch(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	root := t.TempDir()
	c := exportertest.Start(t, "kind: ExporterConfig\nexport:\n  web:\n    type: http\n    config:\n      root: "+root+"\n")
	pc := pb.NewFilesClient(c.Conn())
	for _, tc := range []struct {
		announce int64
		send     string
	}{{10, "short"}, {2, "too long"}} {
		s, err := pc.Put(rpcmeta.WithPath(ctx, "web"))
		if err != nil {
			t.Fatal(err)
		}
		size := tc.announce
		s.Send(&pb.PutRequest{Msg: &pb.PutRequest_Header{Header: &pb.PutHeader{Name: "f", Size: &size}}})
		s.Send(&pb.PutRequest{Msg: &pb.PutRequest_Data{Data: []byte(tc.send)}})
		_, err = s.CloseAndRecv()
		if !errors.Is(errdefs.FromGRPC(err), errdefs.ErrInvalid) {
			t.Fatalf("announce %d send %d: want ErrInvalid, got %v", tc.announce, len(tc.send), err)
		}
	}
	// A stream whose first message is data has no header.
	s, _ := pc.Put(rpcmeta.WithPath(ctx, "web"))
	s.Send(&pb.PutRequest{Msg: &pb.PutRequest_Data{Data: []byte("x")}})
	if _, err := s.CloseAndRecv(); !errors.Is(errdefs.FromGRPC(err), errdefs.ErrInvalid) {
		t.Fatalf("headerless put: %v", err)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 0 {
		t.Fatalf("refused uploads left %v", ents)
	}
}

func mustReq(t testing.TB, method, u string) *nethttp.Request {
	r, err := nethttp.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRangeHeadETag(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	fc, u, _ := start(t, "")
	data := random(t, 100000)
	if _, err := fc.Put(ctx, "img", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, mustReq(t, "HEAD", u+"img"))
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || resp.ContentLength != 100000 || len(body) != 0 || etag == "" || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("HEAD: %s len %d body %d etag %q headers %v", resp.Status, resp.ContentLength, len(body), etag, resp.Header)
	}

	r := mustReq(t, "GET", u+"img")
	r.Header.Set("Range", "bytes=1000-1999")
	resp, body = get(t, r)
	if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != "bytes 1000-1999/100000" || !bytes.Equal(body, data[1000:2000]) {
		t.Fatalf("range: %s %q %d bytes", resp.Status, resp.Header.Get("Content-Range"), len(body))
	}
	r.Header.Set("Range", "bytes=-10")
	resp, body = get(t, r)
	if resp.StatusCode != 206 || !bytes.Equal(body, data[len(data)-10:]) {
		t.Fatalf("suffix range: %s", resp.Status)
	}
	r.Header.Set("Range", "bytes=200000-")
	if resp, _ = get(t, r); resp.StatusCode != 416 {
		t.Fatalf("unsatisfiable range: %s", resp.Status)
	}

	r = mustReq(t, "GET", u+"img")
	r.Header.Set("If-None-Match", etag)
	if resp, _ = get(t, r); resp.StatusCode != 304 {
		t.Fatalf("If-None-Match with the current ETag: %s", resp.Status)
	}

	// Replacing the file changes its ETag, so a resumed download that
	// names the old one gets the whole new file.
	time.Sleep(10 * time.Millisecond)
	data2 := random(t, 5000)
	if _, err := fc.Put(ctx, "img", bytes.NewReader(data2)); err != nil {
		t.Fatal(err)
	}
	r = mustReq(t, "GET", u+"img")
	r.Header.Set("Range", "bytes=0-9")
	r.Header.Set("If-Range", etag)
	resp, body = get(t, r)
	if resp.StatusCode != 200 || !bytes.Equal(body, data2) || resp.Header.Get("ETag") == etag {
		t.Fatalf("If-Range with a stale ETag: %s, %d bytes, etag %q", resp.Status, len(body), resp.Header.Get("ETag"))
	}
}

// raw sends a request line as written, bypassing the client's URL
// handling, and returns the status code.
func raw(t *testing.T, addr, method, target string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method, target)
	resp, err := nethttp.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestTraversalRefused(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	fc, u, root := start(t, "")
	if _, err := fc.Put(ctx, "ok", strings.NewReader("fine")); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("secret"), 0o644)
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(root, "etc")); err != nil {
		t.Fatal(err)
	}
	os.Symlink("ok", filepath.Join(root, "inside"))
	addr := strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/")
	for target, want := range map[string]int{
		"/ok":                       200,
		"/inside":                   200, // a symlink staying inside is fine
		"/../etc/passwd":            403,
		"/%2e%2e/etc/passwd":        403,
		"/..%2f..%2fetc%2fpasswd":   403,
		"//etc/passwd":              403,
		"/escape":                   403,
		"/etc/passwd":               403,
		"/missing":                  404,
		"/":                         404,
		"http://x/../../etc/passwd": 403,
		"/ok/../../" + filepath.Base(filepath.Dir(outside)) + "/secret": 403,
	} {
		if got := raw(t, addr, "GET", target); got != want {
			t.Errorf("GET %s: %d, want %d", target, got, want)
		}
	}
	if got := raw(t, addr, "POST", "/ok"); got != 405 {
		t.Errorf("POST: %d, want 405", got)
	}
	if got := raw(t, addr, "PUT", "/new"); got != 405 {
		t.Errorf("PUT: %d, want 405", got)
	}
}

func TestAdvertise(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	fc, u, _ := start(t, "      advertise: http://10.0.2.2\n")
	if !strings.HasPrefix(u, "http://10.0.2.2:") || !strings.HasSuffix(u, "/") {
		t.Fatalf("advertised URL %q should carry the bound port", u)
	}
	fc2, u2, _ := start(t, "      advertise: http://boards.lab:8080/pogo\n")
	if u2 != "http://boards.lab:8080/pogo/" {
		t.Fatalf("advertised URL %q", u2)
	}
	_, _ = fc.List(ctx)
	_, _ = fc2.List(ctx)
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct{ config, want string }{
		{"listen: nohost", "config.listen: want host:port"},
		{"listen: " + busy.Addr().String(), fmt.Sprintf("port %d is in use by another process", busy.Addr().(*net.TCPAddr).Port)},
		{"advertise: ftp://x", "config.advertise: want a URL"},
		{"advertise: 10.0.2.2:80", "config.advertise: want a URL"},
		{"root: " + file, "config.root: create directory"},
		{"port: 80", "config.port: unknown key"},
		{"listen: [1, 2]", "config.listen: want a string"},
	} {
		dir := t.TempDir()
		text := "kind: ExporterConfig\nexport:\n  web:\n    type: http\n    config:\n      root: " + dir + "/r\n      " + tc.config + "\n"
		if strings.HasPrefix(tc.config, "root:") {
			text = "kind: ExporterConfig\nexport:\n  web:\n    type: http\n    config:\n      " + tc.config + "\n"
		}
		f, err := config.Parse(filepath.Join(dir, "exporter.yaml"), []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		s, err := exporter.New(context.Background(), f, &drivers.Host{StateDir: dir}, exporter.Options{})
		if err == nil {
			s.Stop()
			t.Errorf("%s: no error", tc.config)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "exporter.yaml:") {
			t.Errorf("%s:\n got %v\nwant %q with file:line", tc.config, err, tc.want)
		}
	}
}

// BenchmarkGET compares fetching a 256 MiB file from the driver with a
// bare io.Copy of the same file over a loopback TCP connection.
func BenchmarkGET(b *testing.B) {
	const size = 256 << 20
	fc, u, root := start(b, "")
	f, err := os.Create(filepath.Join(root, "big"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	_ = fc

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				f, err := os.Open(filepath.Join(root, "big"))
				if err != nil {
					return
				}
				defer f.Close()
				io.Copy(c, f)
			}()
		}
	}()

	var httpTime, rawTime time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		resp, err := nethttp.Get(u + "big")
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			b.Fatalf("http: %d bytes, %v", n, err)
		}
		httpTime += time.Since(t0)

		t0 = time.Now()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		n, err = io.Copy(io.Discard, c)
		c.Close()
		if err != nil || n != size {
			b.Fatalf("raw: %d bytes, %v", n, err)
		}
		rawTime += time.Since(t0)
	}
	mb := float64(size) * float64(b.N) / 1e6
	b.ReportMetric(mb/httpTime.Seconds(), "http-MB/s")
	b.ReportMetric(mb/rawTime.Seconds(), "raw-MB/s")
	b.ReportMetric(rawTime.Seconds()/httpTime.Seconds(), "http/raw")
}

// BenchmarkPut uploads a 256 MiB file over the exporter's gRPC wire and,
// as the baseline, copies it to a file in the same directory locally.
func BenchmarkPut(b *testing.B) {
	const size = 256 << 20
	fc, _, root := start(b, "")
	src := filepath.Join(b.TempDir(), "src")
	f, _ := os.Create(src)
	io.CopyN(f, rand.Reader, size)
	f.Close()
	ctx := ctxT(b)
	var put, local time.Duration
	b.SetBytes(size)
	for b.Loop() {
		in, _ := os.Open(src)
		t0 := time.Now()
		n, err := fc.Put(ctx, "up", in)
		put += time.Since(t0)
		in.Close()
		if err != nil || n != size {
			b.Fatalf("put: %d %v", n, err)
		}
		in, _ = os.Open(src)
		t0 = time.Now()
		out, _ := os.Create(filepath.Join(root, "local"))
		// A plain read/write loop, as the upload does (no copy_file_range).
		_, err = io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20))
		out.Close()
		local += time.Since(t0)
		in.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	mb := float64(size) * float64(b.N) / 1e6
	b.ReportMetric(mb/put.Seconds(), "put-MB/s")
	b.ReportMetric(mb/local.Seconds(), "local-MB/s")
	b.ReportMetric(local.Seconds()/put.Seconds(), "put/local")
}

// TestJVerbs drives `j http put/ls/url/rm` against the exporter.
func TestJVerbs(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	root := t.TempDir()
	c := exportertest.Start(t, "kind: ExporterConfig\nexport:\n  http:\n    type: http\n    config:\n      root: "+root+"\n      advertise: http://10.0.2.2\n")
	local := filepath.Join(t.TempDir(), "kernel.img")
	os.WriteFile(local, []byte("kernel"), 0o644)
	j := func(args ...string) (string, error) {
		cmd, err := cli.J(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(args)
		err = cmd.ExecuteContext(ctx)
		return out.String(), err
	}
	if _, err := j("http", "put", local); err != nil {
		t.Fatal(err)
	}
	if _, err := j("http", "put", local, "boot/Image"); err != nil {
		t.Fatal(err)
	}
	out, err := j("http", "ls")
	if err != nil || !strings.Contains(out, "6  ") || !strings.Contains(out, "boot/Image\n") || !strings.Contains(out, "kernel.img\n") {
		t.Fatalf("ls: %q %v", out, err)
	}
	if out, err := j("http", "url"); err != nil || !strings.HasPrefix(out, "http://10.0.2.2:") {
		t.Fatalf("url: %q %v", out, err)
	}
	if _, err := j("http", "rm", "kernel.img", "boot/Image"); err != nil {
		t.Fatal(err)
	}
	if _, err := j("http", "rm", "kernel.img"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("rm missing: %v", err)
	}
	if out, _ := j("http", "ls"); out != "" {
		t.Fatalf("ls after rm: %q", out)
	}
}
