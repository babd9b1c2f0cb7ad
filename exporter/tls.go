package exporter

import (
	"crypto/tls"
	"os"

	"github.com/pogolab/pogo/api/pin"
)

// SelfSigned makes a throwaway TLS certificate for hosts and returns it
// with its fingerprint, which clients pin.
func SelfSigned(hosts ...string) (tls.Certificate, string, error) {
	name, _ := os.Hostname()
	return pin.SelfSigned("pogo exporter "+name, append([]string{"localhost", name}, hosts...)...)
}
