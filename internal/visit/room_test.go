package visit_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

// call is a visit with its clinician connected (may admit) and the link ready for patients.
type call struct {
	e       *env
	v       store.Visit
	token   string
	doc     *fakeMember
	docPr   *visit.Presence
	docID   string
	welcome visit.Welcome
}

func newCall(t *testing.T, e *env) *call {
	t.Helper()
	v, tok := e.newVisit(t)
	doc := &fakeMember{}
	pr, w, err := e.m.Connect(context.Background(), visit.Identity{User: &e.clinician}, v.ID, "doc-session-1", true, doc)
	if err != nil {
		t.Fatal(err)
	}
	return &call{e: e, v: v, token: tok, doc: doc, docPr: pr, docID: pr.Participant().ID, welcome: w}
}

// patient joins through the link and connects; the participant record is read back from
// the store, as the web layer does from the cookie.
func (c *call) patient(t *testing.T, name, session string) (*visit.Presence, *fakeMember, visit.Welcome) {
	t.Helper()
	p, _ := c.e.join(t, c.token, name)
	return c.connect(t, p.ID, session)
}

func (c *call) connect(t *testing.T, participantID, session string) (*visit.Presence, *fakeMember, visit.Welcome) {
	t.Helper()
	p := c.e.participant(t, participantID)
	f := &fakeMember{}
	pr, w, err := c.e.m.Connect(context.Background(), visit.Identity{Participant: &p}, "", session, false, f)
	if err != nil {
		t.Fatal(err)
	}
	return pr, f, w
}

func (c *call) state(t *testing.T) store.VisitState { return c.e.visit(t, c.v.ID).State }

func liveCounts(t *testing.T, m *visit.Manager, rooms, members int) {
	t.Helper()
	if r, n := m.LiveCounts(); r != rooms || n != members {
		t.Errorf("LiveCounts = (%d, %d), want (%d, %d)", r, n, rooms, members)
	}
}

func TestWaitingRoomAndAdmit(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	c := newCall(t, e)
	if !c.welcome.Admitted || !c.welcome.CanAdmit || len(c.welcome.Waiting) != 0 || len(c.welcome.Peers) != 0 {
		t.Errorf("clinician welcome %+v: want admitted, may admit, nobody waiting", c.welcome)
	}
	if s := c.state(t); s != store.VisitScheduled {
		t.Errorf("with only the clinician connected the state is %q, want scheduled", s)
	}

	// The patient's page asks to admit too: a link holder never may.
	p, _ := e.join(t, c.token, "Ada")
	pf := &fakeMember{}
	pp, pw, err := e.m.Connect(ctx, visit.Identity{Participant: &p}, c.v.ID, "ada-session-1", true, pf)
	if err != nil {
		t.Fatal(err)
	}
	if pw.Admitted || pw.CanAdmit || len(pw.Peers) != 0 || pw.Waiting != nil {
		t.Errorf("patient welcome %+v: want waiting, no peers, no waiting list", pw)
	}
	expect(t, "clinician", c.doc, "waiting ["+p.ID+" Ada]")
	expect(t, "patient", pf)
	if s := c.state(t); s != store.VisitWaiting {
		t.Errorf("state %q with a patient waiting, want waiting", s)
	}
	if w := e.m.Waiting(c.v.ID); len(w) != 1 || w[0].ID != p.ID || w[0].Name != "Ada" {
		t.Errorf("Waiting = %+v", w)
	}
	if err := pp.Admit(ctx, p.ID); !errors.Is(err, visit.ErrForbidden) {
		t.Errorf("a patient admitted itself: %v", err)
	}

	if err := c.docPr.Admit(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	expect(t, "patient", pf, "admitted ["+c.docID+" clinician polite]")
	expect(t, "clinician", c.doc, "peer joined "+p.ID+" patient", "waiting []")
	if s := c.state(t); s != store.VisitInCall {
		t.Errorf("state %q after admission, want in_call", s)
	}
	if e.participant(t, p.ID).AdmittedAt == nil {
		t.Error("admission not stored")
	}
	if err := c.docPr.Admit(ctx, p.ID); !errors.Is(err, visit.ErrWrongState) {
		t.Errorf("admitting twice = %v, want ErrWrongState", err)
	}
	if err := c.docPr.Admit(ctx, "prt_nobody"); !errors.Is(err, visit.ErrNotFound) {
		t.Errorf("admitting nobody = %v, want ErrNotFound", err)
	}

	// Admission is remembered: the patient reloads and goes straight in.
	pp.Disconnect(ctx)
	expect(t, "clinician", c.doc, "peer gone "+p.ID+" patient")
	_, pf2, pw2 := c.connect(t, p.ID, "ada-session-2")
	if !pw2.Admitted || len(pw2.Peers) != 1 || pw2.Peers[0].ID != c.docID || !pw2.Peers[0].Polite {
		t.Errorf("welcome after reload %+v: want admitted with the clinician as a polite peer", pw2)
	}
	expect(t, "clinician", c.doc, "peer joined "+p.ID+" patient")
	expect(t, "patient", pf2)
	liveCounts(t, e.m, 1, 2)
}

func TestTwoPatientsPoliteness(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	c := newCall(t, e)
	ap, af, _ := c.patient(t, "Ada", "ada-session-1")
	bp, bf, _ := c.patient(t, "Bob", "bob-session-1")
	a, b := ap.Participant().ID, bp.Participant().ID
	if err := c.docPr.Admit(ctx, a); err != nil {
		t.Fatal(err)
	}
	af.take()
	bf.take()
	if err := c.docPr.Admit(ctx, b); err != nil {
		t.Fatal(err)
	}
	// Between two patients the larger id is polite.
	politeB := "" // b's view of a
	politeA := "" // a's view of b
	if b > a {
		politeB = " polite"
	} else {
		politeA = " polite"
	}
	peers := []string{c.docID + " clinician polite", a + " patient" + politeB}
	if a < c.docID {
		peers[0], peers[1] = peers[1], peers[0]
	}
	expect(t, "second patient", bf, fmt.Sprintf("admitted [%s, %s]", peers[0], peers[1]))
	expect(t, "first patient", af, "peer joined "+b+" patient"+politeA)
}

func TestRelay(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	c := newCall(t, e)
	pp, pf, _ := c.patient(t, "Ada", "ada-session-1")
	pid := pp.Participant().ID
	c.doc.take()

	if err := pp.Relay(c.docID, "offer"); !errors.Is(err, visit.ErrNotAdmitted) {
		t.Errorf("relay from a waiting patient = %v, want ErrNotAdmitted", err)
	}
	if err := c.docPr.Relay(pid, "offer"); !errors.Is(err, visit.ErrNotFound) {
		t.Errorf("relay to a waiting patient = %v, want ErrNotFound", err)
	}
	expect(t, "clinician (nothing from the waiting room)", c.doc)
	expect(t, "waiting patient (nothing from the clinician)", pf)

	if err := c.docPr.Admit(ctx, pid); err != nil {
		t.Fatal(err)
	}
	c.doc.take()
	pf.take()
	cases := []struct {
		name string
		from *visit.Presence
		to   string
		want error
	}{
		{"clinician to patient", c.docPr, pid, nil},
		{"patient to clinician", pp, c.docID, nil},
		{"to an unknown participant", c.docPr, "prt_nobody", visit.ErrNotFound},
		{"to oneself", pp, pid, visit.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.from.Relay(tc.to, "sdp"); !errors.Is(err, tc.want) {
				t.Errorf("Relay = %v, want %v", err, tc.want)
			}
		})
	}
	expect(t, "patient", pf, "signal from "+c.docID+": sdp")
	expect(t, "clinician", c.doc, "signal from "+pid+": sdp")

	// Someone who disconnected receives nothing.
	pp.Disconnect(ctx)
	c.doc.take()
	if err := c.docPr.Relay(pid, "sdp"); !errors.Is(err, visit.ErrNotFound) {
		t.Errorf("relay to a disconnected patient = %v, want ErrNotFound", err)
	}
	if err := pp.Relay(c.docID, "sdp"); err == nil {
		t.Error("a disconnected presence could still relay")
	}
	expect(t, "disconnected patient", pf)
	expect(t, "clinician", c.doc)
}

func TestReplacedConnection(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name       string
		newSession string
		clinician  func(pid string) []string // what the clinician sees
	}{
		{"same session: only the WebSocket was lost", "ada-session-1",
			func(pid string) []string { return []string{"peer joined " + pid + " patient"} }},
		{"new session: the page was reloaded", "ada-session-2",
			func(pid string) []string {
				return []string{"peer gone " + pid + " patient", "peer joined " + pid + " patient"}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, visit.Config{})
			c := newCall(t, e)
			old, oldf, _ := c.patient(t, "Ada", "ada-session-1")
			pid := old.Participant().ID
			if err := c.docPr.Admit(ctx, pid); err != nil {
				t.Fatal(err)
			}
			c.doc.take()
			oldf.take()

			_, newf, w := c.connect(t, pid, tc.newSession)
			if !w.Admitted {
				t.Error("the new connection is not admitted")
			}
			expect(t, "old connection", oldf, "bye replaced")
			expect(t, "clinician", c.doc, tc.clinician(pid)...)
			liveCounts(t, e.m, 1, 2)

			// The old connection is out: it relays nothing, and its late Disconnect does not
			// take the new one out.
			if err := old.Relay(c.docID, "sdp"); !errors.Is(err, visit.ErrWrongState) {
				t.Errorf("relay from the replaced connection = %v, want ErrWrongState", err)
			}
			old.Disconnect(ctx)
			old.Leave(ctx)
			expect(t, "clinician", c.doc)
			liveCounts(t, e.m, 1, 2)
			if err := c.docPr.Relay(pid, "sdp"); err != nil {
				t.Fatal(err)
			}
			expect(t, "new connection", newf, "signal from "+c.docID+": sdp")
		})
	}
}

func TestReplacedWhileWaiting(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	c := newCall(t, e)
	old, oldf, _ := c.patient(t, "Ada", "ada-session-1")
	pid := old.Participant().ID
	c.doc.take()
	c.connect(t, pid, "ada-session-2")
	expect(t, "old connection", oldf, "bye replaced")
	expect(t, "clinician", c.doc, "waiting ["+pid+" Ada]")
	if w := e.m.Waiting(c.v.ID); len(w) != 1 {
		t.Errorf("waiting list %+v: the patient must appear once", w)
	}
	old.Disconnect(ctx)
	if w := e.m.Waiting(c.v.ID); len(w) != 1 {
		t.Errorf("the replaced connection's Disconnect emptied the waiting room: %+v", w)
	}
}

func TestDisconnectAndLeave(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	c := newCall(t, e)

	// A waiting patient who goes away leaves the waiting list.
	wp, _, _ := c.patient(t, "Wait", "wait-session")
	c.doc.take()
	wp.Disconnect(ctx)
	expect(t, "clinician", c.doc, "waiting []")
	if s := c.state(t); s != store.VisitScheduled {
		t.Errorf("state %q once the waiting room is empty, want scheduled", s)
	}

	pp, pf, _ := c.patient(t, "Ada", "ada-session-1")
	pid := pp.Participant().ID
	if err := c.docPr.Admit(ctx, pid); err != nil {
		t.Fatal(err)
	}
	c.doc.take()
	pf.take()

	pp.Leave(ctx)
	expect(t, "leaver", pf, "bye left")
	expect(t, "clinician", c.doc, "peer left "+pid+" patient")
	left := e.participant(t, pid)
	if left.LeftAt == nil || !left.LeftAt.Equal(e.clk.Now()) {
		t.Errorf("LeftAt = %v, want %v", left.LeftAt, e.clk.Now())
	}
	if s := c.state(t); s != store.VisitScheduled {
		t.Errorf("state %q after the patient left, want scheduled", s)
	}
	pp.Disconnect(ctx) // the connection then closes: nothing more happens
	expect(t, "clinician", c.doc)
	liveCounts(t, e.m, 1, 1)

	// Leaving is not the end: the patient may come back, still admitted.
	_, _, w := c.connect(t, pid, "ada-session-2")
	if !w.Admitted {
		t.Error("a patient who left and came back must still be admitted")
	}
	expect(t, "clinician", c.doc, "peer joined "+pid+" patient")

	liveCounts(t, e.m, 1, 2)
}

func TestEnd(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	c := newCall(t, e)
	pp, pf, _ := c.patient(t, "Ada", "ada-session-1")
	wp, wf, _ := c.patient(t, "Bob", "bob-session-1")
	if err := c.docPr.Admit(ctx, pp.Participant().ID); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*fakeMember{c.doc, pf, wf} {
		f.take()
	}

	if err := c.docPr.End(ctx); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*fakeMember{"clinician": c.doc, "admitted patient": pf, "waiting patient": wf} {
		expect(t, name, f, "ended ended")
	}
	liveCounts(t, e.m, 0, 0)
	v := e.visit(t, c.v.ID)
	if v.State != store.VisitEnded || v.EndedAt == nil {
		t.Errorf("stored visit %q ended at %v", v.State, v.EndedAt)
	}
	// The connections close afterwards; their Disconnects change nothing.
	for _, pr := range []*visit.Presence{c.docPr, pp, wp} {
		pr.Disconnect(ctx)
	}
	liveCounts(t, e.m, 0, 0)
	if err := c.docPr.Relay(pp.Participant().ID, "sdp"); err == nil {
		t.Error("relay in an ended visit")
	}
	if err := c.docPr.Admit(ctx, wp.Participant().ID); !errors.Is(err, visit.ErrWrongState) {
		t.Errorf("admit in an ended visit = %v, want ErrWrongState", err)
	}

	// Nobody gets back in.
	if _, _, err := e.m.Connect(ctx, visit.Identity{User: &e.clinician}, c.v.ID, "doc-session-2", true, &fakeMember{}); !errors.Is(err, visit.ErrVisitEnded) {
		t.Errorf("clinician Connect after End = %v, want ErrVisitEnded", err)
	}
	p := e.participant(t, pp.Participant().ID)
	if _, _, err := e.m.Connect(ctx, visit.Identity{Participant: &p}, "", "ada-session-2", false, &fakeMember{}); !errors.Is(err, visit.ErrVisitEnded) {
		t.Errorf("patient Connect after End = %v, want ErrVisitEnded", err)
	}
	liveCounts(t, e.m, 0, 0)

	// Ending again is fine and keeps the first end time.
	e.clk.Advance(time.Minute)
	again, err := e.m.End(ctx, c.v.ID)
	if err != nil || !again.EndedAt.Equal(*v.EndedAt) {
		t.Errorf("End again = %v, %v", again.EndedAt, err)
	}
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	c := newCall(t, e)
	pp, pf, _ := c.patient(t, "Ada", "ada-session-1")
	pid := pp.Participant().ID
	_, wf, _ := c.patient(t, "Bob", "bob-session-1")
	if err := c.docPr.Admit(ctx, pid); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*fakeMember{c.doc, pf, wf} {
		f.take()
	}

	v, err := e.m.Revoke(ctx, c.v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if v.RevokedAt == nil {
		t.Error("Revoke returned a visit that is not revoked")
	}
	expect(t, "admitted patient", pf, "ended revoked")
	expect(t, "waiting patient", wf, "ended revoked")
	expect(t, "clinician", c.doc, "peer left "+pid+" patient", "waiting []")
	liveCounts(t, e.m, 1, 1)
	if s := c.state(t); s != store.VisitScheduled {
		t.Errorf("stored state %q with no patient left in the visit, want scheduled", s)
	}
	if err := c.docPr.Relay(pid, "sdp"); !errors.Is(err, visit.ErrNotFound) {
		t.Errorf("relay to a patient whose link was revoked = %v, want ErrNotFound", err)
	}
	p := e.participant(t, pid)
	if _, _, err := e.m.Connect(ctx, visit.Identity{Participant: &p}, "", "ada-session-2", false, &fakeMember{}); !errors.Is(err, visit.ErrLinkRevoked) {
		t.Errorf("patient Connect after Revoke = %v, want ErrLinkRevoked", err)
	}
	pp.Disconnect(ctx)
	expect(t, "clinician", c.doc)
	liveCounts(t, e.m, 1, 1)
}

func TestConnectRefusals(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	v, tok := e.newVisit(t)
	other, _ := e.newVisit(t)
	p, _ := e.join(t, tok, "Ada")
	cases := []struct {
		name    string
		id      visit.Identity
		visitID string
		want    error
	}{
		{"nobody", visit.Identity{}, v.ID, visit.ErrForbidden},
		{"patient names another visit", visit.Identity{Participant: &p}, other.ID, visit.ErrForbidden},
		{"clinician names an unknown visit", visit.Identity{User: &e.clinician}, "vst_nope", visit.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeMember{}
			if _, _, err := e.m.Connect(ctx, tc.id, tc.visitID, "some-session", false, f); !errors.Is(err, tc.want) {
				t.Errorf("Connect = %v, want %v", err, tc.want)
			}
			expect(t, "refused connection", f)
		})
	}
	t.Run("expired link", func(t *testing.T) {
		e.clk.Advance(linkTTL)
		if _, _, err := e.m.Connect(ctx, visit.Identity{Participant: &p}, "", "some-session", false, &fakeMember{}); !errors.Is(err, visit.ErrLinkExpired) {
			t.Errorf("Connect = %v, want ErrLinkExpired", err)
		}
	})
	liveCounts(t, e.m, 0, 0)
	if err := e.m.Admit(ctx, v.ID, p.ID); !errors.Is(err, visit.ErrWrongState) {
		t.Errorf("Admit with nobody connected = %v, want ErrWrongState", err)
	}
}

func TestShutdown(t *testing.T) {
	e := newEnv(t, visit.Config{})
	c := newCall(t, e)
	_, pf, _ := c.patient(t, "Ada", "ada-session-1")
	c.doc.take()
	e.m.Shutdown()
	expect(t, "clinician", c.doc, "bye server_shutdown")
	expect(t, "patient", pf, "bye server_shutdown")
	liveCounts(t, e.m, 0, 0)
}

// TestSweep: the CLI (or another node) ends or revokes a visit straight in the database;
// Run notices within SweepEvery and tells the people in it.
func TestSweep(t *testing.T) {
	cases := []struct {
		name    string
		change  func(e *env, id string) error
		patient string
		doc     string
		rooms   int
		members int
	}{
		{"ended by the CLI", func(e *env, id string) error { return e.st.EndVisit(context.Background(), id, e.clk.Now()) },
			"ended ended", "ended ended", 0, 0},
		{"revoked by the CLI", func(e *env, id string) error { return e.st.RevokeVisit(context.Background(), id, e.clk.Now()) },
			"ended revoked", "", 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, visit.Config{SweepEvery: 20 * time.Millisecond})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); e.m.Run(ctx) }()
			defer func() { cancel(); <-done }()

			c := newCall(t, e)
			_, pf, _ := c.patient(t, "Ada", "ada-session-1")
			c.doc.take()
			if err := tc.change(e, c.v.ID); err != nil {
				t.Fatal(err)
			}
			eventually(t, 2*time.Second, "the patient was not told", func() bool { return pf.has(tc.patient) })
			if tc.doc != "" {
				eventually(t, 2*time.Second, "the clinician was not told", func() bool { return c.doc.has(tc.doc) })
			}
			time.Sleep(60 * time.Millisecond) // a few more sweeps: each thing is said once
			expect(t, "patient", pf, tc.patient)
			liveCounts(t, e.m, tc.rooms, tc.members)
		})
	}
}

// TestConcurrentChurn: participants connect, relay and disconnect at once on one visit, with
// the clinician coming and going and admitting. The race detector watches; at the end
// nothing is left in memory and nothing deadlocked.
func TestConcurrentChurn(t *testing.T) {
	const (
		participants = 20
		cycles       = 50
	)
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	v, tok := e.newVisit(t)
	ps := make([]store.Participant, participants)
	for i := range ps {
		p, _ := e.join(t, tok, fmt.Sprintf("P%d", i))
		if i%2 == 0 { // half were admitted earlier in the visit
			if err := e.st.AdmitParticipant(ctx, p.ID, e.clk.Now()); err != nil {
				t.Fatal(err)
			}
		}
		ps[i] = e.participant(t, p.ID)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for i, p := range ps {
			wg.Go(func() {
				for n := range cycles {
					pr, _, err := e.m.Connect(ctx, visit.Identity{Participant: &p}, "", fmt.Sprintf("session-%d-%d", i, n%3), false, &fakeMember{})
					if err != nil {
						t.Errorf("connect: %v", err)
						return
					}
					for _, to := range ps {
						pr.Relay(to.ID, n) // errors expected: not admitted, not connected
					}
					if n%10 == 9 {
						pr.Leave(ctx)
					}
					pr.Disconnect(ctx)
				}
			})
		}
		wg.Go(func() {
			for n := range cycles {
				pr, _, err := e.m.Connect(ctx, visit.Identity{User: &e.clinician}, v.ID, fmt.Sprintf("doc-%d", n%2), true, &fakeMember{})
				if err != nil {
					t.Errorf("clinician connect: %v", err)
					return
				}
				for _, w := range e.m.Waiting(v.ID) {
					pr.Admit(ctx, w.ID) // may lose the race with a disconnect
				}
				pr.Relay(ps[n%participants].ID, "sdp")
				runtime.Gosched()
				pr.Disconnect(ctx)
			}
		})
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("deadlock: still running after 30 s\n%s", buf[:runtime.Stack(buf, true)])
	}
	liveCounts(t, e.m, 0, 0)
	if s := e.visit(t, v.ID).State; s != store.VisitScheduled {
		t.Errorf("stored state %q with nobody connected, want scheduled", s)
	}
}

// departures records what Config.Departed is told.
type departures struct {
	mu  sync.Mutex
	got []string
}

func (d *departures) record(visitID, participantID, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, participantID+" "+reason)
}

func (d *departures) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	got := d.got
	d.got = nil
	return got
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	dep := &departures{}
	e := newEnv(t, visit.Config{Departed: dep.record})
	c := newCall(t, e)
	pp, pf, _ := c.patient(t, "Ada", "ada-session-1")
	pid := pp.Participant().ID
	wp, wf, _ := c.patient(t, "Bob", "bob-session-1")
	wid := wp.Participant().ID
	if err := c.docPr.Admit(ctx, pid); err != nil {
		t.Fatal(err)
	}
	for _, f := range []*fakeMember{c.doc, pf, wf} {
		f.take()
	}

	// Only those who may admit may remove; the clinician's own place cannot be removed.
	if err := pp.Remove(ctx, wid); !errors.Is(err, visit.ErrForbidden) {
		t.Errorf("a patient removing = %v, want ErrForbidden", err)
	}
	if err := c.docPr.Remove(ctx, c.docID); !errors.Is(err, visit.ErrWrongState) {
		t.Errorf("removing the clinician = %v, want ErrWrongState", err)
	}
	if err := c.docPr.Remove(ctx, "prt_nobody"); !errors.Is(err, visit.ErrNotFound) {
		t.Errorf("removing an unknown participant = %v, want ErrNotFound", err)
	}
	other, _ := e.newVisit(t)
	if err := e.m.Remove(ctx, other.ID, pid); !errors.Is(err, visit.ErrNotFound) {
		t.Errorf("removing through another visit = %v, want ErrNotFound", err)
	}

	// The admitted patient is removed: told so, the clinician sees it leave.
	if err := c.docPr.Remove(ctx, pid); err != nil {
		t.Fatal(err)
	}
	expect(t, "removed patient", pf, "ended removed")
	expect(t, "clinician", c.doc, "peer left "+pid+" patient")
	// The waiting one too: the clinician's waiting list empties.
	if err := c.docPr.Remove(ctx, wid); err != nil {
		t.Fatal(err)
	}
	expect(t, "removed waiting patient", wf, "ended removed")
	expect(t, "clinician", c.doc, "waiting []")
	// A remove sent again (the page's socket died before it heard back) is done already:
	// no error, no second departure, nothing more told to anyone.
	if err := c.docPr.Remove(ctx, pid); err != nil {
		t.Errorf("removing a removed participant again = %v, want nil", err)
	}
	expect(t, "clinician after a second remove", c.doc)
	if got := dep.take(); !slices.Equal(got, []string{pid + " removed", wid + " removed"}) {
		t.Errorf("departures %v", got)
	}
	if s := c.state(t); s != store.VisitScheduled {
		t.Errorf("stored state %q after removing everyone, want scheduled", s)
	}
	liveCounts(t, e.m, 1, 1)

	// The removed patient's cookie no longer brings it in.
	p := e.participant(t, pid)
	if p.RemovedAt == nil {
		t.Fatal("removal not stored")
	}
	if _, _, err := e.m.Connect(ctx, visit.Identity{Participant: &p}, "", "ada-session-2", false, &fakeMember{}); !errors.Is(err, visit.ErrRemoved) {
		t.Errorf("Connect after removal = %v, want ErrRemoved", err)
	}
	pp.Disconnect(ctx)
	wp.Disconnect(ctx)
	expect(t, "clinician", c.doc)

	// Leaving and ending are departures too; a lost connection is not.
	ap, _, _ := c.patient(t, "Cy", "cy-session-1")
	if err := c.docPr.Admit(ctx, ap.Participant().ID); err != nil {
		t.Fatal(err)
	}
	ap.Disconnect(ctx)
	if got := dep.take(); len(got) != 0 {
		t.Errorf("a lost connection departed: %v", got)
	}
	bp, _, _ := c.connect(t, ap.Participant().ID, "cy-session-2")
	bp.Leave(ctx)
	if got := dep.take(); !slices.Equal(got, []string{ap.Participant().ID + " left"}) {
		t.Errorf("departures after leave: %v", got)
	}
	if err := c.docPr.End(ctx); err != nil {
		t.Fatal(err)
	}
	got := dep.take()
	slices.Sort(got)
	want := []string{ap.Participant().ID + " ended", c.docID + " ended", pid + " ended", wid + " ended"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("departures after end: %v, want %v", got, want)
	}
	c.docPr.Disconnect(ctx)
	liveCounts(t, e.m, 0, 0)
}

// TestInCall: a member is in a call while admitted with someone else admitted connected:
// not alone, not with a patient still waiting, not after the others left.
func TestInCall(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, visit.Config{})
	c := newCall(t, e)
	if c.docPr.InCall() {
		t.Error("the clinician alone is in a call")
	}
	pp, _, _ := c.patient(t, "Ada", "ada-session-1")
	if c.docPr.InCall() || pp.InCall() {
		t.Error("in a call with the patient still waiting")
	}
	if err := c.docPr.Admit(ctx, pp.Participant().ID); err != nil {
		t.Fatal(err)
	}
	if !c.docPr.InCall() || !pp.InCall() {
		t.Errorf("after the admission: clinician in a call %v, patient %v", c.docPr.InCall(), pp.InCall())
	}
	pp.Leave(ctx)
	if c.docPr.InCall() {
		t.Error("still in a call after the patient left")
	}
	c.docPr.Disconnect(ctx)
}
