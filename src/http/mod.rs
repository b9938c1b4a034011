//! The REST API under `/api/v1`, health endpoints and the OpenAPI document: a thin
//! adapter over `app`. Routes parse the request, call the application layer and render
//! its answer.

mod accounts;
mod csv;
pub mod docs;
pub mod error;
pub mod extract;
mod forward;
mod idempotency;
mod inbox;
pub mod openapi;
pub mod records;
pub mod webapp;

use std::sync::atomic::Ordering;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use error::{ApiError, Code};

/// What the REST adapter serves besides the application: its own description.
pub struct Site {
    /// The OpenAPI document, built once at start-up.
    pub openapi: serde_json::Value,
    /// Swagger UI's files for `/docs`.
    pub docs: docs::DocsAssets,
    /// The web app's page and files.
    pub web: webapp::WebAssets,
}

impl Site {
    pub fn load(web_dir: Option<&std::path::Path>) -> anyhow::Result<Site> {
        Ok(Site {
            openapi: openapi::build(),
            docs: docs::DocsAssets::load()?,
            web: webapp::WebAssets::load(web_dir)?,
        })
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(webapp::index)))
        .service(web::resource("/assets/{build}/{file}").route(web::get().to(webapp::asset)))
        .service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/readyz").route(web::get().to(readyz)))
        .service(web::resource("/metrics").route(web::get().to(metrics)))
        .service(web::resource("/docs").route(web::get().to(docs::page)))
        .service(web::resource("/docs/{file}").route(web::get().to(docs::asset)))
        .configure(forward::configure)
        .service(
            web::scope("/api/v1")
                .service(web::resource("/openapi.json").route(web::get().to(openapi::document)))
                .configure(accounts::configure)
                .configure(records::configure)
                .configure(inbox::configure)
                .configure(csv::configure)
                .configure(faults),
        )
        .default_service(web::to(not_found));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Err(e) = state.store.ping().await {
        return Err(ApiError {
            cause: Some(e.into()),
            retry_after_secs: Some(1),
            ..ApiError::new(Code::Unavailable)
        });
    }
    let redis = match &state.bus {
        Some(bus) if !bus.ping().await => {
            return Err(ApiError {
                retry_after_secs: Some(1),
                ..ApiError::msg(Code::Unavailable, "redis is unreachable")
            });
        }
        Some(_) => "ok",
        None => "not used",
    };
    Ok(HttpResponse::Ok().json(json!({"status": "ready", "store": state.store.backend().name(), "redis": redis})))
}

/// Prometheus metrics of the node, for whoever holds `metrics_token`.
async fn metrics(state: web::Data<AppState>, req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    let Some(expected) = &state.settings.metrics_token else {
        return Err(ApiError::msg(
            Code::Forbidden,
            "metrics are off: set metrics_token (SHOAL_METRICS_TOKEN) and send it as 'Authorization: Bearer <token>'",
        ));
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Digests compared, so the time taken says nothing of how much of the token matched.
    let digest = crate::auth::token_digest;
    if given.map(digest) != Some(digest(expected.expose())) {
        return Err(ApiError::msg(
            Code::Unauthenticated,
            "send the metrics token as 'Authorization: Bearer <token>'",
        ));
    }
    let d = state.directory.stats();
    let body = format!(
        "# HELP shoal_topic_actors_active Topic actors running on this node.\n\
         # TYPE shoal_topic_actors_active gauge\n\
         shoal_topic_actors_active {}\n\
         # HELP shoal_topic_activations_total Topic actors activated since start.\n\
         # TYPE shoal_topic_activations_total counter\n\
         shoal_topic_activations_total {}\n\
         # HELP shoal_topic_restarts_total Topic actors rebuilt after a failure.\n\
         # TYPE shoal_topic_restarts_total counter\n\
         shoal_topic_restarts_total {}\n\
         # HELP shoal_persister_queue_depth Writes waiting for a batch.\n\
         # TYPE shoal_persister_queue_depth gauge\n\
         shoal_persister_queue_depth {}\n\
         # HELP shoal_websocket_connections WebSocket connections open.\n\
         # TYPE shoal_websocket_connections gauge\n\
         shoal_websocket_connections {}\n",
        d.active,
        d.activations,
        d.restarts,
        state.directory.persister().depth(),
        state.connections.load(Ordering::Relaxed),
    );
    let mut body = body;
    if let Some((rss, cpu)) = process_usage() {
        body.push_str(&format!(
            "# HELP process_resident_memory_bytes Resident memory of the server process.\n\
             # TYPE process_resident_memory_bytes gauge\n\
             process_resident_memory_bytes {rss}\n\
             # HELP process_cpu_seconds_total CPU time the server process has used.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total {cpu:.2}\n"
        ));
    }
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(body))
}

/// Resident bytes and CPU seconds of this process, from /proc (Linux only).
fn process_usage() -> Option<(u64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // utime and stime are the 14th and 15th fields, after the parenthesised name.
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    // /proc reports CPU time in USER_HZ, which is 100 on every Linux ABI.
    Some((kib * 1024, ticks as f64 / 100.0))
}

/// Test-only routes that make the server fail on purpose.
#[cfg(feature = "fault-injection")]
fn faults(cfg: &mut web::ServiceConfig) {
    async fn crash(state: web::Data<AppState>, p: extract::Principal, topic: web::Path<String>) -> Result<HttpResponse, ApiError> {
        p.user()?;
        let topic = crate::app::topics::authorize(&state, &p, &topic).await?;
        if state.directory.crash(&topic.key()).await {
            Ok(HttpResponse::NoContent().finish())
        } else {
            Err(ApiError::new(Code::NotFound))
        }
    }
    /// Moves the server's clock forward, so timers (SLA) fall due at once.
    async fn clock(state: web::Data<AppState>, body: extract::JsonBody) -> Result<HttpResponse, ApiError> {
        let ms = body.value()?["advance_ms"]
            .as_i64()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| ApiError::msg(Code::InvalidBody, "send {\"advance_ms\": <positive integer>}"))?;
        state.clock.advance(ms);
        Ok(HttpResponse::Ok().json(json!({"now_ms": state.clock.now_ms()})))
    }
    cfg.service(web::resource("/_faults/crash/{topic}").route(web::post().to(crash)))
        .service(web::resource("/_faults/clock").route(web::post().to(clock)));
}

#[cfg(not(feature = "fault-injection"))]
fn faults(_: &mut web::ServiceConfig) {}

/// A path nothing serves: the app's page for a browser navigating within the app,
/// else `not_found`.
async fn not_found(site: web::Data<Site>, req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    if webapp::is_navigation(&req) {
        return Ok(webapp::page(&site));
    }
    Err(ApiError::new(Code::NotFound))
}

/// Rewrites error responses produced outside our handlers (unknown method, actix's
/// own extractor failures) into the error table, so every 4xx and 5xx has one shape.
pub async fn uniform_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let status = res.status();
    if status == actix_web::http::StatusCode::METHOD_NOT_ALLOWED {
        // The methods the path takes, from the OpenAPI document (which a test holds to
        // the routes), in `Allow` (RFC 9110, 15.5.6) and in the message.
        let allowed = res
            .request()
            .app_data::<web::Data<Site>>()
            .and_then(|site| openapi::methods_of(&site.openapi, res.request().path()));
        let (req, _) = res.into_parts();
        let mut reply = HttpResponse::MethodNotAllowed();
        let err = match &allowed {
            Some(methods) => {
                reply.insert_header((header::ALLOW, methods.as_str()));
                ApiError::msg(Code::MethodNotAllowed, format!("this path takes {methods}"))
            }
            None => ApiError::new(Code::MethodNotAllowed),
        };
        return Ok(ServiceResponse::new(req, reply.json(err.body())));
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (req, _) = res.into_parts();
        let err = ApiError::new(Code::from_status(status.as_u16()));
        let body = HttpResponse::build(status).json(err.body());
        return Ok(ServiceResponse::new(req, body));
    }
    Ok(res.map_into_boxed_body())
}
