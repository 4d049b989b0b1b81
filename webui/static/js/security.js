// Sign-in security: one's own second factors. Set up an authenticator app (the QR code is
// an image the server renders, so the CSP holds), add or remove passkeys, new recovery
// codes. An account that must have a second factor and has none is sent here after the
// password, and can go nowhere else until it has one.

import {api, ApiError, byId} from './ui.js';
import {createPasskey, passkeysAvailable} from './passkey.js';

/**
 * @typedef {{id: string, name: string, created_at: string, last_used_at: string | null}} PasskeyInfo
 * @typedef {{user: {name: string, email: string}, stage: string, required: boolean, totp: boolean,
 *   totp_pending: boolean, passkeys: PasskeyInfo[], recovery_codes_left: number}} MFAStatus
 */

const userName = byId('user-name', HTMLElement);
const signout = byId('signout', HTMLButtonElement);
const back = byId('back-to-console', HTMLAnchorElement);
const enrollRequired = byId('enroll-required', HTMLElement);
const pageError = byId('security-error', HTMLElement);
const totpStatus = byId('totp-status', HTMLElement);
const totpStart = byId('totp-start', HTMLButtonElement);
const totpSetup = byId('totp-setup', HTMLElement);
const totpQR = byId('totp-qr', HTMLImageElement);
const totpSecret = byId('totp-secret', HTMLElement);
const totpForm = byId('totp-confirm-form', HTMLFormElement);
const totpCode = byId('totp-confirm-code', HTMLInputElement);
const totpError = byId('totp-error', HTMLElement);
const totpRemove = byId('totp-remove', HTMLButtonElement);
const passkeyList = byId('passkeys', HTMLUListElement);
const passkeyUnavailable = byId('passkey-unavailable', HTMLElement);
const passkeyAddForm = byId('passkey-add-form', HTMLElement);
const passkeyName = byId('passkey-name', HTMLInputElement);
const passkeyAdd = byId('passkey-add', HTMLButtonElement);
const passkeyError = byId('passkey-error', HTMLElement);
const recoveryLeft = byId('recovery-left', HTMLElement);
const recoveryNew = byId('recovery-new', HTMLButtonElement);
const recoveryCodes = byId('recovery-codes', HTMLElement);
const recoveryList = byId('recovery-code-list', HTMLOListElement);
const continueLink = byId('security-continue', HTMLAnchorElement);

/** Where to go once done: the `next` parameter when it is a path here. */
function nextPath() {
  const next = new URLSearchParams(location.search).get('next');
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\')) return '/console';
  return next;
}
continueLink.href = nextPath();

/** @param {HTMLElement} el @param {string} text */
function setError(el, text) {
  el.textContent = text;
  el.hidden = !text;
}
setError(totpError, '');
setError(passkeyError, '');

/** @param {unknown} err @param {HTMLElement} el @param {string} fallback */
function failed(err, el, fallback) {
  if (err instanceof ApiError && err.status === 401 && err.code === 'unauthenticated') {
    location.assign('/signin?next=' + encodeURIComponent('/console/security'));
    return;
  }
  setError(el, err instanceof ApiError ? err.message : fallback);
}

/** @type {MFAStatus | null} */
let status = null;

/** @param {MFAStatus} s */
function render(s) {
  status = s;
  userName.textContent = s.user?.name || s.user?.email || '';
  const enrolling = s.stage === 'enroll';
  enrollRequired.hidden = !enrolling;
  back.hidden = enrolling;
  totpStatus.textContent = s.totp ? 'On' : 'Not set up';
  totpStart.hidden = s.totp || !totpSetup.hidden;
  totpRemove.hidden = !s.totp;
  passkeyList.replaceChildren();
  for (const p of s.passkeys) {
    const li = document.createElement('li');
    li.dataset.passkeyId = p.id;
    li.append(p.name + ' ');
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.className = 'remove-passkey secondary danger';
    rm.textContent = 'Remove';
    rm.setAttribute('aria-label', `Remove the passkey ${p.name}`);
    rm.addEventListener('click', () => removePasskey(p));
    li.append(rm);
    passkeyList.append(li);
  }
  const canPasskey = passkeysAvailable();
  passkeyUnavailable.hidden = canPasskey;
  passkeyAddForm.hidden = !canPasskey;
  recoveryLeft.textContent = String(s.recovery_codes_left);
  recoveryNew.hidden = !(s.totp || s.passkeys.length > 0);
}

async function load() {
  try {
    render(await api('GET', '/api/v1/mfa'));
    setError(pageError, '');
  } catch (err) {
    failed(err, pageError, 'Cannot reach the server.');
  }
}

/** @param {string[] | null | undefined} codes */
function showRecoveryCodes(codes) {
  if (!codes || codes.length === 0) return false;
  recoveryList.replaceChildren(...codes.map((c) => {
    const li = document.createElement('li');
    li.textContent = c;
    return li;
  }));
  recoveryCodes.hidden = false;
  continueLink.focus();
  return true;
}

/** After a second factor was set up: show new recovery codes, or go on when enrolling. */
function enrolled(/** @type {any} */ data) {
  const wasEnrolling = status?.stage === 'enroll';
  const shown = showRecoveryCodes(data?.recovery_codes);
  load();
  if (wasEnrolling && !shown) location.assign(nextPath());
}

totpStart.addEventListener('click', async () => {
  setError(totpError, '');
  totpStart.disabled = true;
  try {
    const setup = await api('POST', '/api/v1/mfa/totp');
    totpSecret.textContent = setup.secret;
    totpQR.src = setup.qr + '?t=' + Date.now();
    totpSetup.hidden = false;
    totpStart.hidden = true;
    totpCode.focus();
  } catch (err) {
    failed(err, totpError, 'The setup could not start.');
  } finally {
    totpStart.disabled = false;
  }
});

totpForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  setError(totpError, '');
  const code = totpCode.value.trim();
  if (!code) {
    setError(totpError, 'Enter the 6-digit code your app shows.');
    totpCode.focus();
    return;
  }
  try {
    const data = await api('POST', '/api/v1/mfa/totp/confirm', {code});
    totpSetup.hidden = true;
    totpCode.value = '';
    enrolled(data);
  } catch (err) {
    if (err instanceof ApiError && err.code === 'bad_code') {
      setError(totpError, 'That code is not right. Check the time on your phone and enter the code the app shows now.');
      totpCode.select();
      return;
    }
    failed(err, totpError, 'The app could not be turned on.');
  }
});

totpRemove.addEventListener('click', async () => {
  if (!confirm('Remove the authenticator app from your account?')) return;
  try {
    await api('DELETE', '/api/v1/mfa/totp');
    load();
  } catch (err) {
    failed(err, pageError, 'The app could not be removed.');
  }
});

passkeyAdd.addEventListener('click', async () => {
  setError(passkeyError, '');
  passkeyAdd.disabled = true;
  try {
    const options = await api('POST', '/api/v1/mfa/passkeys/begin');
    const answer = await createPasskey(options);
    const name = passkeyName.value.trim();
    const data = await api('POST', '/api/v1/mfa/passkeys/finish?name=' + encodeURIComponent(name), answer);
    passkeyName.value = '';
    enrolled(data);
  } catch (err) {
    if (err instanceof ApiError) failed(err, passkeyError, '');
    else setError(passkeyError, 'No passkey was added. Try again.');
  } finally {
    passkeyAdd.disabled = false;
  }
});

/** @param {PasskeyInfo} p */
async function removePasskey(p) {
  if (!confirm(`Remove the passkey ${p.name}?`)) return;
  try {
    await api('DELETE', '/api/v1/mfa/passkeys/' + encodeURIComponent(p.id));
    load();
  } catch (err) {
    failed(err, pageError, 'The passkey could not be removed.');
  }
}

recoveryNew.addEventListener('click', async () => {
  if (!confirm('Make new recovery codes? The old ones stop working.')) return;
  try {
    const data = await api('POST', '/api/v1/mfa/recovery-codes');
    showRecoveryCodes(data?.recovery_codes);
    load();
  } catch (err) {
    failed(err, pageError, 'No new codes were made.');
  }
});

signout.addEventListener('click', async () => {
  signout.disabled = true;
  try {
    await api('DELETE', '/api/v1/session');
  } catch {
    // Signed out already: the sign-in page is still the right place.
  }
  location.assign('/signin');
});

load();
