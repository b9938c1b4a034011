// A pipeline's board, live: columns by stage with counts and sums, cards by rank.
// Moves (drag and drop, or the keyboard) show at once and are undone, with the
// server's reason, when it refuses them; everyone else's changes arrive as events.

import { h, replace } from "./dom.js";
import { api } from "./api.js";
import * as live from "./live.js";
import { me } from "./session.js";
import { money, initials } from "./ui.js";

export function boardView(pipelineId, { onLeave }) {
  const topic = `board:${pipelineId}`;
  const stages = new Map(); // id → stage
  const deals = new Map(); // id → deal
  const order = new Map(); // stage id → deal ids by rank
  const names = new Map(); // user id → name
  let presence = [];
  let held = null; // keyboard: {id, stage, index}
  let message = null;
  let recent = new Set(); // deals just changed by someone else: they flash
  let ready = false;
  // While a card is dragged its element must stay on the page (the browser ends a drag
  // whose source goes away): redraws wait for the drop.
  let dragging = false;
  let deferred = false;
  let painted = false;
  let left = false;

  const status = h("div", { class: "board-status", "aria-live": "polite" });
  const avatars = h("div", { class: "avatars", "aria-label": "On this board" });
  const columns = h("div", { class: "columns" }, h("p", { class: "muted" }, "Loading the board…"));
  const title = h("h1", {}, "Board");
  const el = h("section", { class: "board" }, h("div", { class: "board-head" }, title, avatars, status), columns);

  api("GET", "/members").then((page) => {
    for (const m of page.data) names.set(m.user_id, m.name);
    draw();
  }, (e) => {
    message = `Members' names could not be loaded: ${e.message}`;
    draw();
  });
  api("GET", `/pipelines/${pipelineId}`).then((p) => { title.textContent = p.name; }, (e) => {
    message = `The pipeline could not be loaded: ${e.message}`;
    draw();
  });

  const byRank = (a, b) => (deals.get(a).rank < deals.get(b).rank ? -1 : deals.get(a).rank > deals.get(b).rank ? 1 : a < b ? -1 : 1);

  function place(deal) {
    for (const ids of order.values()) {
      const i = ids.indexOf(deal.id);
      if (i >= 0) ids.splice(i, 1);
    }
    deals.set(deal.id, deal);
    const ids = order.get(deal.stage_id);
    if (!ids) return;
    // Into its place by rank (the rest of the column is in order already).
    let lo = 0;
    let hi = ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (byRank(ids[mid], deal.id) < 0) lo = mid + 1;
      else hi = mid;
    }
    ids.splice(lo, 0, deal.id);
  }

  function remove(id) {
    deals.delete(id);
    for (const ids of order.values()) {
      const i = ids.indexOf(id);
      if (i >= 0) ids.splice(i, 1);
    }
  }

  function setStages(list) {
    stages.clear();
    for (const s of [...list].sort((a, b) => a.position - b.position || (a.id < b.id ? -1 : 1))) {
      stages.set(s.id, s);
      if (!order.has(s.id)) order.set(s.id, []);
    }
    for (const id of [...order.keys()]) if (!stages.has(id)) order.delete(id);
  }

  function onFrame(msg) {
    // Answers such as `subscribed` change nothing on the board.
    if (!["snapshot", "event", "presence"].includes(msg.type)) return;
    // Which columns the frame changes (null: all of them): a move redraws its two
    // columns, not the whole board.
    let only = null;
    if (msg.type === "snapshot") {
      deals.clear();
      order.clear();
      setStages(msg.state.stages || []);
      // Already by rank: appended, then each column sorted once.
      for (const d of msg.state.deals || []) {
        deals.set(d.id, d);
        order.get(d.stage_id)?.push(d.id);
      }
      for (const ids of order.values()) ids.sort(byRank);
      ready = true;
      // Everyone on the board sees who else is: presence lapses unless repeated.
      live.presence(topic, { viewing: true });
    } else if (msg.type === "event") {
      const d = msg.data || {};
      const mine = msg.cause && msg.cause.startsWith("w") && msg.actor === `user:${me().user.id}`;
      if (msg.kind.startsWith("deal.")) {
        only = new Set([deals.get(d.id)?.stage_id, d.record?.stage_id]);
        if (msg.kind === "deal.deleted") remove(d.id);
        else if (d.record && d.record.pipeline_id === pipelineId) {
          place(d.record);
          if (!mine) flash(d.id);
        } else remove(d.id);
      } else if (msg.kind.startsWith("stage.")) {
        if (msg.kind === "stage.rebalanced") {
          for (const [id, rank] of Object.entries(d.ranks || {})) if (deals.has(id)) deals.get(id).rank = rank;
          order.get(d.id)?.sort(byRank);
        } else if (msg.kind === "stage.deleted") {
          setStages([...stages.values()].filter((s) => s.id !== d.id));
        } else if (d.record) {
          const list = [...stages.values()].filter((s) => s.id !== d.id);
          setStages([...list, d.record]);
        }
      } else if (msg.kind === "pipeline.updated" && d.record) {
        title.textContent = d.record.name;
      }
    } else if (msg.type === "presence") {
      // Only the columns of cards someone starts or stops dragging change.
      const draggedStages = (list) => list.map((p) => p.state && p.state.dragging).filter((id) => deals.has(id)).map((id) => deals.get(id).stage_id);
      only = new Set(draggedStages(presence));
      presence = msg.members || [];
      for (const s of draggedStages(presence)) only.add(s);
    }
    draw(only);
  }

  const timers = new Set();
  function flash(id) {
    recent.add(id);
    const t = setTimeout(() => {
      timers.delete(t);
      recent.delete(id);
      draw(new Set([deals.get(id)?.stage_id]));
    }, 1200);
    timers.add(t);
  }

  /** Moves a card here at once, then asks the server; undoes it if refused. */
  async function move(id, stageId, index) {
    const deal = deals.get(id);
    const from = deal.stage_id;
    const fromIds = order.get(from);
    const before = fromIds.indexOf(id);
    const target = order.get(stageId).filter((x) => x !== id);
    const after = index > 0 ? target[index - 1] : null;
    const next = index < target.length ? target[index] : null;
    if (from === stageId && fromIds[before - 1] === (after || undefined) && (fromIds[before + 1] || null) === next) return;
    // Shown where it was dropped until the server's event says where it is.
    fromIds.splice(before, 1);
    target.splice(index, 0, id);
    order.set(stageId, target);
    deal.stage_id = stageId;
    message = null;
    draw();
    const args = { id, stage_id: stageId, version: deal.version };
    if (after) args.after = after;
    if (next) args.before = next;
    try {
      await live.command(topic, "deal.move", args);
    } catch (nack) {
      const current = deals.get(id);
      if (current) {
        // Back to where it was, unless an event has placed it since.
        if (current.stage_id === stageId && current.version === deal.version) {
          current.stage_id = from;
          place(current);
        }
      }
      message = `“${deal.title}” was not moved: ${nack.message || nack.code}`;
      draw();
    }
  }

  /** Where a drop at height `y` lands among a column's cards (the held one left out). */
  function dropIndex(col, y, size) {
    const top = col.scroller.getBoundingClientRect().top - col.scroller.scrollTop;
    return Math.max(0, Math.min(size, Math.round((y - top) / ROW)));
  }

  function card(id) {
    const d = deals.get(id);
    const dragger = presence.find((p) => p.state && p.state.dragging === id && p.user_id !== me().user.id);
    const isHeld = held && held.id === id;
    return h(
      "article",
      {
        class: `deal${recent.has(id) ? " arrived" : ""}${isHeld ? " held" : ""}`,
        draggable: "true",
        tabindex: "0",
        "data-id": id,
        "aria-grabbed": isHeld ? "true" : "false",
        "aria-label": `${d.title}${d.amount !== null ? ", " + money(d.amount, d.currency) : ""}`,
        ondragstart: (ev) => {
          ev.dataTransfer.setData("text/plain", id);
          ev.dataTransfer.effectAllowed = "move";
          ev.currentTarget.classList.add("dragging");
          dragging = true;
          live.presence(topic, { dragging: id });
        },
        ondragend: (ev) => {
          ev.currentTarget.classList.remove("dragging");
          dragging = false;
          live.presence(topic, { viewing: true });
          if (deferred) draw();
        },
        onkeydown: (ev) => keyboard(ev, id),
      },
      h("div", { class: "deal-title" }, d.title),
      h("div", { class: "deal-meta" }, [d.amount !== null ? money(d.amount, d.currency) : null, party(d), d.owner_id ? names.get(d.owner_id) || "a member" : null].filter(Boolean).join(" · ")),
      (d.tags || []).length ? h("div", { class: "tags" }, d.tags.map((t) => h("span", { class: "tag" }, t))) : null,
      dragger ? h("div", { class: "dragging-by" }, `${names.get(dragger.user_id) || "Someone"} is dragging`) : null,
    );
  }

  // Contact and company names, looked up only for the cards drawn (in batches, once
  // each), so a board of thousands of deals does not load thousands of contacts.
  const parties = new Map(); // "contacts:<id>" / "companies:<id>" → name
  const wanted = new Set();
  let looking = false;

  function party(d) {
    for (const [family, id] of [["contacts", d.contact_id], ["companies", d.company_id]]) {
      if (!id) continue;
      const key = `${family}:${id}`;
      if (parties.has(key)) return parties.get(key);
      wanted.add(key);
      return null;
    }
    return null;
  }

  async function lookUp() {
    if (left || looking || !wanted.size) return;
    looking = true;
    const keys = [...wanted].slice(0, 100);
    for (const k of keys) wanted.delete(k);
    try {
      for (const family of ["contacts", "companies"]) {
        const ids = keys.filter((k) => k.startsWith(family + ":")).map((k) => k.slice(family.length + 1));
        if (!ids.length) continue;
        const page = await api("GET", `/${family}?id_in=${ids.join(",")}&limit=100`);
        for (const id of ids) parties.set(`${family}:${id}`, "");
        for (const r of page.data) parties.set(`${family}:${r.id}`, r.name || [r.first_name, r.last_name].filter(Boolean).join(" ") || r.email || "");
      }
    } catch {
      // Names are a nicety: a card without one still shows and moves. They are asked
      // for again when the cards are next drawn, a few seconds on.
      looking = false;
      const t = setTimeout(() => {
        timers.delete(t);
        if (!left) for (const stageId of cols.keys()) drawCards(stageId);
      }, 5000);
      timers.add(t);
      return;
    }
    looking = false;
    if (!left) draw();
  }

  function keyboard(ev, id) {
    const stageIds = [...stages.keys()];
    if (ev.key === " " || ev.key === "Enter") {
      ev.preventDefault();
      if (!held) {
        const d = deals.get(id);
        held = { id, stage: d.stage_id, index: order.get(d.stage_id).indexOf(id), from: d.stage_id };
        live.presence(topic, { dragging: id });
        message = `Moving “${d.title}”: arrow keys to choose the place, space to drop, Escape to cancel.`;
      } else {
        const { stage, index } = held;
        held = null;
        live.presence(topic, { viewing: true });
        message = null;
        move(id, stage, index);
        return;
      }
    } else if (held && held.id === id && ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"].includes(ev.key)) {
      ev.preventDefault();
      const s = stageIds.indexOf(held.stage);
      if (ev.key === "ArrowLeft" && s > 0) held.stage = stageIds[s - 1];
      if (ev.key === "ArrowRight" && s < stageIds.length - 1) held.stage = stageIds[s + 1];
      const size = order.get(held.stage).filter((x) => x !== id).length;
      if (ev.key === "ArrowUp") held.index -= 1;
      if (ev.key === "ArrowDown") held.index += 1;
      held.index = Math.max(0, Math.min(size, ev.key === "ArrowLeft" || ev.key === "ArrowRight" ? Math.min(held.index, size) : held.index));
      message = `“${deals.get(id).title}”: ${stages.get(held.stage).name}, place ${held.index + 1} of ${size + 1}.`;
    } else if (held && ev.key === "Escape") {
      held = null;
      live.presence(topic, { viewing: true });
      message = null;
    } else {
      return;
    }
    draw();
  }

  /** A column's cards in order as shown: the card held by the keyboard where it is held. */
  function shown(stageId) {
    let ids = order.get(stageId) || [];
    if (held) {
      ids = ids.filter((x) => x !== held.id);
      if (held.stage === stageId) ids.splice(held.index, 0, held.id);
    }
    return ids;
  }

  // Columns stay on the page between redraws (so do their scroll positions); only the
  // cards in view, and a few either side, are drawn: a column of thousands of cards
  // costs what a screenful does.
  const ROW = 76; // a card's height and the gap below it, in CSS pixels
  const cols = new Map(); // stage id → {section, name, count, sum, scroller, rows}

  function makeColumn(stage) {
    const name = h("span", { class: "stage-name" });
    const count = h("span", { class: "count", "data-testid": "count" });
    const sum = h("span", { class: "sum" });
    const rows = h("div", { class: "rows" });
    const scroller = h("div", { class: "cards" }, rows);
    const col = { name, count, sum, rows, scroller, pending: false };
    col.section = h(
      "section",
      {
        class: "column",
        "data-stage": stage.id,
        ondragover: (ev) => { ev.preventDefault(); ev.dataTransfer.dropEffect = "move"; },
        ondrop: (ev) => {
          ev.preventDefault();
          const id = ev.dataTransfer.getData("text/plain");
          if (!deals.has(id)) return;
          const size = (order.get(stage.id) || []).filter((x) => x !== id).length;
          move(id, stage.id, dropIndex(col, ev.clientY, size));
        },
      },
      h("header", {}, name, count, sum),
      scroller,
    );
    scroller.addEventListener("scroll", () => {
      if (col.pending) return;
      col.pending = true;
      requestAnimationFrame(() => { col.pending = false; drawCards(stage.id); });
    });
    return col;
  }

  function drawCards(stageId) {
    const col = cols.get(stageId);
    if (!col) return;
    const ids = shown(stageId);
    col.rows.style.height = `${ids.length * ROW}px`;
    const view = col.scroller.clientHeight || 800;
    const first = Math.max(0, Math.floor(col.scroller.scrollTop / ROW) - 5);
    const last = Math.min(ids.length, Math.ceil((col.scroller.scrollTop + view) / ROW) + 5);
    const cards = [];
    for (let i = first; i < last; i++) {
      const c = card(ids[i]);
      c.style.top = `${i * ROW}px`;
      cards.push(c);
    }
    replace(col.rows, cards);
    lookUp();
  }

  function drawColumn(stage) {
    const col = cols.get(stage.id);
    const ids = shown(stage.id);
    const sums = new Map();
    for (const id of ids) {
      const d = deals.get(id);
      if (d.amount !== null) sums.set(d.currency, (sums.get(d.currency) || 0) + d.amount);
    }
    col.section.setAttribute("aria-label", stage.name);
    col.name.textContent = stage.name;
    col.count.textContent = String(ids.length);
    col.sum.textContent = [...sums].map(([c, a]) => money(a, c)).join(" + ");
    if (held && held.stage === stage.id) {
      // Keeps the held card in view as the keyboard moves it.
      const top = held.index * ROW;
      if (top < col.scroller.scrollTop || top + ROW > col.scroller.scrollTop + col.scroller.clientHeight) {
        col.scroller.scrollTop = Math.max(0, top - ROW);
      }
    }
    drawCards(stage.id);
  }

  /** Draws the board; `only`: just these columns' cards changed. */
  function draw(only = null) {
    if (dragging) {
      deferred = true;
      return;
    }
    deferred = false;
    // Redrawn on every event: the card that had the keyboard's focus keeps it.
    const focused = document.activeElement && document.activeElement.closest ? document.activeElement.closest(".deal") : null;
    const focusedId = focused && el.contains(focused) ? focused.dataset.id : null;
    replace(status, live.connectionState() === "reconnecting" ? h("span", { class: "reconnecting" }, "Reconnecting…") : null, message ? h("p", { class: "notice", role: "status" }, message) : null);
    replace(avatars, presence.map((p) => h("span", { class: "avatar", title: names.get(p.user_id) || "" }, initials(names.get(p.user_id)))));
    if (!ready) return;
    const wanted = [...stages.keys()];
    if (wanted.join() !== [...cols.keys()].join()) {
      for (const id of [...cols.keys()]) if (!stages.has(id)) cols.delete(id);
      for (const id of wanted) if (!cols.has(id)) cols.set(id, makeColumn(stages.get(id)));
      const sorted = new Map(wanted.map((id) => [id, cols.get(id)]));
      cols.clear();
      for (const [k, v] of sorted) cols.set(k, v);
      replace(columns, wanted.map((id) => cols.get(id).section));
    }
    for (const stage of stages.values()) if (!only || only.has(stage.id)) drawColumn(stage);
    if (focusedId) el.querySelector(`.deal[data-id="${focusedId}"]`)?.focus();
    if (!painted) {
      painted = true;
      performance.mark("shoal:board-painted");
    }
  }

  const stopState = live.onConnectionState(() => draw());
  const stop = live.follow(topic, onFrame);
  const heartbeat = setInterval(() => live.presence(topic, held ? { dragging: held.id } : { viewing: true }), 20000);
  onLeave(() => {
    left = true;
    for (const t of timers) clearTimeout(t);
    clearInterval(heartbeat);
    live.presence(topic, null);
    stop();
    stopState();
  });
  return el;
}
