// The call (docs/protocol.md): peer to peer for two people, one RTCPeerConnection per remote
// peer with perfect negotiation; through the server's SFU for more (a pub connection that
// publishes our tracks, the camera in three simulcast layers, and a sub connection that
// receives the others'), switching make-before-break. Trickle ICE, ICE restart, chat, mute /
// camera off, screen share, the connect watchdog, connection reports and stats.

import {AUDIO_NARROW_BPS, SAMPLE_MS, VideoGate, outgoingEstimate, setAudioBitrate, setVideoDirection, setVideoEncodings, setVideoTry, videoSenders} from './audiofirst.js';
import {E2EE, e2eeSupported} from './e2ee.js';
import {Emitter, randomId} from './protocol.js';

/** @typedef {import('./protocol.js').Signalling} Signalling */
/** @typedef {import('./protocol.js').Peer} Peer */
/** @typedef {import('./protocol.js').SignalMsg} SignalMsg */
/** @typedef {import('./protocol.js').IceServer} IceServer */
/** @typedef {import('./protocol.js').TrackInfo} TrackInfo */
/** @typedef {import('./protocol.js').Source} Source */

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
 * A connection whose ICE has been disconnected this long restarts ICE (the path it had is
 * gone: the network changed, or came back with other addresses); one whose ICE failed
 * restarts at once. Browsers may stay disconnected for minutes before they call it failed.
 */
export const ICE_RESTART_AFTER_MS = 3000;

/**
 * The camera's simulcast encodings in SFU mode, lowest first (docs/protocol.md): a quarter,
 * a half and the whole of the camera's resolution.
 */
export const SIMULCAST = Object.freeze([
  {rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000},
  {rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000},
  {rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000},
]);

/** How often, during the switch to the SFU, the SFU's media of each peer is looked at. */
const SWITCH_CHECK_MS = 100;
/**
 * Once we receive a peer through the SFU (and show it so), how long we keep our peer
 * connection for it to say that it receives us through the SFU too (closing it ends it for
 * both).
 */
const SWITCH_WAIT_MS = 3000;
/** A peer whose audio arrives through the SFU and no camera after this long has none. */
const AUDIO_ONLY_MS = 1500;

/**
 * @typedef {{candidate_type: string, protocol: string, relay_protocol?: string}} PairSide
 * @typedef {{local: PairSide, remote: PairSide}} SelectedPair
 */

/**
 * A connection the watchdog and the connection reports follow: a peer connection to a peer,
 * or one of our two connections with the SFU.
 * @typedef {{
 *   id: string,
 *   pc: RTCPeerConnection,
 *   watchdog: ReturnType<typeof setTimeout> | undefined,
 *   failed: boolean,
 *   reportedPair: string,
 *   current: () => boolean,
 *   report: {peer: string, pc?: 'pub' | 'sub'},
 * }} Watched
 */

/**
 * @typedef {Watched & {
 *   info: Peer | null,
 *   polite: boolean,
 *   chat: RTCDataChannel,
 *   stream: MediaStream,
 *   screen: MediaStream | null,
 *   sources: Record<string, string>,
 *   makingOffer: boolean,
 *   ignoreOffer: boolean,
 *   isSettingRemoteAnswerPending: boolean,
 *   needsTracks: boolean,
 *   queue: Promise<void>,
 *   gate: VideoGate,
 *   peerVideoPaused: boolean,
 * }} PeerConn
 *
 * needsTracks: the connection was made by an incoming offer; local tracks are attached to the
 * offered transceivers right after that offer is applied. sources: the remote side's sources
 * by mid, from its last description. gate: whether our video to this peer is paused for
 * want of bandwidth (audiofirst.js); peerVideoPaused: the peer said it paused its video.
 */

/**
 * @typedef {Watched & {which: 'pub' | 'sub', session: string, queue: Promise<void>, pending: RTCIceCandidateInit[]}} SfuConn
 *
 * @typedef {{
 *   session: string,
 *   pub: SfuConn | null,
 *   sub: SfuConn | null,
 *   tracks: Map<string, TrackInfo>,
 *   streams: Map<string, MediaStream>,
 *   midTracks: Map<string, MediaStreamTrack>,
 *   readyAt: Map<string, number>,
 *   audioAt: Map<string, number>,
 *   peerReady: Set<string>,
 *   timer: ReturnType<typeof setInterval>,
 *   checking: boolean,
 *   sizes: Map<string, string>,
 *   paused: Set<string>,
 *   pubPaused: Set<string>,
 *   gate: VideoGate,
 *   cameraLayers: string[] | null,
 * }} SfuState
 *
 * streams: by participant id (camera and microphone) or "<id>.screen"; readyAt: when each
 * peer's media first arrived through the SFU (its tile swapped then); peerReady: peers that
 * said they receive us through the SFU; sizes: the last video_size sent, by "<id> <source>";
 * paused: the videos (keys as in streams) the SFU paused for want of bandwidth on our link,
 * pubPaused those their publishers paused for want of it on theirs (video_paused); gate:
 * whether we pause our video on pub for want of bandwidth on our link (audiofirst.js);
 * cameraLayers: the camera's layers the SFU last asked for (layers; null: all).
 */

/**
 * @typedef {{peerId: string, name: string, text: string, at: string, self: boolean}} ChatEvent
 * @typedef {'camera' | 'screen'} VideoSource
 * @typedef {{
 *   'peer-added': {peer: Peer},
 *   'peer-updated': {peer: Peer, present: boolean},
 *   'peer-removed': {peerId: string},
 *   'remote-stream': {peerId: string, stream: MediaStream, via: 'p2p' | 'sfu', source: VideoSource},
 *   'remote-screen-ended': {peerId: string},
 *   'sfu-switched': {peerId: string},
 *   'connection-state': {peerId: string, state: RTCPeerConnectionState},
 *   'connect-failed': {peerId: string},
 *   'connect-ok': {peerId: string},
 *   'pair': {peerId: string, pair: SelectedPair},
 *   mode: {mode: 'p2p' | 'sfu'},
 *   speakers: {active: string, speaking: string[]},
 *   screen: {sharing: boolean},
 *   'video-paused': {paused: boolean},
 *   'remote-video-paused': {peerId: string, paused: boolean},
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
    /**
     * Every RTCPeerConnection of the call, for tests and debugging: by peer id, and
     * "sfu:pub" / "sfu:sub" in SFU mode.
     * @type {Map<string, RTCPeerConnection>}
     */
    this.pcs = new Map();
    /** @type {Map<string, PeerConn>} */
    this.conns = new Map();
    /**
     * For each connection's latest description sent: the signalling's `welcome` after which
     * it went (Signalling.send), to tell an offer lost with a dead socket from one queued.
     * @type {WeakMap<RTCPeerConnection, number>}
     */
    this._sentAfter = new WeakMap();
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
    this.observer = false;
    this.admitted = false;
    this.muted = false;
    this.cameraOff = false;
    this.closed = false;
    /** How the call carries media: 'p2p' or 'sfu'. */
    /** @type {'p2p' | 'sfu'} */
    this.mode = 'p2p';
    /** @type {SfuState | null} */
    this.sfu = null;
    /** Our shared screen, while sharing. */
    /** @type {MediaStream | null} */
    this.screenStream = null;
    /** The active speaker (SFU mode). */
    this.activeSpeaker = '';
    /** @type {Array<() => void>} */
    this._unsubscribe = [];
    /** The server said it was going away: at the next `welcome`, see _afterServerRestart. */
    this._serverRestarted = false;
    /** A round of _checkVideoGates is under way. */
    this._checkingGates = false;
    /** Peers (and "sfu") whose connection did not connect within CONNECT_TIMEOUT_MS. */
    /** @type {Set<string>} */
    this.failedPeers = new Set();
    /**
     * End-to-end encryption of every frame (e2ee.js), or null where the browser cannot
     * (the page then says the call is not end-to-end encrypted).
     * @type {E2EE | null}
     */
    this.e2ee = e2eeSupported() ? new E2EE((msg) => this.signalling.send(msg)) : null;
    this._pairTimer = setInterval(() => {
      for (const c of this._watched()) {
        if (c.pc.connectionState === 'connected') this._reportPair(c);
      }
    }, PAIR_CHECK_MS);
    this._gateTimer = setInterval(() => this._checkVideoGates(), SAMPLE_MS);
    this._listen();
  }

  _listen() {
    const s = this.signalling;
    this._unsubscribe.push(
      s.on('welcome', (m) => {
        this.selfId = m.participant.id;
        if (this.e2ee) this.e2ee.selfId = m.participant.id;
        this.selfName = m.participant.name;
        this.observer = m.participant.observer === true;
        this._setIce(m.ice_servers, m.ice_transport_policy);
        this.admitted = m.admitted;
        if (m.admitted) {
          this._setMode(m.mode, m.sfu_session ?? '');
          this._learnPeers(m.peers, true);
          this._resendOffers();
          if (this._serverRestarted) this._afterServerRestart();
        }
        this._serverRestarted = false;
      }),
      s.on('bye', (m) => {
        if (m.reason === 'server_shutdown') this._serverRestarted = true;
      }),
      s.on('admitted', (m) => {
        this.admitted = true;
        this._setMode(m.mode, m.sfu_session ?? '');
        this._learnPeers(m.peers, false);
      }),
      s.on('mode', (m) => this._setMode(m.mode, m.sfu_session ?? '')),
      s.on('peer', (m) => this._onPeer(m.event, m.peer)),
      s.on('signal', (m) => (m.from === 'sfu' ? this._onSfuSignal(m) : this._onSignal(m))),
      s.on('tracks', (m) => this._onTracks(m.tracks)),
      s.on('layers', (m) => this._onLayers(m.source, m.active)),
      s.on('speakers', (m) => {
        this.activeSpeaker = m.active;
        this.emit('speakers', {active: m.active, speaking: m.speaking});
      }),
      s.on('video_paused', (m) => {
        if (!this.sfu) return;
        const key = m.source === 'screen' ? `${m.participant}.screen` : m.participant;
        const set = m.link === 'theirs' ? this.sfu.pubPaused : this.sfu.paused;
        if (m.paused) set.add(key);
        else set.delete(key);
        this.emit('remote-video-paused', {peerId: key, paused: m.paused});
      }),
      s.on('e2ee', (m) => {
        this.e2ee?.receive(m).catch((err) => console.warn('bedside: e2ee', err));
      }),
      s.on('chat', (m) => {
        const text = m.text.slice(0, MAX_CHAT);
        if (!text.trim() || m.from === this.selfId) return;
        this.emit('chat', {peerId: m.from, name: this.peers.get(m.from)?.name ?? 'Participant', text, at: m.at, self: false});
      }),
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
    for (const c of this._watched()) {
      try {
        c.pc.setConfiguration({...c.pc.getConfiguration(), ...this.config});
      } catch (err) {
        console.warn('bedside: setConfiguration failed', err);
      }
    }
  }

  /** Every connection of the call: peer connections, and the SFU's. @returns {Watched[]} */
  _watched() {
    /** @type {Watched[]} */
    const out = [...this.conns.values()];
    if (this.sfu?.pub) out.push(this.sfu.pub);
    if (this.sfu?.sub) out.push(this.sfu.sub);
    return out;
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
      this.e2ee?.left(peer.id).catch((err) => console.warn('bedside: e2ee', err));
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
    this.e2ee?.joined(peer.id, peer.session).catch((err) => console.warn('bedside: e2ee', err));
    const known = this.peers.get(peer.id);
    this.peers.set(peer.id, peer);
    this.absent.delete(peer.id);
    const conn = this.conns.get(peer.id);
    if (conn && conn.info && conn.info.session !== peer.session) {
      // The page was reloaded: its old connection is dead.
      this._drop(peer.id);
    } else if (conn) {
      // The same page, only its WebSocket came back: keep the connection. An offer of ours
      // still waiting for its answer may have been relayed to its old socket after that
      // socket's path had died: it goes again.
      conn.info = peer;
      conn.polite = peer.polite;
      if (conn.pc.iceConnectionState === 'failed' && !peer.polite) conn.pc.restartIce();
      else if (conn.pc.signalingState === 'have-local-offer' && conn.pc.localDescription) this._sendDescription(conn);
    }
    if (known) this.emit('peer-updated', {peer, present: true});
    else this.emit('peer-added', {peer});
    if (this.mode === 'p2p' && !this.conns.has(peer.id) && !peer.polite) {
      // We are impolite towards this peer: we make the connection and the first offer.
      this._create(peer.id, peer, false);
    }
  }

  // --- peer to peer -------------------------------------------------------------------------

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
      id, info, polite: info ? info.polite : true, pc, chat, stream: new MediaStream(), screen: null, sources: {},
      makingOffer: false, ignoreOffer: false, isSettingRemoteAnswerPending: false,
      needsTracks: byOffer, queue: Promise.resolve(), watchdog: undefined, failed: false, reportedPair: '',
      current: () => this.conns.get(id) === conn, report: {peer: id},
      gate: new VideoGate(performance.now()), peerVideoPaused: false,
    };
    this._watch(conn);
    this.conns.set(id, conn);
    this.pcs.set(id, pc);

    pc.onnegotiationneeded = async () => {
      if (conn.needsTracks) return; // the answer to the incoming offer comes first
      try {
        conn.makingOffer = true;
        await pc.setLocalDescription();
        if (pc.localDescription) this._sendDescription(conn);
      } catch (err) {
        if (!this.closed) console.warn('bedside: offer failed', err);
      } finally {
        conn.makingOffer = false;
      }
    };
    pc.onicecandidate = (ev) => {
      this._send(id, {candidate: ev.candidate ? ev.candidate.toJSON() : null}, conn.current);
    };
    pc.oniceconnectionstatechange = restartWhenStuck(pc, conn.current, () => this.signalling.probe(), () => pc.restartIce(), () => conn.polite);
    pc.onconnectionstatechange = () => this._connectionState(conn);
    pc.ontrack = (ev) => {
      this.e2ee?.protect(pc);
      // A peer already shown through the SFU (the switch, below) keeps that tile while the
      // peer connection waits to close.
      if (this.sfu?.readyAt.has(id)) return;
      const track = ev.track;
      if (track.kind === 'video' && conn.sources[ev.transceiver.mid ?? ''] === 'screen') {
        if (!conn.screen) conn.screen = new MediaStream();
        for (const t of conn.screen.getTracks()) if (t !== track) conn.screen.removeTrack(t);
        if (!conn.screen.getTracks().includes(track)) conn.screen.addTrack(track);
        this.emit('remote-stream', {peerId: id, stream: conn.screen, via: 'p2p', source: 'screen'});
        return;
      }
      for (const t of conn.stream.getTracks()) {
        if (t.kind === track.kind && t !== track) conn.stream.removeTrack(t);
      }
      if (!conn.stream.getTracks().includes(track)) conn.stream.addTrack(track);
      this.emit('remote-stream', {peerId: id, stream: conn.stream, via: 'p2p', source: 'camera'});
    };
    chat.onmessage = (ev) => this._onChat(conn, ev.data);

    if (!byOffer) this._attachTracks(conn);
    return conn;
  }

  /**
   * Adds the local tracks (and a shared screen) to a connection. For a connection made by an
   * incoming offer this runs after that offer was applied, so addTrack reuses the offered
   * transceivers. The impolite side also asks to receive a kind it does not send, so the
   * other side can send it without a new negotiation.
   * @param {PeerConn} conn
   */
  _attachTracks(conn) {
    const pc = conn.pc;
    for (const track of this.localStream.getTracks()) {
      if (pc.getSenders().some((s) => s.track === track)) continue;
      pc.addTrack(track, this.localStream);
    }
    const screen = this.screenStream?.getVideoTracks()[0];
    if (screen && this.screenStream && !pc.getSenders().some((s) => s.track === screen)) pc.addTrack(screen, this.screenStream);
    if (!conn.needsTracks) {
      for (const kind of ['audio', 'video']) {
        const has = pc.getTransceivers().some((t) => (t.receiver.track && t.receiver.track.kind === kind));
        if (!has) pc.addTransceiver(kind, {direction: 'recvonly', streams: [this.localStream]});
      }
    }
    this.e2ee?.protect(pc);
  }

  /**
   * The source of each of our sending transceivers, by mid (sources in signal messages).
   * @param {RTCPeerConnection} pc
   * @returns {Record<string, Source>}
   */
  _sources(pc) {
    /** @type {Record<string, Source>} */
    const out = {};
    const screen = this.screenStream?.getVideoTracks()[0];
    for (const t of pc.getTransceivers()) {
      const track = t.sender.track;
      if (!track || !t.mid) continue;
      out[t.mid] = track === screen ? 'screen' : track.kind === 'audio' ? 'audio' : 'camera';
    }
    return out;
  }

  /** @param {PeerConn} conn */
  _sendDescription(conn) {
    const d = conn.pc.localDescription;
    if (!d || this.closed) return;
    const at = this.signalling.send({type: 'signal', to: conn.id, description: d.toJSON(), sources: this._sources(conn.pc)}, conn.current);
    this._sentAfter.set(conn.pc, at);
  }

  /**
   * Follows a connection's state: the watchdog, the connection report, the tile's status.
   * @param {Watched} conn
   */
  _connectionState(conn) {
    const state = conn.pc.connectionState;
    if (state === 'connected') {
      this._unwatch(conn);
      if (conn.failed) {
        conn.failed = false;
        this.failedPeers.delete(conn.report.pc ? 'sfu' : conn.id);
        this.emit('connect-ok', {peerId: conn.report.pc ? 'sfu' : conn.id});
      }
      this._reportPair(conn);
    } else if (state === 'failed' || state === 'disconnected') {
      this._watch(conn);
    }
    this.emit('connection-state', {peerId: conn.id, state});
  }

  /**
   * Starts the connect watchdog of a connection, unless it runs already: if the connection
   * is not connected when it fires, the call cannot connect (a network that blocks it) and
   * both pages say so instead of waiting for ever.
   * @param {Watched} conn
   */
  _watch(conn) {
    if (conn.watchdog !== undefined || conn.failed) return;
    conn.watchdog = setTimeout(() => {
      conn.watchdog = undefined;
      if (this.closed || !conn.current() || conn.pc.connectionState === 'connected') return;
      conn.failed = true;
      const id = conn.report.pc ? 'sfu' : conn.id;
      this.failedPeers.add(id);
      console.warn(`bedside: no connection to ${conn.id} after ${CONNECT_TIMEOUT_MS / 1000} s (${conn.pc.iceConnectionState})`);
      this.emit('connect-failed', {peerId: id});
    }, CONNECT_TIMEOUT_MS);
  }

  /** @param {Watched} conn */
  _unwatch(conn) {
    if (conn.watchdog !== undefined) clearTimeout(conn.watchdog);
    conn.watchdog = undefined;
  }

  /**
   * Reads the selected candidate pair of a connection and, when it is new or changed, tells
   * the server (a connection message: candidate types and protocols, never addresses).
   * @param {Watched} conn
   */
  async _reportPair(conn) {
    let pair;
    try {
      pair = await selectedPair(conn.pc);
    } catch {
      return;
    }
    if (!pair || this.closed || !conn.current()) return;
    const key = JSON.stringify(pair);
    if (key === conn.reportedPair) return;
    conn.reportedPair = key;
    this.emit('pair', {peerId: conn.id, pair});
    if (this.admitted) this.signalling.send({type: 'connection', ...conn.report, local: pair.local, remote: pair.remote});
  }

  /**
   * After the signalling came back on a new WebSocket: an offer of ours still waiting for
   * its answer may have gone out on the old socket after its path had died (a page learns
   * that only later), so it goes again. The other side answers an offer it has seen as it
   * answers any other. An offer that waited in the signalling's queue for this socket (made
   * while the page was reconnecting) goes now anyway and is not sent twice.
   */
  _resendOffers() {
    /** @param {RTCPeerConnection} pc */
    const lost = (pc) => pc.signalingState === 'have-local-offer' && (this._sentAfter.get(pc) ?? 0) < this.signalling.welcomes;
    const pub = this.sfu?.pub;
    if (pub && lost(pub.pc)) this._sendPubOffer(pub);
    for (const conn of this.conns.values()) {
      if (lost(conn.pc) && conn.pc.localDescription) this._sendDescription(conn);
    }
  }

  /**
   * The server restarted (it said `bye` `server_shutdown`, and now `welcome`): its relay
   * restarted with it, so a connection through it has lost its path, and the relay
   * credentials it was made with may be void. ICE restarts now, with the new welcome's
   * servers, rather than once the browser notices the path is gone (several seconds). The
   * impolite side restarts, so that the two do not offer at once; a direct path is kept
   * while the restart runs. (In SFU mode the new welcome brings a new SFU session, and with
   * it new connections.)
   */
  _afterServerRestart() {
    for (const conn of this.conns.values()) {
      if (!conn.polite && conn.pc.signalingState === 'stable') conn.pc.restartIce();
    }
  }

  /**
   * @param {string} id
   * @param {boolean} [afterSwitch] the call moved to the SFU: the connection closes only
   *   once the page has painted the tile's switch to the SFU's stream (closing blocks the
   *   page's main thread, and the tile would show the ended stream's last frame until then)
   */
  _drop(id, afterSwitch = false) {
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
    if (afterSwitch) afterPaint(() => conn.pc.close());
    else conn.pc.close();
    if (conn.gate.paused) this.emit('video-paused', {paused: this.videoPaused});
    if (conn.peerVideoPaused) this.emit('remote-video-paused', {peerId: id, paused: false});
  }

  /**
   * @param {string} to
   * @param {{candidate: RTCIceCandidateInit | null}} body
   * @param {() => boolean} current whether the connection it is about is still in use
   */
  _send(to, body, current) {
    if (this.closed) return;
    this.signalling.send({type: 'signal', to, ...body}, current);
  }

  /** @param {SignalMsg} msg */
  _onSignal(msg) {
    if (this.closed) return;
    let conn = this.conns.get(msg.from);
    if (!conn) {
      if (!msg.description || msg.description.type !== 'offer') return; // stale candidate or answer
      if (this.mode === 'sfu') return; // nobody connects directly any more
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
    const description = msg.description && withoutStrayFeedback(msg.description);
    if (description) {
      if (description.type === 'rollback') return; // never needed on the wire; ignore
      // An answer with no offer of ours pending answers one already answered: an offer sent
      // again after the signalling reconnected (decision 58) that had arrived the first time.
      if (description.type === 'answer' && pc.signalingState === 'stable') return;
      const readyForOffer = !conn.makingOffer &&
        (pc.signalingState === 'stable' || conn.isSettingRemoteAnswerPending);
      const offerCollision = description.type === 'offer' && !readyForOffer;
      conn.ignoreOffer = !conn.polite && offerCollision;
      if (conn.ignoreOffer) return;
      conn.isSettingRemoteAnswerPending = description.type === 'answer';
      if (msg.sources) conn.sources = msg.sources;
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
      this._checkRemoteScreen(conn);
      if (description.type === 'offer') {
        if (conn.needsTracks) {
          this._attachTracks(conn);
          conn.needsTracks = false;
        }
        await pc.setLocalDescription();
        if (pc.localDescription) this._sendDescription(conn);
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
   * A peer that stopped sharing its screen: its description no longer names a screen.
   * @param {PeerConn} conn
   */
  _checkRemoteScreen(conn) {
    if (!conn.screen) return;
    if (Object.values(conn.sources).includes('screen')) return;
    conn.screen = null;
    this.emit('remote-screen-ended', {peerId: conn.id});
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
    if (msg && msg.sfu_ready === true && this.sfu) {
      // The peer receives us through the SFU (the switch, below): if we do too, the peer
      // connection has served both.
      this.sfu.peerReady.add(conn.id);
      if (this.sfu.readyAt.has(conn.id)) this._drop(conn.id, true);
      return;
    }
    if (msg && typeof msg.video_paused === 'boolean') {
      if (this.sfu?.readyAt.has(conn.id)) return; // shown through the SFU already
      // The peer paused (or resumed) its video to us for want of bandwidth.
      conn.peerVideoPaused = msg.video_paused;
      this.emit('remote-video-paused', {peerId: conn.id, paused: msg.video_paused});
      return;
    }
    if (!msg || typeof msg.text !== 'string') return;
    const text = msg.text.slice(0, MAX_CHAT);
    if (!text.trim()) return;
    const at = typeof msg.at === 'string' && !Number.isNaN(Date.parse(msg.at)) ? msg.at : new Date().toISOString();
    const name = conn.info?.name ?? this.peers.get(conn.id)?.name ?? 'Participant';
    this.emit('chat', {peerId: conn.id, name, text, at, self: false});
  }

  // --- through the SFU ----------------------------------------------------------------------

  /**
   * Follows the server's mode. Moving to the SFU opens our pub connection (the server offers
   * sub) while the peer connections stay: each closes once its peer arrives through the SFU.
   * A new SFU session means the server has none of our old SFU connections: they are made
   * again. Back to p2p (the server forgot an empty room): the SFU connections close.
   * @param {'p2p' | 'sfu'} mode
   * @param {string} session
   */
  _setMode(mode, session) {
    if (this.closed) return;
    if (mode === 'p2p') {
      if (this.mode === 'sfu') {
        this._closeSfu();
        this.mode = 'p2p';
        this.emit('mode', {mode});
        for (const p of this.peers.values()) {
          if (!this.conns.has(p.id) && !p.polite) this._create(p.id, p, false);
        }
      }
      return;
    }
    if (this.sfu && this.sfu.session === session) return;
    this._closeSfu();
    this.mode = 'sfu';
    /** @type {SfuState} */
    const sfu = {
      session, pub: null, sub: null, tracks: new Map(), streams: new Map(), midTracks: new Map(),
      readyAt: new Map(), audioAt: new Map(), peerReady: new Set(), checking: false, sizes: new Map(), paused: new Set(),
      pubPaused: new Set(), gate: new VideoGate(performance.now()), cameraLayers: null,
      timer: setInterval(() => this._checkSwitch(), SWITCH_CHECK_MS),
    };
    this.sfu = sfu;
    if (!this.observer) this._openPub();
    this.emit('mode', {mode});
  }

  /**
   * Makes one of our connections with the SFU.
   * @param {'pub' | 'sub'} which
   * @returns {SfuConn}
   */
  _sfuConn(which) {
    const sfu = /** @type {SfuState} */ (this.sfu);
    const pc = new RTCPeerConnection(this.config);
    /** @type {SfuConn} */
    const conn = {
      id: 'sfu:' + which, which, session: sfu.session, pc, queue: Promise.resolve(), pending: [], watchdog: undefined, failed: false,
      reportedPair: '', current: () => this.sfu === sfu && sfu[which] === conn, report: {peer: 'sfu', pc: which},
    };
    this.pcs.set(conn.id, pc);
    this._watch(conn);
    pc.onicecandidate = (ev) => {
      if (!conn.current()) return;
      this._sfuSignal(conn, {candidate: ev.candidate ? ev.candidate.toJSON() : null});
    };
    pc.onconnectionstatechange = () => {
      if (conn.current()) this._connectionState(conn);
    };
    // The SFU restarts sub's ICE. Its path going quiet is a sign that the network changed,
    // the signalling's socket with it, so the page probes that (pub's handler, below, does
    // the same); and if it stays quiet, the page asks the SFU whether it still has our
    // connections: an end of candidates for sub, which the SFU ignores when it has them and
    // which puts the page back into the SFU with a new session when it does not (decision
    // 35). A page that only receives (an observer) has nothing else that would tell.
    pc.oniceconnectionstatechange = restartWhenStuck(pc, conn.current, () => this.signalling.probe(), () => {
      this._sfuSignal(conn, {candidate: null});
    });
    return conn;
  }

  /**
   * Sends the SFU a signal of one of our connections with it: tagged with its pc and the
   * SFU session it belongs to, and not sent once it is no longer the current one.
   * @param {SfuConn} conn
   * @param {{description: RTCSessionDescriptionInit, sources?: Record<string, Source>} | {candidate: RTCIceCandidateInit | null}} fields
   */
  _sfuSignal(conn, fields) {
    return this.signalling.send({type: 'signal', to: 'sfu', pc: conn.which, ...fields, sfu_session: conn.session}, conn.current);
  }

  /** Opens the pub connection with our tracks: the camera in simulcast layers. */
  _openPub() {
    const sfu = /** @type {SfuState} */ (this.sfu);
    const conn = this._sfuConn('pub');
    sfu.pub = conn;
    const pc = conn.pc;
    for (const track of this.localStream.getTracks()) {
      /** @type {RTCRtpTransceiverInit} */
      const init = {direction: 'sendonly', streams: [this.localStream]};
      if (track.kind === 'video') init.sendEncodings = SIMULCAST.map((e) => ({...e}));
      pc.addTransceiver(track, init);
    }
    const screen = this.screenStream?.getVideoTracks()[0];
    if (screen && this.screenStream) pc.addTransceiver(screen, {direction: 'sendonly', streams: [this.screenStream]});
    this.e2ee?.protect(pc);
    // The client is pub's only offerer: every change (a screen share, an ICE restart) is a
    // new offer, and there is never glare.
    pc.onnegotiationneeded = () => {
      conn.queue = conn.queue.then(() => this._offerPub(conn)).catch((err) => {
        if (conn.current()) console.warn('bedside: pub offer failed', err);
      });
    };
    pc.oniceconnectionstatechange = restartWhenStuck(pc, conn.current, () => this.signalling.probe(), () => pc.restartIce());
  }

  /** @param {SfuConn} conn */
  async _offerPub(conn) {
    const pc = conn.pc;
    if (!conn.current() || pc.signalingState !== 'stable') return;
    await pc.setLocalDescription();
    if (conn.current()) this._sendPubOffer(conn);
  }

  /**
   * Sends the pub connection's offer (its local description) with the sources of its tracks.
   * @param {SfuConn} conn
   */
  _sendPubOffer(conn) {
    const pc = conn.pc;
    if (!pc.localDescription) return;
    const at = this._sfuSignal(conn, {description: pc.localDescription.toJSON(), sources: this._sources(pc)});
    this._sentAfter.set(pc, at);
  }

  /** @param {SignalMsg} msg */
  _onSfuSignal(msg) {
    const sfu = this.sfu;
    if (!sfu || this.closed || (msg.pc !== 'pub' && msg.pc !== 'sub')) return;
    if (msg.pc === 'sub' && !sfu.sub) {
      if (msg.description?.type !== 'offer') return;
      sfu.sub = this._openSub();
    }
    const conn = msg.pc === 'pub' ? sfu.pub : sfu.sub;
    if (!conn) return;
    conn.queue = conn.queue.then(() => this._handleSfuSignal(conn, msg)).catch((err) => {
      if (conn.current()) console.warn(`bedside: ${conn.id} signal failed`, err);
    });
  }

  /**
   * @param {SfuConn} conn
   * @param {SignalMsg} msg
   */
  async _handleSfuSignal(conn, msg) {
    const pc = conn.pc;
    if (pc.signalingState === 'closed' || !conn.current()) return;
    const d = msg.description;
    if (d) {
      if ((conn.which === 'pub' && d.type !== 'answer') || (conn.which === 'sub' && d.type !== 'offer')) return;
      // An answer with no offer of ours pending answers one already answered: an offer sent
      // again after the signalling came back (_resendOffers) that had arrived the first time
      // (the SFU answers it with the answer it gave, decision 58).
      if (d.type === 'answer' && pc.signalingState !== 'have-local-offer') return;
      await pc.setRemoteDescription(d);
      for (const c of conn.pending.splice(0)) await pc.addIceCandidate(c).catch(() => {});
      if (d.type === 'offer') {
        await pc.setLocalDescription();
        if (pc.localDescription && conn.current()) {
          this._sfuSignal(conn, {description: pc.localDescription.toJSON()});
        }
        this._pruneSfuTracks();
      }
      return;
    }
    if (msg.candidate === undefined) return;
    if (!pc.remoteDescription) {
      if (msg.candidate) conn.pending.push(msg.candidate);
      return;
    }
    await pc.addIceCandidate(msg.candidate ?? undefined).catch(() => {});
  }

  /** @returns {SfuConn} */
  _openSub() {
    const conn = this._sfuConn('sub');
    conn.pc.ontrack = (ev) => {
      this.e2ee?.protect(conn.pc);
      this._onSfuTrack(ev);
    };
    return conn;
  }

  /** @param {TrackInfo[]} tracks */
  _onTracks(tracks) {
    const sfu = this.sfu;
    if (!sfu) return;
    sfu.tracks = new Map(tracks.map((t) => [t.mid, t]));
    // A video no longer sent (a screen share that ended) is no longer paused: shared again,
    // it starts afresh.
    const videos = new Set(tracks.filter((t) => t.kind === 'video').map(streamKey));
    for (const set of [sfu.paused, sfu.pubPaused]) {
      for (const key of set) if (!videos.has(key)) set.delete(key);
    }
    // A track whose sub offer came before the tracks message that names it goes into its
    // stream now (the two may arrive in either order).
    for (const [mid, track] of sfu.midTracks) {
      const info = sfu.tracks.get(mid);
      if (info && !sfu.streams.get(streamKey(info))?.getTracks().includes(track)) this._placeSfuTrack(info, track);
    }
  }

  /**
   * A track of the sub connection: it goes into its publisher's stream (camera and
   * microphone) or screen stream, by the tracks message.
   * @param {RTCTrackEvent} ev
   */
  _onSfuTrack(ev) {
    const sfu = this.sfu;
    if (!sfu) return;
    const mid = ev.transceiver.mid ?? '';
    sfu.midTracks.set(mid, ev.track);
    const info = sfu.tracks.get(mid);
    if (info) this._placeSfuTrack(info, ev.track);
  }

  /**
   * @param {TrackInfo} info
   * @param {MediaStreamTrack} track
   */
  _placeSfuTrack(info, track) {
    const sfu = /** @type {SfuState} */ (this.sfu);
    const key = streamKey(info);
    let stream = sfu.streams.get(key);
    if (!stream) {
      stream = new MediaStream();
      sfu.streams.set(key, stream);
    }
    for (const t of stream.getTracks()) if (t.kind === track.kind && t !== track) stream.removeTrack(t);
    if (!stream.getTracks().includes(track)) stream.addTrack(track);
    this.emit('remote-stream', {peerId: info.participant, stream, via: 'sfu', source: info.source === 'screen' ? 'screen' : 'camera'});
  }

  /** After a sub offer: tracks whose mid the tracks message no longer lists leave their streams. */
  _pruneSfuTracks() {
    const sfu = this.sfu;
    if (!sfu) return;
    for (const [mid, track] of sfu.midTracks) {
      const info = sfu.tracks.get(mid);
      for (const [key, stream] of sfu.streams) {
        const belongs = info && key === streamKey(info);
        if (!belongs && stream.getTracks().includes(track)) {
          stream.removeTrack(track);
          if (key.endsWith('.screen') && stream.getVideoTracks().length === 0) {
            sfu.streams.delete(key);
            this.emit('remote-screen-ended', {peerId: key.slice(0, -'.screen'.length)});
          }
        }
      }
    }
  }

  /**
   * Dynacast: sends only the camera layers somebody receives.
   * @param {string} source
   * @param {string[]} active
   */
  async _onLayers(source, active) {
    const sfu = this.sfu;
    if (!sfu?.pub || source !== 'camera') return;
    sfu.cameraLayers = active;
    await this._applyPubVideo();
  }

  /**
   * Tells the server at what size a remote video is shown (0x0: not shown), so the SFU
   * sends a layer no larger than needed. Only changes are sent.
   * @param {string} peerId
   * @param {VideoSource} source
   * @param {number} width
   * @param {number} height
   */
  reportVideoSize(peerId, source, width, height) {
    const sfu = this.sfu;
    if (!sfu || this.closed) return;
    const w = Math.max(0, Math.min(8192, Math.round(width)));
    const h = Math.max(0, Math.min(8192, Math.round(height)));
    const size = w === 0 || h === 0 ? '0x0' : `${w}x${h}`;
    const key = `${peerId} ${source}`;
    if (sfu.sizes.get(key) === size) return;
    sfu.sizes.set(key, size);
    this.signalling.send({type: 'video_size', participant: peerId, source, width: size === '0x0' ? 0 : w, height: size === '0x0' ? 0 : h});
  }

  /**
   * The switch, make before break: once we receive a peer through the SFU (its camera's
   * first frame decoded; its audio for a peer without camera; nothing to wait for from an
   * observer), its tile shows it so (sfu-switched) and we tell the peer over the peer
   * connection's data channel ({"sfu_ready": true}); the peer connection closes once the
   * peer said the same (_onChat), or SWITCH_WAIT_MS after we were ready. Each side so
   * swaps on its own readiness and keeps receiving over the peer connection until then.
   */
  async _checkSwitch() {
    const sfu = this.sfu;
    if (!sfu || sfu.checking || this.conns.size === 0) return;
    sfu.checking = true;
    try {
      const now = Date.now();
      const waiting = [...this.conns.keys()].filter((id) => !sfu.readyAt.has(id));
      const received = waiting.length > 0 ? await this._receivedViaSfu(waiting, now) : new Set();
      for (const [peerId, conn] of [...this.conns]) {
        if (this.sfu !== sfu || this.conns.get(peerId) !== conn) continue;
        if (!sfu.readyAt.has(peerId)) {
          if (!received.has(peerId)) continue;
          sfu.readyAt.set(peerId, now);
          this.emit('sfu-switched', {peerId});
          if (conn.chat.readyState === 'open') conn.chat.send(JSON.stringify({sfu_ready: true}));
        }
        const at = /** @type {number} */ (sfu.readyAt.get(peerId));
        if (sfu.peerReady.has(peerId) || now - at >= SWITCH_WAIT_MS) this._drop(peerId, true);
      }
    } finally {
      sfu.checking = false;
    }
  }

  /** @param {string} peerId */
  _observes(peerId) {
    return this.peers.get(peerId)?.observer === true;
  }

  /**
   * Which of peers we receive through the SFU. One getStats of the sub connection for all
   * of them: on a loaded machine each call takes hundreds of milliseconds.
   * @param {string[]} peers
   * @param {number} now
   * @returns {Promise<Set<string>>}
   */
  async _receivedViaSfu(peers, now) {
    /** @type {Set<string>} */
    const out = new Set();
    const sfu = this.sfu;
    if (!sfu) return out;
    const media = peers.filter((id) => !this._observes(id));
    if (media.length < peers.length && (sfu.sub || sfu.pub?.pc.connectionState === 'connected')) {
      for (const id of peers) if (this._observes(id)) out.add(id);
    }
    const sub = sfu.sub?.pc;
    if (!sub || media.length === 0) return out;
    /** @type {Map<string, string>} a received track's id -> its mid */
    const mids = new Map([...sfu.midTracks].map(([mid, track]) => [track.id, mid]));
    /** @type {Map<string, {frames: number, packets: number}>} by mid */
    const counts = new Map();
    (await sub.getStats()).forEach((v) => {
      if (v.type !== 'inbound-rtp') return;
      const mid = v.mid ?? mids.get(v.trackIdentifier);
      if (mid === undefined) return;
      const c = counts.get(mid) ?? {frames: 0, packets: 0};
      c.frames += v.framesDecoded ?? 0;
      c.packets += v.packetsReceived ?? 0;
      counts.set(mid, c);
    });
    if (this.sfu !== sfu) return out;
    for (const peerId of media) {
      let camera = false;
      let ready = false;
      for (const [mid, info] of sfu.tracks) {
        if (info.participant !== peerId) continue;
        const c = counts.get(mid);
        if (info.source === 'camera') {
          camera = true;
          if (c && c.frames > 0) ready = true;
        } else if (info.source === 'audio' && c && c.packets > 0 && !sfu.audioAt.has(peerId)) {
          sfu.audioAt.set(peerId, now);
        }
      }
      const audioAt = sfu.audioAt.get(peerId);
      if (ready || (!camera && audioAt !== undefined && now - audioAt >= AUDIO_ONLY_MS)) out.add(peerId);
    }
    return out;
  }

  _closeSfu() {
    const sfu = this.sfu;
    if (!sfu) return;
    this.sfu = null;
    clearInterval(sfu.timer);
    if (sfu.gate.paused) this.emit('video-paused', {paused: this.videoPaused});
    for (const conn of [sfu.pub, sfu.sub]) {
      if (!conn) continue;
      this._unwatch(conn);
      this.pcs.delete(conn.id);
      conn.pc.onnegotiationneeded = null;
      conn.pc.onicecandidate = null;
      conn.pc.onconnectionstatechange = null;
      conn.pc.oniceconnectionstatechange = null;
      conn.pc.ontrack = null;
      conn.pc.close();
    }
    if (this.failedPeers.delete('sfu')) this.emit('connect-ok', {peerId: 'sfu'});
  }

  // --- audio first, peer to peer ----------------------------------------------------------

  /**
   * Whether, and where, the video of a tile (a participant id, or "<id>.screen") is paused
   * for want of bandwidth: 'theirs' (its publisher paused it, on its link to the SFU),
   * 'yours' (the SFU, on our link), 'p2p' (its sender, peer to peer), or ''.
   * @param {string} key
   * @returns {'' | 'theirs' | 'yours' | 'p2p'}
   */
  remoteVideoPaused(key) {
    if (this.mode === 'sfu') {
      if (this.sfu?.pubPaused.has(key)) return 'theirs';
      return this.sfu?.paused.has(key) ? 'yours' : '';
    }
    return this.conns.get(key)?.peerVideoPaused ? 'p2p' : '';
  }

  /** Whether we pause our video, to a peer or to the SFU, for want of bandwidth. */
  get videoPaused() {
    for (const c of this.conns.values()) if (c.gate.paused) return true;
    return this.sfu?.gate.paused === true;
  }

  /**
   * Sets our pub connection's video encodings: all paused while the gate says so (for want
   * of bandwidth on our link), else the camera's layers the SFU asked for (all until it
   * said) and a shared screen's. While the gate tries the link again after a pause, the
   * camera sends its lowest layer only (decision 76): a try on a link still narrow costs
   * that layer's key frame, not one of each layer.
   */
  async _applyPubVideo() {
    const sfu = this.sfu;
    const pub = sfu?.pub;
    if (!sfu || !pub) return;
    const camera = this.localStream.getVideoTracks()[0];
    await setVideoEncodings(pub.pc, (sender, e) => {
      if (sfu.gate.paused) return false;
      if (sender.track !== camera || !e.rid) return true;
      if (sfu.gate.trying) return e.rid === 'q';
      return !sfu.cameraLayers || sfu.cameraLayers.includes(e.rid);
    });
  }

  /**
   * Once a second: each connected peer connection's bandwidth estimate to its gate; a pause
   * or a resume is applied to every video sender of that connection and told to the peer on
   * the chat channel. A paused connection is paused again each time (a screen shared
   * meanwhile adds a sender that would send).
   */
  async _checkVideoGates() {
    if (this._checkingGates || this.closed) return;
    this._checkingGates = true;
    const before = this.videoPaused;
    try {
      for (const c of [...this.conns.values()]) {
        if (c.pc.connectionState !== 'connected' || !c.current()) continue;
        const trying = c.gate.trying;
        const act = (await this._sampleGate(c.pc, c.gate, c.current, 'video'))?.act;
        if (act === undefined) continue;
        // A try starts small and grows once it stays (decision 76).
        if (trying !== c.gate.trying) await setVideoTry(c.pc, c.gate.trying);
        if (c.gate.paused || act) {
          await setVideoEncodings(c.pc, () => !c.gate.paused);
          if (c.current()) setVideoDirection(c.pc, !c.gate.paused);
        }
        if (act && c.chat.readyState === 'open') c.chat.send(JSON.stringify({video_paused: c.gate.paused}));
        if (c.current()) await setAudioBitrate(c.pc, c.gate.narrow ? AUDIO_NARROW_BPS : undefined);
      }
      // Our link to the SFU: the same gate on the pub connection; the server tells the
      // others (video_paused).
      const sfu = this.sfu;
      const pub = sfu?.pub;
      if (sfu && pub && pub.pc.connectionState === 'connected') {
        const trying = sfu.gate.trying;
        const act = (await this._sampleGate(pub.pc, sfu.gate, () => this.sfu === sfu, 'video to the SFU'))?.act;
        if (act !== undefined && (sfu.gate.paused || act || trying !== sfu.gate.trying)) await this._applyPubVideo();
        if (act !== undefined && this.sfu === sfu) await setAudioBitrate(pub.pc, sfu.gate.narrow ? AUDIO_NARROW_BPS : undefined);
        if (act) {
          const screen = this.screenStream?.getVideoTracks()[0];
          for (const x of videoSenders(pub.pc)) {
            this.signalling.send({type: 'video_paused', source: x.track === screen ? 'screen' : 'camera', paused: sfu.gate.paused});
          }
        }
      }
    } finally {
      this._checkingGates = false;
    }
    if (this.videoPaused !== before) this.emit('video-paused', {paused: this.videoPaused});
  }

  /**
   * Feeds a connection's bandwidth estimate to its gate (no estimate when it has no video
   * to send) and logs a pause or a resume.
   * @param {RTCPeerConnection} pc
   * @param {VideoGate} gate
   * @param {() => boolean} current whether the connection is still ours once the stats are in
   * @param {string} what
   * @returns {Promise<{act: 'pause' | 'resume' | null} | null>} the gate's word (act null:
   *   nothing changes), or null when there was nothing to sample
   */
  async _sampleGate(pc, gate, current, what) {
    const report = await pc.getStats().catch(() => null);
    if (!report || !current()) return null;
    /** @type {ReturnType<typeof outgoingEstimate>} */
    const est = videoSenders(pc).length > 0 ? outgoingEstimate(report, gate.reports) : {bps: undefined, from: 'estimate'};
    const narrow = gate.narrow;
    const act = gate.sample(est.bps, performance.now());
    const why = est.from === 'estimate' ? `bandwidth estimate ${Math.round((est.bps ?? 0) / 1000)} kbit/s`
      : `round-trip time ${(est.rtt ?? 0).toFixed(2)} s in the peer's receiver reports`;
    if (act === 'pause') console.info(`bedside: ${what} paused, ${why}; audio goes on at ${AUDIO_NARROW_BPS / 1000} kbit/s`);
    if (act === 'resume') console.info(`bedside: ${what} resumed, trying the link again`);
    if (narrow && !gate.narrow) console.info(`bedside: ${what} stays on, ${why}; audio back to its usual rate`);
    return {act};
  }

  // --- chat, devices, screen --------------------------------------------------------------

  /**
   * Sends a chat message to everybody in the call. Returns how many peers it reached.
   * @param {string} text
   * @returns {number}
   */
  sendChat(text) {
    const clean = text.trim().slice(0, MAX_CHAT);
    if (!clean || this.closed) return 0;
    const at = new Date().toISOString();
    let sent = 0;
    if (this.mode === 'sfu') {
      // Through the server: there are no data channels with the SFU.
      const present = [...this.peers.keys()].filter((id) => !this.absent.has(id)).length;
      if (present > 0 && this.signalling.ready) {
        // The id lets the server drop it when the page sends it again, not knowing whether
        // a connection that turned out dead had delivered it (protocol.js).
        this.signalling.send({type: 'chat', text: clean, id: newChatId()});
        sent = present;
      }
    } else {
      const data = JSON.stringify({text: clean, at});
      for (const c of this.conns.values()) {
        if (c.chat.readyState === 'open') {
          c.chat.send(data);
          sent++;
        }
      }
    }
    if (sent > 0) this.emit('chat', {peerId: this.selfId ?? '', name: 'You', text: clean, at, self: true});
    return sent;
  }

  /** True when a chat message would reach somebody. */
  chatOpen() {
    if (this.mode === 'sfu') return this.signalling.ready && [...this.peers.keys()].some((id) => !this.absent.has(id));
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
      const sender = c.pc.getSenders().find((s) => (s.track && s.track.kind === track.kind && s.track !== this.screenStream?.getVideoTracks()[0]) || s.track === old);
      const tr = c.pc.getTransceivers().find((t) => t.sender === sender ||
        (!t.sender.track && t.receiver.track.kind === track.kind && t.currentDirection !== 'stopped'));
      if (tr) {
        await tr.sender.replaceTrack(track);
        // A video paused for want of bandwidth stays paused (its gate restarts it).
        if (track.kind === 'video' && c.gate.paused) setVideoDirection(c.pc, false);
        else if (tr.direction === 'recvonly') tr.direction = 'sendrecv';
        else if (tr.direction === 'inactive') tr.direction = 'sendonly';
      } else {
        c.pc.addTrack(track, this.localStream);
      }
      this.e2ee?.protect(c.pc);
    }
    const pub = this.sfu?.pub;
    if (pub) {
      const sender = pub.pc.getSenders().find((s) => s.track === old);
      if (sender) await sender.replaceTrack(track);
      else pub.pc.addTransceiver(track, {direction: 'sendonly', streams: [this.localStream],
        sendEncodings: track.kind === 'video' ? SIMULCAST.map((e) => ({...e})) : undefined});
      this.e2ee?.protect(pub.pc);
    }
    if (old && old !== track) old.stop();
  }

  /**
   * Shares a screen (getDisplayMedia): its own track, with source "screen", on every peer
   * connection or on the pub connection. It stops when the user stops it in the browser, or
   * with stopScreenShare.
   * @returns {Promise<boolean>} whether sharing started
   */
  async startScreenShare() {
    if (this.screenStream || this.closed || this.observer) return false;
    /** @type {MediaStream} */
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia({video: true, audio: false});
    } catch (err) {
      console.warn('bedside: screen share refused', err);
      return false;
    }
    const track = stream.getVideoTracks()[0];
    if (!track || this.closed) {
      for (const t of stream.getTracks()) t.stop();
      return false;
    }
    track.contentHint = 'detail';
    this.screenStream = stream;
    track.addEventListener('ended', () => this.stopScreenShare());
    for (const c of this.conns.values()) {
      if (!c.needsTracks) c.pc.addTrack(track, stream);
      this.e2ee?.protect(c.pc);
    }
    const pub = this.sfu?.pub;
    if (pub) pub.pc.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
    if (pub) this.e2ee?.protect(pub.pc);
    this.emit('screen', {sharing: true});
    return true;
  }

  /** Stops sharing the screen. */
  stopScreenShare() {
    const stream = this.screenStream;
    if (!stream) return;
    this.screenStream = null;
    const track = stream.getVideoTracks()[0];
    const pcs = [...this.conns.values()].map((c) => c.pc);
    if (this.sfu?.pub) pcs.push(this.sfu.pub.pc);
    for (const pc of pcs) {
      if (pc.signalingState === 'closed') continue;
      for (const s of pc.getSenders()) {
        if (s.track === track) pc.removeTrack(s);
      }
    }
    for (const t of stream.getTracks()) t.stop();
    this.emit('screen', {sharing: false});
  }

  // --- stats ------------------------------------------------------------------------------

  /**
   * The raw stats report of one connection (a peer id, or "sfu:pub" / "sfu:sub").
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
    for (const [peerId, pc] of this.pcs) {
      const report = await pc.getStats();
      /** @type {PeerStats} */
      const s = {
        peerId, name: this.conns.get(peerId)?.info?.name ?? '', connectionState: pc.connectionState,
        iceConnectionState: pc.iceConnectionState,
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
    clearInterval(this._gateTimer);
    for (const id of [...this.conns.keys()]) this._drop(id);
    this._closeSfu();
    if (this.screenStream) {
      for (const t of this.screenStream.getTracks()) t.stop();
      this.screenStream = null;
    }
    for (const off of this._unsubscribe) off();
    this._unsubscribe = [];
    this.e2ee?.close();
    this.emit('closed', {});
  }
}

const CANDIDATE_TYPES = ['host', 'srflx', 'prflx', 'relay'];
const PROTOCOLS = ['udp', 'tcp'];
const RELAY_PROTOCOLS = ['udp', 'tcp', 'tls'];

/**
 * A peer's description without the feedback lines (a=rtcp-fb) of payload types its media
 * section does not list. Firefox (ESR 153) writes such lines: for the codecs a preference
 * left out, and, in a section the other side had offered (a screen share), for that side's
 * payload types. Chromium refuses the whole description ("Failed to parse codecs
 * correctly"), so a call whose offer Firefox made never connected, and a Firefox peer's
 * ICE restart after a screen share never completed. The lines name nothing the section
 * uses; everything else is kept as it came.
 * @param {RTCSessionDescriptionInit} d
 * @returns {RTCSessionDescriptionInit}
 */
export function withoutStrayFeedback(d) {
  if (!d.sdp) return d;
  /** @type {Set<string> | null} */
  let listed = null;
  const lines = d.sdp.split('\r\n').filter((line) => {
    if (line.startsWith('m=')) listed = new Set(line.split(' ').slice(3));
    const fb = /^a=rtcp-fb:(\S+) /.exec(line);
    return !fb || !listed || fb[1] === '*' || listed.has(fb[1]);
  });
  return {type: d.type, sdp: lines.join('\r\n')};
}

/**
 * The stream a track of the sub connection goes into: its publisher's (camera and
 * microphone), or its publisher's screen.
 * @param {TrackInfo} info
 */
function streamKey(info) {
  return info.source === 'screen' ? `${info.participant}.screen` : info.participant;
}

/**
 * A chat message's id: "c_" and 16 random base64url characters.
 * @returns {string}
 */
function newChatId() {
  return randomId('c_', 12);
}

/**
 * Whether a connection's ICE says its path went quiet (`disconnected` or `failed`): the
 * page then probes its signalling, which a changed network has likely broken too
 * (decision 59).
 * @param {RTCPeerConnection} pc
 * @returns {boolean}
 */
function iceQuiet(pc) {
  return pc.iceConnectionState === 'disconnected' || pc.iceConnectionState === 'failed';
}

/**
 * The ICE state handler of a connection: restart is called at once when ICE failed, and
 * when it has stayed disconnected for ICE_RESTART_AFTER_MS (peer connections and our pub
 * connection with the SFU, where we are the offerer, restart ICE; sub asks the SFU whether
 * it still has our connections). current says whether the connection is still in use;
 * quiet is called whenever its ICE goes quiet (iceQuiet: the page probes its signalling,
 * which a restart needs). The polite side of a peer connection leaves ICE
 * restarts to the impolite side, so that the two never offer at once: a collision makes
 * the polite side roll its offer back, and after a rollback Chromium no longer passes the
 * received video through the end-to-end decryption (docs/design.md decision 65). A path
 * that failed fails for both sides (ICE consent checks go both ways), so the impolite side
 * notices too.
 * @param {RTCPeerConnection} pc
 * @param {() => boolean} current
 * @param {() => void} quiet
 * @param {() => void} restart
 * @param {() => boolean} [polite]
 * @returns {() => void}
 */
function restartWhenStuck(pc, current, quiet, restart, polite = () => false) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  return () => {
    const state = pc.iceConnectionState;
    if (timer !== undefined && (!iceQuiet(pc) || state === 'failed')) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (!current()) return;
    if (iceQuiet(pc)) quiet();
    if (!iceQuiet(pc) || timer !== undefined || polite()) return;
    if (state === 'failed') {
      restart();
      return;
    }
    timer = setTimeout(() => {
      timer = undefined;
      if (current() && iceQuiet(pc)) restart();
    }, ICE_RESTART_AFTER_MS);
  };
}

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

/**
 * Runs fn once the page has painted what changed before the call (two animation frames
 * later), or after a second in a page that does not paint (a hidden tab).
 * @param {() => void} fn
 */
function afterPaint(fn) {
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    fn();
  };
  const timer = setTimeout(run, 1000);
  requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(run, 0)));
}
