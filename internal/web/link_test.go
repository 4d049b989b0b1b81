package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
	"github.com/bedside/bedside/webui"
)

// brokenLinks are the ways a patient link stops working, with what the patient is told.
func brokenLinks(h *harness) []struct {
	name   string
	token  func(t *testing.T) string
	status int
	code   string
	title  string
} {
	ctx := context.Background()
	return []struct {
		name   string
		token  func(t *testing.T) string
		status int
		code   string
		title  string
	}{
		{"unknown", func(t *testing.T) string { return auth.NewToken() }, 404, "link_unknown", "This link does not work"},
		{"malformed", func(t *testing.T) string { return "not-a-token" }, 404, "link_unknown", "This link does not work"},
		{"truncated", func(t *testing.T) string { _, tok := h.newVisit(t); return tok[:40] }, 404, "link_unknown", "This link does not work"},
		{"revoked", func(t *testing.T) string {
			v, tok := h.newVisit(t)
			if _, err := h.visits.Revoke(ctx, v.ID); err != nil {
				t.Fatal(err)
			}
			return tok
		}, 410, "link_revoked", "This link was withdrawn"},
		{"expired", func(t *testing.T) string {
			_, tok, err := h.visits.Create(ctx, visitScheduled(h, -linkTTL+time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			h.clk.Advance(time.Minute)
			return tok
		}, 410, "link_expired", "This link has expired"},
		{"ended", func(t *testing.T) string {
			v, tok := h.newVisit(t)
			if _, err := h.visits.End(ctx, v.ID); err != nil {
				t.Fatal(err)
			}
			return tok
		}, 410, "visit_ended", "This visit has ended"},
	}
}

func TestBrokenLinks(t *testing.T) {
	h := newHarness(t, options{})
	patientHTML, err := fs.ReadFile(webui.Static, "static/patient.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range brokenLinks(h) {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token(t)
			checkError(t, h.do(t, req{method: "POST", path: "/api/v1/link", body: fmt.Sprintf(`{"token":%q}`, tok)}), tc.status, tc.code)
			checkError(t, h.do(t, req{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":"Ada"}`, tok)}), tc.status, tc.code)

			page := h.do(t, req{method: "GET", path: "/v/" + tok})
			if page.status != tc.status {
				t.Errorf("/v/<token> = %d, want %d", page.status, tc.status)
			}
			if ct := page.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			body := string(page.body)
			if !strings.Contains(body, "<h1>"+tc.title+"</h1>") {
				t.Errorf("page does not say %q:\n%s", tc.title, body)
			}
			if !regexp.MustCompile(`<p id="error-message">[^<]+</p>`).MatchString(body) {
				t.Errorf("page has no #error-message:\n%s", body)
			}
			if body == string(patientHTML) {
				t.Error("a broken link served the patient page")
			}
			checkNoGoText(t, page.body)
		})
	}
	t.Run("good link", func(t *testing.T) {
		_, tok := h.newVisit(t)
		page := h.do(t, req{method: "GET", path: "/v/" + tok})
		if page.status != 200 || string(page.body) != string(patientHTML) {
			t.Errorf("/v/<good token> = %d, %d bytes; want 200 and patient.html", page.status, len(page.body))
		}
		if cc := page.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("patient page Cache-Control %q, want no-store", cc)
		}
	})
}

// jsonBody encodes v as a request body.
func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func visitScheduled(h *harness, in time.Duration) visit.NewVisit {
	return visit.NewVisit{ClinicianID: h.owner.ID, ScheduledAt: h.clk.Now().Add(in)}
}

type linkResp struct {
	Visit struct {
		ID            string    `json:"id"`
		State         string    `json:"state"`
		ClinicianName string    `json:"clinician_name"`
		ScheduledAt   time.Time `json:"scheduled_at"`
	} `json:"visit"`
	Participant *struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		Admitted bool   `json:"admitted"`
	} `json:"participant"`
}

func TestLinkJoin(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	v, tok := h.newVisit(t)
	link := func(cookies ...*http.Cookie) (linkResp, response) {
		t.Helper()
		r := h.do(t, req{method: "POST", path: "/api/v1/link", body: fmt.Sprintf(`{"token":%q}`, tok), cookies: cookies})
		if r.status != 200 {
			t.Fatalf("link = %d %s", r.status, r.body)
		}
		var out linkResp
		r.decode(t, &out)
		return out, r
	}
	join := func(name string, cookies ...*http.Cookie) (linkResp, response) {
		t.Helper()
		r := h.do(t, req{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":%q}`, tok, name), cookies: cookies})
		if r.status != 200 {
			t.Fatalf("join = %d %s", r.status, r.body)
		}
		var out linkResp
		r.decode(t, &out)
		return out, r
	}

	first, r := link()
	if first.Participant != nil || first.Visit.ID != v.ID || first.Visit.State != "scheduled" || first.Visit.ClinicianName != "Dr Rivera" || !first.Visit.ScheduledAt.Equal(v.ScheduledAt) {
		t.Errorf("link = %s", r.body)
	}
	if strings.Contains(string(r.body), "Grace Hopper") || strings.Contains(string(r.body), h.owner.ID) {
		t.Errorf("a link holder learns the patient name or the clinician's id: %s", r.body)
	}

	joined, r := join("Ada")
	if joined.Participant == nil || joined.Participant.Name != "Ada" || joined.Participant.Admitted || joined.Visit.ID != v.ID {
		t.Fatalf("join = %s", r.body)
	}
	pid := joined.Participant.ID
	c := r.cookie(ParticipantCookie)
	if c == nil {
		t.Fatalf("no participant cookie; Set-Cookie %q", r.header.Values("Set-Cookie"))
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" {
		t.Errorf("participant cookie %q: want HttpOnly, SameSite=Strict, Path=/", r.header.Get("Set-Cookie"))
	}
	// It outlives a reload for as long as the link could be used (plus the hour of grace).
	if want := int((v.LinkExpiresAt.Sub(h.clk.Now()) + time.Hour) / time.Second); c.MaxAge < want-2 || c.MaxAge > want {
		t.Errorf("participant cookie Max-Age %d, want %d (until the link expires, plus an hour)", c.MaxAge, want)
	}
	cookie := &http.Cookie{Name: ParticipantCookie, Value: c.Value}

	t.Run("reload: the link knows the participant", func(t *testing.T) {
		got, _ := link(cookie)
		if got.Participant == nil || got.Participant.ID != pid {
			t.Errorf("participant %+v, want %s", got.Participant, pid)
		}
	})
	t.Run("joining again keeps the participant and renames it", func(t *testing.T) {
		got, r := join("Ada L.", cookie)
		if got.Participant.ID != pid || got.Participant.Name != "Ada L." {
			t.Errorf("rejoin = %s, want %s named Ada L.", r.body, pid)
		}
		if nc := r.cookie(ParticipantCookie); nc != nil && nc.Value != c.Value {
			t.Error("rejoining replaced a valid cookie")
		}
	})
	t.Run("admission is kept", func(t *testing.T) {
		if err := h.st.AdmitParticipant(ctx, pid, h.clk.Now()); err != nil {
			t.Fatal(err)
		}
		got, r := join("Ada", cookie)
		if got.Participant.ID != pid || !got.Participant.Admitted {
			t.Errorf("rejoin after admission = %s", r.body)
		}
	})
	t.Run("the cookie authenticates the WebSocket as the participant", func(t *testing.T) {
		staff := h.session(t, h.staff)
		r := h.do(t, req{method: "GET", path: "/api/v1/ws?as=participant", cookies: []*http.Cookie{cookie, staff}})
		if id := h.sig.last(); r.status != 204 || id.Participant == nil || id.Participant.ID != pid || id.User != nil {
			t.Errorf("ws?as=participant = %d as %+v, want participant %s", r.status, id, pid)
		}
		r = h.do(t, req{method: "GET", path: "/api/v1/ws", cookies: []*http.Cookie{cookie, staff}})
		if id := h.sig.last(); r.status != 204 || id.User == nil || id.User.ID != h.staff.ID {
			t.Errorf("ws without as= = %d as %+v, want the signed-in user", r.status, id)
		}
		forged := &http.Cookie{Name: ParticipantCookie, Value: pid + "." + auth.NewToken()}
		checkError(t, h.do(t, req{method: "GET", path: "/api/v1/ws?as=participant", cookies: []*http.Cookie{forged, staff}}), 401, "unauthenticated")
	})
	t.Run("a cookie of another visit gets a new participant", func(t *testing.T) {
		_, tok2 := h.newVisit(t)
		r := h.do(t, req{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":"Ada"}`, tok2), cookies: []*http.Cookie{cookie}})
		var got linkResp
		r.decode(t, &got)
		if r.status != 200 || got.Participant == nil || got.Participant.ID == pid || got.Participant.Admitted || r.cookie(ParticipantCookie) == nil {
			t.Errorf("join of another visit with this cookie = %d %s", r.status, r.body)
		}
	})
	t.Run("a forged cookie gets a new participant", func(t *testing.T) {
		forged := &http.Cookie{Name: ParticipantCookie, Value: pid + "." + auth.NewToken()}
		got, _ := join("Mallory", forged)
		if got.Participant.ID == pid || got.Participant.Admitted {
			t.Errorf("a forged cookie took over %s", pid)
		}
		if p, err := h.st.ParticipantByID(ctx, pid); err != nil || p.Name != "Ada" {
			t.Errorf("the forged cookie renamed the participant: %q, %v", p.Name, err)
		}
	})

	names := []struct{ name, in string }{
		{"empty", ""},
		{"spaces", "   "},
		{"81 characters", strings.Repeat("a", 81)},
		{"newline", "Ada\nLovelace"},
		{"NUL", "Ada\u0000"},
		{"escape", "Ada\u001b[31m"},
		{"C1 control", "Ada\u0085Lovelace"},
	}
	for _, tc := range names {
		t.Run("name "+tc.name, func(t *testing.T) {
			body := jsonBody(t, map[string]string{"token": tok, "name": tc.in})
			r := h.do(t, req{method: "POST", path: "/api/v1/link/join", body: body})
			if msg := checkError(t, r, 400, "invalid"); !strings.Contains(msg, "name") {
				t.Errorf("message %q does not name the field", msg)
			}
			if r.cookie(ParticipantCookie) != nil {
				t.Error("a refused join set a cookie")
			}
		})
	}
	t.Run("80 characters is fine", func(t *testing.T) {
		got, _ := join(strings.Repeat("é", 80))
		if got.Participant.Name != strings.Repeat("é", 80) {
			t.Errorf("name %q", got.Participant.Name)
		}
	})
	ps, err := h.st.VisitParticipants(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Role != store.RolePatient || p.UserID != "" {
			t.Errorf("participant %+v joined through the link is not a patient", p)
		}
	}
}

func TestPages(t *testing.T) {
	h := newHarness(t, options{})
	v, _ := h.newVisit(t)
	files := func(name string) string {
		b, err := fs.ReadFile(webui.Static, "static/"+name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cases := []struct {
		name     string
		path     string
		who      *store.User
		status   int
		location string
		body     string // the exact page; "" = do not compare
		contains string
	}{
		{"home redirects to the console", "/", nil, 303, "/console", "", ""},
		{"sign-in page", "/signin", nil, 200, "", files("signin.html"), ""},
		{"console, signed out", "/console", nil, 303, "/signin?next=%2Fconsole", "", ""},
		{"visit page, signed out", "/console/visits/" + v.ID, nil, 303, "/signin?next=%2Fconsole%2Fvisits%2F" + v.ID, "", ""},
		{"console, staff", "/console", &h.staff, 200, "", files("console.html"), ""},
		{"visit page, clinician", "/console/visits/" + v.ID, &h.owner, 200, "", files("visit.html"), ""},
		{"visit page, staff may not join calls", "/console/visits/" + v.ID, &h.staff, 403, "", "", "<h1>Not for your role</h1>"},
		{"static file", "/static/css/bedside.css", nil, 200, "", files("css/bedside.css"), ""},
		{"missing static file", "/static/nope.js", nil, 404, "", "", ""},
		{"unknown page", "/nowhere", nil, 404, "", "", "<h1>Page not found</h1>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rq := req{method: "GET", path: tc.path}
			if tc.who != nil {
				rq.cookies = []*http.Cookie{h.session(t, *tc.who)}
			}
			r := h.do(t, rq)
			if r.status != tc.status {
				t.Fatalf("%s = %d, want %d", tc.path, r.status, tc.status)
			}
			if loc := r.header.Get("Location"); loc != tc.location {
				t.Errorf("Location %q, want %q", loc, tc.location)
			}
			if tc.body != "" && string(r.body) != tc.body {
				t.Errorf("%s did not serve the expected file (%d bytes)", tc.path, len(r.body))
			}
			if !strings.Contains(string(r.body), tc.contains) {
				t.Errorf("page does not contain %q:\n%s", tc.contains, r.body)
			}
			checkNoGoText(t, r.body)
		})
	}
}
