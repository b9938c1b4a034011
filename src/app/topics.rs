//! Topics (`board:<pipeline>`, `workspace:<id>`, `user:<workspace>:<user>`): which a
//! principal may follow, checked when it subscribes, when it sends a command to one and
//! again whenever its rights change.

use crate::domain::{Access, Resource, Topic};

use super::error::{ApiError, Code};
use super::principal::{Actor, Principal};
use super::AppState;

/// Most topics one connection may follow.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// Parses a topic name and checks the principal may follow it: it must belong to the
/// principal's workspace and hold only what the principal may read.
pub async fn authorize(state: &AppState, p: &Principal, raw: &str) -> Result<Topic, ApiError> {
    authorize_known(state, p, raw, &mut KnownPipelines::default()).await
}

/// Pipelines a connection has found in its principal's workspace. Ids are never
/// reused, so a pipeline found there once stays that workspace's, and the commands a
/// connection sends to its board need not look it up each time (a pipeline deleted
/// since fails in the write instead, which checks its records in its transaction).
#[derive(Default)]
pub struct KnownPipelines(std::collections::HashSet<String>);

impl KnownPipelines {
    /// Enough for every board a connection may follow; past it, it starts over.
    const MAX: usize = MAX_SUBSCRIPTIONS;

    fn insert(&mut self, id: &str) {
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(id.to_string());
    }
}

pub fn not_a_topic(raw: &str) -> ApiError {
    ApiError::msg(Code::InvalidBody, format!("'{raw}' is not a topic such as board:<pipeline id>"))
}

/// [`authorize`], skipping the lookup of a pipeline the connection already found.
pub async fn authorize_known(state: &AppState, p: &Principal, raw: &str, known: &mut KnownPipelines) -> Result<Topic, ApiError> {
    let topic = Topic::parse(raw).ok_or_else(|| not_a_topic(raw))?;
    permit(p, &topic)?;
    if let Topic::Board { pipeline_id } = &topic {
        if !known.0.contains(pipeline_id) {
            // Another workspace's pipeline does not exist from here.
            p.scoped(&state.store).get(crate::domain::ObjectType::Pipeline, pipeline_id).await?;
            known.insert(pipeline_id);
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
