package drivers

import (
	"errors"
	"io"
	"sync"
)

// Host holds what the drivers of one exporter share: servers that exist
// once per lab host (the TFTP server on port 69) and the exporter's state
// directory.
type Host struct {
	// StateDir is a directory the exporter owns for driver state.
	StateDir string

	mu      sync.Mutex
	items   map[string]any
	closers []io.Closer
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
	h.closers, h.items = nil, nil
	return errors.Join(errs...)
}
