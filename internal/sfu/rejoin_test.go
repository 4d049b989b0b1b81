package sfu

import (
	"testing"

	"github.com/pion/webrtc/v4"
)

// TestRejoinAfterFailedConnections: a participant's signalling went away, and its
// connections failed (pion's word is queued) just as its page came back. Once the
// participant reads the failure it stops; the page must get a new SFU session, not the
// stopped participant's, whose signals would be refused and which nothing would replace.
// A page that comes back with nothing failed keeps its session.
func TestRejoinAfterFailedConnections(t *testing.T) {
	s := loopbackSFU(t)
	const visit = "vis_rejoin"
	first := s.Join(visit, Member{ID: "prt_a", Session: "page", Sink: discardSink{}})
	s.Join(visit, Member{ID: "prt_b", Session: "other", Sink: discardSink{}}) // keeps the room
	p := s.room(visit, false).get("prt_a")

	s.Disconnected(visit, "prt_a")
	p.mail.put(evPCState{pc: Pub, state: webrtc.PeerConnectionStateFailed})
	second := s.Join(visit, Member{ID: "prt_a", Session: "page", Sink: discardSink{}})
	if second == first {
		t.Fatalf("the page came back as its connections failed and kept its SFU session %q; the participant behind it stopped", first)
	}
	if !p.stopping() {
		t.Error("the participant whose connections failed while it was away did not stop")
	}
	if err := s.Signal(visit, "prt_a", Sub, nil, []byte("null"), nil); err != nil {
		t.Errorf("a signal for the new session: %v", err)
	}

	s.Disconnected(visit, "prt_a")
	if third := s.Join(visit, Member{ID: "prt_a", Session: "page", Sink: discardSink{}}); third != second {
		t.Errorf("a page back with nothing failed got a new SFU session (%q, was %q)", third, second)
	}
}
