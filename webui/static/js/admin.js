// Administration: accounts (end their sessions, reset their second factors), emergency
// access (grant, withdraw) and the alert listing every grant of the last 7 days.

import {api, ApiError, byId, formatDateTime} from './ui.js';

/**
 * @typedef {{id: string, email: string, name: string, role: string, disabled: boolean,
 *   second_factor: boolean, sessions: number, emergency_until: string | null}} Account
 * @typedef {{id: string, user: {id: string, name: string, email: string}, granted_by: string,
 *   reason: string, created_at: string, expires_at: string, revoked_at: string | null, active: boolean}} Grant
 */

const userName = byId('user-name', HTMLElement);
const signout = byId('signout', HTMLButtonElement);
const pageError = byId('admin-error', HTMLElement);
const alertBox = byId('break-glass-alert', HTMLElement);
const alertList = byId('break-glass-list', HTMLUListElement);
const tbody = byId('users', HTMLTableElement).tBodies[0];
const grantForm = byId('grant-form', HTMLFormElement);
const grantUser = byId('grant-user', HTMLSelectElement);
const grantDuration = byId('grant-duration', HTMLSelectElement);
const grantReason = byId('grant-reason', HTMLInputElement);
const grantError = byId('grant-error', HTMLElement);

/** @param {HTMLElement} el @param {string} text */
function setError(el, text) {
  el.textContent = text;
  el.hidden = !text;
}
setError(grantError, '');

/** @param {unknown} err @param {HTMLElement} el @param {string} fallback */
function failed(err, el, fallback) {
  if (err instanceof ApiError && err.status === 401) {
    location.assign('/signin?next=' + encodeURIComponent('/console/admin'));
    return;
  }
  setError(el, err instanceof ApiError ? err.message : fallback);
}

/**
 * @param {string} text
 * @param {string} cls
 * @param {() => void} onClick
 * @returns {HTMLButtonElement}
 */
function button(text, cls, onClick) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = cls;
  b.textContent = text;
  b.addEventListener('click', onClick);
  return b;
}

/** @param {Account[]} users */
function renderUsers(users) {
  tbody.replaceChildren();
  const clinicians = [];
  for (const u of users) {
    const tr = document.createElement('tr');
    tr.dataset.userId = u.id;
    const cells = [u.name, u.email, u.role + (u.disabled ? ' (disabled)' : ''), u.second_factor ? 'Yes' : 'No', String(u.sessions)];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const actions = document.createElement('td');
    actions.className = 'actions';
    actions.append(button('End sessions', 'end-sessions secondary', () => act(u, 'DELETE', '/sessions', `End every session of ${u.name}? They must sign in again.`)));
    actions.append(' ', button('Reset second factor', 'reset-mfa secondary danger', () => act(u, 'POST', '/mfa/reset',
      `Remove every second factor of ${u.name} (lost phone)? They set one up again at their next sign-in.`)));
    if (u.emergency_until) {
      actions.append(' ', button('Withdraw emergency access', 'revoke-break-glass secondary danger', () => act(u, 'DELETE', '/break-glass',
        `End the emergency access of ${u.name} now?`)));
    }
    tr.append(actions);
    tbody.append(tr);
    if (u.role === 'clinician' && !u.disabled) clinicians.push(u);
  }
  const selected = grantUser.value;
  grantUser.replaceChildren(...clinicians.map((u) => {
    const o = document.createElement('option');
    o.value = u.id;
    o.textContent = `${u.name} <${u.email}>`;
    return o;
  }));
  if (selected) grantUser.value = selected;
}

/** @param {Grant[]} grants */
function renderAlerts(grants) {
  alertList.replaceChildren(...grants.map((g) => {
    const li = document.createElement('li');
    li.dataset.grantId = g.id;
    li.className = g.active ? 'active' : '';
    const state = g.active ? `ACTIVE until ${formatDateTime(g.expires_at)}` :
      (g.revoked_at ? `withdrawn ${formatDateTime(g.revoked_at)}` : `ended ${formatDateTime(g.expires_at)}`);
    li.textContent = `${g.user.name}: ${state}. Reason: ${g.reason}`;
    return li;
  }));
  alertBox.hidden = grants.length === 0;
}

async function load() {
  try {
    const [me, users, grants] = await Promise.all([api('GET', '/api/v1/session'), api('GET', '/api/v1/users'), api('GET', '/api/v1/break-glass')]);
    userName.textContent = me?.user?.name || '';
    renderUsers(users?.users ?? []);
    renderAlerts(grants?.grants ?? []);
    setError(pageError, '');
  } catch (err) {
    failed(err, pageError, 'Cannot reach the server.');
  }
}

/**
 * @param {Account} u
 * @param {'POST' | 'DELETE'} method
 * @param {string} suffix
 * @param {string} question
 */
async function act(u, method, suffix, question) {
  if (!confirm(question)) return;
  try {
    await api(method, `/api/v1/users/${encodeURIComponent(u.id)}${suffix}`);
    await load();
  } catch (err) {
    failed(err, pageError, 'That did not work.');
  }
}

grantForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  setError(grantError, '');
  if (!grantUser.value) {
    setError(grantError, 'There is no clinician to grant access to.');
    return;
  }
  try {
    await api('POST', `/api/v1/users/${encodeURIComponent(grantUser.value)}/break-glass`, {duration: grantDuration.value, reason: grantReason.value.trim()});
    grantReason.value = '';
    await load();
  } catch (err) {
    failed(err, grantError, 'Emergency access was not granted.');
  }
});

signout.addEventListener('click', async () => {
  try {
    await api('DELETE', '/api/v1/session');
  } catch {
    // Signed out already.
  }
  location.assign('/signin');
});

load();
setInterval(load, 15000);
