package command_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/drivers/power/command"
	"github.com/pogolab/pogo/exporter/exportertest"
)

func serve(t *testing.T, config string) (func() string, *exportertest.Exporter) {
	dir := t.TempDir()
	e := exportertest.Serve(t, strings.ReplaceAll(`kind: ExporterConfig
export:
  power:
    type: command-power
    config:
`+config, "$DIR", dir))
	return func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "log"))
		return strings.Join(strings.Fields(string(b)), " ")
	}, e
}

func TestOnOffCycleStatus(t *testing.T) {
	ctx := context.Background()
	log, e := serve(t, `      on: echo on >> $DIR/log; touch $DIR/on
      off: echo off >> $DIR/log; rm -f $DIR/on
      status: test -e $DIR/on
      delay: 10ms
`)
	c := e.Dial(t)
	if _, err := c.Open(ctx, client.SessionOptions{}); err != nil {
		t.Fatal(err)
	}
	p := c.Power("power")
	if s, err := p.State(ctx); err != nil || s != power.Off {
		t.Fatalf("initial state %v %v", s, err)
	}
	if err := p.On(ctx); err != nil {
		t.Fatal(err)
	}
	if s, _ := p.State(ctx); s != power.On {
		t.Fatalf("after on: %v", s)
	}
	if err := p.Cycle(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if got := log(); got != "on off on off" {
		t.Fatalf("commands ran: %q", got)
	}
}

func TestCycleCommandAndUnknownState(t *testing.T) {
	ctx := context.Background()
	log, e := serve(t, `      on: echo on >> $DIR/log
      off: echo off >> $DIR/log
      cycle: echo cycle >> $DIR/log
`)
	c := e.Dial(t)
	if _, err := c.Open(ctx, client.SessionOptions{}); err != nil {
		t.Fatal(err)
	}
	p := c.Power("power")
	if err := p.Cycle(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	if s, err := p.State(ctx); err != nil || s != power.Unknown {
		t.Fatalf("state without a status command: %v %v", s, err)
	}
	if got := log(); got != "cycle" {
		t.Fatalf("commands ran: %q", got)
	}
}

func TestFailingOffReportsStderr(t *testing.T) {
	ctx := context.Background()
	_, e := serve(t, `      on: "true"
      off: echo relay 3 is stuck >&2; exit 4
`)
	c := e.Dial(t)
	if _, err := c.Open(ctx, client.SessionOptions{}); err != nil {
		t.Fatal(err)
	}
	err := c.Power("power").Off(ctx)
	if err == nil || !strings.Contains(err.Error(), "relay 3 is stuck") || !strings.Contains(err.Error(), "exit status 4") {
		t.Fatalf("error %v, want stderr and exit status", err)
	}
}

func TestTimeoutKillsTheCommand(t *testing.T) {
	ctx := context.Background()
	log, e := serve(t, `      on: sleep 30; echo late >> $DIR/log
      off: "true"
      timeout: 300ms
`)
	c := e.Dial(t)
	if _, err := c.Open(ctx, client.SessionOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := c.Power("power").On(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Fatalf("error %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %s", d)
	}
	time.Sleep(100 * time.Millisecond)
	if got := log(); got != "" {
		t.Fatalf("the timed-out command lived on and wrote %q", got)
	}
}

// A status command that prints off and exits 0 reads as off: the output,
// when it says, wins over the exit status.
func TestStatusParsesOutput(t *testing.T) {
	ctx := context.Background()
	_, e := serve(t, `      on: echo "  On " > $DIR/relay
      off: echo OFF > $DIR/relay
      status: cat $DIR/relay || echo 0
`)
	c := e.Dial(t)
	if _, err := c.Open(ctx, client.SessionOptions{}); err != nil {
		t.Fatal(err)
	}
	p := c.Power("power")
	if s, err := p.State(ctx); err != nil || s != power.Off {
		t.Fatalf("no relay file (prints 0, exits 0): %v %v, want off", s, err)
	}
	if err := p.On(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := p.State(ctx); err != nil || s != power.On {
		t.Fatalf("after on: %v %v", s, err)
	}
	if err := p.Off(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := p.State(ctx); err != nil || s != power.Off {
		t.Fatalf("prints OFF, exits 0: %v %v, want off", s, err)
	}
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		out  string
		zero bool
		want power.State
	}{
		{"on\n", false, power.On},
		{" TRUE ", false, power.On},
		{"1", false, power.On},
		{"off\n", true, power.Off},
		{"False", true, power.Off},
		{"0\r\n", true, power.Off},
		{"", true, power.On},
		{"", false, power.Off},
		{"relay 3: closed\n", true, power.On},
		{"error: no relay 3\n", false, power.Off},
	} {
		if got := command.ParseStatus(tc.out, tc.zero); got != tc.want {
			t.Errorf("ParseStatus(%q, exit 0 %v) = %v, want %v", tc.out, tc.zero, got, tc.want)
		}
	}
}

func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{"on", "OFF\n", " 1 ", "true", "", "relay 3 get: on"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, out string, zero bool) {
		if s := command.ParseStatus(out, zero); s != power.On && s != power.Off {
			t.Fatalf("ParseStatus(%q, %v) = %v: a status command always reads as on or off", out, zero, s)
		}
	})
}
