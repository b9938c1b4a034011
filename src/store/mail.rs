//! The e-mail channel's state: an inbox's mail servers (passwords sealed by the caller),
//! where its sync stands, the outbox of replies waiting for SMTP, and taking fetched
//! mail into conversations: dedupe by Message-ID, threading by the ids a mail answers
//! (then Shoal's conversation token, then sender and subject), contacts matched or made,
//! automatic mail that never opens a conversation, and bounces that fail the reply
//! they report on. Taking mail runs inside the write of the inbox's actor.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{AnyConnection, Row};

use super::inbound::{Inbound, Sender, Threaded, Threads, Wanted};
use super::records::{columns, decode, invalid};
use super::{args, insert, list, now_ms, Result, Scoped, Sql, Store, StoreError, WriteTx};
use crate::domain::mail::{conversation_of, normalize_subject, outgoing_message_id};
use crate::domain::{Changes, EmailAddress, FieldValue, ObjectType, Record, Topic};

const CONVERSATION: ObjectType = ObjectType::Conversation;
const MESSAGE: ObjectType = ObjectType::Message;

/// An e-mail inbox's servers, as stored (passwords sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailAccount {
    pub inbox_id: String,
    pub workspace_id: String,
    pub imap_host: String,
    pub imap_port: i64,
    pub imap_security: String,
    pub imap_username: String,
    pub imap_password: String,
    pub imap_folder: String,
    pub import_days: i64,
    pub poll_secs: i64,
    pub smtp_host: String,
    pub smtp_port: i64,
    pub smtp_security: String,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    pub from_name: Option<String>,
    pub from_address: String,
    pub uid_validity: Option<i64>,
    pub last_uid: i64,
    pub updated_at: i64,
}

const ACCOUNT_COLUMNS: &str = "inbox_id, workspace_id, imap_host, imap_port, imap_security, imap_username, imap_password, imap_folder, import_days, poll_secs, smtp_host, smtp_port, smtp_security, smtp_username, smtp_password, from_name, from_address, uid_validity, last_uid, updated_at";

fn account(row: &sqlx::any::AnyRow) -> Result<MailAccount> {
    Ok(MailAccount {
        inbox_id: row.try_get(0)?,
        workspace_id: row.try_get(1)?,
        imap_host: row.try_get(2)?,
        imap_port: row.try_get(3)?,
        imap_security: row.try_get(4)?,
        imap_username: row.try_get(5)?,
        imap_password: row.try_get(6)?,
        imap_folder: row.try_get(7)?,
        import_days: row.try_get(8)?,
        poll_secs: row.try_get(9)?,
        smtp_host: row.try_get(10)?,
        smtp_port: row.try_get(11)?,
        smtp_security: row.try_get(12)?,
        smtp_username: row.try_get(13)?,
        smtp_password: row.try_get(14)?,
        from_name: row.try_get(15)?,
        from_address: row.try_get(16)?,
        uid_validity: row.try_get(17)?,
        last_uid: row.try_get(18)?,
        updated_at: row.try_get(19)?,
    })
}

/// A mail fetched from the inbox's folder, parsed, its attachments already kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mail {
    /// Its UID in the folder (under the batch's UIDVALIDITY).
    pub uid: i64,
    pub message_id: String,
    /// The ids it answers, nearest first.
    pub references: Vec<String>,
    pub from: Option<String>,
    pub from_name: Option<String>,
    /// Where answers go: its Reply-To, else its sender.
    #[serde(default)]
    pub reply_to: Option<String>,
    pub subject: Option<String>,
    pub text: String,
    pub quoted: Option<String>,
    pub html: Option<String>,
    /// Kept attachments, described (`[{"name", "content_type", "size", "sha256"}]`).
    pub attachments: Option<Value>,
    /// `personal`, `automatic` or `bounce`.
    pub kind: String,
    /// For a bounce: the failed mail's ids, who could not be reached and why.
    #[serde(default)]
    pub bounced_ids: Vec<String>,
    pub bounce_recipient: Option<String>,
    pub bounce_reason: Option<String>,
}

/// Mails taken together, in UID order, from one folder under one UIDVALIDITY.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MailBatch {
    pub inbox_id: String,
    pub uid_validity: i64,
    pub mails: Vec<Mail>,
    /// Members online when the batch was fetched: who new conversations may be
    /// assigned to when the inbox assigns automatically.
    #[serde(default)]
    pub available: Vec<String>,
    /// Taken one mail at a time, not in runs: how a batch whose run failed is tried
    /// again.
    #[serde(default)]
    pub alone: bool,
}

/// The most ids a mail answers that threading looks at (nearest first).
const MAX_REFERENCES: usize = 100;

/// Of a sender's unresolved conversations, the newest this many are matched by
/// subject.
pub(super) const THREAD_BY_SUBJECT: usize = 50;

/// What became of a mail taken into an inbox (the index of its count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Took {
    Taken = 0,
    Duplicate = 1,
    LeftOut = 2,
}

/// What a run makes of a mail it can take.
enum MailStep {
    Taken(Box<Threaded>),
    Duplicate,
    LeftOut,
}

/// A mail as a message from its sender to the inbox.
fn inbound_of(inbox_id: &str, mail: &Mail, available: &[String]) -> Inbound {
    Inbound {
        inbox_id: inbox_id.to_string(),
        source_id: None,
        email: mail.from.as_deref().and_then(|f| EmailAddress::parse(f).ok()),
        name: mail.from_name.clone(),
        subject: mail.subject.clone(),
        text: mail.text.clone(),
        external_id: Some(mail.message_id.clone()),
        html: mail.html.clone(),
        attachments: mail.attachments.clone(),
        available: available.to_vec(),
    }
}

/// The message a mail is written as, from `contact`: with its quoted history, and an
/// automatic mail as a line.
fn mail_message(mail: &Mail, sender: &Inbound, contact: &str) -> Changes {
    let mut msg = sender.message(contact);
    if let Some(q) = &mail.quoted {
        msg.set(MESSAGE, "quoted", FieldValue::Text(q.clone()));
    }
    if let Some(to) = mail.reply_to.as_ref().or(mail.from.as_ref()) {
        msg.set(MESSAGE, "reply_to", FieldValue::Text(to.clone()));
    }
    if mail.kind == "automatic" {
        // Kept in its conversation for the agents to see, as a line that changes
        // nothing: no status, no waiting time, no SLA.
        msg.set(MESSAGE, "kind", FieldValue::Text("activity".into()));
    }
    msg
}

impl Threads {
    /// Threads a mail as [`Scoped::mail_in`] and [`Scoped::thread_of`] do, from what
    /// the run read and made so far. `None` leaves it to be taken alone.
    fn thread_mail(&mut self, mail: &Mail, m: &Inbound, actor: &str, now: i64) -> Option<MailStep> {
        if mail.kind == "bounce" {
            return None;
        }
        if self.threads_of.contains_key(&mail.message_id) {
            return Some(MailStep::Duplicate);
        }
        let into = self.mail_thread(mail, m.email.as_ref());
        if into.is_none() && (mail.kind == "automatic" || m.email.is_none()) {
            return Some(MailStep::LeftOut);
        }
        let sender = match (&m.email, &into) {
            (Some(_), _) => self.sender(m, now)?,
            (None, Some(conv)) => Sender::of(self.convs.get(conv)?),
            (None, None) => return Some(MailStep::LeftOut),
        };
        let changes = mail_message(mail, m, &sender.id);
        self.step(m, sender, into, changes, actor, now)
            .map(|t| MailStep::Taken(Box::new(t)))
    }

    /// The conversation a mail continues, among those the run holds: the one holding
    /// a mail it answers, then one Shoal's own Message-ID names, then the sender's
    /// newest unresolved one with the same subject.
    fn mail_thread(&self, mail: &Mail, from: Option<&EmailAddress>) -> Option<String> {
        let answered = || mail.references.iter().take(MAX_REFERENCES);
        if let Some(conv) = answered()
            .filter_map(|id| self.threads_of.get(id))
            .find(|conv| self.convs.contains_key(*conv))
        {
            return Some(conv.clone());
        }
        if let Some(conv) = answered().filter_map(|id| conversation_of(id)).find(|conv| {
            self.convs
                .get(*conv)
                .is_some_and(|c| c.text("inbox_id") == Some(self.inbox.id.as_str()))
        }) {
            return Some(conv.to_string());
        }
        let subject = normalize_subject(mail.subject.as_deref()?);
        let contact = self.contact_of.get(&format!("email:{}", from?.as_str()))?;
        self.open
            .get(contact)?
            .iter()
            .take(THREAD_BY_SUBJECT)
            .find(|id| self.convs.get(*id).and_then(|c| c.text("subject")).map(normalize_subject) == Some(subject.clone()))
            .cloned()
    }
}

/// A reply waiting for SMTP, as the sender finds it.
#[derive(Debug, Clone)]
pub struct Queued {
    pub message_id: String,
    pub workspace_id: String,
    pub inbox_id: String,
    pub attempts: i64,
}

impl Store {
    /// Runs one statement on the writer, as its own transaction: on SQLite a write
    /// from another connection would meet the writer's open transaction and fail as
    /// busy.
    async fn write_one(&self, sql: Sql) -> Result<u64> {
        let mut w = self.write().await?;
        let n = sql.query().execute(&mut *w.tx).await?.rows_affected();
        w.commit().await?;
        Ok(n)
    }

    /// Every e-mail inbox that has its servers configured, with its workspace.
    pub async fn mail_accounts(&self) -> Result<Vec<MailAccount>> {
        let cols: Vec<String> = ACCOUNT_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect();
        let sql = Sql::new(format!(
            "SELECT {} FROM mail_accounts a JOIN inboxes i ON i.id = a.inbox_id AND i.workspace_id = a.workspace_id WHERE i.channel = 'email'",
            cols.join(", ")
        ));
        sql.query().fetch_all(self.pool()).await?.iter().map(account).collect()
    }

    /// One e-mail inbox's servers and sync state.
    pub async fn mail_account(&self, inbox_id: &str) -> Result<Option<MailAccount>> {
        let mut sql = Sql::new(format!("SELECT {ACCOUNT_COLUMNS} FROM mail_accounts WHERE inbox_id = "));
        sql.arg(inbox_id);
        match sql.query().fetch_optional(self.pool()).await? {
            Some(row) => Ok(Some(account(&row)?)),
            None => Ok(None),
        }
    }

    /// The folder's UIDVALIDITY changed (or is first seen): UIDs start over, and what
    /// was taken is recognised again by Message-ID.
    pub async fn restart_mail_sync(&self, inbox_id: &str, uid_validity: i64) -> Result<()> {
        let mut sql = Sql::new("UPDATE mail_accounts SET last_uid = 0, uid_validity = ");
        sql.arg(uid_validity).push(" WHERE inbox_id = ").arg(inbox_id);
        self.write_one(sql).await.map(|_| ())
    }

    /// Moves the folder's sync past `uid` (mail there was none to take, or none to
    /// keep), under the UIDVALIDITY it was read with.
    pub async fn advance_mail_sync(&self, inbox_id: &str, uid_validity: i64, uid: i64) -> Result<()> {
        let mut sql = Sql::new("UPDATE mail_accounts SET last_uid = ");
        sql.arg(uid)
            .push(" WHERE inbox_id = ")
            .arg(inbox_id)
            .push(" AND uid_validity = ")
            .arg(uid_validity)
            .push(" AND last_uid < ")
            .arg(uid);
        self.write_one(sql).await.map(|_| ())
    }

    /// Replies due to be sent (or whose attempt was left `sending` longer than
    /// `stale_ms` ago), oldest first.
    pub async fn due_mail(&self, now: i64, stale_ms: i64, limit: i64) -> Result<Vec<Queued>> {
        let mut sql =
            Sql::new("SELECT message_id, workspace_id, inbox_id, attempts FROM mail_outbox WHERE (state = 'queued' AND next_at <= ");
        sql.arg(now)
            .push(") OR (state = 'sending' AND claimed_at <= ")
            .arg(now - stale_ms)
            .push(") ORDER BY next_at LIMIT ")
            .arg(limit);
        sql.query()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok(Queued {
                    message_id: r.try_get(0)?,
                    workspace_id: r.try_get(1)?,
                    inbox_id: r.try_get(2)?,
                    attempts: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// When the next queued reply falls due, if any.
    pub async fn next_mail_due(&self) -> Result<Option<i64>> {
        let sql = Sql::new("SELECT MIN(next_at) FROM mail_outbox WHERE state = 'queued'");
        Ok(sql.query().fetch_one(self.pool()).await?.try_get(0)?)
    }

    /// Takes a reply for sending: true for exactly one taker, so that two nodes (or a
    /// node and itself) never send it at once.
    pub async fn claim_mail(&self, message_id: &str, now: i64, stale_ms: i64) -> Result<bool> {
        let mut sql = Sql::new("UPDATE mail_outbox SET state = 'sending', attempts = attempts + 1, claimed_at = ");
        sql.arg(now)
            .push(" WHERE message_id = ")
            .arg(message_id)
            .push(" AND ((state = 'queued' AND next_at <= ")
            .arg(now)
            .push(") OR (state = 'sending' AND claimed_at <= ")
            .arg(now - stale_ms)
            .push("))");
        Ok(self.write_one(sql).await? == 1)
    }

    /// Where a taken reply ended: `sent`, `failed`, or `queued` again at `next_at`.
    pub async fn settle_mail(&self, message_id: &str, state: &str, error: Option<&str>, next_at: i64) -> Result<()> {
        let mut sql = Sql::new("UPDATE mail_outbox SET state = ");
        sql.arg(state)
            .push(", error = ")
            .arg(error.map(str::to_string))
            .push(", next_at = ")
            .arg(next_at)
            .push(", claimed_at = NULL WHERE message_id = ")
            .arg(message_id);
        self.write_one(sql).await.map(|_| ())
    }
}

impl Scoped<'_> {
    /// Saves an e-mail inbox's servers (passwords already sealed). Changing the
    /// mailbox or folder starts its sync over; anything else keeps where it stands.
    pub async fn set_mail_account(&self, a: &MailAccount) -> Result<()> {
        let mut w = self.begin().await?;
        let inbox = self
            .fetch(&mut w.tx, ObjectType::Inbox, &a.inbox_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if inbox.text("channel") != Some("email") {
            return Err(invalid("inbox_id", "only an inbox of channel 'email' has mail servers"));
        }
        let mut sql = Sql::new("SELECT imap_host, imap_port, imap_username, imap_folder FROM mail_accounts WHERE inbox_id = ");
        sql.arg(&a.inbox_id);
        let same_mailbox = match sql.query().fetch_optional(&mut *w.tx).await? {
            Some(r) => {
                let (h, p, u, f): (String, i64, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
                h == a.imap_host && p == a.imap_port && u == a.imap_username && f == a.imap_folder
            }
            None => false,
        };
        let mut sql = Sql::new("DELETE FROM mail_accounts WHERE inbox_id = ");
        sql.arg(&a.inbox_id);
        sql.query().execute(&mut *w.tx).await?;
        let (validity, last) = if same_mailbox { (a.uid_validity, a.last_uid) } else { (None, 0) };
        let sql = insert(
            "mail_accounts",
            ACCOUNT_COLUMNS,
            args![
                &a.inbox_id,
                self.ws,
                &a.imap_host,
                a.imap_port,
                &a.imap_security,
                &a.imap_username,
                &a.imap_password,
                &a.imap_folder,
                a.import_days,
                a.poll_secs,
                &a.smtp_host,
                a.smtp_port,
                &a.smtp_security,
                a.smtp_username.clone(),
                a.smtp_password.clone(),
                a.from_name.clone(),
                &a.from_address,
                validity,
                last,
                now_ms(),
            ],
        );
        sql.query().execute(&mut *w.tx).await?;
        w.commit().await?;
        Ok(())
    }

    /// An e-mail inbox's servers, if set.
    pub async fn mail_account_of(&self, inbox_id: &str) -> Result<Option<MailAccount>> {
        let mut sql = Sql::new(format!("SELECT {ACCOUNT_COLUMNS} FROM mail_accounts WHERE workspace_id = "));
        sql.arg(self.ws).push(" AND inbox_id = ").arg(inbox_id);
        match sql.query().fetch_optional(self.store.pool()).await? {
            Some(row) => Ok(Some(account(&row)?)),
            None => Ok(None),
        }
    }

    /// Says how an inbox's channel is doing (an `inbox.updated` event when it
    /// changes); turning `failing` tells the workspace's owners and admins.
    pub(crate) async fn set_channel_status_in(
        &self,
        w: &mut WriteTx,
        inbox_id: &str,
        status: &str,
        detail: &str,
        actor: &str,
    ) -> Result<Value> {
        let inbox = self
            .fetch(&mut w.tx, ObjectType::Inbox, inbox_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if inbox.text("channel_status") == Some(status) && inbox.text("channel_detail") == Some(detail) {
            return Ok(inbox.to_json(ObjectType::Inbox));
        }
        let was_failing = inbox.text("channel_status") == Some("failing");
        let mut c = Changes::default();
        c.set(ObjectType::Inbox, "channel_status", FieldValue::Text(status.to_string()));
        c.set(
            ObjectType::Inbox,
            "channel_detail",
            FieldValue::Text(detail.chars().take(1000).collect()),
        );
        let after = self.update_from(w, ObjectType::Inbox, inbox, None, c, actor, true).await?;
        if status == "failing" && !was_failing {
            let mut sql = Sql::new("SELECT user_id FROM memberships WHERE workspace_id = ");
            sql.arg(self.ws).push(" AND role IN ('owner', 'admin')");
            let admins: Vec<String> = sql
                .query()
                .fetch_all(&mut *w.tx)
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<std::result::Result<_, _>>()?;
            let now = now_ms();
            for user in admins {
                let topic = Topic::User {
                    workspace_id: self.ws.to_string(),
                    user_id: user,
                };
                let note = json!({"object_type": "inbox", "id": inbox_id, "name": after.text("name"), "detail": detail});
                w.append_event(self.ws, &topic.key(), "channel_failing", note, actor, now).await?;
            }
        }
        Ok(after.to_json(ObjectType::Inbox))
    }

    /// A reply to the customer in an e-mail inbox: it gets a Message-ID of Shoal's (its
    /// external id) before it is written, and its place in the outbox after, both in
    /// the reply's own transaction.
    pub(super) async fn outgoing_mail_id(&self, conn: &mut AnyConnection, conv: &Record, changes: &mut Changes) -> Result<bool> {
        let inbox_id = conv.text("inbox_id").unwrap_or_default();
        let mut sql =
            Sql::new("SELECT i.channel, a.from_address FROM inboxes i LEFT JOIN mail_accounts a ON a.inbox_id = i.id WHERE i.id = ");
        sql.arg(inbox_id);
        let Some(row) = sql.query().fetch_optional(&mut *conn).await? else {
            return Ok(false);
        };
        let (channel, from): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
        if channel != "email" {
            return Ok(false);
        }
        let from = from
            .and_then(|f| EmailAddress::parse(&f).ok())
            .or_else(|| EmailAddress::parse("mail@shoal.invalid").ok());
        let Some(from) = from else { return Ok(false) };
        let random = uuid::Uuid::new_v4().simple().to_string();
        changes.set(
            MESSAGE,
            "external_id",
            FieldValue::Text(outgoing_message_id(&random, &conv.id, &from)),
        );
        Ok(true)
    }

    pub(super) async fn queue_mail(&self, conn: &mut AnyConnection, msg: &Record) -> Result<()> {
        let now = now_ms();
        let sql = insert(
            "mail_outbox",
            "message_id, workspace_id, inbox_id, state, attempts, next_at, created_at",
            args![&msg.id, self.ws, msg.text("inbox_id").unwrap_or_default(), "queued", 0i64, now, now],
        );
        sql.query().execute(conn).await?;
        Ok(())
    }

    /// Takes a batch of fetched mail into the inbox, in order, and moves the folder's
    /// sync past it in the same transaction. Answers how many were taken, already
    /// there, or left out (automatic mail answering nothing, bounces of unknown mail),
    /// and how many of them were taken alone.
    ///
    /// Mail is taken in runs, as the API channel's messages are (see
    /// [`Scoped::inbound_run`]): what a run needs is read in a few statements, its
    /// mails threaded in memory in order and written as a set. A mail a run cannot
    /// take (a bounce, an answer that reopens a conversation, one that opens a
    /// conversation in an inbox that assigns or counts SLA targets) is taken alone,
    /// and the next run starts after it.
    pub(crate) async fn mails_in(&self, w: &mut WriteTx, batch: MailBatch, actor: &str) -> Result<Value> {
        let runs = !batch.alone;
        self.take_mails(w, batch, actor, runs).await
    }

    async fn take_mails(&self, w: &mut WriteTx, batch: MailBatch, actor: &str, runs: bool) -> Result<Value> {
        let inbox = self
            .fetch(&mut w.tx, ObjectType::Inbox, &batch.inbox_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if inbox.text("channel") != Some("email") {
            return Err(invalid("inbox_id", "only an inbox of channel 'email' takes mail"));
        }
        let (mut counts, mut alone) = ([0; 3], 0);
        let mut rest = &batch.mails[..];
        while !rest.is_empty() {
            if runs {
                let took = self.mail_run(w, &inbox, rest, &batch.available, actor).await?;
                for t in &took {
                    counts[*t as usize] += 1;
                }
                rest = &rest[took.len()..];
            }
            if let Some((mail, after)) = rest.split_first() {
                let took = self.mail_alone(w, &inbox, mail, &batch.available, actor).await?;
                counts[took as usize] += 1;
                alone += 1;
                rest = after;
            }
        }
        let last_uid = batch.mails.iter().map(|m| m.uid).max().unwrap_or(0);
        let mut sql = Sql::new("UPDATE mail_accounts SET last_uid = ");
        sql.arg(last_uid)
            .push(" WHERE inbox_id = ")
            .arg(&batch.inbox_id)
            .push(" AND uid_validity = ")
            .arg(batch.uid_validity)
            .push(" AND last_uid < ")
            .arg(last_uid);
        sql.query().execute(&mut *w.tx).await?;
        let [taken, duplicates, left_out] = counts;
        Ok(json!({
            "taken": taken,
            "duplicates": duplicates,
            "left_out": left_out,
            "alone": alone,
            "last_uid": last_uid
        }))
    }

    /// Takes a prefix of `mails` as a set: the mails it could thread from one read of
    /// what they need, with what became of each. The first it could not is the
    /// caller's to take alone.
    async fn mail_run(&self, w: &mut WriteTx, inbox: &Record, mails: &[Mail], available: &[String], actor: &str) -> Result<Vec<Took>> {
        let senders: Vec<Inbound> = mails.iter().map(|m| inbound_of(&inbox.id, m, available)).collect();
        let answered: Vec<&str> = mails
            .iter()
            .flat_map(|m| m.references.iter().take(MAX_REFERENCES).map(String::as_str))
            .collect();
        let wanted = Wanted {
            own: mails.iter().map(|m| m.message_id.as_str()).collect(),
            conversations: answered.iter().copied().filter_map(conversation_of).collect(),
            answered,
            sources: senders.iter().flat_map(Inbound::sources).collect(),
        };
        let mut threads = self.read_threads(w, inbox.clone(), wanted).await?;
        let now = now_ms();
        let (mut took, mut steps) = (Vec::with_capacity(mails.len()), Vec::with_capacity(mails.len()));
        for (mail, m) in mails.iter().zip(&senders) {
            match threads.thread_mail(mail, m, actor, now) {
                Some(MailStep::Taken(t)) => {
                    steps.push(*t);
                    took.push(Took::Taken);
                }
                Some(MailStep::Duplicate) => took.push(Took::Duplicate),
                Some(MailStep::LeftOut) => took.push(Took::LeftOut),
                None => break,
            }
        }
        if steps.is_empty() {
            return Ok(took);
        }
        self.number_opened(w, &mut threads, &mut steps).await?;
        // Made while the store writes the rows, as in `inbound_run`.
        let notes = async { steps.iter().map(|t| self.step_notes(t, actor, now)).collect::<Vec<_>>() };
        let (written, notes) = futures_util::future::join(self.write_run(w, &steps, &threads), notes).await;
        written?;
        for (n, at) in notes.into_iter().flatten() {
            w.add_notes(self.ws, n, actor, at).await?;
        }
        Ok(took)
    }

    /// Takes one mail on its own.
    async fn mail_alone(&self, w: &mut WriteTx, inbox: &Record, mail: &Mail, available: &[String], actor: &str) -> Result<Took> {
        let mut sql = Sql::new("SELECT id FROM messages WHERE inbox_id = ");
        sql.arg(&inbox.id).push(" AND external_id = ").arg(&mail.message_id);
        if sql.query().fetch_optional(&mut *w.tx).await?.is_some() {
            return Ok(Took::Duplicate);
        }
        let took = if mail.kind == "bounce" {
            self.bounce_in(w, &inbox.id, mail, actor).await?
        } else {
            self.mail_in(w, inbox, mail, available, actor).await?
        };
        Ok(if took { Took::Taken } else { Took::LeftOut })
    }

    /// A person's or a machine's mail: threaded into its conversation, or opening one
    /// (a person's only). False when it was left out.
    async fn mail_in(&self, w: &mut WriteTx, inbox: &Record, mail: &Mail, available: &[String], actor: &str) -> Result<bool> {
        let sender = inbound_of(&inbox.id, mail, available);
        let found = self.thread_of(&mut w.tx, &inbox.id, mail, sender.email.as_ref()).await?;
        let automatic = mail.kind == "automatic";
        if found.is_none() && (automatic || sender.email.is_none()) {
            return Ok(false);
        }
        let contact = match (&sender.email, &found) {
            (Some(_), _) => self.inbound_contact(w, &sender, actor).await?,
            (None, Some(conv)) => conv.text("contact_id").unwrap_or_default().to_string(),
            (None, None) => return Ok(false),
        };
        let conversation = match found {
            Some(conv) => conv,
            None => {
                let mut c = sender.opening(inbox, &contact);
                if inbox.get("auto_assign") == &FieldValue::Bool(true) {
                    if let Some(agent) = self.next_assignee(&mut w.tx, inbox, available).await? {
                        c.set(CONVERSATION, "assignee_id", FieldValue::Text(agent));
                    }
                }
                self.create_in(w, CONVERSATION, c, actor).await?
            }
        };
        self.post_message_in(w, conversation, mail_message(mail, &sender, &contact), actor)
            .await?;
        Ok(true)
    }

    /// The conversation a mail continues: the one holding a mail it answers (by
    /// Message-ID, sent or received), then one Shoal's own Message-ID names, then the
    /// sender's unresolved conversation with the same subject.
    async fn thread_of(
        &self,
        conn: &mut AnyConnection,
        inbox_id: &str,
        mail: &Mail,
        from: Option<&EmailAddress>,
    ) -> Result<Option<Record>> {
        if !mail.references.is_empty() {
            let ids: Vec<&str> = mail.references.iter().map(String::as_str).take(MAX_REFERENCES).collect();
            let mut sql = Sql::new("SELECT external_id, conversation_id FROM messages WHERE inbox_id = ");
            sql.arg(inbox_id).push(" AND external_id IN (");
            list(&mut sql, &ids);
            let rows = sql.query().fetch_all(&mut *conn).await?;
            let mut found: Vec<(usize, String)> = Vec::new();
            for r in rows {
                let (ext, conv): (String, String) = (r.try_get(0)?, r.try_get(1)?);
                if let Some(pos) = ids.iter().position(|i| *i == ext) {
                    found.push((pos, conv));
                }
            }
            found.sort();
            for (_, conv) in found {
                if let Some(c) = self.fetch(conn, CONVERSATION, &conv).await? {
                    return Ok(Some(c));
                }
            }
            for id in &ids {
                if let Some(conv) = conversation_of(id) {
                    if let Some(c) = self.fetch(conn, CONVERSATION, conv).await? {
                        if c.text("inbox_id") == Some(inbox_id) {
                            return Ok(Some(c));
                        }
                    }
                }
            }
        }
        let (Some(from), Some(subject)) = (from, mail.subject.as_deref()) else {
            return Ok(None);
        };
        let subject = normalize_subject(subject);
        let mut sql = Sql::new(format!("SELECT {} FROM conversations WHERE workspace_id = ", columns(CONVERSATION)));
        sql.arg(self.ws)
            .push(" AND contact_id = (SELECT contact_id FROM inbox_contacts WHERE inbox_id = ")
            .arg(inbox_id)
            .push(" AND source_id = ")
            .arg(format!("email:{}", from.as_str()))
            .push(") AND inbox_id = ")
            .arg(inbox_id)
            .push(&format!(
                " AND status <> 'resolved' ORDER BY created_at DESC LIMIT {THREAD_BY_SUBJECT}"
            ));
        for row in sql.query().fetch_all(&mut *conn).await? {
            let conv = decode(CONVERSATION, &row)?;
            if conv.text("subject").map(normalize_subject) == Some(subject.clone()) {
                return Ok(Some(conv));
            }
        }
        Ok(None)
    }

    /// A bounce: the replies it reports on are marked failed with the server's reason,
    /// and a line in their conversation says so. False when it names no reply of
    /// this inbox's.
    async fn bounce_in(&self, w: &mut WriteTx, inbox_id: &str, mail: &Mail, actor: &str) -> Result<bool> {
        if mail.bounced_ids.is_empty() {
            return Ok(false);
        }
        let ids: Vec<&str> = mail.bounced_ids.iter().map(String::as_str).take(100).collect();
        let mut sql = Sql::new(format!("SELECT {} FROM messages WHERE inbox_id = ", columns(MESSAGE)));
        sql.arg(inbox_id).push(" AND direction = 'outgoing' AND external_id IN (");
        list(&mut sql, &ids);
        let failed: Vec<Record> = sql
            .query()
            .fetch_all(&mut *w.tx)
            .await?
            .iter()
            .map(|r| decode(MESSAGE, r))
            .collect::<Result<_>>()?;
        if failed.is_empty() {
            return Ok(false);
        }
        let why = match (&mail.bounce_recipient, &mail.bounce_reason) {
            (Some(to), Some(r)) => format!("Delivery to {to} failed: {r}"),
            (Some(to), None) => format!("Delivery to {to} failed"),
            (None, Some(r)) => format!("Delivery failed: {r}"),
            (None, None) => "Delivery failed (the receiving server sent the mail back)".to_string(),
        };
        for (i, msg) in failed.into_iter().enumerate() {
            let conv_id = msg.text("conversation_id").unwrap_or_default().to_string();
            self.set_delivery_in(w, inbox_id, &msg.id, "failed", Some(&why), actor).await?;
            let Some(conv) = self.fetch(&mut w.tx, CONVERSATION, &conv_id).await? else {
                continue;
            };
            let mut line = Changes::default();
            line.set(MESSAGE, "kind", FieldValue::Text("activity".into()));
            line.set(MESSAGE, "text", FieldValue::Text(why.clone()));
            // The bounce's own id, so that reading it again changes nothing.
            let ext = if i == 0 {
                mail.message_id.clone()
            } else {
                format!("{}#{i}", mail.message_id)
            };
            line.set(MESSAGE, "external_id", FieldValue::Text(ext));
            self.post_message_in(w, conv, line, actor).await?;
        }
        Ok(true)
    }

    /// What the SMTP sender needs of a queued reply: the message, its conversation,
    /// the customer's address, the author's name, and the Message-IDs of the thread
    /// (oldest first) for In-Reply-To and References.
    pub async fn outgoing(&self, message_id: &str) -> Result<Option<Outgoing>> {
        let mut conn = self.store.pool().acquire().await?;
        let conn: &mut AnyConnection = &mut conn;
        let Some(msg) = self.fetch(conn, MESSAGE, message_id).await? else {
            return Ok(None);
        };
        let conv_id = msg.text("conversation_id").unwrap_or_default().to_string();
        let Some(conv) = self.fetch(conn, CONVERSATION, &conv_id).await? else {
            return Ok(None);
        };
        // Where the customer's newest mail in the conversation asked answers to go;
        // else the contact's first address (a conversation opened by an agent). Only
        // the conversation's own contact's mail counts: anyone can answer a thread's
        // Message-IDs, and must not be able to turn its replies to themselves.
        let to = match conv.text("contact_id") {
            Some(contact) => {
                let mut sql = Sql::new("SELECT reply_to FROM messages WHERE workspace_id = ");
                sql.arg(self.ws)
                    .push(" AND conversation_id = ")
                    .arg(&conv_id)
                    .push(" AND author = ")
                    .arg(format!("contact:{contact}"))
                    .push(" AND direction = 'incoming' AND reply_to IS NOT NULL AND created_at <= ")
                    .arg(msg.created_at)
                    .push(" ORDER BY created_at DESC LIMIT 1");
                let asked: Option<String> = sql.query().fetch_optional(&mut *conn).await?.map(|r| r.try_get(0)).transpose()?;
                match asked {
                    Some(to) => Some(to),
                    None => self
                        .fetch(conn, ObjectType::Contact, contact)
                        .await?
                        .and_then(|c| c.get("emails").as_list().first().cloned()),
                }
            }
            None => None,
        };
        let author = msg.text("author").unwrap_or_default();
        let agent = match author.strip_prefix("user:") {
            Some(user) => {
                let mut sql = Sql::new("SELECT name FROM users WHERE id = ");
                sql.arg(user);
                sql.query()
                    .fetch_optional(&mut *conn)
                    .await?
                    .map(|r| r.try_get::<String, _>(0))
                    .transpose()?
            }
            None => None,
        };
        let mut sql = Sql::new("SELECT external_id FROM messages WHERE workspace_id = ");
        sql.arg(self.ws)
            .push(" AND conversation_id = ")
            .arg(&conv_id)
            .push(" AND kind = 'message' AND external_id IS NOT NULL AND created_at <= ")
            .arg(msg.created_at)
            .push(" AND id <> ")
            .arg(&msg.id)
            .push(" ORDER BY created_at, id");
        let thread: Vec<String> = sql
            .query()
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Some(Outgoing {
            message: msg,
            conversation: conv,
            to,
            agent,
            thread,
        }))
    }
}

/// A queued reply with what sending it needs.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub message: Record,
    pub conversation: Record,
    /// The customer's address, if their contact has one.
    pub to: Option<String>,
    /// The replying member's name.
    pub agent: Option<String>,
    /// The thread's earlier Message-IDs, oldest first.
    pub thread: Vec<String>,
}

/// A member's notification waiting to be mailed, with where it goes.
#[derive(Debug, Clone)]
pub struct Notification {
    pub id: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub kind: String,
    pub data: Value,
    pub attempts: i64,
    pub email: String,
    pub name: String,
}

impl Store {
    /// Notifications due to be mailed, oldest first, with their member's address.
    pub async fn due_notifications(&self, now: i64, limit: i64) -> Result<Vec<Notification>> {
        let mut sql = Sql::new(
            "SELECT n.id, n.workspace_id, w.name, n.kind, n.data, n.attempts, u.email, u.name FROM notify_outbox n \
             JOIN users u ON u.id = n.user_id JOIN workspaces w ON w.id = n.workspace_id WHERE n.state IN ('queued', 'sending') AND n.next_at <= ",
        );
        sql.arg(now).push(" ORDER BY n.next_at LIMIT ").arg(limit);
        sql.query()
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                let data: String = r.try_get(4)?;
                Ok(Notification {
                    id: r.try_get(0)?,
                    workspace_id: r.try_get(1)?,
                    workspace_name: r.try_get(2)?,
                    kind: r.try_get(3)?,
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                    attempts: r.try_get(5)?,
                    email: r.try_get(6)?,
                    name: r.try_get(7)?,
                })
            })
            .collect()
    }

    /// Takes a notification for sending: true for exactly one taker. A claim left
    /// `sending` (its node died) may be taken again after `stale_ms`.
    pub async fn claim_notification(&self, id: &str, now: i64, stale_ms: i64) -> Result<bool> {
        let mut sql = Sql::new("UPDATE notify_outbox SET state = 'sending', attempts = attempts + 1, next_at = ");
        sql.arg(now.saturating_add(stale_ms))
            .push(" WHERE id = ")
            .arg(id)
            .push(" AND state IN ('queued', 'sending') AND next_at <= ")
            .arg(now);
        Ok(self.write_one(sql).await? == 1)
    }

    /// Where a taken notification ended: `sent`, `failed`, or `queued` again at `next_at`.
    pub async fn settle_notification(&self, id: &str, state: &str, error: Option<&str>, next_at: i64) -> Result<()> {
        let mut sql = Sql::new("UPDATE notify_outbox SET state = ");
        sql.arg(state)
            .push(", error = ")
            .arg(error.map(str::to_string))
            .push(", next_at = ")
            .arg(next_at)
            .push(" WHERE id = ")
            .arg(id);
        self.write_one(sql).await.map(|_| ())
    }
}

impl Scoped<'_> {
    /// Whether a member has their notifications mailed to them.
    pub async fn notify_email(&self, user_id: &str) -> Result<bool> {
        let mut sql = Sql::new("SELECT notify_email FROM memberships WHERE workspace_id = ");
        sql.arg(self.ws).push(" AND user_id = ").arg(user_id);
        let row = sql.query().fetch_optional(self.store.pool()).await?.ok_or(StoreError::NotFound)?;
        Ok(row.try_get::<i64, _>(0)? == 1)
    }

    pub async fn set_notify_email(&self, user_id: &str, on: bool) -> Result<()> {
        let mut sql = Sql::new("UPDATE memberships SET notify_email = ");
        sql.arg(i64::from(on))
            .push(" WHERE workspace_id = ")
            .arg(self.ws)
            .push(" AND user_id = ")
            .arg(user_id);
        self.store.write_one(sql).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::fresh_store;

    fn mail(uid: i64, id: &str, from: Option<&str>, subject: &str, refs: &[&str], kind: &str) -> Mail {
        Mail {
            uid,
            message_id: id.to_string(),
            references: refs.iter().map(|r| r.to_string()).collect(),
            from: from.map(str::to_string),
            from_name: from.map(|f| f.split('@').next().unwrap_or_default().to_string()),
            reply_to: None,
            subject: Some(subject.to_string()),
            text: format!("text of {id}"),
            quoted: (uid % 2 == 0).then(|| format!("> quoted in {id}")),
            html: (uid % 3 == 0).then(|| format!("<p>html of {id}<script>x()</script></p>")),
            attachments: None,
            kind: kind.to_string(),
            bounced_ids: Vec::new(),
            bounce_recipient: None,
            bounce_reason: None,
        }
    }

    /// What an inbox holds, without ids and times: each message (in the order taken)
    /// with its conversation's first message, kind, direction, author's name, text,
    /// quoted text and HTML; each conversation's number, status, subject, contact,
    /// whether its customer waits and whether its last message time is its newest
    /// message's; the kinds of events per topic; and how many contacts, search
    /// documents and senders' ids there are.
    ///
    /// Not the conversations' versions and updates: a run stamps its mails with one
    /// time, so a second mail into a conversation in the same run changes nothing in
    /// it, where taken one at a time it moves its last message time by a millisecond.
    async fn contents(store: &Store, ws: &str, inbox: &str) -> Value {
        let s = store.scoped(ws);
        let rows = sqlx::query("SELECT id, conversation_id FROM messages WHERE inbox_id = $1 ORDER BY created_at, rowid")
            .bind(inbox)
            .fetch_all(store.pool())
            .await
            .unwrap();
        let mut first_of: std::collections::HashMap<String, String> = Default::default();
        let mut messages = Vec::new();
        let name_of = |contact: String| {
            let s = store.scoped(ws);
            async move {
                s.get(ObjectType::Contact, &contact)
                    .await
                    .ok()
                    .and_then(|c| c.text("name").map(str::to_string))
            }
        };
        let mut newest: std::collections::HashMap<String, i64> = Default::default();
        for row in rows {
            let (id, conv): (String, String) = (row.get(0), row.get(1));
            let m = s.get(MESSAGE, &id).await.unwrap();
            if m.text("kind") == Some("message") {
                let at = newest.entry(conv.clone()).or_default();
                *at = (*at).max(m.created_at);
            }
            let ext = m.text("external_id").unwrap_or_default().to_string();
            let first = first_of.entry(conv).or_insert(ext.clone()).clone();
            let author = m
                .text("author")
                .unwrap_or_default()
                .strip_prefix("contact:")
                .unwrap_or_default()
                .to_string();
            messages.push(json!([
                ext,
                first,
                m.text("kind"),
                m.text("direction"),
                name_of(author).await,
                m.text("text"),
                m.text("quoted"),
                m.text("html")
            ]));
        }
        let mut conversations = Vec::new();
        for (conv, first) in &first_of {
            let c = s.get(CONVERSATION, conv).await.unwrap();
            let contact = name_of(c.text("contact_id").unwrap_or_default().to_string()).await;
            conversations.push(json!([
                first,
                matches!(c.get("number"), FieldValue::Int(n) if *n > 0),
                c.text("status"),
                c.text("subject"),
                contact,
                !c.get("waiting_since").is_null(),
                c.get("last_message_at") == &FieldValue::Int(newest[conv])
            ]));
        }
        conversations.sort_by_key(|c| c[0].as_str().unwrap_or_default().to_string());
        let kinds = |topic: String| async move {
            let events = store.events_after(&topic, 0, 1000).await.unwrap();
            events
                .iter()
                .map(|e| e.kind.clone())
                .filter(|k| k != "conversation.updated")
                .collect::<Vec<_>>()
        };
        let count = |table: &str| {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            async move { sqlx::query_scalar::<_, i64>(&sql).fetch_one(store.pool()).await.unwrap() }
        };
        json!({
            "messages": messages,
            "conversations": conversations,
            "inbox events": kinds(format!("inbox:{inbox}")).await,
            "workspace events": kinds(format!("workspace:{ws}")).await,
            "contacts": count("contacts").await,
            "search documents": count("search_docs").await,
            "senders known": count("inbox_contacts").await,
        })
    }

    /// Takes the same mail into a fresh store, in runs or one mail at a time, and
    /// answers what the inbox then holds and what each batch answered.
    async fn take_all(runs: bool) -> (Value, Vec<Value>) {
        let (store, dir, ws) = fresh_store("mailrun").await;
        let s = store.scoped(&ws);
        let mut w = store.write().await.unwrap();
        let input = json!({"name": "Support", "channel": "email"});
        let c = ObjectType::Inbox.parse_input(input.as_object().unwrap(), true, &[]).unwrap();
        let inbox = s.create_in(&mut w, ObjectType::Inbox, c, "user:u").await.unwrap().id;
        let input = json!({"name": "Erin", "emails": ["erin@example.com"]});
        let c = ObjectType::Contact.parse_input(input.as_object().unwrap(), true, &[]).unwrap();
        s.create_in(&mut w, ObjectType::Contact, c, "user:u").await.unwrap();
        w.commit().await.unwrap();
        let take = |mails: Vec<Mail>| {
            let (store, ws, inbox) = (store.clone(), ws.clone(), inbox.clone());
            async move {
                let batch = MailBatch {
                    inbox_id: inbox,
                    uid_validity: 1,
                    mails,
                    available: Vec::new(),
                    alone: false,
                };
                let mut w = store.write().await.unwrap();
                let answer = store.scoped(&ws).take_mails(&mut w, batch, "inbox:x", runs).await.unwrap();
                w.commit().await.unwrap();
                answer
            }
        };
        let mut answers = vec![
            take(vec![
                mail(1, "m1@a", Some("ann@example.com"), "Order 1", &[], "personal"),
                mail(2, "m2@b", Some("bob@example.com"), "Help", &[], "personal"),
            ])
            .await,
        ];
        let conv_of = |ext: &str| {
            let (store, ext) = (store.clone(), ext.to_string());
            async move {
                sqlx::query_scalar::<_, String>("SELECT conversation_id FROM messages WHERE external_id = $1")
                    .bind(ext)
                    .fetch_one(store.pool())
                    .await
                    .unwrap()
            }
        };
        sqlx::query("UPDATE conversations SET status = 'resolved' WHERE id = $1")
            .bind(conv_of("m2@b").await)
            .execute(store.pool())
            .await
            .unwrap();
        let from = EmailAddress::parse("support@example.com").unwrap();
        let token = outgoing_message_id("r4nd", &conv_of("m1@a").await, &from);
        answers.push(
            take(vec![
                // Same sender and subject: Ann's conversation.
                mail(3, "m3@a", Some("ann@example.com"), "Re: Order 1", &[], "personal"),
                // A new sender answering Ann's mail: Ann's conversation, Cid a contact.
                mail(4, "m4@c", Some("cid@example.com"), "New thing", &["m1@a"], "personal"),
                // Cid's own new subject opens a conversation, which the next continues.
                mail(5, "m5@c", Some("cid@example.com"), "New thing", &[], "personal"),
                mail(6, "m6@c", Some("cid@example.com"), "Re: New thing", &[], "personal"),
                // Already there.
                mail(7, "m2@b", Some("bob@example.com"), "Help", &[], "personal"),
                // Automatic, answering nothing: left out; answering: a line.
                mail(8, "m8@d", Some("dan@example.com"), "Out of office", &[], "automatic"),
                mail(
                    9,
                    "m9@n",
                    Some("noreply@example.com"),
                    "Auto: Order 1",
                    &["nothing@x", "m3@a"],
                    "automatic",
                ),
                // No sender, answering Cid's: Cid's conversation.
                mail(10, "m10@x", None, "Re: New thing", &["m5@c"], "personal"),
                // Answering a resolved conversation reopens it (alone), and the next
                // mail with its subject joins it.
                mail(11, "m11@b", Some("bob@example.com"), "Re: Help", &["m2@b"], "personal"),
                mail(12, "m12@b", Some("bob@example.com"), "Re: Help", &[], "personal"),
                // A contact the workspace has, new to the inbox.
                mail(13, "m13@e", Some("erin@example.com"), "Invoice", &[], "personal"),
                mail(14, "m14@e", Some("erin@example.com"), "Invoice", &[], "personal"),
                // Shoal's own Message-ID names Ann's conversation.
                mail(15, "m15@f", Some("fay@example.com"), "Whatever", &[&token], "personal"),
                // The same mail twice in one batch.
                mail(16, "m16@g", Some("gus@example.com"), "Twice", &[], "personal"),
                mail(17, "m16@g", Some("gus@example.com"), "Twice", &[], "personal"),
                // No sender and answering nothing.
                mail(18, "m18@x", None, "Lost", &[], "personal"),
            ])
            .await,
        );
        let mut bounce = mail(19, "m19@mailer", Some("mailer-daemon@example.com"), "Undelivered", &[], "bounce");
        bounce.bounced_ids = vec!["unknown@x".into()];
        answers.push(take(vec![bounce, mail(20, "m20@a", Some("ann@example.com"), "Order 1", &[], "personal")]).await);
        let held = contents(&store, &ws, &inbox).await;
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
        (held, answers)
    }

    #[tokio::test]
    async fn mail_taken_in_runs_is_threaded_counted_and_noted_exactly_as_one_mail_at_a_time() {
        let (alone, mut alone_answers) = take_all(false).await;
        let (runs, mut run_answers) = take_all(true).await;
        let taken_alone = |answers: &mut Vec<Value>| answers.iter_mut().map(|a| a["alone"].take()).collect::<Vec<_>>();
        assert_eq!(taken_alone(&mut alone_answers), [json!(2), json!(16), json!(2)]);
        // Only the answer that reopens a conversation and the bounce.
        assert_eq!(taken_alone(&mut run_answers), [json!(0), json!(1), json!(1)]);
        assert_eq!(run_answers, alone_answers);
        assert_eq!(runs, alone);
        // And what that is: the threads the comments in `take_all` describe.
        let threads: std::collections::HashMap<&str, &str> = runs["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m[0].as_str().unwrap(), m[1].as_str().unwrap()))
            .collect();
        for (ext, first) in [
            ("m3@a", "m1@a"),
            ("m4@c", "m1@a"),
            ("m6@c", "m5@c"),
            ("m9@n", "m1@a"),
            ("m10@x", "m5@c"),
            ("m11@b", "m2@b"),
            ("m12@b", "m2@b"),
            ("m14@e", "m13@e"),
            ("m15@f", "m1@a"),
            ("m20@a", "m1@a"),
        ] {
            assert_eq!(threads.get(ext), Some(&first), "{ext} continues {first}'s conversation");
        }
        for ext in ["m5@c", "m13@e", "m16@g"] {
            assert_eq!(threads.get(ext), Some(&ext), "{ext} opens a conversation");
        }
        for ext in ["m8@d", "m18@x", "m19@mailer"] {
            assert!(!threads.contains_key(ext), "{ext} is left out");
        }
        assert_eq!(run_answers[1]["taken"], 12);
        assert_eq!(run_answers[1]["duplicates"], 2);
        assert_eq!(run_answers[1]["left_out"], 2);
        let erin = runs["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == "m13@e")
            .unwrap()
            .clone();
        assert_eq!(erin[4], "Erin", "the workspace's contact, not a new one");
    }
}
