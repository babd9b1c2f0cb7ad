package power

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
)

// Client drives a remote power driver. It implements Switcher, Cycler and
// Reader, so code written against the interfaces cannot tell it from a
// local driver.
type Client struct {
	c    pb.PowerClient
	path string
}

// NewClient returns a client for the power driver at path.
func NewClient(conn grpc.ClientConnInterface, path string) *Client {
	return &Client{c: pb.NewPowerClient(conn), path: path}
}

func (c *Client) On(ctx context.Context) error {
	_, err := c.c.On(rpcmeta.WithPath(ctx, c.path), &pb.PowerRequest{})
	return errdefs.FromGRPC(err)
}

func (c *Client) Off(ctx context.Context) error {
	_, err := c.c.Off(rpcmeta.WithPath(ctx, c.path), &pb.PowerRequest{})
	return errdefs.FromGRPC(err)
}

func (c *Client) Cycle(ctx context.Context, delay time.Duration) error {
	_, err := c.c.Cycle(rpcmeta.WithPath(ctx, c.path), &pb.CycleRequest{Delay: durationpb.New(delay)})
	return errdefs.FromGRPC(err)
}

func (c *Client) State(ctx context.Context) (State, error) {
	r, err := c.c.Status(rpcmeta.WithPath(ctx, c.path), &pb.PowerRequest{})
	if err != nil {
		return Unknown, errdefs.FromGRPC(err)
	}
	return fromPB(r.GetState()), nil
}
