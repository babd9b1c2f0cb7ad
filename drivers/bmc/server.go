package bmc

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/bmc/blob"
)

// progressEvery bounds how often byte counts cross the wire; the updater
// reports every IPMI write, thousands a second.
const progressEvery = 100 * time.Millisecond

func init() {
	drivers.Capability[Updater]("bmc", func(s grpc.ServiceRegistrar, r drivers.Resolver) {
		pb.RegisterBmcServer(s, &server{r: r})
	})
}

type server struct {
	pb.UnimplementedBmcServer
	r drivers.Resolver
}

func (s *server) Update(stream pb.Bmc_UpdateServer) error {
	ctx := stream.Context()
	u, err := drivers.ResolveAs[Updater](ctx, s.r, "bmc")
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return errdefs.ToGRPC(errdefs.Invalidf("bmc update: the first message must carry the header"))
	}
	start := time.Now()
	fw := &forwarder{stream: stream}
	err = u.Update(ctx, Request{
		Type:         h.GetType(),
		Image:        drivers.NewChunkReader(stream.Recv, imageChunk, -1),
		Size:         h.GetImageSize(),
		Signature:    h.GetSignature(),
		IgnoreUpdate: h.GetIgnoreUpdate(),
		Progress:     fw.progress,
	})
	if err != nil {
		return failure(err)
	}
	return stream.Send(&pb.BmcUpdateResponse{Msg: &pb.BmcUpdateResponse_Result{Result: &pb.BmcUpdateResult{
		Bytes: h.GetImageSize(), Elapsed: durationpb.New(time.Since(start)),
	}}})
}

// failure is err as a status whose details name the failed phase, so the
// client rebuilds a *blob.PhaseError.
func failure(err error) error {
	st := status.Convert(errdefs.ToGRPC(err))
	var pe *blob.PhaseError
	if errors.As(err, &pe) {
		if d, derr := st.WithDetails(&pb.BmcFailure{Phase: string(pe.Phase), ActionFailed: errors.Is(err, blob.ErrActionFailed)}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// forwarder sends progress to the client: every phase change and message,
// byte counts at most every progressEvery and always the last one.
type forwarder struct {
	stream pb.Bmc_UpdateServer
	phase  blob.Phase
	last   time.Time
}

func (f *forwarder) progress(p blob.Progress) {
	now := time.Now()
	if p.Phase == f.phase && p.Message == "" && p.Done != p.Total && now.Sub(f.last) < progressEvery {
		return
	}
	f.phase, f.last = p.Phase, now
	// A client that went away cancels the stream's context, which ends the
	// update; a failed send needs no handling of its own.
	_ = f.stream.Send(&pb.BmcUpdateResponse{Msg: &pb.BmcUpdateResponse_Progress{Progress: &pb.BmcProgress{
		Phase: string(p.Phase), Bytes: p.Done, Total: p.Total, Message: p.Message,
	}}})
}

// imageChunk is the image bytes an update message carries.
func imageChunk(m *pb.BmcUpdateRequest) ([]byte, error) {
	if m.GetHeader() != nil {
		return nil, errdefs.Invalidf("bmc update: a second header in the image stream")
	}
	return m.GetChunk(), nil
}

func (s *server) Blobs(ctx context.Context, _ *pb.BmcBlobsRequest) (*pb.BmcBlobsResponse, error) {
	in, err := drivers.ResolveAs[Inspector](ctx, s.r, "bmc")
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	bs, err := in.Blobs(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	out := &pb.BmcBlobsResponse{}
	for _, b := range bs {
		out.Blobs = append(out.Blobs, toPB(b))
	}
	return out, nil
}

func (s *server) Stat(ctx context.Context, req *pb.BmcStatRequest) (*pb.BmcBlob, error) {
	in, err := drivers.ResolveAs[Inspector](ctx, s.r, "bmc")
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	b, err := in.Stat(ctx, req.GetId())
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return toPB(b), nil
}

func toPB(b Blob) *pb.BmcBlob {
	out := &pb.BmcBlob{Id: b.ID, State: uint32(b.State), Size: b.Size, Metadata: b.Metadata}
	if b.Err != nil {
		out.StatError = b.Err.Error()
	}
	return out
}

func fromPB(b *pb.BmcBlob) Blob {
	out := Blob{ID: b.GetId(), State: State(b.GetState()), Size: b.GetSize(), Metadata: b.GetMetadata()}
	if e := b.GetStatError(); e != "" {
		out.Err = errors.New(e)
	}
	return out
}
