//! Rules of the support inbox that need nothing but values: canned responses'
//! variables and how they are filled in, and macros' actions.

use serde_json::Value;

use super::fields::{parse_id, FieldKind};
use super::objects::{CONVERSATION_STATUSES, PRIORITIES};

/// The variables a canned response may use, as `{{contact.name}}`.
pub const VARIABLES: [&str; 7] = [
    "contact.name",
    "contact.email",
    "agent.name",
    "conversation.number",
    "conversation.subject",
    "inbox.name",
    "workspace.name",
];

/// The variables a template names, in order, or the first malformed or unknown one.
pub fn variables(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| "a '{{' is not closed by '}}'".to_string())?;
        let name = after[..end].trim();
        if !VARIABLES.contains(&name) {
            return Err(format!("unknown variable '{{{{{name}}}}}'; use {}", VARIABLES.join(", ")));
        }
        out.push(name);
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Fills in a template's variables with `value(name)` (empty when it has none). The
/// template was checked with [`variables`] when it was saved; anything malformed is
/// left as written.
pub fn render(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        out.push_str(&value(after[..end].trim()).unwrap_or_default());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Whether a canned response's shortcode is well formed: what an agent types after
/// `/`, lowercase letters, digits, `-` and `_`.
pub fn check_shortcode(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("1 to 40 of a-z, 0-9, - and _".into())
    }
}

/// A message's HTML as it is kept and shown: an allow-list of formatting tags and
/// attributes; scripts, styles, event handlers and unsafe links removed, and links
/// opened apart from the page.
pub fn sanitize_html(html: &str) -> String {
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(html)
        .to_string()
}

/// Most attachments one message describes.
pub const MAX_ATTACHMENTS: usize = 20;

/// Checks a message's attachments: a list of `{"name", "content_type", "size",
/// "url"?}`, each URL http(s).
pub fn check_attachments(v: &Value) -> Result<(), String> {
    let items = match v {
        Value::Null => return Ok(()),
        Value::Array(items) if items.len() <= MAX_ATTACHMENTS => items,
        _ => return Err(format!("expected a list of at most {MAX_ATTACHMENTS} attachments")),
    };
    for (i, a) in items.iter().enumerate() {
        let obj = a.as_object().ok_or(format!(
            "attachment {i}: expected {{\"name\", \"content_type\", \"size\", \"url\"?}}"
        ))?;
        // `sha256` names a file the server kept (an e-mail's attachment, in the
        // workspace's own store); `dropped` says why one was not kept.
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "name" | "content_type" | "size" | "url" | "sha256" | "dropped"))
        {
            return Err(format!("attachment {i}: unknown key '{k}'"));
        }
        let name = obj.get("name").and_then(Value::as_str).map(str::trim).unwrap_or_default();
        if name.is_empty() || name.chars().count() > 255 {
            return Err(format!("attachment {i}: name is 1 to 255 characters"));
        }
        let ct = obj.get("content_type").and_then(Value::as_str).unwrap_or_default();
        let ct_ok = ct.len() <= 100
            && ct.split_once('/').is_some_and(|(a, b)| {
                let token = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c));
                token(a) && token(b)
            });
        if !ct_ok {
            return Err(format!("attachment {i}: content_type is a media type such as image/png"));
        }
        if !obj
            .get("size")
            .and_then(Value::as_i64)
            .is_some_and(|s| (0..=10_000_000_000).contains(&s))
        {
            return Err(format!("attachment {i}: size is a number of bytes"));
        }
        match obj.get("sha256") {
            None | Some(Value::Null) => {}
            Some(Value::String(d)) if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            Some(_) => return Err(format!("attachment {i}: sha256 is 64 hexadecimal digits")),
        }
        match obj.get("dropped") {
            None | Some(Value::Null) => {}
            Some(Value::String(d)) if d.len() <= 500 => {}
            Some(_) => return Err(format!("attachment {i}: dropped is a reason of at most 500 characters")),
        }
        match obj.get("url") {
            None | Some(Value::Null) => {}
            Some(Value::String(u)) if u.len() <= 2000 && (u.starts_with("https://") || u.starts_with("http://")) => {}
            Some(_) => return Err(format!("attachment {i}: url is an http(s) URL of at most 2000 characters")),
        }
    }
    Ok(())
}

/// One step of a macro.
#[derive(Debug, Clone, PartialEq)]
pub enum MacroAction {
    Status(String),
    Priority(String),
    /// A member, or nobody.
    Assign(Option<String>),
    Team(Option<String>),
    AddLabels(Vec<String>),
    RemoveLabels(Vec<String>),
    /// A private note with this text.
    Note(String),
    /// A reply to the customer: a canned response's text, filled in.
    Reply {
        canned_response_id: String,
    },
}

/// Most steps in one macro.
pub const MAX_ACTIONS: usize = 20;

/// Parses a macro's `actions`: a list of `{"type": …, "value": …}`.
pub fn parse_actions(v: &Value) -> Result<Vec<MacroAction>, String> {
    let items = v.as_array().ok_or("expected a list of actions")?;
    if items.is_empty() || items.len() > MAX_ACTIONS {
        return Err(format!("a macro has 1 to {MAX_ACTIONS} actions"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, a)| parse_action(a).map_err(|e| format!("action {i}: {e}")))
        .collect()
}

fn parse_action(a: &Value) -> Result<MacroAction, String> {
    let obj = a.as_object().ok_or("expected {\"type\", \"value\"}")?;
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "type" | "value")) {
        return Err(format!("unknown key '{k}'; an action is {{\"type\", \"value\"}}"));
    }
    let value = obj.get("value").unwrap_or(&Value::Null);
    let choice = |allowed: &[&str]| match value.as_str() {
        Some(s) if allowed.contains(&s) => Ok(s.to_string()),
        _ => Err(format!("value is one of {}", allowed.join(", "))),
    };
    let id_or_null = || match value {
        Value::Null => Ok(None),
        Value::String(s) => parse_id(s).map(Some),
        _ => Err("value is an id or null".to_string()),
    };
    let labels = || -> Result<Vec<String>, String> {
        let items = value.as_array().filter(|l| !l.is_empty()).ok_or("value is a list of labels")?;
        items
            .iter()
            .map(|l| FieldKind::Labels.parse_list_item(l.as_str().unwrap_or_default()))
            .collect()
    };
    Ok(match obj.get("type").and_then(Value::as_str) {
        Some("set_status") => MacroAction::Status(choice(
            CONVERSATION_STATUSES
                .iter()
                .filter(|s| **s != "snoozed")
                .copied()
                .collect::<Vec<_>>()
                .as_slice(),
        )?),
        Some("set_priority") => MacroAction::Priority(choice(PRIORITIES)?),
        Some("assign") => MacroAction::Assign(id_or_null()?),
        Some("set_team") => MacroAction::Team(id_or_null()?),
        Some("add_labels") => MacroAction::AddLabels(labels()?),
        Some("remove_labels") => MacroAction::RemoveLabels(labels()?),
        Some("add_note") => match value.as_str().map(str::trim) {
            Some(t) if !t.is_empty() && t.len() <= 10_000 => MacroAction::Note(t.to_string()),
            _ => return Err("value is the note's text, 1 to 10000 characters".into()),
        },
        Some("send_canned_response") => MacroAction::Reply {
            canned_response_id: id_or_null()?.ok_or("value is a canned response's id")?,
        },
        _ => {
            return Err(format!("type is one of {}", ACTION_TYPES.join(", ")));
        }
    })
}

/// The `type`s of macro actions.
pub const ACTION_TYPES: [&str; 8] = [
    "set_status",
    "set_priority",
    "assign",
    "set_team",
    "add_labels",
    "remove_labels",
    "add_note",
    "send_canned_response",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_name_known_variables_and_render_them() {
        assert_eq!(
            variables("Hi {{ contact.name }}, I'm {{agent.name}}.").unwrap(),
            ["contact.name", "agent.name"]
        );
        assert!(variables("Hi {{contact.age}}").unwrap_err().contains("unknown variable"));
        assert!(variables("Hi {{contact.name").is_err());
        let out = render("Hi {{ contact.name }} (#{{conversation.number}}){{inbox.name}}", |v| match v {
            "contact.name" => Some("Ann".into()),
            "conversation.number" => Some("42".into()),
            _ => None,
        });
        assert_eq!(out, "Hi Ann (#42)");
        assert_eq!(render("no variables", |_| None), "no variables");
    }

    #[test]
    fn html_keeps_formatting_and_loses_what_could_run() {
        let clean = sanitize_html(
            r#"<p onclick="x()">Hi <b>there</b><script>alert(1)</script> <a href="javascript:alert(1)">x</a> <a href="https://e.example">y</a></p>"#,
        );
        assert!(clean.contains("<b>there</b>"), "{clean}");
        assert!(
            !clean.contains("script") && !clean.contains("onclick") && !clean.contains("javascript:"),
            "{clean}"
        );
        assert!(clean.contains(r#"rel="noopener noreferrer nofollow""#), "{clean}");
    }

    #[test]
    fn attachments_are_described_strictly() {
        assert!(
            check_attachments(&json!([{"name": "a.png", "content_type": "image/png", "size": 12, "url": "https://f.example/a.png"}]))
                .is_ok()
        );
        assert!(check_attachments(&json!([{"name": "a", "content_type": "png", "size": 1}])).is_err());
        assert!(check_attachments(&json!([{"name": "a", "content_type": "image/png", "size": -1}])).is_err());
        assert!(check_attachments(&json!([{"name": "a", "content_type": "image/png", "size": 1, "url": "file:///etc/passwd"}])).is_err());
        assert!(check_attachments(&json!({"name": "a"})).is_err());
    }

    #[test]
    fn macro_actions_parse_strictly() {
        let id = "01a2008a-4174-73f7-b110-2d98d39cf08c";
        let actions = parse_actions(&json!([
            {"type": "set_status", "value": "resolved"},
            {"type": "assign", "value": null},
            {"type": "add_labels", "value": ["vip", "Billing"]},
            {"type": "send_canned_response", "value": id}
        ]))
        .unwrap();
        assert_eq!(actions[0], MacroAction::Status("resolved".into()));
        assert_eq!(actions[1], MacroAction::Assign(None));
        assert_eq!(
            actions[3],
            MacroAction::Reply {
                canned_response_id: id.into()
            }
        );
        assert!(parse_actions(&json!([])).is_err());
        assert!(
            parse_actions(&json!([{"type": "set_status", "value": "snoozed"}])).is_err(),
            "a snooze needs a time"
        );
        assert!(parse_actions(&json!([{"type": "launch"}])).unwrap_err().contains("type is one of"));
        assert!(parse_actions(&json!([{"type": "add_note", "value": "x", "extra": 1}])).is_err());
    }
}
