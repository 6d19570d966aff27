// Small formatting helpers shared by the views: states with icon and colour, refs, times.

const ICONS = {
  pending: '◌', queued: '…', running: '▶', blocked: '‖', canceling: '⊘',
  succeeded: '✔', failed: '✖', canceled: '⊘', skipped: '↷', error: '⚠',
};
const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'skipped', 'error']);
const PROVIDERS = { circleci: 'CircleCI', codefresh: 'Codefresh', codeship: 'Codeship' };

/** Whether a state is final. */
export const isTerminal = (state) => TERMINAL.has(state);

/** Create an element: `h('a', {href}, 'text', child…)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c);
  return el;
}

/** A state badge: icon, word and colour (the word keeps it readable without colour). */
export function stateBadge(state) {
  return h('span', { class: `state state-${state}`, dataset: { state } },
    h('span', { 'aria-hidden': 'true' }, ICONS[state] || '?'), ` ${state}`);
}

/** A provider badge. */
export function providerBadge(provider) {
  return h('span', { class: `provider provider-${provider}` }, PROVIDERS[provider] || provider);
}

/** `branch`, `tag v1` and an abbreviated sha. */
export function refText(ref = {}) {
  const name = ref.tag ? `tag ${ref.tag}` : ref.branch || '(default)';
  return ref.sha ? `${name} @ ${ref.sha.slice(0, 7)}` : name;
}

/** Seconds between two times (or until now) as `1h 2m`, `3m 4s`, `5s`. */
export function duration(from, to) {
  if (!from) return '';
  const secs = Math.max(0, Math.round(((to ? new Date(to) : new Date()) - new Date(from)) / 1000));
  return durationText(secs);
}

/** `secs` as `1h 2m`, `3m 4s` or `5s`. */
export function durationText(secs) {
  if (secs >= 3600) return `${Math.floor(secs / 3600)}h ${Math.floor((secs % 3600) / 60)}m`;
  if (secs >= 60) return `${Math.floor(secs / 60)}m ${secs % 60}s`;
  return `${secs}s`;
}

/** A `<time>` with the local time and the full timestamp as its title. */
export function timeEl(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  const text = sameDay ? d.toLocaleTimeString() : d.toLocaleString();
  return h('time', { datetime: iso, title: d.toISOString() }, text);
}

/** Show a short message in the status area. */
export function toast(message) {
  const el = document.getElementById('toast');
  el.textContent = message;
  el.classList.add('shown');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove('shown'), 4000);
}
