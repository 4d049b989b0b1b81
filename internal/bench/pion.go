package bench

import (
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// newAPI returns the pion API one load client's peer connections are made with: the
// default codecs and interceptors (NACK, RTCP reports, TWCC: what a browser does), host
// candidates on the loopback interface only, and sockets that keep the kernel's receive
// time of every RTP packet in stamps.
func newAPI(stamps *rxStamps) (*webrtc.API, error) {
	n, err := newStampNet(stamps)
	if err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetNet(n)
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	// Loopback answers within microseconds; the default waits are for real networks.
	se.SetHostAcceptanceMinWait(0)
	se.SetSTUNGatherTimeout(time.Second)
	return webrtc.NewAPI(webrtc.WithSettingEngine(se)), nil
}

// peerConnection makes a peer connection with the server's ICE servers (from welcome).
func peerConnection(api *webrtc.API) (*webrtc.PeerConnection, error) {
	// No ICE servers: every path is on loopback, and STUN or TURN would only add
	// allocations and binding requests to the server being measured.
	return api.NewPeerConnection(webrtc.Configuration{})
}

// localTracks makes a publisher's Opus and VP8 tracks and points the publisher at them.
func localTracks(p *publisher, label string) (audio, video *webrtc.TrackLocalStaticRTP, err error) {
	audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", label)
	if err != nil {
		return nil, nil, err
	}
	p.writeAudio = func(b []byte) error { _, err := audio.Write(b); return err }
	if p.video == nil {
		return audio, nil, nil
	}
	video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", label)
	if err != nil {
		return nil, nil, err
	}
	p.writeVideo = func(b []byte) error { _, err := video.Write(b); return err }
	return audio, video, nil
}

// readRTCP reads a sender's RTCP until the connection closes (which also keeps pion's
// interceptors running) and asks the publisher for a key frame on PLI or FIR.
func readRTCP(s *webrtc.RTPSender, p *publisher) {
	buf := make([]byte, 1500)
	for {
		n, _, err := s.Read(buf)
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		for _, pkt := range pkts {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				p.keyframe.Store(true)
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
