//! The WebSocket protocol's client messages, parsed strictly: an unknown type or field
//! is an error frame, never ignored.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::app::{ApiError, Code};

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Subscribe {
        topic: String,
        since_seq: Option<i64>,
    },
    Unsubscribe {
        topic: String,
    },
    Command {
        id: String,
        topic: String,
        op: String,
        #[serde(default)]
        args: Map<String, Value>,
    },
    Presence {
        topic: String,
        state: Option<Map<String, Value>>,
    },
    Ping {},
    /// A fresh access token for the connection, sent before the current one expires.
    Auth {
        token: String,
    },
}

impl ClientMessage {
    pub fn parse(text: &str) -> Result<ClientMessage, ApiError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ApiError::msg(Code::MalformedJson, format!("the message is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::msg(Code::InvalidBody, "a message is a JSON object with a 'type'"));
        }
        serde_json::from_value(value).map_err(|e| ApiError::msg(Code::InvalidBody, format!("invalid message: {e}")))
    }
}

pub fn error_frame(e: &ApiError) -> String {
    let mut f = json!({"type": "error", "code": e.code.name(), "message": e.message});
    if let Some(d) = &e.details {
        f["details"] = d.clone();
    }
    f.to_string()
}

pub fn nack_frame(id: &str, e: &ApiError) -> String {
    let mut f = json!({"type": "nack", "id": id, "code": e.code.name(), "message": e.message});
    if let Some(d) = &e.details {
        f["details"] = d.clone();
    }
    if let Some(secs) = e.retry_after_secs {
        f["retry_after"] = json!(secs);
    }
    f.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_by_type_and_refuse_unknown_fields() {
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"subscribe","topic":"board:x","since_seq":3}"#),
            Ok(ClientMessage::Subscribe { since_seq: Some(3), .. })
        ));
        assert!(matches!(ClientMessage::parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping {})));
        assert_eq!(ClientMessage::parse(r#"{"type":"dance"}"#).unwrap_err().code, Code::InvalidBody);
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping","x":1}"#).unwrap_err().code,
            Code::InvalidBody
        );
        assert_eq!(ClientMessage::parse("{").unwrap_err().code, Code::MalformedJson);
        assert_eq!(ClientMessage::parse("[]").unwrap_err().code, Code::InvalidBody);
    }
}
