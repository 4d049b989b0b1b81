package web

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

func TestHealth(t *testing.T) {
	h := newHarness(t, options{})
	cases := []struct {
		name   string
		setup  func()
		path   string
		status int
		want   string
	}{
		{"alive", func() {}, "/healthz", 200, `{"status":"ok"}`},
		{"ready", func() {}, "/readyz", 200, `{"status":"ready"}`},
		{"draining: not ready", h.srv.Drain, "/readyz", 503, `{"status":"draining"}`},
		{"draining: still alive", func() {}, "/healthz", 200, `{"status":"ok"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			r := h.do(t, req{method: "GET", path: tc.path})
			if r.status != tc.status || strings.TrimSpace(string(r.body)) != tc.want {
				t.Errorf("%s = %d %s, want %d %s", tc.path, r.status, r.body, tc.status, tc.want)
			}
		})
	}
	t.Run("database gone", func(t *testing.T) {
		h := newHarness(t, options{})
		h.st.Close()
		r := h.do(t, req{method: "GET", path: "/readyz"})
		if r.status != 503 {
			t.Errorf("readyz with the database closed = %d %s, want 503", r.status, r.body)
		}
		checkNoGoText(t, r.body)
	})
}

func TestSignIn(t *testing.T) {
	h := newHarness(t, options{})
	signIn := func(body string) response {
		return h.do(t, req{method: "POST", path: "/api/v1/session", body: body})
	}

	r := signIn(`{"email":"  Rivera@Clinic.Example ","password":"` + password + `"}`)
	if r.status != 200 {
		t.Fatalf("sign in = %d %s", r.status, r.body)
	}
	var got struct{ User userJSON }
	r.decode(t, &got)
	if want := (userJSON{ID: h.owner.ID, Email: "rivera@clinic.example", Name: "Dr Rivera", Role: "clinician"}); got.User != want {
		t.Errorf("user %+v, want %+v", got.User, want)
	}
	c := r.cookie(SessionCookie)
	if c == nil {
		t.Fatalf("no %s cookie; Set-Cookie %q", SessionCookie, r.header.Values("Set-Cookie"))
	}
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" || c.MaxAge != 0 || !c.Expires.IsZero() {
		t.Errorf("session cookie %q: want HttpOnly, SameSite=Strict, Path=/, not Secure over http, ending with the browser session", r.header.Get("Set-Cookie"))
	}
	if !auth.WellFormedToken(c.Value) {
		t.Errorf("session cookie value %q is not a 256-bit token", c.Value)
	}
	if _, err := h.st.SessionByHash(context.Background(), []byte(c.Value)); err == nil {
		t.Error("the store keeps the cookie value itself")
	}
	if _, err := h.st.SessionByHash(context.Background(), auth.HashToken(c.Value)); err != nil {
		t.Errorf("no session stored under the cookie's hash: %v", err)
	}
	me := h.do(t, req{method: "GET", path: "/api/v1/session", cookies: []*http.Cookie{c}})
	var who struct{ User userJSON }
	me.decode(t, &who)
	if me.status != 200 || who.User.ID != h.owner.ID {
		t.Errorf("GET session with the new cookie = %d %s", me.status, me.body)
	}

	// Every sign-in failure looks the same: nobody learns which accounts exist.
	wrongPassword := signIn(`{"email":"rivera@clinic.example","password":"not the password"}`)
	unknownEmail := signIn(`{"email":"nobody@clinic.example","password":"not the password"}`)
	checkError(t, wrongPassword, 401, "bad_credentials")
	checkError(t, unknownEmail, 401, "bad_credentials")
	if string(wrongPassword.body) != string(unknownEmail.body) {
		t.Errorf("wrong password says %s, unknown email %s", wrongPassword.body, unknownEmail.body)
	}
	for _, r := range []response{wrongPassword, unknownEmail} {
		if len(r.header.Values("Set-Cookie")) != 0 {
			t.Errorf("a failed sign-in set a cookie: %q", r.header.Values("Set-Cookie"))
		}
	}

	t.Run("disabled account", func(t *testing.T) {
		if err := h.st.SetUserDisabled(context.Background(), h.other.ID, true); err != nil {
			t.Fatal(err)
		}
		r := signIn(`{"email":"okafor@clinic.example","password":"` + password + `"}`)
		checkError(t, r, 401, "bad_credentials")
		if string(r.body) != string(unknownEmail.body) {
			t.Errorf("a disabled account says %s, an unknown one %s", r.body, unknownEmail.body)
		}
	})
}

func TestAPIErrors(t *testing.T) {
	h := newHarness(t, options{})
	clinician := h.session(t, h.owner)
	staff := h.session(t, h.staff)
	admin := h.session(t, h.admin)
	post := func(path, body string, c *http.Cookie) req {
		rq := req{method: "POST", path: path, body: body}
		if c != nil {
			rq.cookies = []*http.Cookie{c}
		}
		return rq
	}
	big := `{"email":"` + strings.Repeat("a", 64<<10) + `","password":"x"}`
	cases := []struct {
		name   string
		rq     req
		status int
		code   string
		names  string // the message must name this
	}{
		{"not JSON", post("/api/v1/session", `{"email":`, nil), 400, "bad_json", ""},
		{"empty body", post("/api/v1/session", ``, nil), 400, "bad_json", ""},
		{"an array", post("/api/v1/session", `[]`, nil), 400, "bad_json", ""},
		{"a string", post("/api/v1/link", `"token"`, nil), 400, "bad_json", ""},
		{"two objects", post("/api/v1/session", `{}{}`, nil), 400, "bad_json", ""},
		{"unknown field", post("/api/v1/session", `{"email":"a@b.c","password":"x","role":"admin"}`, nil), 400, "invalid", "role"},
		{"wrong type", post("/api/v1/session", `{"email":["a@b.c"],"password":"x"}`, nil), 400, "invalid", "email"},
		{"no password", post("/api/v1/session", `{"email":"a@b.c"}`, nil), 400, "invalid", "password"},
		{"body over 64 KiB", post("/api/v1/session", big, nil), 413, "too_large", ""},
		{"patient name of 201 characters", post("/api/v1/visits", `{"patient_name":"`+strings.Repeat("x", 201)+`"}`, clinician), 400, "invalid", "patient_name"},
		{"patient name with a newline", post("/api/v1/visits", `{"patient_name":"Ada\nL"}`, clinician), 400, "invalid", "patient_name"},
		{"scheduled_at not RFC 3339", post("/api/v1/visits", `{"scheduled_at":"tomorrow at 9"}`, clinician), 400, "invalid", "scheduled_at"},
		{"scheduled_at without a zone", post("/api/v1/visits", `{"scheduled_at":"2030-03-02T10:00:00"}`, clinician), 400, "invalid", "scheduled_at"},
		{"scheduled_at a number", post("/api/v1/visits", `{"scheduled_at":1700000000}`, clinician), 400, "invalid", "scheduled_at"},
		{"scheduled_at in the year 9999", post("/api/v1/visits", `{"scheduled_at":"9999-12-31T23:59:59Z"}`, clinician), 400, "invalid", "scheduled_at"},
		{"scheduled_at long past", post("/api/v1/visits", `{"scheduled_at":"2029-01-01T00:00:00Z"}`, clinician), 400, "invalid", "scheduled_at"},
		{"unknown clinician", post("/api/v1/visits", `{"clinician_email":"nobody@clinic.example"}`, staff), 400, "invalid", "clinician_email"},
		{"a staff account named as the clinician", post("/api/v1/visits", `{"clinician_email":"desk@clinic.example"}`, admin), 400, "invalid", "clinician"},
		{"admit on an unknown visit", post("/api/v1/visits/vst_x/admit", `{}`, clinician), 404, "not_found", ""},
		{"unknown API route", req{method: "GET", path: "/api/v1/nothing"}, 404, "not_found", ""},
		{"unknown method on a route", req{method: "PUT", path: "/api/v1/session"}, 404, "not_found", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := checkError(t, h.do(t, tc.rq), tc.status, tc.code)
			if tc.names != "" && !strings.Contains(msg, tc.names) {
				t.Errorf("message %q does not name %s", msg, tc.names)
			}
		})
	}
}

// visitResp is the API's Visit object as a client reads it.
type visitResp struct {
	ID            string `json:"id"`
	State         string `json:"state"`
	PatientName   string `json:"patient_name"`
	Clinician     struct{ ID, Name string }
	ScheduledAt   time.Time  `json:"scheduled_at"`
	CreatedAt     time.Time  `json:"created_at"`
	LinkExpiresAt time.Time  `json:"link_expires_at"`
	Revoked       bool       `json:"revoked"`
	EndedAt       *time.Time `json:"ended_at"`
	ClinicianURL  string     `json:"clinician_url"`
	PatientURL    string     `json:"patient_url"`
	Waiting       []struct {
		ID, Name string
		Since    time.Time
	} `json:"waiting"`
}

func (h *harness) visitCall(t *testing.T, method, path, body string, c *http.Cookie, status int) visitResp {
	t.Helper()
	r := h.do(t, req{method: method, path: path, body: body, cookies: []*http.Cookie{c}})
	if r.status != status {
		t.Fatalf("%s %s = %d %s, want %d", method, path, r.status, r.body, status)
	}
	var v visitResp
	r.decode(t, &v)
	return v
}

// tokenOf returns the link token of a patient_url, checking its form.
func (h *harness) tokenOf(t *testing.T, patientURL string) string {
	t.Helper()
	tok, ok := strings.CutPrefix(patientURL, h.publicURL+"/v/")
	if !ok || !auth.WellFormedToken(tok) {
		t.Fatalf("patient_url %q: want %s/v/<43-character token>", patientURL, h.publicURL)
	}
	return tok
}

func (h *harness) linkStatus(t *testing.T, tok string) int {
	t.Helper()
	return h.do(t, req{method: "POST", path: "/api/v1/link", body: fmt.Sprintf(`{"token":%q}`, tok)}).status
}

func TestCreateVisit(t *testing.T) {
	h := newHarness(t, options{})
	now := h.clk.Now()
	cases := []struct {
		name      string
		who       store.User
		body      string
		clinician store.User
		scheduled time.Time
		patient   string
	}{
		{"clinician for themselves, now", h.owner, `{"patient_name":"  Ada Lovelace "}`, h.owner, now, "Ada Lovelace"},
		{"clinician naming themselves", h.owner, `{"clinician_email":"RIVERA@clinic.example"}`, h.owner, now, ""},
		{"clinician, scheduled in another zone", h.owner, `{"scheduled_at":"2030-03-02T15:30:00+02:00"}`, h.owner, time.Date(2030, 3, 2, 13, 30, 0, 0, time.UTC), ""},
		{"fractional seconds, as some clients send", h.owner, `{"scheduled_at":"2030-03-02T15:30:00.250Z"}`, h.owner, time.Date(2030, 3, 2, 15, 30, 0, 250e6, time.UTC), ""},
		{"scheduled_at null means now", h.owner, `{"scheduled_at":null}`, h.owner, now, ""},
		{"staff naming the clinician", h.staff, `{"patient_name":"Ada","clinician_email":"Okafor@Clinic.Example"}`, h.other, now, "Ada"},
		{"admin naming the clinician", h.admin, `{"clinician_email":"rivera@clinic.example","scheduled_at":"2030-03-03T09:00:00Z"}`, h.owner, time.Date(2030, 3, 3, 9, 0, 0, 0, time.UTC), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := h.visitCall(t, "POST", "/api/v1/visits", tc.body, h.session(t, tc.who), 201)
			if v.Clinician.ID != tc.clinician.ID || v.Clinician.Name != tc.clinician.Name {
				t.Errorf("clinician %+v, want %s", v.Clinician, tc.clinician.Name)
			}
			if !v.ScheduledAt.Equal(tc.scheduled) || !v.LinkExpiresAt.Equal(tc.scheduled.Add(linkTTL)) || !v.CreatedAt.Equal(now) {
				t.Errorf("scheduled %v, link expires %v, created %v; want %v, %v, %v", v.ScheduledAt, v.LinkExpiresAt, v.CreatedAt, tc.scheduled, tc.scheduled.Add(linkTTL), now)
			}
			if v.State != "scheduled" || v.Revoked || v.EndedAt != nil || v.PatientName != tc.patient || v.Waiting == nil || len(v.Waiting) != 0 {
				t.Errorf("new visit %+v", v)
			}
			if v.ClinicianURL != h.publicURL+"/console/visits/"+v.ID {
				t.Errorf("clinician_url %q", v.ClinicianURL)
			}
			tok := h.tokenOf(t, v.PatientURL)
			if s := h.linkStatus(t, tok); s != 200 {
				t.Errorf("the new patient link answers %d", s)
			}
			// The link is shown once: reading the visit again does not show it.
			again := h.do(t, req{method: "GET", path: "/api/v1/visits/" + v.ID, cookies: []*http.Cookie{h.session(t, h.admin)}})
			if strings.Contains(string(again.body), "patient_url") || strings.Contains(string(again.body), tok) {
				t.Errorf("GET visit shows the patient link: %s", again.body)
			}
		})
	}
}

func TestListVisits(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	day := time.Date(2030, 3, 2, 0, 0, 0, 0, time.UTC) // the fake clock's day
	mk := func(clinician store.User, at time.Time) string {
		c := h.session(t, h.admin)
		v := h.visitCall(t, "POST", "/api/v1/visits", fmt.Sprintf(`{"clinician_email":%q,"scheduled_at":%q}`, clinician.Email, at.Format(time.RFC3339)), c, 201)
		return v.ID
	}
	ownToday := mk(h.owner, day.Add(11*time.Hour))
	ownEarly := mk(h.owner, day.Add(10*time.Hour+30*time.Minute))
	otherToday := mk(h.other, day.Add(12*time.Hour))
	ownTomorrow := mk(h.owner, day.Add(24*time.Hour+9*time.Hour))
	if _, _, err := h.visits.Create(ctx, visit.NewVisit{ClinicianID: h.owner.ID, ScheduledAt: day.Add(-5 * 24 * time.Hour)}); err == nil {
		t.Fatal("created a visit whose link had already expired")
	}

	q := func(from, to string) string {
		v := url.Values{}
		if from != "" {
			v.Set("from", from)
		}
		if to != "" {
			v.Set("to", to)
		}
		if len(v) == 0 {
			return "/api/v1/visits"
		}
		return "/api/v1/visits?" + v.Encode()
	}
	cases := []struct {
		name string
		who  store.User
		path string
		want []string // ids in order
	}{
		{"clinician: own visits today, by time", h.owner, q("", ""), []string{ownEarly, ownToday}},
		{"other clinician: own only", h.other, q("", ""), []string{otherToday}},
		{"staff: everyone's", h.staff, q("", ""), []string{ownEarly, ownToday, otherToday}},
		{"admin: everyone's", h.admin, q("", ""), []string{ownEarly, ownToday, otherToday}},
		{"tomorrow", h.owner, q("2030-03-03T00:00:00Z", "2030-03-04T00:00:00Z"), []string{ownTomorrow}},
		{"two days, in another zone", h.owner, q("2030-03-02T01:00:00+01:00", "2030-03-04T01:00:00+01:00"), []string{ownEarly, ownToday, ownTomorrow}},
		{"from only", h.owner, q("2030-03-02T11:00:00Z", ""), []string{ownToday}},
		{"to is exclusive", h.owner, q("2030-03-02T00:00:00Z", "2030-03-02T11:00:00Z"), []string{ownEarly}},
		{"nothing", h.owner, q("2031-01-01T00:00:00Z", "2031-01-02T00:00:00Z"), []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, req{method: "GET", path: tc.path, cookies: []*http.Cookie{h.session(t, tc.who)}})
			if r.status != 200 {
				t.Fatalf("= %d %s", r.status, r.body)
			}
			var got struct{ Visits []visitResp }
			r.decode(t, &got)
			if got.Visits == nil {
				t.Errorf("visits is null, want a list: %s", r.body)
			}
			ids := []string{}
			for _, v := range got.Visits {
				ids = append(ids, v.ID)
				if v.PatientURL != "" {
					t.Errorf("the list shows a patient link")
				}
			}
			if !slices.Equal(ids, tc.want) {
				t.Errorf("visits %v, want %v", ids, tc.want)
			}
		})
	}
	bad := []struct{ name, path string }{
		{"from not RFC 3339", q("yesterday", "")},
		{"to not RFC 3339", q("", "2030-03-02")},
		{"to before from", q("2030-03-03T00:00:00Z", "2030-03-02T00:00:00Z")},
		{"to equal to from", q("2030-03-02T00:00:00Z", "2030-03-02T00:00:00Z")},
		{"more than 31 days", q("2030-03-01T00:00:00Z", "2030-04-02T00:00:00Z")},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			msg := checkError(t, h.do(t, req{method: "GET", path: tc.path, cookies: []*http.Cookie{h.session(t, h.owner)}}), 400, "invalid")
			if !strings.Contains(msg, "from") && !strings.Contains(msg, "to") {
				t.Errorf("message %q names neither from nor to", msg)
			}
		})
	}
}

func TestVisitLifecycle(t *testing.T) {
	h := newHarness(t, options{})
	doc := h.session(t, h.owner)
	v := h.visitCall(t, "POST", "/api/v1/visits", `{"patient_name":"Ada"}`, doc, 201)
	path := "/api/v1/visits/" + v.ID
	tok1 := h.tokenOf(t, v.PatientURL)

	t.Run("admit with nobody waiting", func(t *testing.T) {
		checkError(t, h.do(t, req{method: "POST", path: path + "/admit", body: `{"participant":"prt_nobody"}`, cookies: []*http.Cookie{doc}}), 409, "wrong_state")
	})
	t.Run("admit without naming anyone", func(t *testing.T) {
		msg := checkError(t, h.do(t, req{method: "POST", path: path + "/admit", body: `{}`, cookies: []*http.Cookie{doc}}), 400, "invalid")
		if !strings.Contains(msg, "participant") {
			t.Errorf("message %q does not name participant", msg)
		}
	})

	p, patient := h.waitingPatient(t, tok1, "Ada")
	t.Run("the waiting patient shows", func(t *testing.T) {
		got := h.visitCall(t, "GET", path, "", doc, 200)
		if got.State != "waiting" || len(got.Waiting) != 1 || got.Waiting[0].ID != p.ID || got.Waiting[0].Name != "Ada" {
			t.Errorf("visit %+v: want state waiting with Ada in the waiting list", got)
		}
	})
	t.Run("admit", func(t *testing.T) {
		got := h.visitCall(t, "POST", path+"/admit", fmt.Sprintf(`{"participant":%q}`, p.ID), doc, 200)
		if got.State != "in_call" || len(got.Waiting) != 0 {
			t.Errorf("after admit: state %q, waiting %+v", got.State, got.Waiting)
		}
		if !slices.Contains(patient.got(), "admitted") {
			t.Errorf("the patient was not told: %v", patient.got())
		}
		checkError(t, h.do(t, req{method: "POST", path: path + "/admit", body: fmt.Sprintf(`{"participant":%q}`, p.ID), cookies: []*http.Cookie{doc}}), 409, "wrong_state")
	})

	var tok2 string
	t.Run("new link", func(t *testing.T) {
		got := h.visitCall(t, "POST", path+"/link", "", doc, 200)
		tok2 = h.tokenOf(t, got.PatientURL)
		if tok2 == tok1 {
			t.Fatal("the new link is the old one")
		}
		if !got.LinkExpiresAt.Equal(h.clk.Now().Add(linkTTL)) {
			t.Errorf("new link expires %v, want %v", got.LinkExpiresAt, h.clk.Now().Add(linkTTL))
		}
		if s := h.linkStatus(t, tok1); s != 404 {
			t.Errorf("the old link answers %d, want 404", s)
		}
		if s := h.linkStatus(t, tok2); s != 200 {
			t.Errorf("the new link answers %d, want 200", s)
		}
	})
	t.Run("revoke", func(t *testing.T) {
		got := h.visitCall(t, "POST", path+"/revoke", "", doc, 200)
		if !got.Revoked {
			t.Error("revoked is false")
		}
		if s := h.linkStatus(t, tok2); s != 410 {
			t.Errorf("the revoked link answers %d, want 410", s)
		}
		if !slices.Contains(patient.got(), "ended revoked") {
			t.Errorf("the patient in the call was not disconnected: %v", patient.got())
		}
		if got.State != "scheduled" {
			t.Errorf("state %q with no patient left, want scheduled", got.State)
		}
	})
	var tok3 string
	t.Run("a new link after revoking works", func(t *testing.T) {
		got := h.visitCall(t, "POST", path+"/link", "", doc, 200)
		tok3 = h.tokenOf(t, got.PatientURL)
		if got.Revoked || h.linkStatus(t, tok3) != 200 {
			t.Errorf("revoked %v; the new link answers %d", got.Revoked, h.linkStatus(t, tok3))
		}
	})
	var endedAt time.Time
	t.Run("end", func(t *testing.T) {
		got := h.visitCall(t, "POST", path+"/end", "", doc, 200)
		if got.State != "ended" || got.EndedAt == nil || !got.EndedAt.Equal(h.clk.Now()) {
			t.Fatalf("after end: state %q ended_at %v", got.State, got.EndedAt)
		}
		endedAt = *got.EndedAt
		if s := h.linkStatus(t, tok3); s != 410 {
			t.Errorf("the link of an ended visit answers %d, want 410", s)
		}
	})
	t.Run("end again is fine", func(t *testing.T) {
		h.clk.Advance(time.Minute)
		got := h.visitCall(t, "POST", path+"/end", "", doc, 200)
		if got.State != "ended" || got.EndedAt == nil || !got.EndedAt.Equal(endedAt) {
			t.Errorf("ending again: state %q ended_at %v, want the first end time %v", got.State, got.EndedAt, endedAt)
		}
	})
	t.Run("an ended visit gets no new link and admits nobody", func(t *testing.T) {
		checkError(t, h.do(t, req{method: "POST", path: path + "/link", cookies: []*http.Cookie{doc}}), 410, "visit_ended")
		checkError(t, h.do(t, req{method: "POST", path: path + "/admit", body: `{"participant":"prt_x"}`, cookies: []*http.Cookie{doc}}), 410, "visit_ended")
	})
}
