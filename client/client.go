// Package client connects to an exporter — over a local unix socket, or
// over TCP with TLS and a passphrase — holds its session, and hands out
// typed clients for the drivers in its tree. Specs and the j command are
// written against it.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/api/pin"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/rpcmeta"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/power"
)

// Options say how to reach an exporter.
type Options struct {
	// Passphrase is the direct-mode passphrase.
	Passphrase string
	// Fingerprint pins the exporter's TLS certificate (SHA-256 of its DER,
	// hex, colons allowed). With neither Fingerprint nor CAFile a TCP
	// target is dialled without TLS only when Insecure is set.
	Fingerprint string
	CAFile      string
	Insecure    bool
	// Session reuses a session another process holds (j inside jmp shell).
	Session string
	// Name names this client in "in use by" messages.
	Name string
	// Dialer, when set, makes the connections (a routed tunnel).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)
}

// Client is a connection to one exporter.
type Client struct {
	conn *grpc.ClientConn
	opts Options

	mu    sync.Mutex
	token string
}

// Dial connects to target: "unix:///path/to.sock" or "host:port".
func Dial(ctx context.Context, target string, opts Options) (*Client, error) {
	c := &Client{opts: opts, token: opts.Session}
	dopts := transport.DialOptions(
		grpc.WithChainUnaryInterceptor(c.unaryMeta),
		grpc.WithChainStreamInterceptor(c.streamMeta),
	)
	if opts.Dialer != nil {
		dopts = append(dopts, grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return opts.Dialer(ctx, a) }))
	}
	switch {
	case strings.HasPrefix(target, "unix:"):
		dopts = append(dopts, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if opts.Dialer == nil {
			dopts = append(dopts, grpc.WithContextDialer(transport.DialUnix))
		}
	default:
		creds, err := tlsCreds(opts)
		if err != nil {
			return nil, err
		}
		dopts = append(dopts, grpc.WithTransportCredentials(creds))
		target = "passthrough:///" + target
	}
	conn, err := grpc.NewClient(target, dopts...)
	if err != nil {
		return nil, fmt.Errorf("dial exporter %s: %w", target, err)
	}
	c.conn = conn
	return c, nil
}

// FromEnv connects to the exporter of the enclosing `jmp shell`.
func FromEnv(ctx context.Context) (*Client, error) {
	host := os.Getenv(rpcmeta.EnvHost)
	if host == "" {
		return nil, fmt.Errorf("%s is not set: run this inside `jmp shell` (jmp shell --exporter-config exporter.yaml)", rpcmeta.EnvHost)
	}
	return Dial(ctx, host, Options{
		Session:     os.Getenv(rpcmeta.EnvSession),
		Passphrase:  os.Getenv(rpcmeta.EnvPassphrase),
		Fingerprint: os.Getenv(rpcmeta.EnvFingerprint),
		CAFile:      os.Getenv(rpcmeta.EnvCA),
		Insecure:    os.Getenv(rpcmeta.EnvInsecure) == "1" || os.Getenv(rpcmeta.EnvInsecure) == "true",
	})
}

func tlsCreds(opts Options) (credentials.TransportCredentials, error) {
	switch {
	case opts.Fingerprint != "":
		return credentials.NewTLS(&tls.Config{
			// The certificate is pinned by fingerprint instead of a CA.
			InsecureSkipVerify:    true,
			VerifyPeerCertificate: pin.Verify("exporter", opts.Fingerprint),
		}), nil
	case opts.CAFile != "":
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", opts.CAFile)
		}
		return credentials.NewTLS(&tls.Config{RootCAs: pool}), nil
	case opts.Insecure:
		return credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}), nil
	}
	return nil, errors.New("TCP exporter needs --fingerprint (printed by jmp run) or --ca, or --insecure to skip verification")
}

func (c *Client) withMeta(ctx context.Context) context.Context {
	c.mu.Lock()
	tok := c.token
	c.mu.Unlock()
	kv := []string{}
	if tok != "" {
		kv = append(kv, rpcmeta.SessionKey, tok)
	}
	if c.opts.Passphrase != "" {
		kv = append(kv, rpcmeta.PassphraseKey, c.opts.Passphrase)
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func (c *Client) unaryMeta(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return inv(c.withMeta(ctx), method, req, reply, cc, opts...)
}

func (c *Client) streamMeta(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, st grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return st(c.withMeta(ctx), desc, cc, method, opts...)
}

// Conn is the connection, for driver clients of capabilities this package
// has no shortcut for. Calls on it carry the session and passphrase.
func (c *Client) Conn() grpc.ClientConnInterface { return c.conn }

// Close closes the connection (ending a session this client opened).
func (c *Client) Close() error { return c.conn.Close() }

// Token is the session token in use.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// Session is a held exporter. Closing it resets the board to its safe
// state unless it was opened with KeepPower.
type Session struct {
	Token  string
	cancel context.CancelFunc
	done   chan struct{}
	stream pb.Exporter_SessionClient
}

// SessionOptions tune Open.
type SessionOptions struct {
	KeepPower bool
	// OnHook, when set, is given the exporter's hook events on the
	// session (direct and local mode): beforeLease's while Open waits,
	// afterLease's while Close waits.
	OnHook func(*pb.HookEvent)
}

// Open takes the exporter's session. It fails with errdefs.ErrInUse when
// another client holds it.
func (c *Client) Open(ctx context.Context, o SessionOptions) (*Session, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stream, err := pb.NewExporterClient(c.conn).Session(sctx)
	if err != nil {
		cancel()
		return nil, errdefs.FromGRPC(err)
	}
	name := c.opts.Name
	if name == "" {
		name = defaultName()
	}
	if err := stream.Send(&pb.SessionRequest{Client: name, KeepPower: o.KeepPower}); err != nil {
		// A refused stream reports io.EOF on Send; the reason comes with Recv.
		if _, rerr := stream.Recv(); rerr != nil {
			err = rerr
		}
		cancel()
		return nil, errdefs.FromGRPC(err)
	}
	ev, err := stream.Recv()
	for err == nil && ev.GetToken() == "" {
		// beforeLease runs before the exporter hands out the session.
		if h := ev.GetHook(); h != nil && o.OnHook != nil {
			o.OnHook(h)
		}
		ev, err = stream.Recv()
	}
	if err != nil {
		cancel()
		return nil, errdefs.FromGRPC(err)
	}
	s := &Session{Token: ev.GetToken(), cancel: cancel, done: make(chan struct{}), stream: stream}
	c.mu.Lock()
	c.token = s.Token
	c.mu.Unlock()
	go func() {
		defer close(s.done)
		for {
			// Notices from the exporter carry nothing the client acts on
			// (hook output aside); the stream ending is what matters.
			ev, err := stream.Recv()
			if err != nil {
				return
			}
			if h := ev.GetHook(); h != nil && o.OnHook != nil {
				o.OnHook(h)
			}
		}
	}()
	return s, nil
}

// Done is closed when the exporter ends the session or the connection drops.
func (s *Session) Done() <-chan struct{} { return s.done }

// Close ends the session and waits until the exporter has reset the board.
func (s *Session) Close() error {
	_ = s.stream.CloseSend()
	<-s.done
	s.cancel()
	return nil
}

func defaultName() string {
	u := os.Getenv("USER")
	if u == "" {
		u = "user"
	}
	h, _ := os.Hostname()
	return u + "@" + h
}

// Report describes the exporter's driver tree.
func (c *Client) Report(ctx context.Context) (*pb.ReportResponse, error) {
	r, err := pb.NewExporterClient(c.conn).Report(ctx, &pb.ReportRequest{})
	return r, errdefs.FromGRPC(err)
}

// Status tells who holds the exporter.
func (c *Client) Status(ctx context.Context) (*pb.StatusResponse, error) {
	r, err := pb.NewExporterClient(c.conn).Status(ctx, &pb.StatusRequest{})
	return r, errdefs.FromGRPC(err)
}

// Power returns the power driver at path.
func (c *Client) Power(path string) *power.Client { return power.NewClient(c.conn, path) }

// Console returns the console driver at path.
func (c *Client) Console(path string) *console.Client { return console.NewClient(c.conn, path) }
