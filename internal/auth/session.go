package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

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
}

// Sessions signs people in and finds their session from its cookie.
type Sessions struct {
	st       SessionStore
	idle     time.Duration
	lifetime time.Duration
	now      func() time.Time
	// dummyHash is verified against when the email is unknown, so that a sign-in takes as
	// long for an unknown account as for a wrong password.
	dummyHash string
}

// NewSessions returns a Sessions. now may be nil (time.Now).
func NewSessions(st SessionStore, idle, lifetime time.Duration, now func() time.Time) (*Sessions, error) {
	if now == nil {
		now = time.Now
	}
	h, err := HashPassword(NewToken())
	if err != nil {
		return nil, err
	}
	return &Sessions{st: st, idle: idle, lifetime: lifetime, now: now, dummyHash: h}, nil
}

// NormalizeEmail is the form emails are stored and looked up in.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// SignIn checks email and password and opens a session. It returns the cookie value (to be
// set on the client, never stored) and the user.
func (s *Sessions) SignIn(ctx context.Context, email, password string) (string, store.User, error) {
	u, err := s.st.UserByEmail(ctx, NormalizeEmail(email))
	switch {
	case errors.Is(err, store.ErrNotFound):
		VerifyPassword(s.dummyHash, password)
		return "", store.User{}, ErrBadCredentials
	case err != nil:
		return "", store.User{}, fmt.Errorf("sign in: %w", err)
	}
	ok, err := VerifyPassword(u.PasswordHash, password)
	if err != nil {
		return "", store.User{}, fmt.Errorf("sign in %s: %w", u.ID, err)
	}
	if !ok || u.Disabled {
		return "", store.User{}, ErrBadCredentials
	}
	token := NewToken() // a new id at every sign-in: no session fixation
	now := s.now().UTC()
	err = s.st.CreateSession(ctx, store.Session{IDHash: HashToken(token), UserID: u.ID, CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(s.lifetime)})
	if err != nil {
		return "", store.User{}, fmt.Errorf("sign in %s: %w", u.ID, err)
	}
	return token, u, nil
}

// touchEvery limits how often a session's last-seen time is written: at most once in this
// interval, so a busy console does not write on every request. Idle logoff is therefore
// accurate to within this interval.
const touchEvery = 15 * time.Second

// Lookup returns the user of a session cookie, refreshing its idle timer. Idle, expired and
// unknown sessions are ErrNoSession (and idle or expired ones are deleted).
func (s *Sessions) Lookup(ctx context.Context, token string) (store.User, error) {
	if !WellFormedToken(token) {
		return store.User{}, ErrNoSession
	}
	h := HashToken(token)
	sess, err := s.st.SessionByHash(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return store.User{}, ErrNoSession
	}
	if err != nil {
		return store.User{}, fmt.Errorf("session: %w", err)
	}
	now := s.now().UTC()
	if !now.Before(sess.ExpiresAt) || now.Sub(sess.LastSeenAt) >= s.idle {
		s.st.DeleteSession(ctx, h)
		return store.User{}, ErrNoSession
	}
	u, err := s.st.UserByID(ctx, sess.UserID)
	if err != nil {
		return store.User{}, fmt.Errorf("session user: %w", err)
	}
	if u.Disabled {
		return store.User{}, ErrNoSession
	}
	if now.Sub(sess.LastSeenAt) >= touchEvery {
		if err := s.st.TouchSession(ctx, h, now); err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.User{}, fmt.Errorf("session touch: %w", err)
		}
	}
	return u, nil
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
