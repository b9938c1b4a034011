//! Fan-out between nodes through Redis pub/sub. Each node publishes the events it
//! commits and delivers the events other nodes publish to its own topic actors, which
//! put them in seq order and fill any gap from the shared event log. Redis is a fast
//! path, not the source of truth: when it is down, nodes keep serving, and when it
//! returns every active topic catches up from the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::ArbiterHandle;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::actors::Directory;
use crate::domain::{AccessChange, Event};

pub mod lease;
pub use lease::{Holder, Leases};

/// Events waiting to be published. When full (Redis slow or down), an event is not
/// published; other nodes get it from the event log with the next event of its topic
/// or when their subscription comes back.
pub const PUBLISH_QUEUE: usize = 65_536;
const RETRY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct RedisBus {
    client: redis::Client,
    node: String,
    tx: mpsc::Sender<Outgoing>,
    leases: Arc<Leases>,
}

/// What a node tells the others.
enum Outgoing {
    Event(Event),
    /// This node's viewers of a topic, as they are now.
    Presence {
        topic: String,
        members: Vec<Value>,
    },
    /// Who may act changed: the other nodes' open connections apply it too.
    Access(AccessChange),
}

/// How a node joins a cluster.
pub struct Membership<'a> {
    pub url: &'a str,
    /// The pub/sub channel; it also prefixes the cluster's keys.
    pub channel: &'a str,
    /// Where the other nodes reach this one.
    pub advertise_url: &'a str,
    pub lease_ttl: Duration,
}

impl RedisBus {
    /// Starts the publisher and the subscriber on `arbiter`.
    pub fn start(m: Membership<'_>, directory: Directory, arbiter: &ArbiterHandle) -> anyhow::Result<RedisBus> {
        let client = redis::Client::open(m.url).map_err(|e| anyhow::anyhow!("invalid redis_url: {e}"))?;
        let node = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        arbiter.spawn(publish(client.clone(), m.channel.to_string(), node.clone(), rx));
        arbiter.spawn(subscribe(client.clone(), m.channel.to_string(), node.clone(), directory));
        let leases = Arc::new(Leases::new(client.clone(), m.channel, &node, m.advertise_url, m.lease_ttl));
        Ok(RedisBus { client, node, tx, leases })
    }

    /// This node's board leases.
    pub fn leases(&self) -> Arc<Leases> {
        self.leases.clone()
    }

    /// Queues a committed event for the other nodes.
    pub fn publish(&self, e: &Event) {
        if self.tx.try_send(Outgoing::Event(e.clone())).is_err() {
            tracing::debug!(topic = %e.topic, "redis publish queue full; other nodes will read the log");
        }
    }

    /// Tells the other nodes who views `topic` here. Lost when the queue is full; the
    /// next heartbeat repeats it.
    pub fn publish_presence(&self, topic: &str, members: Vec<Value>) {
        let _ = self.tx.try_send(Outgoing::Presence {
            topic: topic.to_string(),
            members,
        });
    }

    /// Tells the other nodes of an access change. Lost when the queue is full or Redis
    /// is down; their caches then see it within the tenant's cache lifetime, and their
    /// connections when they next check (see `ws`).
    pub fn publish_access(&self, change: &AccessChange) {
        if self.tx.try_send(Outgoing::Access(change.clone())).is_err() {
            tracing::warn!(workspace = %change.workspace_id(), "redis publish queue full; an access change reaches other nodes late");
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Is Redis answering? For `/readyz`.
    pub async fn ping(&self) -> bool {
        let check = async {
            let mut c = self.client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut c).await.ok()
        };
        matches!(tokio::time::timeout(Duration::from_secs(1), check).await, Ok(Some(_)))
    }
}

fn wire(node: &str, e: &Event) -> String {
    let mut v = e.to_wire();
    v["type"] = json!("event");
    v["node"] = json!(node);
    v.to_string()
}

/// A message from another node.
#[derive(Debug, PartialEq)]
enum Incoming {
    Event(Event),
    Presence { topic: String, members: Vec<Value> },
    Access(AccessChange),
}

fn unwire_any(text: &str) -> Option<(String, Incoming)> {
    let v: Value = serde_json::from_str(text).ok()?;
    let node = v["node"].as_str()?.to_string();
    match v["type"].as_str()? {
        "event" => unwire(text).map(|(n, e)| (n, Incoming::Event(e))),
        "access" => Some((node, Incoming::Access(serde_json::from_value(v["change"].clone()).ok()?))),
        "presence" => Some((
            node,
            Incoming::Presence {
                topic: v["topic"].as_str()?.to_string(),
                members: v["members"].as_array()?.clone(),
            },
        )),
        _ => None,
    }
}

fn unwire(text: &str) -> Option<(String, Event)> {
    let v: Value = serde_json::from_str(text).ok()?;
    Some((v["node"].as_str()?.to_string(), Event::from_wire(&v)?))
}

async fn publish(client: redis::Client, channel: String, node: String, mut rx: mpsc::Receiver<Outgoing>) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut last_attempt: Option<Instant> = None;
    while let Some(out) = rx.recv().await {
        if conn.is_none() && last_attempt.is_none_or(|t| t.elapsed() >= RETRY) {
            last_attempt = Some(Instant::now());
            match client.get_multiplexed_async_connection().await {
                Ok(c) => {
                    tracing::info!("connected to redis for publishing");
                    conn = Some(c);
                }
                Err(err) => tracing::warn!(error = %err, "redis unreachable; events are not fanned out to other nodes"),
            }
        }
        // Without a connection the event is skipped: other nodes read it from the log.
        let Some(c) = conn.as_mut() else { continue };
        let text = match &out {
            Outgoing::Event(e) => wire(&node, e),
            Outgoing::Presence { topic, members } => {
                json!({"type": "presence", "node": node, "topic": topic, "members": members}).to_string()
            }
            Outgoing::Access(change) => json!({"type": "access", "node": node, "change": change}).to_string(),
        };
        let sent = redis::cmd("PUBLISH").arg(&channel).arg(text).query_async::<i64>(c).await;
        if let Err(err) = sent {
            tracing::warn!(error = %err, "redis publish failed; reconnecting");
            conn = None;
        }
    }
}

async fn subscribe(client: redis::Client, channel: String, node: String, directory: Directory) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut ps) => match ps.subscribe(&channel).await {
                Ok(()) => {
                    tracing::info!(%channel, "subscribed to redis");
                    // Whatever was published while we were away is in the log.
                    directory.catch_up_all();
                    let mut messages = ps.on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(text) = msg.get_payload::<String>() else { continue };
                        match unwire_any(&text) {
                            Some((from, _)) if from == node => {}
                            Some((_, Incoming::Event(e))) => {
                                tracing::debug!(topic = %e.topic, seq = e.seq, "event from another node");
                                directory.dispatch(e)
                            }
                            Some((from, Incoming::Presence { topic, members })) => directory.dispatch_presence(&topic, from, members),
                            Some((_, Incoming::Access(change))) => {
                                let d = directory.clone();
                                actix::spawn(async move { d.apply_access_change(change).await });
                            }
                            None => tracing::warn!("ignored a malformed message from redis"),
                        }
                    }
                    tracing::warn!("redis subscription lost; retrying");
                }
                Err(err) => tracing::warn!(error = %err, "redis subscribe failed; retrying"),
            },
            Err(err) => tracing::warn!(error = %err, "redis unreachable; retrying"),
        }
        // Back off before reconnecting, so a Redis outage is not a busy loop.
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cross_the_wire_unchanged() {
        let e = Event {
            topic: "board:x".into(),
            seq: 7,
            kind: "deal.moved".into(),
            data: json!({"id": "d"}).into(),
            actor: "user:u".into(),
            cause: Some("m1".into()),
            ts: 42,
        };
        assert_eq!(unwire(&wire("n1", &e)), Some(("n1".to_string(), e)));
        assert_eq!(unwire("{}"), None);
        let p = json!({"type": "presence", "node": "n2", "topic": "board:x", "members": [{"user_id": "u"}]}).to_string();
        assert_eq!(
            unwire_any(&p),
            Some((
                "n2".to_string(),
                Incoming::Presence {
                    topic: "board:x".into(),
                    members: vec![json!({"user_id": "u"})]
                }
            ))
        );
        let change = AccessChange::Session {
            workspace_id: "w".into(),
            user_id: "u".into(),
            session_id: "s".into(),
        };
        let a = json!({"type": "access", "node": "n3", "change": change}).to_string();
        assert_eq!(unwire_any(&a), Some(("n3".to_string(), Incoming::Access(change))));
    }
}
