// End-to-end encryption of a call's media (docs/design.md decision 65; docs/protocol.md,
// "End-to-end encryption"). Each page makes an ECDH P-256 key pair and a frame key of its
// own; the public keys go to the other participants through the server in `e2ee` messages,
// and each page's frame key goes to each other participant wrapped with the key the two
// share (ECDH, then HKDF). The server relays public keys and wrapped keys only. Frames are
// encrypted with SFrame (RFC 9605) in a worker (e2ee-worker.js) through RTCRtpScriptTransform,
// in peer-to-peer and SFU calls alike. When somebody leaves, every page makes a new frame
// key, sends it to those still there, and encrypts with it a moment later: the one who left
// cannot decrypt what follows.

/** @typedef {import('./protocol.js').E2EEMsg} E2EEMsg */

/** How long a new frame key goes to the others before frames are encrypted with it. */
export const ROTATE_SWITCH_MS = 1000;

/** The wrapping key's HKDF salt: this protocol's name and version. */
const WRAP_SALT = new TextEncoder().encode('bedside e2ee v1 wrap');

/** @returns {boolean} the browser can transform encoded frames in a worker */
export function e2eeSupported() {
  return typeof RTCRtpScriptTransform === 'function' && typeof Worker === 'function' && !!globalThis.crypto?.subtle;
}

/** @param {Uint8Array} b */
function b64(b) {
  let s = '';
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** @param {string} s */
function unb64(s) {
  const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** @returns {number} a KID: 1 to 2^32 - 1 */
function newKid() {
  const v = crypto.getRandomValues(new Uint32Array(1))[0];
  return v === 0 ? 1 : v;
}

/**
 * @typedef {{pub: string, wrap: CryptoKey | null, session: string, sentKid: number, kid: number}} Party
 * pub: its public key ('' until known); wrap: the key we share; sentKid: the KID of ours
 * it last got; kid: its newest KID we hold (0: none).
 */

/**
 * @typedef {{encrypted: number, decrypted: number, noKey: number, failed: number, short: number,
 *   replayed: number, replayedAudio: number, sendKid: number, receiveKids: Record<string, number[]>}} E2EEStats
 */

export class E2EE {
  /**
   * @param {(msg: {type: 'e2ee', to: string, pub: string, kid?: number, key?: string}) => void} send
   */
  constructor(send) {
    this._send = send;
    this.selfId = '';
    this.closed = false;
    /** @type {Map<string, Party>} */
    this.parties = new Map();
    /**
     * The KIDs each sender has given us, newest last (at most 8 each): what this page could
     * decrypt, kept after the call closes (the tests read it).
     * @type {Map<string, number[]>}
     */
    this.received = new Map();
    this.kid = newKid();
    this._secret = crypto.getRandomValues(new Uint8Array(16));
    this._worker = new Worker(new URL('./e2ee-worker.js', import.meta.url), {type: 'module', name: 'bedside-e2ee'});
    this._worker.postMessage({op: 'send', kid: this.kid, secret: this._secret});
    /** @type {Map<number, (s: E2EEStats) => void>} */
    this._pending = new Map();
    this._nextId = 1;
    this._worker.onmessage = (ev) => {
      const done = this._pending.get(ev.data.id);
      this._pending.delete(ev.data.id);
      if (done) done(ev.data.stats);
    };
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._switchTimer = undefined;
    /** The last of the joins, leaves and messages handled in turn (_inTurn). */
    /** @type {Promise<void>} */
    this._turn = Promise.resolve();
    /** @type {WeakSet<RTCRtpSender | RTCRtpReceiver>} */
    this._attached = new WeakSet();
    /** Our private key, and our public key as sent: set once `ready` resolves. */
    /** @type {CryptoKey | undefined} */
    this._private = undefined;
    this.pub = '';
    this.ready = (async () => {
      const pair = await crypto.subtle.generateKey({name: 'ECDH', namedCurve: 'P-256'}, false, ['deriveBits']);
      this._private = pair.privateKey;
      this.pub = b64(new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey)));
    })();
  }

  /**
   * Puts the encryption on every sender and the decryption on every receiver of a
   * connection that does not have it yet; video prefers VP8, the codec whose first bytes
   * the worker leaves clear. Call it after adding tracks and in ontrack.
   * @param {RTCPeerConnection} pc
   */
  protect(pc) {
    if (this.closed) return;
    for (const t of pc.getTransceivers()) {
      if (t.currentDirection === 'stopped') continue;
      const kind = /** @type {'audio' | 'video'} */ (t.receiver.track.kind);
      if (!this._attached.has(t.sender)) {
        this._attached.add(t.sender);
        this._transform(t.sender, 'send', kind);
      }
      if (!this._attached.has(t.receiver)) {
        this._attached.add(t.receiver);
        this._transform(t.receiver, 'receive', kind);
        if (kind === 'video') preferVP8(t);
      }
    }
  }

  /**
   * @param {RTCRtpSender | RTCRtpReceiver} sr
   * @param {'send' | 'receive'} side
   * @param {'audio' | 'video'} kind
   */
  _transform(sr, side, kind) {
    sr.transform = new RTCRtpScriptTransform(this._worker, {side, kind});
  }

  /**
   * A participant is in the call (again): it gets our public key, or our frame key if we
   * have its public key already and it is the same page.
   * @param {string} id
   * @param {string} session its page's session
   */
  joined(id, session) {
    return this._inTurn(() => this._joined(id, session));
  }

  /**
   * Runs fn after every message, join and leave handled before it (fn is async): a key
   * message that arrives while the public key of the message before it is still being
   * imported would otherwise find no wrapping key yet and be dropped, and its sender,
   * having sent its key, would not send it again (seen with Firefox, whose WebCrypto is slower: the
   * patient never got the clinician's key in a visit through the SFU).
   * @param {() => Promise<void>} fn
   * @returns {Promise<void>}
   */
  _inTurn(fn) {
    const run = this._turn.then(fn);
    this._turn = run.catch(() => {});
    return run;
  }

  /** @param {string} id @param {string} session */
  async _joined(id, session) {
    await this.ready;
    if (this.closed || id === this.selfId) return;
    const p = this._party(id);
    if (p.session && p.session !== session) this._reset(id, p); // a reload: that page has new keys
    p.session = session;
    if (p.wrap) await this._sendKey(id, p);
    else this._send({type: 'e2ee', to: id, pub: this.pub});
  }

  /**
   * A participant left the call for good: its keys go, and we move to a new frame key
   * that it never gets. In turn with the joins and messages before it: a key message of
   * its that is still being unwrapped would otherwise put its key in the worker after the
   * forget, and make it a party again, to be sent our new key.
   * @param {string} id
   * @returns {Promise<void>}
   */
  left(id) {
    return this._inTurn(async () => {
      if (this.closed || !this.parties.has(id)) return;
      this.parties.delete(id);
      this._worker.postMessage({op: 'forget', from: id});
      this.rotate();
    });
  }

  /** Makes a new frame key: sent to everyone now, used for our frames ROTATE_SWITCH_MS later. */
  rotate() {
    this.kid = newKid();
    this._secret = crypto.getRandomValues(new Uint8Array(16));
    const kid = this.kid;
    const secret = this._secret;
    for (const [id, p] of this.parties) {
      if (p.wrap) this._sendKey(id, p).catch((err) => console.warn('bedside: e2ee key', err));
    }
    clearTimeout(this._switchTimer);
    this._switchTimer = setTimeout(() => {
      if (!this.closed && this.kid === kid) this._worker.postMessage({op: 'send', kid, secret});
    }, ROTATE_SWITCH_MS);
  }

  /**
   * An e2ee message from another participant.
   * @param {E2EEMsg} m
   */
  receive(m) {
    return this._inTurn(() => this._receive(m));
  }

  /** @param {E2EEMsg} m */
  async _receive(m) {
    await this.ready;
    if (this.closed || m.from === this.selfId) return;
    const p = this._party(m.from);
    if (p.pub !== m.pub) {
      this._reset(m.from, p);
      p.pub = m.pub;
      p.wrap = await this._wrapKey(m.from, m.pub);
    }
    if (!p.wrap) return;
    if (m.kid && m.key) {
      let secret;
      try {
        secret = new Uint8Array(await crypto.subtle.decrypt(
          {name: 'AES-GCM', iv: unb64(m.key).subarray(0, 12), additionalData: wrapAAD(m.kid, m.from, this.selfId)},
          p.wrap, unb64(m.key).subarray(12)));
      } catch {
        console.warn('bedside: a frame key that does not unwrap');
        return;
      }
      p.kid = m.kid;
      const kids = [...(this.received.get(m.from) ?? []), m.kid].slice(-8);
      this.received.set(m.from, kids);
      this._worker.postMessage({op: 'receive', from: m.from, kid: m.kid, secret});
    }
    // A message without a key asks for ours (its sender may have lost what we sent).
    if (!m.key || p.sentKid !== this.kid) await this._sendKey(m.from, p);
  }

  /**
   * The safety code: a hash of the public keys of everyone whose frame key we hold, and
   * ours. Participants who see the same code have the same keys: nobody between them
   * replaced one (docs/security.md).
   * @returns {Promise<string>} 12 digits in groups of 4, or '' before any key
   */
  async safetyCode() {
    await this.ready;
    const pubs = [this.pub, ...[...this.parties.values()].filter((p) => p.kid !== 0).map((p) => p.pub)].sort();
    if (pubs.length < 2) return '';
    const h = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(pubs.join('\n'))));
    let n = 0n;
    for (const b of h.subarray(0, 8)) n = (n << 8n) | BigInt(b);
    const digits = (n % 10n ** 12n).toString().padStart(12, '0');
    return `${digits.slice(0, 4)} ${digits.slice(4, 8)} ${digits.slice(8)}`;
  }

  /** @returns {Promise<E2EEStats>} the worker's counts and keys (for tests and the quality panel) */
  stats() {
    return new Promise((resolve) => {
      const id = this._nextId++;
      this._pending.set(id, resolve);
      this._worker.postMessage({op: 'stats', id});
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this._switchTimer);
    this._worker.terminate();
    for (const done of this._pending.values()) {
      done({encrypted: 0, decrypted: 0, noKey: 0, failed: 0, short: 0, replayed: 0, replayedAudio: 0, sendKid: 0, receiveKids: {}});
    }
    this._pending.clear();
  }

  /** @param {string} id @returns {Party} */
  _party(id) {
    let p = this.parties.get(id);
    if (!p) {
      p = {pub: '', wrap: null, session: '', sentKid: 0, kid: 0};
      this.parties.set(id, p);
    }
    return p;
  }

  /** @param {string} id @param {Party} p */
  _reset(id, p) {
    if (p.kid !== 0) this._worker.postMessage({op: 'forget', from: id});
    p.pub = '';
    p.wrap = null;
    p.sentKid = 0;
    p.kid = 0;
  }

  /**
   * The key this page and participant id share: ECDH of our private key and its public
   * key, through HKDF with both ids.
   * @param {string} id
   * @param {string} pub
   * @returns {Promise<CryptoKey | null>}
   */
  async _wrapKey(id, pub) {
    try {
      const theirs = await crypto.subtle.importKey('raw', /** @type {BufferSource} */ (unb64(pub)), {name: 'ECDH', namedCurve: 'P-256'}, false, []);
      const shared = await crypto.subtle.deriveBits({name: 'ECDH', public: theirs}, /** @type {CryptoKey} */ (this._private), 256);
      const ikm = await crypto.subtle.importKey('raw', shared, 'HKDF', false, ['deriveKey']);
      const info = new TextEncoder().encode([this.selfId, id].sort().join(' '));
      return await crypto.subtle.deriveKey({name: 'HKDF', hash: 'SHA-256', salt: WRAP_SALT, info}, ikm,
        {name: 'AES-GCM', length: 128}, false, ['encrypt', 'decrypt']);
    } catch {
      console.warn('bedside: an e2ee public key that does not import');
      return null;
    }
  }

  /** @param {string} id @param {Party} p */
  async _sendKey(id, p) {
    if (!p.wrap || this.closed) return;
    const kid = this.kid;
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = new Uint8Array(await crypto.subtle.encrypt(
      {name: 'AES-GCM', iv, additionalData: wrapAAD(kid, this.selfId, id)}, p.wrap, this._secret));
    if (this.closed || this.parties.get(id) !== p || kid !== this.kid) return;
    const key = new Uint8Array(12 + ct.length);
    key.set(iv);
    key.set(ct, 12);
    p.sentKid = kid;
    this._send({type: 'e2ee', to: id, pub: this.pub, kid, key: b64(key)});
  }
}

/**
 * What a wrapped frame key is bound to: its KID, its sender and its recipient.
 * @param {number} kid
 * @param {string} from
 * @param {string} to
 */
function wrapAAD(kid, from, to) {
  return new TextEncoder().encode(`${kid} ${from} ${to}`);
}

/**
 * Video in VP8 only (with its retransmission and redundancy): the codec whose frame tag
 * the worker leaves clear, and the one the SFU forwards. (Firefox then still offers the
 * feedback lines of the codecs left out; call.js's withoutStrayFeedback drops them.)
 * @param {RTCRtpTransceiver} t
 */
function preferVP8(t) {
  const caps = RTCRtpReceiver.getCapabilities('video');
  if (!caps) return;
  const codecs = caps.codecs.filter((c) => ['video/vp8', 'video/rtx', 'video/red', 'video/ulpfec'].includes(c.mimeType.toLowerCase()));
  if (!codecs.some((c) => c.mimeType.toLowerCase() === 'video/vp8')) return;
  try {
    t.setCodecPreferences(codecs);
  } catch (err) {
    console.warn('bedside: codec preferences', err);
  }
}
