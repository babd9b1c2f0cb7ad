package serial_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	goserial "go.bug.st/serial"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/serial"
	"github.com/pogolab/pogo/exporter/exportertest"
)

// board opens a pty pair; the test plays the board on the master side and
// the exporter's serial driver opens the tty.
func board(t *testing.T, extra string) (*os.File, *client.Client, string) {
	t.Helper()
	master, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { master.Close(); tty.Close() })
	logDir := t.TempDir()
	c := exportertest.Start(t, `kind: ExporterConfig
export:
  serial:
    type: serial
    config:
      url: `+tty.Name()+`
      baudrate: 115200
      log_dir: `+logDir+`
`+extra)
	return master, c, logDir
}

// readUntil reads r until want has been seen or the deadline passes.
func readUntil(t *testing.T, r io.Reader, want string) string {
	t.Helper()
	var got bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for !strings.Contains(got.String(), want) {
			n, err := r.Read(buf)
			got.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("no %q within 5s", want)
	}
	if !strings.Contains(got.String(), want) {
		t.Fatalf("read %q, want %q", got.String(), want)
	}
	return got.String()
}

func TestWriteAndRead(t *testing.T) {
	ctx := context.Background()
	master, c, _ := board(t, "")
	a, err := c.Console("serial").Attach(ctx, console.AttachOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := io.WriteString(a, "help\n"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, master, "help\n")
	if _, err := io.WriteString(master, "=> "); err != nil {
		t.Fatal(err)
	}
	readUntil(t, a, "=> ")
}

func TestScrollbackReplayOnReattach(t *testing.T) {
	ctx := context.Background()
	master, c, _ := board(t, "")
	con := c.Console("serial")
	io.WriteString(master, "U-Boot 2023.01\r\n")
	waitScrollback(t, con, "U-Boot 2023.01\r\n")

	a, err := con.Attach(ctx, console.AttachOptions{Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	readUntil(t, a, "U-Boot 2023.01\r\n")
	a.Close()

	io.WriteString(master, "Hit any key to stop autoboot")
	waitScrollback(t, con, "autoboot")
	b, err := con.Attach(ctx, console.AttachOptions{Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := readUntil(t, b, "autoboot")
	if !strings.HasPrefix(got, "U-Boot 2023.01\r\nHit any key") {
		t.Fatalf("replay %q lost output", got)
	}
}

func TestScrollbackIsBounded(t *testing.T) {
	master, c, _ := board(t, "      scrollback: 16\n")
	io.WriteString(master, "0123456789abcdefghij")
	con := c.Console("serial")
	waitScrollback(t, con, "j")
	b, err := con.Scrollback(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "456789abcdefghij" {
		t.Fatalf("scrollback %q, want the last 16 bytes", b)
	}
}

func TestTwoReadersSeeEverything(t *testing.T) {
	ctx := context.Background()
	master, c, _ := board(t, "")
	con := c.Console("serial")
	r1, err := con.Attach(ctx, console.AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := con.Attach(ctx, console.AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	msg := strings.Repeat("kernel: line of boot output\r\n", 200) + "END"
	go io.WriteString(master, msg)
	for _, r := range []io.Reader{r1, r2} {
		if got := readUntil(t, r, "END"); got != msg {
			t.Fatalf("reader got %d bytes, want %d", len(got), len(msg))
		}
	}
}

func TestOneWriter(t *testing.T) {
	ctx := context.Background()
	master, c, _ := board(t, "")
	con := c.Console("serial")
	w1, err := con.Attach(ctx, console.AttachOptions{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = con.Attach(ctx, console.AttachOptions{Write: true})
	if !errors.Is(err, errdefs.ErrInUse) {
		t.Fatalf("second writer: %v, want ErrInUse", err)
	}
	ro, err := con.Attach(ctx, console.AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	io.WriteString(ro, "rm -rf /\n")
	// The refused write ends the read-only attachment with an error.
	buf := make([]byte, 16)
	if _, err := ro.Read(buf); err == nil || !errors.Is(err, errdefs.ErrPrecondition) {
		t.Fatalf("read-only write: %v, want ErrPrecondition", err)
	}
	w1.Close()
	var w2 io.ReadWriteCloser
	deadline := time.Now().Add(5 * time.Second)
	for {
		w2, err = con.Attach(ctx, console.AttachOptions{Write: true})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("writer after the first left: %v", err)
	}
	defer w2.Close()
	io.WriteString(w2, "ok\n")
	got := readUntil(t, master, "ok\n")
	if strings.Contains(got, "rm -rf") {
		t.Fatalf("the read-only attachment's input reached the board: %q", got)
	}
}

func TestSessionLogFile(t *testing.T) {
	master, c, logDir := board(t, "")
	io.WriteString(master, "booting\r\n")
	waitScrollback(t, c.Console("serial"), "booting")
	var files []string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		files, _ = filepath.Glob(filepath.Join(logDir, "serial-*.log"))
		if len(files) == 1 {
			b, _ := os.ReadFile(files[0])
			if strings.Contains(string(b), "booting") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no session log with the output in %s: %v", logDir, files)
}

func waitScrollback(t *testing.T, con console.Attacher, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := con.Scrollback(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrollback %q never showed %q", b, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPortNotInherited: processes the exporter starts (a virtual board's
// QEMU) do not inherit the open port.
func TestPortNotInherited(t *testing.T) {
	master, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer tty.Close()
	p, err := serial.Open(tty.Name(), &goserial.Mode{BaudRate: 115200}, serial.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	child := exec.Command("sleep", "10")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", child.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", child.Process.Pid, fd.Name())); target == tty.Name() {
			t.Fatalf("child holds the port as fd %s", fd.Name())
		}
	}
}
