// The page: sign-in, navigation between the views (hash routes, so every view has a link and
// the back button works), and sign-out.

import { currentSession, onSignedOut, signIn, signOut } from './api.js';
import { h } from './format.js';
import * as live from './live.js';
import * as targets from './targets.js';
import * as runs from './runs.js';
import * as run from './run.js';
import * as dashboard from './dashboard.js';

const $ = (id) => document.getElementById(id);
let session = null;

function showSignIn(message) {
  session = null;
  live.disconnect();
  $('nav').hidden = true;
  $('who').hidden = true;
  $('view').replaceChildren();
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message || '';
  $('token').focus();
}

function showApp() {
  $('sign-in').hidden = true;
  $('nav').hidden = false;
  $('who').hidden = false;
  $('who-name').textContent = session.name;
  live.connect();
  route();
}

async function route() {
  if (!session) return;
  const [path, search] = (location.hash.slice(1) || '/targets').split('?');
  const params = new URLSearchParams(search || '');
  const root = h('div', { class: 'view', 'aria-busy': 'true' });
  $('view').replaceChildren(root);
  for (const a of document.querySelectorAll('#nav a')) {
    const current = path.startsWith(a.getAttribute('href').slice(1));
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const parts = path.split('/').filter(Boolean);
  try {
    if (parts[0] === 'runs' && parts[1]) await run.render(root, session, decodeURIComponent(parts[1]));
    else if (parts[0] === 'runs') await runs.render(root, session, params);
    else if (parts[0] === 'dashboard') await dashboard.render(root, session, params);
    else await targets.render(root, session);
    document.title = `cigw · ${root.querySelector('h1')?.textContent || ''}`;
  } catch (error) {
    if (error.status === 401) return;
    root.replaceChildren(h('h1', {}, 'Something went wrong'), h('p', { class: 'error', role: 'alert' }, error.message));
  } finally {
    root.removeAttribute('aria-busy');
  }
}

$('sign-in-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = $('token');
  const button = e.target.querySelector('button');
  button.disabled = true;
  try {
    session = await signIn(input.value.trim());
    input.value = '';
    showApp();
  } catch (error) {
    $('sign-in-error').textContent = error.message;
    input.setAttribute('aria-invalid', 'true');
  } finally {
    button.disabled = false;
  }
});

$('sign-out').addEventListener('click', async () => {
  try { await signOut(); } catch { /* signed out either way */ }
  showSignIn('Signed out.');
});

onSignedOut(() => showSignIn('Your session has ended. Sign in again.'));
window.addEventListener('hashchange', route);

session = await currentSession().catch(() => null);
if (session) showApp();
else showSignIn();
