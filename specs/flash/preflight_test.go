package flash

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/drivers/flasher"
	"github.com/pogolab/pogo/drivers/flasher/image"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/storage"
	"github.com/pogolab/pogo/specs/board"
)

// imageServer serves dir over HTTP on loopback (where the exporter
// fetches) and records the paths asked for.
type imageServer struct {
	URL  string
	mu   sync.Mutex
	reqs []string
}

func serveDir(dir string) *imageServer {
	GinkgoHelper()
	s := &imageServer{}
	fs := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		fs.ServeHTTP(w, r)
	}))
	DeferCleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *imageServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// neverPowered checks that the board was never switched on: it is off
// and its console never printed a thing (the scrollback spans power-ons).
func neverPowered(ctx context.Context, b *board.Board) {
	GinkgoHelper()
	st, err := b.Power().State(ctx)
	Expect(err).NotTo(HaveOccurred())
	Expect(st).To(Equal(power.Off))
	sb, err := b.Console().Scrollback(ctx)
	Expect(err).NotTo(HaveOccurred())
	Expect(string(sb)).NotTo(ContainSubstring("U-Boot"), "the board was powered on")
}

// sparseFixture is the demo OS with its zero tail a hole, its bmap and
// the image compressed, in dir.
func sparseFixture(ctx context.Context, dir string) (img string, bm *image.Bmap) {
	GinkgoHelper()
	Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
	img = filepath.Join(dir, "os.img")
	holey(lab.img, img, 48<<20)
	run(ctx, "sh", "-c", `bmaptool -q create "$1" -o "$1.bmap" 2>/dev/null || bmaptool create "$1" -o "$1.bmap"`, "bmaptool", img)
	run(ctx, "sh", "-c", `xz -T2 -1 -c "$1" > "$1.xz"`, "xz", img)
	bm, err := image.LoadBmap(img + ".bmap")
	Expect(err).NotTo(HaveOccurred())
	Expect(bm.MappedBlocksCount).To(BeNumerically("<", bm.BlocksCount), "the fixture has unmapped blocks")
	return img, bm
}

// prefill fills cfg's disk with a pattern the flash must leave where the
// image has no data.
func prefill(ctx context.Context, cfg string) {
	GinkgoHelper()
	const size = 128 << 20
	b := openBoard(ctx, cfg)
	_, err := b.Storage().Write(ctx, io.LimitReader(patternReader{}, size), storage.WriteOptions{Size: size})
	Expect(err).NotTo(HaveOccurred())
	Expect(b.Close()).To(Succeed())
}

// onlyMapped checks the disk holds the image's mapped blocks and the
// pattern everywhere else.
func onlyMapped(ctx context.Context, b *board.Board, bm *image.Bmap) {
	GinkgoHelper()
	img, err := os.ReadFile(lab.img)
	Expect(err).NotTo(HaveOccurred())
	got := readDisk(ctx, b, int64(len(img)))
	mapped := make([]bool, bm.BlocksCount)
	for _, r := range bm.Ranges {
		for i := r.First; i <= r.Last; i++ {
			mapped[i] = true
		}
	}
	pat := make([]byte, bm.BlockSize)
	_, _ = io.ReadFull(patternReader{}, pat)
	for i := int64(0); i < bm.BlocksCount; i++ {
		blk := got[i*bm.BlockSize : (i+1)*bm.BlockSize]
		if mapped[i] {
			Expect(bytes.Equal(blk, img[i*bm.BlockSize:(i+1)*bm.BlockSize])).To(BeTrue(), "mapped block %d holds the image", i)
		} else {
			Expect(bytes.Equal(blk, pat)).To(BeTrue(), "unmapped block %d was left alone", i)
		}
	}
}

var _ = Describe("j storage flash before and after the write", Label("qemu", "flash"), func() {
	It("fails before powering the board when the image, the bundle or the checksum is bad", func(ctx SpecContext) {
		dir := filepath.Join(lab.dir, "failfast-images")
		Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
		Expect(os.Link(lab.imgXZ, filepath.Join(dir, "os.img.xz"))).To(Succeed())
		srv := serveDir(dir)
		cfg, disk := exporterConfig("failfast", nil, nil)

		By("the CLI: a URL that is not there")
		out, code := jmpShell(ctx, cfg, "storage", "flash", srv.URL+"/missing.img.xz")
		Expect(code).NotTo(Equal(0), out)
		Expect(out).To(ContainSubstring("image: image URL " + srv.URL + "/missing.img.xz: 404 Not Found"))
		Expect(out).NotTo(ContainSubstring("power:"))
		Expect(srv.requests()).To(Equal([]string{"HEAD /missing.img.xz", "GET /missing.img.xz"}))
		noQEMU(disk)

		By("the CLI: a bundle that does not resolve, after saying there is no bmap")
		out, code = jmpShell(ctx, cfg, "storage", "flash", srv.URL+"/os.img.xz", "--force-flash-bundle", "127.0.0.1:1/pogo/no-bundle:1")
		Expect(code).NotTo(Equal(0), out)
		Expect(out).To(ContainSubstring("image: no block map beside the URL (looked for " + srv.URL + "/os.img.xz.bmap, " + srv.URL + "/os.img.bmap)"))
		Expect(out).To(ContainSubstring("127.0.0.1:1/pogo/no-bundle:1"))
		Expect(out).NotTo(ContainSubstring("power:"))

		By("through the API: each bad request fails and the board never powers on")
		host := startRegistry(ctx)
		b := openBoard(ctx, cfg)
		fl := flasher.NewClient(b.Client.Conn(), "storage")
		for _, c := range []struct {
			img  flasher.Image
			opts flasher.FlashOptions
			want string
		}{
			{flasher.Image{URL: srv.URL + "/missing.img"}, flasher.FlashOptions{}, "404 Not Found"},
			{flasher.Image{URL: "http://127.0.0.1:1/os.img"}, flasher.FlashOptions{}, "image URL http://127.0.0.1:1/os.img"},
			{flasher.Image{OCIRef: host + "/pogo/missing:1"}, flasher.FlashOptions{}, "oci://" + host + "/pogo/missing:1: fetch the manifest"},
			{flasher.Image{URL: srv.URL + "/os.img.xz"}, flasher.FlashOptions{SHA256: "not-a-sha256"}, `expected sha256 "not-a-sha256": want 64 hex digits`},
			{flasher.Image{URL: srv.URL + "/os.img.xz"}, flasher.FlashOptions{Bundle: host + "/pogo/no-bundle:1"}, host + "/pogo/no-bundle:1"},
		} {
			start := time.Now()
			_, err := fl.Flash(ctx, c.img, c.opts, nil)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(ContainSubstring(c.want))
			By(fmt.Sprintf("%q in %s", err, time.Since(start).Round(time.Millisecond)))
		}
		neverPowered(ctx, b)
	}, SpecTimeout(4*time.Minute))

	It("uses the block map beside a URL, and shows the read-back's progress and figures", func(ctx SpecContext) {
		img, bm := sparseFixture(ctx, filepath.Join(lab.dir, "urlbmap-images"))
		// Only the uncompressed name's map is there: bmaptool's second guess.
		Expect(os.Rename(img, img+".raw")).To(Succeed())
		srv := serveDir(filepath.Dir(img))
		cfg, disk := exporterConfig("urlbmap", nil, nil)
		prefill(ctx, cfg)

		url := srv.URL + "/os.img.xz"
		out, code := jmpShell(ctx, cfg, "storage", "flash", url, "--os-image-checksum", lab.sum)
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("image: using block map " + srv.URL + "/os.img.bmap\n"))
		Expect(srv.requests()).To(ContainElements("GET /os.img.xz.bmap", "GET /os.img.bmap", "GET /os.img.xz"))
		Expect(out).To(MatchRegexp(`write: wrote [\d.]+ MB to /dev/vda in [\d.]+m?s \([\d.]+ MB/s\), the mapped part of a 67\.1 MB image`))
		Expect(out).To(MatchRegexp(`verify \[=*\s*\] +[\d.]+%  [\d.]+ MB read back  [\d.]+ MB/s`))
		Expect(out).To(MatchRegexp(`verify: read [\d.]+ MB of /dev/vda back in [\d.]+m?s \([\d.]+ MB/s\)`))
		Expect(out).To(MatchRegexp(`flashed ` + url + ` to /dev/vda: \d+ bytes written in [\d.]+m?s \([\d.]+ MB/s\), with a block map, \d+ verified in [\d.]+m?s \([\d.]+ MB/s\); [\dms.]+ in all, sha256 ` + lab.sum))
		noQEMU(disk)
		onlyMapped(ctx, openBoard(ctx, cfg), bm)
	}, SpecTimeout(5*time.Minute))

	It("uses the block map layer of an oci:// image", func(ctx SpecContext) {
		img, bm := sparseFixture(ctx, filepath.Join(lab.dir, "ocibmap-images"))
		host := startRegistry(ctx)
		xzData, err := os.ReadFile(img + ".xz")
		Expect(err).NotTo(HaveOccurred())
		bmData, err := os.ReadFile(img + ".bmap")
		Expect(err).NotTo(HaveOccurred())
		bmLayer := pushArtifact(ctx, host, "pogo/sparse-os", "1",
			blob{"application/octet-stream", "os.img.xz", xzData},
			blob{flasher.MediaTypeBmap, "", bmData})
		cfg, disk := exporterConfig("ocibmap", nil, nil)
		prefill(ctx, cfg)

		ref := "oci://" + host + "/pogo/sparse-os:1"
		out, code := jmpShell(ctx, cfg, "storage", "flash", ref, "--os-image-checksum", lab.sum)
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("image: using block map " + ref + " layer " + bmLayer))
		Expect(out).To(ContainSubstring("with a block map"))
		noQEMU(disk)
		onlyMapped(ctx, openBoard(ctx, cfg), bm)
	}, SpecTimeout(5*time.Minute))
})
