package power

import (
	"context"
	"time"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/drivers"
)

// DefaultCycleDelay is used when neither the caller nor the driver names a
// delay.
const DefaultCycleDelay = 2 * time.Second

func init() {
	drivers.Capability[Switcher]("power", func(s grpc.ServiceRegistrar, r drivers.Resolver) {
		pb.RegisterPowerServer(s, &server{r: r})
	})
}

type server struct {
	pb.UnimplementedPowerServer
	r drivers.Resolver
}

func (s *server) On(ctx context.Context, _ *pb.PowerRequest) (*pb.PowerResponse, error) {
	return s.do(ctx, func(sw Switcher, path string) error { return notified(path, OpOn, sw.On(ctx)) })
}

func (s *server) Off(ctx context.Context, _ *pb.PowerRequest) (*pb.PowerResponse, error) {
	return s.do(ctx, func(sw Switcher, path string) error { return notified(path, OpOff, sw.Off(ctx)) })
}

func (s *server) Cycle(ctx context.Context, req *pb.CycleRequest) (*pb.PowerResponse, error) {
	delay := req.GetDelay().AsDuration()
	return s.do(ctx, func(sw Switcher, path string) error {
		if delay == 0 {
			if _, native := sw.(Cycler); !native {
				delay = DefaultCycleDelay
			}
		}
		return notified(path, OpCycle, Cycle(ctx, sw, delay))
	})
}

func (s *server) Status(ctx context.Context, _ *pb.PowerRequest) (*pb.PowerResponse, error) {
	return s.do(ctx, func(Switcher, string) error { return nil })
}

func (s *server) do(ctx context.Context, f func(sw Switcher, path string) error) (*pb.PowerResponse, error) {
	sw, err := drivers.ResolveAs[Switcher](ctx, s.r, "power")
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	_, path, err := s.r.Resolve(ctx)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if err := f(sw, path); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	st := Unknown
	if r, ok := sw.(Reader); ok {
		if st, err = r.State(ctx); err != nil {
			return nil, errdefs.ToGRPC(err)
		}
	}
	return &pb.PowerResponse{State: toPB(st)}, nil
}

// notified tells the watchers about a call that succeeded.
func notified(path string, op Op, err error) error {
	if err == nil {
		notify(path, op)
	}
	return err
}

func toPB(s State) pb.PowerState {
	switch s {
	case On:
		return pb.PowerState_POWER_STATE_ON
	case Off:
		return pb.PowerState_POWER_STATE_OFF
	}
	return pb.PowerState_POWER_STATE_UNSPECIFIED
}

func fromPB(s pb.PowerState) State {
	switch s {
	case pb.PowerState_POWER_STATE_ON:
		return On
	case pb.PowerState_POWER_STATE_OFF:
		return Off
	}
	return Unknown
}
