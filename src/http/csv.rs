//! CSV import (a background job with progress and per-row errors) and streamed CSV
//! export of contacts, companies, leads and deals.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::error::{ApiError, Code};
use super::extract::{path_id, query_pairs, read_body, Principal};
use super::{writes, AppState};
use crate::domain::fields::format_timestamp;
use crate::domain::objects::Writable;
use crate::domain::query::{ListQuery, MAX_LIMIT};
use crate::domain::{Access, CustomFieldDef, FieldErrors, FieldKind, ObjectType, Resource};
use crate::store::{ImportJob, Store};

type State = web::Data<AppState>;
type Reply = Result<HttpResponse, ApiError>;

/// At most this many rows per import, and this many row errors kept on a job.
const MAX_ROWS: usize = 100_000;
const MAX_ERRORS: usize = 1000;
const PROGRESS_EVERY: usize = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/imports")
            .route(web::get().to(list_imports))
            .route(web::post().to(start_import)),
    )
    .service(web::resource("/imports/{id}").route(web::get().to(get_import)))
    .service(web::resource("/exports").route(web::get().to(export)));
}

fn csv_type(raw: Option<&str>) -> Result<ObjectType, ApiError> {
    let raw = raw.ok_or_else(|| ApiError::msg(Code::InvalidQuery, "'object_type' is required"))?;
    ObjectType::from_name(raw).filter(|t| t.has_custom_fields()).ok_or_else(|| {
        ApiError::msg(
            Code::InvalidQuery,
            format!("'{raw}' cannot be imported or exported; use contact, company, lead or deal"),
        )
    })
}

fn job_json(j: &ImportJob) -> Value {
    json!({
        "id": j.id,
        "object_type": j.object_type,
        "status": j.status,
        "rows_total": j.rows_total,
        "rows_done": j.rows_done,
        "rows_failed": j.rows_failed,
        "errors": j.errors,
        "created_by": j.created_by,
        "created_at": format_timestamp(j.created_at),
        "updated_at": format_timestamp(j.updated_at),
    })
}

async fn list_imports(state: State, p: Principal) -> Reply {
    p.require(Resource::Imports, Access::Read)?;
    let jobs = p.scoped(&state.store).import_jobs().await?;
    Ok(HttpResponse::Ok().json(json!({"data": jobs.iter().map(job_json).collect::<Vec<_>>(), "next_cursor": null})))
}

async fn get_import(state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(Resource::Imports, Access::Read)?;
    let j = p.scoped(&state.store).import_job(&path_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(job_json(&j)))
}

/// How one CSV column maps onto the record.
enum ColumnTarget {
    Field(&'static str, FieldKind),
    Custom(CustomFieldDef),
    /// A column an export writes but a create cannot set (id, version, server fields):
    /// ignored, so an exported file imports as it is.
    Skip,
}

fn plan_columns(ty: ObjectType, headers: &csv::StringRecord, defs: &[CustomFieldDef]) -> Result<Vec<ColumnTarget>, ApiError> {
    let mut errors = FieldErrors::default();
    let mut plan = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim();
        if let Some(key) = h.strip_prefix("custom_fields.") {
            match defs.iter().find(|d| d.key == key) {
                Some(d) => plan.push(ColumnTarget::Custom(d.clone())),
                None => errors.add(format!("columns[{i}]"), format!("'{h}' is not a custom field of {}", ty.name())),
            }
            continue;
        }
        match ty.field(h) {
            Some(spec) if spec.writable != Writable::Never => plan.push(ColumnTarget::Field(spec.name, spec.kind)),
            Some(_) => plan.push(ColumnTarget::Skip),
            None if matches!(h, "id" | "version" | "created_at" | "updated_at") => plan.push(ColumnTarget::Skip),
            _ => errors.add(format!("columns[{i}]"), format!("'{h}' is not a writable field of {}", ty.name())),
        }
    }
    errors.into_result()?;
    Ok(plan)
}

/// Turns one CSV row into the JSON body a create would take. Empty cells are left out.
fn row_to_body(plan: &[ColumnTarget], row: &csv::StringRecord) -> Result<Map<String, Value>, FieldErrors> {
    let mut body = Map::new();
    let mut custom = Map::new();
    let mut errors = FieldErrors::default();
    for (target, cell) in plan.iter().zip(row.iter()) {
        if cell.trim().is_empty() {
            continue;
        }
        match target {
            ColumnTarget::Field(name, kind) => {
                let v = if kind.is_list() {
                    Value::Array(
                        cell.split(';')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| Value::String(s.into()))
                            .collect(),
                    )
                } else {
                    match kind {
                        FieldKind::Integer { .. } => cell
                            .trim()
                            .parse::<i64>()
                            .map(Value::from)
                            .unwrap_or_else(|_| Value::String(cell.into())),
                        FieldKind::Bool => match cell.trim() {
                            "true" | "1" | "yes" => Value::Bool(true),
                            "false" | "0" | "no" => Value::Bool(false),
                            other => Value::String(other.into()),
                        },
                        _ => Value::String(cell.into()),
                    }
                };
                body.insert((*name).into(), v);
            }
            ColumnTarget::Skip => {}
            ColumnTarget::Custom(def) => match def.parse_cell(cell) {
                Ok(v) => {
                    custom.insert(def.key.clone(), v);
                }
                Err(e) => errors.add(format!("custom_fields.{}", def.key), e),
            },
        }
    }
    if !custom.is_empty() {
        body.insert("custom_fields".into(), Value::Object(custom));
    }
    errors.into_result().map(|()| body)
}

async fn start_import(state: State, p: Principal, req: HttpRequest, mut payload: web::Payload) -> Reply {
    let params = query_pairs(&req)?;
    let mut object_type = None;
    let mut wait = false;
    for (k, v) in &params {
        match k.as_str() {
            "object_type" => object_type = Some(v.as_str()),
            "wait" => wait = v == "true",
            _ => return Err(ApiError::msg(Code::UnknownParameter, format!("unknown query parameter '{k}'"))),
        }
    }
    let ty = csv_type(object_type)?;
    p.require(Resource::Imports, Access::Write)?;
    p.require(ty.resource(), Access::Write)?;
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("text/csv") {
        return Err(ApiError::msg(Code::UnsupportedMediaType, "send the file as text/csv"));
    }
    let body = read_body(&req, &mut payload, state.settings.max_import_bytes, false).await?;
    let scoped = p.scoped(&state.store);
    let defs = scoped.custom_field_defs(ty).await?;
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(body.as_ref());
    let headers = reader
        .headers()
        .map_err(|e| ApiError::msg(Code::InvalidBody, format!("the CSV header is unreadable: {e}")))?
        .clone();
    let plan = plan_columns(ty, &headers, &defs)?;
    let mut rows = Vec::new();
    for r in reader.records() {
        let r = r.map_err(|e| ApiError::msg(Code::InvalidBody, format!("the CSV is malformed: {e}")))?;
        let line = r.position().map(|p| p.line()).unwrap_or(0);
        rows.push((line, r));
        if rows.len() > MAX_ROWS {
            return Err(ApiError::msg(
                Code::PayloadTooLarge,
                format!("an import takes at most {MAX_ROWS} rows"),
            ));
        }
    }
    let Ok(permit) = state.import_slots.clone().try_acquire_owned() else {
        return Err(ApiError {
            retry_after_secs: Some(10),
            ..ApiError::msg(Code::Overloaded, "too many imports are running; retry later")
        });
    };
    let job = scoped
        .create_import_job(ty.name(), i64::try_from(rows.len()).unwrap_or(i64::MAX), &p.actor_id())
        .await?;
    let (store, ws, job_id, st, principal) = (
        state.store.clone(),
        p.workspace_id.clone(),
        job.id.clone(),
        state.clone(),
        p.clone(),
    );
    let work = async move {
        let _permit = permit;
        if let Err(e) = run_import(st, principal, &job_id, ty, &plan, &defs, rows).await {
            tracing::error!(job_id = %job_id, error = ?e, "import failed");
            let failed = json!([{"error": "the import stopped on a server error"}]);
            if let Err(e) = store.scoped(&ws).update_import_job(&job_id, "failed", 0, 0, &failed).await {
                tracing::error!(job_id = %job_id, error = ?e, "could not mark the import failed");
            }
        }
    };
    if wait {
        // `wait=true` answers when the job has finished, for scripts and small files.
        work.await;
        let done = scoped.import_job(&job.id).await?;
        return Ok(HttpResponse::Ok().json(job_json(&done)));
    }
    actix_web::rt::spawn(work);
    Ok(HttpResponse::build(StatusCode::ACCEPTED).json(job_json(&job)))
}

/// Creates the rows through the normal write path, up to `IN_FLIGHT` at a time so
/// that they share group commits, in file order.
async fn run_import(
    state: web::Data<AppState>,
    p: Principal,
    job_id: &str,
    ty: ObjectType,
    plan: &[ColumnTarget],
    defs: &[CustomFieldDef],
    rows: Vec<(u64, csv::StringRecord)>,
) -> Result<(), ApiError> {
    const IN_FLIGHT: usize = 64;
    let scoped = state.store.scoped(&p.workspace_id);
    let (mut done, mut failed) = (0i64, 0i64);
    let mut errors: Vec<Value> = Vec::new();
    let outcomes = futures_util::stream::iter(rows.iter())
        .map(|(line, row)| {
            let (state, p) = (&state, &p);
            async move {
                let changes = match row_to_body(plan, row).and_then(|body| ty.parse_input(&body, true, defs)) {
                    Ok(c) => c,
                    Err(f) => return Ok((*line, Err(json!(f.0)))),
                };
                loop {
                    match writes::create(state, p, None, ty, changes.clone()).await {
                        Ok(_) => return Ok((*line, Ok(()))),
                        // The persister is full: this background job waits its turn.
                        Err(e) if e.code == Code::Overloaded => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                        Err(e) if e.code.info().0.is_client_error() => {
                            let detail = e
                                .details
                                .as_ref()
                                .and_then(|d| d.get("fields"))
                                .cloned()
                                .unwrap_or_else(|| json!({"row": e.message}));
                            return Ok((*line, Err(detail)));
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        })
        .buffered(IN_FLIGHT);
    futures_util::pin_mut!(outcomes);
    while let Some(outcome) = outcomes.next().await {
        let (line, outcome) = outcome?;
        done += 1;
        if let Err(fields) = outcome {
            failed += 1;
            if errors.len() < MAX_ERRORS {
                errors.push(json!({"line": line, "errors": fields}));
            }
        }
        if done % PROGRESS_EVERY as i64 == 0 {
            scoped
                .update_import_job(job_id, "running", done, failed, &Value::Array(errors.clone()))
                .await?;
        }
    }
    scoped
        .update_import_job(job_id, "completed", done, failed, &Value::Array(errors))
        .await?;
    Ok(())
}

/// Streams every matching record as CSV, one page at a time, so memory does not
/// grow with the export's size.
async fn export(state: State, p: Principal, req: HttpRequest) -> Reply {
    let mut params = query_pairs(&req)?;
    let object_type = params.iter().find(|(k, _)| k == "object_type").map(|(_, v)| v.clone());
    let ty = csv_type(object_type.as_deref())?;
    p.require(Resource::Exports, Access::Read)?;
    p.require(ty.resource(), Access::Read)?;
    params.retain(|(k, _)| k != "object_type");
    if params.iter().any(|(k, _)| k == "cursor" || k == "limit") {
        return Err(ApiError::msg(
            Code::UnknownParameter,
            "exports take filters and sort, not cursor or limit",
        ));
    }
    let mut q = ListQuery::parse(ty, &params)?;
    q.limit = MAX_LIMIT;
    let defs = p.scoped(&state.store).custom_field_defs(ty).await?;
    let mut header: Vec<String> = vec!["id".into()];
    header.extend(ty.fields().iter().map(|f| f.name.to_string()));
    header.extend(defs.iter().map(|d| format!("custom_fields.{}", d.key)));
    header.extend(["version", "created_at", "updated_at"].map(String::from));

    struct Cursor {
        store: Store,
        ws: String,
        q: ListQuery,
        header: Option<Vec<String>>,
        defs: Vec<CustomFieldDef>,
        finished: bool,
    }
    let start = Cursor {
        store: state.store.clone(),
        ws: p.workspace_id.clone(),
        q,
        header: Some(header),
        defs,
        finished: false,
    };
    let stream = futures_util::stream::unfold(start, move |mut c| async move {
        if c.finished {
            return None;
        }
        let mut w = csv::Writer::from_writer(Vec::new());
        if let Some(h) = c.header.take() {
            if let Err(e) = w.write_record(&h) {
                return Some((Err(actix_web::error::ErrorInternalServerError(e)), c));
            }
        }
        let page = match c.store.scoped(&c.ws).list(ty, &c.q).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = ?e, "export stopped");
                c.finished = true;
                return Some((Err(actix_web::error::ErrorServiceUnavailable("export interrupted")), c));
            }
        };
        for r in &page.records {
            let mut cells = vec![r.id.clone()];
            cells.extend(ty.fields().iter().map(|f| r.get(f.name).to_cell(f.kind)));
            for d in &c.defs {
                cells.push(match r.custom.get(&d.key) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(";"),
                    Some(other) => other.to_string(),
                });
            }
            cells.extend([
                r.version.to_string(),
                format_timestamp(r.created_at),
                format_timestamp(r.updated_at),
            ]);
            if let Err(e) = w.write_record(&cells) {
                return Some((Err(actix_web::error::ErrorInternalServerError(e)), c));
            }
        }
        match page.next_cursor {
            Some(next) => match c.q.continue_after(&next) {
                Ok(nq) => c.q = nq,
                Err(_) => c.finished = true,
            },
            None => c.finished = true,
        }
        let bytes = w
            .into_inner()
            .map(Bytes::from)
            .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()));
        Some((bytes, c))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header(("content-disposition", format!("attachment; filename=\"{}.csv\"", ty.table())))
        .streaming(stream))
}
