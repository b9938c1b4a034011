//! Writes between nodes: a node that does not own a board or inbox sends its writes to
//! the owner over HTTP, signed with the cluster's shared key, and relays the owner's
//! answer. The owner runs the write as if its own client had sent it.

use std::collections::HashMap;
use std::time::Duration;

use awc::http::header::CONTENT_TYPE;
use serde_json::{json, Value};

use super::error::{ApiError, Code};
use super::writes::{on_topic, Attempt, Author, OwnedError, Write};
use super::AppState;
use crate::domain::{Event, Topic};

/// Where an owner takes forwarded writes.
pub const PATH: &str = "/internal/v1/writes";
pub const TIMESTAMP: &str = "x-shoal-timestamp";
pub const SIGNATURE: &str = "x-shoal-signature";
/// Set on an answer that means "not the owner; the write did not run".
pub const NOT_OWNER: &str = "x-shoal-not-owner";
/// Largest forwarded write accepted; the signature is checked only after reading it.
pub const MAX_WRITE_BYTES: usize = 4 * 1024 * 1024;
/// A forwarded write older than this is refused, so a captured one cannot be replayed
/// later.
const MAX_SKEW_SECS: i64 = 30;
/// How long a node waits for the owner's answer. Past it the outcome is unknown and the
/// client is told so (`unavailable`); it is not retried, as it may have run.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer accepted from another node.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Ids of the forwarded writes taken in the last `2 * MAX_SKEW_SECS`, so that a captured
/// request cannot be replayed while its timestamp is still accepted.
/// With the second they were last pruned in.
static SEEN: std::sync::Mutex<Option<(HashMap<String, i64>, i64)>> = std::sync::Mutex::new(None);

/// Records `id`; false when it was already seen.
fn first_sighting(id: &str, now: i64) -> bool {
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let (seen, pruned) = seen.get_or_insert_with(|| (HashMap::new(), now));
    // Pruned at most once a second, so that many recent ids do not make every insert
    // walk the whole map.
    if seen.len() > 10_000 && now > *pruned {
        seen.retain(|_, at| now - *at <= 2 * MAX_SKEW_SECS);
        *pruned = now;
    }
    seen.insert(id.to_string(), now).is_none()
}

thread_local! {
    // The HTTP client is bound to its thread; one per thread keeps its connection pool.
    static CLIENT: awc::Client = awc::Client::builder().disable_redirects().finish();
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Sends a board's or inbox's write to its owner at `url` and relays the answer.
pub(crate) async fn send(state: &AppState, url: &str, author: &Author, cause: Option<&str>, topic: &Topic, write: &Write) -> Attempt {
    if !topic.is_owned() {
        return Attempt::Done(Err(ApiError::internal(anyhow::anyhow!("only boards and inboxes have owners"))));
    }
    let body = json!({
        "id": uuid::Uuid::new_v4().simple().to_string(),
        "workspace_id": author.workspace_id,
        "actor": author.actor,
        "cause": cause,
        "topic": topic.key(),
        "write": write.to_wire(),
    })
    .to_string();
    let ts = now_secs();
    let signature = state.tokens.sign_forward(ts, body.as_bytes());
    let request = CLIENT.with(|c| {
        c.post(format!("{url}{PATH}"))
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((TIMESTAMP, ts.to_string()))
            .insert_header((SIGNATURE, signature))
            .timeout(ANSWER_TIMEOUT)
    });
    let mut res = match request.send_body(body).await {
        Ok(res) => res,
        // No connection could be made, so nothing was sent: the owner is gone, and its
        // lease will lapse. (`Disconnected` is not among these: awc also reports a
        // connection that closed after the request went out that way.)
        Err(awc::error::SendRequestError::Connect(
            e @ (awc::error::ConnectError::Io(_) | awc::error::ConnectError::Timeout | awc::error::ConnectError::Resolver(_)),
        )) => {
            tracing::debug!(%url, error = %e, "the topic's owner is unreachable");
            return Attempt::Moved;
        }
        Err(e) => {
            tracing::warn!(%url, error = %e, "the topic's owner did not answer");
            return Attempt::Done(Err(ApiError {
                retry_after_secs: Some(1),
                ..ApiError::msg(
                    Code::Unavailable,
                    "the node that owns this board or inbox did not answer; the change may or may not have been made",
                )
            }));
        }
    };
    if res.headers().contains_key(NOT_OWNER) {
        return Attempt::Moved;
    }
    let status = res.status();
    let retry_after = res
        .headers()
        .get(awc::http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let answer: Option<Value> = match res.body().limit(MAX_ANSWER_BYTES).await {
        Ok(bytes) => serde_json::from_slice(&bytes).ok(),
        Err(_) => None,
    };
    let Some(answer) = answer else {
        return Attempt::Done(Err(ApiError::msg(
            Code::Unavailable,
            "the node that owns this board or inbox sent an unreadable answer; the change may or may not have been made",
        )));
    };
    if status.is_success() {
        let events = answer["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Event::from_wire)
            .collect();
        return Attempt::Done(Ok((answer["result"].clone(), events)));
    }
    // The owner refusing this node itself (different keys, clocks apart, an older
    // version) is the cluster's fault, not the client's.
    if matches!(status.as_u16(), 401 | 404 | 405) {
        tracing::error!(%url, status = status.as_u16(), "the topic's owner refused a forwarded write; check that the nodes share their key, clock and version");
        return Attempt::Done(Err(ApiError::internal(anyhow::anyhow!("forwarding refused with {status}"))));
    }
    let e = &answer["error"];
    let code = e["code"].as_str().and_then(Code::parse).unwrap_or(Code::Internal);
    Attempt::Done(Err(ApiError {
        details: e.get("details").cloned(),
        retry_after_secs: retry_after,
        ..ApiError::msg(code, e["message"].as_str().unwrap_or_default())
    }))
}

/// How the owner answered a forwarded write.
pub enum Answer {
    /// It ran: the record's JSON and the events, to send back.
    Done(Value),
    /// This node does not own the topic; the write did not run.
    NotOwner,
}

/// Takes a write another node forwarded, as the topic's owner: `timestamp` and
/// `signature` are the request's headers of those names, `body` its bytes.
pub async fn receive(state: &AppState, timestamp: Option<&str>, signature: Option<&str>, body: &[u8]) -> Result<Answer, ApiError> {
    let ts: i64 = timestamp.and_then(|t| t.parse().ok()).unwrap_or(0);
    let signed = signature.is_some_and(|sig| state.tokens.verify_forward(ts, body, sig));
    if !signed || (now_secs() - ts).abs() > MAX_SKEW_SECS {
        return Err(ApiError::msg(
            Code::Unauthenticated,
            "not a signed request from a node of this cluster",
        ));
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| ApiError::new(Code::MalformedJson))?;
    let text = |k: &str| v[k].as_str().map(str::to_string);
    if !text("id").is_some_and(|id| first_sighting(&id, ts)) {
        return Err(ApiError::msg(Code::Unauthenticated, "this forwarded write was already taken"));
    }
    let (Some(workspace_id), Some(actor), Some(topic), Some(write)) = (
        text("workspace_id"),
        text("actor"),
        v["topic"].as_str().and_then(Topic::parse).filter(Topic::is_owned),
        Write::from_wire(&v["write"]),
    ) else {
        return Err(ApiError::msg(Code::InvalidBody, "not a forwarded write"));
    };
    let author = Author { workspace_id, actor };
    match on_topic(state, author, text("cause"), topic, write, true).await {
        Ok((result, events)) => Ok(Answer::Done(json!({
            "result": result,
            "events": events.iter().map(Event::to_wire).collect::<Vec<_>>(),
        }))),
        Err(OwnedError::Api(e)) => Err(e),
        Err(OwnedError::NotOwner(_)) => Ok(Answer::NotOwner),
    }
}
