package controller_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// fakeExporter is one fake exporter's own record of what the controller
// told it on its Listen stream.
type fakeExporter struct {
	name string
	mu   sync.Mutex
	// linked is closed at the first assignment (the stream is served).
	linked chan struct{}
	cur    string
	// seen are the distinct leases assigned since the last reset.
	seen []string
}

func (f *fakeExporter) record(a *pb.LeaseAssignment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.linked:
	default:
		close(f.linked)
	}
	f.cur = a.GetLeaseId()
	if f.cur != "" && (len(f.seen) == 0 || f.seen[len(f.seen)-1] != f.cur) {
		f.seen = append(f.seen, f.cur)
	}
}

func (f *fakeExporter) state() (string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur, slices.Clone(f.seen)
}

func (f *fakeExporter) reset() {
	f.mu.Lock()
	f.seen = nil
	f.mu.Unlock()
}

// fakeExporters registers n exporters speaking the real ExporterLink
// protocol (Register, then a Listen stream kept open), over a few shared
// connections, and waits until every stream is served.
func fakeExporters(b *testing.B, lab *controllertest.Lab, n int) map[string]*fakeExporter {
	tc, err := transport.ControllerTLS(lab.CA(), false)
	if err != nil {
		b.Fatal(err)
	}
	var conns []*grpc.ClientConn
	for range 8 + n/500 {
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
	fakes := make(map[string]*fakeExporter, n)
	for i := range n {
		name := fmt.Sprintf("fake%05d", i)
		fakes[name] = &fakeExporter{name: name, linked: make(chan struct{})}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("fake%05d", i)
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
			f := fakes[name]
			go func() {
				for {
					m, err := st.Recv()
					if err != nil {
						return
					}
					if a := m.GetLease(); a != nil {
						f.record(a)
					}
				}
			}()
		}()
	}
	wg.Wait()
	deadline := time.After(2 * time.Minute)
	for _, f := range fakes {
		select {
		case <-f.linked:
		case <-deadline:
			b.Fatalf("exporter %s: no Listen stream served after 2m", f.name)
		}
	}
	return fakes
}

func rssMB() (cur, peak float64) {
	data, _ := os.ReadFile("/proc/self/status")
	for _, ln := range strings.Split(string(data), "\n") {
		f := strings.Fields(ln)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return cur, peak
}

// cpuTime is the CPU time the process has used (user and system): on a
// shared machine a steadier measure of work than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// checkGrants checks one round against the exporters' own records: every
// lease a client saw Ready reached the exporter it names, no two leases
// name one exporter, and no exporter was told of two leases.
func checkGrants(b *testing.B, fakes map[string]*fakeExporter, got map[string]string) {
	b.Helper()
	byExp := map[string]string{}
	for id, exp := range got {
		if other, ok := byExp[exp]; ok {
			b.Fatalf("double grant: leases %s and %s both Ready on %s", other, id, exp)
		}
		byExp[exp] = id
	}
	deadline := time.Now().Add(time.Minute)
	for exp, id := range byExp {
		f := fakes[exp]
		if f == nil {
			b.Fatalf("lease %s granted on %s, which is no fake exporter", id, exp)
		}
		for {
			cur, _ := f.state()
			if cur == id {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("exporter %s was never told of its lease %s (holds %q)", exp, id, cur)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, f := range fakes {
		if _, seen := f.state(); len(seen) > 1 {
			b.Fatalf("double grant: exporter %s was given leases %v in one round", f.name, seen)
		}
	}
}

// waitFree waits until no exporter holds a lease, then forgets what each
// was given.
func waitFree(b *testing.B, fakes map[string]*fakeExporter) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, f := range fakes {
		for {
			cur, _ := f.state()
			if cur == "" {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("exporter %s still holds released lease %s", f.name, cur)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, f := range fakes {
		f.reset()
	}
}

// BenchmarkGrant: n registered exporters and n/2 concurrent lease
// requests, at 1 000 and 10 000 exporters; grant latency (request to
// Ready, as the client sees it) against the same run's single unloaded
// request, double grants checked against the exporters' own records, and
// the RSS of the whole process (controller, embedded etcd, fakes and
// clients: an upper bound for the controller). cpu-ms/grant is the CPU
// the whole process spent per request while they ran: the machine is
// shared, and CPU time varies less with the neighbours than latency.
func BenchmarkGrant(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("exporters=%d", n), func(b *testing.B) { benchGrant(b, n, n/2) })
	}
}

func benchGrant(b *testing.B, exporters, requests int) {
	lab := controllertest.Start(b)
	fakes := fakeExporters(b, lab, exporters)
	var clients []*lease.Client
	for i := range 50 {
		clients = append(clients, lab.Client(fmt.Sprintf("user%02d", i)))
	}
	ctx := context.Background()
	// Connect every client before the clock starts: the benchmark
	// measures grants, not TLS handshakes.
	for _, c := range clients {
		if _, err := c.List(ctx, false); err != nil {
			b.Fatal(err)
		}
	}
	grant := func(c *lease.Client) (time.Duration, *pb.Lease, error) {
		start := time.Now()
		l, err := c.Create(ctx, lease.Request{Selector: "bench=yes", Duration: time.Hour})
		if err != nil {
			return 0, nil, err
		}
		l, err = c.Wait(ctx, l.GetId(), nil)
		if err != nil {
			return 0, nil, err
		}
		return time.Since(start), l, nil
	}
	release := func(c *lease.Client, id string) {
		if _, err := c.Release(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var all []time.Duration
	var single, cpu time.Duration
	for range b.N {
		d, l, err := grant(clients[0])
		if err != nil {
			b.Fatal(err)
		}
		single = d
		b.StopTimer()
		checkGrants(b, fakes, map[string]string{l.GetId(): l.GetExporter()})
		release(clients[0], l.GetId())
		// Every exporter free again, as its own record says, before the
		// next round starts its records afresh.
		waitFree(b, fakes)
		b.StartTimer()
		cpu0 := cpuTime()
		lats := make([]time.Duration, requests)
		ls := make([]*pb.Lease, requests)
		var wg sync.WaitGroup
		for i := range requests {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, l, err := grant(clients[i%len(clients)])
				if err != nil {
					b.Error(err)
					return
				}
				lats[i], ls[i] = d, l
			}()
		}
		wg.Wait()
		cpu += cpuTime() - cpu0
		all = append(all, lats...)
		b.StopTimer()
		if b.Failed() {
			b.FailNow()
		}
		got := map[string]string{}
		for _, l := range ls {
			got[l.GetId()] = l.GetExporter()
		}
		checkGrants(b, fakes, got)
		for i, l := range ls {
			release(clients[i%len(clients)], l.GetId())
		}
		waitFree(b, fakes)
		b.StartTimer()
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	p50, p99 := all[len(all)/2], all[len(all)*99/100]
	rss, peak := rssMB()
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(single.Microseconds())/1000, "unloaded-ms")
	b.ReportMetric(float64(p99)/float64(single), "p99/unloaded")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(len(all)), "cpu-ms/grant")
	b.ReportMetric(rss, "rss-MB")
	b.ReportMetric(peak, "peak-rss-MB")
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
