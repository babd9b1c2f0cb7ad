package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
)

// chunk is the size of a put's data messages: large enough that per
// message costs vanish, well below the exporter's 16 MiB message limit.
const chunk = 1 << 20

// Client manages a remote file server's directory; it implements Store
// and Locator.
type Client struct {
	c    pb.FilesClient
	path string
}

// NewClient returns a client for the file server driver at path.
func NewClient(conn grpc.ClientConnInterface, path string) *Client {
	return &Client{c: pb.NewFilesClient(conn), path: path}
}

// Put implements Store. When r is a regular *os.File its size is announced
// so the exporter refuses a truncated upload.
func (c *Client) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	h := &pb.PutHeader{Name: name}
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			if off, err := f.Seek(0, io.SeekCurrent); err == nil {
				size := fi.Size() - off
				h.Size = &size
			}
		}
	}
	ctx, cancel := context.WithCancel(rpcmeta.WithPath(ctx, c.path))
	defer cancel()
	s, err := c.c.Put(ctx)
	if err != nil {
		return 0, errdefs.FromGRPC(err)
	}
	if err := s.Send(&pb.PutRequest{Msg: &pb.PutRequest_Header{Header: h}}); err != nil {
		return 0, c.closeErr(s, err)
	}
	buf := make([]byte, chunk)
	var sent int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			// gRPC encodes the message before Send returns, so buf is reused.
			if err := s.Send(&pb.PutRequest{Msg: &pb.PutRequest_Data{Data: buf[:n]}}); err != nil {
				return sent, c.closeErr(s, err)
			}
			sent += int64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			// Cancelling the stream makes the exporter discard the upload.
			cancel()
			return sent, fmt.Errorf("put %s: read local content: %w", name, rerr)
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		return sent, errdefs.FromGRPC(err)
	}
	return resp.GetSize(), nil
}

// closeErr gets the server's reason when a Send fails: gRPC reports io.EOF
// from Send and the status from the receive.
func (c *Client) closeErr(s pb.Files_PutClient, err error) error {
	if errors.Is(err, io.EOF) {
		_, err = s.CloseAndRecv()
	}
	return errdefs.FromGRPC(err)
}

// List implements Store.
func (c *Client) List(ctx context.Context) ([]Info, error) {
	r, err := c.c.List(rpcmeta.WithPath(ctx, c.path), &pb.ListRequest{})
	if err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	out := make([]Info, 0, len(r.GetFiles()))
	for _, f := range r.GetFiles() {
		out = append(out, Info{Name: f.GetName(), Size: f.GetSize(), ModTime: f.GetModTime().AsTime()})
	}
	return out, nil
}

// Remove implements Store.
func (c *Client) Remove(ctx context.Context, name string) error {
	_, err := c.c.Remove(rpcmeta.WithPath(ctx, c.path), &pb.RemoveRequest{Name: name})
	return errdefs.FromGRPC(err)
}

// URL implements Locator.
func (c *Client) URL(ctx context.Context) (string, error) {
	r, err := c.c.Url(rpcmeta.WithPath(ctx, c.path), &pb.UrlRequest{})
	if err != nil {
		return "", errdefs.FromGRPC(err)
	}
	return r.GetUrl(), nil
}

var (
	_ Store   = (*Client)(nil)
	_ Locator = (*Client)(nil)
)
