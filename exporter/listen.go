package exporter

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
	return l, nil
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
			fp = Fingerprint(cert.Certificate[0])
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, fp, nil
}
