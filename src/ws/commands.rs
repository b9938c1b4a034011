//! Commands sent over the WebSocket: the same operations as the REST API, named
//! `<type>.<verb>`, validated by the same rules and acknowledged with the seq of their
//! event once committed.

use serde_json::{Map, Value};

use crate::domain::fields::parse_id;
use crate::domain::{Access, FieldErrors, ObjectType, Topic};
use crate::http::error::{ApiError, Code};
use crate::http::extract::Principal;
use crate::http::writes::{Author, Write};
use crate::http::{writes, AppState};
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

/// Runs a write about a record already found on the command's board (none for the
/// workspace topic) without looking its board up again.
async fn run_on(
    state: &AppState,
    p: &Principal,
    cause: Option<String>,
    board: &Option<String>,
    write: Write,
) -> Result<writes::Written, ApiError> {
    match board {
        Some(pipeline) => writes::execute_on_board(state, Author::of(p), cause, pipeline.clone(), write).await,
        None => writes::execute(state, Author::of(p), cause, write).await,
    }
}

/// Runs one command; says which event on `topic` it made, if any.
pub async fn run(
    state: &AppState,
    p: &Principal,
    known: &mut super::KnownPipelines,
    id: &str,
    topic: &str,
    op: &str,
    mut args: Map<String, Value>,
) -> Result<Acked, ApiError> {
    if id.is_empty() || id.len() > 100 {
        return Err(ApiError::msg(Code::InvalidBody, "a command id is 1 to 100 characters"));
    }
    let topic = super::authorize_known(state, p, topic, known).await?;
    let (type_name, verb) = op
        .split_once('.')
        .ok_or_else(|| ApiError::msg(Code::InvalidBody, format!("unknown op '{op}'")))?;
    let ty = ObjectType::from_name(type_name)
        .filter(|t| !matches!(t, ObjectType::AuditEntry | ObjectType::Pipeline))
        .ok_or_else(|| ApiError::msg(Code::InvalidBody, format!("unknown op '{op}'")))?;
    let fits = match &topic {
        Topic::Board { .. } => matches!(ty, ObjectType::Deal | ObjectType::Stage),
        Topic::Workspace { .. } => !matches!(ty, ObjectType::Deal | ObjectType::Stage),
        Topic::User { .. } => false,
    };
    if !fits {
        return Err(ApiError::msg(Code::InvalidBody, format!("'{op}' is not a command of this topic")));
    }
    p.require(ty.resource(), Access::Write)?;
    let scoped = p.scoped(&state.store);
    let cause = Some(id.to_string());
    let board = match &topic {
        Topic::Board { pipeline_id } => Some(pipeline_id.clone()),
        _ => None,
    };
    // A board's records must stay on that board.
    let on_board = |rec: &crate::domain::Record| board.is_none() || rec.text("pipeline_id") == board.as_deref();
    let events = match verb {
        "create" => {
            if let Some(b) = &board {
                match args.get("pipeline_id") {
                    None => {
                        args.insert("pipeline_id".into(), Value::String(b.clone()));
                    }
                    Some(v) if v.as_str() == Some(b.as_str()) => {}
                    Some(_) => return Err(FieldErrors::single("pipeline_id", "must be this board's pipeline").into()),
                }
            }
            let defs = scoped.custom_field_defs(ty).await?;
            let changes = ty.parse_input(&args, true, &defs)?;
            writes::create(state, p, cause, ty, changes).await?.1
        }
        "update" => {
            only(&args, &["id", "version", "changes"])?;
            let rid = field_id(&args, "id")?.ok_or_else(|| ApiError::from(FieldErrors::single("id", "is required")))?;
            let current = scoped.get(ty, &rid).await?;
            if !on_board(&current) {
                return Err(ApiError::new(Code::NotFound));
            }
            let changes = match args.get("changes") {
                Some(Value::Object(c)) => c.clone(),
                _ => return Err(FieldErrors::single("changes", "expected an object of fields").into()),
            };
            let defs = scoped.custom_field_defs(ty).await?;
            let parsed = ty.parse_input(&changes, false, &defs)?;
            let write = Write::Update {
                ty,
                id: rid,
                expected: version(&args)?,
                changes: parsed,
            };
            run_on(state, p, cause, &board, write).await?.1
        }
        "move" if ty == ObjectType::Deal => {
            only(&args, &["id", "version", "stage_id", "after", "before"])?;
            let rid = field_id(&args, "id")?.ok_or_else(|| ApiError::from(FieldErrors::single("id", "is required")))?;
            let (stage, after, before) = (field_id(&args, "stage_id")?, field_id(&args, "after")?, field_id(&args, "before")?);
            // The write itself checks the deal is on this board, in its transaction:
            // no read ahead of it.
            let to = DealMove {
                stage,
                after,
                before,
                expected: version(&args)?,
                within: board.clone(),
            };
            run_on(state, p, cause, &board, Write::Move { id: rid, to }).await?.1
        }
        "delete" => {
            only(&args, &["id", "version"])?;
            let rid = field_id(&args, "id")?.ok_or_else(|| ApiError::from(FieldErrors::single("id", "is required")))?;
            if !on_board(&scoped.get(ty, &rid).await?) {
                return Err(ApiError::new(Code::NotFound));
            }
            let write = Write::Delete {
                ty,
                id: rid,
                expected: version(&args)?,
            };
            run_on(state, p, cause, &board, write).await?.1
        }
        _ => return Err(ApiError::msg(Code::InvalidBody, format!("unknown op '{op}'"))),
    };
    let key = topic.key();
    Ok(Acked {
        seq: events.iter().rev().find(|e| e.topic == key).map(|e| e.seq),
        noop: events.is_empty(),
    })
}

/// What an ack says of a command's outcome.
pub struct Acked {
    /// The seq of its event on the command's topic; none when it made none there.
    pub seq: Option<i64>,
    /// It changed nothing (the record was already so): no event was made.
    pub noop: bool,
}
