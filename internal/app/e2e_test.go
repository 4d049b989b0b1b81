package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/client"
	"github.com/bedside/bedside/internal/store"
)

const pw = "correct horse battery"

// checkLeaks fails the test if goroutines started during it are still running after its
// cleanups (the service's shutdown among them). Call it first: cleanups run last-in,
// first-out, so this one runs after all the others.
func checkLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(opt); err != nil {
			t.Error(err)
		}
	})
}

// visitSetup is a server with a clinician signed in and a visit created.
type visitSetup struct {
	srv       *apptest.Server
	clinician *client.Client
	visit     client.Visit
	token     string
}

func newVisit(t *testing.T, srv *apptest.Server, email string) visitSetup {
	t.Helper()
	ctx := context.Background()
	srv.AddUser(t, email, "Dr Rivera", store.RoleClinician, pw)
	c := client.New(srv.URL())
	if err := c.SignIn(ctx, email, pw); err != nil {
		t.Fatal(err)
	}
	v, err := c.CreateVisit(ctx, "Ada Lovelace")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := client.LinkToken(v.PatientURL)
	if err != nil {
		t.Fatal(err)
	}
	return visitSetup{srv: srv, clinician: c, visit: v, token: tok}
}

// joinPatient opens the link as a patient and says hello.
func joinPatient(t *testing.T, ctx context.Context, base, token, name string, media bool) (*client.Client, *client.Call) {
	t.Helper()
	p := client.New(base)
	if _, err := p.JoinLink(ctx, token, name); err != nil {
		t.Fatal(err)
	}
	conn, err := p.Dial(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	call, err := client.Join(ctx, conn, "", media)
	if err != nil {
		t.Fatal(err)
	}
	return p, call
}

func joinClinician(t *testing.T, ctx context.Context, c *client.Client, visitID string, media bool) *client.Call {
	t.Helper()
	conn, err := c.Dial(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	call, err := client.Join(ctx, conn, visitID, media)
	if err != nil {
		t.Fatal(err)
	}
	return call
}

// nextEvent waits for a message of one of the types on a running call's Events.
func nextEvent(t *testing.T, ctx context.Context, call *client.Call, types ...string) client.Message {
	t.Helper()
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %v: %v", types, ctx.Err())
		case m := <-call.Events:
			for _, typ := range types {
				if m.Type == typ {
					return m
				}
			}
		}
	}
}

// TestVisitEndToEnd is the 1:1 visit through the real protocol: the patient waits, the
// clinician admits, media flows both ways between two pion peers, the clinician ends it.
func TestVisitEndToEnd(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := apptest.Start(t, apptest.Options{})
	vs := newVisit(t, srv, "rivera@clinic.example")

	doc := joinClinician(t, ctx, vs.clinician, vs.visit.ID, true)
	if !doc.Welcome.Admitted || doc.Welcome.Participant.Role != "clinician" {
		t.Fatalf("clinician welcome: %+v", doc.Welcome)
	}
	// The clinician (admitted at once) gets STUN and the relay with its credential.
	if ice := doc.Welcome.ICEServers; len(ice) != 2 || len(ice[0].URLs) != 1 || ice[1].Username == "" ||
		!strings.HasSuffix(ice[1].Username, ":"+doc.Welcome.Participant.ID) || doc.Welcome.ICETransportPolicy != "all" {
		t.Fatalf("ICE servers: %+v", doc.Welcome.ICEServers)
	}
	_, pat := joinPatient(t, ctx, srv.URL(), vs.token, "Ada", true)
	if pat.Welcome.Admitted || pat.Welcome.Visit.State != "waiting" || pat.Welcome.Waiting != nil {
		t.Fatalf("patient welcome: %+v", pat.Welcome)
	}
	// A waiting patient gets no relay credential.
	if ice := pat.Welcome.ICEServers; len(ice) != 1 || ice[0].Username != "" {
		t.Fatalf("waiting patient's ICE servers: %+v", ice)
	}

	runCtx, stopCalls := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- doc.Run(runCtx) }()
	go func() { done <- pat.Run(runCtx) }()

	// The clinician sees the patient waiting, in the API too.
	m := nextEvent(t, ctx, doc, "waiting")
	var w struct{ Waiting []client.Waiting }
	m.Decode(&w)
	if len(w.Waiting) != 1 || w.Waiting[0].Name != "Ada" {
		t.Fatalf("waiting list: %s", m.Raw)
	}
	var v client.Visit
	if err := vs.clinician.Do(ctx, "GET", "/api/v1/visits/"+vs.visit.ID, nil, &v); err != nil {
		t.Fatal(err)
	}
	if v.State != "waiting" || len(v.Waiting) != 1 {
		t.Fatalf("visit while waiting: %+v", v)
	}
	patientID := w.Waiting[0].ID

	admitAt := time.Now()
	if err := doc.Conn.Send(ctx, map[string]string{"type": "admit", "participant": patientID}); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, ctx, pat, "admitted")
	nextEvent(t, ctx, doc, "peer")

	// Media flows both ways.
	waitPeer := func(call *client.Call, id string) *client.Peer {
		for ctx.Err() == nil {
			if p := call.Peer(id); p != nil {
				return p
			}
			select {
			case err := <-done:
				t.Fatalf("a call ended early: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
		t.Fatalf("no peer connection to %s (%v); patient %s clinician %s", id, call.Err, patientID, doc.Welcome.Participant.ID)
		return nil
	}
	docPeer := waitPeer(doc, patientID)
	patPeer := waitPeer(pat, doc.Welcome.Participant.ID)
	for _, p := range []*client.Peer{docPeer, patPeer} {
		select {
		case <-p.FirstPacket():
		case err := <-done:
			t.Fatalf("a call ended early: %v", err)
		case <-ctx.Done():
			t.Fatalf("no media from %s: state %s", p.ID, p.ConnectionState())
		}
	}
	t.Logf("admit to first RTP both ways: %v", time.Since(admitAt))
	deadline := time.Now().Add(10 * time.Second)
	for {
		da, dv := docPeer.Packets()
		pa, pv := patPeer.Packets()
		if da > 20 && dv > 10 && pa > 20 && pv > 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("packets: clinician got audio %d video %d, patient got audio %d video %d", da, dv, pa, pv)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := vs.clinician.Do(ctx, "GET", "/api/v1/visits/"+vs.visit.ID, nil, &v); err != nil {
		t.Fatal(err)
	}
	if v.State != "in_call" {
		t.Fatalf("visit state in call: %s", v.State)
	}

	// The clinician ends the visit: both are told, both connections close.
	if err := doc.Conn.Send(ctx, map[string]string{"type": "end"}); err != nil {
		t.Fatal(err)
	}
	for _, call := range []*client.Call{doc, pat} {
		m := nextEvent(t, ctx, call, "ended")
		var e struct{ Reason string }
		m.Decode(&e)
		if e.Reason != "ended" {
			t.Fatalf("ended reason %q", e.Reason)
		}
	}
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Fatalf("call: %v", err)
		}
	}
	stopCalls()
	doc.Conn.Close()
	pat.Conn.Close()
	if err := vs.clinician.Do(ctx, "GET", "/api/v1/visits/"+vs.visit.ID, nil, &v); err != nil {
		t.Fatal(err)
	}
	if v.State != "ended" {
		t.Fatalf("visit state after end: %s", v.State)
	}
	// The link now opens nothing.
	p := client.New(srv.URL())
	var ae *client.APIError
	if _, err := p.JoinLink(ctx, vs.token, "Ada"); !errors.As(err, &ae) || ae.Status != 410 || ae.Code != "visit_ended" {
		t.Fatalf("join after end: %v", err)
	}
	waitNoClients(t, srv)
}

func waitNoClients(t *testing.T, srv *apptest.Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.SignalClients() > 0 || liveMembers(srv) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("still %d signalling clients, %d room members", srv.SignalClients(), liveMembers(srv))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func liveMembers(srv *apptest.Server) int {
	_, n := srv.Visits().LiveCounts()
	return n
}

// TestReconnectKeepsAdmission: a patient whose page reloads (new session, same cookie)
// comes straight back in without a new admission, and the clinician is told of the new
// session; a lost WebSocket with the same session keeps the peer connection.
func TestReconnectKeepsAdmission(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := apptest.Start(t, apptest.Options{})
	vs := newVisit(t, srv, "rivera@clinic.example")
	doc := joinClinician(t, ctx, vs.clinician, vs.visit.ID, false)
	patHTTP, pat := joinPatient(t, ctx, srv.URL(), vs.token, "Ada", false)
	m, err := doc.Conn.Next(ctx, "waiting")
	if err != nil {
		t.Fatal(err)
	}
	var w struct{ Waiting []client.Waiting }
	m.Decode(&w)
	doc.Conn.Send(ctx, map[string]string{"type": "admit", "participant": w.Waiting[0].ID})
	if _, err := pat.Conn.Next(ctx, "admitted"); err != nil {
		t.Fatal(err)
	}
	if _, err := doc.Conn.Next(ctx, "peer"); err != nil {
		t.Fatal(err)
	}

	// The tab reloads: the old socket drops, a new page (new session) says hello.
	pat.Conn.Close()
	gone := nextPeerEvent(t, ctx, doc.Conn)
	if gone.Event != "gone" {
		t.Fatalf("after drop: peer %s", gone.Event)
	}
	conn2, err := patHTTP.Dial(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	pat2, err := client.Join(ctx, conn2, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if !pat2.Welcome.Admitted || len(pat2.Welcome.Peers) != 1 || pat2.Welcome.Peers[0].ID != doc.Welcome.Participant.ID {
		t.Fatalf("after reload: %+v", pat2.Welcome)
	}
	joined := nextPeerEvent(t, ctx, doc.Conn)
	if joined.Event != "joined" || joined.Peer.Session != pat2.Session {
		t.Fatalf("after reload the clinician got %+v", joined)
	}

	// A second page of the same participant replaces the first, which is told so.
	conn3, err := patHTTP.Dial(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	pat3, err := client.Join(ctx, conn3, "", false)
	if err != nil {
		t.Fatal(err)
	}
	bye, err := pat2.Conn.Next(ctx, "bye")
	if err != nil {
		t.Fatal(err)
	}
	var b struct{ Reason string }
	bye.Decode(&b)
	if b.Reason != "replaced" {
		t.Fatalf("bye reason %q", b.Reason)
	}
	doc.Conn.Close()
	pat2.Conn.Close()
	pat3.Conn.Close()
	waitNoClients(t, srv)
}

type peerEvent struct {
	Event string
	Peer  client.PeerInfo
}

func nextPeerEvent(t *testing.T, ctx context.Context, c *client.Conn) peerEvent {
	t.Helper()
	m, err := c.Next(ctx, "peer")
	if err != nil {
		t.Fatal(err)
	}
	var e peerEvent
	if err := json.Unmarshal(m.Raw, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
