// Shoal's web app: routes on the client (history API), one view at a time, inside a
// shell with the navigation, the search box, the notification bell and the workspace.

import { h, replace, formValues } from "./dom.js";
import { api } from "./api.js";
import * as session from "./session.js";
import { go, link, problem, setRenderer } from "./ui.js";
import { boardView } from "./board.js";
import { recordsView, searchView } from "./records.js";
import { recordView } from "./record.js";
import { inboxView } from "./inbox.js";
import { settingsView } from "./settings.js";
import { bell, reset as resetBell } from "./bell.js";

const root = document.getElementById("app");
const PUBLIC = new Set(["/login", "/signup"]);
const TYPES = "contacts|companies|leads|deals|activities";

// Each view is `(match, ctx) → element`; ctx = {onLeave(f), query: URLSearchParams}.
const views = [
  [/^\/$/, () => homeView()],
  [/^\/boards\/([0-9a-zA-Z-]+)$/, (m, ctx) => boardView(m[1], ctx)],
  [new RegExp(`^/records/(${TYPES})$`), (m, ctx) => recordsView(m[1], ctx)],
  [new RegExp(`^/records/(${TYPES})/([0-9a-zA-Z-]+)$`), (m, ctx) => recordView(m[1], m[2], ctx)],
  [/^\/search$/, (m, ctx) => searchView(ctx)],
  [/^\/inbox(?:\/(.*))?$/, (m, ctx) => inboxView(m[1] || "", ctx)],
  [/^\/settings(?:\/([a-z-]+))?$/, (m, ctx) => settingsView(m[1] || "", ctx)],
];

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
  if (path === "/login") return replace(root, loginView());
  if (path === "/signup") return replace(root, signupView());
  const ctx = { onLeave, query: new URLSearchParams(location.search) };
  for (const [pattern, view] of views) {
    const m = path.match(pattern);
    if (m) return replace(root, shell(view(m, ctx)));
  }
  replace(root, notFoundView());
}
setRenderer(render);

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

// An invitation link carries its token after `#`, which browsers never send to a
// server; the page takes it out of the address at once, so it stays out of the
// history and of what is shared from the address bar.
let invitation = null;

function signupView() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("invitation");
  if (fromLink) {
    invitation = fromLink;
    history.replaceState({}, "", "/signup");
  }
  const joining = invitation;
  return authForm(
    joining ? "Join your team" : "Create a workspace",
    [
      ...(joining ? [] : [["workspace_name", "Workspace name", "text", { autocomplete: "organization" }]]),
      ["name", "Your name", "text", { autocomplete: "name" }],
      ["email", "E-mail", "email", { autocomplete: "username" }],
      ["password", "Password", "password", { autocomplete: "new-password" }],
    ],
    joining ? "Join" : "Create workspace",
    async (v) => {
      await session.signup(v.name, v.email, v.password, v.workspace_name, joining);
      invitation = null;
    },
    h("p", { class: "muted" }, "Already have an account? ", link("/login", "Sign in")),
  );
}

const ADMINS = new Set(["owner", "admin"]);

/** The workspace's name, or a menu of the user's workspaces when there are several. */
function workspacePicker(m) {
  const others = (m.workspaces || []).filter((w) => w.id !== m.workspace.id);
  if (!others.length) return h("span", { class: "workspace", "data-testid": "workspace" }, m.workspace.name);
  const select = h(
    "select",
    {
      class: "workspace",
      "data-testid": "workspace",
      "aria-label": "Workspace",
      onchange: async () => {
        select.disabled = true;
        try {
          await session.switchWorkspace(select.value);
          // A fresh page: nothing of the other workspace (its subscriptions, its
          // lists) is carried over.
          location.assign("/");
        } catch (e) {
          select.disabled = false;
          select.value = m.workspace.id;
          document.querySelector(".content")?.prepend(problem(e));
        }
      },
    },
    [m.workspace, ...others].map((w) => h("option", { value: w.id, selected: w.id === m.workspace.id }, w.name)),
  );
  return select;
}

function header() {
  const m = session.me();
  const here = location.pathname;
  const nav = (path, text, active) => link(path, text, { class: active ? "nav active" : "nav", "aria-current": active ? "page" : null });
  const search = h(
    "form",
    {
      class: "search",
      role: "search",
      onsubmit: (ev) => {
        ev.preventDefault();
        const q = formValues(search).q;
        if (q) go(`/search?q=${encodeURIComponent(q)}`);
      },
    },
    h("input", { name: "q", type: "search", placeholder: "Search everything", "aria-label": "Search everything", value: here === "/search" ? new URLSearchParams(location.search).get("q") || "" : "" }),
  );
  return h(
    "header",
    { class: "top" },
    link("/", h("span", { class: "brand" }, "Shoal")),
    workspacePicker(m),
    h(
      "nav",
      { class: "main-nav", "aria-label": "Main" },
      nav("/", "Pipelines", here === "/" || here.startsWith("/boards/")),
      nav("/records/contacts", "Records", here.startsWith("/records/")),
      nav("/inbox", "Inbox", here.startsWith("/inbox")),
      ADMINS.has(m.role) ? nav("/settings", "Settings", here.startsWith("/settings")) : null,
    ),
    search,
    h("span", { class: "grow" }),
    bell(m),
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
  return list;
}

function shell(content) {
  return h("div", { class: "shell" }, header(), h("main", { class: "content" }, content));
}

function notFoundView() {
  return h("main", { class: "center" }, h("div", { class: "card" }, h("h1", {}, "Nothing here"), h("p", {}, link("/", "Back to Shoal"))));
}

window.addEventListener("popstate", render);
session.onSessionChange((m) => {
  if (m !== null) return;
  resetBell();
  if (!PUBLIC.has(location.pathname)) go("/login", { replace: true });
});
session.restore().finally(render);
