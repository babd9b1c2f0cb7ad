package router

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc/credentials"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/api/tunnel"
)

// ServerCreds are the controller's gRPC transport credentials with tunnel
// ends taken out before gRPC sees them: TLS connections that negotiate
// ALPN and plain TCP connections that start with "POGO", which are taken
// unless tunnels use TLS legs (plain false). All share
// the one listening port.
func ServerCreds(tc *tls.Config, hub *Hub, plain bool) credentials.TransportCredentials {
	s := &serverCreds{hub: hub, plain: plain || tc == nil}
	if tc != nil {
		s.tc = tc.Clone()
		s.tc.NextProtos = []string{"h2", tunnel.ALPN}
		if s.tc.MinVersion == 0 {
			s.tc.MinVersion = tls.VersionTLS12
		}
	}
	return s
}

type serverCreds struct {
	tc    *tls.Config
	hub   *Hub
	plain bool // plaintext tunnel ends are taken
}

// ServerHandshake runs in gRPC's per-connection goroutine under its
// connection timeout, so reading the hello here blocks nothing else.
func (s *serverCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	// Every client sends at least 4 bytes first: a TLS record header, the
	// HTTP/2 preface or a tunnel hello.
	var magic [4]byte
	if _, err := io.ReadFull(raw, magic[:]); err != nil {
		return nil, nil, fmt.Errorf("read connection preface: %w", err)
	}
	peeked := prefixed{Conn: raw, r: io.MultiReader(bytes.NewReader(magic[:]), raw)}
	if string(magic[:]) == tunnel.PlainMagic {
		if !s.plain {
			go refuse(peeked, fmt.Errorf("this controller takes tunnel ends over TLS only (it runs with --tunnel-security tls): %w", errdefs.ErrUnauthorized))
			return nil, nil, credentials.ErrConnDispatched
		}
		s.hub.Accept(peeked)
		return nil, nil, credentials.ErrConnDispatched
	}
	if s.tc == nil {
		return peeked, insecureInfo{credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
	}
	bc := &tunnel.BatchConn{Conn: peeked}
	conn := tls.Server(bc, s.tc)
	if err := conn.Handshake(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	st := conn.ConnectionState()
	switch st.NegotiatedProtocol {
	case tunnel.ALPN:
		s.hub.Accept(tunnel.NewTLSConn(conn, bc))
		return nil, nil, credentials.ErrConnDispatched
	case "h2":
		return conn, credentials.TLSInfo{State: st, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	}
	conn.Close()
	return nil, nil, errors.New("tls: client negotiated neither h2 nor " + tunnel.ALPN + " (ALPN is required)")
}

func (s *serverCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("router: server credentials cannot dial")
}

func (s *serverCreds) Info() credentials.ProtocolInfo {
	if s.tc == nil {
		return credentials.ProtocolInfo{SecurityProtocol: "insecure"}
	}
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (s *serverCreds) Clone() credentials.TransportCredentials {
	c := *s
	if s.tc != nil {
		c.tc = s.tc.Clone()
	}
	return &c
}

//nolint:staticcheck // part of the interface.
func (s *serverCreds) OverrideServerName(string) error { return nil }

type insecureInfo struct{ credentials.CommonAuthInfo }

func (insecureInfo) AuthType() string { return "insecure" }

// prefixed is a conn whose first bytes were already read.
type prefixed struct {
	net.Conn
	r io.Reader
}

func (p prefixed) Read(b []byte) (int, error) { return p.r.Read(b) }

// CloseWrite keeps half closes working on plaintext tunnels.
func (p prefixed) CloseWrite() error {
	if cw, ok := p.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("router: connection cannot half-close")
}
