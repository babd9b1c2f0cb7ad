package storage

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
)

// Client is a remote disk; it implements Disk.
type Client struct {
	c    pb.StorageClient
	path string
}

// NewClient returns a client for the storage driver at path.
func NewClient(conn grpc.ClientConnInterface, path string) *Client {
	return &Client{c: pb.NewStorageClient(conn), path: path}
}

// Info implements Disk.
func (c *Client) Info(ctx context.Context) (Info, error) {
	r, err := c.c.Info(rpcmeta.WithPath(ctx, c.path), &pb.StorageInfoRequest{})
	if err != nil {
		return Info{}, errdefs.FromGRPC(err)
	}
	return Info{Size: r.GetSize(), Path: r.GetPath(), Allocated: r.GetAllocated(), Busy: r.GetBusy()}, nil
}

// Write implements Disk.
func (c *Client) Write(ctx context.Context, r io.Reader, opts WriteOptions) (int64, error) {
	ctx, cancel := context.WithCancel(rpcmeta.WithPath(ctx, c.path))
	defer cancel()
	s, err := c.c.Write(ctx)
	if err != nil {
		return 0, errdefs.FromGRPC(err)
	}
	if err := s.Send(&pb.StorageWriteRequest{Msg: &pb.StorageWriteRequest_Open{Open: &pb.StorageWriteOpen{Size: opts.Size, Truncate: opts.Truncate}}}); err != nil {
		return 0, c.closeErr(s, err)
	}
	buf := make([]byte, chunk)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := s.Send(&pb.StorageWriteRequest{Msg: &pb.StorageWriteRequest_Data{Data: buf[:n]}}); err != nil {
				return 0, c.closeErr(s, err)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return 0, fmt.Errorf("storage %s: read image: %w", c.path, rerr)
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		return 0, errdefs.FromGRPC(err)
	}
	return resp.GetWritten(), nil
}

// closeErr turns a failed Send into the server's reason: Send reports only
// io.EOF when the server ended the call.
func (c *Client) closeErr(s pb.Storage_WriteClient, err error) error {
	if errors.Is(err, io.EOF) {
		_, err = s.CloseAndRecv()
	}
	return errdefs.FromGRPC(err)
}

// Read implements Disk.
func (c *Client) Read(ctx context.Context, w io.Writer, offset, length int64) (int64, error) {
	ctx, cancel := context.WithCancel(rpcmeta.WithPath(ctx, c.path))
	defer cancel()
	s, err := c.c.Read(ctx, &pb.StorageReadRequest{Offset: offset, Length: length})
	if err != nil {
		return 0, errdefs.FromGRPC(err)
	}
	var n int64
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, errdefs.FromGRPC(err)
		}
		k, err := w.Write(m.GetData())
		n += int64(k)
		if err != nil {
			return n, fmt.Errorf("storage %s: write output: %w", c.path, err)
		}
	}
}
