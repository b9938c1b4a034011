//! The write path of records. Every create, update, delete, move, conversion and
//! inbound message goes to the persister, which commits it in a batch and answers once
//! it is durable. Writes of a board (its pipeline, stages and deals) or of an inbox
//! (its conversations and messages) first pass through that topic's actor, its single
//! writer, which queues them in arrival order; in a cluster that actor lives on the
//! topic's owner node, and other nodes forward the write to it. REST, WebSocket, CSV
//! and channel writes all come through here, so they are one stream.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::error::{store_error, ApiError, Code};
use super::forward;
use super::principal::Principal;
use super::AppState;
use crate::actors::persister::{job, Pending, Refused};
use crate::actors::Persister;
use crate::actors::{Disown, Ordered, Own, Route};
use crate::domain::{Changes, EmailAddress, Event, FieldValue, ObjectType, Topic};
use crate::store::{DealMove, Inbound, MailBatch, Store, StoreError, WriteTx};

/// What a write answers: the record (or conversion) as JSON, and its events.
pub type Written = (Value, Vec<Event>);

/// A write, as data, so that it can run here or on the board's owner node and be
/// tried again when the board changes owner before it ran.
#[derive(Debug, Clone)]
pub enum Write {
    Create {
        ty: ObjectType,
        changes: Changes,
    },
    Update {
        ty: ObjectType,
        id: String,
        expected: Option<i64>,
        changes: Changes,
    },
    Delete {
        ty: ObjectType,
        id: String,
        expected: Option<i64>,
    },
    Move {
        id: String,
        to: DealMove,
    },
    /// A lead becoming a contact, maybe a company and maybe a deal.
    Convert {
        lead_id: String,
        deal: Option<Changes>,
    },
    /// A message posted to an API-channel inbox.
    Inbound(Inbound),
    /// A macro applied to a conversation, based on its version `expected` when given.
    ApplyMacro {
        macro_id: String,
        conversation_id: String,
        expected: Option<i64>,
    },
    /// A channel reports where an outgoing message is (and why it failed).
    Delivery {
        inbox_id: String,
        message_id: String,
        status: String,
        error: Option<String>,
    },
    /// Mail fetched from an e-mail inbox's folder.
    Mails(MailBatch),
    /// An e-mail inbox's sync says how it is doing.
    ChannelStatus {
        inbox_id: String,
        status: String,
        detail: String,
    },
    /// The conversation's timers due by `now` fire.
    FireTimers {
        conversation_id: String,
        now: i64,
    },
    /// A member has read a conversation up to a time.
    Read {
        conversation_id: String,
        user_id: String,
        at: i64,
    },
}

impl Write {
    /// The type whose errors the write reports.
    fn ty(&self) -> ObjectType {
        match self {
            Write::Create { ty, .. } | Write::Update { ty, .. } | Write::Delete { ty, .. } => *ty,
            Write::Move { .. } => ObjectType::Deal,
            Write::Convert { .. } => ObjectType::Lead,
            Write::Inbound(_) | Write::Mails(_) => ObjectType::Message,
            Write::ChannelStatus { .. } => ObjectType::Inbox,
            Write::Read { .. } | Write::ApplyMacro { .. } | Write::FireTimers { .. } => ObjectType::Conversation,
            Write::Delivery { .. } => ObjectType::Message,
        }
    }

    pub fn to_wire(&self) -> Value {
        match self {
            Write::Create { ty, changes } => json!({"op": "create", "type": ty.name(), "changes": changes.to_wire()}),
            Write::Update { ty, id, expected, changes } => {
                json!({"op": "update", "type": ty.name(), "id": id, "expected": expected, "changes": changes.to_wire()})
            }
            Write::Delete { ty, id, expected } => json!({"op": "delete", "type": ty.name(), "id": id, "expected": expected}),
            Write::Move { id, to } => json!({
                "op": "move", "id": id, "stage": to.stage, "after": to.after, "before": to.before, "expected": to.expected,
                "within": to.within,
            }),
            Write::Convert { lead_id, deal } => json!({"op": "convert", "id": lead_id, "deal": deal.as_ref().map(Changes::to_wire)}),
            Write::Inbound(m) => json!({
                "op": "inbound", "inbox_id": m.inbox_id, "source_id": m.source_id, "email": m.email.as_ref().map(|e| e.as_str()),
                "name": m.name, "subject": m.subject, "text": m.text, "external_id": m.external_id, "available": m.available,
                "html": m.html, "attachments": m.attachments,
            }),
            Write::Read {
                conversation_id,
                user_id,
                at,
            } => json!({"op": "read", "id": conversation_id, "user_id": user_id, "at": at}),
            Write::ApplyMacro {
                macro_id,
                conversation_id,
                expected,
            } => json!({"op": "apply_macro", "macro_id": macro_id, "id": conversation_id, "expected": expected}),
            Write::FireTimers { conversation_id, now } => json!({"op": "fire_timers", "id": conversation_id, "now": now}),
            Write::Delivery {
                inbox_id,
                message_id,
                status,
                error,
            } => json!({"op": "delivery", "inbox_id": inbox_id, "id": message_id, "status": status, "error": error}),
            Write::Mails(batch) => json!({"op": "mails", "batch": batch}),
            Write::ChannelStatus { inbox_id, status, detail } => {
                json!({"op": "channel_status", "inbox_id": inbox_id, "status": status, "detail": detail})
            }
        }
    }

    pub fn from_wire(v: &Value) -> Option<Write> {
        let ty = || ObjectType::from_name(v["type"].as_str()?);
        let id = || v["id"].as_str().map(str::to_string);
        let text = |k: &str| v[k].as_str().map(str::to_string);
        let expected = v["expected"].as_i64();
        Some(match v["op"].as_str()? {
            "create" => {
                let ty = ty()?;
                Write::Create {
                    ty,
                    changes: Changes::from_wire(ty, &v["changes"])?,
                }
            }
            "update" => {
                let ty = ty()?;
                Write::Update {
                    ty,
                    id: id()?,
                    expected,
                    changes: Changes::from_wire(ty, &v["changes"])?,
                }
            }
            "delete" => Write::Delete {
                ty: ty()?,
                id: id()?,
                expected,
            },
            "move" => Write::Move {
                id: id()?,
                to: DealMove {
                    stage: text("stage"),
                    after: text("after"),
                    before: text("before"),
                    expected,
                    within: text("within"),
                },
            },
            "convert" => Write::Convert {
                lead_id: id()?,
                deal: match &v["deal"] {
                    Value::Null => None,
                    d => Some(Changes::from_wire(ObjectType::Deal, d)?),
                },
            },
            "inbound" => Write::Inbound(Inbound {
                inbox_id: text("inbox_id")?,
                source_id: text("source_id"),
                email: match v["email"].as_str() {
                    Some(e) => Some(EmailAddress::parse(e).ok()?),
                    None => None,
                },
                name: text("name"),
                subject: text("subject"),
                text: text("text")?,
                external_id: text("external_id"),
                html: text("html"),
                attachments: Some(v["attachments"].clone()).filter(|a| !a.is_null()),
                available: v["available"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|u| u.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
            }),
            "delivery" => Write::Delivery {
                inbox_id: text("inbox_id")?,
                message_id: id()?,
                status: text("status")?,
                error: text("error"),
            },
            "mails" => Write::Mails(serde_json::from_value(v["batch"].clone()).ok()?),
            "channel_status" => Write::ChannelStatus {
                inbox_id: text("inbox_id")?,
                status: text("status")?,
                detail: text("detail")?,
            },
            "fire_timers" => Write::FireTimers {
                conversation_id: id()?,
                now: v["now"].as_i64()?,
            },
            "apply_macro" => Write::ApplyMacro {
                macro_id: text("macro_id")?,
                conversation_id: id()?,
                expected,
            },
            "read" => Write::Read {
                conversation_id: id()?,
                user_id: text("user_id")?,
                at: v["at"].as_i64()?,
            },
            _ => return None,
        })
    }

    /// Queues the write on the persister; it answers the written record's JSON.
    fn submit(
        self,
        persister: &Persister,
        store: Store,
        author: Author,
        cause: Option<String>,
        fence: Option<(String, i64)>,
    ) -> Result<Pending<Value>, Refused> {
        match self {
            // Moves and posted messages have jobs of their own: the persister writes
            // those queued together as one.
            Write::Move { id, to } => persister.submit_move(cause, fence, author.workspace_id, author.actor, id, to),
            Write::Inbound(m) => persister.submit_inbound(cause, fence, author.workspace_id, author.actor, m),
            // A mailbox's import: many of these back to back.
            mails @ Write::Mails(_) => persister.submit_background(cause, fence, mails.job(store, author)),
            other => persister.submit_fenced(cause, fence, other.job(store, author)),
        }
    }

    /// The write as a persister job answering the written record's JSON.
    fn job(
        self,
        store: Store,
        author: Author,
    ) -> impl for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<Value, StoreError>> + Send + 'static {
        job(move |w: &mut WriteTx| -> BoxFuture<'_, Result<Value, StoreError>> {
            Box::pin(async move {
                let s = store.scoped(&author.workspace_id);
                let actor = &author.actor;
                Ok(match self {
                    Write::Create { ty, changes } => s.create_in(w, ty, changes, actor).await?.to_json(ty),
                    Write::Update { ty, id, expected, changes } => s.update_in(w, ty, &id, expected, changes, actor).await?.to_json(ty),
                    Write::Delete { ty, id, expected } => {
                        s.delete_in(w, ty, &id, expected, actor).await?;
                        Value::Null
                    }
                    Write::Move { id, to } => s.move_deal_in(w, &id, to, actor).await?.to_json(ObjectType::Deal),
                    Write::Convert { lead_id, deal } => {
                        let c = s.convert_lead_in(w, &lead_id, deal, actor).await?;
                        json!({
                            "lead": c.lead.to_json(ObjectType::Lead),
                            "contact": c.contact.to_json(ObjectType::Contact),
                            "company": c.company.map(|r| r.to_json(ObjectType::Company)),
                            "deal": c.deal.map(|r| r.to_json(ObjectType::Deal)),
                        })
                    }
                    Write::Inbound(m) => s.inbound_in(w, m, actor).await?,
                    Write::Read {
                        conversation_id,
                        user_id,
                        at,
                    } => s.mark_read_in(w, &conversation_id, &user_id, at, actor).await?,
                    Write::ApplyMacro {
                        macro_id,
                        conversation_id,
                        expected,
                    } => s.apply_macro_in(w, &macro_id, &conversation_id, expected, actor).await?,
                    Write::FireTimers { conversation_id, now } => s.fire_timers_in(w, &conversation_id, now, actor).await?,
                    Write::Delivery {
                        inbox_id,
                        message_id,
                        status,
                        error,
                    } => {
                        s.set_delivery_in(w, &inbox_id, &message_id, &status, error.as_deref(), actor)
                            .await?
                    }
                    Write::Mails(batch) => s.mails_in(w, batch, actor).await?,
                    Write::ChannelStatus { inbox_id, status, detail } => {
                        s.set_channel_status_in(w, &inbox_id, &status, &detail, actor).await?
                    }
                })
            })
        })
    }
}

/// Who writes: the workspace and the actor recorded on the changes.
#[derive(Debug, Clone)]
pub struct Author {
    pub workspace_id: String,
    pub actor: String,
}

impl Author {
    pub(crate) fn of(p: &Principal) -> Author {
        Author {
            workspace_id: p.workspace_id.clone(),
            actor: p.actor_id(),
        }
    }
}

fn overloaded(_: Refused) -> ApiError {
    ApiError {
        retry_after_secs: Some(1),
        ..ApiError::msg(Code::Overloaded, "the server is busy writing; retry shortly")
    }
}

fn moving(key: &str) -> ApiError {
    ApiError {
        retry_after_secs: Some(1),
        ..ApiError::msg(Code::Unavailable, format!("{key} is changing hands; retry shortly"))
    }
}

/// The board or inbox a write belongs to, whose actor is its single writer, checked to
/// be in the author's workspace before that actor is woken.
async fn owner_of(state: &AppState, author: &Author, write: &Write) -> Result<Option<Topic>, ApiError> {
    let scoped = state.store.scoped(&author.workspace_id);
    let given = |changes: &Changes, field: &str| match changes.get(field) {
        Some(FieldValue::Text(p)) => Some(p.clone()),
        _ => None,
    };
    let board = |p: Option<String>| p.map(|pipeline_id| Topic::Board { pipeline_id });
    let inbox = |i: Option<String>| i.map(|inbox_id| Topic::Inbox { inbox_id });
    let topic = match write {
        Write::Create { ty, changes } => match ty {
            ObjectType::Deal | ObjectType::Stage => board(given(changes, "pipeline_id")),
            ObjectType::Conversation => inbox(given(changes, "inbox_id")),
            ObjectType::Message => match given(changes, "conversation_id") {
                Some(c) => match scoped.get(ObjectType::Conversation, &c).await {
                    Ok(conv) => inbox(conv.text("inbox_id").map(str::to_string)),
                    // An unknown conversation is the write's own validation error.
                    Err(StoreError::NotFound) => None,
                    Err(e) => return Err(e.into()),
                },
                None => None,
            },
            _ => None,
        },
        Write::Update { ty, id, .. } | Write::Delete { ty, id, .. } => match ty {
            ObjectType::Pipeline => board(Some(id.clone())),
            ObjectType::Inbox => inbox(Some(id.clone())),
            ObjectType::Deal | ObjectType::Stage => board(scoped.get(*ty, id).await?.text("pipeline_id").map(str::to_string)),
            ObjectType::Conversation | ObjectType::Message => inbox(scoped.get(*ty, id).await?.text("inbox_id").map(str::to_string)),
            _ => None,
        },
        Write::Move { id, .. } => board(scoped.get(ObjectType::Deal, id).await?.text("pipeline_id").map(str::to_string)),
        Write::Convert { deal: Some(d), .. } => board(given(d, "pipeline_id")),
        Write::Convert { deal: None, .. } => None,
        // The inbox's token was just found, so the inbox is there (one deleted since
        // is the write's own error to report).
        Write::Inbound(m) => return Ok(inbox(Some(m.inbox_id.clone()))),
        Write::Delivery { inbox_id, .. } | Write::ChannelStatus { inbox_id, .. } => inbox(Some(inbox_id.clone())),
        Write::Mails(batch) => inbox(Some(batch.inbox_id.clone())),
        // A member's own reading, on their personal topic: no inbox's to order.
        Write::Read { .. } => None,
        Write::ApplyMacro { conversation_id, .. } | Write::FireTimers { conversation_id, .. } => inbox(
            scoped
                .get(ObjectType::Conversation, conversation_id)
                .await?
                .text("inbox_id")
                .map(str::to_string),
        ),
    };
    let Some(topic) = topic else {
        return Ok(None);
    };
    let (ty, id) = match &topic {
        Topic::Board { pipeline_id } => (ObjectType::Pipeline, pipeline_id),
        Topic::Inbox { inbox_id } => (ObjectType::Inbox, inbox_id),
        _ => return Ok(None),
    };
    match scoped.get(ty, id).await {
        Ok(_) => Ok(Some(topic)),
        // An unknown pipeline or inbox is the write's own validation error to report.
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Runs a write and waits until it is durable.
pub async fn execute(state: &AppState, author: Author, cause: Option<String>, write: Write) -> Result<Written, ApiError> {
    // A new message may be a reply waiting in the mail outbox: the sender is woken
    // rather than finding it on its next look.
    let may_mail = matches!(
        &write,
        Write::Create {
            ty: ObjectType::Message,
            ..
        } | Write::ApplyMacro { .. }
    );
    let done = execute_inner(state, author, cause, write).await;
    if may_mail && done.is_ok() {
        state.mail_queued.notify_one();
    }
    done
}

async fn execute_inner(state: &AppState, author: Author, cause: Option<String>, write: Write) -> Result<Written, ApiError> {
    match owner_of(state, &author, &write).await? {
        None => {
            let ty = write.ty();
            let pending = write
                .submit(state.directory.persister(), state.store.clone(), author, cause, None)
                .map_err(overloaded)?;
            pending.outcome().await.map_err(store_error(ty))
        }
        Some(topic) => execute_on(state, author, cause, topic, write).await,
    }
}

/// Runs a write of a board or inbox its caller has already found (a command sent to
/// that topic about a record on it).
pub async fn execute_on(state: &AppState, author: Author, cause: Option<String>, topic: Topic, write: Write) -> Result<Written, ApiError> {
    on_topic(state, author, cause, topic, write, false).await.map_err(|e| match e {
        OwnedError::Api(e) => e,
        OwnedError::NotOwner(key) => moving(&key),
    })
}

/// Why a board's or inbox's write did not run.
pub enum OwnedError {
    Api(ApiError),
    /// This node does not own the topic (answered to a node that forwarded the write).
    NotOwner(String),
}

impl From<ApiError> for OwnedError {
    fn from(e: ApiError) -> Self {
        OwnedError::Api(e)
    }
}

/// How one attempt at a board's or inbox's write ended.
pub(crate) enum Attempt {
    Done(Result<Written, ApiError>),
    /// The write did not run because the topic is not where it was looked for.
    Moved,
}

/// A board's or inbox's write: queued by the topic's actor when this node owns the
/// topic, else forwarded to the owner. `forwarded`: another node sent it here as to the
/// owner; it is not sent on again, so a write crosses at most one hop. While the topic
/// changes owner (the old one died and its lease has yet to lapse) the write waits, up
/// to a lease time and a bit, and then is refused as `unavailable`.
pub async fn on_topic(
    state: &AppState,
    author: Author,
    cause: Option<String>,
    topic: Topic,
    write: Write,
    forwarded: bool,
) -> Result<Written, OwnedError> {
    let key = topic.key();
    // Alone, a node waits only for a board actor that was stopping to be replaced.
    let patience = state
        .directory
        .leases()
        .map(|l| l.ttl + Duration::from_secs(2))
        .unwrap_or(Duration::from_secs(1));
    let deadline = Instant::now() + patience;
    let mut pause = Duration::from_millis(20);
    loop {
        let attempt = match state.directory.route(&topic, &author.workspace_id).await {
            None => {
                return Err(ApiError::msg(
                    Code::Unavailable,
                    format!("the owner of {key} cannot be found while Redis is unreachable"),
                )
                .into())
            }
            Some(Route::Here { addr, fresh }) => here(state, &addr, fresh, author.clone(), cause.clone(), write.clone()).await,
            Some(Route::There(_)) if forwarded => return Err(OwnedError::NotOwner(key)),
            Some(Route::There(url)) => forward::send(state, &url, &author, cause.as_deref(), &topic, &write).await,
        };
        match attempt {
            Attempt::Done(result) => return Ok(result?),
            Attempt::Moved => {
                state.directory.forget_owner(&key);
                // A forwarded write is retried by the node that sent it, which knows when
                // its client stops waiting; retrying here too could run it after that.
                if forwarded || Instant::now() >= deadline {
                    return Err(OwnedError::NotOwner(key));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        }
    }
}

/// Queues the write on this node's actor of the topic.
async fn here(
    state: &AppState,
    addr: &actix::Addr<crate::actors::TopicActor>,
    fresh: bool,
    author: Author,
    cause: Option<String>,
    write: Write,
) -> Attempt {
    if fresh {
        match addr.send(Own).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Attempt::Done(Err(e.into())),
            Err(_) => return Attempt::Moved,
        }
    }
    let ty = write.ty();
    let store = state.store.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let submit = Box::new(move |persister: &crate::actors::Persister, fence: Option<(String, i64)>| {
        let token = fence.as_ref().map(|(_, t)| *t);
        let pending = write.submit(persister, store, author, cause, fence)?;
        let _ = tx.send((pending, token));
        Ok(())
    });
    match addr.send(Ordered(submit)).await {
        // The actor stopped (passivated) before it took the write.
        Err(_) => return Attempt::Moved,
        Ok(Err(Refused::NotOwner)) => return Attempt::Moved,
        Ok(Err(refused)) => return Attempt::Done(Err(overloaded(refused))),
        Ok(Ok(())) => {}
    }
    let Ok((pending, token)) = rx.await else {
        return Attempt::Done(Err(ApiError::new(Code::Unavailable)));
    };
    match pending.outcome().await {
        Err(StoreError::Fenced(_)) => {
            if let Some(t) = token {
                addr.do_send(Disown(t));
            }
            Attempt::Moved
        }
        result => Attempt::Done(result.map_err(store_error(ty))),
    }
}

pub async fn create(state: &AppState, p: &Principal, cause: Option<String>, ty: ObjectType, changes: Changes) -> Result<Written, ApiError> {
    execute(state, Author::of(p), cause, Write::Create { ty, changes }).await
}

pub async fn update(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    ty: ObjectType,
    id: &str,
    expected: Option<i64>,
    changes: Changes,
) -> Result<Written, ApiError> {
    let id = id.to_string();
    execute(state, Author::of(p), cause, Write::Update { ty, id, expected, changes }).await
}

pub async fn convert_lead(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    lead_id: &str,
    deal: Option<Changes>,
) -> Result<Written, ApiError> {
    let lead_id = lead_id.to_string();
    execute(state, Author::of(p), cause, Write::Convert { lead_id, deal }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_cross_between_nodes_unchanged() {
        let mut changes = Changes::default();
        changes.set(ObjectType::Deal, "title", FieldValue::Text("Acme".into()));
        changes.set(ObjectType::Deal, "amount", FieldValue::Int(1200));
        changes.set(ObjectType::Deal, "tags", FieldValue::List(vec!["hot".into()]));
        changes.set(ObjectType::Deal, "stage_id", FieldValue::Null);
        changes.custom.insert("region".into(), json!("emea"));
        let writes = [
            Write::Create {
                ty: ObjectType::Deal,
                changes: changes.clone(),
            },
            Write::Update {
                ty: ObjectType::Deal,
                id: "d1".into(),
                expected: Some(3),
                changes,
            },
            Write::Delete {
                ty: ObjectType::Stage,
                id: "s1".into(),
                expected: None,
            },
            Write::Move {
                id: "d1".into(),
                to: DealMove {
                    stage: Some("s2".into()),
                    after: None,
                    before: Some("d2".into()),
                    expected: Some(4),
                    within: Some("p1".into()),
                },
            },
            Write::Convert {
                lead_id: "l1".into(),
                deal: None,
            },
        ];
        for w in writes {
            let back = Write::from_wire(&w.to_wire()).map(|b| b.to_wire());
            assert_eq!(back, Some(w.to_wire()));
        }
        assert!(Write::from_wire(&json!({"op": "create", "type": "deal", "changes": {"values": {"nope": 1}}})).is_none());
        assert!(Write::from_wire(&json!({"op": "drop"})).is_none());
    }
}
