package web

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/store/sqlite"
	"github.com/bedside/bedside/internal/visit"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	password        = "correct horse battery"
	linkTTL         = 24 * time.Hour
	sessionIdle     = 15 * time.Minute
	sessionLifetime = 12 * time.Hour
)

// passwordHash is made once: argon2id is slow on purpose, more so under -race.
var passwordHash = sync.OnceValue(func() string {
	h, err := auth.HashPassword(password)
	if err != nil {
		panic(err)
	}
	return h
})

// clock is a fake time source the test advances by hand. It starts far from the real date,
// so that any use of the real clock shows.
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
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fakeSignal stands in for the WebSocket endpoint: it records who the web layer said the
// caller is and answers 204.
type fakeSignal struct {
	mu  sync.Mutex
	ids []visit.Identity
}

func (f *fakeSignal) Serve(w http.ResponseWriter, r *http.Request, id visit.Identity) {
	f.mu.Lock()
	f.ids = append(f.ids, id)
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeSignal) last() visit.Identity {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ids) == 0 {
		return visit.Identity{}
	}
	return f.ids[len(f.ids)-1]
}

// harness is the web server on the real store, sessions and visit manager.
type harness struct {
	srv       *Server
	ts        *httptest.Server // nil: requests are served in-process
	client    *http.Client
	publicURL string
	st        *sqlite.Store
	visits    *visit.Manager
	sessions  *auth.Sessions
	clk       *clock
	sig       *fakeSignal
	audit     *audit.Log
	opt       options

	owner, other, staff, admin store.User
}

type options struct {
	inProcess  bool // no listener: ServeHTTP with a recorder (fuzzing, TLS cookies)
	tls        bool // Config.TLS
	requireMFA bool // clinicians and admins must have a second factor
	origins    []string
	proxies    []netip.Prefix // Config.TrustedProxies
}

func newHarness(t testing.TB, opt options) *harness {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &harness{st: st, clk: &clock{t: time.Date(2030, 3, 2, 10, 0, 0, 0, time.UTC)}, sig: &fakeSignal{}, opt: opt}
	h.start(t)
	add := func(email, name string, role store.Role) store.User {
		u := store.User{ID: store.NewID("usr"), Email: email, Name: name, Role: role, PasswordHash: passwordHash(), CreatedAt: h.clk.Now()}
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	h.owner = add("rivera@clinic.example", "Dr Rivera", store.RoleClinician)
	h.other = add("okafor@clinic.example", "Dr Okafor", store.RoleClinician)
	h.staff = add("desk@clinic.example", "Front Desk", store.RoleStaff)
	h.admin = add("admin@clinic.example", "Ada Admin", store.RoleAdmin)
	return h
}

// restart is a new server (sessions, visits, web) on the same database and clock: what a
// restarted process would see.
func (h *harness) restart(t testing.TB) *harness {
	t.Helper()
	h2 := &harness{st: h.st, clk: h.clk, sig: &fakeSignal{}, opt: h.opt, owner: h.owner, other: h.other, staff: h.staff, admin: h.admin}
	h2.start(t)
	return h2
}

func (h *harness) start(t testing.TB) {
	t.Helper()
	st, opt := h.st, h.opt
	var err error
	h.audit = audit.NewLog(st, h.clk.Now)
	h.sessions, err = auth.NewSessions(st, sessionIdle, sessionLifetime, h.clk.Now, auth.SessionOptions{RequireMFA: opt.requireMFA, Audit: h.audit})
	if err != nil {
		t.Fatal(err)
	}
	h.visits = visit.NewManager(st, visit.Config{LinkTTL: linkTTL, Now: h.clk.Now, Audit: h.audit})
	t.Cleanup(h.visits.Shutdown)

	switch {
	case opt.inProcess && opt.tls:
		h.publicURL = "https://bedside.test"
	case opt.inProcess:
		h.publicURL = "http://bedside.test"
	default:
		h.ts = httptest.NewUnstartedServer(nil)
		h.publicURL = "http://" + h.ts.Listener.Addr().String()
	}
	h.srv, err = New(Config{
		Sessions: h.sessions, Visits: h.visits, Users: st, Signal: h.sig,
		PublicURL: h.publicURL, TLS: opt.tls, Now: h.clk.Now, Audit: h.audit, AllowedOrigins: opt.origins,
		TrustedProxies: opt.proxies,
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.ts != nil {
		h.ts.Config.Handler = h.srv
		h.ts.Start()
		t.Cleanup(h.ts.Close)
		c := *h.ts.Client()
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		h.client = &c
	}
}

// session opens a session for u straight in the store (the password check is tested on its
// own, and argon2 under -race is slow) and returns its cookie.
func (h *harness) session(t testing.TB, u store.User) *http.Cookie {
	t.Helper()
	tok := auth.NewToken()
	now := h.clk.Now()
	err := h.st.CreateSession(context.Background(), store.Session{IDHash: auth.HashToken(tok), UserID: u.ID, CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(sessionLifetime)})
	if err != nil {
		t.Fatal(err)
	}
	return &http.Cookie{Name: h.srv.cookieName(SessionCookie), Value: tok}
}

// sessionAt opens a session for u at a stage of signing in ("mfa", "enroll", "full").
func (h *harness) sessionAt(t testing.TB, u store.User, stage string) *http.Cookie {
	t.Helper()
	tok := auth.NewToken()
	now := h.clk.Now()
	err := h.st.CreateSession(context.Background(), store.Session{IDHash: auth.HashToken(tok), UserID: u.ID, CreatedAt: now, LastSeenAt: now, ExpiresAt: now.Add(10 * time.Minute), Stage: stage})
	if err != nil {
		t.Fatal(err)
	}
	return &http.Cookie{Name: h.srv.cookieName(SessionCookie), Value: tok}
}

// newVisit creates a visit of the owner, scheduled now, and returns it with its link token.
func (h *harness) newVisit(t testing.TB) (store.Visit, string) {
	t.Helper()
	v, tok, err := h.visits.Create(context.Background(), visit.NewVisit{ClinicianID: h.owner.ID, PatientName: "Grace Hopper"})
	if err != nil {
		t.Fatal(err)
	}
	return v, tok
}

// waitingPatient joins the visit's link and connects the patient, who then waits.
func (h *harness) waitingPatient(t testing.TB, token, name string) (store.Participant, *recordingMember) {
	t.Helper()
	ctx := context.Background()
	p, _, _, err := h.visits.JoinLink(ctx, token, name, "")
	if err != nil {
		t.Fatal(err)
	}
	m := &recordingMember{}
	pr, _, err := h.visits.Connect(ctx, visit.Identity{Participant: &p}, "", "page-load-1", false, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Disconnect(context.Background()) })
	return p, m
}

// recordingMember is a patient's connection as the visit room sees it.
type recordingMember struct {
	mu     sync.Mutex
	events []string
}

func (m *recordingMember) add(s string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, s)
}

func (m *recordingMember) got() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.events...)
}

func (m *recordingMember) Admitted([]visit.Peer, visit.MediaState)  { m.add("admitted") }
func (m *recordingMember) Mode(visit.MediaState)                    {}
func (m *recordingMember) Chat(string, string, time.Time)           {}
func (m *recordingMember) MediaDescription(string, string, string)  {}
func (m *recordingMember) MediaCandidate(string, []byte)            {}
func (m *recordingMember) Tracks([]visit.Track)                     {}
func (m *recordingMember) Layers(string, []string)                  {}
func (m *recordingMember) VideoPaused(string, string, bool, string) {}
func (m *recordingMember) Speakers(string, []string)                {}
func (m *recordingMember) WaitingChanged([]visit.Waiting)           {}
func (m *recordingMember) PeerEvent(visit.PeerEvent, visit.Peer)    {}
func (m *recordingMember) Signal(string, any)                       {}
func (m *recordingMember) Ended(reason string)                      { m.add("ended " + reason) }
func (m *recordingMember) Bye(reason string)                        { m.add("bye " + reason) }

// req is one request a test makes.
type req struct {
	method, path string
	body         string
	cookies      []*http.Cookie
	header       map[string]string
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) cookie(name string) *http.Cookie {
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// decode unmarshals the body into v, failing the test if it is not JSON.
func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json; body %s", ct, r.body)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.body)
	}
}

func (h *harness) do(t testing.TB, rq req) response {
	t.Helper()
	var body io.Reader
	if rq.body != "" {
		body = strings.NewReader(rq.body)
	}
	var r *http.Request
	if h.ts == nil {
		r = httptest.NewRequest(rq.method, h.publicURL+rq.path, body)
	} else {
		var err error
		r, err = http.NewRequest(rq.method, h.ts.URL+rq.path, body)
		if err != nil {
			t.Fatal(err)
		}
	}
	if rq.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range rq.header {
		if k == "Host" {
			r.Host = v
			continue
		}
		r.Header.Set(k, v)
	}
	for _, c := range rq.cookies {
		r.AddCookie(c)
	}
	if h.ts == nil {
		w := httptest.NewRecorder()
		h.srv.ServeHTTP(w, r)
		return response{status: w.Code, header: w.Result().Header, body: w.Body.Bytes()}
	}
	resp, err := h.client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// goErrorText is what Go's own error messages look like: none of it may reach a client.
var goErrorText = []string{
	"json:", "sql", "runtime error", "goroutine", "panic", ".go:", "cannot unmarshal",
	"invalid character", "unexpected EOF", "Go value", "Go struct", "http: ", "<nil>", "%!", "parsing time",
}

// checkNoGoText fails if body holds Go error text.
func checkNoGoText(t testing.TB, body []byte) {
	t.Helper()
	for _, s := range goErrorText {
		if bytes.Contains(bytes.ToLower(body), []byte(strings.ToLower(s))) {
			t.Errorf("response leaks internal text %q: %s", s, body)
		}
	}
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// checkError checks an error response: the status, a JSON body that is exactly
// {"error":{"code","message"}} with the code, a message, and no internal text. It returns
// the message.
func checkError(t testing.TB, r response, status int, code string) string {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	var raw map[string]map[string]string
	r.decode(t, &raw)
	e, ok := raw["error"]
	if len(raw) != 1 || !ok || len(e) != 2 {
		t.Fatalf("error body %s: want {\"error\":{\"code\",\"message\"}}", r.body)
	}
	if e["code"] != code {
		t.Errorf("error code %q, want %q (message %q)", e["code"], code, e["message"])
	}
	if e["message"] == "" {
		t.Error("error message is empty")
	}
	checkNoGoText(t, r.body)
	return e["message"]
}

// trail returns the audit rows of action, oldest first.
func (h *harness) trail(t testing.TB, action audit.Action) []audit.Entry {
	t.Helper()
	got, err := h.st.SearchAudit(context.Background(), audit.Query{Action: action, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(got)
	return got
}
