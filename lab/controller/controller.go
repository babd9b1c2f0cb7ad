// Package controller is `jmp controller`: the lab's registry of exporters,
// its fair lease queue and the router that connects clients to leased
// exporters. All state lives in etcd (see store); any number of replicas
// may share one cluster.
package controller

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/api/token"
	"github.com/pogolab/pogo/api/transport"
	"github.com/pogolab/pogo/lab/controller/auth"
	"github.com/pogolab/pogo/lab/controller/router"
	"github.com/pogolab/pogo/lab/controller/store"
)

// Options configure a controller replica.
type Options struct {
	// DataDir holds the embedded etcd, the CA copy, the server certificate
	// and admin.sock.
	DataDir string
	// Listen is the gRPC address (clients, exporters, router).
	Listen string
	// Advertise is the address other parties reach this replica's router
	// at; defaults to Listen's actual address.
	Advertise string
	// EtcdEndpoints selects an external etcd cluster.
	EtcdEndpoints []string
	// NoTLS serves plaintext (testing only).
	NoTLS bool
	// Tunnels is how tunnels are protected: end-to-end TLS over plain TCP
	// legs (the default), TLS legs ended by the router, or plain bytes for
	// trusted networks. The API keeps TLS whichever it is.
	Tunnels pb.TunnelSecurity
	// TLSHosts are extra names/IPs for the server certificate.
	TLSHosts []string
	// MetricsListen serves /metrics over HTTP when set.
	MetricsListen string
	// Retention is how long ended leases stay in etcd (and in jmp get
	// leases --all); zero means DefaultRetention.
	Retention time.Duration
	Log       *slog.Logger
}

// Controller is one running replica.
type Controller struct {
	opts    Options
	log     *slog.Logger
	st      *store.Store
	cache   *store.Cache
	signer  token.Signer
	ca      *auth.CA
	replica string
	router  string

	grpc    *grpc.Server
	admin   *grpc.Server
	lis     net.Listener
	adminL  net.Listener
	metrics *http.Server
	metL    net.Listener
	reg     *prometheus.Registry
	m       *metrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// session is this replica's etcd lease; online keys hang off it.
	smu     sync.Mutex
	session store.Session

	lmu   sync.Mutex
	links map[string]*link
	// hooks holds lease hook events exporters report here.
	hooks hookLog

	pmu       sync.Mutex
	posRev    int64
	posAt     time.Time
	positions map[string]int

	selectors *selectorCache

	// creates queues new leases for the scheduler.
	creates chan *createReq
}

// DefaultRetention is how long ended leases are kept: long enough to look
// back at a day of CI, short enough that etcd does not grow forever.
const DefaultRetention = 24 * time.Hour

// OnlineTTL is how long an exporter stays online after its replica
// vanishes without a word.
const OnlineTTL = 10 * time.Second

// New starts a replica: opens etcd, loads state, starts listening. Call
// Serve, then Close.
func New(ctx context.Context, o Options) (*Controller, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.DataDir == "" {
		return nil, errors.New("controller needs a data dir")
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if o.Listen == "" {
		o.Listen = ":8082"
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	c := &Controller{opts: o, log: o.Log, links: map[string]*link{}, selectors: newSelectorCache(maxSelectors), creates: make(chan *createReq, maxNew)}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	var err error
	if c.st, err = store.Open(ctx, store.Options{Endpoints: o.EtcdEndpoints, DataDir: o.DataDir, Log: o.Log}); err != nil {
		return nil, err
	}
	if err := c.loadSecrets(ctx); err != nil {
		return nil, err
	}
	if c.cache, err = store.NewCache(c.ctx, c.st); err != nil {
		return nil, err
	}
	if c.lis, err = net.Listen("tcp", o.Listen); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", o.Listen, err)
	}
	c.router = o.Advertise
	if c.router == "" {
		c.router = advertised(c.lis.Addr().(*net.TCPAddr))
	}
	c.replica = c.router + "/" + randHex(4)
	c.reg = prometheus.NewRegistry()
	c.m = newMetrics(c, c.reg)

	sopts := transport.ServerOptions(append(transport.KeepaliveServerOptions(),
		grpc.ChainUnaryInterceptor(c.unaryAuth),
		grpc.ChainStreamInterceptor(c.streamAuth),
	)...)
	hub := &router.Hub{
		Signer: c.signer,
		Notify: c.notifyDial,
		Authenticate: func(bearer string) (router.Caller, error) {
			id, err := c.checkToken(bearer)
			return router.Caller{Kind: id.Kind, Name: id.Name}, err
		},
		Bytes: func(dir string, n int) { c.m.streamBytes.WithLabelValues(dir).Add(float64(n)) },
		Log:   c.log,
	}
	var tc *tls.Config
	if !o.NoTLS {
		cert, err := c.serverCert()
		if err != nil {
			return nil, err
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// Tunnel ends share the gRPC port; the credentials hand them to the hub.
	sopts = append(sopts, grpc.Creds(router.ServerCreds(tc, hub, o.Tunnels != pb.TunnelSecurity_TUNNEL_SECURITY_TLS)))
	c.grpc = grpc.NewServer(sopts...)
	pb.RegisterExporterLinkServer(c.grpc, &linkService{c: c})
	pb.RegisterLeasesServer(c.grpc, &leaseService{c: c})

	c.admin = grpc.NewServer(transport.ServerOptions()...)
	pb.RegisterAdminServer(c.admin, &adminService{c: c})
	sock := transport.AdminSocket(o.DataDir)
	_ = os.Remove(sock)
	if c.adminL, err = net.Listen("unix", sock); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// Whoever can open the data dir's socket administers the lab.
	if err := os.Chmod(sock, 0o600); err != nil {
		return nil, err
	}
	if o.MetricsListen != "" {
		if c.metL, err = net.Listen("tcp", o.MetricsListen); err != nil {
			return nil, fmt.Errorf("metrics listen on %s: %w", o.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{}))
		c.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	if err := c.newSession(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

func advertised(a *net.TCPAddr) string {
	if a.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(a.Port))
	}
	return a.String()
}

// Addr is the gRPC address clients and exporters dial.
func (c *Controller) Addr() string { return c.router }

// MetricsAddr is the /metrics address, when served.
func (c *Controller) MetricsAddr() string {
	if c.metL == nil {
		return ""
	}
	return c.metL.Addr().String()
}

// Registry is the replica's Prometheus registry.
func (c *Controller) Registry() *prometheus.Registry { return c.reg }

// Serve serves until Close or ctx ends.
func (c *Controller) Serve(ctx context.Context) error {
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.schedule() }()
	go func() { defer c.wg.Done(); c.keepSession() }()
	go c.admin.Serve(c.adminL)
	if c.metrics != nil {
		go c.metrics.Serve(c.metL)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.grpc.Serve(c.lis) }()
	c.log.Info("controller serving", "addr", c.router, "replica", c.replica, "tls", !c.opts.NoTLS, "etcd", c.etcdDesc())
	select {
	case <-ctx.Done():
		return nil
	case <-c.ctx.Done():
		return nil
	case err := <-errc:
		if errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return err
	}
}

func (c *Controller) etcdDesc() string {
	if len(c.opts.EtcdEndpoints) > 0 {
		return strings.Join(c.opts.EtcdEndpoints, ",")
	}
	return "embedded"
}

// Close stops serving and closes etcd. Leases and the queue stay in etcd.
func (c *Controller) Close() error {
	c.cancel()
	if c.grpc != nil {
		stopped := make(chan struct{})
		go func() { c.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			c.grpc.Stop()
		}
	} else if c.lis != nil {
		c.lis.Close()
	}
	if c.admin != nil {
		c.admin.Stop()
	}
	if c.adminL != nil {
		c.adminL.Close()
	}
	if c.metrics != nil {
		c.metrics.Close()
	}
	c.wg.Wait()
	var err error
	if c.st != nil {
		// Online keys of this replica go at once rather than after the TTL.
		c.smu.Lock()
		id := c.session
		c.smu.Unlock()
		if id != 0 {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = c.st.Revoke(rctx, id)
			cancel()
		}
		err = c.st.Close()
	}
	return err
}

// loadSecrets creates the stream-token key and the CA once per cluster.
func (c *Controller) loadSecrets(ctx context.Context) error {
	key, err := c.st.CreateOnce(ctx, store.SecretKey, func() (string, error) { return randHex(32), nil })
	if err != nil {
		return fmt.Errorf("stream token key: %w", err)
	}
	c.signer = token.Signer{Key: []byte(key)}
	caText, err := c.st.CreateOnce(ctx, store.CAKey, func() (string, error) {
		ca, err := auth.NewCA()
		if err != nil {
			return "", err
		}
		return string(ca.CertPEM) + string(ca.KeyPEM), nil
	})
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	i := strings.Index(caText, "-----END CERTIFICATE-----")
	if i < 0 {
		return errors.New("CA in etcd is corrupt")
	}
	i += len("-----END CERTIFICATE-----\n")
	c.ca = &auth.CA{CertPEM: []byte(caText[:i]), KeyPEM: []byte(caText[i:])}
	return os.WriteFile(filepath.Join(c.opts.DataDir, "ca.crt"), c.ca.CertPEM, 0o644)
}

func (c *Controller) serverCert() (tls.Certificate, error) {
	host, _, _ := net.SplitHostPort(c.router)
	name, _ := os.Hostname()
	hosts := append([]string{"localhost", "127.0.0.1", "::1", name, host}, c.opts.TLSHosts...)
	cert, err := c.ca.ServerCert(hosts)
	if err != nil {
		return cert, err
	}
	return cert, writeCert(filepath.Join(c.opts.DataDir, "server.crt"), cert)
}

// newSession grants the replica's etcd lease that online keys hang off.
func (c *Controller) newSession(ctx context.Context) error {
	g, err := c.st.NewSession(ctx, OnlineTTL)
	if err != nil {
		return fmt.Errorf("session for online keys: %w", err)
	}
	c.smu.Lock()
	c.session = g
	c.smu.Unlock()
	return nil
}

// keepSession keeps the replica's etcd lease alive; if it is lost (etcd
// was down longer than the TTL) a new one is taken and every connected
// exporter's online key is written again.
func (c *Controller) keepSession() {
	for c.ctx.Err() == nil {
		c.smu.Lock()
		id := c.session
		c.smu.Unlock()
		_ = c.st.KeepAlive(c.ctx, id)
		if c.ctx.Err() != nil {
			return
		}
		c.log.Warn("etcd lease for online keys lost; renewing")
		for c.ctx.Err() == nil {
			if err := c.newSession(c.ctx); err == nil {
				break
			}
			sleep(c.ctx, time.Second)
		}
		c.lmu.Lock()
		ls := make([]*link, 0, len(c.links))
		for _, l := range c.links {
			ls = append(ls, l)
		}
		c.lmu.Unlock()
		for _, l := range ls {
			_ = c.putOnline(c.ctx, l)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
