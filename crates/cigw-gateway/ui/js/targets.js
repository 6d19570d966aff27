// Targets: a card per target with a form generated from its declared parameters and a Build
// button. Favourites and the last values used (never secret ones) are remembered in this browser.

import { api, targets as loadTargets } from './api.js';
import { h, providerBadge, stateBadge, toast } from './format.js';
import * as live from './live.js';

const FAVOURITES = 'cigw.favourites';
const LAST = (target) => `cigw.last.${target}`;

function read(key, fallback) {
  try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch { return fallback; }
}
function write(key, value) {
  try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* private mode: not remembered */ }
}

function paramInput(target, p, last) {
  const id = `p-${target.name}-${p.name}`;
  const helpId = `${id}-help`;
  const errorId = `${id}-error`;
  const described = [p.description ? helpId : null, errorId].filter(Boolean).join(' ');
  const remembered = p.secret ? undefined : last?.[p.name];
  const value = remembered ?? (p.secret ? undefined : p.default);
  let input;
  if (p.type === 'boolean') {
    input = h('input', { type: 'checkbox', id, name: p.name, 'aria-describedby': described });
    input.checked = value === true;
  } else if (p.enum) {
    input = h('select', { id, name: p.name, 'aria-describedby': described, required: p.required },
      p.required && value === undefined ? h('option', { value: '' }, 'Choose…') : null,
      !p.required ? h('option', { value: '' }, p.default !== undefined && p.default !== null ? `(default: ${p.default})` : '(none)') : null,
      p.enum.map((v) => h('option', { value: String(v), selected: String(v) === String(value) }, String(v))));
  } else {
    const type = p.secret ? 'password' : p.type === 'integer' ? 'number' : 'text';
    input = h('input', {
      type, id, name: p.name, step: p.type === 'integer' ? '1' : undefined,
      autocomplete: p.secret ? 'new-password' : 'off', required: p.required && p.default == null,
      placeholder: p.secret && p.default ? 'default kept secret' : undefined,
      'aria-describedby': described,
    });
    if (value !== undefined && value !== null) input.value = String(value);
  }
  input.dataset.kind = p.type;
  input.dataset.field = `parameters.${p.name}`;
  const label = h('label', { for: id }, p.name, p.required ? h('abbr', { title: 'required' }, ' *') : null,
    p.secret ? h('span', { class: 'tag' }, 'secret') : null);
  const help = p.description ? h('small', { id: helpId }, p.description) : null;
  const error = h('small', { id: errorId, class: 'field-error', role: 'alert' });
  if (p.type === 'boolean') return h('div', { class: 'field check' }, input, label, help, error);
  return h('div', { class: 'field' }, label, input, help, error);
}

function collect(target, form) {
  const kind = form.elements.ref_kind?.value || 'branch';
  const name = form.elements.ref_name.value.trim();
  const sha = form.elements.sha.value.trim();
  const ref = {};
  if (name) ref[kind] = name;
  if (sha) ref.sha = sha;
  const parameters = {};
  for (const p of target.parameters) {
    const input = form.elements[p.name];
    if (p.type === 'boolean') {
      if (input.checked !== (p.default === true) || p.required) parameters[p.name] = input.checked;
    } else if (input.value !== '') {
      parameters[p.name] = p.type === 'integer' && /^-?\d+$/.test(input.value) ? Number(input.value) : input.value;
    }
  }
  return { ref, parameters };
}

function showErrors(form, error) {
  let placed = false;
  for (const d of error.details) {
    const field = d.field || '';
    const input = form.querySelector(`[data-field="${CSS.escape(field)}"]`)
      || (field.startsWith('ref') ? form.querySelector('[data-field="ref.branch"]') : null);
    if (input) {
      const slot = document.getElementById(input.getAttribute('aria-describedby').split(' ').pop());
      slot.textContent = d.message;
      input.setAttribute('aria-invalid', 'true');
      if (!placed) input.focus();
      placed = true;
    }
  }
  const result = form.querySelector('.result');
  result.replaceChildren(h('span', { class: 'error' }, placed ? 'Please correct the marked fields.' : error.message));
}

function clearErrors(form) {
  for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

function followRun(result, runId) {
  const link = h('a', { href: `#/runs/${runId}` }, 'run details');
  const state = h('span', {}, stateBadge('pending'));
  result.replaceChildren('Started: ', state, ' ', link);
  const stop = live.subscribe((run) => {
    if (run.id !== runId) return;
    state.replaceChildren(stateBadge(run.state));
    if (['succeeded', 'failed', 'canceled', 'skipped', 'error'].includes(run.state)) stop();
  });
}

function card(target, session, favourites, rerender) {
  const last = read(LAST(target.name), {});
  const fav = favourites.includes(target.name);
  const mayBuild = session.triggerable.includes(target.name);
  const ids = (s) => `${s}-${target.name}`;
  const refField = (field, label, input, help) => h('div', { class: 'field' },
    h('label', { for: input.id }, label), input, help,
    h('small', { id: ids(`${field}-error`), class: 'field-error', role: 'alert' }));

  const refKind = target.capabilities.tag
    ? h('select', { id: ids('kind'), name: 'ref_kind', 'aria-label': 'Branch or tag' },
      h('option', { value: 'branch', selected: last.ref_kind !== 'tag' }, 'branch'),
      h('option', { value: 'tag', selected: last.ref_kind === 'tag' }, 'tag'))
    : null;
  const refName = h('input', {
    id: ids('ref'), name: 'ref_name', placeholder: target.default_branch, autocomplete: 'off', spellcheck: 'false',
    'aria-describedby': ids('ref.branch-error'), dataset: { field: 'ref.branch' },
  });
  refName.value = last.ref_name || '';
  const sha = h('input', {
    id: ids('sha'), name: 'sha', placeholder: 'optional', autocomplete: 'off', spellcheck: 'false',
    pattern: '[0-9a-fA-F]{7,40}', 'aria-describedby': ids('ref.sha-error'), dataset: { field: 'ref.sha' },
  });
  sha.value = last.sha || '';

  const form = h('form', { class: 'build', novalidate: true },
    h('div', { class: 'ref-row' },
      refKind ? h('div', { class: 'field narrow-field' }, h('label', { for: refKind.id }, 'Ref'), refKind) : null,
      refField('ref.branch', refKind ? 'Branch / tag' : 'Branch', refName),
      refField('ref.sha', 'Commit sha', sha)),
    target.parameters.map((p) => paramInput(target, p, last.parameters)),
    mayBuild
      ? h('button', { type: 'submit' }, 'Build')
      : h('p', { class: 'muted' }, 'This token may not build this target.'),
    h('p', { class: 'result', role: 'status', 'aria-live': 'polite' }));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    const { ref, parameters } = collect(target, form);
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      const body = { targets: [target.name], parameters };
      if (Object.keys(ref).length) body.ref = ref;
      const accepted = await api('POST', '/v1/triggers', body);
      const remembered = {};
      for (const p of target.parameters) if (!p.secret && p.name in parameters) remembered[p.name] = parameters[p.name];
      write(LAST(target.name), {
        ref_kind: form.elements.ref_kind?.value, ref_name: form.elements.ref_name.value.trim(),
        sha: form.elements.sha.value.trim(), parameters: remembered,
      });
      for (const p of target.parameters) if (p.secret) form.elements[p.name].value = '';
      followRun(form.querySelector('.result'), accepted.runs[0].id);
      toast(`${target.name}: build requested`);
    } catch (error) {
      showErrors(form, error);
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  });

  const star = h('button', {
    type: 'button', class: 'icon fav', 'aria-pressed': String(fav),
    'aria-label': fav ? `Remove ${target.name} from favourites` : `Add ${target.name} to favourites`,
    onclick: () => {
      const list = read(FAVOURITES, []).filter((n) => n !== target.name);
      if (!fav) list.push(target.name);
      write(FAVOURITES, list);
      rerender(target.name);
    },
  }, fav ? '★' : '☆');

  return h('article', { class: 'card', id: `target-${target.name}`, dataset: { target: target.name } },
    h('header', {},
      h('h2', {}, target.name), providerBadge(target.provider), star),
    target.description ? h('p', {}, target.description) : null,
    h('p', { class: 'muted' }, 'Default branch ', h('code', {}, target.default_branch)),
    form);
}

/** Render the targets view into `root`. */
export async function render(root, session) {
  const list = await loadTargets();
  const draw = (focusStar) => {
    const favourites = read(FAVOURITES, []);
    const sorted = [...list].sort((a, b) =>
      (favourites.includes(b.name) - favourites.includes(a.name)) || a.name.localeCompare(b.name));
    root.replaceChildren(
      h('h1', {}, 'Targets'),
      h('div', { class: 'cards' }, sorted.map((t) => card(t, session, favourites, draw))));
    if (focusStar) document.querySelector(`#target-${CSS.escape(focusStar)} .fav`)?.focus();
  };
  draw();
}
