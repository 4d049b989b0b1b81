// Small shared helpers: element lookup, the JSON API, times, the status line, and the call
// view (videos, mute and camera buttons, chat log) used by both call pages.

/** @typedef {import('./call.js').Call} Call */
/** @typedef {import('./protocol.js').Peer} Peer */

/**
 * The element with this id, checked to be of the expected kind.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new (...args: any[]) => T} ctor
 * @returns {T}
 */
export function byId(id, ctor) {
  const el = document.getElementById(id);
  if (!(el instanceof ctor)) throw new Error(`#${id} is missing or not a ${ctor.name}`);
  return el;
}

/** An error answer of the JSON API: {"error": {"code", "message"}}. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls the JSON API on this origin. Returns the parsed body (null for 204); throws ApiError.
 * @param {'GET' | 'POST' | 'DELETE'} method
 * @param {string} path
 * @param {unknown} [body]
 * @returns {Promise<any>}
 */
export async function api(method, path, body) {
  /** @type {RequestInit} */
  const init = {method, credentials: 'same-origin', headers: {Accept: 'application/json'}, cache: 'no-store'};
  if (body !== undefined) {
    init.headers = {Accept: 'application/json', 'Content-Type': 'application/json'};
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check your internet connection and try again.');
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = data && typeof data === 'object' && data.error && typeof data.error === 'object' ? data.error : {};
    throw new ApiError(res.status, typeof e.code === 'string' ? e.code : 'http_' + res.status,
      typeof e.message === 'string' && e.message ? e.message : `The server answered ${res.status}.`);
  }
  return data;
}

/**
 * A date as RFC 3339 with the local offset, e.g. 2026-11-25T09:00:00+01:00.
 * @param {Date} d
 * @returns {string}
 */
export function rfc3339(d) {
  const pad = (/** @type {number} */ n) => String(Math.abs(Math.trunc(n))).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:` +
    `${pad(d.getMinutes())}:${pad(d.getSeconds())}${sign}${pad(off / 60)}:${pad(off % 60)}`;
}

/**
 * "09:30" in the user's locale, or '' for a missing time.
 * @param {string | null | undefined} iso
 * @returns {string}
 */
export function formatTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
}

/**
 * "Wednesday 25 November, 09:30" in the user's locale ('' for a missing time).
 * @param {string | null | undefined} iso
 * @returns {string}
 */
export function formatDateTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleString([], {weekday: 'long', day: 'numeric', month: 'long', hour: '2-digit', minute: '2-digit'});
}

/**
 * "3 min" since a time.
 * @param {string} iso
 * @param {number} [now]
 * @returns {string}
 */
export function formatSince(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const min = Math.max(0, Math.floor((now - t) / 60000));
  if (min < 1) return 'less than a minute';
  if (min < 60) return `${min} min`;
  return `${Math.floor(min / 60)} h ${min % 60} min`;
}

/**
 * @typedef {'connecting' | 'waiting' | 'in_call' | 'reconnecting' | 'ended' | 'error'} CallState
 */

/**
 * Sets #call-status: its data-state and the sentence inside.
 * @param {CallState} state
 * @param {string} text
 */
export function setCallStatus(state, text) {
  const el = document.getElementById('call-status');
  if (!el) return;
  el.dataset.state = state;
  if (el.textContent !== text) el.textContent = text;
}

/**
 * Shows exactly one of the elements (the others get the hidden attribute).
 * @param {HTMLElement[]} all
 * @param {HTMLElement} visible
 */
export function showOnly(all, visible) {
  for (const el of all) el.hidden = el !== visible;
}

/**
 * Plays a media element; when the browser refuses sound without a click, shows a button
 * that starts it.
 * @param {HTMLMediaElement} media
 * @param {HTMLElement} container where the button goes
 */
export function playWithFallback(media, container) {
  const p = media.play();
  if (!p) return;
  p.catch((err) => {
    if (!err || err.name !== 'NotAllowedError') return;
    if (container.querySelector('.enable-sound')) return;
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'enable-sound';
    btn.textContent = 'Turn on sound';
    btn.addEventListener('click', () => {
      media.play().then(() => btn.remove(), () => {});
    });
    container.append(btn);
  });
}

/**
 * The call part of a page: local preview, one tile per remote participant in #remotes (and
 * one per shared screen), the #mute, #camera and #share-screen buttons and the chat
 * (#chat-log, #chat-form, #chat-input). In SFU mode it tells the call at what size each
 * remote video is shown, highlights the active speaker, and makes the switch from a peer
 * connection to the SFU invisible: the SFU's video plays in a standby element behind the
 * tile's until the call switches, then takes its place.
 */
/** How often the end-to-end encryption line is brought up to date. */
const E2EE_STATUS_EVERY_MS = 2000;

/** Their video paused for want of bandwidth (audiofirst.js), on their tile, by where. */
const REMOTE_VIDEO_PAUSED = {
  p2p: 'Video paused: the connection is too weak. You can still hear them.',
  theirs: 'Video paused: their connection is too weak. You can still hear them.',
  yours: 'Video paused: your connection is too weak for it. You can still hear them.',
};
/** Ours paused, on our own tile. */
const LOCAL_VIDEO_PAUSED = 'Your video is paused: the connection is too weak';

export class CallView {
  /**
   * @param {Call} call
   * @param {{onRemove?: (peer: Peer) => void}} [opts] onRemove: give each remote tile a
   *   "Remove" button (the clinician's page).
   */
  constructor(call, opts = {}) {
    this.call = call;
    this.onRemove = opts.onRemove;
    this.remotes = byId('remotes', HTMLElement);
    this.localVideo = byId('local-video', HTMLVideoElement);
    this.mute = byId('mute', HTMLButtonElement);
    this.camera = byId('camera', HTMLButtonElement);
    this.share = /** @type {HTMLButtonElement | null} */ (document.getElementById('share-screen'));
    this.chatLog = byId('chat-log', HTMLElement);
    this.chatForm = byId('chat-form', HTMLFormElement);
    this.chatInput = byId('chat-input', HTMLInputElement);
    this.empty = document.getElementById('remotes-empty');
    /** The main video element of each tile, by key: a peer id, or "<id>.screen". */
    /** @type {Map<string, HTMLVideoElement>} */
    this.videos = new Map();
    /** @type {Array<() => void>} */
    this._off = [];
    this._sizes = new ResizeObserver((entries) => {
      for (const e of entries) {
        if (e.target instanceof HTMLVideoElement) this._reportSize(e.target);
      }
    });
    this._wire();
    this.showLocal();
    /** The end-to-end encryption line: its safety code changes as people join and leave. */
    this.e2eeStatus = document.getElementById('e2ee-status');
    this._e2eeTimer = setInterval(() => this._showE2EE(), E2EE_STATUS_EVERY_MS);
    this._showE2EE();
  }

  /** Shows whether the call is end-to-end encrypted, and the safety code to compare. */
  async _showE2EE() {
    const el = this.e2eeStatus;
    if (!el) return;
    const e2ee = this.call.e2ee;
    let text = 'Not end-to-end encrypted: this browser cannot encrypt the call. Use a current Chrome, Edge, Firefox or Safari.';
    if (e2ee) {
      const code = await e2ee.safetyCode();
      text = code ? `End-to-end encrypted. Safety code ${code}: everyone in the call should see the same code.` : 'End-to-end encrypted.';
    }
    el.dataset.state = e2ee ? 'on' : 'off';
    if (el.textContent !== text) el.textContent = text;
    el.hidden = false;
  }

  _wire() {
    const call = this.call;
    this._off.push(
      call.on('peer-added', ({peer}) => this._tile(peer)),
      call.on('peer-updated', ({peer, present}) => {
        const video = this._tile(peer);
        const fig = video.closest('figure');
        if (fig) fig.classList.toggle('absent', !present);
        this._tileStatus(peer.id, present ? '' : 'Connection lost. Waiting for them to come back…');
      }),
      call.on('peer-removed', ({peerId}) => {
        for (const key of [peerId, `${peerId}.screen`]) this._removeTile(key);
      }),
      call.on('remote-stream', ({peerId, stream, via, source}) => this._showStream(peerId, stream, via, source)),
      call.on('sfu-switched', ({peerId}) => this._promote(peerId)),
      call.on('remote-screen-ended', ({peerId}) => this._removeTile(`${peerId}.screen`)),
      call.on('connection-state', ({peerId, state}) => {
        if (call.absent.has(peerId)) return;
        const text = {
          new: 'Connecting…', connecting: 'Connecting…', connected: '',
          disconnected: 'The connection is unstable…', failed: 'Reconnecting…', closed: '',
        }[state];
        this._tileStatus(peerId, text);
      }),
      call.on('speakers', ({active, speaking}) => {
        for (const [key, video] of this.videos) {
          const fig = video.closest('figure');
          if (!fig || key.endsWith('.screen')) continue;
          fig.classList.toggle('speaking', key === active);
          fig.dataset.speaking = String(speaking.includes(key));
        }
      }),
      call.on('screen', ({sharing}) => {
        if (!this.share) return;
        this.share.setAttribute('aria-pressed', String(sharing));
        this.share.textContent = sharing ? 'Stop sharing' : 'Share screen';
      }),
      call.on('video-paused', () => this._updateLocalBadges()),
      call.on('remote-video-paused', ({peerId}) => this._tileStatus(peerId, '')),
      call.on('mode', () => this._reportAll()),
      call.on('chat', (m) => this.addChat(m.name, m.text, m.at, m.self)),
    );
    const onVisibility = () => this._reportAll();
    document.addEventListener('visibilitychange', onVisibility);
    this._off.push(() => document.removeEventListener('visibilitychange', onVisibility));

    this.mute.addEventListener('click', () => {
      const muted = !this.call.muted;
      this.call.setMuted(muted);
      this.mute.setAttribute('aria-pressed', String(muted));
      this._updateLocalBadges();
    });
    this.camera.addEventListener('click', () => {
      const off = !this.call.cameraOff;
      this.call.setCameraOff(off);
      this.camera.setAttribute('aria-pressed', String(off));
      this._updateLocalBadges();
    });
    this.share?.addEventListener('click', async () => {
      if (this.call.screenStream) {
        this.call.stopScreenShare();
        return;
      }
      if (this.share) this.share.disabled = true;
      await this.call.startScreenShare();
      if (this.share) this.share.disabled = false;
    });
    this.chatForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = this.chatInput.value;
      if (!text.trim()) return;
      if (this.call.sendChat(text) > 0) {
        this.chatInput.value = '';
        this.addNote('');
      } else {
        this.addNote('Nobody else is in the call yet, so the message was not sent.');
      }
    });
  }

  /** Shows the local stream in #local-video (again after a device change). */
  showLocal() {
    const stream = this.call.localStream;
    if (this.localVideo.srcObject !== stream) this.localVideo.srcObject = stream;
    this.localVideo.muted = true;
    this.localVideo.play().catch(() => {});
    const hasVideo = stream.getVideoTracks().length > 0;
    this.camera.disabled = !hasVideo;
    this.camera.title = hasVideo ? '' : 'No camera';
    this.mute.disabled = stream.getAudioTracks().length === 0;
    if (this.share) {
      const can = Boolean(navigator.mediaDevices && 'getDisplayMedia' in navigator.mediaDevices);
      this.share.hidden = !can || this.call.observer || stream.getTracks().length === 0;
    }
    this._updateLocalBadges();
  }

  _updateLocalBadges() {
    const fig = this.localVideo.closest('figure');
    if (!fig) return;
    const noVideo = this.call.localStream.getVideoTracks().length === 0 || this.call.cameraOff;
    fig.classList.toggle('no-video', noVideo);
    fig.classList.toggle('muted', this.call.muted);
    const badge = fig.querySelector('.tile-status');
    if (badge) {
      const parts = [];
      if (this.call.muted) parts.push('Microphone off');
      if (noVideo) parts.push('Camera off');
      else if (this.call.videoPaused) parts.push(LOCAL_VIDEO_PAUSED);
      badge.textContent = parts.join(' · ');
    }
  }

  /**
   * A stream of a remote participant arrived. Its camera tile shows it at once, unless the
   * tile shows that participant over a peer connection and this stream comes through the
   * SFU: then it plays, muted and unseen, in the tile's standby element until the call
   * switches (sfu-switched).
   * @param {string} peerId
   * @param {MediaStream} stream
   * @param {'p2p' | 'sfu'} via
   * @param {'camera' | 'screen'} source
   */
  _showStream(peerId, stream, via, source) {
    const peer = this.call.peers.get(peerId);
    if (!peer) return;
    const video = source === 'screen' ? this._screenTile(peer) : this._tile(peer);
    const fig = video.closest('figure');
    if (!fig) return;
    if (source === 'camera' && via === 'sfu' && video.dataset.via === 'p2p' && this.call.conns.has(peerId)) {
      let standby = /** @type {HTMLVideoElement | null} */ (fig.querySelector('video.standby'));
      if (!standby) {
        standby = document.createElement('video');
        standby.className = 'standby';
        standby.autoplay = true;
        standby.playsInline = true;
        standby.muted = true; // the peer connection's audio plays until the switch
        standby.dataset.standbyFor = peerId;
        standby.setAttribute('aria-hidden', 'true');
        video.after(standby);
      }
      if (standby.srcObject !== stream) standby.srcObject = stream;
      standby.play().catch(() => {});
      return;
    }
    video.dataset.via = via;
    if (video.srcObject !== stream) video.srcObject = stream;
    fig.classList.toggle('no-video', stream.getVideoTracks().length === 0);
    if (via === 'sfu') this._tileStatus(peerId, '');
    playWithFallback(video, fig);
    this._reportSize(video);
  }

  /**
   * The switch to the SFU for one participant: the standby video (already playing) takes
   * the tile's place, with its sound.
   * @param {string} peerId
   */
  _promote(peerId) {
    const video = this.videos.get(peerId);
    const fig = video?.closest('figure');
    if (!video || !fig) return;
    const standby = /** @type {HTMLVideoElement | null} */ (fig.querySelector('video.standby'));
    const stream = this.call.sfu?.streams.get(peerId) ?? null;
    if (standby) {
      standby.classList.remove('standby');
      standby.removeAttribute('aria-hidden');
      delete standby.dataset.standbyFor;
      for (const [k, v] of Object.entries(video.dataset)) if (v !== undefined) standby.dataset[k] = v;
      standby.dataset.via = 'sfu';
      standby.setAttribute('aria-label', video.getAttribute('aria-label') ?? '');
      standby.muted = false;
      this._sizes.unobserve(video);
      video.srcObject = null;
      video.replaceWith(standby);
      this.videos.set(peerId, standby);
      this._sizes.observe(standby);
      playWithFallback(standby, fig);
      this._reportSize(standby);
    } else if (stream) {
      video.dataset.via = 'sfu';
      video.srcObject = stream;
      playWithFallback(video, fig);
    }
    this._tileStatus(peerId, '');
  }

  /**
   * The tile of a remote participant, made when needed.
   * @param {Peer} peer
   * @returns {HTMLVideoElement}
   */
  _tile(peer) {
    let video = this.videos.get(peer.id);
    if (!video) {
      video = this._makeTile(peer.id, 'camera');
      const fig = /** @type {HTMLElement} */ (video.closest('figure'));
      const speaking = document.createElement('span');
      speaking.className = 'speaking-badge';
      speaking.textContent = 'Speaking';
      fig.append(speaking);
      if (peer.observer) {
        fig.classList.add('no-video', 'observer');
        this._tileStatus(peer.id, 'Watching and listening');
      }
      if (this.onRemove) {
        const remove = document.createElement('button');
        remove.type = 'button';
        remove.className = 'remove-participant';
        remove.dataset.peerId = peer.id;
        remove.textContent = 'Remove';
        const onRemove = this.onRemove;
        remove.addEventListener('click', () => onRemove(this.call.peers.get(peer.id) ?? peer));
        fig.append(remove);
      }
    }
    const fig = video.closest('figure');
    const cap = fig?.querySelector('.tile-name');
    const label = peer.name || 'Participant';
    if (cap && cap.textContent !== label) cap.textContent = label;
    const remove = fig?.querySelector('.remove-participant');
    if (remove) remove.setAttribute('aria-label', `Remove ${label} from the visit`);
    video.setAttribute('aria-label', `Video of ${label}`);
    return video;
  }

  /**
   * The tile of a participant's shared screen.
   * @param {Peer} peer
   * @returns {HTMLVideoElement}
   */
  _screenTile(peer) {
    const key = `${peer.id}.screen`;
    const video = this.videos.get(key) ?? this._makeTile(key, 'screen', peer.id);
    const label = `${peer.name || 'Participant'}'s screen`;
    const cap = video.closest('figure')?.querySelector('.tile-name');
    if (cap && cap.textContent !== label) cap.textContent = label;
    video.setAttribute('aria-label', label);
    video.closest('figure')?.classList.add('screen');
    return video;
  }

  /**
   * @param {string} key
   * @param {'camera' | 'screen'} source
   * @param {string} [peerId]
   * @returns {HTMLVideoElement}
   */
  _makeTile(key, source, peerId = key) {
    const fig = document.createElement('figure');
    fig.className = 'tile remote';
    const video = document.createElement('video');
    video.dataset.peerId = peerId;
    video.dataset.source = source;
    video.autoplay = true;
    video.playsInline = true;
    video.setAttribute('playsinline', '');
    const cap = document.createElement('figcaption');
    cap.className = 'tile-name';
    const status = document.createElement('span');
    status.className = 'tile-status';
    status.setAttribute('role', 'status');
    status.textContent = source === 'camera' ? 'Connecting…' : '';
    fig.append(video, cap, status);
    this.remotes.append(fig);
    this.videos.set(key, video);
    this._sizes.observe(video);
    this._updateEmpty();
    return video;
  }

  /** @param {string} key */
  _removeTile(key) {
    const video = this.videos.get(key);
    if (!video) return;
    this._sizes.unobserve(video);
    const fig = video.closest('figure');
    for (const v of fig ? fig.querySelectorAll('video') : [video]) {
      if (v instanceof HTMLVideoElement) v.srcObject = null;
    }
    fig?.remove();
    this.videos.delete(key);
    const [peerId, screen] = key.split('.');
    this.call.reportVideoSize(peerId, screen ? 'screen' : 'camera', 0, 0);
    this._updateEmpty();
  }

  /**
   * Tells the call at what size a remote video is shown (device pixels; 0x0 while the page
   * is hidden).
   * @param {HTMLVideoElement} video
   */
  _reportSize(video) {
    const peerId = video.dataset.peerId;
    if (!peerId || !video.isConnected) return;
    const source = video.dataset.source === 'screen' ? 'screen' : 'camera';
    const dpr = globalThis.devicePixelRatio || 1;
    const hidden = document.hidden;
    this.call.reportVideoSize(peerId, source, hidden ? 0 : video.clientWidth * dpr, hidden ? 0 : video.clientHeight * dpr);
  }

  _reportAll() {
    for (const v of this.videos.values()) this._reportSize(v);
  }

  /** @param {string} peerId @param {string} text */
  _tileStatus(peerId, text) {
    const fig = this.videos.get(peerId)?.closest('figure');
    const el = fig?.querySelector('.tile-status');
    if (!el || !fig) return;
    const paused = this.call.remoteVideoPaused(peerId);
    fig.classList.toggle('video-paused', paused !== '');
    if (!text && paused) text = REMOTE_VIDEO_PAUSED[paused];
    if (!text && fig.classList.contains('observer')) text = 'Watching and listening';
    el.textContent = text;
  }

  _updateEmpty() {
    if (this.empty) this.empty.hidden = this.videos.size > 0;
  }

  /**
   * @param {string} name
   * @param {string} text
   * @param {string} at
   * @param {boolean} self
   */
  addChat(name, text, at, self) {
    const li = document.createElement('li');
    li.className = self ? 'chat-self' : 'chat-other';
    const who = document.createElement('strong');
    who.textContent = name;
    const time = document.createElement('time');
    time.dateTime = at;
    time.textContent = formatTime(at);
    const body = document.createElement('span');
    body.className = 'chat-text';
    body.textContent = text;
    li.append(who, ' ', time, body);
    this.chatLog.append(li);
    li.scrollIntoView({block: 'nearest'});
  }

  /**
   * A short note under the chat form (not a message: #chat-log holds messages only).
   * @param {string} text
   */
  addNote(text) {
    const note = document.getElementById('chat-note');
    if (note) note.textContent = text;
  }

  /** Stops showing media (the visit ended). */
  stop() {
    clearInterval(this._e2eeTimer);
    for (const off of this._off) off();
    this._off = [];
    this._sizes.disconnect();
    this.localVideo.srcObject = null;
    for (const v of this.remotes.querySelectorAll('video')) {
      if (v instanceof HTMLVideoElement) v.srcObject = null;
    }
    if (this.share) this.share.disabled = true;
    this.mute.disabled = true;
    this.camera.disabled = true;
    for (const el of this.chatForm.elements) {
      if (el instanceof HTMLButtonElement || el instanceof HTMLInputElement) el.disabled = true;
    }
  }
}
