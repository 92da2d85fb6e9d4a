// Workflows: the list (runs by status), one workflow's runs, and a run drawn as its DAG — a
// layered layout computed here (longest path from the roots), each node a box coloured by its
// state and linked to its job, each edge labelled with its condition; retry and cancel.
import { useState, useRef } from './vendor/hooks.mjs';
import { api, query, canWrite } from './api.js';
import { html, Link, usePoll, useSession, Badge, Time, ErrorBox, Title, Confirm, Notice, Json } from './ui.js';

const STATUSES = ['pending', 'running', 'succeeded', 'failed', 'cancelled'];
const FINISHED = ['succeeded', 'failed', 'cancelled'];

export function Workflows() {
  useSession();
  const list = usePoll(() => api('GET', `/workflows${query({ limit: 500 })}`), [], 3000);
  const items = (list.data && list.data.items) || [];
  return html`<section>
    <${Title} sub="DAGs of jobs; a run executes one (docs/workflows.md)">Workflows</${Title}>
    <${ErrorBox} error=${list.error} />
    <table class="workflows">
      <thead><tr><th scope="col">Name</th><th scope="col">Version</th><th scope="col">Nodes</th><th scope="col">Runs at once</th><th scope="col">Runs by status</th></tr></thead>
      <tbody>${items.length === 0 && html`<tr><td colspan="5" class="muted">No workflows.</td></tr>`}
      ${items.map((w) => html`<tr data-workflow=${w.name}>
        <th scope="row"><${Link} href=${`/workflows/${w.id}`}>${w.name}</${Link}></th>
        <td>${w.version}</td>
        <td>${w.nodes.length}</td>
        <td>${w.max_concurrent_runs || html`<span class="muted">no limit</span>`}</td>
        <td class="run-counts">${STATUSES.filter((s) => w.runs && w.runs[s]).map((s) => html`<span data-runs=${s}><${Badge} state=${s} /> ${w.runs[s]} </span>`)}
          ${!(w.runs && Object.keys(w.runs).length) && html`<span class="muted">none</span>`}</td>
      </tr>`)}</tbody>
    </table>
  </section>`;
}

export function WorkflowRuns({ id }) {
  useSession();
  const wf = usePoll(() => api('GET', `/workflows/${id}`), [id], 0);
  const runs = usePoll(() => api('GET', `/workflows/${id}/runs${query({ limit: 100 })}`), [id], 3000);
  const w = wf.data;
  return html`<section>
    <${Title} sub=${w ? `version ${w.version}, ${w.nodes.length} nodes` : ''}>Workflow ${w ? w.name : id}</${Title}>
    <${ErrorBox} error=${wf.error || runs.error} />
    <table class="runs">
      <caption class="muted">The newest 100 runs</caption>
      <thead><tr><th scope="col">Run</th><th scope="col">Status</th><th scope="col">Version</th><th scope="col">Started</th><th scope="col">Ended</th><th scope="col">Error</th></tr></thead>
      <tbody>${(runs.data || []).map((r) => html`<tr data-run=${r.id}>
        <th scope="row"><${Link} href=${`/workflows/runs/${r.id}`}>${r.id}</${Link}></th>
        <td><${Badge} state=${r.status} /></td><td>${r.version}</td>
        <td><${Time} at=${r.created_at} /></td><td><${Time} at=${r.finished_at} /></td>
        <td class="error-text">${r.error || ''}</td>
      </tr>`)}</tbody>
    </table>
  </section>`;
}

// ---- the layout: pure, from the run's nodes and edges ----

const BOX_W = 150;
const BOX_H = 44;
const GAP_X = 90;
const GAP_Y = 22;

/**
 * Layers by longest path from a root (a node's layer is one more than its deepest upstream
 * node's), so every edge points to a later layer; within a layer, nodes are ordered by the mean
 * position of their upstream nodes (one pass), which keeps a chain's boxes in a row.
 */
export function layout(nodes, edges) {
  const keys = nodes.map((n) => n.key);
  const incoming = new Map(keys.map((k) => [k, []]));
  const outgoing = new Map(keys.map((k) => [k, []]));
  for (const e of edges) {
    if (incoming.has(e.to) && outgoing.has(e.from)) {
      incoming.get(e.to).push(e.from);
      outgoing.get(e.from).push(e.to);
    }
  }
  const layer = new Map();
  const waiting = new Map(keys.map((k) => [k, incoming.get(k).length]));
  let ready = keys.filter((k) => waiting.get(k) === 0);
  ready.forEach((k) => layer.set(k, 0));
  while (ready.length) {
    const next = [];
    for (const k of ready) {
      for (const to of outgoing.get(k)) {
        layer.set(to, Math.max(layer.get(to) || 0, layer.get(k) + 1));
        waiting.set(to, waiting.get(to) - 1);
        if (waiting.get(to) === 0) next.push(to);
      }
    }
    ready = next;
  }
  // A definition is acyclic (the API refuses cycles); anything left over goes last.
  const deepest = Math.max(0, ...layer.values());
  keys.forEach((k) => layer.has(k) || layer.set(k, deepest + 1));
  const layers = [];
  keys.forEach((k) => (layers[layer.get(k)] = layers[layer.get(k)] || []).push(k));
  const row = new Map();
  layers.forEach((ks, i) => {
    if (i > 0) {
      const mean = (k) => {
        const ups = incoming.get(k).filter((u) => row.has(u));
        return ups.length ? ups.reduce((a, u) => a + row.get(u), 0) / ups.length : 0;
      };
      ks.sort((a, b) => mean(a) - mean(b));
    }
    ks.forEach((k, j) => row.set(k, j));
  });
  const tallest = Math.max(1, ...layers.map((ks) => ks.length));
  const height = tallest * (BOX_H + GAP_Y) + GAP_Y;
  const pos = new Map();
  layers.forEach((ks, i) => {
    const top = (height - ks.length * (BOX_H + GAP_Y) + GAP_Y) / 2;
    ks.forEach((k, j) => pos.set(k, { x: GAP_Y + i * (BOX_W + GAP_X), y: top + j * (BOX_H + GAP_Y), layer: i }));
  });
  return { pos, width: layers.length * (BOX_W + GAP_X) - GAP_X + 2 * GAP_Y, height, layers: layers.length };
}

function Dag({ run }) {
  const { pos, width, height } = layout(run.nodes, run.edges);
  const edge = (e) => {
    const a = pos.get(e.from);
    const b = pos.get(e.to);
    if (!a || !b) return null;
    const [x1, y1, x2, y2] = [a.x + BOX_W, a.y + BOX_H / 2, b.x, b.y + BOX_H / 2];
    const mid = (x1 + x2) / 2;
    const on = e.on || 'success';
    return html`<g class=${`wf-edge on-${on}`} data-edge=${`${e.from}-${e.to}`}>
      <path d=${`M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 2},${y2}`} marker-end="url(#wf-arrow)" />
      <text x=${mid} y=${(y1 + y2) / 2 - 4} text-anchor="middle">${on}</text>
    </g>`;
  };
  const box = (n) => {
    const p = pos.get(n.key);
    const what = n.expression != null ? `decision${n.decision != null ? `: ${n.decision}` : ''}` : n.app_id != null ? `app ${n.app_id}` : 'noop job';
    const inner = html`<rect width=${BOX_W} height=${BOX_H} rx="6" />
      <text class="wf-key" x="10" y="18">${n.key.length > 18 ? `${n.key.slice(0, 17)}…` : n.key}</text>
      <text class="wf-sub" x="10" y="35">${n.status} · ${what}</text>
      <title>${n.key}: ${n.status}${n.error ? ` — ${n.error}` : ''}${n.expression ? ` — ${n.expression}` : ''}</title>`;
    return html`<g class=${`wf-node state-${n.status}`} data-node=${n.key} data-state=${n.status} data-layer=${p.layer} transform=${`translate(${p.x},${p.y})`}>
      ${n.task_id != null ? html`<${Link} href=${`/tasks/${n.task_id}`} aria-label=${`node ${n.key}, ${n.status}: task ${n.task_id}`}>${inner}</${Link}>` : inner}
    </g>`;
  };
  return html`<div class="dag-scroll"><svg class="dag" width=${width} height=${height} viewBox=${`0 0 ${width} ${height}`} role="img" aria-label=${`The run's graph: ${run.nodes.length} nodes`}>
    <defs><marker id="wf-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" /></marker></defs>
    ${run.edges.map(edge)}
    ${run.nodes.map(box)}
  </svg></div>`;
}

export function WorkflowRun({ id }) {
  useSession();
  // Refreshed every 1.5 s until the run has ended; then it is not fetched again until an action.
  const last = useRef(null);
  const run = usePoll(async () => {
    if (last.current && FINISHED.includes(last.current.status)) return last.current;
    last.current = await api('GET', `/workflow-runs/${id}`);
    return last.current;
  }, [id], 1500);
  const [notice, setNotice] = useState(null);
  const act = (path, body, done) => async () => {
    try {
      await api('POST', path, body);
      setNotice({ text: done });
      last.current = null;
      run.reload();
    } catch (e) {
      setNotice({ text: e.message, error: true });
    }
  };
  const r = run.data;
  if (!r) return html`<section><${Title}>Workflow run ${id}</${Title}><${ErrorBox} error=${run.error} /></section>`;
  const open = !FINISHED.includes(r.status);
  return html`<section>
    <${Title} sub=${html`workflow <${Link} href=${`/workflows/${r.workflow_id}`}>${r.workflow_id}</${Link}>, version ${r.version}; coordinator ${r.task_id != null ? html`<${Link} href=${`/tasks/${r.task_id}`}>task ${r.task_id}</${Link}>` : '—'}`}>Run ${r.id} <${Badge} state=${r.status} /></${Title}>
    <${ErrorBox} error=${run.error} />
    <${Notice} notice=${notice} />
    ${r.error && html`<p class="error">${r.error}</p>`}
    ${canWrite() && open && html`<div class="actions"><${Confirm} id="wf-cancel" label="Cancel run" danger question=${`Cancel run ${r.id}? Nothing more starts and its running jobs are stopped.`} onConfirm=${act(`/workflow-runs/${r.id}/cancel`, undefined, `run ${r.id}: cancel asked`)} /></div>`}
    <${Dag} run=${r} />
    <table class="wf-nodes">
      <thead><tr><th scope="col">Node</th><th scope="col">State</th><th scope="col">Job</th><th scope="col">Ran on</th><th scope="col">Round</th><th scope="col">Error</th>${canWrite() && html`<th scope="col">Actions</th>`}</tr></thead>
      <tbody>${r.nodes.map((n) => html`<tr data-node-row=${n.key}>
        <th scope="row">${n.key}</th><td><${Badge} state=${n.status} /></td>
        <td>${n.task_id != null ? html`<${Link} href=${`/tasks/${n.task_id}`}>${n.task_id}</${Link}>` : '—'}</td>
        <td>${n.node_id || '—'}</td><td>${n.round}</td><td class="error-text">${n.error || ''}</td>
        ${canWrite() && html`<td class="row-actions">${['failed', 'cancelled'].includes(n.status) && html`<${Confirm} label="Retry" question=${`Retry node ${n.key}? It and the nodes it held back run again.`} onConfirm=${act(`/workflow-runs/${r.id}/retry`, { node: n.key }, `node ${n.key} retried`)} />`}</td>`}
      </tr>`)}</tbody>
    </table>
    <h2>Context</h2>
    <${Json} value=${r.context} label="The run's context" />
  </section>`;
}
