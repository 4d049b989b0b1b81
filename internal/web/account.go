package web

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

// Second factor at sign-in: the session is at stage mfa (routes with auth.ActSecondFactor).

func (s *Server) signInTOTP(w http.ResponseWriter, r *http.Request, c *caller) {
	var body struct {
		Code string `json:"code"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	s.secondFactor(w, r, c, "totp", func() error { return s.cfg.MFA.VerifyTOTP(r.Context(), *c.user, body.Code) })
}

func (s *Server) signInRecovery(w http.ResponseWriter, r *http.Request, c *caller) {
	var body struct {
		Code string `json:"code"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	s.secondFactor(w, r, c, "recovery", func() error { return s.cfg.MFA.UseRecoveryCode(r.Context(), *c.user, body.Code) })
}

func (s *Server) passkeyLoginBegin(w http.ResponseWriter, r *http.Request, c *caller) {
	if err := s.cfg.Limiter.Check(r.Context(), auth.Key{Rule: auth.RuleSecondFactor, ID: c.user.ID}); err != nil {
		s.refused(r, err, "second_factor", "")
		s.fail(w, r, err)
		return
	}
	opts, err := s.cfg.MFA.BeginPasskeyLogin(r.Context(), *c.user, c.principal.IDHash)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, opts)
}

func (s *Server) passkeyLoginFinish(w http.ResponseWriter, r *http.Request, c *caller) {
	body, err := readBody(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.secondFactor(w, r, c, "passkey", func() error {
		return s.cfg.MFA.FinishPasskeyLogin(r.Context(), *c.user, c.principal.IDHash, c.principal.Challenge, body)
	})
}

// readBody reads a raw JSON body (a WebAuthn answer, parsed by the library), at most maxBody.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "too_large", message: "The request body is too large."}
	}
	return b, err
}

// secondFactor runs one second-factor check of a half signed-in session: refused while the
// account is locked out; a failure is counted (five lock the second factor for 15 minutes);
// a success replaces the session with a full one under a new id.
func (s *Server) secondFactor(w http.ResponseWriter, r *http.Request, c *caller, method string, verify func() error) {
	ctx := r.Context()
	key := auth.Key{Rule: auth.RuleSecondFactor, ID: c.user.ID}
	if err := s.cfg.Limiter.Check(ctx, key); err != nil {
		s.refused(r, err, "second_factor", "")
		s.fail(w, r, err)
		return
	}
	if err := verify(); err != nil {
		if errors.Is(err, auth.ErrBadCode) {
			s.record(r, audit.Event{Action: audit.MFAFailed, Outcome: "bad_code", Detail: map[string]string{"method": method}})
			s.failed(r, c.user.ID, "second_factor", key)
		}
		s.fail(w, r, err)
		return
	}
	s.cfg.Limiter.Clear(ctx, key)
	g, err := s.cfg.Sessions.Complete(ctx, s.cookie(r, SessionCookie))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.record(r, audit.Event{Action: audit.MFAPassed, Detail: map[string]string{"method": method}})
	s.log.Info("second factor accepted", "user", c.user.ID, "method", method)
	s.setCookie(w, SessionCookie, g.Token, 0)
	writeJSON(w, http.StatusOK, map[string]any{"stage": "signed_in", "user": toUserJSON(g.User)})
}

// Enrollment and management of one's own second factors.

type passkeyJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

func (s *Server) stageName(c *caller) string {
	if c.principal.Stage == auth.StageEnroll {
		return "enroll"
	}
	return "signed_in"
}

func (s *Server) mfaStatus(w http.ResponseWriter, r *http.Request, c *caller) {
	st, err := s.cfg.MFA.StatusOf(r.Context(), *c.user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pks := []passkeyJSON{}
	for _, p := range st.Passkeys {
		pks = append(pks, passkeyJSON{p.ID, p.Name, p.CreatedAt, p.LastUsedAt})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"user": toUserJSON(*c.user), "stage": s.stageName(c), "required": s.cfg.Sessions.MFARequired(c.user.Role),
		"totp": st.TOTP, "totp_pending": st.TOTPPending, "passkeys": pks, "recovery_codes_left": st.RecoveryCodes,
	})
}

func (s *Server) totpBegin(w http.ResponseWriter, r *http.Request, c *caller) {
	setup, err := s.cfg.MFA.BeginTOTP(r.Context(), *c.user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"secret": setup.Secret, "otpauth_url": setup.URL, "qr": "/api/v1/mfa/totp/qr.png"})
}

func (s *Server) totpQR(w http.ResponseWriter, r *http.Request, c *caller) {
	png, err := s.cfg.MFA.TOTPQR(r.Context(), *c.user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-store") // it holds the secret
	w.Write(png)
}

// enrolled finishes an enrollment: recorded, and a session that had to enroll first is
// replaced by a full one under a new id.
func (s *Server) enrolled(w http.ResponseWriter, r *http.Request, c *caller, method string, codes []string, extra map[string]any) {
	s.record(r, audit.Event{Action: audit.MFAEnroll, Detail: map[string]string{"method": method}})
	if codes != nil {
		s.record(r, audit.Event{Action: audit.RecoveryCodes})
	}
	out := map[string]any{"stage": "signed_in", "user": toUserJSON(*c.user), "recovery_codes": codes}
	for k, v := range extra {
		out[k] = v
	}
	if c.principal.Stage == auth.StageEnroll {
		g, err := s.cfg.Sessions.Complete(r.Context(), s.cookie(r, SessionCookie))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.setCookie(w, SessionCookie, g.Token, 0)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) totpConfirm(w http.ResponseWriter, r *http.Request, c *caller) {
	var body struct {
		Code string `json:"code"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	codes, err := s.cfg.MFA.ConfirmTOTP(r.Context(), *c.user, body.Code)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.enrolled(w, r, c, "totp", codes, nil)
}

func (s *Server) passkeyRegisterBegin(w http.ResponseWriter, r *http.Request, c *caller) {
	opts, err := s.cfg.MFA.BeginPasskeyRegistration(r.Context(), *c.user, c.principal.IDHash)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, opts)
}

func (s *Server) passkeyRegisterFinish(w http.ResponseWriter, r *http.Request, c *caller) {
	name, err := visit.CleanName("name", r.URL.Query().Get("name"), 60, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pk, err := s.cfg.MFA.FinishPasskeyRegistration(r.Context(), *c.user, c.principal.IDHash, c.principal.Challenge, body, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st, err := s.cfg.MFA.StatusOf(r.Context(), *c.user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var codes []string
	if st.RecoveryCodes == 0 {
		if codes, err = s.cfg.MFA.NewRecoveryCodes(r.Context(), *c.user); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	s.enrolled(w, r, c, "passkey", codes, map[string]any{"passkey": passkeyJSON{pk.ID, pk.Name, pk.CreatedAt, pk.LastUsedAt}})
}

// keepsAFactor refuses to remove the last second factor of an account that must have one.
func (s *Server) keepsAFactor(r *http.Request, c *caller, removingTOTP bool, passkeyID string) error {
	if !s.cfg.Sessions.MFARequired(c.user.Role) {
		return nil
	}
	st, err := s.cfg.MFA.StatusOf(r.Context(), *c.user)
	if err != nil {
		return err
	}
	left := len(st.Passkeys)
	if passkeyID != "" {
		for _, p := range st.Passkeys {
			if p.ID == passkeyID {
				left--
			}
		}
	}
	if st.TOTP && !removingTOTP {
		left++
	}
	if left == 0 {
		return auth.ErrLastFactor
	}
	return nil
}

func (s *Server) totpRemove(w http.ResponseWriter, r *http.Request, c *caller) {
	if err := s.keepsAFactor(r, c, true, ""); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.MFA.RemoveTOTP(r.Context(), *c.user); err != nil {
		s.fail(w, r, err)
		return
	}
	s.record(r, audit.Event{Action: audit.MFARemove, Detail: map[string]string{"method": "totp"}})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) passkeyRemove(w http.ResponseWriter, r *http.Request, c *caller) {
	id := r.PathValue("id")
	if err := s.keepsAFactor(r, c, false, id); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.MFA.RemovePasskey(r.Context(), *c.user, id); err != nil {
		if errors.Is(err, auth.ErrNoFactor) {
			err = errNotFound
		}
		s.fail(w, r, err)
		return
	}
	s.record(r, audit.Event{Action: audit.MFARemove, Detail: map[string]string{"method": "passkey"}})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) recoveryCodes(w http.ResponseWriter, r *http.Request, c *caller) {
	st, err := s.cfg.MFA.StatusOf(r.Context(), *c.user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !st.Any() {
		s.fail(w, r, auth.ErrNoFactor)
		return
	}
	codes, err := s.cfg.MFA.NewRecoveryCodes(r.Context(), *c.user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.record(r, audit.Event{Action: audit.RecoveryCodes})
	writeJSON(w, http.StatusOK, map[string]any{"recovery_codes": codes})
}

// Administration.

type adminUserJSON struct {
	userJSON
	Disabled       bool       `json:"disabled"`
	CreatedAt      time.Time  `json:"created_at"`
	SecondFactor   bool       `json:"second_factor"`
	Sessions       int        `json:"sessions"`
	EmergencyUntil *time.Time `json:"emergency_until"`
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, c *caller) {
	ctx := r.Context()
	users, err := s.cfg.Users.ListUsers(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.cfg.Now()
	grants, err := s.cfg.Users.BreakGlassGrants(ctx, "", now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := []adminUserJSON{}
	for _, u := range users {
		st, err := s.cfg.MFA.StatusOf(ctx, u)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		n, err := s.cfg.Users.CountUserSessions(ctx, u.ID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		a := adminUserJSON{userJSON: toUserJSON(u), Disabled: u.Disabled, CreatedAt: u.CreatedAt, SecondFactor: st.Any(), Sessions: n}
		for _, g := range grants {
			if g.UserID == u.ID && g.Active(now) {
				t := g.ExpiresAt
				a.EmergencyUntil = &t
			}
		}
		out = append(out, a)
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

// targetUser loads the {id} of an admin route.
func (s *Server) targetUser(w http.ResponseWriter, r *http.Request) (store.User, bool) {
	u, err := s.cfg.Users.UserByID(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		err = errNotFound
	}
	if err != nil {
		s.fail(w, r, err)
		return store.User{}, false
	}
	return u, true
}

func (s *Server) endUserSessions(w http.ResponseWriter, r *http.Request, c *caller) {
	u, ok := s.targetUser(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Users.DeleteUserSessions(r.Context(), u.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Info("an admin ended a user's sessions", "admin", c.user.ID, "user", u.ID)
	s.record(r, audit.Event{Action: audit.SessionsEnded, SubjectID: u.ID})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) resetUserMFA(w http.ResponseWriter, r *http.Request, c *caller) {
	u, ok := s.targetUser(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	if err := s.cfg.Users.DeleteSecondFactors(ctx, u.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.Users.DeleteUserSessions(ctx, u.ID); err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Warn("an admin reset a user's second factors", "admin", c.user.ID, "user", u.ID)
	s.record(r, audit.Event{Action: audit.MFAReset, SubjectID: u.ID})
	w.WriteHeader(http.StatusNoContent)
}

// MaxBreakGlass is the longest emergency access an admin may grant at once.
const MaxBreakGlass = 12 * time.Hour

type breakGlassJSON struct {
	ID        string     `json:"id"`
	User      userJSON   `json:"user"`
	GrantedBy string     `json:"granted_by"`
	Reason    string     `json:"reason"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at"`
	Active    bool       `json:"active"`
}

func (s *Server) grantBreakGlass(w http.ResponseWriter, r *http.Request, c *caller) {
	u, ok := s.targetUser(w, r)
	if !ok {
		return
	}
	var body struct {
		Duration string `json:"duration"`
		Reason   string `json:"reason"`
	}
	if err := decode(w, r, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	d, err := time.ParseDuration(body.Duration)
	if err != nil || d < time.Minute || d > MaxBreakGlass {
		s.fail(w, r, &visit.InvalidError{Field: "duration", Reason: "must be a duration from 1m to 12h, such as 1h"})
		return
	}
	reason := strings.TrimSpace(body.Reason)
	if n := utf8.RuneCountInString(reason); n < 10 || n > 500 {
		s.fail(w, r, &visit.InvalidError{Field: "reason", Reason: "must say why, in 10 to 500 characters"})
		return
	}
	if u.Role != store.RoleClinician || u.Disabled {
		s.fail(w, r, &visit.InvalidError{Field: "user", Reason: "break-glass is for active clinician accounts"})
		return
	}
	g, err := grantBreakGlass(r.Context(), s.cfg.Users, u, c.user.ID, reason, s.cfg.Now(), d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.log.Warn("BREAK-GLASS granted: emergency access to every visit", "admin", c.user.ID, "user", u.ID, "until", g.ExpiresAt.Format(time.RFC3339))
	// The reason stays in the grant (shown to admins), out of the trail: it may be clinical.
	s.record(r, audit.Event{Action: audit.BreakGlassGrant, SubjectID: u.ID, Detail: map[string]string{"grant": g.ID, "minutes": strconv.Itoa(int(d.Minutes()))}})
	writeJSON(w, http.StatusCreated, s.breakGlassView(g, u, s.cfg.Now()))
}

// grantBreakGlass stores a grant.
func grantBreakGlass(ctx context.Context, st Users, u store.User, by, reason string, now time.Time, d time.Duration) (store.BreakGlass, error) {
	now = now.UTC().Truncate(time.Millisecond)
	g := store.BreakGlass{ID: store.NewID("brk"), UserID: u.ID, GrantedBy: by, Reason: reason, CreatedAt: now, ExpiresAt: now.Add(d)}
	return g, st.CreateBreakGlass(ctx, g)
}

func (s *Server) breakGlassView(g store.BreakGlass, u store.User, now time.Time) breakGlassJSON {
	return breakGlassJSON{ID: g.ID, User: toUserJSON(u), GrantedBy: g.GrantedBy, Reason: g.Reason, CreatedAt: g.CreatedAt,
		ExpiresAt: g.ExpiresAt, RevokedAt: g.RevokedAt, Active: g.Active(now)}
}

func (s *Server) revokeBreakGlass(w http.ResponseWriter, r *http.Request, c *caller) {
	u, ok := s.targetUser(w, r)
	if !ok {
		return
	}
	n, err := s.cfg.Users.RevokeBreakGlass(r.Context(), u.ID, s.cfg.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if n == 0 {
		s.fail(w, r, &apiError{status: http.StatusConflict, code: "wrong_state", message: "This account has no emergency access to withdraw."})
		return
	}
	s.log.Warn("break-glass withdrawn", "admin", c.user.ID, "user", u.ID)
	s.record(r, audit.Event{Action: audit.BreakGlassEnd, SubjectID: u.ID})
	w.WriteHeader(http.StatusNoContent)
}

// listBreakGlass is the admins' alert: grants active now or ended in the last 7 days.
func (s *Server) listBreakGlass(w http.ResponseWriter, r *http.Request, c *caller) {
	ctx := r.Context()
	now := s.cfg.Now()
	grants, err := s.cfg.Users.BreakGlassGrants(ctx, "", now.Add(-7*24*time.Hour))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := []breakGlassJSON{}
	for _, g := range grants {
		u, err := s.cfg.Users.UserByID(ctx, g.UserID)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out = append(out, s.breakGlassView(g, u, now))
	}
	writeJSON(w, http.StatusOK, map[string]any{"grants": out})
}

// searchAudit is the admins' search of the trail: by visit, user (actor or subject), action
// and time, newest first, a page at a time.
func (s *Server) searchAudit(w http.ResponseWriter, r *http.Request, c *caller) {
	q := r.URL.Query()
	var aq audit.Query
	aq.VisitID, aq.UserID, aq.Action = strings.TrimSpace(q.Get("visit")), strings.TrimSpace(q.Get("user")), audit.Action(strings.TrimSpace(q.Get("action")))
	if e := strings.TrimSpace(q.Get("email")); e != "" && aq.UserID == "" {
		u, err := s.cfg.Users.UserByEmail(r.Context(), auth.NormalizeEmail(e))
		if errors.Is(err, store.ErrNotFound) {
			s.fail(w, r, &visit.InvalidError{Field: "email", Reason: "no account has this email"})
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		aq.UserID = u.ID
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"from", &aq.From}, {"to", &aq.To}} {
		v := q.Get(f.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			if t, err = time.Parse(time.DateOnly, v); err != nil {
				s.fail(w, r, &visit.InvalidError{Field: f.name, Reason: "must be an RFC 3339 time or a date YYYY-MM-DD"})
				return
			}
			if f.name == "to" {
				t = t.AddDate(0, 0, 1) // the whole day
			}
		}
		*f.dst = t
	}
	for _, f := range []struct {
		name string
		dst  *int
	}{{"limit", &aq.Limit}} {
		if v := q.Get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1000 {
				s.fail(w, r, &visit.InvalidError{Field: f.name, Reason: "must be a number from 1 to 1000"})
				return
			}
			*f.dst = n
		}
	}
	if aq.Limit == 0 {
		aq.Limit = 100
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			s.fail(w, r, &visit.InvalidError{Field: "before", Reason: "must be a row number"})
			return
		}
		aq.BeforeSeq = n
	}
	for _, v := range []string{aq.VisitID, aq.UserID, string(aq.Action)} {
		if len(v) > 64 {
			s.fail(w, r, &visit.InvalidError{Field: "query", Reason: "a search term is too long"})
			return
		}
	}
	entries, err := s.cfg.Users.SearchAudit(r.Context(), aq)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]audit.JSONEntry, 0, len(entries))
	for _, en := range entries {
		out = append(out, en.ToJSON())
	}
	var next *int64
	if len(entries) == aq.Limit && len(entries) > 0 {
		n := entries[len(entries)-1].Seq
		next = &n
	}
	detail := map[string]string{}
	for k, v := range map[string]string{"visit": aq.VisitID, "user": aq.UserID, "action": string(aq.Action)} {
		if v != "" {
			detail[k] = v
		}
	}
	if !aq.From.IsZero() {
		detail["from"] = aq.From.UTC().Format(time.RFC3339)
	}
	if !aq.To.IsZero() {
		detail["to"] = aq.To.UTC().Format(time.RFC3339)
	}
	if aq.BeforeSeq == 0 { // paging through one search is one search
		s.record(r, audit.Event{Action: audit.AuditSearch, VisitID: aq.VisitID, Detail: detail})
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": out, "next_before": next})
}
