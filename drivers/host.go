package drivers

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Host holds what the drivers of one exporter share: servers that exist
// once per lab host (the TFTP server on port 69), devices several drivers
// use (a YKUSH hub's USB context), the exporter's state directory, and the
// kind each driver was built as. It is the one place for such state: no
// driver package keeps its own global.
type Host struct {
	// StateDir is a directory the exporter owns for driver state.
	StateDir string

	mu      sync.Mutex
	items   map[string]any
	closers []io.Closer
	kinds   map[Driver]string
}

// remember records that New built d as kind.
func (h *Host) remember(d Driver, kind string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.kinds == nil {
		h.kinds = map[Driver]string{}
	}
	h.kinds[d] = kind
}

// Kind names d's kind, or its Go type when it was not built by New with
// this host.
func (h *Host) Kind(d Driver) string {
	if h != nil {
		h.mu.Lock()
		k, ok := h.kinds[d]
		h.mu.Unlock()
		if ok {
			return k
		}
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", d), "*")
}

// Shared returns the value stored under key, creating it with open on
// first use. Values that are io.Closers are closed with the host, in
// reverse order of creation.
func (h *Host) Shared(key string, open func() (any, error)) (any, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v, ok := h.items[key]; ok {
		return v, nil
	}
	v, err := open()
	if err != nil {
		return nil, err
	}
	if h.items == nil {
		h.items = map[string]any{}
	}
	h.items[key] = v
	if c, ok := v.(io.Closer); ok {
		h.closers = append(h.closers, c)
	}
	return v, nil
}

// Close closes every shared value.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for i := len(h.closers) - 1; i >= 0; i-- {
		errs = append(errs, h.closers[i].Close())
	}
	h.closers, h.items, h.kinds = nil, nil, nil
	return errors.Join(errs...)
}
