//go:build browser

package browser

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdpwebauthn "github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/pquerna/otp/totp"

	"github.com/bedside/bedside/internal/app"
	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/config"
	"github.com/bedside/bedside/internal/store"
)

// fakeClock is the server's clock in these tests (app.Options.Now): TOTP codes, session
// idle time and lifetime follow it, so a test moves time instead of waiting.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// clockStart is where a test's server clock starts: now, or, late in the day, three hours
// earlier. The console lists the visits of the browser's day (from its local midnight, by its
// own clock), while the server's times are the test's clock: a test that moves that clock
// past midnight (TestIdleLogoff moves it by about an hour) would create a visit the server
// dates tomorrow and the browser does not list. Three hours back, the clock's moves stay in
// the browsers' day (their time zone is the machine's, time.Local). A test that runs across
// the real midnight can still see the browser's day change under it.
func clockStart(now time.Time) time.Time {
	if now.Local().Hour() >= 21 {
		now = now.Add(-3 * time.Hour)
	}
	return now.UTC().Truncate(time.Second)
}

// TestClockStart: from any time of the day, the test clock's start moved on by the longest
// any test moves it (an hour, with room) is still in the browsers' day.
func TestClockStart(t *testing.T) {
	day := time.Date(2026, 11, 26, 0, 0, 0, 0, time.Local)
	for m := 0; m < 24*60; m += 7 {
		now := day.Add(time.Duration(m) * time.Minute)
		start := clockStart(now)
		if late := start.Add(90 * time.Minute).Local(); late.YearDay() != now.YearDay() {
			t.Fatalf("at %s the clock starts at %s: 90 minutes on it is %s, another day", now.Format(time.TimeOnly), start.Local().Format(time.TimeOnly), late)
		}
		if now.Hour() < 21 && !start.Equal(now.UTC().Truncate(time.Second)) {
			t.Fatalf("at %s the clock starts at %s, not now", now, start)
		}
	}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newClockRig is newRig on a server with a fake clock (and the second-factor requirement as
// asked).
func newClockRig(t *testing.T, requireMFA bool) (*rig, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: clockStart(time.Now())}
	// A clinician in a call keeps the session alive every 200 ms here (a minute in
	// production), so that a test can move the clock by minutes between them.
	srv := apptest.Start(t, apptest.Options{App: app.Options{Now: clk.Now, KeepAliveEvery: 200 * time.Millisecond}, RequireMFA: requireMFA})
	srv.AddUser(t, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	return &rig{t: t, srv: srv, clinician: newPage(t, "clinician"), patient: newPage(t, "patient")}, clk
}

// passwordStep types the email and password on /signin and submits.
func passwordStep(r *rig) {
	r.t.Helper()
	c := r.clinician
	c.navigate(r.srv.URL() + "/signin")
	c.typeInto("#email", clinicianEmail)
	c.typeInto("#password", clinicianPassword)
	c.click("#signin-submit")
}

func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTOTPEnrollmentAndSignIn: with the second factor required, a clinician's first sign-in
// leads to enrollment in the console (QR code, key, first code, recovery codes), then to the
// visits; the next sign-in asks for a code; a code already used is refused; a fresh one
// signs in.
func TestTOTPEnrollmentAndSignIn(t *testing.T) {
	r, clk := newClockRig(t, true)
	c := r.clinician
	passwordStep(r)
	c.waitFor("the security page, enrollment required", `location.pathname === '/console/security' && `+visible("enroll-required"))
	c.waitFor("the clinician's name", `document.getElementById('user-name').textContent === 'Dr Rivera'`)
	// Nothing else opens until a second factor is set up.
	if s := c.navigateStatus(r.srv.URL() + "/console"); s != 200 || mustEval[string](c, `location.pathname`) != "/console/security" {
		t.Fatalf("the console while enrollment is due: %d at %s", s, mustEval[string](c, `location.pathname`))
	}

	c.click("#totp-start")
	c.waitFor("the QR code shown", visible("totp-setup")+` && document.getElementById('totp-qr').complete &&
		document.getElementById('totp-qr').naturalWidth > 100`)
	secret := mustEval[string](c, `document.getElementById('totp-secret').textContent`)
	if len(secret) < 16 {
		t.Fatalf("secret %q", secret)
	}
	c.typeInto("#totp-confirm-code", "000000")
	c.click("#totp-confirm")
	c.waitFor("a wrong code refused", `document.getElementById('totp-error').textContent.includes('not right')`)
	mustEval[bool](c, `(() => { document.getElementById('totp-confirm-code').value = ''; return true; })()`)
	c.typeInto("#totp-confirm-code", code(t, secret, clk.Now()))
	c.click("#totp-confirm")
	c.waitFor("ten recovery codes shown once", visible("recovery-codes")+` && document.querySelectorAll('#recovery-code-list li').length === 10`)
	c.waitFor("the status says on", `document.getElementById('totp-status').textContent === 'On'`)
	c.click("#security-continue")
	c.waitFor("the console", `location.pathname === '/console' && document.getElementById('user-name').textContent === 'Dr Rivera'`)

	c.click("#signout")
	c.waitFor("the sign-in page", `location.pathname === '/signin'`)

	// The same code again (still within its 30 seconds): refused.
	used := code(t, secret, clk.Now())
	passwordStep(r)
	c.waitFor("the second step", visible("mfa-step")+` && `+visible("totp-code"))
	c.typeInto("#totp-code", used)
	c.click("#mfa-submit")
	c.waitFor("the used code refused", `document.getElementById('mfa-error').textContent.length > 0 && location.pathname === '/signin'`)

	clk.Advance(30 * time.Second)
	mustEval[bool](c, `(() => { document.getElementById('totp-code').value = ''; return true; })()`)
	c.typeInto("#totp-code", code(t, secret, clk.Now()))
	c.click("#mfa-submit")
	c.waitFor("the console after the code", `location.pathname === '/console' && document.getElementById('user-name').textContent === 'Dr Rivera'`)
	c.assertNoExceptions()
}

// TestIdleLogoff: a console left alone for the idle time is signed out on the server; its
// next request leads to /signin. A call is activity: forty minutes of it without a request
// do not sign the clinician out. A session ended on the server in the middle of a call (an
// admin ends it) does not end the call; what needs the server anew (an API request) needs
// a fresh sign-in.
func TestIdleLogoff(t *testing.T) {
	r, clk := newClockRig(t, false)
	r.signIn()
	clk.Advance(16 * time.Minute)
	r.clinician.waitFor("the sign-in page after the idle time", `location.pathname === '/signin' &&
		new URLSearchParams(location.search).get('next') === '/console'`)
	r.clinician.assertNoExceptions()

	// A call, then the idle time passes.
	r.signIn()
	r.createVisit("Ada Lovelace")
	r.patientJoins("Ada")
	r.admit("Ada")
	waitInCall(r.clinician)
	waitInCall(r.patient)
	// Both pages told the server which candidate pair they use: it is in the audit trail.
	deadline := time.Now().Add(waitTimeout)
	for {
		got, err := r.srv.Store().SearchAudit(context.Background(), audit.Query{VisitID: r.visitID, Action: audit.CandidatePair})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) >= 2 {
			for _, e := range got {
				if e.Detail["path"] != "direct" || e.Detail["local"] == "" {
					t.Errorf("candidate pair recorded as %+v", e.Detail)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d candidate pairs in the trail, want one from each page", len(got))
		}
		time.Sleep(pollEvery)
	}
	apiStatus := func() int {
		return mustEval[int](r.clinician, `fetch('/api/v1/visits', {credentials: 'same-origin'}).then((res) => res.status)`)
	}
	for range 8 { // forty minutes of the call, the signalling keeping the session alive
		clk.Advance(5 * time.Minute)
		time.Sleep(time.Second)
	}
	if s := apiStatus(); s != 200 {
		t.Fatalf("an API request after forty minutes in a call: %d, want 200 (the call keeps the session)", s)
	}
	u, err := r.srv.Store().UserByEmail(context.Background(), clinicianEmail)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.srv.Store().DeleteUserSessions(context.Background(), u.ID); err != nil {
		t.Fatal(err)
	}
	if s := apiStatus(); s != 401 {
		t.Fatalf("an API request after the sessions were ended: %d, want 401", s)
	}
	frames := func(p *page) int {
		n := 0
		for _, s := range p.stats() {
			n += s.FramesDecoded
		}
		return n
	}
	before := frames(r.clinician)
	r.clinician.waitFor("frames still decoded after the sessions were ended", `(async () => {
		const s = await `+statsJS+`; return s.reduce((n, x) => n + x.framesDecoded, 0) > `+strconv.Itoa(before+30)+`; })()`)
	if st := mustEval[string](r.clinician, `document.getElementById('call-status').dataset.state`); st != "in_call" {
		t.Errorf("the clinician's call status after the sessions were ended: %s", st)
	}
}

// TestPasskeyEnrollmentAndSignIn uses Chromium's virtual authenticator (DevTools WebAuthn
// domain): the clinician sets up a passkey as the required second factor, then signs in
// with password and passkey. The server is reached as localhost: WebAuthn needs a name.
func TestPasskeyEnrollmentAndSignIn(t *testing.T) {
	srv := apptest.Start(t, apptest.Options{RequireMFA: true, Config: func(c *config.Config) { c.PublicURL = "http://localhost:0" }})
	srv.AddUser(t, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	base := srv.PublicURL()
	if !strings.HasPrefix(base, "http://localhost:") {
		t.Fatalf("public URL %q", base)
	}
	c := newPage(t, "clinician")
	ctx, cancel := context.WithTimeout(c.ctx, stepTimeout)
	defer cancel()
	if _, err := chromedp.Call(ctx, cdpwebauthn.Enable, cdpwebauthn.EnableParams{}); err != nil {
		t.Fatalf("WebAuthn.enable: %v", err)
	}
	if _, err := chromedp.Call(ctx, cdpwebauthn.AddVirtualAuthenticator, cdpwebauthn.AddVirtualAuthenticatorParams{Options: &cdpwebauthn.VirtualAuthenticatorOptions{
		Protocol: cdpwebauthn.AuthenticatorProtocolCtap2, Transport: cdpwebauthn.AuthenticatorTransportInternal,
		HasResidentKey: true, HasUserVerification: true, IsUserVerified: true, AutomaticPresenceSimulation: true,
	}}); err != nil {
		t.Fatalf("WebAuthn.addVirtualAuthenticator: %v", err)
	}
	signIn := func() {
		c.navigate(base + "/signin")
		c.typeInto("#email", clinicianEmail)
		c.typeInto("#password", clinicianPassword)
		c.click("#signin-submit")
	}
	signIn()
	c.waitFor("the security page, enrollment required", `location.pathname === '/console/security' && `+visible("enroll-required"))
	c.waitFor("passkeys offered", visible("passkey-add"))
	c.typeInto("#passkey-name", "Test laptop")
	c.click("#passkey-add")
	c.waitFor("recovery codes after the passkey", visible("recovery-codes")+` && document.querySelectorAll('#recovery-code-list li').length === 10`)
	c.waitFor("the passkey listed", `[...document.querySelectorAll('#passkeys li')].some((li) => li.textContent.includes('Test laptop'))`)
	c.click("#security-continue")
	c.waitFor("the console", `location.pathname === '/console' && document.getElementById('user-name').textContent === 'Dr Rivera'`)
	c.click("#signout")
	c.waitFor("the sign-in page", `location.pathname === '/signin'`)

	signIn()
	c.waitFor("the second step offers the passkey", visible("mfa-step")+` && `+visible("passkey-signin"))
	c.click("#passkey-signin")
	c.waitFor("the console after the passkey", `location.pathname === '/console' && document.getElementById('user-name').textContent === 'Dr Rivera'`)
	c.assertNoExceptions()
}

// TestAdminPages: an admin grants a clinician emergency access on the Accounts page, sees
// the alert on the console, and finds the grant in the audit trail by the clinician's email.
func TestAdminPages(t *testing.T) {
	srv := apptest.Start(t, apptest.Options{})
	srv.AddUser(t, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	srv.AddUser(t, "admin@clinic.example", "Ada Admin", store.RoleAdmin, clinicianPassword)
	a := newPage(t, "admin")
	a.navigate(srv.URL() + "/signin")
	a.typeInto("#email", "admin@clinic.example")
	a.typeInto("#password", clinicianPassword)
	a.click("#signin-submit")
	a.waitFor("the console with the admin links", `location.pathname === '/console' && `+visible("admin-link")+` && `+visible("audit-link"))

	a.click("#admin-link")
	a.waitFor("the accounts", `location.pathname === '/console/admin' && document.querySelectorAll('#users tr[data-user-id]').length === 2`)
	a.waitFor("the clinician offered for emergency access", `[...document.getElementById('grant-user').options].some((o) => o.textContent.includes('Dr Rivera'))`)
	a.typeInto("#grant-reason", "Dr Okafor is off sick; covering her list")
	a.click("#grant-submit")
	a.waitFor("the break-glass alert", visible("break-glass-alert")+` && document.querySelector('#break-glass-list li.active').textContent.includes('Dr Rivera')`)
	a.navigate(srv.URL() + "/console")
	a.waitFor("the alert on the console", visible("break-glass-banner")+` && document.getElementById('break-glass-banner').textContent.includes('Dr Rivera')`)

	a.click("#audit-link")
	a.waitFor("the audit page", `location.pathname === '/console/audit'`)
	a.typeInto("#audit-user", clinicianEmail)
	a.click("#audit-submit")
	a.waitFor("the grant found by the clinician's email", `!!document.querySelector('#audit-results tr[data-action="breakglass.grant"]')`)
	if mustEval[bool](a, `document.body.textContent.includes('off sick')`) {
		t.Error("the break-glass reason is shown in the audit trail")
	}
	a.assertNoExceptions()
}
