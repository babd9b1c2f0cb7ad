// Package store keeps the controller's state in etcd: identities,
// exporters, leases and grants, under one key prefix. It starts an
// embedded single-member etcd or connects to an external cluster, and
// mirrors the prefix in memory through a watch so that reads and
// scheduling never wait for etcd; writes are transactions that compare
// revisions, so replicas sharing a cluster never grant one exporter twice.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// Prefix is where pogo keeps its keys.
const Prefix = "/pogo/"

// Key prefixes, one per record type.
const (
	ClientsPrefix   = Prefix + "clients/"
	ExportersPrefix = Prefix + "exporters/"
	OnlinePrefix    = Prefix + "online/"
	LeasesPrefix    = Prefix + "leases/"
	AssignPrefix    = Prefix + "assign/"
	PoliciesPrefix  = Prefix + "policies/"
	SecretKey       = Prefix + "secret"
	CAKey           = Prefix + "ca"
)

// Options say where the state lives.
type Options struct {
	// Endpoints of an external etcd cluster; empty starts an embedded one
	// in DataDir/etcd.
	Endpoints []string
	DataDir   string
	Log       *slog.Logger
}

// Store is an etcd connection plus, for the embedded case, the server.
// Its methods are the only way to etcd.
type Store struct {
	cli  *clientv3.Client
	etcd *embed.Etcd
	log  *slog.Logger
}

// Open connects to etcd, starting the embedded one when no endpoints are
// given.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if len(o.Endpoints) > 0 {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   o.Endpoints,
			DialTimeout: 5 * time.Second,
			Context:     context.WithoutCancel(ctx),
			Logger:      nopZap(),
		})
		if err != nil {
			return nil, fmt.Errorf("connect to etcd %v: %w", o.Endpoints, err)
		}
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := c.Get(sctx, SecretKey); err != nil {
			c.Close()
			return nil, fmt.Errorf("etcd %v does not answer: %w", o.Endpoints, err)
		}
		return &Store{cli: c, log: o.Log}, nil
	}
	return openEmbedded(ctx, o)
}

func openEmbedded(ctx context.Context, o Options) (*Store, error) {
	if o.DataDir == "" {
		return nil, errors.New("embedded etcd needs a data dir")
	}
	dir := filepath.Join(o.DataDir, "etcd")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Name = "pogo"
	cfg.Dir = dir
	// The controller talks to its member in-process (v3client); the
	// member still needs listeners, on free loopback ports.
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	peer := url.URL{Scheme: "http", Host: ports[0]}
	cli := url.URL{Scheme: "http", Host: ports[1]}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.ListenClientUrls = []url.URL{cli}
	cfg.AdvertiseClientUrls = []url.URL{cli}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(o.DataDir, "etcd.log")}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, errors.New("embedded etcd not ready after 60s")
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Store{cli: v3client.New(e.Server), etcd: e, log: o.Log}, nil
}

// Close closes the connection and stops the embedded etcd.
func (s *Store) Close() error {
	err := s.cli.Close()
	if s.etcd != nil {
		s.etcd.Close()
	}
	return err
}

// freePorts finds n free loopback ports. Another process may take one
// before etcd binds it; StartEtcd then fails with a clear error.
func freePorts(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port for etcd: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
