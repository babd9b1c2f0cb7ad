package state

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
)

// Client is a remote state machine; it implements Machine.
type Client struct {
	c    pb.StateClient
	path string
}

var _ Machine = (*Client)(nil)

// NewClient returns a client for the state driver at path.
func NewClient(conn grpc.ClientConnInterface, path string) *Client {
	return &Client{c: pb.NewStateClient(conn), path: path}
}

// Get implements Machine.
func (c *Client) Get(ctx context.Context) (Status, error) {
	r, err := c.c.Get(rpcmeta.WithPath(ctx, c.path), &pb.StateRequest{})
	if err != nil {
		return Status{}, errdefs.FromGRPC(err)
	}
	return Status{State: r.GetState(), Broken: r.GetBroken()}, nil
}

// Transition implements Machine.
func (c *Client) Transition(ctx context.Context, target string, progress func(Event)) error {
	s, err := c.c.Transition(rpcmeta.WithPath(ctx, c.path), &pb.TransitionRequest{Target: target})
	if err != nil {
		return errdefs.FromGRPC(err)
	}
	for {
		e, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return errdefs.FromGRPC(err)
		}
		if progress != nil {
			progress(Event{Reached: e.GetReached(), Step: e.GetStep(), Message: e.GetMessage()})
		}
	}
}

// Force implements Machine.
func (c *Client) Force(ctx context.Context, st string) error {
	_, err := c.c.Force(rpcmeta.WithPath(ctx, c.path), &pb.ForceRequest{State: st})
	return errdefs.FromGRPC(err)
}

// States implements Machine.
func (c *Client) States(ctx context.Context) ([]string, error) {
	r, err := c.c.States(rpcmeta.WithPath(ctx, c.path), &pb.StateRequest{})
	if err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	return r.GetStates(), nil
}
