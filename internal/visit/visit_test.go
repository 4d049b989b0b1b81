package visit_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

func TestCreate(t *testing.T) {
	e := newEnv(t, visit.Config{})
	now := e.clk.Now()
	type want struct {
		field      string // "" = created
		name       string
		scheduled  time.Time
		linkExpiry time.Time
	}
	cases := []struct {
		name string
		nv   func() visit.NewVisit
		want want
	}{
		{"no patient name is fine", func() visit.NewVisit { return visit.NewVisit{ClinicianID: e.clinician.ID} },
			want{name: "", scheduled: now, linkExpiry: now.Add(linkTTL)}},
		{"name is trimmed", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, PatientName: "  Ada Lovelace \t"}
		},
			want{name: "Ada Lovelace", scheduled: now, linkExpiry: now.Add(linkTTL)}},
		{"200 characters", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, PatientName: strings.Repeat("é", 200)}
		}, want{name: strings.Repeat("é", 200), scheduled: now, linkExpiry: now.Add(linkTTL)}},
		{"201 characters", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, PatientName: strings.Repeat("a", 201)}
		}, want{field: "patient_name"}},
		{"newline in name", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, PatientName: "Ada\nLovelace"}
		},
			want{field: "patient_name"}},
		{"C1 control in name", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, PatientName: "Ada\u0085Lovelace"}
		},
			want{field: "patient_name"}},
		{"unknown clinician", func() visit.NewVisit { return visit.NewVisit{ClinicianID: "usr_nobody"} },
			want{field: "clinician"}},
		{"staff is not a clinician", func() visit.NewVisit { return visit.NewVisit{ClinicianID: e.staff.ID} },
			want{field: "clinician"}},
		{"admin is not a clinician", func() visit.NewVisit { return visit.NewVisit{ClinicianID: e.admin.ID} },
			want{field: "clinician"}},
		{"disabled clinician", func() visit.NewVisit { return visit.NewVisit{ClinicianID: e.disabled.ID} },
			want{field: "clinician"}},
		{"scheduled tomorrow", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, ScheduledAt: now.Add(24 * time.Hour)}
		}, want{scheduled: now.Add(24 * time.Hour), linkExpiry: now.Add(24*time.Hour + linkTTL)}},
		{"scheduled in another zone is kept in UTC", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, ScheduledAt: now.Add(time.Hour).In(time.FixedZone("X", 5*3600))}
		}, want{scheduled: now.Add(time.Hour), linkExpiry: now.Add(time.Hour + linkTTL)}},
		{"scheduled an hour ago", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, ScheduledAt: now.Add(-time.Hour)}
		}, want{scheduled: now.Add(-time.Hour), linkExpiry: now.Add(linkTTL - time.Hour)}},
		{"link would expire in a minute", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, ScheduledAt: now.Add(-linkTTL + time.Minute)}
		}, want{scheduled: now.Add(-linkTTL + time.Minute), linkExpiry: now.Add(time.Minute)}},
		{"link would expire right now", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, ScheduledAt: now.Add(-linkTTL)}
		}, want{field: "scheduled_at"}},
		{"link would expire after the year 9999", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, ScheduledAt: time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC)}
		}, want{field: "scheduled_at"}},
		{"scheduled last year", func() visit.NewVisit {
			return visit.NewVisit{ClinicianID: e.clinician.ID, ScheduledAt: now.AddDate(-1, 0, 0)}
		}, want{field: "scheduled_at"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			v, tok, err := e.m.Create(ctx, tc.nv())
			if tc.want.field != "" {
				var inv *visit.InvalidError
				if !errors.As(err, &inv) || inv.Field != tc.want.field {
					t.Fatalf("err = %v, want InvalidError on %s", err, tc.want.field)
				}
				if tok != "" || v.ID != "" {
					t.Errorf("refused Create returned visit %q and a token", v.ID)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.PatientName != tc.want.name || !v.ScheduledAt.Equal(tc.want.scheduled) || !v.LinkExpiresAt.Equal(tc.want.linkExpiry) {
				t.Errorf("visit name %q scheduled %v expires %v, want %q %v %v", v.PatientName, v.ScheduledAt, v.LinkExpiresAt, tc.want.name, tc.want.scheduled, tc.want.linkExpiry)
			}
			if v.State != store.VisitScheduled || v.RevokedAt != nil || v.EndedAt != nil {
				t.Errorf("new visit state %q revoked %v ended %v", v.State, v.RevokedAt, v.EndedAt)
			}
			if len(tok) != 43 || !auth.WellFormedToken(tok) {
				t.Errorf("token %q: want 43 base64url characters", tok)
			}
			stored := e.visit(t, v.ID)
			if !bytes.Equal(stored.LinkHash, auth.HashToken(tok)) {
				t.Errorf("stored link hash is not the SHA-256 of the token")
			}
			if bytes.Contains(stored.LinkHash, []byte(tok)) {
				t.Errorf("the token itself is stored")
			}
			if stored.PatientName != v.PatientName || !stored.ScheduledAt.Equal(v.ScheduledAt) || !stored.LinkExpiresAt.Equal(v.LinkExpiresAt) || stored.ClinicianID != e.clinician.ID {
				t.Errorf("stored %+v, returned %+v", stored, v)
			}
			if got, err := e.m.ResolveLink(ctx, tok); err != nil || got.Visit.ID != v.ID {
				t.Errorf("the new link resolves to %q, %v", got.Visit.ID, err)
			}
		})
	}
}

func TestTokensDiffer(t *testing.T) {
	e := newEnv(t, visit.Config{})
	seen := map[string]bool{}
	for range 20 {
		_, tok := e.newVisit(t)
		if seen[tok] {
			t.Fatalf("token %q issued twice", tok)
		}
		seen[tok] = true
	}
}

func TestResolveLink(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		// setup returns the token to resolve.
		setup func(t *testing.T, e *env) string
		want  error
	}{
		{"good", func(t *testing.T, e *env) string { _, tok := e.newVisit(t); return tok }, nil},
		{"unknown well-formed", func(t *testing.T, e *env) string { e.newVisit(t); return auth.NewToken() }, visit.ErrLinkUnknown},
		{"empty", func(t *testing.T, e *env) string { return "" }, visit.ErrLinkUnknown},
		{"too short", func(t *testing.T, e *env) string { _, tok := e.newVisit(t); return tok[:42] }, visit.ErrLinkUnknown},
		{"too long", func(t *testing.T, e *env) string { _, tok := e.newVisit(t); return tok + "A" }, visit.ErrLinkUnknown},
		{"not base64url", func(t *testing.T, e *env) string { return strings.Repeat("!", 43) }, visit.ErrLinkUnknown},
		{"a second before expiry", func(t *testing.T, e *env) string {
			_, tok := e.newVisit(t)
			e.clk.Advance(linkTTL - time.Second)
			return tok
		}, nil},
		{"at expiry", func(t *testing.T, e *env) string {
			_, tok := e.newVisit(t)
			e.clk.Advance(linkTTL)
			return tok
		}, visit.ErrLinkExpired},
		{"revoked", func(t *testing.T, e *env) string {
			v, tok := e.newVisit(t)
			if _, err := e.m.Revoke(ctx, v.ID); err != nil {
				t.Fatal(err)
			}
			return tok
		}, visit.ErrLinkRevoked},
		{"ended", func(t *testing.T, e *env) string {
			v, tok := e.newVisit(t)
			if _, err := e.m.End(ctx, v.ID); err != nil {
				t.Fatal(err)
			}
			return tok
		}, visit.ErrVisitEnded},
		{"revoked then ended says ended", func(t *testing.T, e *env) string {
			v, tok := e.newVisit(t)
			e.m.Revoke(ctx, v.ID)
			if _, err := e.m.End(ctx, v.ID); err != nil {
				t.Fatal(err)
			}
			return tok
		}, visit.ErrVisitEnded},
		{"replaced by a new link", func(t *testing.T, e *env) string {
			v, tok := e.newVisit(t)
			if _, _, err := e.m.NewLink(ctx, v.ID); err != nil {
				t.Fatal(err)
			}
			return tok
		}, visit.ErrLinkUnknown},
		{"new link after revoke works", func(t *testing.T, e *env) string {
			v, _ := e.newVisit(t)
			e.m.Revoke(ctx, v.ID)
			_, tok, err := e.m.NewLink(ctx, v.ID)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, nil},
		{"new link for an expired visit gets a full lifetime", func(t *testing.T, e *env) string {
			v, _ := e.newVisit(t)
			e.clk.Advance(2 * linkTTL)
			_, tok, err := e.m.NewLink(ctx, v.ID)
			if err != nil {
				t.Fatal(err)
			}
			e.clk.Advance(linkTTL - time.Second)
			return tok
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, visit.Config{})
			tok := tc.setup(t, e)
			v, err := e.m.ResolveLink(ctx, tok)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ResolveLink = %v, want %v", err, tc.want)
			}
			if tc.want == nil && v.Visit.ID == "" {
				t.Error("no visit for a good link")
			}
			// Joining through the link fails the same way.
			_, _, _, err = e.m.JoinLink(ctx, tok, "Ada", "")
			if !errors.Is(err, tc.want) {
				t.Errorf("JoinLink = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNewLinkOnEndedVisit(t *testing.T) {
	e := newEnv(t, visit.Config{})
	v, _ := e.newVisit(t)
	if _, err := e.m.End(context.Background(), v.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.m.NewLink(context.Background(), v.ID); !errors.Is(err, visit.ErrVisitEnded) {
		t.Fatalf("NewLink on an ended visit = %v, want ErrVisitEnded", err)
	}
	for name, f := range map[string]func() error{
		"NewLink": func() error { _, _, err := e.m.NewLink(context.Background(), "vst_nope"); return err },
		"Revoke":  func() error { _, err := e.m.Revoke(context.Background(), "vst_nope"); return err },
		"End":     func() error { _, err := e.m.End(context.Background(), "vst_nope"); return err },
		"Get":     func() error { _, err := e.m.Get(context.Background(), "vst_nope"); return err },
	} {
		if err := f(); !errors.Is(err, visit.ErrNotFound) {
			t.Errorf("%s of an unknown visit = %v, want ErrNotFound", name, err)
		}
	}
}

func TestJoinLinkNames(t *testing.T) {
	e := newEnv(t, visit.Config{})
	_, tok := e.newVisit(t)
	cases := []struct {
		name, in, want string // want "" = refused
	}{
		{"plain", "Ada", "Ada"},
		{"trimmed", "  Ada  ", "Ada"},
		{"80 characters", strings.Repeat("ß", 80), strings.Repeat("ß", 80)},
		{"81 characters", strings.Repeat("a", 81), ""},
		{"empty", "", ""},
		{"only spaces", "   \t ", ""},
		{"newline", "Ada\nLovelace", ""},
		{"tab inside", "Ada\tLovelace", ""},
		{"NUL", "Ada\x00", ""},
		{"DEL", "Ada\x7f", ""},
		{"C1 control (NEL) inside", "Ada\u0085Lovelace", ""},
		{"invalid UTF-8", "Ada\xff", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, _, cookie, err := e.m.JoinLink(context.Background(), tok, tc.in, "")
			if tc.want == "" {
				var inv *visit.InvalidError
				if !errors.As(err, &inv) || inv.Field != "name" {
					t.Fatalf("JoinLink(%q) = %v, want InvalidError on name", tc.in, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != tc.want || e.participant(t, p.ID).Name != tc.want || cookie == "" {
				t.Errorf("name %q (stored %q), cookie %q; want %q", p.Name, e.participant(t, p.ID).Name, cookie, tc.want)
			}
		})
	}
}

func TestJoinLinkCookie(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	v, tok := e.newVisit(t)
	v2, tok2 := e.newVisit(t)

	p, cookie := e.join(t, tok, "Ada")
	if p.VisitID != v.ID || p.Role != store.RolePatient || p.AdmittedAt != nil || p.UserID != "" {
		t.Fatalf("new participant %+v", p)
	}
	id, secret, ok := strings.Cut(cookie, ".")
	if !ok || id != p.ID || !auth.WellFormedToken(secret) {
		t.Fatalf("cookie %q: want <participant id>.<43-character secret>", cookie)
	}
	if stored := e.participant(t, p.ID); !bytes.Equal(stored.CredentialHash, auth.HashToken(secret)) {
		t.Error("stored credential is not the SHA-256 of the cookie secret")
	}

	t.Run("same cookie keeps the participant and updates the name", func(t *testing.T) {
		again, _, newCookie, err := e.m.JoinLink(ctx, tok, "Ada L.", cookie)
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != p.ID || newCookie != "" || again.Name != "Ada L." || e.participant(t, p.ID).Name != "Ada L." {
			t.Errorf("rejoin gave %s %q cookie %q; want %s \"Ada L.\" and no new cookie", again.ID, again.Name, newCookie, p.ID)
		}
	})
	t.Run("admission survives a rejoin", func(t *testing.T) {
		if err := e.st.AdmitParticipant(ctx, p.ID, e.clk.Now()); err != nil {
			t.Fatal(err)
		}
		again, _, _, err := e.m.JoinLink(ctx, tok, "Ada", cookie)
		if err != nil || again.ID != p.ID || again.AdmittedAt == nil {
			t.Errorf("rejoin after admission: %s admitted %v, %v", again.ID, again.AdmittedAt, err)
		}
		_, lp, err := e.m.LinkParticipant(ctx, tok, cookie)
		if err != nil || lp == nil || lp.ID != p.ID || lp.AdmittedAt == nil {
			t.Errorf("LinkParticipant with the cookie = %+v, %v", lp, err)
		}
	})
	t.Run("cookie of another visit gives a new participant", func(t *testing.T) {
		_, lp, err := e.m.LinkParticipant(ctx, tok2, cookie)
		if err != nil || lp != nil {
			t.Errorf("LinkParticipant(other visit's cookie) = %+v, %v; want no participant", lp, err)
		}
		np, _, newCookie, err := e.m.JoinLink(ctx, tok2, "Ada", cookie)
		if err != nil {
			t.Fatal(err)
		}
		if np.ID == p.ID || np.VisitID != v2.ID || newCookie == "" || np.AdmittedAt != nil {
			t.Errorf("joined %s of %s (admitted %v) cookie %q: want a new, waiting participant of %s", np.ID, np.VisitID, np.AdmittedAt, newCookie, v2.ID)
		}
	})
	t.Run("tampered secret gives a new participant", func(t *testing.T) {
		bad := p.ID + "." + auth.NewToken()
		np, _, newCookie, err := e.m.JoinLink(ctx, tok, "Ada", bad)
		if err != nil {
			t.Fatal(err)
		}
		if np.ID == p.ID || newCookie == "" || np.AdmittedAt != nil {
			t.Errorf("a forged cookie took over participant %s (admitted %v)", np.ID, np.AdmittedAt)
		}
	})
}

func TestParticipantFromCookie(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	_, tok := e.newVisit(t)
	p, cookie := e.join(t, tok, "Ada")
	_, secret, _ := strings.Cut(cookie, ".")
	flipped := []byte(secret)
	flipped[10] ^= 1 // another base64url character
	cases := []struct {
		name, cookie string
		ok           bool
	}{
		{"right cookie", cookie, true},
		{"empty", "", false},
		{"no dot", p.ID + secret, false},
		{"only the id", p.ID + ".", false},
		{"only the secret", "." + secret, false},
		{"one character of the secret changed", p.ID + "." + string(flipped), false},
		{"another secret", p.ID + "." + auth.NewToken(), false},
		{"short secret", p.ID + "." + secret[:42], false},
		{"unknown id", "prt_nobody." + secret, false},
		{"overlong id", strings.Repeat("p", 65) + "." + secret, false},
		{"cookie with a second dot", cookie + ".x", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.m.ParticipantFromCookie(ctx, tc.cookie)
			if tc.ok {
				if err != nil || got.ID != p.ID {
					t.Fatalf("= %s, %v; want %s", got.ID, err, p.ID)
				}
				return
			}
			if !errors.Is(err, visit.ErrNotFound) || got.ID != "" {
				t.Fatalf("= %q, %v; want ErrNotFound", got.ID, err)
			}
		})
	}
	t.Run("account participants have no cookie", func(t *testing.T) {
		v, _ := e.newVisit(t)
		pr, _, err := e.m.Connect(ctx, visit.Identity{User: &e.clinician}, v.ID, "session-a", true, &fakeMember{})
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Disconnect(ctx)
		if _, err := e.m.ParticipantFromCookie(ctx, pr.Participant().ID+"."+secret); !errors.Is(err, visit.ErrNotFound) {
			t.Errorf("a clinician's participant opened with a cookie: %v", err)
		}
	})
}

// FuzzCleanName checks that whatever CleanName accepts is what a display name must be.
func FuzzCleanName(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string, max uint8) {
		m := int(max%100) + 1
		out, err := visit.CleanName("name", in, m, true)
		if err != nil {
			var inv *visit.InvalidError
			if !errors.As(err, &inv) || inv.Field != "name" {
				t.Fatalf("error %v is not an InvalidError on name", err)
			}
			return
		}
		if out == "" || out != strings.TrimSpace(out) || !utf8.ValidString(out) || utf8.RuneCountInString(out) > m {
			t.Fatalf("CleanName(%q, %d) = %q", in, m, out)
		}
		for _, r := range out {
			if unicode.IsControl(r) {
				t.Fatalf("CleanName(%q) kept control character %U", in, r)
			}
		}
		if again, err := visit.CleanName("name", out, m, true); err != nil || again != out {
			t.Fatalf("not idempotent: %q -> %q, %v", out, again, err)
		}
	})
}

// FuzzParticipantCookie checks that no cookie but the one issued opens the participant.
func FuzzParticipantCookie(f *testing.F) {
	e := newEnv(f, visit.Config{})
	_, tok := e.newVisit(f)
	p, cookie := e.join(f, tok, "Ada")
	f.Fuzz(func(t *testing.T, c string) {
		c = strings.ReplaceAll(c, "@PRT@", p.ID)
		got, err := e.m.ParticipantFromCookie(context.Background(), c)
		if c == cookie {
			if err != nil || got.ID != p.ID {
				t.Fatalf("the issued cookie does not work: %v", err)
			}
			return
		}
		if !errors.Is(err, visit.ErrNotFound) {
			t.Fatalf("ParticipantFromCookie(%q) = %s, %v; want ErrNotFound", c, got.ID, err)
		}
	})
}
