// The patient page (/v/{token}): device check, name, waiting room, the call, the end.
// The link token is sent only in the JSON bodies of POST /api/v1/link and /api/v1/link/join;
// it is never logged, stored or put anywhere else.

import {Call} from './call.js';
import {
  describeMediaError, describeVideoProblem, fillDeviceSelect, LevelMeter, listDevices, loadDeviceChoice,
  openMedia, saveDeviceChoice, stopStream, trackDeviceId,
} from './devices.js';
import {Signalling, defaultURL} from './protocol.js';
import {api, ApiError, byId, CallView, formatDateTime, setCallStatus, showOnly} from './ui.js';

/**
 * @typedef {{id: string, state: string, clinician_name?: string, scheduled_at?: string | null}} LinkVisit
 * @typedef {{id: string, name: string, admitted: boolean}} LinkParticipant
 */

const token = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() ?? '');

const stageCheck = byId('stage-check', HTMLElement);
const stageWaiting = byId('stage-waiting', HTMLElement);
const stageCall = byId('stage-call', HTMLElement);
const stageEnded = byId('stage-ended', HTMLElement);
const stages = [stageCheck, stageWaiting, stageCall, stageEnded];

const statusEl = byId('call-status', HTMLElement);
const visitInfo = byId('visit-info', HTMLElement);
const checkIntro = byId('check-intro', HTMLElement);
const preview = byId('preview', HTMLVideoElement);
const micLevel = byId('mic-level', HTMLMeterElement);
const micHint = byId('mic-hint', HTMLElement);
const cameraSelect = byId('camera-select', HTMLSelectElement);
const micSelect = byId('mic-select', HTMLSelectElement);
const deviceError = byId('device-error', HTMLElement);
const retryDevices = byId('retry-devices', HTMLButtonElement);
const joinForm = byId('join-form', HTMLFormElement);
const nameInput = byId('patient-name-input', HTMLInputElement);
const joinError = byId('join-error', HTMLElement);
const join = byId('join', HTMLButtonElement);
const waitingPreview = byId('waiting-preview', HTMLVideoElement);
const leaveWaiting = byId('leave-waiting', HTMLButtonElement);
const leave = byId('leave', HTMLButtonElement);
const endedTitle = byId('ended', HTMLElement);
const endedDetail = byId('ended-detail', HTMLElement);
const rejoin = byId('rejoin', HTMLButtonElement);
const connectError = byId('connect-error', HTMLElement);
const networkCheck = byId('network-check', HTMLElement);

/** @type {LinkVisit | null} */
let visit = null;
/** @type {MediaStream | null} */
let stream = null;
/** @type {LevelMeter | null} */
let meter = null;
/** True while camera and microphone are usable enough to join (at least a microphone). */
let mediaReady = false;
let previewGeneration = 0;
/** @type {Signalling | null} */
let signalling = null;
/** @type {Call | null} */
let call = null;
/** @type {CallView | null} */
let view = null;
let finished = false;
let leaving = false;
/** True for a guest link of role observer: sees and hears the visit, publishes nothing. */
let observer = false;

/** @param {HTMLElement} el @param {string} text */
function setText(el, text) {
  el.textContent = text;
  el.hidden = !text;
}

/** @param {HTMLElement} stage */
function show(stage) {
  showOnly(stages, stage);
  // The status line belongs to the waiting room and the call; the other stages say it all.
  statusEl.hidden = stage === stageCheck || stage === stageEnded;
}

function clinicianName() {
  return visit?.clinician_name || 'your clinician';
}

/**
 * The end of the page's life: the visit ended, the link stopped working, or the patient left.
 * keepSignalling leaves the signalling to its caller (a `leave` still on its way).
 * @param {string} headline
 * @param {string} detail
 * @param {{state?: 'ended' | 'error', rejoin?: boolean, keepSignalling?: boolean}} [opts]
 */
function finish(headline, detail, opts = {}) {
  if (finished) return;
  finished = true;
  endedTitle.textContent = headline;
  endedDetail.textContent = detail;
  rejoin.hidden = !opts.rejoin;
  setCallStatus(opts.state ?? 'ended', headline);
  view?.stop();
  call?.close();
  if (!opts.keepSignalling) signalling?.close();
  connectError.hidden = true;
  meter?.stop();
  stopStream(stream);
  stream = null;
  preview.srcObject = null;
  waitingPreview.srcObject = null;
  show(stageEnded);
  endedTitle.focus?.();
}

function finishEnded() {
  finish('This visit has ended.', 'Your camera and microphone are off. You can close this page.');
}

/**
 * A link problem from the API: the page cannot go on.
 * @param {unknown} err
 */
function finishLinkError(err) {
  if (err instanceof ApiError && err.code === 'visit_ended') {
    finishEnded();
    return;
  }
  const msg = err instanceof ApiError ? err.message : 'Cannot reach the server.';
  if (err instanceof ApiError && ['link_unknown', 'link_expired', 'link_revoked', 'not_found'].includes(err.code)) {
    finish('This link no longer works.', `${msg} Contact your clinic if you still need your visit.`, {state: 'error'});
  } else {
    finish('Something went wrong.', `${msg} Reload the page to try again.`, {state: 'error', rejoin: true});
  }
}

/** Status line during waiting and the call. */
function updateStatus() {
  if (finished || !signalling || !call) return;
  if (signalling.state === 'reconnecting') {
    setCallStatus('reconnecting', 'Reconnecting… Please keep this page open.');
    return;
  }
  if (signalling.state !== 'open') {
    setCallStatus('connecting', 'Connecting…');
    return;
  }
  if (!call.admitted) {
    setCallStatus('waiting', `You are in the waiting room. ${capitalize(clinicianName())} will admit you shortly.`);
    return;
  }
  const present = [...call.peers.values()].filter((p) => !call?.absent.has(p.id));
  const failed = present.some((p) => call?.failedPeers.has(p.id)) || (present.length > 0 && call.failedPeers.has('sfu'));
  connectError.hidden = !failed;
  if (failed) {
    connectError.textContent = 'We could not connect your call. Your network may be blocking video calls. ' +
      'Try another network (for example your phone\'s mobile data instead of Wi-Fi), or call your clinic.';
    setCallStatus('error', 'We could not connect your call.');
    return;
  }
  if (present.length > 0) {
    setCallStatus('in_call', `In call with ${present.map((p) => p.name || 'your clinician').join(', ')}.`);
  } else if (call.peers.size > 0) {
    setCallStatus('in_call', 'The connection was lost. Waiting for the other side to come back…');
  } else {
    setCallStatus('in_call', `Waiting for ${clinicianName()} to join the call…`);
  }
}

/** @param {string} s */
function capitalize(s) {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

// --- device check ----------------------------------------------------------------------

/** Updates the join button: a name and at least a microphone are needed. */
function updateJoin() {
  join.disabled = !mediaReady;
}

/** The current choice from the pickers (empty = browser default). */
function pickerChoice() {
  return {audio: micSelect.value || undefined, video: cameraSelect.value || undefined};
}

/**
 * (Re)starts the preview with the chosen devices.
 * @param {{audio?: string, video?: string}} choice
 */
async function startPreview(choice) {
  const gen = ++previewGeneration;
  meter?.stop();
  meter = null;
  micHint.hidden = true;
  stopStream(stream);
  stream = null;
  preview.srcObject = null;
  mediaReady = false;
  updateJoin();
  setText(deviceError, '');
  retryDevices.hidden = true;
  retryDevices.disabled = true;
  try {
    const res = await openMedia(choice);
    if (gen !== previewGeneration) {
      stopStream(res.stream);
      return;
    }
    stream = res.stream;
    preview.srcObject = stream;
    preview.play().catch(() => {});
    preview.closest('figure')?.classList.toggle('no-video', res.audioOnly);
    const m = new LevelMeter(stream, micLevel);
    meter = m;
    const hint = () => {
      micHint.hidden = !(meter === m && m.suspended);
    };
    m.onStateChange(hint);
    hint();
    mediaReady = true;
    if (res.videoProblem) {
      setText(deviceError, describeVideoProblem(res.videoProblem));
      retryDevices.hidden = false;
      join.textContent = 'Join with sound only';
    } else {
      join.textContent = 'Join the visit';
    }
    saveDeviceChoice({audio: trackDeviceId(stream.getAudioTracks()[0]),
      video: trackDeviceId(stream.getVideoTracks()[0])});
  } catch (err) {
    if (gen !== previewGeneration) return;
    const p = describeMediaError(err);
    let text = `${p.title} ${p.advice}`;
    if (p.kind === 'missing') {
      const {cameras, mics} = await listDevices().catch(() => ({cameras: [], mics: []}));
      if (cameras.length === 0 && mics.length === 0) {
        text = 'No camera or microphone was found. Connect a headset with a microphone (a webcam with a ' +
          'microphone is even better), or use a phone, tablet or laptop that has them, then press "Try again".';
      }
    }
    setText(deviceError, text);
    retryDevices.hidden = false;
    preview.closest('figure')?.classList.add('no-video');
  } finally {
    if (gen === previewGeneration) {
      retryDevices.disabled = false;
      updateJoin();
      await refreshDeviceLists();
    }
  }
}

async function refreshDeviceLists() {
  const {cameras, mics} = await listDevices().catch(() => ({cameras: [], mics: []}));
  fillDeviceSelect(cameraSelect, cameras, trackDeviceId(stream?.getVideoTracks()[0]), 'Camera');
  fillDeviceSelect(micSelect, mics, trackDeviceId(stream?.getAudioTracks()[0]), 'Microphone');
}

cameraSelect.addEventListener('change', () => {
  saveDeviceChoice(pickerChoice());
  startPreview(pickerChoice());
});
micSelect.addEventListener('change', () => {
  saveDeviceChoice(pickerChoice());
  startPreview(pickerChoice());
});
retryDevices.addEventListener('click', () => startPreview(loadDeviceChoice()));
// Browsers start audio (and so the level meter) only after a click or a key press.
document.addEventListener('pointerdown', () => meter?.resume());
document.addEventListener('keydown', () => meter?.resume());

joinForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  setText(joinError, '');
  const name = nameInput.value.trim();
  if (!name) {
    setText(joinError, 'Please type your name, so your clinician knows who is waiting.');
    nameInput.focus();
    return;
  }
  if (name.length > 80) {
    setText(joinError, 'Your name is too long (80 characters at most).');
    nameInput.focus();
    return;
  }
  if (!observer && (!mediaReady || !stream)) return;
  join.disabled = true;
  const label = join.textContent;
  join.textContent = 'Joining…';
  try {
    const res = await api('POST', '/api/v1/link/join', {token, name});
    if (res?.visit) visit = {...visit, ...res.visit};
    meter?.stop();
    meter = null;
    previewGeneration++;
    preview.srcObject = null;
    startCall(observer ? null : stream);
  } catch (err) {
    join.disabled = false;
    join.textContent = label;
    if (err instanceof ApiError && err.code === 'invalid') {
      setText(joinError, err.message);
      nameInput.focus();
      return;
    }
    if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 429 && err.status !== 403) {
      finishLinkError(err);
      return;
    }
    setText(joinError, err instanceof ApiError ? err.message : 'Could not join. Check your connection and try again.');
  }
});

/**
 * The connectivity test of the device check: with the short-lived relay credential the server
 * gives for this link, can this network reach the video service? The result is advice only;
 * joining is never blocked by it.
 */
async function checkNetwork() {
  setText(networkCheck, 'Checking your connection…');
  networkCheck.dataset.state = 'checking';
  /** @type {RTCPeerConnection | null} */
  let pc = null;
  let ok = false;
  try {
    const ice = await api('POST', '/api/v1/link/ice', {token});
    const servers = Array.isArray(ice?.ice_servers) ? ice.ice_servers : [];
    const relay = servers.some((/** @type {any} */ s) => typeof s.username === 'string' && s.username !== '');
    pc = new RTCPeerConnection({iceServers: servers, iceTransportPolicy: relay ? 'relay' : 'all'});
    const p = pc;
    ok = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), 8000);
      p.onicecandidate = (ev) => {
        if (ev.candidate && (!relay || ev.candidate.type === 'relay')) {
          clearTimeout(timer);
          resolve(true);
        }
      };
      p.createDataChannel('check');
      p.createOffer().then((o) => p.setLocalDescription(o)).catch(() => resolve(false));
    });
  } catch {
    ok = false;
  } finally {
    pc?.close();
  }
  networkCheck.dataset.state = ok ? 'ok' : 'blocked';
  setText(networkCheck, ok ? 'Your connection is ready for the video call.' :
    'Your network may block video calls. You can still join; if the call does not connect, try another network ' +
    '(for example mobile data instead of Wi-Fi).');
}

// --- waiting room and call -------------------------------------------------------------

/**
 * @param {MediaStream | null} local null for an observer
 * @param {boolean} [admitted] the participant was admitted before (a reload): show the call
 *   at once instead of the waiting room.
 */
function startCall(local, admitted = false) {
  // ?as=participant: join as the link's participant even if this browser also holds a staff session.
  signalling = new Signalling({visit: visit?.id, url: defaultURL() + '?as=participant'});
  call = new Call({signalling, localStream: local});
  /** @type {any} */ (window).bedside = {call};
  view = new CallView(call);
  waitingPreview.srcObject = local;
  if (local) waitingPreview.play().catch(() => {});
  waitingPreview.closest('figure')?.classList.toggle('no-video', !local || local.getVideoTracks().length === 0);
  setCallStatus('connecting', admitted ? 'Reconnecting…' : 'Connecting…');
  show(admitted ? stageCall : stageWaiting);

  signalling.on('state', updateStatus);
  signalling.on('welcome', (m) => {
    if (finished) return; // a reconnect that only carries the page's `leave`
    show(m.admitted ? stageCall : stageWaiting);
    updateStatus();
  });
  signalling.on('admitted', () => {
    if (finished) return;
    show(stageCall);
    waitingPreview.srcObject = null;
    updateStatus();
  });
  const removedText = ['You have been removed from the visit.',
    'The clinician has ended your part in this visit. Contact your clinic if you think this is a mistake.'];
  signalling.on('ended', (m) => {
    if (m.reason === 'removed') {
      finish(removedText[0], removedText[1]);
    } else if (m.reason === 'revoked') {
      finish('This visit has ended.', 'The clinic has cancelled this link. Contact your clinic if you still need your visit.');
    } else {
      finishEnded();
    }
  });
  signalling.on('closed', (ev) => {
    if (ev.code === 'removed') {
      finish(removedText[0], removedText[1]);
    } else if (ev.reason === 'ended' || ev.code === 'visit_ended') {
      finishEnded();
    } else if (ev.reason === 'left') {
      finish(...leftText, {rejoin: true});
    } else if (ev.reason === 'replaced') {
      finish('This visit is open in another window.', 'You joined from another window or tab, so this one stopped. ' +
        'You can close this page.', {state: 'error'});
    } else if (ev.reason === 'error') {
      if (ev.code === 'link_expired' || ev.code === 'link_revoked') {
        finish('This link no longer works.', `${ev.message || ''} Contact your clinic if you still need your visit.`.trim(),
          {state: 'error'});
      } else {
        finish('Could not connect to your visit.', `${ev.message || ''} Reload the page to try again.`.trim(),
          {state: 'error', rejoin: true});
      }
    }
  });
  for (const ev of /** @type {const} */ (['peer-added', 'peer-updated', 'peer-removed', 'connection-state', 'connect-failed', 'connect-ok'])) {
    call.on(ev, updateStatus);
  }
  signalling.connect();
  window.addEventListener('online', () => signalling?.reconnectNow());
}

/** What the page says once the patient left. */
const leftText = /** @type {const} */ (['You have left the visit.',
  'Your camera and microphone are off. To go back in, press "Rejoin the visit".']);

/**
 * How long a page whose patient left keeps its signalling for the `leave` to reach the
 * server (through a reconnect, if the socket was dead or down).
 */
const LEAVE_WAIT_MS = 30_000;

/** @param {string} question */
function leaveVisit(question) {
  if (finished || leaving) return;
  if (!confirm(question)) return;
  leaving = true;
  const s = signalling;
  if (!s) {
    finish(...leftText, {rejoin: true});
    return;
  }
  // The server must hear it, or the others see a connection lost rather than someone who
  // left. `leave` is confirmed like chat: sent into a socket that turns out dead, or while
  // the page reconnects, it goes after the next `welcome`. The page says at once that the
  // patient left (camera and microphone off) and keeps only its signalling for that; the
  // server's answer (bye "left") closes it, or LEAVE_WAIT_MS does.
  s.send({type: 'leave'});
  finish(...leftText, {rejoin: true, keepSignalling: true});
  setTimeout(() => s.close(), LEAVE_WAIT_MS);
}

leave.addEventListener('click', () => leaveVisit('Leave the visit?'));
leaveWaiting.addEventListener('click', () => leaveVisit('Leave the waiting room?'));
rejoin.addEventListener('click', () => location.reload());

// --- start -----------------------------------------------------------------------------

async function start() {
  if (!token) {
    finish('This link is not complete.', 'Open the link exactly as you received it.', {state: 'error'});
    return;
  }
  let link;
  try {
    link = await api('POST', '/api/v1/link', {token});
  } catch (err) {
    finishLinkError(err);
    return;
  }
  visit = link.visit ?? null;
  if (visit?.state === 'ended') {
    finishEnded();
    return;
  }
  const when = formatDateTime(visit?.scheduled_at);
  visitInfo.textContent = visit?.clinician_name ? `Visit with ${visit.clinician_name}${when ? `, ${when}` : ''}` : when;
  if (visit?.clinician_name) checkIntro.textContent =
    `Before you join ${visit.clinician_name}: you should see yourself below. Say something: the green bar should move.`;

  observer = link.invite?.role === 'observer';
  /** @type {LinkParticipant | null} */
  const participant = link.participant ?? null;
  if (observer) {
    // An observer sees and hears the visit; camera and microphone stay off, so the device
    // check is only the connection test and the name.
    if (participant) {
      nameInput.value = participant.name;
      startCall(null, participant.admitted);
      return;
    }
    checkIntro.textContent = `You are invited to watch and listen${visit?.clinician_name ? ` to your visit with ${visit.clinician_name}` : ''}. ` +
      'Your camera and microphone stay off.';
    preview.closest('figure')?.setAttribute('hidden', '');
    for (const el of [micLevel, cameraSelect, micSelect]) el.closest('.field')?.setAttribute('hidden', '');
    show(stageCheck);
    checkNetwork();
    mediaReady = true;
    updateJoin();
    if (!nameInput.value) nameInput.focus();
    return;
  }
  if (participant) {
    // A reload: skip the device check and go back in with the saved devices.
    nameInput.value = participant.name;
    try {
      const res = await openMedia(loadDeviceChoice());
      stream = res.stream;
      startCall(res.stream, participant.admitted);
      return;
    } catch (err) {
      // The devices are not available without asking: do the device check again; joining
      // again keeps the same participant (and its admission).
    }
  }
  show(stageCheck);
  checkNetwork();
  await startPreview(loadDeviceChoice());
  if (!nameInput.value) nameInput.focus();
}

start();
