package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/store"
)

// Errors of sign-in and session lookup.
var (
	// ErrBadCredentials: wrong email or password, or a disabled account. One error for all
	// three, so sign-in tells an attacker nothing about which accounts exist.
	ErrBadCredentials = errors.New("wrong email or password")
	// ErrNoSession: the cookie is missing, unknown, idle too long or past its lifetime.
	ErrNoSession = errors.New("no valid session")
)

// SessionStore is what Sessions needs of the database.
type SessionStore interface {
	UserByID(ctx context.Context, id string) (store.User, error)
	UserByEmail(ctx context.Context, email string) (store.User, error)
	CreateSession(ctx context.Context, s store.Session) error
	SessionByHash(ctx context.Context, idHash []byte) (store.Session, error)
	TouchSession(ctx context.Context, idHash []byte, at time.Time) error
	DeleteSession(ctx context.Context, idHash []byte) error
	TOTPByUser(ctx context.Context, userID string) (store.TOTP, error)
	UserPasskeys(ctx context.Context, userID string) ([]store.Passkey, error)
}

// SessionOptions are the optional parts of Sessions.
type SessionOptions struct {
	// RequireMFA: clinicians and admins must have a second factor; one without is sent to
	// set one up before anything else.
	RequireMFA bool
	// Audit records sessions ended by idle time or lifetime. nil = audit.Discard.
	Audit audit.Recorder
}

// Sessions signs people in and finds their session from its cookie.
type Sessions struct {
	st       SessionStore
	idle     time.Duration
	lifetime time.Duration
	now      func() time.Time
	opt      SessionOptions
	// dummyHash is verified against when the email is unknown, so that a sign-in takes as
	// long for an unknown account as for a wrong password. Made at the first need.
	dummyHash func() (string, error)
}

// partialLifetime bounds a session that has passed the password but not the second factor
// (or its enrollment): finish within this, or start again.
const partialLifetime = 10 * time.Minute

// NewSessions returns a Sessions. now may be nil (time.Now).
func NewSessions(st SessionStore, idle, lifetime time.Duration, now func() time.Time, opts ...SessionOptions) (*Sessions, error) {
	if now == nil {
		now = time.Now
	}
	s := &Sessions{st: st, idle: idle, lifetime: lifetime, now: now,
		dummyHash: sync.OnceValues(func() (string, error) { return HashPassword(NewToken()) })}
	for _, o := range opts {
		s.opt = o
	}
	if s.opt.Audit == nil {
		s.opt.Audit = audit.Discard
	}
	return s, nil
}

// NormalizeEmail is the form emails are stored and looked up in.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// Grant is the outcome of a sign-in step: the new cookie value (to be set on the client,
// never stored), the user and how far they got.
type Grant struct {
	Token string
	User  store.User
	Stage Stage
	// Subject is the account a refused sign-in was for, when it exists (for the audit
	// trail; never shown to the client).
	Subject string
}

// MFARequired reports whether the role must sign in with a second factor.
func (s *Sessions) MFARequired(role store.Role) bool {
	return s.opt.RequireMFA && (role == store.RoleClinician || role == store.RoleAdmin)
}

// HasSecondFactor reports whether the user has a confirmed TOTP or a passkey.
func (s *Sessions) HasSecondFactor(ctx context.Context, userID string) (bool, error) {
	t, err := s.st.TOTPByUser(ctx, userID)
	if err == nil && t.ConfirmedAt != nil {
		return true, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	pks, err := s.st.UserPasskeys(ctx, userID)
	return len(pks) > 0, err
}

// SignIn checks email and password and opens a session: a full one, or (when the account
// has a second factor, or must have one) a partial one that only finishes signing in.
func (s *Sessions) SignIn(ctx context.Context, email, password string) (Grant, error) {
	u, err := s.st.UserByEmail(ctx, NormalizeEmail(email))
	switch {
	case errors.Is(err, store.ErrNotFound):
		if h, err := s.dummyHash(); err == nil {
			VerifyPassword(h, password)
		}
		return Grant{}, ErrBadCredentials
	case err != nil:
		return Grant{}, fmt.Errorf("sign in: %w", err)
	}
	ok, err := VerifyPassword(u.PasswordHash, password)
	if err != nil {
		return Grant{Subject: u.ID}, fmt.Errorf("sign in %s: %w", u.ID, err)
	}
	if !ok || u.Disabled {
		return Grant{Subject: u.ID}, ErrBadCredentials
	}
	stage := StageFull
	has, err := s.HasSecondFactor(ctx, u.ID)
	if err != nil {
		return Grant{}, fmt.Errorf("sign in %s: %w", u.ID, err)
	}
	switch {
	case has:
		stage = StageMFA
	case s.MFARequired(u.Role):
		stage = StageEnroll
	}
	return s.open(ctx, u, stage)
}

// open makes a new session: a new id at every step, so no session fixation.
func (s *Sessions) open(ctx context.Context, u store.User, stage Stage) (Grant, error) {
	token := NewToken()
	now := s.now().UTC()
	exp := now.Add(s.lifetime)
	if stage != StageFull {
		exp = now.Add(min(partialLifetime, s.lifetime))
	}
	err := s.st.CreateSession(ctx, store.Session{IDHash: HashToken(token), UserID: u.ID, CreatedAt: now, LastSeenAt: now, ExpiresAt: exp, Stage: string(stage)})
	if err != nil {
		return Grant{}, fmt.Errorf("sign in %s: %w", u.ID, err)
	}
	return Grant{Token: token, User: u, Stage: stage}, nil
}

// touchEvery limits how often a session's last-seen time is written: at most once in this
// interval, so a busy console does not write on every request. Idle logoff is therefore
// accurate to within this interval.
const touchEvery = 15 * time.Second

// Principal is who a session cookie names, and how far they signed in.
type Principal struct {
	User      store.User
	Stage     Stage
	IDHash    []byte
	Challenge []byte // a WebAuthn ceremony in progress
}

// Lookup returns the user of a fully signed-in session, refreshing its idle timer. Idle,
// expired, unknown and half signed-in sessions are ErrNoSession.
func (s *Sessions) Lookup(ctx context.Context, token string) (store.User, error) {
	p, err := s.LookupAny(ctx, token)
	if err != nil {
		return store.User{}, err
	}
	if p.Stage != StageFull {
		return store.User{}, ErrNoSession
	}
	return p.User, nil
}

// LookupAny returns the principal of a session at any stage, refreshing its idle timer.
// Idle and expired sessions are deleted (and recorded in the audit trail).
func (s *Sessions) LookupAny(ctx context.Context, token string) (Principal, error) {
	if !WellFormedToken(token) {
		return Principal{}, ErrNoSession
	}
	h := HashToken(token)
	sess, err := s.st.SessionByHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, ErrNoSession
	}
	if err != nil {
		return Principal{}, fmt.Errorf("session: %w", err)
	}
	now := s.now().UTC()
	if reason := s.ended(sess, now); reason != "" {
		s.st.DeleteSession(ctx, h)
		e := audit.EventFrom(ctx, audit.SessionExpired)
		e.Time, e.ActorID, e.ActorRole, e.SubjectID, e.Outcome = now, sess.UserID, "", sess.UserID, reason
		s.opt.Audit.Record(ctx, e)
		return Principal{}, ErrNoSession
	}
	u, err := s.st.UserByID(ctx, sess.UserID)
	if err != nil {
		return Principal{}, fmt.Errorf("session user: %w", err)
	}
	if u.Disabled {
		return Principal{}, ErrNoSession
	}
	if now.Sub(sess.LastSeenAt) >= touchEvery {
		if err := s.touch(ctx, h, now); err != nil {
			return Principal{}, err
		}
	}
	stage := Stage(sess.Stage)
	if stage == "" {
		stage = StageFull
	}
	return Principal{User: u, Stage: stage, IDHash: h, Challenge: sess.Challenge}, nil
}

// KeepAlive refreshes the idle timer of the session with this id hash (Principal.IDHash)
// if it is still open: neither idle too long, nor past its lifetime, nor ended (signed
// out, ended by an admin). It never brings a session back. The signalling calls it while
// a signed-in clinician is in a call (docs/security.md, "Sessions").
func (s *Sessions) KeepAlive(ctx context.Context, idHash []byte) error {
	sess, err := s.st.SessionByHash(ctx, idHash)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	now := s.now().UTC()
	if s.ended(sess, now) != "" {
		return nil // gone already; the next lookup ends it
	}
	return s.touch(ctx, idHash, now)
}

// ended says why a session is over at now ("lifetime" or "idle"), or "" while it lasts.
func (s *Sessions) ended(sess store.Session, now time.Time) string {
	switch {
	case !now.Before(sess.ExpiresAt):
		return "lifetime"
	case now.Sub(sess.LastSeenAt) >= s.idle:
		return "idle"
	}
	return ""
}

// touch records activity on a session now (one deleted meanwhile is not an error).
func (s *Sessions) touch(ctx context.Context, idHash []byte, now time.Time) error {
	if err := s.st.TouchSession(ctx, idHash, now); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("session touch: %w", err)
	}
	return nil
}

// Complete ends a partial session whose second factor was just given (or set up) and opens
// a full one in its place, under a new id.
func (s *Sessions) Complete(ctx context.Context, token string) (Grant, error) {
	p, err := s.LookupAny(ctx, token)
	if err != nil {
		return Grant{}, err
	}
	if err := s.st.DeleteSession(ctx, p.IDHash); err != nil && !errors.Is(err, store.ErrNotFound) {
		return Grant{}, fmt.Errorf("complete sign-in %s: %w", p.User.ID, err)
	}
	return s.open(ctx, p.User, StageFull)
}

// SignOut ends the session of a cookie value on the server.
func (s *Sessions) SignOut(ctx context.Context, token string) error {
	if !WellFormedToken(token) {
		return nil
	}
	err := s.st.DeleteSession(ctx, HashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}
