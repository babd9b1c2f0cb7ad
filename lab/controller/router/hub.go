// Package router is the controller's side of tunnels (api/tunnel): it
// takes tunnel ends off the gRPC port, pairs a client's end with its
// exporter's by stream token and splices them.
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
	"github.com/pogolab/pogo/api/token"
	"github.com/pogolab/pogo/api/tunnel"
)

// bufSize is the splice buffer: large copies amortise the per-call cost.
const bufSize = 256 << 10

// maxRecord is the most plaintext one TLS record carries.
const maxRecord = 16 << 10

// Caller says who opened a tunnel end, as the controller authenticated it.
type Caller struct {
	Kind string
	Name string
}

// Hub pairs tunnel ends by stream token and splices them.
type Hub struct {
	// Signer checks stream tokens.
	Signer token.Signer
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
	waiting map[string]chan net.Conn // client ends by tunnel
	used    map[string]time.Time     // tunnels opened, until their token expires
	pruned  time.Time
}

// Serve runs one tunnel end that said hello; it owns conn and closes it.
func (h *Hub) Serve(conn net.Conn, hello tunnel.Hello) {
	if err := h.serve(conn, hello); err != nil {
		reject(conn, err)
	}
}

// reject tells a tunnel end why it is refused and closes it.
func reject(conn net.Conn, err error) {
	_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, tunnel.ReplyLine(err))
	conn.Close()
}

func (h *Hub) serve(conn net.Conn, hello tunnel.Hello) error {
	claims, err := h.Signer.Verify(hello.StreamToken, time.Now())
	if err != nil {
		return fmt.Errorf("%v: %w", err, errdefs.ErrUnauthorized)
	}
	who := Caller{Kind: claims.Side, Name: claims.Client}
	if claims.Side == token.Exporter {
		who.Name = claims.Exporter
	}
	if hello.Bearer != tunnel.NoBearer {
		// A bearer token, when sent, must be the side's own.
		if who, err = h.Authenticate(hello.Bearer); err != nil {
			return err
		}
	}
	switch {
	case claims.Side == token.Client && who.Kind == token.Client && who.Name == claims.Client:
		return h.clientEnd(conn, claims)
	case claims.Side == token.Exporter && who.Kind == token.Exporter && who.Name == claims.Exporter:
		return h.exporterEnd(conn, claims)
	}
	return fmt.Errorf("stream token is not for %s %s: %w", who.Kind, who.Name, errdefs.ErrUnauthorized)
}

// tunnelKey names the tunnel both ends' stream tokens are for.
func tunnelKey(c token.StreamClaims) string { return c.Lease + "/" + c.Nonce }

// use marks a tunnel as opened, so the client end's stream token, which
// a plaintext leg shows to the network, never opens a second one.
func (h *Hub) use(key string, expires time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if h.used == nil {
		h.used = map[string]time.Time{}
	}
	if now.Sub(h.pruned) > time.Second {
		for k, x := range h.used {
			if now.After(x) {
				delete(h.used, k)
			}
		}
		h.pruned = now
	}
	if _, dup := h.used[key]; dup {
		return fmt.Errorf("stream token already used (each opens one tunnel): %w", errdefs.ErrInUse)
	}
	h.used[key] = expires
	return nil
}

func (h *Hub) clientEnd(conn net.Conn, c token.StreamClaims) error {
	key := tunnelKey(c)
	if err := h.use(key, c.Expires); err != nil {
		return err
	}
	ch := make(chan net.Conn, 1)
	h.mu.Lock()
	if h.waiting == nil {
		h.waiting = map[string]chan net.Conn{}
	}
	h.waiting[key] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.waiting, key)
		h.mu.Unlock()
		// An exporter end that arrived as this end gave up must not wait.
		select {
		case e := <-ch:
			go reject(e, fmt.Errorf("the client end gave up waiting: %w", errdefs.ErrNotFound))
		default:
		}
	}()
	// The exporter's end gets a token of its own for the same tunnel.
	ex := c
	ex.Side = token.Exporter
	ex.Expires = time.Now().Add(tunnel.PairTimeout + tunnel.HelloTimeout)
	dr := &pb.DialRequest{StreamToken: h.Signer.Sign(ex), LeaseId: c.Lease, Client: c.Client, ClientCertSha256: c.ClientCert}
	gone, err := h.Notify(c.Exporter, dr)
	if err != nil {
		return err
	}
	t := time.NewTimer(tunnel.PairTimeout)
	defer t.Stop()
	var exp net.Conn
	select {
	case exp = <-ch:
	case <-gone:
		return fmt.Errorf("exporter %s went offline before connecting its end: %w", c.Exporter, errdefs.ErrUnavailable)
	case <-t.C:
		return fmt.Errorf("exporter %s did not connect its end within %s: %w", c.Exporter, tunnel.PairTimeout, errdefs.ErrUnavailable)
	}
	for _, e := range []net.Conn{conn, exp} {
		_ = e.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(e, tunnel.ReplyLine(nil)); err != nil {
			exp.Close()
			conn.Close()
			return nil
		}
		_ = e.SetWriteDeadline(time.Time{})
	}
	go h.splice(conn, exp)
	return nil
}

func (h *Hub) exporterEnd(conn net.Conn, c token.StreamClaims) error {
	key := tunnelKey(c)
	h.mu.Lock()
	ch, ok := h.waiting[key]
	if ok {
		delete(h.waiting, key)
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
		t, _ := src.(*tunnel.TLSConn)
		for err == nil {
			var n int
			n, err = src.Read(buf)
			// A TLS read yields one record: take the records that have
			// already arrived too, and send them on in one write.
			for t != nil && err == nil && n < len(buf)-maxRecord && t.Buffered() > 0 {
				var k int
				k, err = src.Read(buf[n:])
				n += k
			}
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
	_ = conn.SetReadDeadline(time.Now().Add(tunnel.HelloTimeout))
	line, err := tunnel.ReadLine(conn)
	if err == nil {
		_ = conn.SetReadDeadline(time.Time{})
		if p, ok := conn.(prefixed); ok {
			// The hello consumed the peeked bytes: splice the TCP conn
			// itself, which lets the kernel copy (splice(2)).
			conn = p.Conn
		}
		var hello tunnel.Hello
		if hello, err = tunnel.ParseHello(line); err == nil {
			go h.Serve(conn, hello)
			return
		}
	}
	if h.Log != nil {
		h.Log.Debug("tunnel end without a valid hello", "remote", conn.RemoteAddr(), "err", err)
	}
	go reject(conn, err)
}

// refuse reads a tunnel end's hello, so the reply is not lost to a reset
// over unread bytes, and rejects it with err.
func refuse(conn net.Conn, err error) {
	_ = conn.SetReadDeadline(time.Now().Add(tunnel.HelloTimeout))
	_, _ = tunnel.ReadLine(conn)
	reject(conn, err)
}
