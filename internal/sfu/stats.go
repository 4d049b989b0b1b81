package sfu

import (
	"sort"

	"github.com/pion/webrtc/v4"

	"github.com/bedside/bedside/internal/bwe"
)

// LayerStats is one layer of a publication as the SFU receives it.
type LayerStats struct {
	RID           string
	Active        bool  // packets arriving
	Bitrate       int   // bit/s, measured
	Width, Height int   // from its last key frame
	Packets       int64 // read by the layer's reader
}

// Publication is one published track.
type Publication struct {
	Participant string
	Source      Source
	Layers      []LayerStats
	// Dynacast: the rids the publisher was last told to send (nil: all).
	SentRIDs []string
}

// Subscription is one down track: what a subscriber receives of a publication.
type Subscription struct {
	Subscriber, Publisher string
	Source                Source
	Target, Current       int // layer indexes, -1 paused
	Desired               int // what it would take if every layer were sent
}

// ParticipantStats is a participant as the SFU has it.
type ParticipantStats struct {
	ID string
	// Session is its SFU session (what its page was told).
	Session string
	// Online: its signalling connection is there (the SFU can send it offers).
	Online bool
	// Pub and Sub are its connections' last states ("none" before the first).
	Pub, Sub string
	// Streams are the incoming SSRCs its pub connection has bound (pion started reading them).
	Streams int
}

// RoomStats is a snapshot of a room, for tests, debugging and the bench.
type RoomStats struct {
	Participants  []ParticipantStats
	Publications  []Publication
	Subscriptions []Subscription
	// Estimates are the subscribers' bandwidth estimates (bit/s), as last used for layers.
	Estimates map[string]int
	// Estimators are the send-side estimators' states per subscriber (loss and delay).
	Estimators map[string]bwe.Stats
	// Direct are the packets sent to each subscriber by the direct send path (design
	// decision 50); a subscriber missing here has no sub connection yet.
	Direct map[string]int64
	// Received are the packets of each publisher taken by the direct receive path
	// (decision 51); a publisher missing here has no pub connection yet.
	Received map[string]int64
	// ReceivedByPion are the packets of each publisher's bound streams that came through
	// pion's path instead (before the direct path took them, or left to pion).
	ReceivedByPion map[string]int64
	// RTCPDirect are the RTCP datagrams from each subscriber taken by its direct path
	// (decision 55); RTCPByPion the reads of its down tracks from pion's path instead (a
	// datagram pion gives to two tracks counts twice).
	RTCPDirect, RTCPByPion map[string]int64
	// Probes are each subscriber's probes for a higher layer (decision 68): how many
	// raised the estimate to what the layer needs, and how many did not.
	Probes map[string]ProbeStats
}

// ProbeStats counts a subscriber's probes: those that raised, and those that failed in
// all and by how (the feedback's queue, its loss, a cut of the estimate, or the time run
// out before the estimate reached the need).
type ProbeStats struct{ Raised, Failed, Queue, Loss, Cut, Time int }

// Stats returns a snapshot of a visit's room (zero when it has none).
func (s *SFU) Stats(visitID string) RoomStats {
	r := s.room(visitID, false)
	if r == nil {
		return RoomStats{}
	}
	ups, ps := r.snapshot()
	out := RoomStats{Estimates: map[string]int{}, Estimators: map[string]bwe.Stats{}, Direct: map[string]int64{}, Received: map[string]int64{}, ReceivedByPion: map[string]int64{},
		RTCPDirect: map[string]int64{}, RTCPByPion: map[string]int64{}, Probes: map[string]ProbeStats{}}
	now := monotime()
	for _, up := range ups {
		pub := Publication{Participant: up.publisher, Source: up.source}
		if sent := up.sent.Load(); sent != nil {
			pub.SentRIDs = *sent
		}
		n := 1
		if up.simulcast {
			n = maxLayers
		}
		for i := range n {
			ly := &up.layers[i]
			pub.Layers = append(pub.Layers, LayerStats{
				RID: ly.rid, Active: now-ly.last.Load() < int64(layerIdle), Bitrate: int(ly.bps.Load()),
				Width: int(ly.width.Load()), Height: int(ly.height.Load()), Packets: int64(ly.packets.Load()),
			})
		}
		out.Publications = append(out.Publications, pub)
		for _, d := range *up.downs.Load() {
			out.Subscriptions = append(out.Subscriptions, Subscription{
				Subscriber: d.sub.id, Publisher: up.publisher, Source: up.source,
				Target: int(d.target.Load()), Current: int(d.current.Load()), Desired: int(d.desired.Load()),
			})
		}
	}
	state := func(v int32) string {
		if v == 0 {
			return "none"
		}
		return webrtc.PeerConnectionState(v).String()
	}
	for _, p := range ps {
		one := ParticipantStats{ID: p.id, Session: p.sfuSession, Online: p.online(), Pub: state(p.pubState.Load()), Sub: state(p.subState.Load())}
		if rx := p.directRx.Load(); rx != nil {
			one.Streams = len(*rx.streams.Load())
		}
		out.Participants = append(out.Participants, one)
		out.Estimates[p.id] = int(p.lastEstimate.Load())
		if p.subscribing.Load() {
			out.Estimators[p.id] = p.est.Stats()
			f := &p.probe.failed
			ps := ProbeStats{Raised: int(p.probe.raised.Load()), Queue: int(f[probeQueue].Load()), Loss: int(f[probeLoss].Load()),
				Cut: int(f[probeCut].Load()), Time: int(f[probeTimeout].Load())}
			ps.Failed = ps.Queue + ps.Loss + ps.Cut + ps.Time
			out.Probes[p.id] = ps
		}
		if tx := p.direct.Load(); tx != nil {
			out.Direct[p.id] = tx.sent.Load()
			out.RTCPDirect[p.id] = tx.rtcpIn.Load()
			out.RTCPByPion[p.id] = tx.rtcpPion.Load()
		}
		if rx := p.directRx.Load(); rx != nil {
			out.Received[p.id] = rx.taken.Load()
			out.ReceivedByPion[p.id] = rx.pumped.Load()
		}
	}
	sort.Slice(out.Participants, func(i, j int) bool { return out.Participants[i].ID < out.Participants[j].ID })
	sort.Slice(out.Publications, func(i, j int) bool {
		a, b := out.Publications[i], out.Publications[j]
		return a.Participant < b.Participant || a.Participant == b.Participant && a.Source < b.Source
	})
	sort.Slice(out.Subscriptions, func(i, j int) bool {
		a, b := out.Subscriptions[i], out.Subscriptions[j]
		if a.Subscriber != b.Subscriber {
			return a.Subscriber < b.Subscriber
		}
		return a.Publisher < b.Publisher || a.Publisher == b.Publisher && a.Source < b.Source
	})
	return out
}
