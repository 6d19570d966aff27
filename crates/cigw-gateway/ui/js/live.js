// The one store of runs, keyed by id, kept current by the gateway's event stream (SSE with the
// session cookie). Views render from it and subscribe to its changes. A dropped stream is
// reopened where it stopped: the browser resends Last-Event-ID itself while it retries, and a
// stream that was closed is reopened with `last_event_id`.

import { api } from './api.js';

const runs = new Map();
const listeners = new Set();
let source = null;
let lastEventId = null;
let retryTimer = null;
let retryDelay = 1000;
const pending = new Map();

/** Subscribe to changes: `fn(run, event)`; returns the unsubscribe function. */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** The stored run, if any. */
export const get = (id) => runs.get(id);

/** Store runs read from the API. */
export function remember(list) {
  for (const run of list) runs.set(run.id, run);
}

function emit(run, event) {
  for (const fn of [...listeners]) fn(run, event);
}

function setStatus(text) {
  const el = document.getElementById('live');
  if (el) {
    el.textContent = text;
    el.dataset.status = text;
  }
}

/** Re-read a run after its events (coalesced per run), then tell the subscribers. */
function refresh(id, event) {
  if (pending.has(id)) return;
  pending.set(id, setTimeout(async () => {
    pending.delete(id);
    try {
      const detail = await api('GET', `/v1/runs/${encodeURIComponent(id)}`);
      const { events, ...run } = detail;
      runs.set(id, run);
      emit(run, event);
    } catch {
      /* the next event or the page's own reads catch up */
    }
  }, 120));
}

function onMessage(message) {
  lastEventId = message.lastEventId || lastEventId;
  const event = JSON.parse(message.data);
  const known = runs.get(event.run_id);
  if (known) {
    const run = { ...known, state: event.state };
    runs.set(run.id, run);
    emit(run, event);
  }
  refresh(event.run_id, event);
}

/** Open the stream (once). */
export function connect() {
  if (source) return;
  const url = lastEventId ? `/v1/events?last_event_id=${encodeURIComponent(lastEventId)}` : '/v1/events';
  source = new EventSource(url, { withCredentials: true });
  setStatus('connecting');
  source.onopen = () => {
    retryDelay = 1000;
    setStatus('live');
  };
  source.onmessage = onMessage;
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      source = null;
      setStatus('reconnecting');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    } else {
      setStatus('reconnecting');
    }
  };
}

/** Close the stream (sign-out). */
export function disconnect() {
  clearTimeout(retryTimer);
  source?.close();
  source = null;
  lastEventId = null;
  runs.clear();
  setStatus('offline');
}
