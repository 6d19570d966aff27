// Run detail: state and actions, provider status, parameters (secrets come masked from the API),
// labels, the event timeline (live) and the trigger's other runs.

import { api, targets as loadTargets } from './api.js';
import { duration, h, providerBadge, refText, stateBadge, timeEl } from './format.js';
import { actions } from './runs.js';
import * as live from './live.js';

function dl(pairs) {
  return h('dl', {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/** One line saying what an event changed, from its data. */
function summary(e) {
  const d = e.data || {};
  const detail = d.detail || {};
  const parts = [];
  if (d.from && d.to) parts.push(`${d.from} → ${d.to}`);
  if (detail.raw_status) parts.push(`provider: ${detail.raw_status}`);
  if (detail.outcome) parts.push(detail.outcome);
  if (detail.message || d.message) parts.push(detail.message || d.message);
  if (d.by) parts.push(`by ${d.by}`);
  if (e.kind === 'created' && d.requested_by) parts.push(`requested by ${d.requested_by}`);
  return parts.join(' · ');
}

function eventItem(e) {
  const hasData = e.data && Object.keys(e.data).length;
  return h('li', { dataset: { kind: e.kind } },
    timeEl(e.created_at), ' ', h('strong', {}, e.kind), ' ', stateBadge(e.state),
    h('span', { class: 'event-data' }, summary(e)),
    hasData ? h('details', {}, h('summary', {}, 'data'), h('code', {}, JSON.stringify(e.data))) : null);
}

/** Render the detail of run `id` into `root`. */
export async function render(root, session, id) {
  const [detail, list] = await Promise.all([api('GET', `/v1/runs/${encodeURIComponent(id)}`), loadTargets()]);
  const caps = Object.fromEntries(list.map((t) => [t.name, t.capabilities]));
  const trigger = await api('GET', `/v1/triggers/${encodeURIComponent(detail.trigger_id)}`).catch(() => null);
  const { events, ...initial } = detail;
  let run = initial;

  const head = h('header', { class: 'run-head' });
  const status = h('section', { 'aria-labelledby': 'status-h' });
  const timeline = h('ol', { class: 'timeline' }, events.map(eventItem));
  const drawHead = () => {
    head.replaceChildren(
      h('h1', {}, run.target, ' ', stateBadge(run.state)),
      h('p', {}, providerBadge(run.provider), ' ', h('code', {}, refText(run.ref)),
        ' requested by ', h('strong', {}, run.requested_by), ' · ', timeEl(run.created_at)),
      h('div', { class: 'actions' }, actions(run, session, caps[run.target])));
    const p = run.provider_ref;
    status.replaceChildren(h('h2', { id: 'status-h' }, 'Provider status'), dl([
      ['State', stateBadge(run.state)],
      ['Provider status', run.raw_status],
      ['Message', run.message],
      ['Provider build', p ? (p.url ? h('a', { href: p.url, target: '_blank', rel: 'noopener' }, `${p.number ? `#${p.number}` : p.id} ↗`) : p.id) : 'not known yet'],
      ['Attempt', p?.attempt],
      ['Unconfirmed', run.unconfirmed ? 'accepted by the provider, build not matched yet' : null],
      ['Dispatch attempts', String(run.dispatch_attempts)],
      ['Started', timeEl(run.started_at)],
      ['Finished', timeEl(run.finished_at)],
      ['Duration', duration(run.started_at, run.finished_at)],
      ['Rerun of', run.rerun_of ? h('a', { href: `#/runs/${run.rerun_of}` }, run.rerun_of) : null],
      ['Chain parent', run.chain_parent ? h('a', { href: `#/runs/${run.chain_parent}` }, run.chain_parent) : null],
    ]));
  };
  drawHead();

  const params = Object.entries(run.parameters || {});
  const labels = Object.entries(trigger?.labels || {});
  const others = (trigger?.runs || []).filter((r) => r.id !== run.id);
  root.replaceChildren(
    h('p', {}, h('a', { href: '#/runs' }, '← Runs')),
    head,
    h('div', { class: 'columns' },
      status,
      h('section', { 'aria-labelledby': 'params-h' }, h('h2', { id: 'params-h' }, 'Parameters'),
        params.length ? dl(params.map(([k, v]) => [k, h('code', {}, String(v))])) : h('p', { class: 'muted' }, 'None.'),
        h('h2', {}, 'Labels'),
        labels.length ? h('ul', { class: 'labels' }, labels.map(([k, v]) => h('li', {}, h('code', {}, `${k}=${v}`))))
          : h('p', { class: 'muted' }, 'None.'))),
    h('section', { 'aria-labelledby': 'timeline-h' }, h('h2', { id: 'timeline-h' }, 'Events'), timeline),
    h('section', { 'aria-labelledby': 'others-h' }, h('h2', { id: 'others-h' }, 'Other runs of this trigger'),
      others.length
        ? h('ul', {}, others.map((r) => h('li', {}, h('a', { href: `#/runs/${r.id}` }, r.target), ' ', stateBadge(r.state),
          r.rerun_of ? ' (rerun)' : '')))
        : h('p', { class: 'muted' }, 'None.')));

  let lastEvent = events.length ? events[events.length - 1].id : 0;
  const stop = live.subscribe((updated, event) => {
    if (!root.isConnected) return stop();
    if (updated.id !== id) return;
    run = { ...run, ...updated };
    drawHead();
    if (event && event.id > lastEvent) {
      lastEvent = event.id;
      timeline.append(eventItem(event));
    }
  });
}
