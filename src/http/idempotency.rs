//! `Idempotency-Key` on POST: the first outcome is stored and replayed to retries, so
//! a client that lost a response can retry without creating a duplicate.

use std::future::Future;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{ApiError, Code};
use super::extract::Principal;
use crate::app::AppState;
use crate::store::{IdempotencyBegin, StoredResponse};

pub const HEADER: &str = "idempotency-key";

/// Runs `run` at most once per (principal, key). A replay carries
/// `Idempotent-Replayed: true`.
pub async fn idempotent<F, Fut>(state: &AppState, p: &Principal, req: &HttpRequest, body: &[u8], run: F) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value), ApiError>>,
{
    let Some(key) = req.headers().get(HEADER) else {
        let (status, value) = run().await?;
        return Ok(HttpResponse::build(status).json(value));
    };
    let key = key
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::new(Code::InvalidIdempotencyKey))?
        .to_string();
    let mut h = Sha256::new();
    h.update(req.method().as_str());
    h.update([0]);
    h.update(req.path());
    h.update([0]);
    h.update(req.query_string());
    h.update([0]);
    h.update(body);
    let hash: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();

    let scoped = p.scoped(&state.store);
    let principal = p.actor_id();
    match scoped.idempotency_begin(&principal, &key, &hash).await? {
        IdempotencyBegin::Replay(stored) => {
            let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
            let body = state
                .tokens
                .open(&stored.body)
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a kept answer does not open under this server's key")))?;
            Ok(HttpResponse::build(status)
                .insert_header(("idempotent-replayed", "true"))
                .content_type("application/json")
                .body(body))
        }
        IdempotencyBegin::Mismatch => Err(ApiError::new(Code::IdempotencyKeyReused)),
        IdempotencyBegin::InProgress => Err(ApiError::new(Code::IdempotencyKeyInProgress)),
        IdempotencyBegin::New => match run().await {
            Ok((status, value)) => {
                // Kept sealed: an answer may carry a secret shown only once (a new API
                // key, an inbox's token), which must not lie in the store readable.
                let body = value.to_string();
                let stored = StoredResponse {
                    status: status.as_u16(),
                    body: state.tokens.seal(&body)?,
                };
                scoped.idempotency_finish(&principal, &key, &stored).await?;
                Ok(HttpResponse::build(status).content_type("application/json").body(body))
            }
            Err(e) if e.code.is_client_error() => {
                // A refused request is an outcome too: the retry gets the same answer.
                let stored = StoredResponse {
                    status: e.code.status(),
                    body: e.body().to_string(),
                };
                scoped.idempotency_finish(&principal, &key, &stored).await?;
                Err(e)
            }
            Err(e) => {
                if let Err(cleanup) = scoped.idempotency_abandon(&principal, &key).await {
                    tracing::warn!(error = %cleanup, "could not release an idempotency key");
                }
                Err(e)
            }
        },
    }
}
