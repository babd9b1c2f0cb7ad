package lease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
)

// WatchHooks follows the hook events the lease's exporter reports (its
// output, then each hook's end), calling f with each, until f returns
// false, the controller says no more will come or ctx ends. After a
// controller restart it picks up where the new stream begins (the
// replica replays what it holds).
func (c *Client) WatchHooks(ctx context.Context, id string, f func(*pb.HookEvent) bool) error {
	seen := 0
	backoff := 100 * time.Millisecond
	for {
		stream, err := c.leases.WatchHooks(ctx, &pb.GetLeaseRequest{Id: id}, grpc.WaitForReady(true))
		if err == nil {
			n := 0
			for {
				e, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				n++
				if n <= seen {
					continue // replayed after a reconnect
				}
				seen = n
				if !f(e) {
					return nil
				}
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		err = errdefs.FromGRPC(err)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			return fmt.Errorf("watch hooks of lease %s: %w", id, err)
		}
		if err := pause(ctx, &backoff); err != nil {
			return err
		}
	}
}
