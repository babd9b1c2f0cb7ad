package exporter_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers"
	"github.com/pogolab/pogo/drivers/power"
	_ "github.com/pogolab/pogo/drivers/power/command"
	_ "github.com/pogolab/pogo/drivers/serial"
	"github.com/pogolab/pogo/exporter"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/exporter/exportertest"
)

func TestBuildErrorsNameFileLineAndField(t *testing.T) {
	head := "kind: ExporterConfig\nexport:\n  p:\n    type: command-power\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"missing required key", head + "    config:\n      on: 'true'\n", "x.yaml:5: export.p.config.off: required key is missing"},
		{"no config at all", head, "x.yaml:4: export.p.config.on: required key is missing"},
		{"unknown key", head + "    config:\n      on: a\n      off: b\n      of: c\n", "x.yaml:8: export.p.config.of: unknown key (known: "},
		{"wrong value type", head + "    config:\n      on: a\n      off: b\n      timeout: soon\n", `x.yaml:8: export.p.config.timeout: want a duration like "2s", got "soon"`},
		{"driver validation", head + "    config:\n      on: a\n      off: '  '\n", "x.yaml:7: export.p.config.off: must not be empty"},
		{"serial device missing", "export:\n  s:\n    type: serial\n    config:\n      url: /dev/nonexistent-tty\n", "x.yaml:5: export.s.config.url: stat /dev/nonexistent-tty"},
		{"serial bad parity", "export:\n  s:\n    type: serial\n    config:\n      url: /dev/null\n      parity: purple\n", `x.yaml:6: export.s.config.parity: must be none, odd, even, mark or space, got "purple"`},
		{"serial baud not int", "export:\n  s:\n    type: serial\n    config:\n      url: /dev/null\n      baudrate: fast\n", `x.yaml:6: export.s.config.baudrate: want an integer, got "fast"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := config.Parse("x.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			_, err = exporter.New(context.Background(), f, &drivers.Host{}, exporter.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n got %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func powerYAML(dir string) string {
	state := filepath.Join(dir, "state")
	return `kind: ExporterConfig
metadata: {name: bench-1}
export:
  power:
    type: command-power
    config:
      on: echo on > ` + state + `
      off: echo off > ` + state + `
      status: grep -q on ` + state + `
`
}

func readState(t *testing.T, dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "state"))
	return strings.TrimSpace(string(b))
}

func TestSessionIsExclusiveAndResetsAtEnd(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := exportertest.Serve(t, powerYAML(dir))

	first, err := client.Dial(ctx, e.Target, client.Options{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	sess, err := first.Open(ctx, client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readState(t, dir); got != "on" {
		t.Fatalf("state after on = %q", got)
	}

	second, err := client.Dial(ctx, e.Target, client.Options{Name: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_, err = second.Open(ctx, client.SessionOptions{})
	if !errors.Is(err, errdefs.ErrInUse) || !strings.Contains(err.Error(), "in use by alice since") {
		t.Fatalf("second session: %v, want in use by alice", err)
	}
	// Without the session token a driver call is refused.
	err = second.Power("power").Off(ctx)
	if !errors.Is(err, errdefs.ErrNotHeld) || !strings.Contains(err.Error(), "held by alice") {
		t.Fatalf("non-holder call: %v, want held by alice", err)
	}
	if got := readState(t, dir); got != "on" {
		t.Fatalf("a refused call changed the board: %q", got)
	}
	st, err := second.Status(ctx)
	if err != nil || !st.GetHeld() || st.GetHolder() != "alice" {
		t.Fatalf("status = %v, %v", st, err)
	}

	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readState(t, dir); got != "off" {
		t.Fatalf("state after session end = %q, want off (safe state)", got)
	}
	// Now bob gets it.
	s2, err := second.Open(ctx, client.SessionOptions{})
	if err != nil {
		t.Fatalf("second session after release: %v", err)
	}
	s2.Close()
}

func TestDroppedClientEndsSession(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := exportertest.Serve(t, powerYAML(dir))
	c, err := client.Dial(ctx, e.Target, client.Options{Name: "crashy"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(ctx, client.SessionOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close() // the connection drops without ending the session
	deadline := time.Now().Add(5 * time.Second)
	for readState(t, dir) != "off" {
		if time.Now().After(deadline) {
			t.Fatal("board not powered off after the client vanished")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The session is freed just after the reset that powered the board off.
	for {
		st, err := e.Dial(t).Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.GetHeld() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still held by %s", st.GetHolder())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKeepPowerLeavesBoardOn(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := exportertest.Serve(t, powerYAML(dir))
	c := e.Dial(t)
	s, err := c.Open(ctx, client.SessionOptions{KeepPower: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Power("power").On(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got := readState(t, dir); got != "on" {
		t.Fatalf("keep-power session end changed state to %q", got)
	}
}

func TestReportAndUnknownPath(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := exportertest.Start(t, powerYAML(dir)+"  group:\n    children:\n      p2:\n        ref: power\n")
	rep, err := c.Report(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range rep.GetDrivers() {
		got = append(got, n.GetPath()+":"+n.GetKind()+":"+strings.Join(n.GetInterfaces(), ","))
	}
	want := "power:command-power:power group:: group.p2:command-power:power"
	if strings.Join(got, " ") != want {
		t.Fatalf("report %q, want %q", strings.Join(got, " "), want)
	}
	if err := c.Power("group.p2").On(ctx); err != nil {
		t.Fatalf("power through a ref: %v", err)
	}
	if s, err := c.Power("power").State(ctx); err != nil || s != power.On {
		t.Fatalf("state through the target: %v %v", s, err)
	}
	err = c.Power("nope").On(ctx)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `no driver at "nope"`) {
		t.Fatalf("unknown path: %v", err)
	}
	_, err = c.Console("power").Scrollback(ctx)
	if !errors.Is(err, errdefs.ErrUnsupported) || !strings.Contains(err.Error(), "does not serve console") {
		t.Fatalf("console call on a power driver: %v", err)
	}
}

func TestLogsStreamsRecords(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e := exportertest.Serve(t, powerYAML(dir))
	c := e.Dial(t)
	s, err := c.Open(ctx, client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	stream, err := pb.NewExporterClient(c.Conn()).Logs(ctx, &pb.LogsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for {
		r, err := stream.Recv()
		if err != nil {
			break
		}
		msgs = append(msgs, r.GetMessage()+" "+r.GetAttrs()["holder"])
	}
	got := strings.Join(msgs, "|")
	if !strings.Contains(got, "session started "+t.Name()) || !strings.Contains(got, "session ended "+t.Name()) {
		t.Fatalf("log records %q lack the session", got)
	}
}
