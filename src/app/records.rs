//! Record commands: create, update, delete and move CRM records from their JSON fields,
//! after checking the principal's rights. REST routes and WebSocket commands both call
//! these, so the two APIs validate and write the same way.

use serde_json::{Map, Value};

use super::error::{ApiError, Code};
use super::principal::Principal;
use super::writes::{self, Author, Write, Written};
use super::AppState;
use crate::domain::{Access, FieldErrors, ObjectType, Record};
use crate::store::DealMove;

/// Where a command was sent: to a board's topic (the pipeline's id), whose records it
/// may touch and no others, or anywhere else.
#[derive(Debug, Clone, Copy, Default)]
pub struct Within<'a>(pub Option<&'a str>);

impl Within<'_> {
    /// A record on another board does not exist from a board's topic.
    fn check(&self, rec: &Record) -> Result<(), ApiError> {
        match self.0 {
            Some(board) if rec.text("pipeline_id") != Some(board) => Err(ApiError::new(Code::NotFound)),
            _ => Ok(()),
        }
    }

    /// Runs the write, on the board already known when there is one.
    async fn run(&self, state: &AppState, p: &Principal, cause: Option<String>, write: Write) -> Result<Written, ApiError> {
        match self.0 {
            Some(board) => writes::execute_on_board(state, Author::of(p), cause, board.to_string(), write).await,
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
    if let Some(board) = within.0 {
        match fields.get("pipeline_id") {
            None => {
                fields.insert("pipeline_id".into(), Value::String(board.to_string()));
            }
            Some(v) if v.as_str() == Some(board) => {}
            Some(_) => return Err(FieldErrors::single("pipeline_id", "must be this board's pipeline").into()),
        }
    }
    let defs = p.scoped(&state.store).custom_field_defs(ty).await?;
    let changes = ty.parse_input(&fields, true, &defs)?;
    writes::create(state, p, cause, ty, changes).await
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
    if within.0.is_some() {
        within.check(&p.scoped(&state.store).get(ty, id).await?)?;
    }
    let write = Write::Delete {
        ty,
        id: id.to_string(),
        expected,
    };
    within.run(state, p, cause, write).await
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
    to.within = within.0.map(str::to_string);
    within.run(state, p, cause, Write::Move { id: id.to_string(), to }).await
}
