package bench

import (
	"encoding/binary"
	"io"
	"net"
	"sync"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// newAPI returns the pion API one load client's peer connections are made with, as the Go
// client's (internal/client, sfuAPI): the default codecs and interceptors (NACK, RTCP
// reports, TWCC feedback: what a browser does) and the audio level header extension; host
// candidates on the loopback interface only; and sockets that keep the kernel's receive
// time of every RTP packet in stamps.
func newAPI(stamps *rxStamps) (*webrtc.API, error) {
	n, err := newStampNet(stamps)
	if err != nil {
		return nil, err
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	// pion's default interceptors (NACK, RTCP reports, the simulcast header extensions,
	// transport-wide congestion control feedback), with the feedback stamped at the socket
	// (twccfb.go) and without the statistics interceptor (nobody calls GetStats here).
	ir := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(m, ir); err != nil {
		return nil, err
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, err
	}
	if err := webrtc.ConfigureSimulcastExtensionHeaders(m); err != nil {
		return nil, err
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, k)
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI}, k); err != nil {
			return nil, err
		}
	}
	ir.Add(&twccFeedback{stamps: stamps})
	se := webrtc.SettingEngine{}
	se.SetNet(n)
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	// Loopback answers within microseconds; the default waits are for real networks.
	se.SetHostAcceptanceMinWait(0)
	se.LoggerFactory = quietPion{}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// peerConnection makes a peer connection. It has no ICE servers: every path is on
// loopback, and STUN or TURN would only add allocations and binding requests to the server
// being measured.
func peerConnection(api *webrtc.API) (*webrtc.PeerConnection, error) {
	return api.NewPeerConnection(webrtc.Configuration{})
}

var (
	opus = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
	vp8  = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}
)

// p2pTracks makes a publisher's Opus track and one VP8 track (its single layer) and points
// the publisher at them. In p2p mode every connection of a member shares them: one write
// reaches every peer, as a browser's one camera track does.
func p2pTracks(p *publisher, label string) (audio, video *webrtc.TrackLocalStaticRTP, err error) {
	if audio, err = webrtc.NewTrackLocalStaticRTP(opus, "audio", label); err != nil {
		return nil, nil, err
	}
	p.writeAudio = func(b []byte) error { _, err := audio.Write(b); return err }
	if len(p.layers) == 0 {
		return audio, nil, nil
	}
	if video, err = webrtc.NewTrackLocalStaticRTP(vp8, "camera", label); err != nil {
		return nil, nil, err
	}
	p.writeVideo[0] = func(b []byte) error { _, err := video.Write(b); return err }
	return audio, video, nil
}

// readRTCP reads a sender's RTCP (of one simulcast rid, or all when rid is "") until the
// connection closes, which also keeps pion's interceptors running, and calls onKey at a
// picture loss indication or full intra request.
func readRTCP(s *webrtc.RTPSender, rid string, onKey func()) {
	buf := make([]byte, 1500)
	for {
		var n int
		var err error
		if rid != "" {
			n, _, err = s.ReadSimulcast(buf, rid)
		} else {
			n, _, err = s.Read(buf)
		}
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil || onKey == nil {
			continue
		}
		for _, pkt := range pkts {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				onKey()
			}
		}
	}
}

// readTrack reads a remote track until it ends, recording every packet with its read time
// and its socket receive time.
func readTrack(t *webrtc.TrackRemote, rx *trackRx, stamps *rxStamps, first func(int64)) {
	buf := make([]byte, 1500)
	for {
		n, _, err := t.Read(buf)
		at := now()
		if err != nil {
			return // the connection closed
		}
		var sock int64
		if n >= 12 {
			sock, _ = stamps.take(binary.BigEndian.Uint32(buf[8:]), binary.BigEndian.Uint16(buf[2:]))
		}
		rx.packet(buf[:n], at, sock)
		first(at)
	}
}

// firstTime keeps the first of several times.
type firstTime struct {
	once sync.Once
	at   int64
	done chan struct{}
}

func newFirstTime() *firstTime { return &firstTime{done: make(chan struct{})} }

func (f *firstTime) set(at int64) {
	f.once.Do(func() { f.at = at; close(f.done) })
}

// quietPion keeps pion's logs out of the report (warnings about closed connections at the
// end of every run).
type quietPion struct{}

func (quietPion) NewLogger(string) logging.LeveledLogger {
	return logging.NewDefaultLeveledLoggerForScope("", logging.LogLevelDisabled, io.Discard)
}
