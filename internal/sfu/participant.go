package sfu

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bedside/bedside/internal/bwe"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

const (
	// allocateEvery is how often a subscriber's layers are chosen again from its bandwidth
	// estimate (also at once when it reports a new video size).
	allocateEvery = 300 * time.Millisecond
	// goneAfter: a participant whose signalling is lost keeps its media this long.
	goneAfter = time.Minute
	// maxPublished is how many tracks a participant may publish (microphone, camera, screen
	// and one spare for a transceiver being replaced).
	maxPublished = 4
	// nackBuffer is how many packets each video down track keeps for retransmission (a
	// power of two): about a second of the top layer (0.8 s at the browser's 1.5 Mbit/s,
	// 1.4 s at the bench's 0.9 Mbit/s), longer than a retransmission is of use to a
	// receiver's jitter buffer. They are references to the publisher's packets, shared by
	// the subscribers of a layer (downTrack.sentVideo).
	nackBuffer = 128
	// The retransmission rules (design decision 69): a kept packet is resent at most
	// maxResends times, and not again within resendGap of its last resending (a second
	// asking that soon is a duplicate, the first answer still on its way); a subscriber's
	// retransmissions take at most 1/resendShare of its estimate, with resendBurst of
	// that rate saved up.
	maxResends  = 3
	resendGap   = 50 * time.Millisecond
	resendShare = 4
	resendBurst = 500 * time.Millisecond
)

// Why a NACKed packet the SFU keeps was not resent (Metrics.nackRefused).
const (
	refusedPaused = iota // the video is paused for the subscriber
	refusedRepeat        // resent within resendGap, or maxResends times already
	refusedBudget        // past the subscriber's retransmission budget
)

// resendBudget is a subscriber's token bucket for retransmissions, in bytes on the wire,
// shared by its video down tracks (their RTCP readers answer NACKs concurrently).
type resendBudget struct {
	mu     sync.Mutex
	tokens float64
	last   int64 // monotime of the last take (0: none yet)
}

// take spends size bytes at now, the bucket filling at rate bit/s up to resendBurst of
// it (at least one packet's worth), and says whether there were enough.
func (b *resendBudget) take(now int64, size, rate int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	capacity := max(float64(rate)/8*resendBurst.Seconds(), maxPacket+rtpOverhead)
	if b.last == 0 {
		b.tokens = capacity
	} else {
		b.tokens = min(capacity, b.tokens+float64(rate)/8*float64(now-b.last)/float64(time.Second))
	}
	b.last = now
	if b.tokens < float64(size) {
		return false
	}
	b.tokens -= float64(size)
	return true
}

// defaultInitialBitrate is Config.InitialBitrate's default.
const defaultInitialBitrate = 1_500_000

// resendRate is the subscriber's retransmission budget, bit/s: a share of the estimate
// its layers were last chosen by (the default starting one before the first choice).
func (p *participant) resendRate() int {
	est := int(p.lastEstimate.Load())
	if est <= 0 {
		est = defaultInitialBitrate
	}
	return est / resendShare
}

// Events of a participant's goroutine.
type (
	evSignal struct {
		pc        PC
		desc      *Description
		candidate []byte
		sources   map[string]Source
	}
	evSubscribe   struct{ up *upTrack }
	evUnsubscribe struct{ up *upTrack }
	evVideoSize   struct {
		publisher string
		source    Source
		w, h      int
	}
	evTrack struct {
		track *webrtc.TrackRemote
		recv  *webrtc.RTPReceiver
	}
	evLayerEnded struct{ up *upTrack }
	evPCState    struct {
		pc    PC
		state webrtc.PeerConnectionState
	}
	// evConnected: the participant's signalling is back (sink); taken is closed once the
	// participant's goroutine has it (room.join waits for that).
	evConnected struct {
		sink  Sink
		taken chan struct{}
	}
	evDisconnected struct{}
	evSpeaker      struct{ id string }
)

// mailbox is a participant's unbounded event queue: the room and pion's callbacks put into
// it without ever blocking (these are control events, a handful a second); the
// participant's goroutine takes everything at once.
type mailbox struct {
	mu     sync.Mutex
	items  []any
	notify chan struct{}
}

func (m *mailbox) put(ev any) {
	m.mu.Lock()
	m.items = append(m.items, ev)
	m.mu.Unlock()
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

func (m *mailbox) take() []any {
	m.mu.Lock()
	defer m.mu.Unlock()
	items := m.items
	m.items = nil
	return items
}

type sinkBox struct{ Sink }

type discardSink struct{}

func (discardSink) Description(PC, string, string)   {}
func (discardSink) Candidate(PC, []byte)             {}
func (discardSink) Tracks([]Track)                   {}
func (discardSink) Layers(Source, []string)          {}
func (discardSink) Speakers(string, []string)        {}
func (discardSink) VideoPaused(string, Source, bool) {}

// participant is one person in the SFU: its pub and sub connections, its publications and
// its subscriptions. Its goroutine (run) owns all of that; the rest of the SFU talks to it
// through its mailbox.
type participant struct {
	r          *room
	s          *SFU
	id         string
	session    string
	sfuSession string
	observer   bool
	log        *slog.Logger
	mail       mailbox
	sinkPtr    atomic.Pointer[sinkBox]
	cancel     context.CancelFunc
	ctx        context.Context
	done       chan struct{}

	remb         atomic.Int64  // the subscriber's REMB estimate (from its down tracks' RTCP)
	twccSeq      atomic.Uint32 // the next transport-wide sequence number on its sub connection
	lastEstimate atomic.Int64  // the estimate allocate last used (Stats, resendRate)
	resends      resendBudget  // what its down tracks may resend (decision 69)
	// est is the send-side estimator of its sub connection: the down tracks record what
	// they send and the transport-wide feedback their RTCP readers get (decision 53).
	est         *bwe.Estimator
	subscribing atomic.Bool // it has a sub connection (the subscribers metric)
	// For Stats, what run owns: the last states of the pub and sub connections (0: none
	// yet).
	pubState, subState atomic.Int32

	// Owned by run.
	pub, sub    *webrtc.PeerConnection
	pubPending  []webrtc.ICECandidateInit
	pubOffer    offerID // the pub offer last answered
	subPending  []webrtc.ICECandidateInit
	sources     map[string]Source // the pub transceivers' sources, by mid
	ups         map[Source]*upTrack
	subs        map[*upTrack]*downTrack
	subAwaiting bool                     // an offer is out, its answer not in
	subDirty    bool                     // the sub connection's tracks changed since the last offer
	subRestart  bool                     // the next offer restarts ICE
	twcc        bool                     // the subscriber gives transport-wide feedback: use the estimator
	direct      atomic.Pointer[directTx] // the sub connection's direct send path (Stats)
	directRx    atomic.Pointer[directRx] // the pub connection's direct receive path (Stats)
	rxs         []*directRx              // every pub connection's, to wait for at shutdown
	speaker     string
	connected   bool
	congestion  congestion // remembers loss for the layer choice
	probe       prober     // sends padding to learn whether a higher layer fits (probe.go)
	goneTimer   *time.Timer
	readers     sync.WaitGroup // the readers of this participant's publications
	rtcpReaders sync.WaitGroup // pub receivers' RTCP readers
}

func newParticipant(r *room, m Member) *participant {
	ctx, cancel := context.WithCancel(context.Background())
	p := &participant{
		r: r, s: r.s, id: m.ID, session: m.Session, sfuSession: newSession(), observer: m.Observer,
		log: r.log.With("participant", m.ID), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		sources: map[string]Source{}, ups: map[Source]*upTrack{}, subs: map[*upTrack]*downTrack{},
		connected: true,
		est:       bwe.New(bwe.Config{Initial: r.s.cfg.InitialBitrate, Min: 30_000, Max: 20_000_000}),
	}
	p.mail.notify = make(chan struct{}, 1)
	p.sinkPtr.Store(&sinkBox{m.Sink})
	return p
}

func (p *participant) start() {
	p.s.wg.Add(1)
	go func() { defer p.s.wg.Done(); p.run() }() // ends with stop, a lost signalling connection, or a closed room
}

// stop ends the participant's goroutine (asynchronously: pion's Close can take a while).
func (p *participant) stop() { p.cancel() }

func (p *participant) stopping() bool { return p.ctx.Err() != nil }

func (p *participant) sink() Sink {
	if b := p.sinkPtr.Load(); b != nil && b.Sink != nil {
		return b.Sink
	}
	return discardSink{}
}

// online reports whether the participant's signalling connection is there (it has a sink).
func (p *participant) online() bool {
	b := p.sinkPtr.Load()
	return b != nil && b.Sink != nil
}

func (p *participant) run() {
	defer close(p.done)
	defer p.shutdown()
	phase := tickSlot(allocateEvery)
	alloc := time.NewTimer(untilSlot(allocateEvery, phase))
	defer alloc.Stop()
	defer func() {
		if p.probe.timer != nil {
			p.probe.timer.Stop()
		}
	}()
	// The feedback to the publisher: its timer runs once there is a pub connection (a
	// participant who only receives, most of them in a large visit, never wakes for it).
	fbPhase := tickSlot(feedbackEvery)
	var fb *time.Timer
	defer func() {
		if fb != nil {
			fb.Stop()
		}
	}()
	ticks := 0
	for {
		var gone <-chan time.Time
		if p.goneTimer != nil {
			gone = p.goneTimer.C
		}
		if fb == nil && p.pub != nil {
			fb = time.NewTimer(untilSlot(feedbackEvery, fbPhase))
		}
		var fbC <-chan time.Time
		if fb != nil {
			fbC = fb.C
		}
		select {
		case <-p.ctx.Done():
			return
		case <-gone:
			p.log.Info("sfu: signalling did not come back: closing the participant's connections")
			return
		case <-p.mail.notify:
			for _, ev := range p.mail.take() {
				if p.ctx.Err() != nil {
					return
				}
				p.handle(ev)
			}
			if p.ctx.Err() != nil {
				return
			}
			if p.subDirty || p.subRestart {
				p.negotiateSub()
			}
		case <-fbC:
			fb.Reset(untilSlot(feedbackEvery, fbPhase))
			p.sendFeedback()
		case <-p.probe.c():
			p.probeStep(monotime())
		case <-alloc.C:
			alloc.Reset(untilSlot(allocateEvery, phase))
			p.allocate()
			if ticks++; ticks%reportEvery == 0 {
				p.sendReports()
			}
		}
	}
}

func (p *participant) handle(ev any) {
	switch e := ev.(type) {
	case evSignal:
		p.onSignal(e)
	case evSubscribe:
		p.subscribe(e.up)
	case evUnsubscribe:
		p.unsubscribe(e.up)
	case evVideoSize:
		for up, d := range p.subs {
			if up.publisher == e.publisher && up.source == e.source && up.kind == webrtc.RTPCodecTypeVideo {
				d.renderW, d.renderH = e.w, e.h
				if e.w <= 0 || e.h <= 0 {
					d.renderW, d.renderH = -1, -1
				}
			}
		}
		p.allocate()
	case evTrack:
		p.onTrack(e.track, e.recv)
	case evLayerEnded:
		if up := p.ups[e.up.source]; up == e.up && up.live.Load() == 0 {
			delete(p.ups, e.up.source)
			p.r.unpublish(up)
		}
	case evPCState:
		p.onPCState(e.pc, e.state)
	case evConnected:
		p.sinkPtr.Store(&sinkBox{e.sink})
		p.connected = true
		if p.goneTimer != nil {
			p.goneTimer.Stop()
			p.goneTimer = nil
		}
		if p.subAwaiting && p.sub != nil && p.sub.LocalDescription() != nil {
			// The offer may have been lost with the old connection: send it again.
			p.sink().Tracks(p.trackList())
			p.sink().Description(Sub, "offer", p.sub.LocalDescription().SDP)
		}
		if e.taken != nil {
			close(e.taken)
		}
	case evDisconnected:
		p.sinkPtr.Store(nil)
		p.connected = false
		if p.goneTimer == nil {
			p.goneTimer = time.NewTimer(goneAfter)
		}
	case evSpeaker:
		p.speaker = e.id
	}
}

// --- pub: the client offers its tracks --------------------------------------------------

func (p *participant) onSignal(e evSignal) {
	pc := p.pub
	if e.pc == Sub {
		pc = p.sub
	}
	if e.desc != nil {
		if e.pc == Pub {
			p.onPubOffer(e.desc.SDP, e.sources)
		} else {
			p.onSubAnswer(e.desc.SDP)
		}
		return
	}
	c, ok := parseCandidate(e.candidate)
	if !ok {
		return
	}
	if pc == nil || pc.RemoteDescription() == nil {
		if e.pc == Pub {
			p.pubPending = append(p.pubPending, c)
		} else {
			p.subPending = append(p.subPending, c)
		}
		return
	}
	if err := pc.AddICECandidate(c); err != nil {
		p.log.Debug("sfu: remote candidate refused", "pc", string(e.pc), "err", err)
	}
}

// parseCandidate reads an RTCIceCandidateInit; an empty or null one (end of candidates)
// is not applied.
func parseCandidate(b []byte) (webrtc.ICECandidateInit, bool) {
	var c webrtc.ICECandidateInit
	if len(b) == 0 || string(b) == "null" || json.Unmarshal(b, &c) != nil || c.Candidate == "" {
		return c, false
	}
	return c, true
}

func (p *participant) onPubOffer(sdp string, sources map[string]Source) {
	if p.observer {
		return
	}
	id := offerIdentity(sdp)
	if p.pub != nil && id.valid() && id == p.pubOffer && p.pub.LocalDescription() != nil {
		// The same offer again: the page sent it once more after its signalling came back
		// (call.js, _resendOffers), not knowing whether the old socket delivered it. It gets
		// the answer it got, not a new one: pion may answer a repeat with new ICE
		// credentials, which the page, already stable, would never apply (decision 58).
		p.log.Debug("sfu: a pub offer answered already came again: the same answer sent")
		p.sink().Description(Pub, "answer", p.pub.LocalDescription().SDP)
		return
	}
	if p.pub == nil {
		pc, err := p.newPub()
		if err != nil {
			p.log.Warn("sfu: cannot make the pub connection", "err", err)
			return
		}
		p.pub = pc
	}
	for mid, src := range sources {
		if src.Valid() && len(p.sources) < 16 {
			p.sources[mid] = src
		}
	}
	if err := p.pub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
		p.log.Info("sfu: pub offer refused", "err", err)
		return
	}
	receiving := 0
	for _, t := range p.pub.GetTransceivers() {
		if d := t.Direction(); d == webrtc.RTPTransceiverDirectionRecvonly || d == webrtc.RTPTransceiverDirectionSendrecv {
			receiving++
		}
	}
	if receiving > maxPublished {
		p.log.Info("sfu: pub offer with too many tracks", "tracks", receiving)
		p.stop()
		return
	}
	answer, err := p.pub.CreateAnswer(nil)
	if err == nil {
		if rx := p.directRx.Load(); rx != nil {
			rx.cryptex.set(answer.SDP)
		}
		err = p.pub.SetLocalDescription(answer)
	}
	if err != nil {
		p.log.Info("sfu: cannot answer the pub offer", "err", err)
		return
	}
	p.pubOffer = id
	p.sink().Description(Pub, "answer", p.pub.LocalDescription().SDP)
	for _, c := range p.pubPending {
		p.pub.AddICECandidate(c)
	}
	p.pubPending = nil
	// A track the client stopped sending is unpublished.
	for src, up := range p.ups {
		if !p.stillReceiving(up) {
			delete(p.ups, src)
			p.r.unpublish(up)
		}
	}
}

// offerID tells one offer from another: its origin's session id and version (which an
// offerer changes with each new offer, RFC 3264 5, and keeps when its description only
// gains candidates) and its ICE credentials (new at an ICE restart).
type offerID struct {
	session, version uint64
	ufrag, pwd       string
}

func (o offerID) valid() bool { return o.ufrag != "" }

// offerIdentity reads an offer's offerID; the zero offerID when it cannot.
func offerIdentity(offer string) offerID {
	var d sdp.SessionDescription
	if d.UnmarshalString(offer) != nil {
		return offerID{}
	}
	o := offerID{session: d.Origin.SessionID, version: d.Origin.SessionVersion}
	o.ufrag, _ = d.Attribute("ice-ufrag")
	o.pwd, _ = d.Attribute("ice-pwd")
	for _, m := range d.MediaDescriptions {
		if o.ufrag != "" {
			break
		}
		o.ufrag, _ = m.Attribute("ice-ufrag")
		o.pwd, _ = m.Attribute("ice-pwd")
	}
	return o
}

func (p *participant) stillReceiving(up *upTrack) bool {
	for _, t := range p.pub.GetTransceivers() {
		if t.Receiver() == up.receiver {
			d := t.Direction()
			return d == webrtc.RTPTransceiverDirectionRecvonly || d == webrtc.RTPTransceiverDirectionSendrecv
		}
	}
	return false
}

func (p *participant) newPub() (*webrtc.PeerConnection, error) {
	// Where the SFU's socket is not a *net.UDPConn (tests) the path has no socket: every
	// packet comes through pion into its queues.
	rx := newDirectRx(p.s.rxc, p.s.m)
	api, err := p.s.api(false, nil, rx)
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	rx.attach(pc)
	p.rxs = append(p.rxs, rx)
	p.directRx.Store(rx)
	p.wirePC(pc, Pub)
	pc.OnTrack(func(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) { p.mail.put(evTrack{t, r}) })
	return pc, nil
}

// wirePC sends a connection's candidates to the client and its state to the goroutine.
func (p *participant) wirePC(pc *webrtc.PeerConnection, which PC) {
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			p.sink().Candidate(which, nil)
			return
		}
		b, err := json.Marshal(c.ToJSON())
		if err == nil {
			p.sink().Candidate(which, b)
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) { p.mail.put(evPCState{which, s}) })
}

// onTrack takes a new incoming track (a simulcast layer has one each): the first makes
// the publication, the others add its layers. Each gets its reader.
func (p *participant) onTrack(t *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	l := layerIndex(t.RID())
	if l < 0 {
		p.log.Info("sfu: unknown simulcast layer", "rid", t.RID())
		return
	}
	if !strings.EqualFold(t.Codec().MimeType, webrtc.MimeTypeVP8) && !strings.EqualFold(t.Codec().MimeType, webrtc.MimeTypeOpus) {
		p.log.Info("sfu: unsupported codec", "codec", t.Codec().MimeType)
		return
	}
	src := SourceAudio
	if t.Kind() == webrtc.RTPCodecTypeVideo {
		src = SourceCamera
		mid := ""
		for _, tr := range p.pub.GetTransceivers() {
			if tr.Receiver() == recv {
				mid = tr.Mid()
			}
		}
		if s, ok := p.sources[mid]; ok && s != SourceAudio {
			src = s
		} else if up := p.ups[SourceCamera]; up != nil && up.receiver != recv {
			src = SourceScreen // a second video without a declared source
		}
	}
	up := p.ups[src]
	fresh := up == nil || up.receiver != recv
	if fresh {
		if up != nil {
			p.r.unpublish(up) // replaced by a new transceiver
		}
		up = newUpTrack(p, src, t, recv)
		p.ups[src] = up
	}
	ly := &up.layers[l]
	ly.track.Store(t)
	ly.ssrc.Store(uint32(t.SSRC()))
	up.live.Add(1)
	p.readers.Add(1)
	go func() { // ends when the pub connection closes or stops receiving this track
		defer p.readers.Done()
		up.read(l, t)
		if up.live.Add(-1) == 0 {
			p.mail.put(evLayerEnded{up})
		}
	}()
	rx := p.directRx.Load() // the receive side of the connection the track came on
	p.rtcpReaders.Add(1)
	go func() { defer p.rtcpReaders.Done(); readRTCP(recv, t.RID(), rx) }() // ends with the receiver
	if fresh {
		p.log.Info("sfu: publishing", "source", string(src), "simulcast", up.simulcast)
		p.r.publish(up)
	}
}

// readRTCP reads a layer's RTCP: the publisher's sender reports go to the receive side
// (the delay since the last one is in our receiver reports).
func readRTCP(r *webrtc.RTPReceiver, rid string, rx *directRx) {
	buf := make([]byte, 1500)
	for {
		var n int
		var err error
		if rid == "" {
			n, _, err = r.Read(buf)
		} else {
			n, _, err = r.ReadSimulcast(buf, rid)
		}
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		for _, pk := range pkts {
			if sr, ok := pk.(*rtcp.SenderReport); ok {
				rx.fb.senderReport(sr, monotime())
			}
		}
	}
}

// sendFeedback sends the pub connection's feedback of this tick (rxfeedback.go).
func (p *participant) sendFeedback() {
	rx := p.directRx.Load()
	if rx == nil || p.pub == nil {
		return
	}
	pc := p.pub
	if err := sendFeedback(rx.fb.build(monotime()), pc.WriteRTCP); err != nil {
		p.log.Debug("sfu: feedback to the publisher", "err", err)
	}
}

// --- sub: the SFU offers the others' tracks ----------------------------------------------

func (p *participant) ensureSub() bool {
	if p.sub != nil {
		return true
	}
	tx := newDirectTx(p.s.sock, p.s.rxc, p.s.m)
	api, err := p.s.api(true, tx, nil)
	if err == nil {
		p.sub, err = api.NewPeerConnection(webrtc.Configuration{})
	}
	if err != nil {
		p.log.Warn("sfu: cannot make the sub connection", "err", err)
		return false
	}
	tx.attach(p.sub)
	p.direct.Store(tx)
	p.wirePC(p.sub, Sub)
	p.subscribing.Store(true)
	p.s.m.visitSubscribers(p.r.id, p.r.subscriberCount())
	return true
}

func (p *participant) subscribe(up *upTrack) {
	if p.subs[up] != nil || up.owner.stopping() || !p.ensureSub() {
		return
	}
	d := newDownTrack(up, p)
	sender, err := p.sub.AddTrack(d)
	if err != nil {
		p.log.Warn("sfu: cannot add a down track", "err", err)
		return
	}
	d.sender = sender
	p.subs[up] = d
	p.s.wg.Add(2)
	go func() { defer p.s.wg.Done(); d.writeLoop() }() // ends at d.close
	go func() { defer p.s.wg.Done(); d.readRTCP() }()  // ends when the sender stops
	up.addDown(d)
	p.subDirty = true
	p.allocate()
}

func (p *participant) unsubscribe(up *upTrack) {
	d := p.subs[up]
	if d == nil {
		return
	}
	delete(p.subs, up)
	if p.probe.d == d {
		p.stopProbe(monotime(), probeEnded)
	}
	if p.probe.upFor == d {
		p.probe.upFor = nil
	}
	up.removeDown(d)
	if err := p.sub.RemoveTrack(d.sender); err != nil {
		p.log.Debug("sfu: remove track", "err", err)
	}
	d.close()
	p.subDirty = true
}

// negotiateSub sends a new offer on the sub connection when its tracks changed, unless an
// offer is already out (the answer brings us back here) or the client is not connected.
func (p *participant) negotiateSub() {
	if p.sub == nil || p.subAwaiting || !p.connected || p.sub.SignalingState() == webrtc.SignalingStateClosed {
		return
	}
	offer, err := p.sub.CreateOffer(&webrtc.OfferOptions{ICERestart: p.subRestart})
	if err == nil {
		err = p.sub.SetLocalDescription(offer)
	}
	if err != nil {
		p.log.Warn("sfu: cannot offer on the sub connection", "err", err)
		return
	}
	p.subDirty, p.subRestart, p.subAwaiting = false, false, true
	p.sink().Tracks(p.trackList())
	p.sink().Description(Sub, "offer", p.sub.LocalDescription().SDP)
}

// trackList is every track of the sub connection, by mid.
func (p *participant) trackList() []Track {
	out := []Track{}
	for _, t := range p.sub.GetTransceivers() {
		s := t.Sender()
		if s == nil {
			continue
		}
		d, ok := s.Track().(*downTrack)
		if !ok || t.Mid() == "" {
			continue
		}
		out = append(out, Track{Mid: t.Mid(), Participant: d.up.publisher, Source: d.up.source, Kind: d.kind.String()})
	}
	return out
}

func (p *participant) onSubAnswer(sdp string) {
	if p.sub == nil || !p.subAwaiting {
		return // stale
	}
	if tx := p.direct.Load(); tx != nil {
		tx.cryptex.set(sdp)
	}
	if err := p.sub.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		p.log.Info("sfu: sub answer refused", "err", err)
		return
	}
	p.subAwaiting = false
	p.twcc = strings.Contains(sdp, "transport-cc")
	for _, c := range p.subPending {
		p.sub.AddICECandidate(c)
	}
	p.subPending = nil
}

func (p *participant) onPCState(which PC, s webrtc.PeerConnectionState) {
	p.log.Debug("sfu: connection state", "pc", string(which), "state", s.String())
	if which == Pub {
		p.pubState.Store(int32(s))
	} else {
		p.subState.Store(int32(s))
	}
	switch s {
	case webrtc.PeerConnectionStateDisconnected:
		// Nothing from the client for pion's disconnected timeout: its path is gone (a
		// network that changed, or came back with other addresses). The SFU offers on sub,
		// so it restarts ICE there now rather than when pion calls it failed, 25 s on (the
		// client restarts pub itself). If the signalling is down too, the offer goes when it
		// is back (negotiateSub waits for it).
		if which == Sub {
			p.subRestart = true
		}
	case webrtc.PeerConnectionStateFailed:
		if !p.connected {
			p.stop()
			return
		}
		if which == Sub {
			p.subRestart = true // the SFU offers on sub, so it restarts ICE there
		}
	case webrtc.PeerConnectionStateClosed:
		if !p.connected {
			p.stop()
		}
	}
}

// --- layers ------------------------------------------------------------------------------

// audioReserve is the bandwidth kept for each audio track before any video is given room:
// Opus at its usual 32 kbit/s plus packet overhead at 50 packets a second.
const audioReserve = 50_000

// Congestion. The estimator's delay signal alone is not trusted below the starting
// estimate: on a loaded host (or a busy browser) scheduling jitter looks like queueing
// delay, and the estimator climbs back at 8% a second at best (as pion's GCC, used before
// decision 53, did), probing only while the estimate is followed (probe.go). Loss is
// trusted: when the subscriber's transport-wide feedback shows lossThreshold of its
// packets lost, the estimate is followed all the way down, and for congestionHold after
// (doubling, up to maxCongestionHold, when congestion comes back soon). A queue counts as
// loss does when it is one no scheduling jitter makes: queueThreshold of it on a link that
// was congested lately (during an episode, or within a hold after it), or deepQueue of it,
// on any link, at every tick for deepQueueFor. A deep buffer on the way (tc's tbf in the
// netns test holds 1.36 s at 100 kbit/s) queues for seconds before it drops anything:
// waiting for its loss sent the top layer into it once a hold ended, and a lower layer
// into it when a link narrowed with no loss before (a fresh-clone CI run: 13 frames and
// 160 audio packets of 200 in 4 s, the queue 811 ms). But four browsers on two cores, with
// no loss, read 200 ms of queue in their feedback too: counted on any link, it paused
// every video to one subscriber of TestSFUFourBrowsers in another CI run.
const (
	lossThreshold     = 0.02
	queueThreshold    = 200 // ms
	deepQueue         = 400 // ms
	deepQueueFor      = time.Second
	congestionHold    = 10 * time.Second
	maxCongestionHold = 5 * time.Minute
)

// congestion remembers a subscriber's loss. An episode lasts while the feedback shows loss
// and hold after the last of it; one that starts within twice the hold after the last one
// ended holds twice as long (up to maxCongestionHold), one that starts later holds
// congestionHold again. (Until 2026-11-27 the hold doubled at every allocation tick while
// the loss went on, so 1.5 s of loss held the estimate down, and a paused video away, for
// 5 minutes after the link had recovered.)
type congestion struct {
	until    int64 // monotime: congested before this
	hold     time.Duration
	deepFrom int64 // monotime: the feedback has shown deepQueue at every tick since (0: not now)
}

// observe notes one allocation tick (whether the feedback shows loss, and its queue in ms)
// and says whether the subscriber counts as congested now.
func (c *congestion) observe(now int64, lossy bool, queueMs float64) bool {
	if queueMs >= deepQueue {
		if c.deepFrom == 0 {
			c.deepFrom = now
		}
	} else {
		c.deepFrom = 0
	}
	switch {
	case queueMs >= queueThreshold && c.until != 0 && now < c.until+int64(c.hold):
		lossy = true // a link congested lately
	case c.deepFrom != 0 && now-c.deepFrom >= int64(deepQueueFor):
		lossy = true
	}
	if lossy {
		if now >= c.until { // a new episode
			if c.until != 0 && now < c.until+int64(2*c.hold) {
				c.hold = min(c.hold*2, maxCongestionHold) // again soon after: hold longer
			} else {
				c.hold = congestionHold
			}
		}
		c.until = now + int64(c.hold)
	}
	return now < c.until
}

// estimate is the subscriber's available bandwidth: the send-side estimator (internal/bwe,
// from transport-wide feedback; at least the starting estimate while there is no loss),
// else the subscriber's REMB, else the starting guess. congested reports recent loss, or a
// hold kept for a video held below the layer it wants (holdBelow); keepLowest, that every
// shown video keeps at least its lowest layer: with no loss lately, and in a hold kept for
// a lowered video alone (decision 73: on a busy host such a hold let the scheduler's
// jitter, read as a queue, pause videos that only probes would then bring back, one at a
// time; TestSFUFourBrowsers with a core busy took 33-63 s for all to see each other).
func (p *participant) estimate(now int64) (est int, congested, keepLowest bool) {
	if p.twcc {
		st := p.est.Stats()
		est = st.Target
		lossy := p.congestion.observe(now, st.Loss >= lossThreshold, st.QueueMs)
		kept, forPaused := false, false
		if !lossy {
			kept, forPaused = p.holdBelow(now)
		}
		congested = lossy || kept
		if !congested {
			est = max(est, p.s.cfg.InitialBitrate)
		}
		return est, congested, !congested || kept && !forPaused
	}
	if r := p.remb.Load(); r > 0 {
		return int(r), false, true
	}
	return p.s.cfg.InitialBitrate, false, true
}

// allocate chooses each video down track's layer: audio is reserved first, then video
// by priority (screens, the active speaker, the others), each no larger than it is shown.
func (p *participant) allocate() {
	if len(p.subs) == 0 {
		return
	}
	now := monotime()
	est, congested, keepLowest := p.estimate(now)
	p.lastEstimate.Store(int64(est))
	budget := est * 95 / 100
	var downs []*downTrack
	var ds, all []videoDemand
	for up, d := range p.subs {
		if up.kind == webrtc.RTPCodecTypeAudio {
			budget -= audioReserve
			continue
		}
		opts := up.options(now)
		prio := 1
		switch {
		case up.source == SourceScreen:
			prio = 3
		case up.publisher == p.speaker:
			prio = 2
		}
		maxH := 0
		if d.renderH < 0 {
			maxH = -1
		} else if d.renderH > 0 {
			maxH = d.renderH
		}
		vd := videoDemand{priority: prio, layers: opts, maxHeight: maxH, current: int(d.target.Load())}
		downs = append(downs, d)
		ds = append(ds, vd)
		everything := vd
		everything.layers = make([]layerOption, len(opts))
		for i, o := range opts {
			o.active = true
			everything.layers[i] = o
		}
		everything.current = int(d.desired.Load())
		all = append(all, everything)
	}
	// Without loss a shown video keeps at least its lowest layer, whatever the estimate.
	targets := allocate(budget, ds, keepLowest)
	desired := allocate(budget, all, keepLowest)
	for i, d := range downs {
		// While the estimate is followed, a video held below the layer it wants for want of
		// bandwidth (paused, or lowered) goes up only by a probe (decisions 71 and 73): not
		// by the estimate creeping up to the next layer's need, since the estimator grows
		// on a calm link up to 1.5 times what it receives and more, nothing sent to show
		// that the link carries more. (One that had the layer it wanted and is now shown
		// larger goes up as the estimate allows.)
		prev := int(d.desired.Load())
		if congested && desired[i] > prev && (d.bwPaused || d.lowered) && p.probe.upFor != d {
			desired[i], targets[i] = prev, min(targets[i], prev)
		}
		if desired[i] > prev && p.probe.upFor == d {
			p.probe.upFor = nil
		}
		if old := d.target.Swap(int32(targets[i])); old != int32(targets[i]) && targets[i] >= 0 {
			d.up.requestKeyframe(targets[i])
		}
		d.desired.Store(int32(desired[i]))
		// Paused for want of bandwidth: shown, and no layer would fit were every layer sent
		// (a publisher's camera off or its layers not yet up is not that).
		wanted := wantedLayer(all[i])
		paused := wanted >= 0 && desired[i] < 0
		d.lowered = desired[i] >= 0 && desired[i] < wanted
		if paused != d.bwPaused {
			d.bwPaused = paused
			p.sink().VideoPaused(d.up.publisher, d.up.source, paused)
		}
	}
	p.probeLayers(now, est, congested, budget, all, downs, targets)
}

// --- sender reports ------------------------------------------------------------------------

// reportEvery is how often, in allocation ticks, the sub connection carries its tracks'
// sender reports: 1.2 s (browsers send theirs every second).
const reportEvery = 4

// maxReportsPerPacket keeps a compound packet of sender reports (28 bytes each) under
// 1200 bytes with SRTCP's index and tag.
const maxReportsPerPacket = 40

// sendReports sends a sender report for every down track that has written a packet.
func (p *participant) sendReports() {
	if p.sub == nil {
		return
	}
	downs := make([]*downTrack, 0, len(p.subs))
	for _, d := range p.subs {
		downs = append(downs, d)
	}
	if err := writeSenderReports(p.sub, p.direct.Load(), downs, time.Now(), monotime()); err != nil {
		p.log.Debug("sfu: sender reports", "err", err)
	}
}

// writeSenderReports writes the down tracks' sender reports in compound packets of at
// most maxReportsPerPacket: by the connection's direct path tx when it is up, else on pc
// through pion (whose SRTCP context then keeps the connection's reports: see
// directTx.writeRTCP).
func writeSenderReports(pc *webrtc.PeerConnection, tx *directTx, downs []*downTrack, now time.Time, mono int64) error {
	batch := make([]rtcp.Packet, 0, maxReportsPerPacket)
	write := func() error {
		if tx != nil && tx.reportsDirect() {
			b, err := rtcp.Marshal(batch)
			if err != nil {
				return err
			}
			return tx.writeRTCP(b)
		}
		err := pc.WriteRTCP(batch)
		if err == nil && tx != nil {
			tx.reportsByPion.Store(true)
		}
		return err
	}
	for _, d := range downs {
		if sr, ok := d.senderReport(now, mono); ok {
			batch = append(batch, &sr)
		}
		if len(batch) == maxReportsPerPacket {
			if err := write(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if len(batch) == 0 {
		return nil
	}
	return write()
}

// --- the end -----------------------------------------------------------------------------

// shutdown closes everything the participant owns and takes it out of the room.
func (p *participant) shutdown() {
	p.cancel()
	if p.goneTimer != nil {
		p.goneTimer.Stop()
	}
	p.r.forget(p)
	for up, d := range p.subs {
		up.removeDown(d)
		d.close()
	}
	p.subs = nil
	for _, pc := range []*webrtc.PeerConnection{p.pub, p.sub} {
		if pc != nil {
			if err := pc.Close(); err != nil {
				p.log.Debug("sfu: close", "err", err)
			}
		}
	}
	if tx := p.direct.Load(); tx != nil {
		tx.close() // as its DTLS transport's closing does: its RTCP route goes
	}
	p.readers.Wait()
	p.rtcpReaders.Wait()
	for _, rx := range p.rxs {
		rx.wait()
	}
	p.r.log.Info("sfu: participant left", "participant", p.id)
}

// api makes the pion API of one connection: a publisher's (sub false), whose direct
// receive path rx (if any) is put under its interceptors, or a subscriber's, whose direct
// send path tx is. Each has its own media engine and interceptors and the shared
// settings.
func (s *SFU) api(sub bool, tx *directTx, rx *directRx) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBTransportCC}}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1", RTCPFeedback: fb},
		PayloadType:        111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	vfb := []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBTransportCC}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	if sub {
		vfb = append(vfb, webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBGoogREMB})
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: vfb},
		PayloadType:        96,
	}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	se := s.settingEngine()
	if sub {
		ir.Add(&directInterceptor{t: tx}) // innermost: below everything pion would do to the packet
		tx.configure(&se)
		// Nothing else: the down tracks write to the direct path themselves, past pion's
		// chain, so what the interceptors would do is done here (decision 53). The
		// participant's own estimator (internal/bwe) is fed by the down tracks; they answer
		// NACKs themselves (downTrack.resend; the codec's feedback above offers nack and
		// nack pli); the participant sends their sender reports (sendReports). The sub
		// connection receives no media: no receiver reports.
		// The transport-wide sequence number (registered below for both connections): the
		// down tracks write it themselves (downTrack.header), so that a retransmission is
		// the same packet, byte for byte, as the original (pion's interceptor would give it
		// a new number: with AES-GCM, the same nonce over a different header).
	} else {
		// The only interceptor: the receive path's queues, under the track readers. What
		// pion's NACK generator, receiver reports and transport-wide feedback did is done
		// by the receive side (rxfeedback.go, decision 64); the codecs' feedback above
		// offers transport-cc, nack and nack pli. The SFU is the DTLS server, for the keys
		// (decision 51).
		ir.Add(&rxInterceptor{rx: rx})
		rx.keys.configure(&se)
		if err := se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer); err != nil {
			return nil, err
		}
		if err := webrtc.ConfigureSimulcastExtensionHeaders(m); err != nil {
			return nil, err
		}
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: audioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI}, kind); err != nil {
			return nil, err
		}
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}
