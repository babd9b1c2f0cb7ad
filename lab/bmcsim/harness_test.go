package bmcsim

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

const (
	testUser = "root"
	testPass = "0penBmc"
)

// testSim is a simulator serving on a real loopback UDP port.
type testSim struct {
	*Simulator
	Host  string
	Port  int
	State string
}

type simOpt func(*Config)

func withStandIns(m map[string]string) simOpt {
	return func(c *Config) { c.StandIns = m }
}

func withConfigDir(dir string) simOpt {
	return func(c *Config) { c.ConfigDirs = []string{dir} }
}

func withExpiry(d time.Duration) simOpt {
	return func(c *Config) { c.SessionExpiry = d }
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("BMCSIM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// exampleDir holds a single example config so tests choose which handler
// the simulator offers.
func exampleDir(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("examples", name))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startSim(t testing.TB, opts ...simOpt) *testSim {
	t.Helper()
	state := t.TempDir()
	cfg := Config{
		User:       testUser,
		Password:   testPass,
		ConfigDirs: []string{"examples"},
		RebootTime: 400 * time.Millisecond,
		StateDir:   state,
		Log:        testLogger(t),
	}
	for _, o := range opts {
		o(&cfg)
	}
	sim, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("simulator: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("simulator did not stop")
		}
	})
	host, port, _ := net.SplitHostPort(conn.LocalAddr().String())
	p, _ := strconv.Atoi(port)
	return &testSim{Simulator: sim, Host: host, Port: p, State: state}
}
