package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/store"
)

// testConnections: privacy is kept with the visit; the selected candidate pair of each
// participant towards each peer is recorded, replaced, and its changes counted.
func testConnections(t *testing.T, s store.Store) {
	ctx := context.Background()
	c := clinician(t, s, "usr_c", "c@example.org")
	v := store.Visit{ID: "vst_p", ClinicianID: c.ID, ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("p"), LinkExpiresAt: t0.Add(time.Hour),
		State: store.VisitScheduled, Privacy: true}
	must(t, s.CreateVisit(ctx, v))
	got, err := s.VisitByID(ctx, v.ID)
	must(t, err)
	if !got.Privacy {
		t.Fatal("privacy not kept")
	}
	must(t, s.CreateVisit(ctx, store.Visit{ID: "vst_q", ClinicianID: c.ID, ScheduledAt: t0, CreatedAt: t0, LinkHash: []byte("q"), LinkExpiresAt: t0.Add(time.Hour), State: store.VisitScheduled}))
	if got, _ := s.VisitByID(ctx, "vst_q"); got.Privacy {
		t.Fatal("privacy on by default")
	}
	for _, id := range []string{"prt_a", "prt_b"} {
		must(t, s.CreateParticipant(ctx, store.Participant{ID: id, VisitID: v.ID, Role: store.RolePatient, CreatedAt: t0}))
	}
	relay := store.Connection{VisitID: v.ID, ParticipantID: "prt_a", PeerID: "prt_b",
		Local: store.Candidate{Type: "relay", Protocol: "udp", RelayProtocol: "tcp"}, Remote: store.Candidate{Type: "host", Protocol: "udp"}, UpdatedAt: t0}
	must(t, s.SetConnection(ctx, relay))
	again := relay
	again.UpdatedAt = t0.Add(time.Minute)
	must(t, s.SetConnection(ctx, again)) // the same pair, reported again
	direct := relay
	direct.Local = store.Candidate{Type: "srflx", Protocol: "udp"}
	direct.UpdatedAt = t0.Add(2 * time.Minute)
	must(t, s.SetConnection(ctx, direct)) // it changed
	must(t, s.SetConnection(ctx, store.Connection{VisitID: v.ID, ParticipantID: "prt_b", PeerID: "prt_a",
		Local: store.Candidate{Type: "host", Protocol: "udp"}, Remote: store.Candidate{Type: "relay", Protocol: "udp"}, UpdatedAt: t0}))
	cs, err := s.VisitConnections(ctx, v.ID)
	must(t, err)
	if len(cs) != 2 {
		t.Fatalf("%d connections", len(cs))
	}
	a := cs[0]
	if a.ParticipantID != "prt_a" || a.Local != direct.Local || a.Remote != direct.Remote || a.Changes != 1 ||
		!a.FirstAt.Equal(t0) || !a.UpdatedAt.Equal(t0.Add(2*time.Minute)) || a.Relayed() {
		t.Errorf("connection %+v", a)
	}
	if !cs[1].Relayed() {
		t.Errorf("%+v is relayed on the remote side", cs[1])
	}
	if cs, _ := s.VisitConnections(ctx, "vst_q"); len(cs) != 0 {
		t.Errorf("another visit has %d connections", len(cs))
	}
	bad := relay
	bad.ParticipantID = "prt_nobody"
	if err := s.SetConnection(ctx, bad); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown participant: %v", err)
	}
}
