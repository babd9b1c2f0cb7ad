package rmcp

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

func quietServer() *Server {
	return New(Config{User: "u", Password: "p", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func TestASFPresencePing(t *testing.T) {
	s := quietServer()
	ping := []byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x2a, 0x00, 0x00}
	pong := s.handle(context.Background(), ping)
	if len(pong) != 28 || pong[8] != 0x40 || pong[9] != 0x2a || pong[20] != 0x81 {
		t.Fatalf("pong % x", pong)
	}
}

func TestSessionlessCipherSuiteList(t *testing.T) {
	s := quietServer()
	cc, data := s.getChannelCipherSuites([]byte{0x0e, 0x00, 0x80})
	want := []byte{0x01, 0xc0, 3, 1, 0x41, 0x81, 0xc0, 17, 3, 0x44, 0x81}
	if cc != 0 || !bytes.Equal(data, want) {
		t.Fatalf("cc %#x data % x", cc, data)
	}
	if _, data := s.getChannelCipherSuites([]byte{0x0e, 0x00, 0x81}); len(data) != 1 {
		t.Errorf("second page % x", data)
	}
}

// FuzzHandle feeds arbitrary datagrams to the packet handler, which must
// never panic (the recover in handle would hide it, so it is checked via
// the log-free path directly).
func FuzzHandle(f *testing.F) {
	f.Add([]byte{0x06, 0x00, 0xff, 0x07, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0x20, 0x18, 0xc8, 0x81, 0x00, 0x38, 0x8e, 0x04, 0xb5})
	f.Add([]byte{0x06, 0x00, 0xff, 0x07, 0x06, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0x00})
	f.Add([]byte{0x06, 0x00, 0xff, 0x07, 0x06, 0xc0, 1, 2, 3, 4, 1, 0, 0, 0, 0x10, 0x00})
	f.Add([]byte{0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x00, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		s := quietServer()
		s.log = slog.New(panicOnError{})
		_ = s.handle(context.Background(), pkt)
	})
}

// panicOnError turns the handler's "panicked" error log into a test
// failure by panicking again outside the recover.
type panicOnError struct{ slog.Handler }

func (panicOnError) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (panicOnError) Handle(_ context.Context, r slog.Record) error {
	panic("rmcp handler: " + r.Message)
}
func (p panicOnError) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p panicOnError) WithGroup(string) slog.Handler      { return p }

// Abandoned handshakes (a wrong password stops at RAKP 2) must free their
// slot long before the idle timeout, or a few bad logins lock everyone out.
func TestSweepDropsAbandonedHandshakesFirst(t *testing.T) {
	s := quietServer()
	stale := time.Now().Add(-setupTimeout - time.Second)
	s.sessions = map[uint32]*session{
		1: {id: 1, last: stale},               // handshake abandoned
		2: {id: 2, last: stale, active: true}, // established, merely quiet
		3: {id: 3, last: time.Now()},          // handshake in progress
	}
	s.sweep()
	if _, ok := s.sessions[1]; ok {
		t.Error("abandoned handshake kept its slot")
	}
	if _, ok := s.sessions[2]; !ok {
		t.Error("an established session was dropped before its idle timeout")
	}
	if _, ok := s.sessions[3]; !ok {
		t.Error("a handshake in progress was dropped")
	}
}
