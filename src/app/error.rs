//! The one error table of the server. Every failure a client can see, over REST,
//! WebSocket or from a worker, has a stable snake_case code, an HTTP status and a
//! message, in a body `{"error": {"code", "message", "details"?}}`. Server-side
//! failures keep their cause in the log and show the client only an opaque message.
//! The adapters render it: `http` as a response, `ws` as an `error` or `nack` frame.

use serde_json::{json, Value};

use crate::domain::query::QueryError;
use crate::domain::{FieldErrors, ObjectType};
use crate::store::StoreError;

/// The HTTP statuses of the table, named.
mod status {
    pub const BAD_REQUEST: u16 = 400;
    pub const UNAUTHORIZED: u16 = 401;
    pub const FORBIDDEN: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const METHOD_NOT_ALLOWED: u16 = 405;
    pub const CONFLICT: u16 = 409;
    pub const PAYLOAD_TOO_LARGE: u16 = 413;
    pub const UNSUPPORTED_MEDIA_TYPE: u16 = 415;
    pub const UNPROCESSABLE_ENTITY: u16 = 422;
    pub const INTERNAL_SERVER_ERROR: u16 = 500;
    pub const SERVICE_UNAVAILABLE: u16 = 503;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    MalformedJson,
    InvalidBody,
    ValidationFailed,
    UnsupportedMediaType,
    PayloadTooLarge,
    InvalidQuery,
    UnknownParameter,
    InvalidCursor,
    InvalidIdempotencyKey,
    Unauthenticated,
    InvalidCredentials,
    TokenExpired,
    RefreshTokenReused,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    VersionConflict,
    AlreadyExists,
    InUse,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    Overloaded,
    Unavailable,
    Internal,
}

impl Code {
    pub const ALL: [Code; 24] = [
        Code::MalformedJson,
        Code::InvalidBody,
        Code::ValidationFailed,
        Code::UnsupportedMediaType,
        Code::PayloadTooLarge,
        Code::InvalidQuery,
        Code::UnknownParameter,
        Code::InvalidCursor,
        Code::InvalidIdempotencyKey,
        Code::Unauthenticated,
        Code::InvalidCredentials,
        Code::TokenExpired,
        Code::RefreshTokenReused,
        Code::Forbidden,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::VersionConflict,
        Code::AlreadyExists,
        Code::InUse,
        Code::IdempotencyKeyInProgress,
        Code::IdempotencyKeyReused,
        Code::Overloaded,
        Code::Unavailable,
        Code::Internal,
    ];

    /// The table: status, stable name, default message.
    pub fn info(self) -> (u16, &'static str, &'static str) {
        use status as S;
        match self {
            Code::MalformedJson => (S::BAD_REQUEST, "malformed_json", "the body is not valid JSON"),
            Code::InvalidBody => (S::BAD_REQUEST, "invalid_body", "the body does not have the expected shape"),
            Code::ValidationFailed => (S::UNPROCESSABLE_ENTITY, "validation_failed", "some fields are invalid"),
            Code::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ),
            Code::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is larger than allowed"),
            Code::InvalidQuery => (S::BAD_REQUEST, "invalid_query", "a query parameter has an invalid value"),
            Code::UnknownParameter => (S::BAD_REQUEST, "unknown_parameter", "a query parameter is not recognised"),
            Code::InvalidCursor => (
                S::BAD_REQUEST,
                "invalid_cursor",
                "the cursor is invalid or belongs to another ordering",
            ),
            Code::InvalidIdempotencyKey => (
                S::BAD_REQUEST,
                "invalid_idempotency_key",
                "an Idempotency-Key is 1 to 255 visible ASCII characters",
            ),
            Code::Unauthenticated => (
                S::UNAUTHORIZED,
                "unauthenticated",
                "send an access token or API key as 'Authorization: Bearer …'",
            ),
            Code::InvalidCredentials => (S::UNAUTHORIZED, "invalid_credentials", "the credentials are not valid"),
            Code::TokenExpired => (S::UNAUTHORIZED, "token_expired", "the access token has expired; refresh it"),
            Code::RefreshTokenReused => (
                S::UNAUTHORIZED,
                "refresh_token_reused",
                "this refresh token was already used; its session has been revoked",
            ),
            Code::Forbidden => (S::FORBIDDEN, "forbidden", "your role or key scopes do not allow this"),
            Code::NotFound => (S::NOT_FOUND, "not_found", "no such resource"),
            Code::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not allowed here"),
            Code::VersionConflict => (
                S::CONFLICT,
                "version_conflict",
                "the record changed since the version you based this change on",
            ),
            Code::AlreadyExists => (S::CONFLICT, "already_exists", "it already exists"),
            Code::InUse => (S::CONFLICT, "in_use", "other records still depend on it"),
            Code::IdempotencyKeyInProgress => (
                S::CONFLICT,
                "idempotency_key_in_progress",
                "a request with this Idempotency-Key is still running",
            ),
            Code::IdempotencyKeyReused => (
                S::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ),
            Code::Overloaded => (
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                "the server is busy; retry after the indicated delay",
            ),
            Code::Unavailable => (S::SERVICE_UNAVAILABLE, "unavailable", "the store is unavailable; retry shortly"),
            Code::Internal => (S::INTERNAL_SERVER_ERROR, "internal", "internal error"),
        }
    }

    pub fn name(self) -> &'static str {
        self.info().1
    }

    /// The code with this stable name, as another node reported it.
    pub fn parse(name: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The HTTP status the code is answered with.
    pub fn status(self) -> u16 {
        self.info().0
    }

    /// A client's mistake (4xx), as opposed to the server's (5xx).
    pub fn is_client_error(self) -> bool {
        (400..500).contains(&self.status())
    }

    pub fn from_status(status: u16) -> Code {
        match status {
            400 => Code::InvalidBody,
            401 => Code::Unauthenticated,
            403 => Code::Forbidden,
            404 => Code::NotFound,
            405 => Code::MethodNotAllowed,
            409 => Code::AlreadyExists,
            413 => Code::PayloadTooLarge,
            415 => Code::UnsupportedMediaType,
            422 => Code::ValidationFailed,
            503 => Code::Unavailable,
            _ => Code::Internal,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_secs: Option<u64>,
    /// The cause of a server-side failure, for the log only.
    pub cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(code: Code) -> Self {
        ApiError {
            code,
            message: code.info().2.to_string(),
            details: None,
            retry_after_secs: None,
            cause: None,
        }
    }

    pub fn msg(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            message: message.into(),
            ..Self::new(code)
        }
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        ApiError {
            cause: Some(cause.into()),
            ..Self::new(Code::Internal)
        }
    }

    pub fn body(&self) -> Value {
        let mut e = json!({"code": self.code.name(), "message": self.message});
        if let Some(d) = &self.details {
            e["details"] = d.clone();
        }
        json!({ "error": e })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl From<FieldErrors> for ApiError {
    fn from(e: FieldErrors) -> Self {
        ApiError::new(Code::ValidationFailed).details(json!({ "fields": e.0 }))
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::UnknownParameter(p) => ApiError::msg(Code::UnknownParameter, format!("unknown query parameter '{p}'")),
            QueryError::InvalidFilter(p, m) => ApiError::msg(Code::InvalidQuery, format!("'{p}': {m}")),
            QueryError::InvalidSort(s, fields) => ApiError::msg(
                Code::InvalidQuery,
                format!(
                    "cannot sort by '{s}'; sort by one of {} (a leading '-' for descending)",
                    fields.join(", ")
                ),
            ),
            QueryError::InvalidCursor => ApiError::new(Code::InvalidCursor),
            QueryError::InvalidLimit => ApiError::msg(Code::InvalidQuery, "limit must be between 1 and 200"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::new(Code::NotFound),
            StoreError::Conflict { .. } => ApiError::new(Code::VersionConflict),
            StoreError::Invalid(f) => f.into(),
            StoreError::Duplicate(m) => ApiError::msg(Code::AlreadyExists, clean_duplicate(&m)),
            StoreError::InUse(m) => ApiError::msg(Code::InUse, m),
            StoreError::Unavailable(cause) => ApiError {
                retry_after_secs: Some(1),
                cause: Some(cause.into()),
                ..ApiError::new(Code::Unavailable)
            },
            // Ownership moved while the write waited; the write path retries with the
            // new owner, so a client sees this only when that keeps failing.
            StoreError::Fenced(topic) => ApiError {
                retry_after_secs: Some(1),
                ..ApiError::msg(Code::Unavailable, format!("{topic} is moving to another node; retry shortly"))
            },
            StoreError::Db(cause) => ApiError::internal(cause),
            StoreError::Other(cause) => ApiError::internal(cause),
        }
    }
}

/// Database messages name tables and constraints; clients get a plain sentence.
fn clean_duplicate(m: &str) -> String {
    if m.contains("UNIQUE") || m.contains("duplicate key") {
        "a record with these unique values already exists".into()
    } else {
        m.to_string()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(e)
    }
}

/// Maps store failures of a write on `ty`, giving version conflicts the current record.
pub fn store_error(ty: ObjectType) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::Conflict { expected, current } => ApiError::new(Code::VersionConflict).details(json!({
            "expected_version": expected,
            "current_version": current.version,
            "current": current.to_json(ty),
        })),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_unique_name_and_an_error_status() {
        let mut names: Vec<&str> = Code::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Code::ALL.len());
        assert!(Code::ALL.iter().all(|c| c.status() >= 400));
    }

    #[test]
    fn server_errors_hide_their_cause() {
        let e = ApiError::internal(anyhow::anyhow!("password=hunter2 in a connection string"));
        assert_eq!(e.body(), json!({"error": {"code": "internal", "message": "internal error"}}));
    }
}
