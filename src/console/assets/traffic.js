// Traffic: each group's policy, the live nodes on each side and the share each side gets now;
// switching and splitting with a required reason; the audit of every change (traffic.* events).
import { useState } from './vendor/hooks.mjs';
import { api, query, canWrite } from './api.js';
import { html, usePoll, useSession, Badge, Time, ErrorBox, Title, Field, control, fieldErrors, Notice } from './ui.js';
import { EventList } from './apps.js';

const FIELDS = ['preferred', 'backup', 'percent', 'label', 'reason'];

/** Switch or split a group: every change names its reason (the API requires one). */
function PolicyForm({ group, policy, onDone }) {
  const [form, setForm] = useState({
    group: group || '',
    preferred: policy ? policy.preferred : '',
    backup: policy && policy.backup ? policy.backup : '',
    percent: policy ? String(policy.percent) : '100',
    label: policy ? policy.label : '',
    reason: '',
  });
  const [error, setError] = useState(null);
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.value });
  const errors = fieldErrors(error, FIELDS);
  const idp = `t-${group || 'new'}`;
  const swap = () => setForm({ ...form, preferred: form.backup, backup: form.preferred });
  const submit = async (e) => {
    e.preventDefault();
    setError(null);
    try {
      const body = { preferred: form.preferred.trim(), reason: form.reason.trim(), percent: Number(form.percent) };
      if (form.backup.trim()) body.backup = form.backup.trim();
      if (form.label.trim()) body.label = form.label.trim();
      const name = form.group.trim();
      if (!name) throw Object.assign(new Error('name the group'), { fields: [{ field: 'group', message: 'required' }] });
      await api('PUT', `/traffic/${encodeURIComponent(name)}`, body);
      setForm({ ...form, reason: '' });
      onDone(`${name}: now ${body.preferred}${body.backup ? ` (${body.percent} %, rest on ${body.backup})` : ''}`);
    } catch (err) {
      setError(err);
    }
  };
  return html`<form class="form policy" onSubmit=${submit} novalidate aria-label=${group ? `Change group ${group}` : 'New traffic policy'}>
    ${error && html`<div class="error" role="alert">${error.message}</div>`}
    ${!group && html`<${Field} id=${`${idp}-group`} label="Group"><input ...${control(`${idp}-group`)} value=${form.group} onInput=${set('group')} /></${Field}>`}
    <${Field} id=${`${idp}-preferred`} label="Preferred side" errors=${errors.preferred}><input ...${control(`${idp}-preferred`, errors.preferred)} value=${form.preferred} onInput=${set('preferred')} /></${Field}>
    <${Field} id=${`${idp}-backup`} label="Backup side" errors=${errors.backup}><input ...${control(`${idp}-backup`, errors.backup)} value=${form.backup} onInput=${set('backup')} /></${Field}>
    <${Field} id=${`${idp}-percent`} label="Percent on the preferred side" errors=${errors.percent}>
      <input ...${control(`${idp}-percent`, errors.percent)} type="number" min="0" max="100" value=${form.percent} onInput=${set('percent')} /></${Field}>
    ${!group && html`<${Field} id=${`${idp}-label`} label="Label" errors=${errors.label} hint="default dc"><input ...${control(`${idp}-label`, errors.label)} value=${form.label} onInput=${set('label')} /></${Field}>`}
    <${Field} id=${`${idp}-reason`} label="Reason (required, recorded)" errors=${errors.reason}>
      <input ...${control(`${idp}-reason`, errors.reason)} required value=${form.reason} onInput=${set('reason')} /></${Field}>
    <div class="actions">
      ${group && form.backup && html`<button type="button" onClick=${swap}>Swap sides</button>`}
      <button type="submit" class="primary" disabled=${!form.reason.trim()}>${group ? 'Apply' : 'Create policy'}</button>
    </div>
  </form>`;
}

export function Traffic() {
  useSession();
  const list = usePoll(() => api('GET', '/traffic'), [], 2000);
  const audit = usePoll(() => api('GET', `/events${query({ kind: 'traffic.', limit: 50 })}`), [], 2000);
  const [notice, setNotice] = useState(null);
  const done = (text) => {
    setNotice({ text });
    list.reload();
    audit.reload();
  };
  const items = (list.data && list.data.items) || [];
  return html`<section>
    <${Title}>Traffic</${Title}>
    <${ErrorBox} error=${list.error} />
    <${Notice} notice=${notice} />
    ${list.data && items.length === 0 && html`<p class="muted">No traffic policies: applications and jobs run wherever their selector allows.</p>`}
    <div class="grid">
      ${items.map((p) => html`<section class="card" data-group=${p.group} aria-labelledby=${`g-${p.group}`}>
        <h2 id=${`g-${p.group}`}>${p.group} ${p.failed_over ? html`<${Badge} state="failed" /> <small>failed over</small>` : ''}</h2>
        <dl class="facts">
          <dt>Label</dt><dd><code>${p.label}</code></dd>
          <dt>Preferred</dt><dd class="preferred">${p.preferred}</dd>
          <dt>Backup</dt><dd>${p.backup || '—'}</dd>
          <dt>Split</dt><dd>${p.percent} % preferred${p.sticky ? ', sticky' : ''}</dd>
          <dt>Automatic</dt><dd>failover ${p.auto_failover ? 'on' : 'off'}, failback ${p.auto_failback ? 'on' : 'off'}</dd>
          <dt>Last change</dt><dd>${p.updated_by || '—'}: ${p.reason || ''} <${Time} at=${p.updated_at} /></dd>
        </dl>
        <table class="sides">
          <thead><tr><th scope="col">Side</th><th scope="col">Live nodes</th><th scope="col">Share now</th></tr></thead>
          <tbody>${Object.entries(p.live_nodes || {}).map(([side, n]) => html`<tr data-side=${side}><th scope="row">${side}</th><td class="num">${n}</td>
            <td><span class="bar" aria-hidden="true"><span style=${{ width: `${(p.active || {})[side] || 0}%` }}></span></span> ${(p.active || {})[side] || 0} %</td></tr>`)}</tbody>
        </table>
        ${canWrite() && html`<${PolicyForm} group=${p.group} policy=${p} onDone=${done} />`}
      </section>`)}
      ${canWrite() && html`<section class="card"><h2>New policy</h2><${PolicyForm} onDone=${done} /></section>`}
    </div>
    <section class="card wide audit" aria-labelledby="audit-title">
      <h2 id="audit-title">Audit</h2>
      <${ErrorBox} error=${audit.error} />
      <${EventList} events=${audit.data && audit.data.items} />
    </section>
  </section>`;
}
