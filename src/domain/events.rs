//! Events and topics: every committed change is an event on one topic, numbered by a
//! per-topic sequence that never skips backwards and is never reused.

use std::sync::Arc;

use serde_json::{json, Value};

use super::fields::format_timestamp;
use super::objects::{ObjectType, Record};

/// A topic a client can subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One pipeline: its stages and deals.
    Board { pipeline_id: String },
    /// One support inbox: its conversations and their messages.
    Inbox { inbox_id: String },
    /// Contacts, companies, leads, activities, tags, teams and custom fields of a workspace.
    Workspace { workspace_id: String },
    /// One member's personal notifications in one workspace.
    User { workspace_id: String, user_id: String },
}

impl Topic {
    pub fn parse(s: &str) -> Option<Topic> {
        let id = |x: &str| super::fields::parse_id(x).ok();
        let mut parts = s.split(':');
        let topic = match (parts.next()?, parts.next(), parts.next()) {
            ("board", Some(p), None) => Topic::Board { pipeline_id: id(p)? },
            ("inbox", Some(i), None) => Topic::Inbox { inbox_id: id(i)? },
            ("workspace", Some(w), None) => Topic::Workspace { workspace_id: id(w)? },
            ("user", Some(w), Some(u)) => Topic::User {
                workspace_id: id(w)?,
                user_id: id(u)?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(topic)
    }

    /// Whether one node owns the topic in a cluster and writes it alone (its actor is
    /// the single writer of what it holds).
    pub fn is_owned(&self) -> bool {
        matches!(self, Topic::Board { .. } | Topic::Inbox { .. })
    }

    pub fn key(&self) -> String {
        match self {
            Topic::Board { pipeline_id } => format!("board:{pipeline_id}"),
            Topic::Inbox { inbox_id } => format!("inbox:{inbox_id}"),
            Topic::Workspace { workspace_id } => format!("workspace:{workspace_id}"),
            Topic::User { workspace_id, user_id } => format!("user:{workspace_id}:{user_id}"),
        }
    }

    /// The topic a record's changes are published on, if any.
    pub fn of(workspace_id: &str, ty: ObjectType, record: &Record) -> Option<Topic> {
        match ty {
            ObjectType::AuditEntry => None,
            ObjectType::Pipeline => Some(Topic::Board {
                pipeline_id: record.id.clone(),
            }),
            ObjectType::Deal | ObjectType::Stage => record.text("pipeline_id").map(|p| Topic::Board {
                pipeline_id: p.to_string(),
            }),
            ObjectType::Inbox => Some(Topic::Inbox {
                inbox_id: record.id.clone(),
            }),
            ObjectType::Conversation | ObjectType::Message => record.text("inbox_id").map(|i| Topic::Inbox { inbox_id: i.to_string() }),
            _ => Some(Topic::Workspace {
                workspace_id: workspace_id.to_string(),
            }),
        }
    }
}

/// A committed change, as stored in the event log and sent to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub topic: String,
    pub seq: i64,
    /// What happened, such as `deal.moved` or `contact.created`.
    pub kind: String,
    /// Shared: an event is handed to its writer, to its topic and to other nodes, and
    /// its data (a whole record) is not copied for each.
    pub data: Arc<Value>,
    /// Who did it (`user:<id>` or `api_key:<id>`).
    pub actor: String,
    /// The mutation id the client gave, echoed back.
    pub cause: Option<String>,
    /// Commit time, milliseconds since the epoch.
    pub ts: i64,
}

impl Event {
    /// The event's frame on the wire, as text: written straight from the event, its
    /// data not copied into a frame first.
    pub fn frame(&self) -> String {
        // Fields in the order a JSON object of them prints (by name).
        #[derive(serde::Serialize)]
        struct Frame<'a> {
            actor: &'a str,
            cause: Option<&'a str>,
            data: &'a Value,
            kind: &'a str,
            seq: i64,
            topic: &'a str,
            ts: String,
            #[serde(rename = "type")]
            frame_type: &'static str,
        }
        let frame = Frame {
            actor: &self.actor,
            cause: self.cause.as_deref(),
            data: &self.data,
            kind: &self.kind,
            seq: self.seq,
            topic: &self.topic,
            ts: format_timestamp(self.ts),
            frame_type: "event",
        };
        serde_json::to_string(&frame).unwrap_or_default()
    }

    /// The event between nodes: as stored, with the commit time in milliseconds.
    pub fn to_wire(&self) -> Value {
        json!({"topic": self.topic, "seq": self.seq, "kind": self.kind, "data": &*self.data, "actor": self.actor, "cause": self.cause, "ts": self.ts})
    }

    pub fn from_wire(v: &Value) -> Option<Event> {
        Some(Event {
            topic: v["topic"].as_str()?.to_string(),
            seq: v["seq"].as_i64()?,
            kind: v["kind"].as_str()?.to_string(),
            data: Arc::new(v["data"].clone()),
            actor: v["actor"].as_str().unwrap_or_default().to_string(),
            cause: v["cause"].as_str().map(str::to_string),
            ts: v["ts"].as_i64()?,
        })
    }
}

/// The kind of event a write of `ty` makes: created, updated (or, for a deal whose only
/// changes are its stage and place, moved; for a conversation whose only changes are
/// who has it, assigned, or its status, status_changed) and deleted.
pub fn kind_of(ty: ObjectType, before: Option<&Record>, after: Option<&Record>, changes: &Value) -> String {
    let verb = match (before, after) {
        (None, _) => "created",
        (Some(_), None) => "deleted",
        (Some(_), Some(_)) => {
            let moved_only = changes
                .as_object()
                .is_some_and(|c| !c.is_empty() && c.keys().all(|k| matches!(k.as_str(), "stage_id" | "rank" | "pipeline_id")));
            let only = |fields: &[&str]| {
                changes
                    .as_object()
                    .is_some_and(|c| !c.is_empty() && c.keys().all(|k| fields.contains(&k.as_str())))
            };
            match ty {
                ObjectType::Deal if moved_only => "moved",
                ObjectType::Conversation if only(&["assignee_id", "team_id"]) => "assigned",
                ObjectType::Conversation if only(&["status", "snoozed_until"]) => "status_changed",
                _ => "updated",
            }
        }
    };
    format!("{}.{verb}", ty.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_reject_malformed_names() {
        let id = "01a2008a-4174-73f7-b110-2d98d39cf08c";
        for t in [
            format!("board:{id}"),
            format!("inbox:{id}"),
            format!("workspace:{id}"),
            format!("user:{id}:{id}"),
        ] {
            assert_eq!(Topic::parse(&t).unwrap().key(), t);
        }
        for bad in ["board", "board:x", "room:1", &format!("board:{id}:x"), &format!("user:{id}")] {
            assert!(Topic::parse(bad).is_none(), "{bad}");
        }
    }
}
