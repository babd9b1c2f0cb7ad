package drivers

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"google.golang.org/grpc"

	"github.com/pogolab/pogo/api/errdefs"
)

// Resolver finds the driver a call targets (from the call's metadata) after
// the exporter has checked the caller holds the session.
type Resolver interface {
	Resolve(ctx context.Context) (Driver, string, error)
	// Kind names a resolved driver's kind (drivers.Host.Kind).
	Kind(d Driver) string
}

// Service is a capability's gRPC face on the exporter.
type Service struct {
	// Name is the capability as reported in the driver tree ("power").
	Name string
	// Implements tells whether a driver serves this capability.
	Implements func(Driver) bool
	// Register adds the service to an exporter's gRPC server.
	Register func(s grpc.ServiceRegistrar, r Resolver)
}

var (
	smu      sync.RWMutex
	services = map[string]Service{}
)

// RegisterService adds a capability service; capability packages call it
// from init.
func RegisterService(s Service) {
	smu.Lock()
	defer smu.Unlock()
	if _, dup := services[s.Name]; dup {
		panic("drivers: duplicate service " + s.Name)
	}
	services[s.Name] = s
}

// Services lists the registered services sorted by name.
func Services() []Service {
	smu.RLock()
	defer smu.RUnlock()
	var out []Service
	for _, s := range services {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Interfaces names the capabilities d serves.
func Interfaces(d Driver) []string {
	var out []string
	for _, s := range Services() {
		if s.Implements(d) {
			out = append(out, s.Name)
		}
	}
	return out
}

// ResolveAs resolves the call's driver and checks it serves T.
func ResolveAs[T any](ctx context.Context, r Resolver, capability string) (T, error) {
	var zero T
	d, path, err := r.Resolve(ctx)
	if err != nil {
		return zero, err
	}
	t, ok := d.(T)
	if !ok {
		return zero, fmt.Errorf("driver %q (%s) does not serve %s: %w", path, r.Kind(d), capability, errdefs.ErrUnsupported)
	}
	return t, nil
}

// Capability registers the gRPC service of a capability served by every
// driver that implements T; capability packages call it from init.
func Capability[T any](name string, register func(s grpc.ServiceRegistrar, r Resolver)) {
	RegisterService(Service{
		Name:       name,
		Implements: func(d Driver) bool { _, ok := d.(T); return ok },
		Register:   register,
	})
}
