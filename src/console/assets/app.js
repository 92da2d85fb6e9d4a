// The console's entry: the frame (navigation, who is signed in), the token prompt, and the router
// that picks a page from the address (docs/console.md#pages).
import { render } from './vendor/preact.mjs';
import { useState, useEffect } from './vendor/hooks.mjs';
import { session, whoami, signIn, forgetToken } from './api.js';
import { html, Link, useLocation, useSession } from './ui.js';
import { Overview } from './overview.js';
import { AppList, AppDetail, AppForm } from './apps.js';
import { TaskList, TaskDetail } from './tasks.js';
import { Schedules } from './schedules.js';
import { Workflows, WorkflowRuns, WorkflowRun } from './workflows.js';
import { Traffic } from './traffic.js';
import { Events } from './events.js';

const ROUTES = [
  [/^\/$/, () => html`<${Overview} />`],
  [/^\/apps$/, () => html`<${AppList} />`],
  [/^\/apps\/new$/, () => html`<${AppForm} />`],
  [/^\/apps\/(\d+)$/, (id) => html`<${AppDetail} id=${id} key=${id} />`],
  [/^\/apps\/(\d+)\/edit$/, (id) => html`<${AppForm} id=${id} key=${id} />`],
  [/^\/tasks$/, () => html`<${TaskList} />`],
  [/^\/tasks\/(\d+)$/, (id) => html`<${TaskDetail} id=${id} key=${id} />`],
  [/^\/schedules$/, () => html`<${Schedules} />`],
  [/^\/workflows$/, () => html`<${Workflows} />`],
  [/^\/workflows\/(\d+)$/, (id) => html`<${WorkflowRuns} id=${id} key=${id} />`],
  [/^\/workflows\/runs\/(\d+)$/, (id) => html`<${WorkflowRun} id=${id} key=${id} />`],
  [/^\/traffic$/, () => html`<${Traffic} />`],
  [/^\/events$/, () => html`<${Events} />`],
];

const NAV = [
  ['/', 'Overview'],
  ['/apps', 'Applications'],
  ['/tasks', 'Tasks and jobs'],
  ['/schedules', 'Schedules'],
  ['/workflows', 'Workflows'],
  ['/traffic', 'Traffic'],
  ['/events', 'Events'],
];

function NotFound({ path }) {
  return html`<section><h1>No such page</h1><p>The console has no page at <code>${path}</code>.</p><p><${Link} href="/">Go to the overview</${Link}></p></section>`;
}

/** Asks for a token once; it is kept for this tab only (sessionStorage). */
function TokenPrompt({ problem }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(token.trim());
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin">
    <h1>Rota console</h1>
    <form onSubmit=${submit} aria-describedby="token-help">
      <p id="token-help">This node requires an API token (<code>[api] tokens</code>). It is kept in this tab only and sent as a bearer header.</p>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="off" required value=${token} onInput=${(e) => setToken(e.target.value)} />
      <button type="submit" class="primary" disabled=${busy || !token.trim()}>Sign in</button>
      ${(error || problem) && html`<p class="error" role="alert">${error || problem}</p>`}
    </form>
  </main>`;
}

function Frame({ children, path, who }) {
  const active = (href) => (href === '/' ? path === '/' : path === href || path.startsWith(`${href}/`));
  return html`<div class="frame">
    <a class="skip" href="#main">Skip to content</a>
    <header class="top">
      <span class="brand">Rota</span>
      <nav aria-label="Console pages">
        <ul>${NAV.map(([href, label]) => html`<li><${Link} href=${href} aria-current=${active(href) ? 'page' : undefined}>${label}</${Link}></li>`)}</ul>
      </nav>
      <span class="who" data-scope=${who.scope}>
        ${who.name || '…'} · <span title="Token scope">${who.scope ? (who.scope === 'admin' ? 'admin' : 'read only') : '…'}</span>
        ${who.token && html` <button type="button" class="link" onClick=${() => forgetToken()}>Sign out</button>`}
      </span>
    </header>
    <main id="main">${children}</main>
  </div>`;
}

function App() {
  const s = useSession();
  const { path } = useLocation();
  const [booted, setBooted] = useState(false);
  const [bootError, setBootError] = useState(null);
  useEffect(() => {
    whoami()
      .catch((e) => e.status !== 401 && setBootError(e))
      .finally(() => setBooted(true));
  }, []);
  // The page starts loading its data alongside /whoami rather than after it (a round trip less
  // before the first render); its write controls appear once the scope is known.
  if (s.needToken) return html`<${TokenPrompt} problem=${session.token ? s.problem : null} />`;
  if (booted && bootError && !s.scope) return html`<main><h1>Rota console</h1><p class="error" role="alert">The node's API did not answer: ${bootError.message}</p></main>`;
  let page = null;
  for (const [re, make] of ROUTES) {
    const m = path.match(re);
    if (m) {
      page = make(...m.slice(1));
      break;
    }
  }
  return html`<${Frame} path=${path} who=${s}>${page || html`<${NotFound} path=${path} />`}</${Frame}>`;
}

render(html`<${App} />`, document.getElementById('root'));
