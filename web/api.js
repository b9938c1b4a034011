// Calls to the REST API. The access token is held here, in memory only: a reload or
// a new tab gets a fresh one from the refresh cookie (see session.js).

let accessToken = null;
let renew = null;
const tokenListeners = new Set();

/** Sets the access token, and how to get a new one when it expires. */
export function useToken(token, renewer) {
  accessToken = token;
  if (renewer !== undefined) renew = renewer;
  for (const f of tokenListeners) f(token);
}

/** Calls `f` with each new access token (null when the session ends). */
export function onToken(f) {
  tokenListeners.add(f);
}

/** A new access token now (for a connection whose token expired). */
export function renewToken() {
  return renew ? renew() : Promise.reject(new Error("no session"));
}

export function token() {
  return accessToken;
}

/** A refused request: the server's stable code, its message and, when it gave one, which fields were wrong. */
export class ApiFailure extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `the server answered ${status}`);
    this.status = status;
    this.code = err.code || "network";
    this.details = err.details || null;
    this.body = body;
  }
}

/** `api("GET", "/me")`: the answer's JSON, or an ApiFailure. Renews an expired token once. */
export async function api(method, path, body, { headers = {}, retried = false } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (accessToken) init.headers.Authorization = `Bearer ${accessToken}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    throw new ApiFailure(0, { error: { code: "network", message: "the server cannot be reached" } });
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (res.ok) return data;
  const failure = new ApiFailure(res.status, data);
  if (res.status === 401 && failure.code === "token_expired" && renew && !retried) {
    await renew();
    return api(method, path, body, { headers, retried: true });
  }
  throw failure;
}
