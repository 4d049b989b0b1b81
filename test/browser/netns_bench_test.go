//go:build browser && netns

package browser

import (
	"flag"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bedside/bedside/internal/sfu"
)

var (
	narrowFor = flag.Duration("narrow-for", 60*time.Second, "BenchmarkNetnsNarrowLink: how long the patient's link stays narrowed")
	freedFor  = flag.Duration("freed-for", 40*time.Second, "BenchmarkNetnsNarrowLink: how long it is watched after it is freed")
)

// narrowDrain is how long after the link narrows its figures start: the video already in
// the bottleneck's queue (a second and more of it) delays and drops audio before the SFU
// can know of the narrowing; what the SFU does is judged after that.
const narrowDrain = 5 * time.Second

// BenchmarkNetnsNarrowLink measures what a patient hears and sees through the SFU while the
// link from the server to the patient's host is narrowed (tbf, as in TestNetnsSFULayers),
// then freed: a visit through the SFU, the clinician and the patient each with a 960x540
// camera, the patient's link narrowed to each rate below for -narrow-for, then watched for
// -freed-for. Every second it logs (with -v) what the patient's page received of the
// clinician (audio packets, lost, concealed samples, the jitter buffer's delay, frames and
// their width), what the bottleneck sent and dropped and how long what it holds takes to
// leave (queue: the jitter buffer's delay plus this is how late the patient hears the
// clinician, beyond the link's own delay), and the SFU's target layer, estimate
// (with its estimator's state after the last feedback: bwe.Stats, the rate received, the
// queue, the loss) and probes. The figures reported are over the narrowed link from
// narrowDrain on:
//
//	audio-lost-%       audio packets lost, of those sent
//	concealed-ms/min   audio concealed for want of packets, per minute
//	delay-ms           the audio's mean jitter-buffer delay (how late it is played, beyond
//	                   the network's own delay)
//	delay-max-ms       the worst second's mean jitter-buffer delay
//	late-s             seconds whose mean jitter-buffer delay was over 400 ms
//	frames/s           video frames decoded per second
//	probes             the SFU's probes for more bandwidth (raised and failed)
//
// and after the link is freed:
//
//	video-back-s       until 10 frames a second are decoded again
//	width-back-s       until 10 frames a second of the width from before the narrowing
//	delay-end-ms       the audio's mean jitter-buffer delay over the last 15 s
//
// (-1: not within -freed-for).
//
// Run as root (network namespaces): make bench-narrow, or
//
//	go test -tags browser,netns -run '^$' -bench NetnsNarrowLink -benchtime 1x -v ./test/browser
func BenchmarkNetnsNarrowLink(b *testing.B) {
	for _, rate := range []string{"100kbit", "300kbit", "800kbit"} {
		b.Run(rate, func(b *testing.B) {
			var runs []map[string]float64
			for i := 0; i < b.N; i++ {
				runs = append(runs, narrowLink(b, rate))
			}
			for _, k := range []string{"audio-lost-%", "concealed-ms/min", "delay-ms", "delay-max-ms", "late-s", "frames/s", "probes", "video-back-s", "width-back-s", "delay-end-ms"} {
				var sum float64
				for _, m := range runs {
					sum += m[k]
				}
				b.ReportMetric(sum/float64(len(runs)), k)
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// narrowSample is one second of the measurement: the page's counters (differences over the
// second, the width as it is), the bottleneck's and the SFU's.
type narrowSample struct {
	at                   time.Duration // since the link was narrowed
	got                  received
	sentKbit, sent, drop int
	target, est          int
}

func narrowLink(b *testing.B, rate string) map[string]float64 {
	b.StopTimer()
	sn := newSFUNet(b, 960, 540, "", "")
	n, srv, r := sn.n, sn.srv, sn.r
	waitReceivesAll(r.patient, []string{sn.clinicianID}, 45*time.Second)
	time.Sleep(15 * time.Second) // the browsers' and the SFU's estimates ramp up
	before := mustEval[received](r.patient, subscriberJS(sn.clinicianID))
	b.Logf("%s: receiving the clinician at %d px before the narrowing", rate, before.Width)

	n.shape("toa", rate)
	start := time.Now()
	prev := before
	pq := n.qdisc(n.r, "toa")
	var samples []narrowSample
	var probesAt, probesEnd sfu.ProbeStats
	freed := false
	for next := start.Add(time.Second); ; next = next.Add(time.Second) {
		time.Sleep(time.Until(next))
		at := time.Since(start)
		if at > *narrowFor+*freedFor {
			break
		}
		cur := mustEval[received](r.patient, subscriberJS(sn.clinicianID))
		st := srv.SFU().Stats(r.visitID)
		s := narrowSample{at: at, got: cur.since(prev), est: st.Estimates[sn.patientID] / 1000}
		for _, sub := range st.Subscriptions {
			if sub.Subscriber == sn.patientID && sub.Publisher == sn.clinicianID && sub.Source == sfu.SourceCamera {
				s.target = sub.Target
			}
		}
		q := n.qdisc(n.r, "toa")
		if q.packets < pq.packets { // the tbf removed: the counters are the default qdisc's
			pq = qdiscCounts{}
		}
		s.sentKbit, s.sent, s.drop = (q.bytes-pq.bytes)*8/1000, q.packets-pq.packets, q.dropped-pq.dropped
		pq, prev = q, cur
		samples = append(samples, s)
		b.Logf("%5.1fs audio %3d lost %3d concealed %5d delay %3.0f ms | frames %2d w %3d | sent %4d kbit/s %4d pkt dropped %4d queue %4d ms | target %2d est %5d kbit/s (estimator: %s) probes %+v",
			at.Seconds(), s.got.Audio, s.got.Lost, s.got.Concealed, s.delayMs(), s.got.Frames, s.got.Width,
			s.sentKbit, s.sent, s.drop, queueMs(q.backlog, rate, freed), s.target, s.est, st.Estimators[sn.patientID], st.Probes[sn.patientID])
		if at < narrowDrain {
			probesAt = st.Probes[sn.patientID]
		}
		if !freed && at >= *narrowFor {
			probesEnd = st.Probes[sn.patientID]
			n.shape("toa", "")
			freed = true
			b.Logf("%5.1fs the link is freed", at.Seconds())
		}
	}

	m := map[string]float64{"video-back-s": -1, "width-back-s": -1}
	var got received
	var secs, late int
	var worst, delays float64
	for _, s := range samples {
		if s.at < narrowDrain || s.at > *narrowFor {
			continue
		}
		secs++
		got.Audio += s.got.Audio
		got.Lost += s.got.Lost
		got.Concealed += s.got.Concealed
		got.Frames += s.got.Frames
		d := s.delayMs()
		worst, delays = max(worst, d), delays+d
		if d > 400 {
			late++
		}
	}
	if got.Audio+got.Lost > 0 {
		m["audio-lost-%"] = 100 * float64(got.Lost) / float64(got.Audio+got.Lost)
	}
	if secs > 0 {
		m["concealed-ms/min"] = float64(got.Concealed) / 48 * 60 / float64(secs) // 48 kHz
		m["frames/s"] = float64(got.Frames) / float64(secs)
		m["delay-ms"] = delays / float64(secs)
	}
	m["delay-max-ms"], m["late-s"] = worst, float64(late)
	m["probes"] = float64(probesEnd.Raised + probesEnd.Failed - probesAt.Raised - probesAt.Failed)
	var end, endSecs float64
	for _, s := range samples {
		if s.at <= *narrowFor {
			continue
		}
		if s.at > *narrowFor+*freedFor-15*time.Second {
			end, endSecs = end+s.delayMs(), endSecs+1
		}
		if m["video-back-s"] < 0 && s.got.Frames >= 10 {
			m["video-back-s"] = (s.at - *narrowFor).Seconds()
		}
		if m["width-back-s"] < 0 && s.got.Frames >= 10 && s.got.Width >= before.Width {
			m["width-back-s"] = (s.at - *narrowFor).Seconds()
		}
	}
	if endSecs > 0 {
		m["delay-end-ms"] = end / endSecs
	}
	b.Logf("%s: %d s narrowed from %s on: %d audio packets, %d lost, %d ms concealed, %d frames; after: %v",
		rate, secs, narrowDrain, got.Audio, got.Lost, got.Concealed/48, got.Frames, m)
	return m
}

// queueMs is how long the bottleneck's backlog takes to leave at the narrowed rate (such
// as "100kbit"): how much later than the link's own delay the audio it holds arrives. 0
// once the link is freed.
func queueMs(backlog int, rate string, freed bool) int {
	kbit, err := strconv.Atoi(strings.TrimSuffix(rate, "kbit"))
	if err != nil || kbit <= 0 || freed {
		return 0
	}
	return backlog * 8 / kbit
}

// delayMs is the second's mean jitter-buffer delay of the audio played out, in ms.
func (s narrowSample) delayMs() float64 {
	return float64(s.got.jbDelay()) / float64(time.Millisecond)
}

var (
	qdiscSentRE    = regexp.MustCompile(`Sent (\d+) bytes (\d+) pkt \(dropped (\d+)`)
	qdiscBacklogRE = regexp.MustCompile(`backlog (\d+)([KM]?)b (\d+)p`)
)

// qdiscCounts is what a qdisc has sent and dropped so far, and the bytes it holds now.
type qdiscCounts struct{ bytes, packets, dropped, backlog int }

// qdisc is what the root qdisc on dev in the namespace ns has sent and dropped so far.
func (n *network) qdisc(ns, dev string) qdiscCounts {
	n.t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev).CombinedOutput()
	m := qdiscSentRE.FindStringSubmatch(string(out))
	if err != nil || m == nil {
		n.t.Fatalf("tc -s qdisc show dev %s: %v: %s", dev, err, out)
	}
	var q qdiscCounts
	q.bytes, _ = strconv.Atoi(m[1])
	q.packets, _ = strconv.Atoi(m[2])
	q.dropped, _ = strconv.Atoi(m[3])
	if m := qdiscBacklogRE.FindStringSubmatch(string(out)); m != nil {
		q.backlog, _ = strconv.Atoi(m[1])
		q.backlog *= map[string]int{"": 1, "K": 1024, "M": 1024 * 1024}[m[2]]
	}
	return q
}

// BenchmarkNetnsPublisherNarrowLink measures what the patient hears of the clinician
// through the SFU when the clinician's own link out narrows to 100 kbit/s (a tbf on host
// B's side, as in TestNetnsSFULayers' last part): enough for its audio, not for any video
// with it. The clinician's page pauses its video to the SFU (decision 66), and the link
// carries audio alone once what the video left in it has gone. Each run is a new visit
// (both people with a 960x540 camera). Every half second it logs (with -v) what the
// clinician's browser sent on its pub connection (audio, video, video sent again, NACKs
// received), what the bottleneck sent, dropped and holds, what the patient received of the
// clinician's audio and counted lost, and how many packets the SFU asked the clinician to
// send again and gave up asking for (decision 75). The figures, from the narrowing until
// 12 s after the pause:
//
//	audio-lost      the clinician's audio packets the patient counted lost
//	pause-s         from the narrowing to the page's pause
//	resent          video packets the clinician's browser sent again after the pause
//	asked           packets the SFU asked the clinician to send again (NACK)
//	last-loss-s     after the pause, the last half second in which the patient counted an
//	                audio packet lost (counted when a later one arrives: up to the
//	                bottleneck's 1.3 s of queue after the drop)
//	queue-end-ms    what the bottleneck held 12 s after the pause, in ms of the link: how
//	                late it delivers the audio then
//
// Run as root (network namespaces):
//
//	go test -tags browser,netns -run '^$' -bench NetnsPublisherNarrowLink -benchtime 4x -v ./test/browser
func BenchmarkNetnsPublisherNarrowLink(b *testing.B) {
	benchMeans(b, []string{"audio-lost", "pause-s", "resent", "asked", "last-loss-s", "queue-end-ms"},
		func() map[string]float64 { return publisherNarrowLink(b) })
}

// benchMeans runs run b.N times and reports the mean of each of keys over the runs as a
// metric, and no time per operation (a run is a whole scenario watched, not work timed).
func benchMeans(b *testing.B, keys []string, run func() map[string]float64) {
	sums := map[string]float64{}
	for i := 0; i < b.N; i++ {
		m := run()
		for _, k := range keys {
			sums[k] += m[k]
		}
	}
	for _, k := range keys {
		b.ReportMetric(sums[k]/float64(b.N), k)
	}
	b.ReportMetric(0, "ns/op")
}

func publisherNarrowLink(b *testing.B) map[string]float64 {
	b.StopTimer()
	sn := newSFUNet(b, 960, 540, "", "")
	n, srv, r := sn.n, sn.srv, sn.r
	defer n.tbf(n.b, "eth0", "", "", "")
	waitReceivesAll(r.patient, []string{sn.clinicianID}, 45*time.Second)
	time.Sleep(15 * time.Second) // the browsers' and the SFU's estimates ramp up
	counter := func(name string) float64 {
		mfs, err := srv.Registry().Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name && len(mf.GetMetric()) == 1 {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	const asked, skipped = "bedside_sfu_publisher_nacked_packets_total", "bedside_sfu_publisher_nack_skipped_packets_total"

	n.tbf(n.b, "eth0", "100kbit", "16kb", "50ms")
	start := time.Now()
	prevSent, prevQ := mustEval[pubStats](r.clinician, pubStatsJS), n.qdisc(n.b, "eth0")
	got0 := mustEval[received](r.patient, subscriberJS(sn.clinicianID))
	asked0, prevSkipped := counter(asked), counter(skipped)
	prevGot, prevAsked := got0, asked0
	var paused time.Time
	m := map[string]float64{"last-loss-s": 0}
	var resent int
	for next := start.Add(500 * time.Millisecond); ; next = next.Add(500 * time.Millisecond) {
		time.Sleep(time.Until(next))
		if paused.IsZero() && mustEval[bool](r.clinician, `window.bedside.call.videoPaused`) {
			paused = time.Now()
			m["pause-s"] = paused.Sub(start).Seconds()
			b.Logf("%5.1fs the clinician's page paused its video to the SFU", m["pause-s"])
		}
		sent, q := mustEval[pubStats](r.clinician, pubStatsJS), n.qdisc(n.b, "eth0")
		got := mustEval[received](r.patient, subscriberJS(sn.clinicianID))
		a, sk := counter(asked), counter(skipped)
		ds, g := sent.since(prevSent), got.since(prevGot)
		at := time.Since(start)
		b.Logf("%5.1fs estimate %4.0f kbit/s rtt %4.0f ms sent audio %2d video %3d (again %3d, NACKs %2d) | tbf sent %3d dropped %3d holds %5d B | patient: audio %2d lost %2d | SFU asked %3.0f gave up %3.0f",
			at.Seconds(), ds.Estimate/1000, ds.RTT*1000, ds.Audio, ds.Video, ds.Retransmitted, ds.NACKs, q.packets-prevQ.packets, q.dropped-prevQ.dropped, q.backlog,
			g.Audio, g.Lost, a-prevAsked, sk-prevSkipped)
		if !paused.IsZero() {
			since := time.Since(paused).Seconds()
			resent += ds.Retransmitted
			if g.Lost > 0 {
				m["last-loss-s"] = since
			}
			if since >= 12 {
				m["audio-lost"] = float64(got.Lost - got0.Lost)
				m["resent"] = float64(resent)
				m["asked"] = a - asked0
				m["queue-end-ms"] = float64(q.backlog) * 8 / 100 // bytes at 100 kbit/s
				break
			}
		} else if at > 40*time.Second {
			b.Fatalf("the clinician's page did not pause its video within 40 s of its link narrowing to 100 kbit/s")
		}
		prevSent, prevQ, prevGot, prevAsked, prevSkipped = sent, q, got, a, sk
	}
	b.Logf("narrowed to 100 kbit/s: %v", m)
	return m
}

// BenchmarkNetnsPublisherRetry measures what the page's tries at sending video again cost
// the audio while its link stays narrow: the clinician's link out narrows to 100 kbit/s,
// its page pauses its video (decision 66) and, the link staying narrow, tries the video
// again 15 s later and then after each doubled wait; every try sends video into the same
// link until the page pauses it again. Two settings:
//
//	sfu   through the SFU, the clinician's link out narrowed on its host (as in
//	      BenchmarkNetnsPublisherNarrowLink), both people with a 960x540 camera
//	p2p   peer to peer through the relay, the link to the patient's host narrowed (as in
//	      TestNetnsP2PAudioFirst), the patient's camera off
//
// The run watches -retry-watch after the first pause; every half second (with -v) it logs
// whether the video is paused, the sending connection's estimate, what the clinician's
// browser sent, what the bottleneck sent, dropped and holds, and what the patient received
// of the clinician's audio. The figures:
//
//	tries           tries at sending video again within the watch
//	on-s            per try, from the page's resume to its next pause
//	video-pkts      per try, video packets the clinician's browser sent while it was on
//	lost            per try, audio packets the patient counted lost from the resume to
//	                6 s after the next pause (the bottleneck's queue draining)
//	lost-quiet      audio packets lost in the watch outside the tries' spans, from 8 s
//	                after the first pause (what the paused video's link loses anyway)
//	late-s          seconds of the watch in which the bottleneck held over half a second
//	                of the link (6250 bytes): the patient hears the clinician that late
//
// Run as root (network namespaces):
//
//	go test -tags browser,netns -run '^$' -bench NetnsPublisherRetry -benchtime 1x -v ./test/browser
func BenchmarkNetnsPublisherRetry(b *testing.B) {
	for _, mode := range []string{"sfu", "p2p"} {
		b.Run(mode, func(b *testing.B) {
			benchMeans(b, []string{"tries", "on-s", "video-pkts", "lost", "lost-quiet", "late-s"},
				func() map[string]float64 { return publisherRetry(b, mode) })
		})
	}
}

var retryWatch = flag.Duration("retry-watch", 62*time.Second, "BenchmarkNetnsPublisherRetry: how long the narrow link is watched after the first pause")

// retrySide is what publisherRetry reads in either setting: what the clinician's browser
// sent (audio, video, video sent again, its estimate: sendStatsJS), what the patient received of the
// clinician's audio (Audio, Lost), and the bottleneck: the root qdisc of dev in the
// namespace ns.
type retrySide struct {
	sent    func() pubStats
	got     func() received
	n       *network
	ns, dev string
}

// narrow puts the bottleneck at rate (a tbf as in the other narrow-link benchmarks), or
// takes it away ("").
func (s retrySide) narrow(rate string) {
	if rate == "" {
		s.n.tbf(s.ns, s.dev, "", "", "")
		return
	}
	s.n.tbf(s.ns, s.dev, rate, "16kb", "50ms")
}

func (s retrySide) qdisc() qdiscCounts { return s.n.qdisc(s.ns, s.dev) }

func publisherRetry(b *testing.B, mode string) map[string]float64 {
	b.StopTimer()
	var r *rig
	var side retrySide
	if mode == "p2p" {
		n := newNetwork(b)
		r = netRig(b, n, "embedded")
		startCall(r)
		r.patient.click("#camera")
		r.patient.waitFor("the patient's camera off", `window.bedside.call.cameraOff === true`)
		side = retrySide{
			sent: func() pubStats { return mustEval[pubStats](r.clinician, p2pStatsJS) },
			got: func() received {
				a := mustEval[p2pAudio](r.patient, p2pAudioJS)
				return received{Audio: a.Audio, Lost: a.Lost}
			},
			n: n, ns: n.r, dev: "toa",
		}
		time.Sleep(10 * time.Second) // the browsers' estimates ramp up
	} else {
		sn := newSFUNet(b, 960, 540, "", "")
		n := sn.n
		r = sn.r
		waitReceivesAll(r.patient, []string{sn.clinicianID}, 45*time.Second)
		side = retrySide{
			sent: func() pubStats { return mustEval[pubStats](r.clinician, pubStatsJS) },
			got:  func() received { return mustEval[received](r.patient, subscriberJS(sn.clinicianID)) },
			n:    n, ns: n.b, dev: "eth0",
		}
		time.Sleep(15 * time.Second) // the browsers' and the SFU's estimates ramp up
	}
	defer side.narrow("")

	side.narrow("100kbit")
	start := time.Now()
	r.clinician.waitForWithin("its video paused", `window.bedside.call.videoPaused === true`, 40*time.Second)
	first := time.Now()
	b.Logf("the clinician's page paused its video %.1f s after the narrowing", first.Sub(start).Seconds())

	type try struct {
		resumed, paused time.Duration // since the first pause; paused 0 while on
		video, lost     int
		lostUntil       time.Duration // the try's span for its losses
	}
	var tries []*try
	var quiet int
	var late float64
	prevSent := side.sent()
	prevQ, prevGot := side.qdisc(), side.got()
	wasPaused := true
	for next := first.Add(500 * time.Millisecond); time.Since(first) < *retryWatch; next = next.Add(500 * time.Millisecond) {
		time.Sleep(time.Until(next))
		paused := mustEval[bool](r.clinician, `window.bedside.call.videoPaused`)
		sent := side.sent()
		q, got := side.qdisc(), side.got()
		ds, g := sent.since(prevSent), got.since(prevGot)
		at := time.Since(first)
		switch {
		case wasPaused && !paused:
			tries = append(tries, &try{resumed: at})
			b.Logf("%5.1fs the page tries its video again", at.Seconds())
		case !wasPaused && paused && len(tries) > 0:
			t := tries[len(tries)-1]
			t.paused, t.lostUntil = at, at+6*time.Second
			b.Logf("%5.1fs the page paused its video again, %.1f s after the try", at.Seconds(), (t.paused - t.resumed).Seconds())
		}
		wasPaused = paused
		if q.backlog > 6250 {
			late += 0.5
		}
		var cur *try
		if len(tries) > 0 {
			if t := tries[len(tries)-1]; t.paused == 0 || at <= t.lostUntil {
				cur = t
			}
		}
		if cur != nil {
			cur.lost += g.Lost
			if cur.paused == 0 || at <= cur.paused {
				cur.video += ds.Video
			}
		} else if at >= 8*time.Second {
			quiet += g.Lost
		}
		b.Logf("%5.1fs paused %-5v estimate %4.0f kbit/s | sent audio %2d video %3d (again %2d) | tbf sent %3d dropped %3d holds %5d B | patient: audio %2d lost %2d",
			at.Seconds(), paused, sent.Estimate/1000, ds.Audio, ds.Video, ds.Retransmitted, q.packets-prevQ.packets, q.dropped-prevQ.dropped, q.backlog, g.Audio, g.Lost)
		prevSent, prevQ, prevGot = sent, q, got
	}
	m := map[string]float64{"tries": float64(len(tries)), "lost-quiet": float64(quiet), "late-s": late}
	done := 0
	for i, t := range tries {
		if t.paused == 0 {
			b.Logf("try %d at %.1f s: still on at the end of the watch, %d video packets, %d audio lost", i+1, t.resumed.Seconds(), t.video, t.lost)
			continue
		}
		done++
		m["on-s"] += (t.paused - t.resumed).Seconds()
		m["video-pkts"] += float64(t.video)
		m["lost"] += float64(t.lost)
		b.Logf("try %d at %.1f s: on %.1f s, %d video packets, %d audio lost", i+1, t.resumed.Seconds(), (t.paused - t.resumed).Seconds(), t.video, t.lost)
	}
	for _, k := range []string{"on-s", "video-pkts", "lost"} {
		if done > 0 {
			m[k] /= float64(done)
		}
	}
	b.Logf("%s, narrowed to 100 kbit/s, watched %v after the first pause: %v", mode, *retryWatch, m)
	return m
}
