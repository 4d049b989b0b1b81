// The audit trail, for admins: search by visit, user, action and day (UTC), newest first,
// a page at a time.

import {api, ApiError, byId} from './ui.js';

/**
 * @typedef {{seq: number, time: string, action: string, actor_id?: string, actor_role?: string,
 *   visit_id?: string, subject_id?: string, addr?: string, user_agent?: string, outcome: string,
 *   detail?: Record<string, string>}} Entry
 */

const userName = byId('user-name', HTMLElement);
const signout = byId('signout', HTMLButtonElement);
const form = byId('audit-search', HTMLFormElement);
const visitInput = byId('audit-visit', HTMLInputElement);
const userInput = byId('audit-user', HTMLInputElement);
const actionInput = byId('audit-action', HTMLInputElement);
const fromInput = byId('audit-from', HTMLInputElement);
const toInput = byId('audit-to', HTMLInputElement);
const errorEl = byId('audit-error', HTMLElement);
const tbody = byId('audit-results', HTMLTableElement).tBodies[0];
const empty = byId('audit-empty', HTMLElement);
const more = byId('audit-more', HTMLButtonElement);

/** @type {URLSearchParams | null} */
let current = null;
/** @type {number | null} */
let nextBefore = null;

/** @param {string} text */
function setError(text) {
  errorEl.textContent = text;
  errorEl.hidden = !text;
}
setError('');

/** @returns {URLSearchParams} */
function query() {
  const q = new URLSearchParams();
  if (visitInput.value.trim()) q.set('visit', visitInput.value.trim());
  const u = userInput.value.trim();
  if (u) q.set(u.includes('@') ? 'email' : 'user', u);
  if (actionInput.value.trim()) q.set('action', actionInput.value.trim());
  if (fromInput.value) q.set('from', fromInput.value);
  if (toInput.value) q.set('to', toInput.value);
  return q;
}

/** @param {Entry} e @returns {HTMLTableRowElement} */
function row(e) {
  const tr = document.createElement('tr');
  tr.dataset.seq = String(e.seq);
  tr.dataset.action = e.action;
  const detail = e.detail ? Object.entries(e.detail).map(([k, v]) => `${k}=${v}`).join(', ') : '';
  const who = e.actor_id ? `${e.actor_id}${e.actor_role ? ' (' + e.actor_role + ')' : ''}` : '';
  const when = e.time.replace('T', ' ').replace(/\.\d+Z$|Z$/, '');
  for (const text of [String(e.seq), when, e.action, who, e.visit_id ?? '', e.subject_id ?? '', e.addr ?? '', e.outcome, detail]) {
    const td = document.createElement('td');
    td.textContent = text;
    tr.append(td);
  }
  if (e.user_agent) tr.title = e.user_agent;
  return tr;
}

/** @param {boolean} append */
async function search(append) {
  setError('');
  if (!current) return;
  const q = new URLSearchParams(current);
  if (append && nextBefore) q.set('before', String(nextBefore));
  try {
    const data = await api('GET', '/api/v1/audit?' + q);
    /** @type {Entry[]} */
    const entries = Array.isArray(data?.entries) ? data.entries : [];
    if (!append) tbody.replaceChildren();
    tbody.append(...entries.map(row));
    nextBefore = typeof data?.next_before === 'number' ? data.next_before : null;
    more.hidden = nextBefore === null;
    empty.hidden = tbody.rows.length > 0;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      location.assign('/signin?next=' + encodeURIComponent('/console/audit'));
      return;
    }
    setError(err instanceof ApiError ? err.message : 'The search failed.');
  }
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  current = query();
  nextBefore = null;
  search(false);
});

more.addEventListener('click', () => search(true));

signout.addEventListener('click', async () => {
  try {
    await api('DELETE', '/api/v1/session');
  } catch {
    // Signed out already.
  }
  location.assign('/signin');
});

api('GET', '/api/v1/session').then((d) => {
  userName.textContent = d?.user?.name || '';
}, () => {});
current = query();
search(false);
