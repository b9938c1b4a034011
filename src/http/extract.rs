//! Request extractors: the authenticated principal, and JSON bodies read under the
//! size limit and turned into table errors instead of actix's defaults.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::error::{ApiError, Code};
use super::AppState;
use crate::actors::Standing;
use crate::auth::{token_digest, TokenError, API_KEY_PREFIX};
use crate::domain::{Access, Resource, Role, Scope};
use crate::store::{Scoped, Store};

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

fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::new(Code::Unauthenticated))?;
    let value = value.to_str().map_err(|_| ApiError::new(Code::InvalidCredentials))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::new(Code::Unauthenticated))?;
    Ok(token.trim().to_string())
}

pub async fn authenticate(state: &AppState, req: &HttpRequest) -> Result<Principal, ApiError> {
    if let Some(p) = req.extensions().get::<Principal>() {
        return Ok(p.clone());
    }
    let principal = principal_for_token(state, &bearer(req)?).await?;
    req.extensions_mut().insert(principal.clone());
    Ok(principal)
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

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no app state")))?;
            authenticate(state, &req).await
        })
    }
}

/// A JSON request body, read whole under the configured size limit.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Bytes);

impl JsonBody {
    /// The body as a JSON object.
    pub fn object(&self) -> Result<Map<String, Value>, ApiError> {
        match self.value()? {
            Value::Object(m) => Ok(m),
            _ => Err(ApiError::msg(Code::InvalidBody, "expected a JSON object")),
        }
    }

    pub fn value(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.0).map_err(|e| ApiError::msg(Code::MalformedJson, format!("the body is not valid JSON: {e}")))
    }

    /// The body as a typed request; field problems become `validation_failed` with
    /// the path of the offending field.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let value = self.value()?;
        if !value.is_object() {
            return Err(ApiError::msg(Code::InvalidBody, "expected a JSON object"));
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde names the problem; the path says where. Unknown and missing fields
            // name themselves in the message.
            let field = if path == "." {
                inner.split('`').nth(1).unwrap_or("body").to_string()
            } else {
                path
            };
            ApiError::new(Code::ValidationFailed).details(json!({"fields": {field: inner}}))
        })
    }
}

pub async fn read_body<S>(req: &HttpRequest, payload: &mut S, limit: usize, json_only: bool) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, actix_web::error::PayloadError>> + Unpin,
{
    if json_only {
        let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::new(Code::UnsupportedMediaType));
        }
    }
    let too_large = || ApiError::msg(Code::PayloadTooLarge, format!("the body is larger than {limit} bytes"));
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::msg(Code::InvalidBody, format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let limit = req
                .app_data::<web::Data<AppState>>()
                .map(|s| s.settings.max_body_bytes)
                .unwrap_or(1 << 20);
            read_body(&req, &mut payload, limit, true).await.map(JsonBody)
        })
    }
}

/// The query string as ordered pairs.
pub fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .map_err(|e| ApiError::msg(Code::InvalidQuery, format!("the query string is malformed: {e}")))
}

/// Path ids are UUIDs; anything else names nothing.
pub fn path_id(raw: &str) -> Result<String, ApiError> {
    crate::domain::fields::parse_id(raw).map_err(|_| ApiError::new(Code::NotFound))
}

/// The client's id for a mutation (`X-Mutation-Id`), echoed as `cause` on the events
/// it makes so the client can tell its own changes from others'.
pub fn mutation_id(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("x-mutation-id") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(|s| Some(s.to_string()))
        .ok_or_else(|| ApiError::msg(Code::InvalidBody, "X-Mutation-Id is 1 to 100 visible ASCII characters"))
}

/// The version a change is based on, from `If-Match` (an ETag such as `"3"`).
pub fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    s.parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::msg(Code::InvalidBody, "If-Match must carry a record version such as \"3\""))
}
