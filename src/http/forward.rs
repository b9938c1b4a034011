//! `POST /internal/v1/writes`: where a board's or inbox's owner takes the writes other
//! nodes forward to it (see `app::forward`).

use actix_web::{web, HttpRequest, HttpResponse};

use super::error::{ApiError, Code};
use crate::app::forward::{self, Answer, NOT_OWNER, SIGNATURE, TIMESTAMP};
use crate::app::AppState;

async fn receive(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    match forward::receive(&state, header(TIMESTAMP), header(SIGNATURE), &body).await? {
        Answer::Done(answer) => Ok(HttpResponse::Ok().json(answer)),
        Answer::NotOwner => Ok(HttpResponse::ServiceUnavailable()
            .insert_header((NOT_OWNER, "1"))
            .json(ApiError::msg(Code::Unavailable, "this node does not own the topic").body())),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(forward::PATH)
            .app_data(web::PayloadConfig::new(forward::MAX_WRITE_BYTES))
            .route(web::post().to(receive)),
    );
}
