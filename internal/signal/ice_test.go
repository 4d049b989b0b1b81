package signal

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeICE hands out relay "credentials" only to admitted participants, short-lived, and
// records what it was asked.
type fakeICE struct {
	ttl time.Duration
	mu  sync.Mutex
	got []ICERequest
}

func (f *fakeICE) config(r ICERequest) ICEConfig {
	f.mu.Lock()
	f.got = append(f.got, r)
	n := len(f.got)
	f.mu.Unlock()
	servers := []ICEServer{{URLs: []string{"stun:127.0.0.1:3478"}}}
	if !r.Admitted {
		return ICEConfig{Servers: servers, Policy: "all"}
	}
	servers = append(servers, ICEServer{URLs: []string{"turn:127.0.0.1:3478?transport=udp"},
		Username: fmt.Sprintf("%d:%s", n, r.Participant.ID), Credential: "c2VjcmV0"})
	return ICEConfig{Servers: servers, Policy: "relay", Expires: time.Now().Add(f.ttl)}
}

func (f *fakeICE) requests() []ICERequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ICERequest(nil), f.got...)
}

// turnUser is the username of the welcome's or ice_servers' relay entry ("" = none).
func turnUser(m msg) string {
	list, _ := m.m["ice_servers"].([]any)
	for _, e := range list {
		o, _ := e.(map[string]any)
		if u, _ := o["username"].(string); u != "" {
			return u
		}
	}
	return ""
}

// TestICECredentials: a waiting patient gets no relay credentials; admission brings them in
// an ice_servers message before admitted; they are renewed before they expire.
func TestICECredentials(t *testing.T) {
	t.Parallel()
	ice := &fakeICE{ttl: 1500 * time.Millisecond}
	h := newHarness(t, func(c *Config) { c.ICE = ice.config })
	clin := h.dial("clinician")
	w := clin.hello(h.visit.ID)
	if turnUser(w) == "" || w.str("ice_transport_policy") != "relay" {
		t.Errorf("the clinician (admitted at once) got no relay credentials: %s", w)
	}
	patID := h.patient("Ada")
	pat := h.dial(patID)
	pw := pat.hello("")
	if turnUser(pw) != "" {
		t.Errorf("a waiting patient got relay credentials: %s", pw)
	}
	clin.expect("waiting")
	clin.send(fmt.Sprintf(`{"type":"admit","participant":%q}`, patID))
	m := pat.next()
	if m.typ() != "ice_servers" || turnUser(m) == "" || !strings.HasSuffix(turnUser(m), ":"+patID) {
		t.Fatalf("admission: got %s, want ice_servers with the patient's relay credential first", m)
	}
	if a := pat.next(); a.typ() != "admitted" {
		t.Fatalf("after ice_servers: %s, want admitted", a)
	}
	first := turnUser(m)
	// Renewed at four fifths of 1.5 s.
	start := time.Now()
	r := pat.next()
	if r.typ() != "ice_servers" || turnUser(r) == first || turnUser(r) == "" {
		t.Fatalf("refresh: got %s", r)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("refreshed after %v, after the credential expired", d)
	}
	reqs := ice.requests()
	welcomes := 0
	for _, rq := range reqs {
		if rq.Welcome {
			welcomes++
		}
		if rq.Visit.ID != h.visit.ID {
			t.Errorf("request for visit %q", rq.Visit.ID)
		}
	}
	if welcomes != 2 {
		t.Errorf("%d welcome requests, want 2 (clinician, patient)", welcomes)
	}
}

// TestConnectionReport: an admitted participant's connection message reaches the
// Connection callback; a waiting one's is refused.
func TestConnectionReport(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var reports []ConnectionReport
	h := newHarness(t, func(c *Config) {
		c.Connection = func(_ context.Context, r ConnectionReport) {
			mu.Lock()
			reports = append(reports, r)
			mu.Unlock()
		}
	})
	clin, pat, clinID, patID := h.call()
	report := fmt.Sprintf(`{"type":"connection","peer":%q,"local":{"candidate_type":"relay","protocol":"udp","relay_protocol":"tcp"},"remote":{"candidate_type":"host","protocol":"udp"}}`, clinID)
	pat.send(report)
	eventually(t, "the report", func() bool { mu.Lock(); defer mu.Unlock(); return len(reports) == 1 })
	mu.Lock()
	r := reports[0]
	mu.Unlock()
	if r.VisitID != h.visit.ID || r.ParticipantID != patID || r.PeerID != clinID || r.Local.Type != "relay" || r.Local.RelayProtocol != "tcp" || r.Remote.Type != "host" {
		t.Errorf("report %+v", r)
	}
	// About oneself: refused.
	pat.send(fmt.Sprintf(`{"type":"connection","peer":%q,"local":{"candidate_type":"host","protocol":"udp"},"remote":{"candidate_type":"host","protocol":"udp"}}`, patID))
	pat.expectError(CodeInvalid, "connection")
	clin.quiet(100 * time.Millisecond)

	// A waiting participant may not report.
	other := h.patient("Grace")
	g := h.dial(other)
	g.hello("")
	g.send(report)
	g.expectError(CodeNotAdmitted, "connection")
}
