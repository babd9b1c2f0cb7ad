// Package rpcmeta names the gRPC metadata keys every pogo call carries and
// reads and writes them, and the environment that tells j and specs
// inside `jmp shell` (or a lease hook) which exporter and session to use.
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

// Environment variables set inside `jmp shell` and lease hooks for j and for specs.
const (
	EnvHost        = "JMP_HOST"
	EnvSession     = "JMP_SESSION"
	EnvPassphrase  = "JMP_PASSPHRASE"
	EnvFingerprint = "JMP_FINGERPRINT"
	// EnvCA and EnvInsecure carry jmp shell's --ca and --insecure (direct
	// mode) to the commands it runs.
	EnvCA       = "JMP_CA"
	EnvInsecure = "JMP_INSECURE"
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
