package client

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// LayerSpec is one simulcast layer the Go participant publishes in SFU mode.
type LayerSpec struct {
	RID           string // q, h or f (docs/protocol.md)
	Width, Height int    // written into its key frames
	Bitrate       int    // bit/s: the frame size at 30 frames a second
}

// DefaultLayers are the camera's three layers: a 640x360 camera scaled by 4, 2 and 1.
func DefaultLayers() []LayerSpec {
	return []LayerSpec{{"q", 160, 90, 100_000}, {"h", 320, 180, 300_000}, {"f", 640, 360, 900_000}}
}

// TrackInfo is one entry of the tracks message: the track of a sub connection's mid.
type TrackInfo struct {
	Mid         string `json:"mid"`
	Participant string `json:"participant"`
	Source      string `json:"source"`
	Kind        string `json:"kind"`
}

// Packet is one RTP packet received through the SFU (Call.OnPacket).
type Packet struct {
	From    string // the publisher
	Source  string // audio, camera or screen
	Header  *rtp.Header
	Payload []byte
	At      time.Time // when it was read
}

// Received counts what arrived from one publisher through the SFU.
type Received struct {
	audio, video atomic.Int64
	width        atomic.Int32 // of the camera's last key frame: which layer it is
	first        chan struct{}
	firstVideo   chan struct{}
	once, vonce  sync.Once
}

// Packets returns the audio and video packets received.
func (r *Received) Packets() (audio, video int64) { return r.audio.Load(), r.video.Load() }

// Width is the width of the last camera key frame received (the simulcast layer's size).
func (r *Received) Width() int { return int(r.width.Load()) }

// First is closed at the first packet; FirstVideo at the first video packet.
func (r *Received) First() <-chan struct{}      { return r.first }
func (r *Received) FirstVideo() <-chan struct{} { return r.firstVideo }

// SFUConn is a participant's two connections with the server's SFU (docs/protocol.md):
// pub, which it offers with its tracks (the camera in simulcast layers), and sub, which
// the server offers with the others' tracks.
type SFUConn struct {
	Session string // the sfu_session these connections belong to

	send     func(any) error
	ice      []ICEServer
	policy   string
	rembOnly bool // sub offers no transport-wide feedback (Call.REMBOnly)
	onFirst  func(participant string)
	onPacket func(Packet)

	mu         sync.Mutex
	pub, sub   *webrtc.PeerConnection
	pubPending []webrtc.ICECandidateInit
	subPending []webrtc.ICECandidateInit
	received   map[string]*Received
	tracks     atomic.Pointer[map[string]TrackInfo]

	// Publishing.
	layers     []LayerSpec
	audio      *webrtc.TrackLocalStaticRTP
	video      []*webrtc.TrackLocalStaticRTP
	active     []atomic.Bool // dynacast: the layers the server wants
	wantKey    []atomic.Bool // a key frame was asked for
	keyAsks    atomic.Int64  // picture losses and FIRs received on pub
	audioLevel atomic.Uint32 // RFC 6464 level to send (0 loudest .. 127 silent)

	readers sync.WaitGroup
	readMu  sync.Mutex // orders readers' Add before Close's Wait (addIfOpen)
	closed  chan struct{}
	once    sync.Once
}

func newSFUConn(session string, send func(any) error, ice []ICEServer, policy string, rembOnly bool, onFirst func(string), onPacket func(Packet)) *SFUConn {
	s := &SFUConn{Session: session, send: send, ice: ice, policy: policy, rembOnly: rembOnly, onFirst: onFirst, onPacket: onPacket,
		received: map[string]*Received{}, closed: make(chan struct{})}
	s.tracks.Store(&map[string]TrackInfo{})
	s.audioLevel.Store(30)
	return s
}

// api is a pion API like the default one, with the audio level header extension (so the
// server's active speaker detection hears this participant). rembOnly: Opus and VP8 without
// transport-wide congestion control (neither its feedback type nor its header extension),
// with REMB, NACK, PLI and FIR: a receiver the server can only know by its REMB.
func sfuAPI(rembOnly bool) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	ir := &interceptor.Registry{}
	if rembOnly {
		fb := []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBGoogREMB}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}
		for _, c := range []struct {
			cap  webrtc.RTPCodecCapability
			pt   webrtc.PayloadType
			kind webrtc.RTPCodecType
		}{
			{webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, 111, webrtc.RTPCodecTypeAudio},
			{webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: fb}, 96, webrtc.RTPCodecTypeVideo},
		} {
			if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: c.cap, PayloadType: c.pt}, c.kind); err != nil {
				return nil, err
			}
		}
		// With the other branch's logger and retransmission buffer.
		if err := webrtc.ConfigureNackWithOptions(m, ir, []nack.GeneratorOption{nack.WithGeneratorLoggerFactory(quietPion)},
			nack.WithResponderLoggerFactory(quietPion), nack.ResponderSize(64)); err != nil {
			return nil, err
		}
		if err := webrtc.ConfigureRTCPReportsWithOptions(ir, []report.ReceiverOption{report.WithReceiverLoggerFactory(quietPion)},
			report.WithSenderLoggerFactory(quietPion)); err != nil {
			return nil, err
		}
	} else {
		if err := m.RegisterDefaultCodecs(); err != nil {
			return nil, err
		}
		// A small retransmission buffer: the synthetic streams need no more, and a load
		// client with many of them should not hold megabytes each.
		if err := webrtc.RegisterDefaultInterceptorsWithOptions(m, ir, webrtc.WithInterceptorLoggerFactory(quietPion),
			webrtc.WithNackResponderOptions(nack.ResponderSize(64))); err != nil {
			return nil, err
		}
	}
	if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.LoggerFactory = quietPion
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

func (s *SFUConn) newPC(sub bool) (*webrtc.PeerConnection, error) {
	api, err := sfuAPI(sub && s.rembOnly)
	if err != nil {
		return nil, err
	}
	conf := webrtc.Configuration{}
	for _, is := range s.ice {
		conf.ICEServers = append(conf.ICEServers, webrtc.ICEServer{URLs: is.URLs, Username: is.Username, Credential: is.Credential})
	}
	if s.policy == "relay" {
		conf.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	return api.NewPeerConnection(conf)
}

func (s *SFUConn) signal(pc string, body map[string]any) {
	body["type"], body["to"], body["pc"], body["sfu_session"] = "signal", "sfu", pc, s.Session
	s.send(body)
}

func (s *SFUConn) wireCandidates(pc *webrtc.PeerConnection, which string) {
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			s.signal(which, map[string]any{"candidate": nullCandidate{}})
			return
		}
		s.signal(which, map[string]any{"candidate": c.ToJSON()})
	})
	pc.OnICEConnectionStateChange(func(st webrtc.ICEConnectionState) {
		if st == webrtc.ICEConnectionStateFailed && which == "pub" {
			s.offerPub(true) // the client offers on pub: it restarts ICE there
		}
	})
}

// publish makes the pub connection with an Opus track and the camera in layers (one
// layer without a rid: no simulcast), and sends its offer.
func (s *SFUConn) publish(layers []LayerSpec) error {
	pc, err := s.newPC(false)
	if err != nil {
		return err
	}
	s.wireCandidates(pc, "pub")
	audio, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "bedside-go")
	if err != nil {
		pc.Close()
		return err
	}
	at, err := pc.AddTransceiverFromTrack(audio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		pc.Close()
		return err
	}
	var video []*webrtc.TrackLocalStaticRTP
	for _, l := range layers {
		var opts []func(*webrtc.TrackLocalStaticRTP)
		if len(layers) > 1 {
			opts = append(opts, webrtc.WithRTPStreamID(l.RID))
		}
		t, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "camera", "bedside-go", opts...)
		if err != nil {
			pc.Close()
			return err
		}
		video = append(video, t)
	}
	vt, err := pc.AddTransceiverFromTrack(video[0], webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		pc.Close()
		return err
	}
	for _, t := range video[1:] {
		if err := vt.Sender().AddEncoding(t); err != nil {
			pc.Close()
			return err
		}
	}
	s.mu.Lock()
	s.pub, s.audio, s.video, s.layers = pc, audio, video, layers
	s.active = make([]atomic.Bool, len(layers))
	s.wantKey = make([]atomic.Bool, len(layers))
	for i := range s.active {
		s.active[i].Store(true)
		s.wantKey[i].Store(true)
	}
	s.mu.Unlock()
	// Keep reading RTCP from every sender (interceptors); picture losses ask for key frames.
	if !s.addReaders(1 + len(layers)) {
		pc.Close() // closed meanwhile (Close may have run before pub was set)
		return nil
	}
	go func() { defer s.readers.Done(); drainRTCP(at.Sender()) }()
	for i, l := range layers {
		go func() { // ends when the connection closes
			defer s.readers.Done()
			buf := make([]byte, 1500)
			for {
				var n int
				var err error
				if len(layers) > 1 {
					n, _, err = vt.Sender().ReadSimulcast(buf, l.RID)
				} else {
					n, _, err = vt.Sender().Read(buf)
				}
				if err != nil {
					return
				}
				pkts, _ := rtcp.Unmarshal(buf[:n])
				for _, p := range pkts {
					switch p.(type) {
					case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
						s.keyAsks.Add(1)
						s.wantKey[i].Store(true)
					}
				}
			}
		}()
	}
	s.offerPub(false)
	return nil
}

// offerPub sends an offer on pub (an ICE restart when restart is set), with the sources of
// its transceivers.
func (s *SFUConn) offerPub(restart bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pc := s.pub
	if pc == nil || pc.SignalingState() != webrtc.SignalingStateStable {
		return
	}
	offer, err := pc.CreateOffer(&webrtc.OfferOptions{ICERestart: restart})
	if err != nil || pc.SetLocalDescription(offer) != nil {
		return
	}
	sources := map[string]string{}
	for _, t := range pc.GetTransceivers() {
		if t.Kind() == webrtc.RTPCodecTypeAudio {
			sources[t.Mid()] = "audio"
		} else {
			sources[t.Mid()] = "camera"
		}
	}
	ld := pc.LocalDescription()
	s.signal("pub", map[string]any{"description": Description{Type: ld.Type.String(), SDP: ld.SDP}, "sources": sources})
}

// handle applies a signal from the SFU.
func (s *SFUConn) handle(in SignalIn) error {
	if in.PC == "sub" && in.Description != nil && in.Description.Type == "offer" {
		return s.onSubOffer(in.Description.SDP)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pc := s.pub
	pending := &s.pubPending
	if in.PC == "sub" {
		pc, pending = s.sub, &s.subPending
	}
	if d := in.Description; d != nil {
		if in.PC != "pub" || d.Type != "answer" || pc == nil {
			return fmt.Errorf("unexpected %s %s from the SFU", in.PC, d.Type)
		}
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: d.SDP}); err != nil {
			return fmt.Errorf("pub answer: %w", err)
		}
		for _, c := range s.pubPending {
			pc.AddICECandidate(c)
		}
		s.pubPending = nil
		return nil
	}
	if len(in.Candidate) == 0 || string(in.Candidate) == "null" {
		return nil
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal(in.Candidate, &c); err != nil || c.Candidate == "" {
		return nil
	}
	if pc == nil || pc.RemoteDescription() == nil {
		*pending = append(*pending, c)
		return nil
	}
	return pc.AddICECandidate(c)
}

func (s *SFUConn) onSubOffer(sdpText string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sub == nil {
		pc, err := s.newPC(true)
		if err != nil {
			return err
		}
		s.wireCandidates(pc, "sub")
		pc.OnTrack(func(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
			mid := ""
			for _, tr := range pc.GetTransceivers() {
				if tr.Receiver() == r {
					mid = tr.Mid()
				}
			}
			if s.addReaders(1) {
				go func() { defer s.readers.Done(); s.readTrack(mid, t) }() // ends when the connection closes
			}
		})
		s.sub = pc
	}
	pc := s.sub
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdpText}); err != nil {
		return fmt.Errorf("sub offer: %w", err)
	}
	for _, c := range s.subPending {
		pc.AddICECandidate(c)
	}
	s.subPending = nil
	answer, err := pc.CreateAnswer(nil)
	if err == nil {
		err = pc.SetLocalDescription(answer)
	}
	if err != nil {
		return fmt.Errorf("sub answer: %w", err)
	}
	ld := pc.LocalDescription()
	s.signal("sub", map[string]any{"description": Description{Type: ld.Type.String(), SDP: ld.SDP}})
	return nil
}

// subPC returns the sub connection, or an error while there is none.
func (s *SFUConn) subPC() (*webrtc.PeerConnection, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sub == nil {
		return nil, fmt.Errorf("no sub connection")
	}
	return s.sub, nil
}

// KeyframeRequests is how many picture losses and FIRs the server sent on pub, over all
// layers.
func (s *SFUConn) KeyframeRequests() int64 { return s.keyAsks.Load() }

// SendPLI asks the server, on the sub connection, for a key frame of a publisher's camera
// (a picture loss indication), as a receiver's decoder does.
func (s *SFUConn) SendPLI(publisher string) error {
	pc, err := s.subPC()
	if err != nil {
		return err
	}
	tracks := *s.tracks.Load()
	for _, tr := range pc.GetTransceivers() {
		info, ok := tracks[tr.Mid()]
		if !ok || info.Participant != publisher || info.Source != "camera" || tr.Receiver() == nil {
			continue
		}
		if t := tr.Receiver().Track(); t != nil && t.SSRC() != 0 {
			return pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(t.SSRC())}})
		}
	}
	return fmt.Errorf("no camera of %s received", publisher)
}

// SendREMB tells the server, on the sub connection, the bit rate this receiver estimates
// it can receive (a REMB about every video track it receives), as a receiver without
// transport-wide feedback does (Call.REMBOnly).
func (s *SFUConn) SendREMB(bitrate float32) error {
	pc, err := s.subPC()
	if err != nil {
		return err
	}
	var ssrcs []uint32
	for _, tr := range pc.GetTransceivers() {
		if tr.Kind() != webrtc.RTPCodecTypeVideo || tr.Receiver() == nil {
			continue
		}
		for _, t := range tr.Receiver().Tracks() {
			if t != nil && t.SSRC() != 0 {
				ssrcs = append(ssrcs, uint32(t.SSRC()))
			}
		}
	}
	if len(ssrcs) == 0 {
		return fmt.Errorf("no video received yet")
	}
	return pc.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: bitrate, SSRCs: ssrcs}})
}

// setTracks takes a tracks message.
func (s *SFUConn) setTracks(ts []TrackInfo) {
	m := make(map[string]TrackInfo, len(ts))
	for _, t := range ts {
		m[t.Mid] = t
	}
	s.tracks.Store(&m)
}

// setLayers takes a layers message: only the named layers are sent from now on.
func (s *SFUConn) setLayers(source string, active []string) {
	if source != "camera" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range s.layers {
		on := len(s.layers) == 1
		for _, a := range active {
			on = on || a == l.RID
		}
		if on && !s.active[i].Load() {
			s.wantKey[i].Store(true) // a layer coming back starts with a key frame
		}
		s.active[i].Store(on)
	}
}

// ActiveLayers reports which camera layers are being sent (dynacast).
func (s *SFUConn) ActiveLayers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for i, l := range s.layers {
		if s.active[i].Load() {
			out = append(out, l.RID)
		}
	}
	return out
}

func (s *SFUConn) receivedFrom(id string) *Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.received[id]
	if r == nil {
		r = &Received{first: make(chan struct{}), firstVideo: make(chan struct{})}
		s.received[id] = r
	}
	return r
}

// From returns what has arrived from a publisher through the SFU.
func (s *SFUConn) From(participant string) *Received { return s.receivedFrom(participant) }

func (s *SFUConn) readTrack(mid string, t *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		at := time.Now()
		if pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		info, ok := (*s.tracks.Load())[mid]
		if !ok {
			continue
		}
		r := s.receivedFrom(info.Participant)
		if info.Kind == "audio" {
			r.audio.Add(1)
		} else {
			r.video.Add(1)
			if w, _ := vp8KeyframeSize(pkt.Payload); w > 0 && info.Source == "camera" {
				r.width.Store(int32(w))
			}
			r.vonce.Do(func() { close(r.firstVideo) })
		}
		r.once.Do(func() {
			close(r.first)
			if s.onFirst != nil {
				s.onFirst(info.Participant)
			}
		})
		if s.onPacket != nil {
			s.onPacket(Packet{From: info.Participant, Source: info.Source, Header: &pkt.Header, Payload: pkt.Payload, At: at})
		}
	}
}

// sendMedia writes synthetic Opus every 20 ms and a VP8 frame every 33 ms on each active
// layer (a key frame when asked for, and every 3 s), until ctx ends or the connection
// closes.
func (s *SFUConn) sendMedia(ctx context.Context) {
	s.mu.Lock()
	pc, audio, video, layers := s.pub, s.audio, s.video, s.layers
	s.mu.Unlock()
	if pc == nil {
		return
	}
	var audioExt uint8
	var midExt, ridExt uint8
	var audioMid, videoMid string
	resolve := func() {
		for _, t := range pc.GetTransceivers() {
			if t.Sender() == nil {
				continue
			}
			for _, e := range t.Sender().GetParameters().HeaderExtensions {
				switch e.URI {
				case sdp.AudioLevelURI:
					audioExt = uint8(e.ID)
				case sdp.SDESMidURI:
					midExt = uint8(e.ID)
				case sdp.SDESRTPStreamIDURI:
					ridExt = uint8(e.ID)
				}
			}
			if t.Kind() == webrtc.RTPCodecTypeAudio {
				audioMid = t.Mid()
			} else {
				videoMid = t.Mid()
			}
		}
	}
	at, vt := time.NewTicker(20*time.Millisecond), time.NewTicker(33*time.Millisecond)
	defer at.Stop()
	defer vt.Stop()
	abuf := make([]byte, 80)
	var aseq uint16
	var ats uint32
	vseq := make([]uint16, len(layers))
	pics := make([]uint16, len(layers))
	var vts uint32
	frames := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closed:
			return
		case <-at.C:
			if audioMid == "" {
				resolve()
			}
			aseq++
			ats += 960
			p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: aseq, Timestamp: ats, Marker: true}, Payload: audioPayload(abuf, time.Now())}
			if audioExt != 0 {
				p.Header.SetExtension(audioExt, []byte{byte(s.audioLevel.Load() & 0x7f)})
			}
			if midExt != 0 && audioMid != "" {
				p.Header.SetExtension(midExt, []byte(audioMid))
			}
			audio.WriteRTP(p)
		case <-vt.C:
			if videoMid == "" {
				resolve()
			}
			vts += 3000
			frames++
			for i, l := range layers {
				if !s.active[i].Load() {
					continue
				}
				key := s.wantKey[i].Swap(false) || frames%90 == 0
				pics[i]++
				payloads := vp8Frame(key, pics[i]&0x7fff, l.Width, l.Height, l.Bitrate/8/30, time.Now())
				for j, pl := range payloads {
					vseq[i]++
					p := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: vseq[i], Timestamp: vts, Marker: j == len(payloads)-1}, Payload: pl}
					if midExt != 0 && videoMid != "" {
						p.Header.SetExtension(midExt, []byte(videoMid))
					}
					if ridExt != 0 && len(layers) > 1 {
						p.Header.SetExtension(ridExt, []byte(l.RID))
					}
					video[i].WriteRTP(p)
				}
			}
		}
	}
}

// SetAudioLevel sets the RFC 6464 level sent with the audio (0 loud .. 127 silent; the
// default 30 counts as speaking).
func (s *SFUConn) SetAudioLevel(level int) { s.audioLevel.Store(uint32(min(max(level, 0), 127))) }

// PubState and SubState are the connections' states ("" before they exist).
func (s *SFUConn) PubState() string { return s.state(true) }
func (s *SFUConn) SubState() string { return s.state(false) }

// PubOffer is the pub connection's local description (its last offer), "" before it has
// one: for a test that sends it again as a stale client would.
func (s *SFUConn) PubOffer() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pub == nil || s.pub.LocalDescription() == nil {
		return ""
	}
	return s.pub.LocalDescription().SDP
}

func (s *SFUConn) state(pub bool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	pc := s.sub
	if pub {
		pc = s.pub
	}
	if pc == nil {
		return ""
	}
	return pc.ConnectionState().String()
}

// addReaders counts n readers about to start, unless the connection is closed (false).
func (s *SFUConn) addReaders(n int) bool {
	return addIfOpen(&s.readMu, &s.readers, s.closed, n)
}

// Close closes both connections and waits for their readers.
func (s *SFUConn) Close() {
	closeUnder(&s.readMu, &s.once, s.closed)
	s.mu.Lock()
	pub, sub := s.pub, s.sub
	s.mu.Unlock()
	for _, pc := range []*webrtc.PeerConnection{pub, sub} {
		if pc != nil {
			pc.Close()
		}
	}
	s.readers.Wait()
}

// Transceivers reports how many transceivers the sub connection has (tests: m-lines are
// reused, not added for ever).
func (s *SFUConn) Transceivers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sub == nil {
		return 0
	}
	return len(s.sub.GetTransceivers())
}
