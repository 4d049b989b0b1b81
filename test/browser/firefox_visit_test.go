//go:build browser

package browser

import (
	"fmt"
	"slices"
	"testing"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/store"
)

// TestFirefoxClinician: the clinician on Firefox (Debian's Firefox ESR) and the patient on
// Chromium, on this host's loopback. The clinician signs in, creates the visit in the
// console, opens its page and admits the patient from the waiting room; both decode each
// other's video and receive each other's audio, every frame encrypted end to end (the same
// keys and safety code on both pages; both send VP8), chat goes both ways, the patient's
// shared screen reaches the clinician, the clinician's ICE restart and lost WebSocket keep
// the call, and when the clinician ends the visit (Firefox answering the confirmation) the
// patient is told and both release the camera and microphone. Headless Firefox has no
// screen to share (getDisplayMedia: NotFoundError).
func TestFirefoxClinician(t *testing.T) {
	srv := apptest.Start(t, apptest.Options{})
	srv.AddUser(t, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	c := newFirefox(t, "clinician", nil, nil, nil)
	r := &rig{t: t, srv: srv, patient: newPage(t, "patient")}

	signIn(c, srv)
	r.visitID, r.patientURL = createVisit(t, c, srv, "Ada Lovelace")
	r.patientJoins("Ada")
	patientID := admit(c, "Ada")

	waitInCall(r.patient)
	c.waitFor("video frames decoded and audio packets received", mediaFlowingJS)
	c.waitFor("a remote video playing in #remotes", remoteVideoPlayingJS)
	c.waitFor("the patient's name on their video", remoteNamed("Ada"))
	r.patient.waitFor("the clinician's name on their video", remoteNamed("Dr Rivera"))
	c.waitFor("#waiting empty after admission", `document.querySelectorAll('#waiting li').length === 0`)
	if v := visitState(t, srv, r.visitID); v != store.VisitInCall {
		t.Errorf("visit state in the call: %s", v)
	}

	checkE2EEFirefox(t, c, r.patient)
	// Both send their camera in VP8 (the codec whose frame tag the encryption leaves clear),
	// Firefox's offer having listed the others after it.
	if got := ffMust[[]string](c, sentVideoCodecsJS); len(got) == 0 || slices.ContainsFunc(got, func(m string) bool { return m != "video/VP8" }) {
		t.Errorf("Firefox sends its video in %v, want VP8", got)
	}
	if got := mustEval[[]string](r.patient, sentVideoCodecsJS); len(got) == 0 || slices.ContainsFunc(got, func(m string) bool { return m != "video/VP8" }) {
		t.Errorf("Chromium sends its video in %v, want VP8", got)
	}
	chat(c, r.patient, "Hello Ada, can you hear me?")
	chat(r.patient, c, "Yes, loud and clear.")

	// The patient shares a screen (a renegotiation Chromium offers and Firefox answers): the
	// clinician sees it as a tile of its own beside the camera, until the sharing stops.
	r.patient.click("#share-screen")
	c.waitFor("the patient's screen tile presenting new frames", tileAdvancesJS(patientID, "screen", "sharing"))
	c.waitFor("the patient's camera tile still presenting new frames", tileAdvancesJS(patientID, "camera", "sharing"))
	r.patient.click("#share-screen")
	c.waitFor("the patient's screen tile gone", fmt.Sprintf(`!document.querySelector('#remotes video[data-peer-id=%q][data-source="screen"]')`, patientID))

	// The clinician's Firefox (the impolite side, decision 65) restarts ICE, then loses its
	// WebSocket: the same peer connection carries on with new ICE credentials, signalling
	// reconnects with the same session, and frames keep coming both ways throughout.
	ffMust[any](c, tagConnectionJS)
	mustEval[any](r.patient, tagConnectionJS)
	ffMust[any](c, `(() => { window.__bedsideTestPC.restartIce(); })()`)
	c.waitFor("ICE restarted on the same connection, frames still decoded", sameConnectionMovedOnJS(true))
	r.patient.waitFor("ICE restarted on the same connection, frames still decoded", sameConnectionMovedOnJS(true))
	ffMust[any](c, tagConnectionJS)
	mustEval[any](r.patient, tagConnectionJS)
	ffMust[any](c, `(() => { window.__bedsideOldWS = window.bedside.call.signalling.ws; window.__bedsideOldWS.close(); })()`)
	c.waitFor("signalling open again on a new WebSocket", `(() => { const s = window.bedside.call.signalling;
		return s.state === 'open' && s.ws && s.ws !== window.__bedsideOldWS; })()`)
	c.waitFor("the same peer connection still decoding frames", sameConnectionMovedOnJS(false))
	r.patient.waitFor("the same peer connection still decoding frames", sameConnectionMovedOnJS(false))
	chat(r.patient, c, "Still here after the reconnect.")

	c.click("#end-visit")
	c.waitFor("#ended shown", visible("ended")+` && document.getElementById('call-status').dataset.state === 'ended'`)
	r.patient.waitFor("#stage-ended shown", visible("stage-ended")+` && `+visible("ended"))
	c.waitFor("camera and microphone released", `window.bedside.call.localStream.getTracks().every((t) => t.readyState === 'ended')`)
	r.patient.waitFor("camera and microphone released", `window.bedside.call.localStream.getTracks().every((t) => t.readyState === 'ended')`)
	waitVisitState(t, srv, r.visitID, store.VisitEnded)
	c.assertNoErrors()
	r.patient.assertNoExceptions()
	r.patient.assertNoFailedSignals()
}

// TestFirefoxPatientReload: a patient on Firefox, in the call with the clinician (Chromium),
// reloads the page: they are back in the call without the device check or a new
// admission, on a new peer connection, both decoding each other's video and receiving
// each other's audio, with the new keys of the reloaded page (the same safety code on
// both, each holding the other's current key).
func TestFirefoxPatientReload(t *testing.T) {
	srv := apptest.Start(t, apptest.Options{})
	srv.AddUser(t, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	r := &rig{t: t, srv: srv, clinician: newPage(t, "clinician")}
	ff := newFirefox(t, "patient", nil, nil, nil)
	r.signIn()
	r.createVisit("Ada Lovelace")
	firefoxPatientJoins(ff, r)
	waitInCall(r.clinician)
	ff.waitFor("video frames decoded and audio packets received", mediaFlowingJS)
	before := ffMust[*e2eeStats](ff, e2eeStatsJS)

	// From now on, count every entry that appears in the clinician's waiting list.
	mustEval[any](r.clinician, countWaitingAddedJS)
	r.clinician.markConnectionsOld()

	ff.reload()
	ff.waitFor("the call stage after the reload, without the device check", visible("stage-call"))
	ff.waitFor("video frames decoded and audio packets received again", mediaFlowingJS)
	r.clinician.waitFor("a new peer connection decoding video and receiving audio", mediaFlowingJS)
	r.clinician.waitFor("the patient's video playing again", remoteVideoPlayingJS)
	if n := mustEval[int](r.clinician, `window.__waitingAdded`); n != 0 {
		t.Errorf("the patient appeared %d times in the clinician's waiting list after the reload", n)
	}
	if w := srv.Visits().Waiting(r.visitID); len(w) != 0 {
		t.Errorf("the server has people waiting after the reload: %+v", w)
	}
	st := r.clinician.stats()
	if len(st) != 1 || st[0].Peer != r.patientID || !st[0].Current {
		t.Errorf("clinician's connections after the reload: %+v (patient %s)", st, r.patientID)
	}
	checkE2EEFirefox(t, ff, r.clinician)
	if after := ffMust[*e2eeStats](ff, e2eeStatsJS); after.SendKid == before.SendKid {
		t.Errorf("the reloaded page sends with the key of the page before it (%d)", after.SendKid)
	}
	ff.assertNoErrors()
	r.clinician.assertNoExceptions()
}

// sentVideoCodecsJS is the codec of each video stream the page's connections send.
const sentVideoCodecsJS = `(async () => {
	const out = [];
	for (const pc of window.bedside.call.pcs.values()) {
		const stats = await pc.getStats();
		stats.forEach((s) => {
			if (s.type === 'outbound-rtp' && s.kind === 'video' && s.packetsSent > 0) out.push(stats.get(s.codecId)?.mimeType ?? 'none');
		});
	}
	return out;
})()`
