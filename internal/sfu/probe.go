package sfu

import (
	"sync/atomic"
	"time"

	"github.com/bedside/bedside/internal/bwe"
)

// Probing (design decision 68). A subscriber whose estimate is followed below the
// starting one (congestion: decision 40) gets no more than its layers send, and the
// estimator's growth is capped by what arrives (1.5 times it plus 100 kbit/s): on a link
// that narrowed and then settled, the estimate never reaches the next layer up, though the
// link carries it (a 600 kbit/s link kept the lowest of a camera's layers, 120 kbit/s,
// where the middle one, 330 kbit/s, fits). So the SFU probes: when a video track it
// forwards could go a layer up if the estimate were higher, and the link is calm (no
// loss, no queue), it sends padding-only packets beside that track's media, paced and
// rising over probeRamp from nothing to what makes the subscriber receive (with what was
// sent in the last second) a little more than the estimate the next layer needs. The
// estimator follows what arrives with neither loss nor queue (internal/bwe); once the
// estimate reaches that need, the allocator raises the layer as it would anyway. A probe
// stops at once when the feedback shows a queue (probeStopQueue), loss or a cut, and
// after probeLength in any case; one that failed holds the next off for probeBackoff,
// doubling up to maxProbeBackoff. The ramp is what keeps a probe of a link that cannot
// carry the next layer harmless: the queue shows when the rate has just passed the
// link's, not at a step past it (a step to a top layer's need, three times a 600 kbit/s
// link, filled its buffer before the feedback told, and the audio would have been lost
// with the padding).
//
// A video paused for want of bandwidth comes back the same way (design decision 70): its
// track is padded (after the last frame it was sent, as below) until the estimate reaches
// what its lowest layer needs. Meanwhile the congestion hold does not end (holdBelow):
// its end took the estimate to the starting one at once, and the video came back at the
// layer that estimate allowed into a link that had just carried the audio alone, the
// audio queued behind it for a second or more at every hold's end. A video probed back
// starts a hold of its own: the link has shown it carries that layer, not more. Only
// when probing cannot bring it back (its track cannot be padded, or no probe could start
// for probeStall) does the hold end as before.
//
// A video that flows below the layer it wants keeps the hold the same way (design decision
// 73): at a hold's end the estimate went to the starting one, and a link that carries the
// lowest layer and not the next one (300 kbit/s) got the middle and top layers at once,
// half a second of audio concealed and the video paused again at every hold's end. Its
// probes, as decision 68's during the hold, raise it a layer at a time; the hold ends once
// every video has the layer it wants, when its probes could not pad, when none has
// started for probeStall, or at the longest hold's length past its end.
//
// Padding goes after the last packet of a frame that arrived whole (and the one before it
// too): its sequence numbers come next, and the track's media after it is numbered on;
// a packet of the publisher's from before the padding that arrives after it (a late
// retransmission) is no longer forwarded, since its number is taken. Each padding packet
// has its own transport-wide number, so the estimator sees it as it sees media. Padding
// carries no payload: nothing of a frame is read or sent (end-to-end encryption is
// untouched), and the subscriber's NACK for a padding packet finds nothing to resend.
const (
	// probeLength bounds a probe: its ramp, probeConfirm at its full rate, and 1.5 s for
	// the estimate, which follows a second of what arrives, to reach the need (3 s, the
	// first length, left half a second: probes on a busy host ran out of time, 4 of 10
	// failures in a run of TestSFUFourBrowsers with a core busy).
	probeLength    = 4 * time.Second
	probeRamp      = 1500 * time.Millisecond
	probeTick      = 10 * time.Millisecond
	probeStopQueue = 20 // ms
	probeCalmQueue = 10 // ms: the queue under which a probe may start (the estimator's normalDelay)
	probeBackoff   = 5 * time.Second
	// maxProbeBackoff is the longest wait after a failed probe: a link that recovers is
	// found within it (with a minute, decision 68's first, a link freed after a long cap
	// waited up to a minute for its video: decisions 70 and 73), at the price of a probe
	// that often on a link that does not (a shaper's burst makes some cost 0.1 s of audio).
	maxProbeBackoff = 20 * time.Second
	// probeMargin: a probe aims this much above the estimate the next layer needs, so that
	// the estimate, which follows what arrives, reaches the need.
	probeMargin = 1.05
	// maxPadding is a padding packet's most padding bytes (RTP's padding count is one byte).
	maxPadding = 255
	// maxProbeBurst is the most padding owed at once, in time at the probe's rate: a
	// step that could not send (the track mid-frame) does not make a burst later.
	maxProbeBurst = 30 * time.Millisecond
	// probeStall: a hold kept for a paused or lowered video ends anyway when no probe has
	// started for this long since the hold would have ended or the last probe started
	// (the link never calm enough to probe: a busy host's jitter).
	probeStall = maxProbeBackoff + 2*probeLength
	// probeConfirm: a probe raises only once it has padded at its full rate this long. A
	// token bucket on the way (a shaper's burst) lets a short ramp through at any rate;
	// the received rate lags it by up to a second, and the estimate, which follows it,
	// reached the need as the bucket ran dry: a paused video would come back into a link
	// that carries the audio alone (decision 70), a lowered one go up a layer into a link
	// that carries the one it has (decision 73: a 300 kbit/s link got the middle layer).
	probeConfirm = time.Second
)

// prober is a subscriber's probe: owned by the participant's goroutine.
type prober struct {
	d       *downTrack  // the video track padded (nil: no probe under way)
	need    int         // the estimate the next layer needs (bit/s)
	rate    float64     // padding at the top of the ramp, bit/s
	start   int64       // monotime: the probe began
	cuts    int         // the estimator's cuts when the probe started
	until   int64       // monotime: the probe ends
	last    int64       // monotime: the last padding step
	credit  float64     // padding owed, bytes on the wire
	timer   *time.Timer // the padding steps (nil until the first probe)
	next    int64       // monotime: no probe starts before this
	backoff time.Duration
	paused  bool  // the track padded is a video paused for want of bandwidth
	padded  bool  // the probe under way has sent padding
	refused bool  // its track refused padding (unpadded: and never took any)
	started int64 // monotime: the last probe began (0: none yet)
	// unpadded: the last probe could send no padding (its track could not take any): the
	// hold kept for a paused or lowered video ends (holdBelow).
	unpadded bool
	// upFor: the video the last probe that raised was for, until it goes up (while the
	// estimate is followed, allocate raises no other: decisions 71 and 73).
	upFor *downTrack

	// raised and failed count the probes that reached their need, and those that did not
	// by how (Stats)
	raised atomic.Int32
	failed [probeHows]atomic.Int32
}

// c is the timer's channel while a probe is under way, else nil.
func (pr *prober) c() <-chan time.Time {
	if pr.d == nil {
		return nil
	}
	return pr.timer.C
}

// probeLayers runs at each allocation tick after the layers are chosen: it ends a probe that
// reached its need, failed or ran out of time, and starts one when a flowing video layer
// could go up, or a video paused for want of bandwidth come back, with a higher estimate,
// and the link is calm. est, congested and budget are what allocate used, all and downs
// its demands with every layer sent and their tracks, targets its choice.
func (p *participant) probeLayers(now int64, est int, congested bool, budget int, all []videoDemand, downs []*downTrack, targets []int) {
	pr := &p.probe
	if !p.twcc {
		return
	}
	st := p.est.Stats()
	if pr.d != nil {
		failed := probeFailure(st, pr.cuts)
		if failed < 0 && now >= pr.until {
			failed = probeTimeout
		}
		switch {
		case !congested: // the estimate is no longer followed down: nothing to learn
			p.stopProbe(now, probeEnded)
		case st.Target >= pr.need && now-pr.start >= int64(probeRamp+probeConfirm):
			p.stopProbe(now, probeRaised)
		case failed >= 0:
			p.stopProbe(now, failed)
		}
		return
	}
	if !congested || now < pr.next || st.State != "grow" || st.Loss >= lossThreshold ||
		st.QueueMs >= probeCalmQueue {
		return
	}
	i, need := probeNeed(est, budget, all, downs, targets)
	if i < 0 {
		return
	}
	// What the media sends meanwhile: what was sent in the last second. The received rate
	// is no measure of it (it lags, and counts a key frame's burst: a probe padded by what
	// the estimator had received fell short of its need when the media sent less after),
	// nor are the layers' costs (their peaks, upTrack.options).
	media := p.est.SentRate(now)
	pr.d, pr.need, pr.cuts, pr.upFor = downs[i], need, st.Cuts, nil
	pr.paused, pr.padded, pr.refused, pr.started = targets[i] < 0, false, false, now
	pr.rate = max(float64(need)*probeMargin-float64(media), 10_000)
	pr.start, pr.until, pr.last, pr.credit = now, now+int64(probeLength), now, 0
	if pr.timer == nil {
		pr.timer = time.NewTimer(probeTick)
	} else {
		pr.timer.Reset(probeTick)
	}
	p.log.Debug("sfu: probing", "need_kbps", need/1000, "padding_kbps", int(pr.rate/1000), "estimator", st.String())
}

// probeNeed finds the least estimate, in steps of 5% up to four times est, at which
// the allocator would want a layer higher than it wants now for a video that flows at its
// target (the switch to it done), or give a layer to a video paused for want of
// bandwidth: that track's index in downs and the estimate, or -1. budget and targets are
// what allocate was given and chose with est; all are its demands with every layer sent:
// a video judged by the layers its publisher sends now would find nothing to probe for
// once nobody else receives the layers above (its publisher has paused them: dynacast),
// a few seconds after it was lowered (decision 73).
func probeNeed(est, budget int, all []videoDemand, downs []*downTrack, targets []int) (int, int) {
	flowing := func(i int) bool { return targets[i] >= 0 && downs[i].current.Load() == int32(targets[i]) }
	paused := func(i int) bool { return targets[i] < 0 && downs[i].bwPaused }
	below := false // a track below the layer it wants: else nothing to look for
	for i := range downs {
		if flowing(i) && int(downs[i].desired.Load()) < wantedLayer(all[i]) || paused(i) {
			below = true
		}
	}
	if !below {
		return -1, 0
	}
	for f := 1.05; f <= 4; f *= 1.05 {
		need := int(float64(est) * f)
		raised := allocate(budget+(need-est)*95/100, all, false)
		for i := range downs {
			if flowing(i) && raised[i] > int(downs[i].desired.Load()) || paused(i) && raised[i] >= 0 {
				return i, need
			}
		}
	}
	return -1, 0
}

// holdBelow says whether the subscriber's estimate stays followed after its congestion
// hold has ended, and whether for a paused video: while a video is paused for want of
// bandwidth (decision 70) or flows below the layer it wants (decision 73), which probes
// may bring up; not when the last probe could not pad its track, when no probe has
// started for probeStall since the hold would have ended or the last probe started, nor,
// for a lowered video, maxCongestionHold after the hold would have ended.
func (p *participant) holdBelow(now int64) (kept, forPaused bool) {
	if !p.twcc || p.probe.unpadded || now-max(p.probe.started, p.congestion.until) >= int64(probeStall) {
		return false, false
	}
	lowered := false
	for _, d := range p.subs {
		if d.bwPaused {
			return true, true
		}
		lowered = lowered || d.lowered
	}
	// A lowered video is no reason to keep the hold longer than the longest hold: on a
	// busy host the queue a probe stops at can be the scheduler's jitter, and its probes
	// would keep the estimate followed for ever.
	return lowered && now-p.congestion.until < int64(maxCongestionHold), false
}

// probeFailure says whether the estimator's state st shows a probe too much, and how: a
// cut since the probe started (the estimator's cuts were cuts then), loss, or a queue;
// else -1.
func probeFailure(st bwe.Stats, cuts int) int {
	switch {
	case st.Cuts != cuts:
		return probeCut
	case st.Loss >= lossThreshold:
		return probeLoss
	case st.QueueMs >= probeStopQueue:
		return probeQueue
	}
	return -1
}

// How a probe ended: raised, not needed any more, or failed (the rest).
const (
	probeRaised  = iota // the estimate reached its need
	probeEnded          // not needed any more: the congestion hold ended, its track went
	probeQueue          // failed: the feedback showed probeStopQueue of queue
	probeLoss           // failed: the feedback showed lossThreshold of loss
	probeCut            // failed: the estimator cut its estimate
	probeTimeout        // failed: probeLength passed before the estimate reached the need
	probeHows
)

// probeFailures names the ways a probe fails (bedside_sfu_probe_failures_total, Stats).
var probeFailures = [probeHows]string{probeQueue: "queue", probeLoss: "loss", probeCut: "cut", probeTimeout: "time"}

// stopProbe ends the probe under way.
func (p *participant) stopProbe(now int64, how int) {
	pr := &p.probe
	d := pr.d
	if d == nil {
		return
	}
	pr.d = nil
	pr.timer.Stop()
	pr.unpadded = pr.refused && !pr.padded
	switch how {
	case probeEnded:
		return
	case probeRaised:
		pr.raised.Add(1)
		p.s.m.probes.WithLabelValues("raised").Inc()
		pr.backoff = 0
		pr.next = now + int64(probeBackoff) // the raised layer's key frame and a settled estimate first
		pr.upFor = d
		if pr.paused {
			// Back from a pause: the link carries the lowest layer, nothing more is known.
			p.congestion.until = max(p.congestion.until, now+int64(p.congestion.hold))
		}
		return
	}
	pr.failed[how].Add(1)
	p.s.m.probes.WithLabelValues("failed").Inc()
	p.s.m.probeFailures.WithLabelValues(probeFailures[how]).Inc()
	pr.backoff = min(max(2*pr.backoff, probeBackoff), maxProbeBackoff)
	pr.next = now + int64(pr.backoff)
	p.log.Debug("sfu: probe stopped", "need_kbps", pr.need/1000, "how", probeFailures[how], "estimator", p.est.Stats().String(), "next_in", pr.backoff)
}

// probeStep sends the padding owed since the last step (the probe timer fired, at now).
func (p *participant) probeStep(now int64) {
	pr := &p.probe
	if pr.d == nil {
		return
	}
	if failed := probeFailure(p.est.Stats(), pr.cuts); failed >= 0 {
		p.stopProbe(now, failed)
		return
	}
	rate := pr.rate * min(float64(now-pr.start)/float64(probeRamp), 1)
	pr.credit += rate / 8 * float64(now-pr.last) / float64(time.Second)
	pr.credit = min(pr.credit, rate/8*maxProbeBurst.Seconds())
	pr.last = now
	for pr.credit >= rtpOverhead+maxPadding/2 {
		n := min(int(pr.credit)-rtpOverhead, maxPadding)
		if !pr.d.pad(n) {
			pr.refused = true
			break
		}
		pr.padded = true
		pr.credit -= float64(n + rtpOverhead)
	}
	pr.timer.Reset(probeTick)
}

// pad writes one padding-only packet with n bytes of padding (1 to maxPadding) after the
// last packet written, for the prober. It does not when the track cannot take one now:
// closed, not bound, without transport-wide numbers, nothing forwarded, or the last packet
// written did not end a frame that (with the one before it) arrived whole. A paused track
// can (it stopped at the end of a frame): its media goes on after the padding when it
// comes back.
func (d *downTrack) pad(n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	select {
	case <-d.done:
		return false
	default:
	}
	b := d.bind.Load()
	w := &d.w
	if b == nil || b.twccID == 0 || !w.sent || !w.padOK {
		return false
	}
	n = min(max(n, 1), maxPadding)
	twcc := uint16(d.sub.twccSeq.Add(1))
	h := d.header(b, w.lastSeq+1, w.lastTS, twcc, false)
	h.Padding = true
	var buf [maxPadding]byte
	buf[n-1] = byte(n)
	at, err := d.writeRTP(b, h, buf[:n])
	if err != nil {
		d.m.dropWriteError.Inc()
		return false
	}
	// The padding took the next number; the media goes on after it. A packet from before
	// it would now be numbered into it: no longer forwarded (write drops what precedes
	// segStart).
	w.segStart = w.lastSeq - w.seqOff + 1
	w.seqOff++
	w.lastSeq++
	w.srOctets -= uint32(n) // padding is not payload (RFC 3550's octet count)
	d.sub.est.Sent(twcc, n+rtpOverhead, at)
	if e := &w.sentVideo[w.lastSeq%nackBuffer]; e.p != nil {
		e.p.release()
		*e = sentPacket{}
	}
	d.m.padding.Inc()
	return true
}
