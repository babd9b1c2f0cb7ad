package ykush

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/power"
)

// TestHardware switches a real hub. It runs only when POGO_YKUSH_SERIAL
// names one; POGO_YKUSH_PORT picks the port (default 1). Whatever is on
// that port loses power for a moment.
func TestHardware(t *testing.T) {
	serial := os.Getenv("POGO_YKUSH_SERIAL")
	if serial == "" {
		t.Skip("hardware: set POGO_YKUSH_SERIAL (and POGO_YKUSH_PORT) to switch a real YKUSH hub")
	}
	port := os.Getenv("POGO_YKUSH_PORT")
	if port == "" {
		port = "1"
	}
	k, _ := drivers.Lookup("ykush")
	cfg, err := drivers.ConfigFromYAML("serial: " + serial + "\nport: \"" + port + "\"\ndelay: 500ms\n")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host := &drivers.Host{}
	defer host.Close()
	d, err := drivers.New(ctx, k, &drivers.Build{Path: "power", Config: cfg, Log: slog.Default(), Host: host})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	y := d.(*Driver)
	t.Log(y.Description())
	for _, step := range []struct {
		name string
		do   func(context.Context) error
		want power.State
	}{
		{"off", y.Off, power.Off},
		{"on", y.On, power.On},
		{"cycle", func(ctx context.Context) error { return y.Cycle(ctx, 0) }, power.On},
		{"reset", y.Reset, power.Off},
	} {
		if err := step.do(ctx); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if st, err := y.State(ctx); err != nil || st != step.want {
			t.Fatalf("after %s: state %v, %v; want %v", step.name, st, err, step.want)
		}
	}
}
