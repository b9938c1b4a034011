// Shoal's web app: routes on the client (history API), one view at a time.

import { h, replace, formValues } from "./dom.js";
import { api, ApiFailure } from "./api.js";
import * as session from "./session.js";
import { boardView } from "./board.js";

const root = document.getElementById("app");

const routes = {
  "/login": loginView,
  "/signup": signupView,
  "/": homeView,
};
const PUBLIC = new Set(["/login", "/signup"]);

export function go(path, { replace: swap = false } = {}) {
  if (location.pathname !== path) history[swap ? "replaceState" : "pushState"]({}, "", path);
  render();
}

// What the view on screen must stop (its subscriptions) when another replaces it.
let leaving = [];
function onLeave(f) {
  leaving.push(f);
}

function render() {
  const path = location.pathname;
  const signedIn = session.me() !== null;
  if (!signedIn && !PUBLIC.has(path)) return go("/login", { replace: true });
  if (signedIn && PUBLIC.has(path)) return go("/", { replace: true });
  for (const f of leaving) f();
  leaving = [];
  const board = path.match(/^\/boards\/([0-9a-zA-Z-]+)$/);
  if (board) return replace(root, shell(boardView(board[1], { onLeave })));
  const view = routes[path] || notFoundView;
  replace(root, view());
}

/** A failure said in words, with what each wrong field needs. */
function problem(e) {
  if (!(e instanceof ApiFailure)) return h("p", { class: "error", role: "alert" }, String(e));
  const fields = e.details && e.details.fields ? Object.entries(e.details.fields) : [];
  return h(
    "div",
    { class: "error", role: "alert" },
    h("p", {}, e.message),
    fields.length ? h("ul", {}, fields.map(([field, why]) => h("li", {}, `${field.replaceAll("_", " ")}: ${why}`))) : null,
    e.body && e.body.error && e.body.error.hint ? h("p", {}, e.body.error.hint) : null,
  );
}

function authForm(title, fields, submitLabel, onSubmit, footer) {
  const status = h("div", { class: "status", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary" }, submitLabel);
  const form = h(
    "form",
    {
      class: "card auth",
      onsubmit: async (ev) => {
        ev.preventDefault();
        button.disabled = true;
        replace(status);
        try {
          await onSubmit(formValues(form));
          go("/");
        } catch (e) {
          replace(status, problem(e));
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", {}, title),
    fields.map(([name, label, type, extra]) =>
      h("label", {}, h("span", {}, label), h("input", { name, type, required: true, ...(extra || {}) })),
    ),
    status,
    button,
    footer,
  );
  return h("main", { class: "center" }, h("div", { class: "brand" }, "Shoal"), form);
}

function link(path, text) {
  return h("a", { href: path, onclick: (ev) => { ev.preventDefault(); go(path); } }, text);
}

function loginView() {
  return authForm(
    "Sign in",
    [
      ["email", "E-mail", "email", { autocomplete: "username" }],
      ["password", "Password", "password", { autocomplete: "current-password" }],
    ],
    "Sign in",
    (v) => session.login(v.email, v.password),
    h("p", { class: "muted" }, "New to Shoal? ", link("/signup", "Create a workspace")),
  );
}

function signupView() {
  return authForm(
    "Create a workspace",
    [
      ["workspace_name", "Workspace name", "text", { autocomplete: "organization" }],
      ["name", "Your name", "text", { autocomplete: "name" }],
      ["email", "E-mail", "email", { autocomplete: "username" }],
      ["password", "Password", "password", { autocomplete: "new-password" }],
    ],
    "Create workspace",
    (v) => session.signup(v.name, v.email, v.password, v.workspace_name),
    h("p", { class: "muted" }, "Already have an account? ", link("/login", "Sign in")),
  );
}

function header() {
  const m = session.me();
  return h(
    "header",
    { class: "top" },
    link("/", h("span", { class: "brand" }, "Shoal")),
    h("span", { class: "workspace", "data-testid": "workspace" }, m.workspace.name),
    h("span", { class: "grow" }),
    h("span", { class: "who" }, m.user ? `${m.user.name} · ${m.role}` : ""),
    h("button", { class: "quiet", onclick: async () => { await session.logout().catch(() => {}); go("/login"); } }, "Sign out"),
  );
}

function homeView() {
  const list = h("section", { class: "card" }, h("h2", {}, "Pipelines"), h("p", { class: "muted" }, "Loading…"));
  api("GET", "/pipelines?limit=100")
    .then((page) => {
      const rows = page.data.map((p) =>
        h("li", {}, link(`/boards/${p.id}`, p.name), " ", h("span", { class: "muted" }, `${(p.stages || []).length} stages`)),
      );
      replace(list, h("h2", {}, "Pipelines"), rows.length ? h("ul", { class: "plain" }, rows) : h("p", { class: "muted" }, "No pipelines yet."));
    })
    .catch((e) => replace(list, h("h2", {}, "Pipelines"), problem(e)));
  return shell(list);
}

function shell(...content) {
  return h("div", { class: "shell" }, header(), h("main", { class: "content" }, content));
}

function notFoundView() {
  return h("main", { class: "center" }, h("div", { class: "card" }, h("h1", {}, "Nothing here"), h("p", {}, link("/", "Back to Shoal"))));
}

window.addEventListener("popstate", render);
session.onSessionChange((m) => {
  if (m === null && !PUBLIC.has(location.pathname)) go("/login", { replace: true });
});
session.restore().finally(render);
