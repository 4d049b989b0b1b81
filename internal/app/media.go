package app

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bedside/bedside/internal/config"
	"github.com/bedside/bedside/internal/sfu"
	"github.com/bedside/bedside/internal/visit"
)

// startSFU opens the SFU's UDP port (sfu-udp-addr) and starts it; nil when it is off. The
// socket, and the interface addresses the SFU announces, are those of the calling thread's
// network namespace (the network-namespace tests start the server inside one).
func startSFU(cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (*sfu.SFU, error) {
	if cfg.SFUUDPAddr == "off" {
		return nil, nil
	}
	conn, err := net.ListenPacket("udp", cfg.SFUUDPAddr)
	if err != nil {
		return nil, fmt.Errorf("sfu-udp-addr: %w", err)
	}
	if uc, ok := conn.(*net.UDPConn); ok {
		uc.SetReadBuffer(4 << 20)
		uc.SetWriteBuffer(4 << 20)
	}
	var public []string
	if cfg.SFUPublicIP != "" {
		public = []string{cfg.SFUPublicIP}
	}
	s, err := sfu.New(sfu.Config{UDP: conn, PublicIPs: public, Log: log, Metrics: sfu.NewMetrics(reg)})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("sfu: %w", err)
	}
	return s, nil
}

// sfuMedia adapts the SFU to what the visit service asks of it (visit.Media).
type sfuMedia struct{ s *sfu.SFU }

func (m sfuMedia) Join(visitID string, mm visit.MediaMember) string {
	return m.s.Join(visitID, sfu.Member{ID: mm.ID, Session: mm.Session, Observer: mm.Observer, Sink: sinkAdapter{mm.Sink}})
}

func (m sfuMedia) Leave(visitID, participantID string) { m.s.Leave(visitID, participantID) }

func (m sfuMedia) Disconnected(visitID, participantID string) {
	m.s.Disconnected(visitID, participantID)
}

func (m sfuMedia) Signal(visitID, participantID string, s visit.MediaSignal) error {
	var d *sfu.Description
	if s.Type != "" {
		d = &sfu.Description{Type: s.Type, SDP: s.SDP}
	}
	var sources map[string]sfu.Source
	if len(s.Sources) > 0 {
		sources = make(map[string]sfu.Source, len(s.Sources))
		for mid, src := range s.Sources {
			sources[mid] = sfu.Source(src)
		}
	}
	err := m.s.Signal(visitID, participantID, sfu.PC(s.PC), d, s.Candidate, sources)
	switch {
	case errors.Is(err, sfu.ErrObserver):
		return visit.ErrForbidden
	case errors.Is(err, sfu.ErrNotJoined):
		return visit.ErrNotInMedia
	case errors.Is(err, sfu.ErrInvalid):
		return visit.ErrWrongState
	}
	return err
}

func (m sfuMedia) VideoSize(visitID, subscriberID, publisherID, source string, width, height int) {
	m.s.VideoSize(visitID, subscriberID, publisherID, sfu.Source(source), width, height)
}

func (m sfuMedia) CloseRoom(visitID string) { m.s.CloseRoom(visitID) }

// sinkAdapter carries what the SFU says to a participant's signalling connection.
type sinkAdapter struct{ to visit.MediaSink }

func (a sinkAdapter) Description(pc sfu.PC, typ, sdp string) {
	a.to.MediaDescription(string(pc), typ, sdp)
}
func (a sinkAdapter) Candidate(pc sfu.PC, c []byte)          { a.to.MediaCandidate(string(pc), c) }
func (a sinkAdapter) Layers(src sfu.Source, active []string) { a.to.Layers(string(src), active) }
func (a sinkAdapter) Speakers(active string, speaking []string) {
	a.to.Speakers(active, speaking)
}
func (a sinkAdapter) VideoPaused(publisher string, src sfu.Source, paused bool) {
	a.to.VideoPaused(publisher, string(src), paused, "yours")
}

func (a sinkAdapter) Tracks(ts []sfu.Track) {
	out := make([]visit.Track, len(ts))
	for i, t := range ts {
		out[i] = visit.Track{Mid: t.Mid, Participant: t.Participant, Source: string(t.Source), Kind: t.Kind}
	}
	a.to.Tracks(out)
}
