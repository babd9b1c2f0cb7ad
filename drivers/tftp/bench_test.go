package tftp

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
)

// fetchTo reads name from addr with pin/tftp's client into w.
func fetchTo(addr, name string, blksize int, w io.Writer) (int64, error) {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return 0, err
	}
	c.SetBlockSize(blksize)
	c.RequestTSize(true)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return 0, err
	}
	return wt.WriteTo(w)
}

// startHPA runs Debian's tftpd-hpa on a free loopback port serving root,
// or returns "" when it cannot (not installed, not root).
func startHPA(b *testing.B, root string) string {
	if _, err := exec.LookPath("in.tftpd"); err != nil || os.Geteuid() != 0 {
		b.Logf("no tftpd-hpa baseline: needs the tftpd-hpa package and root")
		return ""
	}
	for try := 0; try < 5; try++ {
		probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		addr := probe.LocalAddr().String()
		probe.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, "in.tftpd", "--foreground", "--secure", "--user", "root", "--address", addr, root)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			cancel()
			b.Fatal(err)
		}
		b.Cleanup(func() { cancel(); cmd.Wait() })
		// Ready once it answers a request.
		for i := 0; i < 50; i++ {
			if _, err := fetchTo(addr, "probe", 512, io.Discard); err == nil {
				return addr
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}
	b.Fatal("tftpd-hpa did not come up")
	return ""
}

// BenchmarkFetch32MiB fetches a 32 MiB file with pin/tftp's client from
// this driver and, as the baseline in the same run, from Debian's
// tftpd-hpa serving the same directory.
func BenchmarkFetch32MiB(b *testing.B) {
	const size = 32 << 20
	root := b.TempDir()
	f, _ := os.Create(filepath.Join(root, "img"))
	io.CopyN(f, rand.Reader, size)
	f.Close()
	os.WriteFile(filepath.Join(root, "probe"), []byte("x"), 0o644)
	d, err := Start(Config{Root: root, Listen: "127.0.0.1:0", Subdir: "bench", HostDir: b.TempDir()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	hpa := startHPA(b, root)
	for _, bs := range []int{1468, 65464} {
		b.Run("blksize="+strconv.Itoa(bs), func(b *testing.B) {
			var ours, base time.Duration
			b.SetBytes(size)
			for b.Loop() {
				t0 := time.Now()
				if n, err := fetchTo(d.Addr().String(), "bench/img", bs, io.Discard); err != nil || n != size {
					b.Fatalf("pogo: %d bytes, %v", n, err)
				}
				ours += time.Since(t0)
				if hpa != "" {
					t0 = time.Now()
					if n, err := fetchTo(hpa, "img", bs, io.Discard); err != nil || n != size {
						b.Fatalf("tftpd-hpa: %d bytes, %v", n, err)
					}
					base += time.Since(t0)
				}
			}
			mb := float64(size) * float64(b.N) / 1e6
			b.ReportMetric(mb/ours.Seconds(), "pogo-MB/s")
			if hpa != "" {
				b.ReportMetric(mb/base.Seconds(), "hpa-MB/s")
				b.ReportMetric(base.Seconds()/ours.Seconds(), "pogo/hpa")
			}
		})
	}
}
