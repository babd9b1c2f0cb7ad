package files

import (
	"context"
	"fmt"

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
	n, err := st.Put(ctx, h.GetName(), drivers.NewChunkReader(stream.Recv, putChunk, want))
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	return stream.SendAndClose(&pb.PutResponse{Size: n})
}

// putChunk is the content a put message carries.
func putChunk(m *pb.PutRequest) ([]byte, error) {
	if m.GetHeader() != nil {
		return nil, errdefs.Invalidf("upload carries a second header")
	}
	return m.GetData(), nil
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
