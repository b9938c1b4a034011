//! REST routes for CRM records. Most object types share one set of handlers driven by
//! their description; pipelines (with stages), deal moves, lead conversion, timelines
//! and search add what is particular to them.

use actix_web::http::header::ETAG;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::{ApiError, Code};
use super::extract::{if_match, mutation_id, path_id, query_pairs, JsonBody, Principal};
use super::idempotency::idempotent;
use crate::app::records::{self as commands, Within};
use crate::app::{writes, AppState};
use crate::domain::fields::parse_id;
use crate::domain::query::ListQuery;
use crate::domain::{Access, Changes, FieldValue, ObjectType, Record};
use crate::store::{DealMove, Page};

type State = web::Data<AppState>;
type Reply = Result<HttpResponse, ApiError>;

/// Object types served by the generic handlers, with their paths.
pub const GENERIC: [(&str, ObjectType); 11] = [
    ("/contacts", ObjectType::Contact),
    ("/companies", ObjectType::Company),
    ("/leads", ObjectType::Lead),
    ("/deals", ObjectType::Deal),
    ("/activities", ObjectType::Activity),
    ("/tags", ObjectType::Tag),
    ("/teams", ObjectType::Team),
    ("/custom-fields", ObjectType::CustomField),
    ("/canned-responses", ObjectType::CannedResponse),
    ("/macros", ObjectType::Macro),
    ("/sla-policies", ObjectType::SlaPolicy),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, ty) in GENERIC {
        cfg.service(
            web::resource(path)
                .route(web::get().to(move |s: State, p: Principal, r: HttpRequest| list(ty, s, p, r)))
                .route(web::post().to(move |s: State, p: Principal, r: HttpRequest, b: JsonBody| create(ty, s, p, r, b))),
        );
        cfg.service(
            web::resource(format!("{path}/{{id}}"))
                .route(web::get().to(move |s: State, p: Principal, id: web::Path<String>| get(ty, s, p, id)))
                .route(
                    web::patch()
                        .to(move |s: State, p: Principal, id: web::Path<String>, r: HttpRequest, b: JsonBody| update(ty, s, p, id, r, b)),
                )
                .route(web::delete().to(move |s: State, p: Principal, id: web::Path<String>, r: HttpRequest| delete(ty, s, p, id, r))),
        );
    }
    for (path, field) in [
        ("/contacts/{id}/timeline", "contact_id"),
        ("/companies/{id}/timeline", "company_id"),
        ("/deals/{id}/timeline", "deal_id"),
        ("/leads/{id}/timeline", "lead_id"),
    ] {
        cfg.service(
            web::resource(path)
                .route(web::get().to(move |s: State, p: Principal, id: web::Path<String>, r: HttpRequest| timeline(field, s, p, id, r))),
        );
    }
    let audit = ObjectType::AuditEntry;
    cfg.service(web::resource("/audit-log").route(web::get().to(move |s: State, p: Principal, r: HttpRequest| list(audit, s, p, r))))
        .service(
            web::resource("/audit-log/{id}")
                .route(web::get().to(move |s: State, p: Principal, id: web::Path<String>| get(audit, s, p, id))),
        );
    let pipeline = ObjectType::Pipeline;
    cfg.service(
        web::resource("/pipelines")
            .route(web::get().to(list_pipelines))
            .route(web::post().to(create_pipeline)),
    )
    .service(
        web::resource("/pipelines/{id}")
            .route(web::get().to(get_pipeline))
            .route(
                web::patch()
                    .to(move |s: State, p: Principal, id: web::Path<String>, r: HttpRequest, b: JsonBody| update(pipeline, s, p, id, r, b)),
            )
            .route(web::delete().to(move |s: State, p: Principal, id: web::Path<String>, r: HttpRequest| delete(pipeline, s, p, id, r))),
    )
    .service(
        web::resource("/pipelines/{id}/stages")
            .route(web::get().to(list_stages))
            .route(web::post().to(create_stage)),
    )
    .service(
        web::resource("/pipelines/{id}/stages/{stage_id}")
            .route(web::patch().to(update_stage))
            .route(web::delete().to(delete_stage)),
    )
    .service(web::resource("/deals/{id}/move").route(web::post().to(move_deal)))
    .service(web::resource("/leads/{id}/convert").route(web::post().to(convert_lead)))
    .service(web::resource("/search").route(web::get().to(search)));
}

fn record_response(status: StatusCode, ty: ObjectType, rec: &Record) -> HttpResponse {
    written_response(status, rec.to_json(ty))
}

/// A record as a write answered it, in JSON, with its version as the ETag.
fn written_response(status: StatusCode, rec: Value) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    if let Some(v) = rec["version"].as_i64() {
        res.insert_header((ETAG, format!("\"{v}\"")));
    }
    res.json(rec)
}

pub fn page_json(ty: ObjectType, page: &Page) -> Value {
    json!({
        "data": page.records.iter().map(|r| r.to_json(ty)).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })
}

pub(super) async fn list(ty: ObjectType, state: State, p: Principal, req: HttpRequest) -> Reply {
    list_of(ty, &state, &p, &query_pairs(&req)?).await
}

/// A page of records of `ty` as the query parameters `params` ask.
pub(super) async fn list_of(ty: ObjectType, state: &AppState, p: &Principal, params: &[(String, String)]) -> Reply {
    p.require(ty.resource(), Access::Read)?;
    let q = ListQuery::parse(ty, params)?;
    let page = p.scoped(&state.store).list(ty, &q).await?;
    Ok(HttpResponse::Ok().json(page_json(ty, &page)))
}

async fn timeline(field: &'static str, state: State, p: Principal, id: web::Path<String>, req: HttpRequest) -> Reply {
    let ty = ObjectType::Activity;
    p.require(ty.resource(), Access::Read)?;
    let id = path_id(&id)?;
    let parent = match field {
        "contact_id" => ObjectType::Contact,
        "company_id" => ObjectType::Company,
        "lead_id" => ObjectType::Lead,
        _ => ObjectType::Deal,
    };
    p.require(parent.resource(), Access::Read)?;
    p.scoped(&state.store).get(parent, &id).await?;
    let mut params = query_pairs(&req)?;
    if params.iter().any(|(k, _)| k == field) {
        return Err(ApiError::msg(Code::UnknownParameter, format!("'{field}' is given by the path")));
    }
    params.push((field.to_string(), id));
    let q = ListQuery::parse(ty, &params)?;
    let page = p.scoped(&state.store).list(ty, &q).await?;
    Ok(HttpResponse::Ok().json(page_json(ty, &page)))
}

pub(super) async fn get(ty: ObjectType, state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(ty.resource(), Access::Read)?;
    let rec = p.scoped(&state.store).get(ty, &path_id(&id)?).await?;
    Ok(record_response(StatusCode::OK, ty, &rec))
}

pub(super) async fn create(ty: ObjectType, state: State, p: Principal, req: HttpRequest, body: JsonBody) -> Reply {
    p.require(ty.resource(), Access::Write)?;
    idempotent(&state, &p, &req, &body.0, || async {
        let (rec, _) = commands::create(&state, &p, mutation_id(&req)?, ty, body.object()?, Within::default()).await?;
        Ok((StatusCode::CREATED, rec))
    })
    .await
}

/// The version an update is based on: `If-Match` or a `version` field in the body.
fn expected_version(req: &HttpRequest, body: &mut Map<String, Value>) -> Result<Option<i64>, ApiError> {
    let header = if_match(req)?;
    let field = match body.remove("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            crate::domain::fields::whole_number(&v)
                .ok_or_else(|| ApiError::from(crate::domain::FieldErrors::single("version", "expected an integer")))?,
        ),
    };
    match (header, field) {
        (Some(h), Some(f)) if h != f => Err(ApiError::msg(Code::InvalidBody, "If-Match and the body's version disagree")),
        (h, f) => Ok(h.or(f)),
    }
}

pub(super) async fn update(ty: ObjectType, state: State, p: Principal, id: web::Path<String>, req: HttpRequest, body: JsonBody) -> Reply {
    p.require(ty.resource(), Access::Write)?;
    let id = path_id(&id)?;
    let mut map = body.object()?;
    let expected = expected_version(&req, &mut map)?;
    let (rec, _) = commands::update(&state, &p, mutation_id(&req)?, (ty, &id), expected, &map, Within::default()).await?;
    Ok(written_response(StatusCode::OK, rec))
}

pub(super) async fn delete(ty: ObjectType, state: State, p: Principal, id: web::Path<String>, req: HttpRequest) -> Reply {
    p.require(ty.resource(), Access::Write)?;
    let id = path_id(&id)?;
    commands::delete(&state, &p, mutation_id(&req)?, (ty, &id), if_match(&req)?, Within::default()).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn stages_of(state: &AppState, p: &Principal, pipeline_id: &str) -> Result<Vec<Record>, ApiError> {
    let stage_field = ObjectType::Stage
        .field("pipeline_id")
        .ok_or_else(|| anyhow::anyhow!("stage has pipeline_id"))?;
    let position = ObjectType::Stage
        .field("position")
        .ok_or_else(|| anyhow::anyhow!("stage has position"))?;
    let mut q = ListQuery {
        limit: 1000,
        ..ListQuery::newest_first()
    }
    .eq(stage_field, FieldValue::Text(pipeline_id.to_string()));
    q.sort = crate::domain::query::Sort {
        field: position,
        descending: false,
    };
    Ok(p.scoped(&state.store).list(ObjectType::Stage, &q).await?.records)
}

fn pipeline_json(pipeline: &Record, stages: &[Record]) -> Value {
    let mut v = pipeline.to_json(ObjectType::Pipeline);
    v["stages"] = Value::Array(stages.iter().map(|s| s.to_json(ObjectType::Stage)).collect());
    v
}

async fn list_pipelines(state: State, p: Principal, req: HttpRequest) -> Reply {
    p.require(ObjectType::Pipeline.resource(), Access::Read)?;
    let q = ListQuery::parse(ObjectType::Pipeline, &query_pairs(&req)?)?;
    let page = p.scoped(&state.store).list(ObjectType::Pipeline, &q).await?;
    let mut data = Vec::with_capacity(page.records.len());
    for pl in &page.records {
        data.push(pipeline_json(pl, &stages_of(&state, &p, &pl.id).await?));
    }
    Ok(HttpResponse::Ok().json(json!({"data": data, "next_cursor": page.next_cursor})))
}

async fn get_pipeline(state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(ObjectType::Pipeline.resource(), Access::Read)?;
    let pl = p.scoped(&state.store).get(ObjectType::Pipeline, &path_id(&id)?).await?;
    let stages = stages_of(&state, &p, &pl.id).await?;
    Ok(HttpResponse::Ok()
        .insert_header((ETAG, format!("\"{}\"", pl.version)))
        .json(pipeline_json(&pl, &stages)))
}

async fn create_pipeline(state: State, p: Principal, req: HttpRequest, body: JsonBody) -> Reply {
    p.require(ObjectType::Pipeline.resource(), Access::Write)?;
    idempotent(&state, &p, &req, &body.0, || async {
        let mut map = body.object()?;
        let stages = match map.remove("stages") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= 50 => items,
            Some(_) => return Err(crate::domain::FieldErrors::single("stages", "expected an array of at most 50 stages").into()),
        };
        let pipeline = ObjectType::Pipeline.parse_input(&map, true, &[])?;
        let mut errors = crate::domain::FieldErrors::default();
        let mut parsed = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            let Some(obj) = s.as_object() else {
                errors.add(format!("stages[{i}]"), "expected an object");
                continue;
            };
            match ObjectType::Stage.parse_input(obj, true, &[]) {
                Ok(c) if c.get("pipeline_id").is_some_and(|v| !v.is_null()) => {
                    errors.add(format!("stages[{i}].pipeline_id"), "is given by the pipeline")
                }
                Ok(c) => parsed.push(c),
                Err(e) => e.0.into_iter().for_each(|(k, v)| errors.add(format!("stages[{i}].{k}"), v)),
            }
        }
        errors.into_result()?;
        let (pl, st) = p.scoped(&state.store).create_pipeline(pipeline, parsed, &p.actor_id()).await?;
        Ok((StatusCode::CREATED, pipeline_json(&pl, &st)))
    })
    .await
}

async fn list_stages(state: State, p: Principal, id: web::Path<String>) -> Reply {
    p.require(ObjectType::Pipeline.resource(), Access::Read)?;
    let pl = p.scoped(&state.store).get(ObjectType::Pipeline, &path_id(&id)?).await?;
    let stages = stages_of(&state, &p, &pl.id).await?;
    Ok(HttpResponse::Ok()
        .json(json!({"data": stages.iter().map(|s| s.to_json(ObjectType::Stage)).collect::<Vec<_>>(), "next_cursor": null})))
}

async fn create_stage(state: State, p: Principal, id: web::Path<String>, req: HttpRequest, body: JsonBody) -> Reply {
    let ty = ObjectType::Stage;
    p.require(ty.resource(), Access::Write)?;
    let pipeline_id = path_id(&id)?;
    p.scoped(&state.store).get(ObjectType::Pipeline, &pipeline_id).await?;
    idempotent(&state, &p, &req, &body.0, || async {
        let map = body.object()?;
        if map.contains_key("pipeline_id") {
            return Err(crate::domain::FieldErrors::single("pipeline_id", "is given by the path").into());
        }
        let mut changes: Changes = ty.parse_input(&map, true, &[])?;
        changes.set(ty, "pipeline_id", FieldValue::Text(pipeline_id.clone()));
        let (rec, _) = writes::create(&state, &p, mutation_id(&req)?, ty, changes).await?;
        Ok((StatusCode::CREATED, rec))
    })
    .await
}

/// A stage addressed through a pipeline it does not belong to does not exist there.
async fn stage_in(state: &AppState, p: &Principal, pipeline: &str, stage: &str) -> Result<String, ApiError> {
    let (pipeline, stage) = (path_id(pipeline)?, path_id(stage)?);
    let rec = p.scoped(&state.store).get(ObjectType::Stage, &stage).await?;
    if rec.text("pipeline_id") != Some(pipeline.as_str()) {
        return Err(ApiError::new(Code::NotFound));
    }
    Ok(stage)
}

async fn update_stage(state: State, p: Principal, ids: web::Path<(String, String)>, req: HttpRequest, body: JsonBody) -> Reply {
    let ty = ObjectType::Stage;
    p.require(ty.resource(), Access::Write)?;
    let stage = stage_in(&state, &p, &ids.0, &ids.1).await?;
    let mut map = body.object()?;
    let expected = expected_version(&req, &mut map)?;
    let (rec, _) = commands::update(&state, &p, mutation_id(&req)?, (ty, &stage), expected, &map, Within::default()).await?;
    Ok(written_response(StatusCode::OK, rec))
}

async fn delete_stage(state: State, p: Principal, ids: web::Path<(String, String)>, req: HttpRequest) -> Reply {
    let ty = ObjectType::Stage;
    p.require(ty.resource(), Access::Write)?;
    let stage = stage_in(&state, &p, &ids.0, &ids.1).await?;
    commands::delete(&state, &p, mutation_id(&req)?, (ty, &stage), if_match(&req)?, Within::default()).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    stage_id: Option<String>,
    after: Option<String>,
    before: Option<String>,
    #[serde(default, deserialize_with = "whole")]
    version: Option<i64>,
}

/// An optional integer, also written with a zero fraction (`3.0`).
pub(super) fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::domain::fields::whole_number(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("expected an integer")),
    }
}

fn opt_id(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    v.map(|s| parse_id(&s).map_err(|e| ApiError::from(crate::domain::FieldErrors::single(field, e))))
        .transpose()
}

async fn move_deal(state: State, p: Principal, id: web::Path<String>, req: HttpRequest, body: JsonBody) -> Reply {
    let ty = ObjectType::Deal;
    p.require(ty.resource(), Access::Write)?;
    let id = path_id(&id)?;
    idempotent(&state, &p, &req, &body.0, || async {
        let m: MoveRequest = body.parse()?;
        let expected = match (if_match(&req)?, m.version) {
            (Some(h), Some(v)) if h != v => return Err(ApiError::msg(Code::InvalidBody, "If-Match and the body's version disagree")),
            (h, v) => h.or(v),
        };
        let (stage, after, before) = (
            opt_id("stage_id", m.stage_id)?,
            opt_id("after", m.after)?,
            opt_id("before", m.before)?,
        );
        let m = DealMove {
            stage,
            after,
            before,
            expected,
            within: None,
        };
        let (rec, _) = commands::move_deal(&state, &p, mutation_id(&req)?, &id, m, Within::default()).await?;
        Ok((StatusCode::OK, rec))
    })
    .await
}

async fn convert_lead(state: State, p: Principal, id: web::Path<String>, req: HttpRequest, body: JsonBody) -> Reply {
    for r in [ObjectType::Lead, ObjectType::Contact, ObjectType::Company] {
        p.require(r.resource(), Access::Write)?;
    }
    let id = path_id(&id)?;
    idempotent(&state, &p, &req, &body.0, || async {
        let mut map = body.object()?;
        let deal = match map.remove("deal") {
            None | Some(Value::Null) => None,
            Some(Value::Object(mut d)) => {
                p.require(ObjectType::Deal.resource(), Access::Write)?;
                let scoped = p.scoped(&state.store);
                let lead = scoped.get(ObjectType::Lead, &id).await?;
                if !d.contains_key("title") {
                    let title = lead.text("company_name").or(lead.text("name")).unwrap_or_default();
                    d.insert("title".into(), Value::String(title.to_string()));
                }
                let defs = scoped.custom_field_defs(ObjectType::Deal).await?;
                let parsed = ObjectType::Deal
                    .parse_input(&d, true, &defs)
                    .map_err(|e| crate::domain::FieldErrors(e.0.into_iter().map(|(k, v)| (format!("deal.{k}"), v)).collect()))?;
                Some(parsed)
            }
            Some(_) => return Err(crate::domain::FieldErrors::single("deal", "expected an object").into()),
        };
        if let Some(k) = map.keys().next() {
            return Err(crate::domain::FieldErrors::single(k.clone(), "unknown field; a conversion takes only 'deal'").into());
        }
        let (conversion, _) = writes::convert_lead(&state, &p, mutation_id(&req)?, &id, deal).await?;
        Ok((StatusCode::OK, conversion))
    })
    .await
}

async fn search(state: State, p: Principal, req: HttpRequest) -> Reply {
    let mut text = None;
    let mut types: Vec<ObjectType> = Vec::new();
    let mut limit = 20i64;
    for (k, v) in query_pairs(&req)? {
        match k.as_str() {
            "q" => text = Some(v),
            "types" => {
                for t in v.split(',').filter(|t| !t.is_empty()) {
                    let ty = ObjectType::from_name(t)
                        .filter(|t| t.is_searchable())
                        .ok_or_else(|| ApiError::msg(Code::InvalidQuery, format!("'{t}' is not a searchable type")))?;
                    types.push(ty);
                }
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| ApiError::msg(Code::InvalidQuery, "limit must be between 1 and 100"))?
            }
            _ => return Err(ApiError::msg(Code::UnknownParameter, format!("unknown query parameter '{k}'"))),
        }
    }
    let text = text.ok_or_else(|| ApiError::msg(Code::InvalidQuery, "'q' is required"))?;
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(16)
        .map(|t| t.to_lowercase())
        .collect();
    if terms.is_empty() {
        return Err(ApiError::msg(Code::InvalidQuery, "'q' needs at least one word"));
    }
    if types.is_empty() {
        types = ObjectType::ALL.into_iter().filter(|t| t.is_searchable()).collect();
    }
    // Search only what the caller may read; naming an unreadable type is refused.
    let explicit = query_pairs(&req)?.iter().any(|(k, _)| k == "types");
    if explicit {
        for t in &types {
            p.require(t.resource(), Access::Read)?;
        }
    }
    types.retain(|t| p.allows(t.resource(), Access::Read));
    if types.is_empty() {
        return Err(ApiError::msg(Code::Forbidden, "you may not read any searchable records"));
    }
    let hits = p.scoped(&state.store).search(&terms, &types, limit).await?;
    let data: Vec<Value> = hits
        .into_iter()
        .map(|h| json!({"object_type": h.object_type, "id": h.id, "title": h.title, "score": h.score}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}
