package app_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/client"
	"github.com/bedside/bedside/internal/config"
)

// party is a running visit: the clinician and the people admitted, each a Go participant.
type party struct {
	t     *testing.T
	ctx   context.Context
	srv   *apptest.Server
	vs    visitSetup
	calls map[string]*client.Call // by name
	ids   map[string]string       // name -> participant id
	done  chan error
	stop  context.CancelFunc
}

func newParty(t *testing.T, ctx context.Context, srv *apptest.Server, policy string) *party {
	t.Helper()
	srv.AddUser(t, "rivera@clinic.example", "Dr Rivera", "clinician", pw)
	c := client.New(srv.URL())
	if err := c.SignIn(ctx, "rivera@clinic.example", pw); err != nil {
		t.Fatal(err)
	}
	var v client.Visit
	if err := c.Do(ctx, "POST", "/api/v1/visits", map[string]any{"patient_name": "Ada", "policy": policy}, &v); err != nil {
		t.Fatal(err)
	}
	tok, _ := client.LinkToken(v.PatientURL)
	runCtx, stop := context.WithCancel(ctx)
	p := &party{t: t, ctx: runCtx, srv: srv, vs: visitSetup{srv: srv, clinician: c, visit: v, token: tok},
		calls: map[string]*client.Call{}, ids: map[string]string{}, done: make(chan error, 16), stop: stop}
	doc := joinClinician(t, ctx, c, v.ID, true)
	p.start("clinician", doc)
	t.Cleanup(p.close)
	return p
}

func (p *party) start(name string, call *client.Call) {
	p.calls[name] = call
	p.ids[name] = call.Welcome.Participant.ID
	go func() { p.done <- call.Run(p.ctx) }()
}

// sfuTest starts a server (with opts) and a party whose clinician is in a visit of the
// policy, for a test of at most 45 s that checks for leaked goroutines at its end.
func sfuTest(t *testing.T, policy string, opts apptest.Options) (context.Context, *apptest.Server, *party) {
	t.Helper()
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	srv := apptest.Start(t, opts)
	return ctx, srv, newParty(t, ctx, srv, policy)
}

// join brings a patient (token "") or a guest (a guest link's token) in: it waits, the
// clinician admits it.
func (p *party) join(name, token string, media bool, opts ...func(*client.Call)) *client.Call {
	p.t.Helper()
	if token == "" {
		token = p.vs.token
	}
	_, call := joinPatient(p.t, p.ctx, p.srv.URL(), token, name, media)
	for _, o := range opts {
		o(call)
	}
	p.start(name, call)
	if err := p.calls["clinician"].Conn.Send(p.ctx, map[string]string{"type": "admit", "participant": call.Welcome.Participant.ID}); err != nil {
		p.t.Fatal(err)
	}
	nextEvent(p.t, p.ctx, call, "admitted")
	return call
}

func (p *party) guest(name, role string, opts ...func(*client.Call)) *client.Call {
	p.t.Helper()
	g, err := p.vs.clinician.Invite(p.ctx, p.vs.visit.ID, role)
	if err != nil {
		p.t.Fatal(err)
	}
	tok, _ := client.LinkToken(g.GuestURL)
	return p.join(name, tok, role == "participant", opts...)
}

func (p *party) close() {
	p.stop()
	for range p.calls {
		<-p.done
	}
	for _, c := range p.calls {
		c.Conn.Close()
	}
	waitNoClients(p.t, p.srv)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, n := p.srv.SFU().Counts()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			p.t.Errorf("%d participants still in the SFU", n)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSFU waits until every call receives audio and video from each publisher through
// the SFU.
func (p *party) waitSFU(within time.Duration, publishers ...string) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for name, c := range p.calls {
		for _, pub := range publishers {
			if pub == name {
				continue
			}
			for {
				s := c.SFU()
				if s != nil {
					if a, v := s.From(p.ids[pub]).Packets(); a > 10 && v > 10 {
						break
					}
				}
				if time.Now().After(deadline) {
					var a, v int64
					if s != nil {
						a, v = s.From(p.ids[pub]).Packets()
					}
					p.t.Fatalf("%s receives from %s through the SFU: %d audio, %d video packets (mode %s)", name, pub, a, v, c.Mode())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

// TestSFUSwitchGo: a visit of policy auto is peer to peer for two; when the third person
// is admitted it moves to the SFU without anyone rejoining: everyone receives everyone
// through the SFU, and the peer connections close once that happens.
func TestSFUSwitchGo(t *testing.T) {
	ctx, srv, p := sfuTest(t, "auto", apptest.Options{})
	pat := p.join("patient", "", true)
	if pat.Mode() != "p2p" {
		t.Fatalf("two people: mode %s", pat.Mode())
	}
	// Two people: media browser to browser.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if pe := pat.Peer(p.ids["clinician"]); pe != nil {
			if a, v := pe.Packets(); a > 5 && v > 5 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no peer-to-peer media between the first two")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, n := srv.SFU().Counts(); n != 0 {
		t.Fatalf("%d in the SFU with two people", n)
	}
	switchAt := time.Now()
	p.guest("caregiver", "participant")
	p.waitSFU(20*time.Second, "clinician", "patient", "caregiver")
	t.Logf("third admitted to everyone receiving everyone through the SFU: %v", time.Since(switchAt).Round(time.Millisecond))
	for name, c := range p.calls {
		if c.Mode() != "sfu" {
			t.Errorf("%s: mode %s", name, c.Mode())
		}
	}
	// Make before break: the peer connections close once the peer arrives through the SFU.
	deadline = time.Now().Add(10 * time.Second)
	for _, name := range []string{"clinician", "patient"} {
		for len(p.calls[name].Peers()) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s still has peer connections: %v", name, p.calls[name].Peers())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var v client.Visit
	if err := p.vs.clinician.Do(ctx, "GET", "/api/v1/visits/"+p.vs.visit.ID, nil, &v); err != nil {
		t.Fatal(err)
	}
	if got := p.srv.Visits().Mode(p.vs.visit.ID); got != "sfu" {
		t.Errorf("visit mode %q", got)
	}
}

// TestSFUFourParticipants: a visit of policy sfu with four people, one of them an
// observer: the three who publish are received by all the others; the observer receives
// everyone and publishes nothing; when one leaves, the others stop receiving it and go on
// with each other.
func TestSFUFourParticipants(t *testing.T) {
	ctx, srv, p := sfuTest(t, "sfu", apptest.Options{Config: func(c *config.Config) { c.MetricsAddr = "127.0.0.1:0" }})
	if m := p.calls["clinician"].Welcome.Mode; m != "sfu" {
		t.Fatalf("policy sfu: the clinician's welcome says %q", m)
	}
	p.join("patient", "", true)
	p.guest("interpreter", "participant")
	obs := p.guest("student", "observer")
	p.waitSFU(20*time.Second, "clinician", "patient", "interpreter")
	if a, v := p.calls["clinician"].SFU().From(p.ids["student"]).Packets(); a+v != 0 {
		t.Errorf("the observer published %d audio and %d video packets", a, v)
	}
	// An observer's pub offer is refused.
	obs.Conn.Send(ctx, map[string]any{"type": "signal", "to": "sfu", "pc": "pub", "description": map[string]string{"type": "offer", "sdp": "v=0\r\n"}})
	m := nextEvent(t, ctx, obs, "error")
	var e struct{ Code string }
	m.Decode(&e)
	if e.Code != "forbidden" {
		t.Errorf("observer's publish: %s", m.Raw)
	}
	// Every publisher's media came in by the direct receive path (decision 51): the SFU is
	// the DTLS server of the pub connections, so it has their keys.
	st := srv.SFU().Stats(p.vs.visit.ID)
	for _, name := range []string{"clinician", "patient", "interpreter"} {
		if n, pion := st.Received[p.ids[name]], st.ReceivedByPion[p.ids[name]]; n <= pion {
			t.Errorf("%s's packets: %d taken by the direct receive path, %d came through pion's", name, n, pion)
		}
	}
	// Every subscriber's transport-wide feedback reaches its estimator (decision 53): the
	// packets it reports are found among those sent, so the estimator knows a received rate.
	deadline := time.Now().Add(5 * time.Second)
	for _, name := range []string{"clinician", "patient", "interpreter", "student"} {
		for {
			e, ok := srv.SFU().Stats(p.vs.visit.ID).Estimators[p.ids[name]]
			if ok && e.State != "start" && e.Received > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s's estimator after its feedback: %v (present %v)", name, e, ok)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// And their RTCP (the feedback above among it) came back by the direct path (decision
	// 55): read and acted on by the SFU's socket reader, not by pion's.
	st = srv.SFU().Stats(p.vs.visit.ID)
	for _, name := range []string{"clinician", "patient", "interpreter", "student"} {
		if n, pion := st.RTCPDirect[p.ids[name]], st.RTCPByPion[p.ids[name]]; n <= pion {
			t.Errorf("%s's RTCP: %d datagrams taken by the direct path, %d reads from pion's", name, n, pion)
		}
	}
	// The metrics count what the SFU does.
	metrics := get(t, "http://"+srv.MetricsAddr().String()+"/metrics")
	for _, want := range []string{
		`bedside_sfu_forwarded_packets_total{kind="audio"}`, `bedside_sfu_forwarded_packets_total{kind="video"}`,
		`bedside_sfu_forwarded_bytes_total{kind="video"}`, `bedside_sfu_dropped_packets_total{reason="queue_full"}`,
		`bedside_sfu_layer_switches_total`, `bedside_sfu_keyframe_requests_total`,
		`bedside_sfu_visit_subscribers{visit="` + p.vs.visit.ID + `"} 4`,
		`bedside_sfu_pub_connections_total{receive_path="direct"} 3`,
		`bedside_sfu_feedback_invalid_total 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The interpreter leaves: the others stop receiving it.
	before := map[string]int64{}
	for _, name := range []string{"clinician", "patient", "student"} {
		a, _ := p.calls[name].SFU().From(p.ids["interpreter"]).Packets()
		before[name] = a
	}
	if err := p.calls["interpreter"].Conn.Send(ctx, map[string]string{"type": "leave"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	for _, name := range []string{"clinician", "patient", "student"} {
		a1, _ := p.calls[name].SFU().From(p.ids["interpreter"]).Packets()
		time.Sleep(300 * time.Millisecond)
		a2, _ := p.calls[name].SFU().From(p.ids["interpreter"]).Packets()
		if a2 != a1 {
			t.Errorf("%s still receives the interpreter after it left (%d -> %d)", name, a1, a2)
		}
	}
	_, n := srv.SFU().Counts()
	if n != 3 {
		t.Errorf("%d participants in the SFU after one of four left", n)
	}
	// And the rest go on.
	clin := p.calls["clinician"].SFU().From(p.ids["patient"])
	a0, _ := clin.Packets()
	time.Sleep(500 * time.Millisecond)
	if a1, _ := clin.Packets(); a1 <= a0 {
		t.Errorf("the clinician stopped receiving the patient: %d -> %d", a0, a1)
	}
	delete(p.calls, "interpreter") // its Run returned with the leave
	<-p.done
}

// TestSFUSimulcastLayer: a subscriber that shows a video small gets the small layer; the
// publisher is told to pause the layers nobody receives (dynacast), and sends them again
// when someone shows it large.
func TestSFUSimulcastLayer(t *testing.T) {
	ctx, _, p := sfuTest(t, "sfu", apptest.Options{})
	pat := p.join("patient", "", false)
	p.waitSFU(20*time.Second, "clinician")
	width := func() int { return pat.SFU().From(p.ids["clinician"]).Width() }
	waitWidth := func(want int, what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for width() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: receiving width %d, want %d", what, width(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitWidth(640, "no size said: the top layer")
	pat.SetVideoSize(ctx, p.ids["clinician"], "camera", 160, 90)
	waitWidth(160, "shown at 160x90")
	// Nobody shows more than the small layer: the clinician is told to pause the others.
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(p.calls["clinician"].SFU().ActiveLayers(), []string{"q"}) {
		if time.Now().After(deadline) {
			t.Fatalf("dynacast: the clinician sends %v", p.calls["clinician"].SFU().ActiveLayers())
		}
		time.Sleep(50 * time.Millisecond)
	}
	pat.SetVideoSize(ctx, p.ids["clinician"], "camera", 1280, 720)
	waitWidth(640, "shown large again")
	if got := fmt.Sprint(p.calls["clinician"].SFU().ActiveLayers()); got != "[q h f]" {
		t.Errorf("after showing it large the clinician sends %s", got)
	}
}

// TestSFUREMBOnlySubscriber: a receiver whose sub connection offers no transport-wide
// congestion control (older or other WebRTC stacks offer only REMB) gets the layer its
// REMB leaves room for: the small one at 250 kbit/s, the top one at 3 Mbit/s, and the
// small one again when its REMB falls.
func TestSFUREMBOnlySubscriber(t *testing.T) {
	_, _, p := sfuTest(t, "sfu", apptest.Options{})
	p.join("patient", "", false)
	obs := p.guest("observer", "observer", func(c *client.Call) { c.REMBOnly = true })
	p.waitSFU(20*time.Second, "clinician")
	clinicianID := p.ids["clinician"]
	for _, step := range []struct {
		remb  float32
		width int
	}{{250_000, 160}, {3_000_000, 640}, {250_000, 160}} {
		deadline := time.Now().Add(10 * time.Second)
		for obs.SFU().From(clinicianID).Width() != step.width {
			// A receiver sends its REMB about once a second; faster here.
			if err := obs.SFU().SendREMB(step.remb); err != nil {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("REMB %.0f kbit/s: receiving width %d, want %d", step.remb/1000, obs.SFU().From(clinicianID).Width(), step.width)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// TestSFUKeyframeRequestsLimited: a receiver's decoder asking for key frames again and
// again (a picture loss every 100 ms for 2 s) costs the publisher at most one key frame
// request every 500 ms, and asks it at least once.
func TestSFUKeyframeRequestsLimited(t *testing.T) {
	_, _, p := sfuTest(t, "sfu", apptest.Options{})
	obs := p.guest("observer", "observer")
	p.join("patient", "", false)
	p.waitSFU(20*time.Second, "clinician")
	clinicianID := p.ids["clinician"]
	pub := p.calls["clinician"].SFU()
	time.Sleep(time.Second) // the requests of the subscriptions themselves
	before := pub.KeyframeRequests()
	for range 20 {
		if err := obs.SFU().SendPLI(clinicianID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	// 2 s of requests: one at the first, then at most one per 500 ms.
	if got := pub.KeyframeRequests() - before; got < 1 || got > 5 {
		t.Errorf("20 picture losses in 2 s from a receiver: the publisher was asked %d times, want 1 to 5", got)
	}
}

// TestSFURejoinsLostParticipant: the SFU loses a participant and an observer whose pages
// are still connected (told to here, standing for a flow it does not foresee). Each page's
// next signal about its lost connections is not refused: the patient's about pub, the
// observer's an end of candidates for sub (what a page whose sub connection stays quiet
// sends; it has no pub). The server puts each back into the SFU with a new SFU session:
// the patient publishes again, the clinician receives it again, and the observer receives
// the clinician again.
// Then the patient's connection of the lost session sends its pub offer once more, as a
// page does whose offer was on its way when the new session came (TestSFURejoinAfterLoss
// saw it): the server drops it, and the new pub connection goes on.
func TestSFURejoinsLostParticipant(t *testing.T) {
	ctx, srv, p := sfuTest(t, "sfu", apptest.Options{})
	p.join("patient", "", true)
	obs := p.guest("observer", "observer")
	p.waitSFU(20*time.Second, "clinician", "patient")
	visitID := p.vs.visit.ID
	clinicianID := p.ids["clinician"]

	var lostOffer, lostSession string
	for _, l := range []struct {
		name string
		pc   string
	}{{"patient", "pub"}, {"observer", "sub"}} {
		call, id := p.calls[l.name], p.ids[l.name]
		lost := call.SFU().Session
		if l.name == "patient" {
			lostOffer, lostSession = call.SFU().PubOffer(), lost
		}
		srv.SFU().Leave(visitID, id)
		// Gone from the SFU, or already back with a new session: a signal of the page's
		// own (its answer to a renegotiation of sub, say) that reaches the server after
		// the loss puts it back too, before this loop may see it gone.
		for inSFU := true; inSFU; {
			inSFU = false
			for _, sp := range srv.SFU().Stats(visitID).Participants {
				inSFU = inSFU || sp.ID == id && sp.Session == lost
			}
			if ctx.Err() != nil {
				t.Fatalf("the SFU still has the %s's lost session; its goroutines:\n%s", l.name, sfuStacks())
			}
			time.Sleep(10 * time.Millisecond)
		}
		for _, sp := range srv.SFU().Stats(visitID).Participants {
			if sp.ID == id {
				t.Logf("the %s was back in the SFU before the test's signal", l.name)
			}
		}
		if err := call.Conn.Send(ctx, map[string]any{"type": "signal", "to": "sfu", "pc": l.pc, "candidate": nil}); err != nil {
			t.Fatal(err)
		}
		for call.SFU() == nil || call.SFU().Session == lost {
			if ctx.Err() != nil {
				t.Fatalf("the %s was not told a new SFU session", l.name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, r := range []struct {
		what     string
		receiver *client.Call
		from     string
	}{{"the clinician receives the patient", p.calls["clinician"], p.ids["patient"]}, {"the observer receives the clinician", obs, clinicianID}} {
		a0, v0 := r.receiver.SFU().From(r.from).Packets()
		for {
			a, v := r.receiver.SFU().From(r.from).Packets()
			if a > a0+10 && v > v0+10 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s again: %d audio, %d video packets more", r.what, a-a0, v-v0)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	if lostOffer == "" {
		t.Fatal("the patient's pub connection had no offer before the loss")
	}
	patient := p.calls["patient"]
	stale := map[string]any{"type": "signal", "to": "sfu", "pc": "pub", "sfu_session": lostSession,
		"description": map[string]any{"type": "offer", "sdp": lostOffer}}
	if err := patient.Conn.Send(ctx, stale); err != nil {
		t.Fatal(err)
	}
	for len(srv.RecentLog("a signal for an SFU session that was replaced")) == 0 {
		if ctx.Err() != nil {
			t.Fatal("the server did not drop the pub offer of the patient's lost SFU session")
		}
		time.Sleep(10 * time.Millisecond)
	}
	receiver := p.calls["clinician"].SFU().From(p.ids["patient"])
	a0, v0 := receiver.Packets()
	time.Sleep(time.Second)
	if a, v := receiver.Packets(); a < a0+10 || v < v0+10 {
		t.Errorf("after the stale offer the clinician received %d audio, %d video packets of the patient in a second", a-a0, v-v0)
	}
	if st := patient.SFU().PubState(); st != "connected" {
		t.Errorf("the patient's pub connection is %s after the stale offer", st)
	}
}

// goroutineStacks returns the stacks of every goroutine (up to 4 MB of them).
func goroutineStacks() string {
	buf := make([]byte, 1<<22)
	return string(buf[:runtime.Stack(buf, true)])
}

// sfuStacks returns the stacks of the goroutines that run in the SFU, for a test that
// waited in vain for a participant to leave.
func sfuStacks() string {
	var out []string
	for _, g := range strings.Split(goroutineStacks(), "\n\n") {
		if strings.Contains(g, "/internal/sfu.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
