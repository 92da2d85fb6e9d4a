// Overview: the members (labels, weights, owned applications, drain and lease state), the node's
// health, the ring as a circle with each member's arcs, and a key lookup (GET /owner).
import { useState } from './vendor/hooks.mjs';
import { api, query } from './api.js';
import { html, usePoll, Badge, ErrorBox, Title, ms } from './ui.js';

const COLORS = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];

const pct = (x) => `${(x * 100).toFixed(1)} %`;

/** Where a 64-bit hash (16 hex digits) sits on the circle, 0 to 1 clockwise from the top. */
const position = (hex) => parseInt(hex.slice(0, 13), 16) / 2 ** 52;

function point(fraction, r, c = 120) {
  const a = fraction * 2 * Math.PI - Math.PI / 2;
  return [c + r * Math.cos(a), c + r * Math.sin(a)];
}

/** The ring: arcs of `ring.slices` slices, each member in its colour, and the looked-up key. */
function Ring({ ring, colors, lookup }) {
  const R = 92;
  const arcs = ring.arcs || [];
  const slices = ring.slices || 1;
  const paths = arcs.map((a) => {
    const from = a.from / slices;
    const to = a.to / slices;
    const color = colors[a.node_id] || '#999';
    if (to - from >= 1) {
      return html`<circle cx="120" cy="120" r=${R} fill="none" stroke=${color} stroke-width="26"><title>${a.node_id}: the whole ring</title></circle>`;
    }
    const [x1, y1] = point(from, R);
    const [x2, y2] = point(to, R);
    const large = to - from > 0.5 ? 1 : 0;
    return html`<path d=${`M ${x1.toFixed(2)} ${y1.toFixed(2)} A ${R} ${R} 0 ${large} 1 ${x2.toFixed(2)} ${y2.toFixed(2)}`} fill="none" stroke=${color} stroke-width="26" data-node=${a.node_id}><title>${a.node_id}: ${pct(to - from)} of the circle from ${pct(from)}</title></path>`;
  });
  let marker = null;
  if (lookup && lookup.explanation && lookup.explanation.hash_hex) {
    const f = position(lookup.explanation.hash_hex);
    const [x1, y1] = point(f, R - 22);
    const [x2, y2] = point(f, R + 20);
    marker = html`<g class="marker"><line x1=${x1} y1=${y1} x2=${x2} y2=${y2} stroke="#111" stroke-width="3" /><circle cx=${x2} cy=${y2} r="5" fill="#111"><title>key ${lookup.key} at ${pct(f)}</title></circle></g>`;
  }
  // Inside the arcs, each member's whole share as one segment: the weights at a glance.
  let at = 0;
  const shares = Object.entries(ring.shares || {}).filter(([, s]) => s > 0).map(([node, s]) => {
    const from = at;
    at += s;
    const r = 62;
    if (s >= 0.9999) return html`<circle cx="120" cy="120" r=${r} fill="none" stroke=${colors[node] || '#999'} stroke-width="12" />`;
    const [x1, y1] = point(from, r);
    const [x2, y2] = point(at, r);
    return html`<path class="share" d=${`M ${x1.toFixed(2)} ${y1.toFixed(2)} A ${r} ${r} 0 ${s > 0.5 ? 1 : 0} 1 ${x2.toFixed(2)} ${y2.toFixed(2)}`} fill="none" stroke=${colors[node] || '#999'} stroke-width="12"><title>${node}: ${pct(s)} of keys</title></path>`;
  });
  return html`<svg class="ring" viewBox="0 0 240 240" role="img" aria-label=${`The ring at epoch ${ring.epoch}: ${ring.points} points; ${arcs.length} arcs`}>
    ${arcs.length === 0 && html`<circle cx="120" cy="120" r=${R} fill="none" stroke="#ccc" stroke-width="26" />`}
    ${paths}
    ${shares}
    ${marker}
    <text x="120" y="117" text-anchor="middle" class="ring-label">epoch ${ring.epoch}</text>
    <text x="120" y="132" text-anchor="middle" class="ring-label muted">${ring.points} points</text>
  </svg>`;
}

function KeyLookup({ onResult, colors }) {
  const [key, setKey] = useState('');
  const [selector, setSelector] = useState('');
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const r = await api('GET', `/owner${query({ key: key.trim(), selector: selector.trim() })}`);
      setResult(r);
      onResult(r);
    } catch (err) {
      setError(err);
      setResult(null);
      onResult(null);
    }
  };
  const x = result && result.explanation;
  return html`<section class="card" aria-labelledby="lookup-title">
    <h2 id="lookup-title">Who owns a key?</h2>
    <form class="inline" onSubmit=${submit}>
      <label for="lookup-key">Key</label>
      <input id="lookup-key" value=${key} placeholder="an application id, or a job's task id" required onInput=${(e) => setKey(e.target.value)} />
      <label for="lookup-selector">Selector</label>
      <input id="lookup-selector" value=${selector} placeholder="dc=eu,zone=a (optional)" onInput=${(e) => setSelector(e.target.value)} />
      <button type="submit" class="primary">Look up</button>
    </form>
    <${ErrorBox} error=${error} />
    ${x && html`<div class="lookup-result" data-owner=${x.owner ? x.owner.node_id : ''}>
      <p>Key <code>${result.key}</code> is owned by <strong class="owner">${x.owner ? x.owner.node_id : 'nobody'}</strong>
        ${x.owner && html` <span class="swatch" style=${{ background: colors[x.owner.node_id] }}></span>`}.</p>
      <dl class="facts">
        <dt>Hash</dt><dd><code>${x.hash_hex}</code> (${pct(position(x.hash_hex))} round the circle)</dd>
        <dt>Deciding point</dt><dd>${x.index == null ? '—' : `#${x.index} of ${x.point_count}`}${x.wrapped ? ' (wrapped past the last point)' : ''}</dd>
        <dt>First point's node</dt><dd>${x.start_node || '—'}</dd>
        <dt>Skipped</dt><dd>${x.skipped_points} points${x.skipped_nodes.length ? ` of ${x.skipped_nodes.join(', ')} (labels do not match)` : ''}</dd>
        <dt>Candidates</dt><dd>${result.candidates.join(', ') || 'none'}</dd>
      </dl>
      <p class="muted">${result.why}</p>
    </div>`}
  </section>`;
}

function Health({ ready }) {
  if (!ready) return null;
  return html`<section class="card" aria-labelledby="health-title">
    <h2 id="health-title">Health of this node <${Badge} state=${ready.status === 'ready' ? 'ready' : 'not ready'} /></h2>
    ${ready.reason && html`<p class="error">${ready.reason}</p>`}
    <ul class="checks">${Object.entries(ready.checks || {}).map(([name, c]) => html`<li><${Badge} state=${c.ok ? 'ready' : 'failed'} /> ${name}${c.status ? ` (${c.status})` : ''}${c.reason ? `: ${c.reason}` : ''}</li>`)}</ul>
    ${(ready.warnings || []).map((w) => html`<p class="warn">${typeof w === 'string' ? w : JSON.stringify(w)}</p>`)}
  </section>`;
}

export function Overview() {
  const cluster = usePoll(() => api('GET', '/cluster'), [], 2000);
  // /readyz answers 503 with its reasons when not ready: read it either way.
  const ready = usePoll(async () => {
    const r = await fetch('/readyz', { headers: { Accept: 'application/json' }, cache: 'no-store', credentials: 'omit' });
    return r.json();
  }, [], 2000);
  const [lookup, setLookup] = useState(null);
  const c = cluster.data;
  const colors = {};
  (c ? c.members : []).forEach((m, i) => (colors[m.node_id] = COLORS[i % COLORS.length]));
  return html`<section>
    <${Title} sub=${c && `${c.backend} membership, epoch ${c.epoch}; answered by ${c.self.node_id}`}>Overview</${Title}>
    <${ErrorBox} error=${cluster.error} />
    ${c && html`<div class="grid">
      <section class="card wide" aria-labelledby="members-title">
        <h2 id="members-title">Members</h2>
        <table class="members">
          <thead><tr><th scope="col">Node</th><th scope="col">Address</th><th scope="col">Labels</th><th scope="col">Weight</th><th scope="col">Ring share</th><th scope="col">Applications</th><th scope="col">State</th></tr></thead>
          <tbody>${c.members.map((m) => html`<tr data-node=${m.node_id}>
            <th scope="row"><span class="swatch" style=${{ background: colors[m.node_id] }}></span>${m.node_id}${m.node_id === c.self.node_id ? ' (this node)' : ''}</th>
            <td><code>${m.addr}</code></td>
            <td>${Object.entries(m.labels || {}).map(([k, v]) => html`<span class="label">${k}=${v}</span>`)}</td>
            <td class="num">${m.weight}</td>
            <td class="num">${pct((c.ring.shares || {})[m.node_id] || 0)}</td>
            <td class="num owned">${m.owned_applications}</td>
            <td>${m.weight === 0 ? html`<${Badge} state="draining" />` : html`<${Badge} state="joined" />`}
              ${m.node_id === c.self.node_id && c.self.valid_for_ms != null && html` <small class="muted">lease valid for ${ms(c.self.valid_for_ms)}</small>`}</td>
          </tr>`)}</tbody>
        </table>
        <p>This node: <${Badge} state=${c.self.status} /> ${c.self.reason || ''} <small class="muted">${c.self.session || ''}</small></p>
      </section>
      <section class="card" aria-labelledby="ring-title">
        <h2 id="ring-title">The ring</h2>
        <${Ring} ring=${c.ring} colors=${colors} lookup=${lookup} />
        <p class="muted small">Outer circle: who owns each half degree of the hash space, clockwise from the top. Inner circle: each node's share.</p>
        <ul class="legend">${c.members.map((m) => html`<li><span class="swatch" style=${{ background: colors[m.node_id] }}></span>${m.node_id}: weight ${m.weight}, ${pct((c.ring.shares || {})[m.node_id] || 0)} of keys</li>`)}</ul>
      </section>
      <${KeyLookup} onResult=${setLookup} colors=${colors} />
      <${Health} ready=${ready.data} />
    </div>`}
    ${!c && !cluster.error && html`<p class="loading">Loading…</p>`}
  </section>`;
}
