package sfu

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// TestPubOfferTwice: a page whose signalling came back on a new socket sends its pub offer
// again when it cannot know whether the old socket delivered it (call.js, _resendOffers),
// so the SFU may get the same offer twice. The publisher must connect and its media reach
// the SFU all the same, and the second answer must be the first again (pion, answering a
// repeat anew, could change its ICE credentials: the page, stable, keeps the old ones).
func TestPubOfferTwice(t *testing.T) {
	s := loopbackSFU(t)
	sink := feedbackSink{answer: make(chan string, 4), candidates: make(chan []byte, 64)}
	s.Join("vis_twice", Member{ID: "prt_pub", Session: "one", Sink: sink})

	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	pc, track, _ := vp8Publisher(t, webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(loopbackPeer())))
	desc := &Description{Type: "offer", SDP: gatheredOffer(t, pc)}
	mid := pc.GetTransceivers()[0].Mid()
	for range 2 {
		if err := s.Signal("vis_twice", "prt_pub", Pub, desc, nil, map[string]Source{mid: SourceCamera}); err != nil {
			t.Fatal(err)
		}
	}
	var answers []string
	for len(answers) < 2 {
		select {
		case a := <-sink.answer:
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
	go addCandidates(pc, sink.candidates, done) // ends with the test
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
