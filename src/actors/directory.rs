//! The node's directory of topic actors: activates a topic's actor on first use, hands
//! it committed events, forgets it when it passivates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::mpsc;

use super::tenant::{MembershipChanged, RoleOf, TenantActor};
use super::topic::{Publish, TopicActor};
use crate::domain::{Event, Topic};
use crate::store::Store;

/// Committed events waiting for their topic actor. When full, the store drops the
/// newest event (see `store::Publisher`): its topic recovers it from the log.
pub const EVENT_QUEUE: usize = 65_536;

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
            }),
        }
    }

    /// Connects the store's committed events to this node's topics and, when the node
    /// is in a cluster, to the other nodes.
    pub fn listen(&self, store: &Store, bus: Option<crate::bus::RedisBus>) {
        if let Some(b) = &bus {
            let _ = self.inner.bus.set(b.clone());
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

    /// Another node's viewers of a topic.
    pub fn dispatch_presence(&self, topic: &str, node: String, members: Vec<serde_json::Value>) {
        let addr = self.lock().get(topic).cloned();
        if let Some(addr) = addr {
            let _ = addr.try_send(super::topic::RemotePresence { node, members });
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

    /// A user's role in a workspace, from the workspace's tenant actor.
    pub async fn role_of(&self, workspace_id: &str, user_id: &str) -> Result<Option<crate::domain::Role>, crate::store::StoreError> {
        match self.tenant(workspace_id).send(RoleOf(user_id.to_string())).await {
            Ok(r) => r,
            // The tenant stopped between lookup and send: ask the store directly.
            Err(_) => Ok(self.inner.store.role_of(workspace_id, user_id).await?.and_then(|r| r.parse().ok())),
        }
    }

    /// Tells the workspace's tenant that a user's membership changed.
    pub async fn membership_changed(&self, workspace_id: &str, user_id: &str) {
        let _ = self.tenant(workspace_id).send(MembershipChanged(user_id.to_string())).await;
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
