// Runs: a live table of recent runs with filters and the actions the token allows. Rows are
// keyed by run id, so a state change updates its row in place and a new run appears on top.

import { api, query, targets as loadTargets } from './api.js';
import { duration, h, isTerminal, providerBadge, refText, stateBadge, timeEl, toast } from './format.js';
import * as live from './live.js';

const STATES = ['pending', 'queued', 'running', 'blocked', 'canceling', 'succeeded', 'failed', 'canceled', 'skipped', 'error'];
const PROVIDERS = ['circleci', 'codefresh', 'codeship'];
const labelCache = new Map();

/** The buttons a run offers to this session. */
export function actions(run, session, caps) {
  const out = [];
  const act = (label, path, body, cls) => h('button', {
    type: 'button', class: cls || 'secondary', dataset: { action: label.toLowerCase().replace(/\W+/g, '-') },
    'aria-label': `${label} run of ${run.target}`,
    onclick: async (e) => {
      e.target.disabled = true;
      try {
        const result = await api('POST', `/v1/runs/${encodeURIComponent(run.id)}/${path}`, body);
        live.remember([result]);
        toast(`${label}: ${run.target} → ${result.state}`);
      } catch (error) {
        toast(`${label} refused: ${error.message}`);
      } finally {
        e.target.disabled = false;
      }
    },
  }, label);
  const terminal = isTerminal(run.state);
  if (session.can.cancel && !terminal && run.state !== 'canceling') out.push(act('Cancel', 'cancel', undefined, 'danger'));
  if (session.can.approve && run.state === 'blocked' && caps?.approve) {
    out.push(act('Approve', 'approve'), act('Deny', 'deny', undefined, 'danger'));
  }
  if (terminal && run.provider_ref && caps?.rerun && session.triggerable.includes(run.target)) {
    out.push(act('Rerun', 'rerun', {}));
    if (caps.rerun_failed_only && ['failed', 'error'].includes(run.state)) {
      out.push(act('Rerun failed', 'rerun', { failed_only: true }));
    }
  }
  return out;
}

function row(run, session, caps) {
  const provider = run.links?.provider;
  return h('tr', { id: `run-${run.id}`, dataset: { state: run.state, target: run.target } },
    h('td', {}, h('a', { href: `#/runs/${run.id}`, 'aria-label': `${run.target} ${run.state}, details` }, stateBadge(run.state))),
    h('td', {}, run.target),
    h('td', {}, providerBadge(run.provider)),
    h('td', {}, h('code', {}, refText(run.ref))),
    h('td', {}, run.requested_by),
    h('td', {}, timeEl(run.started_at || run.created_at)),
    h('td', { class: 'duration', dataset: { from: run.started_at || '', to: run.finished_at || '' } },
      duration(run.started_at, run.finished_at)),
    h('td', {}, provider ? h('a', { href: provider, target: '_blank', rel: 'noopener' }, 'open ↗') : ''),
    h('td', { class: 'actions' }, actions(run, session, caps?.[run.target])));
}

async function labelsOf(run) {
  if (!labelCache.has(run.trigger_id)) {
    labelCache.set(run.trigger_id, api('GET', `/v1/triggers/${encodeURIComponent(run.trigger_id)}`)
      .then((t) => t.labels || {}).catch(() => ({})));
  }
  return labelCache.get(run.trigger_id);
}

async function matches(run, f) {
  if (f.target && run.target !== f.target) return false;
  if (f.state && run.state !== f.state) return false;
  if (f.provider && run.provider !== f.provider) return false;
  if (f.requested_by && !run.requested_by.toLowerCase().includes(f.requested_by.toLowerCase())) return false;
  if (f.label) {
    const [k, v] = f.label.split('=');
    const labels = await labelsOf(run);
    if (!(k in labels) || (v !== undefined && labels[k] !== v)) return false;
  }
  return true;
}

function select(name, label, options, value) {
  return h('div', { class: 'field' }, h('label', { for: `f-${name}` }, label),
    h('select', { id: `f-${name}`, name },
      h('option', { value: '' }, 'all'),
      options.map((o) => h('option', { value: o, selected: o === value }, o))));
}

/** Render the runs view into `root`. */
export async function render(root, session, params) {
  const list = await loadTargets();
  const caps = Object.fromEntries(list.map((t) => [t.name, t.capabilities]));
  const f = Object.fromEntries(['target', 'state', 'provider', 'requested_by', 'label'].map((k) => [k, params.get(k) || '']));
  const filters = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter runs' },
    select('target', 'Target', list.map((t) => t.name), f.target),
    select('state', 'State', STATES, f.state),
    select('provider', 'Provider', PROVIDERS, f.provider),
    h('div', { class: 'field' }, h('label', { for: 'f-requested_by' }, 'Requested by'),
      h('input', { id: 'f-requested_by', name: 'requested_by', value: f.requested_by, autocomplete: 'off' })),
    h('div', { class: 'field' }, h('label', { for: 'f-label' }, 'Label'),
      h('input', { id: 'f-label', name: 'label', value: f.label, placeholder: 'key=value', autocomplete: 'off' })),
    h('button', { type: 'submit', class: 'secondary' }, 'Filter'));
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(filters));
    location.hash = `#/runs${query(data)}`;
  });
  filters.addEventListener('change', (e) => {
    if (e.target.tagName === 'SELECT') filters.requestSubmit();
  });

  const body = h('tbody', {});
  const table = h('table', { class: 'runs' },
    h('caption', { class: 'visually-hidden' }, 'Recent runs, newest first, updated live'),
    h('thead', {}, h('tr', {}, ['State', 'Target', 'Provider', 'Ref', 'Requested by', 'Started', 'Duration', 'Provider page', 'Actions']
      .map((c) => h('th', { scope: 'col' }, c)))),
    body);
  const empty = h('p', { class: 'muted', hidden: true }, 'No runs match.');
  table.setAttribute('aria-busy', 'true');
  root.replaceChildren(h('h1', {}, 'Runs'), filters, h('div', { class: 'table-wrap' }, table), empty);

  const page = await api('GET', `/v1/runs${query({ target: f.target, state: f.state, limit: 100 })}`);
  live.remember(page.runs);
  for (const run of page.runs) if (await matches(run, f)) body.append(row(run, session, caps));
  empty.hidden = body.children.length > 0;
  table.removeAttribute('aria-busy');

  const stop = live.subscribe(async (run) => {
    if (!root.isConnected) return stop();
    const existing = document.getElementById(`run-${run.id}`);
    const fits = await matches(run, f);
    if (existing && fits) existing.replaceWith(row(run, session, caps));
    else if (existing) existing.remove();
    else if (fits) {
      const newer = [...body.children].find((tr) => live.get(tr.id.slice(4))?.created_at < run.created_at);
      body.insertBefore(row(run, session, caps), newer || body.firstChild);
    }
    empty.hidden = body.children.length > 0;
  });
  const tick = setInterval(() => {
    if (!root.isConnected) return clearInterval(tick);
    for (const td of body.querySelectorAll('td.duration')) {
      if (td.dataset.from && !td.dataset.to) td.textContent = duration(td.dataset.from);
    }
  }, 1000);
}
