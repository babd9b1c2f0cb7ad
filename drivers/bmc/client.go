package bmc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/drivers/bmc/blob"
)

// ChunkSize is the image bytes per stream message.
const ChunkSize = 256 << 10

// Client drives a remote BMC driver; it implements Updater and Inspector.
type Client struct {
	c    pb.BmcClient
	path string
}

// NewClient returns a client for the BMC driver at path.
func NewClient(conn grpc.ClientConnInterface, path string) *Client {
	return &Client{c: pb.NewBmcClient(conn), path: path}
}

// Update implements Updater: the image streams to the exporter while its
// progress streams back. A failure is a *blob.PhaseError naming the phase,
// as from a local driver.
func (c *Client) Update(ctx context.Context, req Request) error {
	if err := req.Check(); err != nil {
		return fmt.Errorf("bmc %s: %w: %w", c.path, err, errdefs.ErrInvalid)
	}
	parent := ctx
	ctx, cancel := context.WithCancel(rpcmeta.WithPath(ctx, c.path))
	defer cancel()
	s, err := c.c.Update(ctx)
	if err != nil {
		return errdefs.FromGRPC(err)
	}
	hdr := &pb.BmcUpdateHeader{Type: req.Type, ImageSize: req.Size, Signature: req.Signature, IgnoreUpdate: req.IgnoreUpdate}
	if err := s.Send(&pb.BmcUpdateRequest{Msg: &pb.BmcUpdateRequest_Header{Header: hdr}}); err != nil {
		_, rerr := s.Recv()
		return fromStatus(rerr)
	}

	// The sender ends on its own once the image is out, or when the server
	// stops reading (its Send fails and Recv below reports why).
	sendErr := make(chan error, 1)
	go func() {
		err := sendImage(s, req.Image, req.Size)
		if err != nil {
			cancel()
		}
		sendErr <- err
	}()
	var res *pb.BmcUpdateResult
	var rerr error
	for {
		m, err := s.Recv()
		if err != nil {
			if err != io.EOF {
				rerr = err
			}
			break
		}
		if p := m.GetProgress(); p != nil && req.Progress != nil {
			req.Progress(blob.Progress{Phase: blob.Phase(p.GetPhase()), Done: p.GetBytes(), Total: p.GetTotal(), Message: p.GetMessage()})
		}
		if r := m.GetResult(); r != nil {
			res = r
		}
	}
	cancel()
	if err := <-sendErr; err != nil {
		return fmt.Errorf("bmc %s: %w", c.path, err)
	}
	if rerr != nil {
		if parent.Err() != nil {
			return fmt.Errorf("bmc %s: update aborted: %w", c.path, parent.Err())
		}
		return fromStatus(rerr)
	}
	if res == nil {
		return fmt.Errorf("bmc %s: update stream ended without a result: %w", c.path, errdefs.ErrUnavailable)
	}
	return nil
}

// sendImage streams exactly size bytes of r and closes the send side.
func sendImage(s pb.Bmc_UpdateClient, r io.Reader, size int64) error {
	buf := make([]byte, ChunkSize)
	var sent int64
	for sent < size {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-sent)])
		if n > 0 {
			if serr := s.Send(&pb.BmcUpdateRequest{Msg: &pb.BmcUpdateRequest_Chunk{Chunk: buf[:n]}}); serr != nil {
				// io.EOF: the server ended the call; Recv has its status.
				return nil
			}
			sent += int64(n)
		}
		if err != nil && sent < size {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("image ended after %d of %d bytes", sent, size)
			}
			return fmt.Errorf("read image after %d bytes: %w", sent, err)
		}
	}
	_ = s.CloseSend()
	return nil
}

// fromStatus rebuilds the server's error: a *blob.PhaseError when the
// status names a phase, with errors.Is working for errdefs sentinels and
// blob.ErrActionFailed.
func fromStatus(err error) error {
	base := errdefs.FromGRPC(err)
	st, ok := status.FromError(err)
	if !ok {
		return base
	}
	for _, d := range st.Details() {
		f, ok := d.(*pb.BmcFailure)
		if !ok {
			continue
		}
		msg := strings.TrimPrefix(base.Error(), f.GetPhase()+": ")
		re := &remoteError{msg: msg, errs: []error{base}}
		if f.GetActionFailed() {
			re.errs = append(re.errs, blob.ErrActionFailed)
		}
		return &blob.PhaseError{Phase: blob.Phase(f.GetPhase()), Err: re}
	}
	return base
}

type remoteError struct {
	msg  string
	errs []error
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return e.errs }

// Blobs implements Inspector.
func (c *Client) Blobs(ctx context.Context) ([]Blob, error) {
	r, err := c.c.Blobs(rpcmeta.WithPath(ctx, c.path), &pb.BmcBlobsRequest{})
	if err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	out := make([]Blob, 0, len(r.GetBlobs()))
	for _, b := range r.GetBlobs() {
		out = append(out, fromPB(b))
	}
	return out, nil
}

// Stat implements Inspector.
func (c *Client) Stat(ctx context.Context, id string) (Blob, error) {
	r, err := c.c.Stat(rpcmeta.WithPath(ctx, c.path), &pb.BmcStatRequest{Id: id})
	if err != nil {
		return Blob{}, errdefs.FromGRPC(err)
	}
	return fromPB(r), nil
}

var (
	_ Updater   = (*Client)(nil)
	_ Inspector = (*Client)(nil)
	_ Updater   = (*Driver)(nil)
	_ Inspector = (*Driver)(nil)
)
