// The workspace's settings, for owners and admins: members and invitations, API keys,
// pipelines, custom fields, teams, tags and the support inbox's set-up, with the mail
// servers of e-mail inboxes. Every list is read again after a change, and when the
// workspace topic says someone else changed it; e-mail inboxes are followed on their
// own topics, where their mail sync says how it goes.

import { h, replace } from "./dom.js";
import { api, ApiFailure } from "./api.js";
import * as live from "./live.js";
import { me } from "./session.js";
import { go, link, problem, when, dialog } from "./ui.js";

const ADMINS = new Set(["owner", "admin"]);
const ROLES = ["owner", "admin", "member", "agent", "viewer"];
// API keys may hold every family's scope but the keys' own.
const FAMILIES = ["contacts", "companies", "leads", "pipelines", "deals", "activities", "tags", "custom_fields", "teams", "members", "audit_log", "imports", "exports", "inboxes", "conversations"];
const PRIORITIES = ["none", "low", "medium", "high", "urgent"];
const DAYS = [["mon", "Monday"], ["tue", "Tuesday"], ["wed", "Wednesday"], ["thu", "Thursday"], ["fri", "Friday"], ["sat", "Saturday"], ["sun", "Sunday"]];
const ACTIONS = [
  ["set_status", "Set status"], ["set_priority", "Set priority"], ["assign", "Assign to"], ["set_team", "Set team"],
  ["add_labels", "Add labels"], ["remove_labels", "Remove labels"], ["add_note", "Add a note"], ["send_canned_response", "Send canned reply"],
];
const VARIABLES = "{{contact.name}}, {{contact.email}}, {{agent.name}}, {{conversation.number}}, {{conversation.subject}}, {{inbox.name}}, {{workspace.name}}";

let ids = 0;
const uid = () => `set-${++ids}`;
const label = (a) => a.replaceAll("_", " ");

// Names of teams, policies, members and canned responses, for selects and lists;
// read afresh by each list load.
let cache = {};
const labels = new Map();
const LOOKUPS = {
  teams: () => api("GET", "/teams?limit=200&sort=name").then((p) => p.data.map((t) => [t.id, t.name])),
  sla: () => api("GET", "/sla-policies?limit=200&sort=name").then((p) => p.data.map((s) => [s.id, s.name])),
  members: () => api("GET", "/members").then((p) => p.data.map((m) => [m.user_id, m.name || m.email])),
  canned: () => api("GET", "/canned-responses?limit=200&sort=shortcode").then((p) => p.data.map((c) => [c.id, `/${c.shortcode}`])),
};
function lookup(kind) {
  cache[kind] ||= LOOKUPS[kind]().then((pairs) => {
    for (const [id, name] of pairs) labels.set(id, name);
    return pairs;
  });
  return cache[kind];
}
const nameOf = (id) => (id ? labels.get(id) || id : "—");

export function settingsView(section, ctx) {
  const m = me();
  if (!m || !ADMINS.has(m.role)) {
    return h(
      "section",
      { class: "card settings-denied" },
      h("h1", {}, "Settings"),
      h("p", { role: "alert" }, "Settings are only for owners and admins of this workspace. Ask one of them for the change you need."),
      h("p", {}, link("/", "Back to the pipelines")),
    );
  }
  cache = {};
  const key = section || "members";
  const entry = SECTIONS.find((s) => s[0] === key);
  const pick = h(
    "select",
    { "aria-label": "Settings section", onchange: () => go(`/settings/${pick.value}`) },
    SECTIONS.map(([k, t]) => h("option", { value: k, selected: k === key }, t)),
  );
  const nav = h(
    "nav",
    { class: "settings-nav", "aria-label": "Settings" },
    h("ul", {}, SECTIONS.map(([k, t]) => h("li", {}, link(`/settings/${k}`, t, { class: k === key ? "active" : null, "aria-current": k === key ? "page" : null })))),
  );
  const body = entry ? entry[2](ctx, entry) : h("section", { class: "card" }, h("h1", {}, "No such settings"), h("p", {}, link("/settings", "All settings")));
  return h("div", { class: "settings" }, nav, h("div", { class: "settings-main" }, h("label", { class: "settings-pick" }, h("span", {}, "Section"), pick), body));
}

/** Calls `reload` (at most every 300 ms) when the workspace topic reports a change to one of `types`. */
function watch(ctx, types, reload) {
  if (!types.length) return;
  let timer = null;
  const stop = live.follow(`workspace:${me().workspace.id}`, (msg) => {
    if (msg.type !== "event" || !types.includes(msg.data && msg.data.object_type)) return;
    clearTimeout(timer);
    timer = setTimeout(reload, 300);
  });
  ctx.onLeave(() => {
    clearTimeout(timer);
    stop();
  });
}

function confirm(title, text, action, verb = "Delete") {
  dialog(title, h("p", {}, text), [["Cancel", () => {}], [verb, action, { primary: true }]]);
}

const ifMatch = (rec) => ({ headers: { "If-Match": `"${rec.version}"` } });

/** A secret the server shows once (a token, a key), with a copy button. */
function secret(title, value, name, note) {
  const input = h("input", { readonly: true, value, "aria-label": name, class: "settings-secret-value", onfocus: () => input.select() });
  const said = h("span", { "aria-live": "polite" });
  const box = h(
    "div",
    { class: "settings-secret" },
    h("h3", {}, title),
    h("p", {}, note),
    h(
      "div",
      { class: "settings-row" },
      input,
      h("button", {
        type: "button",
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(value);
            said.textContent = "Copied.";
          } catch {
            input.select();
            said.textContent = "The browser refused to copy: the text is selected, press Ctrl+C.";
          }
        },
      }, "Copy"),
      h("button", { type: "button", class: "quiet", onclick: () => box.remove() }, "Hide"),
    ),
    said,
  );
  return box;
}

function table(columns, rows, row) {
  return h(
    "table",
    { class: "settings-table" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)), h("th", { scope: "col" }, h("span", { class: "settings-hidden" }, "Actions")))),
    h("tbody", {}, rows.map(row)),
  );
}

// ---- form fields: each is {el, get()}; get() gives the API's value, null for none.

function field(f, control, extra) {
  const help = f.help ? h("small", { id: uid(), class: "muted" }, f.help) : null;
  if (help) control.setAttribute("aria-describedby", help.id);
  return h("div", { class: f.wide ? "settings-field settings-wide" : "settings-field" }, h("label", {}, h("span", {}, f.label), control), extra, help);
}

function options(sel, pairs, value, none) {
  replace(sel, none !== undefined ? h("option", { value: "" }, none) : null, pairs.map(([v, t]) => h("option", { value: v }, t)));
  if (value !== undefined && value !== null) sel.value = value;
}

function select(f, value) {
  const sel = h("select", { name: f.name, disabled: f.disabled });
  const loaded = f.lookup ? lookup(f.lookup) : Promise.resolve(f.options.map((o) => (Array.isArray(o) ? o : [o, label(o)])));
  const status = h("span");
  // Until the choices arrive the current value stays selected.
  options(sel, value ? [[value, nameOf(value)]] : [], value ?? "", f.none);
  loaded.then((pairs) => options(sel, pairs, value ?? (f.none === undefined ? undefined : ""), f.none), (e) => replace(status, problem(e)));
  return { el: field(f, sel, status), get: () => sel.value || null, control: sel };
}

function widget(f, value, fixed) {
  const g = { ...f, disabled: fixed };
  switch (f.type) {
    case "select":
      return select(g, value);
    case "check": {
      const box = h("input", { type: "checkbox", name: f.name, checked: value ?? f.initial, disabled: fixed });
      return { el: h("label", { class: "settings-check" }, box, h("span", {}, f.label)), get: () => box.checked };
    }
    case "number": {
      const input = h("input", { type: "number", name: f.name, min: f.min, max: f.max, value: value ?? "", disabled: fixed });
      return { el: field(g, input), get: () => (input.value === "" ? null : Number(input.value)) };
    }
    case "list": {
      const sep = f.sep || ",";
      const input = h("input", { type: "text", name: f.name, value: (value || []).join(`${sep} `), disabled: fixed });
      return { el: field(g, input), get: () => splitList(input.value, sep) };
    }
    case "hours":
      return hours(value);
    case "actions":
      return actions(value);
    case "scopes":
      return scopes();
    case "members":
      return memberChecks(f, value);
    default: {
      const tag = f.type === "textarea" ? "textarea" : "input";
      const input = h(tag, { name: f.name, type: tag === "input" ? "text" : null, list: f.datalist, disabled: fixed, rows: 3 });
      input.value = value ?? "";
      return { el: field(g, input, f.datalist ? zones(f.datalist) : null), get: () => input.value.trim() || (f.keep ? "" : null) };
    }
  }
}

function splitList(text, sep = ",") {
  const items = text.split(sep === "," ? "," : /[\s,]+/).map((s) => s.trim()).filter(Boolean);
  return items.length ? items : null;
}

function zones(id) {
  const all = Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [];
  return h("datalist", { id }, all.map((z) => h("option", { value: z })));
}

/** An inbox's weekly hours: one line of intervals a day, all empty for always open. */
function hours(value) {
  const inputs = DAYS.map(([d]) => h("input", { type: "text", placeholder: "closed", value: ((value || {})[d] || []).map((i) => i.join("-")).join(", ") }));
  const el = h(
    "fieldset",
    { class: "settings-wide settings-hours" },
    h("legend", {}, "Weekly hours"),
    h("p", { class: "muted" }, "Intervals such as 09:00-12:00, 13:00-17:00 in the inbox's time zone. A day left empty is closed; every day empty: always open."),
    DAYS.map(([, name], i) => h("label", {}, h("span", {}, name), inputs[i])),
  );
  const get = () => {
    const out = {};
    DAYS.forEach(([d], i) => {
      const list = splitList(inputs[i].value);
      if (list) out[d] = list.map((iv) => iv.split("-").map((t) => t.trim()));
    });
    return Object.keys(out).length ? out : null;
  };
  return { el, get };
}

function actionValue(type, value) {
  const pick = (pairs, none) => {
    const sel = h("select", { "aria-label": "Value" });
    options(sel, pairs, value, none);
    return { el: sel, get: () => sel.value || null };
  };
  const pickLookup = (kind, none) => {
    const sel = h("select", { "aria-label": "Value" });
    options(sel, value ? [[value, nameOf(value)]] : [], value ?? "", none);
    lookup(kind).then(
      (pairs) => options(sel, pairs, value ?? "", none),
      (e) => sel.append(h("option", { disabled: true }, `The choices could not be loaded: ${e.message}`)),
    );
    return { el: sel, get: () => sel.value || null };
  };
  switch (type) {
    case "set_status":
      return pick(["open", "pending", "resolved"].map((s) => [s, s]));
    case "set_priority":
      return pick(PRIORITIES.map((s) => [s, s]));
    case "assign":
      return pickLookup("members", "Nobody");
    case "set_team":
      return pickLookup("teams", "No team");
    case "send_canned_response":
      return pickLookup("canned", "Choose a canned response");
    case "add_labels":
    case "remove_labels": {
      const input = h("input", { type: "text", "aria-label": "Labels, separated by commas", value: (value || []).join(", ") });
      return { el: input, get: () => splitList(input.value) || [] };
    }
    default: {
      const input = h("textarea", { "aria-label": "Note", rows: 2 });
      input.value = value || "";
      return { el: input, get: () => input.value.trim() };
    }
  }
}

/** A macro's actions, in order: each a type and its value. */
function actions(value) {
  const list = h("ol", { class: "settings-steps" });
  const rows = [];
  const add = (a) => {
    const type = h("select", { "aria-label": "Action" }, ACTIONS.map(([v, t]) => h("option", { value: v, selected: v === a.type }, t)));
    const slot = h("span", { class: "settings-grow" });
    let val;
    const show = (v) => {
      val = actionValue(type.value, v);
      replace(slot, val.el);
    };
    type.addEventListener("change", () => show(undefined));
    show(a.value);
    const row = { get: () => ({ type: type.value, value: val.get() }) };
    const li = h("li", { class: "settings-row" }, type, slot, h("button", {
      type: "button",
      class: "quiet",
      onclick: () => {
        rows.splice(rows.indexOf(row), 1);
        li.remove();
      },
    }, "Remove"));
    rows.push(row);
    list.append(li);
  };
  (value && value.length ? value : [{ type: "set_status" }]).forEach(add);
  const el = h("fieldset", { class: "settings-wide" }, h("legend", {}, "Actions, applied in order"), list, h("button", { type: "button", onclick: () => add({ type: "add_note" }) }, "Add an action"));
  return { el, get: () => rows.map((r) => r.get()) };
}

/** An API key's scopes: for each family none, read, or write (which includes read). */
function scopes() {
  const sels = FAMILIES.map((f) => [f, h("select", { name: `scope-${f}`, "aria-label": label(f) }, ["", "read", "write"].map((a) => h("option", { value: a }, a || "no access")))]);
  const el = h(
    "fieldset",
    { class: "settings-wide settings-scopes" },
    h("legend", {}, "Scopes"),
    sels.map(([f, sel]) => h("label", {}, h("span", {}, label(f)), sel)),
  );
  return { el, get: () => sels.filter(([, s]) => s.value).map(([f, s]) => `${f}:${s.value}`) };
}

function memberChecks(f, value) {
  const box = h("div", { class: "settings-checks" }, h("span", { class: "muted" }, "Loading members…"));
  const chosen = new Set(value || []);
  let checks = [];
  lookup("members").then((pairs) => {
    checks = pairs.map(([id, name]) => [id, h("input", { type: "checkbox", checked: chosen.has(id) })]);
    replace(box, checks.map(([id, c]) => h("label", { class: "settings-check" }, c, h("span", {}, nameOf(id)))));
  }, (e) => replace(box, problem(e)));
  return {
    el: h("fieldset", { class: "settings-wide" }, h("legend", {}, f.label), box),
    get: () => {
      const out = checks.filter(([, c]) => c.checked).map(([id]) => id);
      return out.length ? out : null;
    },
  };
}

/** A form for a new record, or for changing `rec`; `done(saved)` after it is saved. */
function recordForm(spec, rec, done, reopen) {
  const editing = !!rec;
  const parts = spec.fields.map((f) => [f, widget(f, rec ? rec[f.name] : undefined, editing && f.fixed)]);
  const status = h("div", { "aria-live": "polite" });
  const save = h("button", { type: "submit", class: "primary" }, editing ? "Save" : `Create ${spec.noun}`);
  const form = h(
    "form",
    {
      class: "card settings-form",
      "aria-label": editing ? `Edit ${spec.noun}` : `New ${spec.noun}`,
      onsubmit: async (ev) => {
        ev.preventDefault();
        replace(status);
        const body = {};
        for (const [f, w] of parts) {
          if (editing && f.fixed) continue;
          const v = w.get();
          if (v !== null || editing) body[f.name] = v;
        }
        save.disabled = true;
        try {
          const out = editing
            ? await api("PATCH", `${spec.path}/${rec.id}`, { ...body, version: rec.version })
            : await api("POST", spec.path, body);
          done(out);
        } catch (e) {
          // Someone changed it meanwhile: offer their version to edit again.
          const current = e.code === "version_conflict" && e.details && e.details.current;
          replace(status, problem(e), current && reopen ? h("button", { type: "button", onclick: () => reopen(current) }, "Edit the current version") : null);
        } finally {
          save.disabled = false;
        }
      },
    },
    h("h3", {}, editing ? `Edit ${spec.noun} “${rec[spec.title]}”` : `New ${spec.noun}`),
    h("div", { class: "settings-fields" }, parts.map(([, w]) => w.el)),
    status,
    h("div", { class: "settings-row" }, save, editing ? h("button", { type: "button", onclick: () => done(null) }, "Cancel") : null),
  );
  return form;
}

/** A section listing one kind of record, with a form to create and edit them. */
function recordSection(spec, ctx) {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const listStatus = h("div", { "aria-live": "polite" });
  const shown = h("div", { "aria-live": "polite" });
  const formSlot = h("div");
  let filter = "";
  let editing = null;

  const fresh = () => {
    editing = null;
    replace(formSlot, recordForm(spec, null, saved));
  };
  function saved(rec) {
    if (rec && spec.created && !editing) spec.created(rec, shown);
    fresh();
    if (rec) load();
  }
  /** Puts `el` (a record's own panel, such as an inbox's mail servers) in the form's place. */
  function open(el) {
    editing = null;
    replace(formSlot, el);
    el.scrollIntoView({ block: "nearest" });
  }
  const tools = { shown, status: listStatus, open, close: fresh, reload: () => load() };
  const row = (rec) =>
    h(
      "tr",
      { "data-id": rec.id },
      spec.columns.map(([name, cell]) => h("td", { "data-label": name }, cell(rec))),
      h(
        "td",
        { class: "settings-buttons" },
        h("button", { type: "button", "aria-label": `Edit ${rec[spec.title]}`, onclick: () => edit(rec) }, "Edit"),
        spec.more ? spec.more(rec, tools) : null,
        h("button", { type: "button", class: "danger", "aria-label": `Delete ${rec[spec.title]}`, onclick: () => remove(rec) }, "Delete"),
      ),
    );
  async function load() {
    try {
      cache = {};
      await Promise.all((spec.refs || []).map(lookup));
      const page = await api("GET", `${spec.path}?limit=200&sort=${spec.sort}${filter}`);
      replace(
        list,
        page.data.length ? table(spec.columns.map((c) => c[0]), page.data, row) : h("p", { class: "muted" }, `No ${spec.plural} yet.`),
        page.next_cursor ? h("p", { class: "muted" }, "Only the first 200 are shown.") : null,
      );
      follow(page.data);
    } catch (e) {
      replace(list, problem(e));
    }
  }

  // Records with a topic of their own (e-mail inboxes) are followed while listed: what
  // the server changes on them by itself (how the mail sync goes) is drawn in their
  // row as it happens. Anything else changed elsewhere reads the list again.
  const followed = new Map(); // topic → {rec, stop}
  let again = null;
  const reloadSoon = () => {
    clearTimeout(again);
    again = setTimeout(load, 300);
  };
  function follow(recs) {
    if (!spec.follow) return;
    const keep = new Set();
    for (const rec of recs) {
      const topic = spec.follow.topic(rec);
      if (!topic) continue;
      keep.add(topic);
      if (followed.has(topic)) {
        followed.get(topic).rec = rec;
        continue;
      }
      const entry = { rec };
      entry.stop = live.follow(topic, (msg) => onRecordEvent(entry, msg));
      followed.set(topic, entry);
    }
    for (const [topic, entry] of followed) {
      if (keep.has(topic)) continue;
      entry.stop();
      followed.delete(topic);
    }
  }
  function onRecordEvent(entry, msg) {
    const d = msg.data || {};
    if (msg.type !== "event" || d.id !== entry.rec.id || !msg.kind.startsWith(`${spec.follow.type}.`)) return;
    if (msg.kind !== `${spec.follow.type}.updated` || !d.record) return reloadSoon();
    if (d.record.version <= entry.rec.version) return;
    const own = new Set([...spec.follow.server, "version", "updated_at"]);
    const before = entry.rec;
    const others = Object.keys({ ...before, ...d.record }).filter((k) => !own.has(k));
    if (others.some((k) => JSON.stringify(before[k]) !== JSON.stringify(d.record[k]))) return reloadSoon();
    // Only what the server keeps changed: the row takes the new version, and so does
    // the record an open form edits if it was the row's, so that saving the form is
    // not refused as a conflict (an older one still is: someone else changed it).
    const update = Object.fromEntries([...own].map((k) => [k, d.record[k]]));
    const form = editing && editing !== before && editing.id === before.id && editing.version === before.version ? editing : null;
    Object.assign(before, update);
    if (form) Object.assign(form, update);
    const tr = list.querySelector(`tr[data-id="${CSS.escape(before.id)}"]`);
    if (!tr) return;
    spec.columns.forEach(([, cell], i) => replace(tr.cells[i], cell(before)));
  }
  ctx.onLeave(() => {
    clearTimeout(again);
    for (const entry of followed.values()) entry.stop();
    followed.clear();
  });

  function edit(rec) {
    editing = rec;
    const form = recordForm(spec, rec, saved, edit);
    replace(formSlot, form);
    form.scrollIntoView({ block: "nearest" });
    form.querySelector("input:not([disabled]), select:not([disabled]), textarea")?.focus();
  }
  function remove(rec) {
    confirm(`Delete ${spec.noun}`, `Delete the ${spec.noun} “${rec[spec.title]}”? This cannot be undone.`, async () => {
      await api("DELETE", `${spec.path}/${rec.id}`, undefined, ifMatch(rec));
      replace(listStatus, h("p", { class: "muted" }, `Deleted “${rec[spec.title]}”.`));
      if (editing && editing.id === rec.id) fresh();
      load();
    });
  }

  const filterEl = spec.filter
    ? h("label", { class: "settings-filter" }, h("span", {}, spec.filter[1]), h("select", {
        onchange: (ev) => {
          filter = ev.target.value ? `&${spec.filter[0]}=${ev.target.value}` : "";
          load();
        },
      }, h("option", { value: "" }, "All"), spec.filter[2].map((o) => h("option", { value: o }, label(o)))))
    : null;

  fresh();
  load();
  watch(ctx, spec.types || [], load);
  return h("section", { class: "settings-section" }, h("h1", {}, spec.heading), spec.intro ? h("p", { class: "muted" }, spec.intro) : null, shown, filterEl, listStatus, list, formSlot);
}

// ---- members and invitations

function membersSection() {
  const members = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const invites = h("div");
  const status = h("div", { "aria-live": "polite" });
  const shown = h("div", { "aria-live": "polite" });
  const inviteStatus = h("div", { "aria-live": "polite" });
  const self = me();

  async function load() {
    try {
      const [ms, inv] = await Promise.all([api("GET", "/members"), api("GET", "/invitations")]);
      const names = new Map(ms.data.map((m) => [m.user_id, m.name]));
      replace(members, table(["Name", "E-mail", "Role", "Joined"], ms.data, (m) => {
        const role = h("select", { "aria-label": `Role of ${m.name}`, onchange: () => setRole(m, role) }, ROLES.map((r) => h("option", { value: r, selected: r === m.role }, r)));
        return h(
          "tr",
          { "data-id": m.user_id },
          h("td", { "data-label": "Name" }, m.name, m.user_id === self.user.id ? h("span", { class: "muted" }, " (you)") : null),
          h("td", { "data-label": "E-mail" }, m.email),
          h("td", { "data-label": "Role" }, role),
          h("td", { "data-label": "Joined" }, when(m.joined_at)),
          h("td", { class: "settings-buttons" }, h("button", { type: "button", class: "danger", "aria-label": `Remove ${m.name}`, onclick: () => removeMember(m) }, "Remove")),
        );
      }));
      replace(
        invites,
        inv.data.length
          ? table(["E-mail", "Role", "Invited by", "Expires"], inv.data, (i) =>
              h(
                "tr",
                {},
                h("td", { "data-label": "E-mail" }, i.email),
                h("td", { "data-label": "Role" }, i.role),
                h("td", { "data-label": "Invited by" }, names.get((i.invited_by || "").replace(/^user:/, "")) || i.invited_by),
                h("td", { "data-label": "Expires" }, when(i.expires_at)),
                h("td", { class: "settings-buttons" }, h("button", {
                  type: "button",
                  "aria-label": `Revoke the invitation of ${i.email}`,
                  onclick: () => confirm("Revoke invitation", `Revoke the invitation of ${i.email}? Its token stops working.`, async () => {
                    await api("DELETE", `/invitations/${i.id}`);
                    load();
                  }, "Revoke"),
                }, "Revoke")),
              ))
          : h("p", { class: "muted" }, "No pending invitations."),
      );
    } catch (e) {
      replace(status, problem(e));
    }
  }
  async function setRole(m, sel) {
    replace(status);
    try {
      await api("PATCH", `/members/${m.user_id}`, { role: sel.value });
      replace(status, h("p", { class: "muted" }, `${m.name} is now ${sel.value}.`));
      load();
    } catch (e) {
      sel.value = m.role;
      replace(status, problem(e));
    }
  }
  function removeMember(m) {
    confirm("Remove member", `Remove ${m.name} (${m.email}) from the workspace? They lose access at once.`, async () => {
      await api("DELETE", `/members/${m.user_id}`);
      replace(status, h("p", { class: "muted" }, `${m.name} was removed.`));
      load();
    }, "Remove");
  }

  const email = h("input", { type: "email", name: "email", required: true, autocomplete: "off" });
  const role = h("select", { name: "role" }, ROLES.map((r) => h("option", { value: r, selected: r === "member" }, r)));
  const send = h("button", { type: "submit", class: "primary" }, "Invite");
  const form = h(
    "form",
    {
      class: "card settings-form",
      "aria-label": "Invite someone",
      onsubmit: async (ev) => {
        ev.preventDefault();
        replace(inviteStatus);
        send.disabled = true;
        try {
          const inv = await api("POST", "/invitations", { email: email.value.trim(), role: role.value });
          const joinLink = `${location.origin}/signup#invitation=${encodeURIComponent(inv.token)}`;
          replace(
            shown,
            secret(`Invitation for ${inv.email} (${inv.role})`, inv.token, "Invitation token",
              "Pass this token on to them: they join by signing up or signing in with it, within 7 days. It is shown only now; Shoal keeps no readable copy."),
            secret("Or send them this link", joinLink, "Invitation link",
              "Opening it lets them join with a new account or the one they have (its password proves it)."),
          );
          email.value = "";
          load();
        } catch (e) {
          replace(inviteStatus, problem(e));
        } finally {
          send.disabled = false;
        }
      },
    },
    h("h3", {}, "Invite someone"),
    h("div", { class: "settings-fields" }, h("label", {}, h("span", {}, "E-mail"), email), h("label", {}, h("span", {}, "Role"), role)),
    h("p", { class: "muted" }, "Only owners may invite owners or make someone an owner."),
    inviteStatus,
    h("div", { class: "settings-row" }, send),
  );
  load();
  return h("section", { class: "settings-section" }, h("h1", {}, "Members and roles"), status, members, h("h2", {}, "Invitations"), shown, form, h("h3", {}, "Pending invitations"), invites);
}

// ---- API keys

function keysSection() {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const status = h("div", { "aria-live": "polite" });
  const shown = h("div", { "aria-live": "polite" });
  async function load() {
    try {
      const page = await api("GET", "/api-keys");
      replace(list, page.data.length
        ? table(["Name", "Key", "Scopes", "Created", "Last used"], page.data, (k) =>
            h(
              "tr",
              { "data-id": k.id },
              h("td", { "data-label": "Name" }, k.name),
              h("td", { "data-label": "Key" }, h("code", {}, `${k.prefix}…`)),
              h("td", { "data-label": "Scopes" }, k.scopes.join(", ")),
              h("td", { "data-label": "Created" }, when(k.created_at)),
              h("td", { "data-label": "Last used" }, k.last_used_at ? when(k.last_used_at) : "never"),
              h("td", { class: "settings-buttons" }, k.revoked_at ? h("span", { class: "muted" }, `revoked ${when(k.revoked_at)}`) : h("button", {
                type: "button",
                class: "danger",
                "aria-label": `Revoke ${k.name}`,
                onclick: () => confirm("Revoke API key", `Revoke “${k.name}”? Whatever uses it stops working at once.`, async () => {
                  await api("DELETE", `/api-keys/${k.id}`);
                  replace(status, h("p", { class: "muted" }, `“${k.name}” was revoked.`));
                  load();
                }, "Revoke"),
              }, "Revoke")),
            ))
        : h("p", { class: "muted" }, "No API keys yet."));
    } catch (e) {
      replace(list, problem(e));
    }
  }
  const spec = { noun: "API key", path: "/api-keys", fields: [{ name: "name", label: "Name", keep: true }, { name: "scopes", type: "scopes" }] };
  const slot = h("div");
  const fresh = () => replace(slot, recordForm(spec, null, (k) => {
    replace(shown, secret(`API key “${k.name}”`, k.key, "API key", "Copy it now: you will not see it again. Shoal keeps only a digest of it."));
    fresh();
    load();
  }));
  fresh();
  load();
  return h("section", { class: "settings-section" }, h("h1", {}, "API keys"), h("p", { class: "muted" }, "Keys let other programs use the API. Write includes read; a key can never create keys."), shown, status, list, slot);
}

// ---- pipelines and stages

function pipelinesSection() {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  async function load() {
    try {
      const page = await api("GET", "/pipelines?limit=200&sort=name");
      replace(list, page.data.length ? page.data.map((p) => pipeline(p)) : h("p", { class: "muted" }, "No pipelines yet."));
    } catch (e) {
      replace(list, problem(e));
    }
  }
  // Runs a change and says how it went in `status`. Only what changed is drawn again,
  // so edits not yet saved elsewhere on the page stay.
  const act = (status, f) => async (ev) => {
    ev.preventDefault();
    replace(status);
    try {
      const said = await f();
      if (said) replace(status, h("p", { class: "muted" }, said));
    } catch (e) {
      replace(status, problem(e));
    }
  };
  function pipeline(p, said) {
    // `said`: how the change that drew this card went (words, or a failure's element).
    const status = h("div", { "aria-live": "polite" }, typeof said === "string" ? h("p", { class: "muted" }, said) : said);
    const name = h("input", { type: "text", value: p.name, "aria-label": "Pipeline name" });
    const heading = h("h2", { class: "settings-grow" }, link(`/boards/${p.id}`, p.name));
    const base = `/pipelines/${p.id}/stages`;
    // The pipeline's card drawn again from the server, after a stage is added or deleted.
    const redraw = async (said) => card.replaceWith(pipeline(await api("GET", `/pipelines/${p.id}`), said));
    // A stage moved up or down: every stage whose place changes gets its new position
    // (one write each, with its version), then the card is drawn from the server.
    const reorder = (i, by) =>
      act(status, async () => {
        const order = [...p.stages];
        const [moved] = order.splice(i, 1);
        order.splice(i + by, 0, moved);
        try {
          for (const [at, st] of order.entries()) {
            if (st.position !== at) await api("PATCH", `${base}/${st.id}`, { position: at, version: st.version });
          }
        } catch (e) {
          // Part of the order may be written: the card shows what the server holds,
          // with the reason.
          await redraw(problem(e));
          return;
        }
        await redraw(`Moved the stage “${moved.name}” ${by < 0 ? "up" : "down"}.`);
      });
    const stageRow = (s, i) => {
      const sName = h("input", { type: "text", value: s.name, "aria-label": `Name of stage ${i + 1}` });
      const prob = h("input", { type: "number", min: 0, max: 100, value: s.probability, "aria-label": `Probability of ${s.name}, %` });
      const kind = h("select", { "aria-label": `Kind of ${s.name}` }, ["open", "won", "lost"].map((k) => h("option", { value: k, selected: k === s.kind }, k)));
      const row = h(
        "tr",
        { "data-id": s.id },
        h("td", { "data-label": "#" }, String(i + 1)),
        h("td", { "data-label": "Stage" }, sName),
        h("td", { "data-label": "Probability %" }, prob),
        h("td", { "data-label": "Kind" }, kind),
        h(
          "td",
          { class: "settings-buttons" },
          h("button", { type: "button", class: "quiet", disabled: i === 0, "aria-label": `Move stage ${s.name} up`, onclick: reorder(i, -1) }, "↑"),
          h("button", { type: "button", class: "quiet", disabled: i === p.stages.length - 1, "aria-label": `Move stage ${s.name} down`, onclick: reorder(i, 1) }, "↓"),
          h("button", {
            type: "button",
            "aria-label": `Save stage ${s.name}`,
            onclick: act(status, async () => {
              const body = { name: sName.value.trim(), probability: prob.value === "" ? null : Number(prob.value), kind: kind.value, version: s.version };
              const saved = await api("PATCH", `${base}/${s.id}`, body);
              // Kept for what comes next on this card (a move up or down needs its version).
              p.stages[i] = saved;
              row.replaceWith(stageRow(saved, i));
              return `Saved the stage “${saved.name}”.`;
            }),
          }, "Save"),
          h("button", {
            type: "button",
            class: "danger",
            "aria-label": `Delete stage ${s.name}`,
            onclick: () => confirm("Delete stage", `Delete the stage “${s.name}”? A stage that holds deals cannot be deleted.`, async () => {
              await api("DELETE", `${base}/${s.id}`, undefined, ifMatch(s));
              await redraw();
            }),
          }, "Delete"),
        ),
      );
      return row;
    };
    const newStage = h("input", { type: "text", name: "name", "aria-label": `New stage of ${p.name}`, placeholder: "New stage" });
    const card = h(
      "article",
      { class: "card settings-pipeline", "data-id": p.id },
      h(
        "form",
        {
          class: "settings-row",
          onsubmit: act(status, async () => {
            const saved = await api("PATCH", `/pipelines/${p.id}`, { name: name.value.trim(), version: p.version });
            Object.assign(p, saved);
            heading.firstChild.textContent = saved.name;
            return `Renamed “${saved.name}”.`;
          }),
        },
        heading,
        name,
        h("button", { type: "submit" }, "Rename"),
        h("button", {
          type: "button",
          class: "danger",
          "aria-label": `Delete pipeline ${p.name}`,
          onclick: () => confirm("Delete pipeline", `Delete the pipeline “${p.name}” and its stages? A pipeline that holds deals cannot be deleted.`, async () => {
            await api("DELETE", `/pipelines/${p.id}`, undefined, ifMatch(p));
            load();
          }),
        }, "Delete"),
      ),
      status,
      (p.stages || []).length ? table(["#", "Stage", "Probability %", "Kind"], p.stages, stageRow) : h("p", { class: "muted" }, "No stages yet."),
      h(
        "form",
        {
          class: "settings-row",
          onsubmit: act(status, async () => {
            await api("POST", base, { name: newStage.value.trim() || null });
            await redraw();
          }),
        },
        newStage,
        h("button", { type: "submit" }, "Add stage"),
      ),
    );
    return card;
  }
  const name = h("input", { type: "text", name: "name" });
  const stages = h("textarea", { name: "stages", rows: 4, placeholder: "New\nQualified\nWon" });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "card settings-form",
      "aria-label": "New pipeline",
      onsubmit: act(status, async () => {
        const names = stages.value.split("\n").map((s) => s.trim()).filter(Boolean);
        await api("POST", "/pipelines", { name: name.value.trim() || null, stages: names.map((s) => ({ name: s })) });
        name.value = "";
        stages.value = "";
        load();
      }),
    },
    h("h3", {}, "New pipeline"),
    h("div", { class: "settings-fields" }, h("label", {}, h("span", {}, "Name"), name), h("label", {}, h("span", {}, "Stages, one per line, in order"), stages)),
    status,
    h("div", { class: "settings-row" }, h("button", { type: "submit", class: "primary" }, "Create pipeline")),
  );
  load();
  return h("section", { class: "settings-section" }, h("h1", {}, "Pipelines and stages"), list, form);
}

// ---- the record sections

const targets = (p) =>
  [["first", p.first_response_minutes], ["next", p.next_response_minutes], ["resolution", p.resolution_minutes]]
    .filter(([, m]) => m)
    .map(([t, m]) => `${t} ${m} min`)
    .join(" · ");

const summary = (a) => {
  const v = Array.isArray(a.value) ? a.value.join(", ") : ["assign", "set_team", "send_canned_response"].includes(a.type) ? nameOf(a.value) : a.value;
  return `${(ACTIONS.find(([t]) => t === a.type) || [, a.type])[1]}: ${v ?? "nobody"}`;
};

function preview(rec) {
  const sel = h("select", { "aria-label": "Conversation" }, h("option", { value: "" }, "Loading conversations…"));
  const out = h("div", { "aria-live": "polite", class: "settings-preview" });
  api("GET", "/conversations?limit=20").then(
    (p) => options(sel, p.data.map((c) => [c.id, `#${c.number} ${c.subject || ""}`]), undefined, p.data.length ? undefined : "No conversations yet"),
    (e) => replace(out, problem(e)),
  );
  dialog(`Preview /${rec.shortcode}`, h("div", {}, h("label", {}, h("span", {}, "Filled in for"), sel), out), [
    ["Close", () => {}],
    ["Preview", async () => {
      const r = await api("POST", `/canned-responses/${rec.id}/render`, { conversation_id: sel.value });
      replace(out, h("p", { class: "settings-quote" }, r.text));
      return false;
    }, { primary: true }],
  ]);
}

// ---- an e-mail inbox's servers

const SECURITY = [["tls", "TLS"], ["starttls", "STARTTLS"], ["none", "None (this machine only)"]];
// The port the server uses when none is given, by security.
const USUAL_PORT = { imap: { tls: 993, other: 143 }, smtp: { tls: 465, other: 587 } };
// Where a connection test stopped.
const STAGES = { dns: "finding the host", tcp: "connecting", tls: "setting up TLS", auth: "signing in", folder: "opening the folder", protocol: "talking with the server" };
const SYNC = { connecting: "Connecting", importing: "Importing", syncing: "Syncing", failing: "Failing" };

/** An inbox's channel; for e-mail, how its sync goes, in the server's words. */
function channelCell(r) {
  if (r.channel !== "email") return "API";
  const state = r.channel_status;
  return [
    "E-mail",
    state ? h("span", { class: `settings-status settings-status-${state}` }, SYNC[state] || state) : h("span", { class: "muted" }, ", not connected"),
    r.channel_detail ? h("small", { class: "settings-status-detail" }, r.channel_detail) : null,
  ];
}

/**
 * The panel of an e-mail inbox's servers, drawn once they are read; an inbox without
 * servers yet (the server answers not_found) gets an empty form.
 */
function mailSettings(inbox, tools) {
  const panel = h("div", { class: "card settings-form" }, h("p", { class: "muted" }, `Loading the mail servers of “${inbox.name}”…`));
  const show = (view) => {
    if (!panel.isConnected) return;
    const form = mailForm(inbox, view, tools);
    panel.replaceWith(form);
    form.scrollIntoView({ block: "nearest" });
    form.querySelector("input")?.focus();
  };
  api("GET", `/inboxes/${inbox.id}/email`).then(show, (e) => {
    if (e.code === "not_found") show(null);
    else replace(panel, problem(e), h("div", { class: "settings-row" }, h("button", { type: "button", onclick: tools.close }, "Close")));
  });
  return panel;
}

/**
 * Where an e-mail inbox reads its mail (IMAP) and sends its replies (SMTP), from `view`
 * (the saved servers, or null). Passwords are never shown: one left empty keeps the
 * saved one. The form is checked by the server alone (novalidate), so a test and a save
 * show their reasons the same way, beside the fields they are about.
 */
function mailForm(inbox, view, tools, said) {
  // Each input under the key the server names it by when it refuses it ("imap.host").
  const inputs = new Map();
  const entry = (key, text, control, help) => {
    const why = h("small", { id: uid(), class: "settings-invalid", hidden: true });
    const note = help ? h("small", { id: uid(), class: "muted" }, help) : null;
    control.setAttribute("aria-describedby", note ? `${note.id} ${why.id}` : why.id);
    inputs.set(key, { control, why });
    return h("div", { class: "settings-field" }, h("label", {}, h("span", {}, text), control), note, why);
  };
  const text = (key, value, attrs = {}) => h("input", { type: "text", name: key, value: value ?? "", autocomplete: "off", spellcheck: "false", ...attrs });
  const number = (key, value, min, max) => h("input", { type: "number", name: key, min, max, value: value ?? "" });
  const orNull = (input) => (input.value === "" ? null : Number(input.value));

  function server(side, legend, v, extra) {
    const host = text(`${side}.host`, v && v.host);
    const port = number(`${side}.port`, v && v.port, 1, 65535);
    const security = h("select", { name: `${side}.security` }, SECURITY.map(([k, t]) => h("option", { value: k }, t)));
    security.value = (v && v.security) || "tls";
    const username = text(`${side}.username`, v && v.username);
    const password = h("input", { type: "password", name: `${side}.password`, autocomplete: "new-password" });
    // An empty port is the usual one for the security chosen: the placeholder says which.
    const usual = () => {
      port.placeholder = String(USUAL_PORT[side][security.value === "tls" ? "tls" : "other"]);
    };
    security.addEventListener("change", usual);
    usual();
    const el = h(
      "fieldset",
      { class: "settings-wide settings-mail" },
      h("legend", {}, legend),
      entry(`${side}.host`, "Host", host),
      entry(`${side}.port`, "Port", port, "empty: the usual one for the security"),
      entry(`${side}.security`, "Security", security),
      entry(`${side}.username`, "Username", username, side === "smtp" ? "empty: send without signing in" : null),
      entry(`${side}.password`, "Password", password, v && v.password_set ? "saved; leave empty to keep" : null),
      extra ? extra.el : null,
    );
    const get = () => ({
      host: host.value.trim(),
      port: orNull(port),
      security: security.value,
      // IMAP needs a username (the server says so when it is empty); SMTP may go without.
      username: username.value.trim() || (side === "smtp" ? null : ""),
      // Passwords are taken as typed; none keeps the saved one.
      password: password.value || null,
      ...(extra ? extra.get() : {}),
    });
    return { el, get };
  }

  const folder = text("imap.folder", view && view.imap.folder, { placeholder: "INBOX" });
  const importDays = number("imap.import_days", view && view.imap.import_days, 0, 3650);
  const pollSecs = number("imap.poll_secs", view && view.imap.poll_secs, 5, 3600);
  const imap = server("imap", "Incoming mail (IMAP)", view && view.imap, {
    el: [
      entry("imap.folder", "Folder", folder, "empty: INBOX"),
      entry("imap.import_days", "Import days", importDays, "how far back the first import goes; empty: 30"),
      entry("imap.poll_secs", "Poll seconds", pollSecs, "how often to look for mail when the server cannot say (no IDLE); empty: 60"),
    ],
    get: () => ({ folder: folder.value.trim() || null, import_days: orNull(importDays), poll_secs: orNull(pollSecs) }),
  });
  const smtp = server("smtp", "Outgoing mail (SMTP)", view && view.smtp);
  const fromName = text("from_name", view && view.from_name);
  const fromAddress = h("input", { type: "email", name: "from_address", value: (view && view.from_address) || "", autocomplete: "off" });
  const body = () => ({
    imap: imap.get(),
    smtp: smtp.get(),
    from_name: fromName.value.trim() || null,
    from_address: fromAddress.value.trim(),
  });

  const status = h("div", { "aria-live": "polite" }, said ? h("p", { class: "notice" }, said) : null);
  const results = h("div", { "aria-live": "polite" });
  const save = h("button", { type: "submit", class: "primary" }, "Save");
  const test = h("button", { type: "button", onclick: () => run(test, "Testing…", tested) }, "Test connection");

  /** Marks the fields the server refused, with its reasons; says the rest above the buttons. */
  function refused(e) {
    const fields = (e.details && e.details.fields) || {};
    const rest = {};
    let marked = false;
    for (const [key, why] of Object.entries(fields)) {
      const at = inputs.get(key);
      if (!at) {
        rest[key] = why;
        continue;
      }
      at.control.setAttribute("aria-invalid", "true");
      at.why.textContent = why;
      at.why.hidden = false;
      marked = true;
    }
    const left = e instanceof ApiFailure && marked
      ? new ApiFailure(e.status, { ...e.body, error: { ...e.body.error, message: `${e.message}: see beside the fields`, details: { ...e.details, fields: rest } } })
      : e;
    replace(status, problem(left));
    form.querySelector('[aria-invalid="true"]')?.focus();
  }
  function clear() {
    for (const { control, why } of inputs.values()) {
      control.removeAttribute("aria-invalid");
      why.hidden = true;
      why.textContent = "";
    }
    replace(status);
  }
  // One request at a time: the buttons wait for it, and `button` says what is going on.
  async function run(button, busy, work) {
    const idle = button.textContent;
    clear();
    save.disabled = test.disabled = true;
    button.textContent = busy;
    form.setAttribute("aria-busy", "true");
    try {
      await work();
    } catch (e) {
      refused(e);
    } finally {
      save.disabled = test.disabled = false;
      button.textContent = idle;
      form.removeAttribute("aria-busy");
    }
  }
  async function tested() {
    replace(results, h("p", { class: "muted" }, "Testing both servers; one that does not answer takes up to 10 seconds."));
    try {
      const out = await api("POST", `/inboxes/${inbox.id}/email/test`, body());
      replace(results, h("ul", { class: "settings-tests", "aria-label": "Connection test" }, outcome("Incoming mail (IMAP)", out.imap), outcome("Outgoing mail (SMTP)", out.smtp)));
    } catch (e) {
      replace(results);
      throw e;
    }
  }
  async function saved() {
    const out = await api("PUT", `/inboxes/${inbox.id}/email`, body());
    tools.reload();
    form.replaceWith(mailForm(inbox, out, tools, "Saved. The inbox connects with these servers now; how it goes shows in its row."));
  }

  const form = h(
    "form",
    {
      class: "card settings-form",
      "aria-label": `E-mail settings of ${inbox.name}`,
      novalidate: true,
      onsubmit: (ev) => {
        ev.preventDefault();
        run(save, "Saving…", saved);
      },
    },
    h("h3", {}, `E-mail settings of “${inbox.name}”`),
    h("p", { class: "muted" }, "Mail is read from the IMAP folder and replies are sent over SMTP from the From address. Passwords are kept sealed and never shown again."),
    h(
      "div",
      { class: "settings-fields" },
      imap.el,
      smtp.el,
      entry("from_name", "From name", fromName, "such as Acme Support; empty: the address alone"),
      entry("from_address", "From address", fromAddress),
    ),
    results,
    status,
    h("div", { class: "settings-row" }, save, test, h("button", { type: "button", onclick: tools.close }, "Close")),
  );
  return form;
}

/** How one server's connection test went: a tick, or the stage it stopped at and why. */
function outcome(name, r) {
  if (r.ok) return h("li", { class: "settings-test-ok" }, h("strong", {}, `✓ ${name}`), ": works.");
  const stage = STAGES[r.stage] ? `${r.stage} (${STAGES[r.stage]})` : r.stage;
  return h("li", { class: "settings-test-failed" }, h("strong", {}, `✗ ${name}`), `: failed at ${stage}: `, r.error);
}

const TOKEN_NOTE = "Integrations post customers' messages with it. It is shown only now: copy it, you will not see it again.";

const RECORDS = {
  "custom-fields": {
    heading: "Custom fields", noun: "custom field", plural: "custom fields", path: "/custom-fields", sort: "key", title: "label", types: ["custom_field"],
    intro: "Extra fields on contacts, companies, leads, deals and conversations. The record type, key and kind are fixed once created.",
    filter: ["object_type", "Record type", ["contact", "company", "lead", "deal", "conversation"]],
    fields: [
      { name: "object_type", label: "Record type", type: "select", fixed: true, options: ["contact", "company", "lead", "deal", "conversation"] },
      { name: "label", label: "Label" },
      { name: "key", label: "Key", fixed: true, help: "starts with a-z; a-z, 0-9 and _" },
      { name: "kind", label: "Kind", type: "select", fixed: true, options: [["text", "text"], ["number", "number"], ["date", "date"], ["bool", "yes/no"], ["select", "select"], ["multi_select", "multi-select"], ["url", "URL"], ["email", "e-mail"]] },
      { name: "options", label: "Options", type: "list", help: "for select kinds: separated by commas" },
    ],
    columns: [["Record type", (r) => r.object_type], ["Label", (r) => r.label], ["Key", (r) => h("code", {}, r.key)], ["Kind", (r) => label(r.kind)], ["Options", (r) => (r.options || []).join(", ")]],
  },
  teams: {
    heading: "Teams", noun: "team", plural: "teams", path: "/teams", sort: "name", title: "name", types: ["team"], refs: ["members"],
    intro: "Teams work inboxes; a conversation can be given to a team.",
    fields: [{ name: "name", label: "Name" }, { name: "description", label: "Description", type: "textarea" }, { name: "member_ids", label: "Members", type: "members" }],
    columns: [["Name", (r) => r.name], ["Description", (r) => r.description || ""], ["Members", (r) => (r.member_ids || []).map(nameOf).join(", ")]],
  },
  tags: {
    heading: "Tags", noun: "tag", plural: "tags", path: "/tags", sort: "name", title: "name", types: ["tag"],
    fields: [{ name: "name", label: "Name", fixed: true }, { name: "color", label: "Colour", help: "such as #0b5d7a" }],
    columns: [["Name", (r) => {
      const dot = h("span", { class: "settings-swatch" });
      if (r.color) dot.style.backgroundColor = r.color;
      return [dot, r.name];
    }], ["Colour", (r) => r.color || ""]],
  },
  inboxes: {
    heading: "Inboxes", noun: "inbox", plural: "inboxes", path: "/inboxes", sort: "name", title: "name", refs: ["teams", "sla"],
    intro: "Where customers' conversations arrive. An API inbox receives messages posted with its token; an e-mail inbox reads a mailbox over IMAP and answers over SMTP.",
    fields: [
      { name: "name", label: "Name" },
      { name: "channel", label: "Channel", type: "select", fixed: true, options: [["api", "API"], ["email", "E-mail"]], help: "fixed once created; an e-mail inbox's servers are set from its row" },
      { name: "team_id", label: "Team", type: "select", lookup: "teams", none: "No team" },
      { name: "sla_policy_id", label: "SLA policy", type: "select", lookup: "sla", none: "No SLA policy" },
      { name: "auto_assign", label: "Assign new conversations automatically (round-robin)", type: "check", initial: false },
      { name: "max_open_per_agent", label: "Most open conversations per agent", type: "number", min: 1, max: 10000, help: "empty: no limit" },
      { name: "time_zone", label: "Time zone", datalist: "settings-zones", help: "such as Europe/Paris" },
      { name: "business_hours", type: "hours" },
      { name: "holidays", label: "Holidays", type: "list", sep: " ", wide: true, help: "closed all day: dates such as 2026-12-24 2026-12-25" },
    ],
    columns: [
      ["Name", (r) => r.name],
      ["Channel", channelCell],
      ["Team", (r) => nameOf(r.team_id)],
      ["Assignment", (r) => (r.auto_assign ? `automatic${r.max_open_per_agent ? `, at most ${r.max_open_per_agent} each` : ""}` : "manual")],
      ["Hours", (r) => `${r.business_hours ? "business hours" : "always open"}, ${r.time_zone}`],
      ["SLA policy", (r) => nameOf(r.sla_policy_id)],
    ],
    // The sync of an e-mail inbox says how it goes on the inbox's topic.
    follow: { type: "inbox", topic: (r) => (r.channel === "email" ? `inbox:${r.id}` : null), server: ["channel_status", "channel_detail"] },
    created: (r, shown) => {
      if (r.token) replace(shown, secret(`Token of the inbox “${r.name}”`, r.token, "Inbox token", TOKEN_NOTE));
      else if (r.channel === "email") replace(shown, h("p", { class: "notice" }, `The inbox “${r.name}” is made. Give it its mail servers with “E-mail settings” in its row.`));
    },
    more: (r, { shown, status, open, close, reload }) =>
      r.channel === "email"
        ? h("button", { type: "button", "aria-label": `E-mail settings of ${r.name}`, onclick: () => open(mailSettings(r, { close, reload })) }, "E-mail settings")
        : h("button", {
            type: "button",
            "aria-label": `New token for ${r.name}`,
            onclick: () => confirm("New inbox token", `Give “${r.name}” a new token? The current one stops working at once.`, async () => {
              const t = await api("POST", `/inboxes/${r.id}/token`);
              replace(status);
              replace(shown, secret(`New token of the inbox “${r.name}”`, t.token, "Inbox token", TOKEN_NOTE));
            }, "New token"),
          }, "New token"),
  },
  "canned-responses": {
    heading: "Canned responses", noun: "canned response", plural: "canned responses", path: "/canned-responses", sort: "shortcode", title: "shortcode", types: ["canned_response"],
    intro: `Replies agents insert by typing / and the shortcode. The text may use ${VARIABLES}.`,
    fields: [
      { name: "shortcode", label: "Shortcode", help: "1 to 40 of a-z, 0-9, - and _" },
      { name: "text", label: "Text", type: "textarea", wide: true, help: `variables: ${VARIABLES}` },
    ],
    columns: [["Shortcode", (r) => h("code", {}, `/${r.shortcode}`)], ["Text", (r) => r.text]],
    more: (r) => h("button", { type: "button", "aria-label": `Preview ${r.shortcode}`, onclick: () => preview(r) }, "Preview"),
  },
  macros: {
    heading: "Macros", noun: "macro", plural: "macros", path: "/macros", sort: "name", title: "name", types: ["macro"], refs: ["members", "teams", "canned"],
    intro: "Actions an agent applies to a conversation in one step.",
    fields: [{ name: "name", label: "Name" }, { name: "actions", type: "actions" }],
    columns: [["Name", (r) => r.name], ["Actions", (r) => h("ol", { class: "settings-summary" }, (r.actions || []).map((a) => h("li", {}, summary(a))))]],
  },
  "sla-policies": {
    heading: "SLA policies", noun: "SLA policy", plural: "SLA policies", path: "/sla-policies", sort: "name", title: "name", types: ["sla_policy"],
    intro: "Deadlines for answering and resolving, in minutes; an inbox gives its policy to its new conversations.",
    fields: [
      { name: "name", label: "Name" },
      { name: "first_response_minutes", label: "First response (minutes)", type: "number", min: 1, max: 525600 },
      { name: "next_response_minutes", label: "Next response (minutes)", type: "number", min: 1, max: 525600 },
      { name: "resolution_minutes", label: "Resolution (minutes)", type: "number", min: 1, max: 525600 },
      { name: "business_hours_only", label: "Count only the inbox's business hours", type: "check", initial: true },
    ],
    columns: [["Name", (r) => r.name], ["Targets", targets], ["Counted", (r) => (r.business_hours_only ? "business hours" : "every hour")]],
  },
};

const SECTIONS = [
  ["members", "Members and roles", membersSection],
  ["api-keys", "API keys", keysSection],
  ["pipelines", "Pipelines and stages", pipelinesSection],
  ...Object.entries(RECORDS).map(([k, spec]) => [k, spec.heading, (ctx) => recordSection(spec, ctx)]),
];
