package sfu

import (
	"net"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// TestNACKAnswered: a subscriber's NACK for a video packet the SFU sent is answered with
// that packet again, from the sub connection's responder (nackBuffer packets per track),
// and a NACK for a packet older than the buffer is not.
func TestNACKAnswered(t *testing.T) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{UDP: udp, IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	api, err := s.api(true, func(cc.BandwidthEstimator) {})
	if err != nil {
		t.Fatal(err)
	}
	sfuPC, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer sfuPC.Close()
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "pub")
	if err != nil {
		t.Fatal(err)
	}
	sender, err := sfuPC.AddTrack(track)
	if err != nil {
		t.Fatal(err)
	}
	go func() { // the interceptors run only while RTCP is read
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()

	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	// The originals arrived: without this the subscriber's SRTP would drop their
	// retransmissions (same SSRC and sequence number) as replays.
	se.DisableSRTPReplayProtection(true)
	subPC, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer subPC.Close()
	seqs := make(chan uint16, 1024)
	ssrc := make(chan uint32, 1)
	subPC.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		ssrc <- uint32(tr.SSRC())
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			seqs <- p.SequenceNumber
		}
	})

	offer, err := sfuPC.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(sfuPC)
	if err := sfuPC.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := subPC.SetRemoteDescription(*sfuPC.LocalDescription()); err != nil {
		t.Fatal(err)
	}
	answer, err := subPC.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered = webrtc.GatheringCompletePromise(subPC)
	if err := subPC.SetLocalDescription(answer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	if err := sfuPC.SetRemoteDescription(*subPC.LocalDescription()); err != nil {
		t.Fatal(err)
	}

	// Send until the subscriber receives, then 2*nackBuffer more, numbered from 1.
	payload := make([]byte, 200)
	payload[0] = 0x10 // VP8 descriptor: start of partition
	var seq uint16
	send := func() {
		seq++
		if err := track.WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000}, Payload: payload}); err != nil {
			t.Fatal(err)
		}
	}
	var media uint32
	deadline := time.After(10 * time.Second)
	for media == 0 {
		send()
		select {
		case media = <-ssrc:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatal("no media reached the subscriber in 10 s")
		}
	}
	for range 2 * nackBuffer {
		send()
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	for len(seqs) > 0 {
		<-seqs
	}
	nack := func(n uint16) {
		if err := subPC.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: media, Nacks: []rtcp.NackPair{{PacketID: n}}}}); err != nil {
			t.Fatal(err)
		}
	}
	recent, old := seq-10, seq-nackBuffer-10
	nack(old)
	nack(recent)
	got := map[uint16]bool{}
	wait := time.After(2 * time.Second)
loop:
	for {
		select {
		case s := <-seqs:
			got[s] = true
		case <-wait:
			break loop
		}
	}
	if !got[recent] {
		t.Errorf("packet %d (10 packets old) was not sent again after a NACK; got %v", recent, got)
	}
	if got[old] {
		t.Errorf("packet %d (older than the %d-packet buffer) was sent again", old, nackBuffer)
	}
}
