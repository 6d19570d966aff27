// Talking to the gateway: the session (cookie + CSRF token), JSON requests, and errors that keep
// the API's per-field details so a form can show each next to its field.

let csrfToken = null;
let signedOut = () => {};

/** An error answer of the API: status, code, message and per-field details. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `The gateway answered ${status}`);
    this.status = status;
    this.code = body?.code || 'error';
    this.details = Array.isArray(body?.details) ? body.details : [];
  }
}

/** Call `fn` when the gateway says the session is gone (401). */
export function onSignedOut(fn) {
  signedOut = fn;
}

/** One JSON request; unsafe methods carry the CSRF token. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, { code: 'network', message: 'The gateway cannot be reached.' });
  }
  const text = response.status === 204 ? '' : await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { message: text }; }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && path !== '/ui/session') signedOut(error);
    throw error;
  }
  return data;
}

/** The signed-in session, or null. */
export async function currentSession() {
  try {
    const s = await api('GET', '/ui/session');
    csrfToken = s.csrf_token;
    return s;
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

/** Exchange a token for a session. */
export async function signIn(token) {
  const s = await api('POST', '/ui/session', { token });
  csrfToken = s.csrf_token;
  return s;
}

/** End the session. */
export async function signOut() {
  try {
    await api('DELETE', '/ui/session');
  } finally {
    csrfToken = null;
  }
}

let targetsPromise = null;
/** The configured targets (read once per page load). */
export function targets() {
  targetsPromise ??= api('GET', '/v1/targets').then((t) => t.targets).catch((e) => {
    targetsPromise = null;
    throw e;
  });
  return targetsPromise;
}

/** Query string of the non-empty entries of `params`. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}
