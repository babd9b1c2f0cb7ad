package controller

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pogolab/pogo/lab/controller/store"
)

type metrics struct {
	grantLatency  prometheus.Histogram
	streamBytes   *prometheus.CounterVec
	exporterLinks prometheus.Gauge
}

// stateCollector reports gauges computed from the state at scrape time.
type stateCollector struct {
	c                         *Controller
	leases, queue, online, ex *prometheus.Desc
}

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.leases
	ch <- s.queue
	ch <- s.online
	ch <- s.ex
}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[store.State]int{store.Pending: 0, store.Ready: 0, store.Ended: 0, store.Unsatisfiable: 0, store.Invalid: 0}
	var online, total int
	s.c.cache.Read(func(v *store.View) {
		for _, l := range v.Leases {
			counts[l.State]++
		}
		online, total = len(v.Online), len(v.Exporters)
	})
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(s.leases, prometheus.GaugeValue, float64(n), string(st))
	}
	ch <- prometheus.MustNewConstMetric(s.queue, prometheus.GaugeValue, float64(counts[store.Pending]))
	ch <- prometheus.MustNewConstMetric(s.online, prometheus.GaugeValue, float64(online))
	ch <- prometheus.MustNewConstMetric(s.ex, prometheus.GaugeValue, float64(total))
}

func newMetrics(c *Controller, reg *prometheus.Registry) *metrics {
	m := &metrics{
		grantLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pogo_controller_grant_latency_seconds",
			Help:    "Time from a lease request to its grant, as granted by this replica.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 16),
		}),
		streamBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pogo_controller_stream_bytes_total",
			Help: "Bytes spliced by this replica's router.",
		}, []string{"direction"}),
		exporterLinks: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pogo_controller_exporter_links",
			Help: "Exporters connected to this replica.",
		}),
	}
	reg.MustRegister(m.grantLatency, m.streamBytes, m.exporterLinks, &stateCollector{
		c:      c,
		leases: prometheus.NewDesc("pogo_controller_leases", "Leases by state.", []string{"state"}, nil),
		queue:  prometheus.NewDesc("pogo_controller_queue_length", "Pending lease requests.", nil, nil),
		online: prometheus.NewDesc("pogo_controller_exporters_online", "Exporters online (on any replica).", nil, nil),
		ex:     prometheus.NewDesc("pogo_controller_exporters", "Exporters known.", nil, nil),
	})
	return m
}
