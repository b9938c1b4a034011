//! `GET /api/v1/ws`: the real-time endpoint. One task per connection runs a loop over
//! the socket, the connection's bounded outbound queue, the overflow signal and a
//! heartbeat. Subscriptions go to topic actors; commands are the same operations as
//! the REST API's, acknowledged once durable.

mod commands;
pub mod protocol;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::actors::{Outbound, Overflow, Presence, Subscribe, SubscribeReply, TopicActor, Unsubscribe};
use crate::app::principal::{principal_for_token, role_in};
use crate::app::topics::{authorize_known, check_presence, not_a_topic, permit, KnownTopics, MAX_SUBSCRIPTIONS};
use crate::app::{Actor, ApiError, AppState, Code, Principal};
use crate::domain::{AccessChange, Topic};
use protocol::{error_frame, nack_frame, ClientMessage};

/// Largest client message.
pub const MAX_FRAME: usize = 64 * 1024;
const HEARTBEAT: Duration = Duration::from_secs(15);
/// A connection that sends nothing (not even a pong) for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Every this many heartbeats a connection checks its credential and topics even
/// without an access notice, in case one was lost between nodes (Redis down or its
/// queue full): once a minute.
const RECHECK_EVERY: u32 = 4;
/// The close code of a connection whose credential no longer works: its access token
/// expired, its session ended, its API key was revoked or its member left the
/// workspace. The close reason is the error code (`token_expired`,
/// `invalid_credentials`), after an `error` frame that says why.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Where connections open.
pub const PATH: &str = "/api/v1/ws";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(PATH).route(web::get().to(endpoint)));
}

/// Browsers cannot set headers on a WebSocket, so the credential may also come as
/// `?access_token=`.
fn credential(req: &HttpRequest) -> Result<String, ApiError> {
    if let Some(h) = req.headers().get("authorization") {
        let v = h.to_str().map_err(|_| ApiError::new(Code::InvalidCredentials))?;
        return v
            .strip_prefix("Bearer ")
            .map(|t| t.trim().to_string())
            .ok_or_else(|| ApiError::new(Code::Unauthenticated));
    }
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().into_iter().find(|(k, _)| k == "access_token").map(|(_, v)| v))
        .ok_or_else(|| ApiError::new(Code::Unauthenticated))
}

async fn endpoint(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Listening before the credential is checked: a change made while it is checked
    // reaches the connection too.
    let access = state.directory.access_notices();
    let principal = principal_for_token(&state, &credential(&req)?).await?;
    let (response, session, stream) = actix_ws::handle(&req, body).map_err(|e| ApiError::msg(Code::InvalidBody, e.to_string()))?;
    crate::app::inbox::connection_opened(&state, &principal).await;
    let stream = stream
        .max_frame_size(MAX_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME);
    actix_web::rt::spawn(async move {
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        state.connections.fetch_add(1, Ordering::Relaxed);
        // Frames waiting to be written to this client. When full, the client is told to
        // resync: memory per connection stays bounded whatever the client's speed.
        let (tx, rx) = mpsc::channel(state.settings.ws_outbound_queue);
        let mut conn = Connection {
            id,
            access,
            state,
            principal,
            session,
            subs: HashMap::new(),
            known: KnownTopics::default(),
            tx,
            overflow: Arc::new(Overflow::default()),
        };
        let reason = conn.run(stream, rx).await;
        conn.leave_all();
        crate::app::inbox::connection_closed(&conn.state, &conn.principal);
        conn.state.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(conn = id, reason, "websocket closed");
    });
    Ok(response)
}

pub(crate) struct Connection {
    id: u64,
    state: web::Data<AppState>,
    principal: Principal,
    session: Session,
    /// Followed topics and their actors.
    subs: HashMap<String, Addr<TopicActor>>,
    /// Boards and inboxes this connection was allowed to, for its commands.
    known: KnownTopics,
    tx: mpsc::Sender<Outbound>,
    overflow: Arc<Overflow>,
    /// Access changes on this node (and, in a cluster, the others'), so that a demoted
    /// or removed member, a revoked key or an ended session takes effect here at once.
    access: broadcast::Receiver<AccessChange>,
}

impl Connection {
    async fn run(&mut self, mut stream: actix_ws::AggregatedMessageStream, mut rx: mpsc::Receiver<Outbound>) -> &'static str {
        // One timer for everything periodic: each connection's memory counts.
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut beats = 0u32;
        let mut last_heard = Instant::now();
        let mut notices_open = true;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    last_heard = Instant::now();
                    let ok = match msg {
                        // Boxed: handling a command (a write, maybe forwarded to another
                        // node) needs a large future, which an idle connection should not
                        // carry in its own state between messages.
                        Some(Ok(AggregatedMessage::Text(text))) => Box::pin(self.on_text(&text)).await,
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            self.send(error_frame(&ApiError::msg(Code::InvalidBody, "send JSON text frames"))).await
                        }
                        Some(Ok(AggregatedMessage::Ping(b))) => self.session.pong(&b).await.is_ok(),
                        Some(Ok(AggregatedMessage::Pong(_))) => true,
                        // RFC 6455 (5.5.1): a Close is answered with a Close, echoing its
                        // code, so the client sees a clean closure at once.
                        Some(Ok(AggregatedMessage::Close(reason))) => {
                            let _ = self.session.clone().close(reason).await;
                            return "client closed";
                        }
                        None => return "client closed",
                        Some(Err(e)) => {
                            let reason = CloseReason { code: CloseCode::Size, description: Some(e.to_string()) };
                            let _ = self.session.clone().close(Some(reason)).await;
                            return "protocol error";
                        }
                    };
                    if !ok {
                        return "socket closed";
                    }
                }
                Some(out) = rx.recv() => {
                    let Outbound::Frame { topic, text } = out;
                    // Frames of a topic being resynced are stale; the client will resume.
                    if self.subs.contains_key(&*topic) && self.session.text(&*text).await.is_err() {
                        return "socket closed";
                    }
                }
                _ = self.overflow.notify.notified() => {
                    if self.overflow.take() && !self.resync(&mut rx).await {
                        return "socket closed";
                    }
                }
                notice = self.access.recv(), if notices_open => {
                    let concerned = match notice {
                        Ok(change) => self.concerned_by(&change),
                        // Fell behind: some notice may have concerned us.
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => {
                            notices_open = false;
                            false
                        }
                    };
                    if concerned && !self.recheck().await {
                        return "access ended";
                    }
                }
                _ = heartbeat.tick() => {
                    // An idle connection's expired token is noticed here, within a
                    // heartbeat; a message is checked as it comes (`on_text`).
                    if self.expired() {
                        self.end_expired().await;
                        return "token expired";
                    }
                    beats = beats.wrapping_add(1);
                    if beats.is_multiple_of(RECHECK_EVERY) && !self.recheck().await {
                        return "access ended";
                    }
                    if last_heard.elapsed() > IDLE_TIMEOUT {
                        let _ = self.session.clone().close(Some(CloseCode::Away.into())).await;
                        return "idle";
                    }
                    if self.session.ping(b"").await.is_err() {
                        return "socket closed";
                    }
                }
            }
        }
    }

    async fn send(&mut self, text: String) -> bool {
        self.session.text(text).await.is_ok()
    }

    /// The outbound queue overflowed: empty it, leave every topic, and tell the client
    /// to resume each one from its last seq.
    async fn resync(&mut self, rx: &mut mpsc::Receiver<Outbound>) -> bool {
        let topics: Vec<String> = self.subs.keys().cloned().collect();
        self.leave_all();
        while rx.try_recv().is_ok() {}
        for topic in topics {
            if !self
                .send(json!({"type": "resync", "topic": topic, "reason": "slow_consumer"}).to_string())
                .await
            {
                return false;
            }
        }
        true
    }

    fn leave_all(&mut self) {
        for (_, addr) in self.subs.drain() {
            // Best effort: a topic that is gone has already forgotten us.
            let _ = addr.try_send(Unsubscribe { conn: self.id });
        }
    }

    async fn on_text(&mut self, text: &str) -> bool {
        let msg = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(e) => return self.send(error_frame(&e)).await,
        };
        // A message under an expired token is not acted on (a fresh token is).
        if self.expired() && !matches!(msg, ClientMessage::Auth { .. }) {
            self.end_expired().await;
            return false;
        }
        // Notices that arrived with this message are applied before it: a command sent
        // after a demotion took effect is judged by the new role.
        if !self.apply_pending_notices().await {
            return false;
        }
        match msg {
            ClientMessage::Ping {} => self.send(json!({"type": "pong"}).to_string()).await,
            ClientMessage::Subscribe { topic, since_seq } => match self.subscribe(&topic, since_seq).await {
                Ok(()) => true,
                Err(e) => self.send(error_frame(&e.details(json!({"topic": topic})))).await,
            },
            ClientMessage::Auth { token } => self.reauthenticate(&token).await,
            ClientMessage::Unsubscribe { topic } => {
                // The same name `subscribe` used, however the client spelled it.
                let Some(key) = Topic::parse(&topic).map(|t| t.key()) else {
                    return self.send(error_frame(&not_a_topic(&topic))).await;
                };
                if let Some(addr) = self.subs.remove(&key) {
                    let _ = addr.send(Unsubscribe { conn: self.id }).await;
                }
                self.send(json!({"type": "unsubscribed", "topic": key}).to_string()).await
            }
            ClientMessage::Presence { topic, state } => {
                if let Some(parsed) = Topic::parse(&topic) {
                    if let Err(e) = check_presence(&parsed, state.as_ref()) {
                        return self.send(error_frame(&e)).await;
                    }
                }
                let topic = Topic::parse(&topic).map(|t| t.key()).unwrap_or(topic);
                let too_big = state
                    .as_ref()
                    .is_some_and(|s| serde_json::to_string(s).map(|t| t.len()).unwrap_or(0) > 1024);
                let Some(addr) = self.subs.get(&topic).cloned() else {
                    return self
                        .send(error_frame(&ApiError::msg(
                            Code::InvalidBody,
                            format!("subscribe to {topic} before sending presence"),
                        )))
                        .await;
                };
                if too_big {
                    return self
                        .send(error_frame(&ApiError::msg(
                            Code::PayloadTooLarge,
                            "a presence state is at most 1 KiB",
                        )))
                        .await;
                }
                match addr.send(Presence { conn: self.id, state }).await {
                    Ok(_) => true,
                    Err(_) => self.send(error_frame(&ApiError::new(Code::Unavailable))).await,
                }
            }
            ClientMessage::Command { id, topic, op, args } => {
                let frame = match commands::run(&self.state, &self.principal, &mut self.known, &id, &topic, &op, args).await {
                    Ok(a) => json!({"type": "ack", "id": id, "seq": a.seq, "noop": a.noop}).to_string(),
                    Err(e) => nack_frame(&id, &e),
                };
                self.send(frame).await
            }
        }
    }

    fn expired(&self) -> bool {
        self.principal.expires_at.is_some_and(|exp| exp <= chrono::Utc::now().timestamp())
    }

    async fn end_expired(&mut self) {
        self.end(ApiError::msg(
            Code::TokenExpired,
            "the access token expired: send {\"type\": \"auth\", \"token\": …} with a fresh one before it expires, or reconnect",
        ))
        .await;
    }

    /// Whether an access change may concern this connection's credential.
    fn concerned_by(&self, change: &AccessChange) -> bool {
        let p = &self.principal;
        if change.workspace_id() != p.workspace_id {
            return false;
        }
        match (change, &p.actor) {
            (AccessChange::Member { user_id, .. }, Actor::User { id, .. }) => user_id == id,
            (AccessChange::ApiKey { key_id, .. }, Actor::ApiKey { id, .. }) => key_id == id,
            (AccessChange::Session { session_id, .. }, _) => p.session_id.as_deref() == Some(session_id.as_str()),
            _ => false,
        }
    }

    /// Applies the access notices already received; false when the connection closed.
    async fn apply_pending_notices(&mut self) -> bool {
        let mut concerned = false;
        loop {
            match self.access.try_recv() {
                Ok(change) => concerned |= self.concerned_by(&change),
                Err(broadcast::error::TryRecvError::Lagged(_)) => concerned = true,
                Err(_) => break,
            }
        }
        !concerned || self.recheck().await
    }

    /// Checks the connection's credential against who may act now: a credential that
    /// no longer works closes the connection (false); a changed role applies to the
    /// next command and ends the topics it may no longer read.
    async fn recheck(&mut self) -> bool {
        let mut p = self.principal.clone();
        let checked = match &mut p.actor {
            Actor::User { id, role } => match self.state.directory.standing(&p.workspace_id, id, p.session_id.as_deref()).await {
                Ok(standing) => role_in(standing).map(|r| *role = r),
                Err(e) => Err(e.into()),
            },
            Actor::ApiKey { id, .. } => match self.state.store.scoped(&self.principal.workspace_id).api_key(id).await {
                Ok(k) if k.revoked_at.is_none() => Ok(()),
                Ok(_) | Err(crate::store::StoreError::NotFound) => Err(ApiError::msg(Code::InvalidCredentials, "the API key was revoked")),
                Err(e) => Err(e.into()),
            },
        };
        match checked {
            Ok(()) => {
                self.principal = p;
                self.end_forbidden_topics().await
            }
            // The store is out of reach: keep what was known, and check again later.
            Err(e) if e.code == Code::Unavailable => true,
            Err(e) => {
                self.end(e).await;
                false
            }
        }
    }

    /// Ends, with an `unsubscribed` frame that says why, each followed topic the
    /// principal may no longer read.
    async fn end_forbidden_topics(&mut self) -> bool {
        let mut ended = Vec::new();
        for key in self.subs.keys() {
            if let Err(e) = Topic::parse(key)
                .ok_or_else(|| not_a_topic(key))
                .and_then(|t| permit(&self.principal, &t))
            {
                ended.push((key.clone(), e));
            }
        }
        for (key, e) in ended {
            if let Some(addr) = self.subs.remove(&key) {
                let _ = addr.send(Unsubscribe { conn: self.id }).await;
            }
            let frame = json!({"type": "unsubscribed", "topic": key, "code": e.code.name(), "message": e.message});
            if !self.send(frame.to_string()).await {
                return false;
            }
        }
        true
    }

    /// The credential no longer works: says why, then closes with
    /// [`CLOSE_UNAUTHORIZED`].
    async fn end(&mut self, e: ApiError) {
        let _ = self.send(error_frame(&e)).await;
        let reason = CloseReason {
            code: CloseCode::Other(CLOSE_UNAUTHORIZED),
            description: Some(e.code.name().to_string()),
        };
        let _ = self.session.clone().close(Some(reason)).await;
    }

    /// A fresh access token for the same member and workspace, sent before the one the
    /// connection opened with expires: the connection goes on under it.
    async fn reauthenticate(&mut self, token: &str) -> bool {
        let fresh = match principal_for_token(&self.state, token).await {
            Ok(p) => p,
            Err(e) => return self.send(error_frame(&e)).await,
        };
        let same = fresh.workspace_id == self.principal.workspace_id
            && match (&fresh.actor, &self.principal.actor) {
                (Actor::User { id: a, .. }, Actor::User { id: b, .. }) => a == b,
                (Actor::ApiKey { id: a, .. }, Actor::ApiKey { id: b, .. }) => a == b,
                _ => false,
            };
        if !same {
            let e = ApiError::msg(
                Code::Forbidden,
                "the token is another member's or another workspace's: open a new connection for it",
            );
            return self.send(error_frame(&e)).await;
        }
        self.principal = fresh;
        if !self.end_forbidden_topics().await {
            return false;
        }
        let expires_at = self.principal.expires_at.map(|t| crate::domain::fields::format_timestamp(t * 1000));
        self.send(json!({"type": "authenticated", "expires_at": expires_at}).to_string())
            .await
    }

    async fn subscribe(&mut self, raw: &str, since: Option<i64>) -> Result<(), ApiError> {
        let topic = authorize_known(&self.state, &self.principal, raw, &mut self.known).await?;
        let key = topic.key();
        if !self.subs.contains_key(&key) && self.subs.len() >= MAX_SUBSCRIPTIONS {
            return Err(ApiError::msg(
                Code::InvalidBody,
                format!("a connection follows at most {MAX_SUBSCRIPTIONS} topics"),
            ));
        }
        if let Some(old) = self.subs.remove(&key) {
            let _ = old.send(Unsubscribe { conn: self.id }).await;
        }
        let addr = self.state.directory.get(&topic, &self.principal.workspace_id);
        // Accept the topic's frames from now on: the replay is queued before any
        // later event.
        self.subs.insert(key.clone(), addr.clone());
        let user_id = match &self.principal.actor {
            Actor::User { id, .. } => id.clone(),
            Actor::ApiKey { id, .. } => format!("api_key:{id}"),
        };
        let msg = Subscribe {
            conn: self.id,
            user_id,
            since,
            tx: self.tx.clone(),
            overflow: self.overflow.clone(),
        };
        match addr.send(msg).await {
            Ok(SubscribeReply::Ok { seq, replayed, snapshot }) => {
                let f = json!({"type": "subscribed", "topic": key, "seq": seq, "replayed": replayed, "snapshot": snapshot});
                // Sent through the queue so that it follows the replay.
                let _ = self.tx.try_send(Outbound::Frame {
                    topic: key.clone().into(),
                    text: f.to_string().into(),
                });
                Ok(())
            }
            Ok(SubscribeReply::Unavailable) | Err(_) => {
                self.subs.remove(&key);
                Err(ApiError {
                    retry_after_secs: Some(1),
                    ..ApiError::new(Code::Unavailable)
                })
            }
        }
    }
}
