//! What an inbox's actor keeps of its conversations for snapshots: the unresolved
//! ones with the most recent activity, and how many are unresolved in all. An inbox
//! may hold a hundred thousand open conversations; agents open it on the newest, and
//! page through the rest with `GET /conversations`, so the actor keeps a window of
//! the newest instead of them all.
//!
//! The window holds every unresolved conversation whose activity (last message, then
//! id) is at or above its floor. A conversation's activity only grows, so a change
//! keeps that true: one at or above the floor goes in, one below it stays out, one
//! resolved or deleted leaves. When the window grows past twice its size the oldest
//! leave and the floor rises; when it shrinks below a snapshot while more are open,
//! the actor reads it again from the store.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::domain::Event;

/// Conversations in a snapshot; the rest are paged through `GET /conversations`.
pub const SNAPSHOT: usize = 200;
/// Conversations the window keeps after it is trimmed or read.
pub const WINDOW: usize = 1000;

/// A conversation's place in the order of activity: most recent last.
type Activity = (String, String);

fn activity(c: &Value) -> Activity {
    let at = c["last_message_at"].as_str().or(c["created_at"].as_str()).unwrap_or_default();
    (at.to_string(), c["id"].as_str().unwrap_or_default().to_string())
}

fn unresolved(status: &Value) -> bool {
    status.as_str().is_some_and(|s| s != "resolved")
}

#[derive(Default)]
pub struct InboxWindow {
    conversations: HashMap<String, Value>,
    /// Unresolved conversations in the inbox, in all.
    open_total: usize,
    /// The lowest activity the window is sure to hold from; none when it holds every
    /// unresolved conversation.
    floor: Option<Activity>,
}

impl InboxWindow {
    /// The window as read from the store: the `newest` unresolved conversations (at
    /// most [`WINDOW`], newest first) of `open_total`.
    pub fn read(newest: Vec<Value>, open_total: usize) -> Self {
        let mut w = InboxWindow {
            open_total,
            ..Default::default()
        };
        w.refill(newest);
        w
    }

    /// Replaces the conversations with those read again from the store (newest
    /// first); the count is kept, since events keep it.
    pub fn refill(&mut self, newest: Vec<Value>) {
        let complete = newest.len() >= self.open_total || newest.len() < WINDOW;
        self.floor = if complete { None } else { newest.last().map(activity) };
        self.conversations = newest
            .into_iter()
            .map(|c| (c["id"].as_str().unwrap_or_default().to_string(), c))
            .collect();
        if complete {
            self.open_total = self.conversations.len();
        }
    }

    /// Applies an event of the inbox. Answers whether the window has run short and
    /// should be read again from the store.
    pub fn apply(&mut self, e: &Event) -> bool {
        if e.data["object_type"].as_str() != Some("conversation") {
            return false;
        }
        let id = e.data["id"].as_str().unwrap_or_default().to_string();
        let record = &e.data["record"];
        let deleted = e.kind.ends_with(".deleted");
        let was_open = match e.data["changes"].get("status") {
            Some(change) => unresolved(&change[0]),
            // Unchanged, so as it is now, unless the conversation has just appeared.
            None => !e.kind.ends_with(".created") && unresolved(&record["status"]),
        };
        let open = !deleted && record.is_object() && unresolved(&record["status"]);
        match (was_open, open) {
            (false, true) => self.open_total += 1,
            (true, false) => self.open_total = self.open_total.saturating_sub(1),
            _ => {}
        }
        if !open {
            self.conversations.remove(&id);
        } else if self.conversations.contains_key(&id) || self.floor.as_ref().is_none_or(|f| activity(record) >= *f) {
            self.conversations.insert(id, record.clone());
            if self.conversations.len() > 2 * WINDOW {
                self.trim();
            }
        }
        self.floor.is_some() && self.conversations.len() < SNAPSHOT && self.open_total > self.conversations.len()
    }

    /// Keeps the newest [`WINDOW`]; the floor rises to the oldest of them.
    fn trim(&mut self) {
        let mut order: Vec<(Activity, String)> = self.conversations.iter().map(|(id, c)| (activity(c), id.clone())).collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        for (_, id) in order.drain(WINDOW.min(order.len())..) {
            self.conversations.remove(&id);
        }
        self.floor = order.last().map(|(a, _)| a.clone());
    }

    /// The unresolved conversations, most recent activity first, at most
    /// [`SNAPSHOT`] of them, with how many there are in all.
    pub fn snapshot(&self) -> Value {
        let mut open: Vec<(Activity, &Value)> = self.conversations.values().map(|c| (activity(c), c)).collect();
        open.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        open.truncate(SNAPSHOT);
        let total = self.open_total.max(self.conversations.len());
        let open: Vec<&Value> = open.into_iter().map(|(_, c)| c).collect();
        json!({"conversations": open, "open_total": total, "more": total > SNAPSHOT})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn conv(n: usize, status: &str) -> Value {
        json!({"id": format!("c{n:06}"), "status": status, "last_message_at": format!("2026-01-01T00:00:{:02}.{:03}Z", n / 1000 % 60, n % 1000)})
    }

    fn event(kind: &str, record: Value, status_change: Option<(Value, Value)>) -> Event {
        let mut changes = json!({});
        if let Some((b, a)) = status_change {
            changes["status"] = json!([b, a]);
        }
        Event {
            topic: "inbox:i".into(),
            seq: 1,
            kind: kind.into(),
            data: Arc::new(json!({"object_type": "conversation", "id": record["id"], "record": record, "changes": changes})),
            actor: "user:u".into(),
            cause: None,
            ts: 0,
        }
    }

    fn ids(snapshot: &Value) -> Vec<String> {
        snapshot["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_window_of_a_large_inbox_keeps_the_newest_and_counts_them_all() {
        // 5,000 open; the store gave the newest WINDOW.
        let newest: Vec<Value> = (0..5000).rev().take(WINDOW).map(|n| conv(n, "open")).collect();
        let mut w = InboxWindow::read(newest, 5000);
        let s = w.snapshot();
        assert_eq!(s["open_total"], 5000);
        assert_eq!(s["more"], true);
        assert_eq!(ids(&s)[0], "c004999");
        assert_eq!(ids(&s).len(), SNAPSHOT);

        // A new conversation comes first and counts; an old one worked on (below the
        // floor) is counted but not kept; a resolved one leaves.
        assert!(!w.apply(&event(
            "conversation.created",
            conv(6000, "open"),
            Some((Value::Null, json!("open")))
        )));
        assert!(!w.apply(&event("conversation.updated", conv(10, "pending"), None)));
        assert!(!w.apply(&event(
            "conversation.status_changed",
            conv(4999, "resolved"),
            Some((json!("open"), json!("resolved")))
        )));
        let s = w.snapshot();
        assert_eq!(s["open_total"], 5000);
        assert_eq!(ids(&s)[0], "c006000");
        assert_eq!(ids(&s)[1], "c004998");
        assert!(!ids(&s).contains(&"c000010".to_string()));

        // A resolved conversation reopened by a message comes back at the top.
        w.apply(&event(
            "conversation.updated",
            conv(7000, "open"),
            Some((json!("resolved"), json!("open"))),
        ));
        assert_eq!(w.snapshot()["open_total"], 5001);
        assert_eq!(ids(&w.snapshot())[0], "c007000");
    }

    #[test]
    fn a_window_trims_to_its_size_and_asks_to_be_read_again_when_it_runs_short() {
        let mut w = InboxWindow::read(Vec::new(), 0);
        for n in 0..(2 * WINDOW + 1) {
            w.apply(&event("conversation.created", conv(n, "open"), Some((Value::Null, json!("open")))));
        }
        assert_eq!(w.conversations.len(), WINDOW, "trimmed");
        assert_eq!(w.snapshot()["open_total"], 2 * WINDOW + 1);
        // Resolving the newest: once fewer than a snapshot are left of many open,
        // the window asks to be read again.
        let mut asked = false;
        for n in (0..(2 * WINDOW + 1)).rev().take(WINDOW - SNAPSHOT + 1) {
            asked = w.apply(&event(
                "conversation.updated",
                conv(n, "resolved"),
                Some((json!("open"), json!("resolved"))),
            ));
        }
        assert!(asked);
        // Read again: what the store holds now.
        let open = 2 * WINDOW + 1 - (WINDOW - SNAPSHOT + 1);
        let newest: Vec<Value> = (0..open).rev().take(WINDOW).map(|n| conv(n, "open")).collect();
        w.refill(newest);
        assert_eq!(ids(&w.snapshot())[0], format!("c{:06}", open - 1));
        assert_eq!(w.snapshot()["open_total"], open);
    }

    #[test]
    fn a_small_inbox_is_held_whole() {
        let mut w = InboxWindow::read(vec![conv(2, "open"), conv(1, "snoozed")], 2);
        w.apply(&event(
            "conversation.updated",
            conv(0, "open"),
            Some((json!("resolved"), json!("open"))),
        ));
        assert_eq!(ids(&w.snapshot()), ["c000002", "c000001", "c000000"]);
        w.apply(&event(
            "conversation.deleted",
            conv(1, "snoozed"),
            Some((json!("snoozed"), Value::Null)),
        ));
        assert_eq!(w.snapshot()["open_total"], 2);
        assert_eq!(w.snapshot()["more"], false);
    }
}
