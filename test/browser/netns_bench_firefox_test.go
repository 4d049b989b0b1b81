//go:build browser && netns

package browser

import (
	"testing"
	"time"
)

// BenchmarkNetnsFirefoxPublisherNarrowLink measures decision 78 through the SFU: a visit
// whose policy is the SFU, the patient on Firefox publishing its camera, the clinician on
// Chromium (camera off), the patient's link out narrowed to 100 kbit/s (tbf on its host,
// as BenchmarkNetnsPublisherNarrowLink does to a Chromium publisher) for 40 s. Firefox gives
// no bandwidth estimate, so its page pauses its video on the SFU's receiver reports. Per
// run, as metrics:
//
//	pause-s     from the narrowing to the patient's page pausing its video
//	resent      video packets Firefox sent again, from the narrowing to the end
//	audio-lost  the patient's audio packets lost at the clinician from 4 s after the
//	            pause to the end, in percent of those sent then
//
// Run as root (network namespaces):
//
//	go test -tags browser,netns -run '^$' -bench NetnsFirefoxPublisherNarrowLink -benchtime 3x -v ./test/browser
func BenchmarkNetnsFirefoxPublisherNarrowLink(b *testing.B) {
	benchMeans(b, []string{"pause-s", "resent", "audio-lost"}, func() map[string]float64 { return firefoxPublisherNarrowLink(b) })
}

func firefoxPublisherNarrowLink(b *testing.B) map[string]float64 {
	b.StopTimer()
	n := newNetwork(b)
	r, ff := firefoxSFUVisit(b, n)
	patientID := ffMust[string](ff, `window.bedside.call.selfId`)
	waitReceivesAll(r.clinician, []string{patientID}, 45*time.Second)
	r.clinician.click("#camera")
	time.Sleep(10 * time.Second) // the estimates ramp up
	got := func() received { return mustEval[received](r.clinician, subscriberJS(patientID)) }

	n.tbf(n.a, "eth0", "100kbit", "16kb", "50ms")
	defer n.tbf(n.a, "eth0", "", "", "")
	start := time.Now()
	sent0 := ffMust[pubStats](ff, pubStatsJS)
	var paused time.Time
	var from received
	m := map[string]float64{}
	for time.Since(start) < 40*time.Second {
		time.Sleep(time.Second)
		p := ffMust[bool](ff, `window.bedside.call.videoPaused`)
		if p && paused.IsZero() {
			paused = time.Now()
			m["pause-s"] = paused.Sub(start).Seconds()
		}
		if !paused.IsZero() && from.Audio == 0 && time.Since(paused) >= 4*time.Second {
			from = got()
		}
		g, s := got(), ffMust[pubStats](ff, pubStatsJS)
		b.Logf("%4.0fs paused %-5v | clinician: audio %4d lost %3d | Firefox: video sent again %3d, audio cap %d", time.Since(start).Seconds(), p, g.Audio, g.Lost, s.Retransmitted-sent0.Retransmitted, s.AudioMax)
	}
	if paused.IsZero() || from.Audio == 0 {
		b.Fatalf("the patient's page did not pause its video on the narrow link")
	}
	end, sent := got(), ffMust[pubStats](ff, pubStatsJS)
	m["resent"] = float64(sent.Retransmitted - sent0.Retransmitted)
	if n := end.Audio - from.Audio + end.Lost - from.Lost; n > 0 {
		m["audio-lost"] = 100 * float64(end.Lost-from.Lost) / float64(n)
	}
	b.Logf("paused %.1f s after the narrowing; %0.f video packets sent again; %.1f%% of the audio lost from 4 s after the pause", m["pause-s"], m["resent"], m["audio-lost"])
	return m
}
