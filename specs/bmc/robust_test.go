package bmc

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers/bmc"
	"github.com/pogolab/pogo/drivers/bmc/blob"
)

var _ = Describe("BMC interop and bad input", Label("bmc"), func() {
	It("lets Debian's ipmitool list and stat the blobs the exporter sees, mid-update too", func(ctx SpecContext) {
		s := startSim(ctx, "config-static-bmc.json", simOpts{gated: true})
		h := serve(ctx, s.exporterYAML())
		agree := func() {
			GinkgoHelper()
			body, err := blobRaw(ctx, s.port, blob.GetCount, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(body).To(HaveLen(4))
			var ids []string
			for i := range binary.LittleEndian.Uint32(body) {
				body, err := blobRaw(ctx, s.port, blob.Enumerate, binary.LittleEndian.AppendUint32(nil, i))
				Expect(err).NotTo(HaveOccurred())
				id, ok := blob.CString(body)
				Expect(ok).To(BeTrue(), "enumerate %d: % x", i, body)
				ids = append(ids, id)
			}
			theirs, err := h.bmc.Blobs(ctx)
			Expect(err).NotTo(HaveOccurred())
			Expect(theirs).To(HaveLen(len(ids)))
			for i, b := range theirs {
				Expect(b.ID).To(Equal(ids[i]))
				body, err := blobRaw(ctx, s.port, blob.Stat, append([]byte(b.ID), 0))
				Expect(err).NotTo(HaveOccurred())
				m, err := blob.DecodeMeta(body)
				Expect(err).NotTo(HaveOccurred())
				Expect(bmc.State(m.State)).To(Equal(b.State), "state of %s", b.ID)
				Expect(m.Size).To(Equal(b.Size), "size of %s", b.ID)
			}
		}
		By("an idle BMC")
		agree()

		By("a BMC verifying an image")
		ev, done := h.start(ctx, request("image", randomImage(8<<10), goodSig))
		Eventually(ctx, func() bool { return ev.seen(blob.PhaseVerify, "running") }).Should(BeTrue())
		agree()
		s.release("verify")
		s.release("update")
		Eventually(ctx, done).WithTimeout(30 * time.Second).Should(Receive(Succeed()))

		By("a missing blob: ipmitool reports the completion code, j a not-found error")
		_, err := blobRaw(ctx, s.port, blob.Stat, []byte("/flash/nope\x00"))
		Expect(err).To(MatchError(ContainSubstring("rsp=0xff")))
		_, err = h.bmc.Stat(ctx, "/flash/nope")
		Expect(errors.Is(err, errdefs.ErrNotFound)).To(BeTrue(), "error %v", err)
		Expect(err.Error()).To(ContainSubstring("stat /flash/nope"))
	}, SpecTimeout(90*time.Second))

	It("answers bad CRC, truncated and oversized packets with IPMI error codes and keeps serving", func(ctx SpecContext) {
		s := startSim(ctx, "config-static-bmc.json", simOpts{args: []string{"--max-request", "64"}})
		raw := func(data ...byte) error {
			args := []string{"raw", "0x2e", "0x80"}
			for _, b := range data {
				args = append(args, "0x"+strconv.FormatUint(uint64(b), 16))
			}
			_, err := ipmitool(ctx, s.port, user, pass, args...)
			return err
		}
		good := blob.EncodeRequest(blob.Stat, []byte("/flash/image\x00"))
		badCRC := append([]byte(nil), good...)
		badCRC[4] ^= 0xff
		Expect(raw(badCRC...)).To(MatchError(ContainSubstring("rsp=0xff")), "bad crc")
		Expect(raw(good[:5]...)).To(MatchError(ContainSubstring("rsp=0xc7")), "truncated")
		Expect(raw(0xcf, 0xc2)).To(MatchError(ContainSubstring("rsp=0xc7")), "truncated OEN")
		Expect(raw(0xcf, 0xc2, 0x00, 0x42)).To(MatchError(ContainSubstring("rsp=0xcc")), "unknown subcommand")
		Expect(raw(blob.EncodeRequest(blob.Write, make([]byte, 80))...)).To(MatchError(ContainSubstring("rsp=0xc8")), "oversized")
		Expect(raw(good...)).To(Succeed())

		By("garbage datagrams are dropped")
		conn, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(s.port))
		Expect(err).NotTo(HaveOccurred())
		for _, n := range []int{0, 1, 4, 17, 200, 1500, 9000} {
			junk := make([]byte, n)
			_, _ = rand.Read(junk)
			if n >= 5 {
				copy(junk, []byte{0x06, 0x00, 0xff, 0x07, 0x06})
			}
			_, _ = conn.Write(junk)
		}
		conn.Close()

		By("chunks larger than the BMC takes fail the upload at once with a hint and the completion code, and the BMC is cleaned")
		h := serve(ctx, s.exporterYAML("chunk_size: 100"))
		ev, done := h.start(ctx, request("image", randomImage(4<<10), goodSig))
		var uerr error
		Eventually(ctx, done).WithTimeout(30 * time.Second).Should(Receive(&uerr))
		var pe *blob.PhaseError
		Expect(errors.As(uerr, &pe)).To(BeTrue(), "error %v", uerr)
		Expect(pe.Phase).To(Equal(blob.PhaseUpload))
		Expect(uerr.Error()).To(MatchRegexp(`^upload: write /flash/image at 0: .*lower chunk_size \(now 100;.*blob write: .*0xc8`))
		Expect(ev.seen(blob.PhaseCleanup, "")).To(BeTrue())
		Expect(h.ids(ctx)).To(Equal([]string{blob.HashBlob, "/flash/image", blob.CleanupBlob}))
	}, SpecTimeout(90*time.Second))

	It("refuses wrong credentials with a clear error, in j and in ipmitool", func(ctx SpecContext) {
		s := startSim(ctx, "config-static-bmc.json", simOpts{})
		wrong := s.exporterYAML()
		wrong = wrong[:len(wrong)-len("      password: "+pass+"\n      timeout: 200ms\n")] + "      password: wrong\n      timeout: 200ms\n"
		_, errOut, code := jshell(ctx, wrong, "j bmc blobs")
		Expect(code).NotTo(Equal(0))
		Expect(errOut).To(MatchRegexp(`j: bmc bmc: list blobs: .*lanplus connect 127\.0\.0\.1:\d+: (?s:.*)RAKP authentication failed(?s:.*): unauthorized\n$`))

		h := serve(ctx, wrong)
		err := h.bmc.Update(ctx, request("image", randomImage(1024), goodSig))
		var pe *blob.PhaseError
		Expect(errors.As(err, &pe)).To(BeTrue(), "error %v", err)
		Expect(pe.Phase).To(Equal(blob.PhaseCheck))
		Expect(errors.Is(err, errdefs.ErrUnauthorized)).To(BeTrue(), "error %v", err)
		Expect(err.Error()).To(ContainSubstring("RAKP authentication failed"))

		_, err = ipmitool(ctx, s.port, user, "wrong", "raw", "0x2e", "0x80", "0xcf", "0xc2", "0x00", "0x00")
		Expect(err).To(MatchError(ContainSubstring("Unable to establish IPMI v2 / RMCP+ session")))
		// The simulator still serves the right user.
		Expect(serve(ctx, s.exporterYAML()).ids(ctx)).To(HaveLen(3))
	}, SpecTimeout(90*time.Second))
})
