package drivers

import "context"

// Lease is the lease a driver call serves: the exporter puts it in the
// call's context, so exporter-side commands (command power, install
// commands) can tell whom they act for.
type Lease struct {
	ID     string
	Client string
}

type leaseKey struct{}

// WithLease returns ctx carrying l.
func WithLease(ctx context.Context, l Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, l)
}

// LeaseFrom is the lease ctx carries, if any.
func LeaseFrom(ctx context.Context) (Lease, bool) {
	l, ok := ctx.Value(leaseKey{}).(Lease)
	return l, ok && l.ID != ""
}

// Env is the lease as environment variables for a command: pogo's
// JMP_LEASE_ID and JMP_LEASE_CLIENT, and the LEASE_NAME and CLIENT_NAME
// Jumpstarter's hooks read.
func (l Lease) Env() []string {
	return []string{
		"JMP_LEASE_ID=" + l.ID,
		"JMP_LEASE_CLIENT=" + l.Client,
		"LEASE_NAME=" + l.ID,
		"CLIENT_NAME=" + l.Client,
	}
}

// LeaseEnv is the environment of the lease ctx carries (none without one).
func LeaseEnv(ctx context.Context) []string {
	if l, ok := LeaseFrom(ctx); ok {
		return l.Env()
	}
	return nil
}
