package sfu

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// blockingReader stands for pion's SRTP stream under the direct receive path: nothing
// comes from it until it is closed.
type blockingReader struct{ closed chan struct{} }

func (r blockingReader) Read([]byte, interceptor.Attributes) (int, interceptor.Attributes, error) {
	<-r.closed
	return 0, nil, io.EOF
}

// TestDirectReceiveTake: what the socket reader does with a publisher's packets on the
// direct receive path. A packet of a bound stream is decrypted into the stream's queue and
// read by the interceptors above, intact; a replayed one is dropped (as pion's session
// drops it); one of an unbound SSRC is left to pion; forgeries of a stream that has
// authenticated are left to pion and the stream stays, however many come; a stream whose
// packets do not authenticate from the start (here: its rollover counter moved on before
// the path saw it) goes back to pion after rxFailLimit of them; and the reader ends when
// pion's stream does.
func TestDirectReceiveTake(t *testing.T) {
	key, salt := bytes.Repeat([]byte{7}, 16), bytes.Repeat([]byte{9}, 12)
	profile := srtp.ProtectionProfileAeadAes128Gcm
	sender, err := srtp.CreateContext(key, salt, profile)
	if err != nil {
		t.Fatal(err)
	}
	rx := newDirectRx(nil, NewMetrics(nil))
	rx.ctx, err = srtp.CreateContext(key, salt, profile, srtp.SRTPReplayProtection(rxReplayWindow))
	if err != nil {
		t.Fatal(err)
	}
	rx.state.Store(directReady)
	closed := make(chan struct{})
	reader := rx.bind(&interceptor.StreamInfo{SSRC: 1111}, blockingReader{closed})
	encrypt := func(ssrc uint32, seq uint16, payload string) []byte {
		t.Helper()
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: 90, SSRC: ssrc}, Payload: []byte(payload)}
		plain, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out, err := sender.EncryptRTP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	first := encrypt(1111, 100, "first")
	if !rx.take(first) {
		t.Fatal("a packet of a bound stream was left to pion")
	}
	buf := make([]byte, 1500)
	n, _, err := reader.Read(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got rtp.Packet
	if err := got.Unmarshal(buf[:n]); err != nil || string(got.Payload) != "first" || got.SequenceNumber != 100 {
		t.Fatalf("read %d bytes: %v, payload %q seq %d", n, err, got.Payload, got.SequenceNumber)
	}
	if st := rx.fb.streams[1111]; st == nil || st.received != 1 || st.max != 100 {
		t.Fatalf("the packet taken was not recorded for the feedback: %+v", st)
	}
	if !rx.take(first) || len((*rx.streams.Load())[1111].q) != 0 {
		t.Fatal("a replayed packet was not dropped")
	}
	if rx.take(encrypt(2222, 5, "other")) {
		t.Fatal("a packet of an unbound SSRC was taken")
	}
	// Forgeries of the stream (its SSRC, another key) after it authenticated here: each
	// left to pion (which drops it), and the stream stays on the path however many come.
	forger, err := srtp.CreateContext(bytes.Repeat([]byte{1}, 16), salt, profile)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 * rxFailLimit {
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(200 + i), SSRC: 1111}, Payload: []byte("forged")}
		plain, _ := p.Marshal()
		forged, err := forger.EncryptRTP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rx.take(forged) {
			t.Fatalf("forgery %d was taken", i)
		}
	}
	if (*rx.streams.Load())[1111].pion.Load() {
		t.Fatal("forgeries sent an authenticated stream back to pion")
	}
	if !rx.take(encrypt(1111, 101, "second")) {
		t.Fatal("the stream's next packet after the forgeries was not taken")
	}
	if n, _, err := reader.Read(buf, nil); err != nil || got.Unmarshal(buf[:n]) != nil || string(got.Payload) != "second" {
		t.Fatalf("read after the forgeries: %v, payload %q", err, got.Payload)
	}
	// A second stream, bound after its numbers wrapped once (rollover counter 1 for the
	// sender, 0 for the path's context): its packets fail authentication and go to pion.
	rx.bind(&interceptor.StreamInfo{SSRC: 3333}, blockingReader{closed})
	for seq := 65530; seq < 65536; seq++ {
		encrypt(3333, uint16(seq), "before") // the sender's counter moves on
	}
	for i := range rxFailLimit {
		if rx.take(encrypt(3333, uint16(10+i), "after")) {
			t.Fatalf("packet %d of a stream that does not authenticate was taken", i)
		}
	}
	if !(*rx.streams.Load())[3333].pion.Load() {
		t.Fatalf("after %d authentication failures the stream is not back with pion", rxFailLimit)
	}
	if rx.take(encrypt(3333, 20, "later")) {
		t.Fatal("a stream given back to pion was taken again")
	}
	if rx.taken.Load() != 2 {
		t.Fatalf("taken %d, want 2", rx.taken.Load())
	}
	// pion's stream ends (the connection closed): so does the reader.
	close(closed)
	if _, _, err := reader.Read(buf, nil); err != io.EOF {
		t.Fatalf("read after pion's stream ended: %v, want EOF", err)
	}
	rx.wait()
}

// loopbackRxConn is the SFU's socket as its reader sees it, on a loopback port; closed
// when the test ends.
func loopbackRxConn(t *testing.T) (*net.UDPConn, *rxConn) {
	t.Helper()
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	c, err := newRxConn(udp)
	if err != nil {
		t.Fatal(err)
	}
	return udp, c
}

// TestRxConnNeverFailsOnSize: pion's UDP mux stops reading the SFU's socket, and every
// connection with it, at the first read error; a datagram longer than its buffer is
// returned truncated, as a socket read would, and the next one still comes.
func TestRxConnNeverFailsOnSize(t *testing.T) {
	udp, c := loopbackRxConn(t)
	src, err := net.DialUDP("udp4", nil, udp.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	big := bytes.Repeat([]byte{1}, 9000)
	big[0] = 0x80 // looks like RTP, of no routed SSRC
	for _, m := range [][]byte{big, []byte("next")} {
		if _, err := src.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	udp.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 8192) // pion's read size
	n, _, err := c.ReadFromAddrPort(buf)
	if err != nil || n != len(buf) {
		t.Fatalf("a 9000-byte datagram: %d bytes, %v; want %d, no error", n, err, len(buf))
	}
	n, _, err = c.ReadFromAddrPort(buf)
	if err != nil || string(buf[:n]) != "next" {
		t.Fatalf("the next datagram: %q, %v", buf[:n], err)
	}
}

// TestDirectRTCPTake: what the socket reader does with a subscriber's RTCP (decision 55).
// A datagram from the address routed to a sub connection's direct path is decrypted and
// acted on there (here a REMB, kept as the subscriber's estimate), also when the socket
// gives the address IPv4-mapped; a replayed one is dropped; one from another address, or
// RTP from the routed one, is left to the other routes and pion; datagrams that do not
// authenticate go to pion and, after rxFailLimit in a row, so does the route; closing the
// path removes its route.
func TestDirectRTCPTake(t *testing.T) {
	_, c := loopbackRxConn(t)
	key, salt := bytes.Repeat([]byte{7}, 16), bytes.Repeat([]byte{9}, 12)
	profile := srtp.ProtectionProfileAeadAes128Gcm
	subscriber, err := srtp.CreateContext(key, salt, profile)
	if err != nil {
		t.Fatal(err)
	}
	forger, err := srtp.CreateContext(bytes.Repeat([]byte{8}, 16), salt, profile)
	if err != nil {
		t.Fatal(err)
	}
	path := func(remote netip.AddrPort) *directTx {
		t.Helper()
		tx := newDirectTx(nil, c, NewMetrics(nil))
		if tx.rctx, err = srtp.CreateContext(key, salt, profile, srtp.SRTCPReplayProtection(rtcpReplayWindow)); err != nil {
			t.Fatal(err)
		}
		tx.remote.Store(&remote)
		tx.state.Store(directReady) // as ready() does once DTLS is up
		tx.route()
		return tx
	}
	from := netip.MustParseAddrPort("127.0.0.1:40000")
	tx := path(from)
	_, d, _ := testTrack(t, webrtc.RTPCodecTypeVideo)
	tx.bindTrack(5555, d)
	remb := func(ctx *srtp.Context, bitrate float32) []byte {
		t.Helper()
		plain, err := rtcp.Marshal([]rtcp.Packet{
			&rtcp.ReceiverReport{SSRC: 1},
			&rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: 1, Bitrate: bitrate, SSRCs: []uint32{5555}},
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := ctx.EncryptRTCP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	first := remb(subscriber, 300_000)
	if !c.take(first, 0, from) || d.sub.remb.Load() != 300_000 {
		t.Fatalf("a REMB from the routed address: subscriber's estimate %d, want 300000", d.sub.remb.Load())
	}
	mapped := netip.AddrPortFrom(netip.AddrFrom16(from.Addr().As16()), from.Port())
	if !c.take(remb(subscriber, 200_000), 0, mapped) || d.sub.remb.Load() != 200_000 {
		t.Fatalf("a REMB from the routed address, IPv4-mapped: estimate %d, want 200000", d.sub.remb.Load())
	}
	if !c.take(first, 0, from) || d.sub.remb.Load() != 200_000 {
		t.Fatalf("a replayed REMB was acted on: estimate %d", d.sub.remb.Load())
	}
	if c.take(remb(subscriber, 100_000), 0, netip.MustParseAddrPort("127.0.0.1:40001")) {
		t.Fatal("RTCP from an address not routed was taken")
	}
	rtpPkt, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: 5555}, Payload: []byte("x")}).Marshal()
	if c.take(rtpPkt, 0, from) {
		t.Fatal("RTP from the routed address was taken as its RTCP")
	}
	if n := tx.rtcpIn.Load(); n != 2 {
		t.Fatalf("%d datagrams counted as taken, want 2", n)
	}
	for range 10 {
		remb(forger, 1) // past the indexes seen: a forgery, not a replay
	}
	for i := range rxFailLimit {
		if c.take(remb(forger, 1), 0, from) {
			t.Fatalf("forged datagram %d was taken", i)
		}
	}
	if len(*c.rtcp.Load()) != 0 {
		t.Fatalf("after %d authentication failures the route is still there", rxFailLimit)
	}
	if c.take(remb(subscriber, 100_000), 0, from) || d.sub.remb.Load() != 200_000 {
		t.Fatal("a path given back to pion took RTCP again")
	}
	tx.setRemote(&webrtc.ICECandidatePair{Remote: &webrtc.ICECandidate{Address: "127.0.0.1", Port: 40002}})
	if len(*c.rtcp.Load()) != 0 {
		t.Fatal("a path given back to pion was routed again when its pair changed")
	}

	// A second path follows its pair and goes with its connection.
	other := path(netip.MustParseAddrPort("127.0.0.1:41000"))
	other.setRemote(&webrtc.ICECandidatePair{Remote: &webrtc.ICECandidate{Address: "127.0.0.1", Port: 41001}})
	if m := *c.rtcp.Load(); len(m) != 1 || m[netip.MustParseAddrPort("127.0.0.1:41001")] != other {
		t.Fatalf("routes after the pair changed: %v", m)
	}
	other.close()
	if len(*c.rtcp.Load()) != 0 {
		t.Fatal("a closed path is still routed")
	}
}

// TestRxConnWrites: what pion writes through the SFU's socket (STUN, DTLS, packets not on
// the direct paths), by either of the mux's write methods, arrives whole at the address
// it was written to, from several goroutines at once.
func TestRxConnWrites(t *testing.T) {
	_, c := loopbackRxConn(t)
	dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	to := dst.LocalAddr().(*net.UDPAddr)
	const writers, each = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				m := fmt.Appendf(nil, "w%d-%d", w, i)
				var n int
				var err error
				if i%2 == 0 {
					n, err = c.WriteToAddrPort(m, to.AddrPort())
				} else {
					n, err = c.WriteTo(m, to)
				}
				if err != nil || n != len(m) {
					t.Errorf("write %s: %d, %v", m, n, err)
				}
			}
		}()
	}
	wg.Wait()
	got := map[string]bool{}
	buf := make([]byte, 64)
	dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < writers*each {
		n, from, err := dst.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(got), writers*each, err)
		}
		if from.Port() != uint16(c.LocalAddr().(*net.UDPAddr).Port) {
			t.Errorf("datagram from %v, not the SFU's socket", from)
		}
		got[string(buf[:n])] = true
	}
	for w := range writers {
		for i := range each {
			if m := fmt.Sprintf("w%d-%d", w, i); !got[m] {
				t.Errorf("%s did not arrive", m)
			}
		}
	}
}
