package bmc_test

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/bmc"
	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/drivers/bmc/ipmi"
	"github.com/pogolab/pogo/exporter/exportertest"
)

func dialDirect(b *testing.B, s *sim) *ipmi.Transport {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := ipmi.Dial(ctx, ipmi.Config{Host: "127.0.0.1", Port: s.addr.Port, Username: user, Password: pass, Timeout: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Close(context.Background()) })
	return tr
}

// BenchmarkUpdate32MiB runs the whole update of a 32 MiB image the way
// `j bmc update` does (streamed to the exporter, spooled, uploaded over
// lanplus) and, as the baseline in the same run, blob.Updater straight
// over lanplus from memory. wire/direct is the exporter path's share of
// the direct throughput.
func BenchmarkUpdate32MiB(b *testing.B) {
	s := startSim(b, "config-static-bmc.json", map[string]string{
		"phosphor-ipmi-flash-bmc-verify.target": "true",
		"phosphor-ipmi-flash-bmc-update.target": "true",
	})
	img := image(b, 32<<20)
	d := bmc.NewClient(open(b, exportertest.Serve(b, s.exporterYAML(""))).Conn(), "bmc")
	direct := &blob.Updater{Client: &blob.Client{T: dialDirect(b, s)}}
	ctx := context.Background()
	var tDirect, tWire time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if err := direct.Update(ctx, blob.Request{Type: "image", Image: bytes.NewReader(img), ImageSize: int64(len(img)), Signature: []byte(goodSig)}); err != nil {
			b.Fatal(err)
		}
		tDirect += time.Since(t0)
		t0 = time.Now()
		if err := d.Update(ctx, request("image", img, goodSig)); err != nil {
			b.Fatal(err)
		}
		tWire += time.Since(t0)
	}
	mbps := func(d time.Duration) float64 { return float64(b.N*len(img)) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(tDirect), "direct-MB/s")
	b.ReportMetric(mbps(tWire), "wire-MB/s")
	b.ReportMetric(tDirect.Seconds()/tWire.Seconds(), "wire/direct")
}

// BenchmarkStatRoundTrip measures one blob Stat through the exporter
// (client → gRPC → driver → lanplus → BMC) against the same command sent
// straight over lanplus, and reports the p50/p99 of both.
func BenchmarkStatRoundTrip(b *testing.B) {
	s := startSim(b, "config-static-bmc.json", nil)
	d := bmc.NewClient(open(b, exportertest.Serve(b, s.exporterYAML(""))).Conn(), "bmc")
	direct := &blob.Client{T: dialDirect(b, s)}
	ctx := context.Background()
	if _, err := d.Stat(ctx, "/flash/image"); err != nil { // dial the exporter's session
		b.Fatal(err)
	}
	wire := make([]time.Duration, 0, b.N)
	base := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := direct.Stat(ctx, "/flash/image"); err != nil {
			b.Fatal(err)
		}
		base = append(base, time.Since(t0))
		t0 = time.Now()
		if _, err := d.Stat(ctx, "/flash/image"); err != nil {
			b.Fatal(err)
		}
		wire = append(wire, time.Since(t0))
	}
	b.StopTimer()
	q := func(l []time.Duration, p float64) float64 {
		slices.Sort(l)
		return float64(l[int(p*float64(len(l)-1))].Microseconds())
	}
	b.ReportMetric(q(wire, 0.50), "wire-p50-µs")
	b.ReportMetric(q(wire, 0.99), "wire-p99-µs")
	b.ReportMetric(q(base, 0.50), "direct-p50-µs")
	b.ReportMetric(q(base, 0.99), "direct-p99-µs")
	b.ReportMetric(q(wire, 0.50)/q(base, 0.50), "wire/direct-p50")
}
