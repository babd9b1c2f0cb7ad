// Package rpcmeta names the gRPC metadata keys every pogo call carries and
// reads and writes them.
package rpcmeta

import (
	"context"

	"google.golang.org/grpc/metadata"
)

const (
	// PathKey names the target driver by its dotted path in the export tree.
	PathKey = "pogo-path"
	// SessionKey carries the session token from Exporter.Session.
	SessionKey = "pogo-session"
	// PassphraseKey carries the direct-mode passphrase.
	PassphraseKey = "pogo-passphrase"
)

// WithPath returns ctx with the driver path set on outgoing calls.
func WithPath(ctx context.Context, path string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, PathKey, path)
}

// Incoming returns the first value of key in ctx's incoming metadata.
func Incoming(ctx context.Context, key string) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
