//! REST routes of the support inbox: inboxes and their tokens, conversations, their
//! messages, and the API channel's endpoint for integrators.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, Code};
use super::extract::{mutation_id, path_id, query_pairs, JsonBody, Principal};
use super::idempotency::idempotent;
use super::records::{create, delete, get, list, list_of, page_json, update};
use crate::app::inbox::{self, Posted};
use crate::app::records::{self as commands, Within};
use crate::app::{Actor, AppState};
use crate::domain::fields::parse_id;
use crate::domain::{Access, FieldErrors, ListQuery, ObjectType};

type State = web::Data<AppState>;
type Reply = Result<HttpResponse, ApiError>;

const INBOX: ObjectType = ObjectType::Inbox;
const CONVERSATION: ObjectType = ObjectType::Conversation;
const MESSAGE: ObjectType = ObjectType::Message;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/inboxes")
            .route(web::get().to(|s: State, p: Principal, r: HttpRequest| list(INBOX, s, p, r)))
            .route(web::post().to(create_inbox)),
    )
    .service(
        web::resource("/inboxes/{id}")
            .route(web::get().to(|s: State, p: Principal, id: web::Path<String>| get(INBOX, s, p, id)))
            .route(
                web::patch().to(|s: State, p: Principal, id: web::Path<String>, r: HttpRequest, b: JsonBody| update(INBOX, s, p, id, r, b)),
            )
            .route(web::delete().to(|s: State, p: Principal, id: web::Path<String>, r: HttpRequest| delete(INBOX, s, p, id, r))),
    )
    .service(web::resource("/inboxes/{id}/token").route(web::post().to(rotate_token)))
    .service(
        web::resource("/inboxes/{id}/email")
            .route(web::get().to(mail_settings))
            .route(web::put().to(configure_mail)),
    )
    .service(web::resource("/inboxes/{id}/email/test").route(web::post().to(test_mail)))
    .service(
        web::resource("/me/notifications")
            .route(web::get().to(notifications))
            .route(web::put().to(choose_notifications)),
    )
    .service(web::resource("/messages").route(web::get().to(|s: State, p: Principal, r: HttpRequest| list(MESSAGE, s, p, r))))
    .service(web::resource("/messages/{id}").route(web::get().to(|s: State, p: Principal, id: web::Path<String>| get(MESSAGE, s, p, id))))
    .service(web::resource("/messages/{id}/attachments/{index}").route(web::get().to(download_attachment)))
    .service(
        web::resource("/conversations")
            .route(web::get().to(list_conversations))
            .route(web::post().to(|s: State, p: Principal, r: HttpRequest, b: JsonBody| create(CONVERSATION, s, p, r, b))),
    )
    .service(
        web::resource("/conversations/{id}")
            .route(web::get().to(get_conversation))
            .route(
                web::patch()
                    .to(|s: State, p: Principal, id: web::Path<String>, r: HttpRequest, b: JsonBody| update(CONVERSATION, s, p, id, r, b)),
            )
            .route(web::delete().to(|s: State, p: Principal, id: web::Path<String>, r: HttpRequest| delete(CONVERSATION, s, p, id, r))),
    )
    .service(web::resource("/conversations/{id}/read").route(web::post().to(mark_read)))
    .service(
        web::resource("/conversations/{id}/messages")
            .route(web::get().to(list_messages))
            .route(web::post().to(post_message)),
    )
    .service(web::resource("/channels/api/messages").route(web::post().to(post_inbound)))
    .service(web::resource("/channels/api/messages/{id}/status").route(web::post().to(report_delivery)))
    .service(web::resource("/canned-responses/{id}/render").route(web::post().to(render_canned)))
    .service(web::resource("/macros/{id}/apply").route(web::post().to(apply_macro)))
    .service(
        web::resource("/availability")
            .route(web::get().to(availability))
            .route(web::put().to(choose_availability)),
    );
}

async fn availability(state: State, p: Principal) -> Reply {
    Ok(HttpResponse::Ok().json(inbox::availability(&state, &p).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Choice {
    status: String,
}

/// The calling member chooses to be online, busy or offline.
async fn choose_availability(state: State, p: Principal, body: JsonBody) -> Reply {
    let c: Choice = body.parse()?;
    Ok(HttpResponse::Ok().json(inbox::choose_availability(&state, &p, &c.status).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForConversation {
    conversation_id: String,
}

/// A canned response filled in for a conversation, to put in the reply box.
async fn render_canned(state: State, p: Principal, id: web::Path<String>, body: JsonBody) -> Reply {
    let id = path_id(&id)?;
    let b: ForConversation = body.parse()?;
    let conversation = parse_id(&b.conversation_id).map_err(|e| FieldErrors::single("conversation_id", e))?;
    Ok(HttpResponse::Ok().json(inbox::render_canned(&state, &p, &id, &conversation).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyMacro {
    conversation_id: String,
    /// The conversation's version the macro is meant for.
    #[serde(default, deserialize_with = "crate::http::records::whole")]
    version: Option<i64>,
}

/// Applies a macro to a conversation as one change.
async fn apply_macro(state: State, p: Principal, id: web::Path<String>, req: HttpRequest, body: JsonBody) -> Reply {
    let id = path_id(&id)?;
    idempotent(&state, &p, &req, &body.0, || async {
        let b: ApplyMacro = body.parse()?;
        let conversation = parse_id(&b.conversation_id).map_err(|e| FieldErrors::single("conversation_id", e))?;
        let applied = inbox::apply_macro(&state, &p, mutation_id(&req)?, &id, &conversation, b.version)
            .await?
            .0;
        Ok((StatusCode::OK, applied))
    })
    .await
}

async fn create_inbox(state: State, p: Principal, req: HttpRequest, body: JsonBody) -> Reply {
    p.require(INBOX.resource(), Access::Write)?;
    idempotent(&state, &p, &req, &body.0, || async {
        let inbox = inbox::create_inbox(&state, &p, mutation_id(&req)?, body.object()?).await?;
        Ok((StatusCode::CREATED, inbox))
    })
    .await
}

async fn notifications(state: State, p: Principal) -> Reply {
    Ok(HttpResponse::Ok().json(crate::app::mail::notifications(&state, &p).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationChoice {
    email: bool,
}

/// The calling member chooses whether their notifications are mailed to them.
async fn choose_notifications(state: State, p: Principal, body: JsonBody) -> Reply {
    let c: NotificationChoice = body.parse()?;
    Ok(HttpResponse::Ok().json(crate::app::mail::choose_notifications(&state, &p, c.email).await?))
}

async fn mail_settings(state: State, p: Principal, id: web::Path<String>) -> Reply {
    Ok(HttpResponse::Ok().json(crate::app::mail::settings(&state, &p, &path_id(&id)?).await?))
}

/// Saves an e-mail inbox's servers; passwords left out keep their saved values.
async fn configure_mail(state: State, p: Principal, id: web::Path<String>, body: JsonBody) -> Reply {
    let input = body.parse()?;
    Ok(HttpResponse::Ok().json(crate::app::mail::configure(&state, &p, &path_id(&id)?, input).await?))
}

/// Tries an e-mail inbox's servers: the saved ones, or those in the body.
async fn test_mail(state: State, p: Principal, id: web::Path<String>, body: JsonBody) -> Reply {
    // An empty object (or no body) tries the saved servers.
    let empty = body.0.iter().all(u8::is_ascii_whitespace) || body.object()?.is_empty();
    let input = if empty { None } else { Some(body.parse()?) };
    Ok(HttpResponse::Ok().json(crate::app::mail::test_connection(&state, &p, &path_id(&id)?, input).await?))
}

/// A kept attachment of a message, as a download.
async fn download_attachment(state: State, p: Principal, path: web::Path<(String, String)>) -> Reply {
    let (id, index) = path.into_inner();
    let id = path_id(&id)?;
    let index: usize = index
        .parse()
        .map_err(|_| ApiError::msg(Code::NotFound, "an attachment is named by its position: 0, 1, …"))?;
    let (name, content_type, bytes) = crate::app::mail::attachment(&state, &p, &id, index).await?;
    let ascii: String = name
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
        .collect();
    let ascii = if ascii.trim().is_empty() { "attachment".to_string() } else { ascii };
    // The name as sent, for browsers (RFC 6266 `filename*`), beside an ASCII fallback.
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // A file customers sent is never a page of this site, whatever its type.
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"))
        .body(bytes))
}

async fn rotate_token(state: State, p: Principal, id: web::Path<String>) -> Reply {
    Ok(HttpResponse::Ok().json(inbox::rotate_token(&state, &p, &path_id(&id)?).await?))
}

/// Conversations, with `assignee=me` (the caller's) and `assignee=none` (nobody's)
/// besides every field's filters.
async fn list_conversations(state: State, p: Principal, req: HttpRequest) -> Reply {
    let mut params = Vec::new();
    for (k, v) in query_pairs(&req)? {
        if k != "assignee" {
            params.push((k, v));
            continue;
        }
        match v.as_str() {
            "me" => match &p.actor {
                Actor::User { id, .. } => params.push(("assignee_id".into(), id.clone())),
                Actor::ApiKey { .. } => {
                    return Err(ApiError::msg(
                        Code::InvalidQuery,
                        "'assignee=me' needs a member's access token, not an API key",
                    ))
                }
            },
            "none" => params.push(("assignee_id_is_null".into(), "true".into())),
            _ => {
                return Err(ApiError::msg(
                    Code::InvalidQuery,
                    "'assignee' is 'me' or 'none'; filter by a member with assignee_id=<user id>",
                ))
            }
        }
    }
    p.require(CONVERSATION.resource(), Access::Read)?;
    let q = ListQuery::parse(CONVERSATION, &params)?;
    let page = p.scoped(&state.store).list(CONVERSATION, &q).await?;
    let mut body = page_json(CONVERSATION, &page);
    if let Some(data) = body["data"].as_array_mut() {
        inbox::with_unread(&state, &p, data).await?;
    }
    Ok(HttpResponse::Ok().json(body))
}

/// A conversation, with the caller's unread count.
async fn get_conversation(state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(CONVERSATION.resource(), Access::Read)?;
    let rec = p.scoped(&state.store).get(CONVERSATION, &path_id(&id)?).await?;
    let mut one = [rec.to_json(CONVERSATION)];
    inbox::with_unread(&state, &p, &mut one).await?;
    let [body] = one;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{}\"", rec.version)))
        .json(body))
}

/// The calling member has read the conversation up to now.
async fn mark_read(state: State, p: Principal, id: web::Path<String>) -> Reply {
    Ok(HttpResponse::Ok().json(inbox::mark_read(&state, &p, &path_id(&id)?).await?.0))
}

/// A conversation's messages, newest first unless `sort=created_at`; `cursor` pages on
/// in either order.
async fn list_messages(state: State, p: Principal, id: web::Path<String>, req: HttpRequest) -> Reply {
    p.require(CONVERSATION.resource(), Access::Read)?;
    let id = path_id(&id)?;
    p.scoped(&state.store).get(CONVERSATION, &id).await?;
    let mut params = query_pairs(&req)?;
    if params.iter().any(|(k, _)| k == "conversation_id") {
        return Err(ApiError::msg(Code::UnknownParameter, "'conversation_id' is given by the path"));
    }
    params.push(("conversation_id".into(), id));
    list_of(MESSAGE, &state, &p, &params).await
}

/// A reply to the customer (`kind` `message`, the default) or a private note.
async fn post_message(state: State, p: Principal, id: web::Path<String>, req: HttpRequest, body: JsonBody) -> Reply {
    p.require(MESSAGE.resource(), Access::Write)?;
    let id = path_id(&id)?;
    p.scoped(&state.store).get(CONVERSATION, &id).await?;
    idempotent(&state, &p, &req, &body.0, || async {
        let mut fields = body.object()?;
        if fields.contains_key("conversation_id") {
            return Err(crate::domain::FieldErrors::single("conversation_id", "is given by the path").into());
        }
        fields.insert("conversation_id".into(), Value::String(id.clone()));
        let (msg, _) = commands::create(&state, &p, mutation_id(&req)?, MESSAGE, fields, Within::default()).await?;
        Ok((StatusCode::CREATED, msg))
    })
    .await
}

/// The API channel: an integrator posts a customer's message with the inbox's token.
/// A new message is answered 201; one whose `external_id` the inbox already holds, 200
/// with what it answered the first time.
async fn post_inbound(state: State, req: HttpRequest, body: JsonBody) -> Reply {
    let token = inbox_token(&req)?;
    let posted: Posted = body.parse()?;
    let (answer, _) = inbox::post_inbound(&state, token, mutation_id(&req)?, posted).await?;
    let status = if answer["duplicate"] == true {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(HttpResponse::build(status).json(answer))
}

/// The inbox token a channel request carries.
fn inbox_token(req: &HttpRequest) -> Result<&str, ApiError> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::msg(
                Code::Unauthenticated,
                "send the inbox's token as 'Authorization: Bearer shoal_inbox_…'",
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delivery {
    status: String,
}

/// The API channel reports where an agent's reply is: sent, delivered, read or failed.
async fn report_delivery(state: State, req: HttpRequest, id: web::Path<String>, body: JsonBody) -> Reply {
    let token = inbox_token(&req)?;
    let id = path_id(&id)?;
    let d: Delivery = body.parse()?;
    Ok(HttpResponse::Ok().json(inbox::report_delivery(&state, token, &id, &d.status).await?))
}
