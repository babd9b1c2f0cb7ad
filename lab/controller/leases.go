package controller

import (
	"context"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/token"
	"github.com/pogolab/pogo/lab/controller/lease"
	"github.com/pogolab/pogo/lab/controller/store"
)

// MaxDuration is the longest lease anyone may ask for.
const MaxDuration = 30 * 24 * time.Hour

// StreamTokenTTL bounds how long a stream token may wait to be used.
const StreamTokenTTL = 30 * time.Second

type leaseService struct {
	pb.UnimplementedLeasesServer
	c *Controller
}

func client(ctx context.Context) string {
	id, _ := callerOf(ctx)
	return id.Name
}

func (s *leaseService) CreateLease(ctx context.Context, req *pb.CreateLeaseRequest) (*pb.Lease, error) {
	l, err := s.c.createLease(ctx, client(ctx), req)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return s.c.toPB(l), nil
}

func (c *Controller) createLease(ctx context.Context, who string, req *pb.CreateLeaseRequest) (*store.Lease, error) {
	sel, err := lease.Parse(req.GetSelector())
	if err != nil {
		return nil, fmt.Errorf("selector: %v: %w", err, errdefs.ErrInvalid)
	}
	if n := req.GetExporterName(); n != "" {
		if err := token.CheckName(n); err != nil {
			return nil, fmt.Errorf("exporter_name: %v: %w", err, errdefs.ErrInvalid)
		}
	}
	d := req.GetDuration().AsDuration()
	if d <= 0 || d > MaxDuration {
		return nil, errdefs.Invalidf("duration %s: want more than 0 and at most %s", d, MaxDuration)
	}
	for k, v := range req.GetTags() {
		if k == "" || len(k) > 63 || len(v) > 256 || strings.ContainsAny(k, "\n\t ") {
			return nil, errdefs.Invalidf("tag %q: keys are 1-63 characters without blanks, values at most 256", k)
		}
	}
	var begin time.Time
	if req.GetBegin() != nil {
		begin = req.GetBegin().AsTime()
	}
	l := &store.Lease{
		ID: randHex(6), Client: who, Selector: sel.String(), ExporterName: req.GetExporterName(),
		Duration: d, Begin: begin, Tags: req.GetTags(), State: store.Pending, Created: time.Now(),
	}
	c.cache.Read(func(v *store.View) {
		max := 0
		if p := v.Policies[who]; p != nil {
			max = p.Priority
		}
		l.Priority = max
		if p := req.GetPriority(); p != 0 {
			if int(p) > max {
				err = errdefs.Invalidf("priority %d: your policy allows at most %d", p, max)
				return
			}
			l.Priority = int(p)
		}
		if reason := c.unsatisfiable(v, l); reason != "" {
			l.State, l.Reason = store.Unsatisfiable, reason
		}
	})
	if err != nil {
		return nil, err
	}
	rev, err := c.storeLease(ctx, l)
	if err != nil {
		return nil, err
	}
	if err := c.cache.WaitRev(ctx, rev); err != nil {
		return nil, err
	}
	c.log.Info("lease requested", "lease", l.ID, "client", who, "selector", l.Selector, "exporter", l.ExporterName, "duration", d, "state", l.State)
	return c.lease(l.ID, l), nil
}

func describe(l *store.Lease) string {
	var parts []string
	if l.Selector != "" {
		parts = append(parts, "selector "+l.Selector)
	}
	if l.ExporterName != "" {
		parts = append(parts, "name "+l.ExporterName)
	}
	if len(parts) == 0 {
		return "any exporter"
	}
	return strings.Join(parts, " and ")
}

// lease returns the cached lease id, or def when the cache lacks it.
func (c *Controller) lease(id string, def *store.Lease) *store.Lease {
	var l *store.Lease
	c.cache.Read(func(v *store.View) { l = v.Leases[id] })
	if l == nil {
		return def
	}
	return l
}

// own returns the caller's lease or NotFound (others' leases are not
// revealed).
func (c *Controller) own(ctx context.Context, id string) (*store.Lease, error) {
	l := c.lease(id, nil)
	if l == nil || l.Client != client(ctx) {
		return nil, fmt.Errorf("lease %q: %w", id, errdefs.ErrNotFound)
	}
	return l, nil
}

func (s *leaseService) GetLease(ctx context.Context, req *pb.GetLeaseRequest) (*pb.Lease, error) {
	l, err := s.c.own(ctx, req.GetId())
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return s.c.toPB(l), nil
}

func (s *leaseService) ListLeases(ctx context.Context, req *pb.ListLeasesRequest) (*pb.ListLeasesResponse, error) {
	who := client(ctx)
	var ls []*store.Lease
	s.c.cache.Read(func(v *store.View) {
		for _, l := range v.Leases {
			if l.Client == who && (req.GetAll() || !l.Final()) {
				ls = append(ls, l)
			}
		}
	})
	sort.Slice(ls, func(i, j int) bool { return ls[i].Create < ls[j].Create })
	out := &pb.ListLeasesResponse{}
	for _, l := range ls {
		out.Leases = append(out.Leases, s.c.toPB(l))
	}
	return out, nil
}

func (s *leaseService) UpdateLease(ctx context.Context, req *pb.UpdateLeaseRequest) (*pb.Lease, error) {
	if _, err := s.c.own(ctx, req.GetId()); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	ext := req.GetExtend().AsDuration()
	if req.GetExtend() != nil && ext <= 0 {
		return nil, errdefs.ToGRPC(errdefs.Invalidf("extend %s: leases only ever get longer; give a positive duration", ext))
	}
	if req.GetExtend() == nil && req.GetEnd() == nil {
		return nil, errdefs.ToGRPC(errdefs.Invalidf("say how to update the lease: extend or end"))
	}
	l, err := s.c.modifyLease(ctx, req.GetId(), func(l *store.Lease) error {
		switch l.State {
		case store.Pending:
			if req.GetEnd() != nil {
				return fmt.Errorf("lease %s is pending: its end is only known once granted; extend it instead: %w", l.ID, errdefs.ErrPrecondition)
			}
			if l.Duration+ext > MaxDuration {
				return errdefs.Invalidf("a lease of %s would exceed the maximum %s", l.Duration+ext, MaxDuration)
			}
			l.Duration += ext
		case store.Ready:
			end := l.End.Add(ext)
			if req.GetEnd() != nil {
				end = req.GetEnd().AsTime()
			}
			if end.Before(l.End) {
				return errdefs.Invalidf("lease %s ends at %s; %s would shorten it (leases only ever get longer)", l.ID, l.End.Format(time.RFC3339), end.Format(time.RFC3339))
			}
			if end.Sub(l.Granted) > MaxDuration {
				return errdefs.Invalidf("a lease of %s would exceed the maximum %s", end.Sub(l.Granted).Round(time.Second), MaxDuration)
			}
			l.Duration = end.Sub(l.Granted)
			l.End = end
		default:
			return fmt.Errorf("lease %s is %s (%s): %w", l.ID, l.State, l.Reason, errdefs.ErrExpired)
		}
		return nil
	})
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return s.c.toPB(s.c.lease(l.ID, l)), nil
}

func (s *leaseService) DeleteLease(ctx context.Context, req *pb.DeleteLeaseRequest) (*pb.Lease, error) {
	l, err := s.c.own(ctx, req.GetId())
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	reason := "released by " + l.Client
	if l.State == store.Pending {
		reason = "cancelled by " + l.Client
	}
	if err := s.c.finish(ctx, l.ID, store.Ended, reason); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return s.c.toPB(s.c.lease(l.ID, l)), nil
}

func (s *leaseService) WatchLease(req *pb.GetLeaseRequest, stream pb.Leases_WatchLeaseServer) error {
	ctx := stream.Context()
	var last *pb.Lease
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		changed, stop := s.c.cache.ChangedKeys(store.LeasesPrefix + req.GetId())
		l, err := s.c.own(ctx, req.GetId())
		if err != nil {
			stop()
			return errdefs.ToGRPC(err)
		}
		cur := s.c.toPB(l)
		if last == nil || !proto.Equal(cur, last) {
			if err := stream.Send(cur); err != nil {
				stop()
				return err
			}
			last = cur
		}
		if l.Final() {
			stop()
			return nil
		}
		// The lease itself wakes the watch; the queue position of a
		// pending lease, which moves with other leases, is refreshed
		// twice a second.
		var tc <-chan time.Time
		if l.State == store.Pending {
			tc = tick.C
		}
		select {
		case <-changed:
		case <-tc:
		case <-ctx.Done():
			stop()
			return nil
		}
		stop()
	}
}

func (s *leaseService) ListExporters(ctx context.Context, req *pb.ListExportersRequest) (*pb.ListExportersResponse, error) {
	sel, err := lease.Parse(req.GetSelector())
	if err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("selector: %v: %w", err, errdefs.ErrInvalid))
	}
	who := client(ctx)
	out := &pb.ListExportersResponse{}
	s.c.cache.Read(func(v *store.View) {
		var policy lease.Selector
		if p := v.Policies[who]; p != nil {
			policy = s.c.selectors.get(p.Selector)
		}
		for name, e := range v.Exporters {
			if !sel.Matches(e.Labels) || !policy.Matches(e.Labels) {
				continue
			}
			out.Exporters = append(out.Exporters, exporterInfo(v, name, e))
		}
	})
	sort.Slice(out.Exporters, func(i, j int) bool { return out.Exporters[i].Name < out.Exporters[j].Name })
	return out, nil
}

func exporterInfo(v *store.View, name string, e *store.Exporter) *pb.ExporterInfo {
	_, online := v.Online[name]
	info := &pb.ExporterInfo{Name: name, Labels: e.Labels, Online: online, Enabled: !e.Disabled}
	if !e.Registered.IsZero() {
		info.Registered = timestamppb.New(e.Registered)
	}
	if len(e.Report) > 0 {
		rep := &pb.ReportResponse{}
		if proto.Unmarshal(e.Report, rep) == nil {
			info.Report = rep
		}
	}
	if l := v.Leases[v.Assign[name]]; l != nil && l.State == store.Ready {
		info.LeaseId, info.LeasedBy, info.LeaseEnd = l.ID, l.Client, timestamppb.New(l.End)
	}
	return info
}

func (s *leaseService) Dial(ctx context.Context, req *pb.DialLeaseRequest) (*pb.DialLeaseResponse, error) {
	l, err := s.c.own(ctx, req.GetLeaseId())
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	if err := usable(l); err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	var on *store.Online
	var cert string
	s.c.cache.Read(func(v *store.View) {
		on = v.Online[l.Exporter]
		if e := v.Exporters[l.Exporter]; e != nil {
			cert = e.TunnelCert
		}
	})
	if on == nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("exporter %s is offline; lease %s stays yours until %s: %w", l.Exporter, l.ID, l.End.Format(time.RFC3339), errdefs.ErrUnavailable))
	}
	sec := pb.TunnelSecurity(on.Tunnels)
	if sec == pb.TunnelSecurity_TUNNEL_SECURITY_E2E {
		if !fingerprint(req.GetClientCertSha256()) {
			return nil, errdefs.ToGRPC(errdefs.Invalidf("tunnels to exporter %s are end-to-end TLS: the dial must carry the client's certificate fingerprint (64 hex digits), got %.70q", l.Exporter, req.GetClientCertSha256()))
		}
		if cert == "" {
			return nil, errdefs.ToGRPC(fmt.Errorf("exporter %s registered no certificate for end-to-end tunnels (is it older than the controller?): %w", l.Exporter, errdefs.ErrUnavailable))
		}
	}
	tok := s.c.signer.Sign(token.StreamClaims{Lease: l.ID, Exporter: l.Exporter, Client: l.Client, Side: token.Client, ClientCert: req.GetClientCertSha256(), Expires: time.Now().Add(StreamTokenTTL)})
	return &pb.DialLeaseResponse{Router: on.Router, StreamToken: tok, Security: sec, ExporterCertSha256: cert}, nil
}

// fingerprint says whether s looks like a SHA-256 in hex.
func fingerprint(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// usable says why a lease cannot be used to reach its exporter.
func usable(l *store.Lease) error {
	switch l.State {
	case store.Ready:
		if !l.End.After(time.Now()) {
			return fmt.Errorf("lease %s expired at %s: %w", l.ID, l.End.Format(time.RFC3339), errdefs.ErrExpired)
		}
		return nil
	case store.Pending:
		return fmt.Errorf("lease %s is still pending: %w", l.ID, errdefs.ErrPrecondition)
	case store.Unsatisfiable:
		return fmt.Errorf("lease %s is unsatisfiable: %s: %w", l.ID, l.Reason, errdefs.ErrPrecondition)
	}
	return fmt.Errorf("lease %s has %s: %s: %w", l.ID, l.State, l.Reason, errdefs.ErrExpired)
}

func (c *Controller) toPB(l *store.Lease) *pb.Lease {
	out := &pb.Lease{
		Id: l.ID, Client: l.Client, Selector: l.Selector, ExporterName: l.ExporterName,
		Duration: durationpb.New(l.Duration), Tags: l.Tags, Priority: int32(l.Priority),
		State: stateToPB(l.State), Exporter: l.Exporter, Created: timestamppb.New(l.Created), Reason: l.Reason,
	}
	if !l.Begin.IsZero() {
		out.Begin = timestamppb.New(l.Begin)
	}
	if !l.Granted.IsZero() {
		out.Granted = timestamppb.New(l.Granted)
	}
	if !l.End.IsZero() {
		out.End = timestamppb.New(l.End)
	}
	if l.State == store.Pending {
		out.QueuePosition = int32(c.position(l.ID))
	}
	return out
}

func stateToPB(s store.State) pb.LeaseState {
	switch s {
	case store.Pending:
		return pb.LeaseState_LEASE_STATE_PENDING
	case store.Ready:
		return pb.LeaseState_LEASE_STATE_READY
	case store.Ended:
		return pb.LeaseState_LEASE_STATE_ENDED
	case store.Unsatisfiable:
		return pb.LeaseState_LEASE_STATE_UNSATISFIABLE
	case store.Invalid:
		return pb.LeaseState_LEASE_STATE_INVALID
	}
	return pb.LeaseState_LEASE_STATE_UNSPECIFIED
}

// position is a pending lease's queue position, computed once per state
// revision however many watchers ask.
func (c *Controller) position(id string) int {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	var rev int64
	c.cache.Read(func(v *store.View) { rev = v.Rev })
	// Positions are informational: under a burst of requests they may lag
	// by a fraction of a second rather than cost O(n²) per change.
	if c.positions == nil || (rev != c.posRev && time.Since(c.posAt) > 250*time.Millisecond) {
		var reqs []lease.Request
		var exps []lease.Exporter
		c.cache.Read(func(v *store.View) {
			rev = v.Rev
			for _, l := range v.Leases {
				if l.State == store.Pending {
					reqs = append(reqs, c.request(v, l))
				}
			}
			for name, e := range v.Exporters {
				exps = append(exps, lease.Exporter{Name: name, Labels: e.Labels})
			}
		})
		c.positions, c.posRev, c.posAt = lease.Positions(reqs, exps), rev, time.Now()
	}
	return c.positions[id]
}

// unsatisfiable says why no exporter of v could ever serve l, or "" when
// one could (online or not, free or not).
func (c *Controller) unsatisfiable(v *store.View, l *store.Lease) string {
	r := c.request(v, l)
	var known []string
	for name, e := range v.Exporters {
		le := lease.Exporter{Name: name, Labels: e.Labels}
		if !r.Policy.Matches(e.Labels) {
			continue
		}
		// An exporter named in the request counts before it ever
		// registered; a selector needs labels to match against.
		if (r.Name != "" || !e.Registered.IsZero()) && r.Matches(&le) {
			return ""
		}
		known = append(known, name)
	}
	reason := fmt.Sprintf("no exporter matches %s", describe(l))
	if len(known) == 0 {
		return reason + " (there are no exporters you may lease)"
	}
	sort.Strings(known)
	if len(known) > 20 {
		known = append(known[:20], "…")
	}
	return reason + " (exporters you may lease: " + strings.Join(known, ", ") + ")"
}
