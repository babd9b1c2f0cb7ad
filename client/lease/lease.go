package lease

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/token"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/api/tunnel"
	"github.com/pogolab/pogo/client"
)

// Client talks to a controller as one client identity.
type Client struct {
	cfg    Config
	name   string
	conn   *grpc.ClientConn
	leases pb.LeasesClient
	// end opens the client's tunnel ends.
	end tunnel.End
}

// Dial connects to the controller of cfg (lazily; calls wait for it).
func Dial(cfg Config) (*Client, error) {
	_, name, _, err := token.ParseToken(cfg.Token)
	if err != nil {
		return nil, fmt.Errorf("client token: %w", err)
	}
	conn, err := transport.DialController(cfg.Endpoint, cfg.Token, cfg.CA, cfg.Insecure, cfg.NoTLS)
	if err != nil {
		return nil, err
	}
	end := tunnel.End{Bearer: cfg.Token}
	if !cfg.NoTLS {
		// Conn accepted the same CA a moment ago.
		end.TLS, _ = transport.ControllerTLS(cfg.CA, cfg.Insecure)
	}
	if end.ID, err = tunnel.NewIdentity("client " + name); err != nil {
		conn.Close()
		return nil, err
	}
	return &Client{cfg: cfg, name: name, conn: conn, leases: pb.NewLeasesClient(conn), end: end}, nil
}

// Name is the client identity the token names.
func (c *Client) Name() string { return c.name }

// Close closes the connections.
func (c *Client) Close() error { return c.conn.Close() }

// Request is a lease request.
type Request struct {
	Selector string
	Exporter string
	Duration time.Duration
	Begin    time.Time
	Tags     map[string]string
	Priority int
}

// Create queues a lease request. An unsatisfiable request comes back as
// an error wrapping errdefs.ErrPrecondition (and the lease, which ended).
func (c *Client) Create(ctx context.Context, r Request) (*pb.Lease, error) {
	req := &pb.CreateLeaseRequest{Selector: r.Selector, ExporterName: r.Exporter, Duration: durationpb.New(r.Duration), Tags: r.Tags, Priority: int32(r.Priority)}
	if !r.Begin.IsZero() {
		req.Begin = timestamppb.New(r.Begin)
	}
	l, err := c.leases.CreateLease(ctx, req, grpc.WaitForReady(true))
	if err != nil {
		return nil, fmt.Errorf("create lease: %w", errdefs.FromGRPC(err))
	}
	if l.GetState() == pb.LeaseState_LEASE_STATE_UNSATISFIABLE {
		return l, fmt.Errorf("lease %s is unsatisfiable: %s: %w", l.GetId(), l.GetReason(), errdefs.ErrPrecondition)
	}
	return l, nil
}

// Get returns a lease.
func (c *Client) Get(ctx context.Context, id string) (*pb.Lease, error) {
	l, err := c.leases.GetLease(ctx, &pb.GetLeaseRequest{Id: id}, grpc.WaitForReady(true))
	return l, errdefs.FromGRPC(err)
}

// List lists the client's leases (all: ended ones too).
func (c *Client) List(ctx context.Context, all bool) ([]*pb.Lease, error) {
	r, err := c.leases.ListLeases(ctx, &pb.ListLeasesRequest{All: all}, grpc.WaitForReady(true))
	return r.GetLeases(), errdefs.FromGRPC(err)
}

// Extend lengthens a lease by d.
func (c *Client) Extend(ctx context.Context, id string, d time.Duration) (*pb.Lease, error) {
	l, err := c.leases.UpdateLease(ctx, &pb.UpdateLeaseRequest{Id: id, Extend: durationpb.New(d)}, grpc.WaitForReady(true))
	return l, errdefs.FromGRPC(err)
}

// Release ends (or cancels) a lease.
func (c *Client) Release(ctx context.Context, id string) (*pb.Lease, error) {
	l, err := c.leases.DeleteLease(ctx, &pb.DeleteLeaseRequest{Id: id}, grpc.WaitForReady(true))
	return l, errdefs.FromGRPC(err)
}

// Exporters lists the exporters the client may see.
func (c *Client) Exporters(ctx context.Context, selector string) ([]*pb.ExporterInfo, error) {
	r, err := c.leases.ListExporters(ctx, &pb.ListExportersRequest{Selector: selector}, grpc.WaitForReady(true))
	return r.GetExporters(), errdefs.FromGRPC(err)
}

// Ended is the error for a lease that is over: it says why, once, in the
// controller's words ("client cl29 deleted", "ended by exporter X: …"), and
// matches errdefs.ErrExpired without saying "expired" when that is not the
// reason.
func Ended(l *pb.Lease) error {
	msg := fmt.Sprintf("lease %s %s", l.GetId(), stateWord(l.GetState()))
	if r := l.GetReason(); r != "" {
		msg += ": " + r
	}
	return &endedError{msg: msg}
}

type endedError struct{ msg string }

func (e *endedError) Error() string { return e.msg }
func (e *endedError) Unwrap() error { return errdefs.ErrExpired }

func stateWord(s pb.LeaseState) string {
	switch s {
	case pb.LeaseState_LEASE_STATE_ENDED:
		return "ended"
	case pb.LeaseState_LEASE_STATE_UNSATISFIABLE:
		return "is unsatisfiable"
	case pb.LeaseState_LEASE_STATE_INVALID:
		return "is invalid"
	}
	return "is " + s.String()
}

// Watch follows a lease, calling f with each new version, until f returns
// false, the lease is final or ctx ends. It survives controller restarts.
func (c *Client) Watch(ctx context.Context, id string, f func(*pb.Lease) bool) error {
	backoff := 100 * time.Millisecond
	for {
		stream, err := c.leases.WatchLease(ctx, &pb.GetLeaseRequest{Id: id}, grpc.WaitForReady(true))
		if err == nil {
			for {
				l, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				backoff = 100 * time.Millisecond
				if !f(l) || final(l) {
					return nil
				}
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = errdefs.FromGRPC(err)
		if !errors.Is(err, io.EOF) && !errors.Is(err, errdefs.ErrUnavailable) {
			return fmt.Errorf("watch lease %s: %w", id, err)
		}
		if err := pause(ctx, &backoff); err != nil {
			return err
		}
	}
}

// pause waits *backoff before a watch reconnects, doubling it (to 3 s).
func pause(ctx context.Context, backoff *time.Duration) error {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	*backoff = min(*backoff*2, 3*time.Second)
	return nil
}

func final(l *pb.Lease) bool {
	switch l.GetState() {
	case pb.LeaseState_LEASE_STATE_ENDED, pb.LeaseState_LEASE_STATE_UNSATISFIABLE, pb.LeaseState_LEASE_STATE_INVALID:
		return true
	}
	return false
}

// Wait waits until the lease is Ready, calling progress with each update
// while it waits (queue position). A lease that ends first is an error.
func (c *Client) Wait(ctx context.Context, id string, progress func(*pb.Lease)) (*pb.Lease, error) {
	var got *pb.Lease
	err := c.Watch(ctx, id, func(l *pb.Lease) bool {
		got = l
		if l.GetState() == pb.LeaseState_LEASE_STATE_READY {
			return false
		}
		if progress != nil && !final(l) {
			progress(l)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if got == nil || got.GetState() != pb.LeaseState_LEASE_STATE_READY {
		return got, Ended(got)
	}
	return got, nil
}

// Tunnel opens one byte stream to the exporter of a Ready lease.
func (c *Client) Tunnel(ctx context.Context, id string) (net.Conn, error) {
	d, err := c.leases.Dial(ctx, &pb.DialLeaseRequest{LeaseId: id, ClientCertSha256: c.end.ID.Fingerprint}, grpc.WaitForReady(true))
	if err != nil {
		return nil, fmt.Errorf("dial lease %s: %w", id, errdefs.FromGRPC(err))
	}
	conn, err := c.end.Open(ctx, d.GetRouter(), d.GetSecurity(), d.GetStreamToken(), d.GetExporterCertSha256())
	if err != nil {
		return nil, fmt.Errorf("tunnel to lease %s: %w", id, err)
	}
	return conn, nil
}

// Exporter connects a client to the exporter of a Ready lease; each
// connection gRPC makes (and remakes, after a drop) is a new tunnel.
func (c *Client) Exporter(ctx context.Context, id string, opts client.Options) (*client.Client, error) {
	if opts.Name == "" {
		opts.Name = c.name
	}
	opts.Dialer = func(ctx context.Context, _ string) (net.Conn, error) { return c.Tunnel(ctx, id) }
	return client.Dial(ctx, "unix:///pogo-lease/"+id, opts)
}
