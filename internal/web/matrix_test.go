package web

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"testing"

	"github.com/bedside/bedside/internal/store"
)

// roles are the callers of the matrix: nobody, and one account of each kind. "owner" is the
// clinician whose visit it is; "other" is another clinician.
var roles = []string{"anonymous", "staff", "owner", "other", "admin"}

// expect is the status each role gets, in the order of roles.
type expect [5]int

// TestRoleRouteMatrix calls every API route as every role, over real HTTP, each on a fresh
// visit with a fresh session, and checks the status (and the error code for refusals).
func TestRoleRouteMatrix(t *testing.T) {
	h := newHarness(t, options{})
	const (
		ok        = http.StatusOK
		created   = http.StatusCreated
		noContent = http.StatusNoContent
		bad       = http.StatusBadRequest
		unauth    = http.StatusUnauthorized
		forbidden = http.StatusForbidden
		notFound  = http.StatusNotFound
		conflict  = http.StatusConflict
	)
	codes := map[int]string{bad: "invalid", unauth: "unauthenticated", forbidden: "forbidden", notFound: "not_found", conflict: "wrong_state"}
	// request builds the request for a visit of the owner and its link token.
	type request func(v store.Visit, token string) req
	fixed := func(method, path, body string) request {
		return func(store.Visit, string) req { return req{method: method, path: path, body: body} }
	}
	onVisit := func(method, suffix, body string) request {
		return func(v store.Visit, _ string) req {
			return req{method: method, path: "/api/v1/visits/" + v.ID + suffix, body: body}
		}
	}
	withToken := func(path, format string) request {
		return func(_ store.Visit, tok string) req {
			return req{method: "POST", path: path, body: fmt.Sprintf(format, tok)}
		}
	}
	onUser := func(method, id, suffix, body string) request {
		return func(store.Visit, string) req {
			return req{method: method, path: "/api/v1/users/" + id + suffix, body: body}
		}
	}
	cases := []struct {
		name    string
		pattern string
		request request
		want    expect // anonymous, staff, owner, other, admin
	}{
		{"health", "GET /healthz", fixed("GET", "/healthz", ""), expect{ok, ok, ok, ok, ok}},
		{"ready", "GET /readyz", fixed("GET", "/readyz", ""), expect{ok, ok, ok, ok, ok}},
		{"sign in without credentials", "POST /api/v1/session", fixed("POST", "/api/v1/session", `{}`), expect{bad, bad, bad, bad, bad}},
		{"who am I", "GET /api/v1/session", fixed("GET", "/api/v1/session", ""), expect{unauth, ok, ok, ok, ok}},
		{"sign out", "DELETE /api/v1/session", fixed("DELETE", "/api/v1/session", ""), expect{unauth, noContent, noContent, noContent, noContent}},
		{"list visits", "GET /api/v1/visits", fixed("GET", "/api/v1/visits", ""), expect{unauth, ok, ok, ok, ok}},
		{"create a visit for oneself", "POST /api/v1/visits", fixed("POST", "/api/v1/visits", `{"patient_name":"Ada"}`),
			expect{unauth, bad, created, created, bad}},
		{"create a visit naming the owner", "POST /api/v1/visits", fixed("POST", "/api/v1/visits", `{"clinician_email":"rivera@clinic.example"}`),
			expect{unauth, created, created, forbidden, created}},
		{"read a visit", "GET /api/v1/visits/{id}", onVisit("GET", "", ""), expect{unauth, ok, ok, notFound, ok}},
		{"read an unknown visit", "GET /api/v1/visits/{id}", fixed("GET", "/api/v1/visits/vst_nope", ""), expect{unauth, notFound, notFound, notFound, notFound}},
		{"new link", "POST /api/v1/visits/{id}/link", onVisit("POST", "/link", ""), expect{unauth, ok, ok, notFound, ok}},
		{"revoke", "POST /api/v1/visits/{id}/revoke", onVisit("POST", "/revoke", ""), expect{unauth, ok, ok, notFound, ok}},
		{"admit with nobody waiting", "POST /api/v1/visits/{id}/admit", onVisit("POST", "/admit", `{"participant":"prt_nobody"}`),
			expect{unauth, forbidden, conflict, notFound, conflict}},
		{"remove an unknown participant", "POST /api/v1/visits/{id}/remove", onVisit("POST", "/remove", `{"participant":"prt_nobody"}`),
			expect{unauth, forbidden, notFound, notFound, notFound}},
		{"end", "POST /api/v1/visits/{id}/end", onVisit("POST", "/end", ""), expect{unauth, forbidden, ok, notFound, ok}},
		{"invite an observer", "POST /api/v1/visits/{id}/guests", onVisit("POST", "/guests", `{"role":"observer"}`), expect{unauth, created, created, notFound, created}},
		{"invite with no role", "POST /api/v1/visits/{id}/guests", onVisit("POST", "/guests", `{}`), expect{unauth, bad, bad, notFound, bad}},
		{"resolve a link", "POST /api/v1/link", withToken("/api/v1/link", `{"token":%q}`), expect{ok, ok, ok, ok, ok}},
		{"join through a link", "POST /api/v1/link/join", withToken("/api/v1/link/join", `{"token":%q,"name":"Ada"}`), expect{ok, ok, ok, ok, ok}},
		{"device check ICE servers", "POST /api/v1/link/ice", withToken("/api/v1/link/ice", `{"token":%q}`), expect{ok, ok, ok, ok, ok}},
		{"WebSocket", "GET /api/v1/ws", fixed("GET", "/api/v1/ws", ""), expect{unauth, noContent, noContent, noContent, noContent}},

		// A second factor is for a session waiting for one; these sessions are full.
		{"TOTP at sign-in", "POST /api/v1/session/totp", fixed("POST", "/api/v1/session/totp", `{"code":"123456"}`), expect{unauth, conflict, conflict, conflict, conflict}},
		{"recovery code at sign-in", "POST /api/v1/session/recovery", fixed("POST", "/api/v1/session/recovery", `{"code":"aaaaa-aaaaa"}`), expect{unauth, conflict, conflict, conflict, conflict}},
		{"passkey at sign-in", "POST /api/v1/session/passkey/begin", fixed("POST", "/api/v1/session/passkey/begin", ""), expect{unauth, conflict, conflict, conflict, conflict}},
		{"passkey answer at sign-in", "POST /api/v1/session/passkey/finish", fixed("POST", "/api/v1/session/passkey/finish", `{}`), expect{unauth, conflict, conflict, conflict, conflict}},
		{"own second factors", "GET /api/v1/mfa", fixed("GET", "/api/v1/mfa", ""), expect{unauth, ok, ok, ok, ok}},
		{"TOTP QR code with nothing pending", "GET /api/v1/mfa/totp/qr.png", fixed("GET", "/api/v1/mfa/totp/qr.png", ""), expect{unauth, conflict, conflict, conflict, conflict}},
		{"confirm TOTP with nothing pending", "POST /api/v1/mfa/totp/confirm", fixed("POST", "/api/v1/mfa/totp/confirm", `{"code":"123456"}`), expect{unauth, conflict, conflict, conflict, conflict}},
		{"remove TOTP never set up", "DELETE /api/v1/mfa/totp", fixed("DELETE", "/api/v1/mfa/totp", ""), expect{unauth, conflict, conflict, conflict, conflict}},
		{"start a passkey on an IP address", "POST /api/v1/mfa/passkeys/begin", fixed("POST", "/api/v1/mfa/passkeys/begin", ""), expect{unauth, conflict, conflict, conflict, conflict}},
		{"finish a passkey on an IP address", "POST /api/v1/mfa/passkeys/finish", fixed("POST", "/api/v1/mfa/passkeys/finish", `{}`), expect{unauth, conflict, conflict, conflict, conflict}},
		{"remove an unknown passkey", "DELETE /api/v1/mfa/passkeys/{id}", fixed("DELETE", "/api/v1/mfa/passkeys/pky_nope", ""), expect{unauth, notFound, notFound, notFound, notFound}},
		// Last of the TOTP rows: it leaves a pending enrollment behind.
		{"start TOTP", "POST /api/v1/mfa/totp", fixed("POST", "/api/v1/mfa/totp", ""), expect{unauth, ok, ok, ok, ok}},
		{"recovery codes without a second factor", "POST /api/v1/mfa/recovery-codes", fixed("POST", "/api/v1/mfa/recovery-codes", ""), expect{unauth, conflict, conflict, conflict, conflict}},

		{"list accounts", "GET /api/v1/users", fixed("GET", "/api/v1/users", ""), expect{unauth, forbidden, forbidden, forbidden, ok}},
		{"end a user's sessions", "DELETE /api/v1/users/{id}/sessions", onUser("DELETE", h.staff.ID, "/sessions", ""), expect{unauth, forbidden, forbidden, forbidden, noContent}},
		{"reset a user's second factors", "POST /api/v1/users/{id}/mfa/reset", onUser("POST", h.staff.ID, "/mfa/reset", ""), expect{unauth, forbidden, forbidden, forbidden, noContent}},
		{"grant break-glass to nobody", "POST /api/v1/users/{id}/break-glass", onUser("POST", "usr_nope", "/break-glass", `{"duration":"1h","reason":"covering an emergency"}`), expect{unauth, forbidden, forbidden, forbidden, notFound}},
		{"withdraw break-glass of nobody", "DELETE /api/v1/users/{id}/break-glass", onUser("DELETE", "usr_nope", "/break-glass", ""), expect{unauth, forbidden, forbidden, forbidden, notFound}},
		{"break-glass alerts", "GET /api/v1/break-glass", fixed("GET", "/api/v1/break-glass", ""), expect{unauth, forbidden, forbidden, forbidden, ok}},
		{"search the audit trail", "GET /api/v1/audit", fixed("GET", "/api/v1/audit", ""), expect{unauth, forbidden, forbidden, forbidden, ok}},
	}

	// The matrix covers the whole API: a new route fails here until it has a row.
	var covered, api []string
	for _, tc := range cases {
		covered = append(covered, tc.pattern)
	}
	for _, rt := range h.srv.routes() {
		if isAPI(rt.pattern) {
			api = append(api, rt.pattern)
			if !slices.Contains(covered, rt.pattern) {
				t.Errorf("%s has no row in the role matrix", rt.pattern)
			}
		}
	}
	for _, p := range covered {
		if !slices.Contains(api, p) {
			t.Errorf("the matrix tests %s, which is not an API route", p)
		}
	}

	users := map[string]store.User{"staff": h.staff, "owner": h.owner, "other": h.other, "admin": h.admin}
	for _, tc := range cases {
		for i, role := range roles {
			t.Run(tc.name+"/"+role, func(t *testing.T) {
				v, tok := h.newVisit(t)
				rq := tc.request(v, tok)
				if u, ok := users[role]; ok {
					rq.cookies = []*http.Cookie{h.session(t, u)}
				}
				r := h.do(t, rq)
				want := tc.want[i]
				if code, refused := codes[want]; refused {
					checkError(t, r, want, code)
					return
				}
				if r.status != want {
					t.Fatalf("%s %s as %s: status %d, want %d; body %s", rq.method, rq.path, role, r.status, want, r.body)
				}
				// A new link's random token, or a new TOTP secret, may spell "sql" by chance
				// (a CI run met one: 7SQL6...): it is not error text.
				checkNoGoText(t, randomField.ReplaceAll(r.body, []byte(`"$1":""`)))
			})
		}
	}
}

// randomField is a response field whose value is random: a link's token, a TOTP secret.
var randomField = regexp.MustCompile(`"(patient_url|guest_url|secret|otpauth_url)":"[^"]*"`)

// TestOtherCliniciansVisitLooksUnknown: a clinician cannot tell another clinician's visit
// from one that does not exist.
func TestOtherCliniciansVisitLooksUnknown(t *testing.T) {
	h := newHarness(t, options{})
	v, _ := h.newVisit(t)
	other := h.session(t, h.other)
	for _, suffix := range []string{"", "/link", "/revoke", "/admit", "/remove", "/end", "/guests"} {
		method := "POST"
		if suffix == "" {
			method = "GET"
		}
		body := `{"participant":"prt_x"}`
		existing := h.do(t, req{method: method, path: "/api/v1/visits/" + v.ID + suffix, body: body, cookies: []*http.Cookie{other}})
		unknown := h.do(t, req{method: method, path: "/api/v1/visits/vst_doesnotexist" + suffix, body: body, cookies: []*http.Cookie{other}})
		if existing.status != unknown.status || string(existing.body) != string(unknown.body) {
			t.Errorf("%s %s: another clinician's visit answers %d %s; an unknown one %d %s", method, suffix, existing.status, existing.body, unknown.status, unknown.body)
		}
	}
	// And nothing happened to the visit.
	got, err := h.visits.Get(t.Context(), v.ID)
	if err != nil || got.State != store.VisitScheduled || got.RevokedAt != nil {
		t.Errorf("another clinician changed the visit: %+v, %v", got, err)
	}
}
