// Passkeys (WebAuthn): the server sends the options of navigator.credentials.create/get with
// binary fields in base64url (go-webauthn's JSON); the browser wants ArrayBuffers, and the
// answer goes back as JSON with base64url again. This module only converts and calls.

/**
 * @param {string} s base64url, no padding
 * @returns {ArrayBuffer}
 */
export function fromB64url(s) {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

/**
 * @param {ArrayBuffer | ArrayBufferView | null | undefined} buf
 * @returns {string}
 */
export function toB64url(buf) {
  if (!buf) return '';
  const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** @returns {boolean} whether this browser can use passkeys here */
export function passkeysAvailable() {
  return typeof window.PublicKeyCredential === 'function' && window.isSecureContext;
}

/**
 * @param {any} list
 * @returns {any}
 */
function descriptors(list) {
  if (!Array.isArray(list)) return list;
  return list.map((/** @type {any} */ d) => ({...d, id: fromB64url(d.id)}));
}

/**
 * Creates a passkey with the server's options ({publicKey: ...}) and returns the JSON to
 * send back.
 * @param {any} options
 * @returns {Promise<object>}
 */
export async function createPasskey(options) {
  const pk = options.publicKey;
  /** @type {PublicKeyCredentialCreationOptions} */
  const publicKey = {
    ...pk,
    challenge: fromB64url(pk.challenge),
    user: {...pk.user, id: fromB64url(pk.user.id)},
    excludeCredentials: descriptors(pk.excludeCredentials),
  };
  const cred = /** @type {PublicKeyCredential | null} */ (await navigator.credentials.create({publicKey}));
  if (!cred) throw new Error('No passkey was made.');
  const r = /** @type {AuthenticatorAttestationResponse} */ (cred.response);
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    response: {
      clientDataJSON: toB64url(r.clientDataJSON),
      attestationObject: toB64url(r.attestationObject),
      transports: typeof r.getTransports === 'function' ? r.getTransports() : [],
    },
    clientExtensionResults: cred.getClientExtensionResults(),
  };
}

/**
 * Signs the server's challenge ({publicKey: ...}) with a passkey and returns the JSON to
 * send back.
 * @param {any} options
 * @returns {Promise<object>}
 */
export async function usePasskey(options) {
  const pk = options.publicKey;
  /** @type {PublicKeyCredentialRequestOptions} */
  const publicKey = {...pk, challenge: fromB64url(pk.challenge), allowCredentials: descriptors(pk.allowCredentials)};
  const cred = /** @type {PublicKeyCredential | null} */ (await navigator.credentials.get({publicKey}));
  if (!cred) throw new Error('No passkey was used.');
  const r = /** @type {AuthenticatorAssertionResponse} */ (cred.response);
  return {
    id: cred.id,
    rawId: toB64url(cred.rawId),
    type: cred.type,
    response: {
      clientDataJSON: toB64url(r.clientDataJSON),
      authenticatorData: toB64url(r.authenticatorData),
      signature: toB64url(r.signature),
      userHandle: toB64url(r.userHandle),
    },
    clientExtensionResults: cred.getClientExtensionResults(),
  };
}
