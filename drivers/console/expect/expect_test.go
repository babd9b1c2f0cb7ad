package expect

import (
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

// board is the far end of an in-memory console.
type board struct {
	io.Reader // what the board prints
	io.Writer // what the board is sent
}

func newPair() (*Expecter, *io.PipeWriter, *io.PipeReader) {
	outR, outW := io.Pipe() // board → expecter
	inR, inW := io.Pipe()   // expecter → board
	return New(board{outR, inW}), outW, inR
}

func TestExpectReturnsWhatCameBefore(t *testing.T) {
	e, out, in := newPair()
	ctx := context.Background()
	go io.WriteString(out, "U-Boot 2023.01\r\nHit any key to stop autoboot:  2 ")
	before, err := e.Expect(ctx, time.Second, "Hit any key")
	if err != nil || before != "U-Boot 2023.01\r\n" {
		t.Fatalf("before=%q err=%v", before, err)
	}
	go func() {
		buf := make([]byte, 64)
		n, _ := in.Read(buf)
		if string(buf[:n]) == "dhcp\n" {
			io.WriteString(out, "DHCP client bound to address 10.0.2.15 (3 ms)\r\n=> ")
		}
	}()
	if err := e.SendLine("dhcp"); err != nil {
		t.Fatal(err)
	}
	_, m, err := e.ExpectRegexp(ctx, time.Second, regexp.MustCompile(`bound to address ([0-9.]+)`))
	if err != nil || m[1] != "10.0.2.15" {
		t.Fatalf("match %q err %v", m, err)
	}
	i, _, err := e.ExpectAny(ctx, time.Second, "# ", "=> ")
	if err != nil || i != 1 {
		t.Fatalf("ExpectAny = %d, %v", i, err)
	}
	if !strings.Contains(e.Transcript(), "U-Boot 2023.01") {
		t.Fatal("transcript lost output")
	}
}

func TestTimeoutNamesWhatAndShowsTail(t *testing.T) {
	e, out, _ := newPair()
	go io.WriteString(out, "Starting kernel ...\r\n")
	_, err := e.Expect(context.Background(), 100*time.Millisecond, "# ")
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), `no "# " after 100ms`) || !strings.Contains(err.Error(), "Starting kernel") {
		t.Fatalf("err = %v", err)
	}
}

func TestClosedConsoleEndsTheWait(t *testing.T) {
	e, out, _ := newPair()
	out.Close()
	_, err := e.Expect(context.Background(), 5*time.Second, "never")
	if err == nil || errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "console closed") {
		t.Fatalf("err = %v", err)
	}
}

func TestCancelledContext(t *testing.T) {
	e, _, _ := newPair()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := e.Expect(ctx, 5*time.Second, "never")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestRestHandsOverWhatWasNotMatched(t *testing.T) {
	e, out, _ := newPair()
	go func() {
		io.WriteString(out, "login ok\r\n/ # \x1b[6")
		out.Close()
	}()
	if _, err := e.Expect(context.Background(), time.Second, "# "); err != nil {
		t.Fatal(err)
	}
	if got := string(e.Rest()); got != "\x1b[6" {
		t.Fatalf("Rest = %q, want the bytes behind the prompt", got)
	}
	if got := e.Rest(); len(got) != 0 {
		t.Fatalf("second Rest = %q, want nothing", got)
	}
}

func TestExpectFuncMatchesOnlyAtTheEnd(t *testing.T) {
	e, out, _ := newPair()
	ctx := context.Background()
	atEnd := func(b []byte) int {
		if strings.HasSuffix(string(b), "# ") {
			return len(b)
		}
		return -1
	}
	go io.WriteString(out, "echo '# '\r\n# x\r\n")
	if _, err := e.ExpectFunc(ctx, 200*time.Millisecond, "prompt", atEnd); !errors.Is(err, ErrTimeout) {
		t.Fatalf("a prompt in the middle matched: %v", err)
	}
	go io.WriteString(out, "/ # ")
	got, err := e.ExpectFunc(ctx, time.Second, "prompt", atEnd)
	if err != nil || got != "echo '# '\r\n# x\r\n/ # " {
		t.Fatalf("got %q, %v", got, err)
	}
	out.Close()
	if _, err := e.ExpectFunc(ctx, time.Second, "prompt", atEnd); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v, want ErrClosed", err)
	}
}
