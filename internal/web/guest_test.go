package web

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/auth"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

// TestGuestLinks: the clinician invites an observer through the API; the guest link opens
// the same patient page, says what it makes its holder, and joining through it makes a
// guest (an observer) who waits like the patient. Revoking the visit stops the guest link,
// and a new patient link does not bring it back.
func TestGuestLinks(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	v, patientTok := h.newVisit(t)
	owner := h.session(t, h.owner)

	r := h.do(t, req{method: "POST", path: "/api/v1/visits/" + v.ID + "/guests", body: `{"role":"observer"}`, cookies: []*http.Cookie{owner}})
	if r.status != http.StatusCreated {
		t.Fatalf("invite: %d %s", r.status, r.body)
	}
	var g struct {
		ID        string    `json:"id"`
		Role      string    `json:"role"`
		GuestURL  string    `json:"guest_url"`
		ExpiresAt time.Time `json:"expires_at"`
		Revoked   bool      `json:"revoked"`
	}
	r.decode(t, &g)
	tok, ok := strings.CutPrefix(g.GuestURL, h.publicURL+"/v/")
	if !ok || !auth.WellFormedToken(tok) || g.Role != "observer" || g.Revoked || !strings.HasPrefix(g.ID, "gst_") ||
		!g.ExpiresAt.After(h.clk.Now()) {
		t.Fatalf("invite answered %s", r.body)
	}
	if tok == patientTok {
		t.Fatal("the guest link is the patient link")
	}
	// The visit lists the guest link, without its token.
	r = h.do(t, req{method: "GET", path: "/api/v1/visits/" + v.ID, cookies: []*http.Cookie{owner}})
	if r.status != 200 || !strings.Contains(string(r.body), `"guests":[{"id":"`+g.ID+`","role":"observer"`) || strings.Contains(string(r.body), tok) {
		t.Fatalf("visit with a guest: %s", r.body)
	}
	if e := h.trail(t, audit.VisitInvite); len(e) != 1 || e[0].VisitID != v.ID || e[0].SubjectID != g.ID || e[0].Detail["role"] != "observer" || e[0].ActorID != h.owner.ID {
		t.Fatalf("audit of the invitation: %+v", e)
	}

	// The guest link resolves and says what it makes.
	r = h.do(t, req{method: "POST", path: "/api/v1/link", body: fmt.Sprintf(`{"token":%q}`, tok)})
	var link struct {
		Visit  struct{ ID string }
		Invite *struct{ Role string }
	}
	r.decode(t, &link)
	if r.status != 200 || link.Visit.ID != v.ID || link.Invite == nil || link.Invite.Role != "observer" {
		t.Fatalf("resolve the guest link: %d %s", r.status, r.body)
	}
	r = h.do(t, req{method: "POST", path: "/api/v1/link", body: fmt.Sprintf(`{"token":%q}`, patientTok)})
	if r.status != 200 || !strings.Contains(string(r.body), `"invite":null`) {
		t.Fatalf("resolve the patient link: %d %s", r.status, r.body)
	}
	if page := h.do(t, req{method: "GET", path: "/v/" + tok}); page.status != 200 {
		t.Fatalf("the guest link's page: %d", page.status)
	}
	r = h.do(t, req{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":"Grace"}`, tok)})
	if r.status != 200 || r.cookie(h.srv.cookieName(ParticipantCookie)) == nil {
		t.Fatalf("join through the guest link: %d %s", r.status, r.body)
	}
	ps, err := h.visits.Participants(ctx, v.ID)
	if err != nil || len(ps) != 1 || ps[0].Role != store.RoleGuest || !ps[0].Observer || ps[0].GuestLinkID != g.ID || ps[0].AdmittedAt != nil {
		t.Fatalf("the guest: %+v, %v", ps, err)
	}
	// It waits like the patient, and the waiting list says who it is.
	m := &recordingMember{}
	pr, w, err := h.visits.Connect(ctx, visit.Identity{Participant: &ps[0]}, "", "guest-page-1", false, m)
	if err != nil || w.Admitted {
		t.Fatalf("guest connects: %+v, %v", w, err)
	}
	defer pr.Disconnect(ctx)
	if ws := h.visits.Waiting(v.ID); len(ws) != 1 || ws[0].Role != store.RoleGuest || !ws[0].Observer {
		t.Fatalf("waiting: %+v", ws)
	}

	// Revoking the visit revokes the guest link and disconnects the guest; a new patient
	// link does not bring the guest link back.
	if _, err := h.visits.Revoke(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(m.got(), ","), "ended revoked") {
		t.Errorf("the waiting guest was not disconnected: %v", m.got())
	}
	if _, _, err := h.visits.NewLink(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	checkError(t, h.do(t, req{method: "POST", path: "/api/v1/link", body: fmt.Sprintf(`{"token":%q}`, tok)}), http.StatusGone, "link_revoked")
	if _, _, err := h.visits.Connect(ctx, visit.Identity{Participant: &ps[0]}, "", "guest-page-2", false, &recordingMember{}); err == nil {
		t.Error("the guest's cookie still lets it in after the visit was revoked")
	}
}

// TestGuestLinkLife: a guest link expires, and stops with the visit.
func TestGuestLinkLife(t *testing.T) {
	h := newHarness(t, options{})
	ctx := context.Background()
	owner := h.session(t, h.owner)
	invite := func(t *testing.T, v store.Visit, role string) string {
		r := h.do(t, req{method: "POST", path: "/api/v1/visits/" + v.ID + "/guests", body: fmt.Sprintf(`{"role":%q}`, role), cookies: []*http.Cookie{owner}})
		var g struct {
			GuestURL string `json:"guest_url"`
		}
		r.decode(t, &g)
		if r.status != http.StatusCreated {
			t.Fatalf("invite: %d %s", r.status, r.body)
		}
		return strings.TrimPrefix(g.GuestURL, h.publicURL+"/v/")
	}
	v, _ := h.newVisit(t)
	ended := invite(t, v, "participant")
	if _, err := h.visits.End(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	checkError(t, h.do(t, req{method: "POST", path: "/api/v1/link/join", body: fmt.Sprintf(`{"token":%q,"name":"Ann"}`, ended)}), http.StatusGone, "visit_ended")
	checkError(t, h.do(t, req{method: "POST", path: "/api/v1/visits/" + v.ID + "/guests", body: `{"role":"participant"}`, cookies: []*http.Cookie{owner}}), http.StatusGone, "visit_ended")

	v2, _ := h.newVisit(t)
	expiring := invite(t, v2, "participant")
	h.clk.Advance(linkTTL + time.Minute)
	checkError(t, h.do(t, req{method: "POST", path: "/api/v1/link", body: fmt.Sprintf(`{"token":%q}`, expiring)}), http.StatusGone, "link_expired")
	owner = h.session(t, h.owner) // the first one has idled out meanwhile
	checkError(t, h.do(t, req{method: "POST", path: "/api/v1/visits/" + v2.ID + "/guests", body: `{"role":"speaker"}`, cookies: []*http.Cookie{owner}}), http.StatusBadRequest, "invalid")
}
