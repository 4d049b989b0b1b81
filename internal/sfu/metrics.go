package sfu

import (
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the SFU's Prometheus metrics (docs/operations.md, Metrics).
type Metrics struct {
	audio, video     kindCounters
	dropQueueFull    prometheus.Counter
	dropNotBound     prometheus.Counter
	dropWriteError   prometheus.Counter
	layerSwitches    prometheus.Counter
	keyframeRequests prometheus.Counter
	retransmitted    prometheus.Counter
	nackMissed       prometheus.Counter
	nackRefused      [3]prometheus.Counter // by refusedPaused, refusedRepeat, refusedBudget
	nacksSent        prometheus.Counter
	nacksSkipped     prometheus.Counter
	feedbackInvalid  prometheus.Counter
	sendPath         *prometheus.CounterVec
	receivePath      *prometheus.CounterVec
	dropReceiveQueue prometheus.Counter
	subscribers      *prometheus.GaugeVec
	padding          prometheus.Counter
	probes           *prometheus.CounterVec
	probeFailures    *prometheus.CounterVec
}

type kindCounters struct{ packets, bytes prometheus.Counter }

// NewMetrics makes the metrics and registers them on reg (nil: unregistered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	fwdPackets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bedside_sfu_forwarded_packets_total",
		Help: "RTP packets the SFU forwarded to subscribers, by kind (audio, video).",
	}, []string{"kind"})
	fwdBytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bedside_sfu_forwarded_bytes_total",
		Help: "RTP payload bytes the SFU forwarded to subscribers, by kind.",
	}, []string{"kind"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bedside_sfu_dropped_packets_total",
		Help: "RTP packets the SFU did not forward, by reason: queue_full (a subscriber's writer fell behind), not_bound (its connection not yet negotiated), write_error, receive_queue_full (a publisher's packet its reader had no room for, or one larger than any media packet).",
	}, []string{"reason"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bedside_sfu_nack_refused_packets_total",
		Help: "Video packets subscribers asked for again (NACK) that the SFU kept and did not resend (decision 69), by reason: paused (the video is paused for the subscriber now), repeat (resent lately, or too often already), budget (past the subscriber's retransmission budget).",
	}, []string{"reason"})
	m := &Metrics{
		nackRefused: [3]prometheus.Counter{
			refusedPaused: refused.WithLabelValues("paused"),
			refusedRepeat: refused.WithLabelValues("repeat"),
			refusedBudget: refused.WithLabelValues("budget"),
		},
		audio:          kindCounters{fwdPackets.WithLabelValues("audio"), fwdBytes.WithLabelValues("audio")},
		video:          kindCounters{fwdPackets.WithLabelValues("video"), fwdBytes.WithLabelValues("video")},
		dropQueueFull:  dropped.WithLabelValues("queue_full"),
		dropNotBound:   dropped.WithLabelValues("not_bound"),
		dropWriteError: dropped.WithLabelValues("write_error"),
		// Before forwarding: a publisher's stream whose reader fell behind.
		dropReceiveQueue: dropped.WithLabelValues("receive_queue_full"),
		layerSwitches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_sfu_layer_switches_total",
			Help: "Simulcast layer switches made for subscribers (each at a key frame).",
		}),
		keyframeRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_sfu_keyframe_requests_total",
			Help: "Key frame requests (PLI) the SFU sent to publishers: layer switches and subscribers' picture losses, at most one per layer per 500 ms.",
		}),
		retransmitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_sfu_retransmitted_packets_total",
			Help: "Video packets sent again to subscribers that asked for them (NACK).",
		}),
		nackMissed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_sfu_nack_missed_packets_total",
			Help: "Video packets subscribers asked for (NACK) that the SFU no longer kept, or never sent to them.",
		}),
		nacksSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_sfu_publisher_nacked_packets_total",
			Help: "Video packets the SFU asked publishers to send again (NACK): lost on their way in, each counted once per asking (at most 10).",
		}),
		nacksSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_sfu_publisher_nack_skipped_packets_total",
			Help: "Video packets lost on their way in from publishers that the SFU did not ask for again: past the publisher's asking budget, a share of what arrives from it (decision 75).",
		}),
		feedbackInvalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_sfu_feedback_invalid_total",
			Help: "Transport-wide congestion control feedback packets from subscribers that could not be read (the estimator ignored them).",
		}),
		sendPath: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bedside_sfu_sub_connections_total",
			Help: "Subscribers' connections by the path their media took once connected: direct (the SFU's own SRTP and socket writes) or pion (pion's SRTP session and ICE connection).",
		}, []string{"send_path"}),
		receivePath: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bedside_sfu_pub_connections_total",
			Help: "Publishers' connections by the path their media took once connected: direct (read and decrypted by the SFU's socket reader) or pion (pion's ICE connection and SRTP session).",
		}, []string{"receive_path"}),
		padding: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bedside_sfu_padding_packets_total",
			Help: "Padding-only packets the SFU sent to subscribers to probe their links (decision 68).",
		}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bedside_sfu_probes_total",
			Help: "Probes of subscribers' links for a higher video layer or a paused video, by result: raised (the estimate reached what the layer needs) or failed (a queue, loss or the time ran out).",
		}, []string{"result"}),
		probeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bedside_sfu_probe_failures_total",
			Help: "Probes that failed, by how: queue (the subscriber's feedback showed a queue), loss, cut (the estimator cut its estimate) or time (it ran out before the estimate reached the need).",
		}, []string{"reason"}),
		subscribers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bedside_sfu_visit_subscribers",
			Help: "Participants receiving through the SFU, per visit in SFU mode.",
		}, []string{"visit"}),
	}
	if reg != nil {
		reg.MustRegister(fwdPackets, fwdBytes, dropped, m.layerSwitches, m.keyframeRequests, m.retransmitted, m.nackMissed, refused, m.nacksSent, m.nacksSkipped, m.feedbackInvalid, m.sendPath, m.receivePath, m.subscribers, m.padding, m.probes, m.probeFailures)
	}
	return m
}

func (m *Metrics) forwarded(kind webrtc.RTPCodecType) kindCounters {
	if kind == webrtc.RTPCodecTypeAudio {
		return m.audio
	}
	return m.video
}

func (m *Metrics) visitSubscribers(visit string, n int) {
	m.subscribers.WithLabelValues(visit).Set(float64(n))
}

func (m *Metrics) forgetVisit(visit string) { m.subscribers.DeleteLabelValues(visit) }
