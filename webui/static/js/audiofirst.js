// Audio first on a sender's own link (docs/design.md decision 66): between two browsers, and
// on a publisher's pub connection to the SFU. The SFU lowers and pauses what it sends a
// receiver before that receiver's audio suffers, but nobody did so for what a browser sends:
// libwebrtc keeps a camera at 30 kbit/s or more whatever the link, so on a link of 100 kbit/s
// or less the video, frozen anyway, took the audio down with it (5-15% of its packets lost).
// Each sender now watches its connection's bandwidth estimate and pauses its video when the
// estimate stays too low for audio and video together, then tries again after a while.

/** An estimate below this (bit/s) leaves too little for video once audio has its share. */
export const VIDEO_PAUSE_BELOW = 100_000;
/** Samples (one a second) in a row below it before the video pauses. */
export const PAUSE_AFTER_SAMPLES = 3;
/** The first wait before a paused video tries again; each failed try doubles it. */
export const RETRY_FIRST_MS = 15_000;
/** The longest wait between tries. */
export const RETRY_MAX_MS = 120_000;
/**
 * After the video comes back, low samples do not count this long: the estimate of an
 * audio-only connection is low whatever the link (it only knows what was sent), and Chrome
 * probes when the video starts again.
 */
export const RETRY_GRACE_MS = 2_000;
/** Video that stayed on this long after a try starts the waits from the first again. */
export const STABLE_MS = 30_000;
/** How often the estimate is sampled. */
export const SAMPLE_MS = 1_000;
/**
 * The audio's bit rate (Opus) while a connection's video is paused for want of bandwidth,
 * until a try at the video stays (decision 76). At the browser's own 32 kbit/s the audio
 * with its packets' overheads fills about 70 kbit/s of a link, and what a pause or a failed
 * try leaves in the link's queue drains at what is left over: on a 100 kbit/s link 20 s
 * and more of audio 1.3 s late. At 16 kbit/s, speech still clear, the queue drains in 8.
 */
export const AUDIO_NARROW_BPS = 16_000;

/**
 * The decision for one connection's video, fed one estimate a second. Pure: it changes no
 * connection, it says when to pause and when to try again, and (narrow) when the audio
 * should be sent at AUDIO_NARROW_BPS.
 */
export class VideoGate {
  /** @param {number} now */
  constructor(now) {
    this.paused = false;
    this.low = 0;
    this.wait = RETRY_FIRST_MS;
    this.retryAt = 0;
    this.graceUntil = 0;
    this.onSince = now;
    this.retried = false;
    /**
     * A try at the video is on and has not yet had PAUSE_AFTER_SAMPLES good samples in a
     * row after its grace (good counts them).
     */
    this.trying = false;
    this.good = 0;
    /** The receiver reports already sampled (outgoingEstimate's seen). @type {Record<string, string>} */
    this.reports = {};
  }

  /** From a pause until a try stays: the link is too narrow for the audio's usual rate. */
  get narrow() {
    return this.paused || this.trying;
  }

  /**
   * @param {number | undefined} estimate the connection's available outgoing bit rate, or
   *   undefined when the browser has none (such samples neither count nor reset)
   * @param {number} now
   * @returns {'pause' | 'resume' | null} what to do now
   */
  sample(estimate, now) {
    if (this.paused) {
      if (now < this.retryAt) return null;
      this.paused = false;
      this.retried = true;
      this.trying = true;
      this.good = 0;
      this.low = 0;
      this.graceUntil = now + RETRY_GRACE_MS;
      this.onSince = now;
      return 'resume';
    }
    if (estimate === undefined || now < this.graceUntil) return null;
    if (estimate >= VIDEO_PAUSE_BELOW) {
      this.low = 0;
      // A try whose samples after its grace are good, as many in a row as a pause takes:
      // the link carries video again. (One is not enough: a probe through a shaper's
      // token bucket can read high for a second on a link that has not recovered.)
      if (this.trying && ++this.good >= PAUSE_AFTER_SAMPLES) this.trying = false;
      return null;
    }
    // A try whose first sample after its grace is low pauses at once: the link was too
    // narrow a moment ago, and each second of video sent into it leaves the audio late for
    // several more.
    if (++this.low < (this.trying ? 1 : PAUSE_AFTER_SAMPLES)) return null;
    // A try that failed soon waits twice as long as the last; otherwise the first wait.
    this.wait = this.retried && now - this.onSince < STABLE_MS ? Math.min(this.wait * 2, RETRY_MAX_MS) : RETRY_FIRST_MS;
    this.paused = true;
    this.trying = false;
    this.low = 0;
    this.retryAt = now + this.wait;
    return 'pause';
  }
}

/**
 * The selected candidate pair's available outgoing bit rate (the sender's bandwidth
 * estimate), or undefined.
 * @param {RTCStatsReport} report
 * @returns {number | undefined}
 */
export function availableOutgoing(report) {
  /** @type {any} */
  let pair;
  report.forEach((/** @type {any} */ v) => {
    if (v.type === 'transport' && v.selectedCandidatePairId) pair = report.get(v.selectedCandidatePairId);
  });
  const bps = pair?.availableOutgoingBitrate;
  return typeof bps === 'number' && bps > 0 ? bps : undefined;
}

/**
 * What a browser whose candidate pairs carry no `availableOutgoingBitrate` (Firefox) is
 * judged by instead: the peer's receiver reports on what we send (decision 78). A report
 * with a round-trip time of at least this (seconds) reads as low: a link too narrow for
 * what is sent fills its queue. (Not the fraction lost: the first report on a video tried
 * again counts the losses from before its pause, 34% in a run on a link open again.)
 */
export const CONGESTED_RTT_S = 0.7;

/**
 * The connection's bandwidth estimate for the gate: the browser's own (from 'estimate'),
 * or, where it has none, a stand-in from the peer's receiver reports (from 'reports'): 0
 * when the newest shows the link's queue full, VIDEO_PAUSE_BELOW (a good sample) when not,
 * and nothing (the sample neither counts nor resets) when no report came since the last
 * sample. Only new reports count: the one on our video from before a pause still reads
 * congested when the video is tried again, and the audio's come only every 5 s or so. The
 * video's (about one a second while it is sent) are preferred; the audio's serve while the
 * video is paused.
 * @param {RTCStatsReport} report
 * @param {Record<string, string>} seen the reports already taken, by SSRC; the caller
 *   keeps it from one sample of the connection to the next
 * @returns {{bps: number | undefined, from: 'estimate' | 'reports', rtt?: number}}
 */
export function outgoingEstimate(report, seen) {
  const bps = availableOutgoing(report);
  if (bps !== undefined) return {bps, from: 'estimate'};
  /** @type {Record<string, number>} the highest round-trip time of the new reports, by kind */
  const fresh = {};
  report.forEach((/** @type {any} */ v) => {
    if (v.type !== 'remote-inbound-rtp' || typeof v.roundTripTime !== 'number') return;
    const key = `${v.roundTripTimeMeasurements ?? ''} ${v.roundTripTime} ${v.packetsLost}`;
    if (seen[v.ssrc] === key) return; // by stream: a simulcast camera has one per layer
    seen[v.ssrc] = key;
    fresh[v.kind] = Math.max(fresh[v.kind] ?? 0, v.roundTripTime);
  });
  const rtt = fresh.video ?? fresh.audio;
  if (rtt === undefined) return {bps: undefined, from: 'reports'};
  return {bps: rtt >= CONGESTED_RTT_S ? 0 : VIDEO_PAUSE_BELOW, from: 'reports', rtt};
}

/**
 * The video senders of a connection that have video to send (a camera that is on, a
 * screen): an observer's connection, or one whose camera is off, has none and never reads
 * as paused.
 * @param {RTCPeerConnection} pc
 * @returns {RTCRtpSender[]}
 */
export function videoSenders(pc) {
  return pc.getSenders().filter((s) => s.track?.kind === 'video' && s.track.enabled && s.track.readyState === 'live');
}

/**
 * Sets each encoding of every video sender of a connection active or not, as on(sender,
 * encoding) says; a sender whose encodings are already so is left alone (no
 * setParameters).
 * @param {RTCPeerConnection} pc
 * @param {(sender: RTCRtpSender, encoding: RTCRtpEncodingParameters) => boolean} on
 */
export async function setVideoEncodings(pc, on) {
  for (const s of pc.getSenders()) {
    if (s.track?.kind !== 'video') continue;
    const params = s.getParameters();
    if (!params.encodings?.length) continue;
    let changed = false;
    for (const e of params.encodings) {
      const want = on(s, e);
      if (e.active !== want) {
        e.active = want;
        changed = true;
      }
    }
    if (changed) await s.setParameters(params).catch((err) => console.warn('bedside: video encodings', err));
  }
}

/**
 * What a peer connection's video sends while its gate tries the link again (decision 76):
 * a quarter of its size, at most the SFU's lowest layer's rate, as a pub connection's try
 * sends that layer alone.
 */
export const TRY_VIDEO = Object.freeze({scaleResolutionDownBy: 4, maxBitrate: 150_000});

/**
 * Sets a connection's video encodings to TRY_VIDEO while its gate tries (on), or back to
 * the whole picture at the browser's rate; simulcast encodings (with a rid: the pub
 * connection's, which try with their lowest layer instead) and senders already so are
 * left alone.
 * @param {RTCPeerConnection} pc
 * @param {boolean} on
 */
export async function setVideoTry(pc, on) {
  for (const s of pc.getSenders()) {
    if (s.track?.kind !== 'video') continue;
    const params = s.getParameters();
    let changed = false;
    for (const e of params.encodings ?? []) {
      if (e.rid) continue;
      const scale = on ? TRY_VIDEO.scaleResolutionDownBy : 1;
      if ((e.scaleResolutionDownBy ?? 1) !== scale) {
        e.scaleResolutionDownBy = scale;
        changed = true;
      }
      if (on && e.maxBitrate !== TRY_VIDEO.maxBitrate) {
        e.maxBitrate = TRY_VIDEO.maxBitrate;
        changed = true;
      } else if (!on && e.maxBitrate !== undefined) {
        delete e.maxBitrate;
        changed = true;
      }
    }
    if (changed) await s.setParameters(params).catch((err) => console.warn('bedside: video try', err));
  }
}

/**
 * Caps the audio a connection sends at bps (Opus's target follows it), or lifts the cap
 * (undefined): AUDIO_NARROW_BPS while its gate says narrow. A sender already so is left
 * alone (no setParameters).
 * @param {RTCPeerConnection} pc
 * @param {number | undefined} bps
 */
export async function setAudioBitrate(pc, bps) {
  for (const s of pc.getSenders()) {
    if (s.track?.kind !== 'audio') continue;
    const params = s.getParameters();
    const e = params.encodings?.[0];
    if (!e || e.maxBitrate === bps) continue;
    if (bps === undefined) delete e.maxBitrate;
    else e.maxBitrate = bps;
    await s.setParameters(params).catch((err) => console.warn('bedside: audio bit rate', err));
  }
}

/**
 * Stops or restarts what a peer connection sends of its video by its transceivers'
 * directions (a renegotiation): a paused encoding keeps its send stream, which goes on
 * answering the peer's NACKs from its packet history (no new packets age it out) for as
 * long as the peer asks, at up to the pacing rate of the low estimate; on a link that
 * leaves room only for the audio, those retransmissions of video sent before the pause
 * took audio packets down with them. Without a direction to send, a transceiver's send
 * stream goes, and its retransmissions with it (decision 66). Only transceivers whose
 * sender has a video track change: those are the ones that send when not paused.
 * @param {RTCPeerConnection} pc
 * @param {boolean} send
 */
export function setVideoDirection(pc, send) {
  for (const t of pc.getTransceivers()) {
    if (t.currentDirection === 'stopped' || t.sender.track?.kind !== 'video') continue;
    const d = t.direction;
    if (send && d === 'recvonly') t.direction = 'sendrecv';
    else if (send && d === 'inactive') t.direction = 'sendonly';
    else if (!send && d === 'sendrecv') t.direction = 'recvonly';
    else if (!send && d === 'sendonly') t.direction = 'inactive';
  }
}
