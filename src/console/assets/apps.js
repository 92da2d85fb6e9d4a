// Applications: the list with filters, one application's detail (spec with secrets as the API
// shows them, `***`; owner and epoch; policy; runtime and Flink savepoints; events) with its
// actions, and the create and edit forms, which show the API's 422 per field.
import { useState } from './vendor/hooks.mjs';
import { api, query, canWrite } from './api.js';
import {
  html, Link, navigate, usePoll, useQuery, useSession, Badge, Json, Time, ErrorBox, Title, Field, control,
  fieldErrors, Confirm, Notice, parseJson,
} from './ui.js';

const STATES = ['', 'starting', 'running', 'stopping', 'stopped', 'failed', 'unknown'];
const DRIVERS = ['noop', 'process', 'shell', 'http', 'flink'];
const POLICIES = ['never', 'on_failure', 'always'];
const PAGE = 100;

export function AppList() {
  useSession();
  const [q, setQ] = useQuery();
  const [pages, setPages] = useState(1);
  const filters = { state: q.state, driver: q.driver, owner: q.owner };
  const list = usePoll(async () => {
    // Pages of the API's list (its `next` link), as many as were asked for.
    let items = [];
    let next = `/apps${query({ ...filters, limit: PAGE })}`;
    for (let i = 0; i < pages && next; i++) {
      const page = await api('GET', next.replace(/^\/api\/v1/, ''));
      items = items.concat(page.items);
      next = page.next;
    }
    return { items, more: !!next };
  }, [q.state, q.driver, q.owner, pages], 3000);
  // The API has no group filter: the group filters the pages loaded.
  const items = ((list.data && list.data.items) || []).filter((a) => !q.group || a.traffic_group === q.group);
  const select = (name, label, options) => html`<label for=${`f-${name}`}>${label}</label>
    <select id=${`f-${name}`} value=${q[name] || ''} onChange=${(e) => setQ({ [name]: e.target.value })}>
      ${options.map((o) => html`<option value=${o}>${o || 'any'}</option>`)}
    </select>`;
  return html`<section>
    <${Title}>Applications</${Title}>
    <div class="toolbar">
      <form class="filters" role="search" aria-label="Filter applications" onSubmit=${(e) => e.preventDefault()}>
        ${select('state', 'State', STATES)}
        ${select('driver', 'Driver', ['', ...DRIVERS])}
        <label for="f-owner">Owner</label>
        <input id="f-owner" value=${q.owner || ''} placeholder="node id" onChange=${(e) => setQ({ owner: e.target.value.trim() })} />
        <label for="f-group">Group</label>
        <input id="f-group" value=${q.group || ''} placeholder="traffic group" onChange=${(e) => setQ({ group: e.target.value.trim() })} />
      </form>
      ${canWrite() && html`<${Link} class="button primary" href="/apps/new" id="new-app">New application</${Link}>`}
    </div>
    <${ErrorBox} error=${list.error} />
    ${list.loading && !list.data && html`<p class="loading">Loading…</p>`}
    ${list.data && html`<table class="apps">
      <caption class="muted">${items.length} application${items.length === 1 ? '' : 's'}${list.data.more ? ' (more below)' : ''}</caption>
      <thead><tr><th scope="col">Id</th><th scope="col">Name</th><th scope="col">Driver</th><th scope="col">State</th><th scope="col">Desired</th><th scope="col">Owner</th><th scope="col">Group</th><th scope="col">Restarts</th></tr></thead>
      <tbody>${items.map((a) => html`<tr data-app=${a.name}>
        <td class="num">${a.id}</td>
        <td><${Link} href=${`/apps/${a.id}`}>${a.name}</${Link}></td>
        <td>${a.driver}</td>
        <td><${Badge} state=${a.state} /></td>
        <td>${a.desired_state}</td>
        <td>${a.owner_node || html`<span class="muted">none</span>`}</td>
        <td>${a.traffic_group || ''}</td>
        <td class="num">${a.restart_count}</td>
      </tr>`)}</tbody>
    </table>
    ${list.data.more && html`<button type="button" onClick=${() => setPages(pages + 1)}>Load ${PAGE} more</button>`}`}
  </section>`;
}

/** Flink's runtime: the job id and the savepoints ({location, at, job_id, trigger}). */
function Runtime({ app }) {
  const rt = app.runtime;
  if (rt == null) return html`<p class="muted">Nothing recorded by the driver.</p>`;
  if (app.driver !== 'flink') return html`<${Json} value=${rt} label="Runtime" />`;
  const savepoints = rt.savepoints || [];
  return html`<div>
    <p>Job id: <code>${rt.job_id || '—'}</code></p>
    <table class="savepoints">
      <caption>Savepoints</caption>
      <thead><tr><th scope="col">Taken</th><th scope="col">Location</th><th scope="col">Job</th><th scope="col">Trigger</th></tr></thead>
      <tbody>${savepoints.length === 0 && html`<tr><td colspan="4" class="muted">none yet</td></tr>`}
        ${savepoints.slice().reverse().map((s) => html`<tr><td><${Time} at=${s.at} /></td><td><code>${s.location}</code></td><td><code>${s.job_id}</code></td><td>${s.trigger}</td></tr>`)}</tbody>
    </table>
  </div>`;
}

export function EventList({ events }) {
  if (!events || events.length === 0) return html`<p class="muted">No events.</p>`;
  return html`<ol class="timeline">${events.map((e) => html`<li data-kind=${e.kind}>
    <${Time} at=${e.at} /> <span class="kind">${e.kind}</span>
    ${e.node_id && html` <span class="muted">on ${e.node_id}</span>`}${e.actor && html` <span class="muted">by ${e.actor}</span>`}
    ${e.app_id != null && html` <${Link} href=${`/apps/${e.app_id}`}>app ${e.app_id}</${Link}>`}
    ${e.task_id != null && html` <${Link} href=${`/tasks/${e.task_id}`}>task ${e.task_id}</${Link}>`}
    <div class="message">${e.message}</div>
  </li>`)}</ol>`;
}

export function AppDetail({ id }) {
  useSession();
  const app = usePoll(() => api('GET', `/apps/${id}`), [id], 1500);
  const events = usePoll(() => api('GET', `/events${query({ app_id: id, limit: 50 })}`), [id], 3000);
  const [notice, setNotice] = useState(null);
  const act = (action) => async () => {
    try {
      const r = await api('POST', `/apps/${id}/${action}`);
      setNotice({ text: `${action}: task ${r.task_id} submitted` });
      app.reload();
      events.reload();
    } catch (e) {
      setNotice({ text: `${action} refused: ${e.message}`, error: true });
    }
  };
  const remove = async () => {
    try {
      await api('DELETE', `/apps/${id}`);
      navigate('/apps');
    } catch (e) {
      setNotice({ text: `delete refused: ${e.message}`, error: true });
    }
  };
  const a = app.data;
  if (!a) {
    return html`<section><${Title}>Application ${id}</${Title}><${ErrorBox} error=${app.error} />${app.loading && html`<p class="loading">Loading…</p>`}</section>`;
  }
  return html`<section>
    <${Title} sub=${`${a.driver} application ${a.id}`}>${a.name} <${Badge} state=${a.state} /></${Title}>
    <${ErrorBox} error=${app.error} />
    ${canWrite() && html`<div class="actions" role="group" aria-label="Actions">
      <${Confirm} id="act-start" label="Start" question=${`Start ${a.name}?`} onConfirm=${act('start')} />
      <${Confirm} id="act-stop" label="Stop" question=${`Stop ${a.name}?`} onConfirm=${act('stop')} />
      <${Confirm} id="act-restart" label="Restart" question=${`Restart ${a.name}?`} onConfirm=${act('restart')} />
      ${a.driver === 'flink' && html`<${Confirm} id="act-savepoint" label="Savepoint" question=${`Take a savepoint of ${a.name}?`} onConfirm=${act('savepoint')} />`}
      <${Link} class="button" href=${`/apps/${a.id}/edit`} id="act-edit">Edit</${Link}>
      <${Confirm} id="act-delete" label="Delete" danger question=${`Delete ${a.name}${a.state === 'stopped' ? '' : ' (it must be stopped first)'}?`} onConfirm=${remove} />
    </div>`}
    <${Notice} notice=${notice} />
    <div class="grid">
      <section class="card" aria-labelledby="state-title">
        <h2 id="state-title">State</h2>
        <dl class="facts">
          <dt>Observed</dt><dd><${Badge} state=${a.state} /></dd>
          <dt>Desired</dt><dd>${a.desired_state}</dd>
          <dt>Owner</dt><dd class="owner">${a.owner_node || 'none'}${a.owner_epoch != null ? ` (epoch ${a.owner_epoch})` : ''}</dd>
          <dt>Restart policy</dt><dd>${a.restart_policy}, at most ${a.max_restarts} (${a.restart_count} so far)</dd>
          <dt>Monitor interval</dt><dd>${a.monitor_interval_ms != null ? `${a.monitor_interval_ms} ms` : 'node default'}</dd>
          <dt>Selector</dt><dd>${Object.entries(a.selector || {}).map(([k, v]) => html`<span class="label">${k}=${v}</span>`)}${Object.keys(a.selector || {}).length === 0 && 'any node'}</dd>
          <dt>Traffic group</dt><dd>${a.traffic_group || '—'}</dd>
          <dt>Last error</dt><dd class=${a.last_error ? 'error-text' : ''}>${a.last_error || '—'}</dd>
          <dt>Created</dt><dd><${Time} at=${a.created_at} /></dd>
          <dt>Updated</dt><dd><${Time} at=${a.updated_at} /></dd>
        </dl>
      </section>
      <section class="card" aria-labelledby="spec-title">
        <h2 id="spec-title">Spec</h2>
        <p class="muted">Secret fields are shown as <code>***</code>: nobody reads them back.</p>
        <${Json} value=${a.spec} label="Spec" />
      </section>
      <section class="card" aria-labelledby="runtime-title">
        <h2 id="runtime-title">Runtime</h2>
        <${Runtime} app=${a} />
      </section>
      <section class="card wide" aria-labelledby="events-title">
        <h2 id="events-title">Events</h2>
        <${ErrorBox} error=${events.error} />
        <${EventList} events=${events.data && events.data.items} />
      </section>
    </div>
  </section>`;
}

const FIELDS = ['name', 'driver', 'spec', 'selector', 'restart_policy', 'max_restarts', 'monitor_interval_ms', 'traffic_group'];

/** Create (no `id`) or edit an application. */
export function AppForm({ id }) {
  useSession();
  const editing = id != null;
  const current = usePoll(() => (editing ? api('GET', `/apps/${id}`) : Promise.resolve(null)), [id], 0);
  if (editing && !current.data) {
    return html`<section><${Title}>Edit application ${id}</${Title}><${ErrorBox} error=${current.error} /></section>`;
  }
  return html`<${AppFormBody} id=${id} app=${current.data} />`;
}

function AppFormBody({ id, app }) {
  const editing = id != null;
  const [form, setForm] = useState(() => ({
    name: app ? app.name : '',
    driver: app ? app.driver : 'noop',
    spec: app ? JSON.stringify(app.spec, null, 2) : '{}',
    selector: app ? JSON.stringify(app.selector || {}) : '{}',
    restart_policy: app ? app.restart_policy : '',
    max_restarts: app ? String(app.max_restarts) : '',
    monitor_interval_ms: app && app.monitor_interval_ms != null ? String(app.monitor_interval_ms) : '',
    traffic_group: app && app.traffic_group ? app.traffic_group : '',
  }));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  if (!canWrite()) return html`<section><${Title}>${editing ? 'Edit application' : 'New application'}</${Title}><p>This token has the read scope: it cannot change applications.</p></section>`;
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const errors = fieldErrors(error, FIELDS);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = {
        spec: parseJson(form.spec, 'spec', {}),
        selector: parseJson(form.selector, 'selector', {}),
      };
      if (!editing) {
        body.name = form.name;
        body.driver = form.driver;
      }
      if (form.restart_policy) body.restart_policy = form.restart_policy;
      if (form.max_restarts !== '') body.max_restarts = Number(form.max_restarts);
      if (form.monitor_interval_ms !== '') body.monitor_interval_ms = Number(form.monitor_interval_ms);
      if (form.traffic_group) body.traffic_group = form.traffic_group;
      else if (editing && app.traffic_group) body.traffic_group = null;
      const saved = await api(editing ? 'PATCH' : 'POST', editing ? `/apps/${id}` : '/apps', body);
      navigate(`/apps/${saved.id}`);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<section>
    <${Title}>${editing ? `Edit ${app.name}` : 'New application'}</${Title}>
    <form class="form" onSubmit=${submit} novalidate>
      ${error && html`<div class="error" role="alert">${error.message}</div>`}
      ${errors._ && html`<div class="error">${errors._.join('; ')}</div>`}
      <${Field} id="name" label="Name" errors=${errors.name} hint="Letters, digits, -, _ and . (unique)">
        <input ...${control('name', errors.name)} value=${form.name} disabled=${editing} onInput=${set('name')} />
      </${Field}>
      <${Field} id="driver" label="Driver" errors=${errors.driver}>
        <select ...${control('driver', errors.driver)} value=${form.driver} disabled=${editing} onChange=${set('driver')}>
          ${DRIVERS.map((d) => html`<option value=${d}>${d}</option>`)}
        </select>
      </${Field}>
      <${Field} id="spec" label="Spec (JSON)" errors=${errors.spec} hint=${editing ? 'A secret left as *** keeps its stored value' : 'What the driver runs (docs/drivers.md)'}>
        <textarea ...${control('spec', errors.spec)} rows="8" spellcheck="false" value=${form.spec} onInput=${set('spec')}></textarea>
      </${Field}>
      <${Field} id="selector" label="Selector (JSON)" errors=${errors.selector} hint='Labels the owner must have, e.g. {"dc": "eu"}'>
        <input ...${control('selector', errors.selector)} value=${form.selector} onInput=${set('selector')} />
      </${Field}>
      <${Field} id="restart_policy" label="Restart policy" errors=${errors.restart_policy}>
        <select ...${control('restart_policy', errors.restart_policy)} value=${form.restart_policy} onChange=${set('restart_policy')}>
          <option value="">${editing ? 'unchanged' : 'default'}</option>
          ${POLICIES.map((p) => html`<option value=${p}>${p}</option>`)}
        </select>
      </${Field}>
      <${Field} id="max_restarts" label="Max restarts" errors=${errors.max_restarts}>
        <input ...${control('max_restarts', errors.max_restarts)} type="number" value=${form.max_restarts} onInput=${set('max_restarts')} />
      </${Field}>
      <${Field} id="monitor_interval_ms" label="Monitor interval (ms)" errors=${errors.monitor_interval_ms}>
        <input ...${control('monitor_interval_ms', errors.monitor_interval_ms)} type="number" value=${form.monitor_interval_ms} onInput=${set('monitor_interval_ms')} />
      </${Field}>
      <${Field} id="traffic_group" label="Traffic group" errors=${errors.traffic_group}>
        <input ...${control('traffic_group', errors.traffic_group)} value=${form.traffic_group} onInput=${set('traffic_group')} />
      </${Field}>
      <div class="actions">
        <button type="submit" class="primary" id="save" disabled=${busy}>${editing ? 'Save' : 'Create'}</button>
        <${Link} class="button" href=${editing ? `/apps/${id}` : '/apps'}>Cancel</${Link}>
      </div>
    </form>
  </section>`;
}
