package storage

import (
	"context"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/drivers"
)

func init() {
	drivers.Capability[Disk]("storage", func(s grpc.ServiceRegistrar, r drivers.Resolver) {
		pb.RegisterStorageServer(s, &server{r: r})
	})
}

type server struct {
	pb.UnimplementedStorageServer
	r drivers.Resolver
}

func (s *server) disk(ctx context.Context) (Disk, error) {
	return drivers.ResolveAs[Disk](ctx, s.r, "storage")
}

func (s *server) Info(ctx context.Context, _ *pb.StorageInfoRequest) (*pb.StorageInfo, error) {
	d, err := s.disk(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	in, err := d.Info(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.StorageInfo{Size: in.Size, Path: in.Path, Allocated: in.Allocated, Busy: in.Busy}, nil
}

func (s *server) Write(stream pb.Storage_WriteServer) error {
	ctx := stream.Context()
	d, err := s.disk(ctx)
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return errdefs.ToGRPC(errdefs.Invalidf("storage: the first message of a write must be open"))
	}
	n, err := d.Write(ctx, drivers.NewChunkReader(stream.Recv, writeChunk, -1), WriteOptions{Size: open.GetSize(), Truncate: open.GetTruncate()})
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	return stream.SendAndClose(&pb.StorageWriteResponse{Written: n})
}

// writeChunk is the data a write message carries.
func writeChunk(m *pb.StorageWriteRequest) ([]byte, error) {
	if m.GetOpen() != nil {
		return nil, errdefs.Invalidf("storage: open sent twice in one write")
	}
	return m.GetData(), nil
}

func (s *server) Read(req *pb.StorageReadRequest, stream pb.Storage_ReadServer) error {
	ctx := stream.Context()
	d, err := s.disk(ctx)
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	_, err = d.Read(ctx, streamWriter{stream}, req.GetOffset(), req.GetLength())
	return errdefs.ToGRPC(err)
}

type streamWriter struct{ s pb.Storage_ReadServer }

func (w streamWriter) Write(p []byte) (int, error) {
	// gRPC encodes the message before Send returns, so p may be reused.
	if err := w.s.Send(&pb.StorageData{Data: p}); err != nil {
		return 0, err
	}
	return len(p), nil
}
