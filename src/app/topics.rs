//! Topics (`board:<pipeline>`, `workspace:<id>`, `user:<workspace>:<user>`): which a
//! principal may follow, checked when it subscribes, when it sends a command to one and
//! again whenever its rights change.

use crate::domain::{Access, ObjectType, Resource, Topic};

use super::error::{ApiError, Code};
use super::principal::{Actor, Principal};
use super::AppState;

/// Most topics one connection may follow.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// Parses a topic name and checks the principal may follow it: it must belong to the
/// principal's workspace and hold only what the principal may read.
pub async fn authorize(state: &AppState, p: &Principal, raw: &str) -> Result<Topic, ApiError> {
    authorize_known(state, p, raw, &mut KnownTopics::default()).await
}

/// Boards and inboxes a connection has found in its principal's workspace, by topic
/// key. Ids are never reused, so one found there once stays that workspace's, and the
/// commands a connection sends to it need not look it up each time (one deleted since
/// fails in the write instead, which checks its records in its transaction).
#[derive(Default)]
pub struct KnownTopics(std::collections::HashSet<String>);

impl KnownTopics {
    /// Enough for every topic a connection may follow; past it, it starts over.
    const MAX: usize = MAX_SUBSCRIPTIONS;

    fn insert(&mut self, id: &str) {
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(id.to_string());
    }
}

pub fn not_a_topic(raw: &str) -> ApiError {
    ApiError::msg(
        Code::InvalidBody,
        format!("'{raw}' is not a topic such as board:<pipeline id> or inbox:<inbox id>"),
    )
}

/// [`authorize`], skipping the lookup of a board or inbox the connection already found.
pub async fn authorize_known(state: &AppState, p: &Principal, raw: &str, known: &mut KnownTopics) -> Result<Topic, ApiError> {
    let topic = Topic::parse(raw).ok_or_else(|| not_a_topic(raw))?;
    permit(p, &topic)?;
    let owner = match &topic {
        Topic::Board { pipeline_id } => Some((ObjectType::Pipeline, pipeline_id)),
        Topic::Inbox { inbox_id } => Some((ObjectType::Inbox, inbox_id)),
        _ => None,
    };
    if let Some((ty, id)) = owner {
        let key = topic.key();
        if !known.0.contains(&key) {
            // Another workspace's pipeline or inbox does not exist from here.
            p.scoped(&state.store).get(ty, id).await?;
            known.insert(&key);
        }
    }
    Ok(topic)
}

/// Whether the principal's rights let it follow the topic (of its own workspace).
pub fn permit(p: &Principal, topic: &Topic) -> Result<(), ApiError> {
    match topic {
        Topic::Board { .. } => {
            p.require(Resource::Pipelines, Access::Read)?;
            p.require(Resource::Deals, Access::Read)?;
        }
        Topic::Inbox { .. } => p.require(Resource::Conversations, Access::Read)?,
        Topic::Workspace { workspace_id } => {
            if *workspace_id != p.workspace_id {
                return Err(ApiError::new(Code::NotFound));
            }
            for r in [
                Resource::Contacts,
                Resource::Companies,
                Resource::Leads,
                Resource::Activities,
                Resource::Tags,
                Resource::Teams,
                Resource::CustomFields,
            ] {
                p.require(r, Access::Read)?;
            }
        }
        Topic::User { workspace_id, user_id } => {
            let own = matches!(&p.actor, Actor::User { id, .. } if id == user_id);
            if *workspace_id != p.workspace_id || !own {
                return Err(ApiError::msg(Code::Forbidden, "only its own member may follow a personal topic"));
            }
        }
    }
    Ok(())
}

/// What an agent may say they are doing in a conversation of an inbox.
pub const INBOX_ACTIVITIES: [&str; 3] = ["viewing", "typing", "replying"];

/// Checks a presence state for the topic: on an inbox it names a conversation and
/// what the member does in it (`{"conversation_id", "activity"}`); on other topics it
/// is the client's own.
pub fn check_presence(topic: &Topic, state: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<(), ApiError> {
    let (Topic::Inbox { .. }, Some(state)) = (topic, state) else {
        return Ok(());
    };
    let bad = |why: &str| {
        ApiError::msg(
            Code::InvalidBody,
            format!("{why}: presence on an inbox is {{\"conversation_id\": <id>, \"activity\": \"viewing\" | \"typing\" | \"replying\"}}"),
        )
    };
    if let Some(k) = state.keys().find(|k| !matches!(k.as_str(), "conversation_id" | "activity")) {
        return Err(bad(&format!("unknown field '{k}'")));
    }
    let conversation = state
        .get("conversation_id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("conversation_id is missing"))?;
    crate::domain::fields::parse_id(conversation).map_err(|_| bad("conversation_id is not an id"))?;
    let activity = state.get("activity").and_then(|v| v.as_str()).unwrap_or_default();
    if !INBOX_ACTIVITIES.contains(&activity) {
        return Err(bad("activity is missing or unknown"));
    }
    Ok(())
}
