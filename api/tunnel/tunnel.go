// Package tunnel is the wire protocol of the controller's router, shared by
// its two sides: the ends that clients and exporters open (Dial, End) and
// the router that pairs them (lab/controller/router). A client and an
// exporter each open a tunnel end to the same controller replica with a
// stream token for the same tunnel; once both are there the router copies
// raw bytes between the two connections. The exporter's gRPC API runs
// inside, unchanged.
//
// A tunnel end is a connection to the controller's gRPC port: plain TCP
// whose first bytes are "POGO", or (with --tunnel-security tls) TLS that
// negotiates ALPN "pogo-tunnel/1" instead of "h2". It sends one hello line
// and reads one reply line; after "OK" the connection is the tunnel:
//
//	POGO-TUNNEL/1 <bearer token> <stream token>\n
//	OK\n   or   ERR <kind> <message>\n
//
// Each end has its own stream token (sealed by the controller, naming the
// lease, the side and the tunnel, valid 30 s, good for one tunnel). A
// plaintext end sends "-" for the bearer token, which must never cross the
// network in the clear: its stream token, which the controller handed to
// it over TLS, is what authenticates it.
//
// The router never decodes what it splices: one leg in, one out, and no
// framing or HTTP/2 on the way. Two plaintext legs are spliced by the
// kernel. By default (end-to-end) they carry TLS between the client and
// the exporter, each demanding the other's Identity.
package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
)

// ALPN is the TLS application protocol of a tunnel end.
const ALPN = "pogo-tunnel/1"

const (
	helloMagic = "POGO-TUNNEL/1"
	// PlainMagic starts a tunnel end on a plaintext controller; gRPC's
	// preface starts "PRI ".
	PlainMagic = "POGO"
	// NoBearer is the bearer field of a hello sent over a plaintext leg.
	NoBearer = "-"
	// maxLine bounds hello and reply lines (tokens are well under 1 KiB).
	maxLine = 4096
	// HelloTimeout bounds how long a new connection may take to say hello.
	HelloTimeout = 10 * time.Second
	// PairTimeout bounds how long a client end waits for its exporter end.
	PairTimeout = 15 * time.Second
)

// Hello is the first line of a tunnel end: who opens it (bearer token)
// and which tunnel (stream token).
type Hello struct {
	Bearer      string
	StreamToken string
}

// String is the hello line, newline included.
func (h Hello) String() string { return helloMagic + " " + h.Bearer + " " + h.StreamToken + "\n" }

// ParseHello parses a hello line (without its newline).
func ParseHello(line string) (Hello, error) {
	f := strings.Split(line, " ")
	if len(f) != 3 || f[0] != helloMagic {
		return Hello{}, fmt.Errorf("tunnel hello: want %q and two tokens: %w", helloMagic, errdefs.ErrInvalid)
	}
	for _, t := range f[1:] {
		if t == "" || !printable(t) {
			return Hello{}, fmt.Errorf("tunnel hello: empty or unprintable token: %w", errdefs.ErrInvalid)
		}
	}
	return Hello{Bearer: f[1], StreamToken: f[2]}, nil
}

func printable(s string) bool {
	for i := range len(s) {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// kinds name the errors a reply carries, so both ends map them to the
// same errdefs sentinels.
var kinds = []struct {
	word string
	err  error
}{
	{"unauthorized", errdefs.ErrUnauthorized},
	{"not-found", errdefs.ErrNotFound},
	{"in-use", errdefs.ErrInUse},
	{"unavailable", errdefs.ErrUnavailable},
	{"invalid", errdefs.ErrInvalid},
	{"expired", errdefs.ErrExpired},
}

// ReplyLine is the reply for err (nil: paired).
func ReplyLine(err error) string {
	if err == nil {
		return "OK\n"
	}
	word := "unavailable"
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			word = k.word
			break
		}
	}
	msg := strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, err.Error())
	if len(msg) > maxLine-64 {
		msg = msg[:maxLine-64]
	}
	return "ERR " + word + " " + msg + "\n"
}

// ParseReply turns a reply line (without its newline) into nil for "OK"
// or the router's error, wrapping the errdefs sentinel it names.
func ParseReply(line string) error {
	if line == "OK" {
		return nil
	}
	rest, ok := strings.CutPrefix(line, "ERR ")
	if !ok {
		return fmt.Errorf("router reply %.40q: want OK or ERR: %w", line, errdefs.ErrUnavailable)
	}
	word, msg, _ := strings.Cut(rest, " ")
	for _, k := range kinds {
		if k.word == word {
			msg = strings.TrimSuffix(msg, ": "+k.err.Error())
			return fmt.Errorf("router: %s: %w", msg, k.err)
		}
	}
	return fmt.Errorf("router: %s (%s): %w", msg, word, errdefs.ErrUnavailable)
}

// ReadLine reads up to '\n' one byte at a time, so nothing after the line
// is consumed: the tunnel's bytes may follow at once.
func ReadLine(r io.Reader) (string, error) {
	var b []byte
	var c [1]byte
	for len(b) < maxLine {
		if _, err := io.ReadFull(r, c[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return "", err
		}
		if c[0] == '\n' {
			return string(b), nil
		}
		b = append(b, c[0])
	}
	return "", fmt.Errorf("line longer than %d bytes: %w", maxLine, errdefs.ErrInvalid)
}

// Dial opens a tunnel end at the router at addr (host:port) and waits
// until the router pairs it with the other end. tc is the TLS config to
// trust the controller with; nil dials plaintext (a controller run with
// --insecure-no-tls). The result supports CloseWrite.
func Dial(ctx context.Context, addr string, tc *tls.Config, h Hello) (net.Conn, error) {
	d := net.Dialer{KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("router %s: %w: %w", addr, err, errdefs.ErrUnavailable)
	}
	var conn net.Conn = raw
	// The router may wait PairTimeout for the other end before replying.
	deadline := time.Now().Add(PairTimeout + HelloTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error) (net.Conn, error) {
		raw.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if tc != nil {
		tc = tc.Clone()
		tc.NextProtos = []string{ALPN}
		if tc.ServerName == "" {
			tc.ServerName, _, _ = net.SplitHostPort(addr)
		}
		bc := &BatchConn{Conn: raw}
		t := tls.Client(bc, tc)
		if err := t.HandshakeContext(ctx); err != nil {
			return fail(fmt.Errorf("router %s: tls: %w: %w", addr, err, errdefs.ErrUnavailable))
		}
		if p := t.ConnectionState().NegotiatedProtocol; p != ALPN {
			return fail(fmt.Errorf("router %s does not speak %s (negotiated %q); is it an older controller?: %w", addr, ALPN, p, errdefs.ErrUnsupported))
		}
		conn = NewTLSConn(t, bc)
	}
	if _, err := io.WriteString(conn, h.String()); err != nil {
		return fail(fmt.Errorf("router %s: send hello: %w: %w", addr, err, errdefs.ErrUnavailable))
	}
	line, err := ReadLine(conn)
	if err != nil {
		return fail(fmt.Errorf("router %s: read reply: %w: %w", addr, err, errdefs.ErrUnavailable))
	}
	if err := ParseReply(line); err != nil {
		return fail(err)
	}
	if !stop() {
		// ctx ended just as the tunnel opened.
		return fail(ctx.Err())
	}
	_ = raw.SetDeadline(time.Time{})
	return conn, nil
}
