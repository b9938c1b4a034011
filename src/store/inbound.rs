//! The API channel's inbound messages: contact matching, threading, dedupe by
//! external id, automatic assignment, and runs of messages written as a set.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};

use super::events::ChangeNotes;
use super::inbox::posted_changes;
use super::mail::THREAD_BY_SUBJECT;
use super::records::{columns, decode, invalid};
use super::{args, derived_table, insert, list, new_id, now_ms, Arg, Backend, Result, Scoped, Script, Sql, StoreError, WriteTx};
use crate::domain::{Changes, EmailAddress, FieldValue, ObjectType, Record};

const CONVERSATION: ObjectType = ObjectType::Conversation;
const MESSAGE: ObjectType = ObjectType::Message;

/// A message posted to an API-channel inbox by an integrator or a chat widget.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub inbox_id: String,
    /// The integrator's own id of the sender.
    pub source_id: Option<String>,
    pub email: Option<EmailAddress>,
    /// The sender's name, for a contact made for them.
    pub name: Option<String>,
    /// The subject of a conversation this message opens.
    pub subject: Option<String>,
    pub text: String,
    /// The channel's id of the message: posting it again changes nothing.
    pub external_id: Option<String>,
    /// Its rich text, sanitised when kept.
    pub html: Option<String>,
    /// Its attachments, described (`[{"name", "content_type", "size", "url"?}]`).
    pub attachments: Option<Value>,
    /// Members online (not busy) when it was posted: those a new conversation may be
    /// assigned to when the inbox assigns automatically.
    pub available: Vec<String>,
}

impl Inbound {
    /// The message as it is written, from the sender's contact.
    pub(super) fn message(&self, contact: &str) -> Changes {
        let mut msg = Changes::default();
        msg.set(MESSAGE, "kind", FieldValue::Text("message".into()));
        msg.set(MESSAGE, "author", FieldValue::Text(format!("contact:{contact}")));
        msg.set(MESSAGE, "text", FieldValue::Text(self.text.clone()));
        if let Some(ext) = &self.external_id {
            msg.set(MESSAGE, "external_id", FieldValue::Text(ext.clone()));
        }
        if let Some(html) = &self.html {
            msg.set(MESSAGE, "html", FieldValue::Text(html.clone()));
        }
        if let Some(a) = &self.attachments {
            msg.set(MESSAGE, "attachments", FieldValue::Text(a.to_string()));
        }
        msg
    }

    /// A contact for a sender the inbox does not know.
    fn contact(&self) -> Changes {
        let name = self
            .name
            .clone()
            .or_else(|| self.email.as_ref().map(|e| e.as_str().to_string()))
            .or_else(|| self.source_id.clone())
            .unwrap_or_else(|| "Visitor".into());
        let mut c = Changes::default();
        c.set(ObjectType::Contact, "name", FieldValue::Text(name));
        if let Some(e) = &self.email {
            c.set(ObjectType::Contact, "emails", FieldValue::List(vec![e.as_str().to_string()]));
        }
        c
    }

    /// The conversation this message opens in `inbox` for `contact`, before the
    /// store fills in its number and times.
    pub(super) fn opening(&self, inbox: &Record, contact: &str) -> Changes {
        let mut c = Changes::default();
        c.set(CONVERSATION, "inbox_id", FieldValue::Text(self.inbox_id.clone()));
        c.set(CONVERSATION, "contact_id", FieldValue::Text(contact.to_string()));
        c.set(CONVERSATION, "status", FieldValue::Text("open".into()));
        c.set(CONVERSATION, "priority", FieldValue::Text("none".into()));
        if let Some(s) = &self.subject {
            c.set(CONVERSATION, "subject", FieldValue::Text(s.clone()));
        }
        if let FieldValue::Text(team) = inbox.get("team_id") {
            c.set(CONVERSATION, "team_id", FieldValue::Text(team.clone()));
        }
        c
    }

    /// The ids the channel knows the sender by, in the order they are looked up: the
    /// integrator's own, then the e-mail address.
    pub(super) fn sources(&self) -> Vec<String> {
        let by_email = self.email.as_ref().map(|e| format!("email:{}", e.as_str()));
        // An integrator's id may be spelt like the address one: it is one id.
        let by_email = by_email.filter(|e| self.source_id.as_ref() != Some(e));
        self.source_id.iter().cloned().chain(by_email).collect()
    }
}

impl Scoped<'_> {
    /// Takes a message posted to an API-channel inbox: finds the sender's contact (by
    /// the channel's id for them, else by e-mail) or makes one, threads the message
    /// into the contact's unresolved conversation in the inbox or opens one, and
    /// answers the message, its conversation and the contact. A message whose
    /// external id the inbox already holds is answered as it was, and nothing changes.
    pub(crate) async fn inbound_in(&self, w: &mut WriteTx, m: Inbound, actor: &str) -> Result<Value> {
        let inbox = self
            .fetch(&mut w.tx, ObjectType::Inbox, &m.inbox_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if inbox.text("channel") != Some("api") {
            return Err(invalid("inbox_id", "only an inbox of channel 'api' takes posted messages"));
        }
        if let Some(ext) = &m.external_id {
            let mut sql = Sql::new("SELECT id FROM messages WHERE inbox_id = ");
            sql.arg(&m.inbox_id).push(" AND external_id = ").arg(ext);
            if let Some(row) = sql.query().fetch_optional(&mut *w.tx).await? {
                let id: String = row.try_get(0)?;
                return self.inbound_answer(&mut w.tx, &id, true).await;
            }
        }
        let contact = self.inbound_contact(w, &m, actor).await?;
        let mut sql = Sql::new(format!("SELECT {} FROM conversations WHERE workspace_id = ", columns(CONVERSATION)));
        sql.arg(self.ws)
            .push(" AND inbox_id = ")
            .arg(&m.inbox_id)
            .push(" AND contact_id = ")
            .arg(&contact)
            .push(" AND status <> 'resolved' ORDER BY created_at DESC LIMIT 1");
        let open = match sql.query().fetch_optional(&mut *w.tx).await? {
            Some(row) => Some(decode(CONVERSATION, &row)?),
            None => None,
        };
        let conversation = match open {
            Some(id) => id,
            None => {
                let mut c = m.opening(&inbox, &contact);
                if inbox.get("auto_assign") == &FieldValue::Bool(true) {
                    if let Some(agent) = self.next_assignee(&mut w.tx, &inbox, &m.available).await? {
                        c.set(CONVERSATION, "assignee_id", FieldValue::Text(agent));
                    }
                }
                self.create_in(w, CONVERSATION, c, actor).await?
            }
        };
        let (created, conversation) = self.post_message_in(w, conversation, m.message(&contact), actor).await?;
        Ok(json!({
            "message": created.to_json(MESSAGE),
            "conversation": conversation.to_json(CONVERSATION),
            "duplicate": false,
        }))
    }

    /// Round-robin: of the `available` members who may work the inbox's conversations
    /// (its team's, when it has one) and hold fewer open ones in it than its limit, the
    /// one whose turn is oldest (never first); their turn is then the newest.
    pub(super) async fn next_assignee(&self, conn: &mut AnyConnection, inbox: &Record, available: &[String]) -> Result<Option<String>> {
        if available.is_empty() {
            return Ok(None);
        }
        let list = |sql: &mut Sql, ids: &[String]| {
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.arg(id);
            }
        };
        let mut sql = Sql::new("SELECT user_id FROM memberships WHERE workspace_id = ");
        sql.arg(self.ws)
            .push(" AND role IN ('owner', 'admin', 'member', 'agent') AND user_id IN (");
        list(&mut sql, available);
        sql.push(")");
        let mut eligible: Vec<String> = sql
            .query()
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if let FieldValue::Text(team) = inbox.get("team_id") {
            let members = self
                .fetch(conn, ObjectType::Team, team)
                .await?
                .map(|t| t.get("member_ids").as_list().to_vec())
                .unwrap_or_default();
            eligible.retain(|u| members.contains(u));
        }
        if eligible.is_empty() {
            return Ok(None);
        }
        if let FieldValue::Int(limit) = inbox.get("max_open_per_agent") {
            let mut sql = Sql::new("SELECT assignee_id, COUNT(*) FROM conversations WHERE workspace_id = ");
            sql.arg(self.ws)
                .push(" AND inbox_id = ")
                .arg(&inbox.id)
                .push(" AND status IN ('open', 'pending') AND assignee_id IN (");
            list(&mut sql, &eligible);
            sql.push(") GROUP BY assignee_id");
            let mut full = Vec::new();
            for row in sql.query().fetch_all(&mut *conn).await? {
                let (user, open): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
                if open >= *limit {
                    full.push(user);
                }
            }
            eligible.retain(|u| !full.contains(u));
        }
        let mut sql = Sql::new("SELECT user_id, turn FROM inbox_assignments WHERE inbox_id = ");
        sql.arg(&inbox.id);
        let mut turns = std::collections::HashMap::new();
        let mut last = 0i64;
        for row in sql.query().fetch_all(&mut *conn).await? {
            let (user, turn): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            last = last.max(turn);
            turns.insert(user, turn);
        }
        let Some(next) = eligible.into_iter().min_by(|a, b| {
            let turn = |u: &String| turns.get(u).copied().unwrap_or(0);
            turn(a).cmp(&turn(b)).then(a.cmp(b))
        }) else {
            return Ok(None);
        };
        let mut sql = insert(
            "inbox_assignments",
            "workspace_id, inbox_id, user_id, turn",
            args![self.ws, &inbox.id, &next, last + 1],
        );
        sql.push(" ON CONFLICT (inbox_id, user_id) DO UPDATE SET turn = ").arg(last + 1);
        sql.query().execute(&mut *conn).await?;
        Ok(Some(next))
    }

    /// The sender's contact: known to the inbox by its source id (or e-mail), else
    /// the workspace's contact with that e-mail, else a new one; remembered for the
    /// next message either way.
    pub(super) async fn inbound_contact(&self, w: &mut WriteTx, m: &Inbound, actor: &str) -> Result<String> {
        let sources = m.sources();
        let sources: Vec<&String> = sources.iter().collect();
        for (i, source) in sources.iter().enumerate() {
            // A contact deleted since is not found, and made again below.
            let mut sql = Sql::new("SELECT ic.contact_id FROM inbox_contacts ic JOIN contacts c ON c.id = ic.contact_id AND c.workspace_id = ic.workspace_id WHERE ic.inbox_id = ");
            sql.arg(&m.inbox_id).push(" AND ic.source_id = ").arg(source.as_str());
            if let Some(row) = sql.query().fetch_optional(&mut *w.tx).await? {
                let id: String = row.try_get(0)?;
                {
                    // The sources before this one did not name them; the rest may not yet.
                    let others: Vec<&String> = sources.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, s)| *s).collect();
                    self.remember_sources(&mut w.tx, m, &others, &id).await?;
                    return Ok(id);
                }
            }
        }
        let mut found = None;
        if let Some(email) = &m.email {
            // Addresses are stored lowercased in a JSON list: the quoted address is
            // an exact item.
            let mut sql = Sql::new("SELECT id FROM contacts WHERE workspace_id = ");
            sql.arg(self.ws)
                .push(" AND emails LIKE ")
                // `_` and `%` are valid in addresses and must match only themselves.
                .arg(format!("%\"{}\"%", like_literal(email.as_str())))
                .push(" ESCAPE '\\' ORDER BY created_at LIMIT 1");
            if let Some(row) = sql.query().fetch_optional(&mut *w.tx).await? {
                found = Some(row.try_get::<String, _>(0)?);
            }
        }
        let id = match found {
            Some(id) => id,
            None => self.create_in(w, ObjectType::Contact, m.contact(), actor).await?.id,
        };
        self.remember_sources(&mut w.tx, m, &sources, &id).await?;
        Ok(id)
    }

    async fn remember_sources(&self, conn: &mut AnyConnection, m: &Inbound, sources: &[&String], contact: &str) -> Result<()> {
        for source in sources {
            let mut sql = insert(
                "inbox_contacts",
                "workspace_id, inbox_id, source_id, contact_id",
                args![self.ws, &m.inbox_id, source.as_str(), contact],
            );
            sql.push(" ON CONFLICT (inbox_id, source_id) DO UPDATE SET contact_id = ")
                .arg(contact);
            sql.query().execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn inbound_answer(&self, conn: &mut AnyConnection, message_id: &str, duplicate: bool) -> Result<Value> {
        let msg = self.fetch(conn, MESSAGE, message_id).await?.ok_or(StoreError::NotFound)?;
        let conv_id = msg.text("conversation_id").unwrap_or_default().to_string();
        let conv = self.fetch(conn, CONVERSATION, &conv_id).await?.ok_or(StoreError::NotFound)?;
        Ok(json!({
            "message": msg.to_json(MESSAGE),
            "conversation": conv.to_json(CONVERSATION),
            "duplicate": duplicate,
        }))
    }
}

/// `s` as a LIKE pattern that matches only itself (with `ESCAPE '\'`).
pub(super) fn like_literal(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// One message of a run, with what the persister knows of its job.
pub struct QueuedInbound<'a> {
    pub m: &'a Inbound,
    pub actor: &'a str,
    pub cause: Option<String>,
    pub fence: Option<(String, i64)>,
}

/// A message taken by a run: its answer, and the range of the transaction's events
/// it made.
pub type Taken = (Result<Value>, Range<usize>);

/// What a run read of the inbox, and keeps up to date in memory as it threads its
/// messages one after another.
pub(super) struct Threads {
    pub(super) inbox: Record,
    /// The conversation of each external id the inbox holds among those the run asked
    /// about (its messages' own, and for mail those they answer), and of the run's
    /// messages so far.
    pub(super) threads_of: HashMap<String, String>,
    /// The contact each source id (or `email:` address) names in this inbox.
    pub(super) contact_of: HashMap<String, String>,
    /// For an address the inbox knows no one by: the workspace's oldest contact with
    /// it, or `None` when there is none (the sender is made a contact).
    by_email: HashMap<String, Option<String>>,
    /// Every conversation the run read or opened, as its messages so far left it.
    pub(super) convs: HashMap<String, Record>,
    /// Per contact, their unresolved conversations in the inbox, newest first.
    pub(super) open: HashMap<String, Vec<String>>,
    /// Conversations the run opens, each with its place among them: its number is
    /// the workspace's next but that many, taken once the run is planned.
    opened: HashMap<String, i64>,
}

/// What a run reads before it threads its messages.
#[derive(Default)]
pub(super) struct Wanted<'a> {
    /// The messages' own external ids (those the inbox holds are duplicates).
    pub(super) own: Vec<&'a str>,
    /// Message ids the messages answer: their conversations are read.
    pub(super) answered: Vec<&'a str>,
    /// The ids the senders are known by.
    pub(super) sources: HashSet<String>,
    /// Conversations named by id (Shoal's own Message-IDs carry one).
    pub(super) conversations: Vec<&'a str>,
}

/// A message threaded in memory: a contact made for a new sender and the
/// conversation it opens, if so; the sender's ids bound to their contact; the
/// message; and its conversation before and after (no after when it does not change).
pub(super) struct Threaded {
    contact: Option<Record>,
    bound: Option<(String, Vec<String>)>,
    opened: Option<Record>,
    msg: Record,
    before: Record,
    after: Option<Record>,
}

/// Who sent a message, to a run: a contact it made, or one it knows; and whether
/// the sender's ids are to be bound to it.
pub(super) struct Sender {
    made: Option<Record>,
    pub(super) id: String,
    bind: bool,
}

impl Sender {
    /// The contact of a conversation a message from no known address continues.
    pub(super) fn of(conversation: &Record) -> Self {
        Sender {
            made: None,
            id: conversation.text("contact_id").unwrap_or_default().to_string(),
            bind: false,
        }
    }
}

/// The conversation fields a message into an open conversation may change, written
/// by the run's one update (`ROW_COLUMNS` carries them).
const FOLLOWED: [&str; 2] = ["last_message_at", "waiting_since"];

/// The columns of a row of the update's derived table: the conversation, its version
/// in the row and after the run, its new time, and the `FOLLOWED` fields.
const ROW_COLUMNS: [&str; 6] = ["id", "ov", "nv", "ua", "lm", "ws"];

/// Conversations per update statement: well under both engines' limits on bound
/// parameters.
const CHUNK: usize = 128;

/// A new record of `ty` made of `changes` at `now`, if they are valid.
fn new_record(ty: ObjectType, changes: &Changes, now: i64) -> Option<Record> {
    let empty = Record {
        id: new_id(),
        version: 0,
        created_at: now,
        updated_at: now,
        values: Default::default(),
        custom: Default::default(),
    };
    let (values, custom) = empty.merged(changes);
    ty.check(&values).ok()?;
    Some(Record {
        version: 1,
        values,
        custom,
        ..empty
    })
}

impl Threads {
    /// Threads `q` when everything it needs was read: into its contact's open
    /// conversation, or opening one, with a new external id. `None` leaves it to run
    /// alone (see [`Threads::step`] for what else does).
    fn thread(&mut self, q: &QueuedInbound<'_>, now: i64) -> Option<Threaded> {
        let m = q.m;
        if m.inbox_id != self.inbox.id {
            return None;
        }
        if m.external_id.as_ref().is_some_and(|ext| self.threads_of.contains_key(ext)) {
            return None;
        }
        let sender = self.sender(m, now)?;
        let into = self.open.get(&sender.id).and_then(|o| o.first()).cloned();
        let changes = m.message(&sender.id);
        self.step(m, sender, into, changes, q.actor, now)
    }

    /// The sender of `m`: the contact the inbox knows by all of their ids; when it
    /// knows them by none, the workspace's contact with their address, else a new
    /// one. `None` when the run cannot tell (some of their ids known, or an address
    /// not looked up).
    pub(super) fn sender(&self, m: &Inbound, now: i64) -> Option<Sender> {
        let sources = m.sources();
        if let Some(c) = self.contact_of.get(sources.first()?) {
            if sources.iter().any(|s| self.contact_of.get(s) != Some(c)) {
                return None;
            }
            return Some(Sender {
                made: None,
                id: c.clone(),
                bind: false,
            });
        }
        if sources.iter().any(|s| self.contact_of.contains_key(s)) {
            return None;
        }
        if let Some(email) = &m.email {
            if let Some(id) = self.by_email.get(email.as_str())?.clone() {
                return Some(Sender {
                    made: None,
                    id,
                    bind: true,
                });
            }
        }
        let c = new_record(ObjectType::Contact, &m.contact(), now)?;
        Some(Sender {
            id: c.id.clone(),
            made: Some(c),
            bind: true,
        })
    }

    /// `m` from `sender`, as the message `changes` describe, into the conversation
    /// `into` (one the run read or opened) or opening one, in an inbox that neither
    /// assigns nor counts SLA targets by itself. `None` when it needs statements of
    /// its own: a conversation to open in such an inbox, a customer's message that
    /// changes a conversation's status or starts a target.
    pub(super) fn step(
        &mut self,
        m: &Inbound,
        sender: Sender,
        into: Option<String>,
        mut changes: Changes,
        actor: &str,
        now: i64,
    ) -> Option<Threaded> {
        let (opened, before) = match into {
            Some(id) => (None, self.convs.get(&id)?.clone()),
            None => {
                let assigns = self.inbox.get("auto_assign") == &FieldValue::Bool(true);
                if assigns || self.inbox.text("sla_policy_id").is_some() {
                    return None;
                }
                let mut c = m.opening(&self.inbox, &sender.id);
                // What the store fills in (see `prepare_conversation`); the number is
                // this one's place until the run takes its numbers.
                c.set(CONVERSATION, "number", FieldValue::Int(self.opened.len() as i64));
                c.set(CONVERSATION, "last_message_at", FieldValue::Int(now));
                c.set(CONVERSATION, "sla_breached", FieldValue::Bool(false));
                let c = new_record(CONVERSATION, &c, now)?;
                (Some(c.clone()), c)
            }
        };
        Scoped::prepare_message(&before, &mut changes, actor).ok()?;
        let msg = new_record(MESSAGE, &changes, now)?;
        // A note or a line changes nothing in its conversation.
        let after = if msg.text("kind") == Some("message") {
            let starts_target =
                before.text("sla_policy_id").is_some() && before.get("waiting_since").is_null() && !before.get("first_reply_at").is_null();
            if before.text("status") != Some("open") || starts_target {
                return None;
            }
            let mut follows = Changes::default();
            posted_changes(&before, &msg, &mut follows);
            let (values, custom) = before.merged(&follows);
            if values == before.values && custom == before.custom {
                None
            } else {
                let changed = CONVERSATION
                    .fields()
                    .iter()
                    .filter(|f| values.get(f.name) != before.values.get(f.name))
                    .all(|f| FOLLOWED.contains(&f.name));
                if !changed || custom != before.custom || CONVERSATION.check(&values).is_err() {
                    return None;
                }
                Some(Record {
                    id: before.id.clone(),
                    version: before.version + 1,
                    created_at: before.created_at,
                    // Strictly later than the previous write, so `updated_since` never
                    // misses it.
                    updated_at: now.max(before.updated_at + 1),
                    values,
                    custom,
                })
            }
        } else {
            None
        };
        if let Some(ext) = &m.external_id {
            self.threads_of.insert(ext.clone(), before.id.clone());
        }
        let bound = sender.bind.then(|| {
            let sources = m.sources();
            for s in &sources {
                self.contact_of.insert(s.clone(), sender.id.clone());
            }
            (sender.id.clone(), sources)
        });
        if let Some(c) = &opened {
            self.opened.insert(c.id.clone(), self.opened.len() as i64);
            self.open.entry(sender.id.clone()).or_default().insert(0, c.id.clone());
        }
        self.convs
            .insert(before.id.clone(), after.clone().unwrap_or_else(|| before.clone()));
        Some(Threaded {
            contact: sender.made,
            bound,
            opened,
            msg,
            before,
            after,
        })
    }

    /// Gives the conversations the run opened their numbers, the first being `first`.
    fn number(&mut self, steps: &mut [Threaded], first: i64) {
        let opened = &self.opened;
        let renumber = |c: &mut Record| {
            if let Some(place) = opened.get(&c.id) {
                c.values.insert("number", FieldValue::Int(first + place));
            }
        };
        for t in steps.iter_mut() {
            for c in [t.opened.as_mut(), Some(&mut t.before), t.after.as_mut()].into_iter().flatten() {
                renumber(c);
            }
        }
        self.convs.values_mut().for_each(renumber);
    }
}

impl Scoped<'_> {
    /// Writes a run of messages posted to one inbox as a set. Posting is the inbox's
    /// busiest write, and a message on its own costs ten to twenty statements in
    /// sequence; a run reads the inbox, the external ids, the senders and their open
    /// conversations for all its messages in a few statements, threads each message
    /// in memory, in order, then writes every contact, conversation, message and
    /// search document it made and updates every conversation it touched in a few
    /// round trips. Each message still gets its own answer, events and audit entries,
    /// exactly as it would alone.
    ///
    /// Returns the outcomes of a prefix of `msgs`: those it could thread from what it
    /// read. The first it could not (a duplicate, a sender known by some of their ids
    /// only, an SLA target to start, a conversation to assign) is the caller's to run
    /// alone. An error means the run's statements failed: the caller rolls back to
    /// before the run.
    pub(crate) async fn inbound_run(&self, w: &mut WriteTx, msgs: &[QueuedInbound<'_>]) -> Result<Vec<Taken>> {
        let Some(first) = msgs.first() else {
            return Ok(Vec::new());
        };
        let inbox = match self.fetch(&mut w.tx, ObjectType::Inbox, &first.m.inbox_id).await? {
            Some(inbox) if inbox.text("channel") == Some("api") => inbox,
            // Refused by the message alone, with its own error.
            _ => return Ok(Vec::new()),
        };
        let wanted = Wanted {
            own: msgs.iter().filter_map(|q| q.m.external_id.as_deref()).collect(),
            sources: msgs.iter().flat_map(|q| q.m.sources()).collect(),
            ..Wanted::default()
        };
        let mut threads = self.read_threads(w, inbox, wanted).await?;
        let now = now_ms();
        let mut steps = Vec::with_capacity(msgs.len());
        for q in msgs {
            match threads.thread(q, now) {
                Some(t) => steps.push(t),
                None => break,
            }
        }
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        self.number_opened(w, &mut threads, &mut steps).await?;
        // The audit entries, events and answers need nothing from the store: they are
        // made while it writes the run's rows (the writes go out first and are awaited
        // after), rather than after, when the store would wait for them instead.
        let writes = self.write_run(w, &steps, &threads);
        let notes = async {
            msgs.iter()
                .zip(&steps)
                .map(|(q, t)| {
                    let conversation = t.after.as_ref().unwrap_or(&t.before);
                    let answer = json!({
                        "message": t.msg.to_json(MESSAGE),
                        "conversation": conversation.to_json(CONVERSATION),
                        "duplicate": false,
                    });
                    (self.step_notes(t, q.actor, now), answer)
                })
                .collect::<Vec<_>>()
        };
        let (written, notes) = futures_util::future::join(writes, notes).await;
        written?;
        let mut taken = Vec::with_capacity(notes.len());
        for (q, (notes, answer)) in msgs.iter().zip(notes) {
            let mark = w.events_len();
            w.caused_by(q.cause.clone());
            w.fenced_by(q.fence.clone());
            for (n, at) in notes {
                w.add_notes(self.ws, n, q.actor, at).await?;
            }
            taken.push((Ok(answer), mark..w.events_len()));
        }
        Ok(taken)
    }

    /// Takes the numbers of the conversations a run opened.
    pub(super) async fn number_opened(&self, w: &mut WriteTx, threads: &mut Threads, steps: &mut [Threaded]) -> Result<()> {
        if !threads.opened.is_empty() {
            let n = threads.opened.len() as i64;
            let last = self.take_numbers(&mut w.tx, "conversation", n).await?;
            threads.number(steps, last - n + 1);
        }
        Ok(())
    }

    /// Writes what a run made and changed: its new rows, then its conversations'
    /// updates.
    pub(super) async fn write_run(&self, w: &mut WriteTx, steps: &[Threaded], threads: &Threads) -> Result<()> {
        self.write_threaded(w, steps, threads).await?;
        self.update_threaded(w, steps, threads).await
    }

    /// The audit entries and events of what a threaded message made and changed,
    /// each with the time it is stamped.
    pub(super) fn step_notes(&self, t: &Threaded, actor: &str, now: i64) -> Vec<(ChangeNotes, i64)> {
        let mut notes = Vec::with_capacity(4);
        if let Some(c) = &t.contact {
            notes.push((self.change_notes(ObjectType::Contact, None, Some(c), actor, now), now));
        }
        if let Some(c) = &t.opened {
            notes.push((self.change_notes(CONVERSATION, None, Some(c), actor, now), now));
        }
        notes.push((self.change_notes(MESSAGE, None, Some(&t.msg), actor, now), now));
        if let Some(after) = &t.after {
            let n = self.change_notes(CONVERSATION, Some(&t.before), Some(after), actor, after.updated_at);
            notes.push((n, after.updated_at));
        }
        notes
    }

    /// Inserts the contacts, the senders' ids, the conversations (as the run left
    /// them), the messages and their search documents the run made, joined into as
    /// few round trips as the engine allows.
    async fn write_threaded(&self, w: &mut WriteTx, steps: &[Threaded], threads: &Threads) -> Result<()> {
        let finals = &threads.convs;
        let contacts: Vec<&Record> = steps.iter().filter_map(|t| t.contact.as_ref()).collect();
        let opened: Vec<&Record> = steps
            .iter()
            .filter_map(|t| t.opened.as_ref())
            .filter_map(|c| finals.get(&c.id))
            .collect();
        let messages: Vec<&Record> = steps.iter().map(|t| &t.msg).collect();
        let mut script = Script::new(self.backend() == Backend::Sqlite);
        let mut docs = Vec::new();
        for (ty, records) in [(ObjectType::Contact, &contacts), (CONVERSATION, &opened), (MESSAGE, &messages)] {
            let rows = records.iter().map(|r| self.row_args(ty, r)).collect();
            script.insert_rows(ty.table(), &format!("workspace_id, {}", columns(ty)), rows);
            if ty.is_searchable() {
                docs.extend(records.iter().map(|r| {
                    let (title, body) = r.search_text(ty);
                    args![self.ws, ty.name(), &r.id, title, body]
                }));
            }
        }
        script.insert_rows("search_docs", "workspace_id, object_type, object_id, title, body", docs);
        // A sender's id may still name a contact deleted since: it names theirs now.
        // A run binds each id once (a bound id is known to the rest of the run).
        let inbox_id = threads.inbox.id.as_str();
        let sources = steps
            .iter()
            .filter_map(|t| t.bound.as_ref())
            .flat_map(|(contact, sources)| sources.iter().map(move |s| args![self.ws, inbox_id, s, contact]))
            .collect();
        script.upsert_rows(
            "inbox_contacts",
            "workspace_id, inbox_id, source_id, contact_id",
            sources,
            " ON CONFLICT (inbox_id, source_id) DO UPDATE SET contact_id = excluded.contact_id",
        );
        w.run_script(script).await
    }

    /// Reads what threading the run's messages needs, in a statement for each of:
    /// the external ids the inbox holds among those wanted, the contacts the senders'
    /// ids name, the workspace's contacts with the addresses of senders the inbox
    /// does not know, those contacts' unresolved conversations, and the conversations
    /// answered or named.
    pub(super) async fn read_threads(&self, w: &mut WriteTx, inbox: Record, wanted: Wanted<'_>) -> Result<Threads> {
        let inbox_id = inbox.id.clone();
        let inbox_id = inbox_id.as_str();
        let mut threads = Threads {
            inbox,
            threads_of: HashMap::new(),
            contact_of: HashMap::new(),
            by_email: HashMap::new(),
            convs: HashMap::new(),
            open: HashMap::new(),
            opened: HashMap::new(),
        };
        let ext: Vec<&str> = wanted.own.iter().chain(&wanted.answered).copied().collect();
        if !ext.is_empty() {
            let mut sql = Sql::new("SELECT external_id, conversation_id FROM messages WHERE inbox_id = ");
            sql.arg(inbox_id).push(" AND external_id IN (");
            list(&mut sql, &ext);
            for row in sql.query().fetch_all(&mut *w.tx).await? {
                threads.threads_of.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        if !wanted.sources.is_empty() {
            let sources: Vec<&str> = wanted.sources.iter().map(String::as_str).collect();
            // A contact deleted since is not found, and made again.
            let mut sql = Sql::new("SELECT ic.source_id, ic.contact_id FROM inbox_contacts ic JOIN contacts c ON c.id = ic.contact_id AND c.workspace_id = ic.workspace_id WHERE ic.inbox_id = ");
            sql.arg(inbox_id).push(" AND ic.source_id IN (");
            list(&mut sql, &sources);
            for row in sql.query().fetch_all(&mut *w.tx).await? {
                threads.contact_of.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        self.read_by_email(w, &wanted, &mut threads).await?;
        let mut contacts: HashSet<&str> = threads.contact_of.values().map(String::as_str).collect();
        contacts.extend(threads.by_email.values().flatten().map(String::as_str));
        let mut convs: Vec<Record> = Vec::new();
        if !contacts.is_empty() {
            let contacts: Vec<&str> = contacts.into_iter().collect();
            // Each contact's newest `THREAD_BY_SUBJECT`, as a message alone looks at: a
            // sender with thousands open (an alerting system) costs no more than that.
            let mut sql = Sql::new(format!(
                "SELECT {} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY contact_id ORDER BY created_at DESC) AS newest FROM conversations WHERE workspace_id = ",
                columns(CONVERSATION)
            ));
            sql.arg(self.ws)
                .push(" AND inbox_id = ")
                .arg(inbox_id)
                .push(" AND status <> 'resolved' AND contact_id IN (");
            list(&mut sql, &contacts);
            sql.push(&format!(") AS open WHERE newest <= {THREAD_BY_SUBJECT}"));
            for row in sql.query().fetch_all(&mut *w.tx).await? {
                convs.push(decode(CONVERSATION, &row)?);
            }
        }
        // Sorted here, not by the statement: an ORDER BY would lead the planner to
        // walk the workspace's conversations in that order instead of looking each
        // contact up. A contact's newest is the conversation a message threads into.
        convs.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        for conv in convs {
            let contact = conv.text("contact_id").unwrap_or_default().to_string();
            threads.open.entry(contact).or_default().push(conv.id.clone());
            threads.convs.insert(conv.id.clone(), conv);
        }
        let answered: HashSet<&str> = wanted.answered.iter().copied().collect();
        let mut named: Vec<&str> = threads
            .threads_of
            .iter()
            .filter(|(ext, _)| answered.contains(ext.as_str()))
            .map(|(_, conv)| conv.as_str())
            .chain(wanted.conversations.iter().copied())
            .filter(|id| !threads.convs.contains_key(*id))
            .collect();
        named.sort_unstable();
        named.dedup();
        if !named.is_empty() {
            let mut sql = Sql::new(format!("SELECT {} FROM conversations WHERE workspace_id = ", columns(CONVERSATION)));
            sql.arg(self.ws).push(" AND id IN (");
            list(&mut sql, &named);
            let rows = sql.query().fetch_all(&mut *w.tx).await?;
            for row in rows {
                let conv = decode(CONVERSATION, &row)?;
                threads.convs.insert(conv.id.clone(), conv);
            }
        }
        Ok(threads)
    }

    /// For each sender's address the inbox knows no one by: the workspace's oldest
    /// contact with it, looked up for all of them in one pass over the contacts (as
    /// [`Scoped::inbound_contact`] does for one).
    async fn read_by_email(&self, w: &mut WriteTx, wanted: &Wanted<'_>, threads: &mut Threads) -> Result<()> {
        let unknown: Vec<&str> = wanted
            .sources
            .iter()
            .filter(|s| !threads.contact_of.contains_key(*s))
            .filter_map(|s| s.strip_prefix("email:"))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut sql = Sql::new("SELECT id, emails FROM contacts WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND (");
        for (i, email) in unknown.iter().enumerate() {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push("emails LIKE ")
                .arg(format!("%\"{}\"%", like_literal(email)))
                .push(" ESCAPE '\\'");
        }
        sql.push(") ORDER BY created_at");
        let rows = sql.query().fetch_all(&mut *w.tx).await?;
        for email in unknown {
            let quoted = format!("\"{email}\"");
            let mut found = None;
            for row in &rows {
                let emails: Option<String> = row.try_get(1)?;
                if emails.is_some_and(|e| e.to_lowercase().contains(&quoted)) {
                    found = Some(row.try_get::<String, _>(0)?);
                    break;
                }
            }
            threads.by_email.insert(email.to_string(), found);
        }
        Ok(())
    }

    /// Writes each conversation the run changed as the run left it, in one statement
    /// per `CHUNK`, each checked against the version the run read.
    async fn update_threaded(&self, w: &mut WriteTx, steps: &[Threaded], threads: &Threads) -> Result<()> {
        let mut read: HashMap<&str, i64> = HashMap::new();
        // Those the run opened are inserted as it left them.
        for t in steps
            .iter()
            .filter(|t| t.after.is_some() && !threads.opened.contains_key(&t.before.id))
        {
            read.entry(t.before.id.as_str()).or_insert(t.before.version);
        }
        let finals = &threads.convs;
        let mut written: Vec<(&str, i64)> = read.into_iter().collect();
        written.sort_unstable();
        for chunk in written.chunks(CHUNK) {
            let mut sql =
                Sql::new("UPDATE conversations SET version = v.nv, updated_at = v.ua, last_message_at = v.lm, waiting_since = v.ws FROM ");
            let rows = chunk.iter().map(|(id, version)| {
                let c = &finals[*id];
                let int = |name: &str| match c.get(name) {
                    FieldValue::Int(n) => Arg::from(*n),
                    _ => Arg::Int(None),
                };
                vec![
                    Arg::from(*id),
                    Arg::from(*version),
                    Arg::from(c.version),
                    Arg::from(c.updated_at),
                    int(FOLLOWED[0]),
                    int(FOLLOWED[1]),
                ]
            });
            derived_table(&mut sql, rows, &ROW_COLUMNS);
            sql.push(" WHERE conversations.workspace_id = ").arg(self.ws);
            sql.push(" AND conversations.id = v.id AND conversations.version = v.ov");
            let done = sql.on(self.backend()).query().execute(&mut *w.tx).await?.rows_affected();
            if done != chunk.len() as u64 {
                // Every write of an inbox passes its one writer, so this is a bug or a
                // hand edit; the caller runs the messages one by one, which re-reads.
                return Err(StoreError::Other(anyhow::anyhow!(
                    "{} of {} conversations changed outside the run",
                    chunk.len() as u64 - done,
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::Persister;
    use crate::store::testing::fresh_store;
    use crate::store::Store;

    #[test]
    fn a_like_literal_matches_only_itself() {
        assert_eq!(like_literal("john_doe%1@x.test"), "john\\_doe\\%1@x.test");
        assert_eq!(like_literal("a\\b"), "a\\\\b");
    }

    fn post(from: &str, text: &str, ext: &str, inbox_id: &str) -> Inbound {
        Inbound {
            inbox_id: inbox_id.to_string(),
            source_id: Some(from.to_string()),
            email: None,
            name: None,
            subject: None,
            text: text.to_string(),
            external_id: Some(ext.to_string()),
            html: None,
            attachments: None,
            available: Vec::new(),
        }
    }

    /// Queues the messages before the persister runs, so that they reach it as one
    /// batch, each caused by `m<its index>`, and waits for their answers.
    async fn one_batch(store: &Store, ws: &str, msgs: Vec<Inbound>) -> Vec<(Value, Vec<crate::domain::Event>)> {
        let persister = Persister::start(store.clone());
        let pending: Vec<_> = msgs
            .into_iter()
            .enumerate()
            .map(|(n, m)| {
                let actor = format!("inbox:{}", m.inbox_id);
                persister
                    .submit_inbound(Some(format!("m{n}")), None, ws.to_string(), actor, m)
                    .unwrap()
            })
            .collect();
        let mut answers = Vec::new();
        for (n, p) in pending.into_iter().enumerate() {
            answers.push(p.outcome().await.unwrap_or_else(|e| panic!("message {n}: {e}")));
        }
        answers
    }

    #[tokio::test]
    async fn messages_queued_together_thread_in_order_each_with_its_own_answer_events_and_audit_entries() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let (store, dir, ws) = fresh_store("inbound").await;
                let s = store.scoped(&ws);
                let input = json!({"name": "Support", "channel": "api"});
                let c = ObjectType::Inbox.parse_input(input.as_object().unwrap(), true, &[]).unwrap();
                let mut w = store.write().await.unwrap();
                let inbox = s.create_in(&mut w, ObjectType::Inbox, c, "user:u").await.unwrap().id;
                w.commit().await.unwrap();
                // Two senders known, each with an open conversation.
                let first = one_batch(&store, &ws, vec![post("c1", "hello", "e0", &inbox)]).await;
                one_batch(&store, &ws, vec![post("c2", "hi", "e00", &inbox)]).await;
                let audits = || async {
                    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log")
                        .fetch_one(store.pool())
                        .await
                        .unwrap()
                };
                let audits_before = audits().await;

                let answers = one_batch(
                    &store,
                    &ws,
                    vec![
                        post("c1", "a", "e1", &inbox),
                        post("c2", "b", "e2", &inbox),
                        post("c1", "cherries", "e3", &inbox),
                        // Posted again: answered as it was, alone.
                        post("c1", "a again", "e1", &inbox),
                        // A new sender: a contact and a conversation of their own.
                        post("c3", "new here", "e4", &inbox),
                        post("c2", "d", "e5", &inbox),
                        post("c3", "still here", "e6", &inbox),
                    ],
                )
                .await;

                let conv = |n: usize| answers[n].0["conversation"].clone();
                let msg = |n: usize| answers[n].0["message"].clone();
                let c1 = first[0].0["conversation"]["id"].clone();
                for n in [0, 2] {
                    assert_eq!(conv(n)["id"], c1, "message {n} threads into c1's conversation");
                }
                assert_eq!(conv(1)["id"], conv(5)["id"]);
                assert_ne!(conv(1)["id"], c1);
                assert!(conv(2)["version"].as_i64() >= conv(0)["version"].as_i64());
                assert!(conv(0)["version"].as_i64() > first[0].0["conversation"]["version"].as_i64());
                assert_eq!(answers[3].0["duplicate"], true);
                assert_eq!(msg(3)["id"], msg(0)["id"]);
                assert_eq!(msg(3)["text"], "a");
                assert!(
                    ![c1.clone(), conv(1)["id"].clone()].contains(&conv(4)["id"]),
                    "a new sender opens a conversation"
                );
                assert_eq!(conv(4)["number"], 3, "numbered after the two before");
                assert_eq!(conv(6)["id"], conv(4)["id"], "and their next message threads into it");
                let contact = s.get(ObjectType::Contact, conv(4)["contact_id"].as_str().unwrap()).await.unwrap();
                assert_eq!(contact.text("name"), Some("c3"));
                for n in [0, 1, 2, 4, 5, 6] {
                    assert_eq!(answers[n].0["duplicate"], false);
                    assert_eq!(msg(n)["direction"], "incoming");
                    assert_eq!(msg(n)["conversation_id"], conv(n)["id"]);
                }

                // Each new message made its event, under its cause, in the order queued,
                // with no gap in the inbox's seqs; the duplicate made none.
                let events = store.events_after(&format!("inbox:{inbox}"), 0, 100).await.unwrap();
                let created: Vec<_> = events
                    .iter()
                    .filter(|e| e.kind == "message.created")
                    .filter_map(|e| e.cause.clone())
                    .collect();
                assert_eq!(created, ["m0", "m0", "m0", "m1", "m2", "m4", "m5", "m6"]);
                assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1), "seqs have no gap");
                assert!(answers[3].1.is_empty());
                for n in [0, 1, 2, 5] {
                    let evs = &answers[n].1;
                    assert_eq!(evs[0].data["record"], msg(n));
                    if let Some(updated) = evs.get(1) {
                        assert_eq!(updated.data["record"], conv(n));
                    }
                }
                // A message and its conversation's change are audited each.
                let threaded: usize = [0, 1, 2, 5].iter().map(|n| answers[*n].1.len()).sum();
                assert!(audits().await - audits_before >= threaded as i64);

                // What is stored is what was answered last.
                for n in [2, 5, 6] {
                    let id = conv(n)["id"].as_str().unwrap().to_string();
                    let stored = s.get(CONVERSATION, &id).await.unwrap().to_json(CONVERSATION);
                    assert_eq!(stored, conv(n));
                }
                for n in [0, 1, 2, 4, 5, 6] {
                    let stored = s.get(MESSAGE, msg(n)["id"].as_str().unwrap()).await.unwrap();
                    assert_eq!(stored.to_json(MESSAGE), msg(n));
                }
                let found = |word: &str| {
                    let s = store.scoped(&ws);
                    let word = word.to_string();
                    async move { s.search(&[word], &[MESSAGE], 10).await.unwrap() }
                };
                assert_eq!(found("cherries").await.len(), 1, "a threaded message is searchable");
                assert!(found("again").await.is_empty(), "the duplicate was not written");
                store.close().await;
                let _ = std::fs::remove_dir_all(dir);
            })
            .await;
    }
}
