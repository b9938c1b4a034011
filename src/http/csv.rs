//! CSV import (a background job with progress and per-row errors) and streamed CSV
//! export of contacts, companies, leads and deals.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::error::{ApiError, Code};
use super::extract::{path_id, query_pairs, read_body, Principal};
use crate::app::{writes, AppState};
use crate::domain::fields::format_timestamp;
use crate::domain::objects::Writable;
use crate::domain::query::{ListQuery, MAX_LIMIT};
use crate::domain::{Access, CustomFieldDef, FieldErrors, FieldKind, ObjectType, Resource};
use crate::store::{ImportCounts, ImportJob, Store};

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
    ObjectType::from_name(raw).filter(|t| t.is_importable()).ok_or_else(|| {
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
        "mode": j.mode,
        "key": j.key_field,
        "status": j.status,
        "rows_total": j.rows_total,
        "rows_processed": j.counts.processed(),
        "rows_created": j.counts.created,
        "rows_updated": j.counts.updated,
        "rows_skipped": j.counts.skipped,
        "rows_failed": j.counts.failed,
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

/// A list cell's items, separated by `;`.
fn list_cell(cell: &str) -> Value {
    Value::Array(
        cell.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.into()))
            .collect(),
    )
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
                    list_cell(cell)
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

/// How an import meets the records already there, matched by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every row is created; a row matching a record fails.
    Create,
    /// New rows are created; rows matching a record are skipped (importing a file
    /// twice changes nothing the second time).
    Skip,
    /// Rows matching a record update it; the others are skipped.
    Update,
    /// Rows matching a record update it; the others are created.
    Upsert,
}

impl Mode {
    const NAMES: [&'static str; 4] = ["create", "skip", "update", "upsert"];

    fn parse(raw: &str) -> Result<Mode, ApiError> {
        match raw {
            "create" => Ok(Mode::Create),
            "skip" => Ok(Mode::Skip),
            "update" => Ok(Mode::Update),
            "upsert" => Ok(Mode::Upsert),
            _ => Err(ApiError::msg(
                Code::InvalidQuery,
                format!("'{raw}' is not an import mode; use one of {}", Mode::NAMES.join(", ")),
            )),
        }
    }

    fn name(self) -> &'static str {
        Mode::NAMES[self as usize]
    }
}

/// The field a type's rows are matched on unless the import names another: what
/// identifies a person or an organisation outside the CRM.
fn default_key(ty: ObjectType) -> Option<&'static str> {
    match ty {
        ObjectType::Contact => Some("emails"),
        ObjectType::Company => Some("domain"),
        ObjectType::Lead => Some("email"),
        _ => None,
    }
}

/// The key an import names (`key=`): `id`, a field of the type that holds text, or
/// `none`.
fn parse_key(ty: ObjectType, raw: Option<&str>) -> Result<Option<&'static str>, ApiError> {
    let Some(raw) = raw else { return Ok(default_key(ty)) };
    if raw == "none" {
        return Ok(None);
    }
    if raw == "id" {
        return Ok(Some("id"));
    }
    let text_like = |k: FieldKind| !matches!(k, FieldKind::Integer { .. } | FieldKind::Bool | FieldKind::Json);
    match ty.field(raw) {
        Some(spec) if spec.writable != Writable::Never && text_like(spec.kind) => Ok(Some(spec.name)),
        _ => {
            let fields: Vec<&str> = ty
                .fields()
                .iter()
                .filter(|f| f.writable != Writable::Never && text_like(f.kind))
                .map(|f| f.name)
                .collect();
            Err(ApiError::msg(
                Code::InvalidQuery,
                format!(
                    "'{raw}' cannot be an import key of {}; use id, none or one of {}",
                    ty.name(),
                    fields.join(", ")
                ),
            ))
        }
    }
}

/// The CSV file of an import: the body itself (`text/csv`), or the `file` part of a
/// `multipart/form-data` upload (what `curl -F file=@x.csv` and browsers send).
async fn read_csv(req: &HttpRequest, payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let ct = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "text/csv" => {
            let mut payload = payload;
            read_body(req, &mut payload, limit, false).await
        }
        "multipart/form-data" => {
            let mut parts = actix_multipart::Multipart::new(req.headers(), payload);
            while let Some(part) = parts.next().await {
                let mut part = part.map_err(|e| ApiError::msg(Code::InvalidBody, format!("the multipart body is malformed: {e}")))?;
                if part.name() != Some("file") {
                    continue;
                }
                let mut file = web::BytesMut::new();
                while let Some(chunk) = part.next().await {
                    let chunk = chunk.map_err(|e| ApiError::msg(Code::InvalidBody, format!("the multipart body is malformed: {e}")))?;
                    if file.len() + chunk.len() > limit {
                        return Err(ApiError::msg(Code::PayloadTooLarge, format!("an import is at most {limit} bytes")));
                    }
                    file.extend_from_slice(&chunk);
                }
                return Ok(file.freeze());
            }
            Err(ApiError::msg(
                Code::InvalidBody,
                "the upload has no 'file' part: send the CSV as -F file=@contacts.csv",
            ))
        }
        _ => Err(ApiError::msg(
            Code::UnsupportedMediaType,
            "send the file as text/csv, or as the 'file' part of multipart/form-data",
        )),
    }
}

async fn start_import(state: State, p: Principal, req: HttpRequest, payload: web::Payload) -> Reply {
    let params = query_pairs(&req)?;
    let (mut object_type, mut mode, mut key) = (None, None, None);
    let mut wait = false;
    for (k, v) in &params {
        match k.as_str() {
            "object_type" => object_type = Some(v.as_str()),
            "mode" => mode = Some(Mode::parse(v)?),
            "key" => key = Some(v.as_str()),
            "wait" => wait = v == "true",
            _ => {
                return Err(ApiError::msg(
                    Code::UnknownParameter,
                    format!("unknown query parameter '{k}'; an import takes object_type, mode, key and wait"),
                ))
            }
        }
    }
    let ty = csv_type(object_type)?;
    let named_key = key.is_some();
    let mut key = parse_key(ty, key)?;
    p.require(Resource::Imports, Access::Write)?;
    p.require(ty.resource(), Access::Write)?;
    let body = read_csv(&req, payload, state.settings.max_import_bytes).await?;
    let scoped = p.scoped(&state.store);
    let defs = scoped.custom_field_defs(ty).await?;
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(body.as_ref());
    let headers = reader
        .headers()
        .map_err(|e| ApiError::msg(Code::InvalidBody, format!("the CSV header is unreadable: {e}")))?
        .clone();
    let plan = plan_columns(ty, &headers, &defs)?;
    let key_column = match key {
        Some(k) => match headers.iter().position(|h| h.trim() == k) {
            Some(column) => Some(column),
            // A file without the type's usual key column has nothing to match on.
            None if !named_key => {
                key = None;
                None
            }
            None => {
                return Err(ApiError::msg(
                    Code::InvalidBody,
                    format!("the file has no '{k}' column to match rows on (key={k})"),
                ))
            }
        },
        None => None,
    };
    let mode = match (mode, key) {
        (Some(Mode::Create) | None, None) => Mode::Create,
        (Some(m), None) => {
            return Err(ApiError::msg(
                Code::InvalidQuery,
                format!(
                    "mode={} matches rows with records by a key column: name one, such as key=id",
                    m.name()
                ),
            ))
        }
        // Importing the same file twice must not duplicate it.
        (None, Some(_)) => Mode::Skip,
        (Some(m), Some(_)) => m,
    };
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
        .create_import_job(
            ty.name(),
            mode.name(),
            key,
            i64::try_from(rows.len()).unwrap_or(i64::MAX),
            &p.actor_id(),
        )
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
        let import = Import {
            ty,
            mode,
            key: key.zip(key_column),
            plan,
            defs,
        };
        if let Err(e) = run_import(st, principal, &job_id, &import, rows).await {
            tracing::error!(job_id = %job_id, error = ?e, "import failed");
            let failed = json!([{"error": "the import stopped on a server error"}]);
            let counts = ImportCounts::default();
            if let Err(e) = store.scoped(&ws).update_import_job(&job_id, "failed", counts, &failed).await {
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

/// What an import does with each row.
struct Import {
    ty: ObjectType,
    mode: Mode,
    /// The key field and its column.
    key: Option<(&'static str, usize)>,
    plan: Vec<ColumnTarget>,
    defs: Vec<CustomFieldDef>,
}

/// What became of a row.
enum RowOutcome {
    Created,
    Updated,
    /// Left as it is: already there (mode=skip), nothing to update (mode=update), or
    /// the record already holds the row's values.
    Skipped,
    Failed(Value),
}

impl Import {
    /// The row's key values as stored (normalised as a write would: e-mails lowercased).
    fn key_values(&self, row: &csv::StringRecord) -> Result<Vec<String>, Value> {
        let Some((field, column)) = self.key else { return Ok(Vec::new()) };
        let cell = row.get(column).unwrap_or("").trim();
        if cell.is_empty() {
            return Ok(Vec::new());
        }
        if field == "id" {
            return crate::domain::fields::parse_id(cell)
                .map(|id| vec![id])
                .map_err(|e| json!({"id": e}));
        }
        let mut one = Map::new();
        let spec = self.ty.field(field).map(|s| s.kind);
        let v = if spec.is_some_and(FieldKind::is_list) {
            list_cell(cell)
        } else {
            Value::String(cell.into())
        };
        one.insert(field.into(), v);
        let parsed = self.ty.parse_input(&one, false, &[]).map_err(|f| json!(f.0))?;
        Ok(match parsed.get(field) {
            Some(crate::domain::FieldValue::Text(s)) => vec![s.clone()],
            Some(crate::domain::FieldValue::List(items)) => items.clone(),
            _ => Vec::new(),
        })
    }

    /// The records already there that the key values name.
    async fn matches(&self, state: &AppState, p: &Principal, keys: &[String]) -> Result<Vec<String>, ApiError> {
        let Some((field, _)) = self.key else { return Ok(Vec::new()) };
        let scoped = p.scoped(&state.store);
        let mut found: Vec<String> = Vec::new();
        for k in keys {
            let ids = if field == "id" {
                match scoped.get(self.ty, k).await {
                    Ok(r) => vec![r.id],
                    Err(crate::store::StoreError::NotFound) => Vec::new(),
                    Err(e) => return Err(e.into()),
                }
            } else {
                let q = ListQuery::parse(self.ty, &[(field.to_string(), k.clone()), ("limit".into(), "2".into())])?;
                scoped.list(self.ty, &q).await?.records.into_iter().map(|r| r.id).collect()
            };
            for id in ids {
                if !found.contains(&id) {
                    found.push(id);
                }
            }
        }
        Ok(found)
    }

    async fn run_row(&self, state: &AppState, p: &Principal, row: &csv::StringRecord, keys: Vec<String>) -> Result<RowOutcome, ApiError> {
        let body = match row_to_body(&self.plan, row) {
            Ok(b) => b,
            Err(f) => return Ok(RowOutcome::Failed(json!(f.0))),
        };
        let key_name = self.key.map(|(k, _)| k).unwrap_or("key");
        let found = self.matches(state, p, &keys).await?;
        let target = match (found.as_slice(), self.mode) {
            ([], Mode::Update) => return Ok(RowOutcome::Skipped),
            ([], _) => None,
            ([_, _, ..], _) => {
                return Ok(RowOutcome::Failed(
                    json!({key_name: format!("matches {} records; make it name one", found.len())}),
                ))
            }
            ([id], Mode::Create) => {
                let msg = format!(
                    "a {} with this {key_name} exists ({id}); import with mode=skip, update or upsert",
                    self.ty.name()
                );
                return Ok(RowOutcome::Failed(json!({ key_name: msg })));
            }
            ([_], Mode::Skip) => return Ok(RowOutcome::Skipped),
            ([id], _) => Some(id.clone()),
        };
        let changes = match self.ty.parse_input(&body, target.is_none(), &self.defs) {
            Ok(c) => c,
            Err(f) => return Ok(RowOutcome::Failed(json!(f.0))),
        };
        loop {
            let written = match &target {
                None => writes::create(state, p, None, self.ty, changes.clone())
                    .await
                    .map(|_| RowOutcome::Created),
                Some(id) => writes::update(state, p, None, self.ty, id, None, changes.clone())
                    .await
                    .map(|(_, events)| {
                        if events.is_empty() {
                            RowOutcome::Skipped
                        } else {
                            RowOutcome::Updated
                        }
                    }),
            };
            match written {
                Ok(outcome) => return Ok(outcome),
                // The persister is full: this background job waits its turn.
                Err(e) if e.code == Code::Overloaded => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                Err(e) if e.code.is_client_error() => {
                    let detail = e
                        .details
                        .as_ref()
                        .and_then(|d| d.get("fields"))
                        .cloned()
                        .unwrap_or_else(|| json!({"row": e.message}));
                    return Ok(RowOutcome::Failed(detail));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes the rows through the normal write path, up to `IN_FLIGHT` at a time so that
/// they share group commits, in file order.
async fn run_import(
    state: web::Data<AppState>,
    p: Principal,
    job_id: &str,
    import: &Import,
    rows: Vec<(u64, csv::StringRecord)>,
) -> Result<(), ApiError> {
    const IN_FLIGHT: usize = 64;
    let scoped = state.store.scoped(&p.workspace_id);
    let mut counts = ImportCounts::default();
    let mut errors: Vec<Value> = Vec::new();
    // Keys first, in file order: a row whose key an earlier row of the file already
    // has would race it to the store; it fails and says which line it repeats.
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let prepared: Vec<_> = rows
        .iter()
        .map(|(line, row)| {
            let keys = import
                .key_values(row)
                .and_then(|keys| match keys.iter().find_map(|k| seen.get(k).map(|first| (k, *first))) {
                    Some((k, first)) => Err(json!({"row": format!("line {first} has the same key ({k}); merge the two rows")})),
                    None => {
                        for k in &keys {
                            seen.insert(k.clone(), *line);
                        }
                        Ok(keys)
                    }
                });
            (*line, row, keys)
        })
        .collect();
    let outcomes = futures_util::stream::iter(prepared)
        .map(|(line, row, keys)| {
            let (state, p) = (&state, &p);
            async move {
                match keys {
                    Ok(keys) => import.run_row(state, p, row, keys).await.map(|o| (line, o)),
                    Err(e) => Ok((line, RowOutcome::Failed(e))),
                }
            }
        })
        .buffered(IN_FLIGHT);
    futures_util::pin_mut!(outcomes);
    while let Some(outcome) = outcomes.next().await {
        let (line, outcome) = outcome?;
        match outcome {
            RowOutcome::Created => counts.created += 1,
            RowOutcome::Updated => counts.updated += 1,
            RowOutcome::Skipped => counts.skipped += 1,
            RowOutcome::Failed(fields) => {
                counts.failed += 1;
                if errors.len() < MAX_ERRORS {
                    errors.push(json!({"line": line, "errors": fields}));
                }
            }
        }
        if counts.processed() % PROGRESS_EVERY as i64 == 0 {
            scoped
                .update_import_job(job_id, "running", counts, &Value::Array(errors.clone()))
                .await?;
        }
    }
    scoped.update_import_job(job_id, "completed", counts, &Value::Array(errors)).await?;
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
