// The clinician's view of one visit (/console/visits/{id}): the waiting room, admit, the call.

import {Call} from './call.js';
import {
  describeMediaError, describeVideoProblem, fillDeviceSelect, listDevices, loadDeviceChoice, openMedia,
  openTrack, saveDeviceChoice, stopStream, trackDeviceId,
} from './devices.js';
import {Signalling} from './protocol.js';
import {api, ApiError, byId, CallView, formatDateTime, formatSince, formatTime, setCallStatus} from './ui.js';

/** @typedef {import('./protocol.js').WaitingEntry} WaitingEntry */

/** How long `end` may take over the WebSocket before the page asks the HTTP API instead. */
const END_FALLBACK_MS = 4000;

const visitId = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop() ?? '');

const title = byId('visit-title', HTMLElement);
const timeEl = byId('visit-time', HTMLElement);
const endedEl = byId('ended', HTMLElement);
const callEl = byId('call', HTMLElement);
const waitingList = byId('waiting', HTMLElement);
const waitingEmpty = byId('waiting-empty', HTMLElement);
const waitingError = byId('waiting-error', HTMLElement);
const endVisit = byId('end-visit', HTMLButtonElement);
const cameraSelect = byId('camera-select', HTMLSelectElement);
const micSelect = byId('mic-select', HTMLSelectElement);
const deviceError = byId('device-error', HTMLElement);
const retryDevices = byId('retry-devices', HTMLButtonElement);
const connectError = byId('connect-error', HTMLElement);
const summaryList = byId('visit-summary', HTMLElement);
const summaryEmpty = byId('visit-summary-empty', HTMLElement);
const inviteForm = byId('invite-form', HTMLFormElement);
const inviteRole = byId('invite-role', HTMLSelectElement);
const inviteSubmit = byId('invite-submit', HTMLButtonElement);
const inviteError = byId('invite-error', HTMLElement);
const inviteResult = byId('invite-result', HTMLElement);
const inviteLink = byId('invite-link', HTMLInputElement);
const inviteCopy = byId('invite-copy', HTMLButtonElement);
const inviteStatus = byId('invite-status', HTMLElement);

/** How often the visit summary (who connected how) is refreshed during the call. */
const SUMMARY_EVERY_MS = 5000;

/** @type {Signalling | null} */
let signalling = null;
/** @type {Call | null} */
let call = null;
/** @type {CallView | null} */
let view = null;
/** @type {MediaStream | null} */
let localStream = null;
/** @type {WaitingEntry[]} */
let waiting = [];
let patientName = '';
let ended = false;

/** @param {HTMLElement} el @param {string} text */
function setError(el, text) {
  el.textContent = text;
  el.hidden = !text;
}

/** Says in #call-status where things stand. */
function updateStatus() {
  if (ended || !signalling || !call) return;
  if (signalling.state === 'reconnecting') {
    setCallStatus('reconnecting', 'Reconnecting to the server… The call goes on meanwhile.');
    return;
  }
  if (signalling.state !== 'open') {
    setCallStatus('connecting', 'Connecting…');
    return;
  }
  const present = [...call.peers.values()].filter((p) => !call?.absent.has(p.id));
  const failed = present.filter((p) => call?.failedPeers.has(p.id) || call?.failedPeers.has('sfu'));
  connectError.hidden = failed.length === 0;
  if (failed.length > 0) {
    const names = failed.map((p) => p.name || 'the patient').join(', ');
    connectError.textContent = `We could not connect your call with ${names}. Your network or theirs may be blocking ` +
      'video calls. Ask them to try another network (for example mobile data instead of Wi-Fi), or phone them.';
    setCallStatus('error', 'We could not connect your call.');
    return;
  }
  if (present.length > 0) {
    setCallStatus('in_call', `In call with ${present.map((p) => p.name || 'the patient').join(', ')}.`);
  } else if (call.peers.size > 0) {
    setCallStatus('in_call', 'The connection to the patient was lost. Waiting for them to come back…');
  } else if (waiting.length > 0) {
    const names = waiting.map((w) => w.name || 'The patient').join(', ');
    setCallStatus('waiting', `${names} ${waiting.length > 1 ? 'are' : 'is'} in the waiting room. Admit them when you are ready.`);
  } else {
    setCallStatus('waiting', `Waiting for ${patientName || 'the patient'} to open the link.`);
  }
}

/** Renders #waiting: one li[data-participant-id] per waiting person. */
function renderWaiting() {
  /** @type {Map<string, HTMLElement>} */
  const items = new Map();
  for (const li of waitingList.querySelectorAll('li')) {
    if (li instanceof HTMLElement) items.set(li.dataset.participantId ?? '', li);
  }
  for (const w of waiting) {
    let li = items.get(w.id);
    items.delete(w.id);
    if (!li) {
      li = document.createElement('li');
      li.dataset.participantId = w.id;
      const who = document.createElement('span');
      who.className = 'waiting-name';
      const since = document.createElement('span');
      since.className = 'waiting-since hint';
      const admit = document.createElement('button');
      admit.type = 'button';
      admit.className = 'admit primary';
      admit.textContent = 'Admit';
      const participant = w.id;
      admit.addEventListener('click', () => {
        if (!signalling) return;
        setError(waitingError, '');
        admit.disabled = true;
        admit.textContent = 'Admitting…';
        // Sent again after a reconnect if the socket was dead, while they still wait.
        signalling.send({type: 'admit', participant}, () => waiting.some((x) => x.id === participant));
      });
      li.append(who, since, admit);
      waitingList.append(li);
    }
    const name = w.name || 'Patient';
    li.dataset.role = w.role ?? 'patient';
    li.dataset.observer = String(Boolean(w.observer));
    /** @type {HTMLElement} */ (li.querySelector('.waiting-name')).textContent = name;
    const kind = w.observer ? 'guest, watching and listening only' : w.role === 'guest' ? 'guest' : '';
    let tag = li.querySelector('.waiting-kind');
    if (kind && !tag) {
      tag = document.createElement('span');
      tag.className = 'waiting-kind hint';
      li.querySelector('.waiting-name')?.after(tag);
    }
    if (tag) tag.textContent = kind ? ` (${kind})` : '';
    /** @type {HTMLElement} */ (li.querySelector('.waiting-since')).textContent =
      `waiting since ${formatTime(w.since)} (${formatSince(w.since)})`;
    li.querySelector('button.admit')?.setAttribute('aria-label', `Admit ${name}`);
  }
  for (const li of items.values()) li.remove();
  waitingEmpty.hidden = waiting.length > 0;
  updateStatus();
}

/**
 * @typedef {{candidate_type: string, protocol: string, relay_protocol?: string}} CandidateJSON
 * @typedef {{peer: string, path: string, local: CandidateJSON, remote: CandidateJSON}} ConnectionJSON
 * @typedef {{id: string, role: string, name: string, connections: ConnectionJSON[]}} ParticipantJSON
 */

/**
 * How one participant's media travelled, in words.
 * @param {ConnectionJSON} c
 * @returns {string}
 */
export function describePath(c) {
  const to = c.peer === 'sfu:pub' ? ' to the server (sending)' : c.peer === 'sfu:sub' ? ' from the server (receiving)' : '';
  if (c.path !== 'relayed') return `direct${to} (${c.local.protocol.toUpperCase()})`;
  if (c.local.candidate_type === 'relay') {
    const rp = (c.local.relay_protocol || 'udp').toUpperCase();
    return `through the relay${to} (TURN over ${rp})`;
  }
  return `through the relay${to} (on the other side)`;
}

/** Refreshes the visit summary: each participant's connection, direct or relayed. */
async function refreshSummary() {
  let v;
  try {
    v = await api('GET', `/api/v1/visits/${encodeURIComponent(visitId)}`);
  } catch {
    return;
  }
  /** @type {ParticipantJSON[]} */
  const ps = Array.isArray(v?.participants) ? v.participants : [];
  const items = [];
  for (const p of ps) {
    for (const c of p.connections ?? []) {
      const li = document.createElement('li');
      li.dataset.participantId = p.id;
      li.dataset.path = c.path;
      li.dataset.localType = c.local.candidate_type;
      li.dataset.relayProtocol = c.local.relay_protocol ?? '';
      const who = document.createElement('span');
      who.textContent = `${p.name || p.role}: `;
      const path = document.createElement('span');
      path.className = 'path';
      path.textContent = describePath(c);
      li.append(who, path);
      items.push(li);
    }
  }
  summaryList.replaceChildren(...items);
  summaryEmpty.hidden = items.length > 0;
}

/** The visit is over: say so and let go of camera and microphone. */
function showEnded() {
  if (ended) return;
  ended = true;
  setCallStatus('ended', 'This visit has ended.');
  endedEl.hidden = false;
  callEl.classList.add('is-ended');
  endVisit.disabled = true;
  inviteSubmit.disabled = true;
  waiting = [];
  waitingList.replaceChildren();
  waitingEmpty.hidden = false;
  connectError.hidden = true;
  refreshSummary();
  view?.stop();
  call?.close();
  signalling?.close();
  stopStream(localStream);
  localStream = null;
  for (const el of [cameraSelect, micSelect, retryDevices]) el.disabled = true;
}

/** Fills the device pickers with what the browser has, marking the devices in use. */
async function refreshDeviceLists() {
  const {cameras, mics} = await listDevices();
  fillDeviceSelect(cameraSelect, cameras, trackDeviceId(localStream?.getVideoTracks()[0]), 'Camera');
  fillDeviceSelect(micSelect, mics, trackDeviceId(localStream?.getAudioTracks()[0]), 'Microphone');
}

/** Opens camera and microphone with the saved choice; problems are shown, not fatal. */
async function acquireMedia() {
  setError(deviceError, '');
  retryDevices.hidden = true;
  try {
    const res = await openMedia(loadDeviceChoice());
    if (res.videoProblem) {
      setError(deviceError, describeVideoProblem(res.videoProblem));
      retryDevices.hidden = false;
    }
    return res.stream;
  } catch (err) {
    const p = describeMediaError(err);
    setError(deviceError, `${p.title} ${p.advice}`);
    retryDevices.hidden = false;
    const details = deviceError.closest('details');
    if (details) details.open = true;
    return null;
  }
}

function saveChoice() {
  saveDeviceChoice({
    audio: trackDeviceId(localStream?.getAudioTracks()[0]),
    video: trackDeviceId(localStream?.getVideoTracks()[0]),
  });
}

/**
 * @param {'audio' | 'video'} kind
 * @param {string} deviceId
 */
async function switchDevice(kind, deviceId) {
  if (!call || !deviceId) return;
  try {
    let track;
    try {
      track = await openTrack(kind, deviceId);
    } catch (err) {
      // Some systems open only one camera at a time: let go of the old one and try again.
      if (!(err instanceof Error) || err.name !== 'NotReadableError') throw err;
      for (const t of call.localStream.getTracks()) if (t.kind === kind) t.stop();
      track = await openTrack(kind, deviceId);
    }
    await call.replaceTrack(track);
    localStream = call.localStream;
    view?.showLocal();
    saveChoice();
    setError(deviceError, '');
  } catch (err) {
    const p = describeMediaError(err);
    setError(deviceError, `${p.title} ${p.advice}`);
  }
}

cameraSelect.addEventListener('change', () => switchDevice('video', cameraSelect.value));
micSelect.addEventListener('change', () => switchDevice('audio', micSelect.value));
retryDevices.addEventListener('click', async () => {
  if (!call) return;
  const stream = await acquireMedia();
  if (!stream) return;
  for (const track of stream.getTracks()) await call.replaceTrack(track);
  localStream = call.localStream;
  view?.showLocal();
  saveChoice();
  await refreshDeviceLists();
});

inviteForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  setError(inviteError, '');
  inviteSubmit.disabled = true;
  try {
    const g = await api('POST', `/api/v1/visits/${encodeURIComponent(visitId)}/guests`, {role: inviteRole.value});
    inviteLink.value = typeof g?.guest_url === 'string' ? g.guest_url : '';
    inviteStatus.textContent = g?.role === 'observer'
      ? 'Send this link to the guest. They will see and hear the visit; their camera and microphone stay off.'
      : 'Send this link to the guest. They will take part with camera and microphone.';
    inviteResult.hidden = false;
    inviteLink.focus();
    inviteLink.select();
  } catch (err) {
    setError(inviteError, err instanceof ApiError ? err.message : 'The invitation could not be made.');
  } finally {
    inviteSubmit.disabled = ended;
  }
});

inviteCopy.addEventListener('click', async () => {
  if (!inviteLink.value) return;
  try {
    if (!navigator.clipboard) throw new Error('no clipboard');
    await navigator.clipboard.writeText(inviteLink.value);
    inviteStatus.textContent = 'Link copied.';
  } catch {
    inviteLink.focus();
    inviteLink.select();
    inviteStatus.textContent = 'The link is selected: press Ctrl+C (or ⌘+C) to copy it.';
  }
});

endVisit.addEventListener('click', async () => {
  if (ended || !signalling) return;
  if (!confirm('End this visit for everyone? The patient link stops working.')) return;
  endVisit.disabled = true;
  endVisit.textContent = 'Ending…';
  const viaHTTP = async () => {
    if (ended) return;
    try {
      await api('POST', `/api/v1/visits/${encodeURIComponent(visitId)}/end`);
      showEnded();
    } catch (err) {
      if (err instanceof ApiError && (err.code === 'visit_ended' || err.code === 'wrong_state')) {
        showEnded();
        return;
      }
      endVisit.disabled = false;
      endVisit.textContent = 'End visit';
      setCallStatus('error', `The visit could not be ended: ${err instanceof Error ? err.message : 'unknown error'}`);
    }
  };
  if (signalling.ready) {
    signalling.send({type: 'end'});
    setTimeout(viaHTTP, END_FALLBACK_MS);
  } else {
    await viaHTTP();
  }
});

async function start() {
  if (!visitId) {
    setCallStatus('error', 'This address does not name a visit.');
    return;
  }
  let visit;
  try {
    visit = await api('GET', `/api/v1/visits/${encodeURIComponent(visitId)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      location.assign('/signin?next=' + encodeURIComponent(location.pathname));
      return;
    }
    callEl.hidden = true;
    setCallStatus('error', err instanceof ApiError ? err.message : 'The visit could not be loaded.');
    return;
  }
  patientName = visit.patient_name || '';
  title.textContent = patientName ? `Visit with ${patientName}` : 'Visit';
  document.title = `${title.textContent} · Bedside`;
  const when = formatDateTime(visit.scheduled_at || visit.created_at);
  timeEl.textContent = when ? `Scheduled for ${when}` : '';
  if (visit.state === 'ended') {
    showEnded();
    return;
  }

  setCallStatus('connecting', 'Starting camera and microphone…');
  localStream = await acquireMedia();
  if (ended) return;
  await refreshDeviceLists().catch(() => {});
  navigator.mediaDevices?.addEventListener?.('devicechange', () => {
    if (!ended) refreshDeviceLists().catch(() => {});
  });

  signalling = new Signalling({visit: visitId});
  call = new Call({signalling, localStream});
  localStream = call.localStream;
  /** @type {any} */ (window).bedside = {call};
  view = new CallView(call, {
    onRemove: (peer) => {
      if (confirm(`Remove ${peer.name || 'this participant'} from the visit? They cannot come back with their link's session.`)) {
        // Sent again after a reconnect if the socket was dead, unless they left meanwhile
        // (the server takes a second remove of the same person as done).
        signalling?.send({type: 'remove', participant: peer.id}, () => call?.peers.has(peer.id) ?? false);
      }
    },
  });

  signalling.on('state', updateStatus);
  signalling.on('welcome', (m) => {
    waiting = m.waiting;
    renderWaiting();
  });
  signalling.on('waiting', (m) => {
    waiting = m.waiting;
    renderWaiting();
  });
  signalling.on('ended', showEnded);
  signalling.on('error', (m) => {
    if (m.in_reply_to === 'admit') {
      setError(waitingError, m.message || 'That person could not be admitted.');
      renderWaiting();
      for (const b of waitingList.querySelectorAll('button.admit')) {
        if (b instanceof HTMLButtonElement) {
          b.disabled = false;
          b.textContent = 'Admit';
        }
      }
    }
  });
  signalling.on('closed', (ev) => {
    if (ev.reason === 'ended' || ev.code === 'visit_ended') {
      showEnded();
    } else if (ev.reason === 'replaced') {
      setCallStatus('error', 'This visit was opened in another window or tab, so this one stopped.');
      view?.stop();
      call?.close();
      stopStream(localStream);
    } else if (ev.reason === 'error') {
      setCallStatus('error', ev.message || 'The connection to the server was refused.');
      view?.stop();
      call?.close();
      stopStream(localStream);
    }
  });
  for (const ev of /** @type {const} */ (['peer-added', 'peer-updated', 'peer-removed', 'connection-state', 'connect-failed', 'connect-ok'])) {
    call.on(ev, updateStatus);
  }
  call.on('pair', () => setTimeout(refreshSummary, 500));
  setInterval(() => {
    if (!ended && call && call.pcs.size > 0) refreshSummary();
  }, SUMMARY_EVERY_MS);
  refreshSummary();
  signalling.connect();
  // Keep "waiting since" fresh.
  setInterval(() => {
    if (!ended && waiting.length > 0) renderWaiting();
  }, 30000);
  window.addEventListener('online', () => signalling?.reconnectNow());
}

start();
