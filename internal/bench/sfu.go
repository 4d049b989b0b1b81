package bench

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/bedside/bedside/internal/client"
)

// SFU mode (docs/protocol.md, "Through the SFU"): a member has two connections with the
// server, pub (it offers its audio and the camera in simulcast layers q, h, f) and sub (the
// server offers the others' tracks). The load client does what the browser client does,
// minus the pixels: it follows layers (dynacast) and answers picture losses with key
// frames. It sends no video_size, so the SFU sends each subscriber the top layer that its
// bandwidth estimate allows.
type sfuConn struct {
	session string

	mu         sync.Mutex
	pub, sub   *webrtc.PeerConnection
	pubPending []webrtc.ICECandidateInit
	subPending []webrtc.ICECandidateInit
}

// enterSFU opens the member's connections with the SFU for a session (again when the
// server announces a new one).
func (m *member) enterSFU(session string) {
	m.mu.Lock()
	old := m.sfu
	if old != nil && old.session == session {
		m.mu.Unlock()
		return
	}
	s := &sfuConn{session: session}
	m.sfu, m.mode = s, "sfu"
	m.mu.Unlock()
	if old != nil {
		old.close()
	}
	if m.pub != nil {
		if err := m.publishSFU(s); err != nil {
			m.fail(fmt.Errorf("publish to the SFU: %w", err))
		}
	}
}

// publishSFU makes the pub connection: an Opus track and the camera in the publisher's
// layers (rids q, h, f; one layer without a rid), and sends its offer with the sources.
func (m *member) publishSFU(s *sfuConn) error {
	p := m.pub
	pc, err := peerConnection(m.api)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.pub = pc
	s.mu.Unlock()
	m.wireCandidates(pc, "pub")
	label := fmt.Sprintf("bench-%d", m.idx)
	audio, err := webrtc.NewTrackLocalStaticRTP(opus, "audio", label)
	if err != nil {
		return err
	}
	at, err := pc.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return err
	}
	go readRTCP(at.Sender(), "", nil) // ends when the connection closes
	var video []*webrtc.TrackLocalStaticRTP
	var vt *webrtc.RTPTransceiver
	for _, l := range p.layers {
		var opts []func(*webrtc.TrackLocalStaticRTP)
		if len(p.layers) > 1 {
			opts = append(opts, webrtc.WithRTPStreamID(l.rid))
		}
		t, err := webrtc.NewTrackLocalStaticRTP(vp8, "camera", label, opts...)
		if err != nil {
			return err
		}
		video = append(video, t)
	}
	if len(video) > 0 {
		if vt, err = pc.AddTransceiverFromTrack(video[0], webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly}); err != nil {
			return err
		}
		for _, t := range video[1:] {
			if err := vt.Sender().AddEncoding(t); err != nil {
				return err
			}
		}
		for i, l := range p.layers {
			rid := ""
			if len(p.layers) > 1 {
				rid = l.rid
			}
			go readRTCP(vt.Sender(), rid, func() { // ends when the connection closes
				m.dbg.printf("member %d: key frame asked for on layer %s", m.idx, l.rid)
				p.keyframe[i].Store(true)
			})
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	if err := m.setLocal(pc, offer); err != nil {
		return err
	}
	// The header extensions the browser puts on each packet: the mid on all, the rid on
	// simulcast layers, the audio level on audio (silence: 127).
	ids := map[string]uint8{}
	for _, e := range at.Sender().GetParameters().HeaderExtensions {
		ids["a "+e.URI] = uint8(e.ID)
	}
	if vt != nil {
		for _, e := range vt.Sender().GetParameters().HeaderExtensions {
			ids["v "+e.URI] = uint8(e.ID)
		}
	}
	var aext []rtpExt
	if id := ids["a "+sdp.SDESMidURI]; id != 0 {
		aext = append(aext, rtpExt{id, []byte(at.Mid())})
	}
	if id := ids["a "+sdp.AudioLevelURI]; id != 0 {
		aext = append(aext, rtpExt{id, []byte{127}})
	}
	p.writeAudio = extWriter(audio, aext)
	sources := map[string]string{at.Mid(): "audio"}
	if vt != nil {
		sources[vt.Mid()] = "camera"
		for i, l := range p.layers {
			var vext []rtpExt
			if id := ids["v "+sdp.SDESMidURI]; id != 0 {
				vext = append(vext, rtpExt{id, []byte(vt.Mid())})
			}
			if id := ids["v "+sdp.SDESRTPStreamIDURI]; id != 0 && len(p.layers) > 1 {
				vext = append(vext, rtpExt{id, []byte(l.rid)})
			}
			p.writeVideo[i] = extWriter(video[i], vext)
		}
	}
	p.start()
	ld := pc.LocalDescription()
	return m.send(map[string]any{"type": "signal", "to": "sfu", "pc": "pub",
		"description": client.Description{Type: ld.Type.String(), SDP: ld.SDP}, "sources": sources})
}

type rtpExt struct {
	id  uint8
	val []byte
}

// extWriter writes raw RTP packets to a track with header extensions added.
func extWriter(t *webrtc.TrackLocalStaticRTP, exts []rtpExt) rtpWriter {
	return func(b []byte) error {
		var p rtp.Packet
		if err := p.Unmarshal(b); err != nil {
			return err
		}
		for _, e := range exts {
			if err := p.Header.SetExtension(e.id, e.val); err != nil {
				return err
			}
		}
		return t.WriteRTP(&p)
	}
}

// wireCandidates sends a connection's ICE candidates to the SFU. The descriptions already
// hold the host candidates (the bench waits for gathering); these are the same again, and
// the end of candidates.
func (m *member) wireCandidates(pc *webrtc.PeerConnection, which string) {
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			m.send(map[string]any{"type": "signal", "to": "sfu", "pc": which, "candidate": nil})
		}
	})
}

// sfuSignal applies a signal from the SFU.
func (m *member) sfuSignal(in client.SignalIn) error {
	m.mu.Lock()
	s := m.sfu
	m.mu.Unlock()
	if s == nil {
		return fmt.Errorf("a signal from the SFU before SFU mode")
	}
	if d := in.Description; d != nil {
		switch {
		case in.PC == "sub" && d.Type == "offer":
			return m.subOffer(s, d.SDP)
		case in.PC == "pub" && d.Type == "answer":
			s.mu.Lock()
			pc, pending := s.pub, s.pubPending
			s.pubPending = nil
			s.mu.Unlock()
			if pc == nil {
				return fmt.Errorf("a pub answer without an offer")
			}
			if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: d.SDP}); err != nil {
				return fmt.Errorf("pub answer: %w", err)
			}
			for _, c := range pending {
				pc.AddICECandidate(c)
			}
			return nil
		}
		return fmt.Errorf("unexpected %s %s from the SFU", in.PC, d.Type)
	}
	if len(in.Candidate) == 0 || string(in.Candidate) == "null" {
		return nil
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal(in.Candidate, &c); err != nil || c.Candidate == "" {
		return nil
	}
	s.mu.Lock()
	pc, pending := s.pub, &s.pubPending
	if in.PC == "sub" {
		pc, pending = s.sub, &s.subPending
	}
	if pc == nil || pc.RemoteDescription() == nil {
		*pending = append(*pending, c)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	return pc.AddICECandidate(c)
}

// subOffer answers the SFU's offer on sub, making the connection at the first one.
func (m *member) subOffer(s *sfuConn, sdpText string) error {
	m.dbg.printf("member %d: sub offer", m.idx)
	s.mu.Lock()
	pc := s.sub
	s.mu.Unlock()
	if pc == nil {
		var err error
		if pc, err = peerConnection(m.api); err != nil {
			return err
		}
		m.wireCandidates(pc, "sub")
		pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			m.dbg.printf("member %d: track %s %s", m.idx, t.Kind(), t.StreamID())
			rx := m.newRx()
			go readTrack(t, rx, m.stamps, m.firstRTP.set) // ends when the connection closes
		})
		s.mu.Lock()
		s.sub = pc
		s.mu.Unlock()
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdpText}); err != nil {
		return fmt.Errorf("sub offer: %w", err)
	}
	s.mu.Lock()
	pending := s.subPending
	s.subPending = nil
	s.mu.Unlock()
	for _, c := range pending {
		pc.AddICECandidate(c)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("sub answer: %w", err)
	}
	if err := m.setLocal(pc, answer); err != nil {
		return fmt.Errorf("sub answer: %w", err)
	}
	ld := pc.LocalDescription()
	if m.dbg != nil && m.dbg.sdp {
		m.dbg.printf("member %d: sub offer\n%s\nanswer\n%s", m.idx, sdpText, ld.SDP)
	}
	return m.send(map[string]any{"type": "signal", "to": "sfu", "pc": "sub",
		"description": client.Description{Type: ld.Type.String(), SDP: ld.SDP}})
}

func (s *sfuConn) close() {
	s.mu.Lock()
	pub, sub := s.pub, s.sub
	s.mu.Unlock()
	for _, pc := range []*webrtc.PeerConnection{pub, sub} {
		if pc != nil {
			pc.Close()
		}
	}
}
