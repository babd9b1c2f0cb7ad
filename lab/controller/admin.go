package controller

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	var key, val string
	if kind == token.Client {
		key, val = store.ClientsPrefix+name, jsonString(&store.Identity{Name: name, TokenHash: hash, Created: time.Now()})
	} else {
		key = store.ExportersPrefix + name
		if req.GetRotate() {
			err := s.c.updateExporter(ctx, name, func(e *store.Exporter) error { e.TokenHash = hash; return nil })
			if err != nil {
				return nil, errdefs.ToGRPC(err)
			}
			return &pb.CreateIdentityResponse{Name: name, Token: tok}, nil
		}
		val = jsonString(&store.Exporter{Name: name, TokenHash: hash, Created: time.Now()})
	}
	txn := s.c.st.Client.Txn(ctx)
	if !req.GetRotate() {
		txn = txn.If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	}
	tr, err := txn.Then(clientv3.OpPut(key, val)).Commit()
	if err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("store %s %s: %w", kind, name, err))
	}
	if !tr.Succeeded {
		return nil, errdefs.ToGRPC(fmt.Errorf("%s %q already exists (rotate its token with --rotate): %w", kind, name, errdefs.ErrExists))
	}
	_ = s.c.cache.WaitRev(ctx, tr.Header.Revision)
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
	r, err := s.c.st.Client.Put(ctx, store.PoliciesPrefix+p.GetClient(), jsonString(rec))
	if err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("store policy: %w", err))
	}
	_ = s.c.cache.WaitRev(ctx, r.Header.Revision)
	return &pb.Policy{Client: rec.Client, Priority: int32(rec.Priority), Selector: rec.Selector}, nil
}

func (s *adminService) GetCA(context.Context, *pb.GetCARequest) (*pb.GetCAResponse, error) {
	return &pb.GetCAResponse{Pem: string(s.c.ca.CertPEM)}, nil
}
