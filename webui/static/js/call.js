// The call: one RTCPeerConnection per remote peer, perfect negotiation (docs/protocol.md),
// trickle ICE, ICE restart, the chat data channel, mute / camera off and stats.

import {Emitter} from './protocol.js';

/** @typedef {import('./protocol.js').Signalling} Signalling */
/** @typedef {import('./protocol.js').Peer} Peer */
/** @typedef {import('./protocol.js').SignalMsg} SignalMsg */
/** @typedef {import('./protocol.js').IceServer} IceServer */

/** Longest chat message, in characters (docs/protocol.md). */
export const MAX_CHAT = 2000;

/**
 * How long a peer connection may take to connect, or to come back after it failed, before
 * both people are told that the call cannot connect (ICE restarts go on meanwhile).
 */
export const CONNECT_TIMEOUT_MS = 20000;

/** How often the selected candidate pair is checked, to report a change (docs/protocol.md). */
const PAIR_CHECK_MS = 3000;

/**
 * @typedef {{candidate_type: string, protocol: string, relay_protocol?: string}} PairSide
 * @typedef {{local: PairSide, remote: PairSide}} SelectedPair
 */

/**
 * @typedef {{
 *   id: string,
 *   info: Peer | null,
 *   polite: boolean,
 *   pc: RTCPeerConnection,
 *   chat: RTCDataChannel,
 *   stream: MediaStream,
 *   makingOffer: boolean,
 *   ignoreOffer: boolean,
 *   isSettingRemoteAnswerPending: boolean,
 *   needsTracks: boolean,
 *   queue: Promise<void>,
 *   watchdog: ReturnType<typeof setTimeout> | undefined,
 *   failed: boolean,
 *   reportedPair: string,
 * }} PeerConn
 *
 * needsTracks: the connection was made by an incoming offer; local tracks are attached to the
 * offered transceivers right after that offer is applied.
 */

/**
 * @typedef {{peerId: string, name: string, text: string, at: string, self: boolean}} ChatEvent
 * @typedef {{
 *   'peer-added': {peer: Peer},
 *   'peer-updated': {peer: Peer, present: boolean},
 *   'peer-removed': {peerId: string},
 *   'remote-stream': {peerId: string, stream: MediaStream},
 *   'connection-state': {peerId: string, state: RTCPeerConnectionState},
 *   'connect-failed': {peerId: string},
 *   'connect-ok': {peerId: string},
 *   'pair': {peerId: string, pair: SelectedPair},
 *   chat: ChatEvent,
 *   closed: {},
 * }} CallEvents
 */

/**
 * @typedef {{
 *   peerId: string, name: string, connectionState: RTCPeerConnectionState,
 *   iceConnectionState: RTCIceConnectionState,
 *   localCandidateType?: string, remoteCandidateType?: string, rttMs?: number,
 *   audioIn?: {packetsReceived: number, packetsLost: number, jitterMs?: number, totalSamplesReceived?: number},
 *   videoIn?: {packetsReceived: number, packetsLost: number, framesDecoded: number, frameWidth?: number, frameHeight?: number, framesPerSecond?: number},
 *   audioOut?: {packetsSent: number}, videoOut?: {packetsSent: number, framesEncoded?: number},
 * }} PeerStats
 */

/**
 * @extends {Emitter<CallEvents>}
 */
export class Call extends Emitter {
  /**
   * @param {{signalling: Signalling, localStream: MediaStream | null}} opts
   */
  constructor(opts) {
    super();
    this.signalling = opts.signalling;
    /** @type {MediaStream} */
    this.localStream = opts.localStream ?? new MediaStream();
    /** Peer id -> RTCPeerConnection (for tests and debugging). */
    /** @type {Map<string, RTCPeerConnection>} */
    this.pcs = new Map();
    /** @type {Map<string, PeerConn>} */
    this.conns = new Map();
    /** Admitted peers the server told us about, by id. */
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    /** Peers whose WebSocket is gone (they may come back). */
    /** @type {Set<string>} */
    this.absent = new Set();
    /** @type {RTCConfiguration} */
    this.config = {iceServers: [], iceTransportPolicy: 'all'};
    /** @type {string | null} */
    this.selfId = null;
    this.selfName = '';
    this.admitted = false;
    this.muted = false;
    this.cameraOff = false;
    this.closed = false;
    /** @type {Array<() => void>} */
    this._unsubscribe = [];
    /** Peers whose connection did not connect within CONNECT_TIMEOUT_MS. */
    /** @type {Set<string>} */
    this.failedPeers = new Set();
    this._pairTimer = setInterval(() => {
      for (const c of this.conns.values()) {
        if (c.pc.connectionState === 'connected') this._reportPair(c);
      }
    }, PAIR_CHECK_MS);
    this._listen();
  }

  _listen() {
    const s = this.signalling;
    this._unsubscribe.push(
      s.on('welcome', (m) => {
        this.selfId = m.participant.id;
        this.selfName = m.participant.name;
        this._setIce(m.ice_servers, m.ice_transport_policy);
        this.admitted = m.admitted;
        if (m.admitted) this._learnPeers(m.peers, true);
      }),
      s.on('admitted', (m) => {
        this.admitted = true;
        this._learnPeers(m.peers, false);
      }),
      s.on('peer', (m) => this._onPeer(m.event, m.peer)),
      s.on('signal', (m) => this._onSignal(m)),
      s.on('ice_servers', (m) => this._setIce(m.ice_servers, m.ice_transport_policy)),
      s.on('ended', () => this.close()),
    );
  }

  /**
   * @param {IceServer[]} servers
   * @param {RTCIceTransportPolicy} policy
   */
  _setIce(servers, policy) {
    this.config = {iceServers: /** @type {RTCIceServer[]} */ (servers), iceTransportPolicy: policy};
    for (const c of this.conns.values()) {
      try {
        c.pc.setConfiguration({...c.pc.getConfiguration(), ...this.config});
      } catch (err) {
        console.warn('bedside: setConfiguration failed', err);
      }
    }
  }

  /**
   * @param {Peer[]} list
   * @param {boolean} complete the list is everybody admitted and connected (welcome)
   */
  _learnPeers(list, complete) {
    for (const p of list) this._onPeer('joined', p);
    if (complete) {
      // After our own reconnect: peers not listed are not connected now; they may come back.
      const ids = new Set(list.map((p) => p.id));
      for (const id of this.peers.keys()) {
        if (!ids.has(id)) this._onPeer('gone', /** @type {Peer} */ (this.peers.get(id)));
      }
    }
  }

  /**
   * @param {'joined' | 'gone' | 'left'} event
   * @param {Peer} peer
   */
  _onPeer(event, peer) {
    if (this.closed || peer.id === this.selfId) return;
    if (event === 'left') {
      this.peers.delete(peer.id);
      this.absent.delete(peer.id);
      this._drop(peer.id);
      this.emit('peer-removed', {peerId: peer.id});
      return;
    }
    if (event === 'gone') {
      // Its WebSocket is gone; media may still flow, so the connection stays.
      if (this.peers.has(peer.id)) {
        this.absent.add(peer.id);
        this.emit('peer-updated', {peer: /** @type {Peer} */ (this.peers.get(peer.id)), present: false});
      }
      return;
    }
    // joined
    const known = this.peers.get(peer.id);
    this.peers.set(peer.id, peer);
    this.absent.delete(peer.id);
    const conn = this.conns.get(peer.id);
    if (conn && conn.info && conn.info.session !== peer.session) {
      // The page was reloaded: its old connection is dead.
      this._drop(peer.id);
    } else if (conn) {
      // The same page, only its WebSocket came back: keep the connection.
      conn.info = peer;
      conn.polite = peer.polite;
      if (conn.pc.iceConnectionState === 'failed' && !peer.polite) conn.pc.restartIce();
    }
    if (known) this.emit('peer-updated', {peer, present: true});
    else this.emit('peer-added', {peer});
    if (!this.conns.has(peer.id) && !peer.polite) {
      // We are impolite towards this peer: we make the connection and the first offer.
      this._create(peer.id, peer, false);
    }
  }

  /**
   * Makes the connection to a peer.
   * @param {string} id
   * @param {Peer | null} info
   * @param {boolean} byOffer made because an offer arrived (tracks are attached after it)
   * @returns {PeerConn}
   */
  _create(id, info, byOffer) {
    const pc = new RTCPeerConnection(this.config);
    const chat = pc.createDataChannel('chat', {negotiated: true, id: 0});
    /** @type {PeerConn} */
    const conn = {
      id, info, polite: info ? info.polite : true, pc, chat, stream: new MediaStream(),
      makingOffer: false, ignoreOffer: false, isSettingRemoteAnswerPending: false,
      needsTracks: byOffer, queue: Promise.resolve(), watchdog: undefined, failed: false, reportedPair: '',
    };
    this._watch(conn);
    this.conns.set(id, conn);
    this.pcs.set(id, pc);

    pc.onnegotiationneeded = async () => {
      if (conn.needsTracks) return; // the answer to the incoming offer comes first
      try {
        conn.makingOffer = true;
        await pc.setLocalDescription();
        if (pc.localDescription) this._send(id, {description: pc.localDescription.toJSON()});
      } catch (err) {
        if (!this.closed) console.warn('bedside: offer failed', err);
      } finally {
        conn.makingOffer = false;
      }
    };
    pc.onicecandidate = (ev) => {
      this._send(id, {candidate: ev.candidate ? ev.candidate.toJSON() : null});
    };
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === 'failed') pc.restartIce();
    };
    pc.onconnectionstatechange = () => {
      const state = pc.connectionState;
      if (state === 'connected') {
        this._unwatch(conn);
        if (conn.failed) {
          conn.failed = false;
          this.failedPeers.delete(id);
          this.emit('connect-ok', {peerId: id});
        }
        this._reportPair(conn);
      } else if (state === 'failed' || state === 'disconnected') {
        this._watch(conn);
      }
      this.emit('connection-state', {peerId: id, state});
    };
    pc.ontrack = (ev) => {
      const track = ev.track;
      for (const t of conn.stream.getTracks()) {
        if (t.kind === track.kind && t !== track) conn.stream.removeTrack(t);
      }
      if (!conn.stream.getTracks().includes(track)) conn.stream.addTrack(track);
      this.emit('remote-stream', {peerId: id, stream: conn.stream});
    };
    chat.onmessage = (ev) => this._onChat(conn, ev.data);

    if (!byOffer) this._attachTracks(conn);
    return conn;
  }

  /**
   * Adds the local tracks to a connection. For a connection made by an incoming offer this runs
   * after that offer was applied, so addTrack reuses the offered transceivers. The impolite side
   * also asks to receive a kind it does not send, so the other side can send it without a new
   * negotiation.
   * @param {PeerConn} conn
   */
  _attachTracks(conn) {
    const pc = conn.pc;
    for (const track of this.localStream.getTracks()) {
      if (pc.getSenders().some((s) => s.track === track)) continue;
      pc.addTrack(track, this.localStream);
    }
    if (!conn.needsTracks) {
      for (const kind of ['audio', 'video']) {
        const has = pc.getTransceivers().some((t) => (t.receiver.track && t.receiver.track.kind === kind));
        if (!has) pc.addTransceiver(kind, {direction: 'recvonly', streams: [this.localStream]});
      }
    }
  }

  /**
   * Starts the connect watchdog of a connection, unless it runs already: if the connection
   * is not connected when it fires, the call cannot connect (a network that blocks it) and
   * both pages say so instead of waiting for ever.
   * @param {PeerConn} conn
   */
  _watch(conn) {
    if (conn.watchdog !== undefined || conn.failed) return;
    conn.watchdog = setTimeout(() => {
      conn.watchdog = undefined;
      if (this.closed || this.conns.get(conn.id) !== conn || conn.pc.connectionState === 'connected') return;
      conn.failed = true;
      this.failedPeers.add(conn.id);
      console.warn(`bedside: no connection to ${conn.id} after ${CONNECT_TIMEOUT_MS / 1000} s (${conn.pc.iceConnectionState})`);
      this.emit('connect-failed', {peerId: conn.id});
    }, CONNECT_TIMEOUT_MS);
  }

  /** @param {PeerConn} conn */
  _unwatch(conn) {
    if (conn.watchdog !== undefined) clearTimeout(conn.watchdog);
    conn.watchdog = undefined;
  }

  /**
   * Reads the selected candidate pair of a connection and, when it is new or changed, tells
   * the server (a connection message: candidate types and protocols, never addresses).
   * @param {PeerConn} conn
   */
  async _reportPair(conn) {
    let pair;
    try {
      pair = await selectedPair(conn.pc);
    } catch {
      return;
    }
    if (!pair || this.closed || this.conns.get(conn.id) !== conn) return;
    const key = JSON.stringify(pair);
    if (key === conn.reportedPair) return;
    conn.reportedPair = key;
    this.emit('pair', {peerId: conn.id, pair});
    if (this.admitted) this.signalling.send({type: 'connection', peer: conn.id, local: pair.local, remote: pair.remote});
  }

  /** @param {string} id */
  _drop(id) {
    const conn = this.conns.get(id);
    if (!conn) return;
    this.conns.delete(id);
    this.pcs.delete(id);
    this._unwatch(conn);
    if (this.failedPeers.delete(id)) this.emit('connect-ok', {peerId: id});
    conn.pc.onnegotiationneeded = null;
    conn.pc.onicecandidate = null;
    conn.pc.oniceconnectionstatechange = null;
    conn.pc.onconnectionstatechange = null;
    conn.pc.ontrack = null;
    conn.chat.onmessage = null;
    conn.pc.close();
  }

  /**
   * @param {string} to
   * @param {{description: RTCSessionDescriptionInit} | {candidate: RTCIceCandidateInit | null}} body
   */
  _send(to, body) {
    if (this.closed) return;
    this.signalling.send({type: 'signal', to, ...body});
  }

  /** @param {SignalMsg} msg */
  _onSignal(msg) {
    if (this.closed) return;
    let conn = this.conns.get(msg.from);
    if (!conn) {
      if (!msg.description || msg.description.type !== 'offer') return; // stale candidate or answer
      // The polite side (or a peer we have not heard of yet) makes its connection now.
      conn = this._create(msg.from, this.peers.get(msg.from) ?? null, true);
    }
    const c = conn;
    c.queue = c.queue.then(() => this._handleSignal(c, msg)).catch((err) => {
      if (!this.closed && this.conns.get(c.id) === c) console.warn('bedside: signal failed', err);
    });
  }

  /**
   * The perfect negotiation pattern.
   * @param {PeerConn} conn
   * @param {SignalMsg} msg
   */
  async _handleSignal(conn, msg) {
    const pc = conn.pc;
    if (pc.signalingState === 'closed') return;
    const description = msg.description;
    if (description) {
      if (description.type === 'rollback') return; // never needed on the wire; ignore
      const readyForOffer = !conn.makingOffer &&
        (pc.signalingState === 'stable' || conn.isSettingRemoteAnswerPending);
      const offerCollision = description.type === 'offer' && !readyForOffer;
      conn.ignoreOffer = !conn.polite && offerCollision;
      if (conn.ignoreOffer) return;
      conn.isSettingRemoteAnswerPending = description.type === 'answer';
      try {
        if (offerCollision) {
          // Polite side: drop our own offer and take theirs.
          await Promise.all([
            pc.setLocalDescription({type: 'rollback'}).catch(() => {}),
            pc.setRemoteDescription(description),
          ]);
        } else {
          await pc.setRemoteDescription(description);
        }
      } finally {
        conn.isSettingRemoteAnswerPending = false;
      }
      if (description.type === 'offer') {
        if (conn.needsTracks) {
          this._attachTracks(conn);
          conn.needsTracks = false;
        }
        await pc.setLocalDescription();
        if (pc.localDescription) this._send(conn.id, {description: pc.localDescription.toJSON()});
      }
      return;
    }
    if (msg.candidate !== undefined) {
      try {
        await pc.addIceCandidate(msg.candidate ?? undefined);
      } catch (err) {
        if (!conn.ignoreOffer) throw err;
      }
    }
  }

  /**
   * @param {PeerConn} conn
   * @param {unknown} data
   */
  _onChat(conn, data) {
    if (typeof data !== 'string' || data.length > 4 * MAX_CHAT + 200) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!msg || typeof msg.text !== 'string') return;
    const text = msg.text.slice(0, MAX_CHAT);
    if (!text.trim()) return;
    const at = typeof msg.at === 'string' && !Number.isNaN(Date.parse(msg.at)) ? msg.at : new Date().toISOString();
    const name = conn.info?.name ?? this.peers.get(conn.id)?.name ?? 'Participant';
    this.emit('chat', {peerId: conn.id, name, text, at, self: false});
  }

  /**
   * Sends a chat message to everybody in the call. Returns how many peers it reached.
   * @param {string} text
   * @returns {number}
   */
  sendChat(text) {
    const clean = text.trim().slice(0, MAX_CHAT);
    if (!clean || this.closed) return 0;
    const at = new Date().toISOString();
    const data = JSON.stringify({text: clean, at});
    let sent = 0;
    for (const c of this.conns.values()) {
      if (c.chat.readyState === 'open') {
        c.chat.send(data);
        sent++;
      }
    }
    if (sent > 0) this.emit('chat', {peerId: this.selfId ?? '', name: 'You', text: clean, at, self: true});
    return sent;
  }

  /** True when a chat message would reach somebody. */
  chatOpen() {
    return [...this.conns.values()].some((c) => c.chat.readyState === 'open');
  }

  /** @param {boolean} muted */
  setMuted(muted) {
    this.muted = muted;
    for (const t of this.localStream.getAudioTracks()) t.enabled = !muted;
  }

  /** @param {boolean} off */
  setCameraOff(off) {
    this.cameraOff = off;
    for (const t of this.localStream.getVideoTracks()) t.enabled = !off;
  }

  /**
   * Uses another camera or microphone: the track replaces the old one of its kind on every
   * connection (no renegotiation when a sender of that kind exists). The old track is stopped.
   * @param {MediaStreamTrack} track
   */
  async replaceTrack(track) {
    const old = this.localStream.getTracks().find((t) => t.kind === track.kind);
    track.enabled = track.kind === 'audio' ? !this.muted : !this.cameraOff;
    if (old) this.localStream.removeTrack(old);
    this.localStream.addTrack(track);
    for (const c of this.conns.values()) {
      if (c.needsTracks) continue;
      const sender = c.pc.getSenders().find((s) => (s.track && s.track.kind === track.kind) || s.track === old);
      const tr = c.pc.getTransceivers().find((t) => t.sender === sender ||
        (!t.sender.track && t.receiver.track.kind === track.kind && t.currentDirection !== 'stopped'));
      if (tr) {
        await tr.sender.replaceTrack(track);
        if (tr.direction === 'recvonly') tr.direction = 'sendrecv';
        else if (tr.direction === 'inactive') tr.direction = 'sendonly';
      } else {
        c.pc.addTrack(track, this.localStream);
      }
    }
    if (old && old !== track) old.stop();
  }

  /**
   * The raw stats report of one peer's connection.
   * @param {string} peerId
   * @returns {Promise<RTCStatsReport | null>}
   */
  async getStats(peerId) {
    const pc = this.pcs.get(peerId);
    return pc ? pc.getStats() : null;
  }

  /**
   * A summary of each connection: state, selected candidate types, round-trip time, and what
   * was received and sent.
   * @returns {Promise<PeerStats[]>}
   */
  async statsSummary() {
    /** @type {PeerStats[]} */
    const out = [];
    for (const [peerId, c] of this.conns) {
      const report = await c.pc.getStats();
      /** @type {PeerStats} */
      const s = {
        peerId, name: c.info?.name ?? '', connectionState: c.pc.connectionState,
        iceConnectionState: c.pc.iceConnectionState,
      };
      /** @type {Map<string, any>} */
      const byId = new Map();
      report.forEach((v) => byId.set(v.id, v));
      for (const v of byId.values()) {
        if (v.type === 'transport' && v.selectedCandidatePairId) {
          const pair = byId.get(v.selectedCandidatePairId);
          if (pair) {
            s.localCandidateType = byId.get(pair.localCandidateId)?.candidateType;
            s.remoteCandidateType = byId.get(pair.remoteCandidateId)?.candidateType;
            if (typeof pair.currentRoundTripTime === 'number') s.rttMs = pair.currentRoundTripTime * 1000;
          }
        } else if (v.type === 'candidate-pair' && v.nominated && v.state === 'succeeded' && !s.localCandidateType) {
          s.localCandidateType = byId.get(v.localCandidateId)?.candidateType;
          s.remoteCandidateType = byId.get(v.remoteCandidateId)?.candidateType;
          if (typeof v.currentRoundTripTime === 'number') s.rttMs = v.currentRoundTripTime * 1000;
        } else if (v.type === 'inbound-rtp' && v.kind === 'audio') {
          s.audioIn = {packetsReceived: v.packetsReceived ?? 0, packetsLost: v.packetsLost ?? 0,
            jitterMs: typeof v.jitter === 'number' ? v.jitter * 1000 : undefined,
            totalSamplesReceived: v.totalSamplesReceived};
        } else if (v.type === 'inbound-rtp' && v.kind === 'video') {
          s.videoIn = {packetsReceived: v.packetsReceived ?? 0, packetsLost: v.packetsLost ?? 0,
            framesDecoded: v.framesDecoded ?? 0, frameWidth: v.frameWidth, frameHeight: v.frameHeight,
            framesPerSecond: v.framesPerSecond};
        } else if (v.type === 'outbound-rtp' && v.kind === 'audio') {
          s.audioOut = {packetsSent: v.packetsSent ?? 0};
        } else if (v.type === 'outbound-rtp' && v.kind === 'video') {
          s.videoOut = {packetsSent: v.packetsSent ?? 0, framesEncoded: v.framesEncoded};
        }
      }
      out.push(s);
    }
    return out;
  }

  /** Closes every connection. The local stream is the page's to stop. */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this._pairTimer);
    for (const id of [...this.conns.keys()]) this._drop(id);
    for (const off of this._unsubscribe) off();
    this._unsubscribe = [];
    this.emit('closed', {});
  }
}

const CANDIDATE_TYPES = ['host', 'srflx', 'prflx', 'relay'];
const PROTOCOLS = ['udp', 'tcp'];
const RELAY_PROTOCOLS = ['udp', 'tcp', 'tls'];

/**
 * The selected candidate pair of a connection, in the form of the connection message, or null
 * while there is none.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<SelectedPair | null>}
 */
export async function selectedPair(pc) {
  const report = await pc.getStats();
  /** @type {Map<string, any>} */
  const byId = new Map();
  report.forEach((v) => byId.set(v.id, v));
  let pair = null;
  for (const v of byId.values()) {
    if (v.type === 'transport' && v.selectedCandidatePairId) pair = byId.get(v.selectedCandidatePairId);
  }
  if (!pair) {
    for (const v of byId.values()) {
      if (v.type === 'candidate-pair' && v.nominated && v.state === 'succeeded') pair = v;
    }
  }
  if (!pair) return null;
  const side = (/** @type {any} */ c, /** @type {boolean} */ local) => {
    if (!c || !CANDIDATE_TYPES.includes(c.candidateType) || !PROTOCOLS.includes(c.protocol)) return null;
    /** @type {PairSide} */
    const out = {candidate_type: c.candidateType, protocol: c.protocol};
    if (local && c.candidateType === 'relay' && RELAY_PROTOCOLS.includes(c.relayProtocol)) out.relay_protocol = c.relayProtocol;
    return out;
  };
  const local = side(byId.get(pair.localCandidateId), true);
  const remote = side(byId.get(pair.remoteCandidateId), false);
  return local && remote ? {local, remote} : null;
}
