package web

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request, _ *caller) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ *caller) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	if err := s.cfg.Users.Ping(r.Context()); err != nil {
		s.log.Warn("readyz: database does not answer", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "database unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// userJSON is the API's User object.
type userJSON struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
	Role  string `json:"role"`
}

func toUserJSON(u store.User) userJSON {
	return userJSON{ID: u.ID, Email: u.Email, Name: u.Name, Role: string(u.Role)}
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request, _ *caller) {
	var body struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if body.Email == "" || body.Password == "" {
		s.fail(w, r, &visit.InvalidError{Field: "email and password", Reason: "are required"})
		return
	}
	ctx := r.Context()
	addrKey, acctKey := auth.Key{Rule: auth.RuleSignInAddress, ID: requestAddr(r)}, auth.AccountKey(body.Email)
	if err := s.cfg.Limiter.Check(ctx, addrKey, acctKey); err != nil {
		s.refused(r, err, "sign_in", "")
		s.fail(w, r, err)
		return
	}
	g, err := s.cfg.Sessions.SignIn(ctx, body.Email, body.Password)
	if err != nil {
		if errors.Is(err, auth.ErrBadCredentials) {
			s.log.Info("sign-in failed")
			// The account, when it exists, is the subject; the email typed is not recorded.
			s.record(r, audit.Event{Action: audit.SignInFailed, SubjectID: g.Subject, Outcome: "bad_credentials"})
			s.failed(r, g.Subject, "sign_in", acctKey, addrKey)
		}
		s.fail(w, r, err)
		return
	}
	s.cfg.Limiter.Clear(ctx, acctKey)
	u := g.User
	s.log.Info("signed in", "user", u.ID, "stage", string(g.Stage))
	s.setCookie(w, SessionCookie, g.Token, 0)
	switch g.Stage {
	case auth.StageMFA:
		s.record(r, audit.Event{Action: audit.SignIn, ActorID: u.ID, ActorRole: string(u.Role), Outcome: "second_factor_due"})
		st, err := s.cfg.MFA.StatusOf(ctx, u)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		methods := []string{}
		if st.TOTP {
			methods = append(methods, "totp")
		}
		if len(st.Passkeys) > 0 {
			methods = append(methods, "passkey")
		}
		if st.RecoveryCodes > 0 {
			methods = append(methods, "recovery")
		}
		writeJSON(w, http.StatusOK, map[string]any{"stage": "second_factor", "methods": methods})
	case auth.StageEnroll:
		s.record(r, audit.Event{Action: audit.SignIn, ActorID: u.ID, ActorRole: string(u.Role), Outcome: "enrollment_due"})
		writeJSON(w, http.StatusOK, map[string]any{"stage": "enroll", "user": toUserJSON(u)})
	default:
		s.record(r, audit.Event{Action: audit.SignIn, ActorID: u.ID, ActorRole: string(u.Role)})
		writeJSON(w, http.StatusOK, map[string]any{"stage": "signed_in", "user": toUserJSON(u)})
	}
}

// failed counts a failed attempt against each key, and records the lockouts it causes.
func (s *Server) failed(r *http.Request, subject, what string, keys ...auth.Key) {
	for _, k := range keys {
		locked, err := s.cfg.Limiter.Fail(r.Context(), k)
		if err != nil {
			s.log.Error("cannot count a failed attempt", "err", err)
			continue
		}
		if locked {
			s.log.Warn("locked out after repeated failures", "attempt", what, "scope", k.Rule.Scope, "minutes", int(k.Rule.LockFor.Minutes()))
			e := audit.Event{Action: audit.Lockout, SubjectID: subject, Outcome: what, Detail: map[string]string{"scope": k.Rule.Scope, "minutes": strconv.Itoa(int(k.Rule.LockFor.Minutes()))}}
			if k.Rule.Scope == "visit" {
				e.VisitID = k.ID
			}
			s.record(r, e)
		}
	}
}

// refused records an attempt refused because of a lockout.
func (s *Server) refused(r *http.Request, err error, what, visitID string) {
	var le *auth.LockedError
	if errors.As(err, &le) {
		s.record(r, audit.Event{Action: audit.RateLimited, VisitID: visitID, Outcome: what, Detail: map[string]string{"scope": le.Scope}})
	}
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request, c *caller) {
	writeJSON(w, http.StatusOK, map[string]any{"user": toUserJSON(*c.user), "emergency": c.emergency})
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request, c *caller) {
	if err := s.cfg.Sessions.SignOut(r.Context(), s.cookie(r, SessionCookie)); err != nil {
		s.fail(w, r, err)
		return
	}
	s.record(r, audit.Event{Action: audit.SignOut})
	s.setCookie(w, SessionCookie, "", 0)
	w.WriteHeader(http.StatusNoContent)
}

// visitJSON is the API's Visit object.
type visitJSON struct {
	ID            string        `json:"id"`
	State         string        `json:"state"`
	PatientName   string        `json:"patient_name"`
	Clinician     clinicianJSON `json:"clinician"`
	ScheduledAt   time.Time     `json:"scheduled_at"`
	CreatedAt     time.Time     `json:"created_at"`
	LinkExpiresAt time.Time     `json:"link_expires_at"`
	Revoked       bool          `json:"revoked"`
	EndedAt       *time.Time    `json:"ended_at"`
	ClinicianURL  string        `json:"clinician_url"`
	PatientURL    string        `json:"patient_url,omitempty"`
	Waiting       []waitingJSON `json:"waiting"`
	Privacy       bool          `json:"privacy"`
	Policy        string        `json:"policy"` // auto, p2p or sfu: when the call goes through the SFU
	Mode          string        `json:"mode"`   // p2p or sfu: how the live call goes now
	// Participants, with the connection each reported, and the guest links: only in the
	// answers about one visit.
	Participants []participantJSON `json:"participants,omitzero"`
	Guests       []guestJSON       `json:"guests,omitzero"`
}

// guestJSON is a guest link (never its token, which is shown once, when it is made).
type guestJSON struct {
	ID        string    `json:"id"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Revoked   bool      `json:"revoked"`
	GuestURL  string    `json:"guest_url,omitempty"`
}

func toGuestJSON(g store.GuestLink) guestJSON {
	return guestJSON{ID: g.ID, Role: string(g.Role), CreatedAt: g.CreatedAt, ExpiresAt: g.ExpiresAt, Revoked: g.RevokedAt != nil}
}

// participantJSON is a participant in the visit summary, with how its media travelled.
type participantJSON struct {
	ID          string           `json:"id"`
	Role        string           `json:"role"`
	Name        string           `json:"name"`
	Observer    bool             `json:"observer"`
	Admitted    bool             `json:"admitted"`
	Left        bool             `json:"left"`
	Removed     bool             `json:"removed"`
	Connections []connectionJSON `json:"connections"`
}

// connectionJSON is one selected candidate pair (docs/api.md).
type connectionJSON struct {
	Peer      string        `json:"peer"`
	Path      string        `json:"path"` // direct or relayed
	Local     candidateJSON `json:"local"`
	Remote    candidateJSON `json:"remote"`
	Since     time.Time     `json:"since"`
	UpdatedAt time.Time     `json:"updated_at"`
	Changes   int           `json:"changes"`
}

type candidateJSON struct {
	Type          string `json:"candidate_type"`
	Protocol      string `json:"protocol"`
	RelayProtocol string `json:"relay_protocol,omitempty"`
}

type clinicianJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type waitingJSON struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Since    time.Time `json:"since"`
	Role     string    `json:"role"`
	Observer bool      `json:"observer"`
}

// visitView builds the Visit object. names caches clinician names within one request.
func (s *Server) visitView(r *http.Request, v store.Visit, names map[string]string, token string) (visitJSON, error) {
	name, ok := names[v.ClinicianID]
	if !ok {
		u, err := s.cfg.Users.UserByID(r.Context(), v.ClinicianID)
		if err != nil {
			return visitJSON{}, err
		}
		name = u.Name
		names[v.ClinicianID] = name
	}
	out := visitJSON{
		ID: v.ID, State: string(v.State), PatientName: v.PatientName,
		Clinician:   clinicianJSON{ID: v.ClinicianID, Name: name},
		ScheduledAt: v.ScheduledAt, CreatedAt: v.CreatedAt, LinkExpiresAt: v.LinkExpiresAt,
		Revoked: v.RevokedAt != nil, EndedAt: v.EndedAt,
		ClinicianURL: s.cfg.PublicURL + "/console/visits/" + v.ID,
		Waiting:      []waitingJSON{},
		Privacy:      v.Privacy,
		Policy:       string(v.Policy),
		Mode:         s.cfg.Visits.Mode(v.ID),
	}
	if out.Mode == "" {
		out.Mode = visit.ModeP2P
	}
	if token != "" {
		out.PatientURL = s.cfg.PublicURL + "/v/" + token
	}
	for _, w := range s.cfg.Visits.Waiting(v.ID) {
		out.Waiting = append(out.Waiting, waitingJSON{ID: w.ID, Name: w.Name, Since: w.Since, Role: string(w.Role), Observer: w.Observer})
	}
	return out, nil
}

func (s *Server) writeVisit(w http.ResponseWriter, r *http.Request, status int, v store.Visit, token string) {
	out, err := s.visitView(r, v, map[string]string{}, token)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if out.Participants, err = s.participantsView(r, v.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	gs, err := s.cfg.Visits.GuestLinks(r.Context(), v.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out.Guests = []guestJSON{}
	for _, g := range gs {
		out.Guests = append(out.Guests, toGuestJSON(g))
	}
	writeJSON(w, status, out)
}

// participantsView lists a visit's participants with the connections they reported.
func (s *Server) participantsView(r *http.Request, visitID string) ([]participantJSON, error) {
	ps, err := s.cfg.Visits.Participants(r.Context(), visitID)
	if err != nil {
		return nil, err
	}
	cs, err := s.cfg.Visits.Connections(r.Context(), visitID)
	if err != nil {
		return nil, err
	}
	out := make([]participantJSON, 0, len(ps))
	for _, p := range ps {
		pj := participantJSON{ID: p.ID, Role: string(p.Role), Name: p.Name, Observer: p.Observer, Admitted: p.AdmittedAt != nil,
			Left: p.LeftAt != nil, Removed: p.RemovedAt != nil, Connections: []connectionJSON{}}
		for _, c := range cs {
			if c.ParticipantID != p.ID {
				continue
			}
			path := "direct"
			if c.Relayed() {
				path = "relayed"
			}
			pj.Connections = append(pj.Connections, connectionJSON{
				Peer: c.PeerID, Path: path,
				Local:  candidateJSON{Type: c.Local.Type, Protocol: c.Local.Protocol, RelayProtocol: c.Local.RelayProtocol},
				Remote: candidateJSON{Type: c.Remote.Type, Protocol: c.Remote.Protocol, RelayProtocol: c.Remote.RelayProtocol},
				Since:  c.FirstAt, UpdatedAt: c.UpdatedAt, Changes: c.Changes,
			})
		}
		out = append(out, pj)
	}
	return out, nil
}

func (s *Server) listVisits(w http.ResponseWriter, r *http.Request, c *caller) {
	now := s.cfg.Now().UTC()
	from := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	to := from.AddDate(0, 0, 1)
	for _, q := range []struct {
		name string
		dst  *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := r.URL.Query().Get(q.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				s.fail(w, r, &visit.InvalidError{Field: q.name, Reason: "must be an RFC 3339 time"})
				return
			}
			*q.dst = t
		}
	}
	if !to.After(from) || to.Sub(from) > 31*24*time.Hour {
		s.fail(w, r, &visit.InvalidError{Field: "to", Reason: "must be after from, and at most 31 days later"})
		return
	}
	clinician := c.user.ID
	if auth.Can(c.user.Role, auth.ActAllVisits) || c.emergency {
		clinician = ""
	}
	vs, err := s.cfg.Visits.List(r.Context(), clinician, from, to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	names := map[string]string{}
	out := make([]visitJSON, 0, len(vs))
	for _, v := range vs {
		vj, err := s.visitView(r, v, names, "")
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out = append(out, vj)
	}
	writeJSON(w, http.StatusOK, map[string]any{"visits": out})
}

func (s *Server) createVisit(w http.ResponseWriter, r *http.Request, c *caller) {
	var body struct {
		PatientName    string `json:"patient_name"`
		ScheduledAt    string `json:"scheduled_at"` // parsed here, so that an error names the field
		ClinicianEmail string `json:"clinician_email"`
		Privacy        bool   `json:"privacy"`
		Policy         string `json:"policy"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	nv := visit.NewVisit{ClinicianID: c.user.ID, PatientName: body.PatientName, Privacy: body.Privacy, Policy: store.MediaPolicy(body.Policy)}
	if body.ScheduledAt != "" {
		at, err := time.Parse(time.RFC3339, body.ScheduledAt)
		if err != nil {
			s.fail(w, r, &visit.InvalidError{Field: "scheduled_at", Reason: "must be an RFC 3339 time"})
			return
		}
		nv.ScheduledAt = at
	}
	if body.ClinicianEmail != "" && auth.NormalizeEmail(body.ClinicianEmail) != c.user.Email {
		if !auth.Can(c.user.Role, auth.ActCreateForOthers) {
			s.fail(w, r, errForbidden)
			return
		}
		u, err := s.cfg.Users.UserByEmail(r.Context(), auth.NormalizeEmail(body.ClinicianEmail))
		if errors.Is(err, store.ErrNotFound) {
			s.fail(w, r, &visit.InvalidError{Field: "clinician_email", Reason: "no such clinician"})
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		nv.ClinicianID = u.ID
	} else if c.user.Role != store.RoleClinician {
		s.fail(w, r, &visit.InvalidError{Field: "clinician_email", Reason: "is required: name the clinician who holds the visit"})
		return
	}
	v, token, err := s.cfg.Visits.Create(r.Context(), nv)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeVisit(w, r, http.StatusCreated, v, token)
}

// visitFor loads the visit of the request's {id} and checks that the caller may do act on
// it. A visit the caller may not see is reported as not found.
func (s *Server) visitFor(w http.ResponseWriter, r *http.Request, c *caller, act auth.Action) (store.Visit, bool) {
	v, err := s.cfg.Visits.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return store.Visit{}, false
	}
	if !auth.CanOnVisit(*c.user, auth.ActVisitRead, v.ClinicianID) && !s.breakGlass(r, c, act, v) {
		s.fail(w, r, errNotFound)
		return store.Visit{}, false
	}
	if !auth.CanOnVisit(*c.user, act, v.ClinicianID) && !s.breakGlass(r, c, act, v) {
		s.fail(w, r, errForbidden)
		return store.Visit{}, false
	}
	return v, true
}

// breakGlass reports whether the caller's emergency access lets them do act on v, which is
// not theirs; every such use is recorded and logged at WARN for the admins.
func (s *Server) breakGlass(r *http.Request, c *caller, act auth.Action, v store.Visit) bool {
	if !c.emergency || !auth.CanOnVisitEmergency(*c.user, act) {
		return false
	}
	s.log.Warn("break-glass access used", "user", c.user.ID, "visit", v.ID, "action", string(act))
	s.record(r, audit.Event{Action: audit.BreakGlassUse, VisitID: v.ID, SubjectID: v.ClinicianID, Detail: map[string]string{"action": string(act)}})
	return true
}

func (s *Server) getVisit(w http.ResponseWriter, r *http.Request, c *caller) {
	if v, ok := s.visitFor(w, r, c, auth.ActVisitRead); ok {
		s.writeVisit(w, r, http.StatusOK, v, "")
	}
}

func (s *Server) newLink(w http.ResponseWriter, r *http.Request, c *caller) {
	v, ok := s.visitFor(w, r, c, auth.ActVisitLink)
	if !ok {
		return
	}
	v, token, err := s.cfg.Visits.NewLink(r.Context(), v.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeVisit(w, r, http.StatusOK, v, token)
}

func (s *Server) revokeVisit(w http.ResponseWriter, r *http.Request, c *caller) {
	v, ok := s.visitFor(w, r, c, auth.ActVisitRevoke)
	if !ok {
		return
	}
	v, err := s.cfg.Visits.Revoke(r.Context(), v.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeVisit(w, r, http.StatusOK, v, "")
}

func (s *Server) admit(w http.ResponseWriter, r *http.Request, c *caller) {
	s.participantAction(w, r, c, auth.ActVisitAdmit, func(ctx context.Context, v store.Visit, participant string) error {
		if v.State == store.VisitEnded {
			return visit.ErrVisitEnded
		}
		err := s.cfg.Visits.Admit(ctx, v.ID, participant)
		if errors.Is(err, visit.ErrNotFound) {
			err = visit.ErrWrongState // not in the waiting room
		}
		return err
	})
}

func (s *Server) removeParticipant(w http.ResponseWriter, r *http.Request, c *caller) {
	s.participantAction(w, r, c, auth.ActVisitRemove, func(ctx context.Context, v store.Visit, participant string) error {
		return s.cfg.Visits.Remove(ctx, v.ID, participant)
	})
}

// participantAction is a clinician's action on one participant of a visit (admit,
// remove): the caller's right to act on the visit, the body {"participant": "prt_..."},
// the action, and the visit as it is afterwards.
func (s *Server) participantAction(w http.ResponseWriter, r *http.Request, c *caller, act auth.Action,
	do func(ctx context.Context, v store.Visit, participant string) error) {
	v, ok := s.visitFor(w, r, c, act)
	if !ok {
		return
	}
	var body struct {
		Participant string `json:"participant"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if body.Participant == "" {
		s.fail(w, r, &visit.InvalidError{Field: "participant", Reason: "is required"})
		return
	}
	if err := do(r.Context(), v, body.Participant); err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := s.cfg.Visits.Get(r.Context(), v.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeVisit(w, r, http.StatusOK, v, "")
}

func (s *Server) endVisit(w http.ResponseWriter, r *http.Request, c *caller) {
	v, ok := s.visitFor(w, r, c, auth.ActVisitEnd)
	if !ok {
		return
	}
	v, err := s.cfg.Visits.End(r.Context(), v.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeVisit(w, r, http.StatusOK, v, "")
}

// invite makes a guest link (participant or observer) for the visit.
func (s *Server) invite(w http.ResponseWriter, r *http.Request, c *caller) {
	v, ok := s.visitFor(w, r, c, auth.ActVisitInvite)
	if !ok {
		return
	}
	var body struct {
		Role string `json:"role"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	g, token, err := s.cfg.Visits.Invite(r.Context(), v.ID, store.GuestRole(body.Role))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := toGuestJSON(g)
	out.GuestURL = s.cfg.PublicURL + "/v/" + token
	writeJSON(w, http.StatusCreated, out)
}

// linkVisitJSON is what a link holder learns of the visit: no patient name, no ids of
// anyone else.
type linkVisitJSON struct {
	ID            string    `json:"id"`
	State         string    `json:"state"`
	ClinicianName string    `json:"clinician_name"`
	ScheduledAt   time.Time `json:"scheduled_at"`
}

type linkParticipantJSON struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Admitted bool   `json:"admitted"`
}

// linkInviteJSON says what a guest link makes its holder: a participant (camera and
// microphone) or an observer. It is null for the patient link.
type linkInviteJSON struct {
	Role string `json:"role"`
}

func toLinkInvite(l visit.Link) *linkInviteJSON {
	if l.Guest == nil {
		return nil
	}
	return &linkInviteJSON{Role: string(l.Guest.Role)}
}

func (s *Server) linkVisit(r *http.Request, v store.Visit) (linkVisitJSON, error) {
	u, err := s.cfg.Users.UserByID(r.Context(), v.ClinicianID)
	if err != nil {
		return linkVisitJSON{}, err
	}
	return linkVisitJSON{ID: v.ID, State: string(v.State), ClinicianName: u.Name, ScheduledAt: v.ScheduledAt}, nil
}

func toLinkParticipant(p *store.Participant) *linkParticipantJSON {
	if p == nil {
		return nil
	}
	return &linkParticipantJSON{ID: p.ID, Name: p.Name, Admitted: p.AdmittedAt != nil}
}

func (s *Server) resolveLink(w http.ResponseWriter, r *http.Request, _ *caller) {
	var body struct {
		Token string `json:"token"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.linkGuard(r, body.Token); err != nil {
		s.fail(w, r, err)
		return
	}
	l, p, err := s.cfg.Visits.LinkParticipant(r.Context(), body.Token, s.cookie(r, ParticipantCookie))
	if err != nil {
		s.linkFailed(r, err)
		s.fail(w, r, err)
		return
	}
	lv, err := s.linkVisit(r, l.Visit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"visit": lv, "participant": toLinkParticipant(p), "invite": toLinkInvite(l)})
}

func (s *Server) joinLink(w http.ResponseWriter, r *http.Request, _ *caller) {
	var body struct {
		Token string `json:"token"`
		Name  string `json:"name"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.linkGuard(r, body.Token); err != nil {
		s.fail(w, r, err)
		return
	}
	p, l, cookie, err := s.cfg.Visits.JoinLink(r.Context(), body.Token, body.Name, s.cookie(r, ParticipantCookie))
	if err != nil {
		s.linkFailed(r, err)
		s.fail(w, r, err)
		return
	}
	v := l.Visit
	lv, err := s.linkVisit(r, v)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if cookie != "" {
		// Lives as long as the link could: the browser forgets it after that.
		s.setCookie(w, ParticipantCookie, cookie, v.LinkExpiresAt.Sub(s.cfg.Now())+time.Hour)
	}
	writeJSON(w, http.StatusOK, map[string]any{"participant": toLinkParticipant(&p), "visit": lv, "invite": toLinkInvite(l)})
}

// linkGuard refuses link attempts from an address that guessed too many links, and for a
// visit whose participant cookies were guessed at; it counts a participant cookie with a
// wrong secret against its visit.
func (s *Server) linkGuard(r *http.Request, token string) error {
	ctx := r.Context()
	keys := []auth.Key{{Rule: auth.RuleLinkAddress, ID: requestAddr(r)}}
	visitID := ""
	if l, err := s.cfg.Visits.ResolveLink(ctx, token); err == nil || !errors.Is(err, visit.ErrLinkUnknown) {
		visitID = l.Visit.ID
		if visitID != "" {
			keys = append(keys, auth.Key{Rule: auth.RuleLinkVisit, ID: visitID})
		}
	}
	if err := s.cfg.Limiter.Check(ctx, keys...); err != nil {
		s.refused(r, err, "link", visitID)
		return err
	}
	if c := s.cookie(r, ParticipantCookie); c != "" {
		s.checkCookie(r, c)
	}
	return nil
}

// checkCookie counts a participant cookie that names a participant but holds the wrong
// secret against that participant's visit.
func (s *Server) checkCookie(r *http.Request, cookie string) {
	_, err := s.cfg.Visits.ParticipantFromCookie(r.Context(), cookie)
	var bad *visit.BadCookieError
	if errors.As(err, &bad) {
		s.record(r, audit.Event{Action: audit.LinkFailed, VisitID: bad.VisitID, Outcome: "bad_participant_cookie"})
		s.failed(r, "", "participant_cookie", auth.Key{Rule: auth.RuleLinkVisit, ID: bad.VisitID})
	}
}

// linkFailed records a link that opened nothing (the token itself is never recorded) and
// counts an unknown one against the address.
func (s *Server) linkFailed(r *http.Request, err error) {
	code := httpError(err).code
	switch code {
	case "link_unknown", "link_expired", "link_revoked", "visit_ended":
		s.record(r, audit.Event{Action: audit.LinkFailed, Outcome: code})
	}
	if code == "link_unknown" {
		s.failed(r, "", "link", auth.Key{Rule: auth.RuleLinkAddress, ID: requestAddr(r)})
	}
}

// linkICE hands the patient's device check a short-lived relay credential for the visit,
// so the page can test that the call will connect before the patient joins. The link's
// token (in the body, never the URL) is the authorisation.
func (s *Server) linkICE(w http.ResponseWriter, r *http.Request, _ *caller) {
	var body struct {
		Token string `json:"token"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.linkGuard(r, body.Token); err != nil {
		s.fail(w, r, err)
		return
	}
	l, err := s.cfg.Visits.ResolveLink(r.Context(), body.Token)
	if err != nil {
		s.linkFailed(r, err)
		s.fail(w, r, err)
		return
	}
	v := l.Visit
	ice := ICEConfig{Servers: []ICEServer{}, Policy: "all"}
	if s.cfg.CheckICE != nil {
		ice = s.cfg.CheckICE(v)
	}
	var expires *time.Time
	if !ice.Expires.IsZero() {
		e := ice.Expires.UTC()
		expires = &e
	}
	writeJSON(w, http.StatusOK, map[string]any{"ice_servers": ice.Servers, "ice_transport_policy": ice.Policy, "expires_at": expires})
}

// identify returns who a WebSocket request's cookies name. Patients' pages connect with
// ?as=participant, so that a browser that also holds a staff session joins as the patient.
func (s *Server) identify(r *http.Request) (visit.Identity, error) {
	if r.URL.Query().Get("as") != "participant" {
		p, err := s.principal(r)
		if err != nil {
			return visit.Identity{}, err
		}
		if p != nil && p.Stage == auth.StageFull {
			u, h := p.User, p.IDHash
			return visit.Identity{User: &u, KeepAlive: func(ctx context.Context) error {
				return s.cfg.Sessions.KeepAlive(ctx, h)
			}}, nil
		}
	}
	if c := s.cookie(r, ParticipantCookie); c != "" {
		p, err := s.cfg.Visits.ParticipantFromCookie(r.Context(), c)
		var bad *visit.BadCookieError
		if errors.As(err, &bad) {
			s.checkCookie(r, c)
		}
		if err == nil || errors.Is(err, visit.ErrRemoved) {
			// A removed participant is let through to hear "removed" from the signalling.
			return visit.Identity{Participant: &p}, nil
		}
		if !errors.Is(err, visit.ErrNotFound) {
			return visit.Identity{}, err
		}
	}
	return visit.Identity{}, errUnauthenticated
}

func (s *Server) websocket(w http.ResponseWriter, r *http.Request, _ *caller) {
	id, err := s.identify(r)
	if id.User != nil {
		if id.Emergency, err = s.emergency(r.Context(), *id.User); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if err != nil {
		if errors.Is(err, errUnauthenticated) {
			err = &apiError{status: http.StatusUnauthorized, code: "unauthenticated", message: "Sign in, or open your visit link again."}
		}
		s.fail(w, r, err)
		return
	}
	a := audit.ActorFrom(r.Context())
	if id.User != nil {
		a.ID, a.Role = id.User.ID, string(id.User.Role)
	} else if id.Participant != nil {
		a.ID, a.Role = id.Participant.ID, string(id.Participant.Role)
	}
	s.cfg.Signal.Serve(w, r.WithContext(audit.WithActor(r.Context(), a)), id)
}
