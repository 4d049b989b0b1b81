package bench

import (
	"context"
	"fmt"

	"github.com/pion/webrtc/v4"

	"github.com/bedside/bedside/internal/client"
)

// P2P mode: one peer connection per pair of members, as the browsers hold a visit of two.
// The server forwards no media; this mode checks the load clients and the server's
// signalling, and is the comparison for a visit of two.

// learn reacts to a peer the server announced: the impolite side makes the connection and
// the offer (docs/protocol.md).
func (m *member) learn(ctx context.Context, info client.PeerInfo) {
	if info.Polite {
		return // we are polite towards it: its offer makes our connection
	}
	pc, err := m.newP2P(info.ID)
	if err != nil {
		m.fail(err)
		return
	}
	if err = m.addMedia(pc, true); err != nil {
		m.fail(err)
		return
	}
	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = m.setLocal(pc, offer)
	}
	if err == nil {
		err = m.sendDescription(info.ID, pc)
	}
	if err != nil {
		m.fail(fmt.Errorf("offer to %s: %w", info.ID, err))
	}
}

// newP2P makes a connection to a peer with a reader for each incoming track.
func (m *member) newP2P(peer string) (*webrtc.PeerConnection, error) {
	m.mu.Lock()
	old := m.p2p[peer]
	m.mu.Unlock()
	if old != nil {
		old.Close()
	}
	pc, err := peerConnection(m.api)
	if err != nil {
		return nil, err
	}
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if !m.subscribe {
			return
		}
		rx := m.newRx()
		go readTrack(t, rx, m.stamps, m.firstRTP.set) // ends when the connection closes
	})
	m.mu.Lock()
	if m.p2p == nil {
		m.p2p = map[string]*webrtc.PeerConnection{}
	}
	m.p2p[peer] = pc
	m.mu.Unlock()
	return pc, nil
}

// setLocal sets a local description and waits for ICE gathering: the bench sends complete
// descriptions (no trickled candidates), which keeps it far below the signalling rate limit.
func (m *member) setLocal(pc *webrtc.PeerConnection, d webrtc.SessionDescription) error {
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(d); err != nil {
		return err
	}
	<-done
	return nil
}

func (m *member) sendDescription(to string, pc *webrtc.PeerConnection) error {
	ld := pc.LocalDescription()
	return m.send(map[string]any{"type": "signal", "to": to, "description": client.Description{Type: ld.Type.String(), SDP: ld.SDP}})
}

// signal applies a signal from a peer.
func (m *member) signal(ctx context.Context, s client.SignalIn) error {
	d := s.Description
	if d == nil {
		return nil // candidates: the descriptions carry them all
	}
	m.mu.Lock()
	pc := m.p2p[s.From]
	m.mu.Unlock()
	switch d.Type {
	case "offer":
		var err error
		if pc, err = m.newP2P(s.From); err != nil {
			return err
		}
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: d.SDP}); err != nil {
			return err
		}
		if err := m.addMedia(pc, false); err != nil {
			return err
		}
		answer, err := pc.CreateAnswer(nil)
		if err != nil {
			return err
		}
		if err := m.setLocal(pc, answer); err != nil {
			return err
		}
		return m.sendDescription(s.From, pc)
	case "answer":
		if pc == nil {
			return fmt.Errorf("answer without an offer")
		}
		return pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: d.SDP})
	}
	return nil
}

func (m *member) drop(peer string) {
	m.mu.Lock()
	pc := m.p2p[peer]
	delete(m.p2p, peer)
	m.mu.Unlock()
	if pc != nil {
		pc.Close()
	}
}

// addMedia adds the member's tracks to a connection. The tracks are shared by all of a
// member's connections: one write reaches every peer, as a browser's one camera track
// does. An offerer that publishes nothing asks for the peer's media with receive-only
// transceivers; an answerer's tracks ride on the offered transceivers.
func (m *member) addMedia(pc *webrtc.PeerConnection, offerer bool) error {
	for _, tr := range []*webrtc.TrackLocalStaticRTP{m.audio, m.video} {
		if tr == nil {
			continue
		}
		s, err := pc.AddTrack(tr)
		if err != nil {
			return err
		}
		pub := m.pub
		go readRTCP(s, "", func() { pub.keyframe[len(pub.keyframe)-1].Store(true) }) // ends when the connection closes
	}
	if m.pub == nil && offerer {
		for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				return err
			}
		}
	}
	return nil
}
