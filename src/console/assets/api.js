// The console's only way to the node: the public API under /api/v1, same origin, JSON, with the
// operator's bearer token when the node has tokens (docs/console.md#auth). No cookies: a request
// carries the token only because this script adds it, so another site cannot make a browser send
// it (no CSRF), and the token lives in sessionStorage, gone when the tab closes.

const KEY = 'rota.token';

/** An answer other than 2xx: `status`, the API's `code` and `message`, and `fields` (422). */
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || (typeof body === 'string' && body) || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || null;
    this.fields = e.fields || [];
  }
}

/** Who is calling and what the console may show: write controls only for `admin`. */
export const session = {
  token: sessionStorage.getItem(KEY),
  name: null,
  scope: null,
  // Set when the node asked for credentials (401): the console then asks for a token.
  needToken: false,
  problem: null,
};

const listeners = new Set();
/** Call `fn` whenever the session changes; returns the unsubscribe function. */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
function changed() {
  listeners.forEach((fn) => fn({ ...session }));
}

/** One call: resolves with the parsed JSON body, rejects with an ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    // The API takes writes only as JSON (docs/api.md#browsers).
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, `the node did not answer (${e.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = text;
  }
  if (response.status === 401) {
    session.needToken = true;
    session.problem = new ApiError(401, data).message;
    changed();
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** Learn the caller's name and scope (GET /api/v1/whoami). */
export async function whoami() {
  const me = await api('GET', '/whoami');
  session.name = me.name;
  session.scope = me.scope;
  session.needToken = false;
  session.problem = null;
  changed();
  return me;
}

/** Keep `token` for this tab and check it. */
export async function signIn(token) {
  session.token = token;
  sessionStorage.setItem(KEY, token);
  try {
    return await whoami();
  } catch (e) {
    forgetToken(e.message);
    throw e;
  }
}

/** Drop the token (sign out, or a refused one). */
export function forgetToken(problem = null) {
  sessionStorage.removeItem(KEY);
  session.token = null;
  session.name = null;
  session.scope = null;
  session.needToken = true;
  session.problem = problem;
  changed();
}

export const canWrite = () => session.scope === 'admin';

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
