// The web UI and the embeddable build button in headless Chromium, against the real
// `cigw sandbox` (simulated CircleCI, Codefresh and Codeship + the gateway on SQLite) on
// 127.0.0.1 ports. Screenshots go to target/screenshots/.
//
//   CIGW_BIN=target/debug/cigw node --test tests/browser/

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = process.env.CIGW_BIN || path.join(root, 'target/debug/cigw');
const shots = process.env.CIGW_SCREENSHOTS || path.join(root, 'target/screenshots');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN = `cigw_${crypto.randomBytes(32).toString('base64url')}`;
const LONG = 90_000;

let dir, sandbox, sandboxLog = '', gw, browser, admin, allowedSite, refusedSite, buttonToken, readToken;
const runIds = {};

/** A JSON call to the gateway as the admin (or `token`). */
async function call(method, urlPath, body, token = ADMIN) {
  const response = await fetch(`${gw}${urlPath}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** A small web server on its own 127.0.0.1 port: another origin for the embedded button. */
function site(pages) {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      const page = pages[req.url.split('?')[0]];
      res.writeHead(page ? 200 : 404, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(page ? page() : 'not found');
    });
    server.listen(0, '127.0.0.1', () => resolve({ server, origin: `http://127.0.0.1:${server.address().port}` }));
  });
}

const buttonPage = () => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>QA tools</title>
<script src="${gw}/ui/embed.js"></script></head><body><h1>QA tools</h1>
<p>Run the end-to-end suite on main:</p>
<cigw-build-button target="web-e2e" token="${buttonToken}" branch="main" params='{"BROWSER":"firefox"}'></cigw-build-button>
</body></html>`;

const csrfPage = () => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Not the gateway</title></head>
<body><form id="f" method="post" action="${gw}/v1/triggers" enctype="application/x-www-form-urlencoded">
<input name="targets" value="web-e2e"></form>
<script>document.getElementById('f').submit()</script></body></html>`;

async function shot(page, name) {
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

async function signIn(page, token) {
  await page.goto(`${gw}/ui/`);
  await page.getByLabel('cigw token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#nav').waitFor();
}

/** Press Build on a target's card and return the new run's id. */
async function build(page, target, fill = async () => {}) {
  await page.goto(`${gw}/ui/#/targets`);
  const card = page.locator(`#target-${target}`);
  await card.waitFor();
  await fill(card);
  await card.getByRole('button', { name: 'Build', exact: true }).click();
  const link = card.locator('.result a[href^="#/runs/"]');
  await link.waitFor();
  return (await link.getAttribute('href')).slice('#/runs/'.length);
}

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cigw-browser-'));
  sandbox = spawn(bin, ['sandbox', '--port', '0', '--db', path.join(dir, 'sandbox.db'), '--run-for', '10s'], {
    env: { ...process.env, CIGW_SANDBOX_ADMIN_TOKEN: ADMIN, RUST_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  sandbox.stderr.on('data', (d) => { sandboxLog += d; });
  gw = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the sandbox did not start:\n${out}${sandboxLog}`)), 120_000);
    sandbox.stdout.on('data', (d) => {
      out += d;
      const ui = out.match(/Web UI\s+(http:\/\/127\.0\.0\.1:\d+)\/ui/);
      if (ui) { clearTimeout(timer); resolve(ui[1]); }
    });
    sandbox.on('exit', (code) => reject(new Error(`the sandbox exited (${code}):\n${out}${sandboxLog}`)));
  });
  allowedSite = await site({ '/button.html': buttonPage, '/csrf.html': csrfPage });
  refusedSite = await site({ '/button.html': buttonPage });
  const button = await call('POST', '/v1/tokens', {
    name: 'button-web-e2e', scopes: ['trigger:web-e2e'], allowed_origins: [allowedSite.origin], rate_limit_per_minute: 30,
  });
  assert.equal(button.status, 201, JSON.stringify(button.body));
  buttonToken = button.body.secret;
  const reader = await call('POST', '/v1/tokens', { name: 'qa-reader', scopes: ['read'] });
  readToken = reader.body.secret;
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  admin = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  admin.setDefaultTimeout(30_000);
});

after(async () => {
  await browser?.close();
  allowedSite?.server.close();
  refusedSite?.server.close();
  sandbox?.kill('SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('signing in shows the targets with forms from their parameters', async () => {
  await signIn(admin, ADMIN);
  const api = admin.locator('#target-api-build');
  await api.waitFor();
  assert.equal(await api.locator('.provider').textContent(), 'CircleCI');
  assert.equal(await api.getByLabel('deploy_env').inputValue(), 'none', 'the enum default is selected');
  assert.equal(await admin.locator('#target-web-e2e').getByLabel('SENTRY_TOKEN').getAttribute('type'), 'password');
  assert.equal(await admin.locator('#target-api-release').getByLabel('require_approval').isChecked(), true);
  await shot(admin, 'targets');
});

test('a target built with parameters goes to succeeded live', async () => {
  const id = await build(admin, 'api-build', (card) => card.getByLabel('deploy_env').selectOption('staging'));
  runIds.success = id;
  await admin.locator('#target-api-build .result [data-state="succeeded"]').waitFor({ timeout: LONG });
  const run = await call('GET', `/v1/runs/${id}`);
  assert.equal(run.body.parameters.deploy_env, 'staging');
  assert.equal(run.body.requested_by, 'bootstrap-admin');
});

test('favourites come first and the last values used are remembered', async () => {
  await admin.goto(`${gw}/ui/#/targets`);
  await admin.getByRole('button', { name: 'Add web-e2e to favourites' }).click();
  await admin.reload();
  await admin.locator('.cards .card').first().waitFor();
  assert.equal(await admin.locator('.cards .card').first().getAttribute('data-target'), 'web-e2e');
  assert.equal(await admin.locator('#target-api-build').getByLabel('deploy_env').inputValue(), 'staging');
  await admin.getByRole('button', { name: 'Remove web-e2e from favourites' }).click();
});

test('a failing target ends failed', async () => {
  runIds.failed = await build(admin, 'api-lint');
  await admin.locator('#target-api-lint .result [data-state="failed"]').waitFor({ timeout: LONG });
});

test('a validation error is shown next to its field', async () => {
  await admin.goto(`${gw}/ui/#/targets`);
  const card = admin.locator('#target-web-e2e');
  await admin.locator('#ref-web-e2e').fill('bad..branch');
  await card.getByRole('button', { name: 'Build', exact: true }).click();
  const error = admin.locator('[id="ref.branch-error-web-e2e"]');
  await error.waitFor();
  assert.match(await error.textContent(), /\.\./);
  assert.equal(await admin.locator('#ref-web-e2e').getAttribute('aria-invalid'), 'true');
  await shot(admin, 'validation');
  await admin.locator('#ref-web-e2e').fill('');
});

test('a running run is canceled from the runs view', async () => {
  const id = await build(admin, 'web-e2e', (card) => card.getByLabel('SENTRY_TOKEN').fill('not-kept-anywhere'));
  const stored = await admin.evaluate(() => JSON.stringify({ ...localStorage }));
  assert.ok(stored.includes('cigw.last.web-e2e') && !stored.includes('not-kept-anywhere'), `no secret kept: ${stored}`);
  assert.equal((await call('GET', `/v1/runs/${id}`)).body.parameters.SENTRY_TOKEN, '***', 'masked by the API');
  await admin.goto(`${gw}/ui/#/runs`);
  const row = admin.locator(`#run-${id}`);
  await row.and(admin.locator('[data-state="running"]')).waitFor({ timeout: LONG });
  await shot(admin, 'runs');
  await row.getByRole('button', { name: /^Cancel/ }).click();
  await admin.locator(`#run-${id}[data-state="canceled"]`).waitFor({ timeout: LONG });
});

test('a finished run is rerun', async () => {
  await admin.goto(`${gw}/ui/#/runs?target=api-lint`);
  // Only a hash changes, so the last view's table stays up until the filtered one is drawn.
  await admin.waitForFunction(() => document.querySelector('#f-target')?.value === 'api-lint'
    && document.querySelector('table.runs:not([aria-busy])'));
  const row = admin.locator(`#run-${runIds.failed}`);
  await row.waitFor();
  await row.getByRole('button', { name: /^Rerun run/ }).click();
  // Wait for the rerun itself: the sandbox's every-2-minutes api-lint schedule can add a row too.
  let rerun;
  for (const started = Date.now(); !rerun && Date.now() - started < LONG; await sleep(200)) {
    const runs = await call('GET', '/v1/runs?target=api-lint');
    rerun = runs.body.runs.find((r) => r.rerun_of === runIds.failed);
  }
  assert.ok(rerun, 'a new run reruns the failed one');
  await admin.locator(`#run-${rerun.id}`).waitFor();
});

test('a blocked run is approved from its detail page', async () => {
  const id = await build(admin, 'web-deploy');
  await admin.goto(`${gw}/ui/#/runs/${id}`);
  await admin.locator('.run-head h1 [data-state="blocked"]').waitFor({ timeout: LONG });
  await admin.getByRole('button', { name: /^Approve/ }).click();
  await admin.locator('.run-head h1 [data-state="succeeded"]').waitFor({ timeout: LONG });
  assert.ok(await admin.locator('.timeline [data-kind="approved"]').count() >= 1, 'the timeline shows the approval');
  await admin.locator('dt', { hasText: 'Finished' }).waitFor();
  await shot(admin, 'run-detail');
});

test('the dashboard shows every target and the figures', async () => {
  await admin.goto(`${gw}/ui/#/dashboard`);
  await admin.locator('table.dashboard tbody tr').first().waitFor();
  const rows = await admin.locator('table.dashboard tbody tr').count();
  const targets = await call('GET', '/v1/targets');
  assert.equal(rows, targets.body.targets.length);
  const apiBuild = admin.locator('table.dashboard tr[data-target="api-build"]');
  assert.equal(await apiBuild.locator('td').nth(3).textContent(), '100%');
  await shot(admin, 'dashboard');
});

test('a read-only token sees no Build or Cancel buttons', async () => {
  const page = await (await browser.newContext()).newPage();
  await signIn(page, readToken);
  await page.locator('#target-api-build').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Build', exact: true }).count(), 0);
  await page.goto(`${gw}/ui/#/runs`);
  await page.locator('table.runs tbody tr').first().waitFor();
  assert.equal(await page.locator('button[data-action]').count(), 0);
  await page.context().close();
});

test('a dropped event stream reconnects with Last-Event-ID and misses nothing', async () => {
  // The page is reached through a proxy that can cut every connection, as a network drop would.
  const sockets = new Set();
  const resumedAfter = [];
  const server = http.createServer((req, res) => {
    if (req.url.startsWith('/v1/events')) resumedAfter.push(req.headers['last-event-id'] || null);
    const upstream = http.request(`${gw}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const page = await (await browser.newContext()).newPage();
  try {
    await page.goto(`${origin}/ui/#/runs`);
    await page.getByLabel('cigw token').fill(ADMIN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#live[data-status="live"]').waitFor();
    const seen = await call('POST', '/v1/triggers', { targets: ['legacy-pro'] });
    await page.locator(`#run-${seen.body.runs[0].id}`).waitFor();

    for (const socket of sockets) socket.destroy();
    await page.locator('#live[data-status="reconnecting"]').waitFor();
    const missed = await call('POST', '/v1/triggers', { targets: ['legacy-pro'] });
    await page.locator(`#run-${missed.body.runs[0].id}`).waitFor({ timeout: LONG });
    await page.locator('#live[data-status="live"]').waitFor();
    assert.ok(resumedAfter.length >= 2 && Number(resumedAfter.at(-1)) > 0,
      `the stream was reopened after the last event it had: ${resumedAfter}`);
  } finally {
    await page.context().close();
    server.closeAllConnections?.();
    server.close();
  }
});

test('the page fits a phone screen', async () => {
  const page = await (await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true })).newPage();
  await signIn(page, ADMIN);
  for (const view of ['targets', 'runs', 'dashboard']) {
    await page.goto(`${gw}/ui/#/${view}`);
    await page.locator('#view h1').waitFor();
    await page.locator('#view > .view[aria-busy]').waitFor({ state: 'detached' });
    if (view === 'runs') await page.locator('table.runs tbody tr').first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `${view} is ${overflow}px wider than the phone`);
    await shot(page, `phone-${view}`);
  }
  await page.context().close();
});

test('a form posted by another origin with the session cookie is refused', async () => {
  const before = (await call('GET', '/v1/runs?limit=1000')).body.runs.length;
  const page = await admin.context().newPage();
  const response = page.waitForResponse((r) => r.url() === `${gw}/v1/triggers`);
  await page.goto(`${allowedSite.origin}/csrf.html`);
  const answer = await response;
  assert.equal(answer.status(), 403);
  assert.equal((await answer.json()).code, 'cross_origin', 'the cookie was sent and the origin refused');
  await page.close();
  const afterCount = (await call('GET', '/v1/runs?limit=1000')).body.runs.length;
  assert.equal(afterCount, before, 'nothing was triggered');
});

test('signing out ends the session', async () => {
  await admin.goto(`${gw}/ui/#/targets`);
  await admin.getByRole('button', { name: 'Sign out' }).click();
  await admin.locator('#sign-in-form').waitFor();
  const status = await admin.evaluate(async () => (await fetch('/v1/runs')).status);
  assert.equal(status, 401);
  await admin.reload();
  await admin.locator('#sign-in-form').waitFor();
});

test('the embedded button on an allowed origin triggers and follows its run', async () => {
  const page = await (await browser.newContext({ viewport: { width: 800, height: 300 } })).newPage();
  await page.goto(`${allowedSite.origin}/button.html`);
  const button = page.locator('cigw-build-button');
  await button.getByRole('button', { name: 'Build web-e2e' }).click();
  await page.locator('cigw-build-button[data-state="running"]').waitFor({ timeout: LONG });
  await page.locator('cigw-build-button[data-state="succeeded"]').waitFor({ timeout: LONG });
  const href = await button.getByRole('link', { name: 'Run details' }).getAttribute('href');
  assert.ok(href.startsWith(`${gw}/ui/#/runs/`), href);
  const run = await call('GET', `/v1/runs/${href.split('/').pop()}`);
  assert.equal(run.body.parameters.BROWSER, 'firefox');
  assert.equal(run.body.requested_by, 'button-web-e2e');
  await shot(page, 'button');
  await page.context().close();
});

test('the same button on an origin the token does not allow is refused', async () => {
  const before = (await call('GET', '/v1/runs?limit=1000')).body.runs.length;
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${refusedSite.origin}/button.html`);
  await page.locator('cigw-build-button').getByRole('button').click();
  await page.locator('cigw-build-button[data-state="refused"]').waitFor();
  assert.match(await page.locator('cigw-build-button [part="state"]').textContent(), /origin not allowed/);
  await page.context().close();
  assert.equal((await call('GET', '/v1/runs?limit=1000')).body.runs.length, before, 'nothing was triggered');
});
