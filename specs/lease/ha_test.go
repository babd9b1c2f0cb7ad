package lease_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/lease"
)

// holding is one client's hold of an exporter, as the client saw it.
type holding struct {
	lease, client, exporter string
	from, to                time.Time
}

var _ = Describe("two controller replicas on one etcd", Label("lease"), func() {
	DescribeTable("never grant one exporter twice while many clients race for five exporters", func(clients int, runFor time.Duration) {
		if _, err := exec.LookPath("etcd"); err != nil {
			Skip("etcd (Debian etcd-server) is not installed")
		}
		dir := GinkgoT().TempDir()
		client, peer := freePort(), freePort()
		etcd := exec.Command("etcd", "--name", "ha", "--data-dir", filepath.Join(dir, "etcd"),
			"--listen-client-urls", "http://"+client, "--advertise-client-urls", "http://"+client,
			"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
			"--initial-cluster", "ha=http://"+peer, "--log-level", "error")
		etcd.Stdout, etcd.Stderr = GinkgoWriter, GinkgoWriter
		Expect(etcd.Start()).To(Succeed())
		DeferCleanup(func() { _ = etcd.Process.Kill(); _ = etcd.Wait() })

		ep := "http://" + client
		a := newLab("--etcd-endpoints", ep)
		b := &lab{dir: a.dir, addr: freePort(), dataDir: filepath.Join(a.dir, "ctl-b"), extra: []string{"--etcd-endpoints", ep}}
		b.startController()
		// Both replicas share the CA kept in etcd.
		ca, _ := os.ReadFile(a.caFile())
		cb, _ := os.ReadFile(b.caFile())
		Expect(string(cb)).To(Equal(string(ca)))

		var exps []*exporterProc
		for i := range 5 {
			r := a
			if i >= 3 {
				r = b
			}
			name := fmt.Sprintf("ha%d", i)
			exps = append(exps, a.exporterAt(name, "pool: ha", r.addr, a.admin("create", "exporter", name)))
		}
		var lcs []*lease.Client
		for i := range clients {
			r := a
			if i%2 == 1 {
				r = b
			}
			name := fmt.Sprintf("c%02d", i)
			lc, err := lease.Dial(lease.Config{Endpoint: r.addr, Token: a.admin("create", "client", name), CA: string(ca)})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(lc.Close)
			lcs = append(lcs, lc)
		}
		Eventually(func() int {
			es, _ := lcs[0].Exporters(context.Background(), "pool=ha")
			n := 0
			for _, e := range es {
				if e.GetOnline() {
					n++
				}
			}
			return n
		}, 30*time.Second, 100*time.Millisecond).Should(Equal(5))

		var (
			mu    sync.Mutex
			holds []holding
			errs  []string
			wg    sync.WaitGroup
		)
		stopAt := time.Now().Add(runFor)
		for _, lc := range lcs {
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				ctx := context.Background()
				for time.Now().Before(stopAt) {
					h, err := hold(ctx, lc)
					mu.Lock()
					if err != nil {
						errs = append(errs, err.Error())
					} else {
						holds = append(holds, h)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		GinkgoWriter.Printf("%d holds, %d errors\n", len(holds), len(errs))
		Expect(errs).To(BeEmpty())
		Expect(len(holds)).To(BeNumerically(">=", 20))

		// Client view: per exporter, no two holds overlap.
		byExp := map[string][]holding{}
		for _, h := range holds {
			byExp[h.exporter] = append(byExp[h.exporter], h)
		}
		for name, hs := range byExp {
			sort.Slice(hs, func(i, j int) bool { return hs[i].from.Before(hs[j].from) })
			for i := 1; i < len(hs); i++ {
				Expect(hs[i].from.After(hs[i-1].to)).To(BeTrue(), "%s held by %s (lease %s) and %s (lease %s) at once", name, hs[i-1].client, hs[i-1].lease, hs[i].client, hs[i].lease)
			}
		}
		// Exporter view: its own record alternates start/end, and names
		// the client of every lease that used it.
		Eventually(func() error {
			for _, e := range exps {
				rec, _ := os.ReadFile(e.rec)
				lines := strings.Split(strings.TrimSpace(string(rec)), "\n")
				seen := map[string]string{}
				for i, ln := range lines {
					f := strings.Fields(ln)
					if len(f) != 4 {
						continue
					}
					want := "start"
					if i%2 == 1 {
						want = "end"
					}
					if f[0] != want {
						return fmt.Errorf("%s record line %d: %q, want %s", e.name, i+1, ln, want)
					}
					seen[f[1]] = f[2]
				}
				for _, h := range byExp[e.name] {
					if seen[h.lease] != h.client {
						return fmt.Errorf("%s's record lacks lease %s of %s", e.name, h.lease, h.client)
					}
				}
			}
			return nil
		}, 15*time.Second, 200*time.Millisecond).Should(Succeed())
	},
		Entry("20 clients for 20 s", 20, 20*time.Second),
		// The full size: 50 clients for a minute.
		Entry("50 clients for a minute", Label("long"), 50, time.Minute),
	)
})

// hold leases any exporter of the pool, drives it through the router and
// releases it.
func hold(ctx context.Context, lc *lease.Client) (holding, error) {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	l, err := lc.Create(ctx, lease.Request{Selector: "pool=ha", Duration: time.Minute})
	if err != nil {
		return holding{}, err
	}
	if l, err = lc.Wait(ctx, l.GetId(), nil); err != nil {
		return holding{}, err
	}
	h := holding{lease: l.GetId(), client: lc.Name(), exporter: l.GetExporter(), from: time.Now()}
	ec, err := lc.Exporter(ctx, l.GetId(), client.Options{})
	if err != nil {
		return h, err
	}
	defer ec.Close()
	sess, err := ec.Open(ctx, client.SessionOptions{})
	if err != nil {
		return h, fmt.Errorf("%s on %s: %w", lc.Name(), l.GetExporter(), err)
	}
	if err := ec.Power("power").On(ctx); err != nil {
		return h, err
	}
	sess.Close()
	h.to = time.Now()
	_, err = lc.Release(ctx, l.GetId())
	return h, err
}
