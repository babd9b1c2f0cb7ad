package lease_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Jumpstarter's end-to-end hook suite (e2e/test/hooks_test.go,
// exit_on_lease_end_test.go, direct_listener_test.go), asserted against
// pogo: its exporter fragments (testdata/jumpstarter, hook sections byte
// for byte) run under jmp run with a real controller, and jmp shell is
// what the user sees.

// jsFixture is a fragment of testdata/jumpstarter with its power file.
func jsFixture(name, power string) string {
	GinkgoHelper()
	b, err := os.ReadFile(filepath.Join("testdata", "jumpstarter", name))
	Expect(err).NotTo(HaveOccurred())
	return strings.ReplaceAll(string(b), "@POWER@", power)
}

// jsExporter runs fixture under jmp run, linked to the lab's controller
// with labels board=NAME, as Jumpstarter's suite merges a fragment into
// the exporter config `jmp admin create exporter` wrote.
func (l *lab) jsExporter(name, fixture string) *exporterProc {
	GinkgoHelper()
	token := l.admin("create", "exporter", name)
	d := filepath.Join(l.dir, "exp-"+name)
	Expect(os.MkdirAll(d, 0o755)).To(Succeed())
	e := &exporterProc{name: name, cfg: filepath.Join(d, "exporter.yaml"), power: filepath.Join(d, "power"), sock: filepath.Join(d, "exporter.sock")}
	head := fmt.Sprintf("apiVersion: jumpstarter.dev/v1alpha1\nkind: ExporterConfig\nmetadata:\n  name: %s\n  labels: {board: %s}\nendpoint: %s\ntoken: %s\ntls:\n  ca: %s\n", name, name, l.addr, token, l.caFile())
	Expect(os.WriteFile(e.cfg, []byte(head+jsFixture(fixture, e.power)), 0o644)).To(Succeed())
	e.start()
	return e
}

// online waits until the controller lists the exporter online and free.
func (u *user) online(name string) {
	GinkgoHelper()
	Eventually(func() string { out, _ := u.jmp("get", "exporters"); return out }, 30*time.Second, 100*time.Millisecond).
		Should(MatchRegexp(`(?m)^` + name + `\s+true\s+true`))
}

// leaseShell is Jumpstarter's `jmp shell --selector … j power on`.
func (u *user) leaseShell(board string, cmd ...string) (string, error) {
	if len(cmd) == 0 {
		cmd = []string{"j", "power", "on"}
	}
	return u.jmp(append([]string{"shell", "-l", "board=" + board, "--"}, cmd...)...)
}

var _ = Describe("Jumpstarter's hook suite, against pogo", Label("lease"), Ordered, func() {
	var (
		l     *lab
		alice *user
		n     int
	)
	BeforeAll(func() {
		l = newLab()
		alice = l.user("alice")
	})
	// exporter starts a fresh exporter for fixture; each spec gets its own.
	exporter := func(fixture string) (*exporterProc, string) {
		GinkgoHelper()
		n++
		name := fmt.Sprintf("hooks%d", n)
		e := l.jsExporter(name, fixture)
		alice.online(name)
		return e, name
	}

	Context("keys", func() {
		It("exec: /bin/bash picks the interpreter (F1)", func() {
			_, b := exporter("exporter-hooks-exec-bash.yaml")
			out, err := alice.leaseShell(b)
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(MatchRegexp(`BASH_HOOK: lease=[0-9a-f]{12}\b`))
			Expect(out).To(ContainSubstring("BASH_HOOK: complete"))
		})

		It("a script naming a file runs the file (F3)", func() {
			script := "/tmp/jumpstarter-e2e-hook-script.sh"
			Expect(os.WriteFile(script, []byte("#!/bin/sh\necho \"SCRIPTFILE_HOOK: executed from file\"\necho \"SCRIPTFILE_HOOK: complete\"\n"), 0o755)).To(Succeed())
			DeferCleanup(os.Remove, script)
			_, b := exporter("exporter-hooks-exec-script-file.yaml")
			out, err := alice.leaseShell(b)
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(ContainSubstring("SCRIPTFILE_HOOK: executed from file"))
			Expect(out).To(ContainSubstring("SCRIPTFILE_HOOK: complete"))
		})

		It("a .py script runs with python3, j wired to the exporter (F2)", func() {
			script := "/tmp/jumpstarter-e2e-hook-python.py"
			Expect(os.WriteFile(script, []byte(`import os, subprocess
lease = os.environ.get("LEASE_NAME", "unknown")
print(f"PYTHON_HOOK: lease={lease}", flush=True)
subprocess.run(["j", "power", "on"], check=True)
print("PYTHON_HOOK: driver API works")
print("PYTHON_HOOK: complete")
`), 0o644)).To(Succeed())
			DeferCleanup(os.Remove, script)
			e, b := exporter("exporter-hooks-exec-python.yaml")
			out, err := alice.leaseShell(b, "j", "power", "status")
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(MatchRegexp(`PYTHON_HOOK: lease=[0-9a-f]{12}\b`))
			Expect(out).To(ContainSubstring("PYTHON_HOOK: driver API works"))
			Expect(out).To(ContainSubstring("PYTHON_HOOK: complete"))
			Expect(out).To(MatchRegexp(`(?m)^on\r?$`), "the hook's j power on reached the board")
			Expect(e.p.out.String()).NotTo(ContainSubstring("Jumpstarter's Python API"))
		})

		It("warns at start-up when a script imports Jumpstarter's Python API (F2, verbatim)", func() {
			script := "/tmp/jumpstarter-e2e-hook-python.py"
			Expect(os.WriteFile(script, []byte(`import os
from jumpstarter.utils.env import env

lease = os.environ.get("LEASE_NAME", "unknown")
print(f"PYTHON_HOOK: lease={lease}")

with env() as client:
    client.power.on()
    print("PYTHON_HOOK: driver API works")

print("PYTHON_HOOK: complete")
`), 0o644)).To(Succeed())
			DeferCleanup(os.Remove, script)
			e, b := exporter("exporter-hooks-exec-python.yaml")
			Expect(e.p.out.String()).To(ContainSubstring(`jumpstarter-e2e-hook-python.py:2: \"from jumpstarter.utils.env import env\" imports Jumpstarter's Python API`))
			// It still runs, fails on the import, and onFailure: warn says so.
			out, err := alice.leaseShell(b)
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(MatchRegexp(`Warning: beforeLease hook failed: exit status 1: .*(ModuleNotFoundError|ImportError)`))
		})

		It("exitOnLeaseEnd: true exits after one lease, not before", func() {
			e, b := exporter("exporter-exit-on-lease-end.yaml")
			Consistently(e.p.exited, 3*time.Second, 200*time.Millisecond).Should(BeFalse(), "exited before serving a lease")
			out, err := alice.leaseShell(b)
			Expect(err).NotTo(HaveOccurred(), out)
			Eventually(e.p.exited, 30*time.Second, 100*time.Millisecond).Should(BeTrue(), e.p.out.String())
			Expect(exitCode(e.p)).To(Equal(0), e.p.out.String())
			Expect(e.powerState()).To(Equal("off"))
			Eventually(func() string { out, _ := alice.jmp("get", "exporters"); return out }, 30*time.Second, 100*time.Millisecond).
				Should(MatchRegexp(`(?m)^` + b + `\s+false\s+true`))
		})
	})

	Context("environment and output", func() {
		It("hooks see LEASE_NAME and CLIENT_NAME; their output reaches jmp shell in order (A3, E1-E3)", func() {
			e, b := exporter("exporter-hooks-both.yaml")
			out, err := alice.leaseShell(b, "j", "power", "status")
			Expect(err).NotTo(HaveOccurred(), out)
			id := regexp.MustCompile(`lease ([0-9a-f]{12}) requested`).FindStringSubmatch(out)
			Expect(id).NotTo(BeNil(), out)
			Expect(out).To(ContainSubstring("[beforeLease] BEFORE_HOOK: lease=" + id[1] + " client=alice"))
			Expect(out).To(ContainSubstring("BEFORE_HOOK: complete"))
			Expect(out).To(ContainSubstring("[afterLease] AFTER_HOOK: cleaning up"))
			Expect(out).To(ContainSubstring("AFTER_HOOK: complete"))
			Expect(out).To(MatchRegexp(`(?m)^on\r?$`), "beforeLease's j power on")
			Expect(strings.Index(out, "BEFORE_HOOK:")).To(BeNumerically("<", strings.Index(out, "AFTER_HOOK:")))
			// Infrastructure stays in the exporter's log (H1).
			Expect(out).NotTo(ContainSubstring("hook ran"))
			Eventually(e.powerState, 10*time.Second, 20*time.Millisecond).Should(Equal("off"), "afterLease's j power off, then the reset")
			// command-power acted for the lease: its commands saw it.
			log, _ := os.ReadFile(e.power + ".log")
			Expect(string(log)).To(Equal("on " + id[1] + " alice\n"))
		})

		DescribeTable("a hook's output reaches jmp shell (A1, A2)", func(fixture, marker string) {
			_, b := exporter(fixture)
			out, err := alice.leaseShell(b)
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(ContainSubstring(marker))
		},
			Entry("beforeLease only", "exporter-hooks-before-only.yaml", "[beforeLease] BEFORE_HOOK_MARKER: executed"),
			Entry("afterLease only", "exporter-hooks-after-only.yaml", "[afterLease] AFTER_HOOK_MARKER: executed"),
		)

		It("streams hook output as the hook runs", func() {
			_, b := exporter("exporter-hooks-timeout.yaml")
			sh := alice.shell("-l", "board="+b, "--", "j", "power", "on")
			// The hook prints, then sleeps until its 5 s timeout: the line is
			// on the shell's stderr while the hook still runs (its end, the
			// Warning:, has not come yet).
			Eventually(sh.out.String, 30*time.Second, 20*time.Millisecond).Should(ContainSubstring("[beforeLease] HOOK_TIMEOUT: starting"))
			Expect(sh.out.String()).NotTo(ContainSubstring("Warning:"))
			// D1: the timeout is a failure; warn lets the shell proceed.
			Eventually(sh.exited, 60*time.Second, 100*time.Millisecond).Should(BeTrue())
			Expect(exitCode(sh)).To(Equal(0), sh.out.String())
			Expect(sh.out.String()).To(ContainSubstring("Warning: beforeLease hook failed: timed out after 5s"))
		})

		It("a failing beforeLease with warn prints Warning: and the shell proceeds (B1, H3)", func() {
			_, b := exporter("exporter-hooks-before-fail-warn.yaml")
			out, err := alice.leaseShell(b)
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(ContainSubstring("[beforeLease] HOOK_FAIL_WARN: will fail but continue"))
			Expect(out).To(ContainSubstring("Warning: beforeLease hook failed: exit status 1: HOOK_FAIL_WARN: will fail but continue"))
			alice.online(b)
		})

		It("a failing afterLease with warn prints Warning: (C1, H4)", func() {
			_, b := exporter("exporter-hooks-after-fail-warn.yaml")
			out, err := alice.leaseShell(b)
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(ContainSubstring("HOOK_FAIL_WARN: afterLease failed but continuing"))
			Expect(out).To(ContainSubstring("Warning: afterLease hook failed: exit status 1"))
			alice.online(b)
		})
	})

	Context("failures that end the lease", func() {
		It("endLease without an afterLease ends the wait at once (B2)", func() {
			_, b := exporter("exporter-hooks-before-fail-endLease.yaml")
			start := time.Now()
			out, err := alice.leaseShell(b)
			Expect(err).To(HaveOccurred(), out)
			Expect(time.Since(start)).To(BeNumerically("<", 20*time.Second), out)
			Expect(out).To(ContainSubstring("beforeLease hook failed: exit status 1: HOOK_FAIL_ENDLEASE: will fail and end lease"))
			alice.online(b)
		})

		It("endLease ends the wait at once with the hook's error, skips afterLease, and frees the exporter (B3, B4)", func() {
			e, b := exporter("exporter-hooks-before-fail-endLease-with-after.yaml")
			for range 2 {
				start := time.Now()
				out, err := alice.leaseShell(b)
				Expect(err).To(HaveOccurred(), out)
				Expect(time.Since(start)).To(BeNumerically("<", 20*time.Second), out)
				Expect(out).To(ContainSubstring("[beforeLease] HOOK_FAIL_ENDLEASE: will fail and end lease"))
				Expect(out).To(ContainSubstring("beforeLease hook failed: exit status 1: HOOK_FAIL_ENDLEASE: will fail and end lease"))
				Expect(out).NotTo(ContainSubstring("AFTER_SHOULD_NOT_RUN"))
				Expect(out).NotTo(ContainSubstring("expired"))
				Expect(out).NotTo(ContainSubstring("could not open a session"))
				alice.online(b)
			}
			Expect(e.p.out.String()).NotTo(ContainSubstring("AFTER_SHOULD_NOT_RUN"))
			Expect(e.powerState()).NotTo(Equal("on"))
			// One reason, the hook's, on record.
			out, err := alice.jmp("get", "leases", "-a")
			Expect(err).NotTo(HaveOccurred())
			Expect(out).To(ContainSubstring("ended by exporter " + b + ": beforeLease hook failed: exit status 1: HOOK_FAIL_ENDLEASE: will fail and end lease"))
			Expect(out).NotTo(ContainSubstring(": expired"))
		})

		DescribeTable("exit tells the waiting client why, skips afterLease, and the exporter exits (B5, H2)", func(fixture string) {
			e, b := exporter(fixture)
			start := time.Now()
			out, err := alice.leaseShell(b)
			Expect(err).To(HaveOccurred(), out)
			Expect(time.Since(start)).To(BeNumerically("<", 20*time.Second), out)
			Expect(out).To(ContainSubstring("beforeLease hook failed: exit status 1: HOOK_FAIL_EXIT: shutting down"))
			Expect(out).NotTo(ContainSubstring("could not open a session"))
			Expect(out).NotTo(ContainSubstring("AFTER_SHOULD_NOT_RUN"))
			Expect(out).NotTo(ContainSubstring("expired"))
			Eventually(e.p.exited, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
			Expect(exitCode(e.p)).NotTo(Equal(0))
			Expect(e.p.out.String()).NotTo(ContainSubstring("AFTER_SHOULD_NOT_RUN"))
			Eventually(func() string { out, _ := alice.jmp("get", "exporters"); return out }, 30*time.Second, 100*time.Millisecond).
				Should(MatchRegexp(`(?m)^` + b + `\s+false\s+true`))
		},
			Entry("beforeLease exit", "exporter-hooks-before-fail-exit.yaml"),
			Entry("beforeLease exit with an afterLease", "exporter-hooks-before-fail-exit-with-after.yaml"),
		)

		It("afterLease exit shuts the exporter down (C2)", func() {
			e, b := exporter("exporter-hooks-after-fail-exit.yaml")
			out, _ := alice.leaseShell(b)
			Expect(out).To(ContainSubstring("HOOK_FAIL_EXIT: afterLease failed, shutting down"))
			Eventually(e.p.exited, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
			Expect(exitCode(e.p)).NotTo(Equal(0))
			Expect(e.powerState()).To(Equal("off"))
		})
	})
})

// direct is `jmp run --listen` on a fixture.
type direct struct {
	addr, fingerprint, power string
	p                        *proc
}

func startDirect(dir, fixture, passphrase string, extra ...string) *direct {
	GinkgoHelper()
	d := &direct{addr: freePort(), power: filepath.Join(dir, "power")}
	cfg := filepath.Join(dir, "exporter.yaml")
	Expect(os.WriteFile(cfg, []byte(jsFixture(fixture, d.power)), 0o644)).To(Succeed())
	d.p = start(nil, append([]string{"run", "-c", cfg, "--listen", d.addr, "--passphrase", passphrase}, extra...)...)
	fp := regexp.MustCompile(`fingerprint sha256:([0-9a-f]+)`)
	Eventually(func() bool { return fp.MatchString(d.p.out.String()) }, 30*time.Second, 50*time.Millisecond).Should(BeTrue(), d.p.out.String)
	d.fingerprint = fp.FindStringSubmatch(d.p.out.String())[1]
	return d
}

// shell runs jmp shell against the direct exporter.
func (d *direct) shell(args ...string) (string, error) {
	u := &user{}
	return u.jmp(append([]string{"shell", "--exporter", d.addr}, args...)...)
}

var _ = Describe("Jumpstarter's direct-listener suite, against pogo", Label("lease"), func() {
	It("runs beforeLease and afterLease around a direct-mode session, j commands working", func() {
		d := startDirect(GinkgoT().TempDir(), "exporter-direct-hooks-before.yaml", "s3cret")
		out, err := d.shell("--fingerprint", d.fingerprint, "--passphrase", "s3cret", "--", "j", "power", "status")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("[beforeLease] BEFORE_HOOK_DIRECT: executed"))
		Expect(out).To(ContainSubstring("[beforeLease] BEFORE_HOOK_DIRECT: complete"))
		Expect(out).To(MatchRegexp(`(?m)^on\r?$`), "the hook's j power on, before the shell's command")
	})

	It("runs afterLease when the exporter stops during a session", func() {
		dir := GinkgoT().TempDir()
		d := startDirect(dir, "exporter-direct-hooks-both.yaml", "s3cret")
		held := filepath.Join(dir, "held")
		u := &user{}
		sh := start(u.env, "shell", "--exporter", d.addr, "--fingerprint", d.fingerprint, "--passphrase", "s3cret", "--", "sh", "-c", "j power on; touch "+held+"; sleep 30")
		waitFile(held, 30*time.Second)
		Expect(sh.out.String()).To(ContainSubstring("BEFORE_HOOK_DIRECT: executed"))
		d.p.stop(syscall.SIGTERM)
		Expect(d.p.out.String()).To(ContainSubstring("AFTER_HOOK_DIRECT: executed"))
		Expect(d.p.out.String()).To(MatchRegexp(`(?s)AFTER_HOOK_DIRECT: executed.*drivers reset to safe state`))
		b, _ := os.ReadFile(d.power)
		Expect(strings.TrimSpace(string(b))).To(Equal("off"))
	})

	It("runs hooks in local mode too: jmp run on a socket, and jmp shell --exporter-config", func() {
		dir := GinkgoT().TempDir()
		cfg := filepath.Join(dir, "exporter.yaml")
		Expect(os.WriteFile(cfg, []byte(jsFixture("exporter-direct-hooks-both.yaml", filepath.Join(dir, "power"))), 0o644)).To(Succeed())
		sock := filepath.Join(dir, "exporter.sock")
		start(nil, "run", "-c", cfg, "--socket", sock)
		waitFile(sock, 30*time.Second)
		u := &user{}
		out, err := u.jmp("shell", "--exporter", "unix://"+sock, "--", "j", "power", "on")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("[beforeLease] BEFORE_HOOK_DIRECT: executed"))
		Expect(out).To(ContainSubstring("[afterLease] AFTER_HOOK_DIRECT: executed"))

		out, err = u.jmp("shell", "-c", cfg, "--", "j", "power", "on")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("[beforeLease] BEFORE_HOOK_DIRECT: executed"))
		Expect(out).To(ContainSubstring("[afterLease] AFTER_HOOK_DIRECT: executed"))
	})

	It("logs a rejected passphrase without its value", func() {
		d := startDirect(GinkgoT().TempDir(), "exporter-direct-listener.yaml", "my-secret")
		out, err := d.shell("--fingerprint", d.fingerprint, "--passphrase", "wrong-passphrase-value", "--", "j", "power", "on")
		Expect(err).To(HaveOccurred(), out)
		Eventually(d.p.out.String, 10*time.Second, 50*time.Millisecond).Should(ContainSubstring("rejected a call: wrong passphrase"))
		out, err = d.shell("--fingerprint", d.fingerprint, "--", "j", "power", "on")
		Expect(err).To(HaveOccurred(), out)
		Eventually(d.p.out.String, 10*time.Second, 50*time.Millisecond).Should(ContainSubstring("rejected a call: no passphrase"))
		Expect(d.p.out.String()).NotTo(ContainSubstring("wrong-passphrase-value"))
		Expect(d.p.out.String()).NotTo(ContainSubstring("my-secret"))
	})

	It("passes --insecure and --ca on to the commands inside jmp shell", func() {
		dir := GinkgoT().TempDir()
		crt, key := selfSigned(dir)
		d := startDirect(dir, "exporter-direct-listener.yaml", "s3cret", "--tls-cert", crt, "--tls-key", key)
		out, err := d.shell("--insecure", "--passphrase", "s3cret", "--", "sh", "-c", "j power on && j power status")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(MatchRegexp(`(?m)^on\r?$`))
		out, err = d.shell("--ca", crt, "--passphrase", "s3cret", "--", "sh", "-c", "j power off && j power status")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(MatchRegexp(`(?m)^off\r?$`))
	})
})

// selfSigned writes a certificate for 127.0.0.1 that is its own CA.
func selfSigned(dir string) (crt, key string) {
	GinkgoHelper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "exporter"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	Expect(err).NotTo(HaveOccurred())
	kb, err := x509.MarshalECPrivateKey(k)
	Expect(err).NotTo(HaveOccurred())
	crt, key = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	Expect(os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)).To(Succeed())
	Expect(os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)).To(Succeed())
	return crt, key
}
