//! Record commands: create, update, delete and move CRM records from their JSON fields,
//! after checking the principal's rights. REST routes and WebSocket commands both call
//! these, so the two APIs validate and write the same way.

use serde_json::{Map, Value};

use super::error::{ApiError, Code};
use super::principal::Principal;
use super::writes::{self, Author, Write, Written};
use super::AppState;
use crate::domain::fields::parse_id;
use crate::domain::{Access, FieldErrors, ObjectType, Record, Topic};
use crate::store::DealMove;

/// Where a command was sent: to a board's or an inbox's topic, whose records it may
/// touch and no others, or anywhere else.
#[derive(Debug, Clone, Copy, Default)]
pub struct Within<'a>(pub Option<&'a Topic>);

impl Within<'_> {
    /// The field that ties a record to the topic, and the topic's id.
    fn tie(&self) -> Option<(&'static str, &str)> {
        match self.0? {
            Topic::Board { pipeline_id } => Some(("pipeline_id", pipeline_id)),
            Topic::Inbox { inbox_id } => Some(("inbox_id", inbox_id)),
            _ => None,
        }
    }

    /// A record of another board or inbox does not exist from this topic.
    fn check(&self, rec: &Record) -> Result<(), ApiError> {
        match self.tie() {
            Some((field, id)) if rec.text(field) != Some(id) => Err(ApiError::new(Code::NotFound)),
            _ => Ok(()),
        }
    }

    /// Runs the write, on the board or inbox already known when there is one.
    async fn run(&self, state: &AppState, p: &Principal, cause: Option<String>, write: Write) -> Result<Written, ApiError> {
        match self.0.filter(|t| t.is_owned()) {
            Some(topic) => writes::execute_on(state, Author::of(p), cause, topic.clone(), write).await,
            None => writes::execute(state, Author::of(p), cause, write).await,
        }
    }
}

/// Creates a record of `ty` from its fields (custom fields included).
pub async fn create(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    ty: ObjectType,
    mut fields: Map<String, Value>,
    within: Within<'_>,
) -> Result<Written, ApiError> {
    p.require(ty.resource(), Access::Write)?;
    match (within.tie(), ty) {
        // A message's inbox is its conversation's.
        (Some(("inbox_id", _)), ObjectType::Message) => {
            if let Some(Value::String(c)) = fields.get("conversation_id") {
                let conv = p
                    .scoped(&state.store)
                    .get(ObjectType::Conversation, &parse_id(c).map_err(|_| ApiError::new(Code::NotFound))?)
                    .await?;
                within.check(&conv)?;
            }
        }
        (Some((field, id)), _) => match fields.get(field) {
            None => {
                fields.insert(field.into(), Value::String(id.to_string()));
            }
            Some(v) if v.as_str() == Some(id) => {}
            Some(_) => return Err(FieldErrors::single(field, "must be this topic's").into()),
        },
        (None, _) => {}
    }
    let defs = p.scoped(&state.store).custom_field_defs(ty).await?;
    let changes = ty.parse_input(&fields, true, &defs)?;
    within.run(state, p, cause, Write::Create { ty, changes }).await
}

/// Changes the given fields of a record, based on version `expected` when given.
pub async fn update(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    (ty, id): (ObjectType, &str),
    expected: Option<i64>,
    fields: &Map<String, Value>,
    within: Within<'_>,
) -> Result<Written, ApiError> {
    p.require(ty.resource(), Access::Write)?;
    let scoped = p.scoped(&state.store);
    if within.0.is_some() {
        within.check(&scoped.get(ty, id).await?)?;
    }
    let defs = scoped.custom_field_defs(ty).await?;
    let changes = ty.parse_input(fields, false, &defs)?;
    let write = Write::Update {
        ty,
        id: id.to_string(),
        expected,
        changes,
    };
    within.run(state, p, cause, write).await
}

/// Deletes a record, based on version `expected` when given.
pub async fn delete(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    (ty, id): (ObjectType, &str),
    expected: Option<i64>,
    within: Within<'_>,
) -> Result<Written, ApiError> {
    p.require(ty.resource(), Access::Write)?;
    // Agents work conversations; only who configures inboxes removes them.
    if ty == ObjectType::Conversation {
        p.require(ObjectType::Inbox.resource(), Access::Write)?;
    }
    if within.0.is_some() {
        within.check(&p.scoped(&state.store).get(ty, id).await?)?;
    }
    let write = Write::Delete {
        ty,
        id: id.to_string(),
        expected,
    };
    let done = within.run(state, p, cause, write).await?;
    if ty == ObjectType::Inbox {
        // Its token went with it.
        state.inbox_tokens.forget_inbox(id);
    }
    Ok(done)
}

/// Moves a deal to a stage and a place in its column. From a board's topic the write
/// itself checks, in its transaction, that the deal is on that board: no read ahead.
pub async fn move_deal(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    id: &str,
    mut to: DealMove,
    within: Within<'_>,
) -> Result<Written, ApiError> {
    p.require(ObjectType::Deal.resource(), Access::Write)?;
    to.within = within.tie().map(|(_, id)| id.to_string());
    within.run(state, p, cause, Write::Move { id: id.to_string(), to }).await
}
