//! Commands sent over the WebSocket: the same operations as the REST API, named
//! `<type>.<verb>`, validated by the same rules and acknowledged with the seq of their
//! event once committed.

use serde_json::{Map, Value};

use crate::app::records::{self, Within};
use crate::app::topics::{authorize_known, KnownTopics};
use crate::app::{ApiError, AppState, Code, Principal};
use crate::domain::fields::parse_id;
use crate::domain::{FieldErrors, ObjectType, Topic};
use crate::store::DealMove;

fn field_id(args: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_id(s).map(Some).map_err(|e| FieldErrors::single(name, e).into()),
        Some(_) => Err(FieldErrors::single(name, "expected an id").into()),
    }
}

fn version(args: &Map<String, Value>) -> Result<Option<i64>, ApiError> {
    match args.get("version") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::domain::fields::whole_number(v)
            .map(Some)
            .ok_or_else(|| FieldErrors::single("version", "expected an integer").into()),
    }
}

fn only(args: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match args.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => {
            let why = match crate::domain::fields::closest(k, allowed.iter().copied()) {
                Some(near) => format!("unknown field; did you mean '{near}'?"),
                None => format!("unknown field; this command takes {}", allowed.join(", ")),
            };
            Err(FieldErrors::single(k.clone(), why).into())
        }
        None => Ok(()),
    }
}

/// Runs one command; says which event on `topic` it made, if any.
pub async fn run(
    state: &AppState,
    p: &Principal,
    known: &mut KnownTopics,
    id: &str,
    topic: &str,
    op: &str,
    args: Map<String, Value>,
) -> Result<Acked, ApiError> {
    if id.is_empty() || id.len() > 100 {
        return Err(ApiError::msg(Code::InvalidBody, "a command id is 1 to 100 characters"));
    }
    let topic = authorize_known(state, p, topic, known).await?;
    let (type_name, verb) = op
        .split_once('.')
        .ok_or_else(|| ApiError::msg(Code::InvalidBody, format!("unknown op '{op}'")))?;
    let ty = ObjectType::from_name(type_name)
        .filter(|t| !matches!(t, ObjectType::AuditEntry | ObjectType::Pipeline))
        .ok_or_else(|| ApiError::msg(Code::InvalidBody, format!("unknown op '{op}'")))?;
    let fits = match &topic {
        Topic::Board { .. } => matches!(ty, ObjectType::Deal | ObjectType::Stage),
        Topic::Inbox { .. } => matches!(ty, ObjectType::Conversation | ObjectType::Message),
        Topic::Workspace { .. } => !matches!(
            ty,
            ObjectType::Deal | ObjectType::Stage | ObjectType::Inbox | ObjectType::Conversation | ObjectType::Message
        ),
        Topic::User { .. } => false,
    };
    if !fits {
        return Err(ApiError::msg(Code::InvalidBody, format!("'{op}' is not a command of this topic")));
    }
    let cause = Some(id.to_string());
    let within = Within(Some(&topic));
    let required =
        |args: &Map<String, Value>| field_id(args, "id")?.ok_or_else(|| ApiError::from(FieldErrors::single("id", "is required")));
    let events = match verb {
        "create" => records::create(state, p, cause, ty, args, within).await?.1,
        "update" => {
            only(&args, &["id", "version", "changes"])?;
            let rid = required(&args)?;
            let changes = match args.get("changes") {
                Some(Value::Object(c)) => c,
                _ => return Err(FieldErrors::single("changes", "expected an object of fields").into()),
            };
            records::update(state, p, cause, (ty, &rid), version(&args)?, changes, within)
                .await?
                .1
        }
        "move" if ty == ObjectType::Deal => {
            only(&args, &["id", "version", "stage_id", "after", "before"])?;
            let rid = required(&args)?;
            let to = DealMove {
                stage: field_id(&args, "stage_id")?,
                after: field_id(&args, "after")?,
                before: field_id(&args, "before")?,
                expected: version(&args)?,
                within: None,
            };
            records::move_deal(state, p, cause, &rid, to, within).await?.1
        }
        "read" if ty == ObjectType::Conversation => {
            only(&args, &["id"])?;
            let rid = required(&args)?;
            within_inbox(state, p, &topic, &rid).await?;
            crate::app::inbox::mark_read(state, p, &rid).await?.1
        }
        "apply_macro" if ty == ObjectType::Conversation => {
            only(&args, &["id", "macro_id", "version"])?;
            let rid = required(&args)?;
            let macro_id = field_id(&args, "macro_id")?.ok_or_else(|| ApiError::from(FieldErrors::single("macro_id", "is required")))?;
            within_inbox(state, p, &topic, &rid).await?;
            crate::app::inbox::apply_macro(state, p, cause, &macro_id, &rid, version(&args)?)
                .await?
                .1
        }
        "delete" => {
            only(&args, &["id", "version"])?;
            let rid = required(&args)?;
            records::delete(state, p, cause, (ty, &rid), version(&args)?, within).await?.1
        }
        _ => return Err(ApiError::msg(Code::InvalidBody, format!("unknown op '{op}'"))),
    };
    let key = topic.key();
    Ok(Acked {
        seq: events.iter().rev().find(|e| e.topic == key).map(|e| e.seq),
        noop: events.is_empty(),
    })
}

/// A conversation named from an inbox's topic must be that inbox's.
async fn within_inbox(state: &AppState, p: &Principal, topic: &Topic, conversation: &str) -> Result<(), ApiError> {
    let conv = p.scoped(&state.store).get(ObjectType::Conversation, conversation).await?;
    match topic {
        Topic::Inbox { inbox_id } if conv.text("inbox_id") != Some(inbox_id.as_str()) => Err(ApiError::new(Code::NotFound)),
        _ => Ok(()),
    }
}

/// What an ack says of a command's outcome.
pub struct Acked {
    /// The seq of its event on the command's topic; none when it made none there.
    pub seq: Option<i64>,
    /// It changed nothing (the record was already so): no event was made.
    pub noop: bool,
}
