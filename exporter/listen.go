package exporter

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/pogolab/pogo/api/pin"
)

// ListenUnix listens on a unix socket at path, replacing a stale one, in a
// directory only the owner can enter.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another exporter is serving it", path)
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return bufferedListener{l}, nil
}

// TLSConfig loads cert and key, or makes a self-signed certificate when
// both are empty, and returns the config with the fingerprint to pin.
func TLSConfig(certFile, keyFile string) (*tls.Config, string, error) {
	var cert tls.Certificate
	var fp string
	var err error
	if certFile == "" && keyFile == "" {
		cert, fp, err = SelfSigned()
	} else {
		cert, err = tls.LoadX509KeyPair(certFile, keyFile)
		if err == nil {
			fp = pin.Fingerprint(cert.Certificate[0])
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, fp, nil
}

// socketBuffer is what unix socket connections ask the kernel for: the
// default (about 200 KiB) splits every bulk message into many syscalls.
const socketBuffer = 4 << 20

// bufferedListener sizes the socket buffers of every accepted connection.
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if uc, ok := c.(*net.UnixConn); ok {
		// Best effort: the kernel caps it at net.core.[rw]mem_max.
		_ = uc.SetReadBuffer(socketBuffer)
		_ = uc.SetWriteBuffer(socketBuffer)
	}
	return c, err
}
