//go:build browser

package browser

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/store"
)

const (
	clinicianEmail    = "rivera@clinic.example"
	clinicianPassword = "correct horse battery"
)

// rig is a running server, a clinician's browser signed in, and (once made) a visit.
type rig struct {
	t         testing.TB
	srv       *apptest.Server
	clinician *page
	patient   *page

	visitID    string
	patientURL string
	patientID  string // the patient's participant id, once they wait
}

func newRig(t testing.TB) *rig { return newRigWith(t, rigOptions{}) }

// rigOptions change how newRigWith starts the server and the two browsers (the network
// tests put each in a network namespace of its own).
type rigOptions struct {
	start     func(t testing.TB) *apptest.Server // nil: apptest.Start with the defaults
	clinician []chromedp.ExecAllocatorOption     // extra options of the clinician's browser
	patient   []chromedp.ExecAllocatorOption     // and of the patient's
}

func newRigWith(t testing.TB, o rigOptions) *rig {
	t.Helper()
	var srv *apptest.Server
	if o.start != nil {
		srv = o.start(t)
	} else {
		srv = apptest.Start(t, apptest.Options{})
	}
	srv.AddUser(t, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	return &rig{t: t, srv: srv, clinician: newPage(t, "clinician", o.clinician...), patient: newPage(t, "patient", o.patient...)}
}

// ui is what a person's steps through the pages need of a browser: Chromium's (page) or
// Firefox's (ffPage).
type ui interface {
	navigate(url string)
	typeInto(sel, text string)
	click(sel string)
	waitFor(what, expr string) time.Duration
	str(expr string) string // expr's value, a string
}

// signIn signs the clinician in through /signin and lands on /console.
func (r *rig) signIn() {
	r.t.Helper()
	signIn(r.clinician, r.srv)
}

func signIn(c ui, srv *apptest.Server) {
	c.navigate(srv.URL() + "/signin")
	c.typeInto("#email", clinicianEmail)
	c.typeInto("#password", clinicianPassword)
	c.click("#signin-submit")
	c.waitFor("the console after signing in", `location.pathname === '/console' &&
		document.getElementById('user-name').textContent === 'Dr Rivera'`)
}

// createVisit creates a visit with the console's form and opens the visit page through
// #open-new-visit.
func (r *rig) createVisit(patientName string) {
	r.t.Helper()
	r.visitID, r.patientURL = createVisit(r.t, r.clinician, r.srv, patientName)
}

// createVisit creates a visit in c's console and opens its page; it returns the visit's id
// and the patient's link.
func createVisit(tb testing.TB, c ui, srv *apptest.Server, patientName string) (id, patientURL string) {
	tb.Helper()
	c.typeInto("#patient-name", patientName)
	c.click("#create-visit-submit")
	c.waitFor("the new visit's patient link", visible("new-visit")+` && document.getElementById('patient-link').value !== ''`)
	patientURL = c.str(`document.getElementById('patient-link').value`)
	href := c.str(`document.getElementById('open-new-visit').getAttribute('href')`)
	id, ok := strings.CutPrefix(href, "/console/visits/")
	if !ok || id == "" || !strings.HasPrefix(patientURL, srv.PublicURL()+"/v/") {
		tb.Fatalf("after creating a visit: #open-new-visit href %q, patient link %q", href, redact(patientURL))
	}
	// The list shows the new visit too.
	c.waitFor("the visit in #visits", fmt.Sprintf(`!!document.querySelector('#visits tr[data-visit-id=%q] td.state[data-state="scheduled"]')`, id))

	c.click("#open-new-visit")
	c.waitFor("the visit page, signalling open", fmt.Sprintf(`location.pathname === %q &&
		document.getElementById('call-status').dataset.state === 'waiting'`, href))
	return id, patientURL
}

// patientJoins opens the patient link, checks the device check, types the name and joins.
func (r *rig) patientJoins(name string) {
	r.t.Helper()
	joinAsPatient(r.patient, r.patientURL, name, "the microphone level meter moving", `document.getElementById('mic-level').value > 0`)
}

// joinAsPatient takes p through the link at url: the device check (the camera preview
// playing, and mic, what it shows of the microphone), the name, and the waiting room.
func joinAsPatient(p ui, url, name, micWhat, mic string) {
	p.navigate(url)
	p.waitFor("the device check", visible("stage-check"))
	p.waitFor("the camera preview playing", `(() => { const v = document.getElementById('preview');
		return !v.paused && v.readyState >= 2 && v.videoWidth > 0; })()`)
	p.waitFor(micWhat, mic)
	p.waitFor("#join enabled", `!document.getElementById('join').disabled`)
	p.typeInto("#patient-name-input", name)
	p.click("#join")
	p.waitFor("the waiting room", visible("stage-waiting")+` &&
		document.getElementById('call-status').dataset.state === 'waiting'`)
}

// admit waits for the patient in the clinician's #waiting list and clicks its admit button.
func (r *rig) admit(name string) {
	r.t.Helper()
	r.patientID = admit(r.clinician, name)
}

// admit admits the person waiting with this name from c's visit page; it returns their
// participant id.
func admit(c ui, name string) string {
	li := fmt.Sprintf(`[...document.querySelectorAll('#waiting li[data-participant-id]')].find((li) =>
		li.querySelector('.waiting-name').textContent === %q)`, name)
	c.waitFor(name+" in #waiting", li)
	id := c.str(`(` + li + `).dataset.participantId`)
	c.click(fmt.Sprintf(`#waiting li[data-participant-id=%q] button.admit`, id))
	return id
}

// patientWaits runs the visit up to the patient, Ada, in the waiting room.
func patientWaits(r *rig) {
	r.t.Helper()
	r.signIn()
	r.createVisit("Ada Lovelace")
	r.patientJoins("Ada")
}

// startCall runs the visit up to media flowing both ways.
func startCall(r *rig) {
	r.t.Helper()
	patientWaits(r)
	r.admit("Ada")
	waitInCall(r.patient)
	waitInCall(r.clinician)
}

// waitInCall waits, in a page, for the call: frames decoded and audio packets received on a
// peer connection, the status line in_call, and a remote video playing.
func waitInCall(p *page) time.Duration {
	p.tb.Helper()
	d := p.waitFor("video frames decoded and audio packets received", mediaFlowingJS)
	p.waitFor("#call-status in_call", `document.getElementById('call-status').dataset.state === 'in_call'`)
	p.waitFor("a remote video playing in #remotes", remoteVideoPlayingJS)
	return d
}

// remoteNamed is true when #remotes has a video tile labelled with the name.
func remoteNamed(name string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#remotes figure')].some((f) =>
		!!f.querySelector('video[data-peer-id]') && f.querySelector('.tile-name').textContent === %q)`, name)
}

// checkCandidatePair asserts that the page's peer connection has a selected candidate pair
// that succeeded, and logs it.
func checkCandidatePair(p *page) {
	p.tb.Helper()
	// The pair carrying media may still read "in-progress" for a moment after the first
	// frames (its nomination's checks are under way): give it a little while.
	p.waitForWithin("every connection's selected pair succeeded", `(async () => (await `+statsJS+`).every((s) =>
		s.pair && s.pair.state === 'succeeded'))()`, 10*time.Second)
	for _, s := range p.stats() {
		if s.Pair == nil || s.Pair.State != "succeeded" || s.Pair.Local == nil || s.Pair.Remote == nil {
			p.tb.Errorf("%s: peer %s has no selected candidate pair that succeeded: %+v", p.person, s.Peer, s.Pair)
			continue
		}
		p.logf("peer %s: selected pair local %v, remote %v, rtt %.1f ms; %d frames decoded (%d px wide), %d audio packets",
			s.Peer, s.Pair.Local, s.Pair.Remote, s.Pair.RTTMs, s.FramesDecoded, s.FrameWidth, s.AudioPackets)
		if s.Pair.Local.Type == "relay" || s.Pair.Remote.Type == "relay" {
			p.tb.Errorf("%s: a relayed pair on a host where the browsers can reach each other directly", p.person)
		}
	}
}

// chat sends text from one page's chat form and waits for it in the other's #chat-log.
func chat(from, to ui, text string) {
	from.waitFor("the chat channel open", `window.bedside.call.chatOpen()`)
	from.typeInto("#chat-input", text)
	from.click("#chat-send")
	from.waitFor("the input cleared after sending", `document.getElementById('chat-input').value === ''`)
	to.waitFor(fmt.Sprintf("the chat message %q", text), fmt.Sprintf(`[...document.querySelectorAll('#chat-log li.chat-other')].some((li) =>
		li.querySelector('.chat-text').textContent === %q)`, text))
}

// TestOneToOneVisit is the whole 1:1 visit through two real browsers: sign in, create a
// visit, the patient's device check and waiting room, admission, media both ways, chat both
// ways, and the end.
func TestOneToOneVisit(t *testing.T) {
	r := newRig(t)
	r.signIn()
	r.createVisit("Ada Lovelace")
	r.patientJoins("Ada")
	r.admit("Ada")
	admitted := time.Now()

	waitInCall(r.patient)
	waitInCall(r.clinician)
	t.Logf("admit click to media flowing both ways, as seen by polling: %v", time.Since(admitted).Round(time.Millisecond))
	r.patient.waitFor("the call stage", visible("stage-call"))
	r.clinician.waitFor("the patient's name on their video", remoteNamed("Ada"))
	r.patient.waitFor("the clinician's name on their video", remoteNamed("Dr Rivera"))
	r.clinician.waitFor("#waiting empty after admission", `document.querySelectorAll('#waiting li').length === 0`)
	checkCandidatePair(r.clinician)
	checkCandidatePair(r.patient)
	if v := visitState(t, r.srv, r.visitID); v != store.VisitInCall {
		t.Errorf("visit state in the call: %s", v)
	}

	chat(r.clinician, r.patient, "Hello Ada, can you hear me?")
	chat(r.patient, r.clinician, "Yes, loud and clear.")

	// Every frame is encrypted end to end (SFrame in the browsers' workers), with keys the
	// two pages exchanged through the server wrapped; both show the same safety code.
	checkE2EE(t, map[string]*page{"clinician": r.clinician, "patient": r.patient},
		map[string]string{"clinician": mustEval[string](r.clinician, `window.bedside.call.selfId`), "patient": mustEval[string](r.patient, `window.bedside.call.selfId`)})

	// The clinician's side (impolite: the one that restarts ICE, decision 65) restarts ICE:
	// the same peer connections carry on with new ICE credentials, and frames keep coming.
	for _, p := range []*page{r.clinician, r.patient} {
		mustEval[chromedp.Void](p, tagConnectionJS)
	}
	mustEval[chromedp.Void](r.clinician, `(() => { window.__bedsideTestPC.restartIce(); })()`)
	for _, p := range []*page{r.clinician, r.patient} {
		p.waitFor("ICE restarted on the same connection, frames still decoded", sameConnectionMovedOnJS(true))
	}

	// The patient's WebSocket drops: signalling reconnects with the same session, the call
	// keeps its peer connection and its media meanwhile.
	for _, p := range []*page{r.clinician, r.patient} {
		mustEval[chromedp.Void](p, tagConnectionJS)
	}
	mustEval[chromedp.Void](r.patient, `(() => { window.__bedsideOldWS = window.bedside.call.signalling.ws; window.__bedsideOldWS.close(); })()`)
	r.patient.waitFor("signalling open again on a new WebSocket", `(() => { const s = window.bedside.call.signalling;
		return s.state === 'open' && s.ws && s.ws !== window.__bedsideOldWS; })()`)
	for _, p := range []*page{r.clinician, r.patient} {
		p.waitFor("the same peer connection still decoding frames", sameConnectionMovedOnJS(false))
	}
	chat(r.patient, r.clinician, "Still here after the reconnect.")

	// The clinician ends the visit (and says OK to the confirmation).
	r.clinician.click("#end-visit")
	r.clinician.waitFor("#ended shown", visible("ended")+` &&
		document.getElementById('call-status').dataset.state === 'ended'`)
	r.patient.waitFor("#stage-ended shown", visible("stage-ended")+` && `+visible("ended"))
	for _, p := range []*page{r.clinician, r.patient} {
		p.waitFor("camera and microphone released", `window.bedside.call.localStream.getTracks().every((t) => t.readyState === 'ended')`)
	}
	waitVisitState(t, r.srv, r.visitID, store.VisitEnded)
	r.clinician.assertNoExceptions()
	r.patient.assertNoExceptions()
}

// tagConnectionJS remembers the page's only peer connection, its remote ICE username
// fragment and its decoded frames, for sameConnectionMovedOnJS.
const tagConnectionJS = `(async () => {
	const pcs = [...window.bedside.call.pcs.values()];
	if (pcs.length !== 1) throw new Error('expected one peer connection, have ' + pcs.length);
	const pc = pcs[0];
	window.__bedsideTestPC = pc;
	window.__bedsideTestUfrag = /a=ice-ufrag:(\S+)/.exec(pc.remoteDescription.sdp)[1];
	let frames = 0;
	(await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0; });
	window.__bedsideTestFrames = frames;
})()`

// sameConnectionMovedOnJS is true when the page still has the tagged peer connection
// (connected, stable, decoding 30 more frames) and, if iceRestarted, its remote ICE
// credentials changed.
func sameConnectionMovedOnJS(iceRestarted bool) string {
	return fmt.Sprintf(`(async () => {
	const pcs = [...window.bedside.call.pcs.values()];
	if (pcs.length !== 1 || pcs[0] !== window.__bedsideTestPC) throw new Error('the peer connection was replaced');
	const pc = pcs[0];
	if (pc.connectionState !== 'connected' || pc.signalingState !== 'stable') return false;
	const ufrag = /a=ice-ufrag:(\S+)/.exec(pc.remoteDescription.sdp)[1];
	if (%t && ufrag === window.__bedsideTestUfrag) return false;
	let frames = 0;
	(await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0; });
	return frames > window.__bedsideTestFrames + 30;
})()`, iceRestarted)
}

// countWaitingAddedJS counts, in window.__waitingAdded, every entry that appears in the
// clinician's waiting list from now on.
const countWaitingAddedJS = `(() => {
	window.__waitingAdded = 0;
	new MutationObserver((records) => {
		for (const m of records) for (const n of m.addedNodes) if (n.nodeName === 'LI') window.__waitingAdded++;
	}).observe(document.getElementById('waiting'), {childList: true});
	return null;
})()`

// TestPatientReloadRejoins: a patient in the call reloads the page and is back in the call
// without a new admission; frames flow again both ways.
func TestPatientReloadRejoins(t *testing.T) {
	r := newRig(t)
	r.signIn()
	r.createVisit("Grace Hopper")
	r.patientJoins("Grace")
	r.admit("Grace")
	waitInCall(r.patient)
	waitInCall(r.clinician)

	// From now on, count every entry that appears in the clinician's waiting list.
	mustEval[any](r.clinician, countWaitingAddedJS)
	r.clinician.markConnectionsOld()

	start := time.Now()
	r.patient.step("reload the patient's page", chromedp.Reload())
	r.patient.waitFor("the call stage after the reload, without the device check", visible("stage-call"))
	dp := waitInCall(r.patient)
	r.clinician.waitFor("a new peer connection decoding video and receiving audio", mediaFlowingJS)
	r.clinician.waitFor("#call-status in_call", `document.getElementById('call-status').dataset.state === 'in_call'`)
	r.clinician.waitFor("the patient's video playing again", remoteVideoPlayingJS)
	t.Logf("reload to media flowing both ways: %v (patient decoding after %v of polling)", time.Since(start), dp)

	if n := mustEval[int](r.clinician, `window.__waitingAdded`); n != 0 {
		t.Errorf("the patient appeared %d times in the clinician's waiting list after the reload", n)
	}
	if w := r.srv.Visits().Waiting(r.visitID); len(w) != 0 {
		t.Errorf("the server has people waiting after the reload: %+v", w)
	}
	// The clinician still has exactly one connection: to the same participant.
	st := r.clinician.stats()
	if len(st) != 1 || st[0].Peer != r.patientID || !st[0].Current {
		t.Errorf("clinician's connections after the reload: %+v (patient %s)", st, r.patientID)
	}
	checkCandidatePair(r.patient)
	checkCandidatePair(r.clinician)
	r.clinician.assertNoExceptions()
	r.patient.assertNoExceptions()
}

func visitState(t testing.TB, srv *apptest.Server, id string) store.VisitState {
	t.Helper()
	v, err := srv.Store().VisitByID(context.Background(), id)
	if err != nil {
		t.Fatalf("visit %s: %v", id, err)
	}
	return v.State
}

func waitVisitState(t testing.TB, srv *apptest.Server, id string, want store.VisitState) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := visitState(t, srv, id)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("visit %s: state %s, want %s", id, got, want)
		}
		time.Sleep(pollEvery)
	}
}

// TestClinicianRemovesPatient: the clinician removes the patient from the call with the
// tile's Remove button; the patient's page says so and stops, and reloading the link does
// not bring the same participant back in.
func TestClinicianRemovesPatient(t *testing.T) {
	r := newRig(t)
	r.signIn()
	r.createVisit("Ada Lovelace")
	r.patientJoins("Ada")
	r.admit("Ada")
	waitInCall(r.patient)
	waitInCall(r.clinician)

	r.clinician.click(fmt.Sprintf(`#remotes .remove-participant[data-peer-id=%q]`, r.patientID))
	r.patient.waitFor("the ended stage saying the patient was removed", visible("stage-ended")+` &&
		document.getElementById('ended').textContent.includes('removed')`)
	r.patient.waitFor("camera and microphone released", `!document.querySelector('video')?.srcObject ||
		[...document.querySelectorAll('video')].every((v) => !v.srcObject || v.srcObject.getTracks().every((t) => t.readyState === 'ended'))`)
	r.clinician.waitFor("the patient's tile gone", `!document.querySelector('#remotes video[data-peer-id]')`)
	p, err := r.srv.Store().ParticipantByID(context.Background(), r.patientID)
	if err != nil || p.RemovedAt == nil {
		t.Fatalf("participant after removal: %+v, %v", p, err)
	}
	waitVisitState(t, r.srv, r.visitID, store.VisitScheduled)

	// Reloading the link starts over as a new person in the waiting room, not as the
	// removed participant.
	r.patient.navigate(r.patientURL)
	r.patient.waitFor("the device check again", visible("stage-check"))
	r.clinician.assertNoExceptions()
	r.patient.assertNoExceptions()
}
