package signal

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/bedside/bedside/internal/audit"
)

// memRecorder keeps the events recorded, for tests.
type memRecorder struct {
	mu     sync.Mutex
	events []audit.Event
}

func (r *memRecorder) Record(_ context.Context, e audit.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *memRecorder) of(a audit.Action) []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []audit.Event
	for _, e := range r.events {
		if e.Action == a {
			out = append(out, e)
		}
	}
	return out
}

// TestCandidatePairRecorded: each participant reports the candidate pair its peer
// connection selected; the trail says direct or relayed, once per change, with candidate
// types only (no address); someone still waiting cannot report.
func TestCandidatePairRecorded(t *testing.T) {
	rec := &memRecorder{}
	h := newHarness(t, func(c *Config) { c.Audit = rec })
	clin, pat, clinID, patID := h.call()
	report := func(c *conn, peer, local, remote string) {
		c.send(fmt.Sprintf(`{"type":"connection","peer":%q,"local":{"candidate_type":%q,"protocol":"udp"},"remote":{"candidate_type":%q,"protocol":"udp"}}`, peer, local, remote))
	}
	report(clin, patID, "host", "host")
	report(clin, patID, "host", "host") // the same again: recorded once
	report(pat, clinID, "relay", "srflx")
	eventually(t, "two candidate pairs recorded", func() bool { return len(rec.of(audit.CandidatePair)) == 2 })
	clin.quiet(100e6)
	got := rec.of(audit.CandidatePair)
	if len(got) != 2 {
		t.Fatalf("recorded %d pairs, want 2", len(got))
	}
	byPeer := map[string]audit.Event{}
	for _, e := range got {
		byPeer[e.SubjectID] = e
	}
	if e := byPeer[patID]; e.VisitID != h.visit.ID || e.Detail["path"] != "direct" || e.Detail["local"] != "host" {
		t.Errorf("the clinician's report: %+v", e)
	}
	if e := byPeer[clinID]; e.Detail["path"] != "relay" || e.Detail["remote"] != "srflx" {
		t.Errorf("the patient's report: %+v", e)
	}
	report(clin, patID, "host", "prflx") // changed: recorded
	eventually(t, "the changed pair recorded", func() bool { return len(rec.of(audit.CandidatePair)) == 3 })

	// A patient still in the waiting room has no call to report on.
	waitingID := h.patient("Bob")
	waiting := h.dial(waitingID)
	waiting.hello("")
	report(waiting, clinID, "host", "host")
	waiting.expectError(CodeNotAdmitted, "connection")
}
