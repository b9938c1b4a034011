//! Who is acting: a member (by an access token) or an API key, in one workspace, and
//! what their role or scopes let them do. Every transport finds its principal here.

use crate::actors::Standing;
use crate::auth::{token_digest, TokenError, API_KEY_PREFIX};
use crate::domain::{Access, Resource, Role, Scope};
use crate::store::{Scoped, Store};

use super::error::{ApiError, Code};
use super::AppState;

/// Who is making the request, in which workspace.
#[derive(Debug, Clone)]
pub struct Principal {
    pub workspace_id: String,
    pub actor: Actor,
    /// The sign-in session an access token belongs to (none for API keys, and for
    /// tokens issued before sessions were named in them).
    pub session_id: Option<String>,
    /// When the access token expires (Unix seconds); none for API keys.
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Actor {
    User { id: String, role: Role },
    ApiKey { id: String, scopes: Vec<Scope> },
}

impl Principal {
    pub fn allows(&self, resource: Resource, access: Access) -> bool {
        match &self.actor {
            Actor::User { role, .. } => role.allows(resource, access),
            Actor::ApiKey { scopes, .. } => scopes.iter().any(|s| s.permits(resource, access)),
        }
    }

    pub fn require(&self, resource: Resource, access: Access) -> Result<(), ApiError> {
        if self.allows(resource, access) {
            Ok(())
        } else {
            let verb = if access == Access::Read { "read" } else { "change" };
            Err(ApiError::msg(
                Code::Forbidden,
                format!("you may not {verb} {}", resource.as_str().replace('_', " ")),
            ))
        }
    }

    /// The user behind the request; API keys are refused for account-level actions.
    pub fn user(&self) -> Result<(&str, Role), ApiError> {
        match &self.actor {
            Actor::User { id, role } => Ok((id, *role)),
            Actor::ApiKey { .. } => Err(ApiError::msg(
                Code::Forbidden,
                "this endpoint needs a user's access token, not an API key",
            )),
        }
    }

    /// How the actor is named in audit entries and events.
    pub fn actor_id(&self) -> String {
        match &self.actor {
            Actor::User { id, .. } => format!("user:{id}"),
            Actor::ApiKey { id, .. } => format!("api_key:{id}"),
        }
    }

    pub fn scoped<'a>(&'a self, store: &'a Store) -> Scoped<'a> {
        store.scoped(&self.workspace_id)
    }
}

/// Who a bearer credential (access token or API key) stands for.
pub async fn principal_for_token(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    let principal = if token.starts_with(API_KEY_PREFIX) {
        let key = state.store.api_key_by_hash(&token_digest(token)).await?;
        let key = key
            .filter(|k| k.revoked_at.is_none())
            .ok_or_else(|| ApiError::new(Code::InvalidCredentials))?;
        let stale = key.last_used_at.is_none_or(|t| t < crate::store::now_ms() - 60_000);
        if stale {
            state.store.touch_api_key(&key.id).await?;
        }
        let scopes = key.scopes.iter().filter_map(|s| s.parse().ok()).collect();
        Principal {
            workspace_id: key.workspace_id,
            actor: Actor::ApiKey { id: key.id, scopes },
            session_id: None,
            expires_at: None,
        }
    } else {
        let claims = state.tokens.verify(token, chrono::Utc::now().timestamp()).map_err(|e| match e {
            TokenError::Expired => ApiError::new(Code::TokenExpired),
            _ => ApiError::new(Code::InvalidCredentials),
        })?;
        // The role and the session come from the workspace's tenant actor, which hears
        // of access changes at once: a removed member, a changed role or an ended
        // session takes effect on the next request, not when the token expires.
        let standing = state.directory.standing(&claims.ws, &claims.sub, claims.sid.as_deref()).await?;
        Principal {
            actor: Actor::User {
                id: claims.sub,
                role: role_in(standing)?,
            },
            workspace_id: claims.ws,
            session_id: claims.sid,
            expires_at: Some(claims.exp),
        }
    };
    Ok(principal)
}

/// The role a standing gives, or why it gives none.
pub fn role_in(standing: Standing) -> Result<Role, ApiError> {
    match standing {
        Standing::Member(role) => Ok(role),
        Standing::NotMember => Err(ApiError::msg(
            Code::InvalidCredentials,
            "you are no longer a member of this workspace",
        )),
        Standing::SessionEnded => Err(ApiError::msg(
            Code::InvalidCredentials,
            "this session has ended (logged out, or its refresh token was used twice): log in again",
        )),
    }
}
