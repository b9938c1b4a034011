//! The OpenAPI 3.1 document, generated from the same object descriptions and route
//! table the server runs on, so it cannot drift from the API.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use super::error::Code;
use super::records::GENERIC;
use super::Site;
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

/// Rust's `char::is_whitespace` and `char::is_control`, as regex class bodies: the
/// server trims the one around text and refuses the other inside it.
const WS: &str = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
const CTRL: &str = r"\x00-\x1f\x7f-\x9f";

/// A pattern for `inner` with white space around it, which the server trims (any
/// amount; the document promises a little, which keeps generated URLs short).
fn trimmed(inner: &str) -> String {
    format!("^[{WS}]{{0,8}}(?:{inner})[{WS}]{{0,8}}$")
}

/// One line of at most `max` characters after trimming; with `value`, not blank (the
/// server reads blank text as no value).
fn text(max: u32, value: bool) -> Value {
    let pattern = if value {
        trimmed(&format!("[^{CTRL}{WS}](?:[^{CTRL}]{{0,{}}})?", max - 1))
    } else {
        trimmed(&format!("[^{CTRL}]{{0,{max}}}"))
    };
    json!({"type": "string", "pattern": pattern})
}

/// A label (tag): 1 to 50 characters, none of them a control character, `;` or `,`.
fn label() -> Value {
    json!({"type": "string", "pattern": trimmed(&format!("[^{CTRL}{WS};,](?:[^{CTRL};,]{{0,49}})?"))})
}

/// Letters and digits in addresses: ASCII ones, and (broader than Unicode's letters,
/// which not every regex dialect can name) characters from U+00AA on.
const EMAIL_ATOM: &str = r"[A-Za-z0-9\u00aa-\uffff!#$%&'*+/=?^_`{|}~-]";
const DOMAIN_LABEL: &str = r"[A-Za-z0-9\u00aa-\uffff](?:[A-Za-z0-9\u00aa-\uffff-]{0,61}[A-Za-z0-9\u00aa-\uffff])?";

/// What `EmailAddress::parse` takes: dot-separated atoms, `@`, two or more labels.
fn email() -> Value {
    let pattern = trimmed(&format!("{EMAIL_ATOM}+(?:\\.{EMAIL_ATOM}+)*@(?:{DOMAIN_LABEL}\\.)+{DOMAIN_LABEL}"));
    json!({"type": "string", "maxLength": 254, "pattern": pattern, "description": "stored lower-cased"})
}

/// `kind` as a request or response value; `value`: a non-blank value is required.
fn field_schema(kind: FieldKind, value: bool) -> Value {
    match kind {
        FieldKind::Text { max } => text(max as u32, value),
        FieldKind::LongText => json!({"type": "string", "maxLength": 100_000, "description": "at most 100,000 bytes of UTF-8"}),
        FieldKind::Email => email(),
        FieldKind::Url => {
            json!({"type": "string", "maxLength": 2048, "pattern": trimmed(&format!("https?://[^\\s{CTRL}/?#]+(?:[/?#][^\\s{CTRL}]*)?"))})
        }
        FieldKind::Phone => {
            json!({"type": "string", "maxLength": 40, "pattern": trimmed(r"[ +().-]*(?:[0-9][ +().-]*){3,20}"), "examples": ["+44 20 7946 0958"]})
        }
        FieldKind::Domain => {
            json!({"type": "string", "maxLength": 253, "pattern": trimmed(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")})
        }
        FieldKind::Integer { min, max } => json!({"type": "integer", "minimum": min, "maximum": max}),
        FieldKind::Currency => json!({"type": "string", "pattern": trimmed("[A-Za-z]{3}"), "examples": ["EUR"]}),
        FieldKind::Date => json!({"type": "string", "format": "date"}),
        FieldKind::Timestamp => json!({"type": "string", "format": "date-time"}),
        FieldKind::Bool => json!({"type": "boolean"}),
        FieldKind::Choice(options) => json!({"type": "string", "enum": options}),
        FieldKind::Ref(t) => json!({"type": "string", "format": "uuid", "description": format!("id of a {}", t.name())}),
        FieldKind::Member => json!({"type": "string", "format": "uuid", "description": "user id of a workspace member"}),
        FieldKind::Label => label(),
        FieldKind::Labels => json!({"type": "array", "items": label(), "maxItems": 100}),
        FieldKind::Phones => json!({"type": "array", "items": field_schema(FieldKind::Phone, true), "maxItems": 100}),
        FieldKind::Emails => json!({"type": "array", "items": email(), "maxItems": 100}),
        FieldKind::Members => json!({"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 100}),
        FieldKind::Json => json!({}),
    }
}

/// A field as a request sends it. A field that must hold a value takes a non-blank
/// one; any other also takes `null` and, except text, a blank string (both mean no
/// value); a list takes `null` for the empty list.
fn input_schema(spec: &FieldSpec, create: bool) -> Value {
    let must = spec.required && (spec.default == crate::domain::objects::Default::None || !create);
    let s = field_schema(spec.kind, must);
    if spec.kind.is_list() {
        return json!({"anyOf": [s, {"type": "null"}]});
    }
    if must {
        return s;
    }
    let mut alternatives = vec![s];
    if !matches!(
        spec.kind,
        FieldKind::Text { .. } | FieldKind::LongText | FieldKind::Bool | FieldKind::Integer { .. } | FieldKind::Json
    ) {
        alternatives.push(json!({"type": "string", "pattern": format!("^[{WS}]*$")}));
    }
    alternatives.push(json!({"type": "null"}));
    json!({"anyOf": alternatives})
}

/// A field as a response shows it: optional ones may be `null`.
fn output_schema(spec: &FieldSpec) -> Value {
    let s = field_schema(spec.kind, false);
    if spec.required || spec.kind.is_list() {
        return s;
    }
    json!({"anyOf": [s, {"type": "null"}]})
}

const INT64: (i64, i64) = (i64::MIN, i64::MAX);

fn object_schemas(ty: ObjectType, out: &mut Map<String, Value>) {
    let name = schema_name(ty);
    let mut props = Map::new();
    props.insert("id".into(), json!({"type": "string", "format": "uuid", "readOnly": true}));
    let (mut create, mut update) = (Map::new(), Map::new());
    let mut required_in = Vec::new();
    for spec in ty.fields() {
        let mut shown = output_schema(spec);
        if spec.writable == Writable::Never {
            shown["readOnly"] = json!(true);
            props.insert(spec.name.into(), shown);
            continue;
        }
        props.insert(spec.name.into(), shown);
        create.insert(spec.name.into(), input_schema(spec, true));
        // Fields set once, on create, are refused in an update.
        if spec.writable == Writable::Always {
            update.insert(spec.name.into(), input_schema(spec, false));
        }
        if spec.required && spec.default == crate::domain::objects::Default::None && !ty.resolved_by_store(spec.name) {
            required_in.push(spec.name);
        }
    }
    if ty.has_custom_fields() {
        let cf = json!({"type": "object", "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,39}$"}, "description": "values of the custom fields defined for this type in the workspace (GET /custom-fields); other keys are refused"});
        props.insert("custom_fields".into(), json!({"type": "object"}));
        create.insert("custom_fields".into(), cf.clone());
        update.insert("custom_fields".into(), cf);
    }
    props.insert("version".into(), json!({"type": "integer", "readOnly": true}));
    props.insert(
        "created_at".into(),
        json!({"type": "string", "format": "date-time", "readOnly": true}),
    );
    if ty != ObjectType::AuditEntry {
        props.insert(
            "updated_at".into(),
            json!({"type": "string", "format": "date-time", "readOnly": true}),
        );
    }
    if ty == ObjectType::Pipeline {
        props.insert(
            "stages".into(),
            json!({"type": "array", "items": r("Stage"), "description": "its stages, in order"}),
        );
    }
    let required_out: Vec<&str> = ["id", "version", "created_at"]
        .into_iter()
        .chain(ty.fields().iter().filter(|f| f.required).map(|f| f.name))
        .collect();
    out.insert(
        name.clone(),
        json!({"type": "object", "properties": props, "required": required_out}),
    );
    let mut create = json!({"type": "object", "properties": create, "required": required_in, "additionalProperties": false});
    // Rules across fields that `ObjectType::check` applies to a new record.
    match ty {
        ObjectType::Deal => {
            create["dependentSchemas"] = json!({"amount": {"anyOf": [
                {"properties": {"amount": {"type": "null"}}},
                {"required": ["currency"], "properties": {"currency": field_schema(FieldKind::Currency, true)}}
            ]}});
        }
        ObjectType::Activity => create["anyOf"] = one_of_given(&["contact_id", "company_id", "deal_id"], "string"),
        ObjectType::Conversation => {
            // A snoozed conversation says until when; no other has that time.
            create["if"] = json!({"properties": {"status": {"const": "snoozed"}}, "required": ["status"]});
            create["then"] =
                json!({"required": ["snoozed_until"], "properties": {"snoozed_until": field_schema(FieldKind::Timestamp, true)}});
            create["else"] = json!({"properties": {"snoozed_until": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": format!("^[{WS}]*$")}]}}});
        }
        ObjectType::Inbox => {
            let time = json!({"type": "string", "pattern": "^(?:[01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$"});
            let day = json!({"type": "array", "maxItems": 10, "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": time}});
            let hours = json!({"type": ["object", "null"], "propertyNames": {"enum": crate::domain::hours::DAYS}, "additionalProperties": day, "description": "open intervals per day in the inbox's time zone, such as {\"mon\": [[\"09:00\", \"17:00\"]]}; days left out are closed; none: always open"});
            let holidays = json!({"type": ["array", "null"], "maxItems": 366, "items": {"type": "string", "format": "date"}, "description": "days closed all day"});
            for (name, schema) in [("business_hours", hours), ("holidays", holidays)] {
                create["properties"][name] = schema.clone();
                update.insert(name.into(), schema);
            }
        }
        ObjectType::SlaPolicy => {
            create["anyOf"] = one_of_given(
                &["first_response_minutes", "next_response_minutes", "resolution_minutes"],
                "integer",
            )
        }
        ObjectType::Macro => {
            create["properties"]["actions"] = macro_actions();
            update.insert("actions".into(), macro_actions());
        }
        ObjectType::CannedResponse => {
            create["properties"]["shortcode"] = json!({"type": "string", "pattern": "^[\\s]*[a-z0-9_-]{1,40}[\\s]*$"});
        }
        ObjectType::Message => {
            create["properties"]["attachments"] = attachments();
            // Only a note mentions members.
            create["if"] = json!({"properties": {"mentions": {"type": "array", "minItems": 1}}, "required": ["mentions"]});
            create["then"] = json!({"required": ["kind"], "properties": {"kind": {"const": "note"}}});
        }
        ObjectType::CustomField => {
            create["properties"]["key"] = json!({"type": "string", "pattern": trimmed("[a-z][a-z0-9_]{0,39}")});
            create["if"] = json!({"properties": {"kind": {"enum": ["select", "multi_select"]}}, "required": ["kind"]});
            create["then"] = json!({"required": ["options"], "properties": {"options": {"type": "array", "minItems": 1}}});
        }
        _ => {}
    }
    if ty == ObjectType::Stage {
        // Under /pipelines/{id}/stages the pipeline comes from the path.
        let mut in_pipeline = create.clone();
        if let Some(p) = in_pipeline["properties"].as_object_mut() {
            p.remove("pipeline_id");
        }
        in_pipeline["required"] = json!(required_in);
        out.insert("StageInPipeline".into(), in_pipeline);
    }
    out.insert(format!("{name}Create"), create);
    update.insert(
        "version".into(),
        json!({"type": ["integer", "null"], "minimum": INT64.0, "maximum": INT64.1, "description": "the version this change is based on (or send If-Match; both must agree)"}),
    );
    out.insert(
        format!("{name}Update"),
        json!({"type": "object", "properties": update, "additionalProperties": false}),
    );
    out.insert(
        format!("{name}Page"),
        json!({"type": "object", "required": ["data", "next_cursor"], "properties": {"data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{name}")}}, "next_cursor": {"type": ["string", "null"]}}}),
    );
}

/// The list filters and sort of `ty` (not `skip`, a timeline's own link), with
/// `limit` and `cursor` when `paged`.
fn list_parameters(ty: ObjectType, paged: bool, skip: Option<&str>) -> Vec<Value> {
    let q = |name: String, schema: Value| json!({"name": name, "in": "query", "schema": schema});
    let mut params = Vec::new();
    if paged {
        params.push(q(
            "limit".into(),
            json!({"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
        ));
        params.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}, "description": "next_cursor of the previous page, with the same sort"}));
    }
    let mut sortable: Vec<String> = vec!["created_at".into()];
    if ty != ObjectType::AuditEntry {
        sortable.push("updated_at".into());
    }
    sortable.extend(ty.fields().iter().filter(|f| f.sortable).map(|f| f.name.to_string()));
    let sorts: Vec<String> = sortable.iter().flat_map(|f| [f.clone(), format!("-{f}")]).collect();
    let default = format!("default -{}", ty.default_order().unwrap_or("created_at"));
    params.push(json!({"name": "sort", "in": "query", "schema": {"type": "string", "enum": sorts}, "description": default}));
    if ty != ObjectType::AuditEntry {
        params.push(q("updated_since".into(), json!({"type": "string", "format": "date-time"})));
    }
    let system: Vec<(&str, FieldKind)> = if ty == ObjectType::AuditEntry {
        vec![("created_at", FieldKind::Timestamp)]
    } else {
        vec![("created_at", FieldKind::Timestamp), ("updated_at", FieldKind::Timestamp)]
    };
    let id = json!({"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[^,]+$"});
    params.push(json!({"name": "id", "in": "query", "schema": id, "description": "the record with this id"}));
    params.push(json!({"name": "id_in", "in": "query", "style": "form", "explode": false, "schema": {"type": "array", "items": id, "minItems": 1, "maxItems": 20}, "description": "the records with these ids, comma-separated (the server takes up to 100)"}));
    let fields = ty.fields().iter().map(|f| (f.name, f.kind)).chain(system);
    let nonblank = json!({"type": "string", "maxLength": 1000, "pattern": "\\S"});
    for (name, k) in fields {
        if Some(name) == skip {
            continue;
        }
        params.push(q(format!("{name}_is_null"), json!({"type": "boolean"})));
        if k == FieldKind::Json {
            continue;
        }
        if k == FieldKind::LongText {
            params.push(
                json!({"name": format!("{name}_contains"), "in": "query", "schema": nonblank, "description": "case-insensitive substring"}),
            );
            continue;
        }
        let one = match k {
            FieldKind::Labels => label(),
            FieldKind::Emails => email(),
            FieldKind::Phones => field_schema(FieldKind::Phone, true),
            FieldKind::Members => json!({"type": "string", "format": "uuid"}),
            _ => field_schema(k, true),
        };
        let what = if k.is_list() {
            "records whose list holds this item"
        } else {
            "equality"
        };
        params.push(json!({"name": name, "in": "query", "schema": one, "description": what}));
        if !k.is_list() {
            params.push(json!({"name": format!("{name}_in"), "in": "query", "style": "form", "explode": false, "schema": {"type": "array", "items": one, "minItems": 1, "maxItems": 20}, "description": "any of these, comma-separated (the server takes up to 100)"}));
        }
        if k.is_text_like() || k.is_list() {
            params.push(
                json!({"name": format!("{name}_contains"), "in": "query", "schema": nonblank, "description": "case-insensitive substring"}),
            );
        }
        if k.is_ordered() {
            for op in ["gt", "gte", "lt", "lte"] {
                params.push(q(format!("{name}_{op}"), field_schema(k, true)));
            }
        }
    }
    params
}

fn errors(codes: &[Code]) -> Map<String, Value> {
    let mut out = Map::new();
    for c in codes {
        let (status, name, message) = c.info();
        let key = status.to_string();
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

/// `Idempotency-Key`, honoured on every POST that creates.
fn idempotency_key() -> Value {
    json!({"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"}, "description": "a retry with the same key gets the first answer"})
}

/// `X-Mutation-Id`, echoed as `cause` on the events a record write makes.
fn mutation_id() -> Value {
    json!({"name": "X-Mutation-Id", "in": "header", "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,100}$"}, "description": "echoed as `cause` on the events this write makes"})
}

/// `If-Match`: the version a change is based on, as an ETag (`"3"`, `W/"3"`).
fn if_match() -> Value {
    json!({"name": "If-Match", "in": "header", "schema": {"type": "string", "pattern": "^\\s*(?:W/)?\"*[+-]?[0-9]{1,18}\"*\\s*$"}, "description": "the version the change is based on, as an ETag; must agree with a body's version"})
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
/// What an endpoint that honours `Idempotency-Key` can answer besides its own.
const IDEMPOTENT: &[Code] = &[
    Code::IdempotencyKeyInProgress,
    Code::IdempotencyKeyReused,
    Code::InvalidIdempotencyKey,
];
/// What a public endpoint (sign-up, log-in, sessions) can answer besides its own.
const PUBLIC: &[Code] = &[
    Code::MalformedJson,
    Code::InvalidBody,
    Code::ValidationFailed,
    Code::UnsupportedMediaType,
    Code::PayloadTooLarge,
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

/// At least one of `fields` given, not null (of JSON type `ty`).
fn one_of_given(fields: &[&str], ty: &str) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|f| json!({"required": [f], "properties": {*f: {"type": ty}}}))
            .collect(),
    )
}

/// A message's attachments, as `domain::inbox::check_attachments` takes them.
fn attachments() -> Value {
    json!({"type": ["array", "null"], "maxItems": crate::domain::inbox::MAX_ATTACHMENTS, "items": {
        "type": "object", "additionalProperties": false, "required": ["name", "content_type", "size"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"},
            "content_type": {"type": "string", "maxLength": 100, "pattern": "^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$"},
            "size": {"type": "integer", "minimum": 0, "maximum": 10_000_000_000u64},
            "url": {"type": ["string", "null"], "maxLength": 2000, "pattern": "^https?://"}
        }
    }})
}

/// A macro's steps, as `domain::inbox::parse_actions` takes them.
fn macro_actions() -> Value {
    let id_or_null = json!({"type": ["string", "null"], "format": "uuid"});
    let labels = json!({"type": "array", "minItems": 1, "items": label()});
    let step = |ty: &str, value: Value| json!({"type": "object", "additionalProperties": false, "required": ["type", "value"], "properties": {"type": {"const": ty}, "value": value}});
    let statuses: Vec<&str> = crate::domain::objects::CONVERSATION_STATUSES
        .iter()
        .copied()
        .filter(|s| *s != "snoozed")
        .collect();
    json!({"type": "array", "minItems": 1, "maxItems": crate::domain::inbox::MAX_ACTIONS, "items": {"oneOf": [
        step("set_status", json!({"enum": statuses})),
        step("set_priority", json!({"enum": crate::domain::objects::PRIORITIES})),
        step("assign", id_or_null.clone()),
        step("set_team", id_or_null),
        step("add_labels", labels.clone()),
        step("remove_labels", labels),
        step("add_note", json!({"type": "string", "minLength": 1, "maxLength": 10000, "pattern": "\\S"})),
        step("send_canned_response", json!({"type": "string", "format": "uuid"}))
    ]}, "description": "steps applied in order as one change"})
}

/// The support inbox beyond its records' generic routes: an API inbox's token, the
/// conversation filters `assignee=me|none`, messages, and the API channel.
fn inbox_paths(schemas: &Map<String, Value>, add: &mut impl FnMut(&str, &str, Value)) {
    let mut inbox = schemas["Inbox"].clone();
    inbox["properties"]["token"] =
        json!({"type": "string", "description": "an inbox of channel api: its token for POST /channels/api/messages, shown only now"});
    add(
        "/inboxes",
        "post",
        op(
            "Create an inbox (one of channel api answers its token, once)",
            "inboxes",
            Some(r("InboxCreate")),
            ("201", inbox),
            &[WRITE, IDEMPOTENT, &[Code::AlreadyExists]].concat(),
            vec![idempotency_key(), mutation_id()],
        ),
    );
    add(
        "/inboxes/{id}/token",
        "post",
        op(
            "Give an API inbox a new token; the old one stops working",
            "inboxes",
            None,
            (
                "200",
                json!({"type": "object", "required": ["inbox_id", "token"], "properties": {"inbox_id": {"type": "string"}, "token": {"type": "string"}}}),
            ),
            &with(AUTHED, &[Code::NotFound, Code::InvalidBody]),
            vec![path_param("id")],
        ),
    );
    add(
        "/conversations/{id}/read",
        "post",
        op(
            "Mark the conversation read by the calling member, up to now",
            "conversations",
            None,
            (
                "200",
                json!({"type": "object", "required": ["conversation_id", "user_id", "last_read_at"], "properties": {"conversation_id": {"type": "string"}, "user_id": {"type": "string"}, "last_read_at": {"type": "string", "format": "date-time"}}}),
            ),
            &with(AUTHED, &[Code::NotFound, Code::Overloaded]),
            vec![path_param("id")],
        ),
    );
    let for_conversation = |extra: Value| {
        let mut props = json!({"conversation_id": {"type": "string", "format": "uuid"}});
        if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        json!({"type": "object", "additionalProperties": false, "required": ["conversation_id"], "properties": props})
    };
    add(
        "/canned-responses/{id}/render",
        "post",
        op(
            "A canned response filled in for a conversation",
            "canned_responses",
            Some(for_conversation(json!({}))),
            (
                "200",
                json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}),
            ),
            &with(WRITE, &[Code::NotFound]),
            vec![path_param("id")],
        ),
    );
    add(
        "/macros/{id}/apply",
        "post",
        op(
            "Apply a macro to a conversation as one change",
            "macros",
            Some(for_conversation(
                json!({"version": {"type": ["integer", "null"], "minimum": INT64.0, "maximum": INT64.1}}),
            )),
            (
                "200",
                json!({"type": "object", "required": ["conversation", "messages"], "properties": {"conversation": r("Conversation"), "messages": {"type": "array", "items": r("Message")}}}),
            ),
            &[WRITE, IDEMPOTENT, &[Code::NotFound, Code::VersionConflict, Code::Overloaded]].concat(),
            vec![path_param("id"), idempotency_key(), mutation_id()],
        ),
    );
    let status = json!({"enum": crate::actors::availability::STATUSES});
    add(
        "/availability",
        "get",
        op(
            "Every member and whether they are online, busy or offline",
            "availability",
            None,
            (
                "200",
                json!({"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": {"type": "object", "required": ["user_id", "status"], "properties": {"user_id": {"type": "string"}, "name": {"type": "string"}, "role": {"type": "string"}, "status": status}}}}}),
            ),
            AUTHED,
            vec![],
        ),
    );
    add(
        "/availability",
        "put",
        op(
            "Choose to be online, busy or offline (offline anyway with no connection open)",
            "availability",
            Some(json!({"type": "object", "additionalProperties": false, "required": ["status"], "properties": {"status": status}})),
            (
                "200",
                json!({"type": "object", "required": ["user_id", "chosen", "status"], "properties": {"user_id": {"type": "string"}, "chosen": status, "status": status}}),
            ),
            WRITE,
            vec![],
        ),
    );
    let mut params = list_parameters(ObjectType::Conversation, true, None);
    params.push(json!({"name": "assignee", "in": "query", "schema": {"enum": ["me", "none"]}, "description": "me: assigned to the caller; none: to nobody"}));
    add(
        "/conversations",
        "get",
        op(
            "List conversations",
            "conversations",
            None,
            ("200", r("ConversationPage")),
            &with(AUTHED, &[Code::InvalidQuery, Code::UnknownParameter, Code::InvalidCursor]),
            params,
        ),
    );
    add(
        "/conversations/{id}/messages",
        "get",
        op(
            "A conversation's messages, newest first unless sorted by created_at",
            "conversations",
            None,
            ("200", r("MessagePage")),
            &with(
                AUTHED,
                &[Code::NotFound, Code::InvalidQuery, Code::UnknownParameter, Code::InvalidCursor],
            ),
            [path_param("id")]
                .into_iter()
                .chain(list_parameters(ObjectType::Message, true, Some("conversation_id")))
                .collect(),
        ),
    );
    let mut reply = schemas["MessageCreate"].clone();
    if let Some(p) = reply["properties"].as_object_mut() {
        p.remove("conversation_id");
    }
    reply["required"] = json!(["text"]);
    add(
        "/conversations/{id}/messages",
        "post",
        op(
            "Reply to the customer (kind message) or add a private note",
            "conversations",
            Some(reply),
            ("201", r("Message")),
            &[WRITE, IDEMPOTENT, &[Code::NotFound]].concat(),
            vec![path_param("id"), idempotency_key(), mutation_id()],
        ),
    );
    let short = |max: u32| json!({"type": ["string", "null"], "maxLength": max});
    let posted = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["text"],
        "properties": {
            "contact_identifier": short(200),
            "email": {"anyOf": [email(), {"type": "null"}]},
            "name": short(200),
            "subject": short(200),
            "text": {"type": "string", "minLength": 1, "maxLength": 100000, "pattern": "\\S"},
            "html": {"type": ["string", "null"], "maxLength": 400000, "description": "rich text; kept as an allow-list sanitiser leaves it"},
            "attachments": attachments(),
            "external_id": short(200)
        },
        "anyOf": [
            {"required": ["contact_identifier"], "properties": {"contact_identifier": {"type": "string", "pattern": "\\S"}}},
            {"required": ["email"], "properties": {"email": email()}}
        ],
        "description": "the customer (contact_identifier, the integrator's own id for them, and/or email) and their message"
    });
    let answer = json!({"type": "object", "required": ["message", "conversation", "duplicate"], "properties": {
        "message": r("Message"), "conversation": r("Conversation"), "duplicate": {"type": "boolean"}
    }});
    let mut channel = op(
        "Post a customer's message to an API inbox, with the inbox's token",
        "channels",
        Some(posted),
        ("201", answer.clone()),
        &[
            Code::Unauthenticated,
            Code::InvalidCredentials,
            Code::MalformedJson,
            Code::InvalidBody,
            Code::ValidationFailed,
            Code::UnsupportedMediaType,
            Code::PayloadTooLarge,
            Code::Overloaded,
            Code::Unavailable,
        ],
        vec![mutation_id()],
    );
    channel["responses"]["200"] =
        json!({"description": "already posted (same external_id): the first answer", "content": {"application/json": {"schema": answer}}});
    channel["security"] = json!([{"inboxToken": []}]);
    add("/channels/api/messages", "post", channel);
    let mut delivery = op(
        "Report where an agent's reply is on its way to the customer (moves only forward)",
        "channels",
        Some(
            json!({"type": "object", "additionalProperties": false, "required": ["status"], "properties": {"status": {"enum": ["sent", "delivered", "read", "failed"]}}}),
        ),
        ("200", r("Message")),
        &[
            Code::Unauthenticated,
            Code::InvalidCredentials,
            Code::MalformedJson,
            Code::InvalidBody,
            Code::ValidationFailed,
            Code::UnsupportedMediaType,
            Code::PayloadTooLarge,
            Code::NotFound,
            Code::Overloaded,
            Code::Unavailable,
        ],
        vec![path_param("id")],
    );
    delivery["security"] = json!([{"inboxToken": []}]);
    add("/channels/api/messages/{id}/status", "post", delivery);
    add(
        "/messages",
        "get",
        op(
            "List messages across conversations (filter by inbox_id, conversation_id, direction, delivery_status…)",
            "messages",
            None,
            ("200", r("MessagePage")),
            &with(AUTHED, &[Code::InvalidQuery, Code::UnknownParameter, Code::InvalidCursor]),
            list_parameters(ObjectType::Message, true, None),
        ),
    );
    add(
        "/messages/{id}",
        "get",
        op(
            "Get a message",
            "messages",
            None,
            ("200", r("Message")),
            &with(AUTHED, &[Code::NotFound]),
            vec![path_param("id")],
        ),
    );
    mail_paths(add);
}

/// An e-mail inbox's servers, their test, and attachments kept from mail.
fn mail_paths(add: &mut impl FnMut(&str, &str, Value)) {
    let security = json!({"enum": crate::mail::Security::NAMES, "description": "tls: TLS from the start; starttls: upgraded before login; none: plain, only to a server on this machine"});
    let host = json!({"type": "string", "minLength": 1, "maxLength": 253, "pattern": "^[A-Za-z0-9.:\\[\\]-]+$"});
    let port =
        json!({"type": ["integer", "null"], "minimum": 0, "maximum": 65535, "description": "unset: the usual port for the security"});
    let secret = json!({"type": ["string", "null"], "minLength": 1, "maxLength": 500, "writeOnly": true, "description": "never answered back; unset on an update keeps the saved one, as long as the server, port, security and username stay the same"});
    let input = json!({
        "type": "object", "additionalProperties": false, "required": ["imap", "smtp", "from_address"],
        "properties": {
            "imap": {"type": "object", "additionalProperties": false, "required": ["host", "security", "username"], "properties": {
                "host": host, "port": port, "security": security, "username": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "\\S"},
                "password": secret, "folder": {"type": ["string", "null"], "maxLength": 200, "pattern": "^[^\"\\r\\n]*$", "description": "default INBOX"},
                "import_days": {"type": ["integer", "null"], "minimum": 0, "maximum": 3650, "description": "how far back the first import goes (default 30)"},
                "poll_secs": {"type": ["integer", "null"], "minimum": 5, "maximum": 3600, "description": "for a server without IDLE (default 60)"}
            }},
            "smtp": {"type": "object", "additionalProperties": false, "required": ["host", "security"], "properties": {
                "host": host, "port": port, "security": security, "username": {"type": ["string", "null"], "maxLength": 500}, "password": secret
            }},
            "from_name": {"type": ["string", "null"], "maxLength": 200, "pattern": "^[^\\r\\n]*$"},
            "from_address": email()
        },
        "description": "plain security (none) is only accepted for a loopback host"
    });
    let settings = json!({
        "type": "object", "required": ["inbox_id", "imap", "smtp", "from_address", "sync"],
        "properties": {
            "inbox_id": {"type": "string"},
            "imap": {"type": "object", "required": ["host", "port", "security", "username", "password_set", "folder", "import_days", "poll_secs"], "properties": {
                "host": {"type": "string"}, "port": {"type": "integer"}, "security": security, "username": {"type": "string"},
                "password_set": {"type": "boolean"}, "folder": {"type": "string"}, "import_days": {"type": "integer"}, "poll_secs": {"type": "integer"}
            }},
            "smtp": {"type": "object", "required": ["host", "port", "security", "password_set"], "properties": {
                "host": {"type": "string"}, "port": {"type": "integer"}, "security": security, "username": {"type": ["string", "null"]}, "password_set": {"type": "boolean"}
            }},
            "from_name": {"type": ["string", "null"]},
            "from_address": {"type": "string"},
            "sync": {"type": "object", "properties": {"uid_validity": {"type": ["integer", "null"]}, "last_uid": {"type": "integer"}}}
        }
    });
    let choice = json!({"type": "object", "required": ["email", "email_available"], "properties": {
        "email": {"type": "boolean", "description": "assigned-to-you and mention notifications are mailed to the member"},
        "email_available": {"type": "boolean", "description": "this server has an SMTP server for notification mails"}
    }});
    add(
        "/me/notifications",
        "get",
        op(
            "Whether the calling member's notifications are mailed to them",
            "me",
            None,
            ("200", choice.clone()),
            AUTHED,
            vec![],
        ),
    );
    add(
        "/me/notifications",
        "put",
        op(
            "Choose whether the calling member's notifications are mailed to them",
            "me",
            Some(
                json!({"type": "object", "additionalProperties": false, "required": ["email"], "properties": {"email": {"type": "boolean"}}}),
            ),
            ("200", choice),
            &with(WRITE, &[Code::InvalidBody]),
            vec![],
        ),
    );
    let inbox_errors = [Code::NotFound, Code::InvalidBody];
    add(
        "/inboxes/{id}/email",
        "get",
        op(
            "An e-mail inbox's servers (passwords are never answered)",
            "inboxes",
            None,
            ("200", settings.clone()),
            &with(AUTHED, &inbox_errors),
            vec![path_param("id")],
        ),
    );
    add(
        "/inboxes/{id}/email",
        "put",
        op(
            "Save an e-mail inbox's IMAP and SMTP servers; its sync starts (over) at once",
            "inboxes",
            Some(input.clone()),
            ("200", settings),
            &with(WRITE, &inbox_errors),
            vec![path_param("id")],
        ),
    );
    let outcome = json!({"type": "object", "required": ["ok"], "properties": {
        "ok": {"type": "boolean"},
        "stage": {"enum": ["dns", "tcp", "tls", "auth", "folder", "protocol", "send"], "description": "the step that failed"},
        "error": {"type": "string", "description": "what failed, in words"}
    }});
    let test_body = json!({
        "anyOf": [{"type": "object", "maxProperties": 0}, input],
        "description": "servers to try before saving them (passwords left out: the saved ones, for the same server and user); {} tries the saved ones"
    });
    add(
        "/inboxes/{id}/email/test",
        "post",
        op(
            "Try an e-mail inbox's servers: IMAP login and folder, SMTP greeting and login",
            "inboxes",
            Some(test_body),
            (
                "200",
                json!({"type": "object", "required": ["imap", "smtp"], "properties": {"imap": outcome.clone(), "smtp": outcome}}),
            ),
            &with(WRITE, &[Code::NotFound, Code::InvalidBody, Code::Overloaded]),
            vec![path_param("id")],
        ),
    );
    let mut download = op(
        "Download an attachment kept from a mail (by its position in the message's attachments)",
        "messages",
        None,
        ("200", Value::Null),
        &with(AUTHED, &[Code::NotFound]),
        vec![
            path_param("id"),
            json!({"name": "index", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}}),
        ],
    );
    download["responses"]["200"] = json!({"description": "the attachment's bytes, with the type judged from them", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}});
    add("/messages/{id}/attachments/{index}", "get", download);
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
    schemas["Conversation"]["properties"]["unread_count"] = json!({"type": "integer", "minimum": 0, "readOnly": true, "description": "customer messages the calling member has not read (not given to API keys)"});
    let session = json!({"type": "object", "properties": {"token_type": {"const": "Bearer"}, "access_token": {"type": "string"}, "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"}, "workspace_id": {"type": "string"}, "user_id": {"type": "string"}}});
    schemas.insert("Session".into(), session);

    let mut paths = Map::new();
    let mut add = |path: &str, method: &str, o: Value| {
        let entry = paths.entry(format!("/api/v1{path}")).or_insert_with(|| json!({}));
        entry[method] = o;
    };
    for (path, ty) in GENERIC.iter().copied().chain([
        ("/pipelines", ObjectType::Pipeline),
        ("/audit-log", ObjectType::AuditEntry),
        ("/inboxes", ObjectType::Inbox),
        ("/conversations", ObjectType::Conversation),
    ]) {
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
                list_parameters(ty, true, None),
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
        add(
            path,
            "post",
            op(
                &format!("Create {}", a(ty.name())),
                tag,
                Some(r(&format!("{n}Create"))),
                ("201", r(&n)),
                &[WRITE, IDEMPOTENT, &[Code::AlreadyExists]].concat(),
                vec![idempotency_key(), mutation_id()],
            ),
        );
        add(
            &one,
            "patch",
            op(
                &format!("Update {}", a(ty.name())),
                tag,
                Some(r(&format!("{n}Update"))),
                ("200", r(&n)),
                &with(WRITE, &[Code::NotFound, Code::VersionConflict]),
                vec![path_param("id"), if_match(), mutation_id()],
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
                &with(AUTHED, &[Code::NotFound, Code::VersionConflict, Code::InUse, Code::InvalidBody]),
                vec![path_param("id"), if_match(), mutation_id()],
            ),
        );
    }
    for (parent, link) in [
        ("contacts", "contact_id"),
        ("companies", "company_id"),
        ("deals", "deal_id"),
        ("leads", "lead_id"),
    ] {
        add(
            &format!("/{parent}/{{id}}/timeline"),
            "get",
            op(
                "Activities linked to the record, newest first",
                parent,
                None,
                ("200", r("ActivityPage")),
                &with(
                    AUTHED,
                    &[Code::NotFound, Code::InvalidQuery, Code::UnknownParameter, Code::InvalidCursor],
                ),
                [path_param("id")]
                    .into_iter()
                    .chain(list_parameters(ObjectType::Activity, true, Some(link)))
                    .collect(),
            ),
        );
    }
    let mut pipeline_create = schemas["PipelineCreate"].clone();
    pipeline_create["properties"]["stages"] = json!({"anyOf": [{"type": "array", "items": r("StageInPipeline"), "maxItems": 50}, {"type": "null"}], "description": "its stages, in order"});
    add(
        "/pipelines",
        "post",
        op(
            "Create a pipeline with its stages",
            "pipelines",
            Some(pipeline_create),
            ("201", r("Pipeline")),
            &with(WRITE, IDEMPOTENT),
            vec![idempotency_key()],
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
            Some(r("StageInPipeline")),
            ("201", r("Stage")),
            &[WRITE, IDEMPOTENT, &[Code::NotFound]].concat(),
            vec![path_param("id"), idempotency_key(), mutation_id()],
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
            vec![path_param("id"), path_param("stage_id"), if_match(), mutation_id()],
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
            &with(AUTHED, &[Code::NotFound, Code::InUse, Code::VersionConflict, Code::InvalidBody]),
            vec![path_param("id"), path_param("stage_id"), if_match(), mutation_id()],
        ),
    );
    let id_or_null = json!({"type": ["string", "null"], "format": "uuid"});
    let mv = json!({"type": "object", "additionalProperties": false, "properties": {
        "stage_id": id_or_null,
        "after": {"type": ["string", "null"], "format": "uuid", "description": "the anchor: the card lands directly after this one"},
        "before": {"type": ["string", "null"], "format": "uuid", "description": "with after, what the client saw after the anchor (a hint); alone, the card lands directly before this one"},
        "version": {"type": ["integer", "null"], "minimum": INT64.0, "maximum": INT64.1}
    }});
    add(
        "/deals/{id}/move",
        "post",
        op(
            "Move a deal to a stage, between two neighbours",
            "deals",
            Some(mv),
            ("200", r("Deal")),
            &[WRITE, IDEMPOTENT, &[Code::NotFound, Code::VersionConflict]].concat(),
            vec![path_param("id"), idempotency_key(), mutation_id()],
        ),
    );
    inbox_paths(&schemas, &mut add);
    let mut deal = schemas["DealCreate"].clone();
    // The deal's title defaults to the company's or lead's name; its links are the conversion's.
    deal["required"] = json!(["pipeline_id"]);
    let conv = json!({"type": "object", "properties": {"deal": {"anyOf": [deal, {"type": "null"}]}}, "additionalProperties": false});
    add(
        "/leads/{id}/convert",
        "post",
        op(
            "Convert a lead to a contact, company and optional deal",
            "leads",
            Some(conv),
            ("200", json!({"type": "object"})),
            &[WRITE, IDEMPOTENT, &[Code::NotFound, Code::AlreadyExists]].concat(),
            vec![path_param("id"), idempotency_key(), mutation_id()],
        ),
    );
    let q = vec![
        json!({"name": "q", "in": "query", "required": true, "schema": {"type": "string", "maxLength": 1000, "pattern": "[A-Za-z0-9\\u00aa-\\uffff]"}, "description": "words, each matched as a prefix; at least one letter or digit"}),
        json!({"name": "types", "in": "query", "style": "form", "explode": false, "schema": {"type": "array", "items": {"enum": ObjectType::ALL.into_iter().filter(|t| t.is_searchable()).map(|t| t.name()).collect::<Vec<_>>()}}, "description": "the types to search (default: all)"}),
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}),
    ];
    add(
        "/search",
        "get",
        op(
            "Ranked full-text search",
            "search",
            None,
            ("200", json!({"type": "object"})),
            &with(AUTHED, &[Code::InvalidQuery, Code::UnknownParameter]),
            q,
        ),
    );
    let name = text(200, true);
    let email = email();
    let password = json!({"type": "string", "minLength": 10, "maxLength": 1024});
    let cookie = json!({"type": "boolean", "description": "true: the refresh token is set as an HttpOnly, SameSite=Strict cookie (shoal_refresh, path /api/v1/auth) with a CSRF value in the readable cookie shoal_csrf, and left out of the answer (the web app's sessions)"});
    let signup = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "email", "password"],
        "properties": {
            "workspace_name": name,
            "invitation_token": {"type": "string", "description": "join the workspace of this invitation instead of creating one"},
            "name": name,
            "email": email,
            "password": password,
            "refresh_cookie": cookie
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
            &with(PUBLIC, &[Code::AlreadyExists, Code::NotFound, Code::Forbidden]),
            vec![],
        ),
    );
    let login = json!({"type": "object", "additionalProperties": false, "required": ["email", "password"], "properties": {"email": {"type": "string"}, "password": {"type": "string"}, "workspace_id": {"type": ["string", "null"]}, "refresh_cookie": cookie}});
    add(
        "/auth/login",
        "post",
        op(
            "Log in",
            "auth",
            Some(login),
            ("200", r("Session")),
            &with(PUBLIC, &[Code::InvalidCredentials]),
            vec![],
        ),
    );
    let rt = json!({"type": "object", "additionalProperties": false, "properties": {"refresh_token": {"type": "string", "description": "absent: the shoal_refresh cookie, which counts only with X-CSRF-Token"}}});
    let csrf = json!({"name": "X-CSRF-Token", "in": "header", "schema": {"type": "string"}, "description": "with the refresh cookie: the value of the shoal_csrf cookie"});
    add(
        "/auth/refresh",
        "post",
        op(
            "Exchange a refresh token (in the body, or the web app's cookie) for a new session; by cookie, the answer sets the rotated cookie",
            "auth",
            Some(rt.clone()),
            ("200", r("Session")),
            &with(PUBLIC, &[Code::InvalidCredentials, Code::RefreshTokenReused, Code::Forbidden]),
            vec![csrf.clone()],
        ),
    );
    add(
        "/auth/logout",
        "post",
        op(
            "Revoke a session (by cookie, the cookies are cleared too)",
            "auth",
            Some(rt),
            ("204", Value::Null),
            &with(PUBLIC, &[Code::InvalidCredentials, Code::Forbidden]),
            vec![csrf],
        ),
    );
    let csrf_switch = json!({"name": "X-CSRF-Token", "in": "header", "schema": {"type": "string"}, "description": "with the refresh cookie: the value of the shoal_csrf cookie"});
    let switch = json!({"type": "object", "additionalProperties": false, "required": ["workspace_id"], "properties": {"workspace_id": {"type": "string"}, "refresh_token": {"type": "string", "description": "the session's current refresh token; absent: the shoal_refresh cookie, which counts only with X-CSRF-Token"}, "refresh_cookie": cookie}});
    add(
        "/auth/switch",
        "post",
        op(
            "Move a signed-in user to another of their workspaces: a session there, and the calling session ends",
            "auth",
            Some(switch),
            ("200", r("Session")),
            &with(WRITE, &[Code::NotFound, Code::RefreshTokenReused]),
            vec![csrf_switch],
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
            &[WRITE, IDEMPOTENT, &[Code::AlreadyExists]].concat(),
            vec![idempotency_key()],
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
        "properties": {"token": {"type": "string"}, "email": {"type": "string"}, "password": {"type": "string"}, "refresh_cookie": cookie},
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
            &with(WRITE, &[Code::NotFound, Code::AlreadyExists]),
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
            Some(json!({"type": "object", "additionalProperties": false, "required": ["role"], "properties": {"role": roles}})),
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
    let grantable: Vec<&str> = crate::domain::Resource::ALL
        .into_iter()
        .filter(|r| r.grantable_to_api_keys())
        .map(|r| r.as_str())
        .collect();
    let scope = format!("^(?:{}):(?:read|write)$", grantable.join("|"));
    let key = json!({"type": "object", "additionalProperties": false, "required": ["name", "scopes"], "properties": {"name": name, "scopes": {"type": "array", "minItems": 1, "maxItems": 50, "items": {"type": "string", "pattern": scope, "examples": ["contacts:read", "deals:write"]}}}});
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
            &with(WRITE, IDEMPOTENT),
            vec![idempotency_key()],
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
    let import_params = vec![
        ot.clone(),
        json!({"name": "mode", "in": "query", "schema": {"enum": ["create", "skip", "update", "upsert"]}, "description": "what a row matching a record does (docs/api.md, CSV); default skip with a key, create without"}),
        json!({"name": "key", "in": "query", "schema": {"type": "string", "pattern": "^[a-z_]+$"}, "description": "the column rows are matched on: id, none, or a text field of object_type (default emails, domain, email; none for deals)"}),
        json!({"name": "wait", "in": "query", "schema": {"type": "boolean"}, "description": "answer 200 with the finished job instead of 202 at once"}),
    ];
    let mut imp = op(
        "Import a CSV file as a background job",
        "imports",
        None,
        ("202", json!({"type": "object"})),
        &with(WRITE, &[Code::Overloaded, Code::InvalidQuery, Code::UnknownParameter]),
        import_params,
    );
    imp["responses"]["200"] =
        json!({"description": "wait=true: the finished job", "content": {"application/json": {"schema": {"type": "object"}}}});
    let csv_file = json!({"type": "string", "description": "first line: column names, each a writable field of object_type, custom_fields.<key>, or id/version/created_at/updated_at (ignored)"});
    imp["requestBody"] = json!({"required": true, "content": {
        "text/csv": {"schema": csv_file},
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}
    }});
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
        "Export matching records as CSV: takes the list filters and sort of object_type (see its list), not limit or cursor",
        "exports",
        None,
        ("200", Value::Null),
        &with(AUTHED, &[Code::InvalidQuery]),
        vec![ot],
    );
    exp["responses"]["200"]["content"] = json!({"text/csv": {"schema": {"type": "string"}}});
    add("/exports", "get", exp);

    // Sign-up, log-in and sessions take no bearer credential.
    for public in ["signup", "login", "refresh", "logout"] {
        if let Some(o) = paths.get_mut(&format!("/api/v1/auth/{public}")).and_then(|p| p.get_mut("post")) {
            o["security"] = json!([]);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Shoal API", "version": env!("CARGO_PKG_VERSION"), "description": "The REST API of Shoal, a real-time CRM. Every error has the body {\"error\": {\"code\", \"message\", \"details\"?}}."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an access token from /auth/login, or an API key (shoal_sk_…)"},
                "inboxToken": {"type": "http", "scheme": "bearer", "description": "an API inbox's token (shoal_inbox_…), from POST /inboxes or /inboxes/{id}/token"}
            }
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

pub async fn document(site: web::Data<Site>) -> HttpResponse {
    HttpResponse::Ok().json(&site.openapi)
}
