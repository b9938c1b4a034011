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
pub use crate::app::principal::{principal_for_token, Actor, Principal};
use crate::app::AppState;

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
