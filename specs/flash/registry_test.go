package flash

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry/remote"
)

// startRegistry runs Debian's docker-registry on a free loopback port
// until the spec ends and returns its host:port.
func startRegistry(ctx context.Context) string {
	GinkgoHelper()
	bin, err := exec.LookPath("docker-registry")
	Expect(err).NotTo(HaveOccurred(), "docker-registry not installed (Debian docker-registry; make deps)")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	host := l.Addr().String()
	l.Close()
	dir := GinkgoT().TempDir()
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n  secret: pogo-spec\n",
		filepath.Join(dir, "data"), host)
	Expect(os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600)).To(Succeed())
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Start()).To(Succeed())
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	DeferCleanup(func() { cmd.Process.Kill(); <-done })
	Eventually(func() int {
		resp, err := http.Get("http://" + host + "/v2/")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}).WithTimeout(15 * time.Second).WithPolling(50 * time.Millisecond).Should(Equal(http.StatusOK))
	return host
}

// pushImage pushes data as a one-layer OCI artifact to host/repo:tag.
func pushImage(ctx context.Context, host, repo, tag, name string, data []byte) {
	GinkgoHelper()
	pushArtifact(ctx, host, repo, tag, blob{"application/octet-stream", name, data})
}

// blob is one layer of an artifact: its media type, title and content.
type blob struct {
	mediaType, title string
	data             []byte
}

// pushArtifact pushes an artifact of the given layers to host/repo:tag
// and returns the last layer's digest.
func pushArtifact(ctx context.Context, host, repo, tag string, layers ...blob) string {
	GinkgoHelper()
	store := memory.New()
	var descs []ocispec.Descriptor
	for _, l := range layers {
		d := content.NewDescriptorFromBytes(l.mediaType, l.data)
		if l.title != "" {
			d.Annotations = map[string]string{ocispec.AnnotationTitle: l.title}
		}
		Expect(store.Push(ctx, d, bytes.NewReader(l.data))).To(Succeed())
		descs = append(descs, d)
	}
	m, err := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, "application/vnd.pogo.os-image",
		oras.PackManifestOptions{Layers: descs})
	Expect(err).NotTo(HaveOccurred())
	Expect(store.Tag(ctx, m, tag)).To(Succeed())
	r, err := remote.NewRepository(host + "/" + repo)
	Expect(err).NotTo(HaveOccurred())
	r.PlainHTTP = true
	_, err = oras.Copy(ctx, store, tag, r, tag, oras.DefaultCopyOptions)
	Expect(err).NotTo(HaveOccurred())
	return descs[len(descs)-1].Digest.String()
}
