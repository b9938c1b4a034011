//! A topic actor: the single place that orders a topic's events and fans them out.
//!
//! It delivers events strictly in seq order: one that arrives early waits for the gap
//! before it to be filled, from the event log if the missing event does not arrive
//! soon. It keeps the last events in a ring for resuming clients, the presence of the
//! topic's viewers, and, for a board, the board itself (stages and deals) so that a
//! new subscriber gets a snapshot without touching the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Notify};

use super::directory::Directory;
use super::inbox_window::{InboxWindow, WINDOW};
use super::{MAX_REPLAY, RING};
use crate::domain::objects::UNRESOLVED;
use crate::domain::query::{ListQuery, Sort};
use crate::domain::{Event, FieldValue, ObjectType, Topic};
use crate::store::Store;

/// How long a missing event may be awaited before it is read from the log.
const GAP_WAIT: Duration = Duration::from_millis(150);
/// Presence without a heartbeat expires after this long.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);

/// A frame for one connection's outbound queue, already serialised once for all
/// subscribers.
#[derive(Debug, Clone)]
pub enum Outbound {
    Frame { topic: Arc<str>, text: Arc<str> },
}

/// Raised by a topic when a connection's queue is full: the connection empties its
/// queue and tells the client to resync.
#[derive(Debug, Default)]
pub struct Overflow {
    raised: AtomicBool,
    pub notify: Notify,
}

impl Overflow {
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
    pub fn take(&self) -> bool {
        self.raised.swap(false, Ordering::SeqCst)
    }
}

struct Subscriber {
    user_id: String,
    tx: mpsc::Sender<Outbound>,
    overflow: Arc<Overflow>,
}

struct PresenceEntry {
    user_id: String,
    state: Value,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Loading its seq and state; messages wait.
    Loading,
    Ready,
}

pub struct TopicActor {
    topic: Topic,
    key: Arc<str>,
    workspace_id: String,
    store: Store,
    directory: Directory,
    phase: Phase,
    /// The last seq delivered to subscribers.
    seq: i64,
    /// Recent events as sent, for replay.
    ring: VecDeque<(i64, Arc<str>)>,
    /// Events that arrived before the ones preceding them.
    early: BTreeMap<i64, Event>,
    gap_check_scheduled: bool,
    subscribers: HashMap<u64, Subscriber>,
    presence: HashMap<u64, PresenceEntry>,
    /// Viewers on other nodes, per node, until their heartbeat lapses.
    remote_presence: HashMap<String, (Vec<Value>, Instant)>,
    /// When this node last told the others who views the topic here.
    presence_shared: Instant,
    /// For boards: the stages and deals, by id, as of `seq`.
    board: Option<Board>,
    /// For inboxes: the most recently active unresolved conversations, and how many
    /// are unresolved, as of `seq`.
    inbox: Option<InboxWindow>,
    last_active: Instant,
    passivate_after: Duration,
    /// Where this board's writes go, in the order they arrive here.
    persister: super::Persister,
    /// In a cluster, the board's fencing token while this node owns it. A node alone
    /// owns every board without a token.
    owner: Option<i64>,
}

#[derive(Default)]
struct Board {
    stages: HashMap<String, Value>,
    deals: HashMap<String, Value>,
}

impl Board {
    fn apply(&mut self, e: &Event) {
        if e.kind == "stage.rebalanced" {
            for (deal, rank) in e.data["ranks"].as_object().into_iter().flatten() {
                if let Some(d) = self.deals.get_mut(deal) {
                    d["rank"] = rank.clone();
                }
            }
            return;
        }
        let id = e.data["id"].as_str().unwrap_or_default().to_string();
        let map = match e.data["object_type"].as_str() {
            Some("deal") => &mut self.deals,
            Some("stage") => &mut self.stages,
            _ => return,
        };
        if e.kind.ends_with(".deleted") {
            map.remove(&id);
        } else if e.data["record"].is_object() {
            map.insert(id, e.data["record"].clone());
        }
    }

    fn snapshot(&self) -> Value {
        let mut stages: Vec<&Value> = self.stages.values().collect();
        stages.sort_by(|a, b| {
            (a["position"].as_i64().unwrap_or(0), a["id"].as_str()).cmp(&(b["position"].as_i64().unwrap_or(0), b["id"].as_str()))
        });
        let mut deals: Vec<&Value> = self.deals.values().collect();
        deals.sort_by(|a, b| {
            a["rank"]
                .as_str()
                .cmp(&b["rank"].as_str())
                .then(a["id"].as_str().cmp(&b["id"].as_str()))
        });
        json!({"stages": stages, "deals": deals})
    }
}

impl TopicActor {
    pub fn new(
        topic: Topic,
        workspace_id: String,
        store: Store,
        directory: Directory,
        persister: super::Persister,
        passivate_after: Duration,
    ) -> Self {
        let board = matches!(topic, Topic::Board { .. }).then(Board::default);
        let inbox = matches!(topic, Topic::Inbox { .. }).then(InboxWindow::default);
        TopicActor {
            key: topic.key().into(),
            topic,
            workspace_id,
            store,
            directory,
            phase: Phase::Loading,
            seq: 0,
            ring: VecDeque::with_capacity(RING),
            early: BTreeMap::new(),
            gap_check_scheduled: false,
            subscribers: HashMap::new(),
            presence: HashMap::new(),
            remote_presence: HashMap::new(),
            presence_shared: Instant::now(),
            board,
            inbox,
            last_active: Instant::now(),
            passivate_after,
            persister,
            owner: None,
        }
    }

    fn clustered(&self) -> bool {
        self.directory.leases().is_some()
    }

    /// Keeps this node's lease of the board while it owns it; steps down when another
    /// node holds the lease. While Redis is unreachable it keeps the board: the store's
    /// fence stops it should another node take over meanwhile.
    fn renew_lease(&mut self, ctx: &mut Context<Self>) {
        let (Some(leases), Some(fence)) = (self.directory.leases(), self.owner) else {
            return;
        };
        let key = self.key.to_string();
        ctx.spawn(
            async move { leases.renew(&key, fence).await }
                .into_actor(self)
                .map(move |res, act, _| match res {
                    Ok(true) => {}
                    Ok(false) => {
                        if act.owner == Some(fence) {
                            tracing::warn!(topic = %act.key, "another node took this board over");
                            act.owner = None;
                            act.directory.forget_owner(&act.key);
                        }
                    }
                    Err(e) => tracing::warn!(topic = %act.key, error = %e, "cannot renew the board's lease; keeping it"),
                }),
        );
    }

    /// Reads the topic's seq, then its state: any change committed in between is in
    /// the state and arrives again as an event, and applying an event twice is
    /// harmless (records are replaced whole).
    fn load(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Loading;
        let (store, key, ws, topic) = (
            self.store.clone(),
            self.key.to_string(),
            self.workspace_id.clone(),
            self.topic.clone(),
        );
        let fut = async move {
            let seq = store.topic_seq(&key).await?;
            let board = match &topic {
                Topic::Board { pipeline_id } => Some(load_board(&store, &ws, pipeline_id).await?),
                _ => None,
            };
            let inbox = match &topic {
                Topic::Inbox { inbox_id } => Some(load_inbox(&store, &ws, inbox_id).await?),
                _ => None,
            };
            Ok::<_, crate::store::StoreError>((seq, board, inbox))
        };
        ctx.wait(fut.into_actor(self).map(|res, act, ctx| match res {
            Ok((seq, board, inbox)) => {
                act.seq = seq;
                act.board = board;
                act.inbox = inbox;
                act.ring.clear();
                act.early.retain(|s, _| *s > seq);
                act.phase = Phase::Ready;
                act.drain_early(ctx);
            }
            Err(e) => {
                tracing::error!(topic = %act.key, error = %e, "topic could not load; stopping it");
                act.resync_all("unavailable");
                ctx.stop();
            }
        }));
    }

    fn deliver(&mut self, ctx: &mut Context<Self>, e: Event) {
        if e.seq <= self.seq {
            return;
        }
        if e.seq > self.seq + 1 {
            self.early.insert(e.seq, e);
            self.schedule_gap_check(ctx);
            return;
        }
        self.seq = e.seq;
        if let Some(b) = &mut self.board {
            b.apply(&e);
        }
        if self.inbox.as_mut().is_some_and(|i| i.apply(&e)) {
            self.refill_inbox(ctx);
        }
        let text: Arc<str> = e.frame().into();
        if self.ring.len() == RING {
            self.ring.pop_front();
        }
        self.ring.push_back((e.seq, text.clone()));
        self.broadcast(text);
        self.drain_early(ctx);
    }

    /// Reads the inbox's newest unresolved conversations again, its window having run
    /// short. Nothing else runs meanwhile, so no event is applied before them.
    fn refill_inbox(&mut self, ctx: &mut Context<Self>) {
        let Topic::Inbox { inbox_id } = &self.topic else {
            return;
        };
        let (store, ws, inbox_id) = (self.store.clone(), self.workspace_id.clone(), inbox_id.clone());
        let fut = async move { newest_open(&store, &ws, &inbox_id).await };
        ctx.wait(fut.into_actor(self).map(|res, act, _| match (res, &mut act.inbox) {
            (Ok(newest), Some(i)) => i.refill(newest),
            (Ok(_), None) => {}
            // Kept as it is: the next change that leaves it short tries again.
            (Err(e), _) => tracing::warn!(topic = %act.key, error = %e, "could not read the inbox's conversations again"),
        }));
    }

    fn drain_early(&mut self, ctx: &mut Context<Self>) {
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() > self.seq + 1 {
                break;
            }
            let e = entry.remove();
            self.deliver(ctx, e);
        }
    }

    fn schedule_gap_check(&mut self, ctx: &mut Context<Self>) {
        if self.gap_check_scheduled {
            return;
        }
        self.gap_check_scheduled = true;
        ctx.run_later(GAP_WAIT, |act, ctx| {
            act.gap_check_scheduled = false;
            if act.early.is_empty() {
                return;
            }
            let (store, key, since) = (act.store.clone(), act.key.to_string(), act.seq);
            let limit = act.early.keys().next_back().map(|last| last - since).unwrap_or(1);
            ctx.spawn(
                async move { store.events_after(&key, since, limit).await }
                    .into_actor(act)
                    .map(|res, act, ctx| match res {
                        Ok(events) => events.into_iter().for_each(|e| act.deliver(ctx, e)),
                        Err(e) => {
                            tracing::warn!(topic = %act.key, error = %e, "could not fill a gap from the event log; retrying");
                            act.schedule_gap_check(ctx);
                        }
                    }),
            );
        });
    }

    fn broadcast(&mut self, text: Arc<str>) {
        let frame = Outbound::Frame {
            topic: self.key.clone(),
            text,
        };
        self.subscribers.retain(|_, s| match s.tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.overflow.raise();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Tells every subscriber to resync and forgets them; used when the topic's state
    /// can no longer be trusted.
    fn resync_all(&mut self, reason: &str) {
        let text: Arc<str> = json!({"type": "resync", "topic": &*self.key, "reason": reason}).to_string().into();
        for (_, s) in self.subscribers.drain() {
            if s.tx
                .try_send(Outbound::Frame {
                    topic: self.key.clone(),
                    text: text.clone(),
                })
                .is_err()
            {
                s.overflow.raise();
            }
        }
        self.presence.clear();
    }

    fn local_members(&self) -> Vec<Value> {
        self.presence
            .values()
            .map(|p| json!({"user_id": p.user_id, "state": p.state}))
            .collect()
    }

    fn presence_frame(&self) -> Arc<str> {
        let mut members = self.local_members();
        for (list, _) in self.remote_presence.values() {
            members.extend(list.iter().cloned());
        }
        members.sort_by(|a, b| {
            a["user_id"]
                .as_str()
                .cmp(&b["user_id"].as_str())
                .then(a["state"].to_string().cmp(&b["state"].to_string()))
        });
        json!({"type": "presence", "topic": &*self.key, "members": members})
            .to_string()
            .into()
    }

    /// Presence changed here: tell this node's followers and the other nodes.
    fn presence_changed(&mut self) {
        let f = self.presence_frame();
        self.broadcast(f);
        self.directory.share_presence(&self.key, self.local_members());
        self.presence_shared = Instant::now();
    }

    fn snapshot_frame(&self) -> Arc<str> {
        let state = match (&self.board, &self.inbox) {
            (Some(b), _) => b.snapshot(),
            (_, Some(i)) => i.snapshot(),
            _ => json!({}),
        };
        json!({"type": "snapshot", "topic": &*self.key, "seq": self.seq, "state": state})
            .to_string()
            .into()
    }

    /// Runs a handler's work, turning a panic into a rebuild of the actor from the store
    /// instead of the loss of the node.
    fn guarded(&mut self, ctx: &mut Context<Self>, work: impl FnOnce(&mut Self, &mut Context<Self>)) {
        if catch_unwind(AssertUnwindSafe(|| work(self, ctx))).is_err() {
            self.directory.count_restart();
            tracing::error!(topic = %self.key, "topic actor failed; rebuilding it from the store");
            self.resync_all("restarted");
            self.early.clear();
            self.load(ctx);
        }
    }
}

async fn load_inbox(store: &Store, ws: &str, inbox_id: &str) -> Result<InboxWindow, crate::store::StoreError> {
    let open_total = store.scoped(ws).count_open_conversations(inbox_id).await?;
    Ok(InboxWindow::read(newest_open(store, ws, inbox_id).await?, open_total))
}

/// The inbox's unresolved conversations with the most recent activity, newest first,
/// as many as its actor keeps.
async fn newest_open(store: &Store, ws: &str, inbox_id: &str) -> Result<Vec<Value>, crate::store::StoreError> {
    let ty = ObjectType::Conversation;
    let field = |name: &str| ty.field(name).ok_or_else(|| anyhow::anyhow!("conversation has {name}"));
    let mut q = ListQuery {
        limit: crate::domain::query::MAX_LIMIT,
        ..ListQuery::newest_first()
    }
    .eq(field("inbox_id")?, FieldValue::Text(inbox_id.to_string()));
    q.sort = Sort {
        field: field("last_message_at")?,
        descending: true,
    };
    q.filters.push(crate::domain::query::Filter {
        field: field("status")?,
        op: crate::domain::query::Op::In,
        values: UNRESOLVED.map(|s| FieldValue::Text(s.into())).to_vec(),
    });
    let scoped = store.scoped(ws);
    let mut out = Vec::new();
    loop {
        let page = scoped.list(ty, &q).await?;
        out.extend(page.records.iter().map(|r| r.to_json(ty)));
        match page.next_cursor {
            Some(next) if out.len() < WINDOW => q = q.continue_after(&next).map_err(|e| anyhow::anyhow!("cursor: {e:?}"))?,
            _ => break,
        }
    }
    out.truncate(WINDOW);
    Ok(out)
}

async fn load_board(store: &Store, ws: &str, pipeline_id: &str) -> Result<Board, crate::store::StoreError> {
    let scoped = store.scoped(ws);
    let mut board = Board::default();
    for ty in [ObjectType::Stage, ObjectType::Deal] {
        let field = ty
            .field("pipeline_id")
            .ok_or_else(|| anyhow::anyhow!("{} has pipeline_id", ty.name()))?;
        let mut q = ListQuery {
            limit: crate::domain::query::MAX_LIMIT,
            ..ListQuery::newest_first()
        }
        .eq(field, FieldValue::Text(pipeline_id.to_string()));
        q.sort = Sort {
            field: &crate::domain::query::CREATED_AT,
            descending: false,
        };
        loop {
            let page = scoped.list(ty, &q).await?;
            let map = if ty == ObjectType::Deal {
                &mut board.deals
            } else {
                &mut board.stages
            };
            for r in &page.records {
                map.insert(r.id.clone(), r.to_json(ty));
            }
            let Some(next) = page.next_cursor else { break };
            q = q.continue_after(&next).map_err(|e| anyhow::anyhow!("cursor: {e:?}"))?;
        }
    }
    Ok(board)
}

impl Actor for TopicActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Commands and publishes wait in a bounded mailbox; senders block when it is
        // full (REST and WebSocket callers await, the directory drops and the topic
        // catches up from the log).
        ctx.set_mailbox_capacity(1024);
        self.load(ctx);
        if let Some(leases) = self.directory.leases() {
            ctx.run_interval(leases.ttl / 3, |act, ctx| act.renew_lease(ctx));
        }
        ctx.run_interval(Duration::from_secs(5), |act, ctx| {
            let now = Instant::now();
            let before = act.presence.len();
            act.presence.retain(|_, p| p.expires > now);
            let remote_before = act.remote_presence.len();
            act.remote_presence.retain(|_, (_, expires)| *expires > now);
            if act.presence.len() != before {
                act.presence_changed();
            } else if act.remote_presence.len() != remote_before {
                let f = act.presence_frame();
                act.broadcast(f);
            } else if !act.presence.is_empty() && act.presence_shared.elapsed() > PRESENCE_TTL / 3 {
                // A heartbeat, so the other nodes keep showing this node's viewers.
                act.directory.share_presence(&act.key, act.local_members());
                act.presence_shared = now;
            }
            if act.subscribers.is_empty() && act.last_active.elapsed() > act.passivate_after {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.directory.forget(&self.key, &ctx.address());
        if let (Some(leases), Some(fence)) = (self.directory.leases(), self.owner.take()) {
            // Passivated: let the next writer's node take the board at once.
            let key = self.key.to_string();
            actix::spawn(async move {
                if let Err(e) = leases.release(&key, fence).await {
                    tracing::debug!(topic = %key, error = %e, "lease not released; it expires");
                }
            });
        }
        self.resync_all("closed");
    }
}

/// A write of this board, to be queued for the persister behind every earlier one:
/// the actor is the board's single writer.
#[derive(Message)]
#[rtype(result = "Result<(), super::persister::Refused>")]
pub struct Ordered(pub Submit);

/// Queues one write on the persister, fenced with the board's topic and token when
/// the node is in a cluster.
pub type Submit = Box<dyn FnOnce(&super::Persister, Option<(String, i64)>) -> Result<(), super::persister::Refused> + Send>;

impl Handler<Ordered> for TopicActor {
    type Result = Result<(), super::persister::Refused>;
    fn handle(&mut self, msg: Ordered, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        if !self.clustered() {
            return (msg.0)(&self.persister, None);
        }
        match self.owner {
            Some(token) => (msg.0)(&self.persister, Some((self.key.to_string(), token))),
            None => Err(super::persister::Refused::NotOwner),
        }
    }
}

/// This node holds the board's lease: become its owner, claiming it in the store.
/// Later messages wait until the claim is done and the board caught up from the log.
#[derive(Message)]
#[rtype(result = "Result<(), crate::store::StoreError>")]
pub struct Own;

impl Handler<Own> for TopicActor {
    type Result = AtomicResponse<Self, Result<(), crate::store::StoreError>>;
    fn handle(&mut self, _: Own, _: &mut Context<Self>) -> Self::Result {
        if self.owner.is_some() || !self.clustered() {
            return AtomicResponse::new(Box::pin(fut::ready(Ok(()))));
        }
        let (store, key, ws) = (self.store.clone(), self.key.to_string(), self.workspace_id.clone());
        let url = self.directory.leases().map(|l| l.url().to_string()).unwrap_or_default();
        AtomicResponse::new(Box::pin(
            async move {
                let fence = store.claim_fence(&key, &ws, &url).await?;
                // Nothing the previous owner wrote can commit after the claim; read it all.
                let seq = store.topic_seq(&key).await?;
                Ok::<_, crate::store::StoreError>((fence, seq))
            }
            .into_actor(self)
            .map(|res, act, ctx| {
                let (fence, seq) = res?;
                tracing::info!(topic = %act.key, fence, "this node owns the board now");
                act.owner = Some(fence);
                act.renew_lease(ctx);
                if seq > act.seq {
                    ctx.notify(CatchUp);
                }
                Ok(())
            }),
        ))
    }
}

/// A write fenced with `token` was refused by the store: another node owns the board.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disown(pub i64);

impl Handler<Disown> for TopicActor {
    type Result = ();
    fn handle(&mut self, msg: Disown, _: &mut Context<Self>) {
        if self.owner == Some(msg.0) {
            tracing::warn!(topic = %self.key, "the store refused this node's fence; another node owns the board");
            self.owner = None;
            self.directory.forget_owner(&self.key);
        }
    }
}

/// Makes the actor panic inside a handler, to test that it is rebuilt.
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(feature = "fault-injection")]
impl Handler<Crash> for TopicActor {
    type Result = ();
    fn handle(&mut self, _: Crash, ctx: &mut Context<Self>) {
        self.guarded(ctx, |_, _| panic!("injected fault"));
    }
}

/// Read the log for events this topic may have missed (another node's, while the
/// bus was down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CatchUp;

impl Handler<CatchUp> for TopicActor {
    type Result = ();
    fn handle(&mut self, _: CatchUp, ctx: &mut Context<Self>) {
        if self.phase != Phase::Ready {
            return;
        }
        let (store, key, since) = (self.store.clone(), self.key.to_string(), self.seq);
        ctx.spawn(
            async move { store.events_after(&key, since, MAX_REPLAY).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(events) => events.into_iter().for_each(|e| act.deliver(ctx, e)),
                    Err(e) => tracing::warn!(topic = %act.key, error = %e, "catch-up from the log failed"),
                }),
        );
    }
}

/// A committed event of this topic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish(pub Event);

impl Handler<Publish> for TopicActor {
    type Result = ();
    fn handle(&mut self, msg: Publish, ctx: &mut Context<Self>) {
        self.guarded(ctx, |act, ctx| {
            if act.phase == Phase::Loading {
                act.early.insert(msg.0.seq, msg.0);
            } else {
                act.deliver(ctx, msg.0);
            }
        });
    }
}

/// Subscribe a connection; the reply comes after the replay or snapshot has been
/// queued, and every later event follows it in order.
#[derive(Message)]
#[rtype(result = "SubscribeReply")]
pub struct Subscribe {
    pub conn: u64,
    pub user_id: String,
    pub since: Option<i64>,
    pub tx: mpsc::Sender<Outbound>,
    pub overflow: Arc<Overflow>,
}

#[derive(Debug, Clone, MessageResponse)]
pub enum SubscribeReply {
    /// Subscribed; the client is now at `seq`.
    Ok {
        seq: i64,
        replayed: usize,
        snapshot: bool,
    },
    Unavailable,
}

impl Handler<Subscribe> for TopicActor {
    type Result = ResponseActFuture<Self, SubscribeReply>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        // A position this topic never had, or more missed events than the client's
        // queue can take at once: a snapshot is the way back.
        let room = i64::try_from(msg.tx.capacity()).unwrap_or(i64::MAX) - 2;
        let since = msg
            .since
            .filter(|s| *s >= 0 && *s <= self.seq && self.seq - *s <= room.min(MAX_REPLAY));
        let missed = since.map(|s| self.seq - s);
        let in_ring = since.is_some_and(|s| self.ring.front().map(|(first, _)| *first <= s + 1).unwrap_or(s == self.seq));
        let replay_from_log = matches!(missed, Some(m) if m <= MAX_REPLAY) && !in_ring;
        let (store, key, seq) = (self.store.clone(), self.key.to_string(), self.seq);
        let fetch = async move {
            match (replay_from_log, since) {
                (true, Some(s)) => store.events_after(&key, s, seq - s).await.map(Some),
                _ => Ok(None),
            }
        };
        Box::pin(fetch.into_actor(self).map(move |fetched, act, _ctx| {
            let key = act.key.clone();
            let send = |text: Arc<str>| msg.tx.try_send(Outbound::Frame { topic: key.clone(), text }).is_ok();
            let (mut replayed, mut snapshot) = (0, false);
            let ok = match (since, fetched) {
                (Some(s), Ok(None)) if in_ring => {
                    let frames: Vec<Arc<str>> = act.ring.iter().filter(|(q, _)| *q > s).map(|(_, t)| t.clone()).collect();
                    replayed = frames.len();
                    frames.into_iter().all(send)
                }
                (Some(_), Ok(Some(events))) => {
                    // The log was read while events kept arriving; send what the log
                    // had up to our position, then the ring covers the rest.
                    let upto = act.seq;
                    let mut ok = true;
                    let mut last = since.unwrap_or(0);
                    for e in events.iter().filter(|e| e.seq <= upto) {
                        ok &= send(e.frame().into());
                        last = e.seq;
                        replayed += 1;
                    }
                    let from = last;
                    for (q, t) in act.ring.iter().filter(|(q, _)| *q > from) {
                        ok &= send(t.clone());
                        last = *q;
                        replayed += 1;
                    }
                    ok && last == upto
                }
                (_, Err(e)) => {
                    tracing::warn!(topic = %act.key, error = %e, "replay failed");
                    return SubscribeReply::Unavailable;
                }
                _ => {
                    snapshot = true;
                    send(act.snapshot_frame())
                }
            };
            if !ok {
                msg.overflow.raise();
                return SubscribeReply::Ok {
                    seq: act.seq,
                    replayed,
                    snapshot,
                };
            }
            if !act.presence.is_empty() || !act.remote_presence.is_empty() {
                send(act.presence_frame());
            }
            act.subscribers.insert(
                msg.conn,
                Subscriber {
                    user_id: msg.user_id,
                    tx: msg.tx,
                    overflow: msg.overflow,
                },
            );
            SubscribeReply::Ok {
                seq: act.seq,
                replayed,
                snapshot,
            }
        }))
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub conn: u64,
}

impl Handler<Unsubscribe> for TopicActor {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        self.subscribers.remove(&msg.conn);
        if self.presence.remove(&msg.conn).is_some() {
            self.presence_changed();
        }
        self.last_active = Instant::now();
    }
}

/// A connection's presence on the topic (viewing, dragging a card, replying…);
/// `None` leaves. Re-sent as a heartbeat, or it expires.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Presence {
    pub conn: u64,
    pub state: Option<Map<String, Value>>,
}

/// The conversation a presence state replies to, if it says `replying`.
fn replying_to(state: &Value) -> Option<&str> {
    (state["activity"] == "replying")
        .then(|| state["conversation_id"].as_str())
        .flatten()
}

impl TopicActor {
    /// Collision guard: a member starts replying to a conversation others are replying
    /// to already. Everyone replying to it who is connected here is told who is.
    /// `local`: the connection that started here, if it did; `remote`: members who
    /// started on another node.
    fn warn_of_collision(&mut self, conversation: &str, local: Option<u64>, remote: &[String]) {
        let mut here: Vec<(u64, &str)> = self
            .presence
            .iter()
            .filter(|(_, p)| replying_to(&p.state) == Some(conversation))
            .map(|(c, p)| (*c, p.user_id.as_str()))
            .collect();
        here.sort_unstable();
        let mut users: Vec<String> = here.iter().map(|(_, u)| u.to_string()).collect();
        for (list, _) in self.remote_presence.values() {
            for m in list.iter().filter(|m| replying_to(&m["state"]) == Some(conversation)) {
                users.extend(m["user_id"].as_str().map(str::to_string));
            }
        }
        users.sort_unstable();
        users.dedup();
        if users.len() < 2 {
            return;
        }
        // Connections here to tell: all replying here when one started here; when one
        // started elsewhere, those here (their node tells its own).
        let tell: Vec<u64> = match (local, remote.is_empty()) {
            (Some(_), _) | (None, false) => here.iter().map(|(c, _)| *c).collect(),
            (None, true) => Vec::new(),
        };
        let text: Arc<str> = json!({"type": "collision", "topic": &*self.key, "conversation_id": conversation, "replying": users})
            .to_string()
            .into();
        for conn in tell {
            if let Some(s) = self.subscribers.get(&conn) {
                let frame = Outbound::Frame {
                    topic: self.key.clone(),
                    text: text.clone(),
                };
                if s.tx.try_send(frame).is_err() {
                    s.overflow.raise();
                }
            }
        }
    }
}

impl Handler<Presence> for TopicActor {
    type Result = bool;
    fn handle(&mut self, msg: Presence, _: &mut Context<Self>) -> bool {
        let Some(user_id) = self.subscribers.get(&msg.conn).map(|s| s.user_id.clone()) else {
            return false;
        };
        let was_replying = self.presence.get(&msg.conn).and_then(|p| replying_to(&p.state).map(str::to_string));
        let now_replying = msg.state.as_ref().and_then(|s| {
            (s.get("activity") == Some(&json!("replying")))
                .then(|| s.get("conversation_id").and_then(Value::as_str).map(str::to_string))
                .flatten()
        });
        let changed = match msg.state {
            None => self.presence.remove(&msg.conn).is_some(),
            Some(state) => {
                let state = Value::Object(state);
                let same = self.presence.get(&msg.conn).is_some_and(|p| p.state == state);
                self.presence.insert(
                    msg.conn,
                    PresenceEntry {
                        user_id,
                        state,
                        expires: Instant::now() + PRESENCE_TTL,
                    },
                );
                !same
            }
        };
        if changed {
            self.presence_changed();
        }
        if let Some(conversation) = now_replying.filter(|c| self.inbox.is_some() && was_replying.as_ref() != Some(c)) {
            self.warn_of_collision(&conversation, Some(msg.conn), &[]);
        }
        true
    }
}

/// A frame for every follower of the topic that is not an event: it has no seq and
/// is not replayed (who is available, say).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ephemeral(pub Arc<str>);

impl Handler<Ephemeral> for TopicActor {
    type Result = ();
    fn handle(&mut self, msg: Ephemeral, _: &mut Context<Self>) {
        self.broadcast(msg.0);
    }
}

/// Another node's viewers of this topic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemotePresence {
    pub node: String,
    pub members: Vec<Value>,
}

impl Handler<RemotePresence> for TopicActor {
    type Result = ();
    fn handle(&mut self, msg: RemotePresence, _: &mut Context<Self>) {
        let previous = if msg.members.is_empty() {
            self.remote_presence.remove(&msg.node).map(|(m, _)| m)
        } else {
            self.remote_presence
                .insert(msg.node, (msg.members.clone(), Instant::now() + PRESENCE_TTL))
                .map(|(m, _)| m)
        };
        let previous = previous.unwrap_or_default();
        if previous != msg.members {
            let f = self.presence_frame();
            self.broadcast(f);
        }
        if self.inbox.is_some() {
            // Members the other node says started replying since it last said.
            let before: Vec<(Option<&str>, Option<&str>)> =
                previous.iter().map(|m| (m["user_id"].as_str(), replying_to(&m["state"]))).collect();
            let mut started: Vec<(String, String)> = Vec::new();
            for m in &msg.members {
                let (user, conv) = (m["user_id"].as_str(), replying_to(&m["state"]));
                if let (Some(u), Some(c)) = (user, conv) {
                    if !before.contains(&(Some(u), Some(c))) {
                        started.push((c.to_string(), u.to_string()));
                    }
                }
            }
            for (conversation, user) in started {
                self.warn_of_collision(&conversation, None, &[user]);
            }
        }
    }
}
