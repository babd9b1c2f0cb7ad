package console

import (
	"context"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
)

// Client is a remote console; it implements Attacher.
type Client struct {
	c    pb.ConsoleClient
	path string
}

// NewClient returns a client for the console driver at path.
func NewClient(conn grpc.ClientConnInterface, path string) *Client {
	return &Client{c: pb.NewConsoleClient(conn), path: path}
}

// Scrollback implements Attacher.
func (c *Client) Scrollback(ctx context.Context) ([]byte, error) {
	r, err := c.c.Scrollback(rpcmeta.WithPath(ctx, c.path), &pb.ScrollbackRequest{})
	if err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	return r.GetData(), nil
}

// Attach implements Attacher. The attachment lives until it is closed or
// ctx ends.
func (c *Client) Attach(ctx context.Context, opts AttachOptions) (io.ReadWriteCloser, error) {
	ctx, cancel := context.WithCancel(rpcmeta.WithPath(ctx, c.path))
	s, err := c.c.Attach(ctx)
	if err != nil {
		cancel()
		return nil, errdefs.FromGRPC(err)
	}
	if err := s.Send(&pb.ConsoleInput{Msg: &pb.ConsoleInput_Open{Open: &pb.ConsoleOpen{Write: opts.Write, Replay: opts.Replay}}}); err != nil {
		if _, rerr := s.Recv(); rerr != nil {
			err = rerr
		}
		cancel()
		return nil, fmt.Errorf("console %s: attach: %w", c.path, errdefs.FromGRPC(err))
	}
	// The server answers with an empty message once attached, or an error.
	if _, err := s.Recv(); err != nil {
		cancel()
		return nil, errdefs.FromGRPC(err)
	}
	return &remote{s: s, cancel: cancel}, nil
}

type remote struct {
	s      pb.Console_AttachClient
	cancel context.CancelFunc
	pend   []byte

	wmu  sync.Mutex
	once sync.Once
}

func (r *remote) Read(p []byte) (int, error) {
	for len(r.pend) == 0 {
		m, err := r.s.Recv()
		if err != nil {
			if err == io.EOF {
				return 0, io.EOF
			}
			return 0, errdefs.FromGRPC(err)
		}
		r.pend = m.GetData()
	}
	n := copy(p, r.pend)
	r.pend = r.pend[n:]
	return n, nil
}

func (r *remote) Write(p []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	// gRPC encodes the message before Send returns, so p may be reused.
	if err := r.s.Send(&pb.ConsoleInput{Msg: &pb.ConsoleInput_Data{Data: p}}); err != nil {
		return 0, errdefs.FromGRPC(err)
	}
	return len(p), nil
}

func (r *remote) Close() error {
	r.once.Do(func() {
		r.wmu.Lock()
		_ = r.s.CloseSend()
		r.wmu.Unlock()
		r.cancel()
	})
	return nil
}
