package blob

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
)

// refusing is a BMC link whose login is refused: every command fails the
// way the lanplus transport reports bad credentials.
type refusing struct{ calls int }

func (r *refusing) RawCommand(context.Context, byte, byte, []byte) ([]byte, error) {
	r.calls++
	return nil, fmt.Errorf("lanplus connect: password refused: %w", errdefs.ErrUnauthorized)
}

func TestRefusedCredentialsAreNotRetried(t *testing.T) {
	tr := &refusing{}
	u := &Updater{Client: &Client{T: tr}, Retries: 3, RetryDelay: time.Millisecond}
	err := u.Update(context.Background(), Request{Type: "image", Image: bytes.NewReader([]byte("img")), ImageSize: 3, Signature: []byte("sig")})
	if !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("err = %v, want unauthorized", err)
	}
	// One attempt at the first step, then the cleanup's own attempt.
	if tr.calls > 2 {
		t.Fatalf("%d commands sent to a BMC that refused the login; want no retries", tr.calls)
	}
}
