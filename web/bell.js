// The notification bell: the member's own topic (`user:<workspace>:<user>`) carries
// what concerns them (assigned to them, a note mentioning them, SLA warnings and
// breaches of their conversations and, for owners and admins, an e-mail inbox that
// cannot reach its mail server). The bell follows it for the whole session, keeps
// the latest 50 and counts those not yet seen; which were seen is only a seq number,
// kept in localStorage per member (nothing secret). The panel also holds the member's
// choice to have assignments and mentions mailed to them, when the server can send mail.

import { api } from "./api.js";
import { h, replace } from "./dom.js";
import * as live from "./live.js";
import { link, problem, when } from "./ui.js";

const KEEP = 50;
const KINDS = new Set(["assigned", "mentioned", "sla.warning", "sla.breached", "channel_failing"]);
const PATHS = { contact: "contacts", company: "companies", lead: "leads", deal: "deals", activity: "activities" };

let state = null;

/** Forgets the session's bell (signing out); the next session follows its own topic. */
export function reset() {
  if (state) state.stop();
  state = null;
}

// Storage may be refused (a browser's privacy setting): the bell then counts from 0.
function seenOf(key) {
  try {
    return Number(localStorage.getItem(key)) || 0;
  } catch {
    return 0;
  }
}

function keepSeen(key, seq) {
  try {
    localStorage.setItem(key, String(seq));
  } catch {
    // Not kept: after a reload the same notifications count as unseen again.
  }
}

function follow(m) {
  const topic = `user:${m.workspace.id}:${m.user.id}`;
  if (state && state.topic === topic) return state;
  if (state) state.stop();
  const key = `shoal:bell-seen:${topic}`;
  const s = { topic, key, items: [], seen: seenOf(key), views: new Set(), backfilled: false };
  const onFrame = (frame) => {
    if (frame.type === "snapshot" && !s.backfilled && s.items.length === 0 && frame.seq > 0) {
      // More happened than the log replays at once: start again from the last few.
      s.backfilled = true;
      s.stop();
      s.stop = live.follow(topic, onFrame, { since: Math.max(0, frame.seq - KEEP) });
      return;
    }
    if (frame.type !== "event" || !KINDS.has(frame.kind)) return;
    s.items.unshift({ seq: frame.seq, kind: frame.kind, data: frame.data || {}, ts: frame.ts });
    s.items.length = Math.min(s.items.length, KEEP);
    for (const v of s.views) v();
  };
  // From the start of the log: a new member's bell shows everything they were sent.
  s.stop = live.follow(topic, onFrame, { since: 0 });
  state = s;
  return s;
}

function title(r) {
  if (!r) return "";
  const name = r.title || r.name || [r.first_name, r.last_name].filter(Boolean).join(" ") || r.subject || r.email || "";
  return r.number ? `#${r.number} ${name}`.trim() : name;
}

/**
 * Whether the member's notifications are mailed to them too: `{email, email_available}`,
 * or null when the server could not be asked. Asked once per bell (the choice is per
 * member and workspace, as the bell is); a failed ask is tried again on the next opening.
 */
function mailChoice(s) {
  if (!s.mail) {
    s.mail = api("GET", "/me/notifications").catch(() => {
      s.mail = null;
      return null;
    });
  }
  return s.mail;
}

/** What one notification says, and where it leads. */
function describe(n) {
  const d = n.data;
  const r = d.record || {};
  switch (n.kind) {
    case "assigned":
      if (d.object_type === "conversation") return [`Conversation ${title(r)} was assigned to you`, `/inbox/c/${d.id}`];
      return [`${d.object_type || "A record"} “${title(r)}” is now yours`, PATHS[d.object_type] ? `/records/${PATHS[d.object_type]}/${d.id}` : null];
    case "mentioned": {
      const text = (r.text || "").slice(0, 80);
      return [`You were mentioned in a note: “${text}”`, `/inbox/c/${d.conversation_id || r.conversation_id}`];
    }
    case "sla.warning":
      return [`SLA warning: conversation ${title(r)}, ${String(d.target || "").replaceAll("_", " ")} due ${when(d.due_at)}`, `/inbox/c/${d.id}`];
    case "sla.breached":
      return [`SLA breached: conversation ${title(r)}, ${String(d.target || "").replaceAll("_", " ")}`, `/inbox/c/${d.id}`];
    case "channel_failing":
      // Its row in the settings shows the inbox's status as it goes on.
      return [`Inbox “${d.name || "?"}” cannot reach its mail server: ${d.detail || "no reason given"}`, "/settings/inboxes"];
    default:
      return [n.kind, null];
  }
}

/** The bell for the header; the header is drawn again on each page, the bell's state stays. */
export function bell(m) {
  if (!m.user) return null;
  const s = follow(m);
  const count = h("span", { class: "bell-count" });
  const button = h("button", { class: "bell quiet", type: "button", "aria-haspopup": "true", "aria-expanded": "false" }, "Notifications ", count);
  const list = h("div");
  const prefs = h("div", { class: "bell-prefs" });
  const panel = h("div", { class: "bell-panel", role: "region", "aria-label": "Notifications", hidden: true }, list, prefs);
  const el = h("div", { class: "bell-wrap" }, button, panel);

  const unread = () => s.items.filter((n) => n.seq > s.seen).length;
  function draw() {
    const n = unread();
    count.textContent = n ? String(n) : "";
    count.hidden = n === 0;
    button.setAttribute("aria-label", n ? `Notifications, ${n} unread` : "Notifications");
    if (panel.hidden) return;
    replace(
      list,
      s.items.length
        ? h(
            "ul",
            { class: "plain" },
            s.items.map((item) => {
              const [text, path] = describe(item);
              return h("li", { class: item.seq > s.seen ? "unseen" : "", onclick: close }, path ? link(path, text) : text, h("div", { class: "muted" }, when(item.ts)));
            }),
          )
        : h("p", { class: "muted" }, "Nothing yet: assignments, mentions and SLA warnings show here."),
    );
  }
  // The switch is drawn once per header: drawn again, it would drop the focus and
  // could show a choice older than one still being saved.
  let prefsAsked = false;
  function askPrefs() {
    if (prefsAsked) return;
    prefsAsked = true;
    // Busy until the server says whether it sends mail at all.
    panel.setAttribute("aria-busy", "true");
    mailChoice(s).then((choice) => {
      panel.removeAttribute("aria-busy");
      if (!choice) prefsAsked = false;
      else if (choice.email_available) replace(prefs, mailSwitch(choice));
    });
  }
  function mailSwitch(choice) {
    const said = h("div", { "aria-live": "polite" });
    const box = h("input", { type: "checkbox", checked: choice.email, onchange: save });
    // A change made while one is being saved is sent when that one is answered, so
    // the server gets the choices in the order they were made (not disabling the box
    // keeps the focus on it).
    let saving = false;
    async function save() {
      if (saving) return;
      saving = true;
      replace(said);
      try {
        while (box.checked !== choice.email) {
          const want = box.checked;
          choice = await api("PUT", "/me/notifications", { email: want });
          s.mail = Promise.resolve(choice);
          if (choice.email !== want) break;
        }
      } catch (e) {
        replace(said, problem(e));
      } finally {
        // What the server holds, whether or not it took the change.
        box.checked = choice.email;
        saving = false;
      }
    }
    return [h("label", { class: "bell-mail" }, box, h("span", {}, "E-mail me when I'm assigned or mentioned")), said];
  }
  function close() {
    panel.hidden = true;
    button.setAttribute("aria-expanded", "false");
    document.removeEventListener("click", outside, true);
  }
  function outside(ev) {
    if (!el.contains(ev.target)) close();
  }
  button.addEventListener("click", () => {
    if (!panel.hidden) return close();
    panel.hidden = false;
    button.setAttribute("aria-expanded", "true");
    draw();
    askPrefs();
    // Opening the panel is seeing what it holds.
    const latest = s.items.length ? s.items[0].seq : s.seen;
    if (latest > s.seen) {
      s.seen = latest;
      keepSeen(s.key, latest);
    }
    count.hidden = true;
    document.addEventListener("click", outside, true);
  });
  // The header is drawn again on every page: bells no longer on the page are dropped.
  for (const v of [...s.views]) if (!v.el.isConnected) s.views.delete(v);
  draw.el = el;
  s.views.add(draw);
  draw();
  return el;
}
