// Package visit owns visits and the people in them: creating visits and their patient links,
// turning a link into a participant, the waiting room, admission, who is connected, relaying
// signalling between admitted participants, and ending. It owns no media and speaks no wire
// protocol: the signalling server (package signal) connects Members to it.
package visit

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
)

// Errors callers map to HTTP statuses and protocol error codes.
var (
	ErrNotFound    = errors.New("not found")
	ErrLinkUnknown = errors.New("unknown visit link")
	ErrLinkExpired = errors.New("visit link expired")
	ErrLinkRevoked = errors.New("visit link revoked")
	ErrVisitEnded  = errors.New("visit ended")
	ErrForbidden   = errors.New("forbidden")
	ErrNotAdmitted = errors.New("not admitted")
	ErrWrongState  = errors.New("wrong state")
	ErrRemoved     = errors.New("removed from the visit")
)

// BadCookieError is a participant cookie that names a real participant but holds the wrong
// secret: someone guessing at that visit. It is a not-found error (errors.Is ErrNotFound).
type BadCookieError struct{ VisitID string }

func (e *BadCookieError) Error() string        { return "participant cookie with a wrong secret" }
func (e *BadCookieError) Is(target error) bool { return target == ErrNotFound }

// InvalidError says which input was wrong and why; its text is safe to show the user.
type InvalidError struct{ Field, Reason string }

func (e *InvalidError) Error() string { return e.Field + ": " + e.Reason }

// Store is what the visit manager needs of the database.
type Store interface {
	UserByID(ctx context.Context, id string) (store.User, error)
	CreateVisit(ctx context.Context, v store.Visit) error
	VisitByID(ctx context.Context, id string) (store.Visit, error)
	VisitByLinkHash(ctx context.Context, linkHash []byte) (store.Visit, error)
	ListVisits(ctx context.Context, clinicianID string, from, to time.Time) ([]store.Visit, error)
	SetVisitLink(ctx context.Context, id string, linkHash []byte, expiresAt time.Time) error
	SetVisitState(ctx context.Context, id string, state store.VisitState) error
	RevokeVisit(ctx context.Context, id string, at time.Time) error
	EndVisit(ctx context.Context, id string, at time.Time) error
	CreateParticipant(ctx context.Context, p store.Participant) error
	ParticipantByID(ctx context.Context, id string) (store.Participant, error)
	VisitParticipants(ctx context.Context, visitID string) ([]store.Participant, error)
	AdmitParticipant(ctx context.Context, id string, at time.Time) error
	SetParticipantLeft(ctx context.Context, id string, at time.Time) error
	RemoveParticipant(ctx context.Context, id string, at time.Time) error
	SetParticipantName(ctx context.Context, id, name string) error
	SetConnection(ctx context.Context, c store.Connection) error
	VisitConnections(ctx context.Context, visitID string) ([]store.Connection, error)
	CreateGuestLink(ctx context.Context, g store.GuestLink) error
	GuestLinkByHash(ctx context.Context, linkHash []byte) (store.GuestLink, error)
	VisitGuestLinks(ctx context.Context, visitID string) ([]store.GuestLink, error)
}

// Config configures a Manager.
type Config struct {
	LinkTTL time.Duration    // a link expires this long after the visit's scheduled time
	Now     func() time.Time // nil = time.Now
	Log     *slog.Logger
	// SweepEvery is how often Run looks for visits ended or revoked by another process
	// (the CLI, another node). Zero means 2 s.
	SweepEvery time.Duration
	// Departed, if set, is told when a participant is out of a visit for good: it left
	// ("left"), was removed ("removed"), its link was revoked ("revoked") or the visit ended
	// ("ended", for every participant). A lost connection is not a departure: the person may
	// be back in a moment. It is called without locks held and must not block for long
	// (the TURN server closes the participant's relays here).
	Departed func(visitID, participantID, reason string)
	// Audit records who created, revoked, joined, admitted, left, removed and ended, with the
	// actor the caller put into the context (audit.WithActor). nil = audit.Discard.
	Audit audit.Recorder
	// Media is the SFU. nil: every call stays peer to peer.
	Media Media
}

// Manager is the visit service. Its live rooms exist only while someone is connected;
// everything that must outlive a connection (admission, state) is in the store.
type Manager struct {
	st         Store
	linkTTL    time.Duration
	now        func() time.Time
	log        *slog.Logger
	sweepEvery time.Duration
	departed   func(visitID, participantID, reason string)
	audit      audit.Recorder
	media      Media

	mu    sync.Mutex
	rooms map[string]*room
}

// NewManager returns a Manager.
func NewManager(st Store, cfg Config) *Manager {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.SweepEvery == 0 {
		cfg.SweepEvery = 2 * time.Second
	}
	if cfg.Departed == nil {
		cfg.Departed = func(string, string, string) {}
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Discard
	}
	return &Manager{st: st, linkTTL: cfg.LinkTTL, now: cfg.Now, log: cfg.Log, sweepEvery: cfg.SweepEvery, departed: cfg.Departed, audit: cfg.Audit, media: cfg.Media, rooms: map[string]*room{}}
}

// record writes an audit event of the context's actor about a visit (and a subject).
func (m *Manager) record(ctx context.Context, action audit.Action, visitID, subjectID string, detail map[string]string) {
	e := audit.EventFrom(ctx, action)
	e.Time, e.VisitID, e.SubjectID, e.Detail = m.now(), visitID, subjectID, detail
	if err := m.audit.Record(ctx, e); err != nil {
		m.log.Error("audit trail: cannot record", "action", string(action), "visit", visitID, "err", err)
	}
}

// MaxNameLength bounds patient and participant names.
const MaxNameLength = 80

// CleanName trims a display name and checks it: 1 to max characters, no control characters.
func CleanName(field, name string, max int, required bool) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		if required {
			return "", &InvalidError{field, "is required"}
		}
		return "", nil
	}
	if !utf8.ValidString(name) || utf8.RuneCountInString(name) > max {
		return "", &InvalidError{field, fmt.Sprintf("must be at most %d characters", max)}
	}
	for _, r := range name {
		if unicode.IsControl(r) { // C0, DEL and C1
			return "", &InvalidError{field, "must not contain control characters"}
		}
	}
	return name, nil
}

// NewVisit is what a visit is created from.
type NewVisit struct {
	ClinicianID string
	PatientName string
	ScheduledAt time.Time // zero = now
	Privacy     bool      // relay-only ICE for everyone in the visit
	// Policy says when the call goes through the SFU: auto (from the third person
	// admitted; the default), p2p (never) or sfu (always).
	Policy store.MediaPolicy
}

// Create creates a visit and its patient link. The token is returned once and never stored.
func (m *Manager) Create(ctx context.Context, nv NewVisit) (store.Visit, string, error) {
	name, err := CleanName("patient_name", nv.PatientName, 200, false)
	if err != nil {
		return store.Visit{}, "", err
	}
	c, err := m.st.UserByID(ctx, nv.ClinicianID)
	if errors.Is(err, store.ErrNotFound) {
		return store.Visit{}, "", &InvalidError{"clinician", "no such clinician"}
	}
	if err != nil {
		return store.Visit{}, "", fmt.Errorf("create visit: %w", err)
	}
	if c.Role != store.RoleClinician || c.Disabled {
		return store.Visit{}, "", &InvalidError{"clinician", "is not an active clinician account"}
	}
	now := m.now().UTC().Truncate(time.Millisecond) // the precision the store keeps
	at := nv.ScheduledAt.UTC().Truncate(time.Millisecond)
	if at.IsZero() {
		at = now
	}
	policy := nv.Policy
	switch policy {
	case "":
		policy = store.PolicyAuto
	case store.PolicyAuto, store.PolicyP2P, store.PolicySFU:
	default:
		return store.Visit{}, "", &InvalidError{"policy", "must be auto, p2p or sfu"}
	}
	token := auth.NewToken()
	v := store.Visit{
		ID: store.NewID("vst"), ClinicianID: c.ID, PatientName: name, ScheduledAt: at, CreatedAt: now,
		LinkHash: auth.HashToken(token), LinkExpiresAt: at.Add(m.linkTTL), State: store.VisitScheduled,
		Privacy: nv.Privacy, Policy: policy,
	}
	if !v.LinkExpiresAt.After(now) {
		return store.Visit{}, "", &InvalidError{"scheduled_at", "is so far in the past that the link would already have expired"}
	}
	if v.LinkExpiresAt.Year() > 9999 { // RFC 3339, so the API and the CLI, cannot write it
		return store.Visit{}, "", &InvalidError{"scheduled_at", "is too far in the future"}
	}
	if err := m.st.CreateVisit(ctx, v); err != nil {
		return store.Visit{}, "", fmt.Errorf("create visit: %w", err)
	}
	m.log.Info("visit created", "visit", v.ID, "clinician", c.ID, "privacy", v.Privacy, "policy", string(v.Policy))
	m.record(ctx, audit.VisitCreate, v.ID, c.ID, nil)
	return v, token, nil
}

// Get returns a visit.
func (m *Manager) Get(ctx context.Context, id string) (store.Visit, error) {
	v, err := m.st.VisitByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Visit{}, ErrNotFound
	}
	return v, err
}

// List returns the visits scheduled in [from, to), of one clinician or ("" ) all.
func (m *Manager) List(ctx context.Context, clinicianID string, from, to time.Time) ([]store.Visit, error) {
	return m.st.ListVisits(ctx, clinicianID, from, to)
}

// NewLink replaces a visit's patient link with a new one (the old one stops working) and
// returns the new token.
func (m *Manager) NewLink(ctx context.Context, id string) (store.Visit, string, error) {
	v, err := m.Get(ctx, id)
	if err != nil {
		return store.Visit{}, "", err
	}
	if v.State == store.VisitEnded {
		return store.Visit{}, "", ErrVisitEnded
	}
	token := auth.NewToken()
	exp := v.ScheduledAt.Add(m.linkTTL)
	if now := m.now().UTC(); exp.Before(now.Add(m.linkTTL)) {
		exp = now.Add(m.linkTTL) // a link issued late still gets a full lifetime
	}
	if err := m.st.SetVisitLink(ctx, id, auth.HashToken(token), exp); err != nil {
		return store.Visit{}, "", fmt.Errorf("new link %s: %w", id, err)
	}
	v.LinkHash, v.LinkExpiresAt, v.RevokedAt = auth.HashToken(token), exp, nil
	m.log.Info("visit link reissued", "visit", id)
	m.record(ctx, audit.VisitLink, id, "", nil)
	return v, token, nil
}

// Revoke makes the visit's link stop working and disconnects the patients and guests who
// came in through it.
func (m *Manager) Revoke(ctx context.Context, id string) (store.Visit, error) {
	if err := m.st.RevokeVisit(ctx, id, m.now().UTC()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Visit{}, ErrNotFound
		}
		return store.Visit{}, fmt.Errorf("revoke %s: %w", id, err)
	}
	m.log.Info("visit link revoked", "visit", id)
	m.record(ctx, audit.VisitRevoke, id, "", nil)
	if r := m.liveRoom(id); r != nil {
		r.kickLinkHolders(ctx, m, "revoked")
	}
	m.departAll(ctx, id, "revoked", false)
	return m.Get(ctx, id)
}

// departAll tells Departed about the visit's participants (all of them, or only those who
// came through the link).
func (m *Manager) departAll(ctx context.Context, visitID, reason string, accountsToo bool) {
	ps, err := m.st.VisitParticipants(ctx, visitID)
	if err != nil {
		m.log.Warn("cannot list participants", "visit", visitID, "err", err)
		return
	}
	for _, p := range ps {
		if accountsToo || p.UserID == "" {
			m.departed(visitID, p.ID, reason)
		}
	}
}

// Remove takes a patient or guest out of the visit for good: they are disconnected with
// "removed", their cookie stops working, and the others see them leave. (The link itself
// still opens a new waiting-room entry; revoke it to stop that.)
func (m *Manager) Remove(ctx context.Context, visitID, participantID string) error {
	p, err := m.st.ParticipantByID(ctx, participantID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && p.VisitID != visitID) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", participantID, err)
	}
	if p.UserID != "" {
		return ErrWrongState // the clinician's own place is not removed; end the visit instead
	}
	if p.RemovedAt != nil {
		// Done already: a remove sent again after a reconnect (the page could not know the
		// first arrived) is not an error, and is neither logged nor audited twice.
		return nil
	}
	if err := m.st.RemoveParticipant(ctx, participantID, m.now().UTC()); err != nil {
		return fmt.Errorf("remove %s: %w", participantID, err)
	}
	if r := m.liveRoom(visitID); r != nil {
		r.remove(ctx, m, participantID)
	}
	m.log.Info("participant removed", "visit", visitID, "participant", participantID)
	m.record(ctx, audit.VisitRemove, visitID, participantID, nil)
	m.departed(visitID, participantID, "removed")
	return nil
}

// End ends a visit for everyone in it. Ending an ended visit is not an error.
func (m *Manager) End(ctx context.Context, id string) (store.Visit, error) {
	if err := m.st.EndVisit(ctx, id, m.now().UTC()); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Visit{}, ErrNotFound
		}
		return store.Visit{}, fmt.Errorf("end %s: %w", id, err)
	}
	m.log.Info("visit ended", "visit", id)
	m.record(ctx, audit.VisitEnd, id, "", nil)
	if r := m.liveRoom(id); r != nil {
		m.closeRoom(r, "ended")
	}
	m.departAll(ctx, id, "ended", true)
	return m.Get(ctx, id)
}

// linkError says why a visit's link no longer opens it, or nil.
func (m *Manager) linkError(v store.Visit) error {
	switch {
	case v.State == store.VisitEnded:
		return ErrVisitEnded
	case v.RevokedAt != nil:
		return ErrLinkRevoked
	case !m.now().Before(v.LinkExpiresAt):
		return ErrLinkExpired
	}
	return nil
}

// Link is what a visit link opens: the visit, and for a guest link the guest link.
type Link struct {
	Visit store.Visit
	Guest *store.GuestLink // nil for the patient link
}

// GuestLinkID is the guest link's id, or "" for the patient link.
func (l Link) GuestLinkID() string {
	if l.Guest == nil {
		return ""
	}
	return l.Guest.ID
}

// Observer reports whether the link makes observers (who publish nothing).
func (l Link) Observer() bool { return l.Guest != nil && l.Guest.Role == store.GuestObserver }

// guestLinkError says why a guest link no longer opens its visit, or nil: the visit ended
// or was revoked, or the guest link was revoked or has expired.
func (m *Manager) guestLinkError(v store.Visit, g store.GuestLink) error {
	switch {
	case v.State == store.VisitEnded:
		return ErrVisitEnded
	case v.RevokedAt != nil || g.RevokedAt != nil:
		return ErrLinkRevoked
	case !m.now().Before(g.ExpiresAt):
		return ErrLinkExpired
	}
	return nil
}

// ResolveLink returns what a visit link (the patient's or a guest's) opens, or why it opens
// nothing.
func (m *Manager) ResolveLink(ctx context.Context, token string) (Link, error) {
	if !auth.WellFormedToken(token) {
		return Link{}, ErrLinkUnknown
	}
	hash := auth.HashToken(token)
	v, err := m.st.VisitByLinkHash(ctx, hash)
	if err == nil {
		return Link{Visit: v}, m.linkError(v)
	}
	if !errors.Is(err, store.ErrNotFound) {
		return Link{}, fmt.Errorf("resolve link: %w", err)
	}
	g, err := m.st.GuestLinkByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return Link{}, ErrLinkUnknown
	}
	if err != nil {
		return Link{}, fmt.Errorf("resolve link: %w", err)
	}
	if v, err = m.st.VisitByID(ctx, g.VisitID); err != nil {
		return Link{}, fmt.Errorf("resolve guest link: %w", err)
	}
	return Link{Visit: v, Guest: &g}, m.guestLinkError(v, g)
}

// Invite makes a guest link for a caregiver, interpreter or specialist: role participant
// (camera and microphone, like the patient) or observer (sees and hears, publishes
// nothing). Guests open the same patient page, go through the same device check and wait
// to be admitted. The link lives as long as a new patient link would and is revoked with
// the visit. The token is returned once and never stored.
func (m *Manager) Invite(ctx context.Context, visitID string, role store.GuestRole) (store.GuestLink, string, error) {
	if role != store.GuestParticipant && role != store.GuestObserver {
		return store.GuestLink{}, "", &InvalidError{"role", "must be participant or observer"}
	}
	v, err := m.Get(ctx, visitID)
	if err != nil {
		return store.GuestLink{}, "", err
	}
	switch {
	case v.State == store.VisitEnded:
		return store.GuestLink{}, "", ErrVisitEnded
	case v.RevokedAt != nil:
		return store.GuestLink{}, "", ErrLinkRevoked
	}
	now := m.now().UTC().Truncate(time.Millisecond)
	exp := v.LinkExpiresAt
	if exp.Before(now.Add(m.linkTTL)) {
		exp = now.Add(m.linkTTL) // like a reissued patient link: a full lifetime from now
	}
	token := auth.NewToken()
	g := store.GuestLink{ID: store.NewID("gst"), VisitID: v.ID, Role: role, LinkHash: auth.HashToken(token), CreatedAt: now, ExpiresAt: exp}
	if err := m.st.CreateGuestLink(ctx, g); err != nil {
		return store.GuestLink{}, "", fmt.Errorf("invite to %s: %w", visitID, err)
	}
	m.log.Info("guest invited", "visit", v.ID, "guest_link", g.ID, "role", string(role))
	m.record(ctx, audit.VisitInvite, v.ID, g.ID, map[string]string{"role": string(role)})
	return g, token, nil
}

// GuestLinks returns the guest links made for a visit.
func (m *Manager) GuestLinks(ctx context.Context, visitID string) ([]store.GuestLink, error) {
	return m.st.VisitGuestLinks(ctx, visitID)
}

// ParticipantFromCookie returns the participant a participant cookie names, or ErrNotFound.
// The cookie is "<participant id>.<secret>"; only the secret's hash is stored.
func (m *Manager) ParticipantFromCookie(ctx context.Context, cookie string) (store.Participant, error) {
	id, secret, ok := strings.Cut(cookie, ".")
	if !ok || !auth.WellFormedToken(secret) || len(id) > 64 {
		return store.Participant{}, ErrNotFound
	}
	p, err := m.st.ParticipantByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Participant{}, ErrNotFound
	}
	if err != nil {
		return store.Participant{}, fmt.Errorf("participant cookie: %w", err)
	}
	if p.CredentialHash == nil || subtle.ConstantTimeCompare(p.CredentialHash, auth.HashToken(secret)) != 1 {
		return store.Participant{}, &BadCookieError{VisitID: p.VisitID}
	}
	if p.RemovedAt != nil {
		return p, ErrRemoved // the participant, so the signalling can say why it may not come in
	}
	return p, nil
}

// LinkParticipant returns what a link opens and, when cookie names a participant who came
// in through that same link, that participant (a reload); otherwise a nil participant.
func (m *Manager) LinkParticipant(ctx context.Context, token, cookie string) (Link, *store.Participant, error) {
	l, err := m.ResolveLink(ctx, token)
	if err != nil {
		return Link{}, nil, err
	}
	if cookie == "" {
		return l, nil, nil
	}
	p, err := m.ParticipantFromCookie(ctx, cookie)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrRemoved) || (err == nil && (p.VisitID != l.Visit.ID || p.GuestLinkID != l.GuestLinkID() || p.UserID != "")) {
		return l, nil, nil
	}
	if err != nil {
		return Link{}, nil, err
	}
	return l, &p, nil
}

// JoinLink turns a link into a participant: the one cookie names when it came through this
// link (keeping its admission; the name is updated), else a new patient (the patient link)
// or guest (a guest link). newCookie is "" when the existing cookie stays valid.
func (m *Manager) JoinLink(ctx context.Context, token, name, cookie string) (p store.Participant, l Link, newCookie string, err error) {
	name, err = CleanName("name", name, MaxNameLength, true)
	if err != nil {
		return store.Participant{}, Link{}, "", err
	}
	l, existing, err := m.LinkParticipant(ctx, token, cookie)
	if err != nil {
		return store.Participant{}, Link{}, "", err
	}
	if existing != nil {
		if existing.Name != name {
			if err := m.st.SetParticipantName(ctx, existing.ID, name); err != nil {
				return store.Participant{}, Link{}, "", fmt.Errorf("join: %w", err)
			}
			existing.Name = name
		}
		return *existing, l, "", nil
	}
	secret := auth.NewToken()
	p = store.Participant{
		ID: store.NewID("prt"), VisitID: l.Visit.ID, Role: store.RolePatient, Name: name,
		CredentialHash: auth.HashToken(secret), CreatedAt: m.now().UTC(),
	}
	var detail map[string]string
	if l.Guest != nil {
		p.Role, p.GuestLinkID, p.Observer = store.RoleGuest, l.Guest.ID, l.Observer()
		detail = map[string]string{"guest_link": l.Guest.ID, "guest_role": string(l.Guest.Role)}
	}
	if err := m.st.CreateParticipant(ctx, p); err != nil {
		return store.Participant{}, Link{}, "", fmt.Errorf("join: %w", err)
	}
	m.log.Info("participant joined through link", "visit", l.Visit.ID, "participant", p.ID, "role", string(p.Role), "observer", p.Observer)
	jctx := audit.WithActor(ctx, joined(ctx, p))
	m.record(jctx, audit.VisitJoin, l.Visit.ID, p.ID, detail)
	return p, l, p.ID + "." + secret, nil
}

// joined is the actor of ctx as the participant p it has just become.
func joined(ctx context.Context, p store.Participant) audit.Actor {
	a := audit.ActorFrom(ctx)
	a.ID, a.Role = p.ID, string(p.Role)
	return a
}

// accountParticipant returns the participant record of a signed-in user in a visit,
// creating it (admitted: account holders never wait) on their first connection.
func (m *Manager) accountParticipant(ctx context.Context, u store.User, visitID string) (store.Participant, error) {
	ps, err := m.st.VisitParticipants(ctx, visitID)
	if err != nil {
		return store.Participant{}, err
	}
	for _, p := range ps {
		if p.UserID == u.ID {
			return p, nil
		}
	}
	now := m.now().UTC()
	p := store.Participant{ID: store.NewID("prt"), VisitID: visitID, Role: u.Role, UserID: u.ID, Name: u.Name, CreatedAt: now, AdmittedAt: &now}
	if err := m.st.CreateParticipant(ctx, p); err != nil {
		return store.Participant{}, err
	}
	return p, nil
}

// Participants returns everyone who has taken part in a visit (or joined its waiting room).
func (m *Manager) Participants(ctx context.Context, visitID string) ([]store.Participant, error) {
	return m.st.VisitParticipants(ctx, visitID)
}

// Connections returns the selected candidate pairs reported in a visit.
func (m *Manager) Connections(ctx context.Context, visitID string) ([]store.Connection, error) {
	return m.st.VisitConnections(ctx, visitID)
}

// RecordConnection keeps a participant's selected candidate pair with the visit.
func (m *Manager) RecordConnection(ctx context.Context, c store.Connection) error {
	if err := m.st.SetConnection(ctx, c); err != nil {
		return fmt.Errorf("record connection %s: %w", c.ParticipantID, err)
	}
	return nil
}

// Waiting returns who is in the visit's waiting room now.
func (m *Manager) Waiting(visitID string) []Waiting {
	if r := m.liveRoom(visitID); r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.waitingList()
	}
	return nil
}

// Admit lets a waiting participant into the call (the HTTP API's way; the clinician's page
// uses Presence.Admit).
func (m *Manager) Admit(ctx context.Context, visitID, participantID string) error {
	r := m.liveRoom(visitID)
	if r == nil {
		return ErrWrongState
	}
	return r.admit(ctx, m, participantID)
}

func (m *Manager) liveRoom(id string) *room {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rooms[id]
}

// Run looks, every SweepEvery, for live visits that another process ended or revoked, until
// ctx is done. The app runs it in one goroutine.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sweep(ctx)
		}
	}
}

func (m *Manager) sweep(ctx context.Context) {
	m.mu.Lock()
	rooms := make([]*room, 0, len(m.rooms))
	for _, r := range m.rooms {
		rooms = append(rooms, r)
	}
	m.mu.Unlock()
	for _, r := range rooms {
		v, err := m.st.VisitByID(ctx, r.id)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Warn("sweep: cannot read visit", "visit", r.id, "err", err)
			}
			continue
		}
		switch {
		case v.State == store.VisitEnded:
			m.closeRoom(r, "ended")
		case v.RevokedAt != nil:
			r.kickLinkHolders(ctx, m, "revoked")
		}
	}
}

// Shutdown says goodbye to every connected participant (the server is going away; their
// calls go on and their pages reconnect when it is back).
func (m *Manager) Shutdown() {
	m.mu.Lock()
	rooms := m.rooms
	m.rooms = map[string]*room{}
	m.mu.Unlock()
	for _, r := range rooms {
		r.mu.Lock()
		r.closed = true
		for _, mem := range r.members {
			mem.conn.Bye("server_shutdown")
		}
		r.members = nil
		r.mu.Unlock()
	}
}

// closeRoom ends a live room: everyone gets Ended, and the room is forgotten.
func (m *Manager) closeRoom(r *room, reason string) {
	m.mu.Lock()
	if m.rooms[r.id] == r {
		delete(m.rooms, r.id)
	}
	m.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, mem := range r.members {
		mem.conn.Ended(reason)
	}
	r.members = nil
	if r.mode == ModeSFU {
		m.media.CloseRoom(r.id)
	}
}

// LiveCounts reports how many rooms and connected participants there are, for metrics and
// leak tests.
func (m *Manager) LiveCounts() (rooms, members int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.rooms {
		r.mu.Lock()
		members += len(r.members)
		r.mu.Unlock()
	}
	return len(m.rooms), members
}
