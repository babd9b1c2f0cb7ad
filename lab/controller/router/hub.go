package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/lab/controller/auth"
)

// PairTimeout bounds how long a client end waits for its exporter end.
const PairTimeout = 15 * time.Second

// Caller says who opened a stream, as the controller authenticated it.
type Caller struct {
	Kind string
	Name string
}

// Hub pairs stream ends by token and splices them.
type Hub struct {
	pb.UnimplementedRouterServer

	// Signer checks stream tokens.
	Signer auth.Signer
	// Notify asks the named exporter to open its end (over its link). It
	// fails when the exporter is not connected to this replica.
	Notify func(exporter string, dr *pb.DialRequest) error
	// Caller tells who opened a stream.
	Caller func(ctx context.Context) (Caller, bool)
	// Bytes counts spliced bytes by direction ("to_exporter",
	// "to_client"); may be nil.
	Bytes func(direction string, n int)

	mu      sync.Mutex
	waiting map[string]chan pb.Router_StreamServer
}

// Stream implements pb.RouterServer.
func (h *Hub) Stream(stream pb.Router_StreamServer) error {
	ctx := stream.Context()
	who, ok := h.Caller(ctx)
	if !ok {
		return errdefs.ToGRPC(fmt.Errorf("router: unauthenticated stream: %w", errdefs.ErrUnauthorized))
	}
	tok := incoming(ctx, auth.StreamTokenKey)
	claims, err := h.Signer.Verify(tok, time.Now())
	if err != nil {
		return errdefs.ToGRPC(fmt.Errorf("router: %v: %w", err, errdefs.ErrUnauthorized))
	}
	switch {
	case who.Kind == auth.Client && who.Name == claims.Client:
		return h.clientEnd(ctx, stream, tok, claims)
	case who.Kind == auth.Exporter && who.Name == claims.Exporter:
		return h.exporterEnd(ctx, stream, tok)
	}
	return errdefs.ToGRPC(fmt.Errorf("router: stream token is not for %s %s: %w", who.Kind, who.Name, errdefs.ErrUnauthorized))
}

func (h *Hub) clientEnd(ctx context.Context, stream pb.Router_StreamServer, tok string, c auth.StreamClaims) error {
	ch := make(chan pb.Router_StreamServer, 1)
	h.mu.Lock()
	if h.waiting == nil {
		h.waiting = map[string]chan pb.Router_StreamServer{}
	}
	if _, dup := h.waiting[tok]; dup {
		h.mu.Unlock()
		return errdefs.ToGRPC(fmt.Errorf("router: stream token already in use: %w", errdefs.ErrInUse))
	}
	h.waiting[tok] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiting, tok)
		h.mu.Unlock()
		// An exporter end that arrived as this end gave up must not wait forever.
		select {
		case e := <-ch:
			close(e.Context().Value(doneKey{}).(chan struct{}))
		default:
		}
	}()
	if err := h.Notify(c.Exporter, &pb.DialRequest{StreamToken: tok, LeaseId: c.Lease, Client: c.Client}); err != nil {
		return errdefs.ToGRPC(err)
	}
	t := time.NewTimer(PairTimeout)
	defer t.Stop()
	var exp pb.Router_StreamServer
	select {
	case exp = <-ch:
	case <-t.C:
		return errdefs.ToGRPC(fmt.Errorf("router: exporter %s did not connect its end within %s: %w", c.Exporter, PairTimeout, errdefs.ErrUnavailable))
	case <-ctx.Done():
		return nil
	}
	// Headers tell the client its end is paired (Tunnel waits for them).
	_ = stream.SendHeader(metadata.Pairs("pogo-paired", "1"))
	// The exporter end's handler waits on done; whichever direction ends
	// first ends the tunnel.
	done := exp.Context().Value(doneKey{}).(chan struct{})
	defer close(done)
	errc := make(chan error, 2)
	go func() { errc <- h.pump(stream, exp, "to_exporter") }()
	go func() { errc <- h.pump(exp, stream, "to_client") }()
	select {
	case <-errc:
	case <-ctx.Done():
	case <-exp.Context().Done():
	}
	return nil
}

type doneKey struct{}

type doneStream struct {
	pb.Router_StreamServer
	ctx context.Context
}

func (d doneStream) Context() context.Context { return d.ctx }

func (h *Hub) exporterEnd(ctx context.Context, stream pb.Router_StreamServer, tok string) error {
	h.mu.Lock()
	ch, ok := h.waiting[tok]
	if ok {
		delete(h.waiting, tok)
	}
	h.mu.Unlock()
	if !ok {
		return errdefs.ToGRPC(fmt.Errorf("router: no client waits on this stream token (it gave up or was never there): %w", errdefs.ErrNotFound))
	}
	done := make(chan struct{})
	ch <- doneStream{Router_StreamServer: stream, ctx: context.WithValue(ctx, doneKey{}, done)}
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

func (h *Hub) pump(from, to FrameStream, dir string) error {
	for {
		f, err := from.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := to.Send(f); err != nil {
			return err
		}
		if h.Bytes != nil {
			h.Bytes(dir, len(f.GetData()))
		}
	}
}
