package exporter

import (
	"crypto/tls"
	"fmt"
	"os"

	"github.com/pogolab/pogo/api/pin"
)

// SelfSigned makes a throwaway TLS certificate for hosts and returns it
// with its fingerprint, which clients pin.
func SelfSigned(hosts ...string) (tls.Certificate, string, error) {
	name, _ := os.Hostname()
	return pin.SelfSigned("pogo exporter "+name, append([]string{"localhost", name}, hosts...)...)
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
