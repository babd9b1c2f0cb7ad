package controller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/lab/controller/store"
)

// link is an exporter's open Listen stream on this replica.
type link struct {
	name   string
	send   chan *pb.ControllerMessage
	cancel context.CancelFunc
	// gone is closed when the link ends.
	gone      chan struct{}
	onlineRev int64
}

type linkService struct {
	pb.UnimplementedExporterLinkServer
	c *Controller
}

func (s *linkService) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	id, _ := callerOf(ctx)
	report, err := proto.Marshal(req.GetReport())
	if err != nil {
		return nil, errdefs.ToGRPC(errdefs.Invalidf("report: %v", err))
	}
	err = s.c.updateExporter(ctx, id.Name, func(e *store.Exporter) error {
		e.Labels = req.GetLabels()
		e.Report = report
		e.TunnelCert = req.GetTunnelCertSha256()
		e.Registered = time.Now()
		return nil
	})
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	s.c.log.Info("exporter registered", "exporter", id.Name, "labels", req.GetLabels())
	return &pb.RegisterResponse{Name: id.Name}, nil
}

// updateExporter rewrites an exporter record with f and waits until the
// cache has it.
func (c *Controller) updateExporter(ctx context.Context, name string, f func(*store.Exporter) error) error {
	rev, err := c.st.ModifyExporter(ctx, name, f)
	if err != nil {
		return err
	}
	return c.cache.WaitRev(ctx, rev)
}

func (s *linkService) Listen(stream pb.ExporterLink_ListenServer) error {
	c := s.c
	id, _ := callerOf(stream.Context())
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	l := &link{name: id.Name, send: make(chan *pb.ControllerMessage, 16), cancel: cancel, gone: make(chan struct{})}
	c.lmu.Lock()
	if old := c.links[id.Name]; old != nil {
		// A reconnect before the old stream was noticed dead: newest wins.
		old.cancel()
	}
	c.links[id.Name] = l
	c.lmu.Unlock()
	defer func() {
		c.lmu.Lock()
		if c.links[id.Name] == l {
			delete(c.links, id.Name)
		}
		c.lmu.Unlock()
		close(l.gone)
		c.hooks.exporterOffline(id.Name)
		c.dropOnline(l)
		c.m.exporterLinks.Dec()
		c.log.Info("exporter offline", "exporter", id.Name)
	}()
	c.m.exporterLinks.Inc()
	if err := c.putOnline(ctx, l); err != nil {
		return errdefs.ToGRPC(err)
	}
	c.log.Info("exporter online", "exporter", id.Name)

	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if e := m.GetHook(); e != nil {
				c.hookEvent(id.Name, e)
			}
			if e := m.GetEndLease(); e != nil {
				reason := "ended by exporter " + id.Name
				if e.GetReason() != "" {
					reason += ": " + e.GetReason()
				}
				if err := c.endLease(ctx, e.GetLeaseId(), id.Name, reason); err != nil {
					c.log.Warn("exporter asked to end a lease", "exporter", id.Name, "lease", e.GetLeaseId(), "err", err)
				}
			}
		}
	}()
	var last *pb.LeaseAssignment
	beat := time.NewTicker(10 * time.Second)
	defer beat.Stop()
	for {
		// Wake on this exporter's record, assignment and lease only: a lab
		// of a thousand exporters must not wake them all on every change.
		cur, gone := c.linkState(id)
		changed, stop := c.cache.ChangedKeys(store.ExportersPrefix+id.Name, store.AssignPrefix+id.Name, store.LeasesPrefix+cur.GetLeaseId())
		if cur2, gone2 := c.linkState(id); gone2 != gone || !proto.Equal(cur, cur2) {
			stop()
			continue
		}
		if last == nil || !proto.Equal(cur, last) {
			if err := stream.Send(&pb.ControllerMessage{Kind: &pb.ControllerMessage_Lease{Lease: cur}}); err != nil {
				stop()
				return err
			}
			last = cur
		}
		if gone {
			// Deleted (the deletion ended its lease in the same
			// transaction, and the exporter has just been told) or its
			// token rotated: the token it linked with is refused from now on.
			stop()
			c.log.Info("exporter deleted or its token rotated; ending its link", "exporter", id.Name)
			return errdefs.ToGRPC(fmt.Errorf("exporter %q was deleted or its token rotated: %w", id.Name, errdefs.ErrUnauthorized))
		}
		err := func() error {
			defer stop()
			select {
			case <-changed:
			case m := <-l.send:
				return stream.Send(m)
			case <-beat.C:
				return stream.Send(&pb.ControllerMessage{Kind: &pb.ControllerMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
			case <-recvErr:
				return errStop
			case <-ctx.Done():
				return errStop
			}
			return nil
		}()
		if err == errStop {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// linkState is what the exporter linked as id should enforce now, and
// whether id is gone (deleted, deleted and created again, or its token
// rotated).
func (c *Controller) linkState(id identity) (*pb.LeaseAssignment, bool) {
	a := &pb.LeaseAssignment{}
	gone := false
	c.cache.Read(func(v *store.View) {
		e := v.Exporters[id.Name]
		gone = e == nil || e.Create != id.Rev || e.TokenHash != id.TokenHash
		l := v.Leases[v.Assign[id.Name]]
		if l != nil && l.State == store.Ready && l.Exporter == id.Name {
			a.LeaseId, a.Client, a.End = l.ID, l.Client, timestamppb.New(l.End)
		}
	})
	return a, gone
}

func (c *Controller) putOnline(ctx context.Context, l *link) error {
	c.smu.Lock()
	sess := c.session
	c.smu.Unlock()
	rec := &store.Online{Replica: c.replica, Router: c.router, Tunnels: int32(c.tunnels()), Since: time.Now()}
	rev, err := c.st.PutOnline(ctx, l.name, rec, sess)
	if err != nil {
		return err
	}
	c.lmu.Lock()
	l.onlineRev = rev
	c.lmu.Unlock()
	return nil
}

// dropOnline deletes the online key unless a newer link rewrote it.
func (c *Controller) dropOnline(l *link) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c.lmu.Lock()
	rev := l.onlineRev
	c.lmu.Unlock()
	_ = c.st.DropOnline(ctx, l.name, rev)
}

// notifyDial asks a locally connected exporter to open its tunnel end.
func (c *Controller) notifyDial(exporter string, dr *pb.DialRequest) (<-chan struct{}, error) {
	// The exporter opens its end here, where the client waits.
	dr.Router = c.router
	dr.Security = c.tunnels()
	c.lmu.Lock()
	l := c.links[exporter]
	c.lmu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("exporter %s is not connected to controller %s (offline, or reconnecting): %w", exporter, c.router, errdefs.ErrUnavailable)
	}
	select {
	case l.send <- &pb.ControllerMessage{Kind: &pb.ControllerMessage_Dial{Dial: dr}}:
		return l.gone, nil
	case <-l.gone:
		return nil, fmt.Errorf("exporter %s went offline: %w", exporter, errdefs.ErrUnavailable)
	case <-time.After(5 * time.Second):
		return nil, fmt.Errorf("exporter %s does not take dial requests: %w", exporter, errdefs.ErrUnavailable)
	}
}

var errStop = errors.New("stop")

// tunnels is how this replica's tunnels are protected.
func (c *Controller) tunnels() pb.TunnelSecurity {
	if c.opts.NoTLS {
		return pb.TunnelSecurity_TUNNEL_SECURITY_PLAIN
	}
	return c.opts.Tunnels
}
