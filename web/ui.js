// What every view shares: moving between pages, links, failures said in words,
// amounts, dates, initials and a modal dialog.

import { h, replace } from "./dom.js";
import { ApiFailure } from "./api.js";

let renderer = () => {};

/** Called once by app.js: how to draw the page for the current address. */
export function setRenderer(f) {
  renderer = f;
}

/** Goes to `path` (which may carry a query) without reloading the page. */
export function go(path, { replace: swap = false } = {}) {
  if (location.pathname + location.search !== path) history[swap ? "replaceState" : "pushState"]({}, "", path);
  renderer();
}

/**
 * A link the app follows itself (with `navigate`, `go` by default); a middle click or
 * ctrl-click still opens a tab.
 */
export function link(path, text, attrs = {}, navigate = go) {
  return h(
    "a",
    {
      href: path,
      ...attrs,
      onclick: (ev) => {
        if (ev.button !== 0 || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
        ev.preventDefault();
        navigate(path);
      },
    },
    text,
  );
}

/** A failure said in words, with what each wrong field needs and the server's hint. */
export function problem(e) {
  if (!(e instanceof ApiFailure)) {
    const text = e && e.message ? e.message : String(e);
    return h("div", { class: "error", role: "alert" }, h("p", {}, text));
  }
  const fields = e.details && e.details.fields ? Object.entries(e.details.fields) : [];
  return h(
    "div",
    { class: "error", role: "alert" },
    h("p", {}, e.message),
    fields.length ? h("ul", {}, fields.map(([field, why]) => h("li", {}, `${field.replaceAll("_", " ")}: ${why}`))) : null,
    e.body && e.body.error && e.body.error.hint ? h("p", {}, e.body.error.hint) : null,
  );
}

/** Whole minor units, as the API keeps amounts, in the record's currency. */
export function money(amount, currency) {
  if (amount === null || amount === undefined) return "";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "USD", maximumFractionDigits: 0 }).format(amount / 100);
  } catch {
    return `${(amount / 100).toFixed(0)} ${currency || ""}`;
  }
}

export function initials(name) {
  return (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
}

/** A timestamp for people: "14:05" today, "3 Nov 14:05" this year, else with the year. */
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const now = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  if (d.toDateString() === now.toDateString()) return time;
  const day = d.toLocaleDateString(undefined, { day: "numeric", month: "short", ...(d.getFullYear() === now.getFullYear() ? {} : { year: "numeric" }) });
  return `${day} ${time}`;
}

/**
 * A modal dialog (the native <dialog>): `body` is its content, `actions` its buttons
 * as [label, onClick, {primary}] (onClick may return a promise; the dialog closes
 * when it settles unless it returns false). Returns the dialog element.
 */
export function dialog(title, body, actions) {
  const status = h("div", { "aria-live": "polite" });
  const el = h("dialog", { class: "modal", "aria-label": title });
  const buttons = actions.map(([label, onClick, opts = {}]) =>
    h(
      "button",
      {
        type: "button",
        class: opts.primary ? "primary" : "",
        onclick: async () => {
          replace(status);
          try {
            const keep = await onClick();
            if (keep !== false) el.close();
          } catch (e) {
            replace(status, problem(e));
          }
        },
      },
      label,
    ),
  );
  replace(el, h("h2", {}, title), body, status, h("div", { class: "modal-actions" }, buttons));
  el.addEventListener("close", () => el.remove());
  document.body.append(el);
  el.showModal();
  return el;
}
