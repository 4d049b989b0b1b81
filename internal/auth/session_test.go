package auth_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/store/sqlite"
)

// clock is a fake time source the test moves by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	idle     = 15 * time.Minute
	lifetime = 12 * time.Hour
)

type sessionsFixture struct {
	st       *sqlite.Store
	sessions *auth.Sessions
	clock    *clock
	user     store.User // rivera@clinic.example, password "rivera's password"
	disabled store.User // off@clinic.example, password "disabled password"
}

func newSessions(t *testing.T) *sessionsFixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)}
	f := &sessionsFixture{st: st, clock: clk}
	for _, u := range []struct {
		to       *store.User
		email    string
		pw       string
		disabled bool
	}{
		{&f.user, "rivera@clinic.example", "rivera's password", false},
		{&f.disabled, "off@clinic.example", "disabled password", true},
	} {
		*u.to = store.User{ID: store.NewID("usr"), Email: u.email, Name: "Dr " + u.email, Role: store.RoleClinician,
			PasswordHash: cachedHash(t, u.pw), Disabled: u.disabled, CreatedAt: clk.Now()}
		if err := st.CreateUser(ctx, *u.to); err != nil {
			t.Fatal(err)
		}
	}
	f.sessions, err = auth.NewSessions(st, idle, lifetime, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// cachedHash hashes each password once for all the tests (a hash costs tens of ms).
func cachedHash(t *testing.T, pw string) string {
	hashCache.Lock()
	defer hashCache.Unlock()
	if h, ok := hashCache.m[pw]; ok {
		return h
	}
	h := mustHash(t, pw)
	hashCache.m[pw] = h
	return h
}

var hashCache = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

func (f *sessionsFixture) signIn(t *testing.T) string {
	t.Helper()
	g, err := f.sessions.SignIn(context.Background(), "rivera@clinic.example", "rivera's password")
	if err != nil {
		t.Fatal(err)
	}
	return g.Token
}

// stored reports whether the database still holds the session of token.
func (f *sessionsFixture) stored(t *testing.T, token string) bool {
	t.Helper()
	_, err := f.st.SessionByHash(context.Background(), auth.HashToken(token))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestSignIn(t *testing.T) {
	f := newSessions(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, email, pw string
		wantErr         error
	}{
		{"right password", "rivera@clinic.example", "rivera's password", nil},
		{"email as typed", "  Rivera@Clinic.EXAMPLE ", "rivera's password", nil},
		{"wrong password", "rivera@clinic.example", "rivera's passwordx", auth.ErrBadCredentials},
		{"empty password", "rivera@clinic.example", "", auth.ErrBadCredentials},
		{"password of another account", "rivera@clinic.example", "disabled password", auth.ErrBadCredentials},
		{"unknown email", "nobody@clinic.example", "rivera's password", auth.ErrBadCredentials},
		{"empty email", "", "rivera's password", auth.ErrBadCredentials},
		{"disabled account, right password", "off@clinic.example", "disabled password", auth.ErrBadCredentials},
		{"disabled account, wrong password", "off@clinic.example", "nope nope nope", auth.ErrBadCredentials},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := f.sessions.SignIn(ctx, tc.email, tc.pw)
			tok, u := g.Token, g.User
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if err.Error() != auth.ErrBadCredentials.Error() {
					t.Errorf("error %q tells more than the one bad-credentials message", err)
				}
				if tok != "" || u.ID != "" {
					t.Errorf("a refused sign-in returned token %q user %q", tok, u.ID)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.ID != f.user.ID {
				t.Errorf("signed in as %q, want %q", u.ID, f.user.ID)
			}
			if !auth.WellFormedToken(tok) {
				t.Errorf("cookie value %q is not a token", tok)
			}
			got, err := f.sessions.Lookup(ctx, tok)
			if err != nil || got.ID != f.user.ID {
				t.Errorf("Lookup(new session) = %q, %v", got.ID, err)
			}
			s, err := f.st.SessionByHash(ctx, auth.HashToken(tok))
			if err != nil {
				t.Fatalf("the database has no session under the token's SHA-256: %v", err)
			}
			if want := f.clock.Now().Add(lifetime); !s.ExpiresAt.Equal(want) {
				t.Errorf("session expires at %v, want %v", s.ExpiresAt, want)
			}
		})
	}
}

func TestEverySignInGetsANewToken(t *testing.T) {
	f := newSessions(t)
	ctx := context.Background()
	a, b := f.signIn(t), f.signIn(t)
	if a == b {
		t.Fatal("two sign-ins got the same cookie value")
	}
	if err := f.sessions.SignOut(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sessions.Lookup(ctx, b); err != nil {
		t.Errorf("signing out one session ended the other: %v", err)
	}
}

func TestSessionLifetimes(t *testing.T) {
	type step struct {
		after time.Duration // since the previous step
		alive bool          // Lookup succeeds
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"fresh", []step{{0, true}}},
		{"idle just under 15 min", []step{{idle - time.Second, true}}},
		{"idle 15 min", []step{{idle, false}}},
		{"idle a day", []step{{24 * time.Hour, false}}},
		{"activity keeps it alive", []step{
			{10 * time.Minute, true}, {10 * time.Minute, true}, {10 * time.Minute, true},
			{14 * time.Minute, true}, // 44 min after sign-in, 14 after the last request
		}},
		{"idle after activity", []step{{10 * time.Minute, true}, {idle, false}}},
		{"expired stays expired", []step{{idle, false}, {0, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSessions(t)
			ctx := context.Background()
			tok := f.signIn(t)
			for i, s := range tc.steps {
				f.clock.Advance(s.after)
				u, err := f.sessions.Lookup(ctx, tok)
				switch {
				case s.alive && (err != nil || u.ID != f.user.ID):
					t.Fatalf("step %d: Lookup = %q, %v; want the user", i, u.ID, err)
				case !s.alive && !errors.Is(err, auth.ErrNoSession):
					t.Fatalf("step %d: Lookup = %q, %v; want ErrNoSession", i, u.ID, err)
				}
				if !s.alive && f.stored(t, tok) {
					t.Errorf("step %d: the ended session is still in the database", i)
				}
			}
		})
	}
}

func TestAbsoluteLifetime(t *testing.T) {
	f := newSessions(t)
	ctx := context.Background()
	tok := f.signIn(t)
	start := f.clock.Now()
	// A request every 10 minutes, all day.
	for f.clock.Now().Sub(start) < lifetime-10*time.Minute {
		f.clock.Advance(10 * time.Minute)
		if _, err := f.sessions.Lookup(ctx, tok); err != nil {
			t.Fatalf("%v after sign-in, with activity: %v", f.clock.Now().Sub(start), err)
		}
	}
	f.clock.Advance(start.Add(lifetime).Sub(f.clock.Now())) // exactly 12 h
	if _, err := f.sessions.Lookup(ctx, tok); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("12 h after sign-in: Lookup err = %v, want ErrNoSession", err)
	}
	if f.stored(t, tok) {
		t.Error("the expired session is still in the database")
	}
}

// TestKeepAlive: what the signalling does while a clinician is in a call keeps the session
// from idling out (an hour without a request), but never past its lifetime, and never
// brings back a session that idled out, was signed out or is unknown.
func TestKeepAlive(t *testing.T) {
	f := newSessions(t)
	ctx := context.Background()
	tok := f.signIn(t)
	h := auth.HashToken(tok)
	start := f.clock.Now()
	for range 6 { // an hour in a call, kept alive every 10 minutes
		f.clock.Advance(10 * time.Minute)
		if err := f.sessions.KeepAlive(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Advance(idle - time.Second)
	if _, err := f.sessions.Lookup(ctx, tok); err != nil {
		t.Fatalf("%v after sign-in, kept alive until %v before: %v", f.clock.Now().Sub(start), idle-time.Second, err)
	}
	// Idle out, then a keep-alive: it stays ended.
	f.clock.Advance(idle)
	if err := f.sessions.KeepAlive(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sessions.Lookup(ctx, tok); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("a keep-alive after the idle time brought the session back: %v", err)
	}
	// Signed out: a keep-alive does nothing; nor for an unknown session.
	tok2 := f.signIn(t)
	if err := f.sessions.SignOut(ctx, tok2); err != nil {
		t.Fatal(err)
	}
	if err := f.sessions.KeepAlive(ctx, auth.HashToken(tok2)); err != nil || f.stored(t, tok2) {
		t.Fatalf("keep-alive of a signed-out session: %v, stored %v", err, f.stored(t, tok2))
	}
	if err := f.sessions.KeepAlive(ctx, auth.HashToken(auth.NewToken())); err != nil {
		t.Fatalf("keep-alive of an unknown session: %v", err)
	}
	// Not past the lifetime, kept alive or not.
	tok3 := f.signIn(t)
	start = f.clock.Now()
	for f.clock.Now().Sub(start) < lifetime {
		f.clock.Advance(10 * time.Minute)
		f.sessions.KeepAlive(ctx, auth.HashToken(tok3))
	}
	if _, err := f.sessions.Lookup(ctx, tok3); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("kept alive past its lifetime: %v", err)
	}
}

func TestSignOut(t *testing.T) {
	f := newSessions(t)
	ctx := context.Background()
	tok := f.signIn(t)
	if err := f.sessions.SignOut(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if f.stored(t, tok) {
		t.Error("the session is still in the database after sign-out")
	}
	if _, err := f.sessions.Lookup(ctx, tok); !errors.Is(err, auth.ErrNoSession) {
		t.Errorf("Lookup after sign-out: err = %v, want ErrNoSession", err)
	}
	for _, tok := range []string{tok, "", "junk", auth.NewToken()} {
		if err := f.sessions.SignOut(ctx, tok); err != nil {
			t.Errorf("SignOut(%q) of no session = %v, want nil", tok, err)
		}
	}
}

func TestLookupRefuses(t *testing.T) {
	f := newSessions(t)
	ctx := context.Background()
	tok := f.signIn(t)
	for _, bad := range []string{"", "junk", tok[:42], tok + "A", auth.NewToken()} {
		if _, err := f.sessions.Lookup(ctx, bad); !errors.Is(err, auth.ErrNoSession) {
			t.Errorf("Lookup(%q) err = %v, want ErrNoSession", bad, err)
		}
	}
	// An account disabled after sign-in loses its session at once.
	if err := f.st.SetUserDisabled(ctx, f.user.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sessions.Lookup(ctx, tok); !errors.Is(err, auth.ErrNoSession) {
		t.Errorf("Lookup for a disabled account: err = %v, want ErrNoSession", err)
	}
}
