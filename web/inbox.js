// The support inbox: views (mine, unassigned, all, per inbox, with filters), a live
// conversation list, the thread with its composer, and the side panel that assigns,
// labels and changes status. Every inbox the member can see is followed at once, so
// counts and unread badges stay right whatever view is on screen.
//
// Addresses: /inbox/<view>[/c/<conversation id>]?status=&team=&label=&priority=
// where <view> is mine (the default), unassigned, all or i/<inbox id>.

import { h, replace } from "./dom.js";
import { api, ApiFailure } from "./api.js";
import * as live from "./live.js";
import { me } from "./session.js";
import { problem, when, initials, link } from "./ui.js";

const ACTIVE = ["open", "pending", "snoozed"];
const STATUSES = ["open", "pending", "snoozed", "resolved"];
const PRIORITIES = ["none", "low", "medium", "high", "urgent"];
const DELIVERY = { pending: "Sending…", sent: "Sent", delivered: "Delivered", read: "Read", failed: "Not delivered" };
const FRAME_CSS = new URL("./inbox.css", import.meta.url).href;
const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);
const drafts = new Map(); // conversation id → unsent text, kept across views

/** A refusal said in words, whether the REST API's or a command's nack. */
function fail(e) {
  if (e instanceof Error) return problem(e);
  return problem(new ApiFailure(0, { error: e || {} }));
}

function parse(path, search) {
  const m = path.match(/^(?:(mine|unassigned|all|i\/[0-9a-zA-Z-]+)\/?)?(?:c\/([0-9a-zA-Z-]+))?\/?$/) || [];
  const q = new URLSearchParams(search);
  return {
    view: m[1] || (m[2] ? "all" : "mine"),
    conv: m[2] || null,
    status: q.get("status") || "active",
    team: q.get("team") || "",
    label: q.get("label") || "",
    priority: q.get("priority") || "",
  };
}

export function inboxView(path, { onLeave }) {
  const self = me().user.id;
  const wsTopic = `workspace:${me().workspace.id}`;
  const inboxes = new Map();
  const members = new Map(); // user id → {name, role}
  const teams = new Map();
  const contacts = new Map(); // id → contact, or null when it cannot be read
  const convs = new Map();
  const unread = new Map();
  const readAt = new Map(); // conversation id → when it was last read (performance.now())
  const openTotal = new Map(); // inbox id → its unresolved conversations, all of them
  const complete = new Map(); // "mine"/"unassigned" → whether one page held them all
  const snippets = new Map(); // conversation id → its latest message text seen live
  const ready = new Set(); // inbox ids whose topic has answered
  const present = new Map(); // inbox id → presence members
  const availability = new Map();
  let canned = [];
  let macros = [];
  let route = parse(path, location.search);
  let listState = { loading: true, error: null, cursor: null, token: 0 };
  let thread = null;
  let leaving = false;
  let pending = false; // a redraw is due on the next frame
  let inboxesLoaded = false;
  let inboxesError = null;
  let setupError = null; // the last failed background request, until one succeeds

  const announcer = h("div", { class: "visually-hidden", "aria-live": "polite" });
  const alertsEl = h("div", { class: "sla-alerts" });
  const navEl = h("nav", { class: "inbox-nav", "aria-label": "Inbox views" });
  const listEl = h("section", { class: "inbox-list", "aria-label": "Conversations" });
  const threadEl = h("section", { class: "inbox-thread", "aria-label": "Conversation" });
  const sideEl = h("aside", { class: "inbox-side", "aria-label": "Conversation details" });
  const el = h("div", { class: "inbox" }, navEl, listEl, threadEl, sideEl, announcer, alertsEl);

  // Availability: the member's own switch, everyone's status for the assignee menu.
  const availSelect = h(
    "select",
    {
      "aria-label": "My availability",
      onchange: async () => {
        replace(availStatus);
        try {
          const a = await api("PUT", "/availability", { status: availSelect.value });
          availability.set(self, a.status);
        } catch (e) {
          replace(availStatus, problem(e));
          availSelect.value = availability.get(self) || "offline";
        }
        drawAvailability();
      },
    },
    ["online", "busy", "offline"].map((s) => h("option", { value: s }, cap(s))),
  );
  const availDot = h("span", { class: "dot offline", "aria-hidden": "true" });
  const availStatus = h("div", { "aria-live": "polite" });
  const availEl = h("div", { class: "availability" }, h("label", {}, h("span", {}, availDot, h("span", { class: "avail-text" }, "My status")), availSelect), availStatus);

  function drawAvailability() {
    const s = availability.get(self) || "offline";
    if (document.activeElement !== availSelect) availSelect.value = s;
    availDot.className = `dot ${s}`;
  }

  // ---- routes, without tearing the view down: the subscriptions and the list stay.
  function href(view, conv, filters = route) {
    const q = new URLSearchParams();
    for (const k of ["status", "team", "label", "priority"]) {
      const v = filters[k];
      if (v && !(k === "status" && v === "active")) q.set(k, v);
    }
    const qs = q.toString();
    return `/inbox/${view}${conv ? `/c/${conv}` : ""}${qs ? `?${qs}` : ""}`;
  }

  function goto(url) {
    if (location.pathname + location.search !== url) history.pushState({}, "", url);
    const before = route;
    route = parse(location.pathname.replace(/^\/inbox\/?/, ""), location.search);
    if (["view", "status", "team", "label", "priority"].some((k) => before[k] !== route[k])) loadList();
    if (before.conv !== route.conv) openThread();
    draw();
  }

  // Links within the inbox keep its subscriptions and drafts: see goto.
  const to = (url, text, attrs = {}) => link(url, text, attrs, goto);

  // ---- data
  // An answer asked for before the conversation was read holds the count from before.
  function keep(c, asked = 0) {
    const old = convs.get(c.id);
    if (old && old.version > c.version) return;
    convs.set(c.id, c);
    if (typeof c.unread_count === "number" && !(readAt.get(c.id) > asked)) unread.set(c.id, c.unread_count);
  }

  /** Conversations from the REST API (one, or a page's), kept as they arrive. */
  function getConvs(path) {
    const at = performance.now();
    return api("GET", path).then((p) => {
      for (const c of p.data || [p]) keep(c, at);
      return p;
    });
  }

  function read(id) {
    readAt.set(id, performance.now());
    unread.set(id, 0);
  }

  // Contacts are asked for when a row or the thread names one: those wanted by one
  // drawing go in batches of 100, each contact once.
  const asked = new Set();
  let wanted = [];
  function want(id) {
    if (!id || asked.has(id)) return;
    asked.add(id);
    if (!wanted.length) queueMicrotask(fetchContacts);
    wanted.push(id);
  }
  function fetchContacts() {
    for (let i = 0; i < wanted.length; i += 100) {
      const ids = wanted.slice(i, i + 100);
      api("GET", `/contacts?id_in=${ids.join(",")}&limit=100`)
        .then((p) => p.data.forEach((c) => contacts.set(c.id, c)), (e) => (setupError = e))
        .finally(() => {
          for (const id of ids) if (!contacts.has(id)) contacts.set(id, null);
          if (thread) thread.sideDirty = true;
          schedule();
        });
    }
    wanted = [];
  }
  function contactName(id) {
    want(id);
    if (!contacts.has(id)) return "…";
    const c = contacts.get(id);
    return c ? c.name : "Contact unavailable";
  }

  function memberName(id) {
    return (members.get(id) || {}).name || "A member";
  }

  function authorName(m) {
    const [kind, id] = (m.author || "").split(":");
    if (kind === "user") return id === self ? "You" : memberName(id);
    if (kind === "contact") return contactName(id);
    if (kind === "api_key") return "API";
    return "Shoal";
  }

  function matches(c, r = route, withFilters = true) {
    if (r.view === "mine" && c.assignee_id !== self) return false;
    if (r.view === "unassigned" && c.assignee_id) return false;
    if (r.view.startsWith("i/") && c.inbox_id !== r.view.slice(2)) return false;
    if (!withFilters) return ACTIVE.includes(c.status);
    if (r.status === "active" ? !ACTIVE.includes(c.status) : r.status !== "any" && c.status !== r.status) return false;
    if (r.team && c.team_id !== r.team) return false;
    if (r.label && !(c.tags || []).includes(r.label)) return false;
    if (r.priority && c.priority !== r.priority) return false;
    return true;
  }

  function listQuery(cursor) {
    const q = new URLSearchParams({ sort: "-last_message_at", limit: "100" });
    const r = route;
    if (r.view === "mine") q.set("assignee", "me");
    if (r.view === "unassigned") q.set("assignee", "none");
    if (r.view.startsWith("i/")) q.set("inbox_id", r.view.slice(2));
    if (r.status === "active") q.set("status_in", ACTIVE.join(","));
    else if (r.status !== "any") q.set("status", r.status);
    if (r.team) q.set("team_id", r.team);
    if (r.label) q.set("tags", r.label);
    if (r.priority) q.set("priority", r.priority);
    if (cursor) q.set("cursor", cursor);
    return `/conversations?${q}`;
  }

  async function loadList(cursor = null) {
    const token = ++listState.token;
    listState = { ...listState, loading: true, error: null };
    schedule();
    try {
      const page = await getConvs(listQuery(cursor));
      if (token !== listState.token) return;
      listState = { ...listState, loading: false, cursor: page.next_cursor };
    } catch (e) {
      if (token !== listState.token) return;
      listState = { ...listState, loading: false, error: e };
    }
    schedule();
  }

  // ---- live
  function onInboxFrame(inboxId, msg) {
    if (leaving) return;
    if (msg.type === "snapshot") {
      const seen = new Set();
      for (const c of msg.state.conversations || []) {
        keep(c);
        seen.add(c.id);
      }
      // Gone from the work list since we last looked: resolved or deleted meanwhile.
      if (!msg.state.more) {
        for (const c of [...convs.values()]) {
          if (c.inbox_id === inboxId && ACTIVE.includes(c.status) && !seen.has(c.id)) convs.delete(c.id);
        }
      }
      ready.add(inboxId);
      openTotal.set(inboxId, msg.state.open_total ?? seen.size);
      // Unread counts are the member's own, not in the snapshot: asked now that events
      // count on from here, for every view's badges, not only the one on screen.
      background(getConvs(`/conversations?inbox_id=${inboxId}&status_in=${ACTIVE}&limit=200`), () => {});
      if (thread && thread.inboxId === inboxId) threadReady();
    } else if (msg.type === "event") {
      onEvent(inboxId, msg);
    } else if (msg.type === "presence") {
      present.set(inboxId, msg.members || []);
    } else if (msg.type === "collision") {
      if (thread && thread.id === msg.conversation_id) {
        thread.collision = (msg.replying || []).filter((u) => u !== self);
      }
    }
    schedule();
  }

  function onEvent(inboxId, msg) {
    const d = msg.data || {};
    const kind = msg.kind;
    if (d.object_type === "conversation") {
      countOpen(inboxId, kind, d);
      if (kind.startsWith("sla.")) slaNotice(kind, d);
    }
    if (kind === "inbox.updated" && d.record) inboxes.set(inboxId, d.record);
    else if (kind === "inbox.deleted") inboxes.delete(inboxId);
    else if (kind === "conversation.deleted") {
      convs.delete(d.id);
      if (thread && thread.id === d.id) thread.gone = true;
    } else if ((kind.startsWith("conversation.") || kind.startsWith("sla.")) && d.record) {
      keep(d.record);
      if (thread && thread.id === d.id) thread.sideDirty = true;
    } else if (kind === "message.created" && d.record) {
      const m = d.record;
      if (m.kind === "message") snippets.set(m.conversation_id, m.text);
      const open = thread && thread.id === m.conversation_id;
      if (open) addMessages([m]);
      if (m.direction === "incoming") {
        if (open && document.visibilityState === "visible") markRead(m.conversation_id);
        else unread.set(m.conversation_id, (unread.get(m.conversation_id) || 0) + 1);
        const c = convs.get(m.conversation_id);
        announcer.textContent = `New message from ${c ? contactName(c.contact_id) : "a customer"}`;
      }
    } else if (kind === "message.updated" && d.record && thread && thread.id === d.record.conversation_id) {
      addMessages([d.record], true);
    }
  }

  // Counted as the inbox's actor counts (src/actors/inbox_window.rs): whether the event
  // took the conversation in or out of the unresolved ones.
  function countOpen(inboxId, kind, d) {
    const open = (s) => typeof s === "string" && s !== "resolved";
    const changes = d.changes || {};
    const status = (d.record || {}).status;
    const was = changes.status ? open(changes.status[0]) : !kind.endsWith(".created") && open(status);
    const is = !kind.endsWith(".deleted") && open(status);
    if (was !== is && openTotal.has(inboxId)) openTotal.set(inboxId, Math.max(0, openTotal.get(inboxId) + (is ? 1 : -1)));
    if (changes.status || changes.assignee_id || kind.endsWith(".deleted")) for (const v of ["mine", "unassigned"]) if (complete.get(v) === false) recount(v);
  }

  // Mine and Unassigned have no total: one page of 200 says the count when it holds
  // them all (events keep it from then on), else "200+", asked again after changes.
  const recounts = new Map();
  function recount(view, wait = 5000) {
    if (recounts.has(view)) return;
    recounts.set(
      view,
      setTimeout(() => {
        recounts.delete(view);
        getConvs(`/conversations?assignee=${view === "mine" ? "me" : "none"}&status_in=${ACTIVE}&sort=-last_message_at&limit=200`).then(
          (p) => complete.set(view, !p.next_cursor),
          (e) => (setupError = e),
        ).finally(schedule);
      }, wait),
    );
  }

  // The member's own topic: reads from their other sessions, and SLA alarms of the
  // conversations assigned to them.
  function onUserFrame(msg) {
    if (leaving || msg.type !== "event") return;
    const d = msg.data || {};
    if (msg.kind === "conversation.read") {
      const c = convs.get(d.conversation_id);
      read(d.conversation_id);
      // A customer may have written after that moment.
      if (c && c.last_message_at > d.last_read_at) background(getConvs(`/conversations/${c.id}`), () => {});
    } else if (msg.kind.startsWith("sla.")) slaNotice(msg.kind, d);
    schedule();
  }

  const alerted = new Set();
  const notices = new Map(); // "<conversation> <target>" → its notice on screen
  function slaNotice(kind, d) {
    const c = d.record || convs.get(d.id) || {};
    const key = `${kind} ${d.id} ${d.target}`;
    if (alerted.has(key) || (c.assignee_id !== self && route.conv !== d.id)) return;
    alerted.add(key);
    const breached = kind === "sla.breached";
    const name = `#${c.number} “${c.subject || "(no subject)"}”`;
    const note = h(
      "div",
      { class: `sla-alert${breached ? " breached" : ""}`, role: "alert" },
      h(
        "p",
        {},
        h("strong", {}, breached ? "SLA breached: " : "SLA warning: "),
        `${cap(String(d.target || "response").replaceAll("_", " "))} for `,
        to(href(route.view, d.id), name),
        ` ${breached ? "was" : "is"} due `,
        h("time", { datetime: d.due_at }, when(d.due_at)),
        ".",
      ),
      h(
        "button",
        {
          type: "button",
          class: "quiet",
          "aria-label": `Dismiss the SLA ${breached ? "breach" : "warning"} for ${name}`,
          onclick: () => {
            note.remove();
            alertsEl.querySelector("button")?.focus();
          },
        },
        "Dismiss",
      ),
    );
    // A breach takes the place of the same deadline's warning.
    notices.get(`${d.id} ${d.target}`)?.remove();
    notices.set(`${d.id} ${d.target}`, note);
    alertsEl.append(note);
  }

  function onWorkspaceFrame(msg) {
    // Availability frames are not replayed: once following, ask who is available now.
    if (msg.type === "snapshot") {
      background(api("GET", "/availability"), (p) => p.data.forEach((m) => availability.set(m.user_id, m.status)));
      return;
    }
    if (msg.type === "availability") {
      availability.clear();
      for (const [u, s] of Object.entries(msg.members || {})) availability.set(u, s);
      drawAvailability();
      if (thread) thread.sideDirty = true;
      schedule();
      return;
    }
    if (msg.type !== "event") return;
    const d = msg.data || {};
    const lists = { canned_response: () => canned, macro: () => macros };
    const type = d.object_type;
    if (type === "team") {
      if (msg.kind.endsWith(".deleted")) teams.delete(d.id);
      else if (d.record) teams.set(d.id, d.record);
    } else if (lists[type]) {
      const next = lists[type]().filter((x) => x.id !== d.id);
      if (!msg.kind.endsWith(".deleted") && d.record) next.push(d.record);
      if (type === "macro") macros = next.sort((a, b) => a.name.localeCompare(b.name));
      else canned = next.sort((a, b) => a.shortcode.localeCompare(b.shortcode));
    } else return;
    if (thread) thread.sideDirty = true;
    schedule();
  }

  const stops = [];
  stops.push(live.follow(wsTopic, onWorkspaceFrame));
  stops.push(live.follow(`user:${me().workspace.id}:${self}`, onUserFrame));
  stops.push(
    live.onConnectionState((state) => {
      schedule();
      // Presence went with the old connection; said again once live.js has resubscribed.
      if (state === "open") setTimeout(() => sendPresence(true), 0);
    }),
  );

  api("GET", "/inboxes?limit=200").then(
    (page) => {
      if (leaving) return;
      for (const ib of page.data) {
        inboxes.set(ib.id, ib);
        stops.push(live.follow(`inbox:${ib.id}`, (msg) => onInboxFrame(ib.id, msg)));
      }
      inboxesLoaded = true;
      schedule();
    },
    (e) => {
      inboxesError = e;
      schedule();
    },
  );
  const background = (promise, use) =>
    promise.then(
      (x) => {
        use(x);
        setupError = null;
        if (thread) thread.sideDirty = true;
        schedule();
      },
      (e) => {
        setupError = e;
        schedule();
      },
    );
  background(api("GET", "/members"), (p) => p.data.forEach((m) => members.set(m.user_id, m)));
  background(api("GET", "/teams?limit=200"), (p) => p.data.forEach((t) => teams.set(t.id, t)));
  background(api("GET", "/canned-responses?limit=200&sort=shortcode"), (p) => (canned = p.data));
  background(api("GET", "/macros?limit=200&sort=name"), (p) => (macros = p.data));
  loadList();
  recount("mine", 0);
  recount("unassigned", 0);

  // ---- drawing, at most once a frame however many events arrive
  function schedule() {
    if (pending || leaving) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  }

  function draw() {
    if (leaving) return;
    el.classList.toggle("has-thread", !!route.conv);
    // Links are redrawn on every event: the one with the keyboard's focus keeps it.
    const focused = document.activeElement;
    const keepFocus = focused && focused.tagName === "A" && (navEl.contains(focused) || listEl.contains(focused)) ? focused.getAttribute("href") : null;
    drawAvailability();
    drawNav();
    drawList();
    if (thread) drawThread();
    if (keepFocus && !el.contains(document.activeElement)) {
      [...el.querySelectorAll("a")].find((a) => a.getAttribute("href") === keepFocus)?.focus();
    }
  }

  // A view's unresolved conversations: an inbox's as its actor counts them, All as the
  // sum of them, the others as "200+" when more than a page.
  function viewCounts(view) {
    let count = 0;
    let fresh = 0;
    for (const c of convs.values()) {
      if (!matches(c, { view }, false)) continue;
      count += 1;
      if (unread.get(c.id) > 0) fresh += 1;
    }
    const boxes = view === "all" ? [...inboxes.keys()] : view.startsWith("i/") ? [view.slice(2)] : [];
    if (boxes.length && boxes.every((id) => openTotal.has(id))) count = boxes.reduce((n, id) => n + openTotal.get(id), 0);
    else if (complete.get(view) === false) count = "200+";
    return [count, fresh];
  }

  function navItem(view, label) {
    const [count, fresh] = viewCounts(view);
    const current = route.view === view;
    return h(
      "li",
      {},
      to(href(view, null), [h("span", { class: "view-name" }, label), h("span", { class: "count" }, String(count)), fresh ? h("span", { class: "badge", "aria-label": `${fresh} unread` }, String(fresh)) : null], {
        class: current ? "view active" : "view",
        "aria-current": current ? "page" : null,
        "data-view": view,
      }),
    );
  }

  const viewsEl = h("ul", { class: "views" });
  const boxesEl = h("div", {});
  replace(navEl, availEl, viewsEl, h("h2", {}, "Inboxes"), boxesEl);

  function drawNav() {
    const boxes = [...inboxes.values()].sort((a, b) => a.name.localeCompare(b.name));
    replace(viewsEl, navItem("mine", "Mine"), navItem("unassigned", "Unassigned"), navItem("all", "All"));
    replace(
      boxesEl,
      inboxesError ? problem(inboxesError) : null,
      inboxesLoaded && !boxes.length ? h("p", { class: "muted" }, "No inboxes yet.") : null,
      h("ul", { class: "views" }, boxes.map((ib) => navItem(`i/${ib.id}`, ib.name))),
    );
  }

  function viewTitle() {
    if (route.view === "mine") return "Assigned to me";
    if (route.view === "unassigned") return "Unassigned";
    if (route.view === "all") return "All conversations";
    return (inboxes.get(route.view.slice(2)) || {}).name || "Inbox";
  }

  function filterSelect(key, label, options) {
    return h(
      "label",
      {},
      h("span", {}, label),
      h(
        "select",
        { name: key, onchange: (ev) => goto(href(route.view, route.conv, { ...route, [key]: ev.target.value })) },
        options.map(([v, text]) => h("option", { value: v, selected: route[key] === v }, text)),
      ),
    );
  }

  // The list's head and filters stay on the page: an open menu is not closed by events.
  const titleEl = h("h1", {});
  const countEl = h("span", { class: "count", "data-testid": "list-count" });
  const connEl = h("span", {});
  const filterBox = h("details", { class: "filter-box" });
  const rowsEl = h("div", {});
  let filterKey = "";
  replace(listEl, h("div", { class: "list-head" }, titleEl, countEl, connEl), filterBox, rowsEl);

  function drawFilters() {
    const labels = new Set(route.label ? [route.label] : []);
    for (const c of convs.values()) for (const t of c.tags || []) labels.add(t);
    const key = JSON.stringify([route, [...teams.values()].map((t) => [t.id, t.name]), [...labels].sort()]);
    if (key === filterKey) return;
    filterKey = key;
    if (route.status !== "active" || route.team || route.label || route.priority) filterBox.open = true;
    replace(
      filterBox,
      h("summary", {}, "Filters"),
      h(
        "div",
        { class: "filters" },
        filterSelect("status", "Status", [["active", "Open, pending, snoozed"], ...STATUSES.map((s) => [s, cap(s)]), ["any", "Any status"]]),
        filterSelect("team", "Team", [["", "Any team"], ...[...teams.values()].map((t) => [t.id, t.name])]),
        filterSelect("label", "Label", [["", "Any label"], ...[...labels].sort().map((t) => [t, t])]),
        filterSelect("priority", "Priority", [["", "Any priority"], ...PRIORITIES.map((p) => [p, cap(p)])]),
      ),
    );
  }

  function drawList() {
    const rows = [...convs.values()].filter((c) => matches(c)).sort((a, b) => (a.last_message_at < b.last_message_at ? 1 : a.last_message_at > b.last_message_at ? -1 : 0));
    titleEl.textContent = viewTitle();
    const plain = route.status === "active" && !route.team && !route.label && !route.priority;
    countEl.textContent = plain ? String(viewCounts(route.view)[0]) : `${rows.length}${listState.cursor ? "+" : ""}`;
    replace(connEl, live.connectionState() === "reconnecting" ? h("span", { class: "reconnecting" }, "Reconnecting…") : null);
    drawFilters();
    replace(
      rowsEl,
      listState.error ? problem(listState.error) : null,
      setupError ? problem(setupError) : null,
      rows.length ? h("ul", { class: "convs" }, rows.map(row)) : h("p", { class: "muted empty" }, listState.loading ? "Loading…" : "No conversations here."),
      listState.cursor ? h("button", { type: "button", class: "quiet more", onclick: () => loadList(listState.cursor) }, "Show more") : null,
    );
  }

  function othersOn(inboxId, convId) {
    return (present.get(inboxId) || []).filter((p) => p.user_id !== self && p.state && p.state.conversation_id === convId);
  }

  function row(c) {
    const n = unread.get(c.id) || 0;
    const replying = othersOn(c.inbox_id, c.id).filter((p) => p.state.activity === "replying");
    const current = route.conv === c.id;
    const meta = [
      c.status !== "open" ? h("span", { class: `chip status-${c.status}` }, cap(c.status)) : null,
      c.priority !== "none" ? h("span", { class: `chip prio-${c.priority}` }, cap(c.priority)) : null,
      c.sla_breached ? h("span", { class: "chip breached" }, "SLA breached") : null,
      route.view.startsWith("i/") ? null : h("span", {}, (inboxes.get(c.inbox_id) || {}).name || ""),
      c.assignee_id ? h("span", { class: "who", title: `Assigned to ${memberName(c.assignee_id)}` }, initials(memberName(c.assignee_id))) : null,
      (c.tags || []).map((t) => h("span", { class: "tag" }, t)),
      replying.length ? h("span", { class: "replying" }, `${memberName(replying[0].user_id)} is replying`) : null,
    ];
    return h(
      "li",
      {},
      to(
        href(route.view, c.id),
        [
          h("div", { class: "conv-top" }, h("span", { class: "conv-name" }, contactName(c.contact_id)), h("time", { datetime: c.last_message_at }, when(c.last_message_at))),
          h("div", { class: "conv-subject" }, `#${c.number} · ${c.subject || snippets.get(c.id) || "(no subject)"}`),
          snippets.has(c.id) && c.subject ? h("div", { class: "conv-snippet" }, snippets.get(c.id)) : null,
          h("div", { class: "conv-meta" }, meta),
          n ? h("span", { class: "badge", "data-testid": "unread", "aria-label": `${n} unread` }, String(n)) : null,
        ],
        { class: `conv${n ? " unread" : ""}${current ? " active" : ""}`, "data-id": c.id, "aria-current": current ? "true" : null },
      ),
    );
  }

  // ---- the thread
  function openThread() {
    if (thread) closeThread();
    if (!route.conv) {
      replace(threadEl, h("p", { class: "muted pick" }, "Choose a conversation."));
      replace(sideEl);
      return;
    }
    const id = route.conv;
    thread = {
      id,
      inboxId: null,
      messages: new Map(),
      els: new Map(),
      shown: [],
      cursor: null,
      loading: true,
      error: null,
      collision: [],
      sideDirty: true,
      readPending: true,
      activity: null,
      gone: false,
    };
    const t = thread;
    buildThread(t);
    const known = convs.get(id);
    if (known) t.inboxId = known.inbox_id;
    getConvs(`/conversations/${id}`).then(
      (c) => {
        t.inboxId = c.inbox_id;
        t.sideDirty = true;
        if (ready.has(t.inboxId) && thread === t) threadReady();
        schedule();
      },
      (e) => {
        t.error = e;
        schedule();
      },
    );
    loadMessages(t);
    if (t.inboxId && ready.has(t.inboxId)) threadReady();
  }

  async function loadMessages(t, cursor = null) {
    try {
      const page = await api("GET", `/conversations/${t.id}/messages?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      t.cursor = page.next_cursor;
      t.loading = false;
      t.sideDirty = true;
      if (thread === t) addMessages(page.data);
    } catch (e) {
      t.loading = false;
      t.error = e;
      t.sideDirty = true;
    }
    schedule();
  }

  function threadReady() {
    const t = thread;
    if (!t || !t.inboxId || !ready.has(t.inboxId)) return;
    sendPresence(true);
    if (t.readPending) markRead(t.id);
  }

  const readTimers = new Map();
  function markRead(id) {
    const c = convs.get(id);
    if (!c || !ready.has(c.inbox_id) || readTimers.has(id)) return;
    // Several messages in a burst are read with one command.
    readTimers.set(
      id,
      setTimeout(() => {
        readTimers.delete(id);
        live.command(`inbox:${c.inbox_id}`, "conversation.read", { id }).then(
          () => {
            if (thread && thread.id === id) thread.readPending = false;
            read(id);
            schedule();
          },
          (n) => {
            if (thread && thread.id === id) replace(thread.status, fail(n));
          },
        );
      }, 150),
    );
  }

  function sendPresence(force) {
    const t = thread;
    if (!t || !t.inboxId || !ready.has(t.inboxId)) return;
    const activity = t.text && t.text.value.trim() ? "replying" : "viewing";
    if (!force && activity === t.activity) return;
    t.activity = activity;
    live.presence(`inbox:${t.inboxId}`, { conversation_id: t.id, activity });
  }

  function closeThread() {
    const t = thread;
    thread = null;
    if (t.text) {
      if (t.text.value.trim()) drafts.set(t.id, t.text.value);
      else drafts.delete(t.id);
    }
    if (t.inboxId && ready.has(t.inboxId) && !leaving) live.presence(`inbox:${t.inboxId}`, null);
  }

  function addMessages(list, changed = false) {
    const t = thread;
    for (const m of list) {
      const old = t.messages.get(m.id);
      if (old && old.version >= m.version && !changed) continue;
      t.messages.set(m.id, m);
      const shown = t.els.get(m.id);
      if (shown) {
        // Redrawn where it is: the others' frames stay loaded.
        const fresh = message(m);
        shown.replaceWith(fresh);
        t.els.set(m.id, fresh);
        t.shown = t.shown.map((e) => (e === shown ? fresh : e));
      }
    }
    drawMessages();
  }

  function drawMessages() {
    const t = thread;
    const box = t.list;
    const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const ids = [...t.messages.values()].sort((a, b) => (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id < b.id ? -1 : 1)).map((m) => m.id);
    const els = ids.map((id) => {
      if (!t.els.has(id)) t.els.set(id, message(t.messages.get(id)));
      return t.els.get(id);
    });
    // Appending keeps the frames of earlier messages loaded (moving one reloads it).
    const prefix = t.shown.length <= els.length && t.shown.every((e, i) => e === els[i]);
    if (prefix) box.append(...els.slice(t.shown.length));
    else box.replaceChildren(...els);
    t.shown = els;
    if (nearEnd || !t.scrolled) {
      box.scrollTop = box.scrollHeight;
      // On a phone the page scrolls, not the list.
      if (!t.scrolled && box.scrollHeight <= box.clientHeight + 1) box.lastElementChild?.scrollIntoView({ block: "nearest" });
      t.scrolled = els.length > 0;
    }
  }

  function message(m) {
    const stamp = h("time", { datetime: m.created_at }, when(m.created_at));
    if (m.kind === "activity") return h("li", { class: "msg activity" }, h("span", {}, m.text), " · ", stamp);
    const note = m.kind === "note";
    const cls = note ? "note" : m.direction === "incoming" ? "incoming" : "outgoing";
    const status = !note && m.direction === "outgoing" && m.delivery_status ? h("span", { class: `delivery ${m.delivery_status}` }, DELIVERY[m.delivery_status] || m.delivery_status) : null;
    return h(
      "li",
      { class: `msg ${cls}`, "data-id": m.id },
      h("div", { class: "msg-meta" }, note ? h("strong", { class: "note-label" }, "Private note") : null, h("span", { class: "author" }, authorName(m)), stamp, status),
      m.html ? rich(m) : h("div", { class: "msg-text" }, m.text),
      Array.isArray(m.attachments) && m.attachments.length
        ? h("ul", { class: "attachments" }, m.attachments.map((a) => h("li", {}, /^https?:\/\//.test(a.url || "") ? h("a", { href: a.url, rel: "noopener noreferrer nofollow", target: "_blank" }, a.name) : a.name, ` (${Math.ceil(a.size / 1024)} KB)`)))
        : null,
    );
  }

  // The server sanitised the HTML; it is shown in a frame sandboxed with no permissions
  // (no scripts, an opaque origin), from srcdoc. What the page's CSP would refuse there
  // is taken out first, in an inert parsed copy: remote images (which would also tell
  // the sender it was read) become their alt text, and links, which cannot open from
  // the sandbox, are listed under it as real links.
  function rich(m) {
    const doc = new DOMParser().parseFromString(m.html, "text/html");
    const links = [];
    for (const e of [...doc.body.querySelectorAll("*")]) {
      const tag = e.tagName.toLowerCase();
      if (["script", "style", "link", "meta", "base", "iframe", "object", "embed", "video", "audio", "source"].includes(tag)) {
        e.remove();
        continue;
      }
      if (tag === "img" && !/^data:image\//i.test(e.getAttribute("src") || "")) {
        e.replaceWith(`[image${e.getAttribute("alt") ? `: ${e.getAttribute("alt")}` : ""}]`);
        continue;
      }
      const href = tag === "a" ? e.getAttribute("href") || "" : "";
      if (/^(https?:|mailto:)/i.test(href)) links.push([e.textContent.trim() || href, href]);
      for (const { name } of [...e.attributes]) {
        if (/^on|^(style|srcset|background|poster|href|action|formaction)$/i.test(name)) e.removeAttribute(name);
      }
    }
    const lines = m.text.split("\n").reduce((n, l) => n + Math.max(1, Math.ceil(l.length / 70)), 0);
    const f = h("iframe", { sandbox: "", class: "msg-html", title: `Message from ${authorName(m)}`, referrerpolicy: "no-referrer" });
    f.style.height = `${Math.min(24, Math.max(3, lines + 1)) * 1.45 + 1}em`;
    f.srcdoc = `<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="${FRAME_CSS}"></head><body class="inbox-mail">${doc.body.innerHTML}</body></html>`;
    const list = links.map(([text, url]) => h("li", {}, h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow" }, text), " ", h("span", { class: "muted" }, url)));
    return [f, list.length ? h("ul", { class: "links", "aria-label": "Links in this message" }, list) : null];
  }

  function buildThread(t) {
    t.head = h("div", { class: "thread-head" });
    t.presenceLine = h("div", { class: "presence", "aria-live": "polite", "data-testid": "presence" });
    t.list = h("ol", { class: "messages", "aria-label": "Messages", "aria-live": "polite" });
    t.earlier = h("div", {});
    t.status = h("div", { class: "composer-status", "aria-live": "polite" });
    t.mode = "message";
    t.mentions = new Map(); // "@Name" → user id
    t.suggest = h("ul", { class: "suggest", role: "listbox", id: `suggest-${t.id}`, hidden: true });
    t.text = h("textarea", {
      rows: "3",
      "aria-label": "Reply",
      "aria-autocomplete": "list",
      "aria-controls": t.suggest.id,
      placeholder: "Reply to the customer… (/ for canned responses; Ctrl+Enter sends)",
      oninput: () => {
        sendPresence(false);
        suggest(t);
      },
      onkeydown: (ev) => keys(t, ev),
      // Later, so a click on a suggestion lands first; not if the focus came back.
      onblur: () => setTimeout(() => document.activeElement !== t.text && hideSuggest(t), 150),
    });
    t.text.value = drafts.get(t.id) || "";
    t.send = h("button", { type: "submit", class: "primary" }, "Send reply");
    const modeButton = (mode, label) =>
      h("button", { type: "button", class: mode === "message" ? "mode active" : "mode", "aria-pressed": mode === "message" ? "true" : "false", onclick: () => setMode(t, mode) }, label);
    t.modes = [modeButton("message", "Reply"), modeButton("note", "Private note")];
    t.macro = h("select", { "aria-label": "Apply a macro", onchange: () => applyMacro(t) });
    t.form = h(
      "form",
      {
        class: "composer",
        onsubmit: (ev) => {
          ev.preventDefault();
          send(t);
        },
      },
      h("div", { class: "modes", role: "group", "aria-label": "Write a" }, t.modes),
      t.suggest,
      t.text,
      h("div", { class: "composer-actions" }, t.macro, h("span", { class: "grow" }), t.send),
      t.status,
    );
    t.collisionBox = h("div", { "aria-live": "assertive" });
    t.side = h("div", {});
    replace(threadEl, t.head, t.presenceLine, t.collisionBox, t.earlier, t.list, t.form);
    replace(sideEl, t.side);
  }

  function setMode(t, mode) {
    t.mode = mode;
    t.modes.forEach((b, i) => {
      const on = (i === 0) === (mode === "message");
      b.classList.toggle("active", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
    t.form.classList.toggle("note", mode === "note");
    t.text.setAttribute("aria-label", mode === "note" ? "Private note" : "Reply");
    t.text.placeholder = mode === "note" ? "A note only agents see… (@ mentions a member)" : "Reply to the customer… (/ for canned responses; Ctrl+Enter sends)";
    t.send.textContent = mode === "note" ? "Add note" : "Send reply";
    t.text.focus();
  }

  // Suggestions for the word at the caret: /shortcode (canned responses) or, in a
  // note, @name (members to mention).
  function suggest(t) {
    const before = t.text.value.slice(0, t.text.selectionStart);
    const slash = before.match(/(?:^|\s)\/([a-z0-9_-]*)$/);
    const at = t.mode === "note" && before.match(/(?:^|\s)@([^\s@]*)$/);
    let items = [];
    if (slash) {
      items = canned.filter((c) => c.shortcode.startsWith(slash[1])).slice(0, 8).map((c) => ({ label: `/${c.shortcode}`, hint: c.text, pick: () => insertCanned(t, c, slash[1].length + 1) }));
    } else if (at) {
      const q = at[1].toLowerCase();
      items = [...members.values()].filter((m) => m.name.toLowerCase().includes(q)).slice(0, 8).map((m) => ({ label: `@${m.name}`, hint: m.role, pick: () => insertMention(t, m, at[1].length + 1) }));
    }
    t.items = items;
    t.active = 0;
    drawSuggest(t);
  }

  function drawSuggest(t) {
    const items = t.items || [];
    t.suggest.hidden = !items.length;
    replace(
      t.suggest,
      items.map((it, i) =>
        h(
          "li",
          { role: "option", id: `${t.suggest.id}-${i}`, "aria-selected": i === t.active ? "true" : "false", onmousedown: (ev) => { ev.preventDefault(); it.pick(); } },
          h("strong", {}, it.label),
          " ",
          h("span", { class: "muted" }, it.hint),
        ),
      ),
    );
    if (items.length) t.text.setAttribute("aria-activedescendant", `${t.suggest.id}-${t.active}`);
    else t.text.removeAttribute("aria-activedescendant");
  }

  function hideSuggest(t) {
    t.items = [];
    drawSuggest(t);
  }

  function keys(t, ev) {
    const items = t.items || [];
    if (items.length) {
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        t.active = (t.active + (ev.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
        return drawSuggest(t);
      }
      if (ev.key === "Enter" || ev.key === "Tab") {
        ev.preventDefault();
        return items[t.active].pick();
      }
      if (ev.key === "Escape") return hideSuggest(t);
    }
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      send(t);
    }
  }

  function splice(t, [start, end], text) {
    t.text.setRangeText(text, start, end, "end");
    hideSuggest(t);
    t.text.focus();
    sendPresence(false);
  }

  // The typed "/code" (or "@name") is the `length` characters before the caret.
  const typed = (t, length) => [t.text.selectionStart - length, t.text.selectionStart];

  async function insertCanned(t, c, length) {
    const range = typed(t, length);
    hideSuggest(t);
    replace(t.status);
    try {
      const r = await api("POST", `/canned-responses/${c.id}/render`, { conversation_id: t.id });
      splice(t, range, r.text);
    } catch (e) {
      replace(t.status, problem(e));
    }
  }

  function insertMention(t, m, length) {
    t.mentions.set(`@${m.name}`, m.user_id);
    splice(t, typed(t, length), `@${m.name} `);
  }

  async function send(t) {
    const text = t.text.value.trim();
    if (!text || t.send.disabled) return;
    const c = convs.get(t.id);
    if (!c) return;
    const note = t.mode === "note";
    const args = { conversation_id: t.id, text, kind: note ? "note" : "message" };
    const mentions = note ? [...new Set([...t.mentions].filter(([name]) => text.includes(name)).map(([, id]) => id))] : [];
    if (mentions.length) args.mentions = mentions;
    t.send.disabled = true;
    replace(t.status);
    try {
      await live.command(`inbox:${c.inbox_id}`, "message.create", args);
      if (thread === t) {
        t.text.value = "";
        t.mentions.clear();
        drafts.delete(t.id);
        sendPresence(false);
      }
    } catch (n) {
      replace(t.status, fail(n));
    } finally {
      t.send.disabled = false;
    }
  }

  async function applyMacro(t) {
    const macroId = t.macro.value;
    const c = convs.get(t.id);
    if (!macroId || !c) return;
    t.macro.disabled = true;
    replace(t.status);
    try {
      await live.command(`inbox:${c.inbox_id}`, "conversation.apply_macro", { id: t.id, macro_id: macroId, version: c.version });
      const m = macros.find((x) => x.id === macroId);
      replace(t.status, h("p", { class: "notice", role: "status" }, `Applied “${m ? m.name : "macro"}”.`));
    } catch (n) {
      replace(t.status, fail(n));
    } finally {
      t.macro.disabled = false;
      t.macro.value = "";
    }
  }

  function drawThread() {
    const t = thread;
    const c = convs.get(t.id);
    if (t.gone || (t.error && !c)) {
      replace(t.head, backLink(), t.gone ? h("p", { class: "muted" }, "This conversation was deleted.") : problem(t.error));
      t.form.hidden = true;
      replace(t.side);
      return;
    }
    if (!c) {
      replace(t.head, backLink(), h("p", { class: "muted" }, "Loading…"));
      return;
    }
    const others = othersOn(c.inbox_id, c.id);
    const replying = others.filter((p) => p.state.activity !== "viewing");
    const viewing = others.filter((p) => p.state.activity === "viewing");
    const names = (list) => [...new Set(list.map((p) => memberName(p.user_id)))].join(", ");
    replace(t.presenceLine, replying.length ? h("span", { class: "replying" }, `${names(replying)} ${replying.length > 1 ? "are" : "is"} replying`) : null, viewing.length ? h("span", { class: "muted" }, `${names(viewing)} ${viewing.length > 1 ? "are" : "is"} viewing`) : null);
    const colliding = t.collision.filter((u) => replying.some((p) => p.user_id === u));
    replace(t.collisionBox, colliding.length ? h("p", { class: "collision", role: "alert" }, `${colliding.map(memberName).join(", ")} ${colliding.length > 1 ? "are" : "is"} replying to this conversation too: agree who answers before sending.`) : null);
    if (!t.sideDirty) return;
    t.sideDirty = false;
    // Names may have arrived after the messages: only their labels are redrawn.
    for (const [id, li] of t.els) {
      const who = li.querySelector(".author");
      if (who) who.textContent = authorName(t.messages.get(id));
    }
    replace(t.head, backLink(), h("div", { class: "thread-title" }, h("h2", {}, c.subject || "(no subject)"), h("span", { class: "muted" }, `#${c.number} · ${contactName(c.contact_id)} · ${(inboxes.get(c.inbox_id) || {}).name || ""}`)));
    replace(t.earlier, t.cursor ? h("button", { type: "button", class: "quiet", onclick: () => loadMessages(t, t.cursor) }, "Show earlier messages") : null, t.loading ? h("p", { class: "muted" }, "Loading messages…") : null, t.error ? problem(t.error) : null);
    const chosen = t.macro.value;
    replace(t.macro, h("option", { value: "" }, macros.length ? "Apply a macro…" : "No macros"), macros.map((m) => h("option", { value: m.id }, m.name)));
    t.macro.value = chosen;
    drawSide(t, c);
  }

  function backLink() {
    return to(href(route.view, null), "← Conversations", { class: "back" });
  }

  function drawSide(t, c) {
    const focusedName = document.activeElement && t.side.contains(document.activeElement) ? document.activeElement.getAttribute("name") : null;
    const status = h("div", { "aria-live": "polite", class: "side-status" });
    const update = async (changes) => {
      replace(status);
      const base = convs.get(t.id);
      let version = base.version;
      for (let attempt = 0; ; attempt += 1) {
        try {
          await live.command(`inbox:${base.inbox_id}`, "conversation.update", { id: t.id, version, changes });
          return true;
        } catch (n) {
          const current = n.code === "version_conflict" && n.details && n.details.current;
          if (current) keep(current);
          // What came between (our own change a moment ago, or someone's to other
          // fields) leaves what was asked meaningful: asked again on the new version.
          if (current && attempt < 2 && Object.keys(changes).every((k) => JSON.stringify(current[k]) === JSON.stringify(base[k]))) {
            version = current.version;
            continue;
          }
          t.sideDirty = true;
          draw();
          replace(t.side.querySelector(".side-status"), fail(n));
          return false;
        }
      }
    };
    const select = (name, label, value, options, onchange) =>
      h("label", {}, h("span", {}, label), h("select", { name, onchange: (ev) => onchange(ev.target.value) }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))));
    const contact = contacts.get(c.contact_id);
    // The text fields outlive redraws (an event may come while one is typed in).
    const snoozeInput = (t.snoozeInput ||= h("input", { type: "datetime-local", name: "snoozed_until", "aria-label": "Snoozed until" }));
    if (document.activeElement !== snoozeInput) {
      const at = c.snoozed_until ? new Date(c.snoozed_until) : new Date(Date.now() + 86400000);
      at.setMinutes(at.getMinutes() - at.getTimezoneOffset());
      snoozeInput.value = at.toISOString().slice(0, 16);
    }
    const snooze = h(
      "div",
      { class: "snooze", hidden: c.status !== "snoozed" && !t.snoozing },
      snoozeInput,
      h(
        "button",
        {
          type: "button",
          onclick: async () => {
            if (snoozeInput.value && (await update({ status: "snoozed", snoozed_until: new Date(snoozeInput.value).toISOString() }))) t.snoozing = false;
          },
        },
        c.status === "snoozed" ? "Change" : "Snooze",
      ),
    );
    const labelInput = (t.labelInput ||= h("input", { name: "label", "aria-label": "New label", placeholder: "Add a label" }));
    const tags = c.tags || [];
    const addLabel = async (ev) => {
      ev.preventDefault();
      const v = labelInput.value.trim();
      const now = convs.get(t.id).tags || [];
      if (v && !now.includes(v) && (await update({ tags: [...now, v] }))) labelInput.value = "";
    };
    const memberOptions = [...members.values()].sort((a, b) => a.name.localeCompare(b.name)).map((m) => [m.user_id, `${m.name}${m.user_id === self ? " (me)" : ""} · ${availability.get(m.user_id) || "offline"}`]);
    const due = [["First response due", c.first_response_due_at], ["Next response due", c.next_response_due_at], ["Resolution due", c.resolution_due_at]].filter(([, v]) => v);
    replace(
      t.side,
      h("h2", {}, "Details"),
      h("div", { class: "contact" }, h("strong", {}, contactName(c.contact_id)), contact && contact.emails && contact.emails[0] ? h("div", { class: "muted" }, contact.emails[0]) : null),
      select("assignee_id", "Assignee", c.assignee_id || "", [["", "Unassigned"], ...memberOptions], (v) => update({ assignee_id: v || null })),
      select("team_id", "Team", c.team_id || "", [["", "No team"], ...[...teams.values()].map((x) => [x.id, x.name])], (v) => update({ team_id: v || null })),
      // Snoozing waits for a time to be chosen, across redraws.
      select("status", "Status", t.snoozing ? "snoozed" : c.status, STATUSES.map((s) => [s, cap(s)]), (v) => {
        t.snoozing = v === "snoozed" && c.status !== "snoozed";
        if (v === "snoozed") {
          snooze.hidden = false;
          snoozeInput.focus();
        } else update({ status: v });
      }),
      snooze,
      select("priority", "Priority", c.priority, PRIORITIES.map((p) => [p, cap(p)]), (v) => update({ priority: v })),
      h(
        "div",
        { class: "labels" },
        h("span", { class: "field-name" }, "Labels"),
        h("ul", { class: "chips" }, tags.map((tag) => h("li", { class: "tag" }, tag, h("button", { type: "button", class: "quiet x", "aria-label": `Remove label ${tag}`, onclick: () => update({ tags: (convs.get(t.id).tags || []).filter((x) => x !== tag) }) }, "×")))),
        h("form", { class: "add-label", onsubmit: addLabel }, labelInput, h("button", { type: "submit" }, "Add")),
      ),
      due.length || c.sla_breached
        ? h("div", { class: "sla" }, h("span", { class: "field-name" }, "SLA"), c.sla_breached ? h("p", { class: "chip breached" }, "Breached") : null, due.map(([k, v]) => h("div", {}, `${k}: `, h("time", { datetime: v }, when(v)))))
        : null,
      status,
    );
    if (focusedName) t.side.querySelector(`[name="${focusedName}"]`)?.focus();
  }

  openThread();
  draw();
  // Presence lapses after 30 s unless repeated.
  const heartbeat = setInterval(() => sendPresence(true), 20000);
  const visible = () => {
    if (document.visibilityState === "visible" && thread && (unread.get(thread.id) || 0) > 0) markRead(thread.id);
  };
  document.addEventListener("visibilitychange", visible);
  onLeave(() => {
    if (thread) closeThread();
    leaving = true;
    clearInterval(heartbeat);
    for (const timer of recounts.values()) clearTimeout(timer);
    for (const timer of readTimers.values()) clearTimeout(timer);
    document.removeEventListener("visibilitychange", visible);
    for (const stop of stops) stop();
  });
  return el;
}
