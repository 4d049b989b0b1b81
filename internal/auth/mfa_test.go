package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
)

func newMFA(t *testing.T, f *sessionsFixture) *auth.MFA {
	t.Helper()
	m, err := auth.NewMFA(f.st, auth.MFAConfig{Issuer: "Bedside (clinic.example)", RPID: "clinic.example", RPOrigins: []string{"https://clinic.example"}, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enroll sets up TOTP for the fixture's user and returns the secret and recovery codes.
func enroll(t *testing.T, f *sessionsFixture, m *auth.MFA) (string, []string) {
	t.Helper()
	ctx := context.Background()
	setup, err := m.BeginTOTP(ctx, f.user)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(setup.URL, "otpauth://totp/") || !strings.Contains(setup.URL, "secret="+setup.Secret) {
		t.Fatalf("otpauth URL %q", setup.URL)
	}
	if png, err := m.TOTPQR(ctx, f.user); err != nil || len(png) < 100 || string(png[1:4]) != "PNG" {
		t.Fatalf("QR code: %d bytes, %v", len(png), err)
	}
	codes, err := m.ConfirmTOTP(ctx, f.user, code(t, setup.Secret, f.clock.Now()))
	if err != nil || len(codes) != auth.RecoveryCodeCount {
		t.Fatalf("ConfirmTOTP: %v, %d codes", err, len(codes))
	}
	if _, err := m.TOTPQR(ctx, f.user); !errors.Is(err, auth.ErrNoFactor) {
		t.Errorf("the QR code of a confirmed secret is still served: %v", err)
	}
	return setup.Secret, codes
}

func TestTOTPCodesAreSingleUse(t *testing.T) {
	f := newSessions(t)
	m := newMFA(t, f)
	ctx := context.Background()
	secret, _ := enroll(t, f, m)

	// The code that confirmed the enrollment cannot sign in: it was used.
	if err := m.VerifyTOTP(ctx, f.user, code(t, secret, f.clock.Now())); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("the enrollment code signed in: %v", err)
	}
	f.clock.Advance(30 * time.Second)
	c := code(t, secret, f.clock.Now())
	if err := m.VerifyTOTP(ctx, f.user, c); err != nil {
		t.Fatalf("a fresh code: %v", err)
	}
	if err := m.VerifyTOTP(ctx, f.user, c); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("a replayed code: %v, want ErrBadCode", err)
	}
	// Within the same 30 s, nothing more; an older code never again.
	f.clock.Advance(10 * time.Second)
	if err := m.VerifyTOTP(ctx, f.user, code(t, secret, f.clock.Now())); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("a second code of the same step: %v", err)
	}
	f.clock.Advance(30 * time.Second)
	if err := m.VerifyTOTP(ctx, f.user, code(t, secret, f.clock.Now().Add(-60*time.Second))); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("an old code: %v", err)
	}
	// A phone 30 s ahead still works (one step of skew), 90 s does not.
	if err := m.VerifyTOTP(ctx, f.user, code(t, secret, f.clock.Now().Add(30*time.Second))); err != nil {
		t.Fatalf("a code 30 s ahead: %v", err)
	}
	f.clock.Advance(2 * time.Minute)
	for _, bad := range []string{code(t, secret, f.clock.Now().Add(90*time.Second)), "", "12345", "1234567", "abcdef", strings.Repeat("9", 200)} {
		if err := m.VerifyTOTP(ctx, f.user, bad); !errors.Is(err, auth.ErrBadCode) {
			t.Errorf("VerifyTOTP(%q) = %v, want ErrBadCode", bad, err)
		}
	}
}

func TestTOTPEnrollment(t *testing.T) {
	f := newSessions(t)
	m := newMFA(t, f)
	ctx := context.Background()
	setup, err := m.BeginTOTP(ctx, f.user)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.VerifyTOTP(ctx, f.user, code(t, setup.Secret, f.clock.Now())); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("an unconfirmed secret signed in: %v", err)
	}
	if _, err := m.ConfirmTOTP(ctx, f.user, "000000"); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("wrong confirmation code: %v", err)
	}
	// Starting again replaces the pending secret.
	again, _ := m.BeginTOTP(ctx, f.user)
	if again.Secret == setup.Secret {
		t.Fatal("a new enrollment kept the secret")
	}
	if _, err := m.ConfirmTOTP(ctx, f.user, code(t, setup.Secret, f.clock.Now())); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("the replaced secret confirmed: %v", err)
	}
	if _, err := m.ConfirmTOTP(ctx, f.user, code(t, again.Secret, f.clock.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := m.BeginTOTP(ctx, f.user); !errors.Is(err, auth.ErrEnrolled) {
		t.Fatalf("enrolling over a confirmed secret: %v", err)
	}
	st, _ := m.StatusOf(ctx, f.user)
	if !st.TOTP || st.RecoveryCodes != auth.RecoveryCodeCount || !st.Any() {
		t.Fatalf("status %+v", st)
	}
}

func TestRecoveryCodes(t *testing.T) {
	f := newSessions(t)
	m := newMFA(t, f)
	ctx := context.Background()
	_, codes := enroll(t, f, m)
	seen := map[string]bool{}
	for _, c := range codes {
		if len(c) != 11 || c[5] != '-' || seen[c] {
			t.Fatalf("recovery code %q", c)
		}
		seen[c] = true
	}
	if err := m.UseRecoveryCode(ctx, f.user, " "+strings.ToUpper(codes[3])+" "); err != nil {
		t.Fatalf("a code as typed, upper case: %v", err)
	}
	if err := m.UseRecoveryCode(ctx, f.user, codes[3]); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("a used recovery code: %v", err)
	}
	if err := m.UseRecoveryCode(ctx, f.user, "aaaaa-aaaaa"); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("a made-up recovery code: %v", err)
	}
	fresh, err := m.NewRecoveryCodes(ctx, f.user)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.UseRecoveryCode(ctx, f.user, codes[0]); !errors.Is(err, auth.ErrBadCode) {
		t.Fatalf("an old code after new ones were made: %v", err)
	}
	if err := m.UseRecoveryCode(ctx, f.user, fresh[0]); err != nil {
		t.Fatal(err)
	}
}

func TestSignInStages(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		require    bool
		enrolled   bool
		role       store.Role
		wantStage  auth.Stage
		wantLookup bool // Lookup (fully signed in) works with the first cookie
	}{
		{"not required, none set up", false, false, store.RoleClinician, auth.StageFull, true},
		{"required, none set up", true, false, store.RoleClinician, auth.StageEnroll, false},
		{"required of admins too", true, false, store.RoleAdmin, auth.StageEnroll, false},
		{"not required of staff", true, false, store.RoleStaff, auth.StageFull, true},
		{"set up, not required", false, true, store.RoleClinician, auth.StageMFA, false},
		{"set up, required", true, true, store.RoleClinician, auth.StageMFA, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newSessions(t)
			f.user = store.User{ID: store.NewID("usr"), Email: "role@clinic.example", Name: "R", Role: tc.role, PasswordHash: cachedHash(t, "rivera's password"), CreatedAt: f.clock.Now()}
			if err := f.st.CreateUser(ctx, f.user); err != nil {
				t.Fatal(err)
			}
			sessions, err := auth.NewSessions(f.st, idle, lifetime, f.clock.Now, auth.SessionOptions{RequireMFA: tc.require})
			if err != nil {
				t.Fatal(err)
			}
			if tc.enrolled {
				enroll(t, f, newMFA(t, f))
			}
			g, err := sessions.SignIn(ctx, "role@clinic.example", "rivera's password")
			if err != nil || g.Stage != tc.wantStage {
				t.Fatalf("SignIn = stage %q, %v; want %q", g.Stage, err, tc.wantStage)
			}
			if _, err := sessions.Lookup(ctx, g.Token); (err == nil) != tc.wantLookup {
				t.Fatalf("Lookup of the first cookie: %v", err)
			}
			if tc.wantStage == auth.StageFull {
				return
			}
			p, err := sessions.LookupAny(ctx, g.Token)
			if err != nil || p.Stage != tc.wantStage {
				t.Fatalf("LookupAny = %+v, %v", p, err)
			}
			full, err := sessions.Complete(ctx, g.Token)
			if err != nil || full.Stage != auth.StageFull || full.Token == g.Token {
				t.Fatalf("Complete = %+v, %v: want a new, full session", full, err)
			}
			if _, err := sessions.LookupAny(ctx, g.Token); !errors.Is(err, auth.ErrNoSession) {
				t.Errorf("the half signed-in cookie still works: %v", err)
			}
			if _, err := sessions.Lookup(ctx, full.Token); err != nil {
				t.Errorf("the full session: %v", err)
			}
		})
	}
}

func TestHalfSignedInSessionExpires(t *testing.T) {
	f := newSessions(t)
	sessions, _ := auth.NewSessions(f.st, idle, lifetime, f.clock.Now, auth.SessionOptions{RequireMFA: true})
	ctx := context.Background()
	g, err := sessions.SignIn(ctx, "rivera@clinic.example", "rivera's password")
	if err != nil || g.Stage != auth.StageEnroll {
		t.Fatal(g.Stage, err)
	}
	for range 3 { // activity does not stretch it past 10 minutes
		f.clock.Advance(4 * time.Minute)
		sessions.LookupAny(ctx, g.Token)
	}
	if _, err := sessions.LookupAny(ctx, g.Token); !errors.Is(err, auth.ErrNoSession) {
		t.Fatalf("a half signed-in session 12 minutes on: %v", err)
	}
}

func TestLimiter(t *testing.T) {
	f := newSessions(t)
	ctx := context.Background()
	l := auth.NewLimiter(f.st, f.clock.Now)
	k := auth.Key{Rule: auth.RuleSecondFactor, ID: f.user.ID}
	other := auth.Key{Rule: auth.RuleSecondFactor, ID: "usr_other"}
	for i := 1; i <= auth.RuleSecondFactor.Max; i++ {
		if err := l.Check(ctx, k); err != nil {
			t.Fatalf("locked before failure %d: %v", i, err)
		}
		locked, err := l.Fail(ctx, k)
		if err != nil || locked != (i == auth.RuleSecondFactor.Max) {
			t.Fatalf("failure %d: locked %v, %v", i, locked, err)
		}
	}
	var le *auth.LockedError
	if err := l.Check(ctx, other, k); !errors.As(err, &le) || le.Scope != "account" || !le.Until.Equal(f.clock.Now().Add(auth.RuleSecondFactor.LockFor)) {
		t.Fatalf("after %d failures: %v", auth.RuleSecondFactor.Max, err)
	}
	if err := l.Check(ctx, other); err != nil {
		t.Fatalf("another account is locked: %v", err)
	}
	f.clock.Advance(auth.RuleSecondFactor.LockFor)
	if err := l.Check(ctx, k); err != nil {
		t.Fatalf("still locked after the lock time: %v", err)
	}
	if err := l.Clear(ctx, k); err != nil {
		t.Fatal(err)
	}
	if got := auth.AccountKey(" Rivera@Clinic.example").String(); got != auth.AccountKey("rivera@clinic.example").String() || strings.Contains(got, "rivera") {
		t.Errorf("account key %q: want one key per account, without the address", got)
	}
}
