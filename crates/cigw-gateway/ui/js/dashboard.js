// Dashboard: every target × its latest runs across the three providers, success rate and median
// duration over the last N runs, and the runs running or waiting for approval on top.

import { api, query, targets as loadTargets } from './api.js';
import { durationText, h, isTerminal, providerBadge, stateBadge } from './format.js';
import * as live from './live.js';

const SHOWN = 12;

/** Success rate and median duration of finished runs (canceled and skipped ones left out). */
export function stats(runs) {
  const judged = runs.filter((r) => ['succeeded', 'failed', 'error'].includes(r.state));
  const rate = judged.length ? Math.round((100 * judged.filter((r) => r.state === 'succeeded').length) / judged.length) : null;
  const secs = runs.filter((r) => isTerminal(r.state) && r.started_at && r.finished_at)
    .map((r) => (new Date(r.finished_at) - new Date(r.started_at)) / 1000).sort((a, b) => a - b);
  const mid = Math.floor(secs.length / 2);
  const median = secs.length ? Math.round(secs.length % 2 ? secs[mid] : (secs[mid - 1] + secs[mid]) / 2) : null;
  return { rate, median };
}

function activeList(title, runs) {
  return h('section', { class: 'active' }, h('h2', {}, title, ` (${runs.length})`),
    runs.length
      ? h('ul', {}, runs.map((r) => h('li', {}, stateBadge(r.state), ' ',
        h('a', { href: `#/runs/${r.id}` }, r.target), ' ', providerBadge(r.provider), ' ', h('small', {}, r.requested_by))))
      : h('p', { class: 'muted' }, 'None.'));
}

/** Render the dashboard into `root`; `params.n` is how many recent runs the figures use. */
export async function render(root, session, params) {
  const n = Math.min(Math.max(Number(params.get('n')) || 20, 5), 200);
  const list = await loadTargets();
  const picker = h('form', { class: 'inline' },
    h('label', { for: 'dash-n' }, 'Figures over the last '),
    h('select', { id: 'dash-n', name: 'n', onchange: (e) => { location.hash = `#/dashboard${query({ n: e.target.value })}`; } },
      [10, 20, 50, 100].map((v) => h('option', { value: v, selected: v === n }, String(v)))),
    h('span', {}, ' runs'));
  const top = h('div', { class: 'columns' });
  const grid = h('tbody', {});
  root.replaceChildren(h('h1', {}, 'Dashboard'), picker, top,
    h('div', { class: 'table-wrap' }, h('table', { class: 'dashboard' },
      h('caption', { class: 'visually-hidden' }, 'Targets and their latest runs'),
      h('thead', {}, h('tr', {}, ['Target', 'Provider', 'Latest', 'Recent runs (newest first)', 'Success', 'Median'].map((c) => h('th', { scope: 'col' }, c)))),
      grid)));

  const perTarget = new Map();
  const draw = () => {
    const all = [...perTarget.values()].flat();
    top.replaceChildren(
      activeList('Running', all.filter((r) => ['running', 'queued', 'pending', 'canceling'].includes(r.state))),
      activeList('Waiting for approval', all.filter((r) => r.state === 'blocked')));
    grid.replaceChildren(...list.map((t) => {
      const runs = perTarget.get(t.name) || [];
      const { rate, median } = stats(runs);
      return h('tr', { dataset: { target: t.name } },
        h('th', { scope: 'row' }, h('a', { href: `#/runs?target=${encodeURIComponent(t.name)}` }, t.name)),
        h('td', {}, providerBadge(t.provider)),
        h('td', {}, runs[0]
          ? h('a', { href: `#/runs/${runs[0].id}`, class: 'latest' }, stateBadge(runs[0].state), ' ',
            h('small', {}, `${runs[0].ref?.branch || runs[0].ref?.tag || ''} · ${durationText(Math.round((Date.now() - new Date(runs[0].created_at)) / 1000))} ago`))
          : h('span', { class: 'muted' }, 'no runs')),
        h('td', {}, h('ol', { class: 'spark' }, runs.slice(0, SHOWN).map((r) => h('li', {},
          h('a', { href: `#/runs/${r.id}`, class: `dot state-${r.state}`, title: `${r.state} · ${r.ref?.branch || r.ref?.tag || ''}`,
            'aria-label': `${r.state}, ${r.ref?.branch || r.ref?.tag || ''}` }))))),
        h('td', {}, rate === null ? '–' : `${rate}%`),
        h('td', {}, median === null ? '–' : durationText(median)));
    }));
  };
  const loads = list.map(async (t) => {
    const page = await api('GET', `/v1/runs${query({ target: t.name, limit: n })}`);
    live.remember(page.runs);
    perTarget.set(t.name, page.runs);
  });
  await Promise.all(loads);
  draw();

  let scheduled = null;
  const stop = live.subscribe((run) => {
    if (!root.isConnected) return stop();
    const runs = perTarget.get(run.target);
    if (!runs) return;
    const i = runs.findIndex((r) => r.id === run.id);
    if (i >= 0) runs[i] = run;
    else {
      runs.unshift(run);
      runs.length = Math.min(runs.length, n);
    }
    scheduled ??= setTimeout(() => { scheduled = null; draw(); }, 200);
  });
}
