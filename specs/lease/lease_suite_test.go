package lease_test

import (
	"testing"

	"github.com/pogolab/pogo/specs/board"
)

func TestLease(t *testing.T) {
	board.RunSpecs(t, "lease")
}
