// Signalling client for the Bedside protocol, version 1 (docs/protocol.md).
// It opens the WebSocket, says hello, turns server frames into typed events and reconnects
// with back-off. It touches no DOM, so it can be tested on its own.

/** The WebSocket subprotocol that names protocol version 1. */
export const SUBPROTOCOL = 'bedside.v1';

/** Reconnect delays in seconds: 0.5, 1, 2, 4, then 5 for ever. */
export const BACKOFF_SECONDS = [0.5, 1, 2, 4, 5];

/**
 * Error codes that close the connection for good: reconnecting would only fail again.
 * (`forbidden` and `not_found` are fatal only as the answer to `hello`.)
 */
const FATAL_CODES = new Set(['visit_ended', 'link_expired', 'link_revoked', 'removed']);
const FATAL_HELLO_CODES = new Set(['forbidden', 'not_found']);

/** At most this many messages wait for the connection to come back; older ones are dropped. */
const MAX_QUEUED = 500;

/**
 * Messages a pong must confirm: sent into a socket that turns out dead, they go again after
 * the next `welcome` (with their `current` check, if they have one). What a person typed or
 * clicked and would otherwise find silently undone: chat, admitting someone, removing them,
 * leaving. (`end` has its own fallback over HTTP, visit.js.)
 */
const CONFIRMED = new Set(['chat', 'admit', 'remove', 'leave']);

/**
 * Liveness (docs/protocol.md, Transport): the page cannot see the server's WebSocket pings,
 * so it sends `ping` when it has heard nothing for PING_MS and gives the socket up when no
 * answer comes within PONG_WAIT_MS (a network gone: TCP alone would notice only when it
 * next sends, and then after its own retransmissions). An attempt whose socket has not
 * opened within CONNECT_TIMEOUT_MS (its TCP handshake lost: the next retransmission may be
 * many seconds away) or has not had `welcome` within WELCOME_TIMEOUT_MS of opening is given
 * up too. Either way it reconnects with back-off.
 */
export const PING_MS = 5000;
export const PONG_WAIT_MS = 6000;
/**
 * How long a probe waits for its pong (`probe`): when a peer connection's ICE says its path
 * went quiet, the network has likely changed under the page and the socket with it, and a
 * live socket answers well within this.
 */
export const PROBE_WAIT_MS = 2000;
export const CONNECT_TIMEOUT_MS = 5000;
export const WELCOME_TIMEOUT_MS = 15000;
const LIVENESS_CHECK_MS = 1000;

/**
 * @typedef {'clinician' | 'admin' | 'staff' | 'patient' | 'guest'} Role
 * @typedef {{id: string, role: string, name: string, session: string, polite: boolean, observer?: boolean}} Peer
 * @typedef {{id: string, name: string, since: string, role?: string, observer?: boolean}} WaitingEntry
 * @typedef {{urls: string | string[], username?: string, credential?: string}} IceServer
 * @typedef {'p2p' | 'sfu'} Mode
 * @typedef {{type: 'welcome', participant: {id: string, role: string, name: string, observer?: boolean},
 *   visit: {id: string, state: string}, admitted: boolean, ice_servers: IceServer[],
 *   ice_transport_policy: RTCIceTransportPolicy, peers: Peer[], waiting: WaitingEntry[],
 *   mode: Mode, sfu_session?: string}} WelcomeMsg
 * @typedef {{type: 'admitted', peers: Peer[], mode: Mode, sfu_session?: string}} AdmittedMsg
 * @typedef {{type: 'mode', mode: Mode, sfu_session?: string}} ModeMsg
 * @typedef {'audio' | 'camera' | 'screen'} Source
 * @typedef {{mid: string, participant: string, source: Source, kind: 'audio' | 'video'}} TrackInfo
 * @typedef {{type: 'tracks', tracks: TrackInfo[]}} TracksMsg
 * @typedef {{type: 'layers', source: Source, active: string[]}} LayersMsg
 * @typedef {{type: 'speakers', active: string, speaking: string[]}} SpeakersMsg
 * @typedef {{type: 'video_paused', participant: string, source: Source, paused: boolean, link: 'yours' | 'theirs'}} VideoPausedMsg
 * @typedef {{type: 'chat', from: string, text: string, at: string}} ChatMsg
 * @typedef {{type: 'e2ee', from: string, pub: string, kid?: number, key?: string}} E2EEMsg
 * @typedef {{type: 'waiting', waiting: WaitingEntry[]}} WaitingMsg
 * @typedef {{type: 'peer', event: 'joined' | 'gone' | 'left', peer: Peer}} PeerMsg
 * @typedef {{candidate?: string, sdpMid?: string | null, sdpMLineIndex?: number | null,
 *   usernameFragment?: string | null}} CandidateInit
 * @typedef {{type: 'signal', from: string, pc?: 'pub' | 'sub', description?: {type: RTCSdpType, sdp?: string},
 *   candidate?: CandidateInit | null, sources?: Record<string, Source>}} SignalMsg
 * @typedef {{type: 'ice_servers', ice_servers: IceServer[], ice_transport_policy: RTCIceTransportPolicy}} IceServersMsg
 * @typedef {{type: 'ended', reason: string}} EndedMsg
 * @typedef {{type: 'bye', reason: string}} ByeMsg
 * @typedef {{type: 'error', code: string, message: string, in_reply_to?: string}} ErrorMsg
 * @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} ConnState
 * @typedef {{text: string, confirm: boolean, current?: () => boolean}} Outgoing
 * @typedef {{state: ConnState, attempt: number, delayMs?: number}} StateEvent
 * @typedef {{reason: 'ended' | 'replaced' | 'left' | 'error' | 'stopped', code?: string, message?: string}} ClosedEvent
 *
 * @typedef {{
 *   welcome: WelcomeMsg, admitted: AdmittedMsg, waiting: WaitingMsg, peer: PeerMsg,
 *   signal: SignalMsg, ice_servers: IceServersMsg, ended: EndedMsg, bye: ByeMsg, error: ErrorMsg,
 *   mode: ModeMsg, tracks: TracksMsg, layers: LayersMsg, speakers: SpeakersMsg, chat: ChatMsg,
 *   video_paused: VideoPausedMsg, e2ee: E2EEMsg, state: StateEvent, closed: ClosedEvent
 * }} SignallingEvents
 *
 * @typedef {{type: 'signal', to: string, pc?: 'pub' | 'sub', description: RTCSessionDescriptionInit,
 *       sources?: Record<string, Source>, sfu_session?: string}
 *   | {type: 'signal', to: string, pc?: 'pub' | 'sub', candidate: RTCIceCandidateInit | null, sfu_session?: string}
 *   | {type: 'video_size', participant: string, source: 'camera' | 'screen', width: number, height: number}
 *   | {type: 'video_paused', source: 'camera' | 'screen', paused: boolean}
 *   | {type: 'chat', text: string, id?: string}
 *   | {type: 'e2ee', to: string, pub: string, kid?: number, key?: string}
 *   | {type: 'admit', participant: string}
 *   | {type: 'remove', participant: string}
 *   | {type: 'end'}
 *   | {type: 'leave'}
 *   | {type: 'connection', peer: string, pc?: 'pub' | 'sub',
 *       local: {candidate_type: string, protocol: string, relay_protocol?: string},
 *       remote: {candidate_type: string, protocol: string}}} ClientMsg
 */

/**
 * A small typed event emitter. M maps event names to the value passed to listeners.
 * @template {Record<string, any>} M
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof M, Set<(value: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * Adds a listener and returns a function that removes it.
   * @template {keyof M} K
   * @param {K} type
   * @param {(value: M[K]) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) {
      set = new Set();
      this._listeners.set(type, set);
    }
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * @template {keyof M} K
   * @param {K} type
   * @param {M[K]} value
   */
  emit(type, value) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (err) {
        // One broken listener must not stop the others (or the socket's message loop).
        console.error(`bedside: ${String(type)} listener failed`, err);
      }
    }
  }
}

/**
 * A random session id, made once per page load: "s_" and 22 base64url characters (128 bits).
 * @returns {string}
 */
export function newSessionId() {
  return randomId('s_', 16);
}

/**
 * prefix and n random bytes in base64url.
 * @param {string} prefix
 * @param {number} n
 * @returns {string}
 */
export function randomId(prefix, n) {
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return prefix + btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * The WebSocket URL on the page's own host: ws(s)://host/api/v1/ws.
 * @param {{protocol: string, host: string}} [loc]
 * @returns {string}
 */
export function defaultURL(loc = globalThis.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/api/v1/ws`;
}

/**
 * The delay before reconnect attempt n (1-based), in milliseconds.
 * @param {number} attempt
 * @returns {number}
 */
export function backoffMs(attempt) {
  const i = Math.min(Math.max(attempt, 1), BACKOFF_SECONDS.length) - 1;
  return BACKOFF_SECONDS[i] * 1000;
}

/** @param {unknown} v @returns {v is Record<string, any>} */
function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** @param {unknown} v @returns {boolean} */
function isPeer(v) {
  return isObject(v) && typeof v.id === 'string' && typeof v.session === 'string';
}

/** @param {unknown} v @returns {boolean} */
function isWaitingEntry(v) {
  return isObject(v) && typeof v.id === 'string';
}

/** @param {unknown} v @returns {v is TrackInfo} */
function isTrackInfo(v) {
  return isObject(v) && typeof v.mid === 'string' && typeof v.participant === 'string' &&
    ['audio', 'camera', 'screen'].includes(v.source) && (v.kind === 'audio' || v.kind === 'video');
}

/** @param {unknown} v @returns {'p2p' | 'sfu'} */
function mode(v) {
  return v === 'sfu' ? 'sfu' : 'p2p';
}

/** @param {unknown} v @returns {boolean} */
function isIceServerList(v) {
  return Array.isArray(v) && v.every((s) => isObject(s) && (typeof s.urls === 'string' || Array.isArray(s.urls)));
}

/**
 * Loose validation of a server message: the fields the client relies on must be there with the
 * right types; anything extra is kept; unknown types return null and are ignored.
 * @param {unknown} msg
 * @returns {(SignallingEvents[keyof SignallingEvents] & {type: string}) | null}
 */
export function validate(msg) {
  if (!isObject(msg) || typeof msg.type !== 'string') return null;
  switch (msg.type) {
    case 'welcome': {
      if (!isObject(msg.participant) || typeof msg.participant.id !== 'string') return null;
      if (!isObject(msg.visit) || typeof msg.visit.id !== 'string') return null;
      const peers = Array.isArray(msg.peers) ? msg.peers.filter(isPeer) : [];
      const waiting = Array.isArray(msg.waiting) ? msg.waiting.filter(isWaitingEntry) : [];
      const ice = isIceServerList(msg.ice_servers) ? msg.ice_servers : [];
      const policy = msg.ice_transport_policy === 'relay' ? 'relay' : 'all';
      return /** @type {WelcomeMsg} */ ({...msg, admitted: msg.admitted === true, peers, waiting,
        ice_servers: ice, ice_transport_policy: policy, mode: mode(msg.mode)});
    }
    case 'admitted':
      return /** @type {AdmittedMsg} */ ({...msg, peers: Array.isArray(msg.peers) ? msg.peers.filter(isPeer) : [],
        mode: mode(msg.mode)});
    case 'mode':
      return /** @type {ModeMsg} */ ({...msg, mode: mode(msg.mode)});
    case 'tracks':
      return /** @type {TracksMsg} */ ({...msg, tracks: Array.isArray(msg.tracks) ? msg.tracks.filter(isTrackInfo) : []});
    case 'layers':
      if (typeof msg.source !== 'string' || !Array.isArray(msg.active)) return null;
      return /** @type {LayersMsg} */ ({...msg, active: msg.active.filter((/** @type {unknown} */ r) => typeof r === 'string')});
    case 'speakers':
      return /** @type {SpeakersMsg} */ ({...msg, active: typeof msg.active === 'string' ? msg.active : '',
        speaking: Array.isArray(msg.speaking) ? msg.speaking.filter((/** @type {unknown} */ r) => typeof r === 'string') : []});
    case 'video_paused':
      if (typeof msg.participant !== 'string' || (msg.source !== 'camera' && msg.source !== 'screen') ||
        typeof msg.paused !== 'boolean' || (msg.link !== 'yours' && msg.link !== 'theirs')) return null;
      return /** @type {VideoPausedMsg} */ (msg);
    case 'chat':
      if (typeof msg.from !== 'string' || typeof msg.text !== 'string') return null;
      return /** @type {ChatMsg} */ ({...msg, at: typeof msg.at === 'string' ? msg.at : new Date().toISOString()});
    case 'e2ee':
      if (typeof msg.from !== 'string' || typeof msg.pub !== 'string') return null;
      if ((msg.kid !== undefined || msg.key !== undefined) && (typeof msg.kid !== 'number' || typeof msg.key !== 'string')) return null;
      return /** @type {E2EEMsg} */ (msg);
    case 'waiting':
      return /** @type {WaitingMsg} */ ({...msg,
        waiting: Array.isArray(msg.waiting) ? msg.waiting.filter(isWaitingEntry) : []});
    case 'peer':
      if (!['joined', 'gone', 'left'].includes(msg.event) || !isPeer(msg.peer)) return null;
      return /** @type {PeerMsg} */ (msg);
    case 'signal': {
      if (typeof msg.from !== 'string') return null;
      const hasDesc = isObject(msg.description) && typeof msg.description.type === 'string';
      const hasCand = 'candidate' in msg && (msg.candidate === null || isObject(msg.candidate));
      if (hasDesc === hasCand) return null;
      return /** @type {SignalMsg} */ (msg);
    }
    case 'ice_servers':
      if (!isIceServerList(msg.ice_servers)) return null;
      return /** @type {IceServersMsg} */ ({...msg,
        ice_transport_policy: msg.ice_transport_policy === 'relay' ? 'relay' : 'all'});
    case 'ended':
      return /** @type {EndedMsg} */ ({...msg, reason: typeof msg.reason === 'string' ? msg.reason : 'ended'});
    case 'bye':
      return /** @type {ByeMsg} */ ({...msg, reason: typeof msg.reason === 'string' ? msg.reason : ''});
    case 'error':
      return /** @type {ErrorMsg} */ ({...msg, code: typeof msg.code === 'string' ? msg.code : 'internal',
        message: typeof msg.message === 'string' ? msg.message : ''});
    default:
      return null;
  }
}

/**
 * The signalling connection of one page. Events: one per server message type (the validated
 * message), plus `state` (connecting, open, reconnecting, closed) and `closed` (for good, with
 * the reason). Messages sent while the socket is down wait and go out after the next `welcome`.
 * @extends {Emitter<SignallingEvents>}
 */
export class Signalling extends Emitter {
  /**
   * @param {{visit?: string, session?: string, url?: string,
   *   WebSocket?: typeof WebSocket}} [opts]
   */
  constructor(opts = {}) {
    super();
    /** @type {string | undefined} */
    this.visit = opts.visit;
    /** The session id: the same for every WebSocket of this page load. */
    this.session = opts.session ?? newSessionId();
    this.url = opts.url ?? defaultURL();
    this._WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    /** @type {ConnState} */
    this.state = 'idle';
    /** @type {WebSocket | null} */
    this.ws = null;
    /** True between `welcome` and the socket closing. */
    this.ready = false;
    /** Reconnect attempts since the last `welcome`. */
    this.attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._timer = undefined;
    this._stopped = false;
    /** Messages waiting for the connection: their JSON, and whether a pong must confirm it.
     * @type {Outgoing[]} */
    this._queue = [];
    /** Why the server will close the socket, when it said so (`ended`, `bye`, fatal `error`). */
    /** @type {ClosedEvent | null} */
    this._final = null;
    /** Liveness of the current socket (Date.now() times): attempt started, socket open (0: not
     * yet), last heard, ping sent (0: none waiting), and when that ping's pong is due. */
    this._startedAt = 0;
    this._openedAt = 0;
    this._heardAt = 0;
    this._pingAt = 0;
    this._pongBy = 0;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._liveness = undefined;
    /**
     * Messages to confirm (CONFIRMED) sent on the current socket that no pong has confirmed
     * yet, and how many of them the ping waiting for its pong covers. The server answers in
     * order, so a pong confirms everything sent before its ping; what is unconfirmed when the
     * socket turns out dead goes again after the next `welcome` (docs/protocol.md).
     * @type {Outgoing[]}
     */
    this._unconfirmed = [];
    this._pingCovers = 0;
    /** How many `welcome`s this connection has had (one per socket that got that far). */
    this.welcomes = 0;
  }

  /** Opens the connection (once; reconnects happen by themselves). */
  connect() {
    if (this.ws || this._timer !== undefined || this.state === 'closed') return;
    this._stopped = false;
    this._open();
  }

  /**
   * Sends a message now, or after the next `welcome` while the connection is down. Returns
   * the number of the `welcome` (`welcomes`) after which it goes: the current one when sent
   * now, the next when queued. A page re-sending what may have been lost with a dead socket
   * (call.js, `_resendOffers`) re-sends only what went before the latest `welcome`.
   * A message about something that may be gone by the time the connection is back (a
   * description or candidate of a peer connection the page may replace meanwhile) comes
   * with current: if it waits, it goes only if current() still says yes after `welcome`.
   * @param {ClientMsg} msg
   * @param {() => boolean} [current]
   * @returns {number}
   */
  send(msg, current) {
    if (this._stopped) return this.welcomes;
    /** @type {Outgoing} */
    const out = {text: JSON.stringify(msg), confirm: CONFIRMED.has(msg.type), current};
    if (this.ready && this.ws && this.ws.readyState === this._WebSocket.OPEN) {
      this._write(this.ws, out);
      return this.welcomes;
    }
    this._queue.push(out);
    if (this._queue.length > MAX_QUEUED) this._queue.shift();
    return this.welcomes + 1;
  }

  /** Closes the connection for good: no reconnect. */
  close() {
    this._finish({reason: 'stopped'});
  }

  /**
   * Asks the server for a pong now and gives the socket up if none comes within
   * PROBE_WAIT_MS (a ping already waiting has its wait cut to that): for when something
   * else says the network may have changed, such as a peer connection's ICE going
   * `disconnected`. Without it the page would find a dead socket only PING_MS +
   * PONG_WAIT_MS after it last heard the server.
   */
  probe() {
    const ws = this.ws;
    if (!this.ready || !ws) return;
    this._ping(ws);
    if (this._pingAt) this._pongBy = Math.min(this._pongBy, Date.now() + PROBE_WAIT_MS);
  }

  /** Skips the rest of the current back-off wait (for example when the network returns). */
  reconnectNow() {
    if (this._timer === undefined || this._stopped) return;
    clearTimeout(this._timer);
    this._timer = undefined;
    this._open();
  }

  /** @param {ConnState} state @param {number} [delayMs] */
  _setState(state, delayMs) {
    this.state = state;
    this.emit('state', {state, attempt: this.attempt, delayMs});
  }

  _open() {
    this._final = null;
    this._setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new this._WebSocket(this.url, SUBPROTOCOL);
    } catch (err) {
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    this._startedAt = this._heardAt = Date.now();
    this._openedAt = this._pingAt = this._pingCovers = 0;
    this._unconfirmed = [];
    this._stopLiveness();
    this._liveness = setInterval(() => this._checkLiveness(ws), LIVENESS_CHECK_MS);
    ws.onopen = () => {
      this._openedAt = Date.now();
      /** @type {{type: 'hello', visit?: string, session: string}} */
      const hello = {type: 'hello', session: this.session};
      if (this.visit) hello.visit = this.visit;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this._heardAt = Date.now(); // anything at all, a pong or not, shows the socket lives
      this._onMessage(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this._onClose(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // A close event always follows; it decides what to do.
    };
  }

  /**
   * Sends a ping when the server has been quiet for PING_MS, and gives the socket up when a
   * ping went unanswered for PONG_WAIT_MS, or the attempt is late (CONNECT_TIMEOUT_MS,
   * WELCOME_TIMEOUT_MS).
   * Only a ping actually sent can time out, so timers slowed down in a background tab never
   * make a live socket look dead.
   * @param {WebSocket} ws
   */
  _checkLiveness(ws) {
    if (ws !== this.ws) return;
    const now = Date.now();
    if (!this.ready) {
      if (this._openedAt ? now - this._openedAt > WELCOME_TIMEOUT_MS : now - this._startedAt > CONNECT_TIMEOUT_MS) this._abandon();
      return;
    }
    if (this._pingAt) {
      // Nothing heard since the ping went: the socket is dead. (Anything heard after it
      // shows the socket lives; its pong is on the way, behind it.)
      if (this._heardAt < this._pingAt && now > this._pongBy) this._abandon();
      return;
    }
    if (now - this._heardAt >= PING_MS) this._ping(ws);
  }

  /** Gives the current socket up as dead (its events are ignored from now) and reconnects. */
  _abandon() {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(4000, 'unresponsive');
    } catch {
      // Closing a socket that never opened may throw in some browsers; it is gone either way.
    }
    this._onClose(1006, 'unresponsive');
  }

  /** The messages no pong confirmed go first when the connection is back. */
  _requeueUnconfirmed() {
    this._queue.unshift(...this._unconfirmed);
    this._unconfirmed = [];
    this._pingCovers = 0;
  }

  _stopLiveness() {
    if (this._liveness !== undefined) clearInterval(this._liveness);
    this._liveness = undefined;
  }

  /** @param {unknown} data */
  _onMessage(data) {
    if (typeof data !== 'string') return;
    let raw;
    try {
      raw = JSON.parse(data);
    } catch {
      return;
    }
    if (isObject(raw) && raw.type === 'pong') {
      this._onPong();
      return;
    }
    const msg = validate(raw);
    if (!msg) return;
    switch (msg.type) {
      case 'welcome':
        this.welcomes++;
        this.ready = true;
        this.attempt = 0;
        this._setState('open');
        this.emit('welcome', /** @type {WelcomeMsg} */ (msg));
        this._flush();
        return;
      case 'ended':
        this._final = {reason: 'ended', code: /** @type {EndedMsg} */ (msg).reason};
        break;
      case 'bye': {
        const reason = /** @type {ByeMsg} */ (msg).reason;
        if (reason === 'replaced' || reason === 'left') this._final = {reason};
        break;
      }
      case 'error': {
        const err = /** @type {ErrorMsg} */ (msg);
        const fatal = FATAL_CODES.has(err.code) ||
          (!this.ready && (FATAL_HELLO_CODES.has(err.code) || err.in_reply_to === 'hello') &&
            err.code !== 'rate_limited' && err.code !== 'internal');
        if (fatal) this._final = {reason: 'error', code: err.code, message: err.message};
        break;
      }
    }
    this.emit(/** @type {keyof SignallingEvents} */ (msg.type), /** @type {any} */ (msg));
    if (this._final && this._final.reason === 'ended') {
      // The visit is over: the server closes the socket; nothing more to send.
      this._queue = [];
    }
  }

  /**
   * Sends what waited for the connection, after `welcome` has been handled (which may
   * have replaced the connections some of it was about: those are dropped).
   */
  _flush() {
    const queued = this._queue;
    this._queue = [];
    for (const out of queued) if (this.ws && (!out.current || out.current())) this._write(this.ws, out);
  }

  /**
   * Sends a message's JSON on the socket; one to confirm (CONFIRMED) is kept until a pong
   * confirms it, and a ping goes after it if none is waiting.
   * @param {WebSocket} ws
   * @param {Outgoing} out
   */
  _write(ws, out) {
    ws.send(out.text);
    if (out.confirm) {
      this._unconfirmed.push(out);
      this._ping(ws);
    }
  }

  /**
   * Sends a ping unless one is waiting for its pong.
   * @param {WebSocket} ws
   */
  _ping(ws) {
    if (this._pingAt || ws.readyState !== this._WebSocket.OPEN) return;
    this._pingAt = Date.now();
    this._pongBy = this._pingAt + PONG_WAIT_MS;
    this._pingCovers = this._unconfirmed.length;
    ws.send('{"type":"ping"}');
  }

  /** A pong: what was sent before its ping arrived. */
  _onPong() {
    this._pingAt = 0;
    this._unconfirmed.splice(0, this._pingCovers);
    this._pingCovers = 0;
    if (this._unconfirmed.length && this.ws) this._ping(this.ws);
  }

  /** @param {number} code @param {string} reason */
  _onClose(code, reason) {
    this.ws = null;
    this.ready = false;
    this._stopLiveness();
    if (code === 1006) this._requeueUnconfirmed(); // lost with the connection, perhaps
    if (this._stopped) return;
    if (this._final) {
      this._finish(this._final);
      return;
    }
    if (code === 1002) {
      // unsupported_version: this page is older or newer than the server; a reload may help.
      this._finish({reason: 'error', code: reason || 'unsupported_version'});
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this.attempt++;
    const delay = backoffMs(this.attempt);
    this._setState('reconnecting', delay);
    this._timer = setTimeout(() => {
      this._timer = undefined;
      if (!this._stopped) this._open();
    }, delay);
  }

  /** @param {ClosedEvent} ev */
  _finish(ev) {
    if (this._stopped) return;
    this._stopped = true;
    this.ready = false;
    this._queue = [];
    if (this._timer !== undefined) clearTimeout(this._timer);
    this._timer = undefined;
    this._stopLiveness();
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= 1) ws.close(1000);
    this._setState('closed');
    this.emit('closed', ev);
  }
}
