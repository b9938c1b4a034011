//! The OpenAPI 3.1 document, generated from the same object descriptions and route
//! table the server runs on, so it cannot drift from the API.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use super::error::Code;
use super::records::GENERIC;
use super::AppState;
use crate::domain::fields::FieldKind;
use crate::domain::objects::{FieldSpec, Writable};
use crate::domain::ObjectType;

fn schema_name(ty: ObjectType) -> String {
    ty.name()
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn field_schema(kind: FieldKind) -> Value {
    match kind {
        FieldKind::Text { max } => json!({"type": "string", "maxLength": max}),
        FieldKind::LongText => json!({"type": "string", "maxLength": 100_000}),
        FieldKind::Email => json!({"type": "string", "format": "email"}),
        FieldKind::Url => json!({"type": "string", "format": "uri"}),
        FieldKind::Phone => json!({"type": "string", "examples": ["+44 20 7946 0958"]}),
        FieldKind::Domain => json!({"type": "string", "format": "hostname"}),
        FieldKind::Integer { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        FieldKind::Currency => json!({"type": "string", "pattern": "^[A-Za-z]{3}$", "examples": ["EUR"]}),
        FieldKind::Date => json!({"type": "string", "format": "date"}),
        FieldKind::Timestamp => json!({"type": "string", "format": "date-time"}),
        FieldKind::Bool => json!({"type": "boolean"}),
        FieldKind::Choice(options) => json!({"type": "string", "enum": options}),
        FieldKind::Ref(t) => json!({"type": "string", "format": "uuid", "description": format!("id of a {}", t.name())}),
        FieldKind::Member => json!({"type": "string", "format": "uuid", "description": "user id of a workspace member"}),
        FieldKind::Label => json!({"type": "string", "maxLength": 50}),
        FieldKind::Labels => json!({"type": "array", "items": {"type": "string", "maxLength": 50}, "maxItems": 100}),
        FieldKind::Phones => json!({"type": "array", "items": {"type": "string"}, "maxItems": 100}),
        FieldKind::Emails => json!({"type": "array", "items": {"type": "string", "format": "email"}, "maxItems": 100}),
        FieldKind::Members => json!({"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 100}),
        FieldKind::Json => json!({}),
    }
}

/// Optional fields accept and show `null` (OpenAPI 3.1: a type list).
fn nullable(spec: &FieldSpec, mut s: Value) -> Value {
    if spec.required || spec.kind.is_list() {
        return s;
    }
    match s["type"].as_str().map(str::to_string) {
        Some(t) => {
            s["type"] = json!([t, "null"]);
            if let Some(options) = s.get_mut("enum").and_then(Value::as_array_mut) {
                options.push(Value::Null);
            }
            s
        }
        None => json!({"anyOf": [s, {"type": "null"}]}),
    }
}

fn object_schemas(ty: ObjectType, out: &mut Map<String, Value>) {
    let name = schema_name(ty);
    let mut props = Map::new();
    props.insert("id".into(), json!({"type": "string", "format": "uuid", "readOnly": true}));
    let mut input = Map::new();
    let mut required_in = Vec::new();
    for spec in ty.fields() {
        let mut s = nullable(spec, field_schema(spec.kind));
        if spec.writable == Writable::Never {
            s["readOnly"] = json!(true);
        }
        props.insert(spec.name.into(), s.clone());
        if spec.writable != Writable::Never {
            if spec.writable == Writable::OnCreate {
                s["description"] = json!("set on create; cannot be changed afterwards");
            }
            input.insert(spec.name.into(), s);
            if spec.required && spec.default == crate::domain::objects::Default::None {
                required_in.push(spec.name);
            }
        }
    }
    if ty.has_custom_fields() {
        let cf = json!({"type": "object", "description": "values of the workspace's custom fields for this type"});
        props.insert("custom_fields".into(), cf.clone());
        input.insert("custom_fields".into(), cf);
    }
    props.insert("version".into(), json!({"type": "integer", "readOnly": true}));
    props.insert(
        "created_at".into(),
        json!({"type": "string", "format": "date-time", "readOnly": true}),
    );
    props.insert(
        "updated_at".into(),
        json!({"type": "string", "format": "date-time", "readOnly": true}),
    );
    out.insert(name.clone(), json!({"type": "object", "properties": props}));
    out.insert(
        format!("{name}Create"),
        json!({"type": "object", "properties": input.clone(), "required": required_in, "additionalProperties": false}),
    );
    let mut update = input;
    update.insert(
        "version".into(),
        json!({"type": "integer", "description": "the version this change is based on (or send If-Match)"}),
    );
    out.insert(
        format!("{name}Update"),
        json!({"type": "object", "properties": update, "additionalProperties": false}),
    );
    out.insert(
        format!("{name}Page"),
        json!({"type": "object", "properties": {"data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}}, "next_cursor": {"type": ["string", "null"]}}}),
    );
}

fn list_parameters(ty: ObjectType) -> Vec<Value> {
    let mut params = vec![
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}),
        json!({"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page"}),
        json!({"name": "sort", "in": "query", "schema": {"type": "string"}, "description": "a sortable field, '-' prefix for descending; default -created_at"}),
    ];
    if ty != ObjectType::AuditEntry {
        params.push(json!({"name": "updated_since", "in": "query", "schema": {"type": "string", "format": "date-time"}}));
    }
    for spec in ty.fields() {
        let k = spec.kind;
        if k == FieldKind::LongText || k == FieldKind::Json {
            continue;
        }
        let item = if k.is_list() { json!({"type": "string"}) } else { field_schema(k) };
        let what = if k.is_list() {
            "records whose list holds this item"
        } else {
            "equality"
        };
        params.push(json!({"name": spec.name, "in": "query", "schema": item, "description": what}));
        params.push(json!({"name": format!("{}_is_null", spec.name), "in": "query", "schema": {"type": "boolean"}}));
        if !k.is_list() {
            params.push(json!({"name": format!("{}_in", spec.name), "in": "query", "schema": {"type": "string"}, "description": "comma-separated values"}));
        }
        if k.is_text_like() || k.is_list() {
            params.push(json!({"name": format!("{}_contains", spec.name), "in": "query", "schema": {"type": "string"}, "description": "case-insensitive substring"}));
        }
        if k.is_ordered() {
            for op in ["gt", "gte", "lt", "lte"] {
                params.push(json!({"name": format!("{}_{op}", spec.name), "in": "query", "schema": field_schema(k)}));
            }
        }
    }
    params
}

fn errors(codes: &[Code]) -> Map<String, Value> {
    let mut out = Map::new();
    for c in codes {
        let (status, name, message) = c.info();
        let key = status.as_u16().to_string();
        let entry = out.entry(key).or_insert_with(
            || json!({"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
        let d = entry["description"].as_str().unwrap_or("").to_string();
        entry["description"] = json!(if d.is_empty() {
            format!("{name}: {message}")
        } else {
            format!("{d}; {name}")
        });
    }
    out
}

fn op(summary: &str, tag: &str, body: Option<Value>, ok: (&str, Value), codes: &[Code], params: Vec<Value>) -> Value {
    let mut responses = errors(codes);
    let content = if ok.1.is_null() {
        json!({})
    } else {
        json!({"application/json": {"schema": ok.1}})
    };
    responses.insert(ok.0.into(), json!({"description": "success", "content": content}));
    let mut o = json!({"summary": summary, "tags": [tag], "responses": responses});
    if let Some(b) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    o
}

/// "a contact", "an activity".
fn a(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {}", noun.replace('_', " "))
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}})
}

const AUTHED: &[Code] = &[
    Code::Unauthenticated,
    Code::InvalidCredentials,
    Code::TokenExpired,
    Code::Forbidden,
    Code::Unavailable,
];
const WRITE: &[Code] = &[
    Code::Unauthenticated,
    Code::InvalidCredentials,
    Code::TokenExpired,
    Code::Forbidden,
    Code::MalformedJson,
    Code::InvalidBody,
    Code::ValidationFailed,
    Code::UnsupportedMediaType,
    Code::PayloadTooLarge,
    Code::Unavailable,
];

fn with(base: &[Code], more: &[Code]) -> Vec<Code> {
    base.iter().chain(more).copied().collect()
}

pub fn build() -> Value {
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "enum": Code::ALL.iter().map(|c| c.name()).collect::<Vec<_>>()},
            "message": {"type": "string"},
            "details": {"type": "object"}
        }}}}),
    );
    for ty in ObjectType::ALL {
        object_schemas(ty, &mut schemas);
    }
    let session = json!({"type": "object", "properties": {"token_type": {"const": "Bearer"}, "access_token": {"type": "string"}, "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"}, "workspace_id": {"type": "string"}, "user_id": {"type": "string"}}});
    schemas.insert("Session".into(), session);

    let mut paths = Map::new();
    let mut add = |path: &str, method: &str, o: Value| {
        let entry = paths.entry(format!("/api/v1{path}")).or_insert_with(|| json!({}));
        entry[method] = o;
    };
    for (path, ty) in GENERIC
        .iter()
        .copied()
        .chain([("/pipelines", ObjectType::Pipeline), ("/audit-log", ObjectType::AuditEntry)])
    {
        let n = schema_name(ty);
        let tag = ty.table();
        add(
            path,
            "get",
            op(
                &format!("List {}", ty.table()),
                tag,
                None,
                ("200", r(&format!("{n}Page"))),
                &with(AUTHED, &[Code::InvalidQuery, Code::UnknownParameter, Code::InvalidCursor]),
                list_parameters(ty),
            ),
        );
        let one = format!("{path}/{{id}}");
        add(
            &one,
            "get",
            op(
                &format!("Get {}", a(ty.name())),
                tag,
                None,
                ("200", r(&n)),
                &with(AUTHED, &[Code::NotFound]),
                vec![path_param("id")],
            ),
        );
        if ty == ObjectType::AuditEntry {
            continue;
        }
        let idem = json!({"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 255}});
        add(
            path,
            "post",
            op(
                &format!("Create {}", a(ty.name())),
                tag,
                Some(r(&format!("{n}Create"))),
                ("201", r(&n)),
                &with(
                    WRITE,
                    &[
                        Code::AlreadyExists,
                        Code::IdempotencyKeyInProgress,
                        Code::IdempotencyKeyReused,
                        Code::InvalidIdempotencyKey,
                    ],
                ),
                vec![idem],
            ),
        );
        let if_match = json!({"name": "If-Match", "in": "header", "schema": {"type": "string"}, "description": "the version the change is based on, as an ETag"});
        add(
            &one,
            "patch",
            op(
                &format!("Update {}", a(ty.name())),
                tag,
                Some(r(&format!("{n}Update"))),
                ("200", r(&n)),
                &with(WRITE, &[Code::NotFound, Code::VersionConflict]),
                vec![path_param("id"), if_match.clone()],
            ),
        );
        add(
            &one,
            "delete",
            op(
                &format!("Delete {}", a(ty.name())),
                tag,
                None,
                ("204", Value::Null),
                &with(AUTHED, &[Code::NotFound, Code::VersionConflict, Code::InUse]),
                vec![path_param("id"), if_match],
            ),
        );
    }
    for parent in ["contacts", "companies", "deals"] {
        add(
            &format!("/{parent}/{{id}}/timeline"),
            "get",
            op(
                "Activities linked to the record, newest first",
                parent,
                None,
                ("200", r("ActivityPage")),
                &with(AUTHED, &[Code::NotFound, Code::InvalidQuery]),
                vec![path_param("id")],
            ),
        );
    }
    let stage_in = json!({"type": "object", "properties": {"name": {"type": "string"}, "probability": {"type": "integer"}, "kind": {"enum": ["open", "won", "lost"]}}, "required": ["name"]});
    let mut pipeline_create = r("PipelineCreate");
    pipeline_create = json!({"allOf": [pipeline_create, {"type": "object", "properties": {"stages": {"type": "array", "items": stage_in, "maxItems": 50}}}]});
    add(
        "/pipelines",
        "post",
        op(
            "Create a pipeline with its stages",
            "pipelines",
            Some(pipeline_create),
            ("201", r("Pipeline")),
            WRITE,
            vec![],
        ),
    );
    add(
        "/pipelines/{id}/stages",
        "get",
        op(
            "List a pipeline's stages in order",
            "pipelines",
            None,
            ("200", r("StagePage")),
            &with(AUTHED, &[Code::NotFound]),
            vec![path_param("id")],
        ),
    );
    add(
        "/pipelines/{id}/stages",
        "post",
        op(
            "Add a stage at the end",
            "pipelines",
            Some(r("StageCreate")),
            ("201", r("Stage")),
            &with(WRITE, &[Code::NotFound]),
            vec![path_param("id")],
        ),
    );
    add(
        "/pipelines/{id}/stages/{stage_id}",
        "patch",
        op(
            "Update a stage",
            "pipelines",
            Some(r("StageUpdate")),
            ("200", r("Stage")),
            &with(WRITE, &[Code::NotFound, Code::VersionConflict]),
            vec![path_param("id"), path_param("stage_id")],
        ),
    );
    add(
        "/pipelines/{id}/stages/{stage_id}",
        "delete",
        op(
            "Delete a stage without deals",
            "pipelines",
            None,
            ("204", Value::Null),
            &with(AUTHED, &[Code::NotFound, Code::InUse]),
            vec![path_param("id"), path_param("stage_id")],
        ),
    );
    let mv = json!({"type": "object", "additionalProperties": false, "properties": {"stage_id": {"type": "string", "format": "uuid"}, "after": {"type": "string", "format": "uuid"}, "before": {"type": "string", "format": "uuid"}, "version": {"type": "integer"}}});
    add(
        "/deals/{id}/move",
        "post",
        op(
            "Move a deal to a stage, between two neighbours",
            "deals",
            Some(mv),
            ("200", r("Deal")),
            &with(WRITE, &[Code::NotFound, Code::VersionConflict]),
            vec![path_param("id")],
        ),
    );
    let conv = json!({"type": "object", "properties": {"deal": r("DealCreate")}, "additionalProperties": false});
    add(
        "/leads/{id}/convert",
        "post",
        op(
            "Convert a lead to a contact, company and optional deal",
            "leads",
            Some(conv),
            ("200", json!({"type": "object"})),
            &with(WRITE, &[Code::NotFound, Code::AlreadyExists]),
            vec![path_param("id")],
        ),
    );
    let q = vec![
        json!({"name": "q", "in": "query", "required": true, "schema": {"type": "string"}}),
        json!({"name": "types", "in": "query", "schema": {"type": "string"}, "description": "comma-separated: contact, company, lead, deal, activity"}),
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}),
    ];
    add(
        "/search",
        "get",
        op(
            "Ranked full-text search",
            "search",
            None,
            ("200", json!({"type": "object"})),
            &with(AUTHED, &[Code::InvalidQuery]),
            q,
        ),
    );
    let name = json!({"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\x00-\\x1f\\x7f]*\\S[^\\x00-\\x1f\\x7f]*$"});
    let email = json!({"type": "string", "format": "email", "maxLength": 254});
    let password = json!({"type": "string", "minLength": 10, "maxLength": 1024});
    let signup = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "email", "password"],
        "properties": {
            "workspace_name": name,
            "invitation_token": {"type": "string", "description": "join the workspace of this invitation instead of creating one"},
            "name": name,
            "email": email,
            "password": password
        },
        "oneOf": [{"required": ["workspace_name"]}, {"required": ["invitation_token"]}]
    });
    add(
        "/auth/signup",
        "post",
        op(
            "Create a user with a new workspace (workspace_name), or join the workspace of an invitation (invitation_token)",
            "auth",
            Some(signup),
            ("201", r("Session")),
            &[
                Code::MalformedJson,
                Code::ValidationFailed,
                Code::AlreadyExists,
                Code::NotFound,
                Code::Forbidden,
            ],
            vec![],
        ),
    );
    let login = json!({"type": "object", "additionalProperties": false, "required": ["email", "password"], "properties": {"email": {"type": "string"}, "password": {"type": "string"}, "workspace_id": {"type": "string"}}});
    add(
        "/auth/login",
        "post",
        op(
            "Log in",
            "auth",
            Some(login),
            ("200", r("Session")),
            &[Code::MalformedJson, Code::ValidationFailed, Code::InvalidCredentials],
            vec![],
        ),
    );
    let rt = json!({"type": "object", "additionalProperties": false, "required": ["refresh_token"], "properties": {"refresh_token": {"type": "string"}}});
    add(
        "/auth/refresh",
        "post",
        op(
            "Exchange a refresh token for a new session",
            "auth",
            Some(rt.clone()),
            ("200", r("Session")),
            &[Code::InvalidCredentials, Code::RefreshTokenReused],
            vec![],
        ),
    );
    add(
        "/auth/logout",
        "post",
        op(
            "Revoke a session",
            "auth",
            Some(rt),
            ("204", Value::Null),
            &[Code::InvalidCredentials],
            vec![],
        ),
    );
    add(
        "/me",
        "get",
        op(
            "The caller and its workspace",
            "auth",
            None,
            ("200", json!({"type": "object"})),
            AUTHED,
            vec![],
        ),
    );
    let roles = json!({"enum": ["owner", "admin", "member", "agent", "viewer"]});
    add(
        "/members",
        "get",
        op("List members", "members", None, ("200", json!({"type": "object"})), AUTHED, vec![]),
    );
    let invitation = json!({"type": "object", "additionalProperties": false, "required": ["email", "role"], "properties": {"email": email, "role": roles}});
    add(
        "/invitations",
        "post",
        op(
            "Invite an e-mail address with a role (the token to accept with is shown once)",
            "members",
            Some(invitation),
            ("201", json!({"type": "object"})),
            &with(WRITE, &[Code::AlreadyExists]),
            vec![],
        ),
    );
    add(
        "/invitations",
        "get",
        op(
            "Pending invitations",
            "members",
            None,
            ("200", json!({"type": "object"})),
            AUTHED,
            vec![],
        ),
    );
    add(
        "/invitations/{id}",
        "delete",
        op(
            "Revoke a pending invitation",
            "members",
            None,
            ("204", Value::Null),
            &with(AUTHED, &[Code::NotFound]),
            vec![path_param("id")],
        ),
    );
    let accept = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["token"],
        "properties": {"token": {"type": "string"}, "email": {"type": "string"}, "password": {"type": "string"}},
        "dependentRequired": {"email": ["password"], "password": ["email"]}
    });
    add(
        "/invitations/accept",
        "post",
        op(
            "Accept an invitation, signed in with an access token or with email and password; answers a session in the workspace joined",
            "members",
            Some(accept),
            ("200", r("Session")),
            &with(AUTHED, &[Code::NotFound, Code::AlreadyExists, Code::InvalidCredentials]),
            vec![],
        ),
    );
    add(
        "/members/{user_id}",
        "get",
        op(
            "Get a member",
            "members",
            None,
            ("200", json!({"type": "object"})),
            &with(AUTHED, &[Code::NotFound]),
            vec![path_param("user_id")],
        ),
    );
    add(
        "/members/{user_id}",
        "patch",
        op(
            "Change a member's role",
            "members",
            Some(json!({"type": "object", "required": ["role"], "properties": {"role": {"type": "string"}}})),
            ("200", json!({"type": "object"})),
            &with(WRITE, &[Code::NotFound, Code::InUse]),
            vec![path_param("user_id")],
        ),
    );
    add(
        "/members/{user_id}",
        "delete",
        op(
            "Remove a member",
            "members",
            None,
            ("204", Value::Null),
            &with(AUTHED, &[Code::NotFound, Code::InUse]),
            vec![path_param("user_id")],
        ),
    );
    let key = json!({"type": "object", "additionalProperties": false, "required": ["name", "scopes"], "properties": {"name": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string", "examples": ["contacts:read", "deals:write"]}}}});
    add(
        "/api-keys",
        "get",
        op(
            "List API keys",
            "api-keys",
            None,
            ("200", json!({"type": "object"})),
            AUTHED,
            vec![],
        ),
    );
    add(
        "/api-keys",
        "post",
        op(
            "Create an API key (the key is shown once)",
            "api-keys",
            Some(key),
            ("201", json!({"type": "object"})),
            WRITE,
            vec![],
        ),
    );
    add(
        "/api-keys/{id}",
        "get",
        op(
            "Get an API key",
            "api-keys",
            None,
            ("200", json!({"type": "object"})),
            &with(AUTHED, &[Code::NotFound]),
            vec![path_param("id")],
        ),
    );
    add(
        "/api-keys/{id}",
        "delete",
        op(
            "Revoke an API key",
            "api-keys",
            None,
            ("204", Value::Null),
            &with(AUTHED, &[Code::NotFound]),
            vec![path_param("id")],
        ),
    );
    let ot = json!({"name": "object_type", "in": "query", "required": true, "schema": {"enum": ["contact", "company", "lead", "deal"]}});
    let mut imp = op(
        "Import a CSV file as a background job",
        "imports",
        None,
        ("202", json!({"type": "object"})),
        &with(WRITE, &[Code::Overloaded]),
        vec![ot.clone()],
    );
    imp["requestBody"] = json!({"required": true, "content": {"text/csv": {"schema": {"type": "string"}}}});
    add("/imports", "post", imp);
    add(
        "/imports",
        "get",
        op(
            "Recent import jobs",
            "imports",
            None,
            ("200", json!({"type": "object"})),
            AUTHED,
            vec![],
        ),
    );
    add(
        "/imports/{id}",
        "get",
        op(
            "An import job's progress and row errors",
            "imports",
            None,
            ("200", json!({"type": "object"})),
            &with(AUTHED, &[Code::NotFound]),
            vec![path_param("id")],
        ),
    );
    let mut exp = op(
        "Export matching records as CSV (takes the list filters)",
        "exports",
        None,
        ("200", Value::Null),
        &with(AUTHED, &[Code::InvalidQuery]),
        vec![ot],
    );
    exp["responses"]["200"]["content"] = json!({"text/csv": {"schema": {"type": "string"}}});
    add("/exports", "get", exp);

    json!({
        "openapi": "3.1.0",
        "info": {"title": "Shoal API", "version": env!("CARGO_PKG_VERSION"), "description": "The REST API of Shoal, a real-time CRM. Every error has the body {\"error\": {\"code\", \"message\", \"details\"?}}."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "an access token from /auth/login, or an API key (shoal_sk_…)"}}
        }
    })
}

/// The methods the document gives `path` (a concrete path such as
/// `/api/v1/contacts/01…`), as `Allow` lists them; none for a path it does not have.
/// Paths outside the API (health, metrics, docs) take GET.
pub fn methods_of(doc: &Value, path: &str) -> Option<String> {
    let fits = |template: &str| {
        let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
    };
    // A literal segment wins over a template's (`/invitations/accept` over `/invitations/{id}`).
    let ops = doc["paths"]
        .as_object()?
        .iter()
        .filter(|(template, _)| fits(template))
        .min_by_key(|(template, _)| template.matches('{').count())
        .map(|(_, ops)| ops);
    match ops {
        Some(ops) => {
            let methods: Vec<String> = ops.as_object()?.keys().map(|m| m.to_ascii_uppercase()).collect();
            Some(methods.join(", "))
        }
        None if ["/healthz", "/readyz", "/metrics", "/docs", "/api/v1/openapi.json", "/api/v1/ws"].contains(&path)
            || path.starts_with("/docs/") =>
        {
            Some("GET".into())
        }
        None => None,
    }
}

pub async fn document(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(&state.openapi)
}
