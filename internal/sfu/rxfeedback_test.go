package sfu

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// feedbackPacket is an RTP packet of ssrc with a transport-wide sequence number in a
// one-byte header extension of id 3 (and the audio level's, id 1, before it).
func feedbackPacket(t testing.TB, ssrc uint32, seq, twSeq uint16, ts uint32) []byte {
	t.Helper()
	h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}
	if err := h.SetExtension(1, []byte{0x7f}); err != nil {
		t.Fatal(err)
	}
	tw := make([]byte, 2)
	binary.BigEndian.PutUint16(tw, twSeq)
	if err := h.SetExtension(3, tw); err != nil {
		t.Fatal(err)
	}
	b, err := (&rtp.Packet{Header: h, Payload: []byte("payload")}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func videoStream(ssrc uint32) *interceptor.StreamInfo {
	return &interceptor.StreamInfo{
		SSRC: ssrc, ClockRate: 90000,
		RTCPFeedback:        []interceptor.RTCPFeedback{{Type: "transport-cc"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}},
		RTPHeaderExtensions: []interceptor.RTPHeaderExtension{{URI: audioLevelURI, ID: 1}, {URI: sdp.TransportCCURI, ID: 3}},
	}
}

// nacked is what the feedback's NACKs for ssrc ask for, in order.
func nacked(pkts []rtcp.Packet, ssrc uint32) []uint16 {
	var out []uint16
	for _, p := range pkts {
		if n, ok := p.(*rtcp.TransportLayerNack); ok && n.MediaSSRC == ssrc {
			for _, pair := range n.Nacks {
				out = append(out, pair.PacketList()...)
			}
		}
	}
	return out
}

func receiverReport(pkts []rtcp.Packet, ssrc uint32) (rtcp.ReceptionReport, bool) {
	for _, p := range pkts {
		if rr, ok := p.(*rtcp.ReceiverReport); ok {
			for _, r := range rr.Reports {
				if r.SSRC == ssrc {
					return r, true
				}
			}
		}
	}
	return rtcp.ReceptionReport{}, false
}

// TestReceiveFeedback: what a publisher is told of a video stream whose packets arrive
// with gaps, late, twice and across the sequence numbers' wrap-around: the missing ones
// asked for at each tick until they arrive or nackTries asks, the packets that arrived
// reported in transport-wide feedback, and every second a receiver report with the loss
// since the last one, the total lost, the extended highest sequence number, the jitter,
// and the last sender report with the delay since it. An audio stream (no NACK
// negotiated) is never asked for again.
func TestReceiveFeedback(t *testing.T) {
	m := NewMetrics(nil)
	f := newRxFeedback(m)
	audio := videoStream(20)
	audio.ClockRate, audio.RTCPFeedback = 48000, []interceptor.RTCPFeedback{{Type: "transport-cc"}}
	bound := map[uint32]*rxStats{
		10: f.bind(videoStream(10)),
		20: f.bind(audio),
		30: f.bind(videoStream(30)), // bound, nothing arrives: in no report
	}

	now := int64(time.Second)
	tw := uint16(65000)         // transport-wide numbers wrap too
	ts := uint32(1<<32 - 5*900) // and timestamps, in the middle of the first packets
	send := func(ssrc uint32, seq uint16) {
		f.arrived(bound[ssrc], feedbackPacket(t, ssrc, seq, tw, ts), now)
		tw++
	}
	// 65530..65535, 0..9 arrive but 65533, 2, 3 and 7; audio loses 501.
	for seq := uint16(65530); seq != 10; seq++ {
		if seq != 65533 && seq != 2 && seq != 3 && seq != 7 {
			send(10, seq)
		}
		now += int64(10 * time.Millisecond)
		ts += 900 // 10 ms at 90 kHz: no jitter
	}
	for seq := uint16(500); seq < 503; seq++ {
		if seq != 501 {
			send(20, seq)
		}
	}
	send(10, 9) // a duplicate: no change

	pkts := f.build(now)
	if got := nacked(pkts, 10); !slices.Equal(got, []uint16{65533, 2, 3, 7}) {
		t.Fatalf("first tick asked for %v, want 65533 2 3 7", got)
	}
	if got := nacked(pkts, 20); got != nil {
		t.Fatalf("audio asked for %v: no NACK was negotiated for it", got)
	}
	var fb *rtcp.TransportLayerCC
	for _, p := range pkts {
		if c, ok := p.(*rtcp.TransportLayerCC); ok {
			fb = c
		}
	}
	// 12 video packets, 2 audio, and the duplicate (a transport packet of its own).
	if fb == nil || fb.BaseSequenceNumber != 65000 || fb.PacketStatusCount != 15 || len(fb.RecvDeltas) != 15 {
		t.Fatalf("transport-wide feedback %+v: want packets 65000..65014, all received", fb)
	}
	if _, ok := receiverReport(pkts, 10); ok {
		t.Fatal("a receiver report at the first tick: they go every second")
	}

	// 2 and 65533 come again (sent again on the NACK); 3 never does.
	send(10, 2)
	send(10, 65533)
	for i := 2; i < nackTries; i++ {
		now += int64(feedbackEvery)
		pkts = f.build(now)
		want := []uint16{3, 7}
		if i == 3 {
			send(10, 7) // arrives late, after being asked for twice
		}
		if i > 3 {
			want = []uint16{3}
		}
		if got := nacked(pkts, 10); !slices.Equal(got, want) {
			t.Fatalf("tick %d asked for %v, want %v", i, got, want)
		}
	}
	sr := &rtcp.SenderReport{SSRC: 10, NTPTime: 0x1122334455667788}
	f.senderReport(sr, now)
	now += int64(feedbackEvery)
	pkts = f.build(now) // tick 10: the report, and 3 asked for the last time
	if got := nacked(pkts, 10); !slices.Equal(got, []uint16{3}) {
		t.Fatalf("tick %d asked for %v, want 3", nackTries, got)
	}
	if got := nacked(f.build(now), 10); got != nil {
		t.Fatalf("asked for %d packets (%v...) after %d tries", len(got), got[:min(len(got), 8)], nackTries)
	}
	r, ok := receiverReport(pkts, 10)
	if !ok {
		t.Fatalf("no receiver report for the video stream at the tenth tick: %v", pkts)
	}
	// Expected 65530..9 (16), received 15 (3 lost for good).
	if r.LastSequenceNumber != 1<<16|9 || r.TotalLost != 1 || r.FractionLost != 256/16 {
		t.Fatalf("report %+v: want highest 1<<16|9, 1 lost, fraction 16/256", r)
	}
	// Asked: 4 at the first tick, 3 and 7 at ticks 2 and 3, then 3 alone until tick 10.
	if n, want := counterValue(m.nacksSent), float64(4+2+2+(nackTries-3)); n != want {
		t.Fatalf("publisher_nacked_packets_total %v, want the %v asks made", n, want)
	}
	if r.LastSenderReport != 0x33445566 || r.Delay != uint32(feedbackEvery.Seconds()*65536) {
		t.Fatalf("report %+v: want LSR 0x33445566, DLSR %v", r, feedbackEvery)
	}
	if r.Jitter > 1 {
		t.Fatalf("jitter %d for packets at exactly their pace", r.Jitter)
	}
	if a, ok := receiverReport(pkts, 20); !ok || a.TotalLost != 1 || a.LastSequenceNumber != 502 {
		t.Fatalf("audio report %+v (%v): want 1 lost, highest 502", a, ok)
	}
	if _, ok := receiverReport(pkts, 30); ok {
		t.Fatal("a report for a stream nothing arrived from")
	}

	// Nothing lost since: the next report says so; late packets arrive with jitter.
	for seq := uint16(10); seq < 30; seq++ {
		now += int64(10*time.Millisecond) + int64(seq%3)*int64(4*time.Millisecond)
		ts += 900
		send(10, seq)
	}
	for range reportEveryFeedback - 1 {
		pkts = f.build(now)
	}
	if r, _ = receiverReport(pkts, 10); r.FractionLost != 0 || r.TotalLost != 1 || r.Jitter == 0 {
		t.Fatalf("report %+v: want no new loss, 1 lost in all, some jitter", r)
	}

	// A gap longer than the log is not asked for; a stream unbound is forgotten.
	send(10, 30+nackLog+5)
	if got := nacked(f.build(now), 10); got != nil {
		t.Fatalf("asked for %d packets of a gap longer than the log", len(got))
	}
	f.unbind(10)
	send(10, 31+nackLog+5)
	if _, ok := f.streams[10]; ok {
		t.Fatal("an unbound stream is still recorded")
	}
}

// TestPublisherNackBudget: the SFU asks a publisher to send again at most a share of what
// arrived from it (decision 75). A burst of loss on a congested link is asked for only as
// far as the budget goes, newest first, the rest given up and counted; with the video
// stopped nothing more is asked; once packets arrive again the budget refills and a new
// loss is asked for.
func TestPublisherNackBudget(t *testing.T) {
	m := NewMetrics(nil)
	f := newRxFeedback(m)
	st := f.bind(videoStream(10))
	now := int64(time.Second)
	tw := uint16(0)
	payload := make([]byte, 1000)
	send := func(seq uint16) {
		h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, SSRC: 10}
		ext := binary.BigEndian.AppendUint16(nil, tw)
		if err := h.SetExtension(3, ext); err != nil {
			t.Fatal(err)
		}
		b, err := (&rtp.Packet{Header: h, Payload: payload}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		f.arrived(st, b, now)
		tw++
	}
	// 0..99 sent, 20..79 lost: 40 packets of about 1 KB arrived, a budget of about 10.
	for seq := uint16(0); seq < 100; seq++ {
		if seq < 20 || seq >= 80 {
			send(seq)
		}
	}
	got := nacked(f.build(now), 10)
	if want := int(40 * nackShare); len(got) != want {
		t.Fatalf("asked for %d packets (%v) of 60 lost, want %d: a quarter of what arrived", len(got), got, want)
	}
	if got[0] != uint16(80-len(got)) || got[len(got)-1] != 79 || !slices.IsSorted(got) {
		t.Fatalf("asked for %v: want the newest missing, in order", got)
	}
	if n := counterValue(m.nacksSkipped); n != float64(60-len(got)) {
		t.Fatalf("publisher_nack_skipped_packets_total %v, want %d", n, 60-len(got))
	}
	// Nothing arrives (the publisher's video stopped): nothing is asked again, and what
	// could not be is given up, not asked for later.
	for range nackTries {
		now += int64(feedbackEvery)
		if got := nacked(f.build(now), 10); got != nil {
			t.Fatalf("asked again for %v with nothing arriving", got)
		}
	}
	if st.consecutive != st.max {
		t.Fatalf("the gap is kept (consecutive %d, highest %d): given up packets would be asked for later", st.consecutive, st.max)
	}
	// Packets arrive again, one lost among them: asked for, the budget refilled.
	for seq := uint16(100); seq < 130; seq++ {
		if seq != 120 {
			send(seq)
		}
		if seq%10 == 9 {
			now += int64(feedbackEvery)
			if got := nacked(f.build(now), 10); seq >= 120 && !slices.Equal(got, []uint16{120}) {
				t.Fatalf("asked for %v after a single loss with packets arriving, want 120", got)
			}
		}
	}
}

// TestFeedbackBatches: feedback goes in as few writes as fit in rtcpBudget bytes.
func TestFeedbackBatches(t *testing.T) {
	var pkts []rtcp.Packet
	for i := range 100 {
		pkts = append(pkts, &rtcp.TransportLayerNack{MediaSSRC: uint32(i), Nacks: []rtcp.NackPair{{PacketID: 1}, {PacketID: 100}}})
	}
	var writes [][]rtcp.Packet
	if err := sendFeedback(pkts, func(p []rtcp.Packet) error { writes = append(writes, p); return nil }); err != nil {
		t.Fatal(err)
	}
	sent := 0
	for _, w := range writes {
		b, err := rtcp.Marshal(w)
		if err != nil || len(b) > rtcpBudget {
			t.Fatalf("a write of %d bytes (%v)", len(b), err)
		}
		sent += len(w)
	}
	if sent != 100 || len(writes) != 2 { // 20 bytes each: 60 fit in 1200
		t.Fatalf("%d packets in %d writes, want 100 in 2", sent, len(writes))
	}
}

// TestRTPExtension: the in-place reading of a header extension agrees with pion's parser
// in both forms, with padding between elements.
func TestRTPExtension(t *testing.T) {
	for _, form := range []uint16{0xbede, 0x1000} {
		h := rtp.Header{Version: 2, SSRC: 1, CSRC: []uint32{7, 8}, Extension: true, ExtensionProfile: form}
		for id, v := range map[uint8][]byte{1: {9}, 3: {1, 2}, 5: {3, 4, 5, 6}} {
			if err := h.SetExtension(id, v); err != nil {
				t.Fatal(err)
			}
		}
		b, err := (&rtp.Packet{Header: h, Payload: []byte{1}}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		for id := uint8(1); id < 7; id++ {
			if got, want := rtpExtension(b, id), h.GetExtension(id); !bytes.Equal(got, want) {
				t.Fatalf("profile %#x id %d: %v, pion %v", form, id, got, want)
			}
		}
	}
}

func FuzzRTPExtension(f *testing.F) {
	f.Add(feedbackPacket(f, 1, 2, 3, 4), uint8(3))
	f.Fuzz(func(t *testing.T, b []byte, id uint8) {
		got := rtpExtension(b, id)
		var h rtp.Header
		if _, err := h.Unmarshal(b); err != nil {
			return
		}
		if want := h.GetExtension(id); id != 0 && !bytes.Equal(got, want) {
			t.Fatalf("id %d: %v, pion %v", id, got, want)
		}
	})
}

// gatheredOffer makes pc's offer and returns it once its candidates are gathered.
func gatheredOffer(t *testing.T, pc *webrtc.PeerConnection) string {
	t.Helper()
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	return pc.LocalDescription().SDP
}

// vp8Publisher is a pion publisher made by api with one VP8 camera track, closed when the
// test ends: the connection, the track and its sender.
func vp8Publisher(t *testing.T, api *webrtc.API) (*webrtc.PeerConnection, *webrtc.TrackLocalStaticRTP, *webrtc.RTPSender) {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "cam")
	if err != nil {
		t.Fatal(err)
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		t.Fatal(err)
	}
	return pc, track, sender
}

// addCandidates gives pc the SFU's candidates as they come, until stop is closed.
func addCandidates(pc *webrtc.PeerConnection, candidates <-chan []byte, stop <-chan struct{}) {
	for {
		select {
		case c := <-candidates:
			var init webrtc.ICECandidateInit
			if json.Unmarshal(c, &init) == nil {
				pc.AddICECandidate(init)
			}
		case <-stop:
			return
		}
	}
}

// feedbackSink is a publisher's signalling in TestPublisherFeedback and TestPubOfferTwice:
// the pub answers and the SFU's candidates.
type feedbackSink struct {
	discardSink
	answer     chan string
	candidates chan []byte
}

func (s feedbackSink) Description(pc PC, _, sdp string) {
	if pc == Pub {
		s.answer <- sdp
	}
}

func (s feedbackSink) Candidate(pc PC, c []byte) {
	if pc == Pub && c != nil {
		s.candidates <- c
	}
}

// TestPublisherFeedback: a publisher (pion, stamping transport-wide sequence numbers and
// sending sender reports, as browsers do) publishes a camera to a participant of a real
// SFU on loopback, with one packet never sent. What it reads back from the SFU is what a
// browser's bandwidth estimator, retransmission and round-trip time rest on: transport-
// wide feedback reporting its packets as received, a NACK for the missing packet (and
// none for the others), and receiver reports with the loss and, once it has sent a
// sender report, the report's time (LSR) and the delay since it.
func TestPublisherFeedback(t *testing.T) {
	s := loopbackSFU(t)
	sink := feedbackSink{answer: make(chan string, 1), candidates: make(chan []byte, 16)}
	s.Join("vis_fb", Member{ID: "prt_pub", Session: "one", Sink: sink})

	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
			RTCPFeedback: []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBTransportCC}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}},
		PayloadType: 96,
	}, webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.ConfigureTWCCHeaderExtensionSender(me, ir); err != nil {
		t.Fatal(err)
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		t.Fatal(err)
	}
	pc, track, sender := vp8Publisher(t, webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(loopbackPeer())))
	var (
		mu          sync.Mutex
		nacks       = map[uint16]int{}
		twccCount   int
		lossReport  *rtcp.ReceptionReport
		delayReport *rtcp.ReceptionReport
	)
	readerDone := make(chan struct{})
	go func() { // ends when the connection closes
		defer close(readerDone)
		for {
			pkts, _, err := sender.ReadRTCP()
			if err != nil {
				return
			}
			mu.Lock()
			for _, p := range pkts {
				switch p := p.(type) {
				case *rtcp.TransportLayerNack:
					for _, pair := range p.Nacks {
						for _, seq := range pair.PacketList() {
							nacks[seq]++
						}
					}
				case *rtcp.TransportLayerCC:
					twccCount += int(p.PacketStatusCount)
				case *rtcp.ReceiverReport:
					for _, r := range p.Reports {
						if r.TotalLost > 0 && lossReport == nil {
							lossReport = &r
						}
						// A report made within 15 us of the sender report's arrival
						// says a delay of 0, rightly: wait for one that says more.
						if r.LastSenderReport != 0 && (delayReport == nil || delayReport.Delay == 0) {
							delayReport = &r
						}
					}
				}
			}
			mu.Unlock()
		}
	}()
	defer func() { pc.Close(); <-readerDone }()

	offer := gatheredOffer(t, pc)
	mid := pc.GetTransceivers()[0].Mid()
	if err := s.Signal("vis_fb", "prt_pub", Pub, &Description{Type: "offer", SDP: offer}, nil, map[string]Source{mid: SourceCamera}); err != nil {
		t.Fatal(err)
	}
	select {
	case answer := <-sink.answer:
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer from the SFU")
	}
	go addCandidates(pc, sink.candidates, readerDone) // ends when the test has sent its packets

	connected := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
		}
	})
	if pc.ConnectionState() == webrtc.PeerConnectionStateConnected {
		once.Do(func() { close(connected) })
	}
	select {
	case <-connected: // what is written before goes nowhere
	case <-time.After(5 * time.Second):
		t.Fatal("the publisher did not connect to the SFU")
	}

	// 30 frames a second of one packet each, sequence number 1005 never sent.
	const lost = 1005
	deadline := time.Now().Add(10 * time.Second)
	seq, sent := uint16(1000), 0
	for ; time.Now().Before(deadline); seq++ {
		if seq != lost {
			p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, Marker: true},
				Payload: vp8Payload(true, seq == 1000, seq, 0, 320, 180, make([]byte, 200))}
			if err := track.WriteRTP(p); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		time.Sleep(33 * time.Millisecond)
		mu.Lock()
		done := delayReport != nil && lossReport != nil && twccCount >= 60 && nacks[lost] > 0
		mu.Unlock()
		if done && seq > lost+60 {
			break
		}
	}
	// Every packet sent reached the layer's reader (the first, which pion read itself to
	// learn its payload type, included).
	var read int64
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if st := s.Stats("vis_fb"); len(st.Publications) == 1 && len(st.Publications[0].Layers) == 1 {
			if read = st.Publications[0].Layers[0].Packets; read == int64(sent) {
				break
			}
		}
	}
	if read != int64(sent) {
		t.Fatalf("the layer's reader read %d packets of the %d sent", read, sent)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("sent %d packets up to %d: NACKs %v, transport-wide feedback for %d packets, loss report %+v, delay report %+v",
		sent, seq, nacks, twccCount, lossReport, delayReport)
	if nacks[lost] == 0 || len(nacks) != 1 || nacks[lost] > nackTries {
		t.Fatalf("NACKs %v: want %d asked for, at most %d times, and nothing else", nacks, lost, nackTries)
	}
	if n := counterValue(s.m.nacksSent); n < float64(nacks[lost]) {
		t.Fatalf("publisher_nacked_packets_total %v, the publisher read %d", n, nacks[lost])
	}
	if twccCount < 60 {
		t.Fatalf("transport-wide feedback for %d packets of %d sent", twccCount, sent)
	}
	if lossReport == nil || lossReport.TotalLost != 1 || lossReport.LastSequenceNumber < lost {
		t.Fatalf("receiver report %+v: want 1 lost, highest past %d", lossReport, lost)
	}
	if delayReport == nil || delayReport.Delay == 0 || delayReport.Delay > 2*65536 {
		t.Fatalf("receiver report %+v: want the last sender report's time and a delay since it under 2 s", delayReport)
	}
}
