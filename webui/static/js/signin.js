// The sign-in page: POST /api/v1/session, then, when the account has a second factor, a code
// from the authenticator app, a recovery code or a passkey; then /console or a same-origin
// `next` path. An account that must set up a second factor goes to /console/security.

import {api, ApiError, byId} from './ui.js';
import {passkeysAvailable, usePasskey} from './passkey.js';

/**
 * Where to go after signing in: the `next` query parameter when it is a path on this site,
 * else /console.
 * @param {string} search location.search
 * @returns {string}
 */
export function nextPath(search) {
  const next = new URLSearchParams(search).get('next');
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\')) return '/console';
  try {
    const u = new URL(next, location.origin);
    if (u.origin !== location.origin) return '/console';
    return u.pathname + u.search + u.hash;
  } catch {
    return '/console';
  }
}

const form = byId('signin-form', HTMLFormElement);
const email = byId('email', HTMLInputElement);
const password = byId('password', HTMLInputElement);
const submit = byId('signin-submit', HTMLButtonElement);
const error = byId('signin-error', HTMLElement);
const passwordStep = byId('password-step', HTMLElement);
const mfaStep = byId('mfa-step', HTMLElement);
const mfaForm = byId('mfa-form', HTMLFormElement);
const totpField = byId('totp-field', HTMLElement);
const totpCode = byId('totp-code', HTMLInputElement);
const recoveryField = byId('recovery-field', HTMLElement);
const recoveryCode = byId('recovery-code', HTMLInputElement);
const mfaError = byId('mfa-error', HTMLElement);
const mfaSubmit = byId('mfa-submit', HTMLButtonElement);
const passkeyButton = byId('passkey-signin', HTMLButtonElement);
const useRecovery = byId('use-recovery', HTMLButtonElement);

/** @param {HTMLElement} el @param {string} text */
function showError(el, text) {
  el.textContent = text;
  el.hidden = !text;
}
showError(error, '');
showError(mfaError, '');

/** @param {any} data the answer of a sign-in step */
function proceed(data) {
  if (data && data.stage === 'enroll') {
    location.assign('/console/security?next=' + encodeURIComponent(nextPath(location.search)));
  } else if (data && data.stage === 'second_factor') {
    showSecondStep(Array.isArray(data.methods) ? data.methods : []);
  } else {
    location.assign(nextPath(location.search));
  }
}

/** @param {string[]} methods */
function showSecondStep(methods) {
  passwordStep.hidden = true;
  mfaStep.hidden = false;
  const hasTOTP = methods.includes('totp');
  totpField.hidden = !hasTOTP;
  recoveryField.hidden = hasTOTP;
  mfaSubmit.hidden = !hasTOTP && !methods.includes('recovery');
  passkeyButton.hidden = !(methods.includes('passkey') && passkeysAvailable());
  useRecovery.hidden = !(hasTOTP && methods.includes('recovery'));
  (hasTOTP ? totpCode : recoveryCode).focus();
  if (!hasTOTP && !passkeyButton.hidden) passkeyButton.focus();
}

/** @param {unknown} err */
function stepFailed(err) {
  if (err instanceof ApiError && err.status === 401 && err.code === 'unauthenticated') {
    // The half-way session ran out (10 minutes): start again.
    mfaStep.hidden = true;
    passwordStep.hidden = false;
    showError(error, 'That took too long. Sign in again.');
    password.value = '';
    password.focus();
    return;
  }
  showError(mfaError, err instanceof ApiError ? err.message : 'That did not work. Try again.');
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError(error, '');
  if (!email.value.trim() || !password.value) {
    showError(error, 'Enter your email address and your password.');
    (email.value.trim() ? password : email).focus();
    return;
  }
  submit.disabled = true;
  submit.textContent = 'Signing in…';
  try {
    proceed(await api('POST', '/api/v1/session', {email: email.value.trim(), password: password.value}));
  } catch (err) {
    showError(error, err instanceof ApiError ? err.message : 'Signing in failed. Try again.');
    password.select();
    password.focus();
  } finally {
    submit.disabled = false;
    submit.textContent = 'Sign in';
  }
});

mfaForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError(mfaError, '');
  const recovery = !recoveryField.hidden;
  const input = recovery ? recoveryCode : totpCode;
  const code = input.value.trim();
  if (!code) {
    showError(mfaError, recovery ? 'Enter one of your recovery codes.' : 'Enter the 6-digit code your app shows.');
    input.focus();
    return;
  }
  mfaSubmit.disabled = true;
  try {
    proceed(await api('POST', recovery ? '/api/v1/session/recovery' : '/api/v1/session/totp', {code}));
  } catch (err) {
    stepFailed(err);
    input.select();
  } finally {
    mfaSubmit.disabled = false;
  }
});

useRecovery.addEventListener('click', () => {
  totpField.hidden = true;
  recoveryField.hidden = false;
  useRecovery.hidden = true;
  mfaSubmit.hidden = false;
  recoveryCode.focus();
});

passkeyButton.addEventListener('click', async () => {
  showError(mfaError, '');
  passkeyButton.disabled = true;
  try {
    const options = await api('POST', '/api/v1/session/passkey/begin');
    const answer = await usePasskey(options);
    proceed(await api('POST', '/api/v1/session/passkey/finish', answer));
  } catch (err) {
    if (err instanceof ApiError) stepFailed(err);
    else showError(mfaError, 'The passkey was not used. Try again, or use a code.');
  } finally {
    passkeyButton.disabled = false;
  }
});

// Already signed in (for example in another tab): go straight on.
api('GET', '/api/v1/session').then(
  (data) => {
    if (data && data.user) location.replace(nextPath(location.search));
  },
  () => {},
);
