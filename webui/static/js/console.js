// The console: who is signed in, create a visit and copy its patient link, today's visits.

import {api, ApiError, byId, formatTime, rfc3339} from './ui.js';

/**
 * @typedef {{id: string, name: string, since: string}} WaitingEntry
 * @typedef {{id: string, state: 'scheduled' | 'waiting' | 'in_call' | 'ended', patient_name?: string,
 *   clinician?: {id: string, name: string}, scheduled_at?: string | null, created_at?: string,
 *   revoked?: boolean, ended_at?: string | null, clinician_url?: string, patient_url?: string,
 *   waiting?: WaitingEntry[]}} Visit
 */

const REFRESH_MS = 3000;

const STATE_TEXT = /** @type {Record<string, string>} */ ({
  scheduled: 'Scheduled',
  waiting: 'Patient waiting',
  in_call: 'In call',
  ended: 'Ended',
});

const userName = byId('user-name', HTMLElement);
const signout = byId('signout', HTMLButtonElement);
const consoleError = byId('console-error', HTMLElement);
const breakGlassBanner = byId('break-glass-banner', HTMLElement);
const adminLink = byId('admin-link', HTMLAnchorElement);
const auditLink = byId('audit-link', HTMLAnchorElement);
const form = byId('create-visit', HTMLFormElement);
const patientName = byId('patient-name', HTMLInputElement);
const scheduledAt = byId('scheduled-at', HTMLInputElement);
const privacy = byId('privacy', HTMLInputElement);
const mediaPolicy = byId('media-policy', HTMLSelectElement);
const clinicianField = byId('clinician-field', HTMLElement);
const clinicianEmail = byId('clinician-email', HTMLInputElement);
const submit = byId('create-visit-submit', HTMLButtonElement);
const createError = byId('create-error', HTMLElement);
const newVisit = byId('new-visit', HTMLElement);
const patientLink = byId('patient-link', HTMLInputElement);
const copyLink = byId('copy-link', HTMLButtonElement);
const copyStatus = byId('copy-status', HTMLElement);
const openNewVisit = byId('open-new-visit', HTMLAnchorElement);
const table = byId('visits', HTMLTableElement);
const tbody = table.tBodies[0];
const empty = byId('visits-empty', HTMLElement);
const updated = byId('visits-updated', HTMLElement);

/** @param {HTMLElement} el @param {string} text */
function setError(el, text) {
  el.textContent = text;
  el.hidden = !text;
}

function toSignIn() {
  location.assign('/signin?next=' + encodeURIComponent('/console'));
}

/**
 * The path of a URL the server made (so the link works whatever host name the page uses).
 * @param {string | undefined} url
 * @param {string} fallback
 * @returns {string}
 */
function pathOf(url, fallback) {
  if (!url) return fallback;
  try {
    return new URL(url, location.origin).pathname;
  } catch {
    return fallback;
  }
}

/** @param {Visit} v @returns {string} */
function visitPath(v) {
  return pathOf(v.clinician_url, `/console/visits/${encodeURIComponent(v.id)}`);
}

/** The user's local day as [from, to). */
function today() {
  const from = new Date();
  from.setHours(0, 0, 0, 0);
  const to = new Date(from);
  to.setDate(to.getDate() + 1);
  return {from: rfc3339(from), to: rfc3339(to)};
}

/** @param {Visit} v @returns {string} */
function stateText(v) {
  let text = STATE_TEXT[v.state] ?? v.state;
  if (v.state === 'waiting' && v.waiting && v.waiting.length > 0) {
    text += ` (${v.waiting.map((w) => w.name).join(', ')})`;
  }
  if (v.revoked && v.state !== 'ended') text += ' · link revoked';
  return text;
}

/** @param {Visit} v @returns {string} */
function timeOf(v) {
  return formatTime(v.scheduled_at || v.created_at);
}

/**
 * @param {HTMLElement} el
 * @param {string} text
 */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

/**
 * Makes the row for a visit; rows are then updated in place, so a refresh does not take the
 * keyboard focus away from a button.
 * @param {Visit} v
 * @returns {HTMLTableRowElement}
 */
function makeRow(v) {
  const tr = document.createElement('tr');
  tr.dataset.visitId = v.id;
  const state = document.createElement('td');
  state.className = 'state';
  const badge = document.createElement('span');
  badge.className = 'badge';
  state.append(badge);
  const patient = document.createElement('td');
  patient.className = 'patient';
  const time = document.createElement('td');
  time.className = 'time';
  const actions = document.createElement('td');
  actions.className = 'actions';
  const open = document.createElement('a');
  open.className = 'open-visit button primary';
  open.textContent = 'Open';
  const revoke = document.createElement('button');
  revoke.type = 'button';
  revoke.className = 'revoke-visit secondary danger';
  revoke.textContent = 'Revoke link';
  revoke.addEventListener('click', () => onRevoke(tr));
  actions.append(open, ' ', revoke);
  tr.append(state, patient, time, actions);
  return tr;
}

/**
 * @param {HTMLTableRowElement} tr
 * @param {Visit} v
 */
function updateRow(tr, v) {
  const [state, patient, time, actions] = /** @type {HTMLElement[]} */ ([...tr.cells]);
  if (state.dataset.state !== v.state) state.dataset.state = v.state;
  const badge = /** @type {HTMLElement} */ (state.firstElementChild);
  setText(badge, stateText(v));
  const name = v.patient_name || 'Unnamed patient';
  setText(patient, name);
  patient.classList.toggle('unnamed', !v.patient_name);
  setText(time, timeOf(v));
  const open = /** @type {HTMLAnchorElement} */ (actions.querySelector('a.open-visit'));
  const href = visitPath(v);
  if (open.getAttribute('href') !== href) open.setAttribute('href', href);
  open.setAttribute('aria-label', `Open the visit with ${name}`);
  const revoke = /** @type {HTMLButtonElement} */ (actions.querySelector('button.revoke-visit'));
  revoke.disabled = Boolean(v.revoked) || v.state === 'ended';
  revoke.setAttribute('aria-label', `Revoke the link of the visit with ${name}`);
  tr.dataset.patientName = name;
}

/** @param {Visit[]} visits */
function render(visits) {
  const sorted = [...visits].sort((a, b) =>
    String(a.scheduled_at || a.created_at || '').localeCompare(String(b.scheduled_at || b.created_at || '')));
  /** @type {Map<string, HTMLTableRowElement>} */
  const rows = new Map();
  for (const tr of tbody.rows) rows.set(tr.dataset.visitId ?? '', tr);
  let prev = /** @type {HTMLTableRowElement | null} */ (null);
  for (const v of sorted) {
    let tr = rows.get(v.id);
    rows.delete(v.id);
    if (!tr) tr = makeRow(v);
    updateRow(tr, v);
    const want = prev ? prev.nextElementSibling : tbody.firstElementChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    prev = tr;
  }
  for (const tr of rows.values()) tr.remove();
  empty.hidden = sorted.length > 0;
}

let refreshing = false;

async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const {from, to} = today();
    const q = new URLSearchParams({from, to});
    const data = await api('GET', `/api/v1/visits?${q}`);
    render(Array.isArray(data?.visits) ? data.visits : []);
    setError(consoleError, '');
    updated.textContent = `Updated ${new Date().toLocaleTimeString([], {hour: '2-digit', minute: '2-digit', second: '2-digit'})}`;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      toSignIn();
      return;
    }
    setError(consoleError, err instanceof ApiError ? `Could not load the visits: ${err.message}` :
      'Could not load the visits.');
  } finally {
    refreshing = false;
  }
}

/** @param {HTMLTableRowElement} tr */
async function onRevoke(tr) {
  const id = tr.dataset.visitId;
  if (!id) return;
  const name = tr.dataset.patientName || 'this patient';
  if (!confirm(`Revoke the link for ${name}? The link stops working and anyone using it is disconnected.`)) return;
  const btn = tr.querySelector('button.revoke-visit');
  if (btn instanceof HTMLButtonElement) btn.disabled = true;
  try {
    const v = await api('POST', `/api/v1/visits/${encodeURIComponent(id)}/revoke`);
    if (v && v.id) updateRow(tr, v);
    setError(consoleError, '');
  } catch (err) {
    if (btn instanceof HTMLButtonElement) btn.disabled = false;
    setError(consoleError, err instanceof ApiError ? `Could not revoke the link: ${err.message}` :
      'Could not revoke the link.');
  }
  refresh();
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  setError(createError, '');
  /** @type {Record<string, string | boolean>} */
  const body = {};
  const name = patientName.value.trim();
  if (name) body.patient_name = name;
  if (scheduledAt.value) {
    const d = new Date(scheduledAt.value); // datetime-local: local time
    if (Number.isNaN(d.getTime())) {
      setError(createError, 'The time is not valid.');
      scheduledAt.focus();
      return;
    }
    body.scheduled_at = rfc3339(d);
  }
  if (!clinicianField.hidden && clinicianEmail.value.trim()) body.clinician_email = clinicianEmail.value.trim();
  if (privacy.checked) body.privacy = true;
  if (mediaPolicy.value !== 'auto') body.policy = mediaPolicy.value;
  submit.disabled = true;
  try {
    /** @type {Visit} */
    const v = await api('POST', '/api/v1/visits', body);
    patientLink.value = v.patient_url ?? '';
    openNewVisit.href = visitPath(v);
    copyStatus.textContent = '';
    newVisit.hidden = false;
    form.reset();
    patientLink.focus();
    patientLink.select();
    refresh();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      toSignIn();
      return;
    }
    setError(createError, err instanceof ApiError ? err.message : 'The visit could not be created.');
  } finally {
    submit.disabled = false;
  }
});

copyLink.addEventListener('click', async () => {
  const text = patientLink.value;
  if (!text) return;
  try {
    if (!navigator.clipboard) throw new Error('no clipboard');
    await navigator.clipboard.writeText(text);
    copyStatus.textContent = 'Link copied. Paste it into your message to the patient.';
  } catch {
    // No clipboard access (insecure page or refused): select the text for Ctrl+C.
    patientLink.focus();
    patientLink.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    copyStatus.textContent = ok ? 'Link copied. Paste it into your message to the patient.'
      : 'The link is selected: press Ctrl+C (or ⌘+C) to copy it.';
  }
});

patientLink.addEventListener('focus', () => patientLink.select());

signout.addEventListener('click', async () => {
  signout.disabled = true;
  try {
    await api('DELETE', '/api/v1/session');
  } catch {
    // Signed out already or the server is away: the sign-in page is still the right place.
  }
  location.assign('/signin');
});

/** Admins see every active emergency grant at the top of the console. */
async function alertAdmins() {
  try {
    const data = await api('GET', '/api/v1/break-glass');
    /** @type {{active: boolean, user: {name: string}, expires_at: string}[]} */
    const active = (Array.isArray(data?.grants) ? data.grants : []).filter((/** @type {any} */ g) => g.active);
    if (active.length > 0) {
      breakGlassBanner.textContent = 'Emergency access (break-glass) is active: ' +
        active.map((g) => `${g.user.name} until ${formatTime(g.expires_at)}`).join('; ') + '. See Accounts.';
      breakGlassBanner.hidden = false;
    }
  } catch {
    // The banner is a convenience; the accounts page shows the same.
  }
}

async function start() {
  try {
    const data = await api('GET', '/api/v1/session');
    const user = data?.user;
    userName.textContent = user?.name || user?.email || '';
    if (user && (user.role === 'staff' || user.role === 'admin')) clinicianField.hidden = false;
    if (data?.emergency) {
      breakGlassBanner.textContent = 'Emergency access is on: you can open every visit. Every use is recorded and the admins are told.';
      breakGlassBanner.hidden = false;
    }
    if (user && user.role === 'admin') {
      adminLink.hidden = false;
      auditLink.hidden = false;
      alertAdmins();
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      toSignIn();
      return;
    }
    setError(consoleError, err instanceof ApiError ? err.message : 'Cannot reach the server.');
  }
  await refresh();
  setInterval(refresh, REFRESH_MS);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) refresh();
  });
}

start();
