package daemon

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pogolab/pogo/exporter"
)

// registerServer adds what every exporter reports, whatever its mode: the
// session and each driver that keeps counters of its own (TFTP and HTTP
// transfers).
func registerServer(reg *prometheus.Registry, srv *exporter.Server) error {
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pogo_exporter_session_held", Help: "1 while a client holds the exporter's session.",
	}, func() float64 {
		if _, ok := srv.Holder(); ok {
			return 1
		}
		return 0
	})
	if err := reg.Register(held); err != nil {
		return err
	}
	for _, d := range srv.Tree().Drivers() {
		if c, ok := d.(prometheus.Collector); ok {
			if err := reg.Register(c); err != nil {
				return fmt.Errorf("metrics of a driver: %w", err)
			}
		}
	}
	return nil
}

// serveMetrics serves reg on addr until the returned stop is called.
func serveMetrics(addr string, reg *prometheus.Registry) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	return func() { hs.Close() }, nil
}
