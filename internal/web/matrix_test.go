package web

import (
	"fmt"
	"net/http"
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
		{"resolve a link", "POST /api/v1/link", withToken("/api/v1/link", `{"token":%q}`), expect{ok, ok, ok, ok, ok}},
		{"join through a link", "POST /api/v1/link/join", withToken("/api/v1/link/join", `{"token":%q,"name":"Ada"}`), expect{ok, ok, ok, ok, ok}},
		{"device check ICE servers", "POST /api/v1/link/ice", withToken("/api/v1/link/ice", `{"token":%q}`), expect{ok, ok, ok, ok, ok}},
		{"WebSocket", "GET /api/v1/ws", fixed("GET", "/api/v1/ws", ""), expect{unauth, noContent, noContent, noContent, noContent}},
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
				checkNoGoText(t, r.body)
			})
		}
	}
}

// TestOtherCliniciansVisitLooksUnknown: a clinician cannot tell another clinician's visit
// from one that does not exist.
func TestOtherCliniciansVisitLooksUnknown(t *testing.T) {
	h := newHarness(t, options{})
	v, _ := h.newVisit(t)
	other := h.session(t, h.other)
	for _, suffix := range []string{"", "/link", "/revoke", "/admit", "/remove", "/end"} {
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
