//! The error table rendered as HTTP responses: the table's status, `Retry-After` when
//! the code says when to retry, and the `{"error": …}` body.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

pub use crate::app::error::{ApiError, Code};

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            match &self.cause {
                Some(cause) => tracing::error!(code = self.code.name(), error = ?cause, "request failed"),
                None => tracing::warn!(code = self.code.name(), "request refused"),
            }
        }
        let mut res = HttpResponse::build(self.status_code());
        if let Some(secs) = self.retry_after_secs {
            res.insert_header((header::RETRY_AFTER, HeaderValue::from(secs)));
        }
        res.json(self.body())
    }
}
