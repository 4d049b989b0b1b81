package web

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/visit"
)

// browser is one person's cookies, as a browser keeps them.
type browser struct {
	h       *harness
	cookies map[string]*http.Cookie
}

func (h *harness) browser() *browser { return &browser{h: h, cookies: map[string]*http.Cookie{}} }

func (b *browser) do(t *testing.T, method, path, body string) response {
	t.Helper()
	var cs []*http.Cookie
	for _, c := range b.cookies {
		cs = append(cs, c)
	}
	r := b.h.do(t, req{method: method, path: path, body: body, cookies: cs, header: map[string]string{"Origin": b.h.publicURL, "Sec-Fetch-Site": "same-origin"}})
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.MaxAge < 0 || c.Value == "" {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	return r
}

func (b *browser) session() string {
	if c := b.cookies[b.h.srv.cookieName(SessionCookie)]; c != nil {
		return c.Value
	}
	return ""
}

func stageOf(t *testing.T, r response) string {
	t.Helper()
	var out struct{ Stage string }
	r.decode(t, &out)
	return out.Stage
}

func totpCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const signInBody = `{"email":"rivera@clinic.example","password":"` + password + `"}`

// TestTOTPEnrollAndSignIn walks the whole second-factor life of a clinician through the
// API: the password alone only opens enrollment; the QR code and the secret; the first
// code turns it on and yields recovery codes; then every sign-in needs a fresh code, a
// replayed one fails, and a recovery code works once.
func TestTOTPEnrollAndSignIn(t *testing.T) {
	h := newHarness(t, options{requireMFA: true})
	b := h.browser()

	r := b.do(t, "POST", "/api/v1/session", signInBody)
	if r.status != 200 || stageOf(t, r) != "enroll" {
		t.Fatalf("sign-in without a second factor: %d %s", r.status, r.body)
	}
	first := b.session()
	checkError(t, b.do(t, "GET", "/api/v1/visits", ""), 403, "mfa_required")
	checkError(t, b.do(t, "GET", "/api/v1/session", ""), 403, "mfa_required")
	if p := b.do(t, "GET", "/console", ""); p.status != 303 || p.header.Get("Location") != "/console/security" {
		t.Fatalf("the console while enrollment is due: %d %q", p.status, p.header.Get("Location"))
	}
	if p := b.do(t, "GET", "/console/security", ""); p.status != 200 {
		t.Fatalf("the security page while enrolling: %d", p.status)
	}

	r = b.do(t, "POST", "/api/v1/mfa/totp", "")
	var setup struct{ Secret, OTPAuthURL, QR string }
	r.decode(t, &setup)
	if r.status != 200 || setup.Secret == "" || setup.QR != "/api/v1/mfa/totp/qr.png" {
		t.Fatalf("start TOTP: %d %s", r.status, r.body)
	}
	if qr := b.do(t, "GET", setup.QR, ""); qr.status != 200 || qr.header.Get("Content-Type") != "image/png" || qr.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("QR code: %d %q %q", qr.status, qr.header.Get("Content-Type"), qr.header.Get("Cache-Control"))
	}
	checkError(t, b.do(t, "POST", "/api/v1/mfa/totp/confirm", `{"code":"000000"}`), 401, "bad_code")
	r = b.do(t, "POST", "/api/v1/mfa/totp/confirm", fmt.Sprintf(`{"code":%q}`, totpCode(t, setup.Secret, h.clk.Now())))
	var done struct {
		Stage         string
		RecoveryCodes []string `json:"recovery_codes"`
	}
	r.decode(t, &done)
	if r.status != 200 || done.Stage != "signed_in" || len(done.RecoveryCodes) != 10 {
		t.Fatalf("confirm: %d %s", r.status, r.body)
	}
	if b.session() == first {
		t.Fatal("finishing enrollment kept the session id")
	}
	if s := b.do(t, "GET", "/api/v1/visits", "").status; s != 200 {
		t.Fatalf("signed in after enrollment: %d", s)
	}
	if len(h.trail(t, audit.MFAEnroll)) != 1 {
		t.Error("the enrollment is not in the audit trail")
	}
	checkError(t, b.do(t, "POST", "/api/v1/mfa/totp", ""), 409, "wrong_state")
	// The only second factor of a clinician who must have one cannot be removed.
	checkError(t, b.do(t, "DELETE", "/api/v1/mfa/totp", ""), 409, "wrong_state")
	b.do(t, "DELETE", "/api/v1/session", "")

	// Sign in again, 30 s later: password, then a code.
	h.clk.Advance(30 * time.Second)
	signInWithCode := func(b *browser, code string) response {
		t.Helper()
		r := b.do(t, "POST", "/api/v1/session", signInBody)
		if r.status != 200 || stageOf(t, r) != "second_factor" || !strings.Contains(string(r.body), `"totp"`) || !strings.Contains(string(r.body), `"recovery"`) {
			t.Fatalf("password step: %d %s", r.status, r.body)
		}
		checkError(t, b.do(t, "GET", "/api/v1/visits", ""), 401, "unauthenticated")
		return b.do(t, "POST", "/api/v1/session/totp", fmt.Sprintf(`{"code":%q}`, code))
	}
	code := totpCode(t, setup.Secret, h.clk.Now())
	if r := signInWithCode(b, code); r.status != 200 || stageOf(t, r) != "signed_in" {
		t.Fatalf("second factor: %d %s", r.status, r.body)
	}
	if s := b.do(t, "GET", "/api/v1/visits", "").status; s != 200 {
		t.Fatalf("signed in with TOTP: %d", s)
	}
	// Someone who saw the code over the shoulder replays it, in time: refused.
	eve := h.browser()
	checkError(t, signInWithCode(eve, code), 401, "bad_code")
	checkError(t, eve.do(t, "GET", "/api/v1/visits", ""), 401, "unauthenticated")
	if got := h.trail(t, audit.MFAFailed); len(got) != 1 || got[0].Detail["method"] != "totp" {
		t.Errorf("the replayed code is not in the trail: %+v", got)
	}
	// A recovery code works once.
	rec := h.browser()
	rec.do(t, "POST", "/api/v1/session", signInBody)
	if r := rec.do(t, "POST", "/api/v1/session/recovery", fmt.Sprintf(`{"code":%q}`, done.RecoveryCodes[0])); r.status != 200 {
		t.Fatalf("recovery code: %d %s", r.status, r.body)
	}
	again := h.browser()
	again.do(t, "POST", "/api/v1/session", signInBody)
	checkError(t, again.do(t, "POST", "/api/v1/session/recovery", fmt.Sprintf(`{"code":%q}`, done.RecoveryCodes[0])), 401, "bad_code")
}

// TestSecondFactorLockout: five wrong codes lock the second factor for 15 minutes, even
// for the right code; the lockout is in the trail; it survives a new server on the same
// database.
func TestSecondFactorLockout(t *testing.T) {
	h := newHarness(t, options{requireMFA: true})
	b := h.browser()
	b.do(t, "POST", "/api/v1/session", signInBody)
	var setup struct{ Secret string }
	b.do(t, "POST", "/api/v1/mfa/totp", "").decode(t, &setup)
	b.do(t, "POST", "/api/v1/mfa/totp/confirm", fmt.Sprintf(`{"code":%q}`, totpCode(t, setup.Secret, h.clk.Now())))

	att := h.browser()
	att.do(t, "POST", "/api/v1/session", signInBody)
	for i := 0; i < auth.RuleSecondFactor.Max; i++ {
		checkError(t, att.do(t, "POST", "/api/v1/session/totp", `{"code":"000000"}`), 401, "bad_code")
	}
	h.clk.Advance(time.Minute)
	r := att.do(t, "POST", "/api/v1/session/totp", fmt.Sprintf(`{"code":%q}`, totpCode(t, setup.Secret, h.clk.Now())))
	checkError(t, r, 429, "rate_limited")
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 800 || ra > 900 {
		t.Errorf("Retry-After %q, want about 14 minutes in seconds", r.header.Get("Retry-After"))
	}
	if got := h.trail(t, audit.Lockout); len(got) != 1 || got[0].SubjectID != h.owner.ID || got[0].Detail["scope"] != "account" {
		t.Errorf("lockout in the trail: %+v", got)
	}
	if len(h.trail(t, audit.RateLimited)) == 0 {
		t.Error("the refused attempt is not in the trail")
	}
	// A restart does not reset it: a new server on the same database.
	h2 := h.restart(t)
	att2 := h2.browser()
	att2.do(t, "POST", "/api/v1/session", signInBody)
	checkError(t, att2.do(t, "POST", "/api/v1/session/totp", fmt.Sprintf(`{"code":%q}`, totpCode(t, setup.Secret, h.clk.Now().Add(30*time.Second)))), 429, "rate_limited")
	h.clk.Advance(auth.RuleSecondFactor.LockFor)
	att2.do(t, "POST", "/api/v1/session", signInBody) // the half-way session lasted 10 minutes
	if r := att2.do(t, "POST", "/api/v1/session/totp", fmt.Sprintf(`{"code":%q}`, totpCode(t, setup.Secret, h.clk.Now()))); r.status != 200 {
		t.Fatalf("after the lock: %d %s", r.status, r.body)
	}
}

// TestSignInLockout: per account, five wrong passwords lock it (even with the right one);
// per address, twenty; another account from elsewhere is not affected.
func TestSignInLockout(t *testing.T) {
	h := newHarness(t, options{})
	b := h.browser()
	for i := 0; i < auth.RuleSignInAccount.Max; i++ {
		checkError(t, b.do(t, "POST", "/api/v1/session", `{"email":"Rivera@clinic.example","password":"wrong password"}`), 401, "bad_credentials")
	}
	checkError(t, b.do(t, "POST", "/api/v1/session", signInBody), 429, "rate_limited")
	if r := b.do(t, "POST", "/api/v1/session", `{"email":"okafor@clinic.example","password":"`+password+`"}`); r.status != 200 {
		t.Fatalf("another account: %d", r.status)
	}
	lock := h.trail(t, audit.Lockout)
	if len(lock) != 1 || lock[0].SubjectID != h.owner.ID || lock[0].Addr == "" {
		t.Fatalf("lockout in the trail: %+v", lock)
	}
	for _, en := range h.trail(t, audit.SignInFailed) {
		if strings.Contains(fmt.Sprint(en.ToJSON()), "wrong password") || strings.Contains(fmt.Sprint(en.ToJSON()), "rivera@") {
			t.Errorf("a failed sign-in recorded the password or the email: %+v", en)
		}
	}
	// Per address: unknown accounts, many of them. All but the last failure are counted
	// straight into the limiter (each HTTP failure costs an argon2 hash, by design).
	h2 := newHarness(t, options{})
	b2 := h2.browser()
	addr := auth.Key{Rule: auth.RuleSignInAddress, ID: "127.0.0.1"}
	for i := 0; i < auth.RuleSignInAddress.Max-2; i++ {
		if _, err := h2.srv.cfg.Limiter.Fail(context.Background(), addr); err != nil {
			t.Fatal(err)
		}
	}
	checkError(t, b2.do(t, "POST", "/api/v1/session", `{"email":"nobody1@clinic.example","password":"x"}`), 401, "bad_credentials")
	if r := b2.do(t, "POST", "/api/v1/session", signInBody); r.status != 200 {
		t.Fatalf("one failure before the address limit: %d", r.status)
	}
	checkError(t, b2.do(t, "POST", "/api/v1/session", `{"email":"nobody2@clinic.example","password":"x"}`), 401, "bad_credentials")
	checkError(t, b2.do(t, "POST", "/api/v1/session", signInBody), 429, "rate_limited")
}

// TestVisitLinkLockout: the N+1th wrong visit link from one address is refused, even
// with the right link, for 15 minutes; N wrong participant-cookie secrets lock the visit.
func TestVisitLinkLockout(t *testing.T) {
	h := newHarness(t, options{})
	_, tok := h.newVisit(t)
	b := h.browser()
	for i := 0; i < auth.RuleLinkAddress.Max; i++ {
		checkError(t, b.do(t, "POST", "/api/v1/link/join", fmt.Sprintf(`{"token":%q,"name":"Ada"}`, auth.NewToken())), 404, "link_unknown")
	}
	r := b.do(t, "POST", "/api/v1/link/join", fmt.Sprintf(`{"token":%q,"name":"Ada"}`, tok))
	checkError(t, r, 429, "rate_limited")
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	checkError(t, b.do(t, "POST", "/api/v1/link", fmt.Sprintf(`{"token":%q}`, tok)), 429, "rate_limited")
	if p := b.do(t, "GET", "/v/"+tok, ""); p.status != 429 {
		t.Errorf("the patient page while locked out: %d", p.status)
	}
	if got := h.trail(t, audit.Lockout); len(got) != 1 || got[0].Detail["scope"] != "address" {
		t.Errorf("lockout in the trail: %+v", got)
	}
	if got := h.trail(t, audit.LinkFailed); len(got) != auth.RuleLinkAddress.Max {
		t.Errorf("%d failed links in the trail, want %d", len(got), auth.RuleLinkAddress.Max)
	}
	for _, en := range h.trail(t, audit.LinkFailed) {
		if strings.Contains(fmt.Sprint(en.ToJSON()), tok) {
			t.Fatal("a link token is in the trail")
		}
	}

	// Per visit: a participant id with guessed secrets (from another address: a new server).
	h = newHarness(t, options{})
	v2, tok2 := h.newVisit(t)
	p := h.do(t, req{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":"Ada"}`, tok2), header: map[string]string{"X-Forwarded-For": "ignored"}})
	pc := p.cookie(ParticipantCookie)
	if pc == nil {
		t.Fatalf("join: %d %s", p.status, p.body)
	}
	id, _, _ := strings.Cut(pc.Value, ".")
	for i := 0; i < auth.RuleLinkVisit.Max; i++ {
		forged := &http.Cookie{Name: ParticipantCookie, Value: id + "." + auth.NewToken()}
		h.do(t, req{method: "POST", path: "/api/v1/link", body: fmt.Sprintf(`{"token":%q}`, tok2), cookies: []*http.Cookie{forged}})
	}
	checkError(t, h.do(t, req{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":"Bob"}`, tok2)}), 429, "rate_limited")
	found := false
	for _, en := range h.trail(t, audit.Lockout) {
		found = found || (en.Detail["scope"] == "visit" && en.VisitID == v2.ID)
	}
	if !found {
		t.Error("the visit's lockout is not in the trail")
	}
}

// TestHalfSignedInSession: a session that has the password but not the second factor
// reaches nothing else, and its pages send it back to sign in.
func TestHalfSignedInSession(t *testing.T) {
	h := newHarness(t, options{requireMFA: true})
	c := h.sessionAt(t, h.owner, "mfa")
	for _, rq := range []req{{method: "GET", path: "/api/v1/session"}, {method: "GET", path: "/api/v1/visits"}, {method: "GET", path: "/api/v1/mfa"}, {method: "POST", path: "/api/v1/mfa/totp"}, {method: "GET", path: "/api/v1/ws"}} {
		rq.cookies = []*http.Cookie{c}
		checkError(t, h.do(t, rq), 401, "unauthenticated")
	}
	if p := h.do(t, req{method: "GET", path: "/console", cookies: []*http.Cookie{c}}); p.status != 303 || !strings.HasPrefix(p.header.Get("Location"), "/signin") {
		t.Errorf("console: %d %q", p.status, p.header.Get("Location"))
	}
	if r := h.do(t, req{method: "DELETE", path: "/api/v1/session", cookies: []*http.Cookie{c}}); r.status != 204 {
		t.Errorf("sign out half-way: %d", r.status)
	}
}

// TestAdminEndsSessions: an admin ends every session of a user on the server; the user's
// cookies stop working at once; it is in the trail.
func TestAdminEndsSessions(t *testing.T) {
	h := newHarness(t, options{})
	a, b := h.session(t, h.owner), h.session(t, h.owner)
	admin := h.session(t, h.admin)
	var users struct{ Users []adminUserJSON }
	h.do(t, req{method: "GET", path: "/api/v1/users", cookies: []*http.Cookie{admin}}).decode(t, &users)
	for _, u := range users.Users {
		if u.ID == h.owner.ID && u.Sessions != 2 {
			t.Errorf("the owner has %d sessions listed, want 2", u.Sessions)
		}
	}
	if r := h.do(t, req{method: "DELETE", path: "/api/v1/users/" + h.owner.ID + "/sessions", cookies: []*http.Cookie{admin}}); r.status != 204 {
		t.Fatalf("end sessions: %d %s", r.status, r.body)
	}
	for _, c := range []*http.Cookie{a, b} {
		checkError(t, h.do(t, req{method: "GET", path: "/api/v1/visits", cookies: []*http.Cookie{c}}), 401, "unauthenticated")
	}
	if got := h.trail(t, audit.SessionsEnded); len(got) != 1 || got[0].ActorID != h.admin.ID || got[0].SubjectID != h.owner.ID {
		t.Errorf("trail: %+v", got)
	}
	checkError(t, h.do(t, req{method: "DELETE", path: "/api/v1/users/usr_nope/sessions", cookies: []*http.Cookie{admin}}), 404, "not_found")
}

// TestBreakGlass: an admin grants a clinician time-limited emergency access; with it the
// clinician opens another clinician's visit, every use is in the trail, admins see the
// grant; it ends at its time or when withdrawn.
func TestBreakGlass(t *testing.T) {
	h := newHarness(t, options{})
	v, _ := h.newVisit(t) // the owner's
	other, admin := h.session(t, h.other), h.session(t, h.admin)
	path := "/api/v1/visits/" + v.ID
	checkError(t, h.do(t, req{method: "GET", path: path, cookies: []*http.Cookie{other}}), 404, "not_found")

	for _, bad := range []string{`{"duration":"1h","reason":"short"}`, `{"duration":"13h","reason":"covering an emergency"}`, `{"duration":"soon","reason":"covering an emergency"}`} {
		checkError(t, h.do(t, req{method: "POST", path: "/api/v1/users/" + h.other.ID + "/break-glass", body: bad, cookies: []*http.Cookie{admin}}), 400, "invalid")
	}
	checkError(t, h.do(t, req{method: "POST", path: "/api/v1/users/" + h.staff.ID + "/break-glass", body: `{"duration":"1h","reason":"covering an emergency"}`, cookies: []*http.Cookie{admin}}), 400, "invalid")
	r := h.do(t, req{method: "POST", path: "/api/v1/users/" + h.other.ID + "/break-glass", body: `{"duration":"1h","reason":"Dr Rivera is unwell; covering her list"}`, cookies: []*http.Cookie{admin}})
	if r.status != 201 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	if r := h.do(t, req{method: "GET", path: path, cookies: []*http.Cookie{other}}); r.status != 200 {
		t.Fatalf("with break-glass: %d %s", r.status, r.body)
	}
	var list struct{ Visits []visitJSON }
	h.do(t, req{method: "GET", path: "/api/v1/visits", cookies: []*http.Cookie{other}}).decode(t, &list)
	if len(list.Visits) != 1 {
		t.Errorf("with break-glass the list shows %d visits, want the owner's 1", len(list.Visits))
	}
	uses := h.trail(t, audit.BreakGlassUse)
	if len(uses) == 0 || uses[0].ActorID != h.other.ID || uses[0].VisitID != v.ID {
		t.Fatalf("break-glass use in the trail: %+v", uses)
	}
	grants := h.trail(t, audit.BreakGlassGrant)
	if len(grants) != 1 || grants[0].ActorID != h.admin.ID || grants[0].SubjectID != h.other.ID || strings.Contains(fmt.Sprint(grants[0].Detail), "unwell") {
		t.Fatalf("grant in the trail (the reason stays out of it): %+v", grants)
	}
	var alert struct{ Grants []breakGlassJSON }
	h.do(t, req{method: "GET", path: "/api/v1/break-glass", cookies: []*http.Cookie{admin}}).decode(t, &alert)
	if len(alert.Grants) != 1 || !alert.Grants[0].Active || alert.Grants[0].Reason == "" {
		t.Fatalf("admins' alert: %+v", alert)
	}
	// Staff and other roles see no alerts; admin actions stay admin-only.
	checkError(t, h.do(t, req{method: "GET", path: "/api/v1/users", cookies: []*http.Cookie{other}}), 403, "forbidden")

	h.clk.Advance(time.Hour)
	checkError(t, h.do(t, req{method: "GET", path: path, cookies: []*http.Cookie{h.session(t, h.other)}}), 404, "not_found")

	h.do(t, req{method: "POST", path: "/api/v1/users/" + h.other.ID + "/break-glass", body: `{"duration":"2h","reason":"covering an emergency"}`, cookies: []*http.Cookie{h.session(t, h.admin)}})
	fresh := h.session(t, h.other)
	if r := h.do(t, req{method: "GET", path: path, cookies: []*http.Cookie{fresh}}); r.status != 200 {
		t.Fatalf("second grant: %d", r.status)
	}
	if r := h.do(t, req{method: "DELETE", path: "/api/v1/users/" + h.other.ID + "/break-glass", cookies: []*http.Cookie{h.session(t, h.admin)}}); r.status != 204 {
		t.Fatalf("withdraw: %d %s", r.status, r.body)
	}
	checkError(t, h.do(t, req{method: "GET", path: path, cookies: []*http.Cookie{fresh}}), 404, "not_found")
}

// TestAuditSearch: admins search the trail by visit, user and date.
func TestAuditSearch(t *testing.T) {
	h := newHarness(t, options{})
	v1, _ := h.newVisit(t)
	h.clk.Advance(48 * time.Hour)
	ctx := audit.WithActor(context.Background(), audit.Actor{ID: h.other.ID, Role: "clinician"})
	v2, _, err := h.visits.Create(ctx, visit.NewVisit{ClinicianID: h.owner.ID})
	if err != nil {
		t.Fatal(err)
	}
	admin := h.session(t, h.admin)
	search := func(q string) []audit.JSONEntry {
		t.Helper()
		r := h.do(t, req{method: "GET", path: "/api/v1/audit?" + q, cookies: []*http.Cookie{admin}})
		var out struct{ Entries []audit.JSONEntry }
		r.decode(t, &out)
		if r.status != 200 {
			t.Fatalf("search %s: %d %s", q, r.status, r.body)
		}
		return out.Entries
	}
	if got := search("visit=" + v1.ID); len(got) != 1 || got[0].Action != string(audit.VisitCreate) || got[0].VisitID != v1.ID {
		t.Errorf("by visit: %+v", got)
	}
	if got := search("user=" + h.other.ID + "&action=visit.create"); len(got) != 1 || got[0].VisitID != v2.ID {
		t.Errorf("by user: %+v", got)
	}
	if got := search("email=okafor@clinic.example&action=visit.create"); len(got) != 1 || got[0].VisitID != v2.ID {
		t.Errorf("by email: %+v", got)
	}
	day := h.clk.Now().Format(time.DateOnly)
	for _, en := range search("from=" + day + "&to=" + day + "&action=visit.create") {
		if en.VisitID == v1.ID {
			t.Errorf("the visit of two days ago is in today's search")
		}
	}
	if got := search("limit=1"); len(got) != 1 {
		t.Errorf("limit: %d rows", len(got))
	}
	checkError(t, h.do(t, req{method: "GET", path: "/api/v1/audit?from=yesterday", cookies: []*http.Cookie{admin}}), 400, "invalid")
	checkError(t, h.do(t, req{method: "GET", path: "/api/v1/audit?limit=100000", cookies: []*http.Cookie{admin}}), 400, "invalid")
	if len(h.trail(t, audit.AuditSearch)) == 0 {
		t.Error("searches are not in the trail")
	}
}
