package sfu

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestNACKAnswered: a subscriber's NACK for a video packet the SFU sent is answered with
// that packet again, through the sub connection's real chain (interceptors, SRTP), with
// the same sequence number, timestamp and rewritten payload (picture id); a NACK for a
// packet older than the nackBuffer packets kept, or for another track, is not. When the
// down track closes it lets go of the publisher's packets it kept. The originals are sent
// through a layer reader's batch, the retransmission at once. Both paths: the direct
// ones (the subscriber answers "active", as browsers do, and the SFU is the DTLS server:
// media out and the NACKs in) and pion's (the subscriber answers "passive").
func TestNACKAnswered(t *testing.T) {
	t.Run("direct", func(t *testing.T) { testNACKAnswered(t, webrtc.DTLSRoleClient) })
	t.Run("pion", func(t *testing.T) { testNACKAnswered(t, webrtc.DTLSRoleServer) })
}

// loopbackSFU is an SFU on a UDP socket of its own on loopback, closed when the test ends.
func loopbackSFU(t *testing.T) *SFU {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{UDP: udp, IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// loopbackPeer is the settings of a pion peer of loopbackSFU: UDP over IPv4, loopback
// candidates.
func loopbackPeer() webrtc.SettingEngine {
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	return se
}

func testNACKAnswered(t *testing.T, subscriberRole webrtc.DTLSRole) {
	s := loopbackSFU(t)
	tx := newDirectTx(s.sock, s.rxc, NewMetrics(nil))
	api, err := s.api(true, tx, nil)
	if err != nil {
		t.Fatal(err)
	}
	sfuPC, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	tx.attach(sfuPC)
	defer sfuPC.Close()
	m := NewMetrics(nil)
	up := &upTrack{publisher: "prt_pub", source: SourceCamera, kind: webrtc.RTPCodecTypeVideo, m: m,
		codec: webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}}}
	up.downs.Store(&[]*downTrack{})
	sub := testSubscriber()
	sub.direct.Store(tx) // the down track writes to it itself when it takes the stream
	d := newDownTrack(up, sub)
	sender, err := sfuPC.AddTrack(d)
	if err != nil {
		t.Fatal(err)
	}
	d.sender = sender
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); d.writeLoop() }() // ends at d.close
	go func() { defer wg.Done(); d.readRTCP() }()  // ends when the connection closes
	defer wg.Wait()
	defer sfuPC.Close()

	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI}, webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	se := loopbackPeer()
	// The originals arrived: without this the subscriber's SRTP would drop their
	// retransmissions (same SSRC and sequence number) as replays.
	se.DisableSRTPReplayProtection(true)
	if err := se.SetAnsweringDTLSRole(subscriberRole); err != nil {
		t.Fatal(err)
	}
	subPC, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer subPC.Close()
	type rx struct {
		seq     uint16
		ts      uint32
		twcc    int // the transport-wide sequence number; -1: none
		payload []byte
	}
	got := make(chan rx, 1024)
	ssrc := make(chan uint32, 1)
	reports := make(chan rtcp.SenderReport, 16)
	subPC.OnTrack(func(tr *webrtc.TrackRemote, rcv *webrtc.RTPReceiver) {
		ssrc <- uint32(tr.SSRC())
		go func() { // ends when the connection closes
			for {
				pkts, _, err := rcv.ReadRTCP()
				if err != nil {
					return
				}
				for _, p := range pkts {
					if sr, ok := p.(*rtcp.SenderReport); ok {
						select {
						case reports <- *sr:
						default:
						}
					}
				}
			}
		}()
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			twcc := -1
			for _, id := range p.GetExtensionIDs() {
				if e := p.GetExtension(id); len(e) == 2 {
					twcc = int(binary.BigEndian.Uint16(e))
				}
			}
			got <- rx{p.SequenceNumber, p.Timestamp, twcc, p.Payload}
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
	tx.cryptex.set(subPC.LocalDescription().SDP) // as onSubAnswer does
	if err := sfuPC.SetRemoteDescription(*subPC.LocalDescription()); err != nil {
		t.Fatal(err)
	}

	// A publisher's layer: one-packet key frames with picture ids, so that every packet is
	// forwarded and its payload rewritten. Send until the subscriber receives, then
	// 2*nackBuffer more.
	g := &frameGen{seq: 65000, ts: 1000, pic: 300, packets: 1, keyEvery: 1, fill: zeros}
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	var sentPkts []*packet
	fan := newFanout(m) // as a layer reader does: the originals go out in its batch (decision 56)
	send := func() {
		p := g.frame()[0]
		p.ref() // the test's, to see the down track give its own back
		sentPkts = append(sentPkts, p)
		d.deliver(p, retry, fan)
		fan.flush()
		p.release() // the reader's
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
	first := map[uint16]rx{}
	for len(got) > 0 {
		r := <-got
		first[r.seq] = r
	}
	var last uint16
	for s := range first {
		if int16(s-last) > 0 || last == 0 {
			last = s
		}
	}
	recent, old := last-10, last-nackBuffer-10
	if _, ok := first[recent]; !ok {
		t.Fatalf("packet %d was not received in the first place", recent)
	}
	nack := func(ssrc uint32, n uint16) {
		if err := subPC.WriteRTCP([]rtcp.Packet{&rtcp.TransportLayerNack{MediaSSRC: ssrc, Nacks: []rtcp.NackPair{{PacketID: n}}}}); err != nil {
			t.Fatal(err)
		}
	}
	nack(media+1, recent) // another track's: not ours to answer
	nack(media, old)
	nack(media, recent)
	again := map[uint16]rx{}
	wait := time.After(2 * time.Second)
loop:
	for {
		select {
		case r := <-got:
			again[r.seq] = r
		case <-wait:
			break loop
		}
	}
	r, ok := again[recent]
	switch {
	case !ok:
		t.Errorf("packet %d (10 packets old) was not sent again after a NACK; got %v", recent, again)
	case r.ts != first[recent].ts || r.twcc != first[recent].twcc || !bytes.Equal(r.payload, first[recent].payload):
		// The same packet to the byte: with AES-GCM a changed header under the same
		// sequence number would reuse the nonce.
		t.Errorf("packet %d sent again as ts %d transport-wide seq %d payload % x, first as ts %d seq %d payload % x",
			recent, r.ts, r.twcc, r.payload[:8], first[recent].ts, first[recent].twcc, first[recent].payload[:8])
	}
	if first[recent].twcc < 0 || first[recent-1].twcc < 0 || uint16(first[recent].twcc-first[recent-1].twcc) != 1 {
		t.Errorf("transport-wide sequence numbers of consecutive packets: %d, %d", first[recent-1].twcc, first[recent].twcc)
	}
	if _, ok := again[old]; ok {
		t.Errorf("packet %d (older than the %d-packet buffer) was sent again", old, nackBuffer)
	}
	if len(again) != 1 {
		t.Errorf("%d packets sent again, want 1 (the NACK for another track answered?)", len(again))
	}
	if n := counterValue(m.retransmitted); n != 1 {
		t.Errorf("retransmitted counter %v, want 1", n)
	}
	if n := counterValue(m.nackMissed); n != 1 {
		t.Errorf("nack missed counter %v, want 1", n)
	}

	// A sender report (the participant sends them every 1.2 s): the stream's SSRC, every
	// packet written counted (the retransmission too; the first writes may have come
	// before the subscriber could decrypt), the RTP time of the last packet
	// moved on by the time since, against the wall clock's NTP time.
	lastTS := first[last].ts
	if err := writeSenderReports(sfuPC, tx, []*downTrack{d}, time.Now(), monotime()); err != nil {
		t.Fatal(err)
	}
	select {
	case sr := <-reports:
		ahead := int32(sr.RTPTime - lastTS)
		ntpSec := int64(sr.NTPTime>>32) - 2_208_988_800
		if sr.SSRC != media || sr.PacketCount < uint32(len(first)+1) || sr.PacketCount > uint32(len(sentPkts)+1) || ahead < 90_000 || ahead > 5*90_000 ||
			ntpSec < time.Now().Unix()-2 || ntpSec > time.Now().Unix()+1 {
			t.Errorf("sender report %+v: want ssrc %d, at least the %d packets received and a retransmission, RTP time 1-5 s (90 kHz) after the last packet's %d (is %d ahead), NTP time now", sr, media, len(first)+1, lastTS, ahead)
		}
	case <-time.After(2 * time.Second):
		t.Error("no sender report reached the subscriber")
	}

	// The report went by the direct path too where there is one (directTx.writeRTCP), by
	// pion's where not.
	if byPion := tx.reportsByPion.Load(); byPion != (subscriberRole == webrtc.DTLSRoleServer) {
		t.Errorf("sender report through pion's SRTCP: %v, with the subscriber the DTLS %v", byPion, subscriberRole)
	}
	// As the DTLS server the SFU sent everything by the direct path, and the subscriber
	// decrypted it; as the client, nothing.
	switch n := tx.sent.Load(); {
	case subscriberRole == webrtc.DTLSRoleClient && n < int64(len(first)):
		t.Errorf("%d packets sent by the direct path, want at least the %d received", n, len(first))
	case subscriberRole == webrtc.DTLSRoleServer && n != 0:
		t.Errorf("%d packets sent by the direct path where the SFU was the DTLS client", n)
	}
	// The NACKs (and the receiver reports of pion's default interceptors) came back by the
	// direct path too (decision 55), read by the socket reader; as the client, by pion's.
	switch in, pion := tx.rtcpIn.Load(), tx.rtcpPion.Load(); {
	case subscriberRole == webrtc.DTLSRoleClient && (in < 3 || pion != 0):
		t.Errorf("the subscriber's RTCP: %d datagrams taken by the direct path, %d read from pion's; want the 3 NACKs and all else direct", in, pion)
	case subscriberRole == webrtc.DTLSRoleServer && (in != 0 || pion < 2):
		t.Errorf("the subscriber's RTCP: %d datagrams taken by the direct path, %d read from pion's; want the 2 NACKs of this track and all else from pion", in, pion)
	}

	d.close()
	for _, p := range sentPkts {
		if n := p.refs.Load(); n != 1 {
			t.Fatalf("a packet has %d references after the down track closed, want only the test's", n)
		}
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// TestResendRules: the retransmission rules of design decision 69. A packet asked for
// again is resent, but not again within resendGap of that, nor more than maxResends
// times; nothing is resent while the video is paused for the subscriber; and a
// subscriber's resends stop at its budget (a share of its estimate), the rest refused.
// Each refusal is counted by its reason.
func TestResendRules(t *testing.T) {
	_, d, w := testTrack(t, webrtc.RTPCodecTypeVideo)
	defer d.forgetSent()
	writeFrames(d, &frameGen{seq: 500, ts: 1000, pic: 7, packets: 5, fill: zeros}, 6)
	if len(w.out) != 30 {
		t.Fatalf("%d packets forwarded, want 30", len(w.out))
	}
	first := w.out[0].hdr.SequenceNumber
	refused := func(reason int) float64 { return counterValue(d.m.nackRefused[reason]) }
	nack := func(seqs ...uint16) (resent []uint16) {
		n := len(w.out)
		for _, s := range seqs {
			d.resend([]rtcp.NackPair{{PacketID: s}})
		}
		for _, s := range w.out[n:] {
			resent = append(resent, s.hdr.SequenceNumber)
		}
		return resent
	}
	// As often as the rules let: once at once, then once per resendGap, maxResends in all.
	if got := nack(first, first); len(got) != 1 || got[0] != first {
		t.Fatalf("a packet asked for twice at once: resent %v, want it once", got)
	}
	if refused(refusedRepeat) != 1 {
		t.Errorf("the second asking at once: %v refusals for a repeat, want 1", refused(refusedRepeat))
	}
	e := &d.w.sentVideo[first%nackBuffer]
	for i := 2; i <= maxResends+1; i++ {
		e.at -= int64(resendGap) // as if resendGap had passed
		got := nack(first)
		if want := i <= maxResends; (len(got) == 1) != want {
			t.Errorf("asked a %d-th time, resendGap after the last: resent %v (want it resent: %v)", i, got, want)
		}
	}
	if refused(refusedRepeat) != 2 {
		t.Errorf("%v refusals for a repeat, want 2", refused(refusedRepeat))
	}
	// The video paused for the subscriber: nothing resent.
	d.target.Store(-1)
	if got := nack(first + 1); len(got) != 0 {
		t.Errorf("the video paused: resent %v", got)
	}
	d.target.Store(0)
	if refused(refusedPaused) != 1 {
		t.Errorf("%v refusals for a paused video, want 1", refused(refusedPaused))
	}
	// A subscriber whose estimate is 40 kbit/s may resend 10 kbit/s, at most one
	// maximum-size packet's worth at once: of 28 packets asked for at once, as many as fit.
	d.sub.lastEstimate.Store(40_000)
	d.sub.resends = resendBudget{}
	var all []uint16
	for s := first + 2; s != first+30; s++ {
		all = append(all, s)
	}
	fit, spent := 0, 0 // how many of them fit the budget, in the order asked
	for _, s := range all {
		size := len(w.out[s-first].payload) + rtpOverhead
		if spent+size > maxPacket+rtpOverhead {
			break
		}
		fit, spent = fit+1, spent+size
	}
	got := nack(all...)
	if len(got) != fit && len(got) != fit+1 { // +1: what a slow run's refill adds
		t.Errorf("a budget of %d bytes: %d packets resent, want the %d that fit", maxPacket+rtpOverhead, len(got), fit)
	}
	if n := refused(refusedBudget); int(n) != len(all)-len(got) {
		t.Errorf("%v refusals for the budget, want %d", n, len(all)-len(got))
	}
}
