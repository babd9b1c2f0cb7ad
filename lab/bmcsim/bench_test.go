package bmcsim

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/bmc/blob"
)

// BenchmarkUpload32MiB measures a full upload+verify+update of a 32 MiB
// image over lanplus (suite 17) with the default 512-byte chunks.
func BenchmarkUpload32MiB(b *testing.B) {
	for _, chunk := range []int{512, 1000} {
		b.Run("chunk="+strconv.Itoa(chunk), func(b *testing.B) {
			s := startSim(b, withConfigDir(exampleDir(b, "config-static-bmc.json")),
				withStandIns(standIns(map[string]string{"phosphor-ipmi-flash-bmc-verify.target": "true", "phosphor-ipmi-flash-bmc-update.target": "true"})))
			img := randomImage(b, 32<<20)
			u := newUpdater(s, dialSim(b, s, 17), &progressLog{sim: s})
			u.Progress = nil
			u.ChunkSize = chunk
			b.SetBytes(int64(len(img)))
			b.ResetTimer()
			for range b.N {
				req := blob.Request{Type: "image", Image: bytes.NewReader(img), ImageSize: int64(len(img)), Signature: []byte(goodSig)}
				if err := u.Update(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBlobRoundTrip measures one Stat command round trip over an
// established lanplus session and reports p50/p99.
func BenchmarkBlobRoundTrip(b *testing.B) {
	s := startSim(b)
	c := &blob.Client{T: dialSim(b, s, 17)}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := c.Stat(ctx, "/flash/image"); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}
