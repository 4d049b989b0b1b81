// SFrame (RFC 9605) with the cipher suite AES_128_GCM_SHA256_128 (0x0004), on WebCrypto.
// Used by the end-to-end encryption worker (e2ee-worker.js) on every media frame, and by the
// browser test that checks it against the RFC's test vectors (appendix C). Keys are the
// caller's; the one thing with state is ReplayWindow, which a receiver keeps per KID.

/** The cipher suite: AES-128-GCM, a 16-byte tag, HKDF with SHA-256. */
export const CIPHER_SUITE = 0x0004;
const NK = 16; // key bytes
const NN = 12; // nonce bytes
export const TAG_BYTES = 16;

const enc = new TextEncoder();

/**
 * @typedef {{key: CryptoKey, salt: Uint8Array}} FrameKey the AEAD key and salt of one KID
 */

/**
 * The minimal big-endian bytes of a value (at least one byte).
 * @param {bigint} v
 * @returns {number[]}
 */
function compact(v) {
  /** @type {number[]} */
  const out = [];
  do {
    out.unshift(Number(v & 0xffn));
    v >>= 8n;
  } while (v > 0n);
  return out;
}

/**
 * @param {bigint} v
 * @param {number} n
 * @returns {Uint8Array} v as n big-endian bytes
 */
function bigEndian(v, n) {
  const out = new Uint8Array(n);
  for (let i = n - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/**
 * Encodes an SFrame header (RFC 9605 section 4.3): the config byte (X, K, Y, C), then the
 * KID and the CTR in the fewest bytes when they do not fit in three bits.
 * @param {number | bigint} kid
 * @param {number | bigint} ctr
 * @returns {Uint8Array}
 */
export function encodeHeader(kid, ctr) {
  const k = BigInt(kid);
  const c = BigInt(ctr);
  if (k < 0n || c < 0n || k >= 1n << 64n || c >= 1n << 64n) throw new RangeError('SFrame: KID and CTR are 64-bit unsigned');
  let config = 0;
  /** @type {number[]} */
  const rest = [];
  if (k < 8n) {
    config |= Number(k) << 4;
  } else {
    const b = compact(k);
    config |= 0x80 | ((b.length - 1) << 4);
    rest.push(...b);
  }
  if (c < 8n) {
    config |= Number(c);
  } else {
    const b = compact(c);
    config |= 0x08 | (b.length - 1);
    rest.push(...b);
  }
  return Uint8Array.from([config, ...rest]);
}

/**
 * Decodes the SFrame header at the start of data.
 * @param {Uint8Array} data
 * @returns {{kid: bigint, ctr: bigint, length: number} | null} null: too short
 */
export function decodeHeader(data) {
  if (data.length < 1) return null;
  const config = data[0];
  let at = 1;
  /** @param {boolean} extended @param {number} field @returns {bigint | null} */
  const field = (extended, field) => {
    if (!extended) return BigInt(field);
    const n = field + 1;
    if (at + n > data.length) return null;
    let v = 0n;
    for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(data[at + i]);
    at += n;
    return v;
  };
  const kid = field((config & 0x80) !== 0, (config >> 4) & 7);
  if (kid === null) return null;
  const ctr = field((config & 0x08) !== 0, config & 7);
  if (ctr === null) return null;
  return {kid, ctr, length: at};
}

/**
 * The labels of the key derivation (RFC 9605 section 4.4.2): the KID as 8 big-endian
 * bytes, then the cipher suite as 2.
 * @param {'key' | 'salt'} what
 * @param {number | bigint} kid
 * @returns {Uint8Array}
 */
export function label(what, kid) {
  const prefix = enc.encode(what === 'key' ? 'SFrame 1.0 Secret key ' : 'SFrame 1.0 Secret salt ');
  const out = new Uint8Array(prefix.length + 10);
  out.set(prefix);
  out.set(bigEndian(BigInt(kid), 8), prefix.length);
  out.set(bigEndian(BigInt(CIPHER_SUITE), 2), prefix.length + 8);
  return out;
}

/**
 * Derives a KID's key and salt from its base key: HKDF-Extract with an empty salt, then
 * HKDF-Expand with each label (WebCrypto's HKDF does both steps).
 * @param {number | bigint} kid
 * @param {Uint8Array} baseKey
 * @returns {Promise<FrameKey>}
 */
export async function deriveFrameKey(kid, baseKey) {
  const ikm = await crypto.subtle.importKey('raw', /** @type {BufferSource} */ (baseKey), 'HKDF', false, ['deriveBits']);
  /** @param {Uint8Array} info @param {number} bytes */
  const expand = async (info, bytes) => new Uint8Array(await crypto.subtle.deriveBits(
    {name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: /** @type {BufferSource} */ (info)}, ikm, bytes * 8));
  const raw = await expand(label('key', kid), NK);
  const salt = await expand(label('salt', kid), NN);
  const key = await crypto.subtle.importKey('raw', /** @type {BufferSource} */ (raw), 'AES-GCM', false, ['encrypt', 'decrypt']);
  return {key, salt};
}

/**
 * @param {Uint8Array} salt
 * @param {bigint} ctr
 * @returns {Uint8Array} the salt XOR the CTR as NN big-endian bytes
 */
export function nonce(salt, ctr) {
  const c = bigEndian(ctr, NN);
  for (let i = 0; i < NN; i++) c[i] ^= salt[i];
  return c;
}

/**
 * Encrypts one frame (RFC 9605 section 4.4.3): header + AEAD(plaintext), the AAD being
 * the header followed by the metadata.
 * @param {FrameKey} k
 * @param {number | bigint} kid
 * @param {number | bigint} ctr
 * @param {Uint8Array} metadata
 * @param {Uint8Array} plaintext
 * @returns {Promise<Uint8Array>}
 */
export async function encrypt(k, kid, ctr, metadata, plaintext) {
  const header = encodeHeader(kid, ctr);
  const aad = new Uint8Array(header.length + metadata.length);
  aad.set(header);
  aad.set(metadata, header.length);
  const ct = new Uint8Array(await crypto.subtle.encrypt(
    {name: 'AES-GCM', iv: /** @type {BufferSource} */ (nonce(k.salt, BigInt(ctr))), additionalData: aad, tagLength: TAG_BYTES * 8},
    k.key, /** @type {BufferSource} */ (plaintext)));
  const out = new Uint8Array(header.length + ct.length);
  out.set(header);
  out.set(ct, header.length);
  return out;
}

/**
 * Decrypts one SFrame ciphertext (header and AEAD output) whose header the caller has
 * decoded. Rejects when it does not authenticate.
 * @param {FrameKey} k
 * @param {{ctr: bigint, length: number}} header
 * @param {Uint8Array} metadata
 * @param {Uint8Array} data the whole SFrame ciphertext, header first
 * @returns {Promise<Uint8Array>}
 */
export async function decrypt(k, header, metadata, data) {
  const aad = new Uint8Array(header.length + metadata.length);
  aad.set(data.subarray(0, header.length));
  aad.set(metadata, header.length);
  return new Uint8Array(await crypto.subtle.decrypt(
    {name: 'AES-GCM', iv: /** @type {BufferSource} */ (nonce(k.salt, header.ctr)), additionalData: aad, tagLength: TAG_BYTES * 8},
    k.key, /** @type {BufferSource} */ (data.subarray(header.length))));
}

/** How far behind the newest CTR of a KID a frame may be and still be accepted. */
export const REPLAY_WINDOW = 4096;

/**
 * Anti-replay for one KID (RFC 9605 section 9.3): a frame whose CTR was accepted before, or
 * is REPLAY_WINDOW or more behind the newest accepted, is refused. Call accept only for a
 * frame that authenticated, so that forged frames cannot move the window. A sender's CTR
 * counts every frame it encrypts under the KID, in all its streams (audio, each camera
 * layer, the screen, peer to peer and to the SFU alike), so no two legitimate frames share
 * one; the window covers some 30 s of a sender's frames, more than any jitter buffer holds.
 */
export class ReplayWindow {
  constructor(size = REPLAY_WINDOW) {
    this.size = size;
    /** The newest CTR accepted; -1 before the first. */
    this.top = -1;
    /** Whether CTR c was accepted, at c % size, for the size CTRs up to top. */
    this.seen = new Uint8Array(size);
  }

  /**
   * @param {bigint | number} ctr
   * @returns {boolean} true the first time a CTR within the window is seen (it is then
   *   recorded), false for a replay or a CTR too old to tell
   */
  accept(ctr) {
    if (ctr < 0 || ctr > Number.MAX_SAFE_INTEGER) return false; // no sender of ours gets there
    const c = Number(ctr);
    if (c > this.top) {
      for (let i = Math.max(this.top + 1, c - this.size + 1); i < c; i++) this.seen[i % this.size] = 0;
      this.top = c;
      this.seen[c % this.size] = 1;
      return true;
    }
    if (c <= this.top - this.size || this.seen[c % this.size]) return false;
    this.seen[c % this.size] = 1;
    return true;
  }
}
