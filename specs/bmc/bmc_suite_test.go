package bmc

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/pogolab/pogo/specs/board"

	// Until drivers/all lists it.
	_ "github.com/pogolab/pogo/drivers/bmc"
)

func TestBMC(t *testing.T) { board.RunSpecs(t, "BMC") }

// jmp is the jmp binary the specs run: the simulator and `jmp shell`.
var jmp string

var _ = BeforeSuite(func(ctx SpecContext) {
	root, err := board.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	dir, err := os.MkdirTemp("", "pogo-bmc-specs-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	jmp = filepath.Join(dir, "jmp")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", jmp, "./cmd/jmp")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	Expect(cmd.Run()).To(Succeed(), "go build ./cmd/jmp")
}, NodeTimeout(5*time.Minute))
