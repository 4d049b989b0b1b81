// Cameras and microphones: getUserMedia with the saved choice, device lists, the microphone
// level meter and error messages a patient can act on.

const STORAGE_KEY = 'bedside.devices';

/** @typedef {{audio?: string, video?: string}} DeviceChoice device ids; absent = default */

/**
 * @typedef {{title: string, advice: string, kind: 'denied' | 'missing' | 'busy' | 'insecure' | 'other'}} MediaProblem
 */

/**
 * @typedef {{stream: MediaStream, audioOnly: boolean, videoProblem: MediaProblem | null}} MediaResult
 */

/** @returns {DeviceChoice} */
export function loadDeviceChoice() {
  try {
    const raw = localStorage.getItem(STORAGE_KEY);
    if (!raw) return {};
    const v = JSON.parse(raw);
    /** @type {DeviceChoice} */
    const out = {};
    if (v && typeof v.audio === 'string' && v.audio) out.audio = v.audio;
    if (v && typeof v.video === 'string' && v.video) out.video = v.video;
    return out;
  } catch {
    return {};
  }
}

/** @param {DeviceChoice} choice */
export function saveDeviceChoice(choice) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({audio: choice.audio || '', video: choice.video || ''}));
  } catch {
    // Private browsing may refuse storage; the choice then lasts only for this page.
  }
}

/** True when this page may ask for camera and microphone at all. */
export function mediaAvailable() {
  return Boolean(globalThis.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

/**
 * @param {string | undefined} id
 * @returns {boolean | MediaTrackConstraints}
 */
function constraint(id) {
  return id ? {deviceId: {exact: id}} : true;
}

/**
 * @param {unknown} err
 * @returns {string}
 */
function errName(err) {
  return err && typeof err === 'object' && 'name' in err ? String(err.name) : '';
}

/**
 * Opens camera and microphone. A saved device that is gone falls back to the default one; a
 * missing or busy camera falls back to audio only (videoProblem says why). Throws when no
 * microphone can be opened; describeMediaError turns the error into words.
 * @param {DeviceChoice} [choice]
 * @param {{video?: boolean}} [opts]
 * @returns {Promise<MediaResult>}
 */
export async function openMedia(choice = {}, opts = {}) {
  if (!mediaAvailable()) {
    const err = new Error('camera and microphone need a secure page');
    err.name = 'InsecureContextError';
    throw err;
  }
  const gum = (/** @type {MediaStreamConstraints} */ c) => navigator.mediaDevices.getUserMedia(c);
  const wantVideo = opts.video !== false;
  /** @type {MediaProblem | null} */
  let videoProblem = null;
  if (wantVideo) {
    try {
      return {stream: await gum({audio: constraint(choice.audio), video: constraint(choice.video)}),
        audioOnly: false, videoProblem: null};
    } catch (err) {
      const name = errName(err);
      if (name === 'OverconstrainedError' || (name === 'NotFoundError' && (choice.audio || choice.video))) {
        // A saved device was unplugged: try the default devices.
        try {
          return {stream: await gum({audio: true, video: true}), audioOnly: false, videoProblem: null};
        } catch (err2) {
          if (errName(err2) === 'NotAllowedError' || errName(err2) === 'SecurityError') throw err2;
          videoProblem = describeMediaError(err2);
        }
      } else if (name === 'NotAllowedError' || name === 'SecurityError') {
        throw err;
      } else {
        videoProblem = describeMediaError(err);
      }
    }
  }
  // Audio only: no camera, a busy camera, or the caller asked for none.
  let stream;
  try {
    stream = await gum({audio: constraint(choice.audio), video: false});
  } catch (err) {
    if (choice.audio && (errName(err) === 'OverconstrainedError' || errName(err) === 'NotFoundError')) {
      stream = await gum({audio: true, video: false});
    } else {
      throw err;
    }
  }
  return {stream, audioOnly: true, videoProblem};
}

/**
 * Opens one kind of device alone (to switch camera or microphone during a call).
 * @param {'audio' | 'video'} kind
 * @param {string | undefined} deviceId
 * @returns {Promise<MediaStreamTrack>}
 */
export async function openTrack(kind, deviceId) {
  const stream = await navigator.mediaDevices.getUserMedia(
    kind === 'audio' ? {audio: constraint(deviceId)} : {video: constraint(deviceId)});
  const track = stream.getTracks()[0];
  if (!track) throw new Error('no track');
  return track;
}

/**
 * The cameras and microphones the browser reports (labels appear once permission is given).
 * @returns {Promise<{cameras: MediaDeviceInfo[], mics: MediaDeviceInfo[]}>}
 */
export async function listDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return {cameras: [], mics: []};
  const all = await navigator.mediaDevices.enumerateDevices();
  // Before permission is given, browsers list devices without ids or labels: keep them, so
  // the pickers can say "after you allow access" rather than "none found".
  return {
    cameras: all.filter((d) => d.kind === 'videoinput'),
    mics: all.filter((d) => d.kind === 'audioinput'),
  };
}

/**
 * Fills a select with devices and selects the one in use.
 * @param {HTMLSelectElement} select
 * @param {MediaDeviceInfo[]} devices
 * @param {string | undefined} currentId
 * @param {string} noun "Camera" or "Microphone", for unnamed devices
 */
export function fillDeviceSelect(select, devices, currentId, noun) {
  select.replaceChildren();
  const usable = devices.filter((d) => d.deviceId);
  if (usable.length === 0) {
    const opt = document.createElement('option');
    opt.value = '';
    opt.textContent = devices.length === 0 ? `No ${noun.toLowerCase()} found` : 'Shown once you allow access';
    select.append(opt);
    select.disabled = true;
    return;
  }
  devices = usable;
  devices.forEach((d, i) => {
    const opt = document.createElement('option');
    opt.value = d.deviceId;
    opt.textContent = d.label || `${noun} ${i + 1}`;
    select.append(opt);
  });
  select.disabled = false;
  if (currentId && devices.some((d) => d.deviceId === currentId)) select.value = currentId;
}

/**
 * The device id a track is reading from, if the browser says.
 * @param {MediaStreamTrack | undefined} track
 * @returns {string | undefined}
 */
export function trackDeviceId(track) {
  if (!track) return undefined;
  const id = track.getSettings().deviceId;
  return id || undefined;
}

/** @param {MediaStream | null | undefined} stream */
export function stopStream(stream) {
  if (!stream) return;
  for (const t of stream.getTracks()) t.stop();
}

/**
 * What went wrong with camera or microphone, and what to do about it, in plain words.
 * @param {unknown} err
 * @returns {MediaProblem}
 */
export function describeMediaError(err) {
  switch (errName(err)) {
    case 'NotAllowedError':
    case 'PermissionDeniedError':
    case 'SecurityError':
      return {
        kind: 'denied',
        title: 'Your browser is blocking the camera and microphone.',
        advice: 'Click the camera or lock icon in the address bar at the top of the window, choose ' +
          '"Allow" for the camera and the microphone, then press "Try again". On a phone, check ' +
          'that your browser may use the camera and microphone in the phone\'s settings.',
      };
    case 'NotFoundError':
    case 'DevicesNotFoundError':
    case 'OverconstrainedError':
      return {
        kind: 'missing',
        title: 'No microphone was found.',
        advice: 'Connect a microphone or a headset (or use a phone, tablet or laptop that has one), ' +
          'then press "Try again".',
      };
    case 'NotReadableError':
    case 'TrackStartError':
    case 'AbortError':
      return {
        kind: 'busy',
        title: 'The camera or microphone is in use by another program, or could not be started.',
        advice: 'Close other programs or browser tabs that may use it (video calls, camera apps), ' +
          'then press "Try again". If that does not help, unplug the device and plug it back in.',
      };
    case 'InsecureContextError':
      return {
        kind: 'insecure',
        title: 'This page cannot use the camera because it was not opened over a secure connection.',
        advice: 'Open the link exactly as you received it (it starts with https://), or ask your clinic for help.',
      };
    default:
      return {
        kind: 'other',
        title: 'The camera and microphone could not be started.',
        advice: 'Press "Try again". If it still does not work, restart your browser or try another browser.',
      };
  }
}

/**
 * The camera part of a problem, for the audio-only fallback message.
 * @param {MediaProblem} p
 * @returns {string}
 */
export function describeVideoProblem(p) {
  if (p.kind === 'missing') return 'No camera was found. You can join with sound only, or connect a camera and press "Try again".';
  if (p.kind === 'busy') return 'The camera is in use by another program. Close it and press "Try again", or join with sound only.';
  return 'The camera could not be started. You can join with sound only, or press "Try again".';
}

/**
 * Shows a microphone's level in a <meter> (0 to 1), from an AnalyserNode.
 */
export class LevelMeter {
  /**
   * @param {MediaStream} stream
   * @param {HTMLMeterElement} meter
   */
  constructor(stream, meter) {
    this.meter = meter;
    /** @type {AudioContext | null} */
    this.ctx = null;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;
    const track = stream.getAudioTracks()[0];
    if (!track) return;
    const Ctx = globalThis.AudioContext || /** @type {any} */ (globalThis).webkitAudioContext;
    if (!Ctx) return;
    const ctx = /** @type {AudioContext} */ (new Ctx());
    this.ctx = ctx;
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    let level = 0;
    this.timer = setInterval(() => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      const rms = Math.sqrt(sum / buf.length);
      // Speech sits around 0.02-0.2 RMS; scale so normal talking fills most of the meter.
      const target = Math.min(1, rms * 5);
      level = target > level ? target : level * 0.85 + target * 0.15;
      meter.value = Math.round(level * 100) / 100;
    }, 80);
  }

  /** True while the browser holds the audio context until the user clicks or types. */
  get suspended() {
    return Boolean(this.ctx && this.ctx.state === 'suspended');
  }

  /**
   * Calls fn whenever the audio context starts or stops.
   * @param {() => void} fn
   */
  onStateChange(fn) {
    if (this.ctx) this.ctx.onstatechange = fn;
  }

  /** Browsers start audio contexts suspended until the user clicks: call on a click. */
  resume() {
    if (this.ctx && this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
  }

  stop() {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    if (this.ctx) this.ctx.close().catch(() => {});
    this.ctx = null;
    this.meter.value = 0;
  }
}
