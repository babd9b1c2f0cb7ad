package flasher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
)

// Client is a remote flasher; it implements Programmer.
type Client struct {
	c    pb.FlasherClient
	path string
}

var _ Programmer = (*Client)(nil)

// NewClient returns a client for the flasher at path.
func NewClient(conn grpc.ClientConnInterface, path string) *Client {
	return &Client{c: pb.NewFlasherClient(conn), path: path}
}

// Flash implements Programmer: an uploaded image is streamed in ChunkSize
// chunks while the exporter works.
func (c *Client) Flash(ctx context.Context, img Image, opts FlashOptions, events func(Event)) (Result, error) {
	h := &pb.FlashHeader{
		Partition: opts.Partition, Sha256: opts.SHA256, Bmap: opts.Bmap, Direct: opts.Direct,
		ForceExporterHttp: opts.ForceExporterHTTP, ForceFlashBundle: opts.Bundle, ConsoleDebug: opts.ConsoleDebug,
		Size: img.Size, Name: img.Name,
	}
	switch {
	case img.Reader != nil:
		h.Source = &pb.FlashHeader_Upload{Upload: true}
	case img.URL != "":
		h.Source = &pb.FlashHeader_Url{Url: img.URL}
	case img.OCIRef != "":
		h.Source = &pb.FlashHeader_OciRef{OciRef: img.OCIRef}
	default:
		return Result{}, errdefs.Invalidf("flash: no image given")
	}
	ctx, cancel := context.WithCancel(rpcmeta.WithPath(ctx, c.path))
	defer cancel()
	s, err := c.c.Flash(ctx)
	if err != nil {
		return Result{}, errdefs.FromGRPC(err)
	}
	if err := s.Send(&pb.FlashRequest{Msg: &pb.FlashRequest_Header{Header: h}}); err != nil {
		return Result{}, c.recvErr(s, err)
	}
	upErr := make(chan error, 1)
	if img.Reader != nil {
		go func() { upErr <- upload(s, img.Reader) }()
	} else {
		_ = s.CloseSend()
		upErr <- nil
	}
	var res *pb.FlashResult
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			err = errdefs.FromGRPC(err)
			select {
			case uerr := <-upErr:
				if uerr != nil && !errors.Is(uerr, io.EOF) {
					err = fmt.Errorf("%w (upload: %v)", err, uerr)
				}
			default:
			}
			return Result{}, err
		}
		switch msg := m.GetMsg().(type) {
		case *pb.FlashEvent_Progress:
			if events != nil {
				p := msg.Progress
				events(Event{Phase: p.GetPhase(), Message: p.GetMessage(), Done: p.GetDone(), Total: p.GetTotal(), Image: p.GetImage(), MBps: p.GetMbps()})
			}
		case *pb.FlashEvent_Console:
			if events != nil {
				events(Event{Console: msg.Console})
			}
		case *pb.FlashEvent_Result:
			res = msg.Result
		}
	}
	if res == nil {
		return Result{}, errors.New("flash: the exporter ended without a result")
	}
	return Result{
		SHA256: res.GetSha256(), Written: res.GetWritten(), ImageSize: res.GetImageSize(), Target: res.GetTarget(),
		Duration: res.GetDuration().AsDuration(), Write: res.GetWrite().AsDuration(),
		Verify: res.GetVerify().AsDuration(), Verified: res.GetVerified(), Bmap: res.GetBmap(),
	}, nil
}

// upload sends r in chunks and closes the sending side.
func upload(s pb.Flasher_FlashClient, r io.Reader) error {
	buf := make([]byte, ChunkSize)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			// gRPC encodes the message before Send returns, so buf may be
			// reused.
			if serr := s.Send(&pb.FlashRequest{Msg: &pb.FlashRequest_Chunk{Chunk: buf[:n]}}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return s.CloseSend()
		}
		if err != nil {
			// Ending the stream short tells the exporter the upload broke.
			return fmt.Errorf("read the image: %w", err)
		}
	}
}

func (c *Client) recvErr(s grpc.ClientStream, err error) error {
	var m pb.FlashEvent
	if rerr := s.RecvMsg(&m); rerr != nil && !errors.Is(rerr, io.EOF) {
		err = rerr
	}
	return errdefs.FromGRPC(err)
}

// BootloaderShell implements Programmer.
func (c *Client) BootloaderShell(ctx context.Context, opts ShellOptions, events func(Event)) (Shell, error) {
	return c.shell(ctx, opts, events, c.c.BootloaderShell)
}

// BusyboxShell implements Programmer.
func (c *Client) BusyboxShell(ctx context.Context, opts ShellOptions, events func(Event)) (Shell, error) {
	return c.shell(ctx, opts, events, c.c.BusyboxShell)
}

type shellClient interface {
	Send(*pb.ShellInput) error
	Recv() (*pb.ShellOutput, error)
	CloseSend() error
}

func (c *Client) shell(ctx context.Context, opts ShellOptions, events func(Event), open func(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[pb.ShellInput, pb.ShellOutput], error)) (Shell, error) {
	ctx, cancel := context.WithCancel(rpcmeta.WithPath(ctx, c.path))
	s, err := open(ctx)
	if err != nil {
		cancel()
		return nil, errdefs.FromGRPC(err)
	}
	if err := s.Send(&pb.ShellInput{Msg: &pb.ShellInput_Open{Open: &pb.ShellOpen{ForceFlashBundle: opts.Bundle, ConsoleDebug: opts.ConsoleDebug}}}); err != nil {
		_, rerr := s.Recv()
		cancel()
		if rerr != nil {
			err = rerr
		}
		return nil, errdefs.FromGRPC(err)
	}
	var prompt string
	for {
		m, err := s.Recv()
		if err != nil {
			cancel()
			if errors.Is(err, io.EOF) {
				return nil, errors.New("shell: the exporter ended the stream before the shell was ready")
			}
			return nil, errdefs.FromGRPC(err)
		}
		switch msg := m.GetMsg().(type) {
		case *pb.ShellOutput_Ready:
			r := &remoteShell{s: s, cancel: cancel, out: newBufPipe(), done: make(chan struct{}), prompt: prompt}
			go r.recv()
			return r, nil
		case *pb.ShellOutput_Prompt:
			prompt = msg.Prompt
		case *pb.ShellOutput_Status:
			if events != nil {
				events(Event{Message: msg.Status})
			}
		case *pb.ShellOutput_Data:
			if events != nil {
				events(Event{Console: msg.Data})
			}
		}
	}
}

// remoteShell receives in its own goroutine, so Close can wait for the
// exporter to finish (it powers the board off) whether or not anyone is
// reading.
type remoteShell struct {
	s      shellClient
	cancel context.CancelFunc
	out    *bufPipe
	done   chan struct{}
	err    error
	wmu    sync.Mutex
	prompt string
	once   sync.Once
}

func (r *remoteShell) recv() {
	defer close(r.done)
	for {
		m, err := r.s.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				r.err = errdefs.FromGRPC(err)
			}
			r.out.Close()
			return
		}
		if d := m.GetData(); len(d) > 0 {
			_, _ = r.out.Write(d)
		}
	}
}

func (r *remoteShell) Read(p []byte) (int, error) {
	n, err := r.out.Read(p)
	if errors.Is(err, io.EOF) {
		<-r.done
		if r.err != nil {
			return n, r.err
		}
	}
	return n, err
}

func (r *remoteShell) Write(p []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.s.Send(&pb.ShellInput{Msg: &pb.ShellInput_Data{Data: p}}); err != nil {
		return 0, errdefs.FromGRPC(err)
	}
	return len(p), nil
}

// Prompt implements Shell.
func (r *remoteShell) Prompt() string { return r.prompt }

// Close ends the shell; the exporter powers the board off.
func (r *remoteShell) Close() error {
	r.once.Do(func() {
		r.wmu.Lock()
		_ = r.s.CloseSend()
		r.wmu.Unlock()
		// Wait for the exporter to finish (it powers the board off), but
		// not forever.
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
		}
		r.cancel()
	})
	return nil
}
