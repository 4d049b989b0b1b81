package sfu

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// answerSink collects a participant's pub answers and the SFU's pub candidates.
type answerSink struct {
	discardSink
	answers    chan string
	candidates chan []byte
}

func (s answerSink) Description(pc PC, _, sdp string) {
	if pc == Pub {
		s.answers <- sdp
	}
}

func (s answerSink) Candidate(pc PC, c []byte) {
	if pc == Pub && c != nil {
		s.candidates <- c
	}
}

// TestPubOfferTwice: a page whose signalling came back on a new socket sends its pub offer
// again when it cannot know whether the old socket delivered it (call.js, _resendOffers),
// so the SFU may get the same offer twice. The publisher must connect and its media reach
// the SFU all the same, and the second answer must be the first again (pion, answering a
// repeat anew, could change its ICE credentials: the page, stable, keeps the old ones).
func TestPubOfferTwice(t *testing.T) {
	s := loopbackSFU(t)
	sink := answerSink{answers: make(chan string, 4), candidates: make(chan []byte, 64)}
	s.Join("vis_twice", Member{ID: "prt_pub", Session: "one", Sink: sink})

	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(loopbackPeer())).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "cam")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.AddTrack(track); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	mid := pc.GetTransceivers()[0].Mid()
	desc := &Description{Type: "offer", SDP: pc.LocalDescription().SDP}
	for range 2 {
		if err := s.Signal("vis_twice", "prt_pub", Pub, desc, nil, map[string]Source{mid: SourceCamera}); err != nil {
			t.Fatal(err)
		}
	}
	var answers []string
	for len(answers) < 2 {
		select {
		case a := <-sink.answers:
			answers = append(answers, a)
		case <-time.After(5 * time.Second):
			t.Fatalf("%d answers to the offer sent twice", len(answers))
		}
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answers[0]}); err != nil {
		t.Fatal(err)
	}
	// The same answer: its origin's version and ICE credentials (it may carry candidates
	// gathered since).
	if a, b := offerIdentity(answers[0]), offerIdentity(answers[1]); !a.valid() || a != b {
		t.Errorf("the offer sent again got another answer: %+v, then %+v", a, b)
	}
	done := make(chan struct{})
	defer close(done)
	go func() { // ends with the test
		for {
			select {
			case c := <-sink.candidates:
				var init webrtc.ICECandidateInit
				if json.Unmarshal(c, &init) == nil {
					pc.AddICECandidate(init)
				}
			case <-done:
				return
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for seq := uint16(1000); ; seq++ {
		p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, Marker: true},
			Payload: vp8Payload(true, seq == 1000, seq, 0, 320, 180, make([]byte, 200))}
		track.WriteRTP(p)
		if st := s.Stats("vis_twice"); len(st.Publications) == 1 && len(st.Publications[0].Layers) == 1 && st.Publications[0].Layers[0].Packets > 10 {
			t.Logf("connected: %s", pc.ConnectionState())
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s, the publisher is %s and nothing reached the SFU", pc.ConnectionState())
		}
		time.Sleep(33 * time.Millisecond)
	}
}
