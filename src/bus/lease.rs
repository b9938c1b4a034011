//! Board ownership in a cluster: one node owns a board's actor at a time, by a lease
//! in Redis that the owner renews. The lease says who owns the board and where to
//! reach it; the store's fencing token (see `Store::claim_fence`) is what stops a node
//! that lost its lease without noticing (paused, partitioned) from writing.
//!
//! Keys: `<prefix>:lease:<topic>` holds `<node>|<url>` and, once the owner has claimed
//! the topic in the store, `<node>|<url>|<fence>`. It expires after the lease time
//! unless renewed.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// Takes the lease when nobody holds it; returns the holder either way.
const ACQUIRE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]";

/// Extends our lease and records our fencing token in it. A lease that vanished (Redis
/// restarted) is taken back: the store's fence still decides who may write.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] or string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Gives up the lease this exact value holds (not a newer one of the same node).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// After a failed connection, calls fail at once for this long instead of each
/// waiting for its own connection attempt.
const BACKOFF: Duration = Duration::from_secs(1);
/// The longest a lease call takes, waiting for the connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Who holds a topic's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    /// Where the holder takes forwarded writes.
    pub url: String,
    /// The holder's fencing token, once it has claimed the topic.
    pub fence: Option<i64>,
}

impl Holder {
    fn parse(value: &str) -> Option<Holder> {
        let mut parts = value.splitn(3, '|');
        let node = parts.next().filter(|n| !n.is_empty())?.to_string();
        let url = parts.next().filter(|u| !u.is_empty())?.to_string();
        let fence = match parts.next() {
            Some(f) => Some(f.parse().ok()?),
            None => None,
        };
        Some(Holder { node, url, fence })
    }
}

/// This node's side of the leases.
pub struct Leases {
    client: redis::Client,
    /// The shared connection, or when the last attempt to connect failed.
    conn: Mutex<Result<MultiplexedConnection, Option<Instant>>>,
    prefix: String,
    node: String,
    url: String,
    pub ttl: Duration,
}

impl Leases {
    pub fn new(client: redis::Client, prefix: &str, node: &str, url: &str, ttl: Duration) -> Leases {
        Leases {
            client,
            conn: Mutex::new(Err(None)),
            prefix: prefix.to_string(),
            node: node.to_string(),
            url: url.to_string(),
            ttl,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where this node takes forwarded writes.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(&self, topic: &str) -> String {
        format!("{}:lease:{topic}", self.prefix)
    }

    /// `<node>|<url>`: what our leases start with.
    fn base(&self) -> String {
        format!("{}|{}", self.node, self.url)
    }

    /// Runs a script; a failure drops the connection so the next call reconnects.
    async fn eval(&self, script: &str, key: &str, args: &[String]) -> redis::RedisResult<redis::Value> {
        match tokio::time::timeout(CALL_TIMEOUT, self.eval_unbounded(script, key, args)).await {
            Ok(r) => r,
            Err(_) => Err((redis::ErrorKind::IoError, "redis timed out").into()),
        }
    }

    async fn eval_unbounded(&self, script: &str, key: &str, args: &[String]) -> redis::RedisResult<redis::Value> {
        // The connection multiplexes: callers share it and only connecting is serialised.
        let mut conn = {
            let mut slot = self.conn.lock().await;
            match &*slot {
                Ok(c) => c.clone(),
                Err(Some(failed)) if failed.elapsed() < BACKOFF => {
                    return Err((redis::ErrorKind::IoError, "redis unreachable").into());
                }
                Err(_) => {
                    let connect = self.client.get_multiplexed_async_connection();
                    let c = match tokio::time::timeout(Duration::from_secs(1), connect).await {
                        Ok(Ok(c)) => c,
                        failed => {
                            *slot = Err(Some(Instant::now()));
                            return match failed {
                                Ok(Err(e)) => Err(e),
                                _ => Err((redis::ErrorKind::IoError, "redis connect timed out").into()),
                            };
                        }
                    };
                    *slot = Ok(c.clone());
                    c
                }
            }
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script).arg(1).arg(key);
        for a in args {
            cmd.arg(a);
        }
        let result = cmd.query_async::<redis::Value>(&mut conn).await;
        if result.is_err() {
            *self.conn.lock().await = Err(Some(Instant::now()));
        }
        result
    }

    /// The topic's holder, which is this node if nobody held it.
    pub async fn acquire(&self, topic: &str) -> redis::RedisResult<Holder> {
        let ttl = self.ttl.as_millis().to_string();
        let v = self.eval(ACQUIRE, &self.key(topic), &[self.base(), ttl]).await?;
        let text: String = redis::from_redis_value(&v)?;
        Holder::parse(&text).ok_or_else(|| (redis::ErrorKind::TypeError, "malformed lease").into())
    }

    /// Extends this node's lease of `topic`, stamped with `fence`. `Ok(false)`: another
    /// node holds it now.
    pub async fn renew(&self, topic: &str, fence: i64) -> redis::RedisResult<bool> {
        let base = self.base();
        let value = format!("{base}|{fence}");
        let ttl = self.ttl.as_millis().to_string();
        let v = self.eval(RENEW, &self.key(topic), &[base, value, ttl]).await?;
        Ok(redis::from_redis_value::<i64>(&v)? == 1)
    }

    /// Gives up this node's lease of `topic` held with `fence`.
    pub async fn release(&self, topic: &str, fence: i64) -> redis::RedisResult<()> {
        let value = format!("{}|{fence}", self.base());
        self.eval(RELEASE, &self.key(topic), &[value]).await.map(|_| ())
    }

    pub fn is_mine(&self, h: &Holder) -> bool {
        h.node == self.node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_name_the_node_its_address_and_its_fence() {
        assert_eq!(
            Holder::parse("n1|http://10.0.0.1:8080|7"),
            Some(Holder {
                node: "n1".into(),
                url: "http://10.0.0.1:8080".into(),
                fence: Some(7)
            })
        );
        assert_eq!(Holder::parse("n1|http://h:1").map(|h| h.fence), Some(None));
        assert_eq!(Holder::parse("n1"), None);
        assert_eq!(Holder::parse("n1|http://h:1|x"), None);
    }
}
