// Lists of contacts, companies, leads, deals and activities: filters, sorting and
// cursor pages kept in the address (so reload and back keep them), creating a record,
// CSV in and out; and the search across everything. The types' fields are described
// once here and shared with the record page (record.js).

import { h, replace } from "./dom.js";
import { api, token, renewToken, ApiFailure } from "./api.js";
import * as live from "./live.js";
import { me } from "./session.js";
import { go, link, problem, money, when, dialog } from "./ui.js";

const MEMBER = "member";
const TAGS = "list";

// A field's kind: text, long, list, int, num, money, date, ts, bool, choice:a|b,
// ref:<type>, member, pipeline, stage. "ro:" marks what only the server writes,
// "fixed:" what is set on creation only.
export const TYPES = {
  contacts: {
    one: "contact", label: "Contacts", title: "name",
    fields: { name: "text", emails: "list", phones: "list", title: "text", company_id: "ref:companies", owner_id: MEMBER, tags: TAGS },
    columns: ["name", "emails", "title", "company_id", "owner_id", "tags"],
    sorts: ["name", "created_at", "updated_at"],
    filters: ["owner_id", "tags"],
    create: ["name", "emails", "phones", "title", "company_id", "owner_id", "tags"],
  },
  companies: {
    one: "company", label: "Companies", title: "name",
    fields: { name: "text", domain: "text", industry: "text", size: "choice:1-10|11-50|51-200|201-1000|1001-5000|5001+", parent_id: "ref:companies", owner_id: MEMBER, tags: TAGS },
    columns: ["name", "domain", "industry", "size", "owner_id", "tags"],
    sorts: ["name", "domain", "industry", "created_at", "updated_at"],
    filters: ["owner_id", "size", "tags"],
    create: ["name", "domain", "industry", "size", "owner_id", "tags"],
  },
  leads: {
    one: "lead", label: "Leads", title: "name",
    fields: {
      name: "text", email: "text", phone: "text", company_name: "text", title: "text", source: "text",
      status: "choice:new|contacted|qualified|disqualified|converted", owner_id: MEMBER, tags: TAGS,
      converted_contact_id: "ro:ref:contacts", converted_company_id: "ro:ref:companies", converted_deal_id: "ro:ref:deals", converted_at: "ro:ts",
    },
    columns: ["name", "email", "company_name", "status", "owner_id", "created_at"],
    sorts: ["name", "email", "company_name", "created_at", "updated_at"],
    filters: ["status", "owner_id", "tags"],
    create: ["name", "email", "phone", "company_name", "title", "source", "owner_id", "tags"],
  },
  deals: {
    one: "deal", label: "Deals", title: "title",
    fields: {
      title: "text", amount: "money", currency: "text", pipeline_id: "pipeline", stage_id: "stage", owner_id: MEMBER,
      contact_id: "ref:contacts", company_id: "ref:companies", expected_close_date: "date", tags: TAGS,
    },
    columns: ["title", "amount", "stage_id", "owner_id", "expected_close_date", "tags"],
    sorts: ["title", "amount", "expected_close_date", "created_at", "updated_at"],
    filters: ["pipeline_id", "stage_id", "owner_id", "tags"],
    create: ["title", "pipeline_id", "amount", "currency", "contact_id", "company_id", "owner_id", "expected_close_date"],
  },
  activities: {
    one: "activity", label: "Activities", title: "subject",
    fields: {
      kind: "fixed:choice:note|task|call|meeting|email", subject: "text", body: "long", contact_id: "ref:contacts", company_id: "ref:companies",
      deal_id: "ref:deals", lead_id: "ref:leads", occurred_at: "ts", due_date: "date", assignee_id: MEMBER, done: "bool", duration_minutes: "int",
    },
    columns: ["subject", "kind", "linked", "due_date", "done", "assignee_id", "created_at"],
    sorts: ["subject", "occurred_at", "due_date", "created_at", "updated_at"],
    filters: ["kind", "done", "assignee_id"],
    create: ["kind", "subject", "body", "contact_id", "company_id", "deal_id", "lead_id", "due_date", "assignee_id"],
  },
};
export const PLURAL = Object.fromEntries(Object.entries(TYPES).map(([p, t]) => [t.one, p]));
const TEXT_FILTER = { deals: "title_contains", activities: "subject_contains" };
const PAGE = 25;

const LABELS = {
  emails: "E-mails", email: "E-mail", company_id: "Company", owner_id: "Owner", parent_id: "Parent company", contact_id: "Contact",
  deal_id: "Deal", lead_id: "Lead", pipeline_id: "Pipeline", stage_id: "Stage", assignee_id: "Assignee", expected_close_date: "Expected close",
  occurred_at: "When", linked: "Linked to", due_date: "Due", duration_minutes: "Minutes", created_at: "Created", updated_at: "Updated",
  converted_contact_id: "Converted to contact", converted_company_id: "Converted to company", converted_deal_id: "Converted to deal",
};
export const label = (k) => LABELS[k] || (k[0].toUpperCase() + k.slice(1)).replaceAll("_", " ");

/** A field's kind without its markers, and whether a user may change it (after creation). */
export function kindOf(type, name) {
  const raw = TYPES[type].fields[name] || "ts";
  const ro = raw.startsWith("ro:") || raw.startsWith("fixed:") || name.endsWith("ed_at");
  return { kind: raw.replace(/^(ro|fixed):/, ""), ro };
}

// What the pages look up often: members, pipelines and records' names. Kept per
// workspace, for a minute at most.
const cache = new Map();
function cached(key, load) {
  const k = `${me()?.workspace.id}:${key}`;
  const hit = cache.get(k);
  if (hit && Date.now() - hit.at < 60000) return hit.value;
  const value = load().catch((e) => { cache.delete(k); throw e; });
  cache.set(k, { at: Date.now(), value });
  return value;
}
export const members = () => cached("members", () => api("GET", "/members").then((p) => new Map(p.data.map((m) => [m.user_id, m.name]))));
export const pipelines = () => cached("pipelines", () => api("GET", "/pipelines?limit=100").then((p) => p.data));
export function forget(type, id) {
  cache.delete(`${me()?.workspace.id}:${type}/${id}`);
}
export function titleOf(type, rec) {
  return rec[TYPES[type].title] || (rec.kind ? label(rec.kind) : "") || "(untitled)";
}
// Names asked for while a page is drawn go out together, a hundred ids a request.
const asked = new Map(); // type → Map(id → {resolve, reject})
function nameOf(type, id) {
  return cached(`${type}/${id}`, () => new Promise((resolve, reject) => {
    let batch = asked.get(type);
    if (!batch) {
      asked.set(type, (batch = new Map()));
      queueMicrotask(() => fetchNames(type));
    }
    batch.set(id, { resolve, reject });
  }));
}
async function fetchNames(type) {
  const batch = asked.get(type);
  asked.delete(type);
  const ids = [...batch.keys()];
  for (let i = 0; i < ids.length; i += 100) {
    const part = ids.slice(i, i + 100);
    try {
      const page = await api("GET", `/${type}?id_in=${part.join(",")}&limit=100`);
      const found = new Map(page.data.map((r) => [r.id, titleOf(type, r)]));
      for (const id of part) {
        if (found.has(id)) batch.get(id).resolve(found.get(id));
        else batch.get(id).reject(new Error("not found"));
      }
    } catch (e) {
      for (const id of part) batch.get(id).reject(e);
    }
  }
}

/** A span filled in when `promise` gives its text. */
function later(promise, fallback = "…") {
  const el = h("span", {}, fallback);
  promise.then((t) => { el.textContent = t; }, () => { el.textContent = "(unavailable)"; });
  return el;
}

const none = () => h("span", { class: "muted" }, "—");

/** A value as people read it. */
export function show(kind, value, rec = {}) {
  const empty = value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length);
  if (empty) return none();
  const [k, arg] = kind.split(/:(.*)/s);
  if (Array.isArray(value)) return h("span", { class: "rec-chips" }, value.map((v) => h("span", { class: "tag" }, v)));
  switch (k) {
    case "money": return money(value, rec.currency);
    case "ts": return h("time", { datetime: value }, when(value));
    case "bool": return value ? "Yes" : "No";
    case "ref": return link(`/records/${arg}/${value}`, later(nameOf(arg, value)));
    case MEMBER: return later(members().then((m) => m.get(value) || "a former member"));
    case "pipeline": return later(pipelines().then((ps) => ps.find((p) => p.id === value)?.name || "a pipeline"));
    case "stage": return later(pipelines().then((ps) => ps.flatMap((p) => p.stages).find((s) => s.id === value)?.name || "a stage"));
    default: return typeof value === "object" ? JSON.stringify(value) : String(value);
  }
}

function select(options, value, attrs = {}) {
  return h("select", attrs, options.map(([v, t]) => h("option", { value: v, selected: v === (value ?? "") }, t)));
}

/** Options filled in when they arrive; the current value stays chosen. */
function asyncSelect(load, value, attrs, blank) {
  const el = select([["", blank], ...(value ? [[value, "…"]] : [])], value, attrs);
  load().then((opts) => {
    replace(el, [["", blank], ...opts].map(([v, t]) => h("option", { value: v, selected: v === (value ?? "") }, t)));
    if (value && !opts.some(([v]) => v === value)) el.append(h("option", { value, selected: true }, "(current)"));
    // A required choice with one option (a workspace's only pipeline) is made already.
    if (!value && opts.length === 1 && attrs.required) el.value = opts[0][0];
  }, (e) => el.after(problem(e)));
  return el;
}

const pad = (n) => String(n).padStart(2, "0");
const localTime = (iso) => {
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
};

/** A control for a value of `kind`: `{el, read()}`; read gives what the API takes. */
export function editor(kind, value, rec = {}, attrs = {}, blank = "—") {
  const [k, arg] = kind.split(/:(.*)/s);
  const text = (v) => (v === "" ? null : v);
  const input = (type, v, extra = {}) => h("input", { type, value: v ?? "", ...attrs, ...extra });
  let el;
  switch (k) {
    case "long": el = h("textarea", { rows: 4, ...attrs }, value ?? ""); return { el, read: () => text(el.value.trim()) };
    case "list": el = input("text", (value || []).join(", "), { placeholder: "comma-separated" });
      return { el, read: () => el.value.split(/[,;]/).map((s) => s.trim()).filter(Boolean) };
    case "int": case "num": el = input("number", value, { step: k === "int" ? "1" : "any" });
      return { el, read: () => (el.value === "" ? null : Number(el.value)) };
    case "money": el = input("number", value === null || value === undefined ? "" : value / 100, { step: "0.01", min: "0" });
      return { el, read: () => (el.value === "" ? null : Math.round(Number(el.value) * 100)) };
    case "date": el = input("date", value); return { el, read: () => text(el.value) };
    case "ts": el = input("datetime-local", value ? localTime(value) : "");
      return { el, read: () => (el.value ? new Date(el.value).toISOString() : null) };
    case "bool": el = input("checkbox", "", { checked: !!value }); return { el, read: () => el.checked };
    case "choice": el = select([["", blank], ...arg.split("|").map((o) => [o, o])], value, attrs); return { el, read: () => text(el.value) };
    case "ref": el = asyncSelect(() => api("GET", `/${arg}?limit=200&sort=${TYPES[arg].title}`).then((p) => p.data.map((r) => [r.id, titleOf(arg, r)])), value, attrs, blank);
      return { el, read: () => text(el.value) };
    case MEMBER: el = asyncSelect(() => members().then((m) => [...m].sort((a, b) => a[1].localeCompare(b[1]))), value, attrs, blank);
      return { el, read: () => text(el.value) };
    case "pipeline": el = asyncSelect(() => pipelines().then((ps) => ps.map((p) => [p.id, p.name])), value, attrs, blank);
      return { el, read: () => text(el.value) };
    case "stage": el = asyncSelect(() => pipelines().then((ps) => (ps.find((p) => p.id === rec.pipeline_id)?.stages || []).map((s) => [s.id, s.name])), value, attrs, blank);
      return { el, read: () => text(el.value) };
    default: el = input("text", value); return { el, read: () => text(el.value.trim()) };
  }
}

/** A request with the session's token whose answer is not JSON (CSV in, CSV out). */
export async function raw(method, path, body, headers = {}, retried = false) {
  let res;
  try {
    res = await fetch(`/api/v1${path}`, { method, body, headers: { ...headers, Authorization: `Bearer ${token()}` } });
  } catch {
    throw new ApiFailure(0, { error: { code: "network", message: "the server cannot be reached" } });
  }
  if (res.ok) return res;
  const failure = new ApiFailure(res.status, await res.json().catch(() => null));
  if (failure.code === "token_expired" && !retried) {
    await renewToken();
    return raw(method, path, body, headers, true);
  }
  throw failure;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A control to focus again after a filter, sort or page change redraws the view.
let refocus = null;

export function recordsView(type, ctx) {
  const T = TYPES[type];
  const q = ctx.query;
  const textKey = TEXT_FILTER[type] || "name_contains";
  const filters = new URLSearchParams();
  for (const k of [textKey, ...T.filters]) if (q.get(k)) filters.set(k, q.get(k));
  const sort = q.get("sort") || "-created_at";
  const stack = (q.get("after") || "").split(",").filter(Boolean);
  let left = false;
  ctx.onLeave(() => { left = true; });

  /** This list's address with `changes` applied (null removes a parameter). */
  const href = (changes) => {
    const p = new URLSearchParams(q);
    for (const [k, v] of Object.entries(changes)) if (v === null || v === "") p.delete(k); else p.set(k, v);
    const s = p.toString();
    return `/records/${type}${s ? "?" + s : ""}`;
  };
  const move = (changes, focusKey) => { refocus = focusKey; go(href(changes)); };

  const status = h("p", { class: "muted", role: "status", "data-testid": "list-status" }, "Loading…");
  const table = h("div", { class: "rec-table-wrap" });
  const pager = h("nav", { class: "rec-pager", "aria-label": "Pages" });
  const notice = h("div", { "aria-live": "polite" });

  // Loads started by live events may answer out of order: only the latest is drawn.
  let loads = 0;
  async function load() {
    const p = new URLSearchParams(filters);
    p.set("sort", sort);
    p.set("limit", PAGE);
    if (stack.length) p.set("cursor", stack[stack.length - 1]);
    const mine = ++loads;
    try {
      const page = await api("GET", `/${type}?${p}`);
      if (left || mine !== loads) return;
      draw(page);
    } catch (e) {
      if (left || mine !== loads) return;
      replace(status);
      replace(table, problem(e));
    }
  }

  function header(col, i) {
    const minor = i > 2 ? "minor" : null;
    if (!T.sorts.includes(col)) return h("th", { scope: "col", class: minor }, label(col));
    const on = sort.replace(/^-/, "") === col;
    const desc = on && sort.startsWith("-");
    return h(
      "th",
      { scope: "col", class: minor, "aria-sort": on ? (desc ? "descending" : "ascending") : null },
      h("button", {
        type: "button", class: "rec-sort", "data-k": `sort-${col}`,
        onclick: () => move({ sort: on && !desc ? `-${col}` : col, after: null }, `sort-${col}`),
      }, label(col), h("span", { "aria-hidden": "true" }, on ? (desc ? " ▼" : " ▲") : "")),
    );
  }

  function cell(c, r) {
    if (c !== "linked") return show(kindOf(type, c).kind, r[c], r);
    // An activity belongs to a deal, a contact, a company or a lead: whichever it names.
    const k = ["deal_id", "contact_id", "company_id", "lead_id"].find((f) => r[f]);
    return k ? show(`ref:${PLURAL[k.slice(0, -3)]}`, r[k]) : none();
  }

  function draw(page) {
    const cols = T.columns;
    const n = page.data.length;
    status.textContent = n ? `Page ${stack.length + 1}: ${n} ${n === 1 ? T.one : T.label.toLowerCase()}` : `No ${T.label.toLowerCase()} ${filters.toString() ? "match these filters" : "yet"}.`;
    replace(table, n ? h("table", { class: "records-table" },
      h("thead", {}, h("tr", {}, cols.map(header))),
      h("tbody", {}, page.data.map((r) => h("tr", { "data-id": r.id }, cols.map((c, i) =>
        i === 0 ? h("th", { scope: "row" }, link(`/records/${type}/${r.id}`, titleOf(type, r))) : h("td", { class: i > 2 ? "minor" : null }, cell(c, r))))))) : null);
    replace(pager,
      h("button", { type: "button", "data-k": "prev", disabled: !stack.length, onclick: () => move({ after: stack.slice(0, -1).join(",") }, "prev") }, "← Previous"),
      h("span", { class: "muted" }, `Page ${stack.length + 1}`),
      h("button", { type: "button", "data-k": "next", disabled: !page.next_cursor, onclick: () => move({ after: [...stack, page.next_cursor].join(",") }, "next") }, "Next →"));
  }

  // Others' changes show without a reload: the page is fetched again, once per burst.
  let timer = null;
  const soon = () => { clearTimeout(timer); timer = setTimeout(load, 300); };
  const topic = type === "deals" ? (filters.get("pipeline_id") && `board:${filters.get("pipeline_id")}`) : `workspace:${me().workspace.id}`;
  if (topic) {
    const stop = live.follow(topic, (m) => {
      // A snapshot follows a subscription or a gap: what changed meanwhile is fetched.
      if (m.type === "snapshot" || (m.type === "event" && m.data && m.data.object_type === T.one)) soon();
    });
    ctx.onLeave(() => { stop(); clearTimeout(timer); });
  }

  const form = filterForm(type, T, textKey, filters, (values) => {
    const changes = { after: null };
    for (const k of [textKey, ...T.filters]) changes[k] = values[k] || null;
    move(changes, document.activeElement?.name);
  });
  const importable = type !== "activities";
  const importer = importable ? importPanel(type, T, () => left, load) : null;
  const el = h(
    "section",
    { class: "records" },
    h("nav", { class: "record-tabs", "aria-label": "Record types" },
      Object.entries(TYPES).map(([p, t]) => link(`/records/${p}`, t.label, { class: p === type ? "tab active" : "tab", "aria-current": p === type ? "page" : null }))),
    h("div", { class: "records-head" },
      h("h1", {}, T.label),
      h("span", { class: "grow" }),
      h("button", { type: "button", class: "primary", onclick: () => createDialog(type) }, `New ${T.one}`),
      importable ? h("button", { type: "button", "aria-expanded": "false", "aria-controls": `import-${type}`, onclick: (ev) => {
        importer.hidden = !importer.hidden;
        ev.currentTarget.setAttribute("aria-expanded", String(!importer.hidden));
      } }, "Import CSV") : null,
      importable ? h("button", { type: "button", onclick: (ev) => exportCsv(ev.currentTarget, type, T, filters, sort, notice) }, "Export CSV") : null),
    notice,
    importer,
    form,
    status,
    table,
    pager,
  );
  load();
  if (refocus) {
    const key = refocus;
    refocus = null;
    queueMicrotask(() => el.querySelector(`[data-k="${key}"], [name="${key}"]`)?.focus());
  }
  return el;
}

function filterForm(type, T, textKey, filters, apply) {
  const submit = () => form.requestSubmit();
  const control = (k) => {
    const v = filters.get(k) || "";
    const attrs = { name: k, "data-k": k, "aria-label": `Filter by ${label(k).toLowerCase()}`, onchange: submit };
    const { kind } = kindOf(type, k);
    let el;
    if (k === "done") el = select([["", "Open or done"], ["false", "Open"], ["true", "Done"]], v, attrs);
    else if (k === "tags") el = h("input", { type: "text", name: k, value: v, placeholder: "Tag", "aria-label": "Filter by tag" });
    else if (k === "stage_id") {
      el = select([["", "Any stage"]], v, attrs);
      pipelines().then((ps) => el.append(...ps.map((p) => h("optgroup", { label: p.name }, p.stages.map((s) => h("option", { value: s.id, selected: s.id === v }, s.name))))),
        (e) => el.append(h("option", { disabled: true }, `Stages could not be loaded: ${e.message}`)));
    } else {
      el = editor(kind, v || null, {}, attrs, `Any ${label(k).toLowerCase()}`).el;
    }
    return el;
  };
  const form = h(
    "form",
    { class: "rec-filters", role: "search", "aria-label": `Filter ${T.label.toLowerCase()}`, onsubmit: (ev) => {
      ev.preventDefault();
      const values = {};
      for (const [k, v] of new FormData(form)) values[k] = String(v).trim();
      apply(values);
    } },
    h("input", { type: "search", name: textKey, "data-k": textKey, value: filters.get(textKey) || "", placeholder: `Filter by ${textKey.split("_")[0]}`, "aria-label": `Filter by ${textKey.split("_")[0]}` }),
    T.filters.map(control),
    h("button", { type: "submit" }, "Apply"),
    filters.toString() ? link(`/records/${type}`, "Clear filters") : null,
  );
  return form;
}

async function exportCsv(button, type, T, filters, sort, notice) {
  button.disabled = true;
  replace(notice);
  try {
    const p = new URLSearchParams(filters);
    p.set("object_type", T.one);
    p.set("sort", sort);
    const blob = await (await raw("GET", `/exports?${p}`)).blob();
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: `${type}.csv`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
  } catch (e) {
    replace(notice, problem(e));
  } finally {
    button.disabled = false;
  }
}

function importPanel(type, T, gone, reload) {
  const file = h("input", { type: "file", name: "file", accept: ".csv,text/csv", required: true });
  const mode = select([["", "skip them (default)"], ["update", "update them"], ["upsert", "update them, create the others"], ["create", "create every row"]], "", { name: "mode" });
  const bar = h("progress", { max: 1, value: 0, "data-testid": "import-progress", hidden: true });
  const said = h("p", { role: "status", "aria-live": "polite" });
  const errors = h("div");
  const upload = h("button", { type: "submit", class: "primary" }, "Upload");

  function drawJob(j) {
    bar.hidden = false;
    bar.max = Math.max(1, j.rows_total);
    bar.value = j.rows_processed;
    const counts = `${j.rows_created} created, ${j.rows_updated} updated, ${j.rows_skipped} skipped, ${j.rows_failed} failed`;
    said.textContent = j.status === "running"
      ? `Importing… ${j.rows_processed} of ${j.rows_total} rows (${counts})`
      : `Import ${j.status}: ${j.rows_processed} of ${j.rows_total} rows; ${counts}.`;
    if (j.status !== "running" && j.errors.length) {
      replace(errors, h("h3", {}, `Rows that failed${j.rows_failed > j.errors.length ? ` (the first ${j.errors.length})` : ""}`),
        h("div", { class: "rec-table-wrap" }, h("table", { class: "records-table", "data-testid": "import-errors" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Line"), h("th", { scope: "col" }, "Problem"))),
          h("tbody", {}, j.errors.map((e) => h("tr", {}, h("td", {}, e.line ?? ""), h("td", {}, e.errors ? Object.entries(e.errors).map(([f, m]) => `${f}: ${m}`).join("; ") : e.error || "")))))));
    }
  }

  const form = h(
    "form",
    { class: "card rec-import", id: `import-${type}`, hidden: true, "aria-label": `Import ${T.label.toLowerCase()}`, onsubmit: async (ev) => {
      ev.preventDefault();
      const f = file.files[0];
      if (!f) return;
      upload.disabled = true;
      replace(errors);
      said.textContent = `Uploading ${f.name}…`;
      try {
        const p = new URLSearchParams({ object_type: T.one });
        if (mode.value) p.set("mode", mode.value);
        let job = await (await raw("POST", `/imports?${p}`, f, { "Content-Type": "text/csv" })).json();
        // The server counts rows as it goes (GET /imports/{id}); asked until done.
        while (job.status === "running" && !gone()) {
          drawJob(job);
          await sleep(150);
          job = await api("GET", `/imports/${job.id}`);
        }
        drawJob(job);
        reload();
      } catch (e) {
        said.textContent = "";
        replace(errors, problem(e));
      } finally {
        upload.disabled = false;
      }
    } },
    h("h2", {}, `Import ${T.label.toLowerCase()} from CSV`),
    h("p", { class: "muted" }, "The first line names the columns (name, emails, …, custom_fields.<key>); list cells separate items with “;”."),
    h("div", { class: "rec-import-fields" },
      h("label", {}, h("span", {}, "CSV file"), file),
      h("label", {}, h("span", {}, "Rows matching a record"), mode),
      upload),
    bar,
    said,
    errors,
  );
  return form;
}

/** A small form for a new record; its page opens once it is made. */
export function createDialog(type, preset = {}) {
  const T = TYPES[type];
  const fields = T.create.filter((k) => !(k in preset)).map((k) => [k, editor(kindOf(type, k).kind, k === "kind" ? "note" : k === "currency" ? "USD" : null, {}, { name: k, required: k === "pipeline_id" })]);
  const form = h(
    "form",
    { class: "rec-form", onkeydown: (ev) => {
      if (ev.key === "Enter" && ev.target.tagName === "INPUT") {
        ev.preventDefault();
        d.querySelector(".modal-actions .primary").click();
      }
    } },
    fields.map(([k, ed]) => h("label", {}, h("span", {}, label(k)), ed.el)),
  );
  const d = dialog(`New ${T.one}`, form, [
    ["Cancel", () => {}],
    ["Create", async () => {
      const body = { ...preset };
      for (const [k, ed] of fields) {
        const v = ed.read();
        if (v !== null && !(Array.isArray(v) && !v.length)) body[k] = v;
      }
      const rec = await api("POST", `/${type}`, body);
      go(`/records/${type}/${rec.id}`);
    }, { primary: true }],
  ]);
  fields[0]?.[1].el.focus();
  return d;
}

const SEARCH_LABELS = { conversation: "Conversations", message: "Messages", canned_response: "Canned responses" };

export function searchView(ctx) {
  const q = (ctx.query.get("q") || "").trim();
  const results = h("div", { class: "search-results", "aria-live": "polite" }, q ? h("p", { class: "muted" }, "Searching…") : null);
  const el = h("section", { class: "records" }, h("h1", {}, q ? `Search: “${q}”` : "Search"), results);
  if (!q) {
    replace(results, h("p", { class: "muted" }, "Type words in the search box above: every word is matched as the start of a word, in names, titles, e-mails, notes and tags."));
    return el;
  }
  api("GET", `/search?${new URLSearchParams({ q, limit: 50 })}`).then((page) => {
    if (!page.data.length) return replace(results, h("p", {}, "Nothing matches."));
    const groups = new Map();
    for (const hit of page.data) {
      if (!groups.has(hit.object_type)) groups.set(hit.object_type, []);
      groups.get(hit.object_type).push(hit);
    }
    // Hits come best first: so do the groups, by their best hit.
    replace(results, [...groups.keys()].map((t) => {
      const plural = PLURAL[t];
      const hits = groups.get(t);
      const where = (hit) => (plural ? `/records/${plural}/${hit.id}` : t === "conversation" || t === "message" ? "/inbox" : null);
      return h("section", { class: "card rec-search-group", "aria-label": plural ? TYPES[plural].label : SEARCH_LABELS[t] || t },
        h("h2", {}, `${plural ? TYPES[plural].label : SEARCH_LABELS[t] || t} (${hits.length})`),
        h("ul", { class: "plain" }, hits.map((hit) => h("li", {}, where(hit) ? link(where(hit), hit.title || "(untitled)") : hit.title))));
    }));
  }, (e) => replace(results, problem(e)));
  return el;
}
