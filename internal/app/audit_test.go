package app_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/client"
	"github.com/bedside/bedside/internal/store/sqlite"
)

// rawDB opens the database file behind the store's back, as an intruder with the file would.
func rawDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "bedside.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// Bedside's triggers refuse changes to the trail; an intruder drops them first.
	for _, q := range []string{`DROP TRIGGER audit_log_no_update`, `DROP TRIGGER audit_log_no_delete`} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// trailWithRows makes a data directory whose trail has some rows, through the CLI.
func trailWithRows(t *testing.T) (dir string, rows int) {
	t.Helper()
	dir = t.TempDir()
	d := "--data-dir=" + dir
	if r := bedside(t, "a-long-password\n", nil, "user", "add", d, "--email", "rivera@clinic.example", "--name", "Dr Rivera", "--role", "clinician"); r.code != 0 {
		t.Fatalf("user add: %+v", r)
	}
	for range 3 {
		if r := bedside(t, "", nil, "visit", "create", d, "--clinician", "rivera@clinic.example", "--patient-name", "Ada"); r.code != 0 {
			t.Fatalf("visit create: %+v", r)
		}
	}
	if r := bedside(t, "", nil, "user", "disable", d, "--email", "rivera@clinic.example"); r.code != 0 {
		t.Fatalf("user disable: %+v", r)
	}
	return dir, 5
}

func TestAuditVerifyCLI(t *testing.T) {
	t.Run("intact, without and with a checkpoint", func(t *testing.T) {
		dir, rows := trailWithRows(t)
		d := "--data-dir=" + dir
		r := bedside(t, "", nil, "audit", "verify", d)
		if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("OK: %d rows", rows)) || !strings.Contains(r.stdout, "no checkpoints") {
			t.Fatalf("verify: %+v", r)
		}
		r = bedside(t, "", nil, "audit", "checkpoint", d)
		if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("Checkpoint of %d rows", rows)) {
			t.Fatalf("checkpoint: %+v", r)
		}
		r = bedside(t, "", nil, "audit", "verify", d)
		if r.code != 0 || !strings.Contains(r.stdout, "1 signed checkpoints match") {
			t.Fatalf("verify with a checkpoint: %+v", r)
		}
		// The public key alone, as an operator elsewhere holds it, verifies too.
		pub := filepath.Join(t.TempDir(), "audit.pub")
		data, _ := os.ReadFile(filepath.Join(dir, "audit-signing.key.pub"))
		os.WriteFile(pub, data, 0o644)
		if r := bedside(t, "", nil, "audit", "verify", d, "--public-key", pub); r.code != 0 {
			t.Fatalf("verify with --public-key: %+v", r)
		}
	})

	t.Run("one row edited in the database", func(t *testing.T) {
		dir, _ := trailWithRows(t)
		d := "--data-dir=" + dir
		db := rawDB(t, dir)
		if _, err := db.Exec(`UPDATE audit_log SET addr = '203.0.113.66' WHERE seq = 3`); err != nil {
			t.Fatal(err)
		}
		r := bedside(t, "", nil, "audit", "verify", d)
		if r.code != 1 || !strings.Contains(r.stdout, "FAIL: row 3 was changed") {
			t.Fatalf("verify after editing row 3: %+v", r)
		}
	})

	t.Run("last rows deleted after a checkpoint", func(t *testing.T) {
		dir, rows := trailWithRows(t)
		d := "--data-dir=" + dir
		if r := bedside(t, "", nil, "audit", "checkpoint", d); r.code != 0 {
			t.Fatalf("checkpoint: %+v", r)
		}
		db := rawDB(t, dir)
		if _, err := db.Exec(`DELETE FROM audit_log WHERE seq > ?`, rows-2); err != nil {
			t.Fatal(err)
		}
		r := bedside(t, "", nil, "audit", "verify", d)
		want := fmt.Sprintf("FAIL: rows %d to %d are missing at the tail", rows-1, rows)
		if r.code != 1 || !strings.Contains(r.stdout, want) {
			t.Fatalf("verify after deleting the tail: %+v, want %q", r, want)
		}
	})

	t.Run("trail rewritten with fresh hashes", func(t *testing.T) {
		dir, _ := trailWithRows(t)
		d := "--data-dir=" + dir
		if r := bedside(t, "", nil, "audit", "checkpoint", d); r.code != 0 {
			t.Fatalf("checkpoint: %+v", r)
		}
		// The intruder edits row 2 and recomputes every hash after it, so the chain itself is
		// consistent again; only the signed checkpoint tells.
		st, err := sqlite.Open(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		all, err := st.AuditEntries(context.Background(), 0, 100)
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		db := rawDB(t, dir)
		prev := audit.Genesis
		for _, en := range all {
			if en.Seq == 2 {
				en.ActorID = "cli:someone-else"
			}
			h := audit.ChainHash(prev, en.Seq, en.Event)
			if _, err := db.Exec(`UPDATE audit_log SET actor_id = ?, prev_hash = ?, hash = ? WHERE seq = ?`, en.ActorID, prev, h, en.Seq); err != nil {
				t.Fatal(err)
			}
			prev = h
		}
		r := bedside(t, "", nil, "audit", "verify", d)
		if r.code != 1 || !strings.Contains(r.stdout, "were rewritten") {
			t.Fatalf("verify after a rewrite: %+v", r)
		}
	})

	t.Run("forged checkpoint file", func(t *testing.T) {
		dir, _ := trailWithRows(t)
		d := "--data-dir=" + dir
		bedside(t, "", nil, "audit", "checkpoint", d)
		path := filepath.Join(dir, "audit-checkpoints.txt")
		data, _ := os.ReadFile(path)
		os.WriteFile(path, []byte(strings.Replace(string(data), "\n5\n", "\n4\n", 1)), 0o644)
		r := bedside(t, "", nil, "audit", "verify", d)
		if r.code != 1 || !strings.Contains(r.stdout, "signature does not verify") {
			t.Fatalf("verify with a forged checkpoint: %+v", r)
		}
	})

	t.Run("signing key readable by others is refused", func(t *testing.T) {
		dir, _ := trailWithRows(t)
		d := "--data-dir=" + dir
		bedside(t, "", nil, "audit", "checkpoint", d)
		os.Chmod(filepath.Join(dir, "audit-signing.key"), 0o644)
		r := bedside(t, "", nil, "audit", "checkpoint", d)
		if r.code == 0 || !strings.Contains(r.stderr, "readable by others") {
			t.Fatalf("checkpoint with a loose key: %+v", r)
		}
	})
}

func TestAuditExportCLI(t *testing.T) {
	dir, rows := trailWithRows(t)
	d := "--data-dir=" + dir
	if r := bedside(t, "", nil, "audit", "export", d); r.code != 2 || !strings.Contains(r.stderr, "--since") {
		t.Fatalf("export without --since: %+v", r)
	}
	r := bedside(t, "", nil, "audit", "export", d, "--since", "2000-01-01")
	if r.code != 0 {
		t.Fatalf("export: %+v", r)
	}
	var got []audit.JSONEntry
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		var e audit.JSONEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, e)
	}
	if len(got) != rows || got[0].Action != string(audit.UserCreate) || got[1].Action != string(audit.VisitCreate) || got[0].Seq != 1 || got[0].Hash == "" {
		t.Fatalf("export = %+v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i].PrevHash != got[i-1].Hash {
			t.Errorf("exported row %d does not link to the one before", got[i].Seq)
		}
	}
	if strings.Contains(r.stdout, "Ada") || strings.Contains(r.stdout, "a-long-password") {
		t.Errorf("the export holds a patient name or a password:\n%s", r.stdout)
	}
	// Nothing after the future; the export itself was recorded.
	if r := bedside(t, "", nil, "audit", "export", d, "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); r.code != 0 || r.stdout != "" {
		t.Fatalf("export of the future: %+v", r)
	}
	r = bedside(t, "", nil, "audit", "export", d, "--since", "2000-01-01")
	if !strings.Contains(r.stdout, `"action":"audit.export"`) {
		t.Errorf("exports are not in the trail:\n%s", r.stdout)
	}
}

// TestAuditTrailOfAVisit holds a visit through the real HTTP API and WebSocket and checks
// that the trail tells who did what, from where, in UTC, and holds no token, cookie,
// password or patient name.
func TestAuditTrailOfAVisit(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := apptest.Start(t, apptest.Options{})
	vs := newVisit(t, srv, "rivera@clinic.example")
	bad := client.New(srv.URL())
	expectAPIError(t, bad.SignIn(ctx, "rivera@clinic.example", "not the password"), 401, "bad_credentials")
	_, pcall := joinPatient(t, ctx, srv.URL(), vs.token, "Zelda Quintessa", false)
	pid := pcall.Welcome.Participant.ID
	ccall := joinClinician(t, ctx, vs.clinician, vs.visit.ID, false)
	if err := ccall.Conn.Send(ctx, map[string]string{"type": "admit", "participant": pid}); err != nil {
		t.Fatal(err)
	}
	if _, err := pcall.Conn.Next(ctx, "admitted"); err != nil {
		t.Fatal(err)
	}
	if err := pcall.Conn.Send(ctx, map[string]string{"type": "leave"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the patient's leave recorded", func() bool { return len(trailActions(t, srv, audit.VisitLeave)) > 0 })
	ccall.Conn.Close()
	waitFor(t, "the clinician's lost connection recorded", func() bool { return len(trailActions(t, srv, audit.VisitGone)) > 0 })
	if err := vs.clinician.Do(ctx, "POST", "/api/v1/visits/"+vs.visit.ID+"/end", nil, nil); err != nil {
		t.Fatal(err)
	}

	all, err := srv.Store().AuditEntries(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	byAction := map[audit.Action][]audit.Entry{}
	for _, en := range all {
		byAction[en.Action] = append(byAction[en.Action], en)
	}
	for _, a := range []audit.Action{audit.ConfigStart, audit.SignIn, audit.SignInFailed, audit.VisitCreate, audit.VisitJoin,
		audit.VisitConnect, audit.VisitAdmit, audit.VisitLeave, audit.VisitEnd, audit.VisitGone} {
		if len(byAction[a]) == 0 {
			t.Errorf("no %s in the trail", a)
		}
	}
	if e := byAction[audit.SignIn]; len(e) > 0 && (e[0].Addr != "127.0.0.1" || !strings.HasPrefix(e[0].UserAgent, "Go-http-client")) {
		t.Errorf("sign-in recorded from %q with %q, want 127.0.0.1 and the client's user agent", e[0].Addr, e[0].UserAgent)
	}
	if e := byAction[audit.VisitAdmit]; len(e) > 0 && (e[0].VisitID != vs.visit.ID || e[0].SubjectID != pid || e[0].ActorRole != "clinician") {
		t.Errorf("admit recorded as %+v", e[0])
	}
	if e := byAction[audit.VisitLeave]; len(e) > 0 && (e[0].ActorID != pid || e[0].ActorRole != "patient" || e[0].Addr == "") {
		t.Errorf("leave recorded as %+v", e[0])
	}
	for _, en := range all {
		if en.Time.Location() != time.UTC {
			t.Errorf("row %d time %v is not UTC", en.Seq, en.Time)
		}
		text := fmt.Sprintf("%+v", en.ToJSON())
		for _, secret := range []string{vs.token, "Zelda", "Ada Lovelace", pw} {
			if strings.Contains(text, secret) {
				t.Errorf("row %d holds %q: %s", en.Seq, secret, text)
			}
		}
	}
	srv.Checkpoint(ctx)
	rep, err := audit.Verify(ctx, srv.Store(), nil)
	if err != nil || !rep.OK() {
		t.Fatalf("the trail does not verify: %+v %v", rep, err)
	}
}

func trailActions(t *testing.T, srv *apptest.Server, a audit.Action) []audit.Entry {
	t.Helper()
	got, err := srv.Store().SearchAudit(context.Background(), audit.Query{Action: a})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
