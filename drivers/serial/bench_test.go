package serial_test

import (
	"context"
	"io"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/creack/pty"
	goserial "go.bug.st/serial"

	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/exporter/exportertest"
)

// echo plays a board that echoes every byte back.
func echo(master *os.File) {
	buf := make([]byte, 4096)
	for {
		n, err := master.Read(buf)
		if err != nil {
			return
		}
		if _, err := master.Write(buf[:n]); err != nil {
			return
		}
	}
}

func roundTrips(b *testing.B, rw io.ReadWriter, n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	one := []byte{'x'}
	got := make([]byte, 1)
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := rw.Write(one); err != nil {
			b.Fatal(err)
		}
		for {
			k, err := rw.Read(got)
			if err != nil {
				b.Fatal(err)
			}
			if k == 1 {
				break
			}
		}
		out = append(out, time.Since(start))
	}
	return out
}

func pct(d []time.Duration, p float64) float64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000
}

// BenchmarkConsoleEcho compares a one-byte echo round trip through the
// exporter (client → gRPC → serial driver → pty → board and back) with the
// same echo over the raw pty. Goal: p99 through the exporter < 2 ms.
func BenchmarkConsoleEcho(b *testing.B) {
	ctx := context.Background()
	master, tty, err := pty.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer master.Close()
	defer tty.Close()
	go echo(master)
	const n = 500

	raw, err := goserial.Open(tty.Name(), &goserial.Mode{BaudRate: 115200})
	if err != nil {
		b.Fatal(err)
	}
	rawLat := roundTrips(b, raw, n)
	raw.Close()

	c := exportertest.Start(b, "kind: ExporterConfig\nexport:\n  serial:\n    type: serial\n    config:\n      url: "+tty.Name()+"\n")
	a, err := c.Console("serial").Attach(ctx, console.AttachOptions{Write: true})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	b.ResetTimer()
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		lat = append(lat, roundTrips(b, a, n)...)
	}
	b.StopTimer()
	b.ReportMetric(pct(lat, 0.5), "exporter-p50-ms")
	b.ReportMetric(pct(lat, 0.99), "exporter-p99-ms")
	b.ReportMetric(pct(rawLat, 0.5), "rawpty-p50-ms")
	b.ReportMetric(pct(rawLat, 0.99), "rawpty-p99-ms")
}
