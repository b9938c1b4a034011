//! The support inbox's commands beyond plain record writes: inboxes with their channel
//! tokens, and the API channel, through which integrators and chat widgets post
//! customers' messages with an inbox's token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, Code};
use super::principal::Principal;
use super::records::{self, Within};
use super::writes::{self, Author, Write, Written};
use super::AppState;
use crate::auth::{random_token, token_digest, INBOX_TOKEN_PREFIX};
use crate::domain::{Access, EmailAddress, FieldErrors, ObjectType};
use crate::store::Inbound;

/// Creates an inbox; one of channel `api` gets a token, answered here once.
pub async fn create_inbox(state: &AppState, p: &Principal, cause: Option<String>, fields: Map<String, Value>) -> Result<Value, ApiError> {
    let (mut inbox, _) = records::create(state, p, cause, ObjectType::Inbox, fields, Within::default()).await?;
    if inbox["channel"] == "api" {
        let id = inbox["id"].as_str().unwrap_or_default().to_string();
        inbox["token"] = Value::String(new_token(state, p, &id).await?);
    }
    Ok(inbox)
}

/// Gives an API-channel inbox a new token; the old one stops working at once.
pub async fn rotate_token(state: &AppState, p: &Principal, inbox_id: &str) -> Result<Value, ApiError> {
    p.require(ObjectType::Inbox.resource(), Access::Write)?;
    let inbox = p.scoped(&state.store).get(ObjectType::Inbox, inbox_id).await?;
    if inbox.text("channel") != Some("api") {
        return Err(ApiError::msg(Code::InvalidBody, "only an inbox of channel 'api' has a token"));
    }
    let token = new_token(state, p, inbox_id).await?;
    state.inbox_tokens.forget_inbox(inbox_id);
    Ok(json!({"inbox_id": inbox_id, "token": token}))
}

async fn new_token(state: &AppState, p: &Principal, inbox_id: &str) -> Result<String, ApiError> {
    let token = format!("{INBOX_TOKEN_PREFIX}{}", random_token()?);
    p.scoped(&state.store).set_inbox_token(inbox_id, &token_digest(&token)).await?;
    Ok(token)
}

/// Marks a conversation read by the calling member, up to now.
pub async fn mark_read(state: &AppState, p: &Principal, conversation_id: &str) -> Result<Written, ApiError> {
    p.require(ObjectType::Conversation.resource(), Access::Read)?;
    let (user, _) = p.user()?;
    let write = Write::Read {
        conversation_id: conversation_id.to_string(),
        user_id: user.to_string(),
        at: crate::store::now_ms(),
    };
    writes::execute(state, Author::of(p), None, write).await
}

/// Adds to each conversation (JSON) how many customer messages the calling member has
/// not read (`unread_count`); a key, which reads for nobody, gets none.
pub async fn with_unread(state: &AppState, p: &Principal, conversations: &mut [Value]) -> Result<(), ApiError> {
    let Ok((user, _)) = p.user() else {
        return Ok(());
    };
    let ids: Vec<String> = conversations.iter().filter_map(|c| c["id"].as_str().map(str::to_string)).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let counts = p.scoped(&state.store).unread_counts(user, &refs).await?;
    for c in conversations {
        let n = c["id"].as_str().and_then(|id| counts.get(id)).copied().unwrap_or(0);
        c["unread_count"] = json!(n);
    }
    Ok(())
}

/// Applies a macro to a conversation: one change, one conversation event (and an
/// event per note or reply it writes).
pub async fn apply_macro(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    macro_id: &str,
    conversation_id: &str,
    expected: Option<i64>,
) -> Result<Written, ApiError> {
    p.require(ObjectType::Conversation.resource(), Access::Write)?;
    p.require(ObjectType::Macro.resource(), Access::Read)?;
    let scoped = p.scoped(&state.store);
    scoped.get(ObjectType::Macro, macro_id).await?;
    scoped.get(ObjectType::Conversation, conversation_id).await.map_err(|e| match e {
        crate::store::StoreError::NotFound => FieldErrors::single("conversation_id", "no such conversation").into(),
        e => ApiError::from(e),
    })?;
    let write = Write::ApplyMacro {
        macro_id: macro_id.to_string(),
        conversation_id: conversation_id.to_string(),
        expected,
    };
    writes::execute(state, Author::of(p), cause, write).await
}

/// A canned response filled in for a conversation, as the caller would send it.
pub async fn render_canned(state: &AppState, p: &Principal, canned_id: &str, conversation_id: &str) -> Result<Value, ApiError> {
    p.require(ObjectType::CannedResponse.resource(), Access::Read)?;
    p.require(ObjectType::Conversation.resource(), Access::Read)?;
    let text = p
        .scoped(&state.store)
        .render_canned(canned_id, conversation_id, &p.actor_id())
        .await?;
    Ok(json!({"text": text}))
}

/// A member's connection opened: they are available as they last chose.
pub async fn connection_opened(state: &AppState, p: &Principal) {
    let Ok((user, _)) = p.user() else { return };
    if state.directory.member_reconnected(&p.workspace_id, user) {
        return;
    }
    let (status, since) = match p.scoped(&state.store).chosen_availability(user).await {
        Ok(chosen) => chosen,
        // Not knowing what they chose, they are online, as a new member is.
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a member's chosen availability; taking online");
            ("online".to_string(), 0)
        }
    };
    state.directory.member_connected(&p.workspace_id, user, &status, since);
}

/// A member's connection closed; with their last one they are offline.
pub fn connection_closed(state: &AppState, p: &Principal) {
    if let Ok((user, _)) = p.user() {
        state.directory.member_disconnected(&p.workspace_id, user);
    }
}

/// The calling member chooses to be online, busy or offline (while connected; with no
/// connection open they are offline whatever they chose).
pub async fn choose_availability(state: &AppState, p: &Principal, status: &str) -> Result<Value, ApiError> {
    let (user, _) = p.user()?;
    if !crate::actors::availability::STATUSES.contains(&status) {
        return Err(FieldErrors::single("status", "one of online, busy, offline").into());
    }
    let since = p.scoped(&state.store).choose_availability(user, status).await?;
    state.directory.member_chose(&p.workspace_id, user, status, since);
    let now = state.directory.availability(&p.workspace_id);
    Ok(json!({"user_id": user, "chosen": status, "status": now.get(user).map_or("offline", String::as_str)}))
}

/// Every member of the workspace and whether they are online, busy or offline.
pub async fn availability(state: &AppState, p: &Principal) -> Result<Value, ApiError> {
    p.require(crate::domain::Resource::Members, Access::Read)?;
    let members = p.scoped(&state.store).members().await?;
    let now = state.directory.availability(&p.workspace_id);
    let data: Vec<Value> = members
        .iter()
        .map(|m| json!({"user_id": m.user_id, "name": m.name, "role": m.role, "status": now.get(&m.user_id).map_or("offline", String::as_str)}))
        .collect();
    Ok(json!({"data": data}))
}

/// The channel reports where an agent's reply is on its way to the customer.
pub async fn report_delivery(state: &AppState, token: &str, message_id: &str, status: &str) -> Result<Value, ApiError> {
    let (workspace_id, inbox_id) = inbox_of_token(state, token).await?;
    if !matches!(status, "sent" | "delivered" | "read" | "failed") {
        return Err(FieldErrors::single("status", "one of sent, delivered, read, failed").into());
    }
    let author = Author {
        workspace_id,
        actor: format!("inbox:{inbox_id}"),
    };
    let write = Write::Delivery {
        inbox_id,
        message_id: message_id.to_string(),
        status: status.to_string(),
        error: None,
    };
    Ok(writes::execute(state, author, None, write).await?.0)
}

/// The workspace and inbox an inbox token stands for.
async fn inbox_of_token(state: &AppState, token: &str) -> Result<(String, String), ApiError> {
    let credentials = || {
        ApiError::msg(
            Code::InvalidCredentials,
            "send the inbox's token as 'Authorization: Bearer shoal_inbox_…'",
        )
    };
    if !token.starts_with(INBOX_TOKEN_PREFIX) {
        return Err(credentials());
    }
    let digest = token_digest(token);
    if let Some(found) = state.inbox_tokens.get(&digest) {
        return Ok(found);
    }
    let found = state.store.inbox_by_token(&digest).await?.ok_or_else(credentials)?;
    state.inbox_tokens.put(digest, found.clone());
    Ok(found)
}

/// How long a token found in the store is trusted without looking again: a token
/// replaced on another node of a cluster keeps working there for up to this long.
const TOKEN_TRUSTED_FOR: Duration = Duration::from_secs(2);
/// Tokens kept at most; more are let go (the store answers for them again).
const TOKENS_KEPT: usize = 10_000;

/// The workspace and inbox a token is for.
type InboxOf = (String, String);

/// Inbox tokens found lately, by digest, with their workspace and inbox. An
/// integrator posts many messages a second with one token, and looking it up for
/// each cost a round trip to the store per message (a third of the inbound rate on
/// SQLite). Only tokens that were found are kept; a token replaced on this node is
/// let go at once.
#[derive(Default)]
pub struct InboxTokens {
    found: Mutex<HashMap<String, (InboxOf, Instant)>>,
}

impl InboxTokens {
    fn get(&self, digest: &str) -> Option<InboxOf> {
        let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        found
            .get(digest)
            .filter(|(_, at)| at.elapsed() < TOKEN_TRUSTED_FOR)
            .map(|(ids, _)| ids.clone())
    }

    fn put(&self, digest: String, ids: InboxOf) {
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        if found.len() >= TOKENS_KEPT {
            found.retain(|_, (_, at)| at.elapsed() < TOKEN_TRUSTED_FOR);
            if found.len() >= TOKENS_KEPT {
                found.clear();
            }
        }
        found.insert(digest, (ids, Instant::now()));
    }

    pub(crate) fn forget_inbox(&self, inbox_id: &str) {
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        found.retain(|_, ((_, inbox), _)| inbox != inbox_id);
    }
}

/// A message an integrator posts for a customer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Posted {
    /// The integrator's own id of the customer.
    pub contact_identifier: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub subject: Option<String>,
    pub text: String,
    /// Rich text, sanitised when kept.
    pub html: Option<String>,
    /// What the message carries, described: `[{"name", "content_type", "size", "url"?}]`.
    pub attachments: Option<Value>,
    /// The integrator's id of the message: posting it again is answered as before.
    pub external_id: Option<String>,
}

/// Limits of a posted message's fields, in characters.
const MAX_IDENTIFIER: usize = 200;
const MAX_NAME: usize = 200;
const MAX_TEXT: usize = 100_000;

impl Posted {
    fn validate(self, inbox_id: String) -> Result<Inbound, ApiError> {
        let mut errors = FieldErrors::default();
        let trimmed = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let source_id = trimmed(self.contact_identifier);
        if source_id.as_ref().is_some_and(|s| s.chars().count() > MAX_IDENTIFIER) {
            errors.add("contact_identifier", format!("at most {MAX_IDENTIFIER} characters"));
        }
        let email = match trimmed(self.email) {
            Some(e) => match EmailAddress::parse(&e) {
                Ok(e) => Some(e),
                Err(why) => {
                    errors.add("email", why);
                    None
                }
            },
            None => None,
        };
        if source_id.is_none() && email.is_none() && !errors.0.contains_key("email") {
            errors.add("contact_identifier", "give the customer's contact_identifier or email (or both)");
        }
        let name = trimmed(self.name);
        let subject = trimmed(self.subject);
        for (field, v) in [("name", &name), ("subject", &subject)] {
            if v.as_ref().is_some_and(|s| s.chars().count() > MAX_NAME) {
                errors.add(field, format!("at most {MAX_NAME} characters"));
            }
        }
        let text = self.text.trim().to_string();
        if text.is_empty() {
            errors.add("text", "is required");
        } else if text.chars().count() > MAX_TEXT {
            errors.add("text", format!("at most {MAX_TEXT} characters"));
        }
        let html = self.html.filter(|h| !h.trim().is_empty());
        if html.as_ref().is_some_and(|h| h.len() > MAX_TEXT * 4) {
            errors.add("html", format!("at most {} bytes", MAX_TEXT * 4));
        }
        let attachments = self.attachments.filter(|a| !a.is_null());
        if let Some(Err(e)) = attachments.as_ref().map(crate::domain::inbox::check_attachments) {
            errors.add("attachments", e);
        }
        let external_id = trimmed(self.external_id);
        if external_id.as_ref().is_some_and(|s| s.chars().count() > MAX_IDENTIFIER) {
            errors.add("external_id", format!("at most {MAX_IDENTIFIER} characters"));
        }
        errors.into_result()?;
        Ok(Inbound {
            inbox_id,
            source_id,
            email,
            name,
            subject,
            text,
            html,
            attachments,
            external_id,
            available: Vec::new(),
        })
    }
}

/// Takes a customer's message posted with an inbox token: threaded into the
/// customer's unresolved conversation in the inbox, or opening one. Answers the
/// message and its conversation, and whether the message was already there.
pub async fn post_inbound(state: &AppState, token: &str, cause: Option<String>, posted: Posted) -> Result<Written, ApiError> {
    let (workspace_id, inbox_id) = inbox_of_token(state, token).await?;
    let mut inbound = posted.validate(inbox_id.clone())?;
    inbound.available = state
        .directory
        .availability(&workspace_id)
        .into_iter()
        .filter(|(_, status)| status == "online")
        .map(|(user, _)| user)
        .collect();
    let author = Author {
        workspace_id,
        actor: format!("inbox:{inbox_id}"),
    };
    writes::execute(state, author, cause, Write::Inbound(inbound)).await
}
