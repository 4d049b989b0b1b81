//go:build browser

package browser

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

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
		v, li := r.benchVisit(doc.ID, store.PolicyAuto, fmt.Sprintf("Patient %d", i))
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

// benchVisit makes a new visit of the given policy and brings both browsers to the point
// where the clinician can admit the patient: the clinician on the visit's page, the patient
// through the device check into the waiting room. It returns the visit and the selector of
// the admit button.
func (r *rig) benchVisit(clinicianID string, policy store.MediaPolicy, patientName string) (store.Visit, string) {
	v, token, err := r.srv.Visits().Create(context.Background(), visit.NewVisit{ClinicianID: clinicianID, PatientName: patientName, Policy: policy})
	if err != nil {
		r.t.Fatal(err)
	}
	r.visitID, r.patientURL = v.ID, r.srv.PublicURL()+"/v/"+token
	r.clinician.navigate(r.srv.URL() + "/console/visits/" + v.ID)
	r.clinician.waitFor("the visit page, signalling open", `document.getElementById('call-status').dataset.state === 'waiting'`)
	r.patient.navigate(r.patientURL)
	r.patient.waitFor("the preview and #join", `!document.getElementById('join').disabled &&
		document.getElementById('preview').videoWidth > 0`)
	r.patient.typeInto("#patient-name-input", "Ada")
	r.patient.click("#join")
	r.patient.waitFor("the waiting room", `document.getElementById('call-status').dataset.state === 'waiting'`)
	li := `#waiting li[data-participant-id] button.admit`
	r.clinician.waitFor("the patient in #waiting", `!!document.querySelector('`+li+`')`)
	return v, li
}

// ownPixels says which frames read (latency, width, time read from the pixels, RTP
// timestamp) showed their own pixels. The callback draws what the element shows when it
// runs, which can already be the next frame; then the time read from the pixels is a frame
// later than the frame's RTP timestamp says. Between two frames that are their own, the
// times read and the RTP timestamps (90 kHz, the capture clock) move on alike; a frame is
// kept when it agrees so with both its neighbours within 5 ms (two frames in a row that
// show their successors' pixels agree with each other, not with the frames around them; a
// simulcast layer switch, which moves the RTP timestamps' offset, costs the two frames
// beside it). Without RTP timestamps every frame is kept.
func ownPixels(frames [][4]float64) []bool {
	own := make([]bool, len(frames))
	if len(frames) < 2 || frames[0][3] == 0 {
		for i := range own {
			own[i] = true
		}
		return own
	}
	// off[i]: the time read minus the RTP time, unwrapped, relative to the first frame's.
	off := make([]float64, len(frames))
	for i := 1; i < len(frames); i++ {
		dv := math.Mod(frames[i][2]-frames[i-1][2]+timeCodeMod, timeCodeMod)
		if dv > timeCodeMod/2 {
			dv -= timeCodeMod
		}
		dr := float64(int32(uint32(int64(frames[i][3]))-uint32(int64(frames[i-1][3])))) / 90
		off[i] = off[i-1] + dv - dr
	}
	for i := range frames {
		own[i] = (i == 0 || math.Abs(off[i]-off[i-1]) <= 5) && (i+1 == len(frames) || math.Abs(off[i+1]-off[i]) <= 5)
	}
	return own
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

// timeCodeJS is the time code both sides use: 24 cells in a 6 x 4 grid, bit i in cell i
// (row-major), 20 bits of the epoch millisecond and, above them, a 4-bit check of those.
// timeCodeMod is its codeMod, for the Go side.
const timeCodeMod = 1 << 20

const timeCodeJS = `
	const codeMod = 1048576, codeCols = 6, codeRows = 4, codeCells = 24;
	const codeCheck = (v) => (v ^ (v >>> 4) ^ (v >>> 8) ^ (v >>> 12) ^ (v >>> 16)) & 15;`

// canvasCameraJS replaces the camera the page opens with a canvas that shows, in every
// frame, the epoch millisecond at which it was drawn (modulo 2^20, with a 4-bit check) as
// 24 black or white cells in a 6 x 4 grid: large enough to survive VP8 and the quarter-size
// simulcast layer. Each frame is drawn and handed to the track at once (captureStream(0)
// and requestFrame), every 33 ms, so its time is its capture time. The microphone stays the
// fake device's. Installed before the page's own scripts run.
const canvasCameraJS = `(() => {` + timeCodeJS + `
	const md = navigator.mediaDevices;
	if (!md || md.__canvasCamera) return;
	md.__canvasCamera = true;
	const open = md.getUserMedia.bind(md);
	md.getUserMedia = async (c) => {
		const s = await open(c);
		if (!c || !c.video) return s;
		for (const t of s.getVideoTracks()) t.stop();
		const W = 640, H = 480;
		const cv = document.createElement('canvas');
		cv.width = W;
		cv.height = H;
		const g = cv.getContext('2d');
		const track = cv.captureStream(0).getVideoTracks()[0];
		const draw = () => {
			if (track.readyState === 'ended') { clearInterval(timer); return; }
			const v = Math.round(performance.timeOrigin + performance.now()) % codeMod;
			const bits = v | (codeCheck(v) << 20);
			for (let i = 0; i < codeCells; i++) {
				g.fillStyle = (bits >>> i) & 1 ? '#fff' : '#000';
				g.fillRect((i % codeCols) * W / codeCols, Math.floor(i / codeCols) * H / codeRows, W / codeCols, H / codeRows);
			}
			track.requestFrame();
		};
		const timer = setInterval(draw, 33);
		draw();
		return new MediaStream([...s.getAudioTracks(), track]);
	};
})()`

// watchLatencyJS makes the page read the time out of every remote video frame presented
// (requestVideoFrameCallback; the frame drawn into a canvas at its decoded size, each
// cell's centre read) and note, for each frame whose check holds, the time from its capture
// in the other browser to its presentation here (metadata.presentationTime: handed to the
// compositor), its width, the time read and its RTP timestamp (for ownPixels, which finds
// the frames whose pixels were a later frame's). Frames whose cells do not read back are
// counted apart.
const watchLatencyJS = `(() => {` + timeCodeJS + `
	window.__lat = [];
	window.__latBad = 0;
	const cv = document.createElement('canvas');
	const g = cv.getContext('2d', {willReadFrequently: true});
	const root = document.getElementById('remotes');
	const watch = (v) => {
		if (v.__latWatched) return;
		v.__latWatched = true;
		const frame = (now, md) => {
			const w = md.width, h = md.height;
			if (w > 0 && h > 0) {
				if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
				g.drawImage(v, 0, 0, w, h);
				let bits = 0;
				for (let i = 0; i < codeCells; i++) {
					const x = Math.floor(((i % codeCols) + 0.5) * w / codeCols), y = Math.floor((Math.floor(i / codeCols) + 0.5) * h / codeRows);
					const d = g.getImageData(x - 1, y - 1, 3, 3).data;
					let sum = 0;
					for (let k = 0; k < d.length; k += 4) sum += d[k];
					if (sum / 9 > 128) bits |= 1 << i;
				}
				const val = bits & (codeMod - 1);
				if (codeCheck(val) === bits >>> 20) {
					const at = performance.timeOrigin + md.presentationTime;
					// Modulo 2^20 ms (17 minutes); a frame read as up to 1 s early is a
					// negative latency, kept as such.
					let lat = ((at - val) % codeMod + codeMod) % codeMod;
					if (lat > codeMod - 1000) lat -= codeMod;
					window.__lat.push([lat, w, val, md.rtpTimestamp || 0]);
				} else {
					window.__latBad++;
				}
			}
			v.requestVideoFrameCallback(frame);
		};
		v.requestVideoFrameCallback(frame);
	};
	root.querySelectorAll('video').forEach(watch);
	new MutationObserver(() => root.querySelectorAll('video').forEach(watch))
		.observe(root, {childList: true, subtree: true});
	return null;
})()`

// BenchmarkCaptureToPresentation measures video latency in a visit, the way glass-to-glass
// latency is measured without a camera and a screen: each browser's camera is a canvas
// that shows its capture time (canvasCameraJS), and the other browser reads that time back
// out of every frame it presents (watchLatencyJS). The figure is capture in one browser
// (the frame drawn and handed to the track) to presentation in the other (the decoded frame
// handed to the compositor): encoding, SRTP, packetisation, the network path (loopback;
// through the SFU or peer to peer), the receiver's jitter buffer and decoding. A real
// camera's exposure and readout and a real display's scan-out come on top. Both browsers
// run on one machine and one clock. Each iteration is a new visit of each
// policy, peer to peer (auto, two people) and through the SFU (policy sfu), measured for
// window after the first frame and warm-up.
//
//	go test -tags browser -run '^$' -bench CaptureToPresentation -benchtime 3x ./test/browser
func BenchmarkCaptureToPresentation(b *testing.B) {
	const warmup, window = 5 * time.Second, 10 * time.Second
	srv := apptest.Start(b, apptest.Options{})
	doc := srv.AddUser(b, clinicianEmail, "Dr Rivera", store.RoleClinician, clinicianPassword)
	r := &rig{t: b, srv: srv, clinician: newPage(b, "clinician"), patient: newPage(b, "patient")}
	for _, p := range []*page{r.clinician, r.patient} {
		if _, err := chromedp.Call(p.ctx, cdppage.AddScriptToEvaluateOnNewDocument,
			cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: canvasCameraJS}); err != nil {
			b.Fatal(err)
		}
	}
	r.signIn()
	ctx := context.Background()

	type sample struct{ ms, width float64 }
	lat := map[store.MediaPolicy][]sample{}
	bad, skipped := map[store.MediaPolicy]int{}, map[store.MediaPolicy]int{}
	policies := []store.MediaPolicy{store.PolicyAuto, store.PolicySFU}
	b.ResetTimer()
	for i := range b.N {
		for _, policy := range policies {
			v, li := r.benchVisit(doc.ID, policy, fmt.Sprintf("Patient %d", i))
			r.clinician.click(li)
			for _, p := range []*page{r.clinician, r.patient} {
				p.waitForWithin("a remote frame", `[...document.querySelectorAll('#remotes video')].some((v) => v.videoWidth > 0)`, waitTimeout)
			}
			time.Sleep(warmup)
			for _, p := range []*page{r.clinician, r.patient} {
				mustEval[any](p, watchLatencyJS)
			}
			time.Sleep(window)
			for _, p := range []*page{r.clinician, r.patient} {
				got := mustEval[[][4]float64](p, `window.__lat`)
				nbad := mustEval[int](p, `window.__latBad`)
				if len(got) < int(window.Seconds())*10 {
					b.Fatalf("%s, policy %s: %d frames read in %v (%d unreadable): the canvas camera's frames are not arriving",
						p.person, policy, len(got), window, nbad)
				}
				own := ownPixels(got)
				for i, s := range got {
					if own[i] {
						lat[policy] = append(lat[policy], sample{s[0], s[1]})
					} else {
						skipped[policy]++
					}
				}
				bad[policy] += nbad
			}
			if _, err := srv.Visits().End(ctx, v.ID); err != nil {
				b.Fatal(err)
			}
			r.clinician.waitFor("the visit ended", `document.getElementById('call-status').dataset.state === 'ended'`)
		}
	}
	b.StopTimer()

	b.ReportMetric(0, "ns/op")
	for _, policy := range policies {
		var ms, widths []float64
		for _, s := range lat[policy] {
			ms = append(ms, s.ms)
			widths = append(widths, s.width)
		}
		name := map[store.MediaPolicy]string{store.PolicyAuto: "p2p", store.PolicySFU: "sfu"}[policy]
		b.ReportMetric(percentile(ms, 50), name+"-p50-ms")
		b.ReportMetric(percentile(ms, 95), name+"-p95-ms")
		b.Logf("%s: %d frames measured (%d unreadable, %d left out: not their own pixels), capture to presentation min %.1f p50 %.1f p95 %.1f p99 %.1f max %.1f ms; frame width p50 %.0f (min %.0f)",
			name, len(ms), bad[policy], skipped[policy], percentile(ms, 0.001), percentile(ms, 50), percentile(ms, 95), percentile(ms, 99), percentile(ms, 100),
			percentile(widths, 50), percentile(widths, 1))
	}
}
