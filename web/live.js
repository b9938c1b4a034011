// The WebSocket every view shares: subscriptions resumed by seq after a drop, commands
// answered by ack or nack, presence, and the connection's state for the header.

import { token, onToken, renewToken } from "./api.js";

// topic → Set of followers {seq, onFrame}: several views (the bell and a page) may
// follow one topic; each is handed every frame after the seq it has seen.
const topics = new Map();
const pending = new Map(); // command id → {resolve, reject}
const stateListeners = new Set();
let socket = null;
let state = "closed"; // "open" | "connecting" | "reconnecting" | "closed"
let attempt = 0;
let retryTimer = null;
let nextId = 1;

function setState(s) {
  state = s;
  for (const f of stateListeners) f(s);
}

export function connectionState() {
  return state;
}

export function onConnectionState(f) {
  stateListeners.add(f);
  return () => stateListeners.delete(f);
}

function url() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/api/v1/ws?access_token=${encodeURIComponent(token())}`;
}

function connect() {
  if (socket || !token()) return;
  clearTimeout(retryTimer);
  setState(attempt === 0 ? "connecting" : "reconnecting");
  const ws = new WebSocket(url());
  socket = ws;
  ws.onopen = () => {
    attempt = 0;
    setState("open");
    for (const [topic, followers] of topics) sendSubscribe(topic, followers);
  };
  ws.onmessage = (ev) => receive(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    if (socket !== ws) return;
    socket = null;
    // Commands in flight have no answer now: their senders roll back and may retry.
    for (const [, p] of pending) p.reject({ code: "unavailable", message: "the connection dropped; try again" });
    pending.clear();
    if (!token()) return setState("closed");
    if (ev.code === 4401 && ev.reason === "token_expired") {
      renewToken().then(connect, () => setState("closed"));
      return;
    }
    if (ev.code === 4401) return setState("closed");
    // Back off 0.5 s, 1 s, 2 s … up to 15 s, with jitter so a restarted server is not
    // hit by every browser at once.
    attempt += 1;
    setState("reconnecting");
    const wait = Math.min(15000, 500 * 2 ** (attempt - 1)) * (0.75 + Math.random() / 2);
    retryTimer = setTimeout(connect, wait);
  };
}

/** Resumes from the seq every follower has seen, or asks for a snapshot if one has none. */
function sendSubscribe(topic, followers) {
  const msg = { type: "subscribe", topic };
  const seqs = [...followers].map((f) => f.seq);
  if (seqs.length && seqs.every((q) => q !== null)) msg.since_seq = Math.min(...seqs);
  socket.send(JSON.stringify(msg));
}

function receive(msg) {
  switch (msg.type) {
    case "ack":
    case "nack": {
      const p = pending.get(msg.id);
      if (!p) return;
      pending.delete(msg.id);
      if (msg.type === "ack") p.resolve(msg);
      else p.reject(msg);
      return;
    }
    case "resync": {
      // The server stopped following the topic for us: follow it again from where we are.
      const followers = topics.get(msg.topic);
      if (followers && socket && socket.readyState === WebSocket.OPEN) sendSubscribe(msg.topic, followers);
      return;
    }
    default: {
      const followers = msg.topic && topics.get(msg.topic);
      if (!followers) return;
      for (const f of [...followers]) {
        if (msg.type === "event") {
          // Replays for one follower reach the others too: each skips what it has.
          if (f.seq === null || msg.seq <= f.seq) continue;
          f.seq = msg.seq;
        } else if (msg.type === "snapshot") {
          f.seq = msg.seq;
        }
        f.onFrame(msg);
      }
    }
  }
}

/**
 * Follows `topic`: `onFrame` gets its snapshot, events, presence… With `since`, the
 * events after that seq come first (from the server's log) instead of a snapshot.
 * Returns a function that stops.
 */
export function follow(topic, onFrame, { since = null } = {}) {
  const f = { seq: since, onFrame };
  let followers = topics.get(topic);
  if (!followers) topics.set(topic, (followers = new Set()));
  followers.add(f);
  if (socket && socket.readyState === WebSocket.OPEN) sendSubscribe(topic, followers);
  else connect();
  return () => {
    const now = topics.get(topic);
    if (!now || !now.delete(f) || now.size) return;
    topics.delete(topic);
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "unsubscribe", topic }));
  };
}

/** Sends a command; resolves with its ack, rejects with its nack. */
export function command(topic, op, args) {
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    return Promise.reject({ code: "unavailable", message: "not connected; reconnecting…" });
  }
  const id = `w${nextId++}`;
  socket.send(JSON.stringify({ type: "command", id, topic, op, args }));
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
}

/** What this user is doing on `topic` (null: nothing). */
export function presence(topic, state) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "presence", topic, state }));
}

// A renewed access token goes to the open connection, so it outlives the old one.
onToken((t) => {
  if (!t) {
    topics.clear();
    if (socket) socket.close(1000);
    socket = null;
    setState("closed");
  } else if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "auth", token: t }));
  }
});
