package web

import (
	"errors"
	"net/http"
	"time"

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
	token, u, err := s.cfg.Sessions.SignIn(r.Context(), body.Email, body.Password)
	if err != nil {
		if errors.Is(err, auth.ErrBadCredentials) {
			s.log.Info("sign-in failed")
		}
		s.fail(w, r, err)
		return
	}
	s.log.Info("signed in", "user", u.ID)
	s.setCookie(w, SessionCookie, token, 0)
	writeJSON(w, http.StatusOK, map[string]any{"user": toUserJSON(u)})
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request, c *caller) {
	writeJSON(w, http.StatusOK, map[string]any{"user": toUserJSON(*c.user)})
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request, c *caller) {
	if err := s.cfg.Sessions.SignOut(r.Context(), s.cookie(r, SessionCookie)); err != nil {
		s.fail(w, r, err)
		return
	}
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
	// Participants, with the connection each reported: only in the answers about one visit.
	Participants []participantJSON `json:"participants,omitzero"`
}

// participantJSON is a participant in the visit summary, with how its media travelled.
type participantJSON struct {
	ID          string           `json:"id"`
	Role        string           `json:"role"`
	Name        string           `json:"name"`
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
	ID    string    `json:"id"`
	Name  string    `json:"name"`
	Since time.Time `json:"since"`
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
	}
	if token != "" {
		out.PatientURL = s.cfg.PublicURL + "/v/" + token
	}
	for _, w := range s.cfg.Visits.Waiting(v.ID) {
		out.Waiting = append(out.Waiting, waitingJSON{ID: w.ID, Name: w.Name, Since: w.Since})
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
		pj := participantJSON{ID: p.ID, Role: string(p.Role), Name: p.Name, Admitted: p.AdmittedAt != nil,
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
	if auth.Can(c.user.Role, auth.ActAllVisits) {
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
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	nv := visit.NewVisit{ClinicianID: c.user.ID, PatientName: body.PatientName, Privacy: body.Privacy}
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
	if !auth.CanOnVisit(*c.user, auth.ActVisitRead, v.ClinicianID) {
		s.fail(w, r, errNotFound)
		return store.Visit{}, false
	}
	if !auth.CanOnVisit(*c.user, act, v.ClinicianID) {
		s.fail(w, r, errForbidden)
		return store.Visit{}, false
	}
	return v, true
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
	v, ok := s.visitFor(w, r, c, auth.ActVisitAdmit)
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
	if v.State == store.VisitEnded {
		s.fail(w, r, visit.ErrVisitEnded)
		return
	}
	if err := s.cfg.Visits.Admit(r.Context(), v.ID, body.Participant); err != nil {
		if errors.Is(err, visit.ErrNotFound) {
			err = visit.ErrWrongState // not in the waiting room
		}
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

func (s *Server) removeParticipant(w http.ResponseWriter, r *http.Request, c *caller) {
	v, ok := s.visitFor(w, r, c, auth.ActVisitRemove)
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
	if err := s.cfg.Visits.Remove(r.Context(), v.ID, body.Participant); err != nil {
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
	v, p, err := s.cfg.Visits.LinkParticipant(r.Context(), body.Token, s.cookie(r, ParticipantCookie))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	lv, err := s.linkVisit(r, v)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"visit": lv, "participant": toLinkParticipant(p)})
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
	p, v, cookie, err := s.cfg.Visits.JoinLink(r.Context(), body.Token, body.Name, s.cookie(r, ParticipantCookie))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	lv, err := s.linkVisit(r, v)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if cookie != "" {
		// Lives as long as the link could: the browser forgets it after that.
		s.setCookie(w, ParticipantCookie, cookie, v.LinkExpiresAt.Sub(s.cfg.Now())+time.Hour)
	}
	writeJSON(w, http.StatusOK, map[string]any{"participant": toLinkParticipant(&p), "visit": lv})
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
	v, err := s.cfg.Visits.ResolveLink(r.Context(), body.Token)
	if err != nil {
		s.fail(w, r, err)
		return
	}
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
		u, err := s.user(r)
		if err != nil {
			return visit.Identity{}, err
		}
		if u != nil {
			return visit.Identity{User: u}, nil
		}
	}
	if c := s.cookie(r, ParticipantCookie); c != "" {
		p, err := s.cfg.Visits.ParticipantFromCookie(r.Context(), c)
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
	if err != nil {
		if errors.Is(err, errUnauthenticated) {
			err = &apiError{http.StatusUnauthorized, "unauthenticated", "Sign in, or open your visit link again."}
		}
		s.fail(w, r, err)
		return
	}
	s.cfg.Signal.Serve(w, r, id)
}
