//go:build browser

package browser

import (
	"fmt"
	"testing"
	"time"
)

// TestP2PScreenShare: in a visit of two (peer to peer) the patient shares a screen and stops,
// then both share in the same instant, stop, and share again. Each time the other page shows
// the screen in a tile of its own, and both pages keep showing each other's camera. Sharing
// (and stopping) at once is a glare: both offer, the polite page (the patient's) rolls its
// offer back and answers. After a rolled-back ICE restart Chromium stops passing received
// video through the decryption (docs/design.md decision 65); this test shows that a
// rolled-back screen share does not, and logs how many rollbacks the run had.
func TestP2PScreenShare(t *testing.T) {
	r := newRig(t)
	startCall(r)
	ids := map[*page]string{
		r.clinician: mustEval[string](r.clinician, `window.bedside.call.selfId`),
		r.patient:   mustEval[string](r.patient, `window.bedside.call.selfId`),
	}
	other := map[*page]*page{r.clinician: r.patient, r.patient: r.clinician}
	both := []*page{r.clinician, r.patient}

	// tilesAdvance waits, on p, for the other's camera (and screen, if shown) to present 20
	// more frames than when the wait began; the key tells the phases apart.
	tilesAdvance := func(p *page, phase string, screen bool) {
		p.tb.Helper()
		sources := []string{"camera"}
		if screen {
			sources = append(sources, "screen")
		}
		for _, src := range sources {
			p.waitFor(fmt.Sprintf("%s: the other's %s tile presenting new frames", phase, src), tileAdvancesJS(ids[other[p]], src, phase))
		}
	}
	sharing := func(p *page, on bool) {
		p.tb.Helper()
		p.waitFor(fmt.Sprintf("the share button pressed=%t", on),
			fmt.Sprintf(`document.getElementById('share-screen').getAttribute('aria-pressed') === '%t'`, on))
	}
	noScreenTile := func(p *page, phase string) {
		p.tb.Helper()
		p.waitFor(phase+": the other's screen tile gone", fmt.Sprintf(
			`!document.querySelector('#remotes video[data-peer-id=%q][data-source="screen"]')`, ids[other[p]]))
	}

	// 1. The patient (the polite side of the connection) shares, and stops.
	r.patient.click("#share-screen")
	sharing(r.patient, true)
	tilesAdvance(r.clinician, "patient sharing", true)
	tilesAdvance(r.patient, "patient sharing", false)
	r.patient.click("#share-screen")
	sharing(r.patient, false)
	noScreenTile(r.clinician, "patient stopped")

	// 2. Both share in the same millisecond: each page has its screen already captured (the
	// capture's own delay varies), and both start at one instant of the host's clock.
	for _, p := range both {
		mustEval[bool](p, countRollbacksJS)
		mustEval[bool](p, captureScreenJS)
	}
	at := time.Now().Add(800 * time.Millisecond).UnixMilli()
	for _, p := range both {
		mustEval[bool](p, fmt.Sprintf(`(() => { setTimeout(() => window.bedside.call.startScreenShare(), %d - Date.now()); return true; })()`, at))
	}
	for _, p := range both {
		sharing(p, true)
	}
	for _, p := range both {
		tilesAdvance(p, "both sharing", true)
	}
	for _, p := range both {
		p.waitFor("the peer connection stable", `[...window.bedside.call.pcs.values()].every((pc) => pc.signalingState === 'stable')`)
	}

	// 3. Both stop at once; then the clinician shares again, and the patient.
	at = time.Now().Add(500 * time.Millisecond).UnixMilli()
	for _, p := range both {
		mustEval[bool](p, fmt.Sprintf(`(() => { setTimeout(() => window.bedside.call.stopScreenShare(), %d - Date.now()); return true; })()`, at))
	}
	for _, p := range both {
		sharing(p, false)
		noScreenTile(p, "both stopped")
	}
	for _, p := range both {
		tilesAdvance(p, "both stopped", false)
	}
	for i, p := range both {
		phase := fmt.Sprintf("sharing again (%d)", i)
		p.click("#share-screen")
		sharing(p, true)
		tilesAdvance(other[p], phase, true)
		p.click("#share-screen")
		sharing(p, false)
		noScreenTile(other[p], phase)
	}

	for _, p := range both {
		p.logf("offers rolled back after a glare: %d", mustEval[int](p, `window.__bedsideRollbacks`))
	}
	checkE2EE(t, map[string]*page{"clinician": r.clinician, "patient": r.patient},
		map[string]string{"clinician": ids[r.clinician], "patient": ids[r.patient]})
	for _, p := range both {
		n := mustEval[int](p, `[...window.bedside.call.pcs.values()].length`)
		if n != 1 {
			t.Errorf("%s: %d peer connections, want the one of the start", p.person, n)
		}
		p.assertNoFailedSignals()
		p.assertNoExceptions()
	}
}

// countRollbacksJS counts, in window.__bedsideRollbacks, the rollbacks the page's peer
// connection makes from now on.
const countRollbacksJS = `(() => {
	window.__bedsideRollbacks = 0;
	for (const pc of window.bedside.call.pcs.values()) {
		const set = pc.setLocalDescription.bind(pc);
		pc.setLocalDescription = (d) => {
			if (d && d.type === 'rollback') window.__bedsideRollbacks++;
			return set(d);
		};
	}
	return true;
})()`

// captureScreenJS captures the screen now and makes the page's next getDisplayMedia return
// that capture at once.
const captureScreenJS = `(async () => {
	const md = navigator.mediaDevices;
	if (!md.__bedsideRealGDM) md.__bedsideRealGDM = md.getDisplayMedia.bind(md);
	const stream = await md.__bedsideRealGDM({video: true, audio: false});
	md.getDisplayMedia = async () => { md.getDisplayMedia = md.__bedsideRealGDM; return stream; };
	return true;
})()`

// tileAdvancesJS is true once the tile of peer's source has presented 20 frames more than when
// it was first looked at in this phase (the same element; a new element starts again). The
// frames presented are counted with requestVideoFrameCallback: Firefox's
// getVideoPlaybackQuality counts none for a call's video.
func tileAdvancesJS(peer, source, phase string) string {
	return fmt.Sprintf(`(() => {
	const v = document.querySelector('#remotes video[data-peer-id=%q][data-source=%q]:not(.standby)');
	if (!v || v.paused || v.readyState < 2 || v.videoWidth === 0) return false;
	if (!v.__bedsidePresented) {
		v.__bedsidePresented = {n: 0};
		const count = () => { v.__bedsidePresented.n++; v.requestVideoFrameCallback(count); };
		v.requestVideoFrameCallback(count);
	}
	const n = v.__bedsidePresented.n;
	const marks = window.__bedsideAdvance ??= {};
	const k = %q;
	if (!marks[k] || marks[k].v !== v) { marks[k] = {v, n}; return false; }
	return n >= marks[k].n + 20;
})()`, peer, source, phase+"/"+peer+"/"+source)
}
