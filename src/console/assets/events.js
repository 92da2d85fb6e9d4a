// Events: the history, newest first, with filters, kept live by polling from a cursor: each poll
// reads the newest page and, when all of it is new, pages back (`before`) until it meets the last
// event already shown, so nothing is skipped however many arrived.
import { useState, useEffect, useRef } from './vendor/hooks.mjs';
import { api, query } from './api.js';
import { html, useQuery, useSession, ErrorBox, Title } from './ui.js';
import { EventList } from './apps.js';

const KEEP = 500;

export function Events() {
  useSession();
  const [q, setQ] = useQuery();
  const [events, setEvents] = useState([]);
  const [error, setError] = useState(null);
  const [live, setLive] = useState(true);
  const cursor = useRef(0);
  const filters = { kind: q.kind, app_id: q.app_id, task_id: q.task_id, node_id: q.node_id };
  useEffect(() => {
    let stopped = false;
    cursor.current = 0;
    setEvents([]);
    const poll = async () => {
      try {
        let fresh = [];
        let before;
        for (let i = 0; i < 10; i++) {
          const page = await api('GET', `/events${query({ ...filters, limit: 100, before })}`);
          const items = page.items.filter((e) => e.id > cursor.current);
          fresh = fresh.concat(items);
          // The first load, a page that reached the cursor, or the last page: done.
          if (cursor.current === 0 || items.length < page.items.length || !page.next) break;
          before = page.items[page.items.length - 1].id;
        }
        if (stopped) return;
        if (fresh.length) {
          cursor.current = Math.max(cursor.current, ...fresh.map((e) => e.id));
          setEvents((old) => fresh.concat(old).slice(0, KEEP));
        }
        setError(null);
      } catch (e) {
        if (!stopped) setError(e);
      }
    };
    poll();
    const timer = live ? setInterval(() => !document.hidden && poll(), 1500) : null;
    return () => {
      stopped = true;
      if (timer) clearInterval(timer);
    };
  }, [q.kind, q.app_id, q.task_id, q.node_id, live]);
  const input = (name, label, placeholder) => html`<label for=${`f-${name}`}>${label}</label>
    <input id=${`f-${name}`} value=${q[name] || ''} placeholder=${placeholder} onChange=${(e) => setQ({ [name]: e.target.value.trim() })} />`;
  return html`<section>
    <${Title} sub="Newest first">Events</${Title}>
    <form class="filters" role="search" aria-label="Filter events" onSubmit=${(e) => e.preventDefault()}>
      ${input('kind', 'Kind', 'prefix, e.g. app.')}
      ${input('app_id', 'Application id', '')}
      ${input('task_id', 'Task id', '')}
      ${input('node_id', 'Node', '')}
      <label class="check"><input type="checkbox" id="f-live" checked=${live} onChange=${(e) => setLive(e.target.checked)} /> Live</label>
    </form>
    <${ErrorBox} error=${error} />
    <${EventList} events=${events} />
  </section>`;
}
