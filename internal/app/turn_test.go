package app_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/audit"
	"github.com/bedside/bedside/internal/client"
	"github.com/bedside/bedside/internal/config"
)

// TestPrivacyVisitRelaysAndRevokes is a privacy visit through the real protocol: both
// sides get relay-only ICE, the patient gets its relay credential (just before admitted) and
// can allocate with it, each side's connection report is stored, shown by the API and
// counted in the metrics, and removing the patient closes its allocations at once and
// refuses its credential, also after a restart (the relay's secret is configured, so the
// credential itself outlives the process). (Relayed media between real browsers is the
// netns tests' part.)
func TestPrivacyVisitRelaysAndRevokes(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := apptest.Start(t, apptest.Options{Config: func(c *config.Config) {
		c.TURNAllowPeers = "127.0.0.1/32"
		c.MetricsAddr = "127.0.0.1:0"
		c.TURNSecret = "a-test-secret-that-survives-the-restart"
	}})
	srv.AddUser(t, "rivera@clinic.example", "Dr Rivera", "clinician", pw)
	doc := client.New(srv.URL())
	if err := doc.SignIn(ctx, "rivera@clinic.example", pw); err != nil {
		t.Fatal(err)
	}
	var v struct {
		client.Visit
		Privacy bool `json:"privacy"`
	}
	if err := doc.Do(ctx, "POST", "/api/v1/visits", map[string]any{"patient_name": "Ada", "privacy": true}, &v); err != nil {
		t.Fatal(err)
	}
	if !v.Privacy {
		t.Fatal("privacy not set on the visit")
	}
	tok, _ := client.LinkToken(v.PatientURL)

	docCall := joinClinician(t, ctx, doc, v.ID, false)
	if docCall.Welcome.ICETransportPolicy != "relay" {
		t.Fatalf("privacy visit: policy %q", docCall.Welcome.ICETransportPolicy)
	}
	_, patCall := joinPatient(t, ctx, srv.URL(), tok, "Ada", false)
	if patCall.Welcome.ICETransportPolicy != "relay" {
		t.Fatalf("privacy visit, patient: policy %q", patCall.Welcome.ICETransportPolicy)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 2)
	go func() { done <- docCall.Run(runCtx) }()
	go func() { done <- patCall.Run(runCtx) }()
	var w struct{ Waiting []client.Waiting }
	nextEvent(t, ctx, docCall, "waiting").Decode(&w)
	patientID := w.Waiting[0].ID
	docCall.Conn.Send(ctx, map[string]string{"type": "admit", "participant": patientID})
	var ice struct {
		ICEServers         []client.ICEServer `json:"ice_servers"`
		ICETransportPolicy string             `json:"ice_transport_policy"`
	}
	nextEvent(t, ctx, patCall, "ice_servers").Decode(&ice)
	nextEvent(t, ctx, patCall, "admitted")
	var cred client.ICEServer
	for _, s := range ice.ICEServers {
		if s.Username != "" {
			cred = s
		}
	}
	if ice.ICETransportPolicy != "relay" || !strings.HasSuffix(cred.Username, ":"+patientID) {
		t.Fatalf("the patient's ice_servers on admission: %+v", ice)
	}
	relay := srv.TURN()
	if code := allocate(t, relay.Port(), cred.Username, cred.Credential); code != 0 {
		t.Fatalf("allocation with the patient's credential: %d", code)
	}
	if relay.Allocations(patientID) == 0 {
		t.Fatal("the patient has no allocation")
	}

	// Both report their pair; the visit API shows them as relayed.
	for _, c := range []struct {
		call *client.Call
		peer string
	}{{patCall, docCall.Welcome.Participant.ID}, {docCall, patientID}} {
		c.call.Conn.Send(ctx, map[string]any{"type": "connection", "peer": c.peer,
			"local":  map[string]string{"candidate_type": "relay", "protocol": "udp", "relay_protocol": "udp"},
			"remote": map[string]string{"candidate_type": "relay", "protocol": "udp"}})
	}
	var summary struct {
		Participants []struct {
			ID          string
			Connections []struct {
				Path  string
				Local struct {
					Type          string `json:"candidate_type"`
					RelayProtocol string `json:"relay_protocol"`
				}
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := doc.Do(ctx, "GET", "/api/v1/visits/"+v.ID, nil, &summary); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range summary.Participants {
			for _, c := range p.Connections {
				if c.Path == "relayed" && c.Local.Type == "relay" && c.Local.RelayProtocol == "udp" {
					n++
				}
			}
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("visit summary: %+v", summary)
		}
		time.Sleep(50 * time.Millisecond)
	}
	metrics := get(t, "http://"+srv.MetricsAddr().String()+"/metrics")
	for _, want := range []string{
		`bedside_call_connections_total{candidate_type="relay",protocol="udp",relay_protocol="udp"} 2`,
		"bedside_turn_allocations ",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, "\nbedside_turn_allocations 0\n") {
		t.Error("the allocations gauge is 0 with the patient's allocation open")
	}

	// Remove the patient: its relays close at once and its credential stops working.
	removedAt := time.Now()
	if err := doc.Do(ctx, "POST", "/api/v1/visits/"+v.ID+"/remove", map[string]string{"participant": patientID}, nil); err != nil {
		t.Fatal(err)
	}
	for relay.Allocations(patientID) > 0 {
		if time.Since(removedAt) > 2*time.Second {
			t.Fatalf("%d allocations of the removed patient after 2 s", relay.Allocations(patientID))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("the removed patient's relays closed %v after the API call", time.Since(removedAt).Round(time.Millisecond))
	if code := allocate(t, relay.Port(), cred.Username, cred.Credential); code != stun.CodeUnauthorized {
		t.Errorf("allocation with the removed patient's credential: %d, want 401", code)
	}

	// The visit's audit trail has the relay's events about its patient (the relay itself
	// knows only the participant): the allocation, its closing (recorded when pion has
	// let the allocation go, a moment after its relay closed), the refused credential.
	deadline = time.Now().Add(5 * time.Second)
	for {
		evs, err := srv.Store().SearchAudit(ctx, audit.Query{VisitID: v.ID})
		if err != nil {
			t.Fatal(err)
		}
		got := map[audit.Action]int{}
		for _, e := range evs {
			if e.ActorID == patientID && strings.HasPrefix(string(e.Action), "turn.") {
				got[e.Action]++
			}
		}
		if got[audit.TURNAllocate] > 0 && got[audit.TURNDelete] > 0 && got[audit.TURNRefused] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the visit's trail lacks some of the relay's events of the patient after 5 s: %v", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
	<-done

	// After a restart the removed patient's credential is still refused, as revoked; the
	// clinician's, signed with the same secret, still allocates.
	var docCred client.ICEServer
	for _, s := range docCall.Welcome.ICEServers {
		if s.Username != "" {
			docCred = s
		}
	}
	revokedRefusals := func() int {
		evs, err := srv.Store().SearchAudit(ctx, audit.Query{VisitID: v.ID})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range evs {
			if e.ActorID == patientID && e.Action == audit.TURNRefused && e.Outcome == "revoked" {
				n++
			}
		}
		return n
	}
	before := revokedRefusals()
	srv.Restart(t)
	relay = srv.TURN()
	if code := allocate(t, relay.Port(), docCred.Username, docCred.Credential); code != 0 {
		t.Fatalf("after the restart, allocation with the clinician's credential: %d", code)
	}
	restarted := time.Now()
	if code := allocate(t, relay.Port(), cred.Username, cred.Credential); code != stun.CodeUnauthorized {
		t.Errorf("after the restart, allocation with the removed patient's credential: %d, want 401", code)
	}
	for revokedRefusals() == before {
		if time.Since(restarted) > 5*time.Second {
			t.Fatal("after the restart, no refusal of the removed patient's credential as revoked in the trail")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// allocate tries one UDP allocation with a credential and returns the error code (0 = ok).
func allocate(t *testing.T, port int, username, password string) stun.ErrorCode {
	t.Helper()
	conn, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
	ask := func(setters ...stun.Setter) *stun.Message {
		m := stun.MustBuild(append([]stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport}, setters...)...)
		conn.Write(m.Raw)
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1500)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		r := &stun.Message{Raw: buf[:n]}
		if err := r.Decode(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := ask(stun.Fingerprint)
	var nonce stun.Nonce
	var realm stun.Realm
	nonce.GetFrom(r)
	realm.GetFrom(r)
	r = ask(stun.NewUsername(username), realm, nonce, stun.NewLongTermIntegrity(username, realm.String(), password), stun.Fingerprint)
	if r.Type.Class != stun.ClassErrorResponse {
		return 0
	}
	var e stun.ErrorCodeAttribute
	e.GetFrom(r)
	return e.Code
}

func itoa(n int) string { return strconv.Itoa(n) }
