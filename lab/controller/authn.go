package controller

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"crypto/tls"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/token"
	"github.com/pogolab/pogo/lab/controller/store"
)

// identity is an authenticated caller.
type identity struct {
	Kind string
	Name string
	// Rev is the create revision of the record the token was checked
	// against: a deleted and re-created identity has another.
	Rev int64
	// TokenHash is the stored hash the token matched: a rotated token
	// leaves it behind.
	TokenHash string
}

type callerKey struct{}

func callerOf(ctx context.Context) (identity, bool) {
	id, ok := ctx.Value(callerKey{}).(identity)
	return id, ok
}

// authenticate checks the bearer token against the stored hash.
func (c *Controller) authenticate(ctx context.Context, method string) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var tok string
	if v := md.Get(token.MetadataKey); len(v) > 0 {
		tok = strings.TrimPrefix(v[0], "Bearer ")
	}
	id, err := c.checkToken(tok)
	if err != nil {
		return nil, err
	}
	want := token.Client
	if strings.HasPrefix(method, "/"+pb.ExporterLink_ServiceDesc.ServiceName+"/") {
		want = token.Exporter
	}
	if id.Kind != want {
		return nil, fmt.Errorf("%s %q may not call %s: %w", id.Kind, id.Name, method, errdefs.ErrNotHeld)
	}
	return context.WithValue(ctx, callerKey{}, id), nil
}

// checkToken returns who a bearer token names, if its secret matches.
func (c *Controller) checkToken(tok string) (identity, error) {
	if tok == "" {
		return identity{}, fmt.Errorf("no token: log in first (jmp login --endpoint … --token …): %w", errdefs.ErrUnauthorized)
	}
	kind, name, secret, err := token.ParseToken(tok)
	if err != nil {
		return identity{}, fmt.Errorf("token: %v: %w", err, errdefs.ErrUnauthorized)
	}
	var hash string
	var rev int64
	c.cache.Read(func(v *store.View) {
		if kind == token.Client {
			if id := v.Clients[name]; id != nil {
				hash, rev = id.TokenHash, id.Create
			}
		} else if e := v.Exporters[name]; e != nil {
			hash, rev = e.TokenHash, e.Create
		}
	})
	if hash == "" || !token.Check(hash, secret) {
		return identity{}, fmt.Errorf("%s %q: unknown or revoked token: %w", kind, name, errdefs.ErrUnauthorized)
	}
	return identity{Kind: kind, Name: name, Rev: rev, TokenHash: hash}, nil
}

func (c *Controller) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := c.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	return h(ctx, req)
}

type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s authedStream) Context() context.Context { return s.ctx }

func (c *Controller) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := c.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	return h(srv, authedStream{ServerStream: ss, ctx: ctx})
}

func writeCert(path string, cert tls.Certificate) error {
	var b []byte
	for _, der := range cert.Certificate {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write server certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	keyPath := strings.TrimSuffix(path, ".crt") + ".key"
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return fmt.Errorf("write server key: %w", err)
	}
	return nil
}
