// One record: its fields and custom fields edited in place (each save carries the
// version it was based on; a conflict shows theirs against mine), its timeline of
// activities with a form to add one, a lead's conversion, and others' changes live.

import { h, replace } from "./dom.js";
import { api } from "./api.js";
import * as live from "./live.js";
import { me } from "./session.js";
import { go, link, problem, dialog } from "./ui.js";
import { TYPES, PLURAL, label, kindOf, show, editor, titleOf, pipelines, forget } from "./records.js";

const TIMELINE = new Set(["contacts", "companies", "deals", "leads"]);
const LINK = { contacts: "contact_id", companies: "company_id", deals: "deal_id", leads: "lead_id" };
const CUSTOM = { text: "text", number: "num", date: "date", bool: "bool", url: "text", email: "text", multi_select: "list" };
// Each change this page makes carries this id, so its own echoes are told from others'.
let pageSeq = 0;

export function recordView(type, id, ctx) {
  const T = TYPES[type];
  const cause = `rec-${Date.now().toString(36)}-${++pageSeq}`;
  let rec = null;
  let defs = [];
  let editing = null; // {key, version, base}: the field being edited and the record it began from
  let left = false;
  const rows = new Map(); // field key → its <div>
  const recent = new Set();

  const title = h("h1", {}, "Loading…");
  const actions = h("div", { class: "record-actions" });
  const notice = h("div", { "aria-live": "polite" });
  const fields = h("dl", { class: "rec-fields" });
  const extra = h("div");
  const side = h("div", { class: "record-side" });
  const el = h(
    "section",
    { class: "record" },
    link(`/records/${type}`, `← ${T.label}`, { class: "rec-back" }),
    h("div", { class: "records-head" }, title, h("span", { class: "muted kind" }, T.one), h("span", { class: "grow" }), actions),
    notice,
    h("div", { class: "record-body" }, h("section", { class: "card", "aria-label": "Fields" }, h("h2", {}, "Details"), fields, extra), side),
  );
  ctx.onLeave(() => {
    left = true;
    document.title = "Shoal";
  });

  const keys = () => [
    ...Object.keys(T.fields).map((k) => ({ key: k, name: label(k), ...kindOf(type, k) })),
    ...defs.map((d) => ({ key: `cf:${d.key}`, name: d.label, kind: d.kind === "select" ? `choice:${d.options.join("|")}` : CUSTOM[d.kind] || "text", ro: false })),
    { key: "created_at", name: "Created", kind: "ts", ro: true },
    { key: "updated_at", name: "Updated", kind: "ts", ro: true },
  ];
  const valueOf = (r, key) => (key.startsWith("cf:") ? (r.custom_fields || {})[key.slice(3)] : r[key]);
  const bodyFor = (key, v) => (key.startsWith("cf:") ? { custom_fields: { [key.slice(3)]: v } } : { [key]: v });

  function say(...what) {
    replace(notice, ...what);
  }

  function drawHead() {
    title.textContent = titleOf(type, rec);
    document.title = `${titleOf(type, rec)} · Shoal`;
    replace(
      actions,
      type === "leads" && !rec.converted_at ? h("button", { type: "button", class: "primary", onclick: convert }, "Convert lead") : null,
      h("button", { type: "button", onclick: remove }, "Delete"),
    );
  }

  function drawRow(f) {
    let row = rows.get(f.key);
    if (!row) {
      row = h("div", { class: "rec-field", "data-field": f.key });
      rows.set(f.key, row);
    }
    if (editing && editing.key === f.key) return row;
    row.classList.toggle("changed", recent.has(f.key));
    replace(
      row,
      h("dt", {}, f.name),
      h("dd", {}, h("span", { class: "value" }, show(f.kind, valueOf(rec, f.key), rec)),
        f.ro ? null : h("button", { type: "button", class: "quiet edit", "aria-label": `Edit ${f.name}`, onclick: () => edit(f) }, "Edit")),
    );
    return row;
  }

  function draw() {
    drawHead();
    // Rows are kept and redrawn in place, so a field being edited keeps its focus.
    const wanted = keys().filter((f) => !(f.ro && f.key.startsWith("converted") && !rec[f.key])).map(drawRow);
    if (wanted.length !== fields.children.length || wanted.some((r, i) => fields.children[i] !== r)) replace(fields, wanted);
    if (type === "leads" && rec.converted_at) {
      replace(extra, h("p", { class: "notice" }, "Converted: see the contact",
        rec.converted_company_id ? ", the company" : "", rec.converted_deal_id ? " and the deal" : "", " above."));
    }
  }

  function edit(f) {
    if (editing) cancel();
    const row = rows.get(f.key);
    const ed = editor(f.kind, valueOf(rec, f.key), rec, { "aria-label": f.name, name: f.key });
    const why = h("div", { "aria-live": "polite" });
    editing = { key: f.key, version: rec.version, base: rec };
    const form = h(
      "form",
      { class: "rec-inline-edit", onsubmit: async (ev) => {
        ev.preventDefault();
        const body = bodyFor(f.key, ed.read());
        replace(why);
        save.disabled = true;
        try {
          await patch(body, editing.version);
          editing = null;
          draw();
          rows.get(f.key)?.querySelector("button.edit")?.focus();
        } catch (e) {
          if (e.code === "version_conflict") conflict(body, editing.base, e.details && e.details.current);
          else replace(why, problem(e));
        } finally {
          save.disabled = false;
        }
      }, onkeydown: (ev) => {
        if (ev.key === "Escape") {
          ev.preventDefault();
          cancel();
          rows.get(f.key)?.querySelector("button.edit")?.focus();
        }
      } },
      ed.el,
      h("div", { class: "rec-inline-actions" }, h("button", { type: "submit", class: "primary" }, "Save"), h("button", { type: "button", onclick: cancel }, "Cancel")),
      why,
    );
    const save = form.querySelector("button[type=submit]");
    replace(row, h("dt", {}, h("label", {}, f.name)), h("dd", {}, form));
    ed.el.focus();
  }

  function cancel() {
    editing = null;
    draw();
  }

  async function patch(body, version) {
    const saved = await api("PATCH", `/${type}/${id}`, { ...body, version }, { headers: { "X-Mutation-Id": cause } });
    // A newer version may have come in by event while the answer was on its way.
    if (!rec || saved.version >= rec.version) rec = saved;
    forget(type, id);
    return saved;
  }

  /** Theirs (the record as it is now) against mine (the edit), field by field. */
  function conflict(body, base, current) {
    const f = keys();
    const mineKeys = body.custom_fields ? Object.keys(body.custom_fields).map((k) => `cf:${k}`) : Object.keys(body);
    const table = h("table", { class: "records-table rec-conflict", "data-testid": "conflict" });
    let theirs = current;
    const fill = () => {
      // What they changed since this edit began, and what the edit changes.
      const changed = f.filter((x) => !x.ro && (mineKeys.includes(x.key) || JSON.stringify(valueOf(base, x.key) ?? null) !== JSON.stringify(valueOf(theirs, x.key) ?? null)));
      replace(table,
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Theirs (now)"), h("th", { scope: "col" }, "Mine"))),
        h("tbody", {}, changed.map((x) => {
          const mine = mineKeys.includes(x.key);
          return h("tr", { "data-field": x.key },
            h("th", { scope: "row" }, x.name),
            h("td", { class: "theirs" }, show(x.kind, valueOf(theirs, x.key), theirs)),
            h("td", { class: "mine" }, mine ? show(x.kind, valueOf({ ...theirs, ...body, custom_fields: { ...theirs.custom_fields, ...body.custom_fields } }, x.key), theirs) : h("span", { class: "muted" }, "(not edited)")));
        })));
    };
    const open = async () => {
      if (!theirs) theirs = await api("GET", `/${type}/${id}`);
      fill();
      dialog("Someone else changed this record", h("div", {},
        h("p", {}, `While you were editing, it was changed (now version ${theirs.version}). Keep their values, or apply yours over them.`), h("div", { class: "rec-table-wrap" }, table)), [
        ["Keep theirs", () => {
          rec = theirs;
          editing = null;
          draw();
        }],
        ["Apply mine", async () => {
          try {
            await patch(body, theirs.version);
          } catch (e) {
            if (e.code !== "version_conflict" || !e.details?.current) throw e;
            // Changed again meanwhile: shown afresh, for another choice.
            theirs = e.details.current;
            fill();
            return false;
          }
          editing = null;
          draw();
        }, { primary: true }],
      ]);
    };
    open().catch((e) => say(problem(e)));
  }

  function remove() {
    dialog(`Delete this ${T.one}?`, h("p", {}, `“${titleOf(type, rec)}” will be deleted${TIMELINE.has(type) ? ", with activities linked only to it" : ""}.`), [
      ["Cancel", () => {}],
      ["Delete", async () => {
        await api("DELETE", `/${type}/${id}`, undefined, { headers: { "If-Match": `"${rec.version}"`, "X-Mutation-Id": cause } });
        go(`/records/${type}`);
      }, { primary: true }],
    ]);
  }

  async function convert() {
    // With one pipeline, it is the deal's.
    // Only to preselect the one pipeline: the picker below loads them itself, and says
    // why when it cannot.
    const ps = await pipelines().catch(() => []);
    const withDeal = h("input", { type: "checkbox", name: "with_deal" });
    const pipeline = editor("pipeline", ps.length === 1 ? ps[0].id : null, {}, { name: "pipeline_id" }, "Choose a pipeline");
    const dealTitle = h("input", { type: "text", name: "deal_title", placeholder: rec.company_name || rec.name });
    const amount = editor("money", null);
    const currency = h("input", { type: "text", name: "currency", value: "USD", maxlength: 3, size: 4 });
    const dealFields = h("fieldset", { class: "rec-form", disabled: true },
      h("legend", {}, "The deal"),
      h("label", {}, h("span", {}, "Pipeline"), pipeline.el),
      h("label", {}, h("span", {}, "Title"), dealTitle),
      h("label", {}, h("span", {}, "Amount"), amount.el),
      h("label", {}, h("span", {}, "Currency"), currency));
    withDeal.addEventListener("change", () => { dealFields.disabled = !withDeal.checked; });
    dialog("Convert lead", h("div", { class: "rec-form" },
      h("p", {}, `Makes a contact of ${rec.name}${rec.company_name ? `, a company of ${rec.company_name}` : ""}, and, if you wish, a deal.`),
      h("label", { class: "rec-check" }, withDeal, h("span", {}, "Also create a deal")),
      dealFields), [
      ["Cancel", () => {}],
      ["Convert", async () => {
        const body = {};
        if (withDeal.checked) {
          const deal = { pipeline_id: pipeline.read() };
          if (dealTitle.value.trim()) deal.title = dealTitle.value.trim();
          const a = amount.read();
          if (a !== null) Object.assign(deal, { amount: a, currency: currency.value.trim().toUpperCase() });
          body.deal = deal;
        }
        const done = await api("POST", `/leads/${id}/convert`, body, { headers: { "X-Mutation-Id": cause } });
        go(done.deal ? `/records/deals/${done.deal.id}` : `/records/contacts/${done.contact.id}`);
      }, { primary: true }],
    ]);
  }

  // The timeline: activities linked to this record, newest first, and a form to add one.
  const items = h("ol", { class: "timeline-items" });
  const more = h("div");
  let shown = [];
  async function loadTimeline() {
    try {
      const page = await api("GET", `/${type}/${id}/timeline?limit=50`);
      if (left) return;
      shown = page.data;
      drawTimeline(page.next_cursor);
    } catch (e) {
      replace(items, h("li", {}, problem(e)));
    }
  }
  function drawTimeline(next) {
    replace(items, shown.length ? shown.map(activity) : h("li", { class: "muted" }, "Nothing yet."));
    replace(more, next ? h("button", { type: "button", onclick: async (ev) => {
      ev.currentTarget.disabled = true;
      try {
        const page = await api("GET", `/${type}/${id}/timeline?limit=50&cursor=${encodeURIComponent(next)}`);
        shown = [...shown, ...page.data];
        drawTimeline(page.next_cursor);
      } catch (e) {
        replace(more, problem(e));
      }
    } }, "Older activities") : null);
  }
  function activity(a) {
    const kind = a.kind || "note";
    const toggle = kind === "task" ? h("input", { type: "checkbox", checked: a.done, "aria-label": `Done: ${a.subject || "task"}`, onchange: async (ev) => {
      const box = ev.currentTarget;
      try {
        const next = await api("PATCH", `/activities/${a.id}`, { done: box.checked, version: a.version }, { headers: { "X-Mutation-Id": cause } });
        Object.assign(a, next);
        box.closest("li").classList.toggle("done", next.done);
      } catch (e) {
        box.checked = !box.checked;
        say(problem(e));
      }
    } }) : null;
    return h("li", { class: `rec-activity rec-kind-${kind}${a.done ? " done" : ""}`, "data-id": a.id },
      h("div", { class: "rec-activity-head" }, toggle, h("span", { class: "rec-badge" }, label(kind)),
        link(`/records/activities/${a.id}`, a.subject || label(kind)),
        h("span", { class: "grow" }),
        a.due_date ? h("span", { class: "muted" }, `due ${a.due_date}`) : null,
        h("span", { class: "muted" }, show("ts", a.occurred_at || a.created_at))),
      a.body ? h("p", { class: "rec-activity-body" }, a.body) : null);
  }
  function addForm() {
    const kind = h("select", { name: "kind", "aria-label": "Kind" }, ["note", "task", "call", "meeting"].map((k) => h("option", { value: k }, label(k))));
    const subject = h("input", { type: "text", name: "subject", placeholder: "Subject", "aria-label": "Subject" });
    const body = h("textarea", { name: "body", rows: 3, placeholder: "What happened, what is next…", "aria-label": "Details" });
    const due = h("input", { type: "date", name: "due_date", "aria-label": "Due" });
    const minutes = h("input", { type: "number", name: "duration_minutes", min: 0, placeholder: "Minutes", "aria-label": "Minutes" });
    const dueLabel = h("label", { class: "rec-inline", hidden: true }, h("span", {}, "Due"), due);
    const minLabel = h("label", { class: "rec-inline", hidden: true }, h("span", {}, "Minutes"), minutes);
    kind.addEventListener("change", () => {
      dueLabel.hidden = kind.value !== "task";
      minLabel.hidden = kind.value !== "call" && kind.value !== "meeting";
    });
    const why = h("div", { "aria-live": "polite" });
    const add = h("button", { type: "submit", class: "primary" }, "Add");
    const form = h("form", { class: "rec-add-activity", "aria-label": "Add an activity", onsubmit: async (ev) => {
      ev.preventDefault();
      replace(why);
      const a = { kind: kind.value, [LINK[type]]: id };
      if (subject.value.trim()) a.subject = subject.value.trim();
      if (body.value.trim()) a.body = body.value.trim();
      if (kind.value === "task" && due.value) a.due_date = due.value;
      if (!minLabel.hidden && minutes.value) a.duration_minutes = Number(minutes.value);
      if (kind.value !== "task") a.occurred_at = new Date().toISOString();
      add.disabled = true;
      try {
        const made = await api("POST", "/activities", a, { headers: { "X-Mutation-Id": cause } });
        if (!shown.some((x) => x.id === made.id)) shown.unshift(made);
        drawTimeline(null);
        loadTimeline();
        form.reset();
        dueLabel.hidden = true;
        minLabel.hidden = true;
        subject.focus();
      } catch (e) {
        replace(why, problem(e));
      } finally {
        add.disabled = false;
      }
    } }, h("div", { class: "rec-add-row" }, kind, subject), body, h("div", { class: "rec-add-row" }, dueLabel, minLabel, h("span", { class: "grow" }), add), why);
    return form;
  }

  // Others' changes: the record on its workspace topic (a deal on its board), and the
  // activities linked to it.
  let stops = [];
  let timer = null;
  function follow() {
    for (const s of stops) s();
    if (left) return;
    const topics = [`workspace:${me().workspace.id}`];
    if (type === "deals") topics.push(`board:${rec.pipeline_id}`);
    stops = topics.map((topic) => live.follow(topic, (m) => onFrame(topic, m)));
  }
  function onFrame(topic, m) {
    if (m.type === "snapshot") {
      // Whatever changed before the subscription (or during a gap) is fetched again;
      // what changes after it comes as events.
      if (topic.startsWith("workspace:")) return refresh();
      const d = (m.state.deals || []).find((x) => x.id === id);
      return d ? changed(d, "someone") : null;
    }
    if (m.type !== "event" || !m.data) return;
    const d = m.data;
    if (d.object_type === T.one && d.id === id) {
      if (m.kind.endsWith(".deleted")) {
        say(h("p", { class: "error", role: "alert" }, `This ${T.one} was deleted${m.cause === cause ? "" : " by someone else"}.`));
        for (const b of el.querySelectorAll("button")) b.disabled = true;
        return;
      }
      if (m.cause !== cause) changed(d.record, "someone else");
    } else if (d.object_type === "activity" && TIMELINE.has(type) && (d.record?.[LINK[type]] === id || shown.some((x) => x.id === d.id))) {
      clearTimeout(timer);
      timer = setTimeout(loadTimeline, 200);
    }
  }
  function changed(next, who) {
    if (left || !next || next.version <= rec.version) return;
    recent.clear();
    for (const f of keys()) if (JSON.stringify(valueOf(rec, f.key) ?? null) !== JSON.stringify(valueOf(next, f.key) ?? null)) recent.add(f.key);
    const pipelineMoved = type === "deals" && next.pipeline_id !== rec.pipeline_id;
    rec = next;
    forget(type, id);
    draw();
    const mine = editing && recent.has(editing.key);
    const names = [...recent].filter((k) => !k.endsWith("ed_at")).map((k) => keys().find((f) => f.key === k)?.name || k);
    say(h("p", { class: "notice", role: "status" }, `Updated by ${who}${names.length ? ": " + names.join(", ") : ""}.`,
      mine ? " You are editing a field they changed: saving will ask which to keep." : ""));
    setTimeout(() => { recent.clear(); if (!left && rec) draw(); }, 1500);
    if (pipelineMoved) follow();
  }
  async function refresh() {
    try {
      changed(await api("GET", `/${type}/${id}`), "someone");
      if (TIMELINE.has(type)) loadTimeline();
    } catch (e) {
      say(problem(e));
    }
  }
  ctx.onLeave(() => { for (const s of stops) s(); clearTimeout(timer); });

  (async () => {
    try {
      const [r, d] = await Promise.all([
        api("GET", `/${type}/${id}`),
        type === "activities" ? { data: [] } : api("GET", `/custom-fields?object_type=${T.one}&limit=200`),
      ]);
      if (left) return;
      rec = r;
      defs = d.data;
      draw();
      if (TIMELINE.has(type)) {
        replace(side, h("section", { class: "card rec-timeline", "aria-label": "Timeline" }, h("h2", {}, "Timeline"), addForm(), items, more));
        loadTimeline();
      } else if (type === "activities") {
        const parent = ["deal_id", "contact_id", "company_id", "lead_id"].find((k) => rec[k]);
        if (parent) replace(side, h("section", { class: "card", "aria-label": "Linked to" }, h("h2", {}, "Linked to"), h("p", {}, show(`ref:${PLURAL[parent.slice(0, -3)]}`, rec[parent]))));
      }
      follow();
    } catch (e) {
      title.textContent = e.status === 404 ? `No such ${T.one}` : "Cannot show this record";
      say(problem(e));
    }
  })();
  return el;
}
