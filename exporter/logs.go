package exporter

import (
	"context"
	"log/slog"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/pogolab/pogo/api/pogo/v1"
)

// logKeep is how many records the exporter keeps for Logs.
const logKeep = 1000

// logTee is a slog.Handler that passes records on and keeps the recent
// ones for the Logs RPC.
type logTee struct {
	next  slog.Handler
	attrs []slog.Attr
	book  *logBook
}

type logBook struct {
	mu   sync.Mutex
	recs []*pb.LogRecord
	subs map[chan *pb.LogRecord]struct{}
}

func newLogTee(next slog.Handler) *logTee {
	return &logTee{next: next, book: &logBook{subs: map[chan *pb.LogRecord]struct{}{}}}
}

func (h *logTee) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *logTee) Handle(ctx context.Context, r slog.Record) error {
	rec := &pb.LogRecord{Time: timestamppb.New(r.Time), Level: r.Level.String(), Message: r.Message, Attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	h.book.add(rec)
	return h.next.Handle(ctx, r)
}

func (h *logTee) WithAttrs(as []slog.Attr) slog.Handler {
	return &logTee{next: h.next.WithAttrs(as), attrs: append(append([]slog.Attr(nil), h.attrs...), as...), book: h.book}
}

func (h *logTee) WithGroup(name string) slog.Handler {
	return &logTee{next: h.next.WithGroup(name), attrs: h.attrs, book: h.book}
}

func (b *logBook) add(r *pb.LogRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recs = append(b.recs, r)
	if len(b.recs) > logKeep {
		b.recs = append([]*pb.LogRecord(nil), b.recs[len(b.recs)-logKeep:]...)
	}
	for c := range b.subs {
		select {
		case c <- r:
		default: // a follower that does not keep up misses records
		}
	}
}

func (b *logBook) snapshot(follow bool) ([]*pb.LogRecord, chan *pb.LogRecord, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := append([]*pb.LogRecord(nil), b.recs...)
	if !follow {
		return out, nil, func() {}
	}
	c := make(chan *pb.LogRecord, 256)
	b.subs[c] = struct{}{}
	return out, c, func() {
		b.mu.Lock()
		delete(b.subs, c)
		b.mu.Unlock()
	}
}
