//go:build browser

package browser

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/app"
	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/config"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

// clock is a settable clock for the server: tests move it forward instead of sleeping.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// TestLinkErrors: a patient link that does not work (unknown, expired, revoked, or of an
// ended visit) opens a clear page that says so, with the right status, and no internal text.
func TestLinkErrors(t *testing.T) {
	clk := &clock{}
	srv := apptest.Start(t, apptest.Options{
		App:    app.Options{Now: clk.Now},
		Config: func(c *config.Config) { c.LinkTTL = time.Minute },
	})
	doc := srv.AddUser(t, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	ctx := context.Background()
	newLink := func() (store.Visit, string) {
		t.Helper()
		v, token, err := srv.Visits().Create(ctx, visit.NewVisit{ClinicianID: doc.ID, PatientName: "Ada Lovelace"})
		if err != nil {
			t.Fatal(err)
		}
		return v, srv.PublicURL() + "/v/" + token
	}

	raw := make([]byte, 32)
	rand.Read(raw)
	unknown := srv.PublicURL() + "/v/" + base64.RawURLEncoding.EncodeToString(raw) // 43 characters

	_, expired := newLink()
	clk.Advance(2 * time.Minute) // the link lives one minute past the scheduled time (now)

	revokedVisit, revoked := newLink()
	if _, err := srv.Visits().Revoke(ctx, revokedVisit.ID); err != nil {
		t.Fatal(err)
	}
	endedVisit, ended := newLink()
	if _, err := srv.Visits().End(ctx, endedVisit.ID); err != nil {
		t.Fatal(err)
	}

	p := newPage(t, "patient")
	for _, tc := range []struct {
		name   string
		url    string
		status int
		title  *regexp.Regexp
	}{
		{"unknown", unknown, 404, regexp.MustCompile(`(?i)does not work|not valid`)},
		{"expired", expired, 410, regexp.MustCompile(`(?i)expired`)},
		{"revoked", revoked, 410, regexp.MustCompile(`(?i)withdrawn|revoked|cancel`)},
		{"ended", ended, 410, regexp.MustCompile(`(?i)has ended`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer p.use(t)() // failures and logs belong to the case
			if status := p.navigateStatus(tc.url); status != tc.status {
				t.Errorf("status %d, want %d", status, tc.status)
			}
			var page struct {
				Title, H1, Message, Body string
				PatientApp               bool
			}
			page.Title = mustEval[string](p, `document.title`)
			page.H1 = mustEval[string](p, `(document.querySelector('h1') || {innerText: ''}).innerText`)
			page.Message = mustEval[string](p, `(document.getElementById('error-message') || {innerText: ''}).innerText`)
			page.Body = mustEval[string](p, `document.body.innerText`)
			page.PatientApp = mustEval[bool](p, `!!document.getElementById('stage-check')`)
			t.Logf("%d %q: %q", tc.status, page.H1, page.Message)
			if !tc.title.MatchString(page.H1) {
				t.Errorf("h1 %q does not say what happened (want %v)", page.H1, tc.title)
			}
			if !strings.Contains(page.Title, page.H1) {
				t.Errorf("document title %q does not carry the heading %q", page.Title, page.H1)
			}
			if len(page.Message) < 15 || !strings.HasSuffix(strings.TrimSpace(page.Message), ".") {
				t.Errorf("#error-message %q is not a sentence a patient can read", page.Message)
			}
			if page.PatientApp {
				t.Error("the patient app (device check) was served for a link that does not work")
			}
			if m := internalText.FindString(page.Body); m != "" {
				t.Errorf("the page shows internal text %q: %q", m, page.Body)
			}
		})
	}
	p.assertNoExceptions()
}

// internalText matches what must never reach a patient: Go errors, stack traces, SQL.
var internalText = regexp.MustCompile(`goroutine \d|panic|\.go:\d|runtime error|sql: |sqlite|SQLITE|` +
	`<nil>|%!|\berr=|visit link expired|unknown visit link|stack trace|Traceback`)
