package visit

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/store"
)

// Media modes of a live visit: P2P (browser to browser) or SFU (each participant to the
// server, which forwards).
const (
	ModeP2P = "p2p"
	ModeSFU = "sfu"
)

// sfuThreshold is how many admitted, connected people make a visit of policy auto move to
// the SFU: two stay peer to peer.
const sfuThreshold = 3

// Media is the selective forwarding unit as the rooms use it: they tell it who takes part
// and hand it the participants' signalling for it. Its methods must not block for long and
// must not call back into the visit service; it talks to participants through their
// MediaSink. app adapts package sfu to it.
type Media interface {
	// Join puts a participant into the SFU (or hands a reconnected one its new sink) and
	// returns its SFU session, which changes whenever its SFU connections are new.
	Join(visitID string, m MediaMember) (sfuSession string)
	// Leave takes a participant out of the SFU for good.
	Leave(visitID, participantID string)
	// Disconnected: the participant's signalling was lost; it may come back.
	Disconnected(visitID, participantID string)
	// Signal hands the SFU a description or candidate of a participant's pub or sub
	// connection.
	Signal(visitID, participantID string, s MediaSignal) error
	// VideoSize says at what size a subscriber shows a publisher's video (0x0 hidden).
	VideoSize(visitID, subscriberID, publisherID, source string, width, height int)
	// CloseRoom ends the visit's media.
	CloseRoom(visitID string)
}

// MediaMember is a participant as the SFU gets it.
type MediaMember struct {
	ID       string
	Session  string
	Observer bool
	Sink     MediaSink
}

// MediaSignal is a description or an ICE candidate for one of a participant's SFU
// connections ("pub" or "sub").
type MediaSignal struct {
	PC        string
	Type, SDP string // a description, or
	Candidate []byte // an RTCIceCandidateInit (JSON), "null" at the end
	// Session is the SFU session the connection belongs to, as the client says ("": it does
	// not say). A signal for a session the member no longer has is dropped.
	Session string
	Sources map[string]string
}

// MediaSink is what the SFU says to one participant; the signalling client implements it
// (as part of Member). Every method queues and returns.
type MediaSink interface {
	MediaDescription(pc, typ, sdp string)
	MediaCandidate(pc string, candidate []byte)
	Tracks(tracks []Track)
	Layers(source string, active []string)
	Speakers(active string, speaking []string)
	// VideoPaused: participant's video (source) is paused for want of bandwidth, or flows
	// again; link "yours" (the SFU paused it on this member's link) or "theirs" (the
	// participant paused it on its own link).
	VideoPaused(participant, source string, paused bool, link string)
}

// Track is one track a subscriber receives through the SFU.
type Track struct {
	Mid         string
	Participant string
	Source      string // audio, camera or screen
	Kind        string // audio or video
}

// MediaState is a member's view of how the call carries media.
type MediaState struct {
	Mode       string // ModeP2P or ModeSFU
	SFUSession string // in SFU mode: the member's SFU session
}

// Errors of the media path, mapped to protocol codes by the signalling.
var (
	// ErrNotSFU: an SFU message in a visit whose call is not (or not yet) in SFU mode.
	ErrNotSFU = errors.New("the call is not through the SFU")
	// ErrNotInMedia: the SFU has no participant for the member (Media.Signal).
	ErrNotInMedia = errors.New("not in the SFU")
)

// mediaRejoinEvery bounds how often a member is put back into the SFU when the SFU turns
// out to have lost it (MediaSignal).
const mediaRejoinEvery = 5 * time.Second

// useSFU reports whether the room's call should go through the SFU now. r.mu is held.
func (r *room) useSFU(m *Manager) bool {
	if m.media == nil {
		return false
	}
	switch r.policy {
	case store.PolicySFU:
		return true
	case store.PolicyP2P:
		return false
	}
	n := 0
	for _, mem := range r.members {
		if mem.admitted {
			n++
		}
	}
	return n >= sfuThreshold
}

// updateMode moves the room's call to the SFU when its policy says so (make before break:
// everyone opens connections to the SFU, and closes each peer connection once that peer
// arrives through the SFU). Once in SFU mode a visit stays there. r.mu is held.
// except (the member whose welcome or admission says so itself) is not sent a mode
// message, nor put into the SFU: its caller does that.
func (r *room) updateMode(ctx context.Context, m *Manager, reason string, except *member) {
	if r.mode == ModeSFU || !r.useSFU(m) {
		return
	}
	if r.policy == store.PolicySFU {
		reason = "the visit's policy is sfu"
	}
	r.mode = ModeSFU
	for _, mem := range r.othersAdmitted(except) {
		r.joinMedia(m, mem)
		mem.conn.Mode(r.mediaState(mem))
	}
	m.log.Info("call moved to the SFU", "visit", r.id, "reason", reason)
	m.record(context.WithoutCancel(ctx), audit.VisitMode, r.id, "", map[string]string{"mode": ModeSFU, "reason": reason})
}

// joinMedia puts an admitted member into the SFU. r.mu is held.
func (r *room) joinMedia(m *Manager, mem *member) {
	mem.sfuSession = m.media.Join(r.id, MediaMember{ID: mem.p.ID, Session: mem.session, Observer: mem.p.Observer, Sink: mem.conn})
}

func (r *room) mediaState(mem *member) MediaState {
	if r.mode == ModeSFU {
		return MediaState{Mode: ModeSFU, SFUSession: mem.sfuSession}
	}
	return MediaState{Mode: ModeP2P}
}

// leaveMedia takes a participant out of the SFU (left, removed, revoked). r.mu is held.
func (r *room) leaveMedia(m *Manager, id string) {
	if r.mode == ModeSFU && m.media != nil {
		m.media.Leave(r.id, id)
	}
}

// inSFU says why this presence may not talk to the SFU about its connections of the SFU
// session named (a client's; "" for the current one), if it may not: not current, not
// admitted (checkAdmitted), the call is not through the SFU (ErrNotSFU), or that session
// was replaced (errStaleSFUSession).
func (p *Presence) inSFU(session string) error {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if err := p.checkAdmitted(); err != nil {
		return err
	}
	if p.r.mode != ModeSFU {
		return ErrNotSFU
	}
	if session != "" && session != p.mem.sfuSession {
		return errStaleSFUSession
	}
	return nil
}

// errStaleSFUSession: a client's signal names an SFU session the member no longer has.
var errStaleSFUSession = errors.New("an SFU session that was replaced")

// MediaSignal hands the SFU a description or candidate of this member's pub or sub
// connection. Observers may not publish.
func (p *Presence) MediaSignal(s MediaSignal) error {
	// A signal of connections the SFU session they belonged to was replaced for (sent
	// before the page had the mode message naming the new one) is about nothing the SFU
	// has: given to the new participant, a pub offer of the old connection would be
	// answered, and the page would apply that answer to its new connection, which then
	// never connects (TestSFURejoinsLostParticipant; seen in TestSFURejoinAfterLoss).
	if err := p.inSFU(s.Session); errors.Is(err, errStaleSFUSession) {
		p.m.log.Debug("sfu: a signal for an SFU session that was replaced, dropped", "visit", p.r.id, "participant", p.mem.p.ID, "pc", s.PC)
		return nil
	} else if err != nil {
		return err
	}
	if s.PC == "pub" && p.mem.p.Observer {
		return ErrForbidden
	}
	err := p.m.media.Signal(p.r.id, p.mem.p.ID, s)
	if errors.Is(err, ErrNotInMedia) {
		p.rejoinMedia()
		return nil // it was about connections that are gone; the page makes new ones
	}
	return err
}

// mediaHolder is a Member that can hold what the SFU says until its next Mode (the
// signalling's client does).
type mediaHolder interface{ HoldMedia() }

// rejoinMedia puts back into the SFU an admitted member of an SFU call whom the SFU does
// not have, and tells its page the new SFU session. A page that knows of an SFU session
// nothing stands behind would otherwise wait for ever: its signals refused, no new session
// sent (TestSFURejoinsLostParticipant). In the flows the SFU knows it does not happen (a
// participant stops when its page left, was replaced, or stayed away; a page that comes
// back is joined anew); this is the net under the ones it does not foresee.
func (p *Presence) rejoinMedia() {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if p.checkAdmitted() != nil || p.r.mode != ModeSFU || p.m.now().Sub(p.mem.mediaRejoined) < mediaRejoinEvery {
		return
	}
	p.mem.mediaRejoined = p.m.now()
	// The new SFU participant speaks at once (its sub offer); what it says must follow the
	// mode message that names its session.
	if h, ok := p.mem.conn.(mediaHolder); ok {
		h.HoldMedia()
	}
	p.r.joinMedia(p.m, p.mem)
	p.mem.conn.Mode(p.r.mediaState(p.mem))
	p.m.log.Warn("sfu: a participant the SFU had lost was put back", "visit", p.r.id, "participant", p.mem.p.ID)
}

// VideoSize tells the SFU at what size this member shows another's video.
func (p *Presence) VideoSize(publisherID, source string, width, height int) error {
	if err := p.inSFU(""); errors.Is(err, ErrNotSFU) {
		return nil // nothing to adapt between browsers
	} else if err != nil {
		return err
	}
	p.m.media.VideoSize(p.r.id, p.mem.p.ID, publisherID, source, width, height)
	return nil
}

// Chat sends a chat message to every other admitted, connected participant (the call's
// chat when it goes through the SFU; between browsers it uses their data channels). id is
// the sender's id for the message ("" for none): a page sends a message again when it
// cannot know whether its old connection delivered it (docs/protocol.md), so a repeat of
// one of the participant's last chatIDsKept ids, on any of its connections, is dropped.
func (p *Presence) Chat(id, text string, at time.Time) error {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if err := p.checkAdmitted(); err != nil {
		return err
	}
	if id != "" {
		seen := p.r.chatIDs[p.mem.p.ID]
		if slices.Contains(seen, id) {
			return nil
		}
		if len(seen) >= chatIDsKept {
			seen = seen[1:]
		}
		if p.r.chatIDs == nil {
			p.r.chatIDs = map[string][]string{}
		}
		p.r.chatIDs[p.mem.p.ID] = append(seen, id)
	}
	for _, o := range p.r.othersAdmitted(p.mem) {
		o.conn.Chat(p.mem.p.ID, text, at)
	}
	return nil
}

// VideoPaused tells every other admitted, connected participant that this one paused (or
// resumed) its video of source for want of bandwidth on its own link. Only in SFU mode: peer
// to peer the pages tell each other on their data channel, and a receiver's connection holds
// SFU messages until it learns the call's SFU mode (a bounded queue that a stream of these
// in a peer-to-peer call would overflow), so one that comes then is dropped. Observers
// publish nothing.
func (p *Presence) VideoPaused(source string, paused bool) error {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if err := p.checkAdmitted(); err != nil {
		return err
	}
	if p.mem.p.Observer {
		return ErrForbidden
	}
	if p.r.mode != ModeSFU {
		return nil
	}
	for _, o := range p.r.othersAdmitted(p.mem) {
		o.conn.VideoPaused(p.mem.p.ID, source, paused, "theirs")
	}
	return nil
}

// chatIDsKept is how many chat ids of each participant a room remembers.
const chatIDsKept = 64

// Mode is the live call's media mode ("" when nobody is connected).
func (m *Manager) Mode(visitID string) string {
	if r := m.liveRoom(visitID); r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.mode
	}
	return ""
}
