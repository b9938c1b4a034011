//! A workspace's tenant actor: keeps the members' roles, and which sign-in sessions
//! ended, in memory so that checking a request's credential does not read the store
//! each time. Activated on first use, loaded from the store, and told of every access
//! change made on this node or, in a cluster, on another; entries also expire, so a
//! change whose notice was lost is seen within `ROLE_TTL`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::domain::Role;
use crate::store::{Store, StoreError};

/// How long a cached role is trusted without a change notice.
pub const ROLE_TTL: Duration = Duration::from_secs(30);
/// Sessions remembered at most; past it, the oldest half is forgotten (and read again
/// when next used), so a flood of sign-ins cannot grow this without bound.
const MAX_SESSIONS: usize = 10_000;
/// A tenant with no lookups for this long stops.
const IDLE: Duration = Duration::from_secs(600);

pub struct TenantActor {
    workspace_id: String,
    store: Store,
    /// user id → (role, or none for "not a member", and when it was read).
    roles: HashMap<String, (Option<Role>, Instant)>,
    /// session id → (ended, when it was read). Bounded: see `MAX_SESSIONS`.
    sessions: HashMap<String, (bool, Instant)>,
    last_used: Instant,
    directory: super::Directory,
}

impl TenantActor {
    pub fn new(workspace_id: String, store: Store, directory: super::Directory) -> Self {
        TenantActor {
            workspace_id,
            store,
            roles: HashMap::new(),
            sessions: HashMap::new(),
            last_used: Instant::now(),
            directory,
        }
    }
}

impl Actor for TenantActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(Duration::from_secs(60), |act, ctx| {
            act.roles.retain(|_, (_, at)| at.elapsed() < ROLE_TTL);
            act.sessions.retain(|_, (_, at)| at.elapsed() < ROLE_TTL);
            if act.last_used.elapsed() > IDLE {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.directory.forget_tenant(&self.workspace_id, &ctx.address());
    }
}

/// Where a credential stands in this workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Member(Role),
    NotMember,
    /// The sign-in session the access token belongs to has ended.
    SessionEnded,
}

/// The standing of a user, and of their sign-in session when the token names one.
#[derive(Message)]
#[rtype(result = "Result<Standing, StoreError>")]
pub struct StandingOf {
    pub user_id: String,
    pub session_id: Option<String>,
}

impl TenantActor {
    fn cached(&self, msg: &StandingOf) -> Option<Standing> {
        let fresh = |at: &Instant| at.elapsed() < ROLE_TTL;
        let role = self.roles.get(&msg.user_id).filter(|(_, at)| fresh(at))?.0;
        let ended = match &msg.session_id {
            Some(s) => self.sessions.get(s).filter(|(_, at)| fresh(at))?.0,
            None => false,
        };
        Some(Standing::of(role, ended))
    }
}

impl Standing {
    pub fn of(role: Option<Role>, ended: bool) -> Standing {
        match (role, ended) {
            (None, _) => Standing::NotMember,
            (Some(_), true) => Standing::SessionEnded,
            (Some(r), false) => Standing::Member(r),
        }
    }
}

impl Handler<StandingOf> for TenantActor {
    type Result = ResponseActFuture<Self, Result<Standing, StoreError>>;

    fn handle(&mut self, msg: StandingOf, _: &mut Context<Self>) -> Self::Result {
        self.last_used = Instant::now();
        if let Some(s) = self.cached(&msg) {
            return Box::pin(async move { Ok(s) }.into_actor(self));
        }
        let (store, ws) = (self.store.clone(), self.workspace_id.clone());
        Box::pin(
            async move {
                let role = store.role_of(&ws, &msg.user_id).await;
                let ended = match &msg.session_id {
                    Some(s) => Some(store.session_ended(s).await),
                    None => None,
                };
                (role, ended, msg)
            }
            .into_actor(self)
            .map(|(role, ended, msg), act, _| {
                let role = role?.and_then(|r| r.parse::<Role>().ok());
                act.roles.insert(msg.user_id, (role, Instant::now()));
                let ended = match (ended, msg.session_id) {
                    (Some(e), Some(s)) => {
                        let e = e?;
                        if act.sessions.len() >= MAX_SESSIONS {
                            let mut ages: Vec<Instant> = act.sessions.values().map(|(_, at)| *at).collect();
                            ages.sort_unstable();
                            let cut = ages[ages.len() / 2];
                            act.sessions.retain(|_, (_, at)| *at > cut);
                        }
                        act.sessions.insert(s, (e, Instant::now()));
                        e
                    }
                    _ => false,
                };
                Ok(Standing::of(role, ended))
            }),
        )
    }
}

/// Who may act changed: forget what is cached of it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub crate::domain::AccessChange);

impl Handler<Forget> for TenantActor {
    type Result = ();
    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) {
        match msg.0 {
            crate::domain::AccessChange::Member { user_id, .. } => {
                self.roles.remove(&user_id);
            }
            // Ended for good: remembered as such until it expires from the cache.
            crate::domain::AccessChange::Session { session_id, .. } => {
                self.sessions.insert(session_id, (true, Instant::now()));
            }
            crate::domain::AccessChange::ApiKey { .. } => {}
        }
    }
}
