// The end-to-end encryption worker: every media frame the page sends is encrypted here,
// and every frame it receives decrypted, with SFrame (sframe.js; docs/design.md decision 65)
// inside RTCRtpScriptTransform. The page (e2ee.js) gives it the frame keys; they never
// leave this page's two contexts.
//
// What stays clear, so that the SFU and the receiving browser's depacketizer can do their
// work without the media (decision 43): of a VP8 frame its first 3 bytes (the frame tag: key
// frame or not, and the size of the first partition), 10 of a key frame (with the start code
// and the picture's size). They are the SFrame metadata: authenticated, not encrypted. Audio
// is encrypted whole. A frame that cannot be decrypted is dropped, never passed on.

import {decodeHeader, decrypt, deriveFrameKey, encrypt, ReplayWindow} from './sframe.js';

/** @typedef {import('./sframe.js').FrameKey} FrameKey */

/** Receive keys kept per sender: the current one and those before it, for frames in flight. */
const KEEP_PER_SENDER = 3;

/** @type {{kid: number, key: FrameKey} | null} */
let sending = null;
/** The CTR of the next frame sent: unique for each frame under one KID (RFC 9605 9.1). */
let ctr = 0;
/** @type {Map<number, {from: string, key: FrameKey, replay: ReplayWindow}>} receive keys by KID */
const receiving = new Map();
/** @type {Map<string, number[]>} the KIDs of each sender, oldest first */
const bySender = new Map();
const counts = {encrypted: 0, decrypted: 0, noKey: 0, failed: 0, short: 0, replayed: 0, replayedAudio: 0};

/**
 * Bytes left clear at the start of a frame.
 * @param {'audio' | 'video'} kind
 * @param {Uint8Array} data
 */
function clearBytes(kind, data) {
  if (kind !== 'video' || data.length === 0) return 0;
  return Math.min(data.length, (data[0] & 1) === 0 ? 10 : 3);
}

/**
 * A frame's new data, in two parts: the bytes left clear, then the rest; null: the frame is
 * dropped.
 * @typedef {{clear: Uint8Array, body: Uint8Array} | null} Done
 */

/**
 * Encrypts a frame's data. The CTR is taken before the first await, so frames get theirs
 * in the order they came even when their encryptions overlap.
 * @param {'audio' | 'video'} kind
 * @param {RTCEncodedVideoFrame | RTCEncodedAudioFrame} frame
 * @returns {Promise<Done>}
 */
async function encryptFrame(kind, frame) {
  const s = sending;
  if (!s) return null; // no key yet: nothing leaves in the clear
  const data = new Uint8Array(frame.data);
  const n = clearBytes(kind, data);
  const sf = await encrypt(s.key, s.kid, ctr++, data.subarray(0, n), data.subarray(n));
  counts.encrypted++;
  return {clear: data.subarray(0, n), body: sf};
}

/**
 * Passes the frame on with its data replaced: the clear bytes, then the body.
 * @param {RTCEncodedVideoFrame | RTCEncodedAudioFrame} frame
 * @param {{clear: Uint8Array, body: Uint8Array}} d
 * @param {TransformStreamDefaultController} out
 */
function pass(frame, d, out) {
  const buf = new Uint8Array(d.clear.length + d.body.length);
  buf.set(d.clear);
  buf.set(d.body, d.clear.length);
  frame.data = buf.buffer;
  out.enqueue(frame);
}

/**
 * Decrypts a frame's data; null when it cannot be (no key, or it does not authenticate).
 * @param {'audio' | 'video'} kind
 * @param {RTCEncodedVideoFrame | RTCEncodedAudioFrame} frame
 * @returns {Promise<Done>}
 */
async function decryptFrame(kind, frame) {
  const data = new Uint8Array(frame.data);
  if (data.length === 0) return null;
  const n = clearBytes(kind, data);
  const sf = data.subarray(n);
  const header = decodeHeader(sf);
  if (!header || header.kid > 0xffffffffn) {
    counts.short++;
    return null;
  }
  const r = receiving.get(Number(header.kid));
  if (!r) {
    counts.noKey++;
    return null;
  }
  let pt;
  try {
    pt = await decrypt(r.key, header, data.subarray(0, n), sf);
  } catch {
    counts.failed++;
    return null;
  }
  if (!r.replay.accept(header.ctr)) {
    counts.replayed++; // authentic, but seen before (or too old): dropped
    if (kind === 'audio') counts.replayedAudio++;
    return null;
  }
  counts.decrypted++;
  return {clear: data.subarray(0, n), body: pt};
}

/** @param {string} from */
function forget(from) {
  for (const kid of bySender.get(from) ?? []) receiving.delete(kid);
  bySender.delete(from);
}

/**
 * Messages from the page:
 *   {op: 'send', kid, secret}: encrypt from now on with this key (a new KID starts CTR at 0)
 *   {op: 'receive', from, kid, secret}: a sender's key
 *   {op: 'forget', from}: a sender left: its keys go
 *   {op: 'stats', id}: answered with {id, stats}
 * They are carried out one after the other, in the order they came.
 * @param {any} m
 */
async function handle(m) {
  switch (m.op) {
    case 'send': {
      const key = await deriveFrameKey(m.kid, m.secret);
      sending = {kid: m.kid, key};
      ctr = 0;
      break;
    }
    case 'receive': {
      // A KID is one sender's; the same key again keeps its replay window.
      if (receiving.has(m.kid)) break;
      const key = await deriveFrameKey(m.kid, m.secret);
      receiving.set(m.kid, {from: m.from, key, replay: new ReplayWindow()});
      const kids = (bySender.get(m.from) ?? []).filter((k) => k !== m.kid);
      kids.push(m.kid);
      while (kids.length > KEEP_PER_SENDER) receiving.delete(/** @type {number} */ (kids.shift()));
      bySender.set(m.from, kids);
      break;
    }
    case 'forget':
      forget(m.from);
      break;
    case 'stats':
      self.postMessage({id: m.id, stats: {...counts, sendKid: sending ? sending.kid : 0,
        receiveKids: Object.fromEntries([...bySender].map(([from, kids]) => [from, [...kids]]))}});
      break;
  }
}

let queue = Promise.resolve();
self.onmessage = (ev) => {
  queue = queue.then(() => handle(ev.data)).catch((err) => console.warn('bedside: e2ee worker', err));
};

/**
 * A transform of one sender or receiver: its options say which side and kind.
 * @param {Event & {transformer: {readable: ReadableStream, writable: WritableStream, options: unknown}}} ev
 */
function onTransform(ev) {
  const t = ev.transformer;
  const {side, kind} = /** @type {{side: 'send' | 'receive', kind: 'audio' | 'video'}} */ (t.options);
  pipe(side, kind, t.readable, t.writable);
}

/**
 * Frames of one sender or receiver whose encryption or decryption may be under way at once.
 * Each WebCrypto call goes to another thread and back; one at a time, every frame would wait
 * for the round trip of the one before, on a page short of CPU longer than a frame lasts
 * (docs/design.md decision 65).
 */
const IN_FLIGHT = 16;

/**
 * Runs every frame of one sender or receiver through step, several at once, and passes them
 * on in the order they came.
 * @param {'send' | 'receive'} side
 * @param {'audio' | 'video'} kind
 * @param {ReadableStream} readable
 * @param {WritableStream} writable
 */
function pipe(side, kind, readable, writable) {
  const step = side === 'send' ? encryptFrame : decryptFrame;
  /** @type {Promise<void>} the previous frame passed on (or dropped) */
  let tail = Promise.resolve();
  let inFlight = 0;
  readable
    .pipeThrough(new TransformStream({
      transform(frame, out) {
        const done = step(kind, frame).catch(() => null);
        inFlight++;
        tail = tail.then(() => done).then((d) => {
          inFlight--;
          if (d) pass(frame, d, out);
        }).catch(() => {}); // the stream closed under it: the frame goes nowhere
        // Backpressure: past IN_FLIGHT, the next frame waits for this one.
        return inFlight >= IN_FLIGHT ? tail : undefined;
      },
      flush() {
        return tail;
      },
    }))
    .pipeTo(writable)
    .catch(() => {}); // the sender or receiver is gone
}
/** @type {any} */ (self).onrtctransform = onTransform;
