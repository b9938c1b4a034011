//! The inbox's rules that need the store: a conversation's running number, what a
//! new message changes in its conversation, the API channel's inbound messages
//! (contact matching, threading, dedupe by external id) and inbox tokens. All of it
//! runs inside the write of the inbox's actor, its single writer.

use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};

use super::records::invalid;
use super::{args, insert, now_ms, Result, Scoped, Sql, Store, StoreError, WriteTx};
use crate::domain::hours::BusinessHours;
use crate::domain::inbox::{parse_actions, render, sanitize_html, MacroAction};
use crate::domain::{Changes, FieldValue, ObjectType, Record, Topic};

const CONVERSATION: ObjectType = ObjectType::Conversation;
const MESSAGE: ObjectType = ObjectType::Message;

/// An SLA target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    FirstResponse,
    NextResponse,
    Resolution,
}

impl Target {
    const ALL: [Target; 3] = [Target::FirstResponse, Target::NextResponse, Target::Resolution];

    fn name(self) -> &'static str {
        match self {
            Target::FirstResponse => "first_response",
            Target::NextResponse => "next_response",
            Target::Resolution => "resolution",
        }
    }

    fn minutes(self) -> &'static str {
        match self {
            Target::FirstResponse => "first_response_minutes",
            Target::NextResponse => "next_response_minutes",
            Target::Resolution => "resolution_minutes",
        }
    }

    fn due_field(self) -> &'static str {
        match self {
            Target::FirstResponse => "first_response_due_at",
            Target::NextResponse => "next_response_due_at",
            Target::Resolution => "resolution_due_at",
        }
    }
}

/// A conversation's SLA policy and the hours it counts in.
struct Sla {
    policy: Record,
    hours: BusinessHours,
}

/// What a customer's or an agent's message changes in its conversation: the time of
/// its last message, since when the customer waits (an answer ends the wait; the first
/// answer is the first reply) and, for a customer writing to a pending or snoozed
/// conversation, its status.
pub(super) fn posted_changes(conv: &Record, msg: &Record, changes: &mut Changes) {
    changes.set(CONVERSATION, "last_message_at", FieldValue::Int(msg.created_at));
    if msg.text("direction") == Some("incoming") {
        if conv.get("waiting_since").is_null() {
            changes.set(CONVERSATION, "waiting_since", FieldValue::Int(msg.created_at));
        }
        // A customer writing again reopens the conversation, even a resolved one an
        // e-mail answers.
        if matches!(conv.text("status"), Some("pending" | "snoozed" | "resolved")) {
            changes.set(CONVERSATION, "status", FieldValue::Text("open".into()));
        }
    } else {
        changes.set(CONVERSATION, "waiting_since", FieldValue::Null);
        if conv.get("first_reply_at").is_null() {
            changes.set(CONVERSATION, "first_reply_at", FieldValue::Int(msg.created_at));
        }
    }
}

impl Scoped<'_> {
    /// Fills in what the store decides for a conversation: its running number when it
    /// is new; a snooze's end cleared when it stops being snoozed.
    pub(super) async fn prepare_conversation(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        before: Option<&Record>,
        changes: &mut Changes,
    ) -> Result<()> {
        match before {
            None => {
                let number = self.next_number(conn, "conversation").await?;
                let now = now_ms();
                changes.set(CONVERSATION, "number", FieldValue::Int(number));
                changes.set(CONVERSATION, "last_message_at", FieldValue::Int(now));
                changes.set(CONVERSATION, "sla_breached", FieldValue::Bool(false));
                if let (Some(FieldValue::Int(at)), Some("snoozed")) =
                    (changes.get("snoozed_until"), changes.get("status").and_then(|s| s.as_text()))
                {
                    let inbox = changes.get("inbox_id").and_then(|v| v.as_text()).unwrap_or_default();
                    let sql = insert(
                        "conversation_timers",
                        "workspace_id, inbox_id, conversation_id, target, kind, fire_at, due_at",
                        args![self.ws, inbox, id, "snooze", "wake", *at, *at],
                    );
                    sql.query().execute(&mut *conn).await?;
                }
                let inbox = changes.get("inbox_id").and_then(|v| v.as_text()).unwrap_or_default().to_string();
                let Some(inbox) = self.fetch(conn, ObjectType::Inbox, &inbox).await? else {
                    // The write reports the unknown inbox.
                    return Ok(());
                };
                let Some(policy) = inbox.text("sla_policy_id").map(str::to_string) else {
                    return Ok(());
                };
                changes.set(CONVERSATION, "sla_policy_id", FieldValue::Text(policy.clone()));
                if let Some(sla) = self.sla_of(conn, &inbox, &policy).await? {
                    for target in [Target::FirstResponse, Target::Resolution] {
                        self.start_target(conn, &sla, target, id, &inbox.id, now, changes).await?;
                    }
                }
            }
            Some(b) => {
                let unsnoozed = changes.get("status").is_some_and(|s| s.as_text() != Some("snoozed"));
                if unsnoozed && !b.get("snoozed_until").is_null() && changes.get("snoozed_until").is_none() {
                    changes.set(CONVERSATION, "snoozed_until", FieldValue::Null);
                }
                self.follow_targets(conn, b, changes).await?;
                self.follow_snooze(conn, b, changes).await?;
            }
        }
        Ok(())
    }

    /// The policy and the hours its targets count in.
    async fn sla_of(&self, conn: &mut AnyConnection, inbox: &Record, policy: &str) -> Result<Option<Sla>> {
        let Some(policy) = self.fetch(conn, ObjectType::SlaPolicy, policy).await? else {
            return Ok(None);
        };
        let hours = if policy.get("business_hours_only") == &FieldValue::Bool(true) {
            let json = |name: &str| {
                inbox
                    .text(name)
                    .and_then(|t| serde_json::from_str::<Value>(t).ok())
                    .unwrap_or(Value::Null)
            };
            BusinessHours::parse(inbox.text("time_zone").unwrap_or("UTC"), &json("business_hours"), &json("holidays"))
                .map_err(|(_, e)| anyhow::anyhow!("an inbox's stored hours: {e}"))?
        } else {
            BusinessHours::always()
        };
        Ok(Some(Sla { policy, hours }))
    }

    /// Starts a target's clock at `start`: its deadline on the conversation, and its
    /// warning (at 80 %) and breach timers.
    #[allow(clippy::too_many_arguments)]
    async fn start_target(
        &self,
        conn: &mut AnyConnection,
        sla: &Sla,
        target: Target,
        conversation: &str,
        inbox: &str,
        start: i64,
        changes: &mut Changes,
    ) -> Result<()> {
        let FieldValue::Int(minutes) = sla.policy.get(target.minutes()) else {
            return Ok(());
        };
        let (Some(due), Some(warn)) = (sla.hours.add(start, minutes * 60), sla.hours.add(start, minutes * 48)) else {
            // Never open again within the horizon: no deadline to keep.
            return Ok(());
        };
        changes.set(CONVERSATION, target.due_field(), FieldValue::Int(due));
        for (kind, at) in [("warning", warn), ("breach", due)] {
            let mut sql = insert(
                "conversation_timers",
                "workspace_id, inbox_id, conversation_id, target, kind, fire_at, due_at",
                args![self.ws, inbox, conversation, target.name(), kind, at, due],
            );
            sql.push(" ON CONFLICT (conversation_id, target, kind) DO UPDATE SET fire_at = ")
                .arg(at)
                .push(", due_at = ")
                .arg(due);
            sql.query().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// A target met (or no longer counting): its deadline and timers go.
    async fn stop_target(&self, conn: &mut AnyConnection, target: Target, conversation: &str, changes: &mut Changes) -> Result<()> {
        changes.set(CONVERSATION, target.due_field(), FieldValue::Null);
        let mut sql = Sql::new("DELETE FROM conversation_timers WHERE conversation_id = ");
        sql.arg(conversation).push(" AND target = ").arg(target.name());
        sql.query().execute(&mut *conn).await?;
        Ok(())
    }

    /// A snoozed conversation opens again when its snooze ends: a timer, set (or moved)
    /// with the snooze and cleared when it stops being snoozed.
    async fn follow_snooze(&self, conn: &mut AnyConnection, b: &Record, changes: &mut Changes) -> Result<()> {
        if changes.get("status").is_none() && changes.get("snoozed_until").is_none() {
            return Ok(());
        }
        let until = match (changes.get("snoozed_until"), b.get("snoozed_until")) {
            (Some(v), _) => v.clone(),
            (None, old) => old.clone(),
        };
        let status = changes
            .get("status")
            .and_then(|s| s.as_text())
            .or(b.text("status"))
            .unwrap_or_default();
        let mut clear = Sql::new("DELETE FROM conversation_timers WHERE conversation_id = ");
        clear.arg(&b.id).push(" AND target = 'snooze'");
        clear.query().execute(&mut *conn).await?;
        if let (FieldValue::Int(at), "snoozed") = (until, status) {
            let sql = insert(
                "conversation_timers",
                "workspace_id, inbox_id, conversation_id, target, kind, fire_at, due_at",
                args![self.ws, b.text("inbox_id").unwrap_or_default(), &b.id, "snooze", "wake", at, at],
            );
            sql.query().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// What a change to a conversation under a policy does to its targets: the first
    /// reply meets the first response; a customer left waiting after a reply starts the
    /// next response, which an answer meets; resolving meets them all.
    async fn follow_targets(&self, conn: &mut AnyConnection, b: &Record, changes: &mut Changes) -> Result<()> {
        let Some(policy) = b.text("sla_policy_id").map(str::to_string) else {
            return Ok(());
        };
        let id = b.id.as_str();
        let resolved = changes.get("status").is_some_and(|s| s.as_text() == Some("resolved")) && b.text("status") != Some("resolved");
        if resolved {
            for t in Target::ALL {
                if !b.get(t.due_field()).is_null() {
                    self.stop_target(conn, t, id, changes).await?;
                }
            }
            return Ok(());
        }
        let replied = changes.get("first_reply_at").is_some_and(|v| !v.is_null()) && b.get("first_reply_at").is_null();
        if replied && !b.get(Target::FirstResponse.due_field()).is_null() {
            self.stop_target(conn, Target::FirstResponse, id, changes).await?;
        }
        match changes.get("waiting_since") {
            Some(FieldValue::Null) if !b.get(Target::NextResponse.due_field()).is_null() => {
                self.stop_target(conn, Target::NextResponse, id, changes).await?;
            }
            Some(FieldValue::Int(since)) if b.get("waiting_since").is_null() && !b.get("first_reply_at").is_null() => {
                let since = *since;
                let inbox = b.text("inbox_id").unwrap_or_default().to_string();
                if let Some(inbox) = self.fetch(conn, ObjectType::Inbox, &inbox).await? {
                    if let Some(sla) = self.sla_of(conn, &inbox, &policy).await? {
                        self.start_target(conn, &sla, Target::NextResponse, id, &inbox.id, since, changes)
                            .await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Fires the conversation's SLA timers due by `now`, each once: `sla.warning` or
    /// `sla.breached` on the inbox (and to its assignee), and a breach marks the
    /// conversation. Answers how many fired.
    pub(crate) async fn fire_timers_in(&self, w: &mut WriteTx, conversation_id: &str, now: i64, actor: &str) -> Result<Value> {
        let mut sql = Sql::new("SELECT target, kind, due_at FROM conversation_timers WHERE conversation_id = ");
        sql.arg(conversation_id)
            .push(" AND fire_at <= ")
            .arg(now)
            .push(" ORDER BY fire_at, CASE kind WHEN 'warning' THEN 0 ELSE 1 END");
        let due: Vec<(String, String, i64)> = sql
            .query()
            .fetch_all(&mut *w.tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_>>()?;
        if due.is_empty() {
            return Ok(json!({"fired": 0}));
        }
        let mut sql = Sql::new("DELETE FROM conversation_timers WHERE conversation_id = ");
        sql.arg(conversation_id).push(" AND fire_at <= ").arg(now);
        sql.query().execute(&mut *w.tx).await?;
        let Some(conv) = self.fetch(&mut w.tx, CONVERSATION, conversation_id).await? else {
            return Ok(json!({"fired": 0}));
        };
        let stamp = now_ms();
        let inbox_topic = Topic::Inbox {
            inbox_id: conv.text("inbox_id").unwrap_or_default().to_string(),
        }
        .key();
        let mut breached = false;
        let mut wake = false;
        for (target, kind, due_at) in &due {
            if kind == "wake" {
                wake = conv.text("status") == Some("snoozed");
                continue;
            }
            let event = if kind == "breach" { "sla.breached" } else { "sla.warning" };
            breached |= kind == "breach";
            let data = json!({
                "object_type": "conversation", "id": conv.id, "target": target,
                "due_at": crate::domain::fields::format_timestamp(*due_at), "record": conv.to_json(CONVERSATION),
            });
            w.append_event(self.ws, &inbox_topic, event, data.clone(), actor, stamp).await?;
            if let Some(user) = conv.text("assignee_id") {
                let topic = Topic::User {
                    workspace_id: self.ws.to_string(),
                    user_id: user.to_string(),
                };
                w.append_event(self.ws, &topic.key(), event, data, actor, stamp).await?;
            }
        }
        let mut c = Changes::default();
        if breached && conv.get("sla_breached") != &FieldValue::Bool(true) {
            c.set(CONVERSATION, "sla_breached", FieldValue::Bool(true));
        }
        if wake {
            c.set(CONVERSATION, "status", FieldValue::Text("open".into()));
        }
        if !c.values.is_empty() {
            self.update_from(w, CONVERSATION, conv, None, c, actor, false).await?;
        }
        Ok(json!({"fired": due.len()}))
    }

    /// The workspace's next running number of `name`; the row stays locked until the
    /// transaction ends, so no two writers take the same one.
    async fn next_number(&self, conn: &mut AnyConnection, name: &str) -> Result<i64> {
        self.take_numbers(conn, name, 1).await
    }

    /// Takes the workspace's next `n` running numbers of `name`, answering the last
    /// (locked like [`Scoped::next_number`]).
    pub(super) async fn take_numbers(&self, conn: &mut AnyConnection, name: &str, n: i64) -> Result<i64> {
        let mut sql = insert("counters", "workspace_id, name, value", args![self.ws, name, n]);
        sql.push(" ON CONFLICT (workspace_id, name) DO UPDATE SET value = counters.value + ")
            .arg(n)
            .push(" RETURNING value");
        Ok(sql.query().fetch_one(conn).await?.try_get(0)?)
    }

    /// Fills in a new message's server fields: its inbox (its conversation's), its
    /// author (the actor, unless the channel named the contact) and its direction.
    pub(super) fn prepare_message(conv: &Record, changes: &mut Changes, actor: &str) -> Result<()> {
        changes.set(MESSAGE, "conversation_id", FieldValue::Text(conv.id.clone()));
        changes.set(MESSAGE, "inbox_id", conv.get("inbox_id").clone());
        let author = match changes.get("author").and_then(|a| a.as_text()) {
            Some(a) => a.to_string(),
            None => actor.to_string(),
        };
        changes.set(MESSAGE, "author", FieldValue::Text(author.clone()));
        let kind = changes.get("kind").and_then(|k| k.as_text()).unwrap_or("message").to_string();
        let direction = match kind.as_str() {
            "message" if author.starts_with("contact:") => FieldValue::Text("incoming".into()),
            "message" => FieldValue::Text("outgoing".into()),
            _ => FieldValue::Null,
        };
        // An outgoing message waits for its channel to take it.
        let delivery = match &direction {
            FieldValue::Text(d) if d == "outgoing" => FieldValue::Text("pending".into()),
            _ => FieldValue::Null,
        };
        changes.set(MESSAGE, "direction", direction);
        changes.set(MESSAGE, "delivery_status", delivery);
        if let Some(FieldValue::Text(html)) = changes.get("html").cloned() {
            changes.set(MESSAGE, "html", FieldValue::Text(sanitize_html(&html)));
        }
        if kind != "note" && changes.get("mentions").is_some_and(|m| !m.as_list().is_empty()) {
            return Err(invalid("mentions", "only a note mentions members"));
        }
        Ok(())
    }

    /// A new message in `conv` (read in this transaction): its server fields filled in,
    /// then what it changes in the conversation (see [`posted_changes`]); members
    /// mentioned in a note are told on their personal topic. Answers the message and
    /// the conversation as it is after.
    pub(super) async fn post_message_in(
        &self,
        w: &mut WriteTx,
        conv: Record,
        mut changes: Changes,
        actor: &str,
    ) -> Result<(Record, Record)> {
        Self::prepare_message(&conv, &mut changes, actor)?;
        self.check_mentions(&mut w.tx, &changes).await?;
        let to_customer = changes.get("direction").and_then(|d| d.as_text()) == Some("outgoing");
        let by_mail = to_customer && self.outgoing_mail_id(&mut w.tx, &conv, &mut changes).await?;
        let msg = self.insert_in(w, MESSAGE, changes, actor, true).await?;
        if by_mail {
            self.queue_mail(&mut w.tx, &msg).await?;
        }
        self.tell_mentioned(w, &msg, actor, msg.created_at).await?;
        if msg.text("kind") != Some("message") {
            return Ok((msg, conv));
        }
        let mut follows = Changes::default();
        posted_changes(&conv, &msg, &mut follows);
        let after = self.update_from(w, CONVERSATION, conv, None, follows, actor, false).await?;
        Ok((msg, after))
    }

    /// Those a note mentions must be members.
    async fn check_mentions(&self, conn: &mut AnyConnection, changes: &Changes) -> Result<()> {
        let mentions = changes.get("mentions").map(|m| m.as_list().to_vec()).unwrap_or_default();
        for (i, user) in mentions.iter().enumerate() {
            if !self.is_member(conn, user).await? {
                return Err(invalid("mentions", format!("item {i} is not a member of this workspace")));
            }
        }
        Ok(())
    }

    async fn tell_mentioned(&self, w: &mut WriteTx, msg: &Record, actor: &str, now: i64) -> Result<()> {
        let conversation = msg.text("conversation_id").unwrap_or_default();
        for user in msg.get("mentions").as_list() {
            let topic = Topic::User {
                workspace_id: self.ws.to_string(),
                user_id: user.clone(),
            };
            let note = json!({"object_type": "message", "id": msg.id, "conversation_id": conversation, "record": msg.to_json(MESSAGE)});
            w.append_event(self.ws, &topic.key(), "mentioned", note, actor, now).await?;
        }
        Ok(())
    }

    /// Applies a macro to a conversation as one change: its notes and replies are
    /// written, and every change to the conversation (the macro's own and what its
    /// reply changes) is one update, one event. Based on the conversation's version
    /// `expected` when given.
    pub(crate) async fn apply_macro_in(
        &self,
        w: &mut WriteTx,
        macro_id: &str,
        conversation_id: &str,
        expected: Option<i64>,
        actor: &str,
    ) -> Result<Value> {
        let mac = self
            .fetch(&mut w.tx, ObjectType::Macro, macro_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let conv = self
            .fetch(&mut w.tx, CONVERSATION, conversation_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if let Some(v) = expected.filter(|v| *v != conv.version) {
            return Err(StoreError::Conflict {
                expected: v,
                current: Box::new(conv),
            });
        }
        let stored = serde_json::from_str::<Value>(mac.text("actions").unwrap_or("[]")).unwrap_or(Value::Null);
        let actions = parse_actions(&stored).map_err(|e| anyhow::anyhow!("a stored macro's actions: {e}"))?;
        let mut changes = Changes::default();
        let mut tags: Vec<String> = conv.get("tags").as_list().to_vec();
        let mut messages: Vec<(&str, String)> = Vec::new();
        for action in actions {
            match action {
                MacroAction::Status(s) => changes.set(CONVERSATION, "status", FieldValue::Text(s)),
                MacroAction::Priority(p) => changes.set(CONVERSATION, "priority", FieldValue::Text(p)),
                MacroAction::Assign(a) => changes.set(CONVERSATION, "assignee_id", a.map_or(FieldValue::Null, FieldValue::Text)),
                MacroAction::Team(t) => changes.set(CONVERSATION, "team_id", t.map_or(FieldValue::Null, FieldValue::Text)),
                MacroAction::AddLabels(add) => {
                    for l in add {
                        if !tags.contains(&l) {
                            tags.push(l);
                        }
                    }
                    changes.set(CONVERSATION, "tags", FieldValue::List(tags.clone()));
                }
                MacroAction::RemoveLabels(remove) => {
                    tags.retain(|t| !remove.contains(t));
                    changes.set(CONVERSATION, "tags", FieldValue::List(tags.clone()));
                }
                MacroAction::Note(text) => messages.push(("note", text)),
                MacroAction::Reply { canned_response_id } => {
                    let Some(canned) = self.fetch(&mut w.tx, ObjectType::CannedResponse, &canned_response_id).await? else {
                        return Err(invalid("actions", "the macro's canned response no longer exists; edit the macro"));
                    };
                    let text = self
                        .fill_in(&mut w.tx, canned.text("text").unwrap_or_default(), &conv, actor)
                        .await?;
                    messages.push(("message", text));
                }
            }
        }
        let mut written = Vec::new();
        for (kind, text) in messages {
            let mut m = Changes::default();
            m.set(MESSAGE, "conversation_id", FieldValue::Text(conv.id.clone()));
            m.set(MESSAGE, "kind", FieldValue::Text(kind.into()));
            m.set(MESSAGE, "text", FieldValue::Text(text));
            Self::prepare_message(&conv, &mut m, actor)?;
            let msg = self.insert_in(w, MESSAGE, m, actor, true).await?;
            if kind == "message" {
                // What the reply changes, unless the macro sets it itself.
                let mut follows = Changes::default();
                posted_changes(&conv, &msg, &mut follows);
                for (spec, v) in follows.values {
                    if changes.get(spec.name).is_none() {
                        changes.set(CONVERSATION, spec.name, v);
                    }
                }
            }
            written.push(msg.to_json(MESSAGE));
        }
        let after = self.update_from(w, CONVERSATION, conv, None, changes, actor, false).await?;
        Ok(json!({"conversation": after.to_json(CONVERSATION), "messages": written}))
    }

    /// A canned response's text with its variables filled in for a conversation and
    /// the member (`actor`) sending it.
    pub(crate) async fn fill_in(&self, conn: &mut AnyConnection, template: &str, conv: &Record, actor: &str) -> Result<String> {
        let contact = self
            .fetch(conn, ObjectType::Contact, conv.text("contact_id").unwrap_or_default())
            .await?;
        let inbox = self
            .fetch(conn, ObjectType::Inbox, conv.text("inbox_id").unwrap_or_default())
            .await?;
        let name_of = |table: &str, id: &str| {
            let mut sql = Sql::new(format!("SELECT name FROM {table} WHERE id = "));
            sql.arg(id);
            sql
        };
        let agent = match actor.strip_prefix("user:") {
            Some(user) => match name_of("users", user).query().fetch_optional(&mut *conn).await? {
                Some(row) => Some(row.try_get::<String, _>(0)?),
                None => None,
            },
            None => None,
        };
        let workspace = match name_of("workspaces", self.ws).query().fetch_optional(&mut *conn).await? {
            Some(row) => Some(row.try_get::<String, _>(0)?),
            None => None,
        };
        Ok(render(template, |name| match name {
            "contact.name" => contact.as_ref().and_then(|c| c.text("name")).map(str::to_string),
            "contact.email" => contact.as_ref().and_then(|c| c.get("emails").as_list().first().cloned()),
            "agent.name" => agent.clone(),
            "conversation.number" => match conv.get("number") {
                FieldValue::Int(n) => Some(n.to_string()),
                _ => None,
            },
            "conversation.subject" => conv.text("subject").map(str::to_string),
            "inbox.name" => inbox.as_ref().and_then(|i| i.text("name")).map(str::to_string),
            "workspace.name" => workspace.clone(),
            _ => None,
        }))
    }

    /// Before a conversation is deleted: its messages go with it (and out of search).
    pub(super) async fn delete_messages_of(&self, conn: &mut AnyConnection, conversation_id: &str) -> Result<()> {
        let mut docs = Sql::new("DELETE FROM search_docs WHERE workspace_id = ");
        docs.arg(self.ws)
            .push(" AND object_id IN (SELECT id FROM messages WHERE workspace_id = ")
            .arg(self.ws)
            .push(" AND conversation_id = ")
            .arg(conversation_id)
            .push(")");
        docs.query().execute(&mut *conn).await?;
        let mut sql = Sql::new("DELETE FROM messages WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND conversation_id = ").arg(conversation_id);
        sql.query().execute(&mut *conn).await?;
        let mut sql = Sql::new("DELETE FROM conversation_timers WHERE conversation_id = ");
        sql.arg(conversation_id);
        sql.query().execute(&mut *conn).await?;
        Ok(())
    }

    /// Gives the inbox a new token (answered once; only its digest is kept), which
    /// replaces the one it had.
    pub async fn set_inbox_token(&self, inbox_id: &str, digest: &str) -> Result<()> {
        let mut sql = insert(
            "inbox_tokens",
            "inbox_id, workspace_id, digest, created_at",
            args![inbox_id, self.ws, digest, now_ms()],
        );
        sql.push(" ON CONFLICT (inbox_id) DO UPDATE SET digest = ")
            .arg(digest)
            .push(", created_at = ")
            .arg(now_ms());
        sql.query().execute(self.store.pool()).await?;
        Ok(())
    }
}

impl Scoped<'_> {
    /// How many of the inbox's conversations are still to be worked.
    pub async fn count_open_conversations(&self, inbox_id: &str) -> Result<usize> {
        let mut sql = Sql::new("SELECT COUNT(*) FROM conversations WHERE workspace_id = ");
        sql.arg(self.ws)
            .push(" AND inbox_id = ")
            .arg(inbox_id)
            .push(" AND status <> 'resolved'");
        let n: i64 = sql.query().fetch_one(self.store.pool()).await?.try_get(0)?;
        Ok(usize::try_from(n).unwrap_or_default())
    }

    /// Records that `user_id` has read the conversation up to `at` (never moving back),
    /// and tells the member's other sessions on their personal topic.
    pub(crate) async fn mark_read_in(&self, w: &mut WriteTx, conversation_id: &str, user_id: &str, at: i64, actor: &str) -> Result<Value> {
        if !self.exists(&mut w.tx, CONVERSATION, conversation_id).await? {
            return Err(StoreError::NotFound);
        }
        let mut sql = insert(
            "conversation_reads",
            "workspace_id, conversation_id, user_id, last_read_at",
            args![self.ws, conversation_id, user_id, at],
        );
        sql.push(" ON CONFLICT (conversation_id, user_id) DO UPDATE SET last_read_at = ")
            .arg(at)
            .push(" WHERE conversation_reads.last_read_at < ")
            .arg(at);
        sql.query().execute(&mut *w.tx).await?;
        let mut read = Sql::new("SELECT last_read_at FROM conversation_reads WHERE conversation_id = ");
        read.arg(conversation_id).push(" AND user_id = ").arg(user_id);
        let last: i64 = read.query().fetch_one(&mut *w.tx).await?.try_get(0)?;
        let answer = json!({
            "conversation_id": conversation_id,
            "user_id": user_id,
            "last_read_at": crate::domain::fields::format_timestamp(last),
        });
        let topic = Topic::User {
            workspace_id: self.ws.to_string(),
            user_id: user_id.to_string(),
        };
        w.append_event(self.ws, &topic.key(), "conversation.read", answer.clone(), actor, now_ms())
            .await?;
        Ok(answer)
    }

    /// How many customer messages each of `conversations` holds that `user_id` has not
    /// read; conversations with none are left out.
    pub async fn unread_counts(&self, user_id: &str, conversations: &[&str]) -> Result<std::collections::HashMap<String, i64>> {
        let mut out = std::collections::HashMap::new();
        if conversations.is_empty() {
            return Ok(out);
        }
        let mut sql = Sql::new("SELECT m.conversation_id, COUNT(*) FROM messages m LEFT JOIN conversation_reads r ON r.conversation_id = m.conversation_id AND r.user_id = ");
        sql.arg(user_id)
            .push(" WHERE m.workspace_id = ")
            .arg(self.ws)
            .push(" AND m.direction = 'incoming' AND m.created_at > COALESCE(r.last_read_at, 0) AND m.conversation_id IN (");
        for (i, c) in conversations.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.arg(*c);
        }
        sql.push(") GROUP BY m.conversation_id");
        for row in sql.query().fetch_all(self.store.pool()).await? {
            out.insert(row.try_get(0)?, row.try_get(1)?);
        }
        Ok(out)
    }
}

impl Scoped<'_> {
    /// A canned response filled in for a conversation, as `actor` would send it.
    pub async fn render_canned(&self, canned_id: &str, conversation_id: &str, actor: &str) -> Result<String> {
        let mut conn = self.store.pool().acquire().await?;
        let canned = self
            .fetch(&mut conn, ObjectType::CannedResponse, canned_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let Some(conv) = self.fetch(&mut conn, CONVERSATION, conversation_id).await? else {
            return Err(invalid("conversation_id", "no such conversation"));
        };
        self.fill_in(&mut conn, canned.text("text").unwrap_or_default(), &conv, actor).await
    }
}

impl Scoped<'_> {
    /// The status a member last chose, and when (Unix ms).
    pub async fn chosen_availability(&self, user_id: &str) -> Result<(String, i64)> {
        let mut sql = Sql::new("SELECT availability, availability_since FROM memberships WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND user_id = ").arg(user_id);
        match sql.query().fetch_optional(self.store.pool()).await? {
            Some(row) => Ok((row.try_get(0)?, row.try_get(1)?)),
            None => Err(StoreError::NotFound),
        }
    }

    /// Records the status a member chose; answers when (Unix ms).
    pub async fn choose_availability(&self, user_id: &str, status: &str) -> Result<i64> {
        let now = now_ms();
        let mut sql = Sql::new("UPDATE memberships SET availability = ");
        sql.arg(status)
            .push(", availability_since = ")
            .arg(now)
            .push(" WHERE workspace_id = ")
            .arg(self.ws)
            .push(" AND user_id = ")
            .arg(user_id);
        sql.query().execute(self.store.pool()).await?;
        Ok(now)
    }
}

impl Scoped<'_> {
    /// The channel reports where an outgoing message of `inbox_id` is: it moves only
    /// forward (pending, sent, delivered, read; failed before delivery), and a report
    /// that would move it back changes nothing.
    pub(crate) async fn set_delivery_in(
        &self,
        w: &mut WriteTx,
        inbox_id: &str,
        message_id: &str,
        status: &str,
        error: Option<&str>,
        actor: &str,
    ) -> Result<Value> {
        let msg = self
            .fetch(&mut w.tx, MESSAGE, message_id)
            .await?
            .filter(|m| m.text("inbox_id") == Some(inbox_id))
            .ok_or(StoreError::NotFound)?;
        if msg.text("direction") != Some("outgoing") || msg.text("kind") != Some("message") {
            return Err(invalid(
                "message_id",
                "only an outgoing message to the customer has a delivery status",
            ));
        }
        let rank = |s: &str| match s {
            "pending" => 0,
            "sent" => 1,
            "delivered" => 2,
            "read" => 3,
            _ => 4,
        };
        let now = msg.text("delivery_status").unwrap_or("pending");
        let forward = match status {
            "failed" => rank(now) < 2,
            s => rank(s) > rank(now) && now != "failed",
        };
        if !forward {
            return Ok(msg.to_json(MESSAGE));
        }
        let mut c = Changes::default();
        c.set(MESSAGE, "delivery_status", FieldValue::Text(status.to_string()));
        if let Some(e) = error.filter(|_| status == "failed") {
            c.set(MESSAGE, "delivery_error", FieldValue::Text(e.chars().take(1000).collect()));
        }
        Ok(self.update_from(w, MESSAGE, msg, None, c, actor, false).await?.to_json(MESSAGE))
    }
}

impl Store {
    /// Conversations (with their workspace) whose SLA timers are due by `now`, at most
    /// `limit`.
    pub async fn due_timers(&self, now: i64, limit: i64) -> Result<Vec<(String, String)>> {
        let mut sql = Sql::new("SELECT DISTINCT workspace_id, conversation_id FROM conversation_timers WHERE fire_at <= ");
        sql.arg(now).push(" LIMIT ").arg(limit);
        sql.query()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// When the next SLA timer fires (Unix ms), if any is set.
    pub async fn next_timer(&self) -> Result<Option<i64>> {
        let sql = Sql::new("SELECT MIN(fire_at) FROM conversation_timers");
        Ok(sql.query().fetch_one(self.pool()).await?.try_get(0)?)
    }

    /// The workspace and inbox an inbox token belongs to.
    pub async fn inbox_by_token(&self, digest: &str) -> Result<Option<(String, String)>> {
        let mut sql = Sql::new("SELECT workspace_id, inbox_id FROM inbox_tokens WHERE digest = ");
        sql.arg(digest);
        match sql.query().fetch_optional(self.pool()).await? {
            Some(row) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
            None => Ok(None),
        }
    }
}
