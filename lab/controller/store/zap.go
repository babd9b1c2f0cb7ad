package store

import "go.uber.org/zap"

// nopZap silences the etcd client's own logger; the store reports what
// matters through slog.
func nopZap() *zap.Logger { return zap.NewNop() }
