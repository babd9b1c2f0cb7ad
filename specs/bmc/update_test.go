package bmc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/drivers/bmc"
	"github.com/pogolab/pogo/drivers/bmc/blob"
)

// Where the example configs stage their files (under the simulator's
// --state-dir) and where /flash/hash lands by default.
const (
	bmcImage  = "run/initramfs/bmc-image"
	biosImage = "tmp/bios-image"
	hashFile  = "tmp/bmc.sig"
)

var _ = Describe("BMC firmware update", Label("bmc"), func() {
	DescribeTable("each example config: upload, verify and update, with the BMC checked at every step",
		func(ctx SpecContext, example, typ, staged string, reboots bool) {
			s := startSim(ctx, example, simOpts{gated: true})
			h := serve(ctx, s.exporterYAML())
			blobID := blob.BlobID(typ)
			initial := []string{blob.HashBlob, blobID, blob.CleanupBlob}

			By("listing the blobs of an idle BMC")
			Expect(h.ids(ctx)).To(Equal(initial))
			st, err := h.bmc.Stat(ctx, blobID)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.State.String()).To(Equal("ipmi"), "the upload blob takes the ipmi transport")
			Expect(s.transitions()).To(BeEmpty())

			img := randomImage(200<<10 + 33)
			ev, done := h.start(ctx, request(typ, img, goodSig))

			By("verifying: image and signature staged, /flash/verify listed, no /flash/update")
			Eventually(ctx, func() bool { return ev.seen(blob.PhaseVerify, "running") }).Should(BeTrue())
			Expect(s.staged(staged)).To(Equal(img))
			Expect(string(s.staged(hashFile))).To(Equal(goodSig))
			Expect(h.ids(ctx)).To(ConsistOf(append(initial, blob.VerifyBlob, "/flash/active/image", "/flash/active/hash")))
			Expect(s.transitions()).To(Equal([]string{"uploadInProgress", "verificationPending", "uploadInProgress",
				"verificationPending", "verificationStarted"}))
			s.release("verify")

			if reboots {
				By("updating: the BMC reboots and the client waits for it")
				Eventually(ctx, done).WithTimeout(30 * time.Second).Should(Receive(Succeed()))
				Expect(ev.seen(blob.PhaseUpdate, "BMC stopped answering; waiting for it to come back")).To(BeTrue())
				Expect(ev.seen(blob.PhaseUpdate, "BMC rebooted; update applied")).To(BeTrue())
				Expect(s.logged(`msg="bmc rebooting"`)).To(Equal(1))
				Expect(s.logged(`msg="bmc back after reboot"`)).To(Equal(1))
				Expect(s.transitions()[5:]).To(Equal([]string{"verificationCompleted", "updatePending", "updateStarted", "notYetStarted"}))
			} else {
				By("updating: /flash/update listed while the update runs")
				Eventually(ctx, func() bool { return ev.seen(blob.PhaseUpdate, "running") }).Should(BeTrue())
				Expect(h.ids(ctx)).To(ConsistOf(append(initial, blob.VerifyBlob, blob.UpdateBlob, "/flash/active/image", "/flash/active/hash")))
				Expect(s.transitions()[5:]).To(Equal([]string{"verificationCompleted", "updatePending", "updateStarted"}))
				Consistently(done).WithTimeout(200*time.Millisecond).ShouldNot(Receive(), "the update finished before the BMC did")
				s.release("update")
				Eventually(ctx, done).WithTimeout(30 * time.Second).Should(Receive(Succeed()))
				Expect(s.staged(staged+".applied")).To(Equal(img), "the BMC applied what was uploaded")
				Expect(s.transitions()[8:]).To(Equal([]string{"updateCompleted", "notYetStarted"}))
			}

			By("the BMC is idle again and the exporter kept nothing")
			Expect(ev.phases()).To(Equal([]blob.Phase{bmc.PhaseReceive, blob.PhaseCheck, blob.PhaseUpload, blob.PhaseHash, blob.PhaseVerify, blob.PhaseUpdate}))
			Expect(h.ids(ctx)).To(Equal(initial))
			h.spoolEmpty()
		},
		Entry("config-static-bmc.json", SpecTimeout(60*time.Second), "config-static-bmc.json", "image", bmcImage, false),
		Entry("config-bios.json", SpecTimeout(60*time.Second), "config-bios.json", "bios", biosImage, false),
		Entry("config-static-bmc-reboot.json", SpecTimeout(60*time.Second), "config-static-bmc-reboot.json", "image", bmcImage, true),
	)

	It("updates through `j bmc update` and lists and stats blobs with j", func(ctx SpecContext) {
		s := startSim(ctx, "config-static-bmc.json", simOpts{})
		img := randomImage(512<<10 + 5)
		imgFile, sigFile := writeFile("bmc.img", img), writeFile("bmc.sig", []byte(goodSig))
		out, errOut, code := jshell(ctx, s.exporterYAML(),
			"j bmc update --type image --image "+imgFile+" --signature "+sigFile+" && j bmc blobs && j bmc stat /flash/image")
		Expect(code).To(Equal(0), errOut)
		// Not a terminal: progress comes as lines, one per phase at least.
		// Whether "verify: running" shows depends on how fast the BMC verifies
		// against the first poll, so only verdicts are required here.
		for _, line := range []string{"upload: 512.0 KiB/512.0 KiB (100%)", "hash: ", "verify: success", "update: success", "update applied: 512.0 KiB in"} {
			Expect(errOut).To(ContainSubstring(line))
		}
		Expect(errOut).NotTo(ContainSubstring("\r"), "a bar drawn into a pipe")
		Expect(out).To(MatchRegexp(`(?m)^BLOB\s+STATE\s+SIZE\s+METADATA\n/flash/hash\s+ipmi\s+0\s*\n/flash/image\s+ipmi\s+0\s*\n/flash/cleanup\s+-\s+0\s*\n`))
		Expect(out).To(ContainSubstring("blob /flash/image\nstate 0x0100 (ipmi)\nsize 0\n"))
		Expect(s.staged(bmcImage + ".applied")).To(Equal(img))
	}, SpecTimeout(60*time.Second))

	It("draws a progress bar on a terminal", func(ctx SpecContext) {
		s := startSim(ctx, "config-bios.json", simOpts{})
		img := randomImage(3<<20 + 100)
		imgFile, sigFile := writeFile("bios.bin", img), writeFile("bios.sig", []byte(goodSig))
		out, code := jshellTTY(ctx, s.exporterYAML(), "j bmc update --type bios --image "+imgFile+" --signature "+sigFile)
		Expect(code).To(Equal(0), out)
		// The bar is redrawn in place and ends full, with its line closed.
		Expect(out).To(MatchRegexp(`\rupload   \[#*-+\]\s+\d+% `))
		Expect(out).To(MatchRegexp(`\rupload   \[#{30}\] 100% 3\.0 MiB/3\.0 MiB [\d.]+ MB/s\x1b\[K\r?\n`))
		Expect(out).To(ContainSubstring("update: success"))
		Expect(s.staged(biosImage + ".applied")).To(Equal(img))
	}, SpecTimeout(90*time.Second))

	It("fails verification: /flash/update never appears, cleanup runs and j names the phase", func(ctx SpecContext) {
		s := startSim(ctx, "config-static-bmc.json", simOpts{})
		imgFile, sigFile := writeFile("bmc.img", randomImage(40<<10)), writeFile("bmc.sig", []byte("forged"))
		_, errOut, code := jshell(ctx, s.exporterYAML(), "j bmc update --image "+imgFile+" --signature "+sigFile)
		Expect(code).NotTo(Equal(0))
		Expect(errOut).To(ContainSubstring("verify: failed"), "the BMC's verdict is shown")
		Expect(errOut).To(ContainSubstring("cleanup: cleaning up"))
		Expect(errOut).To(MatchRegexp(`(?m)^j: verify: BMC reported failed$`))
		Expect(s.transitions()).NotTo(ContainElement("updatePending"))
		Expect(s.transitions()).To(HaveExactElements("uploadInProgress", "verificationPending", "uploadInProgress",
			"verificationPending", "verificationStarted", "verificationCompleted", "notYetStarted"))
		Expect(s.logged("cleanup committed: staged files removed")).To(Equal(1))
		Expect(s.exists(bmcImage)).To(BeFalse(), "staged image removed by /flash/cleanup")
		Expect(s.exists(hashFile)).To(BeFalse(), "staged signature removed by /flash/cleanup")
		Expect(serve(ctx, s.exporterYAML()).ids(ctx)).To(Equal([]string{blob.HashBlob, "/flash/image", blob.CleanupBlob}))
	}, SpecTimeout(60*time.Second))

	It("fails the update action and says so", func(ctx SpecContext) {
		s := startSim(ctx, "config-bios.json", simOpts{standIns: map[string]string{"phosphor-ipmi-flash-bios-update.target": "sleep 0.1; exit 3"}})
		h := serve(ctx, s.exporterYAML())
		ev, done := h.start(ctx, request("bios", randomImage(10<<10), goodSig))
		var err error
		Eventually(ctx, done).WithTimeout(30 * time.Second).Should(Receive(&err))
		var pe *blob.PhaseError
		Expect(errors.As(err, &pe)).To(BeTrue(), "error %v", err)
		Expect(pe.Phase).To(Equal(blob.PhaseUpdate))
		Expect(errors.Is(err, blob.ErrActionFailed)).To(BeTrue())
		Expect(err.Error()).To(Equal("update: BMC reported failed"))
		Expect(ev.seen(blob.PhaseCleanup, "")).To(BeTrue())
		Expect(s.transitions()[len(s.transitions())-2:]).To(Equal([]string{"updateCompleted", "notYetStarted"}))
		Expect(s.exists(biosImage + ".applied")).To(BeFalse())
		Expect(h.ids(ctx)).To(Equal([]string{blob.HashBlob, "/flash/bios", blob.CleanupBlob}))
		h.spoolEmpty()
	}, SpecTimeout(60*time.Second))

	It("aborts mid-verify: the BMC stops verifying and is cleaned up", func(ctx SpecContext) {
		var s *sim
		pidFile := filepath.Join(GinkgoT().TempDir(), "verify.pid")
		s = startSim(ctx, "config-static-bmc.json", simOpts{standIns: map[string]string{
			"phosphor-ipmi-flash-bmc-verify.target": "echo $$ > " + pidFile + "; exec sleep 60",
		}})
		h := serve(ctx, s.exporterYAML())
		uctx, abort := context.WithCancel(ctx)
		defer abort()
		ev, done := h.start(uctx, request("image", randomImage(30<<10), goodSig))
		Eventually(ctx, func() bool { return ev.seen(blob.PhaseVerify, "running") }).Should(BeTrue())
		pid := readPid(pidFile)
		Expect(syscall.Kill(pid, 0)).To(Succeed(), "verification runs")

		abort()
		var err error
		Eventually(ctx, done).Should(Receive(&err))
		Expect(errors.Is(err, context.Canceled)).To(BeTrue(), "error %v", err)
		Expect(err.Error()).To(ContainSubstring("update aborted"))

		// The exporter cleans up on its own once the stream is gone.
		Eventually(ctx, s.transitions).Should(HaveExactElements("uploadInProgress", "verificationPending", "uploadInProgress",
			"verificationPending", "verificationStarted", "notYetStarted"))
		Expect(s.logged("verify session closed while verification runs; aborting")).To(Equal(1))
		Eventually(ctx, func() error { return syscall.Kill(pid, 0) }).Should(MatchError(syscall.ESRCH), "verification process killed")
		Eventually(ctx, func() int { return s.logged("cleanup committed") }).Should(Equal(1))
		Expect(s.exists(bmcImage)).To(BeFalse())
		Expect(h.ids(ctx)).To(Equal([]string{blob.HashBlob, "/flash/image", blob.CleanupBlob}))
		Eventually(ctx, func() []os.DirEntry { e, _ := os.ReadDir(h.spool); return e }).Should(BeEmpty())
	}, SpecTimeout(60*time.Second))

	It("cleans a stale /flash/active/image of a crashed run, then updates", func(ctx SpecContext) {
		s := startSim(ctx, "config-static-bmc.json", simOpts{})
		crashed := dialDirect(ctx, s)
		sid, err := crashed.Open(ctx, "/flash/image", blob.FlagWrite|blob.TransportIPMI)
		Expect(err).NotTo(HaveOccurred())
		Expect(crashed.Write(ctx, sid, 0, []byte("half an image"))).To(Succeed())
		Expect(crashed.Close(ctx, sid)).To(Succeed())

		h := serve(ctx, s.exporterYAML())
		Expect(h.ids(ctx)).To(ContainElement("/flash/active/image"))
		img := randomImage(20 << 10)
		ev, done := h.start(ctx, request("image", img, goodSig))
		Eventually(ctx, done).WithTimeout(30 * time.Second).Should(Receive(Succeed()))
		Expect(ev.seen(blob.PhaseStale, "deleting stale /flash/active/image")).To(BeTrue())
		Expect(s.logged("cleanup committed")).To(Equal(1), "the stale run's files were cleaned")
		Expect(s.staged(bmcImage + ".applied")).To(Equal(img))
		Expect(h.ids(ctx)).To(Equal([]string{blob.HashBlob, "/flash/image", blob.CleanupBlob}))
	}, SpecTimeout(60*time.Second))

	DescribeTable("the BMC reboots during the update poll",
		func(ctx SpecContext, flags string, says string) {
			s := startSim(ctx, "config-static-bmc-reboot.json", simOpts{})
			imgFile, sigFile := writeFile("bmc.img", randomImage(20<<10)), writeFile("bmc.sig", []byte(goodSig))
			_, errOut, code := jshell(ctx, s.exporterYAML(), "j bmc update --image "+imgFile+" --signature "+sigFile+flags)
			Expect(code).To(Equal(0), errOut)
			Expect(errOut).To(ContainSubstring(says))
			Eventually(ctx, func() int { return s.logged(`msg="bmc back after reboot"`) }).WithTimeout(10 * time.Second).Should(Equal(1))
			Expect(s.logged(`msg="bmc rebooting"`)).To(Equal(1))
			// A fresh session sees a BMC with nothing of the update left.
			Expect(serve(ctx, s.exporterYAML()).ids(ctx)).To(Equal([]string{blob.HashBlob, "/flash/image", blob.CleanupBlob}))
		},
		Entry("polling: the client waits for the BMC to come back", SpecTimeout(60*time.Second), "", "update: BMC rebooted; update applied"),
		Entry("--ignore-update: the client does not wait", SpecTimeout(60*time.Second), " --ignore-update", "update: committed; not waiting for the result"),
	)
})

func readPid(path string) int {
	GinkgoHelper()
	var pid int
	Eventually(func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	}).Should(Succeed())
	return pid
}
