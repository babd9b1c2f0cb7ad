package state

import (
	"context"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/drivers"
)

func init() {
	drivers.Capability[Machine]("state", func(s grpc.ServiceRegistrar, r drivers.Resolver) {
		pb.RegisterStateServer(s, &server{r: r})
	})
}

type server struct {
	pb.UnimplementedStateServer
	r drivers.Resolver
}

func (s *server) machine(ctx context.Context) (Machine, error) {
	return drivers.ResolveAs[Machine](ctx, s.r, "state")
}

func (s *server) Get(ctx context.Context, _ *pb.StateRequest) (*pb.StateStatus, error) {
	m, err := s.machine(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	st, err := m.Get(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.StateStatus{State: st.State, Broken: st.Broken}, nil
}

func (s *server) Transition(req *pb.TransitionRequest, stream pb.State_TransitionServer) error {
	ctx := stream.Context()
	m, err := s.machine(ctx)
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	err = m.Transition(ctx, req.GetTarget(), func(e Event) {
		// A client that went away ends the transition through ctx.
		_ = stream.Send(&pb.TransitionEvent{Reached: e.Reached, Step: e.Step, Message: e.Message})
	})
	return errdefs.ToGRPC(err)
}

func (s *server) Force(ctx context.Context, req *pb.ForceRequest) (*pb.StateStatus, error) {
	m, err := s.machine(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if err := m.Force(ctx, req.GetState()); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	st, err := m.Get(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.StateStatus{State: st.State, Broken: st.Broken}, nil
}

func (s *server) States(ctx context.Context, _ *pb.StateRequest) (*pb.StatesResponse, error) {
	m, err := s.machine(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	names, err := m.States(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.StatesResponse{States: names}, nil
}
