package bmcsim

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/pogolab/pogo/drivers/bmc/blob"
	"github.com/pogolab/pogo/drivers/bmc/ipmi"
)

func TestCommandServesAndStopsOnCancel(t *testing.T) {
	probe, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := Command()
	cmd.SetArgs([]string{"--listen", addr, "--user", testUser, "--password", testPass,
		"--config-dir", "examples", "--state-dir", t.TempDir(), "--reboot-time", "100ms",
		"--stand-in", "phosphor-ipmi-flash-bmc-verify.target=true"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	var tr *ipmi.Transport
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		tr, err = ipmi.Dial(dctx, ipmi.Config{Host: "127.0.0.1", Port: port, Username: testUser, Password: testPass, Timeout: 100 * time.Millisecond, Retries: 1})
		dcancel()
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	n, err := (&blob.Client{T: tr}).Count(ctx)
	if err != nil || n != 4 { // hash, image, bios, cleanup
		t.Errorf("count %d, %v", n, err)
	}
	_ = tr.Close(ctx)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("bmc-sim exited with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("bmc-sim did not stop on cancel")
	}
	// The port is free again.
	c, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("socket left behind: %v", err)
	}
	c.Close()
}

func TestCommandRejectsBadStandIn(t *testing.T) {
	cmd := Command()
	cmd.SetArgs([]string{"--user", "u", "--config-dir", "examples", "--stand-in", "nounit"})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err == nil {
		t.Fatal("malformed --stand-in accepted")
	}
}
