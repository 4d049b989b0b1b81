package app_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/pquerna/otp/totp"

	"github.com/bedside/bedside/internal/app"
	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/client"
	"github.com/bedside/bedside/internal/config"
	"github.com/bedside/bedside/internal/store"
)

// TestWebSocketOrigins: the signalling WebSocket opens only from the server's own origin
// (or one named in --allowed-origins): a page on another site cannot ride on the user's
// cookies.
func TestWebSocketOrigins(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := apptest.Start(t, apptest.Options{Config: func(c *config.Config) { c.AllowedOrigins = "https://portal.clinic.example" }})
	vs := newVisit(t, srv, "rivera@clinic.example")
	ws := "ws" + strings.TrimPrefix(srv.URL(), "http") + "/api/v1/ws"
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"https://evil.example", false},
		{"http://127.0.0.1.evil.example", false},
		{"null", false},
		{"https://portal.clinic.example", true},
		{srv.URL(), true},
		{"", true}, // not a browser: no ambient cookies to abuse
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		conn, resp, err := websocket.Dial(ctx, ws, &websocket.DialOptions{HTTPClient: vs.clinician.HTTP, HTTPHeader: h, Subprotocols: []string{"bedside.v1"}})
		if tc.ok {
			if err != nil {
				t.Errorf("origin %q: %v", tc.origin, err)
				continue
			}
			conn.Close(websocket.StatusNormalClosure, "")
			continue
		}
		if err == nil {
			conn.Close(websocket.StatusNormalClosure, "")
			t.Errorf("origin %q: the WebSocket opened", tc.origin)
			continue
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("origin %q: %v, want 403", tc.origin, resp)
		}
	}
	// A cross-site state change is refused too, and an allowed origin is not.
	for _, tc := range []struct {
		origin string
		want   int
	}{{"https://evil.example", 403}, {"https://portal.clinic.example", 201}} {
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL()+"/api/v1/visits", strings.NewReader(`{"patient_name":"X"}`))
		req.Header.Set("Origin", tc.origin)
		req.Header.Set("Content-Type", "application/json")
		resp, err := vs.clinician.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("POST from %s: %d, want %d", tc.origin, resp.StatusCode, tc.want)
		}
	}
}

// TestDefaultRequiresMFA: a server started with the defaults (only test addresses
// changed) requires a second factor of clinicians and admins; apptest turns it off unless a
// test asks; with it on, the whole flow works through the Go client.
func TestDefaultRequiresMFA(t *testing.T) {
	if !config.Default().RequireMFA {
		t.Fatal("config.Default() does not require a second factor")
	}
	ctx := context.Background()
	srv := apptest.Start(t, apptest.Options{RequireMFA: true})
	for _, role := range []store.Role{store.RoleClinician, store.RoleAdmin} {
		email := string(role) + "@clinic.example"
		srv.AddUser(t, email, "X", role, pw)
		c := client.New(srv.URL())
		var step *client.SecondStepError
		if err := c.SignIn(ctx, email, pw); !errors.As(err, &step) || step.Stage != "enroll" {
			t.Fatalf("%s: sign-in = %v, want the enrollment step", role, err)
		}
		if _, err := c.CreateVisit(ctx, "Ada"); err == nil {
			t.Fatalf("%s: a visit created without a second factor", role)
		}
	}
	srv.AddUser(t, "desk@clinic.example", "Desk", store.RoleStaff, pw)
	if err := client.New(srv.URL()).SignIn(ctx, "desk@clinic.example", pw); err != nil {
		t.Errorf("staff (second factor optional): %v", err)
	}

	// Enroll, sign out, sign in with a code.
	c := client.New(srv.URL())
	c.SignIn(ctx, "clinician@clinic.example", pw)
	setup, err := c.BeginTOTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := totp.GenerateCode(setup.Secret, time.Now())
	if _, err := c.ConfirmTOTP(ctx, code); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVisit(ctx, "Ada"); err != nil {
		t.Fatalf("after enrollment: %v", err)
	}
	c2 := client.New(srv.URL())
	var step *client.SecondStepError
	if err := c2.SignIn(ctx, "clinician@clinic.example", pw); !errors.As(err, &step) || step.Stage != "second_factor" {
		t.Fatalf("second sign-in: %v", err)
	}
	if err := c2.SignInTOTP(ctx, code); err == nil {
		t.Fatal("the enrollment code signed in again")
	}
}

// TestRetention: visits older than --retention are deleted with their participants; the
// audit trail keeps its rows and still verifies.
func TestRetention(t *testing.T) {
	clk := &fakeNow{t: time.Now().UTC()}
	srv := apptest.Start(t, apptest.Options{App: app.Options{Now: clk.Now}, Config: func(c *config.Config) { c.Retention = 30 * 24 * time.Hour }})
	ctx := context.Background()
	vs := newVisit(t, srv, "rivera@clinic.example")
	if _, err := vs.clinician.JoinLink(ctx, vs.token, "Ada"); err != nil {
		t.Fatal(err)
	}
	if err := vs.clinician.Do(ctx, "POST", "/api/v1/visits/"+vs.visit.ID+"/end", nil, nil); err != nil {
		t.Fatal(err)
	}
	rowsBefore, _, _ := srv.Store().AuditHead(ctx)
	srv.PurgeOld(ctx)
	if _, err := srv.Store().VisitByID(ctx, vs.visit.ID); err != nil {
		t.Fatalf("a new visit was purged: %v", err)
	}
	clk.Advance(31 * 24 * time.Hour)
	srv.PurgeOld(ctx)
	if _, err := srv.Store().VisitByID(ctx, vs.visit.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the visit 31 days on: %v", err)
	}
	ps, _ := srv.Store().VisitParticipants(ctx, vs.visit.ID)
	if len(ps) != 0 {
		t.Errorf("%d participants left", len(ps))
	}
	got, err := srv.Store().SearchAudit(ctx, audit.Query{VisitID: vs.visit.ID})
	if err != nil || len(got) < 3 {
		t.Fatalf("the visit's audit rows after the purge: %d, %v", len(got), err)
	}
	purge, _ := srv.Store().SearchAudit(ctx, audit.Query{Action: audit.RetentionPurge})
	if len(purge) != 1 || purge[0].Detail["visits"] != "1" {
		t.Fatalf("the purge in the trail: %+v", purge)
	}
	if n, _, _ := srv.Store().AuditHead(ctx); n <= rowsBefore {
		t.Error("the trail lost rows")
	}
	rep, err := audit.Verify(ctx, srv.Store(), nil)
	if err != nil || !rep.OK() {
		t.Fatalf("the trail after the purge: %+v %v", rep.Problems, err)
	}
}

type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeNow) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

// TestACMEWiring: with --acme-domains the server serves TLS 1.2+ with certificates from
// autocert (no CA is reachable here, so no certificate is fetched: the test checks the
// wiring and that the handshake asks autocert, which refuses a name it was not given).
func TestACMEWiring(t *testing.T) {
	srv := apptest.Start(t, apptest.Options{Config: func(c *config.Config) {
		c.ACMEDomains = "visits.clinic.example"
		c.PublicURL = "https://visits.clinic.example"
		c.ACMEHTTPAddr = "127.0.0.1:0"
		c.ACMEDir = "https://127.0.0.1:1/directory" // nothing listens: nothing leaves this machine
	}})
	tc := srv.TLSConfig()
	if tc == nil || tc.GetCertificate == nil || tc.MinVersion != tls.VersionTLS12 {
		t.Fatalf("TLS config: %+v", tc)
	}
	hasACME := false
	for _, p := range tc.NextProtos {
		hasACME = hasACME || p == "acme-tls/1"
	}
	if !hasACME {
		t.Errorf("NextProtos %v: no acme-tls/1 (TLS-ALPN-01 challenges)", tc.NextProtos)
	}
	if _, err := tc.GetCertificate(&tls.ClientHelloInfo{ServerName: "evil.example"}); err == nil {
		t.Error("autocert would get a certificate for a host not in acme-domains")
	}
	// A TLS 1.1 client is refused.
	conn, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{ServerName: "visits.clinic.example", InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
	if srv.ACMEHTTPAddr() == "" {
		t.Error("no HTTP-01 listener")
	}
	if fi := filepath.Base(srv.Config.ACMECacheDir); fi != "acme" {
		t.Errorf("ACME cache %q", srv.Config.ACMECacheDir)
	}
}
