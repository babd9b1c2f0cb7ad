package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/token"
	"github.com/pogolab/pogo/lab/controller/lease"
	"github.com/pogolab/pogo/lab/controller/store"
)

// adminService is served on admin.sock only.
type adminService struct {
	pb.UnimplementedAdminServer
	c *Controller
}

func (s *adminService) CreateClient(ctx context.Context, req *pb.CreateIdentityRequest) (*pb.CreateIdentityResponse, error) {
	return s.create(ctx, token.Client, req)
}

func (s *adminService) CreateExporter(ctx context.Context, req *pb.CreateIdentityRequest) (*pb.CreateIdentityResponse, error) {
	return s.create(ctx, token.Exporter, req)
}

func (s *adminService) create(ctx context.Context, kind string, req *pb.CreateIdentityRequest) (*pb.CreateIdentityResponse, error) {
	name := req.GetName()
	if err := token.CheckName(name); err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("%s %v: %w", kind, err, errdefs.ErrInvalid))
	}
	tok, hash := token.NewToken(kind, name)
	var rev int64
	var err error
	switch {
	case kind == token.Client:
		rev, err = s.c.st.PutClient(ctx, &store.Identity{Name: name, TokenHash: hash, Created: time.Now()}, req.GetRotate())
	case req.GetRotate():
		rev, err = s.c.st.ModifyExporter(ctx, name, func(e *store.Exporter) error { e.TokenHash = hash; return nil })
	default:
		rev, err = s.c.st.CreateExporter(ctx, &store.Exporter{Name: name, TokenHash: hash, Created: time.Now()})
	}
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	_ = s.c.cache.WaitRev(ctx, rev)
	s.c.log.Info("identity created", "kind", kind, "name", name, "rotate", req.GetRotate())
	return &pb.CreateIdentityResponse{Name: name, Token: tok}, nil
}

func (s *adminService) SetExporterEnabled(ctx context.Context, req *pb.SetExporterEnabledRequest) (*pb.ExporterInfo, error) {
	err := s.c.updateExporter(ctx, req.GetName(), func(e *store.Exporter) error { e.Disabled = !req.GetEnabled(); return nil })
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	var info *pb.ExporterInfo
	s.c.cache.Read(func(v *store.View) {
		if e := v.Exporters[req.GetName()]; e != nil {
			info = exporterInfo(v, req.GetName(), e)
		}
	})
	return info, nil
}

func (s *adminService) SetPolicy(ctx context.Context, p *pb.Policy) (*pb.Policy, error) {
	if err := token.CheckName(p.GetClient()); err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("client %v: %w", err, errdefs.ErrInvalid))
	}
	sel, err := lease.Parse(p.GetSelector())
	if err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("selector: %v: %w", err, errdefs.ErrInvalid))
	}
	rec := &store.Policy{Client: p.GetClient(), Priority: int(p.GetPriority()), Selector: sel.String()}
	rev, err := s.c.st.PutPolicy(ctx, rec)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	_ = s.c.cache.WaitRev(ctx, rev)
	return &pb.Policy{Client: rec.Client, Priority: int32(rec.Priority), Selector: rec.Selector}, nil
}

func (s *adminService) GetCA(context.Context, *pb.GetCARequest) (*pb.GetCAResponse, error) {
	return &pb.GetCAResponse{Pem: string(s.c.ca.CertPEM)}, nil
}
