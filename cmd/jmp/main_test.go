package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

var jmp string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "jmp-bin-")
	if err != nil {
		panic(err)
	}
	jmp = filepath.Join(dir, "jmp")
	build := exec.Command("go", "build", "-o", jmp, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		panic("build jmp: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lab writes an exporter config with command-power logging to a file and
// a serial port on a pty whose far end the test plays.
func lab(t *testing.T) (cfg, powerLog string, master *os.File) {
	t.Helper()
	dir := t.TempDir()
	m, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); tty.Close() })
	powerLog = filepath.Join(dir, "power.log")
	cfg = filepath.Join(dir, "exporter.yaml")
	yaml := `apiVersion: jumpstarter.dev/v1alpha1
kind: ExporterConfig
metadata:
  name: cli-test
export:
  power:
    type: command-power
    config:
      on: echo on >> ` + powerLog + `
      off: echo off >> ` + powerLog + `
  serial:
    type: jumpstarter_driver_pyserial.driver.PySerial
    config:
      url: ` + tty.Name() + `
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg, powerLog, m
}

func jmpRun(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(jmp, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func words(path string) string {
	b, _ := os.ReadFile(path)
	return strings.Join(strings.Fields(string(b)), " ")
}

func TestShellRunsJAndPowersOffAtExit(t *testing.T) {
	cfg, log, _ := lab(t)
	out, errOut, code := jmpRun(t, nil, "shell", "--exporter-config", cfg, "--", "sh", "-c", "j power on && j power status")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	if strings.TrimSpace(out) != "unknown" {
		t.Errorf("j power status printed %q (no status command: unknown)", out)
	}
	if got := words(log); got != "on off" {
		t.Fatalf("power commands %q, want on, then off at shell exit", got)
	}
}

func TestShellExitStatusIsTheCommands(t *testing.T) {
	cfg, _, _ := lab(t)
	if _, _, code := jmpRun(t, nil, "shell", "-c", cfg, "--", "sh", "-c", "exit 7"); code != 7 {
		t.Fatalf("exit %d, want 7", code)
	}
	if _, _, code := jmpRun(t, nil, "shell", "-c", cfg, "--", "true"); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
}

func TestJListsTheTree(t *testing.T) {
	cfg, _, _ := lab(t)
	out, errOut, code := jmpRun(t, nil, "shell", "-c", cfg, "--", "j")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"exporter cli-test", "power", "command-power", "serial", "console"} {
		if !strings.Contains(out, want) {
			t.Errorf("j output lacks %q:\n%s", want, out)
		}
	}
}

func TestJErrors(t *testing.T) {
	cfg, _, _ := lab(t)
	_, errOut, code := jmpRun(t, nil, "shell", "-c", cfg, "--", "j", "relay", "on")
	if code == 0 || !strings.Contains(errOut, `unknown command "relay"`) {
		t.Fatalf("j relay on: exit %d, %q", code, errOut)
	}
	// j outside a shell explains how to get one.
	link := filepath.Join(t.TempDir(), "j")
	if err := os.Symlink(jmp, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(link, "power", "on")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(b), "jmp shell") {
		t.Fatalf("j outside a shell: %v %q", err, b)
	}
}

func TestBadConfigNamesTheLine(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("kind: ExporterConfig\nexport:\n  p:\n    type: command-power\n    config:\n      on: x\n"), 0o644)
	_, errOut, code := jmpRun(t, nil, "shell", "-c", cfg, "--", "true")
	if code != 1 || !strings.Contains(errOut, "bad.yaml:5: export.p.config.off: required key is missing") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}

func TestSerialPipe(t *testing.T) {
	cfg, _, master := lab(t)
	// The far end answers each line like a shell would.
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := master.Read(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "uname") {
				io.WriteString(master, "Linux\r\n# ")
			}
		}
	}()
	cmd := exec.Command(jmp, "shell", "-c", cfg, "--", "j", "serial", "pipe", "--linger", "2s")
	cmd.Stdin = strings.NewReader("uname\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "Linux") {
		t.Fatalf("pipe output %q", out)
	}
}

func TestDirectModeWithPassphraseAndFingerprint(t *testing.T) {
	cfg, log, _ := lab(t)
	d := exec.Command(jmp, "run", "--exporter-config", cfg, "--listen", "127.0.0.1:0", "--passphrase", "s3cret")
	stdout, err := d.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { d.Process.Kill(); d.Wait() }()
	var addr, fp string
	lines := make(chan string)
	go func() {
		b := make([]byte, 4096)
		var acc string
		for {
			n, err := stdout.Read(b)
			acc += string(b[:n])
			if strings.Contains(acc, "connect:") || err != nil {
				lines <- acc
				return
			}
		}
	}()
	select {
	case s := <-lines:
		for _, l := range strings.Split(s, "\n") {
			if f, ok := strings.CutPrefix(l, "fingerprint sha256:"); ok {
				fp = f
			}
			if rest, ok := strings.CutPrefix(l, "exporter cli-test serving "); ok {
				addr = rest
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("jmp run printed no address")
	}
	if addr == "" || fp == "" {
		t.Fatalf("no address/fingerprint in jmp run output")
	}
	_, errOut, code := jmpRun(t, nil, "shell", "--exporter", addr, "--fingerprint", fp, "--passphrase", "wrong", "--", "true")
	if code == 0 || !strings.Contains(errOut, "passphrase") {
		t.Fatalf("wrong passphrase: exit %d %q", code, errOut)
	}
	_, errOut, code = jmpRun(t, nil, "shell", "--exporter", addr, "--fingerprint", strings.Repeat("0", 64), "--passphrase", "s3cret", "--", "true")
	if code == 0 || !strings.Contains(errOut, "fingerprint") {
		t.Fatalf("wrong fingerprint: exit %d %q", code, errOut)
	}
	out, errOut, code := jmpRun(t, nil, "shell", "--exporter", addr, "--fingerprint", fp, "--passphrase", "s3cret", "--", "sh", "-c", "j power on; j")
	if code != 0 || !strings.Contains(out, "exporter cli-test") {
		t.Fatalf("direct mode: exit %d %q %q", code, out, errOut)
	}
	if got := words(log); got != "on off" {
		t.Fatalf("power log %q", got)
	}
	// SIGTERM puts the board in its safe state and exits.
	d.Process.Signal(os.Interrupt)
	d.Wait()
	if got := words(log); got != "on off off" {
		t.Fatalf("power log after SIGTERM %q, want a final off", got)
	}
}

func TestVersionAndCompletion(t *testing.T) {
	out, _, code := jmpRun(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "jmp ") {
		t.Fatalf("version: %d %q", code, out)
	}
	out, _, code = jmpRun(t, nil, "completion", "bash")
	if code != 0 || !strings.Contains(out, "bash completion") {
		t.Fatalf("completion: %d", code)
	}
}

// TestVersionFeatures holds the build to what make build promises: cgo on
// and libusb linked, so the YKUSH power backend works. A machine without a
// C compiler or libusb-1.0-0-dev builds a jmp without USB support quietly;
// this is where make test says so.
func TestVersionFeatures(t *testing.T) {
	out, errOut, code := jmpRun(t, nil, "version", "-v")
	if code != 0 {
		t.Fatalf("version -v: exit %d %q", code, errOut)
	}
	for _, want := range []string{"cgo: yes\n", "usb: libusb 1."} {
		if !strings.Contains(out, want) {
			t.Errorf("jmp version -v lacks %q (install gcc, pkg-config and libusb-1.0-0-dev: make deps):\n%s", want, out)
		}
	}
	// A build without cgo says so rather than failing later at a ykush node.
	nocgo := filepath.Join(t.TempDir(), "jmp")
	build := exec.Command("go", "build", "-o", nocgo, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 build: %v\n%s", err, b)
	}
	b, err := exec.Command(nocgo, "version", "-v").Output()
	if err != nil || !strings.Contains(string(b), "cgo: no\n") || !strings.Contains(string(b), "usb: no: ykush: built without USB support") {
		t.Fatalf("no-cgo jmp version -v: %v %q", err, b)
	}
}

// BenchmarkShellTrue measures `jmp shell --exporter-config … -- true`,
// the overhead a CI job pays per command (goal: < 300 ms).
func BenchmarkShellTrue(b *testing.B) {
	dir := b.TempDir()
	cfg := filepath.Join(dir, "e.yaml")
	os.WriteFile(cfg, []byte("kind: ExporterConfig\nexport:\n  power:\n    type: command-power\n    config: {on: 'true', off: 'true'}\n"), 0o644)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := exec.Command(jmp, "shell", "-c", cfg, "--", "true").Run(); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	// Baseline: the bare process start of the same binary.
	var base time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := exec.Command(jmp, "version").Run(); err != nil {
			b.Fatal(err)
		}
		base += time.Since(start)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "shell-ms/op")
	b.ReportMetric(float64(base.Milliseconds())/float64(b.N), "version-ms/op")
}

func TestRunServesMetrics(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "exporter.yaml")
	os.WriteFile(cfg, []byte("kind: ExporterConfig\nmetadata: {name: m}\nexport:\n  http:\n    type: http\n    config: {root: "+filepath.Join(dir, "www")+"}\n"), 0o644)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := exec.Command(jmp, "run", "-c", cfg, "--socket", filepath.Join(dir, "e.sock"), "--metrics-listen", addr)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { d.Process.Signal(os.Interrupt); d.Wait() }()
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, want := range []string{"pogo_exporter_session_held 0", "pogo_http_requests_total"} {
		if !strings.Contains(body, want) {
			t.Fatalf("metrics lack %q:\n%s", want, body)
		}
	}
}

// -v and --log-level make jmp shell show the in-process exporter's steps,
// win over POGO_LOG, and reach the j commands through POGO_LOG.
func TestLogLevelFlags(t *testing.T) {
	cfg, _, _ := lab(t)
	const step = `msg="session started"`
	for _, tc := range []struct {
		env  []string
		args []string
		want bool
	}{
		{nil, nil, false},
		{nil, []string{"-v"}, true},
		{nil, []string{"--log-level", "debug"}, true},
		{[]string{"POGO_LOG=info"}, nil, true},
		{[]string{"POGO_LOG=info"}, []string{"--log-level", "error"}, false},
	} {
		args := append(append([]string{"shell", "-c", cfg}, tc.args...), "--", "true")
		_, errOut, code := jmpRun(t, tc.env, args...)
		if code != 0 {
			t.Fatalf("%v %v: exit %d: %s", tc.env, args, code, errOut)
		}
		if got := strings.Contains(errOut, step); got != tc.want {
			t.Errorf("%v jmp %v: logs the session start: %v, want %v\n%s", tc.env, strings.Join(args, " "), got, tc.want, errOut)
		}
	}
	out, errOut, code := jmpRun(t, []string{"POGO_LOG="}, "shell", "-c", cfg, "-v", "--", "sh", "-c", "echo $POGO_LOG")
	if code != 0 || strings.TrimSpace(out) != "INFO" {
		t.Errorf("POGO_LOG inside jmp shell -v: %q (exit %d) %s", out, code, errOut)
	}
	if _, errOut, code := jmpRun(t, nil, "shell", "-c", cfg, "--log-level", "loud", "--", "true"); code == 0 || !strings.Contains(errOut, `--log-level "loud"`) {
		t.Errorf("--log-level loud: exit %d, %q", code, errOut)
	}
}

// j serial log on a terminal shows the board's terminal queries instead
// of sending them; --raw and pipes get the bytes.
func TestConsoleLogNeutralisesTerminalQueries(t *testing.T) {
	cfg, _, master := lab(t)
	// Each jmp shell serves a new exporter with a new scrollback, in
	// which the board's shell asks its terminal where the cursor is.
	script := func(args string) string {
		t.Helper()
		if _, err := io.WriteString(master, "hello\x1b[6n\r\n"); err != nil {
			t.Fatal(err)
		}
		return `for i in $(seq 50); do j serial log | grep -q hello && break; sleep 0.1; done; j serial log ` + args
	}
	onTTY := func(args string) string {
		t.Helper()
		cmd := exec.Command(jmp, "shell", "-c", cfg, "--", "sh", "-c", script(args))
		f, err := pty.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out, _ := io.ReadAll(f) // EIO once the command has exited
		if err := cmd.Wait(); err != nil {
			t.Fatalf("j serial log %s: %v\n%q", args, err, out)
		}
		return string(out)
	}
	if out := onTTY(""); !strings.Contains(out, "hello^[[6n") || strings.Contains(out, "\x1b[6n") {
		t.Errorf("on a terminal: %q; want the query shown as ^[[6n", out)
	}
	if out := onTTY("--raw"); !strings.Contains(out, "hello\x1b[6n") {
		t.Errorf("--raw on a terminal: %q; want the bytes", out)
	}
	out, errOut, code := jmpRun(t, nil, "shell", "-c", cfg, "--", "sh", "-c", script(""))
	if code != 0 || !strings.Contains(out, "hello\x1b[6n") {
		t.Errorf("to a pipe: %q (exit %d, %s); want the bytes", out, code, errOut)
	}
}

// pipe shows live output only, and says so: log is for what came before.
func TestSerialPipeHelpPointsToLog(t *testing.T) {
	cfg, _, _ := lab(t)
	out, errOut, code := jmpRun(t, nil, "shell", "-c", cfg, "--", "j", "serial", "pipe", "--help")
	if code != 0 || !strings.Contains(out, "live output") || !strings.Contains(out, "use log") {
		t.Errorf("j serial pipe --help (exit %d): %q %s", code, out, errOut)
	}
}
