// Package storetest is the suite every store backend passes: storetest.Run(t, newStore).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/store"
)

// Run runs the whole suite; newStore returns an empty store, closed by the caller's cleanup.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Run("Users", func(t *testing.T) { testUsers(t, newStore(t)) })
	t.Run("Sessions", func(t *testing.T) { testSessions(t, newStore(t)) })
	t.Run("Visits", func(t *testing.T) { testVisits(t, newStore(t)) })
	t.Run("Participants", func(t *testing.T) { testParticipants(t, newStore(t)) })
	t.Run("Connections", func(t *testing.T) { testConnections(t, newStore(t)) })
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
	v1 := store.Visit{ID: "vst_1", ClinicianID: a.ID, PatientName: "Ada", ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("link1"), LinkExpiresAt: t0.Add(24 * time.Hour), State: store.VisitScheduled}
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
	if got.ID != "vst_1" || got.PatientName != "Ada" || !got.ScheduledAt.Equal(t0) || got.RevokedAt != nil || got.EndedAt != nil {
		t.Fatalf("VisitByLinkHash = %+v", got)
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
}

func ids(vs []store.Visit) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.ID)
	}
	return out
}
