package controller_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/token"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/client/lease"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/controllerlink"
	"github.com/pogolab/pogo/lab/controller"
	"github.com/pogolab/pogo/lab/controller/controllertest"
)

type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{token.MetadataKey: "Bearer " + string(t)}, nil
}
func (tokenCreds) RequireTransportSecurity() bool { return true }

// fakeExporters registers n exporters speaking the real ExporterLink
// protocol (Register, then a Listen stream kept open), over a few shared
// connections.
func fakeExporters(b *testing.B, lab *controllertest.Lab, n int) {
	tc, err := transport.ControllerTLS(lab.CA(), false)
	if err != nil {
		b.Fatal(err)
	}
	var conns []*grpc.ClientConn
	for range 8 {
		c, err := grpc.NewClient("dns:///"+lab.C.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	admin := lab.Admin()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("fake%04d", i)
			r, err := admin.CreateExporter(ctx, &pb.CreateIdentityRequest{Name: name})
			if err != nil {
				b.Error(err)
				return
			}
			cli := pb.NewExporterLinkClient(conns[i%len(conns)])
			creds := grpc.PerRPCCredentials(tokenCreds(r.GetToken()))
			if _, err := cli.Register(ctx, &pb.RegisterRequest{Labels: map[string]string{"bench": "yes", "rack": strconv.Itoa(i % 20)}, Report: &pb.ReportResponse{Name: name}}, creds); err != nil {
				b.Error(err)
				return
			}
			st, err := cli.Listen(ctx, creds)
			if err != nil {
				b.Error(err)
				return
			}
			go func() {
				for {
					if _, err := st.Recv(); err != nil {
						return
					}
				}
			}()
		}()
	}
	wg.Wait()
}

func rssMB() float64 {
	data, _ := os.ReadFile("/proc/self/status")
	for _, ln := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(ln, "VmRSS:") {
			f := strings.Fields(ln)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkGrant: 1000 registered exporters, 500 concurrent lease
// requests; grant latency (request to Ready, as the client sees it)
// against the same run's single unloaded request, and the RSS of the
// whole process (controller, embedded etcd, fakes and clients: an upper
// bound for the controller).
func BenchmarkGrant(b *testing.B) {
	lab := controllertest.Start(b)
	fakeExporters(b, lab, 1000)
	var clients []*lease.Client
	for i := range 50 {
		clients = append(clients, lab.Client(fmt.Sprintf("user%02d", i)))
	}
	controllertest.WaitOnline(b, clients[0], "fake0000", "fake0999")
	ctx := context.Background()
	grant := func(c *lease.Client) (time.Duration, string, error) {
		start := time.Now()
		l, err := c.Create(ctx, lease.Request{Selector: "bench=yes", Duration: time.Hour})
		if err != nil {
			return 0, "", err
		}
		if _, err := c.Wait(ctx, l.GetId(), nil); err != nil {
			return 0, "", err
		}
		return time.Since(start), l.GetId(), nil
	}
	b.ResetTimer()
	var all []time.Duration
	var single time.Duration
	for range b.N {
		d, id, err := grant(clients[0])
		if err != nil {
			b.Fatal(err)
		}
		single = d
		clients[0].Release(ctx, id)
		lats := make([]time.Duration, 500)
		ids := make([]string, 500)
		var wg sync.WaitGroup
		for i := range 500 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, id, err := grant(clients[i%len(clients)])
				if err != nil {
					b.Error(err)
					return
				}
				lats[i], ids[i] = d, id
			}()
		}
		wg.Wait()
		all = append(all, lats...)
		b.StopTimer()
		for i, id := range ids {
			clients[i%len(clients)].Release(ctx, id)
		}
		b.StartTimer()
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	p50, p99 := all[len(all)/2], all[len(all)*99/100]
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(single.Microseconds())/1000, "unloaded-ms")
	b.ReportMetric(float64(p99)/float64(single), "p99/unloaded")
	b.ReportMetric(rssMB(), "rss-MB")
}

const streamBytes = 256 << 20

// pump writes streamBytes through w while the other end discards them,
// and returns the throughput in MB/s.
func pump(b *testing.B, w io.Writer, done <-chan int64) float64 {
	buf := make([]byte, 256<<10)
	start := time.Now()
	for n := 0; n < streamBytes; n += len(buf) {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if c, ok := w.(interface{ CloseWrite() error }); ok {
		c.CloseWrite()
	}
	got := <-done
	if got < streamBytes {
		b.Fatalf("reader got %d of %d bytes", got, streamBytes)
	}
	return float64(streamBytes) / 1e6 / time.Since(start).Seconds()
}

// discard reads want bytes in 256 KiB reads (the same for every variant)
// and sends how many arrived.
func discard(c net.Conn, done chan<- int64, want int64) {
	buf := make([]byte, 256<<10)
	var n int64
	for n < want {
		k, err := c.Read(buf)
		n += int64(k)
		if err != nil {
			break
		}
	}
	done <- n
}

// sink is a lease on an exporter link whose tunnels the benchmark reads
// directly.
type sink struct {
	ln    net.Listener
	alice *lease.Client
	id    string
}

func newSink(b *testing.B, lab *controllertest.Lab) sink {
	tok := lab.Token("exporter", "sink")
	link, err := controllerlink.New(controllerlink.Options{Endpoint: lab.C.Addr(), Token: tok, CA: lab.CA(), NoTLS: lab.NoTLS, Labels: map[string]string{"sink": "yes"}, Log: controllertest.Logger(b)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); link.Close() })
	go link.Run(ctx)
	alice := lab.Client("alice")
	controllertest.WaitOnline(b, alice, "sink")
	l, err := alice.Create(ctx, lease.Request{Selector: "sink", Duration: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := alice.Wait(ctx, l.GetId(), nil); err != nil {
		b.Fatal(err)
	}
	return sink{ln: link.Listener(), alice: alice, id: l.GetId()}
}

// routed pumps through a tunnel of s and returns MB/s.
func (s sink) routed(b *testing.B) float64 {
	done := make(chan int64, 1)
	go func() {
		c, err := s.ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer c.Close()
		discard(c, done, streamBytes)
	}()
	tc, err := s.alice.Tunnel(context.Background(), s.id)
	if err != nil {
		b.Fatal(err)
	}
	defer tc.Close()
	return pump(b, tc, done)
}

// rawTCP pumps through a plain TCP connection to dial, whose far end
// ln accepts, and returns MB/s.
func rawTCP(b *testing.B, ln net.Listener, dial string) float64 {
	done := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- 0
			return
		}
		defer c.Close()
		discard(c, done, streamBytes)
	}()
	c, err := net.Dial("tcp", dial)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	return pump(b, c, done)
}

// bareRelay accepts connections on ln and splices each to target, both
// ways, with nothing else on the path.
func bareRelay(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			t, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer t.Close()
			go func() {
				_, _ = io.Copy(c, t)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
			_, _ = io.Copy(t, c)
			_ = t.(*net.TCPConn).CloseWrite()
			// Wait for the far end to finish reading before closing.
			_, _ = io.Copy(io.Discard, c)
		}()
	}
}

// BenchmarkStream compares a byte stream routed through the controller
// (client → router → exporter link, with each --tunnel-security: e2e,
// tls and plain), direct to an exporter (TLS over TCP, as jmp run
// --listen serves) and raw loopback TCP, in the same run.
func BenchmarkStream(b *testing.B) {
	sinkWith := func(sec pb.TunnelSecurity) sink {
		return newSink(b, controllertest.StartWith(b, func(o *controller.Options) { o.Tunnels = sec }))
	}
	e2eSink := sinkWith(pb.TunnelSecurity_TUNNEL_SECURITY_E2E)
	tlsSink := sinkWith(pb.TunnelSecurity_TUNNEL_SECURITY_TLS)
	plainSink := sinkWith(pb.TunnelSecurity_TUNNEL_SECURITY_PLAIN)

	// Direct: TLS over loopback TCP.
	tc, _, err := exporter.TLSConfig("", "")
	if err != nil {
		b.Fatal(err)
	}
	tl, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		b.Fatal(err)
	}
	defer tl.Close()
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer rl.Close()

	// Bare relay: raw TCP through the least a relay can do (one process
	// accepting both ends and letting the kernel splice them), the ceiling
	// for any router on this machine.
	relayIn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer relayIn.Close()
	go bareRelay(relayIn, rl.Addr().String())

	var e2e, routed, plain, direct, raw, relay float64
	b.SetBytes(4 * streamBytes)
	for range b.N {
		e2e += e2eSink.routed(b)
		routed += tlsSink.routed(b)
		plain += plainSink.routed(b)

		// Direct.
		done := make(chan int64, 1)
		go func() {
			c, err := tl.Accept()
			if err != nil {
				done <- 0
				return
			}
			defer c.Close()
			discard(c, done, streamBytes)
		}()
		dc, err := tls.Dial("tcp", tl.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			b.Fatal(err)
		}
		direct += pump(b, dc, done)
		dc.Close()

		// Raw, straight and through the bare relay.
		raw += rawTCP(b, rl, rl.Addr().String())
		relay += rawTCP(b, rl, relayIn.Addr().String())
	}
	n := float64(b.N)
	b.ReportMetric(e2e/n, "routed-e2e-MB/s")
	b.ReportMetric(routed/n, "routed-tls-MB/s")
	b.ReportMetric(plain/n, "routed-plain-MB/s")
	b.ReportMetric(direct/n, "direct-MB/s")
	b.ReportMetric(raw/n, "raw-MB/s")
	b.ReportMetric(relay/n, "bare-relay-MB/s")
	b.ReportMetric(relay/raw, "bare-relay/raw")
	b.ReportMetric(e2e/raw, "routed-e2e/raw")
	b.ReportMetric(routed/raw, "routed-tls/raw")
	b.ReportMetric(plain/raw, "routed-plain/raw")
	b.ReportMetric(plain/relay, "routed-plain/bare-relay")
	b.ReportMetric(e2e/direct, "routed-e2e/direct")
}
