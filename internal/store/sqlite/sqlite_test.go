package sqlite_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/store/sqlite"
	"github.com/bedside/bedside/internal/store/storetest"
)

func TestSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestReopenKeepsDataAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, store.User{ID: "usr_1", Email: "a@example.org", Name: "A", Role: store.RoleAdmin, PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = sqlite.Open(ctx, dir) // migrations run again and must be a no-op
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.UserByEmail(ctx, "a@example.org"); err != nil {
		t.Fatalf("user lost after reopen: %v", err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "bedside.db"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %v, want %v", path, got, want)
		}
	}
}

// TestPatientFieldsEncryptedAtRest: the database file alone holds no patient name; the data
// key opens them; another key does not; a key others can read is refused; names stored in
// plaintext by an older version are encrypted at the next open.
func TestPatientFieldsEncryptedAtRest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.KeyCreated() {
		t.Error("the first open did not make a data key")
	}
	if fi, err := os.Stat(filepath.Join(dir, "data.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("data key: %v %v", fi, err)
	}
	t0 := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	u := store.User{ID: "usr_1", Email: "a@example.org", Name: "Dr A", Role: store.RoleClinician, PasswordHash: "h", CreatedAt: t0}
	v := store.Visit{ID: "vst_1", ClinicianID: u.ID, PatientName: "Grace Hopper", ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("l"), LinkExpiresAt: t0.Add(time.Hour), State: store.VisitScheduled}
	p := store.Participant{ID: "prt_1", VisitID: v.ID, Role: store.RolePatient, Name: "Grace H", CreatedAt: t0}
	for _, err := range []error{s.CreateUser(ctx, u), s.CreateVisit(ctx, v), s.CreateParticipant(ctx, p), s.PutTOTP(ctx, store.TOTP{UserID: u.ID, Secret: "JBSWY3DPEHPK3PXP", CreatedAt: t0})} {
		if err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "bedside.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var name, pname, secret string
	raw.QueryRow(`SELECT patient_name FROM visits`).Scan(&name)
	raw.QueryRow(`SELECT name FROM participants`).Scan(&pname)
	raw.QueryRow(`SELECT secret FROM mfa_totp`).Scan(&secret)
	for _, v := range []string{name, pname, secret} {
		if !strings.HasPrefix(v, "enc1:") || strings.Contains(v, "Grace") || strings.Contains(v, "JBSWY3") {
			t.Errorf("stored %q: not encrypted", v)
		}
	}
	// A ciphertext moved to another row does not open.
	raw.Exec(`INSERT INTO visits (id, clinician_id, patient_name, scheduled_at, created_at, link_hash, link_expires_at, state) VALUES ('vst_2', 'usr_1', ?, 0, 0, x'01', 0, 'ended')`, name)
	// A name written in plaintext by an older version.
	raw.Exec(`INSERT INTO visits (id, clinician_id, patient_name, scheduled_at, created_at, link_hash, link_expires_at, state) VALUES ('vst_3', 'usr_1', 'Ada Lovelace', 0, 0, x'02', 0, 'ended')`)

	s, err = sqlite.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.VisitByID(ctx, "vst_1")
	if err != nil || got.PatientName != "Grace Hopper" {
		t.Fatalf("VisitByID = %q, %v", got.PatientName, err)
	}
	if gp, err := s.ParticipantByID(ctx, "prt_1"); err != nil || gp.Name != "Grace H" {
		t.Fatalf("ParticipantByID = %q, %v", gp.Name, err)
	}
	if _, err := s.VisitByID(ctx, "vst_2"); err == nil {
		t.Error("a ciphertext copied into another row opened")
	}
	if v3, err := s.VisitByID(ctx, "vst_3"); err != nil || v3.PatientName != "Ada Lovelace" {
		t.Fatalf("legacy row = %q, %v", v3.PatientName, err)
	}
	s.Close()
	raw.QueryRow(`SELECT patient_name FROM visits WHERE id = 'vst_3'`).Scan(&name)
	if !strings.HasPrefix(name, "enc1:") {
		t.Errorf("the legacy plaintext name was not encrypted at open: %q", name)
	}

	// Another key opens the database but not the names.
	other := filepath.Join(t.TempDir(), "other.key")
	s, err = sqlite.OpenWith(ctx, dir, sqlite.Options{DataKeyFile: other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.VisitByID(ctx, "vst_1"); err == nil {
		t.Error("the patient name opened with another key")
	}
	s.Close()

	os.Chmod(filepath.Join(dir, "data.key"), 0o640)
	if _, err := sqlite.Open(ctx, dir); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("a data key readable by the group: %v", err)
	}
}
