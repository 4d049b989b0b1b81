package client

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// ICEServer is the protocol's RTCIceServer.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Description is an RTCSessionDescriptionInit.
type Description struct {
	Type string `json:"type"`
	SDP  string `json:"sdp,omitempty"`
}

// SignalIn is a signal message from the server.
type SignalIn struct {
	From        string            `json:"from"`
	PC          string            `json:"pc"` // from the SFU: pub or sub
	Description *Description      `json:"description"`
	Candidate   json.RawMessage   `json:"candidate"`
	Sources     map[string]string `json:"sources"`
}

// signalOut is a signal message to the server.
type signalOut struct {
	Type        string       `json:"type"`
	To          string       `json:"to"`
	Description *Description `json:"description,omitempty"`
	Candidate   any          `json:"candidate,omitempty"`
}

// nullCandidate marshals as JSON null: the end of candidates.
type nullCandidate struct{}

func (nullCandidate) MarshalJSON() ([]byte, error) { return []byte("null"), nil }

// Peer is one peer connection to another participant, with perfect negotiation
// (docs/protocol.md) and synthetic media.
type Peer struct {
	ID     string
	pc     *webrtc.PeerConnection
	polite bool
	send   func(any) error

	mu          sync.Mutex // serialises negotiation steps
	makingOffer bool
	ignoreOffer bool
	tracksAdded bool
	// pending holds candidates that arrived before the remote description: pion may send
	// a candidate before the description it belongs to.
	pending      []webrtc.ICECandidateInit
	localTracks  []*webrtc.TrackLocalStaticRTP
	wantMedia    bool
	remoteTracks sync.WaitGroup // OnTrack readers; they end when the connection closes
	trackMu      sync.Mutex     // orders a reader's Add before Close's Wait (addIfOpen)

	audioPackets atomic.Int64
	videoPackets atomic.Int64
	firstPacket  chan struct{}
	firstOnce    sync.Once
	closed       chan struct{}
	closeOnce    sync.Once
}

// PeerConfig configures a Peer.
type PeerConfig struct {
	ID         string // the remote participant's id
	ICEServers []ICEServer
	Policy     string // "all" or "relay"
	Polite     bool
	// Send sends a message on the signalling connection.
	Send func(any) error
	// Media: send synthetic Opus and VP8.
	Media bool
}

// NewPeer makes the peer connection. An impolite peer with media adds its tracks at once,
// which starts the first offer.
func NewPeer(cfg PeerConfig) (*Peer, error) {
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.LoggerFactory = quietPion
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	conf := webrtc.Configuration{}
	for _, s := range cfg.ICEServers {
		conf.ICEServers = append(conf.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	if cfg.Policy == "relay" {
		conf.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(conf)
	if err != nil {
		return nil, err
	}
	p := &Peer{ID: cfg.ID, pc: pc, polite: cfg.Polite, send: cfg.Send, wantMedia: cfg.Media, firstPacket: make(chan struct{}), closed: make(chan struct{})}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			p.send(signalOut{Type: "signal", To: p.ID, Candidate: nullCandidate{}})
			return
		}
		p.send(signalOut{Type: "signal", To: p.ID, Candidate: c.ToJSON()})
	})
	pc.OnNegotiationNeeded(func() { p.negotiate() })
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s == webrtc.ICEConnectionStateFailed {
			p.negotiateRestart()
		}
	})
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if addIfOpen(&p.trackMu, &p.remoteTracks, p.closed, 1) {
			go p.readTrack(t) // ends when the connection is closed
		} // else closing: nothing reads this track
	})
	negotiated, id := true, uint16(0)
	if _, err := pc.CreateDataChannel("chat", &webrtc.DataChannelInit{Negotiated: &negotiated, ID: &id}); err != nil {
		pc.Close()
		return nil, err
	}
	if !cfg.Polite {
		if cfg.Media {
			if err := p.addTracks(); err != nil {
				pc.Close()
				return nil, err
			}
		}
		// The impolite side makes the first offer itself: pion can lose the
		// negotiationneeded event of tracks added right after the connection is made.
		p.negotiate()
	}
	return p, nil
}

func (p *Peer) readTrack(t *webrtc.TrackRemote) {
	defer p.remoteTracks.Done()
	counter := &p.videoPackets
	if t.Kind() == webrtc.RTPCodecTypeAudio {
		counter = &p.audioPackets
	}
	for {
		if _, _, err := t.ReadRTP(); err != nil {
			return
		}
		counter.Add(1)
		p.firstOnce.Do(func() { close(p.firstPacket) })
	}
}

// addTracks adds one Opus and one VP8 track (once). Called with p.mu held or before the
// peer is shared.
func (p *Peer) addTracks() error {
	if p.tracksAdded {
		return nil
	}
	p.tracksAdded = true
	for _, c := range []webrtc.RTPCodecCapability{
		{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2},
		{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000},
	} {
		kind := "audio"
		if c.MimeType == webrtc.MimeTypeVP8 {
			kind = "video"
		}
		tr, err := webrtc.NewTrackLocalStaticRTP(c, kind, "bedside-go")
		if err != nil {
			return err
		}
		sender, err := p.pc.AddTrack(tr)
		if err != nil {
			return err
		}
		go drainRTCP(sender) // ends when the sender stops (connection closed)
		p.localTracks = append(p.localTracks, tr)
	}
	return nil
}

// drainRTCP reads RTCP from a sender, which keeps the interceptors running.
func drainRTCP(s *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := s.Read(buf); err != nil {
			return
		}
	}
}

func (p *Peer) negotiate() { p.offer(false) }

func (p *Peer) negotiateRestart() { p.offer(true) }

// offer makes and sends an offer (an ICE restart when restart is set), unless one is
// already under way.
func (p *Peer) offer(restart bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pc.SignalingState() != webrtc.SignalingStateStable {
		return // an offer is already on its way
	}
	if p.polite {
		// The polite side of this client never offers: its tracks ride on the transceivers
		// the other side offered, and renegotiations (ICE restarts too) are the impolite
		// side's. Pion cannot roll a local offer back, so a collision (for instance with a
		// late negotiationneeded of the other side) could not be resolved here.
		return
	}
	p.makingOffer = true
	defer func() { p.makingOffer = false }()
	offer, err := p.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: restart})
	if err != nil {
		return
	}
	if err := p.pc.SetLocalDescription(offer); err != nil {
		return
	}
	ld := p.pc.LocalDescription()
	p.send(signalOut{Type: "signal", To: p.ID, Description: &Description{Type: ld.Type.String(), SDP: ld.SDP}})
}

// HandleSignal applies a signal from the remote participant (perfect negotiation).
func (p *Peer) HandleSignal(s SignalIn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d := s.Description; d != nil {
		offerCollision := d.Type == "offer" && (p.makingOffer || p.pc.SignalingState() != webrtc.SignalingStateStable)
		p.ignoreOffer = !p.polite && offerCollision
		if p.ignoreOffer {
			return nil
		}
		if offerCollision {
			if err := p.pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback}); err != nil {
				return fmt.Errorf("rollback: %w", err)
			}
		}
		if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.NewSDPType(d.Type), SDP: d.SDP}); err != nil {
			return fmt.Errorf("remote description: %w", err)
		}
		for _, c := range p.pending {
			p.pc.AddICECandidate(c)
		}
		p.pending = nil
		if d.Type == "offer" {
			if p.wantMedia {
				// The polite side attaches its tracks to the offered transceivers.
				if err := p.addTracks(); err != nil {
					return err
				}
			}
			answer, err := p.pc.CreateAnswer(nil)
			if err != nil {
				return fmt.Errorf("answer: %w", err)
			}
			if err := p.pc.SetLocalDescription(answer); err != nil {
				return fmt.Errorf("local answer: %w", err)
			}
			ld := p.pc.LocalDescription()
			return p.send(signalOut{Type: "signal", To: p.ID, Description: &Description{Type: ld.Type.String(), SDP: ld.SDP}})
		}
		return nil
	}
	if len(s.Candidate) == 0 || string(s.Candidate) == "null" {
		return nil
	}
	var c webrtc.ICECandidateInit
	if err := json.Unmarshal(s.Candidate, &c); err != nil {
		return err
	}
	if c.Candidate == "" {
		return nil
	}
	if p.pc.RemoteDescription() == nil {
		p.pending = append(p.pending, c)
		return nil
	}
	if err := p.pc.AddICECandidate(c); err != nil && !p.ignoreOffer {
		return fmt.Errorf("candidate: %w", err)
	}
	return nil
}

// SendMedia writes synthetic RTP (Opus every 20 ms, a one-packet VP8 frame every 33 ms, a
// key frame every 3 s) until ctx ends. Payloads end with their send time (see SentAt).
func (p *Peer) SendMedia(ctx context.Context) {
	p.mu.Lock()
	tracks := append([]*webrtc.TrackLocalStaticRTP(nil), p.localTracks...)
	p.mu.Unlock()
	if len(tracks) < 2 {
		return
	}
	audio, video := time.NewTicker(20*time.Millisecond), time.NewTicker(33*time.Millisecond)
	defer audio.Stop()
	defer video.Stop()
	var aseq, vseq, pic uint16
	var ats, vts uint32
	abuf := make([]byte, 80)
	frames := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.closed:
			return
		case <-audio.C:
			aseq++
			ats += 960
			tracks[0].WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: aseq, Timestamp: ats, Marker: true}, Payload: audioPayload(abuf, time.Now())})
		case <-video.C:
			vts += 3000
			pic++
			payloads := vp8Frame(frames%90 == 0, pic&0x7fff, 320, 180, 160, time.Now())
			frames++
			for i, pl := range payloads {
				vseq++
				tracks[1].WriteRTP(&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: vseq, Timestamp: vts, Marker: i == len(payloads)-1}, Payload: pl})
			}
		}
	}
}

// Packets returns how many audio and video RTP packets have arrived from the remote side.
func (p *Peer) Packets() (audio, video int64) { return p.audioPackets.Load(), p.videoPackets.Load() }

// FirstPacket is closed when the first remote RTP packet arrives.
func (p *Peer) FirstPacket() <-chan struct{} { return p.firstPacket }

// ConnectionState is the peer connection's state.
func (p *Peer) ConnectionState() webrtc.PeerConnectionState { return p.pc.ConnectionState() }

// SelectedCandidateType returns the local candidate type of the selected pair ("host",
// "srflx", "relay", "prflx"), or "" before one is selected.
func (p *Peer) SelectedCandidateType() string {
	for _, st := range p.pc.GetStats() {
		if pair, ok := st.(webrtc.ICECandidatePairStats); ok && pair.Nominated && pair.State == webrtc.StatsICECandidatePairStateSucceeded {
			if lc, ok := p.pc.GetStats()[pair.LocalCandidateID].(webrtc.ICECandidateStats); ok {
				return string(lc.CandidateType.String())
			}
		}
	}
	return ""
}

// waitTracksThenSend waits until the peer has its local tracks (the polite side adds them
// when the offer arrives), then sends media until ctx ends or the peer closes.
func (p *Peer) waitTracksThenSend(ctx context.Context) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		p.mu.Lock()
		ready := len(p.localTracks) >= 2
		p.mu.Unlock()
		if ready {
			p.SendMedia(ctx)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-p.closed:
			return
		case <-t.C:
		}
	}
}

// Close closes the connection and waits for its track readers.
func (p *Peer) Close() error {
	closeUnder(&p.trackMu, &p.closeOnce, p.closed)
	err := p.pc.Close()
	p.remoteTracks.Wait()
	return err
}

// addIfOpen counts n readers about to start in wg, unless closed is closed (false). pion
// calls OnTrack from a goroutine of its own, which may run while the connection closes; an
// Add once the count is zero and a Wait has begun is a misuse of WaitGroup (the race
// detector says so). So readers are counted under mu, which closeUnder holds while it
// closes closed, and Close waits only after that.
func addIfOpen(mu *sync.Mutex, wg *sync.WaitGroup, closed <-chan struct{}, n int) bool {
	mu.Lock()
	defer mu.Unlock()
	select {
	case <-closed:
		return false
	default:
	}
	wg.Add(n)
	return true
}

// closeUnder closes closed once, under mu (see addIfOpen).
func closeUnder(mu *sync.Mutex, once *sync.Once, closed chan struct{}) {
	mu.Lock()
	defer mu.Unlock()
	once.Do(func() { close(closed) })
}
