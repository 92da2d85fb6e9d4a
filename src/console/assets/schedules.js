// Schedules: the list with next fire times and owners; create, pause, resume, delete.
import { useState } from './vendor/hooks.mjs';
import { api, query, canWrite } from './api.js';
import { html, Link, usePoll, useSession, Badge, Time, ErrorBox, Title, Field, control, fieldErrors, Confirm, Notice, parseJson, ms } from './ui.js';

const FIELDS = ['name', 'cron', 'every_ms', 'app_id', 'routing', 'shard_total', 'payload', 'misfire'];
const ROUTINGS = ['', 'hash', 'round_robin', 'random', 'least_busy', 'first', 'last', 'broadcast', 'sharding', 'map', 'map_reduce'];

function CreateSchedule({ onDone }) {
  const empty = { name: '', cron: '', every_ms: '', app_id: '', routing: '', shard_total: '', payload: '{}', misfire: '' };
  const [form, setForm] = useState(empty);
  const [error, setError] = useState(null);
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const errors = fieldErrors(error, FIELDS);
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const body = { name: form.name.trim(), payload: parseJson(form.payload, 'payload', {}) };
      if (form.cron.trim()) body.cron = form.cron.trim();
      if (form.every_ms !== '') body.every_ms = Number(form.every_ms);
      if (form.app_id !== '') body.app_id = Number(form.app_id);
      if (form.routing) body.routing = form.routing;
      if (form.shard_total !== '') body.shard_total = Number(form.shard_total);
      if (form.misfire) body.misfire = form.misfire;
      await api('POST', '/schedules', body);
      setForm(empty);
      onDone(`schedule ${body.name} created`);
    } catch (err) {
      setError(err);
    }
  };
  return html`<form class="form card" onSubmit=${submit} novalidate aria-labelledby="new-schedule-title">
    <h2 id="new-schedule-title">New schedule</h2>
    ${error && html`<div class="error" role="alert">${error.message}</div>`}
    <${Field} id="s-name" label="Name" errors=${errors.name}><input ...${control('s-name', errors.name)} value=${form.name} onInput=${set('name')} /></${Field}>
    <${Field} id="s-cron" label="Cron (seconds first, UTC)" errors=${errors.cron} hint="e.g. 0 */5 * * * * — or a fixed rate below">
      <input ...${control('s-cron', errors.cron)} value=${form.cron} onInput=${set('cron')} /></${Field}>
    <${Field} id="s-every" label="Every (ms)" errors=${errors.every_ms}><input ...${control('s-every', errors.every_ms)} type="number" value=${form.every_ms} onInput=${set('every_ms')} /></${Field}>
    <${Field} id="s-app" label="Application id" errors=${errors.app_id} hint="Empty: a noop job"><input ...${control('s-app', errors.app_id)} type="number" value=${form.app_id} onInput=${set('app_id')} /></${Field}>
    <${Field} id="s-routing" label="Routing" errors=${errors.routing}>
      <select ...${control('s-routing', errors.routing)} value=${form.routing} onChange=${set('routing')}>${ROUTINGS.map((r) => html`<option value=${r}>${r || 'default (hash)'}</option>`)}</select></${Field}>
    <${Field} id="s-shards" label="Shards" errors=${errors.shard_total}><input ...${control('s-shards', errors.shard_total)} type="number" value=${form.shard_total} onInput=${set('shard_total')} /></${Field}>
    <${Field} id="s-misfire" label="Misfire" errors=${errors.misfire}>
      <select ...${control('s-misfire', errors.misfire)} value=${form.misfire} onChange=${set('misfire')}><option value="">default (fire_once)</option><option value="fire_once">fire_once</option><option value="skip">skip</option></select></${Field}>
    <${Field} id="s-payload" label="Payload (JSON)" errors=${errors.payload}><textarea ...${control('s-payload', errors.payload)} rows="3" value=${form.payload} onInput=${set('payload')}></textarea></${Field}>
    ${errors._ && html`<div class="error">${errors._.join('; ')}</div>`}
    <div class="actions"><button type="submit" class="primary">Create schedule</button></div>
  </form>`;
}

export function Schedules() {
  useSession();
  const list = usePoll(() => api('GET', `/schedules${query({ limit: 500 })}`), [], 3000);
  const [notice, setNotice] = useState(null);
  const call = (method, path, body, done) => async () => {
    try {
      await api(method, path, body);
      setNotice({ text: done });
      list.reload();
    } catch (e) {
      setNotice({ text: e.message, error: true });
    }
  };
  const items = (list.data && list.data.items) || [];
  return html`<section>
    <${Title}>Schedules</${Title}>
    <${ErrorBox} error=${list.error} />
    <${Notice} notice=${notice} />
    <table class="schedules">
      <thead><tr><th scope="col">Name</th><th scope="col">When</th><th scope="col">Next fire</th><th scope="col">State</th><th scope="col">Starts</th><th scope="col">Routing</th><th scope="col">Fired by</th>${canWrite() && html`<th scope="col">Actions</th>`}</tr></thead>
      <tbody>${items.length === 0 && html`<tr><td colspan="8" class="muted">No schedules.</td></tr>`}
      ${items.map((s) => html`<tr data-schedule=${s.name}>
        <th scope="row">${s.name}</th>
        <td>${s.cron ? html`<code>${s.cron}</code>` : `every ${ms(s.every_ms)}`}</td>
        <td><${Time} at=${s.next_fire_at} /></td>
        <td><${Badge} state=${s.enabled ? 'enabled' : 'paused'} /></td>
        <td>${s.workflow_id != null ? html`<${Link} href=${`/workflows/${s.workflow_id}`}>workflow ${s.workflow_id}</${Link}>` : s.app_id != null ? html`<${Link} href=${`/apps/${s.app_id}`}>${s.app_id}</${Link}>` : html`<span class="muted">noop job</span>`}</td>
        <td>${s.routing || 'hash'}${s.shard_total ? ` × ${s.shard_total}` : ''}</td>
        <td>${s.owner_node || '—'}</td>
        ${canWrite() && html`<td class="row-actions">
          ${s.enabled
            ? html`<button type="button" onClick=${call('PATCH', `/schedules/${s.id}`, { enabled: false }, `${s.name} paused`)}>Pause</button>`
            : html`<button type="button" onClick=${call('PATCH', `/schedules/${s.id}`, { enabled: true }, `${s.name} resumed`)}>Resume</button>`}
          <${Confirm} label="Delete" danger question=${`Delete schedule ${s.name}?`} onConfirm=${call('DELETE', `/schedules/${s.id}`, undefined, `${s.name} deleted`)} />
        </td>`}
      </tr>`)}</tbody>
    </table>
    ${canWrite() && html`<${CreateSchedule} onDone=${(text) => { setNotice({ text }); list.reload(); }} />`}
  </section>`;
}
