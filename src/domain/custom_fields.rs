//! Custom field definitions: per-workspace extra attributes of contacts, companies,
//! leads and deals, validated on every write like core fields.

use serde_json::Value;

use super::email::EmailAddress;
use super::fields::{FieldKind, FieldValue};
use super::objects::{ObjectType, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomKind {
    Text,
    Number,
    Date,
    Bool,
    Select,
    MultiSelect,
    Url,
    Email,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CustomFieldDef {
    pub key: String,
    pub kind: CustomKind,
    pub options: Vec<String>,
}

impl CustomFieldDef {
    /// Reads a definition back from its stored record.
    pub fn from_record(r: &Record) -> Option<(ObjectType, Self)> {
        let object_type = ObjectType::from_name(r.text("object_type")?)?;
        let kind = match r.text("kind")? {
            "text" => CustomKind::Text,
            "number" => CustomKind::Number,
            "date" => CustomKind::Date,
            "bool" => CustomKind::Bool,
            "select" => CustomKind::Select,
            "multi_select" => CustomKind::MultiSelect,
            "url" => CustomKind::Url,
            "email" => CustomKind::Email,
            _ => return None,
        };
        let def = CustomFieldDef {
            key: r.text("key")?.to_string(),
            kind,
            options: r.get("options").as_list().to_vec(),
        };
        Some((object_type, def))
    }

    /// Validates and normalises one value; `null` means "remove the value".
    pub fn parse_value(&self, v: &Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        let text = |v: &Value| v.as_str().map(str::to_string).ok_or_else(|| "expected a string".to_string());
        match self.kind {
            CustomKind::Text => {
                let s = text(v)?;
                if s.chars().count() > 1000 {
                    return Err("at most 1000 characters".into());
                }
                Ok(Value::String(s))
            }
            CustomKind::Number => match v.as_f64() {
                Some(n) if n.is_finite() => Ok(v.clone()),
                _ => Err("expected a number".into()),
            },
            CustomKind::Bool => v.as_bool().map(Value::Bool).ok_or_else(|| "expected true or false".into()),
            CustomKind::Date => match FieldKind::Date.parse_str(&text(v)?)? {
                FieldValue::Text(d) => Ok(Value::String(d)),
                _ => Err("expected a date as YYYY-MM-DD".into()),
            },
            CustomKind::Url => match FieldKind::Url.parse_str(&text(v)?)? {
                FieldValue::Text(u) => Ok(Value::String(u)),
                _ => Err("expected an http(s) URL".into()),
            },
            CustomKind::Email => EmailAddress::parse(&text(v)?).map(|e| Value::String(e.as_str().to_string())),
            CustomKind::Select => {
                let s = text(v)?;
                if self.options.contains(&s) {
                    Ok(Value::String(s))
                } else {
                    Err(format!("expected one of: {}", self.options.join(", ")))
                }
            }
            CustomKind::MultiSelect => {
                let items = v.as_array().ok_or("expected an array")?;
                let mut out = Vec::new();
                for item in items {
                    let s = text(item)?;
                    if !self.options.contains(&s) {
                        return Err(format!("'{s}' is not one of: {}", self.options.join(", ")));
                    }
                    if !out.contains(&Value::String(s.clone())) {
                        out.push(Value::String(s));
                    }
                }
                Ok(Value::Array(out))
            }
        }
    }

    /// Parses a CSV cell for this field (lists separated by ';').
    pub fn parse_cell(&self, cell: &str) -> Result<Value, String> {
        let cell = cell.trim();
        if cell.is_empty() {
            return Ok(Value::Null);
        }
        let v = match self.kind {
            CustomKind::Number => {
                let n: f64 = cell.parse().map_err(|_| "expected a number".to_string())?;
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .ok_or("expected a finite number")?
            }
            CustomKind::Bool => Value::Bool(matches!(cell, "true" | "1" | "yes")),
            CustomKind::MultiSelect => Value::Array(cell.split(';').map(|s| Value::String(s.trim().to_string())).collect()),
            _ => Value::String(cell.to_string()),
        };
        self.parse_value(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(kind: CustomKind) -> CustomFieldDef {
        CustomFieldDef {
            key: "k".into(),
            kind,
            options: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn select_values_must_be_among_the_options() {
        assert!(def(CustomKind::Select).parse_value(&json!("a")).is_ok());
        assert!(def(CustomKind::Select).parse_value(&json!("c")).is_err());
        assert_eq!(
            def(CustomKind::MultiSelect).parse_value(&json!(["a", "a", "b"])).unwrap(),
            json!(["a", "b"])
        );
    }

    #[test]
    fn typed_custom_values_are_checked() {
        assert!(def(CustomKind::Number).parse_value(&json!("12")).is_err());
        assert!(def(CustomKind::Date).parse_value(&json!("2026-02-30")).is_err());
        assert_eq!(def(CustomKind::Email).parse_value(&json!("A@B.io")).unwrap(), json!("a@b.io"));
    }
}
