package files

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/drivers"
)

func init() {
	drivers.Capability[Store]("files", func(s grpc.ServiceRegistrar, r drivers.Resolver) {
		pb.RegisterFilesServer(s, &server{r: r})
	})
}

type server struct {
	pb.UnimplementedFilesServer
	r drivers.Resolver
}

func (s *server) store(ctx context.Context) (Store, error) {
	return drivers.ResolveAs[Store](ctx, s.r, "files")
}

func (s *server) Put(stream pb.Files_PutServer) error {
	ctx := stream.Context()
	st, err := s.store(ctx)
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return errdefs.ToGRPC(errdefs.Invalidf("files: the first put message must carry the header"))
	}
	want := int64(-1)
	if h.Size != nil {
		want = h.GetSize()
	}
	n, err := st.Put(ctx, h.GetName(), &streamReader{s: stream, want: want})
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	return stream.SendAndClose(&pb.PutResponse{Size: n})
}

// streamReader reads a put's content from its stream, and fails instead
// of ending when the announced size does not match.
type streamReader struct {
	s    pb.Files_PutServer
	want int64
	got  int64
	pend []byte
	err  error
}

// next receives the next chunk into pend, or sets err.
func (r *streamReader) next() {
	for len(r.pend) == 0 && r.err == nil {
		m, err := r.s.Recv()
		switch {
		case errors.Is(err, io.EOF):
			r.err = io.EOF
			if r.want >= 0 && r.got != r.want {
				r.err = errdefs.Invalidf("upload ended after %d bytes of the announced %d", r.got, r.want)
			}
		case err != nil:
			r.err = fmt.Errorf("receive upload: %w", err)
		case m.GetHeader() != nil:
			r.err = errdefs.Invalidf("upload carries a second header")
		default:
			r.pend = m.GetData()
			r.got += int64(len(r.pend))
			if r.want >= 0 && r.got > r.want {
				r.err = errdefs.Invalidf("upload is longer than the announced %d bytes", r.want)
				r.pend = nil
			}
		}
	}
}

func (r *streamReader) Read(p []byte) (int, error) {
	r.next()
	if len(r.pend) == 0 {
		return 0, r.err
	}
	n := copy(p, r.pend)
	r.pend = r.pend[n:]
	return n, nil
}

// WriteTo writes each chunk as it arrives, so io.Copy makes one write per
// message instead of copying through a small buffer.
func (r *streamReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		r.next()
		if len(r.pend) > 0 {
			n, err := w.Write(r.pend)
			total += int64(n)
			r.pend = r.pend[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if errors.Is(r.err, io.EOF) {
			return total, nil
		}
		return total, r.err
	}
}

func (s *server) List(ctx context.Context, _ *pb.ListRequest) (*pb.ListResponse, error) {
	st, err := s.store(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	infos, err := st.List(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	out := &pb.ListResponse{}
	for _, i := range infos {
		out.Files = append(out.Files, &pb.FileInfo{Name: i.Name, Size: i.Size, ModTime: timestamppb.New(i.ModTime)})
	}
	return out, nil
}

func (s *server) Remove(ctx context.Context, req *pb.RemoveRequest) (*pb.RemoveResponse, error) {
	st, err := s.store(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if err := st.Remove(ctx, req.GetName()); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.RemoveResponse{}, nil
}

func (s *server) Url(ctx context.Context, _ *pb.UrlRequest) (*pb.UrlResponse, error) {
	st, err := s.store(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	l, ok := st.(Locator)
	if !ok {
		return nil, errdefs.ToGRPC(fmt.Errorf("files: this server has no URL for boards: %w", errdefs.ErrUnsupported))
	}
	u, err := l.URL(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.UrlResponse{Url: u}, nil
}
