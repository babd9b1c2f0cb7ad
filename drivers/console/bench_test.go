package console_test

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/exporter/exportertest"
)

// sink is a console whose port counts what it is given, so the benchmark
// measures the client↔exporter stream and nothing behind it.
type sink struct {
	*console.Hub
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (s *sink) Write(p []byte) (int, error) {
	if s.n.Add(int64(len(p))) >= s.want {
		select {
		case s.done <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

var theSink = &sink{done: make(chan struct{}, 1)}

func init() {
	drivers.Register(drivers.Kind{Name: "bench-sink", New: func(context.Context, *drivers.Build) (drivers.Driver, error) {
		theSink.Hub = console.NewHub(theSink, 0)
		return theSink, nil
	}})
}

const streamBytes = 128 << 20

// BenchmarkStreamThroughput writes through a console attachment (client →
// gRPC → exporter → port) and, in the same run, the same bytes over a raw
// loopback TCP connection. Goal: ratio ≥ 0.8.
func BenchmarkStreamThroughput(b *testing.B) {
	ctx := context.Background()
	c := exportertest.Start(b, "kind: ExporterConfig\nexport:\n  sink:\n    type: bench-sink\n")
	a, err := c.Console("sink").Attach(ctx, console.AttachOptions{Write: true})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	chunk := make([]byte, 256<<10)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	read := make(chan struct{})
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, conn); conn.Close(); read <- struct{}{} }()
		}
	}()

	var grpcTime, tcpTime time.Duration
	b.SetBytes(streamBytes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		theSink.n.Store(0)
		theSink.want = streamBytes
		start := time.Now()
		for sent := 0; sent < streamBytes; sent += len(chunk) {
			if _, err := a.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		<-theSink.done
		grpcTime += time.Since(start)

		conn, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		for sent := 0; sent < streamBytes; sent += len(chunk) {
			if _, err := conn.Write(chunk); err != nil {
				b.Fatal(err)
			}
		}
		conn.(*net.TCPConn).CloseWrite()
		<-read // count the time until the far end has read it all
		tcpTime += time.Since(start)
		conn.Close()
	}
	mbps := func(d time.Duration) float64 { return float64(streamBytes) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(grpcTime), "exporter-MB/s")
	b.ReportMetric(mbps(tcpTime), "rawtcp-MB/s")
	b.ReportMetric(mbps(grpcTime)/mbps(tcpTime), "ratio")
}
