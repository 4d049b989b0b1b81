package turn

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the relay's Prometheus metrics.
type Metrics struct {
	allocations      prometheus.Gauge
	allocationsTotal *prometheus.CounterVec
	refused          *prometheus.CounterVec
	revocations      prometheus.Counter
	streamDropped    prometheus.Counter
}

// NewMetrics registers the relay's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		allocations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bedside_turn_allocations", Help: "Open TURN relay allocations.",
		}),
		allocationsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bedside_turn_allocations_total", Help: "TURN relay allocations made, by client transport.",
		}, []string{"transport"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bedside_turn_refused_total",
			Help: "TURN requests refused, by reason (expired, over_ttl, revoked, malformed, bad_credentials, quota, peer_denied, tcp_relay_off).",
		}, []string{"reason"}),
		revocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_turn_revocations_total", Help: "Participants whose relay access was revoked (left, removed, visit ended).",
		}),
		streamDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_turn_stream_media_dropped_total",
			Help: "Media frames (ChannelData, Data indications) not sent to a TCP or TLS client because they would have come too late.",
		}),
	}
	reg.MustRegister(m.allocations, m.allocationsTotal, m.refused, m.revocations, m.streamDropped)
	return m
}
