// Package storetest is the suite every store backend passes: storetest.Run(t, newStore).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/store"
)

// Run runs the whole suite; newStore returns an empty store, closed by the caller's cleanup.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("Users", func(t *testing.T) { testUsers(t, newStore(t)) })
	t.Run("Sessions", func(t *testing.T) { testSessions(t, newStore(t)) })
	t.Run("Visits", func(t *testing.T) { testVisits(t, newStore(t)) })
	t.Run("Participants", func(t *testing.T) { testParticipants(t, newStore(t)) })
	t.Run("Audit", func(t *testing.T) { testAudit(t, newStore(t)) })
	t.Run("SecondFactors", func(t *testing.T) { testSecondFactors(t, newStore(t)) })
	t.Run("Lockouts", func(t *testing.T) { testLockouts(t, newStore(t)) })
	t.Run("BreakGlass", func(t *testing.T) { testBreakGlass(t, newStore(t)) })
	t.Run("Retention", func(t *testing.T) { testRetention(t, newStore(t)) })
	t.Run("Connections", func(t *testing.T) { testConnections(t, newStore(t)) })
	t.Run("GuestLinks", func(t *testing.T) { testGuestLinks(t, newStore(t)) })
}

func testGuestLinks(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := clinician(t, s, "usr_a", "a@example.org")
	v := store.Visit{ID: "vst_1", ClinicianID: a.ID, ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("patient"), LinkExpiresAt: t0.Add(24 * time.Hour), State: store.VisitScheduled}
	must(t, s.CreateVisit(ctx, v))
	g1 := store.GuestLink{ID: "gst_1", VisitID: v.ID, Role: store.GuestParticipant, LinkHash: []byte("g1"), CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour)}
	g2 := store.GuestLink{ID: "gst_2", VisitID: v.ID, Role: store.GuestObserver, LinkHash: []byte("g2"), CreatedAt: t0.Add(time.Second), ExpiresAt: t0.Add(24 * time.Hour)}
	must(t, s.CreateGuestLink(ctx, g1))
	must(t, s.CreateGuestLink(ctx, g2))
	if err := s.CreateGuestLink(ctx, store.GuestLink{ID: "gst_3", VisitID: v.ID, Role: store.GuestObserver, LinkHash: []byte("g1"), CreatedAt: t0, ExpiresAt: t0}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate link hash: %v", err)
	}
	if err := s.CreateGuestLink(ctx, store.GuestLink{ID: "gst_4", VisitID: "vst_nope", Role: store.GuestObserver, LinkHash: []byte("g4"), CreatedAt: t0, ExpiresAt: t0}); err == nil {
		t.Fatal("a guest link of an unknown visit was created")
	}
	got, err := s.GuestLinkByHash(ctx, []byte("g2"))
	must(t, err)
	if got.ID != "gst_2" || got.VisitID != v.ID || got.Role != store.GuestObserver || !got.ExpiresAt.Equal(g2.ExpiresAt) || got.RevokedAt != nil {
		t.Fatalf("GuestLinkByHash = %+v", got)
	}
	if _, err := s.GuestLinkByHash(ctx, []byte("patient")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the patient link found as a guest link: %v", err)
	}
	// A participant remembers its guest link and whether it only observes.
	p := store.Participant{ID: "prt_g", VisitID: v.ID, Role: store.RoleGuest, Name: "Grace", CredentialHash: []byte("c"), CreatedAt: t0, GuestLinkID: g2.ID, Observer: true}
	must(t, s.CreateParticipant(ctx, p))
	gp, err := s.ParticipantByID(ctx, p.ID)
	must(t, err)
	if gp.GuestLinkID != g2.ID || !gp.Observer || gp.Role != store.RoleGuest {
		t.Fatalf("guest participant = %+v", gp)
	}
	// Revoking the visit revokes its guest links; a new patient link does not bring them back.
	must(t, s.RevokeVisit(ctx, v.ID, t0.Add(time.Minute)))
	must(t, s.SetVisitLink(ctx, v.ID, []byte("patient2"), t0.Add(48*time.Hour)))
	all, err := s.VisitGuestLinks(ctx, v.ID)
	must(t, err)
	if len(all) != 2 || all[0].ID != "gst_1" || all[1].ID != "gst_2" {
		t.Fatalf("VisitGuestLinks = %+v", all)
	}
	for _, g := range all {
		if g.RevokedAt == nil || !g.RevokedAt.Equal(t0.Add(time.Minute)) {
			t.Errorf("%s after the visit was revoked: %+v", g.ID, g)
		}
	}
	// Retention takes them with the visit.
	must(t, s.EndVisit(ctx, v.ID, t0.Add(time.Hour)))
	if _, err := s.DeleteVisitsBefore(ctx, t0.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GuestLinkByHash(ctx, []byte("g1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("guest link kept after its visit was deleted: %v", err)
	}
}

var t0 = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func clinician(t *testing.T, s store.Store, id, email string) store.User {
	t.Helper()
	u := store.User{ID: id, Email: email, Name: "Dr " + id, Role: store.RoleClinician, PasswordHash: "$argon2id$x", CreatedAt: t0}
	must(t, s.CreateUser(context.Background(), u))
	return u
}

func testUsers(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := clinician(t, s, "usr_1", "a@example.org")
	if err := s.CreateUser(ctx, store.User{ID: "usr_2", Email: "a@example.org", Name: "x", Role: store.RoleStaff, PasswordHash: "h", CreatedAt: t0}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate email: got %v, want ErrConflict", err)
	}
	got, err := s.UserByEmail(ctx, "a@example.org")
	must(t, err)
	if got != u {
		t.Fatalf("UserByEmail = %+v, want %+v", got, u)
	}
	if _, err := s.UserByID(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown user: got %v", err)
	}
	must(t, s.SetUserDisabled(ctx, u.ID, true))
	got, err = s.UserByID(ctx, u.ID)
	must(t, err)
	if !got.Disabled {
		t.Fatal("user not disabled")
	}
	if err := s.SetUserDisabled(ctx, "nobody", true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("disable unknown: got %v", err)
	}
	clinician(t, s, "usr_0", "0@example.org")
	all, err := s.ListUsers(ctx)
	must(t, err)
	if len(all) != 2 || all[0].Email != "0@example.org" {
		t.Fatalf("ListUsers = %+v", all)
	}
}

func testSessions(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := clinician(t, s, "usr_1", "a@example.org")
	sess := store.Session{IDHash: []byte("h1"), UserID: u.ID, CreatedAt: t0, LastSeenAt: t0, ExpiresAt: t0.Add(12 * time.Hour)}
	must(t, s.CreateSession(ctx, sess))
	must(t, s.CreateSession(ctx, store.Session{IDHash: []byte("h2"), UserID: u.ID, CreatedAt: t0, LastSeenAt: t0, ExpiresAt: t0.Add(time.Hour)}))
	got, err := s.SessionByHash(ctx, []byte("h1"))
	must(t, err)
	if !bytes.Equal(got.IDHash, sess.IDHash) || got.UserID != u.ID || !got.ExpiresAt.Equal(sess.ExpiresAt) {
		t.Fatalf("SessionByHash = %+v", got)
	}
	must(t, s.TouchSession(ctx, []byte("h1"), t0.Add(30*time.Minute)))
	// At t0+40m with 15 min idle: h2 (last seen t0) is idle, h1 (seen t0+30m) is not.
	n, err := s.DeleteExpiredSessions(ctx, t0.Add(40*time.Minute), 15*time.Minute)
	must(t, err)
	if n != 1 {
		t.Fatalf("DeleteExpiredSessions removed %d, want 1", n)
	}
	if _, err := s.SessionByHash(ctx, []byte("h2")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("idle session still there: %v", err)
	}
	must(t, s.DeleteSession(ctx, []byte("h1")))
	if err := s.DeleteSession(ctx, []byte("h1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	must(t, s.CreateSession(ctx, store.Session{IDHash: []byte("h3"), UserID: u.ID, CreatedAt: t0, LastSeenAt: t0, ExpiresAt: t0.Add(time.Hour)}))
	must(t, s.DeleteUserSessions(ctx, u.ID))
	if _, err := s.SessionByHash(ctx, []byte("h3")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("user sessions not deleted: %v", err)
	}
}

func testVisits(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := clinician(t, s, "usr_a", "a@example.org")
	b := clinician(t, s, "usr_b", "b@example.org")
	v1 := store.Visit{ID: "vst_1", ClinicianID: a.ID, PatientName: "Ada", ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("link1"), LinkExpiresAt: t0.Add(24 * time.Hour), State: store.VisitScheduled, Policy: store.PolicySFU}
	v2 := store.Visit{ID: "vst_2", ClinicianID: b.ID, ScheduledAt: t0.Add(time.Hour), CreatedAt: t0, LinkHash: []byte("link2"), LinkExpiresAt: t0.Add(25 * time.Hour), State: store.VisitScheduled}
	v3 := store.Visit{ID: "vst_3", ClinicianID: a.ID, ScheduledAt: t0.Add(48 * time.Hour), CreatedAt: t0, LinkHash: []byte("link3"), LinkExpiresAt: t0.Add(72 * time.Hour), State: store.VisitScheduled}
	for _, v := range []store.Visit{v1, v2, v3} {
		must(t, s.CreateVisit(ctx, v))
	}
	if err := s.CreateVisit(ctx, store.Visit{ID: "vst_4", ClinicianID: a.ID, LinkHash: []byte("link1"), State: store.VisitScheduled}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate link hash: %v", err)
	}
	got, err := s.VisitByLinkHash(ctx, []byte("link1"))
	must(t, err)
	if got.ID != "vst_1" || got.PatientName != "Ada" || !got.ScheduledAt.Equal(t0) || got.RevokedAt != nil || got.EndedAt != nil || got.Policy != store.PolicySFU {
		t.Fatalf("VisitByLinkHash = %+v", got)
	}
	if got, err := s.VisitByID(ctx, "vst_2"); err != nil || got.Policy != store.PolicyAuto {
		t.Fatalf("a visit stored without a policy: %+v, %v (want auto)", got, err)
	}
	day, err := s.ListVisits(ctx, "", t0.Add(-time.Hour), t0.Add(23*time.Hour))
	must(t, err)
	if len(day) != 2 || day[0].ID != "vst_1" || day[1].ID != "vst_2" {
		t.Fatalf("ListVisits(all) = %v", ids(day))
	}
	mine, err := s.ListVisits(ctx, a.ID, t0.Add(-time.Hour), t0.Add(23*time.Hour))
	must(t, err)
	if len(mine) != 1 || mine[0].ID != "vst_1" {
		t.Fatalf("ListVisits(a) = %v", ids(mine))
	}
	must(t, s.SetVisitState(ctx, "vst_1", store.VisitWaiting))
	must(t, s.RevokeVisit(ctx, "vst_1", t0.Add(time.Minute)))
	must(t, s.RevokeVisit(ctx, "vst_1", t0.Add(2*time.Minute))) // keeps the first time
	got, err = s.VisitByID(ctx, "vst_1")
	must(t, err)
	if got.State != store.VisitWaiting || got.RevokedAt == nil || !got.RevokedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("after revoke: %+v", got)
	}
	must(t, s.SetVisitLink(ctx, "vst_1", []byte("link1b"), t0.Add(30*time.Hour)))
	if _, err := s.VisitByLinkHash(ctx, []byte("link1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old link still found: %v", err)
	}
	got, err = s.VisitByLinkHash(ctx, []byte("link1b"))
	must(t, err)
	if got.RevokedAt != nil || !got.LinkExpiresAt.Equal(t0.Add(30*time.Hour)) {
		t.Fatalf("after new link: %+v", got)
	}
	must(t, s.EndVisit(ctx, "vst_1", t0.Add(time.Hour)))
	must(t, s.SetVisitState(ctx, "vst_1", store.VisitInCall)) // ignored: ended stays ended
	got, err = s.VisitByID(ctx, "vst_1")
	must(t, err)
	if got.State != store.VisitEnded || got.EndedAt == nil {
		t.Fatalf("after end: %+v", got)
	}
	if err := s.EndVisit(ctx, "nope", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("end unknown: %v", err)
	}
}

func testParticipants(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := clinician(t, s, "usr_a", "a@example.org")
	must(t, s.CreateVisit(ctx, store.Visit{ID: "vst_1", ClinicianID: a.ID, ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("l"), LinkExpiresAt: t0.Add(time.Hour), State: store.VisitScheduled}))
	p := store.Participant{ID: "prt_1", VisitID: "vst_1", Role: store.RolePatient, Name: "Ada", CredentialHash: []byte("cred"), CreatedAt: t0}
	must(t, s.CreateParticipant(ctx, p))
	must(t, s.CreateParticipant(ctx, store.Participant{ID: "prt_0", VisitID: "vst_1", Role: store.RoleClinician, UserID: a.ID, Name: a.Name, CreatedAt: t0.Add(time.Second)}))
	got, err := s.ParticipantByID(ctx, "prt_1")
	must(t, err)
	if got.Name != "Ada" || !bytes.Equal(got.CredentialHash, []byte("cred")) || got.AdmittedAt != nil {
		t.Fatalf("ParticipantByID = %+v", got)
	}
	must(t, s.AdmitParticipant(ctx, "prt_1", t0.Add(time.Minute)))
	must(t, s.AdmitParticipant(ctx, "prt_1", t0.Add(2*time.Minute))) // keeps the first time
	must(t, s.SetParticipantName(ctx, "prt_1", "Ada L"))
	must(t, s.SetParticipantLeft(ctx, "prt_1", t0.Add(time.Hour)))
	all, err := s.VisitParticipants(ctx, "vst_1")
	must(t, err)
	if len(all) != 2 || all[0].ID != "prt_1" || all[0].Name != "Ada L" || all[0].AdmittedAt == nil || !all[0].AdmittedAt.Equal(t0.Add(time.Minute)) || all[0].LeftAt == nil {
		t.Fatalf("VisitParticipants = %+v", all)
	}
	if _, err := s.ParticipantByID(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown participant: %v", err)
	}
	must(t, s.RemoveParticipant(ctx, "prt_1", t0.Add(2*time.Hour)))
	must(t, s.RemoveParticipant(ctx, "prt_1", t0.Add(3*time.Hour))) // keeps the first time
	got, err = s.ParticipantByID(ctx, "prt_1")
	must(t, err)
	if got.RemovedAt == nil || !got.RemovedAt.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("after remove: %+v", got)
	}
	if err := s.RemoveParticipant(ctx, "nope", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("remove unknown: %v", err)
	}

	// Departures: prt_1 left at +1h and was removed at +2h; prt_0 is still in. A second
	// visit ends at +3h with both of its participants; a third's links are revoked at +4h,
	// which puts out its patient (prt_4), not its clinician (prt_5).
	must(t, s.CreateVisit(ctx, store.Visit{ID: "vst_2", ClinicianID: a.ID, ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("l2"), LinkExpiresAt: t0.Add(time.Hour), State: store.VisitScheduled}))
	must(t, s.CreateVisit(ctx, store.Visit{ID: "vst_3", ClinicianID: a.ID, ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("l3"), LinkExpiresAt: t0.Add(time.Hour), State: store.VisitScheduled}))
	for _, p := range []store.Participant{{ID: "prt_2", VisitID: "vst_2"}, {ID: "prt_3", VisitID: "vst_2"}, {ID: "prt_4", VisitID: "vst_3"}} {
		p.Role, p.CreatedAt = store.RolePatient, t0
		must(t, s.CreateParticipant(ctx, p))
	}
	must(t, s.CreateParticipant(ctx, store.Participant{ID: "prt_5", VisitID: "vst_3", Role: store.RoleClinician, UserID: a.ID, Name: a.Name, CreatedAt: t0}))
	must(t, s.EndVisit(ctx, "vst_2", t0.Add(3*time.Hour)))
	must(t, s.RevokeVisit(ctx, "vst_3", t0.Add(4*time.Hour)))
	for _, c := range []struct {
		since                time.Time
		participants, visits []string
	}{
		{t0, []string{"prt_1", "prt_2", "prt_3", "prt_4"}, []string{"vst_2", "vst_3"}},
		{t0.Add(90 * time.Minute), []string{"prt_1", "prt_2", "prt_3", "prt_4"}, []string{"vst_2", "vst_3"}}, // removed at +2h
		{t0.Add(3 * time.Hour), []string{"prt_2", "prt_3", "prt_4"}, []string{"vst_2", "vst_3"}},
		{t0.Add(3*time.Hour + time.Minute), []string{"prt_4"}, []string{"vst_3"}},
		{t0.Add(5 * time.Hour), nil, nil},
	} {
		ps, vs, err := s.RecentDepartures(ctx, c.since)
		must(t, err)
		if !slices.Equal(ps, c.participants) || !slices.Equal(vs, c.visits) {
			t.Errorf("RecentDepartures(t0+%v) = %v, %v; want %v, %v", c.since.Sub(t0), ps, vs, c.participants, c.visits)
		}
	}
}

func ids(vs []store.Visit) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.ID)
	}
	return out
}

func testAudit(t *testing.T, s store.Store) {
	ctx := context.Background()
	n, h, err := s.AuditHead(ctx)
	must(t, err)
	if n != 0 || !bytes.Equal(h, audit.Genesis) {
		t.Fatalf("empty trail head = %d %x", n, h)
	}
	log := audit.NewLog(s, func() time.Time { return t0 })
	events := []audit.Event{
		{Action: audit.SignIn, ActorID: "usr_a", ActorRole: "clinician", Addr: "192.0.2.1", UserAgent: "UA/1"},
		{Action: audit.VisitCreate, ActorID: "usr_a", VisitID: "vst_1", SubjectID: "usr_b", Detail: map[string]string{"k": "v", "a": "b"}},
		{Action: audit.VisitAdmit, ActorID: "usr_b", VisitID: "vst_1", SubjectID: "prt_1", Time: t0.Add(time.Hour)},
		{Action: audit.VisitEnd, ActorID: "usr_a", VisitID: "vst_2", Time: t0.Add(2 * time.Hour)},
	}
	for _, e := range events {
		must(t, log.Record(ctx, e))
	}
	all, err := s.AuditEntries(ctx, 0, 100)
	must(t, err)
	if len(all) != len(events) {
		t.Fatalf("AuditEntries = %d rows, want %d", len(all), len(events))
	}
	prev := audit.Genesis
	for i, en := range all {
		if en.Seq != int64(i+1) || !bytes.Equal(en.PrevHash, prev) || !en.Check() {
			t.Fatalf("row %d: seq %d, links %v, hash ok %v", i, en.Seq, bytes.Equal(en.PrevHash, prev), en.Check())
		}
		prev = en.Hash
	}
	if all[1].Detail["a"] != "b" || all[0].Addr != "192.0.2.1" || all[0].Outcome != "ok" || !all[2].Time.Equal(t0.Add(time.Hour)) {
		t.Fatalf("rows read back differ: %+v", all)
	}
	n, h, err = s.AuditHead(ctx)
	must(t, err)
	if n != 4 || !bytes.Equal(h, all[3].Hash) {
		t.Fatalf("head = %d %x", n, h)
	}
	page, err := s.AuditEntries(ctx, 2, 1)
	must(t, err)
	if len(page) != 1 || page[0].Seq != 3 {
		t.Fatalf("AuditEntries(after 2, limit 1) = %+v", page)
	}
	for _, tc := range []struct {
		name string
		q    audit.Query
		want []int64
	}{
		{"all, newest first", audit.Query{}, []int64{4, 3, 2, 1}},
		{"by visit", audit.Query{VisitID: "vst_1"}, []int64{3, 2}},
		{"by user as actor or subject", audit.Query{UserID: "usr_b"}, []int64{3, 2}},
		{"by action", audit.Query{Action: audit.SignIn}, []int64{1}},
		{"by time", audit.Query{From: t0.Add(time.Minute), To: t0.Add(2 * time.Hour)}, []int64{3}},
		{"paging", audit.Query{BeforeSeq: 3, Limit: 1}, []int64{2}},
	} {
		got, err := s.SearchAudit(ctx, tc.q)
		must(t, err)
		var seqs []int64
		for _, en := range got {
			seqs = append(seqs, en.Seq)
		}
		if fmt.Sprint(seqs) != fmt.Sprint(tc.want) {
			t.Errorf("%s: SearchAudit = %v, want %v", tc.name, seqs, tc.want)
		}
	}
}

func testSecondFactors(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := clinician(t, s, "usr_1", "a@example.org")
	if _, err := s.TOTPByUser(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no TOTP yet: %v", err)
	}
	must(t, s.PutTOTP(ctx, store.TOTP{UserID: u.ID, Secret: "JBSWY3DPEHPK3PXP", CreatedAt: t0}))
	got, err := s.TOTPByUser(ctx, u.ID)
	must(t, err)
	if got.Secret != "JBSWY3DPEHPK3PXP" || got.ConfirmedAt != nil || got.LastStep != 0 {
		t.Fatalf("TOTPByUser = %+v", got)
	}
	if err := s.UseTOTPStep(ctx, u.ID, 100); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a code of an unconfirmed secret was accepted: %v", err)
	}
	must(t, s.ConfirmTOTP(ctx, u.ID, t0, 100))
	if err := s.UseTOTPStep(ctx, u.ID, 100); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("the step used to confirm was accepted again: %v", err)
	}
	must(t, s.UseTOTPStep(ctx, u.ID, 101))
	for _, step := range []int64{101, 99} {
		if err := s.UseTOTPStep(ctx, u.ID, step); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("step %d after 101: %v, want ErrConflict", step, err)
		}
	}
	must(t, s.SetRecoveryCodes(ctx, u.ID, [][]byte{[]byte("h1"), []byte("h2")}))
	must(t, s.UseRecoveryCode(ctx, u.ID, []byte("h1"), t0))
	if err := s.UseRecoveryCode(ctx, u.ID, []byte("h1"), t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a recovery code worked twice: %v", err)
	}
	if n, err := s.RecoveryCodesLeft(ctx, u.ID); err != nil || n != 1 {
		t.Fatalf("RecoveryCodesLeft = %d %v", n, err)
	}
	must(t, s.CreatePasskey(ctx, store.Passkey{ID: "pky_1", UserID: u.ID, CredentialID: []byte("cred"), Credential: []byte(`{"a":1}`), Name: "Laptop", CreatedAt: t0}))
	if err := s.CreatePasskey(ctx, store.Passkey{ID: "pky_2", UserID: u.ID, CredentialID: []byte("cred"), Credential: []byte(`{}`), Name: "x", CreatedAt: t0}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate credential id: %v", err)
	}
	must(t, s.UpdatePasskey(ctx, "pky_1", []byte(`{"a":2}`), t0.Add(time.Hour)))
	pks, err := s.UserPasskeys(ctx, u.ID)
	must(t, err)
	if len(pks) != 1 || string(pks[0].Credential) != `{"a":2}` || pks[0].LastUsedAt == nil || pks[0].Name != "Laptop" {
		t.Fatalf("UserPasskeys = %+v", pks)
	}
	if err := s.DeletePasskey(ctx, "usr_other", "pky_1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another user deleted the passkey: %v", err)
	}
	must(t, s.DeleteSecondFactors(ctx, u.ID))
	if _, err := s.TOTPByUser(ctx, u.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("TOTP after reset: %v", err)
	}
	if pks, _ := s.UserPasskeys(ctx, u.ID); len(pks) != 0 {
		t.Fatal("passkeys after reset")
	}
	if n, _ := s.RecoveryCodesLeft(ctx, u.ID); n != 0 {
		t.Fatal("recovery codes after reset")
	}
	// Sessions carry their stage and a WebAuthn challenge.
	must(t, s.CreateSession(ctx, store.Session{IDHash: []byte("p"), UserID: u.ID, CreatedAt: t0, LastSeenAt: t0, ExpiresAt: t0.Add(time.Hour), Stage: "mfa"}))
	must(t, s.SetSessionChallenge(ctx, []byte("p"), []byte(`{"c":1}`)))
	sess, err := s.SessionByHash(ctx, []byte("p"))
	must(t, err)
	if sess.Stage != "mfa" || string(sess.Challenge) != `{"c":1}` {
		t.Fatalf("session = %+v", sess)
	}
	if n, err := s.CountUserSessions(ctx, u.ID); err != nil || n != 1 {
		t.Fatalf("CountUserSessions = %d %v", n, err)
	}
}

func testLockouts(t *testing.T, s store.Store) {
	ctx := context.Background()
	const max = 3
	window, lock := 10*time.Minute, 15*time.Minute
	for i := 1; i < max; i++ {
		until, err := s.RecordFailure(ctx, "k", t0.Add(time.Duration(i)*time.Second), window, max, lock)
		must(t, err)
		if !until.IsZero() {
			t.Fatalf("locked after %d failures", i)
		}
	}
	until, err := s.RecordFailure(ctx, "k", t0.Add(time.Minute), window, max, lock)
	must(t, err)
	if !until.Equal(t0.Add(time.Minute + lock)) {
		t.Fatalf("after %d failures locked until %v", max, until)
	}
	if got, _ := s.LockedUntil(ctx, "k"); !got.Equal(until) {
		t.Fatalf("LockedUntil = %v", got)
	}
	if got, _ := s.LockedUntil(ctx, "other"); !got.IsZero() {
		t.Fatalf("another key locked: %v", got)
	}
	// Failures spread wider than the window never lock.
	for i := range 5 {
		until, err := s.RecordFailure(ctx, "slow", t0.Add(time.Duration(i)*window), window, 2, lock)
		must(t, err)
		if !until.IsZero() {
			t.Fatalf("slow failures locked at %d", i)
		}
	}
	must(t, s.ClearFailures(ctx, "slow"))
	if got, _ := s.LockedUntil(ctx, "slow"); !got.IsZero() {
		t.Fatalf("cleared key locked: %v", got)
	}
}

func testBreakGlass(t *testing.T, s store.Store) {
	ctx := context.Background()
	u := clinician(t, s, "usr_1", "a@example.org")
	b := store.BreakGlass{ID: "brk_1", UserID: u.ID, GrantedBy: "usr_admin", Reason: "cardiac arrest, covering", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	must(t, s.CreateBreakGlass(ctx, b))
	got, err := s.BreakGlassGrants(ctx, u.ID, t0.Add(time.Minute))
	must(t, err)
	if len(got) != 1 || got[0].Reason != b.Reason || !got[0].Active(t0.Add(time.Minute)) || got[0].Active(t0.Add(time.Hour)) {
		t.Fatalf("BreakGlassGrants = %+v", got)
	}
	if got, _ := s.BreakGlassGrants(ctx, "", t0.Add(2*time.Hour)); len(got) != 0 {
		t.Fatalf("an expired grant is listed: %+v", got)
	}
	n, err := s.RevokeBreakGlass(ctx, u.ID, t0.Add(10*time.Minute))
	must(t, err)
	got, _ = s.BreakGlassGrants(ctx, u.ID, t0)
	if n != 1 || len(got) != 1 || got[0].Active(t0.Add(11*time.Minute)) {
		t.Fatalf("after revoke (%d): %+v", n, got)
	}
}

func testRetention(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := clinician(t, s, "usr_a", "a@example.org")
	old := store.Visit{ID: "vst_old", ClinicianID: a.ID, PatientName: "Old", ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("l1"), LinkExpiresAt: t0.Add(24 * time.Hour), State: store.VisitEnded}
	live := store.Visit{ID: "vst_live", ClinicianID: a.ID, ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("l2"), LinkExpiresAt: t0.Add(90 * 24 * time.Hour), State: store.VisitScheduled}
	recent := store.Visit{ID: "vst_new", ClinicianID: a.ID, ScheduledAt: t0.Add(40 * 24 * time.Hour), CreatedAt: t0, LinkHash: []byte("l3"), LinkExpiresAt: t0.Add(41 * 24 * time.Hour), State: store.VisitEnded}
	for _, v := range []store.Visit{old, live, recent} {
		must(t, s.CreateVisit(ctx, v))
	}
	must(t, s.CreateParticipant(ctx, store.Participant{ID: "prt_1", VisitID: old.ID, Role: store.RolePatient, Name: "Old", CreatedAt: t0}))
	n, err := s.DeleteVisitsBefore(ctx, t0.Add(30*24*time.Hour))
	must(t, err)
	if n != 1 {
		t.Fatalf("DeleteVisitsBefore = %d, want 1 (the ended old visit)", n)
	}
	if _, err := s.VisitByID(ctx, old.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old visit still there: %v", err)
	}
	if _, err := s.ParticipantByID(ctx, "prt_1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("its participant is still there: %v", err)
	}
	for _, id := range []string{live.ID, recent.ID} {
		if _, err := s.VisitByID(ctx, id); err != nil {
			t.Fatalf("%s deleted: %v", id, err)
		}
	}
}
