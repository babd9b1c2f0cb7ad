// Package controllerlink connects an exporter out to a lab controller:
// it registers, keeps the Listen stream open (reconnecting with backoff),
// follows the lease the controller assigns, runs the lease hooks and turns
// the controller's dial requests into router tunnels that it yields as a
// net.Listener for the exporter's gRPC server.
package controllerlink

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/pogolab/pogo/lab/controller/auth"
)

// Conn dials a controller with a bearer token. Clients (client/lease) and
// exporters both use it.
func Conn(endpoint, token, ca string, insecureTLS, noTLS bool) (*grpc.ClientConn, error) {
	if endpoint == "" {
		return nil, fmt.Errorf("no controller endpoint")
	}
	if _, _, _, err := auth.ParseToken(token); err != nil {
		return nil, fmt.Errorf("controller token: %w (it comes from jmp admin create)", err)
	}
	var creds credentials.TransportCredentials
	if noTLS {
		creds = insecure.NewCredentials()
	} else {
		tc, err := auth.ClientTLS(ca, insecureTLS)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	target := endpoint
	if !strings.Contains(target, "://") {
		target = "dns:///" + target
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(bearer{token: token, secure: !noTLS}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithInitialWindowSize(4<<20),
		grpc.WithInitialConnWindowSize(16<<20),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)),
	)
	if err != nil {
		return nil, fmt.Errorf("controller %s: %w", endpoint, err)
	}
	return conn, nil
}

type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{auth.MetadataKey: "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }
