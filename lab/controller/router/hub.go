package router

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/lab/controller/auth"
)

// PairTimeout bounds how long a client end waits for its exporter end.
const PairTimeout = 15 * time.Second

// bufSize is the splice buffer: large copies amortise the per-call cost
// (on TLS legs a read still yields one 16 KiB record at most).
const bufSize = 256 << 10

// Caller says who opened a tunnel end, as the controller authenticated it.
type Caller struct {
	Kind string
	Name string
}

// Hub pairs tunnel ends by stream token and splices them.
type Hub struct {
	// Signer checks stream tokens.
	Signer auth.Signer
	// Authenticate checks a bearer token.
	Authenticate func(bearer string) (Caller, error)
	// Notify asks the named exporter to open its end (over its link). It
	// fails when the exporter is not connected to this replica; gone is
	// closed when the exporter's link ends.
	Notify func(exporter string, dr *pb.DialRequest) (gone <-chan struct{}, err error)
	// Bytes counts spliced bytes by direction ("to_exporter",
	// "to_client"); may be nil.
	Bytes func(direction string, n int)
	Log   *slog.Logger

	mu      sync.Mutex
	waiting map[string]chan net.Conn
}

// Serve runs one tunnel end that said hello; it owns conn and closes it.
func (h *Hub) Serve(conn net.Conn, hello Hello) {
	if err := h.serve(conn, hello); err != nil {
		reject(conn, err)
	}
}

// reject tells a tunnel end why it is refused and closes it.
func reject(conn net.Conn, err error) {
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, replyLine(err))
	conn.Close()
}

func (h *Hub) serve(conn net.Conn, hello Hello) error {
	who, err := h.Authenticate(hello.Bearer)
	if err != nil {
		return err
	}
	claims, err := h.Signer.Verify(hello.StreamToken, time.Now())
	if err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrUnauthorized)
	}
	switch {
	case who.Kind == auth.Client && who.Name == claims.Client:
		return h.clientEnd(conn, hello.StreamToken, claims)
	case who.Kind == auth.Exporter && who.Name == claims.Exporter:
		return h.exporterEnd(conn, hello.StreamToken)
	}
	return fmt.Errorf("stream token is not for %s %s: %w", who.Kind, who.Name, errdefs.ErrUnauthorized)
}

func (h *Hub) clientEnd(conn net.Conn, tok string, c auth.StreamClaims) error {
	ch := make(chan net.Conn, 1)
	h.mu.Lock()
	if h.waiting == nil {
		h.waiting = map[string]chan net.Conn{}
	}
	if _, dup := h.waiting[tok]; dup {
		h.mu.Unlock()
		return fmt.Errorf("stream token already in use: %w", errdefs.ErrInUse)
	}
	h.waiting[tok] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiting, tok)
		h.mu.Unlock()
		// An exporter end that arrived as this end gave up must not wait.
		select {
		case e := <-ch:
			go reject(e, fmt.Errorf("the client end gave up waiting: %w", errdefs.ErrNotFound))
		default:
		}
	}()
	dr := &pb.DialRequest{StreamToken: tok, LeaseId: c.Lease, Client: c.Client}
	gone, err := h.Notify(c.Exporter, dr)
	if err != nil {
		return err
	}
	t := time.NewTimer(PairTimeout)
	defer t.Stop()
	var exp net.Conn
	select {
	case exp = <-ch:
	case <-gone:
		return fmt.Errorf("exporter %s went offline before connecting its end: %w", c.Exporter, errdefs.ErrUnavailable)
	case <-t.C:
		return fmt.Errorf("exporter %s did not connect its end within %s: %w", c.Exporter, PairTimeout, errdefs.ErrUnavailable)
	}
	for _, e := range []net.Conn{conn, exp} {
		_ = e.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(e, replyLine(nil)); err != nil {
			exp.Close()
			conn.Close()
			return nil
		}
		_ = e.SetWriteDeadline(time.Time{})
	}
	go h.splice(conn, exp)
	return nil
}

func (h *Hub) exporterEnd(conn net.Conn, tok string) error {
	h.mu.Lock()
	ch, ok := h.waiting[tok]
	if ok {
		delete(h.waiting, tok)
	}
	h.mu.Unlock()
	if !ok {
		return fmt.Errorf("no client waits on this stream token (it gave up or was never there): %w", errdefs.ErrNotFound)
	}
	// The client end's handler takes it from here; ch has room for one
	// and only one exporter end ever finds it.
	ch <- conn
	return nil
}

// splice copies both ways until both directions end; an error on either
// ends both.
func (h *Hub) splice(cl, ex net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); h.pipe(ex, cl, "to_exporter") }()
	go func() { defer wg.Done(); h.pipe(cl, ex, "to_client") }()
	wg.Wait()
	cl.Close()
	ex.Close()
}

type closeWriter interface{ CloseWrite() error }

func (h *Hub) pipe(dst, src net.Conn, dir string) {
	count := func(n int64) {
		if h.Bytes != nil && n > 0 {
			h.Bytes(dir, int(n))
		}
	}
	var err error
	_, tcpDst := dst.(*net.TCPConn)
	_, tcpSrc := src.(*net.TCPConn)
	if tcpDst && tcpSrc {
		// Plaintext legs: io.CopyN lets the kernel splice; chunks keep
		// the byte counter moving on long tunnels.
		for err == nil {
			var n int64
			n, err = io.CopyN(dst, src, 16<<20)
			count(n)
		}
	} else {
		buf := make([]byte, bufSize)
		for err == nil {
			var n int
			n, err = src.Read(buf)
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					err = werr
				}
				count(int64(n))
			}
		}
	}
	if errors.Is(err, io.EOF) {
		// A clean end of one direction is a half close: the other
		// direction may still have bytes to deliver.
		if cw, ok := dst.(closeWriter); ok && cw.CloseWrite() == nil {
			return
		}
	}
	src.Close()
	dst.Close()
}

// Accept reads the hello of a connection that negotiated a tunnel and
// serves it in the background.
func (h *Hub) Accept(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(HelloTimeout))
	line, err := readLine(conn)
	if err == nil {
		_ = conn.SetReadDeadline(time.Time{})
		if p, ok := conn.(prefixed); ok {
			// The hello consumed the peeked bytes: splice the TCP conn
			// itself, which lets the kernel copy (splice(2)).
			conn = p.Conn
		}
		var hello Hello
		if hello, err = ParseHello(line); err == nil {
			go h.Serve(conn, hello)
			return
		}
	}
	if h.Log != nil {
		h.Log.Debug("tunnel end without a valid hello", "remote", conn.RemoteAddr(), "err", err)
	}
	go reject(conn, err)
}
