//! Who of a workspace's members is available to take conversations. A member is
//! online, busy or offline as they chose, while at least one of their connections is
//! open on some node; with none, offline. Each node counts its own connections and,
//! in a cluster, tells the others who is connected there (repeated as a heartbeat, and
//! forgotten when a node falls silent), so every node knows the whole workspace.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long another node's list is trusted without a repeat.
pub const REMOTE_TTL: Duration = Duration::from_secs(30);
/// How often a node repeats its list to the others.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// The statuses a member may choose.
pub const STATUSES: [&str; 3] = ["online", "busy", "offline"];

/// One member on one node: their chosen status (and since when, Unix ms, so that the
/// latest choice wins across nodes) and how many connections they have open there.
#[derive(Debug, Clone)]
struct Here {
    status: String,
    since: i64,
    connections: usize,
}

/// One node's members as it last said: user → (status, since).
type Listed = HashMap<String, (String, i64)>;

#[derive(Default)]
struct Workspace {
    here: HashMap<String, Here>,
    /// Other nodes' members: node → (their list, until when it is trusted).
    remote: HashMap<String, (Listed, Instant)>,
}

#[derive(Default)]
pub struct Availability {
    workspaces: Mutex<HashMap<String, Workspace>>,
}

impl Availability {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Workspace>> {
        self.workspaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection of `user` opened here; `chosen` is the status they last chose.
    /// True when they were not connected here before.
    pub fn connected(&self, ws: &str, user: &str, chosen: &str, since: i64) -> bool {
        let mut all = self.lock();
        let w = all.entry(ws.to_string()).or_default();
        match w.here.get_mut(user) {
            Some(h) => {
                h.connections += 1;
                false
            }
            None => {
                w.here.insert(
                    user.to_string(),
                    Here {
                        status: chosen.to_string(),
                        since,
                        connections: 1,
                    },
                );
                true
            }
        }
    }

    /// Another connection of a member already connected here: true (and counted) when
    /// they were, so their chosen status need not be read again.
    pub fn reconnected(&self, ws: &str, user: &str) -> bool {
        match self.lock().get_mut(ws).and_then(|w| w.here.get_mut(user)) {
            Some(h) => {
                h.connections += 1;
                true
            }
            None => false,
        }
    }

    /// A connection of `user` closed here. True when it was their last one here.
    pub fn disconnected(&self, ws: &str, user: &str) -> bool {
        let mut all = self.lock();
        let Some(w) = all.get_mut(ws) else { return false };
        let last = match w.here.get_mut(user) {
            Some(h) if h.connections > 1 => {
                h.connections -= 1;
                false
            }
            Some(_) => {
                w.here.remove(user);
                true
            }
            None => false,
        };
        if w.here.is_empty() && w.remote.is_empty() {
            all.remove(ws);
        }
        last
    }

    /// `user` chose a status; it applies to their connections here at once.
    pub fn choose(&self, ws: &str, user: &str, status: &str, since: i64) {
        if let Some(h) = self.lock().get_mut(ws).and_then(|w| w.here.get_mut(user)) {
            h.status = status.to_string();
            h.since = since;
        }
    }

    /// Another node's members of `ws`, as it says now. True when that changed anything.
    pub fn remote(&self, ws: &str, node: &str, members: &[Value]) -> bool {
        let list: Listed = members
            .iter()
            .filter_map(|m| {
                Some((
                    m["user_id"].as_str()?.to_string(),
                    (m["status"].as_str()?.to_string(), m["since"].as_i64().unwrap_or(0)),
                ))
            })
            .collect();
        let mut all = self.lock();
        let w = all.entry(ws.to_string()).or_default();
        let changed = w.remote.get(node).map(|(l, _)| l) != Some(&list);
        if list.is_empty() {
            w.remote.remove(node);
        } else {
            w.remote.insert(node.to_string(), (list, Instant::now() + REMOTE_TTL));
        }
        changed
    }

    /// Forgets other nodes that fell silent; the workspaces that changed.
    pub fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut changed = Vec::new();
        let mut all = self.lock();
        for (ws, w) in all.iter_mut() {
            let before = w.remote.len();
            w.remote.retain(|_, (_, until)| *until > now);
            if w.remote.len() != before {
                changed.push(ws.clone());
            }
        }
        all.retain(|_, w| !w.here.is_empty() || !w.remote.is_empty());
        changed
    }

    /// This node's members of `ws`, as the other nodes are told.
    pub fn local(&self, ws: &str) -> Vec<Value> {
        self.lock()
            .get(ws)
            .map(|w| {
                w.here
                    .iter()
                    .map(|(u, h)| json!({"user_id": u, "status": h.status, "since": h.since}))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Workspaces with members connected here.
    pub fn local_workspaces(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, w)| !w.here.is_empty())
            .map(|(ws, _)| ws.clone())
            .collect()
    }

    /// Every connected member of `ws` on any node, with their status (the latest
    /// choice wins). Members not listed are offline.
    pub fn of(&self, ws: &str) -> BTreeMap<String, String> {
        let all = self.lock();
        let Some(w) = all.get(ws) else {
            return BTreeMap::new();
        };
        let now = Instant::now();
        let mut best: HashMap<&str, (&str, i64)> = HashMap::new();
        let remote = w
            .remote
            .values()
            .filter(|(_, until)| *until > now)
            .flat_map(|(list, _)| list.iter().map(|(u, (s, t))| (u.as_str(), s.as_str(), *t)));
        let here = w.here.iter().map(|(u, h)| (u.as_str(), h.status.as_str(), h.since));
        for (user, status, since) in here.chain(remote) {
            let e = best.entry(user).or_insert((status, since));
            if since > e.1 {
                *e = (status, since);
            }
        }
        best.into_iter().map(|(u, (s, _))| (u.to_string(), s.to_string())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_available_while_a_connection_is_open_on_any_node() {
        let a = Availability::default();
        assert!(a.connected("w", "ann", "online", 1));
        assert!(!a.connected("w", "ann", "online", 1));
        a.choose("w", "ann", "busy", 2);
        assert_eq!(a.of("w").get("ann").map(String::as_str), Some("busy"));
        assert!(!a.disconnected("w", "ann"));
        assert!(a.disconnected("w", "ann"), "the last connection");
        assert!(a.of("w").is_empty());

        // Connected on another node only; a later choice there wins over one here.
        a.remote("w", "n2", &[json!({"user_id": "bob", "status": "online", "since": 5})]);
        a.connected("w", "bob", "busy", 3);
        assert_eq!(a.of("w").get("bob").map(String::as_str), Some("online"));
        a.disconnected("w", "bob");
        assert!(a.remote("w", "n2", &[]));
        assert!(a.of("w").is_empty());
    }
}
