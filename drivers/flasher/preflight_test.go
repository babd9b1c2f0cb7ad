package flasher

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers/console/expect"
)

func TestBmapCandidates(t *testing.T) {
	for _, c := range []struct {
		url  string
		want []string
	}{
		{"http://h/os.img", []string{"http://h/os.img.bmap"}},
		{"http://h/d/os.img.xz", []string{"http://h/d/os.img.xz.bmap", "http://h/d/os.img.bmap"}},
		{"https://h:8443/os.img.gz?sig=abc#x", []string{"https://h:8443/os.img.gz.bmap", "https://h:8443/os.img.bmap"}},
		{"http://h/os.img.ZST", []string{"http://h/os.img.ZST.bmap", "http://h/os.img.bmap"}},
		{"http://h/os.img.bz2", []string{"http://h/os.img.bz2.bmap", "http://h/os.img.bmap"}},
	} {
		if got := bmapCandidates(c.url); !slices.Equal(got, c.want) {
			t.Errorf("bmapCandidates(%q) = %q, want %q", c.url, got, c.want)
		}
	}
}

// bmapFor runs bmaptool on a small sparse image and returns its .bmap.
func bmapFor(t *testing.T) []byte {
	t.Helper()
	if _, err := exec.LookPath("bmaptool"); err != nil {
		t.Skip("bmaptool not installed (make deps)")
	}
	img := filepath.Join(t.TempDir(), "os.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("data"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("bmaptool", "create", img, "-o", img+".bmap").CombinedOutput(); err != nil {
		t.Fatalf("bmaptool: %v\n%s", err, out)
	}
	data, err := os.ReadFile(img + ".bmap")
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// serve serves files by path and records the requests.
func serve(t *testing.T, files map[string][]byte, noHead bool) (*httptest.Server, *[]string) {
	var log []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log = append(log, r.Method+" "+r.URL.Path)
		if noHead && r.Method == http.MethodHead {
			http.Error(w, "no HEAD here", http.StatusMethodNotAllowed)
			return
		}
		data, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, strings.NewReader(string(data)))
	}))
	t.Cleanup(srv.Close)
	return srv, &log
}

func TestHeadURL(t *testing.T) {
	ctx := context.Background()
	srv, log := serve(t, map[string][]byte{"/os.img.xz": []byte("image")}, false)
	if err := headURL(ctx, srv.URL+"/os.img.xz"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(*log, []string{"HEAD /os.img.xz"}) {
		t.Errorf("requests %q, want one HEAD", *log)
	}
	err := headURL(ctx, srv.URL+"/missing.img")
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.HasSuffix(err.Error(), "/missing.img: 404 Not Found") {
		t.Errorf("missing image: %v", err)
	}
	if !slices.Equal((*log)[1:], []string{"HEAD /missing.img", "GET /missing.img"}) {
		t.Errorf("requests %q, want a HEAD and a GET", *log)
	}
	if err := headURL(ctx, "http://127.0.0.1:1/os.img"); err == nil || !strings.Contains(err.Error(), "image URL http://127.0.0.1:1/os.img") {
		t.Errorf("closed port: %v", err)
	}

	// A server that refuses HEAD (or a URL signed for GET only) gets a
	// one-byte GET.
	srv, log = serve(t, map[string][]byte{"/os.img": []byte("image")}, true)
	if err := headURL(ctx, srv.URL+"/os.img"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(*log, []string{"HEAD /os.img", "GET /os.img"}) {
		t.Errorf("requests %q", *log)
	}
}

func TestFindURLBmap(t *testing.T) {
	ctx := context.Background()
	bm := bmapFor(t)
	// bmaptool's order: the image's name plus .bmap first, then without
	// the compression suffix.
	srv, log := serve(t, map[string][]byte{"/d/os.img.xz": []byte("x"), "/d/os.img.bmap": bm}, false)
	got, name, err := findURLBmap(ctx, srv.URL+"/d/os.img.xz?token=1")
	if err != nil || got == nil {
		t.Fatalf("found %v %q: %v", got, name, err)
	}
	if name != srv.URL+"/d/os.img.bmap" || got.ImageSize != 4<<20 {
		t.Errorf("found %q, image size %d", name, got.ImageSize)
	}
	if !slices.Equal(*log, []string{"GET /d/os.img.xz.bmap", "GET /d/os.img.bmap"}) {
		t.Errorf("requests %q", *log)
	}

	srv, _ = serve(t, map[string][]byte{"/os.img.xz": []byte("x"), "/os.img.xz.bmap": bm, "/os.img.bmap": []byte("not this one")}, false)
	if _, name, err := findURLBmap(ctx, srv.URL+"/os.img.xz"); err != nil || name != srv.URL+"/os.img.xz.bmap" {
		t.Errorf("URL.bmap first: %q %v", name, err)
	}

	srv, _ = serve(t, map[string][]byte{"/os.img": []byte("x")}, false)
	if got, name, err := findURLBmap(ctx, srv.URL+"/os.img"); got != nil || name != "" || err != nil {
		t.Errorf("no bmap: %v %q %v", got, name, err)
	}

	// One that is there but broken fails, naming it and the line.
	srv, _ = serve(t, map[string][]byte{"/os.img": []byte("x"), "/os.img.bmap": []byte("<?xml version=\"1.0\"?>\n<bmap version=\"9.0\">\n</bmap>\n")}, false)
	_, _, err = findURLBmap(ctx, srv.URL+"/os.img")
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), srv.URL+"/os.img.bmap:") {
		t.Errorf("broken bmap: %v", err)
	}
}

func TestPickLayers(t *testing.T) {
	layer := func(mt, title string, size int64) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mt, Size: size, Digest: digest.Digest("sha256:" + digestOf(fmt.Sprint(mt, title, size)))}
		if title != "" {
			d.Annotations = map[string]string{ocispec.AnnotationTitle: title}
		}
		return d
	}
	img := layer("application/octet-stream", "os.img.xz", 1000)
	small := layer("application/octet-stream", "README", 10)
	bm := layer(MediaTypeBmap, "", 50)
	titled := layer("application/xml", "os.img.bmap", 5000)

	o, err := pickLayers("r/os:1", []ocispec.Descriptor{small, bm, img})
	if err != nil || o.layer.Digest != img.Digest || o.bmap == nil || o.bmap.Digest != bm.Digest {
		t.Errorf("media type: %+v %v", o, err)
	}
	// Larger than the image, but a block map by its title.
	o, err = pickLayers("r/os:1", []ocispec.Descriptor{img, titled})
	if err != nil || o.layer.Digest != img.Digest || o.bmap == nil || o.bmap.Digest != titled.Digest {
		t.Errorf("title: %+v %v", o, err)
	}
	o, err = pickLayers("r/os:1", []ocispec.Descriptor{img})
	if err != nil || o.bmap != nil {
		t.Errorf("no bmap: %+v %v", o, err)
	}
	if _, err := pickLayers("r/os:1", []ocispec.Descriptor{bm}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("only a bmap: %v", err)
	}
	if _, err := pickLayers("r/os:1", []ocispec.Descriptor{img, bm, titled}); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "two block map layers") {
		t.Errorf("two bmaps: %v", err)
	}
}

func digestOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestSplitPiece(t *testing.T) {
	ps := splitPiece(ddPiece{bs: 1 << 20, count: 40, seek: 3}, 16<<20)
	want := []ddPiece{{1 << 20, 16, 3}, {1 << 20, 16, 19}, {1 << 20, 8, 35}}
	if !slices.Equal(ps, want) {
		t.Errorf("got %+v, want %+v", ps, want)
	}
	// A block larger than the limit still makes progress.
	if ps := splitPiece(ddPiece{bs: 4096, count: 3, seek: 0}, 100); len(ps) != 3 || ps[2].seek != 2 {
		t.Errorf("small limit: %+v", ps)
	}
}

var readMarker = regexp.MustCompile(`pogo-read=(\d+)`)

// TestVerifyScript runs the read-back script with the host's sh and dd on
// a file standing in for the device: each range's sha256 comes out in
// order, and progress markers count up to the bytes read.
func TestVerifyScript(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "dev")
	data := make([]byte, 70<<20+1000)
	r := rand.NewChaCha8([32]byte{7})
	_, _ = r.Read(data)
	if err := os.WriteFile(dev, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		ranges [][2]int64
	}{
		{"whole image", [][2]int64{{0, int64(len(data))}}},
		{"bmap ranges", [][2]int64{{0, 4096}, {1 << 20, 40 << 20}, {64<<20 + 8192, 5000}, {70 << 20, 1000}}},
		{"empty image", [][2]int64{{0, 0}}},
	} {
		var pieces [][]ddPiece
		var want []string
		var total int64
		for _, rg := range tc.ranges {
			pieces = append(pieces, ddPieces(rg[0], rg[1]))
			s := sha256.Sum256(data[rg[0] : rg[0]+rg[1]])
			want = append(want, hex.EncodeToString(s[:]))
			total += rg[1]
		}
		cmd := exec.Command("sh", "-c", verifyScript(dev, pieces))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.name, err, out)
		}
		if got := sumRe.FindAllString(string(out), -1); !slices.Equal(got, want) {
			t.Errorf("%s: sums %q, want %q", tc.name, got, want)
		}
		marks := readMarker.FindAllStringSubmatch(string(out), -1)
		if total == 0 {
			if len(marks) != 0 {
				t.Errorf("%s: markers %q", tc.name, marks)
			}
			continue
		}
		if len(marks) < int(total/readChunk) || marks[len(marks)-1][1] != fmt.Sprint(total) {
			t.Errorf("%s: markers %q, want about one per %d bytes ending at %d", tc.name, marks, readChunk, total)
		}
	}
}

// fakeShell answers one command line the way the flasher's shell runs the
// read-back: the echoed line, progress markers, a sum, the status marker
// and the prompt.
type fakeShell struct {
	in  *io.PipeReader
	out *io.PipeWriter
}

func (f fakeShell) run(replies ...string) {
	line, _ := bufio.NewReader(f.in).ReadString('\n')
	_, _ = io.WriteString(f.out, strings.TrimRight(line, "\n")+"\r\n")
	for _, r := range replies {
		time.Sleep(5 * time.Millisecond)
		_, _ = io.WriteString(f.out, r)
	}
}

func TestRunWatchReportsProgress(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	defer outW.Close()
	defer inR.Close()
	e := expect.New(struct {
		io.Reader
		io.Writer
	}{outR, inW})
	go fakeShell{inR, outW}.run("pogo-read=16777216\r\n", "pogo-read=33554432\r\n",
		strings.Repeat("ab", 32)+"  -\r\n", "pogo-read=40000000\r\n", "pogo-rc=0\r\n# ")
	var seen []int64
	out, rc, err := runWatch(context.Background(), e, 5*time.Second, "wget -q -O - http://h/verify.sh | sh", "# ", func(n int64) { seen = append(seen, n) })
	if err != nil || rc != 0 {
		t.Fatalf("rc %d, err %v", rc, err)
	}
	if !slices.Equal(seen, []int64{16777216, 33554432, 40000000}) {
		t.Errorf("progress %v", seen)
	}
	if got := sumRe.FindAllString(out, -1); len(got) != 1 || got[0] != strings.Repeat("ab", 32) {
		t.Errorf("output %q", out)
	}
	if strings.Contains(out, "wget") {
		t.Errorf("the echoed command is in the output: %q", out)
	}
}
