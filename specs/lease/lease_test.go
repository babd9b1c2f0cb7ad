package lease_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/client"
)

var leaseID = regexp.MustCompile(`lease ([0-9a-f]{12}) `)

func waitFile(path string, timeout time.Duration) {
	GinkgoHelper()
	Eventually(func() error { _, err := os.Stat(path); return err }, timeout, 20*time.Millisecond).Should(Succeed())
}

// waitContent waits until path has content: a shell creates a file it
// redirects to before the command writing it has run.
func waitContent(path string, timeout time.Duration) {
	GinkgoHelper()
	Eventually(func() (int64, error) {
		fi, err := os.Stat(path)
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}, timeout, 20*time.Millisecond).Should(BeNumerically(">", 0))
}

var _ = Describe("leases through the controller", Label("lease"), func() {
	It("leases by label, drives the board through the router and releases it", func() {
		l := newLab()
		e := l.exporter("board1", "board: qemu, lab: ci")
		l.exporter("board2", "board: rpi, lab: ci")
		alice := l.user("alice")
		Eventually(func() string { out, _ := alice.jmp("get", "exporters", "-l", "lab=ci"); return out }, 20*time.Second, 100*time.Millisecond).
			Should(And(MatchRegexp(`board1\s+true\s+true`), MatchRegexp(`board2\s+true\s+true`)))

		out, err := alice.jmp("shell", "-l", "board in (qemu),lab=ci", "--duration", "5m", "--", "sh", "-c", "j power on && j power status")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("ready on board1"))
		// The exporter's own record: one lease, alice's, started and ended;
		// its afterLease hook switched the board off.
		Eventually(func() string { rec, _ := os.ReadFile(e.rec); return string(rec) }, 10*time.Second, 50*time.Millisecond).Should(MatchRegexp(`(?m)^start [0-9a-f]{12} alice .*\nend [0-9a-f]{12} alice `))
		Expect(e.powerState()).To(Equal("off"))
		out, err = alice.jmp("get", "leases", "-a")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(MatchRegexp(`ended\s+board1\s+.*released by alice`))

		By("the shell's exit status is the command's")
		out, err = alice.jmp("shell", "-l", "board=qemu", "--", "sh", "-c", "exit 7")
		var ee interface{ ExitCode() int }
		Expect(errors.As(err, &ee)).To(BeTrue(), out)
		Expect(ee.ExitCode()).To(Equal(7))
	})

	// The other specs use the default, end-to-end TLS through the router.
	DescribeTable("routes tunnels with the other --tunnel-security modes", func(mode string) {
		l := newLab("--tunnel-security", mode)
		e := l.exporter("board1", "board: qemu")
		alice := l.user("alice")
		Eventually(func() string { out, _ := alice.jmp("get", "exporters"); return out }, 20*time.Second, 100*time.Millisecond).
			Should(MatchRegexp(`board1\s+true\s+true`))
		out, err := alice.jmp("shell", "-l", "board=qemu", "--", "sh", "-c", "j power on && j power status")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("ready on board1"))
		Expect(out).To(MatchRegexp(`(?m)^on\r?$`))
		Eventually(func() string { rec, _ := os.ReadFile(e.rec); return string(rec) }, 10*time.Second, 50*time.Millisecond).Should(MatchRegexp(`(?m)^end [0-9a-f]{12} alice `))
		Expect(e.powerState()).To(Equal("off"))
	},
		Entry("tls: TLS legs ended by the router", "tls"),
		Entry("plain: plain TCP, the API keeping TLS", "plain"),
	)

	It("has the exporter refuse a client that is not the lease holder", func() {
		l := newLab()
		e := l.exporter("board1", "board: qemu")
		alice := l.user("alice")
		sh := alice.shell("-l", "board=qemu", "--", "sh", "-c", "touch "+filepath.Join(l.dir, "held")+"; sleep 30")
		waitFile(filepath.Join(l.dir, "held"), 30*time.Second)

		// mallory reaches the exporter's own socket, claiming any name.
		ctx := context.Background()
		for _, name := range []string{"mallory", "alice"} {
			c, err := client.Dial(ctx, "unix://"+e.sock, client.Options{Name: name})
			Expect(err).NotTo(HaveOccurred())
			_, err = c.Open(ctx, client.SessionOptions{})
			c.Close()
			Expect(err).To(HaveOccurred())
			if name == "mallory" {
				Expect(errors.Is(err, errdefs.ErrNotHeld)).To(BeTrue(), err.Error())
				Expect(err.Error()).To(ContainSubstring("not leased to mallory"))
			} else {
				// alice's name gets no second session beside her shell's.
				Expect(errors.Is(err, errdefs.ErrInUse)).To(BeTrue(), err.Error())
			}
		}
		// bob, with a token of his own, cannot dial alice's lease.
		bob := l.user("bob")
		m := leaseID.FindStringSubmatch(sh.out.String())
		Expect(m).NotTo(BeNil(), sh.out.String())
		out, err := bob.jmp("shell", "--lease", m[1], "--", "true")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("not found"))
		sh.stop(syscall.SIGTERM)
	})

	It("serves the queue in order and by priority, each the moment the previous releases", func() {
		l := newLab()
		l.exporter("board1", "board: qemu")
		users := map[string]*user{}
		for _, n := range []string{"holder", "first", "second", "vip"} {
			users[n] = l.user(n)
		}
		l.admin("policy", "vip", "--priority", "5")
		Eventually(func() string { out, _ := users["holder"].jmp("get", "exporters"); return out }, 20*time.Second, 100*time.Millisecond).Should(MatchRegexp(`board1\s+true`))

		rel := func(n string) string { return filepath.Join(l.dir, "release-"+n) }
		got := func(n string) string { return filepath.Join(l.dir, "got-"+n) }
		script := func(n string) []string {
			return []string{"-l", "board=qemu", "--", "sh", "-c", "date +%s.%N > " + got(n) + "; j power on; while [ ! -f " + rel(n) + " ]; do sleep 0.02; done"}
		}
		holder := users["holder"].shell(script("holder")...)
		waitContent(got("holder"), 30*time.Second)
		// Queue in this order: first, second (priority 0), then vip (5).
		shells := map[string]*proc{}
		for _, n := range []string{"first", "second", "vip"} {
			shells[n] = users[n].shell(script(n)...)
			Eventually(shells[n].out.String, 20*time.Second, 20*time.Millisecond).Should(ContainSubstring("ahead in the queue"))
		}
		Eventually(shells["second"].out.String, 10*time.Second).Should(ContainSubstring("2 ahead in the queue"))
		order := []string{"holder", "vip", "first", "second"}
		for i := 1; i < len(order); i++ {
			prev, next := order[i-1], order[i]
			released := time.Now()
			Expect(os.WriteFile(rel(prev), nil, 0o644)).To(Succeed())
			waitContent(got(next), 20*time.Second)
			// Nobody else got it in between.
			for _, other := range order[i+1:] {
				_, err := os.Stat(got(other))
				Expect(err).To(HaveOccurred(), other+" was served before "+next)
			}
			b, _ := os.ReadFile(got(next))
			at, err := parseDate(string(b))
			Expect(err).NotTo(HaveOccurred())
			wait := at.Sub(released)
			Expect(wait).To(BeNumerically(">", 0), next+" was served before "+prev+" released")
			GinkgoWriter.Printf("%s served %s after %s released\n", next, wait, prev)
			// Release, grant, hooks, tunnel and session: well under 3 s
			// with no polling anywhere.
			Expect(wait).To(BeNumerically("<", 3*time.Second))
		}
		Expect(os.WriteFile(rel("second"), nil, 0o644)).To(Succeed())
		for _, p := range append([]*proc{holder}, shells["first"], shells["second"], shells["vip"]) {
			Eventually(p.exited, 20*time.Second).Should(BeTrue(), p.out.String())
			Expect(exitCode(p)).To(Equal(0), p.out.String())
		}
	})

	It("keeps the lease across a controller restart and survives an exporter restart", func() {
		l := newLab()
		e := l.exporter("board1", "board: qemu")
		alice := l.user("alice")
		f := func(n string) string { return filepath.Join(l.dir, n) }
		script := `set -e
j power on; touch ` + f("on") + `
while [ ! -f ` + f("go1") + ` ]; do sleep 0.05; done
# controller restarted: the next command works (the shell reconnects)
for i in $(seq 100); do j power status >/dev/null 2>&1 && break; sleep 0.1; done
j power status; touch ` + f("step1") + `
while [ ! -f ` + f("go2") + ` ]; do sleep 0.05; done
# exporter killed: a clear error, not a hang
if j power status > ` + f("err") + ` 2>&1; then exit 4; fi
touch ` + f("failed") + `
while [ ! -f ` + f("go3") + ` ]; do sleep 0.05; done
for i in $(seq 150); do j power status >/dev/null 2>&1 && break; sleep 0.1; done
j power status; touch ` + f("step3")
		sh := alice.shell("-l", "board=qemu", "--duration", "10m", "--", "sh", "-c", script)
		waitFile(f("on"), 30*time.Second)

		By("restarting the controller")
		l.ctl.stop(syscall.SIGTERM)
		l.startController()
		out, err := alice.jmp("get", "leases")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(MatchRegexp(`ready\s+board1`))
		Expect(os.WriteFile(f("go1"), nil, 0o644)).To(Succeed())
		waitFile(f("step1"), 30*time.Second)
		Expect(e.powerState()).To(Equal("on"), "a controller restart must not power the board off")

		By("killing the exporter")
		e.p.stop(syscall.SIGKILL)
		Expect(os.WriteFile(f("go2"), nil, 0o644)).To(Succeed())
		waitFile(f("failed"), 30*time.Second)
		msg, _ := os.ReadFile(f("err"))
		GinkgoWriter.Printf("while the exporter is down: %s\n", msg)
		Expect(string(msg)).To(ContainSubstring("offline"))
		e.start()
		Expect(os.WriteFile(f("go3"), nil, 0o644)).To(Succeed())
		waitFile(f("step3"), 30*time.Second)
		Eventually(sh.exited, 20*time.Second).Should(BeTrue())
		Expect(exitCode(sh)).To(Equal(0), sh.out.String())
	})

	It("gives clear errors: bad tokens, unsatisfiable selectors, shortening, expired leases", func() {
		l := newLab()
		l.exporter("board1", "board: qemu")
		l.admin("disable", "exporter", "board1")
		alice := l.user("alice")

		bad := &user{name: "eve", env: []string{"POGO_CLIENT_CONFIG=" + filepath.Join(l.dir, "eve.yaml")}}
		out, err := bad.jmp("login", "--endpoint", l.addr, "--token", "pogo.c.ZXZl."+strings.Repeat("0", 64), "--ca", l.caFile())
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring(`client "eve": unknown or revoked token`))
		out, err = bad.jmp("login", "--endpoint", l.addr, "--token", "nonsense", "--ca", l.caFile())
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("malformed token"))

		Eventually(func() string { out, _ := alice.jmp("get", "exporters"); return out }, 20*time.Second, 100*time.Millisecond).Should(MatchRegexp(`board1\s+true\s+false`))
		out, err = alice.jmp("create", "lease", "-l", "board=rpi", "--duration", "1m")
		Expect(err).To(HaveOccurred())
		Expect(out).To(MatchRegexp(`unsatisfiable: no exporter matches selector board=rpi \(exporters you may lease: board1\)`))
		out, err = alice.jmp("create", "lease", "-l", "board in (qemu", "--duration", "1m")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("unclosed ("))

		By("a disabled exporter is never granted; enabling it grants at once")
		out, err = alice.jmp("create", "lease", "-l", "board=qemu", "--duration", "3s")
		Expect(err).NotTo(HaveOccurred(), out)
		id := strings.Fields(strings.Split(out, "\n")[1])[0]
		Consistently(func() string { out, _ := alice.jmp("get", "leases"); return out }, time.Second, 200*time.Millisecond).Should(MatchRegexp(`pending`))
		l.admin("enable", "exporter", "board1")
		Eventually(func() string { out, _ := alice.jmp("get", "leases"); return out }, 10*time.Second, 100*time.Millisecond).Should(MatchRegexp(id + `\s+ready\s+board1`))

		out, err = alice.jmp("update", "lease", id, "--extend", "-5m")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("only ever get longer"))
		out, err = alice.jmp("update", "lease", id, "--extend", "1s")
		Expect(err).NotTo(HaveOccurred(), out)

		By("an expired lease is an immediate error, never a hang")
		Eventually(func() string { out, _ := alice.jmp("get", "leases", "-a"); return out }, 10*time.Second, 100*time.Millisecond).Should(MatchRegexp(id + `\s+ended.*expired at`))
		startAt := time.Now()
		out, err = alice.jmp("shell", "--lease", id, "--", "true")
		Expect(err).To(HaveOccurred())
		Expect(out).To(MatchRegexp(`lease ` + id + ` ended: expired at`))
		Expect(time.Since(startAt)).To(BeNumerically("<", 5*time.Second))
	})
})
