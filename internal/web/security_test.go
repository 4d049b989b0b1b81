package web

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/auth"
)

func TestCSRF(t *testing.T) {
	h := newHarness(t, options{})
	cases := []struct {
		name    string
		method  string
		header  map[string]string
		allowed bool
	}{
		{"no browser headers (CLI)", "DELETE", nil, true},
		{"same-origin", "DELETE", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": h.publicURL}, true},
		{"typed in the address bar", "DELETE", map[string]string{"Sec-Fetch-Site": "none"}, true},
		{"own origin only", "DELETE", map[string]string{"Origin": h.publicURL}, true},
		{"reached under another name", "DELETE", map[string]string{"Host": "bedside.lan:8080", "Origin": "http://bedside.lan:8080"}, true},
		{"cross-site", "DELETE", map[string]string{"Sec-Fetch-Site": "cross-site"}, false},
		{"same-site but another origin", "DELETE", map[string]string{"Sec-Fetch-Site": "same-site"}, false},
		{"evil origin", "DELETE", map[string]string{"Origin": "https://evil.example"}, false},
		{"evil origin claiming same-origin", "DELETE", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "https://evil.example"}, false},
		{"opaque origin", "DELETE", map[string]string{"Origin": "null"}, false},
		{"our host over https is another origin", "DELETE", map[string]string{"Origin": strings.Replace(h.publicURL, "http:", "https:", 1)}, false},
		{"cross-site read is not a state change", "GET", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := h.session(t, h.owner)
			r := h.do(t, req{method: tc.method, path: "/api/v1/session", header: tc.header, cookies: []*http.Cookie{c}})
			if !tc.allowed {
				checkError(t, r, 403, "bad_origin")
				// The session was not signed out behind the user's back.
				if s := h.do(t, req{method: "GET", path: "/api/v1/session", cookies: []*http.Cookie{c}}).status; s != 200 {
					t.Errorf("after a refused cross-site sign-out the session answers %d", s)
				}
				return
			}
			want := map[string]int{"GET": 200, "DELETE": 204}[tc.method]
			if r.status != want {
				t.Errorf("%s = %d %s, want %d", tc.method, r.status, r.body, want)
			}
		})
	}
	t.Run("cross-site sign-in and link join are refused too", func(t *testing.T) {
		_, tok := h.newVisit(t)
		evil := map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
		for _, rq := range []req{
			{method: "POST", path: "/api/v1/session", body: `{"email":"rivera@clinic.example","password":"x"}`, header: evil},
			{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":"Ada"}`, tok), header: evil},
			{method: "POST", path: "/api/v1/visits", body: `{}`, header: evil, cookies: []*http.Cookie{h.session(t, h.owner)}},
		} {
			r := h.do(t, rq)
			checkError(t, r, 403, "bad_origin")
			if len(r.header.Values("Set-Cookie")) != 0 {
				t.Errorf("%s: a refused request set a cookie", rq.path)
			}
		}
	})
}

// TestSecurityHeaders pins the response headers of each kind of response. Run with -update
// to accept a deliberate change (and review the diff).
func TestSecurityHeaders(t *testing.T) {
	h := newHarness(t, options{})
	tlsh := newHarness(t, options{inProcess: true, tls: true})
	cases := []struct {
		name string
		h    *harness
		path string
	}{
		{"page", h, "/signin"},
		{"api", h, "/api/v1/session"},
		{"static", h, "/static/css/bedside.css"},
		{"error page", h, "/v/not-a-token"},
		{"page over TLS", tlsh, "/signin"},
	}
	var b strings.Builder
	for _, tc := range cases {
		r := tc.h.do(t, req{method: "GET", path: tc.path})
		fmt.Fprintf(&b, "== %s: GET %s -> %d\n", tc.name, tc.path, r.status)
		var names []string
		for k := range r.header {
			if k != "Date" && k != "Content-Length" {
				names = append(names, k)
			}
		}
		slices.Sort(names)
		for _, k := range names {
			for _, v := range r.header[k] {
				fmt.Fprintf(&b, "%s: %s\n", k, v)
			}
		}
		b.WriteString("\n")
	}
	got := b.String()
	golden := filepath.Join("testdata", "headers.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestSecurityHeaders -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("response headers changed (go test -run TestSecurityHeaders -update accepts them):\n--- got\n%s\n--- want\n%s", got, want)
	}
}

func TestSessionCookieOverTLS(t *testing.T) {
	h := newHarness(t, options{inProcess: true, tls: true})
	r := h.do(t, req{method: "POST", path: "/api/v1/session", body: `{"email":"rivera@clinic.example","password":"` + password + `"}`})
	if r.status != 200 {
		t.Fatalf("sign in = %d %s", r.status, r.body)
	}
	if r.cookie(SessionCookie) != nil {
		t.Errorf("under TLS the cookie must be __Host- prefixed; got %q", r.header.Values("Set-Cookie"))
	}
	c := r.cookie("__Host-" + SessionCookie)
	if c == nil {
		t.Fatalf("no __Host-%s cookie: %q", SessionCookie, r.header.Values("Set-Cookie"))
	}
	// A __Host- cookie is only accepted by browsers when Secure, Path=/ and without Domain.
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" {
		t.Errorf("cookie %q: want Secure, HttpOnly, SameSite=Strict, Path=/, no Domain", r.header.Get("Set-Cookie"))
	}
	if s := h.do(t, req{method: "GET", path: "/api/v1/session", cookies: []*http.Cookie{c}}).status; s != 200 {
		t.Errorf("the __Host- cookie does not work: %d", s)
	}
	// The unprefixed name (which a subdomain could have planted) is not read under TLS.
	plain := &http.Cookie{Name: SessionCookie, Value: c.Value}
	checkError(t, h.do(t, req{method: "GET", path: "/api/v1/session", cookies: []*http.Cookie{plain}}), 401, "unauthenticated")

	_, tok := h.newVisit(t)
	j := h.do(t, req{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":"Ada"}`, tok)})
	if pc := j.cookie("__Host-" + ParticipantCookie); pc == nil || !pc.Secure || !pc.HttpOnly || pc.SameSite != http.SameSiteStrictMode {
		t.Errorf("participant cookie under TLS: %q", j.header.Values("Set-Cookie"))
	}
	if hsts := r.header.Get("Strict-Transport-Security"); !strings.HasPrefix(hsts, "max-age=") {
		t.Errorf("no HSTS under TLS: %q", hsts)
	}
}

func TestSignOut(t *testing.T) {
	h := newHarness(t, options{})
	c := h.session(t, h.owner)
	other := h.session(t, h.owner) // the same user on another computer
	r := h.do(t, req{method: "DELETE", path: "/api/v1/session", cookies: []*http.Cookie{c}})
	if r.status != 204 {
		t.Fatalf("sign out = %d %s", r.status, r.body)
	}
	if gone := r.cookie(SessionCookie); gone == nil || gone.MaxAge >= 0 || gone.Value != "" {
		t.Errorf("sign-out does not delete the cookie: %q", r.header.Values("Set-Cookie"))
	}
	if _, err := h.st.SessionByHash(context.Background(), auth.HashToken(c.Value)); err == nil {
		t.Error("the session is still in the store")
	}
	// Someone who kept a copy of the cookie gets nothing from it.
	checkError(t, h.do(t, req{method: "GET", path: "/api/v1/session", cookies: []*http.Cookie{c}}), 401, "unauthenticated")
	checkError(t, h.do(t, req{method: "GET", path: "/api/v1/visits", cookies: []*http.Cookie{c}}), 401, "unauthenticated")
	if s := h.do(t, req{method: "GET", path: "/api/v1/session", cookies: []*http.Cookie{other}}).status; s != 200 {
		t.Errorf("signing out on one computer ended the session on another: %d", s)
	}
}

func TestSessionExpiry(t *testing.T) {
	cases := []struct {
		name  string
		steps []time.Duration // clock advances, each followed by a request
		alive bool            // after the last step
	}{
		{"fresh", []time.Duration{0}, true},
		{"idle just under the limit", []time.Duration{sessionIdle - time.Second}, true},
		{"idle to the limit", []time.Duration{sessionIdle}, false},
		{"idle an hour", []time.Duration{time.Hour}, false},
		{"busy: each request keeps it alive", []time.Duration{10 * time.Minute, 10 * time.Minute, 10 * time.Minute, 10 * time.Minute}, true},
		{"busy past its lifetime", slices.Repeat([]time.Duration{10 * time.Minute}, int(sessionLifetime/(10*time.Minute))), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, options{})
			c := h.session(t, h.owner)
			var r response
			for i, d := range tc.steps {
				h.clk.Advance(d)
				r = h.do(t, req{method: "GET", path: "/api/v1/session", cookies: []*http.Cookie{c}})
				if i < len(tc.steps)-1 && r.status != 200 {
					t.Fatalf("step %d: %d", i, r.status)
				}
			}
			page := h.do(t, req{method: "GET", path: "/console/visits/vst_abc", cookies: []*http.Cookie{c}})
			if tc.alive {
				if r.status != 200 || page.status != 200 {
					t.Errorf("session ended: api %d, page %d", r.status, page.status)
				}
				return
			}
			checkError(t, r, 401, "unauthenticated")
			if loc := page.header.Get("Location"); page.status != 303 || loc != "/signin?next=%2Fconsole%2Fvisits%2Fvst_abc" {
				t.Errorf("page after expiry = %d to %q, want 303 to /signin?next=%%2Fconsole%%2Fvisits%%2Fvst_abc", page.status, loc)
			}
			// Coming back later does not revive it.
			h.clk.Advance(-time.Hour)
			checkError(t, h.do(t, req{method: "GET", path: "/api/v1/session", cookies: []*http.Cookie{c}}), 401, "unauthenticated")
		})
	}
}
