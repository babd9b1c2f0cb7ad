package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/client/lease"
	_ "github.com/pogolab/pogo/drivers/power/command"
	"github.com/pogolab/pogo/exporter/config"
	"github.com/pogolab/pogo/lab/controller/controllertest"
)

// TestLinkedRefusesSessionsFromTheStart asks a linked exporter for
// sessions on one connection to its local socket, from the moment the
// socket answers until well after the exporter is online. No lease names
// the caller, so every one must be refused. Under -race it also checks the
// exporter's Holder check never reads the link unordered with its making:
// a connection opened before the link existed and used after is how the
// old code (serving before assigning the link) raced.
func TestLinkedRefusesSessionsFromTheStart(t *testing.T) {
	lab := controllertest.Start(t)
	alice := lab.Client("alice")
	dir := t.TempDir()
	f, err := config.Parse("racer.yaml", []byte("kind: ExporterConfig\nmetadata: {name: racer}\nexport:\n  power:\n    type: command-power\n    config: {on: 'true', off: 'true'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	f.Endpoint, f.Token, f.TLS.CA = lab.C.Addr(), lab.Token("exporter", "racer"), lab.CA()
	socket := filepath.Join(dir, "racer.sock")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := &cobra.Command{}
	var out bytes.Buffer
	cmd.SetOut(&out)
	ran := make(chan error, 1)
	go func() { ran <- runLinked(ctx, cmd, f, socket, filepath.Join(dir, "state"), "") }()

	for _, err := os.Stat(socket); err != nil; _, err = os.Stat(socket) {
		time.Sleep(time.Millisecond)
	}
	c, err := client.Dial(ctx, "unix://"+socket, client.Options{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	refused, online := 0, 0
	deadline := time.Now().Add(60 * time.Second)
	for online < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: %d sessions refused, %d of them while online", refused, online)
		}
		select {
		case err := <-ran:
			t.Fatalf("exporter stopped: %v", err)
		default:
		}
		octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := c.Open(octx, client.SessionOptions{})
		ocancel()
		switch {
		case err == nil:
			s.Close()
			t.Fatal("a session opened on an exporter leased to nobody")
		case !errors.Is(err, errdefs.ErrNotHeld):
			time.Sleep(5 * time.Millisecond) // not serving yet
			continue
		}
		refused++
		if online > 0 || isOnline(ctx, alice, "racer") {
			online++
		}
	}
	t.Logf("refused %d, %d online", refused, online)
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("exporter: %v", err)
	}
}

func isOnline(ctx context.Context, c *lease.Client, name string) bool {
	es, err := c.Exporters(ctx, "")
	for _, e := range es {
		if e.GetName() == name {
			return err == nil && e.GetOnline()
		}
	}
	return false
}
