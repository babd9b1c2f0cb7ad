package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/pogolab/pogo/api/token"
)

// Keepalive on controller connections: exporters and clients ping every
// 10 s, the controller lets them (KeepaliveServerOptions), and a peer
// silent for 5 s more is gone.
const (
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 5 * time.Second
)

// KeepaliveServerOptions are the controller's half of the keepalive that
// DialController's connections run.
func KeepaliveServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveTimeout, PermitWithoutStream: true}),
	}
}

// DialController dials a controller with a bearer token. Clients
// (client/lease) and exporters (exporter/controllerlink) both use it.
func DialController(endpoint, tok, ca string, insecureTLS, noTLS bool) (*grpc.ClientConn, error) {
	if endpoint == "" {
		return nil, fmt.Errorf("no controller endpoint")
	}
	if _, _, _, err := token.ParseToken(tok); err != nil {
		return nil, fmt.Errorf("controller token: %w (it comes from jmp admin create)", err)
	}
	var creds credentials.TransportCredentials
	if noTLS {
		creds = insecure.NewCredentials()
	} else {
		tc, err := ControllerTLS(ca, insecureTLS)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	target := endpoint
	if !strings.Contains(target, "://") {
		target = "dns:///" + target
	}
	conn, err := grpc.NewClient(target, DialOptions(
		grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(Bearer(tok, !noTLS)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout, PermitWithoutStream: true}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("controller %s: %w", endpoint, err)
	}
	return conn, nil
}

// Bearer is the per-call credential carrying tok; secure demands TLS under
// it.
func Bearer(tok string, secure bool) credentials.PerRPCCredentials {
	return bearer{token: tok, secure: secure}
}

type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{token.MetadataKey: "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// ControllerTLS is how clients and exporters trust the controller: a CA
// given as PEM text or a file path, or no verification when insecure.
func ControllerTLS(ca string, insecure bool) (*tls.Config, error) {
	if insecure {
		return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, nil
	}
	if ca == "" {
		return nil, errors.New("no CA to trust the controller with: give its CA (jmp admin ca prints it) or set insecure")
	}
	data := []byte(ca)
	if p, _ := pem.Decode(data); p == nil {
		var err error
		if data, err = os.ReadFile(ca); err != nil {
			return nil, fmt.Errorf("read controller CA: %w", err)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("controller CA %.40q holds no PEM certificate", ca)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// ControllerDataDir is where `jmp controller` keeps its state by default,
// and so where `jmp admin` looks for its admin socket.
func ControllerDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "pogo", "controller")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "pogo-controller")
	}
	return filepath.Join(home, ".local", "state", "pogo", "controller")
}

// AdminSocket is where a controller with data dir dir serves Admin.
func AdminSocket(dir string) string { return filepath.Join(dir, "admin.sock") }

// DialAdmin connects to the Admin service of the controller whose data
// dir is dir.
func DialAdmin(dir string) (*grpc.ClientConn, error) {
	// unix:// wants an absolute path: unix://ctl/admin.sock reads ctl as
	// an authority.
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	sock := AdminSocket(abs)
	if _, err := os.Stat(sock); err != nil {
		return nil, fmt.Errorf("no controller admin socket at %s (is jmp controller running with --data-dir %s?): %w", sock, dir, err)
	}
	return grpc.NewClient("unix://"+sock, DialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()))...)
}
