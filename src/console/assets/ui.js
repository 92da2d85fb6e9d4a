// Shared pieces of the console's pages: markup (htm over Preact), navigation, polling, badges,
// forms that show the API's errors per field, confirmations.
import { h } from './vendor/preact.mjs';
import { useState, useEffect, useRef, useCallback } from './vendor/hooks.mjs';
import htm from './vendor/htm.mjs';
import { session, subscribe } from './api.js';

export const html = htm.bind(h);

// ---- navigation: real addresses (history API), so every page survives a reload ----

/** Go to `url` (a path with its query) without reloading. */
export function navigate(url, { replace = false } = {}) {
  if (url === location.pathname + location.search) return;
  history[replace ? 'replaceState' : 'pushState'](null, '', url);
  dispatchEvent(new Event('rota:navigate'));
}

/** The current path and query, kept up to date. */
export function useLocation() {
  const read = () => ({ path: location.pathname, search: location.search });
  const [loc, setLoc] = useState(read);
  useEffect(() => {
    const update = () => setLoc(read());
    addEventListener('popstate', update);
    addEventListener('rota:navigate', update);
    return () => {
      removeEventListener('popstate', update);
      removeEventListener('rota:navigate', update);
    };
  }, []);
  return loc;
}

/** A link that navigates in place on a plain click (a new tab still works). */
export function Link({ href, children, ...rest }) {
  const onClick = (e) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(href);
  };
  return html`<a href=${href} onClick=${onClick} ...${rest}>${children}</a>`;
}

/** The page's query parameters as an object, and a setter that rewrites the address. */
export function useQuery() {
  const { search } = useLocation();
  const params = Object.fromEntries(new URLSearchParams(search));
  const set = (next) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...params, ...next })) if (v !== '' && v != null) q.set(k, v);
    const s = q.toString();
    navigate(location.pathname + (s ? `?${s}` : ''), { replace: true });
  };
  return [params, set];
}

/** The session (scope, token state), re-rendered when it changes. */
export function useSession() {
  const [s, setS] = useState({ ...session });
  useEffect(() => subscribe(setS), []);
  return s;
}

// ---- data ----

/**
 * Load with `load()` now and every `every` ms while the tab is visible (0: once). Returns
 * `{data, error, loading, reload}`; a failed refresh keeps the last data and shows the error.
 */
export function usePoll(load, deps, every = 0) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const latest = useRef(0);
  const run = useCallback(async () => {
    const call = ++latest.current;
    try {
      const data = await load();
      if (call === latest.current) setState({ data, error: null, loading: false });
    } catch (error) {
      if (call === latest.current) setState((s) => ({ data: s.data, error, loading: false }));
    }
  }, deps);
  useEffect(() => {
    setState({ data: null, error: null, loading: true });
    run();
    if (!every) return undefined;
    const timer = setInterval(() => {
      if (!document.hidden) run();
    }, every);
    return () => {
      clearInterval(timer);
      latest.current++;
    };
  }, [run, every]);
  // The first time any page shows data since the console loaded: what docs/console.md's first
  // render figure measures (an effect runs once the render is on screen).
  useEffect(() => {
    if (state.data && performance.getEntriesByName('rota:rendered').length === 0) performance.mark('rota:rendered');
  }, [state.data]);
  return { ...state, reload: run };
}

// ---- display ----

const STATE_CLASS = {
  running: 'ok', succeeded: 'ok', joined: 'ok', ready: 'ok', enabled: 'ok', admin: 'ok',
  starting: 'busy', stopping: 'busy', pending: 'busy', joining: 'busy', gather: 'busy', reduce: 'busy',
  stopped: 'idle', cancelled: 'idle', paused: 'idle', left: 'idle', read: 'idle',
  failed: 'bad', lost: 'bad', orphaned: 'bad', fenced: 'bad', unknown: 'warn', draining: 'warn', 'not ready': 'bad',
};

/** A state as a coloured badge (the word is always shown: colour is never the only sign). */
export function Badge({ state }) {
  const s = state == null ? '—' : String(state);
  return html`<span class=${`badge ${STATE_CLASS[s] || 'idle'}`} data-state=${s}>${s}</span>`;
}

export function Json({ value, label }) {
  return html`<pre class="json" aria-label=${label}>${JSON.stringify(value, null, 2)}</pre>`;
}

/** An ISO time as local text, with the exact value on hover. */
export function Time({ at }) {
  if (!at) return html`<span class="muted">—</span>`;
  const d = new Date(at);
  return html`<time datetime=${at} title=${at}>${d.toLocaleString()}</time>`;
}

/** Milliseconds as `1.2 s`, `350 ms`, `4 min`. */
export function ms(n) {
  if (n == null || Number.isNaN(n)) return '—';
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(1)} s`;
  if (n < 3600000) return `${(n / 60000).toFixed(1)} min`;
  return `${(n / 3600000).toFixed(1)} h`;
}

export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert">${error.status ? `${error.status}: ` : ''}${error.message}</div>`;
}

/** The page's heading, focused on arrival so a keyboard or screen reader user starts there. */
export function Title({ children, sub }) {
  const ref = useRef(null);
  useEffect(() => ref.current && ref.current.focus({ preventScroll: true }), []);
  return html`<header class="page-head"><h1 tabindex="-1" ref=${ref}>${children}</h1>${sub && html`<p class="muted">${sub}</p>`}</header>`;
}

// ---- forms ----

/** The API's 422 `fields` as a map from the form's field to its messages: `spec.command` goes to
 * `spec` when the form has no `spec.command` input. */
export function fieldErrors(error, names) {
  const out = {};
  for (const f of (error && error.fields) || []) {
    const name = names.find((n) => f.field === n) || names.find((n) => f.field.startsWith(`${n}.`)) || '_';
    (out[name] = out[name] || []).push(f.field === name ? f.message : `${f.field}: ${f.message}`);
  }
  return out;
}

/** The attributes a control needs to be tied to its label and its errors (see Field). */
export function control(id, errors) {
  const bad = errors && errors.length;
  return { id, name: id, 'aria-invalid': bad ? 'true' : undefined, 'aria-describedby': bad ? `${id}-error` : `${id}-hint` };
}

/** A labelled control (given `...control(id, errors)`) with its hint, or its errors from the API. */
export function Field({ id, label, errors, hint, children }) {
  const bad = errors && errors.length;
  return html`<div class=${`field${bad ? ' invalid' : ''}`}>
    <label for=${id}>${label}</label>
    ${children}
    ${bad
      ? html`<small id=${`${id}-error`} class="field-error" data-field=${id}>${errors.join('; ')}</small>`
      : html`<small id=${`${id}-hint`} class="muted">${hint || ''}</small>`}
  </div>`;
}

/**
 * An action that asks first: the button opens an inline confirmation naming what happens,
 * with the confirm button focused (Enter confirms, Escape cancels).
 */
export function Confirm({ label, question, onConfirm, danger = false, id }) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  const yes = useRef(null);
  useEffect(() => {
    if (open && yes.current) yes.current.focus();
  }, [open]);
  if (!open) {
    return html`<button type="button" id=${id} class=${danger ? 'danger' : ''} onClick=${() => setOpen(true)}>${label}</button>`;
  }
  const confirm = async () => {
    setBusy(true);
    try {
      await onConfirm();
    } finally {
      setBusy(false);
      setOpen(false);
    }
  };
  return html`<span class="confirm" role="group" aria-label=${question} onKeyDown=${(e) => e.key === 'Escape' && setOpen(false)}>
    <span>${question}</span>
    <button type="button" ref=${yes} class=${danger ? 'danger' : 'primary'} disabled=${busy} data-confirm=${label} onClick=${confirm}>Confirm ${label.toLowerCase()}</button>
    <button type="button" onClick=${() => setOpen(false)}>Cancel</button>
  </span>`;
}

/** A polite live region for the outcome of an action. */
export function Notice({ notice }) {
  return html`<p class=${`notice ${notice && notice.error ? 'bad' : ''}`} role="status" aria-live="polite">${notice ? notice.text : ''}</p>`;
}

/** Parse a JSON text field; an error names the field like the API does. */
export function parseJson(text, field, fallback) {
  if (!text || !text.trim()) return fallback;
  try {
    return JSON.parse(text);
  } catch (e) {
    const err = new Error(`${field}: not valid JSON (${e.message})`);
    err.fields = [{ field, message: `not valid JSON (${e.message})` }];
    throw err;
  }
}
