//! List queries: filters, sorting and cursors parsed from a query string against an
//! object type's description. Unknown parameters are errors, never silently ignored,
//! so a typo in a filter cannot return "everything".

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::fields::{parse_timestamp, FieldKind, FieldValue};
use super::objects::{FieldSpec, ObjectType, Writable};

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;

/// Pseudo-fields present on every record.
pub static CREATED_AT: FieldSpec = system_field("created_at");
pub static UPDATED_AT: FieldSpec = system_field("updated_at");
/// The record's id, as a filter only (`id=`, `id_in=`): many records fetched by id in
/// one request, as a board does for the contacts on its cards.
pub static ID: FieldSpec = FieldSpec {
    name: "id",
    kind: FieldKind::Text { max: 100 },
    sortable: false,
    ..system_field("id")
};

const fn system_field(name: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        kind: FieldKind::Timestamp,
        required: true,
        writable: Writable::Never,
        sortable: true,
        search: super::objects::SearchRole::None,
        default: super::objects::Default::None,
        hint: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    In,
    /// A list field holds this item.
    Has,
    Contains,
    Gt,
    Gte,
    Lt,
    Lte,
    IsNull,
    IsNotNull,
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub field: &'static FieldSpec,
    pub op: Op,
    pub values: Vec<FieldValue>,
}

#[derive(Debug, Clone)]
pub struct Sort {
    pub field: &'static FieldSpec,
    pub descending: bool,
}

impl Sort {
    pub fn key(&self) -> String {
        format!("{}{}", if self.descending { "-" } else { "" }, self.field.name)
    }
}

/// Where the previous page ended: the sort value and id of its last row.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub value: FieldValue,
    pub id: String,
}

#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filters: Vec<Filter>,
    pub sort: Sort,
    pub limit: usize,
    pub after: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    UnknownParameter(String),
    InvalidFilter(String, String),
    /// A sort that is not allowed, and the fields that may be sorted on.
    InvalidSort(String, Vec<&'static str>),
    InvalidCursor,
    InvalidLimit,
}

impl ListQuery {
    /// The default order: newest first, which suits timelines and "recent" lists.
    pub fn newest_first() -> Self {
        ListQuery {
            filters: Vec::new(),
            sort: Sort {
                field: &CREATED_AT,
                descending: true,
            },
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }

    /// The same query, continuing after a page's `next_cursor`.
    pub fn continue_after(&self, next_cursor: &str) -> Result<Self, QueryError> {
        let mut q = self.clone();
        q.after = Some(decode_cursor(next_cursor, &self.sort)?);
        Ok(q)
    }

    pub fn eq(mut self, field: &'static FieldSpec, value: FieldValue) -> Self {
        self.filters.push(Filter {
            field,
            op: Op::Eq,
            values: vec![value],
        });
        self
    }

    /// Parses `name=value` pairs: `limit`, `cursor`, `sort=[-]field`, `updated_since`,
    /// and per field `f`, `f_in`, `f_contains`, `f_gt|gte|lt|lte`, `f_is_null`.
    pub fn parse(ty: ObjectType, params: &[(String, String)]) -> Result<Self, QueryError> {
        let mut q = Self::newest_first();
        if let Some(field) = ty.default_order().and_then(|f| ty.field(f)) {
            q.sort = Sort { field, descending: true };
        }
        let mut cursor: Option<String> = None;
        for (name, raw) in params {
            match name.as_str() {
                "limit" => {
                    q.limit = raw
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or(QueryError::InvalidLimit)?;
                }
                "cursor" => cursor = Some(raw.clone()),
                "sort" => {
                    let (desc, fname) = match raw.strip_prefix('-') {
                        Some(rest) => (true, rest),
                        None => (false, raw.as_str()),
                    };
                    let field = lookup(ty, fname)
                        .filter(|f| f.sortable)
                        .ok_or_else(|| QueryError::InvalidSort(raw.clone(), sortable(ty)))?;
                    q.sort = Sort { field, descending: desc };
                }
                "updated_since" => {
                    let ms = parse_timestamp(raw).map_err(|e| QueryError::InvalidFilter(name.clone(), e))?;
                    q.filters.push(Filter {
                        // An audit entry is never changed: it was last updated when made.
                        field: if ty == ObjectType::AuditEntry { &CREATED_AT } else { &UPDATED_AT },
                        op: Op::Gt,
                        values: vec![FieldValue::Int(ms)],
                    });
                }
                _ => q.filters.push(parse_filter(ty, name, raw)?),
            }
        }
        if let Some(c) = cursor {
            q.after = Some(decode_cursor(&c, &q.sort)?);
        }
        Ok(q)
    }
}

/// The fields a list of this type may be sorted on.
fn sortable(ty: ObjectType) -> Vec<&'static str> {
    let mut names = vec!["created_at"];
    if ty != ObjectType::AuditEntry {
        names.push("updated_at");
    }
    names.extend(ty.fields().iter().filter(|f| f.sortable).map(|f| f.name));
    names
}

fn lookup(ty: ObjectType, name: &str) -> Option<&'static FieldSpec> {
    match name {
        "created_at" => Some(&CREATED_AT),
        "updated_at" if ty != ObjectType::AuditEntry => Some(&UPDATED_AT),
        _ => ty.field(name),
    }
}

fn parse_filter(ty: ObjectType, name: &str, raw: &str) -> Result<Filter, QueryError> {
    const SUFFIXES: [(&str, Op); 8] = [
        ("_is_null", Op::IsNull),
        ("_contains", Op::Contains),
        ("_in", Op::In),
        ("_gte", Op::Gte),
        ("_lte", Op::Lte),
        ("_gt", Op::Gt),
        ("_lt", Op::Lt),
        ("", Op::Eq),
    ];
    let by_id = match name {
        "id" => Some((&ID, Op::Eq)),
        "id_in" => Some((&ID, Op::In)),
        _ => None,
    };
    let (field, op) = by_id
        .or_else(|| {
            SUFFIXES.iter().find_map(|(suffix, op)| {
                let base = name.strip_suffix(suffix)?;
                lookup(ty, base).map(|f| (f, *op))
            })
        })
        .ok_or_else(|| QueryError::UnknownParameter(name.to_string()))?;
    let invalid = |msg: String| QueryError::InvalidFilter(name.to_string(), msg);
    let kind = field.kind;
    let one = |s: &str| -> Result<FieldValue, QueryError> {
        let v = if kind.is_list() {
            kind.parse_list_item(s).map(FieldValue::Text)
        } else {
            kind.parse_str(s)
        };
        match v {
            Ok(FieldValue::Null) => Err(invalid("needs a value".into())),
            Ok(v) => Ok(v),
            Err(e) => Err(invalid(e)),
        }
    };
    let (op, values) = match op {
        Op::IsNull => match raw {
            "true" => (Op::IsNull, vec![]),
            "false" => (Op::IsNotNull, vec![]),
            _ => return Err(invalid("expected true or false".into())),
        },
        Op::Contains if kind.is_text_like() || kind.is_list() => {
            if raw.trim().is_empty() {
                return Err(invalid("needs a value".into()));
            }
            (Op::Contains, vec![FieldValue::Text(raw.trim().to_lowercase())])
        }
        Op::Gt | Op::Gte | Op::Lt | Op::Lte if kind.is_ordered() => (op, vec![one(raw)?]),
        Op::In if !kind.is_list() && kind != FieldKind::LongText && kind != FieldKind::Json => {
            let items: Vec<&str> = raw.split(',').filter(|s| !s.trim().is_empty()).collect();
            if items.is_empty() || items.len() > 100 {
                return Err(invalid("expects 1 to 100 comma-separated values".into()));
            }
            (Op::In, items.into_iter().map(one).collect::<Result<_, _>>()?)
        }
        Op::Eq if kind.is_list() => (Op::Has, vec![one(raw)?]),
        Op::Eq if kind != FieldKind::LongText && kind != FieldKind::Json => (Op::Eq, vec![one(raw)?]),
        _ => return Err(QueryError::UnknownParameter(name.to_string())),
    };
    Ok(Filter { field, op, values })
}

pub fn encode_cursor(sort: &Sort, value: &FieldValue, id: &str) -> String {
    let v = match value {
        FieldValue::Null => Value::Null,
        FieldValue::Int(n) => json!(n),
        FieldValue::Bool(b) => json!(b),
        FieldValue::Text(s) => json!(s),
        FieldValue::List(_) => Value::Null,
    };
    URL_SAFE_NO_PAD.encode(json!({"s": sort.key(), "v": v, "id": id}).to_string())
}

fn decode_cursor(raw: &str, sort: &Sort) -> Result<Cursor, QueryError> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| QueryError::InvalidCursor)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| QueryError::InvalidCursor)?;
    // A cursor is only meaningful for the ordering that produced it.
    if v["s"].as_str() != Some(sort.key().as_str()) {
        return Err(QueryError::InvalidCursor);
    }
    let id = v["id"].as_str().ok_or(QueryError::InvalidCursor)?.to_string();
    let value = match (&v["v"], sort.field.kind.column()) {
        (Value::Null, _) => FieldValue::Null,
        (Value::Number(n), super::fields::Column::Int) => FieldValue::Int(n.as_i64().ok_or(QueryError::InvalidCursor)?),
        (Value::Bool(b), super::fields::Column::Int) => FieldValue::Int(i64::from(*b)),
        (Value::String(s), super::fields::Column::Text) => FieldValue::Text(s.clone()),
        _ => return Err(QueryError::InvalidCursor),
    };
    Ok(Cursor { value, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn filters_are_recognised_by_their_suffix() {
        let q = ListQuery::parse(
            ObjectType::Deal,
            &p(&[
                ("amount_gte", "100"),
                ("title_contains", "Acme"),
                ("tags", "vip"),
                ("sort", "-amount"),
            ]),
        )
        .unwrap();
        let ops: Vec<Op> = q.filters.iter().map(|f| f.op).collect();
        assert_eq!(ops, vec![Op::Gte, Op::Contains, Op::Has]);
        assert!(q.sort.descending);
    }

    #[test]
    fn unknown_parameters_and_bad_values_are_errors() {
        assert!(matches!(
            ListQuery::parse(ObjectType::Deal, &p(&[("colour", "red")])),
            Err(QueryError::UnknownParameter(_))
        ));
        assert!(matches!(
            ListQuery::parse(ObjectType::Deal, &p(&[("amount_gte", "lots")])),
            Err(QueryError::InvalidFilter(..))
        ));
        assert!(matches!(
            ListQuery::parse(ObjectType::Deal, &p(&[("sort", "body")])),
            Err(QueryError::InvalidSort(_, _))
        ));
        assert!(matches!(
            ListQuery::parse(ObjectType::Deal, &p(&[("limit", "0")])),
            Err(QueryError::InvalidLimit)
        ));
        assert!(matches!(
            ListQuery::parse(ObjectType::Deal, &p(&[("cursor", "!!")])),
            Err(QueryError::InvalidCursor)
        ));
    }

    #[test]
    fn a_cursor_only_fits_the_sort_that_made_it() {
        let q = ListQuery::parse(ObjectType::Deal, &p(&[("sort", "amount")])).unwrap();
        let c = encode_cursor(&q.sort, &FieldValue::Int(5), "x");
        assert!(ListQuery::parse(ObjectType::Deal, &p(&[("sort", "amount"), ("cursor", &c)])).is_ok());
        assert!(ListQuery::parse(ObjectType::Deal, &p(&[("sort", "-amount"), ("cursor", &c)])).is_err());
    }
}
