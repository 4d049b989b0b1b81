package audit_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/audit"
)

var t0 = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)

// memStore is an in-memory audit store: the rows as a database would keep them.
type memStore struct {
	mu   sync.Mutex
	rows []audit.Entry
}

func (m *memStore) AppendAudit(_ context.Context, e audit.Event, link func([]byte, int64) []byte) (audit.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev, seq := audit.Genesis, int64(1)
	if n := len(m.rows); n > 0 {
		prev, seq = m.rows[n-1].Hash, m.rows[n-1].Seq+1
	}
	en := audit.Entry{Seq: seq, Event: e, PrevHash: prev, Hash: link(prev, seq)}
	m.rows = append(m.rows, en)
	return en, nil
}

func (m *memStore) AuditEntries(_ context.Context, after int64, limit int) ([]audit.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []audit.Entry
	for _, en := range m.rows {
		if en.Seq > after && len(out) < limit {
			out = append(out, en)
		}
	}
	return out, nil
}

func (m *memStore) AuditHead(context.Context) (int64, []byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.rows) == 0 {
		return 0, audit.Genesis, nil
	}
	last := m.rows[len(m.rows)-1]
	return last.Seq, last.Hash, nil
}

func fill(t *testing.T, n int) *memStore {
	t.Helper()
	st := &memStore{}
	log := audit.NewLog(st, func() time.Time { return t0 })
	for i := range n {
		e := audit.Event{Action: audit.VisitAdmit, ActorID: "usr_a", VisitID: "vst_1", SubjectID: "prt_" + string(rune('a'+i%26)), Addr: "192.0.2.7"}
		if err := log.Record(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func TestCanonicalIsUnambiguous(t *testing.T) {
	base := audit.Event{Time: t0, Action: audit.SignIn, ActorID: "ab", VisitID: "c"}
	variants := []audit.Event{
		base,
		{Time: t0, Action: audit.SignIn, ActorID: "a", VisitID: "bc"}, // same bytes, other split
		{Time: t0.Add(time.Millisecond), Action: audit.SignIn, ActorID: "ab", VisitID: "c"},
		{Time: t0, Action: audit.SignIn, ActorID: "ab", VisitID: "c", Detail: map[string]string{"k": "v"}},
		{Time: t0, Action: audit.SignIn, ActorID: "ab", VisitID: "c", Detail: map[string]string{"kv": ""}},
		{Time: t0, Action: audit.SignIn, ActorID: "ab", SubjectID: "c"},
	}
	seen := map[string]int{}
	for i, e := range variants {
		k := string(audit.Canonical(1, e))
		if j, ok := seen[k]; ok {
			t.Errorf("events %d and %d encode alike", i, j)
		}
		seen[k] = i
	}
	if bytes.Equal(audit.Canonical(1, base), audit.Canonical(2, base)) {
		t.Error("the sequence number is not covered")
	}
	// Detail order does not matter.
	a := audit.Event{Time: t0, Detail: map[string]string{"a": "1", "b": "2", "c": "3"}}
	b := audit.Event{Time: t0, Detail: map[string]string{"c": "3", "a": "1", "b": "2"}}
	if !bytes.Equal(audit.Canonical(1, a), audit.Canonical(1, b)) {
		t.Error("detail order changes the encoding")
	}
}

func TestSanitize(t *testing.T) {
	token := "0123456789abcdefghijABCDEFGHIJ_-0123456789a" // the shape of a Bedside token
	e := audit.Sanitize(audit.Event{
		Time:      time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("x", 3600)),
		ActorID:   "usr\x00_\nx",
		UserAgent: strings.Repeat("é", 300),
		Detail:    map[string]string{"link": "https://h/v/" + token, "type": "relay", "bad\x01": "\xff"},
	}, t0)
	if e.Time.Location() != time.UTC || e.Time.Nanosecond() != 123000000 {
		t.Errorf("time %v: want UTC at millisecond precision", e.Time)
	}
	if e.ActorID != "usr_x" || len(e.UserAgent) > 256 || e.Outcome != "ok" {
		t.Errorf("fields not cleaned: %q, %d bytes, outcome %q", e.ActorID, len(e.UserAgent), e.Outcome)
	}
	if e.Detail["link"] != "[redacted]" || e.Detail["type"] != "relay" || e.Detail["bad"] != "?" {
		t.Errorf("detail = %q", e.Detail)
	}
	if z := audit.Sanitize(audit.Event{}, t0); !z.Time.Equal(t0) {
		t.Errorf("zero time became %v, want now", z.Time)
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		damage  func(st *memStore)
		cps     func(st *memStore) []audit.Checkpoint
		wantSeq int64
		want    string
	}{
		{name: "intact"},
		{name: "row edited", damage: func(st *memStore) { st.rows[4].Outcome = "bad_credentials" }, wantSeq: 5, want: "row 5 was changed"},
		{name: "detail edited", damage: func(st *memStore) { st.rows[0].Detail = map[string]string{"x": "y"} }, wantSeq: 1, want: "row 1 was changed"},
		{name: "row removed", damage: func(st *memStore) { st.rows = append(st.rows[:3:3], st.rows[4:]...) }, wantSeq: 4, want: "row 4 is missing"},
		{name: "row edited and rehashed", damage: func(st *memStore) {
			st.rows[6].Addr = "203.0.113.9"
			st.rows[6].Hash = audit.ChainHash(st.rows[6].PrevHash, 7, st.rows[6].Event)
		}, wantSeq: 8, want: "row 8 does not link to row 7"},
		{name: "tail deleted after a checkpoint",
			cps: func(st *memStore) []audit.Checkpoint {
				return []audit.Checkpoint{{Size: 10, Hash: st.rows[9].Hash, Time: t0}}
			},
			damage:  func(st *memStore) { st.rows = st.rows[:7] },
			wantSeq: 8, want: "rows 8 to 10 are missing at the tail"},
		{name: "whole chain rewritten", cps: func(st *memStore) []audit.Checkpoint {
			return []audit.Checkpoint{{Size: 6, Hash: st.rows[5].Hash, Time: t0}}
		}, damage: func(st *memStore) {
			prev := audit.Genesis
			for i := range st.rows {
				if i == 2 {
					st.rows[i].ActorID = "usr_someone_else"
				}
				st.rows[i].PrevHash = prev
				st.rows[i].Hash = audit.ChainHash(prev, st.rows[i].Seq, st.rows[i].Event)
				prev = st.rows[i].Hash
			}
		}, wantSeq: 6, want: "rows up to 6 were rewritten"},
		{name: "checkpoints intact", cps: func(st *memStore) []audit.Checkpoint {
			return []audit.Checkpoint{{Size: 3, Hash: st.rows[2].Hash, Time: t0}, {Size: 10, Hash: st.rows[9].Hash, Time: t0}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := fill(t, 10)
			var cps []audit.Checkpoint
			if tc.cps != nil {
				cps = tc.cps(st)
			}
			if tc.damage != nil {
				tc.damage(st)
			}
			rep, err := audit.Verify(ctx, st, cps)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if !rep.OK() || rep.Rows != 10 || rep.Checkpoints != len(cps) {
					t.Fatalf("report %+v, want OK with 10 rows", rep)
				}
				return
			}
			if rep.OK() {
				t.Fatal("the damage was not found")
			}
			first := rep.Problems[0]
			if first.Seq != tc.wantSeq || !strings.Contains(first.Message, tc.want) {
				t.Errorf("first problem: row %d %q; want row %d %q (all: %+v)", first.Seq, first.Message, tc.wantSeq, tc.want, rep.Problems)
			}
		})
	}
}

func TestCheckpointsSignedAndRead(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "audit.key")
	signer, vkey, created, err := audit.LoadSigner(keyPath)
	if err != nil || !created {
		t.Fatalf("LoadSigner: %v (created %v)", err, created)
	}
	if fi, _ := os.Stat(keyPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", fi.Mode().Perm())
	}
	if pub, _ := os.ReadFile(keyPath + ".pub"); strings.TrimSpace(string(pub)) != vkey {
		t.Errorf("public key file %q, want %q", pub, vkey)
	}
	if _, vkey2, created, err := audit.LoadSigner(keyPath); err != nil || created || vkey2 != vkey {
		t.Fatalf("second LoadSigner: %v created %v same key %v", err, created, vkey2 == vkey)
	}
	st := fill(t, 3)
	path := filepath.Join(dir, "checkpoints.txt")
	cpr := audit.NewCheckpointer(st, signer, path, func() time.Time { return t0 })
	if _, written, err := cpr.Write(ctx, false); err != nil || !written {
		t.Fatalf("first checkpoint: %v %v", written, err)
	}
	if _, written, _ := cpr.Write(ctx, false); written {
		t.Error("a checkpoint was written although the trail did not grow")
	}
	fill2 := audit.NewLog(st, func() time.Time { return t0 })
	fill2.Record(ctx, audit.Event{Action: audit.SignOut})
	if _, written, err := cpr.Write(ctx, false); err != nil || !written {
		t.Fatalf("second checkpoint: %v %v", written, err)
	}
	// A new checkpointer (a restart) knows where the file left off.
	if _, written, _ := audit.NewCheckpointer(st, signer, path, nil).Write(ctx, false); written {
		t.Error("after a restart, a checkpoint of the same size was written again")
	}
	v, err := audit.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := audit.ReadCheckpoints(path, v)
	if err != nil || len(cps) != 2 || cps[0].Size != 3 || cps[1].Size != 4 || !cps[1].Time.Equal(t0) {
		t.Fatalf("ReadCheckpoints = %+v, %v", cps, err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), signer.Name()+"\n3\n") || !strings.Contains(string(data), "\n— "+signer.Name()+" ") {
		t.Errorf("not a C2SP checkpoint note:\n%s", data)
	}
	rep, err := audit.Verify(ctx, st, cps)
	if err != nil || !rep.OK() {
		t.Fatalf("Verify with checkpoints: %+v %v", rep, err)
	}

	// A forged checkpoint (edited size) fails its signature; another key's fails too.
	forged := strings.Replace(string(data), "\n4\n", "\n2\n", 1)
	os.WriteFile(path, []byte(forged), 0o644)
	if _, err := audit.ReadCheckpoints(path, v); err == nil || !strings.Contains(err.Error(), "checkpoint 2") {
		t.Errorf("edited checkpoint: err = %v", err)
	}
	_, otherV, _, _ := audit.LoadSigner(filepath.Join(dir, "other.key"))
	ov, _ := audit.NewVerifier(otherV)
	os.WriteFile(path, data, 0o644)
	if _, err := audit.ReadCheckpoints(path, ov); err == nil {
		t.Error("checkpoints verified with another key")
	}
	// A key file others can read is refused.
	os.Chmod(keyPath, 0o644)
	if _, _, _, err := audit.LoadSigner(keyPath); err == nil {
		t.Error("a world-readable signing key was accepted")
	}
}

func TestActorContext(t *testing.T) {
	ctx := audit.WithActor(context.Background(), audit.Actor{ID: "usr_1", Role: "admin", Addr: "192.0.2.1", UserAgent: "UA"})
	e := audit.EventFrom(ctx, audit.VisitEnd)
	if e.ActorID != "usr_1" || e.ActorRole != "admin" || e.Addr != "192.0.2.1" || e.UserAgent != "UA" || e.Action != audit.VisitEnd {
		t.Errorf("EventFrom = %+v", e)
	}
	if a := audit.ActorFrom(context.Background()); a != (audit.Actor{}) {
		t.Errorf("no actor: %+v", a)
	}
}
