// The sign-in page: POST /api/v1/session, then go to /console or to a same-origin `next` path.

import {api, ApiError, byId} from './ui.js';

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

/** @param {string} text */
function showError(text) {
  error.textContent = text;
  error.hidden = !text;
}
showError('');

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError('');
  if (!email.value.trim() || !password.value) {
    showError('Enter your email address and your password.');
    (email.value.trim() ? password : email).focus();
    return;
  }
  submit.disabled = true;
  submit.textContent = 'Signing in…';
  try {
    await api('POST', '/api/v1/session', {email: email.value.trim(), password: password.value});
    location.assign(nextPath(location.search));
  } catch (err) {
    showError(err instanceof ApiError ? err.message : 'Signing in failed. Try again.');
    password.select();
    password.focus();
    submit.disabled = false;
    submit.textContent = 'Sign in';
  }
});

// Already signed in (for example in another tab): go straight on.
api('GET', '/api/v1/session').then(
  (data) => {
    if (data && data.user) location.replace(nextPath(location.search));
  },
  () => {},
);
