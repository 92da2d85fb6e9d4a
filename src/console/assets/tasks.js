// Tasks and jobs: the list with filters, one task's detail, and a fan-out job's children (node,
// status, attempts, duration) as a table and per node.
import { useState } from './vendor/hooks.mjs';
import { api, query, canWrite } from './api.js';
import { html, Link, usePoll, useQuery, useSession, Badge, Json, Time, ErrorBox, Title, Confirm, Notice, ms } from './ui.js';
import { EventList } from './apps.js';

const STATUSES = ['', 'pending', 'running', 'succeeded', 'failed', 'cancelled', 'lost'];

const duration = (t) => (t.claimed_at && t.finished_at ? new Date(t.finished_at) - new Date(t.claimed_at) : null);
const nodeOf = (t) => t.owner_node || t.target_node || null;

function TaskTable({ items, child = false }) {
  return html`<table class=${child ? 'children' : 'tasks'}>
    <thead><tr>
      <th scope="col">Id</th>${child && html`<th scope="col">Shard</th>`}<th scope="col">Action</th><th scope="col">Application</th>
      <th scope="col">Status</th><th scope="col">Node</th><th scope="col">Attempts</th><th scope="col">Duration</th><th scope="col">Created</th>
    </tr></thead>
    <tbody>${items.map((t) => html`<tr data-task=${t.id} data-node=${nodeOf(t) || ''}>
      <td class="num"><${Link} href=${`/tasks/${t.id}`}>${t.id}</${Link}></td>
      ${child && html`<td class="num">${t.shard_index != null ? `${t.shard_index}/${t.shard_total}` : '—'}</td>`}
      <td>${t.action}${t.routing ? html` <small class="muted">${t.routing}</small>` : ''}</td>
      <td>${t.app_id != null ? html`<${Link} href=${`/apps/${t.app_id}`}>${t.app_id}</${Link}>` : html`<span class="muted">job</span>`}</td>
      <td><${Badge} state=${t.status} />${t.stage ? html` <small>${t.stage}</small>` : ''}</td>
      <td class="node">${nodeOf(t) || html`<span class="muted">—</span>`}</td>
      <td class="num">${t.attempts}/${t.max_attempts}</td>
      <td class="num">${ms(duration(t))}</td>
      <td><${Time} at=${t.created_at} /></td>
    </tr>`)}</tbody>
  </table>`;
}

export function TaskList() {
  useSession();
  const [q, setQ] = useQuery();
  const list = usePoll(
    () => api('GET', `/tasks${query({ status: q.status, app_id: q.app_id, owner: q.owner, parent_id: q.parent_id, limit: 100 })}`),
    [q.status, q.app_id, q.owner, q.parent_id],
    3000,
  );
  const input = (name, label, placeholder) => html`<label for=${`f-${name}`}>${label}</label>
    <input id=${`f-${name}`} value=${q[name] || ''} placeholder=${placeholder} onChange=${(e) => setQ({ [name]: e.target.value.trim() })} />`;
  return html`<section>
    <${Title}>Tasks and jobs</${Title}>
    <form class="filters" role="search" aria-label="Filter tasks" onSubmit=${(e) => e.preventDefault()}>
      <label for="f-status">Status</label>
      <select id="f-status" value=${q.status || ''} onChange=${(e) => setQ({ status: e.target.value })}>
        ${STATUSES.map((s) => html`<option value=${s}>${s || 'any'}</option>`)}
      </select>
      ${input('app_id', 'Application id', 'e.g. 42')}
      ${input('owner', 'Node', 'node id')}
      ${input('parent_id', 'Parent job', 'task id')}
    </form>
    <${ErrorBox} error=${list.error} />
    ${list.data && html`<${TaskTable} items=${list.data.items} />${list.data.next && html`<p class="muted">Newest 100 shown; narrow the filters to see others.</p>`}`}
  </section>`;
}

/** A fan-out job's children: counts, per node, and each child. */
function Children({ id, counts }) {
  const kids = usePoll(() => api('GET', `/tasks${query({ parent_id: id, limit: 500 })}`), [id], 2000);
  const items = (kids.data && kids.data.items) || [];
  const perNode = {};
  for (const t of items) {
    const n = nodeOf(t) || 'unplaced';
    const row = (perNode[n] = perNode[n] || { total: 0 });
    row.total++;
    row[t.status] = (row[t.status] || 0) + 1;
  }
  return html`<section class="card wide" aria-labelledby="children-title">
    <h2 id="children-title">Children</h2>
    ${counts && html`<p class="counts">${Object.entries(counts).map(([k, v]) => html`<span class="count"><strong>${v}</strong> ${k}</span>`)}</p>`}
    <${ErrorBox} error=${kids.error} />
    <table class="per-node">
      <caption>Per node</caption>
      <thead><tr><th scope="col">Node</th><th scope="col">Children</th><th scope="col">Statuses</th></tr></thead>
      <tbody>${Object.entries(perNode).sort().map(([n, r]) => html`<tr data-node=${n}><th scope="row">${n}</th><td class="num">${r.total}</td>
        <td>${Object.entries(r).filter(([k]) => k !== 'total').map(([k, v]) => html`<${Badge} state=${k} /> ${v} `)}</td></tr>`)}</tbody>
    </table>
    <${TaskTable} items=${items} child />
  </section>`;
}

export function TaskDetail({ id }) {
  useSession();
  const task = usePoll(() => api('GET', `/tasks/${id}`), [id], 1500);
  const events = usePoll(() => api('GET', `/events${query({ task_id: id, limit: 50 })}`), [id], 3000);
  const [notice, setNotice] = useState(null);
  const t = task.data;
  if (!t) return html`<section><${Title}>Task ${id}</${Title}><${ErrorBox} error=${task.error} /></section>`;
  const cancel = async () => {
    try {
      await api('POST', `/tasks/${id}/cancel`);
      setNotice({ text: 'cancelled' });
      task.reload();
    } catch (e) {
      setNotice({ text: `cancel refused: ${e.message}`, error: true });
    }
  };
  const fanOut = t.children || t.stage || (t.routing && ['broadcast', 'sharding', 'map', 'map_reduce'].includes(t.routing));
  return html`<section>
    <${Title} sub=${t.app_id != null ? `a command of application ${t.app_id}` : 'a job'}>Task ${t.id}: ${t.action} <${Badge} state=${t.status} /></${Title}>
    <${ErrorBox} error=${task.error} />
    ${canWrite() && t.status === 'pending' && html`<div class="actions"><${Confirm} id="act-cancel" label="Cancel" danger question=${`Cancel task ${t.id}?`} onConfirm=${cancel} /></div>`}
    <${Notice} notice=${notice} />
    <div class="grid">
      <section class="card" aria-labelledby="task-title">
        <h2 id="task-title">Details</h2>
        <dl class="facts">
          <dt>Status</dt><dd><${Badge} state=${t.status} />${t.stage ? ` (${t.stage})` : ''}</dd>
          <dt>Application</dt><dd>${t.app_id != null ? html`<${Link} href=${`/apps/${t.app_id}`}>${t.app_id}</${Link}>` : '—'}</dd>
          <dt>Parent</dt><dd>${t.parent_id != null ? html`<${Link} href=${`/tasks/${t.parent_id}`}>${t.parent_id}</${Link}>` : '—'}</dd>
          <dt>Routing</dt><dd>${t.routing || 'hash'}${t.shard_total ? `, ${t.shard_total} shards` : ''}${t.shard_index != null ? ` (shard ${t.shard_index})` : ''}</dd>
          <dt>Node</dt><dd>${nodeOf(t) || '—'}${t.owner_epoch != null ? ` (epoch ${t.owner_epoch})` : ''}</dd>
          <dt>Attempts</dt><dd>${t.attempts} of ${t.max_attempts}</dd>
          <dt>Priority</dt><dd>${t.priority}</dd>
          <dt>Run after</dt><dd><${Time} at=${t.run_after} /></dd>
          <dt>Claimed</dt><dd><${Time} at=${t.claimed_at} /></dd>
          <dt>Started</dt><dd><${Time} at=${t.started_at} /></dd>
          <dt>Finished</dt><dd><${Time} at=${t.finished_at} /> ${duration(t) != null && `(${ms(duration(t))})`}</dd>
          <dt>Idempotency key</dt><dd>${t.idempotency_key || '—'}</dd>
          <dt>Error</dt><dd class=${t.error ? 'error-text' : ''}>${t.error || '—'}</dd>
        </dl>
      </section>
      <section class="card" aria-labelledby="payload-title">
        <h2 id="payload-title">Payload</h2>
        <${Json} value=${t.payload} label="Payload" />
        <h2>Result</h2>
        <${Json} value=${t.result} label="Result" />
      </section>
      ${fanOut && html`<${Children} id=${id} counts=${t.children} />`}
      <section class="card wide" aria-labelledby="tevents-title">
        <h2 id="tevents-title">Events</h2>
        <${EventList} events=${events.data && events.data.items} />
      </section>
    </div>
  </section>`;
}
