package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/token"
	"github.com/pogolab/pogo/lab/controller/store"
)

// maxDeleteLeases bounds the leases a client deletion ends in its own
// transaction (a compare, a put and a nested assignment delete each,
// under etcd's default --max-txn-ops of 128). A client with more has its
// oldest ended first, one by one.
const maxDeleteLeases = 60

func (s *adminService) ListIdentities(context.Context, *pb.ListIdentitiesRequest) (*pb.ListIdentitiesResponse, error) {
	out := &pb.ListIdentitiesResponse{}
	s.c.cache.Read(func(v *store.View) {
		for name, id := range v.Clients {
			p := &pb.Policy{Client: name}
			if rec := v.Policies[name]; rec != nil {
				p.Priority, p.Selector = int32(rec.Priority), rec.Selector
			}
			out.Identities = append(out.Identities, &pb.Identity{
				Kind: pb.IdentityKind_IDENTITY_KIND_CLIENT, Name: name, Created: timestamppb.New(id.Created), Policy: p,
			})
		}
		// A policy may be set before its client exists: list it, with
		// no creation time, so it does not surprise whoever creates the
		// client later.
		for name, rec := range v.Policies {
			if _, ok := v.Clients[name]; !ok {
				out.Identities = append(out.Identities, &pb.Identity{
					Kind: pb.IdentityKind_IDENTITY_KIND_CLIENT, Name: name,
					Policy: &pb.Policy{Client: name, Priority: int32(rec.Priority), Selector: rec.Selector},
				})
			}
		}
		for name, e := range v.Exporters {
			_, online := v.Online[name]
			id := &pb.Identity{
				Kind: pb.IdentityKind_IDENTITY_KIND_EXPORTER, Name: name, Created: timestamppb.New(e.Created),
				Enabled: !e.Disabled, Online: online,
			}
			if !e.Registered.IsZero() {
				id.Registered = timestamppb.New(e.Registered)
			}
			out.Identities = append(out.Identities, id)
		}
	})
	sort.Slice(out.Identities, func(i, j int) bool {
		a, b := out.Identities[i], out.Identities[j]
		if a.GetKind() != b.GetKind() {
			return a.GetKind() < b.GetKind()
		}
		return a.GetName() < b.GetName()
	})
	return out, nil
}

func (s *adminService) DeleteIdentity(ctx context.Context, req *pb.DeleteIdentityRequest) (*pb.DeleteIdentityResponse, error) {
	del := map[pb.IdentityKind]func(context.Context, string) ([]string, error){
		pb.IdentityKind_IDENTITY_KIND_CLIENT:   s.c.deleteClient,
		pb.IdentityKind_IDENTITY_KIND_EXPORTER: s.c.deleteExporter,
	}[req.GetKind()]
	if del == nil {
		return nil, errdefs.ToGRPC(errdefs.Invalidf("kind %s: want client or exporter", req.GetKind()))
	}
	if err := token.CheckName(req.GetName()); err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("%s: %w", err, errdefs.ErrInvalid))
	}
	ended, err := del(ctx, req.GetName())
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return &pb.DeleteIdentityResponse{EndedLeases: ended}, nil
}

// deleteClient removes a client and its policy and ends its pending and
// ready leases, all in one transaction: from its revision on the token is
// refused and no replica's scheduler sees a live lease of a missing
// client. A lease requested while the deletion commits is left to the
// scheduler, which marks it invalid.
func (c *Controller) deleteClient(ctx context.Context, name string) ([]string, error) {
	reason := "client " + name + " deleted"
	for {
		id, read, err := c.st.GetClient(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("read client %s: %w", name, err)
		}
		if id == nil {
			return nil, fmt.Errorf("client %q: %w", name, errdefs.ErrNotFound)
		}
		// From here the cache holds every lease the client had when read;
		// each is compared, so a lease changed since makes us read again.
		if err := c.cache.WaitRev(ctx, read); err != nil {
			return nil, err
		}
		var live []*store.Lease
		c.cache.Read(func(v *store.View) {
			for _, l := range v.Leases {
				if l.Client == name && !l.Final() {
					live = append(live, l)
				}
			}
		})
		sort.Slice(live, func(i, j int) bool { return live[i].Create < live[j].Create })
		if n := len(live) - maxDeleteLeases; n > 0 {
			for _, l := range live[:n] {
				if err := c.finish(ctx, l.ID, store.Ended, reason); err != nil {
					return nil, fmt.Errorf("end lease %s of client %s: %w", l.ID, name, err)
				}
			}
			continue
		}
		now := time.Now()
		ids := make([]string, 0, len(live))
		ended := make([]*store.Lease, 0, len(live))
		for _, l := range live {
			nl, err := l.Finish(store.Ended, reason, now)
			if err != nil {
				return nil, err
			}
			ended = append(ended, nl)
			ids = append(ids, l.ID)
		}
		rev, err := c.st.DeleteClient(ctx, id, ended)
		if errors.Is(err, store.ErrChanged) {
			continue
		}
		if err != nil {
			return nil, err
		}
		_ = c.cache.WaitRev(ctx, rev)
		c.log.Info("identity deleted", "kind", "client", "name", name, "leases_ended", ids)
		return ids, nil
	}
}

// deleteExporter removes an exporter, its online record and its
// assignment and ends the lease on it, in one transaction. Grants compare
// the exporter record, so none succeeds after it; the exporter's Listen
// stream, on whichever replica, sends the now empty assignment and ends.
func (c *Controller) deleteExporter(ctx context.Context, name string) ([]string, error) {
	reason := "exporter " + name + " deleted"
	for {
		e, read, err := c.st.GetExporter(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("read exporter %s: %w", name, err)
		}
		if e == nil {
			return nil, fmt.Errorf("exporter %q: %w", name, errdefs.ErrNotFound)
		}
		if err := c.cache.WaitRev(ctx, read); err != nil {
			return nil, err
		}
		var held string
		var l *store.Lease
		c.cache.Read(func(v *store.View) {
			held = v.Assign[name]
			l = v.Leases[held]
		})
		var ids []string
		var ended *store.Lease
		if l != nil && held != "" && l.State == store.Ready && l.Exporter == name {
			if ended, err = l.Finish(store.Ended, reason, time.Now()); err != nil {
				return nil, err
			}
			ids = append(ids, l.ID)
		}
		rev, err := c.st.DeleteExporter(ctx, e, held, ended)
		if errors.Is(err, store.ErrChanged) {
			continue
		}
		if err != nil {
			return nil, err
		}
		_ = c.cache.WaitRev(ctx, rev)
		c.log.Info("identity deleted", "kind", "exporter", "name", name, "leases_ended", ids)
		c.endUnsatisfiable(ctx)
		return ids, nil
	}
}

// endUnsatisfiable ends the pending leases no exporter can serve any more
// (those naming a deleted exporter, or whose selector only it matched), as
// a request for them would be refused now.
func (c *Controller) endUnsatisfiable(ctx context.Context) {
	unsat := map[string]string{}
	c.cache.Read(func(v *store.View) {
		for _, l := range v.Leases {
			if l.State != store.Pending {
				continue
			}
			if reason := c.unsatisfiable(v, l); reason != "" {
				unsat[l.ID] = reason
			}
		}
	})
	for id, reason := range unsat {
		if err := c.finish(ctx, id, store.Unsatisfiable, reason); err != nil {
			c.log.Warn("end an unsatisfiable lease", "lease", id, "err", err)
		}
	}
}
