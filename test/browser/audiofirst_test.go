//go:build browser

package browser

import (
	"testing"

	"github.com/bedside/bedside/internal/app/apptest"
)

// TestVideoGate drives the page's audio-first gate (webui/static/js/audiofirst.js, docs/
// design.md decision 66) through a timeline of bandwidth estimates, one a second, and checks
// when it pauses the video and when it tries again; TestNetnsP2PAudioFirst shows it in a
// call on a narrow link.
func TestVideoGate(t *testing.T) {
	srv := apptest.Start(t, apptest.Options{})
	p := newPage(t, "browser")
	p.navigate(srv.URL() + "/signin")
	problems := mustEval[[]string](p, `(async () => {
	const af = await import('/static/js/audiofirst.js');
	const out = [];
	const low = af.VIDEO_PAUSE_BELOW - 1, high = af.VIDEO_PAUSE_BELOW * 3;
	let g = new af.VideoGate(0), now = 0;
	// Feeds estimates one a second; returns [time, action] of each action.
	const feed = (estimates) => {
		const acts = [];
		for (const e of estimates) {
			now += af.SAMPLE_MS;
			const a = g.sample(e, now);
			if (a) acts.push([now, a]);
		}
		return acts;
	};
	const expect = (what, got, want) => {
		if (JSON.stringify(got) !== JSON.stringify(want)) out.push(what + ': got ' + JSON.stringify(got) + ', want ' + JSON.stringify(want));
	};
	expect('a good link', feed(Array(30).fill(high)), []);
	expect('two low samples, then good', feed([low, low, high, low, low, high]), []);
	expect('samples without an estimate neither count nor reset', feed([low, undefined, low, undefined]), []);
	expect('not narrow before any pause', g.narrow, false);
	const pausedAt = now + af.SAMPLE_MS;
	expect('the third low in a row pauses', feed([low]), [[pausedAt, 'pause']]);
	expect('narrow once paused', g.narrow, true);
	expect('paused: nothing until the first wait is over', feed(Array(af.RETRY_FIRST_MS / af.SAMPLE_MS - 1).fill(high)), []);
	expect('then it tries again', feed([low]), [[pausedAt + af.RETRY_FIRST_MS, 'resume']]);
	expect('still narrow while it tries', g.narrow, true);
	// Samples strictly within the grace after a try do not count.
	const inGrace = Array(af.RETRY_GRACE_MS / af.SAMPLE_MS - 1).fill(low);
	expect('a good sample within the grace does not count', feed(Array(af.RETRY_GRACE_MS / af.SAMPLE_MS - 1).fill(high)), []);
	expect('still narrow after it', g.narrow, true);
	expect('samples without an estimate after the grace neither pause nor end the try', feed([undefined, undefined]), []);
	expect('still narrow without an estimate', g.narrow, true);
	const again = now + af.SAMPLE_MS;
	expect('a try whose first sample after the grace is low pauses again at once', feed([low]), [[again, 'pause']]);
	expect('narrow after the failed try', g.narrow, true);
	expect('and waits twice as long', feed(Array(2 * af.RETRY_FIRST_MS / af.SAMPLE_MS).fill(undefined)), [[again + 2 * af.RETRY_FIRST_MS, 'resume']]);
	// Failing tries double the wait up to the longest.
	let wait = 2 * af.RETRY_FIRST_MS;
	for (let i = 0; i < 5; i++) {
		feed(inGrace);
		// The first try has a good sample first: a low one after it still pauses at once.
		const acts = feed(i === 0 ? [high, low] : [low]);
		if (acts.length !== 1 || acts[0][1] !== 'pause' || acts[0][0] !== now) { out.push('try ' + i + ': ' + JSON.stringify(acts)); break; }
		wait = Math.min(wait * 2, af.RETRY_MAX_MS);
		const back = feed(Array(wait / af.SAMPLE_MS).fill(low));
		expect('try ' + i + ' waits ' + wait, back, [[acts[0][0] + wait, 'resume']]);
	}
	expect('the longest wait', wait, af.RETRY_MAX_MS);
	// A try that stays: as many good samples in a row after its grace as a pause takes
	// end the narrow spell (one may be a probe through a shaper's burst).
	feed(inGrace);
	expect('a try: trying', g.trying, true);
	feed(Array(af.PAUSE_AFTER_SAMPLES - 1).fill(high));
	expect('narrow until the try has had enough good samples', g.narrow, true);
	feed([high]);
	expect('the try stays: not narrow', g.narrow, false);
	expect('the try stays: not trying', g.trying, false);
	expect('a low sample after it does not pause at once', feed([low, low]), []);
	// Video that stayed on long enough starts from the first wait again.
	feed(Array(af.STABLE_MS / af.SAMPLE_MS).fill(high));
	const acts = feed([low, low, low]);
	const back = feed(Array(af.RETRY_FIRST_MS / af.SAMPLE_MS).fill(low));
	expect('after a stable spell, the first wait', back.length === 1 ? back[0][0] - acts[0][0] : back, af.RETRY_FIRST_MS);

	// availableOutgoing reads the selected pair's estimate from a stats report.
	const report = new Map([['T', {type: 'transport', selectedCandidatePairId: 'P'}], ['P', {type: 'candidate-pair', availableOutgoingBitrate: 84400}],
		['Q', {type: 'candidate-pair', availableOutgoingBitrate: 5}]]);
	expect('the selected pair', af.availableOutgoing(report), 84400);
	expect('no selected pair', af.availableOutgoing(new Map([['Q', {type: 'candidate-pair', availableOutgoingBitrate: 5}]])), undefined);

	// outgoingEstimate: the browser's estimate where there is one; where not (Firefox), the
	// peer's receiver reports stand in: low when the newest has a round-trip time of a full
	// queue, good when not (whatever its losses), nothing when no report came since the
	// last sample; the video's before the audio's.
	expect('an estimate', af.outgoingEstimate(report, {}).bps, 84400);
	const seen = {};
	const firefox = (audio, video) => {
		const m = new Map([['T', {type: 'transport', selectedCandidatePairId: 'P'}], ['P', {type: 'candidate-pair'}]]);
		if (audio) m.set('A', {type: 'remote-inbound-rtp', kind: 'audio', ssrc: 1, packetsLost: 0, ...audio});
		if (video) m.set('V', {type: 'remote-inbound-rtp', kind: 'video', ssrc: 2, packetsLost: 0, ...video});
		return af.outgoingEstimate(m, seen);
	};
	expect('no report yet', firefox(null, null).bps, undefined);
	expect('a late audio', firefox({roundTripTime: af.CONGESTED_RTT_S, fractionLost: 0}).bps, 0);
	expect('the same report again', firefox({roundTripTime: af.CONGESTED_RTT_S, fractionLost: 0}).bps, undefined);
	expect('an audio on time, losses from before', firefox({roundTripTime: 0.05, fractionLost: 0.34, packetsLost: 9}).bps, af.VIDEO_PAUSE_BELOW);
	expect('an audio on time', firefox({roundTripTime: 0.06, fractionLost: 0.02, packetsLost: 10}).bps, af.VIDEO_PAUSE_BELOW);
	expect('a late video before an audio on time', firefox({roundTripTime: 0.05, packetsLost: 10}, {roundTripTime: 1.3}).bps, 0);
	expect('the late video seen, an audio on time', firefox({roundTripTime: 0.04, packetsLost: 10}, {roundTripTime: 1.3}).bps, af.VIDEO_PAUSE_BELOW);
	expect('said where it came from', firefox({roundTripTime: 1.3, fractionLost: 0.2}).from, 'reports');
	// A simulcast camera: a report per layer, each new once only.
	const layers = (rtts) => af.outgoingEstimate(new Map(rtts.map((rtt, i) => ['L' + i, {type: 'remote-inbound-rtp', kind: 'video', ssrc: 10 + i, roundTripTime: rtt, packetsLost: 0}])), seen);
	expect('three layers, one of them late', layers([0.05, 1.2, 0.06]).bps, 0);
	expect('the same three again', layers([0.05, 1.2, 0.06]).bps, undefined);
	expect('one of them new, on time', layers([0.05, 1.2, 0.04]).bps, af.VIDEO_PAUSE_BELOW);
	return out;
})()`)
	for _, pr := range problems {
		t.Error(pr)
	}
}
