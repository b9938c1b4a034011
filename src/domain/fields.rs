//! Field kinds and values: how every attribute of a CRM record is validated, stored and
//! shown. Core fields and custom fields share these rules, so a value that passed
//! validation once is valid wherever it appears.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::email::EmailAddress;
use super::objects::ObjectType;

/// How a field is stored in the relational store. Booleans are stored as integers
/// (0/1) so both backends share one schema and one set of queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Text,
    Int,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Single-line text, trimmed; an empty string means "no value".
    Text {
        max: usize,
    },
    /// Free text such as a note body.
    LongText,
    Email,
    Url,
    Phone,
    /// A bare host name such as `acme.com`.
    Domain,
    Integer {
        min: i64,
        max: i64,
    },
    /// ISO 4217 code, three letters.
    Currency,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339 on the wire, milliseconds since the epoch in the store.
    Timestamp,
    Bool,
    Choice(&'static [&'static str]),
    /// The id of another record of the workspace.
    Ref(ObjectType),
    /// The id of a user who is a member of the workspace.
    Member,
    /// One short label: a tag's name.
    Label,
    /// A list of short labels such as tags.
    Labels,
    Phones,
    Emails,
    Members,
    /// Server-written JSON (audit snapshots).
    Json,
}

impl FieldKind {
    pub fn column(self) -> Column {
        match self {
            FieldKind::Integer { .. } | FieldKind::Timestamp | FieldKind::Bool => Column::Int,
            _ => Column::Text,
        }
    }

    pub fn is_list(self) -> bool {
        matches!(self, FieldKind::Labels | FieldKind::Phones | FieldKind::Emails | FieldKind::Members)
    }

    pub fn is_text_like(self) -> bool {
        matches!(
            self,
            FieldKind::Text { .. } | FieldKind::LongText | FieldKind::Email | FieldKind::Url | FieldKind::Phone | FieldKind::Domain
        )
    }

    pub fn is_ordered(self) -> bool {
        matches!(self, FieldKind::Integer { .. } | FieldKind::Date | FieldKind::Timestamp)
    }

    /// Parses a JSON value sent by a client. `null` (and an empty string for text) is
    /// the absence of a value; whether that is allowed is the caller's decision.
    pub fn parse_json(self, v: &Value) -> Result<FieldValue, String> {
        if v.is_null() {
            return Ok(FieldValue::Null);
        }
        if self.is_list() {
            let items = v.as_array().ok_or("expected an array")?;
            if items.len() > 100 {
                return Err("at most 100 items".into());
            }
            let mut out: Vec<String> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let s = item.as_str().ok_or_else(|| format!("item {i}: expected a string"))?;
                let parsed = self.parse_list_item(s).map_err(|e| format!("item {i}: {e}"))?;
                if !out.contains(&parsed) {
                    out.push(parsed);
                }
            }
            return Ok(FieldValue::List(out));
        }
        match self {
            FieldKind::Integer { .. } => {
                let n = whole_number(v).ok_or("expected an integer")?;
                self.check_int(n)
            }
            FieldKind::Bool => v.as_bool().map(FieldValue::Bool).ok_or_else(|| "expected true or false".into()),
            FieldKind::Json => Ok(FieldValue::Text(v.to_string())),
            _ => {
                let s = v.as_str().ok_or("expected a string")?;
                self.parse_str(s)
            }
        }
    }

    /// Parses the text form of a value, as found in a query string or a CSV cell.
    pub fn parse_str(self, raw: &str) -> Result<FieldValue, String> {
        let s = raw.trim();
        if s.is_empty() && !matches!(self, FieldKind::Bool) {
            return Ok(FieldValue::Null);
        }
        match self {
            FieldKind::Text { max } => {
                if s.chars().count() > max {
                    return Err(format!("at most {max} characters"));
                }
                if s.chars().any(|c| c.is_control()) {
                    return Err("must be a single line without control characters".into());
                }
                Ok(FieldValue::Text(s.to_string()))
            }
            FieldKind::LongText => {
                if raw.len() > 100_000 {
                    return Err("at most 100000 bytes".into());
                }
                Ok(FieldValue::Text(raw.to_string()))
            }
            FieldKind::Email => EmailAddress::parse(s).map(|e| FieldValue::Text(e.as_str().to_string())),
            FieldKind::Url => parse_url(s).map(FieldValue::Text),
            FieldKind::Phone => parse_phone(s).map(FieldValue::Text),
            FieldKind::Domain => parse_domain(s).map(FieldValue::Text),
            FieldKind::Integer { .. } => {
                let n: i64 = s.parse().map_err(|_| "expected an integer".to_string())?;
                self.check_int(n)
            }
            FieldKind::Currency => {
                if s.len() == 3 && s.chars().all(|c| c.is_ascii_alphabetic()) {
                    Ok(FieldValue::Text(s.to_ascii_uppercase()))
                } else {
                    Err("expected a three-letter ISO 4217 currency code such as EUR".into())
                }
            }
            FieldKind::Date => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| FieldValue::Text(d.format("%Y-%m-%d").to_string()))
                .map_err(|_| "expected a date as YYYY-MM-DD".into()),
            FieldKind::Timestamp => parse_timestamp(s).map(FieldValue::Int),
            FieldKind::Bool => match s {
                "true" | "1" | "yes" => Ok(FieldValue::Bool(true)),
                "false" | "0" | "no" | "" => Ok(FieldValue::Bool(false)),
                _ => Err("expected true or false".into()),
            },
            FieldKind::Choice(options) => {
                if options.contains(&s) {
                    Ok(FieldValue::Text(s.to_string()))
                } else {
                    Err(format!("expected one of: {}", options.join(", ")))
                }
            }
            FieldKind::Ref(_) | FieldKind::Member => parse_id(s).map(FieldValue::Text),
            FieldKind::Label => parse_label(s).map(FieldValue::Text),
            FieldKind::Labels | FieldKind::Phones | FieldKind::Emails | FieldKind::Members => {
                // The text form of a list separates items with ';' (CSV cells).
                let mut out: Vec<String> = Vec::new();
                for item in s.split(';').map(str::trim).filter(|x| !x.is_empty()) {
                    let parsed = self.parse_list_item(item)?;
                    if !out.contains(&parsed) {
                        out.push(parsed);
                    }
                }
                Ok(FieldValue::List(out))
            }
            FieldKind::Json => Ok(FieldValue::Text(s.to_string())),
        }
    }

    /// Parses one element of a list field (also the operand of a membership filter).
    pub fn parse_list_item(self, s: &str) -> Result<String, String> {
        let s = s.trim();
        match self {
            FieldKind::Labels => parse_label(s),
            FieldKind::Phones => parse_phone(s),
            FieldKind::Emails => EmailAddress::parse(s).map(|e| e.as_str().to_string()),
            FieldKind::Members => parse_id(s),
            _ => Err("not a list".into()),
        }
    }

    fn check_int(self, n: i64) -> Result<FieldValue, String> {
        if let FieldKind::Integer { min, max } = self {
            if n < min || n > max {
                return Err(format!("must be between {min} and {max}"));
            }
        }
        Ok(FieldValue::Int(n))
    }
}

/// A stored or validated value of one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    Null,
    Text(String),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
}

impl FieldValue {
    pub fn is_null(&self) -> bool {
        matches!(self, FieldValue::Null)
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            FieldValue::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_list(&self) -> &[String] {
        match self {
            FieldValue::List(v) => v,
            _ => &[],
        }
    }

    /// The wire form of this value for a field of `kind`.
    pub fn to_json(&self, kind: FieldKind) -> Value {
        match (self, kind) {
            (FieldValue::Null, k) if k.is_list() => json!([]),
            (FieldValue::Null, _) => Value::Null,
            (FieldValue::Int(ms), FieldKind::Timestamp) => json!(format_timestamp(*ms)),
            (FieldValue::Int(n), FieldKind::Bool) => json!(*n != 0),
            (FieldValue::Int(n), _) => json!(n),
            (FieldValue::Bool(b), _) => json!(b),
            (FieldValue::Text(s), FieldKind::Json) => serde_json::from_str(s).unwrap_or(Value::Null),
            (FieldValue::Text(s), _) => json!(s),
            (FieldValue::List(items), _) => json!(items),
        }
    }

    /// The text form used in CSV export, the inverse of [`FieldKind::parse_str`].
    pub fn to_cell(&self, kind: FieldKind) -> String {
        match (self, kind) {
            (FieldValue::Null, _) => String::new(),
            (FieldValue::Int(ms), FieldKind::Timestamp) => format_timestamp(*ms),
            (FieldValue::Int(n), FieldKind::Bool) => (*n != 0).to_string(),
            (FieldValue::Int(n), _) => n.to_string(),
            (FieldValue::Bool(b), _) => b.to_string(),
            (FieldValue::Text(s), _) => s.clone(),
            (FieldValue::List(items), _) => items.join(";"),
        }
    }
}

/// Field-level validation failures, keyed by the field's path in the request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| message.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::default();
        e.add(field, message);
        e
    }

    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|_| "expected an RFC 3339 timestamp such as 2026-01-31T09:30:00Z".into())
}

pub fn format_timestamp(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Record ids are UUIDs; anything else cannot name a record, so it is rejected early
/// instead of becoming a lookup that can only miss.
/// An integer, also when written with a zero fraction (`3.0`), as JSON allows and many
/// clients write numbers; `3.5` is not one.
pub fn whole_number(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        let f = v.as_f64()?;
        // Beyond ±2^53 a float no longer holds every integer exactly.
        (f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0).then_some(f as i64)
    })
}

/// The option nearest to `given`, if near enough to be what was meant: at most a
/// third of its letters off (`email` → `emails`, `stge_id` → `stage_id`).
pub fn closest<'a>(given: &str, options: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    options
        .into_iter()
        .map(|o| (strsim::levenshtein(&given, o), o))
        .filter(|(d, o)| *d > 0 && *d <= (o.len().max(given.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

pub fn parse_id(s: &str) -> Result<String, String> {
    uuid::Uuid::parse_str(s.trim())
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| format!("'{}' is not a valid id", s.trim()))
}

fn parse_label(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().count() > 50 {
        return Err("a tag is 1 to 50 characters".into());
    }
    if s.chars().any(|c| c.is_control() || c == ';' || c == ',') {
        return Err("a tag may not contain control characters, ';' or ','".into());
    }
    Ok(s.to_string())
}

fn parse_phone(s: &str) -> Result<String, String> {
    let digits = s.chars().filter(|c| c.is_ascii_digit()).count();
    let allowed = s.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if !allowed || !(3..=20).contains(&digits) || s.len() > 40 {
        return Err(format!("'{s}' is not a phone number"));
    }
    Ok(s.to_string())
}

fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.to_ascii_lowercase();
    let labels: Vec<&str> = d.split('.').collect();
    let ok = d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(d)
    } else {
        Err(format!("'{s}' is not a domain name such as example.com"))
    }
}

fn parse_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("'{s}' is not an http(s) URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    let host = host.split(':').next().unwrap_or("");
    if s.len() > 2048 || host.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("'{s}' is not an http(s) URL"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_is_the_absence_of_a_value() {
        assert_eq!(FieldKind::Text { max: 10 }.parse_json(&json!("  ")).unwrap(), FieldValue::Null);
    }

    #[test]
    fn integers_outside_their_range_are_rejected() {
        let k = FieldKind::Integer { min: 0, max: 100 };
        assert!(k.parse_json(&json!(101)).is_err());
        assert!(k.parse_json(&json!(1.5)).is_err());
        assert_eq!(k.parse_json(&json!(100)).unwrap(), FieldValue::Int(100));
    }

    #[test]
    fn timestamps_round_trip_through_milliseconds() {
        let ms = parse_timestamp("2026-01-31T09:30:00+01:00").unwrap();
        assert_eq!(format_timestamp(ms), "2026-01-31T08:30:00.000Z");
    }

    #[test]
    fn lists_are_deduplicated_and_validated_per_item() {
        let v = FieldKind::Emails.parse_json(&json!(["A@x.io", "a@x.io"])).unwrap();
        assert_eq!(v, FieldValue::List(vec!["a@x.io".into()]));
        let e = FieldKind::Emails.parse_json(&json!(["ok@x.io", "nope"])).unwrap_err();
        assert!(e.starts_with("item 1"), "{e}");
    }

    #[test]
    fn urls_domains_phones_and_currencies_are_checked() {
        assert!(FieldKind::Url.parse_str("ftp://x.io").is_err());
        assert!(FieldKind::Url.parse_str("https://x.io/a?b").is_ok());
        assert!(FieldKind::Domain.parse_str("exa mple.com").is_err());
        assert!(FieldKind::Phone.parse_str("+44 (20) 7946-0958").is_ok());
        assert!(FieldKind::Phone.parse_str("call me").is_err());
        assert_eq!(FieldKind::Currency.parse_str("eur").unwrap(), FieldValue::Text("EUR".into()));
        assert!(FieldKind::Currency.parse_str("EURO").is_err());
    }
}
