package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/client"
)

// TestGuestObserver: the clinician invites an observer; the observer joins through its own
// link, waits (the clinician sees it is a guest who only watches), is admitted, receives the
// clinician's media, and is refused when it tries to send media of its own.
func TestGuestObserver(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := apptest.Start(t, apptest.Options{})
	vs := newVisit(t, srv, "rivera@clinic.example")
	g, err := vs.clinician.Invite(ctx, vs.visit.ID, "observer")
	if err != nil || g.Role != "observer" {
		t.Fatalf("invite: %+v, %v", g, err)
	}
	tok, err := client.LinkToken(g.GuestURL)
	if err != nil {
		t.Fatal(err)
	}
	doc := joinClinician(t, ctx, vs.clinician, vs.visit.ID, true)
	_, obs := joinPatient(t, ctx, srv.URL(), tok, "Grace", false)
	if obs.Welcome.Participant.Role != "guest" || !obs.Welcome.Participant.Observer || obs.Welcome.Admitted {
		t.Fatalf("observer's welcome: %+v", obs.Welcome)
	}
	m, err := doc.Conn.Next(ctx, "waiting")
	if err != nil {
		t.Fatal(err)
	}
	var w struct {
		Waiting []struct {
			ID, Name, Role string
			Observer       bool
		}
	}
	m.Decode(&w)
	if len(w.Waiting) != 1 || w.Waiting[0].Role != "guest" || !w.Waiting[0].Observer || w.Waiting[0].Name != "Grace" {
		t.Fatalf("waiting: %s", m.Raw)
	}
	obsID := w.Waiting[0].ID

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- doc.Run(runCtx) }()
	go func() { done <- obs.Run(runCtx) }()
	defer func() {
		stop()
		<-done
		<-done
		doc.Conn.Close()
		obs.Conn.Close()
		waitNoClients(t, srv)
	}()
	if err := doc.Conn.Send(ctx, map[string]string{"type": "admit", "participant": obsID}); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, ctx, obs, "admitted")
	var p *client.Peer
	for p == nil && ctx.Err() == nil {
		p = obs.Peer(doc.Welcome.Participant.ID)
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-p.FirstPacket():
	case <-ctx.Done():
		t.Fatalf("the observer received nothing: %s", p.ConnectionState())
	}
	// An offer that would send media is refused before it reaches the clinician.
	offer := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n"
	if err := obs.Conn.Send(ctx, map[string]any{"type": "signal", "to": doc.Welcome.Participant.ID, "description": map[string]string{"type": "offer", "sdp": offer}}); err != nil {
		t.Fatal(err)
	}
	m = nextEvent(t, ctx, obs, "error")
	var e struct {
		Code      string `json:"code"`
		InReplyTo string `json:"in_reply_to"`
	}
	m.Decode(&e)
	if e.Code != "forbidden" || e.InReplyTo != "signal" {
		t.Fatalf("observer's sending offer: %s", m.Raw)
	}
	// Revoking the visit disconnects the guest; its link then opens nothing.
	if err := vs.clinician.Do(ctx, "POST", "/api/v1/visits/"+vs.visit.ID+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	m = nextEvent(t, ctx, obs, "ended")
	var ae *client.APIError
	if _, err := client.New(srv.URL()).JoinLink(ctx, tok, "Grace"); !errors.As(err, &ae) || ae.Code != "link_revoked" {
		t.Fatalf("guest link after revoke: %v", err)
	}
}
