package visit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/store"
)

// Member is one connected participant as a room sees it: the signalling server's client.
// The room calls these with its lock held, so they must not block and must not call back
// into the room: they queue a message for the connection and return.
type Member interface {
	// Admitted: the member was admitted; peers are the others in the call, ms how the call
	// carries media.
	Admitted(peers []Peer, ms MediaState)
	WaitingChanged(list []Waiting)
	PeerEvent(event PeerEvent, p Peer)
	Signal(from string, payload any)
	// Mode: the call moved to the SFU (docs/protocol.md, mode).
	Mode(ms MediaState)
	// Chat: a chat message from another participant, through the server (SFU mode).
	Chat(from, text string, at time.Time)
	// MediaSink: what the SFU says to the member. The SFU calls these from its own
	// goroutines, not with the room's lock held; they too queue and return.
	MediaSink
	// Ended: the visit is over; the connection is closed after the message.
	Ended(reason string)
	// Bye: the connection is closed for another reason (replaced, left, server_shutdown).
	Bye(reason string)
}

// PeerEvent is what happened to another participant.
type PeerEvent string

const (
	PeerJoined PeerEvent = "joined"
	PeerGone   PeerEvent = "gone"
	PeerLeft   PeerEvent = "left"
)

// Peer is another admitted participant, as one member sees it.
type Peer struct {
	ID      string
	Role    store.Role
	Name    string
	Session string
	// Polite is the receiving member's role in perfect negotiation towards this peer.
	Polite bool
	// Observer: the peer publishes nothing.
	Observer bool
}

// Waiting is someone in the waiting room.
type Waiting struct {
	ID       string
	Name     string
	Since    time.Time
	Role     store.Role // patient or guest
	Observer bool
}

// Identity is who is connecting: a signed-in account or a link holder.
type Identity struct {
	User        *store.User
	Participant *store.Participant
	// Emergency: the account holds an active break-glass grant (see auth.CanOnVisitEmergency).
	Emergency bool
	// KeepAlive, for a signed-in user, refreshes the idle timer of the sign-in session the
	// connection was opened with (never past its end). The signalling calls it while the
	// user is in a call (Presence.InCall). nil for participants' links.
	KeepAlive func(ctx context.Context) error
}

// Welcome is what a member learns when it connects.
type Welcome struct {
	Participant store.Participant
	Visit       store.Visit
	Admitted    bool
	Peers       []Peer
	// CanAdmit: this member sees the waiting room and may admit.
	CanAdmit bool
	Waiting  []Waiting
	// Media: how the call carries media now.
	Media MediaState
}

type room struct {
	id string

	mu      sync.Mutex
	closed  bool                // ended or shut down; a new room is made for the next connection
	members map[string]*member  // connected participants, by participant id
	state   store.VisitState    // as last written to the store
	policy  store.MediaPolicy   // auto, p2p or sfu
	mode    string              // ModeP2P or ModeSFU; once SFU, it stays
	chatIDs map[string][]string // the last chat ids of each participant (Presence.Chat)
}

type member struct {
	p        store.Participant
	account  bool // a signed-in account (clinician, admin): never waits
	canAdmit bool
	admitted bool
	session  string
	conn     Member
	// sfuSession is the member's session in the SFU (SFU mode only).
	sfuSession string
	// mediaRejoined: when rejoinMedia last put it back into the SFU.
	mediaRejoined time.Time
}

// getRoom returns the live room of a visit, making it when nobody is connected yet.
func (m *Manager) getRoom(v store.Visit) *room {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rooms[v.ID]
	if r == nil {
		r = &room{id: v.ID, members: map[string]*member{}, state: v.State, policy: v.Policy, mode: ModeP2P}
		if r.policy == "" {
			r.policy = store.PolicyAuto
		}
		m.rooms[v.ID] = r
	}
	return r
}

// dropRoomIfEmpty forgets a room nobody is connected to. Called without r.mu held.
func (m *Manager) dropRoomIfEmpty(r *room) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.members) == 0 && m.rooms[r.id] == r {
		r.closed = true
		delete(m.rooms, r.id)
		if r.mode == ModeSFU {
			m.media.CloseRoom(r.id)
		}
	}
}

// Connect puts a connected participant into its visit's room. canAdmit says whether the
// identity may admit (decided by the caller's policy). session is the page load's id (see
// docs/protocol.md). The returned Presence is how the connection acts in the room; its
// Disconnect must be called when the connection ends.
func (m *Manager) Connect(ctx context.Context, id Identity, visitID, session string, canAdmit bool, conn Member) (*Presence, Welcome, error) {
	var p store.Participant
	var v store.Visit
	var err error
	switch {
	case id.User != nil:
		if v, err = m.Get(ctx, visitID); err != nil {
			return nil, Welcome{}, err
		}
		if v.State == store.VisitEnded {
			return nil, Welcome{}, ErrVisitEnded
		}
		if p, err = m.accountParticipant(ctx, *id.User, v.ID); err != nil {
			return nil, Welcome{}, fmt.Errorf("connect %s: %w", visitID, err)
		}
	case id.Participant != nil:
		p = *id.Participant
		if visitID != "" && visitID != p.VisitID {
			return nil, Welcome{}, ErrForbidden
		}
		if p.RemovedAt != nil {
			return nil, Welcome{}, ErrRemoved
		}
		if v, err = m.Get(ctx, p.VisitID); err != nil {
			return nil, Welcome{}, err
		}
		if err := m.participantLinkError(ctx, v, p); err != nil {
			return nil, Welcome{}, err
		}
	default:
		return nil, Welcome{}, ErrForbidden
	}
	if p.LeftAt != nil && !id.isAccount() {
		// Came back through the link after leaving: that is fine while the visit lasts.
		p.LeftAt = nil
	}
	mem := &member{p: p, account: id.isAccount(), canAdmit: canAdmit && id.isAccount(), admitted: p.AdmittedAt != nil, session: session, conn: conn}

	for {
		r := m.getRoom(v)
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			continue // raced with the last member leaving: make a new room
		}
		w := r.join(ctx, m, v, mem)
		r.mu.Unlock()
		m.log.Info("participant connected", "visit", v.ID, "participant", p.ID, "role", string(p.Role), "admitted", w.Admitted)
		m.record(ctx, audit.VisitConnect, v.ID, p.ID, map[string]string{"admitted": fmt.Sprint(w.Admitted), "role": string(p.Role)})
		return &Presence{m: m, r: r, mem: mem}, w, nil
	}
}

func (id Identity) isAccount() bool { return id.User != nil }

// participantLinkError says why the link a participant came through no longer lets it in,
// or nil.
func (m *Manager) participantLinkError(ctx context.Context, v store.Visit, p store.Participant) error {
	if p.GuestLinkID == "" {
		return m.linkError(v)
	}
	gs, err := m.st.VisitGuestLinks(ctx, v.ID)
	if err != nil {
		return fmt.Errorf("connect %s: %w", p.ID, err)
	}
	for _, g := range gs {
		if g.ID == p.GuestLinkID {
			return m.guestLinkError(v, g)
		}
	}
	return ErrLinkRevoked // the guest link is gone
}

// join adds mem to the room, replacing an earlier connection of the same participant.
// r.mu is held.
func (r *room) join(ctx context.Context, m *Manager, v store.Visit, mem *member) Welcome {
	if old := r.members[mem.p.ID]; old != nil {
		old.conn.Bye("replaced")
		delete(r.members, mem.p.ID)
		if old.session != mem.session && old.admitted {
			r.broadcastPeer(PeerGone, old)
		}
	}
	r.members[mem.p.ID] = mem
	w := Welcome{Participant: mem.p, Visit: v, Admitted: mem.admitted, CanAdmit: mem.canAdmit}
	if mem.admitted {
		w.Peers = r.peersOf(mem)
		r.updateMode(ctx, m, "a third participant connected", mem)
		if r.mode == ModeSFU {
			r.joinMedia(m, mem)
		}
		w.Media = r.mediaState(mem)
		r.broadcastPeer(PeerJoined, mem)
	} else {
		r.waitingChanged()
	}
	if mem.canAdmit {
		w.Waiting = r.waitingList()
	}
	r.updateState(ctx, m)
	w.Visit.State = r.state
	return w
}

// peersOf lists the admitted members other than mem, from mem's point of view.
func (r *room) peersOf(mem *member) []Peer {
	peers := []Peer{}
	for _, o := range r.othersAdmitted(mem) {
		peers = append(peers, peerView(mem, o))
	}
	return peers
}

// peerView is o as seen by viewer. Accounts (clinicians, admins) are impolite towards
// everyone; between two others, the larger id is polite.
func peerView(viewer, o *member) Peer {
	polite := !viewer.account && (o.account || viewer.p.ID > o.p.ID)
	if viewer.account && o.account {
		polite = viewer.p.ID > o.p.ID
	}
	return Peer{ID: o.p.ID, Role: o.p.Role, Name: o.p.Name, Session: o.session, Polite: polite, Observer: o.p.Observer}
}

// broadcastPeer tells every other admitted member about subject.
func (r *room) broadcastPeer(ev PeerEvent, subject *member) {
	for _, o := range r.othersAdmitted(subject) {
		o.conn.PeerEvent(ev, peerView(o, subject))
	}
}

// othersAdmitted returns the admitted members other than mem, in sorted's order: those a
// member's presence, chat and notices go to.
func (r *room) othersAdmitted(mem *member) []*member {
	return slices.DeleteFunc(r.sorted(), func(o *member) bool { return o == mem || !o.admitted })
}

// sorted returns the members in a stable order (by participant id), so messages go out in
// the same order every time.
func (r *room) sorted() []*member {
	ms := make([]*member, 0, len(r.members))
	for _, mem := range r.members {
		ms = append(ms, mem)
	}
	slices.SortFunc(ms, func(a, b *member) int {
		switch {
		case a.p.ID < b.p.ID:
			return -1
		case a.p.ID > b.p.ID:
			return 1
		}
		return 0
	})
	return ms
}

func (r *room) waitingList() []Waiting {
	list := []Waiting{}
	for _, mem := range r.sorted() {
		if !mem.admitted {
			list = append(list, Waiting{ID: mem.p.ID, Name: mem.p.Name, Since: mem.p.CreatedAt, Role: mem.p.Role, Observer: mem.p.Observer})
		}
	}
	slices.SortStableFunc(list, func(a, b Waiting) int { return a.Since.Compare(b.Since) })
	return list
}

// waitingChanged sends the waiting list to those who may admit.
func (r *room) waitingChanged() {
	list := r.waitingList()
	for _, mem := range r.sorted() {
		if mem.canAdmit {
			mem.conn.WaitingChanged(list)
		}
	}
}

// updateState recomputes the visit's state from who is connected and stores it when it
// changed. in_call: an admitted patient or guest is connected; waiting: someone is in the
// waiting room; scheduled: neither.
func (r *room) updateState(ctx context.Context, m *Manager) {
	state := store.VisitScheduled
	for _, mem := range r.members {
		if !mem.account && mem.admitted {
			state = store.VisitInCall
			break
		}
		if !mem.admitted {
			state = store.VisitWaiting
		}
	}
	if state == r.state {
		return
	}
	if err := m.st.SetVisitState(context.WithoutCancel(ctx), r.id, state); err != nil {
		m.log.Warn("cannot store visit state", "visit", r.id, "err", err)
		return
	}
	r.state = state
}

// admit lets a waiting participant in.
func (r *room) admit(ctx context.Context, m *Manager, participantID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrWrongState
	}
	mem := r.members[participantID]
	if mem == nil {
		return ErrNotFound
	}
	if mem.admitted {
		return ErrWrongState
	}
	if err := m.st.AdmitParticipant(context.WithoutCancel(ctx), participantID, m.now().UTC()); err != nil {
		return fmt.Errorf("admit %s: %w", participantID, err)
	}
	mem.admitted = true
	now := m.now().UTC()
	mem.p.AdmittedAt = &now
	r.updateMode(ctx, m, "a third participant admitted", mem)
	if r.mode == ModeSFU {
		r.joinMedia(m, mem)
	}
	mem.conn.Admitted(r.peersOf(mem), r.mediaState(mem))
	r.broadcastPeer(PeerJoined, mem)
	r.waitingChanged()
	r.updateState(ctx, m)
	m.log.Info("participant admitted", "visit", r.id, "participant", participantID)
	m.record(ctx, audit.VisitAdmit, r.id, participantID, nil)
	return nil
}

// kickLinkHolders disconnects everyone who came in through the patient link.
func (r *room) kickLinkHolders(ctx context.Context, m *Manager, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kicked := false
	for _, mem := range r.sorted() {
		if mem.account {
			continue
		}
		kicked = true
		delete(r.members, mem.p.ID)
		r.leaveMedia(m, mem.p.ID)
		mem.conn.Ended(reason)
		if mem.admitted {
			r.broadcastPeer(PeerLeft, mem)
		}
	}
	if kicked {
		r.waitingChanged()
		r.updateState(ctx, m)
	}
}

// remove disconnects a removed participant (if connected) and tells the others.
func (r *room) remove(ctx context.Context, m *Manager, participantID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	mem := r.members[participantID]
	if mem == nil || r.closed {
		return
	}
	delete(r.members, participantID)
	r.leaveMedia(m, participantID)
	mem.conn.Ended("removed")
	if mem.admitted {
		r.broadcastPeer(PeerLeft, mem)
	} else {
		r.waitingChanged()
	}
	r.updateState(ctx, m)
}

// Presence is one connection's place in a room.
type Presence struct {
	m   *Manager
	r   *room
	mem *member
}

// Participant returns the connection's participant.
func (p *Presence) Participant() store.Participant {
	// Under the room's lock: admission sets AdmittedAt while the connection may be reading.
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	return p.mem.p
}

// Admitted reports whether the connection's participant is admitted and still current.
func (p *Presence) Admitted() bool {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	return p.current() && p.mem.admitted
}

// InCall reports whether this member is in a call: admitted, still current, and someone
// else admitted is connected.
func (p *Presence) InCall() bool {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if !p.current() || !p.mem.admitted {
		return false
	}
	for _, m := range p.r.members {
		if m != p.mem && m.admitted {
			return true
		}
	}
	return false
}

// current reports whether this presence is still the room's member for its participant
// (not replaced by a newer connection, not ended). r.mu is held.
func (p *Presence) current() bool {
	return !p.r.closed && p.r.members[p.mem.p.ID] == p.mem
}

// checkAdmitted says why this presence may not act in the call, if it may not: no longer
// current, or not admitted. r.mu is held.
func (p *Presence) checkAdmitted() error {
	if !p.current() {
		return ErrWrongState
	}
	if !p.mem.admitted {
		return ErrNotAdmitted
	}
	return nil
}

// Relay passes a signalling payload to another admitted, connected participant.
func (p *Presence) Relay(to string, payload any) error {
	p.r.mu.Lock()
	defer p.r.mu.Unlock()
	if err := p.checkAdmitted(); err != nil {
		return err
	}
	dst := p.r.members[to]
	if dst == nil || !dst.admitted || dst == p.mem {
		return ErrNotFound
	}
	dst.conn.Signal(p.mem.p.ID, payload)
	return nil
}

// Admit lets a waiting participant in. The caller has checked that this member may.
func (p *Presence) Admit(ctx context.Context, participantID string) error {
	if !p.mem.canAdmit {
		return ErrForbidden
	}
	return p.r.admit(ctx, p.m, participantID)
}

// Remove takes a participant out of the visit for good. Only those who may admit may.
func (p *Presence) Remove(ctx context.Context, participantID string) error {
	if !p.mem.canAdmit {
		return ErrForbidden
	}
	return p.m.Remove(ctx, p.r.id, participantID)
}

// End ends the visit for everyone. The caller has checked that this member may.
func (p *Presence) End(ctx context.Context) error {
	_, err := p.m.End(ctx, p.r.id)
	return err
}

// Leave takes the participant out on purpose: the others are told it left.
func (p *Presence) Leave(ctx context.Context) {
	p.r.mu.Lock()
	if !p.current() {
		p.r.mu.Unlock()
		return
	}
	delete(p.r.members, p.mem.p.ID)
	p.r.leaveMedia(p.m, p.mem.p.ID)
	p.mem.conn.Bye("left")
	if p.mem.admitted {
		p.r.broadcastPeer(PeerLeft, p.mem)
	} else {
		p.r.waitingChanged()
	}
	p.r.updateState(ctx, p.m)
	p.r.mu.Unlock()
	if err := p.m.st.SetParticipantLeft(context.WithoutCancel(ctx), p.mem.p.ID, p.m.now().UTC()); err != nil && !errors.Is(err, store.ErrNotFound) {
		p.m.log.Warn("cannot store leave", "visit", p.r.id, "err", err)
	}
	p.m.log.Info("participant left", "visit", p.r.id, "participant", p.mem.p.ID)
	p.m.record(ctx, audit.VisitLeave, p.r.id, p.mem.p.ID, nil)
	p.m.departed(p.r.id, p.mem.p.ID, "left")
	p.m.dropRoomIfEmpty(p.r)
}

// Disconnect is called once when the connection has ended for any reason. If the member
// was still current (its connection was lost), the others are told it is gone.
func (p *Presence) Disconnect(ctx context.Context) {
	p.r.mu.Lock()
	if !p.current() {
		p.r.mu.Unlock()
		p.m.dropRoomIfEmpty(p.r)
		return
	}
	delete(p.r.members, p.mem.p.ID)
	if p.mem.admitted && p.r.mode == ModeSFU {
		p.m.media.Disconnected(p.r.id, p.mem.p.ID)
	}
	if p.mem.admitted {
		p.r.broadcastPeer(PeerGone, p.mem)
	} else {
		p.r.waitingChanged()
	}
	p.r.updateState(ctx, p.m)
	p.r.mu.Unlock()
	p.m.log.Info("participant disconnected", "visit", p.r.id, "participant", p.mem.p.ID)
	p.m.record(ctx, audit.VisitGone, p.r.id, p.mem.p.ID, nil)
	p.m.dropRoomIfEmpty(p.r)
}
