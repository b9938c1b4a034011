//! The node's directory of topic actors: activates a topic's actor on first use, hands
//! it committed events, forgets it when it passivates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc;

use super::tenant::{Forget, Standing, StandingOf, TenantActor};
use super::topic::{Publish, TopicActor};
use crate::bus::Leases;
use crate::domain::{AccessChange, Event, Topic};
use crate::store::Store;

/// Committed events waiting for their topic actor. When full, the store drops the
/// newest event (see `store::Publisher`): its topic recovers it from the log.
pub const EVENT_QUEUE: usize = 65_536;
/// Access changes not yet seen by a connection. A connection that falls this far behind
/// is told it lagged and checks its credential and every topic it follows anew.
pub const ACCESS_NOTICES: usize = 1024;
/// The prefix of the presence "topic" on which nodes share who is connected.
const AVAILABILITY: &str = "availability:";
/// Boards whose owner this node remembers, before it forgets the stale ones.
const MAX_OWNERS_KNOWN: usize = 16_384;

#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    actors: Mutex<HashMap<String, Addr<TopicActor>>>,
    tenants: Mutex<HashMap<String, Addr<TenantActor>>>,
    store: Store,
    /// Topic actors run on their own thread, apart from the HTTP workers.
    arbiter: ArbiterHandle,
    passivate_after: Duration,
    persister: super::Persister,
    activations: AtomicU64,
    restarts: AtomicU64,
    /// The other nodes, when in a cluster.
    bus: std::sync::OnceLock<crate::bus::RedisBus>,
    /// Board leases, when in a cluster.
    leases: std::sync::OnceLock<Arc<Leases>>,
    /// The last known owner of each board this node routed a write for: `None` is this
    /// node. Trusted without asking Redis for a third of the lease time, and used as
    /// it is while Redis is unreachable.
    owners: Mutex<HashMap<String, (Option<String>, Instant)>>,
    /// Access changes, for this node's open connections.
    access: tokio::sync::broadcast::Sender<AccessChange>,
    /// Which members are connected, here and on the other nodes, and their status.
    availability: super::availability::Availability,
}

/// Where a board's writes go.
pub enum Route {
    /// This node owns the board; `fresh` when the lease was just read as ours, so the
    /// actor may claim the board in the store.
    Here { addr: Addr<TopicActor>, fresh: bool },
    /// The owner takes forwarded writes at this address.
    There(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryStats {
    pub active: usize,
    pub activations: u64,
    pub restarts: u64,
}

impl Directory {
    /// A directory whose actors run on `arbiter`; `listen` connects it to the store.
    pub fn start(store: Store, arbiter: ArbiterHandle, persister: super::Persister, passivate_after: Duration) -> Directory {
        Directory {
            inner: Arc::new(Inner {
                actors: Mutex::new(HashMap::new()),
                tenants: Mutex::new(HashMap::new()),
                store: store.clone(),
                arbiter,
                passivate_after,
                persister,
                activations: AtomicU64::new(0),
                restarts: AtomicU64::new(0),
                bus: std::sync::OnceLock::new(),
                leases: std::sync::OnceLock::new(),
                owners: Mutex::new(HashMap::new()),
                access: tokio::sync::broadcast::channel(ACCESS_NOTICES).0,
                availability: Default::default(),
            }),
        }
    }

    /// Connects the store's committed events to this node's topics and, when the node
    /// is in a cluster, to the other nodes.
    pub fn listen(&self, store: &Store, bus: Option<crate::bus::RedisBus>) {
        if let Some(b) = &bus {
            let _ = self.inner.bus.set(b.clone());
            let _ = self.inner.leases.set(b.leases());
        }
        if bus.is_some() {
            let d = self.clone();
            self.inner.arbiter.spawn(async move {
                let mut beat = tokio::time::interval(super::availability::HEARTBEAT);
                loop {
                    beat.tick().await;
                    for ws in d.inner.availability.local_workspaces() {
                        d.share_availability(&ws);
                    }
                    for ws in d.inner.availability.expire() {
                        d.show_availability(&ws);
                    }
                }
            });
        }
        let (tx, mut rx) = mpsc::channel::<Event>(EVENT_QUEUE);
        store.publish_to(tx);
        let d = self.clone();
        self.inner.arbiter.spawn(async move {
            while let Some(e) = rx.recv().await {
                if let Some(bus) = &bus {
                    bus.publish(&e);
                }
                d.dispatch(e);
            }
        });
    }

    /// Shares this node's viewers of a topic with the other nodes.
    pub(crate) fn share_presence(&self, topic: &str, members: Vec<serde_json::Value>) {
        if let Some(bus) = self.inner.bus.get() {
            bus.publish_presence(topic, members);
        }
    }

    /// Another node's viewers of a topic (or, for `availability:<workspace>`, its
    /// connected members).
    pub fn dispatch_presence(&self, topic: &str, node: String, members: Vec<serde_json::Value>) {
        if let Some(ws) = topic.strip_prefix(AVAILABILITY) {
            if self.inner.availability.remote(ws, &node, &members) {
                self.show_availability(ws);
            }
            return;
        }
        let addr = self.lock().get(topic).cloned();
        if let Some(addr) = addr {
            let _ = addr.try_send(super::topic::RemotePresence { node, members });
        }
    }

    /// A connection of a member opened here; `chosen` is the status they last chose
    /// (at `since`, Unix ms).
    pub fn member_connected(&self, ws: &str, user: &str, chosen: &str, since: i64) {
        if self.inner.availability.connected(ws, user, chosen, since) {
            self.availability_changed(ws);
        }
    }

    /// A member already connected here opened another connection: true (and counted)
    /// when they were.
    pub fn member_reconnected(&self, ws: &str, user: &str) -> bool {
        self.inner.availability.reconnected(ws, user)
    }

    /// A connection of a member closed here; with their last one anywhere they are
    /// offline.
    pub fn member_disconnected(&self, ws: &str, user: &str) {
        if self.inner.availability.disconnected(ws, user) {
            self.availability_changed(ws);
        }
    }

    /// A member chose a status.
    pub fn member_chose(&self, ws: &str, user: &str, status: &str, since: i64) {
        self.inner.availability.choose(ws, user, status, since);
        self.availability_changed(ws);
    }

    /// The workspace's connected members and their status; the others are offline.
    pub fn availability(&self, ws: &str) -> std::collections::BTreeMap<String, String> {
        self.inner.availability.of(ws)
    }

    fn availability_changed(&self, ws: &str) {
        self.share_availability(ws);
        self.show_availability(ws);
    }

    fn share_availability(&self, ws: &str) {
        if let Some(bus) = self.inner.bus.get() {
            bus.publish_presence(&format!("{AVAILABILITY}{ws}"), self.inner.availability.local(ws));
        }
    }

    /// Tells this node's followers of the workspace topic who is available now.
    fn show_availability(&self, ws: &str) {
        let topic = Topic::Workspace {
            workspace_id: ws.to_string(),
        }
        .key();
        let addr = self.lock().get(&topic).cloned();
        if let Some(addr) = addr {
            let frame = serde_json::json!({"type": "availability", "topic": topic, "members": self.availability(ws)});
            let _ = addr.try_send(super::topic::Ephemeral(frame.to_string().into()));
        }
    }

    /// Makes every active topic read what it may have missed from the log.
    pub fn catch_up_all(&self) {
        for addr in self.lock().values() {
            let _ = addr.try_send(super::topic::CatchUp);
        }
    }

    /// Hands an event to its topic's actor, if it is active on this node.
    pub fn dispatch(&self, e: Event) {
        let addr = self.lock().get(&e.topic).cloned();
        if let Some(addr) = addr {
            // A full mailbox drops the event; the topic fills the gap from the log.
            if addr.try_send(Publish(e)).is_err() {
                tracing::debug!("topic mailbox full; event left to gap recovery");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Addr<TopicActor>>> {
        self.inner.actors.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The topic's actor, activated if needed. `workspace_id` is the caller's, already
    /// checked to own the topic.
    pub fn get(&self, topic: &Topic, workspace_id: &str) -> Addr<TopicActor> {
        let key = topic.key();
        let mut actors = self.lock();
        if let Some(addr) = actors.get(&key) {
            if addr.connected() {
                return addr.clone();
            }
        }
        self.inner.activations.fetch_add(1, Ordering::Relaxed);
        let actor = TopicActor::new(
            topic.clone(),
            workspace_id.to_string(),
            self.inner.store.clone(),
            self.clone(),
            self.inner.persister.clone(),
            self.inner.passivate_after,
        );
        let addr = TopicActor::start_in_arbiter(&self.inner.arbiter, move |_| actor);
        actors.insert(key, addr.clone());
        addr
    }

    /// This node's board leases, when it is in a cluster.
    pub(crate) fn leases(&self) -> Option<Arc<Leases>> {
        self.inner.leases.get().cloned()
    }

    /// Where a board's writes go: this node when it holds the board's lease or takes
    /// it now, else the holder. `None` when the owner cannot be known (Redis down and
    /// no owner seen before).
    pub async fn route(&self, topic: &Topic, workspace_id: &str) -> Option<Route> {
        let Some(leases) = self.leases() else {
            return Some(Route::Here {
                addr: self.get(topic, workspace_id),
                fresh: false,
            });
        };
        let key = topic.key();
        let known = self.owners().get(&key).cloned();
        let trusted = known.as_ref().filter(|(_, seen)| seen.elapsed() < leases.ttl / 3);
        let (owner, fresh) = match trusted {
            Some((owner, _)) => (owner.clone(), false),
            None => match leases.acquire(&key).await {
                Ok(holder) => {
                    let owner = (!leases.is_mine(&holder)).then_some(holder.url);
                    let mut owners = self.owners();
                    if owners.len() >= MAX_OWNERS_KNOWN {
                        // Only recent sightings are worth keeping for a Redis outage.
                        owners.retain(|_, (_, seen)| seen.elapsed() < leases.ttl);
                    }
                    owners.insert(key.clone(), (owner.clone(), Instant::now()));
                    drop(owners);
                    (owner, true)
                }
                Err(e) => {
                    // Redis is down: keep writing where the board was, as this node last
                    // saw it or else as the store recorded its last claim; the store's
                    // fence keeps that safe.
                    tracing::warn!(topic = %key, error = %e, "cannot read the board's lease; using its last known owner");
                    match known {
                        Some((owner, _)) => (owner, false),
                        None => {
                            // This node's own last claim may be taken up again: a
                            // newer claim elsewhere would fence it.
                            let url = self.inner.store.topic_owner(&key).await.ok()??;
                            let mine = url == leases.url();
                            ((!mine).then_some(url), mine)
                        }
                    }
                }
            },
        };
        Some(match owner {
            None => Route::Here {
                addr: self.get(topic, workspace_id),
                fresh,
            },
            Some(url) => Route::There(url),
        })
    }

    /// Forgets where a board was owned, after a write found it elsewhere.
    pub fn forget_owner(&self, key: &str) {
        self.owners().remove(key);
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<String>, Instant)>> {
        self.inner.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tenant(&self, workspace_id: &str) -> Addr<TenantActor> {
        let mut tenants = self.inner.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(addr) = tenants.get(workspace_id) {
            if addr.connected() {
                return addr.clone();
            }
        }
        let actor = TenantActor::new(workspace_id.to_string(), self.inner.store.clone(), self.clone());
        let addr = TenantActor::start_in_arbiter(&self.inner.arbiter, move |_| actor);
        tenants.insert(workspace_id.to_string(), addr.clone());
        addr
    }

    /// Where a user (and their sign-in session, if named) stands in a workspace, from
    /// the workspace's tenant actor.
    pub async fn standing(
        &self,
        workspace_id: &str,
        user_id: &str,
        session_id: Option<&str>,
    ) -> Result<Standing, crate::store::StoreError> {
        let msg = StandingOf {
            user_id: user_id.to_string(),
            session_id: session_id.map(str::to_string),
        };
        match self.tenant(workspace_id).send(msg).await {
            Ok(r) => r,
            // The tenant stopped between lookup and send: ask the store directly.
            Err(_) => {
                let store = &self.inner.store;
                let role = store.role_of(workspace_id, user_id).await?.and_then(|r| r.parse().ok());
                let ended = match session_id {
                    Some(s) => store.session_ended(s).await?,
                    None => false,
                };
                Ok(Standing::of(role, ended))
            }
        }
    }

    /// Who may act changed here: applies it on this node and tells the other nodes.
    pub async fn access_changed(&self, change: AccessChange) {
        if let Some(bus) = self.inner.bus.get() {
            bus.publish_access(&change);
        }
        self.apply_access_change(change).await;
    }

    /// Applies an access change on this node: the tenant's cache first, so that the
    /// connections told next read the new state.
    pub async fn apply_access_change(&self, change: AccessChange) {
        let _ = self.tenant(change.workspace_id()).send(Forget(change.clone())).await;
        // No receiver (no open connection) is not an error.
        let _ = self.inner.access.send(change);
    }

    /// Access changes from now on, for an open connection.
    pub fn access_notices(&self) -> tokio::sync::broadcast::Receiver<AccessChange> {
        self.inner.access.subscribe()
    }

    pub(crate) fn forget_tenant(&self, workspace_id: &str, addr: &Addr<TenantActor>) {
        let mut tenants = self.inner.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if tenants.get(workspace_id) == Some(addr) {
            tenants.remove(workspace_id);
        }
    }

    /// Called by a stopping actor; keeps a newer actor of the same topic.
    pub(crate) fn forget(&self, key: &str, addr: &Addr<TopicActor>) {
        let mut actors = self.lock();
        if actors.get(key) == Some(addr) {
            actors.remove(key);
        }
    }

    pub(crate) fn count_restart(&self) {
        self.inner.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes the topic's actor, if active, panic in a handler.
    #[cfg(feature = "fault-injection")]
    pub async fn crash(&self, topic: &str) -> bool {
        let addr = self.lock().get(topic).cloned();
        match addr {
            Some(a) => a.send(super::topic::Crash).await.is_ok(),
            None => false,
        }
    }

    pub fn persister(&self) -> &super::Persister {
        &self.inner.persister
    }

    pub fn stats(&self) -> DirectoryStats {
        DirectoryStats {
            active: self.lock().len(),
            activations: self.inner.activations.load(Ordering::Relaxed),
            restarts: self.inner.restarts.load(Ordering::Relaxed),
        }
    }
}
