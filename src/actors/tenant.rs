//! A workspace's tenant actor: keeps the members' roles in memory so that checking a
//! request's role does not read the store each time. Activated on first use, loaded
//! from the store, and told of every membership change made on this node; entries also
//! expire, so a change made elsewhere is seen within `ROLE_TTL`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::domain::Role;
use crate::store::{Store, StoreError};

/// How long a cached role is trusted without a change notice.
pub const ROLE_TTL: Duration = Duration::from_secs(30);
/// A tenant with no lookups for this long stops.
const IDLE: Duration = Duration::from_secs(600);

pub struct TenantActor {
    workspace_id: String,
    store: Store,
    /// user id → (role, or none for "not a member", and when it was read).
    roles: HashMap<String, (Option<Role>, Instant)>,
    last_used: Instant,
    directory: super::Directory,
}

impl TenantActor {
    pub fn new(workspace_id: String, store: Store, directory: super::Directory) -> Self {
        TenantActor {
            workspace_id,
            store,
            roles: HashMap::new(),
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
            if act.last_used.elapsed() > IDLE {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.directory.forget_tenant(&self.workspace_id, &ctx.address());
    }
}

/// The role of a user in this workspace; `None` if not a member.
#[derive(Message)]
#[rtype(result = "Result<Option<Role>, StoreError>")]
pub struct RoleOf(pub String);

impl Handler<RoleOf> for TenantActor {
    type Result = ResponseActFuture<Self, Result<Option<Role>, StoreError>>;

    fn handle(&mut self, msg: RoleOf, _: &mut Context<Self>) -> Self::Result {
        self.last_used = Instant::now();
        if let Some((role, at)) = self.roles.get(&msg.0) {
            if at.elapsed() < ROLE_TTL {
                let role = *role;
                return Box::pin(async move { Ok(role) }.into_actor(self));
            }
        }
        let (store, ws, user) = (self.store.clone(), self.workspace_id.clone(), msg.0);
        Box::pin(
            async move { (store.role_of(&ws, &user).await, user) }
                .into_actor(self)
                .map(|(res, user), act, _| {
                    let role = res?.and_then(|r| r.parse::<Role>().ok());
                    act.roles.insert(user, (role, Instant::now()));
                    Ok(role)
                }),
        )
    }
}

/// A membership changed on this node: forget what is cached for the user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct MembershipChanged(pub String);

impl Handler<MembershipChanged> for TenantActor {
    type Result = ();
    fn handle(&mut self, msg: MembershipChanged, _: &mut Context<Self>) {
        self.roles.remove(&msg.0);
    }
}
