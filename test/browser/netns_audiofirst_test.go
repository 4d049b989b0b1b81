//go:build browser && netns

package browser

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// p2pAudioJS is what the page receives over its peer connection: audio packets received and
// lost, samples concealed and received, and video frames decoded.
const p2pAudioJS = `(async () => {
	const pc = [...window.bedside.call.pcs.values()][0];
	const o = {audio: 0, lost: 0, concealed: 0, samples: 0, frames: 0};
	if (!pc) return o;
	(await pc.getStats()).forEach((s) => {
		if (s.type === 'inbound-rtp' && s.kind === 'audio') {
			o.audio = s.packetsReceived || 0; o.lost = s.packetsLost || 0;
			o.concealed = s.concealedSamples || 0; o.samples = s.totalSamplesReceived || 0;
		}
		if (s.type === 'inbound-rtp' && s.kind === 'video') o.frames = s.framesDecoded || 0;
	});
	return o;
})()`

type p2pAudio struct {
	Audio     int `json:"audio"`
	Lost      int `json:"lost"`
	Concealed int `json:"concealed"`
	Samples   int `json:"samples"`
	Frames    int `json:"frames"`
}

// TestNetnsP2PAudioFirst: in a relayed 1:1 call the link to the patient narrows to 100
// kbit/s, enough for the clinician's audio alone but not for audio and the least video a
// browser sends (docs/design.md decision 66). The clinician's page pauses its video to the
// patient, both pages say so, and the patient's audio then arrives with next to no loss.
// When the link is open again the clinician's video comes back by itself.
//
// The patient's camera is off: only the link to the patient narrows, and the RTCP on the
// patient's own video (transport-wide feedback, receiver reports, NACKs: 10-30 kbit/s with
// their overheads, more the higher that video's rate) would come through it too, which
// with the audio (about 70 kbit/s) can fill it whatever the clinician's page does
// (2026-11-27: 5-8% of the audio lost in a run with the patient's camera on, the
// clinician's video paused; 0-1 packets in others). A link that weak one way only is the
// test's; decision 66 says what it leaves.
func TestNetnsP2PAudioFirst(t *testing.T) {
	n := newNetwork(t)
	r := netRig(t, n, "embedded")
	startCall(r)
	clinicianID := mustEval[string](r.clinician, `window.bedside.call.selfId`)
	tileStatus := fmt.Sprintf(`(document.querySelector('#remotes video[data-peer-id=%q]')?.closest('figure')?.querySelector('.tile-status')?.textContent ?? '')`, clinicianID)
	ownBadge := `(document.getElementById('local-video')?.closest('figure')?.querySelector('.tile-status')?.textContent ?? '')`

	r.patient.click("#camera")
	r.patient.waitFor("the patient's camera off", `window.bedside.call.cameraOff === true`)
	start := mustEval[p2pAudio](r.patient, p2pAudioJS)
	n.tbf(n.r, "toa", "100kbit", "16kb", "50ms")
	capped := time.Now()
	r.clinician.waitForWithin("its video to the patient paused", `window.bedside.call.videoPaused === true`, 30*time.Second)
	paused := time.Now()
	// The patient's browser may move to its TCP relay candidate on the narrow link (its UDP
	// pair's checks lost in the queue): say which pair it is on.
	t.Logf("selected pairs at the pause: the patient's %v, the clinician's %v", mustEval[any](r.patient, selectedPairJS), mustEval[any](r.clinician, selectedPairJS))
	at := mustEval[p2pAudio](r.patient, p2pAudioJS)
	rtxAtPause := mustEval[pubStats](r.clinician, p2pStatsJS).Retransmitted
	t.Logf("the clinician's video paused %v after the cap; until then %d audio packets arrived and %d were lost",
		paused.Sub(capped).Round(100*time.Millisecond), at.Audio-start.Audio, at.Lost-start.Lost)
	// The video already queued at the narrow link drains (slowly: the audio takes most of
	// the link); then 6 s of audio alone, up to 14 s after the pause (the first try to send
	// video again comes at 15 s). The pause took the clinician's video send stream away
	// (decision 66), so nothing answers the NACKs the patient still sends for video lost
	// before it: until 2026-11-28 a paused encoding went on sending those packets again,
	// up to 8 a second in the window, and audio was lost with them.
	time.Sleep(8*time.Second - time.Since(paused))
	a := mustEval[p2pAudio](r.patient, p2pAudioJS)
	sentA, qA, tA := mustEval[pubStats](r.clinician, p2pStatsJS), n.qdisc(n.r, "toa"), time.Now()
	// Sampled each second, so that a run with loss says when it came (the queue still
	// draining, or spread over the window).
	samples := []p2pAudio{a}
	rtx := mustEval[pubStats](r.clinician, p2pStatsJS).Retransmitted
	rtxWindow := rtx
	t.Logf("the clinician sent %d video packets again in the 8 s after the pause", rtx-rtxAtPause)
	var perSecond []string
	for time.Since(paused) < 14*time.Second {
		time.Sleep(min(time.Second, 14*time.Second-time.Since(paused)))
		c, last := mustEval[p2pAudio](r.patient, p2pAudioJS), samples[len(samples)-1]
		x := mustEval[pubStats](r.clinician, p2pStatsJS).Retransmitted
		perSecond = append(perSecond, fmt.Sprintf("%d/%d/%d/%d", c.Audio-last.Audio, c.Lost-last.Lost, c.Frames-last.Frames, x-rtx))
		samples, rtx = append(samples, c), x
	}
	t.Logf("each second with the video paused (audio packets/lost/video frames/video packets the clinician sent again): %s", strings.Join(perSecond, " "))
	b := samples[len(samples)-1]
	sentB, qB := mustEval[pubStats](r.clinician, p2pStatsJS), n.qdisc(n.r, "toa")
	audioKbps := float64(sentB.AudioBytes-sentA.AudioBytes) * 8 / time.Since(tA).Seconds() / 1000
	t.Logf("the clinician's audio in the window: %.1f kbit/s of payload, its sender's cap %d bit/s; the link's bottleneck held %d then %d bytes",
		audioKbps, sentB.AudioMax, qA.backlog, qB.backlog)
	assertNarrowAudio(t, r.clinician, sentB.AudioMax, audioKbps)
	stillPaused := mustEval[bool](r.clinician, `window.bedside.call.videoPaused`)
	got, lost := b.Audio-a.Audio, b.Lost-a.Lost
	concealed := 0.0
	if b.Samples > a.Samples {
		concealed = float64(b.Concealed-a.Concealed) / float64(b.Samples-a.Samples)
	}
	t.Logf("video paused, 6 s at 100 kbit/s: %d audio packets, %d lost, %.1f%% of samples concealed, %d video frames", got, lost, 100*concealed, b.Frames-a.Frames)
	if status := mustEval[string](r.patient, tileStatus); !strings.HasPrefix(status, "Video paused") {
		t.Errorf("the patient's tile of the clinician says %q, want that the video is paused", status)
	}
	if got := mustEval[string](r.clinician, ownBadge); !strings.Contains(got, "Your video is paused") {
		t.Errorf("the clinician's own tile says %q, want that its video is paused", got)
	}
	if sent := rtx - rtxWindow; sent > 0 {
		t.Errorf("the clinician's browser sent %d video packets again 8-14 s after pausing its video", sent)
	}
	if !stillPaused {
		t.Errorf("the clinician's video came back within 14 s of pausing, on the same narrow link")
	}
	if got < 240 { // 50 a second
		t.Errorf("audio with the video paused: %d packets in 6 s", got)
	}
	if got > 0 && float64(lost) > 0.03*float64(got+lost) {
		t.Errorf("audio with the video paused: %d of %d packets lost", lost, got+lost)
	}
	if mustEval[bool](r.patient, `window.bedside.call.videoPaused`) {
		t.Errorf("the patient's page says its video paused, with its camera off")
	}

	// The link opens again: the clinician's page tries its video again and it stays.
	n.tbf(n.r, "toa", "", "", "")
	opened := time.Now()
	r.clinician.waitForWithin("its video sending again", `window.bedside.call.videoPaused === false`, 45*time.Second)
	r.patient.waitFor("the paused notice gone", tileStatus+` === ''`)
	before := mustEval[p2pAudio](r.patient, p2pAudioJS)
	r.patient.waitFor("the clinician's video decoded again", fmt.Sprintf(`%s.then((o) => o.frames >= %d)`, p2pAudioJS, before.Frames+60))
	t.Logf("the clinician's video back %v after the link opened", time.Since(opened).Round(100*time.Millisecond))
	r.clinician.waitFor("its audio's cap lifted once the video stays", p2pStatsJS+`.then((o) => o.audioMax === 0)`)
	waitAudioRate(t, r.clinician, p2pStatsJS, 30*time.Second)
	// The try sent a quarter of the picture (decision 76); once it stays, the whole.
	r.clinician.waitFor("its video sent whole again", `[...window.bedside.call.pcs.values()][0].getSenders().filter((s) => s.track?.kind === 'video')
		.every((s) => s.getParameters().encodings.every((e) => (e.scaleResolutionDownBy ?? 1) === 1 && e.maxBitrate === undefined))`)
	if got := mustEval[string](r.clinician, ownBadge); strings.Contains(got, "paused") {
		t.Errorf("the clinician's own tile still says %q", got)
	}
	for _, p := range []*page{r.patient, r.clinician} {
		p.assertNoExceptions()
		p.assertNoFailedSignals()
	}
}

// waitAudioRate waits until, its cap lifted, a page's audio goes at the browser's own rate
// again: over 4 s, more payload than assertNarrowAudio allows a capped audio. Chrome's
// send-side estimator allocates the audio's rate too, and it is still climbing after the
// link opens: in the runs of 2026-11-28 the rate came back over 1-10 s (a fixed window of
// 4 s starting 1 s after the lift read 20.5 kbit/s in one fresh-clone CI run), so this
// polls, up to within.
func waitAudioRate(t *testing.T, p *page, statsJS string, within time.Duration) {
	t.Helper()
	narrow := mustEval[int](p, `import('/static/js/audiofirst.js').then((m) => m.AUDIO_NARROW_BPS)`)
	limit := float64(narrow)/1000 + 12
	start := time.Now()
	type reading struct {
		at    time.Time
		bytes int
	}
	var seen []reading
	var rates []string
	for {
		seen = append(seen, reading{time.Now(), mustEval[pubStats](p, statsJS).AudioBytes})
		if len(seen) > 4 {
			first, last := seen[len(seen)-5], seen[len(seen)-1]
			kbps := float64(last.bytes-first.bytes) * 8 / last.at.Sub(first.at).Seconds() / 1000
			rates = append(rates, fmt.Sprintf("%.1f", kbps))
			if kbps > limit {
				t.Logf("the audio's payload back at %.1f kbit/s over 4 s, %v after its cap was lifted (per 4 s: %s)",
					kbps, time.Since(start).Round(100*time.Millisecond), strings.Join(rates, " "))
				return
			}
		}
		if time.Since(start) > within {
			t.Errorf("the audio's payload stayed at most %.0f kbit/s (the capped rate) for %v after its cap was lifted (per 4 s: %s)",
				limit, within, strings.Join(rates, " "))
			return
		}
		time.Sleep(time.Second)
	}
}

// assertNarrowAudio: with its video paused for want of bandwidth, a page sends its audio
// capped at AUDIO_NARROW_BPS (decision 76), so that the narrow link has room to drain:
// the sender's cap (maxBitrate, bit/s) and the audio's payload rate in kbit/s (Opus and
// its SFrame, about 9 kbit/s at 50 packets a second; 33-37 kbit/s uncapped in the runs
// of 2026-11-28, 18-25 capped).
func assertNarrowAudio(t *testing.T, p *page, capBps int, payloadKbps float64) {
	t.Helper()
	narrow := mustEval[int](p, `import('/static/js/audiofirst.js').then((m) => m.AUDIO_NARROW_BPS)`)
	if capBps != narrow {
		t.Errorf("the audio sender's cap with the video paused is %d bit/s, want %d", capBps, narrow)
	}
	if limit := float64(narrow)/1000 + 12; payloadKbps > limit {
		t.Errorf("the audio went at %.1f kbit/s of payload with the video paused, over %.0f (the narrow rate and its SFrames)", payloadKbps, limit)
	}
}
