// The browser's session. The refresh token is an HttpOnly cookie the server sets and
// the script never sees; the server accepts it only with the CSRF value of the
// readable `shoal_csrf` cookie echoed in a header. Nothing is kept in localStorage.

import { api, useToken, ApiFailure } from "./api.js";

let current = null; // {user, role, workspace}
let timer = null;
const listeners = new Set();

export function onSessionChange(f) {
  listeners.add(f);
}

export function me() {
  return current;
}

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)shoal_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function begin(answer) {
  useToken(answer.access_token, refresh);
  // Renewed a minute before it lapses, so an open page never sends an expired token.
  clearTimeout(timer);
  timer = setTimeout(() => refresh().catch(() => end()), Math.max(5, answer.expires_in - 60) * 1000);
  current = await api("GET", "/me");
  for (const f of listeners) f(current);
  return current;
}

function end() {
  clearTimeout(timer);
  useToken(null);
  current = null;
  for (const f of listeners) f(null);
}

/** A new access token from the refresh cookie; ends the session if the cookie is gone. */
export async function refresh() {
  try {
    const answer = await api("POST", "/auth/refresh", {}, { headers: { "X-CSRF-Token": csrf() } });
    return begin(answer);
  } catch (e) {
    if (e instanceof ApiFailure && e.status !== 0) end();
    throw e;
  }
}

/** On page load: resumes the session the cookie holds, if any. */
export async function restore() {
  if (!csrf()) return null;
  try {
    return await refresh();
  } catch {
    return null;
  }
}

export async function login(email, password, workspaceId) {
  const body = { email, password, refresh_cookie: true };
  if (workspaceId) body.workspace_id = workspaceId;
  return begin(await api("POST", "/auth/login", body));
}

/** A new account: with a workspace of its own, or joining one by an invitation's token. */
export async function signup(name, email, password, workspaceName, invitationToken) {
  const body = { name, email, password, refresh_cookie: true };
  if (invitationToken) body.invitation_token = invitationToken;
  else body.workspace_name = workspaceName;
  try {
    return begin(await api("POST", "/auth/signup", body));
  } catch (e) {
    // Someone who has an account already joins with it: the password proves it is theirs.
    if (!invitationToken || !(e instanceof ApiFailure) || e.code !== "already_exists") throw e;
    return begin(await api("POST", "/invitations/accept", { token: invitationToken, email, password, refresh_cookie: true }));
  }
}

/**
 * Moves to another of the user's workspaces: with this session's refresh cookie, the
 * server starts a session there (its cookie replaces this one's) and ends this one.
 * The caller reloads the app.
 */
export async function switchWorkspace(workspaceId) {
  await api("POST", "/auth/switch", { workspace_id: workspaceId, refresh_cookie: true }, { headers: { "X-CSRF-Token": csrf() } });
}

export async function logout() {
  try {
    await api("POST", "/auth/logout", {}, { headers: { "X-CSRF-Token": csrf() } });
  } finally {
    end();
  }
}
