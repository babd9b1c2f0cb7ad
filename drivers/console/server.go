package console

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/drivers"
)

// chunk is the largest output message; big enough to move a boot log in a
// few messages, small enough to keep echo latency low.
const chunk = 32 << 10

func init() {
	drivers.Capability[Attacher]("console", func(s grpc.ServiceRegistrar, r drivers.Resolver) {
		pb.RegisterConsoleServer(s, &server{r: r})
	})
}

type server struct {
	pb.UnimplementedConsoleServer
	r drivers.Resolver
}

func (s *server) Scrollback(ctx context.Context, _ *pb.ScrollbackRequest) (*pb.ScrollbackResponse, error) {
	c, err := drivers.ResolveAs[Attacher](ctx, s.r, "console")
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	b, err := c.Scrollback(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.ScrollbackResponse{Data: b}, nil
}

func (s *server) Attach(stream pb.Console_AttachServer) error {
	ctx := stream.Context()
	c, err := drivers.ResolveAs[Attacher](ctx, s.r, "console")
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return errdefs.ToGRPC(errdefs.Invalidf("console: the first message must open the attachment"))
	}
	a, err := c.Attach(ctx, AttachOptions{Write: open.GetWrite(), Replay: open.GetReplay()})
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	defer a.Close()
	// Tell the client it is attached before any output, so it can start
	// writing without racing the attach.
	if err := stream.Send(&pb.ConsoleOutput{}); err != nil {
		return err
	}

	inErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				inErr <- err
				a.Close()
				return
			}
			if d := m.GetData(); len(d) > 0 {
				if _, err := a.Write(d); err != nil {
					inErr <- errdefs.ToGRPC(err)
					a.Close()
					return
				}
			}
		}
	}()

	buf := make([]byte, chunk)
	for {
		n, err := a.Read(buf)
		if n > 0 {
			if serr := stream.Send(&pb.ConsoleOutput{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if err != nil {
			select {
			case e := <-inErr:
				return e
			default:
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return errdefs.ToGRPC(err)
		}
	}
}
