//go:build browser

package browser

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/bedside/bedside/internal/app/apptest"
	"github.com/bedside/bedside/internal/store"
	"github.com/bedside/bedside/internal/visit"
)

// watchFirstFrameJS makes the page note the first video frame of every remote video element
// in #remotes, now and later: requestVideoFrameCallback gives, for each frame, the time at
// which the decoded frame was handed to the compositor (metadata.presentationTime, on the
// page's performance clock) and, for WebRTC, when its last packet arrived (receiveTime).
// The observer is in place before the admit click, so no element or frame can be missed.
// Times are epoch milliseconds (performance.timeOrigin + the performance time), so they
// compare across the two browsers of one machine.
const watchFirstFrameJS = `(() => {
	window.__firstFrame = null;
	const root = document.getElementById('remotes');
	const watch = (v) => {
		if (v.__watched) return;
		v.__watched = true;
		v.requestVideoFrameCallback((now, md) => {
			if (window.__firstFrame) return;
			window.__firstFrame = {
				presented: performance.timeOrigin + md.presentationTime,
				received: md.receiveTime ? performance.timeOrigin + md.receiveTime : 0,
				callback: performance.timeOrigin + now,
				width: md.width,
			};
		});
	};
	root.querySelectorAll('video').forEach(watch);
	new MutationObserver(() => root.querySelectorAll('video').forEach(watch))
		.observe(root, {childList: true, subtree: true});
	return null;
})()`

// watchAdmitClickJS notes when the admit button is clicked, in a capturing listener that
// runs before the page's own handler sends the admit message.
const watchAdmitClickJS = `(() => {
	window.__admitAt = 0;
	document.addEventListener('click', (e) => {
		if (!window.__admitAt && e.target instanceof Element && e.target.closest('button.admit')) {
			window.__admitAt = performance.timeOrigin + performance.now();
		}
	}, true);
	return null;
})()`

type firstFrame struct {
	Presented float64 `json:"presented"`
	Received  float64 `json:"received"`
	Callback  float64 `json:"callback"`
	Width     int     `json:"width"`
}

// floorJS is the floor: two peer connections in one page, connected over loopback, camera
// and microphone already open, timed from createOffer to the first remote video frame
// presented, measured the same way as the visit (requestVideoFrameCallback).
const floorJS = `(async () => {
	const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
	const a = new RTCPeerConnection(), b = new RTCPeerConnection();
	a.onicecandidate = (e) => { if (e.candidate) b.addIceCandidate(e.candidate); };
	b.onicecandidate = (e) => { if (e.candidate) a.addIceCandidate(e.candidate); };
	const video = document.createElement('video');
	video.muted = true;
	video.autoplay = true;
	video.playsInline = true;
	document.body.append(video);
	const first = new Promise((resolve) => {
		b.ontrack = (e) => {
			if (e.track.kind !== 'video') return;
			video.srcObject = new MediaStream([e.track]);
			video.requestVideoFrameCallback((now, md) => resolve(performance.timeOrigin + md.presentationTime));
			video.play().catch(() => {});
		};
	});
	for (const t of stream.getTracks()) a.addTrack(t, stream);
	const t0 = performance.timeOrigin + performance.now();
	await a.setLocalDescription(await a.createOffer());
	await b.setRemoteDescription(a.localDescription);
	await b.setLocalDescription(await b.createAnswer());
	await a.setRemoteDescription(b.localDescription);
	const t1 = await Promise.race([first, new Promise((r) => setTimeout(() => r(0), 15000))]);
	a.close();
	b.close();
	for (const t of stream.getTracks()) t.stop();
	video.remove();
	return t1 ? t1 - t0 : -1;
})()`

// BenchmarkAdmitToFirstFrame times a 1:1 visit from the clinician's click on "Admit" to the
// first remote video frame decoded and presented in both browsers. Each iteration is a new
// visit in the same two browsers; the patient's device check and waiting room are not timed.
// Next to it, in the same run, the floor: two peer connections inside one page.
//
//	go test -tags browser -run '^$' -bench AdmitToFirstFrame -benchtime 20x ./test/browser
func BenchmarkAdmitToFirstFrame(b *testing.B) {
	srv := apptest.Start(b, apptest.Options{})
	doc := srv.AddUser(b, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	r := &rig{t: b, srv: srv, clinician: newPage(b, "clinician"), patient: newPage(b, "patient")}
	r.signIn()
	ctx := context.Background()

	var visitMs, floorMs, patientMs, clinicianMs []float64
	b.ResetTimer()
	for i := range b.N {
		// Not timed: a new visit, the clinician on its page, the patient in the waiting room.
		v, token, err := srv.Visits().Create(ctx, visit.NewVisit{ClinicianID: doc.ID, PatientName: fmt.Sprintf("Patient %d", i)})
		if err != nil {
			b.Fatal(err)
		}
		r.visitID, r.patientURL = v.ID, srv.PublicURL()+"/v/"+token
		r.clinician.navigate(srv.URL() + "/console/visits/" + v.ID)
		r.clinician.waitFor("the visit page, signalling open", `document.getElementById('call-status').dataset.state === 'waiting'`)
		r.patient.navigate(r.patientURL)
		r.patient.waitFor("the preview and #join", `!document.getElementById('join').disabled &&
			document.getElementById('preview').videoWidth > 0`)
		r.patient.typeInto("#patient-name-input", "Ada")
		r.patient.click("#join")
		r.patient.waitFor("the waiting room", `document.getElementById('call-status').dataset.state === 'waiting'`)
		li := `#waiting li[data-participant-id] button.admit`
		r.clinician.waitFor("the patient in #waiting", `!!document.querySelector('`+li+`')`)
		mustEval[any](r.clinician, watchFirstFrameJS)
		mustEval[any](r.clinician, watchAdmitClickJS)
		mustEval[any](r.patient, watchFirstFrameJS)

		// Timed, inside the pages: admit click to the first remote frame in both.
		r.clinician.click(li)
		r.clinician.waitForWithin("the first remote frame", `!!window.__firstFrame`, waitTimeout)
		r.patient.waitForWithin("the first remote frame", `!!window.__firstFrame`, waitTimeout)
		t0 := mustEval[float64](r.clinician, `window.__admitAt`)
		fc := mustEval[firstFrame](r.clinician, `window.__firstFrame`)
		fp := mustEval[firstFrame](r.patient, `window.__firstFrame`)
		if t0 == 0 {
			b.Fatal("the admit click was not seen by the page")
		}
		d := math.Max(fc.Presented, fp.Presented) - t0
		visitMs = append(visitMs, d)
		clinicianMs = append(clinicianMs, fc.Presented-t0)
		patientMs = append(patientMs, fp.Presented-t0)

		// Not timed: end the visit, then the floor in the clinician's browser.
		if _, err := srv.Visits().End(ctx, v.ID); err != nil {
			b.Fatal(err)
		}
		r.clinician.waitFor("the visit ended", `document.getElementById('call-status').dataset.state === 'ended'`)
		r.clinician.navigate(srv.URL() + "/bench-floor") // a page on the same secure origin, no script
		f := mustEval[float64](r.clinician, floorJS)
		if f < 0 {
			b.Fatal("floor: no remote frame within 15 s")
		}
		floorMs = append(floorMs, f)
		if testing.Verbose() {
			b.Logf("run %2d: admit to first frame %6.1f ms (clinician %6.1f, patient %6.1f; first packet at %6.1f / %6.1f); floor %6.1f ms",
				i+1, d, fc.Presented-t0, fp.Presented-t0, fc.Received-t0, fp.Received-t0, f)
		}
	}
	b.StopTimer()

	b.ReportMetric(0, "ns/op") // wall time per iteration is mostly set-up; the metrics below say it
	b.ReportMetric(percentile(visitMs, 50), "p50-ms")
	b.ReportMetric(percentile(visitMs, 90), "p90-ms")
	b.ReportMetric(percentile(visitMs, 100), "max-ms")
	b.ReportMetric(percentile(floorMs, 50), "floor-p50-ms")
	b.ReportMetric(percentile(visitMs, 50)/percentile(floorMs, 50), "p50/floor")
	b.Logf("n=%d: admit to first frame in both p50 %.1f p90 %.1f max %.1f ms (clinician p50 %.1f, patient p50 %.1f); floor p50 %.1f p90 %.1f max %.1f ms",
		len(visitMs), percentile(visitMs, 50), percentile(visitMs, 90), percentile(visitMs, 100),
		percentile(clinicianMs, 50), percentile(patientMs, 50),
		percentile(floorMs, 50), percentile(floorMs, 90), percentile(floorMs, 100))
}

// percentile is the nearest-rank percentile (p in (0, 100]) of xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
