//! The write path of records. Every create, update, delete and move goes to the
//! persister, which commits it in a batch and answers once it is durable. Writes of a
//! board (its pipeline, stages and deals) first pass through the board's actor, its
//! single writer, which queues them in arrival order. REST and WebSocket commands both
//! come through here, so they are one stream.

use futures_util::future::BoxFuture;

use super::error::{ApiError, Code};
use super::extract::Principal;
use super::records::store_error;
use super::AppState;
use crate::actors::persister::{job, Refused};
use crate::actors::Ordered;
use crate::domain::{Changes, Event, FieldValue, ObjectType, Record, Topic};
use crate::store::{DealMove, StoreError, WriteTx};

fn overloaded(_: Refused) -> ApiError {
    ApiError {
        retry_after_secs: Some(1),
        ..ApiError::msg(Code::Overloaded, "the server is busy writing; retry shortly")
    }
}

/// Queues `f` (behind the board's earlier writes when `board` is given) and waits
/// for its batch to commit.
async fn route<T, F>(
    state: &AppState,
    p: &Principal,
    board: Option<String>,
    cause: Option<String>,
    f: F,
) -> Result<Result<(T, Vec<Event>), StoreError>, ApiError>
where
    T: Send + 'static,
    F: for<'w> FnOnce(&'w mut WriteTx) -> BoxFuture<'w, Result<T, StoreError>> + Send + 'static,
{
    let pending = match board {
        None => state.directory.persister().submit(cause, f).map_err(overloaded)?,
        Some(pipeline_id) => {
            let addr = state.directory.get(&Topic::Board { pipeline_id }, &p.workspace_id);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let submit = Box::new(move |persister: &crate::actors::Persister| {
                let pending = persister.submit(cause, f)?;
                let _ = tx.send(pending);
                Ok(())
            });
            addr.send(Ordered(submit))
                .await
                .map_err(|_| ApiError {
                    retry_after_secs: Some(1),
                    ..ApiError::new(Code::Unavailable)
                })?
                .map_err(overloaded)?;
            rx.await.map_err(|_| ApiError::new(Code::Unavailable))?
        }
    };
    Ok(pending.outcome().await)
}

/// The board a write of `ty` belongs to, checked to be in the caller's workspace
/// before its actor is woken.
async fn board_of(
    state: &AppState,
    p: &Principal,
    ty: ObjectType,
    id: Option<&str>,
    changes: Option<&Changes>,
) -> Result<Option<String>, ApiError> {
    let scoped = p.scoped(&state.store);
    let pipeline = match (ty, id) {
        (ObjectType::Pipeline, Some(id)) => Some(id.to_string()),
        (ObjectType::Deal | ObjectType::Stage, Some(id)) => scoped.get(ty, id).await?.text("pipeline_id").map(str::to_string),
        (ObjectType::Deal | ObjectType::Stage, None) => match changes.and_then(|c| c.get("pipeline_id")) {
            Some(FieldValue::Text(p)) => Some(p.clone()),
            _ => None,
        },
        _ => None,
    };
    match pipeline {
        Some(pid) => match scoped.get(ObjectType::Pipeline, &pid).await {
            Ok(_) => Ok(Some(pid)),
            // An unknown pipeline is the write's own validation error to report.
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        },
        None => Ok(None),
    }
}

pub async fn create(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    ty: ObjectType,
    changes: Changes,
) -> Result<(Record, Vec<Event>), ApiError> {
    let board = board_of(state, p, ty, None, Some(&changes)).await?;
    let (store, ws, actor) = (state.store.clone(), p.workspace_id.clone(), p.actor_id());
    let f = job(move |w: &mut WriteTx| -> BoxFuture<'_, Result<Record, StoreError>> {
        Box::pin(async move { store.scoped(&ws).create_in(w, ty, changes, &actor).await })
    });
    route(state, p, board, cause, f).await?.map_err(store_error(ty))
}

pub async fn update(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    ty: ObjectType,
    id: &str,
    expected: Option<i64>,
    changes: Changes,
) -> Result<(Record, Vec<Event>), ApiError> {
    let board = board_of(state, p, ty, Some(id), None).await?;
    let (store, ws, actor, id) = (state.store.clone(), p.workspace_id.clone(), p.actor_id(), id.to_string());
    let f = job(move |w: &mut WriteTx| -> BoxFuture<'_, Result<Record, StoreError>> {
        Box::pin(async move { store.scoped(&ws).update_in(w, ty, &id, expected, changes, &actor).await })
    });
    route(state, p, board, cause, f).await?.map_err(store_error(ty))
}

pub async fn delete(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    ty: ObjectType,
    id: &str,
    expected: Option<i64>,
) -> Result<Vec<Event>, ApiError> {
    let board = board_of(state, p, ty, Some(id), None).await?;
    let (store, ws, actor, id) = (state.store.clone(), p.workspace_id.clone(), p.actor_id(), id.to_string());
    let f = job(move |w: &mut WriteTx| -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { store.scoped(&ws).delete_in(w, ty, &id, expected, &actor).await })
    });
    Ok(route(state, p, board, cause, f).await?.map_err(store_error(ty))?.1)
}

pub async fn move_deal(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    id: &str,
    m: DealMove,
) -> Result<(Record, Vec<Event>), ApiError> {
    let board = board_of(state, p, ObjectType::Deal, Some(id), None).await?;
    let (store, ws, actor, id) = (state.store.clone(), p.workspace_id.clone(), p.actor_id(), id.to_string());
    let f = job(move |w: &mut WriteTx| -> BoxFuture<'_, Result<Record, StoreError>> {
        Box::pin(async move { store.scoped(&ws).move_deal_in(w, &id, m, &actor).await })
    });
    route(state, p, board, cause, f).await?.map_err(store_error(ObjectType::Deal))
}
