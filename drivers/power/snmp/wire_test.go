package snmp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/power"
	"github.com/pogolab/pogo/exporter/exportertest"
)

// A Jumpstarter exporter.yaml node served over pogo's gRPC wire: j power
// on/status work unchanged, and session end resets the outlet off.
func TestOverTheWire(t *testing.T) {
	a := startAgent(t)
	e := exportertest.Serve(t, fmt.Sprintf(`kind: ExporterConfig
export:
  power:
    type: jumpstarter_driver_snmp.driver.SNMPServer
    config:
      host: 127.0.0.1
      port: %d
      user: %s
      plug: 2
      timeout: 5.0
`, a.port, v3NoAuth))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := e.Dial(t)
	s, err := c.Open(ctx, client.SessionOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := c.Power("power")
	if err := p.On(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := p.State(ctx); err != nil || st != power.On {
		t.Fatalf("state = %v, %v; want on", st, err)
	}
	if err := p.Cycle(ctx, 0); err != nil {
		t.Fatal(err)
	}
	status := "1.3.6.1.4.1.13742.6.4.1.2.1.3.1.2"
	if got := a.read(t, status); got != "7" {
		t.Fatalf("raritan outlet 2 reads %s, want 7 (on)", got)
	}
	s.Close()
	for deadline := time.Now().Add(10 * time.Second); a.read(t, status) != "8"; {
		if time.Now().After(deadline) {
			t.Fatalf("outlet still reads %s 10s after session end, want 8 (off)", a.read(t, status))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
