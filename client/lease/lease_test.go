package lease

import (
	"errors"
	"testing"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
)

// A lease ended by a deleted client says so once, not "…: expired" on top.
func TestEndedGivesOneReason(t *testing.T) {
	err := Ended(&pb.Lease{Id: "0123456789ab", State: pb.LeaseState_LEASE_STATE_ENDED, Reason: "client cl29 deleted"})
	if got, want := err.Error(), "lease 0123456789ab ended: client cl29 deleted"; got != want {
		t.Errorf("Ended: %q, want %q", got, want)
	}
	if !errors.Is(err, errdefs.ErrExpired) {
		t.Errorf("Ended: %v does not match errdefs.ErrExpired", err)
	}
}
