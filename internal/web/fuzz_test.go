package web

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fuzzRoutes are the routes FuzzAPIBodies posts to, and as whom.
var fuzzRoutes = []struct {
	path string
	as   string // "", "clinician", "staff"
}{
	{"/api/v1/session", ""},
	{"/api/v1/visits", "clinician"},
	{"/api/v1/visits", "staff"},
	{"/api/v1/link", ""},
	{"/api/v1/link/join", ""},
	{"/api/v1/session/totp", "halfway"},
	{"/api/v1/session/recovery", "halfway"},
	{"/api/v1/session/passkey/finish", "halfway"},
	{"/api/v1/mfa/totp/confirm", "clinician"},
	{"/api/v1/users/@OWNER@/break-glass", "admin"},
}

// statusOfCode is the errors table of docs/api.md.
var statusOfCode = map[string]int{
	"bad_json": 400, "invalid": 400, "too_large": 413, "unauthenticated": 401, "bad_credentials": 401,
	"forbidden": 403, "bad_origin": 403, "not_found": 404, "link_unknown": 404, "wrong_state": 409,
	"link_expired": 410, "link_revoked": 410, "visit_ended": 410, "rate_limited": 429, "internal": 500,
	"bad_code": 401, "mfa_required": 403,
}

// FuzzAPIBodies posts arbitrary bytes as the JSON body of the routes that parse one. Whatever
// arrives, the server answers without a 5xx, in JSON, and an error carries error.code and
// error.message and no internal text. In the body, @TOKEN@ stands for a working link token and
// @COOKIE@ in the cookie argument for a participant cookie of that visit, so the corpus
// reaches past the token check.
func FuzzAPIBodies(f *testing.F) {
	h := newHarness(f, options{inProcess: true})
	_, tok := h.newVisit(f)
	as := map[string]*http.Cookie{"clinician": h.session(f, h.owner), "staff": h.session(f, h.staff), "admin": h.session(f, h.admin), "halfway": h.sessionAt(f, h.other, "mfa")}
	j := h.do(f, req{method: "POST", path: "/api/v1/link/join", body: `{"token":"` + tok + `","name":"Seed"}`})
	participant := j.cookie(ParticipantCookie)
	if participant == nil {
		f.Fatalf("join for the seed cookie: %d %s", j.status, j.body)
	}

	f.Fuzz(func(t *testing.T, route uint8, body []byte, cookie string) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		body = bytes.ReplaceAll(body, []byte("@TOKEN@"), []byte(tok))
		r := httptest.NewRequest("POST", h.publicURL+strings.Replace(rt.path, "@OWNER@", h.owner.ID, 1), bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if c := as[rt.as]; c != nil {
			r.AddCookie(c)
		}
		if cookie == "@COOKIE@" {
			cookie = participant.Value
		}
		if cookie != "" {
			r.AddCookie(&http.Cookie{Name: ParticipantCookie, Value: cookie})
		}
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, r)

		if w.Code >= 500 {
			t.Fatalf("POST %s %q: %d %s", rt.path, body, w.Code, w.Body)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("POST %s %q: %d with Content-Type %q", rt.path, body, w.Code, ct)
		}
		if w.Code == http.StatusCreated && strings.HasSuffix(rt.path, "/break-glass") {
			h.st.RevokeBreakGlass(t.Context(), h.owner.ID, h.clk.Now()) // keep the owner an ordinary clinician
		}
		if w.Code < 400 {
			// A success may echo what was sent (a patient name), so only its form is checked.
			if !json.Valid(w.Body.Bytes()) {
				t.Fatalf("POST %s %q: %d with a body that is not JSON: %s", rt.path, body, w.Code, w.Body)
			}
			return
		}
		var e errorBody
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Fatalf("POST %s %q: %d with body %s: want {\"error\":{\"code\",\"message\"}}", rt.path, body, w.Code, w.Body)
		}
		if want, ok := statusOfCode[e.Error.Code]; !ok || want != w.Code {
			t.Fatalf("POST %s %q: %d with code %q, which docs/api.md gives status %d", rt.path, body, w.Code, e.Error.Code, want)
		}
		if !strings.HasPrefix(e.Error.Message, "unknown field ") { // that one names the sender's own field
			checkNoGoText(t, w.Body.Bytes())
		}
	})
}
