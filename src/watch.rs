//! `shoal watch`: follows a board live and prints each event as a line, a first taste
//! of the real-time protocol. When the connection drops it says so and resumes from
//! the last event it printed (`since_seq`), backing off between attempts; it stops
//! with the server's error code and message when the server refuses it, and with a
//! non-zero status when it gives up.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

/// What `shoal watch` was asked to do.
pub struct Watch<'a> {
    pub url: &'a str,
    pub token: &'a str,
    pub pipeline: &'a str,
    /// Print the protocol's JSON frames instead of lines.
    pub raw: bool,
    /// Reconnection attempts in a row before giving up.
    pub retries: u32,
}

/// Why a connection ended.
enum Ended {
    /// Worth another attempt: the network or the server went away.
    Lost(String),
    /// The server refused: trying again would be refused again.
    Refused(String),
}

/// Names of what events refer to by id, so lines read as the board does.
#[derive(Default)]
struct Names {
    stages: HashMap<String, String>,
    members: HashMap<String, String>,
}

impl Names {
    fn stage<'a>(&'a self, id: &'a str) -> &'a str {
        self.stages.get(id).map(String::as_str).unwrap_or(id)
    }

    /// `user:<id>` as the member's name; other actors (API keys) as they are.
    fn actor(&self, actor: &str) -> String {
        match actor.strip_prefix("user:").and_then(|id| self.members.get(id)) {
            Some(name) => name.clone(),
            None => actor.to_string(),
        }
    }
}

/// Follows the board until the server closes the connection for good, the user stops
/// it, or `retries` reconnections in a row fail.
pub async fn watch(w: Watch<'_>) -> anyhow::Result<()> {
    let base = w.url.trim_end_matches('/');
    let client = awc::Client::builder()
        .max_http_version(awc::http::Version::HTTP_11)
        .timeout(Duration::from_secs(10))
        .finish();
    let mut names = Names::default();
    let mut last_seq: Option<i64> = None;
    let mut failures = 0u32;
    loop {
        let ended = match look_up(&client, base, w.token, w.pipeline, &mut names).await {
            Ok(()) => follow(&client, base, &w, &names, &mut last_seq, &mut failures).await,
            Err(e) => e,
        };
        match ended {
            Ended::Refused(why) => anyhow::bail!("{why}"),
            Ended::Lost(why) if failures >= w.retries => {
                anyhow::bail!("gave up after {failures} attempts to reconnect: {why}")
            }
            Ended::Lost(why) => {
                failures += 1;
                // 1, 2, 4, 8, 16, then 30 seconds between attempts.
                let wait = Duration::from_secs((1u64 << (failures - 1).min(5)).min(30));
                let from = last_seq.map(|s| format!(" from #{s}")).unwrap_or_default();
                eprintln!(
                    "connection lost ({why}); reconnecting{from} in {} s (attempt {failures} of {})",
                    wait.as_secs(),
                    w.retries
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The server's error body as `code: message`.
fn error_text(status: awc::http::StatusCode, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match (v["error"]["code"].as_str(), v["error"]["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => format!("the server answered {status}"),
    }
}

/// Reads the board's stage names and the members' names over REST; this also checks
/// the credential and the board, so that a refusal is reported with its reason.
async fn look_up(client: &awc::Client, base: &str, token: &str, pipeline: &str, names: &mut Names) -> Result<(), Ended> {
    let get = |path: String| {
        let req = client.get(format!("{base}/api/v1{path}")).bearer_auth(token);
        async move {
            let mut res = req.send().await.map_err(|e| Ended::Lost(format!("cannot reach {base}: {e}")))?;
            let body = res.body().limit(16 * 1024 * 1024).await.map_err(|e| Ended::Lost(e.to_string()))?;
            match res.status() {
                s if s.is_success() => Ok(serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)),
                s if s.is_server_error() => Err(Ended::Lost(error_text(s, &body))),
                s => Err(Ended::Refused(error_text(s, &body))),
            }
        }
    };
    let board = get(format!("/pipelines/{pipeline}")).await?;
    for s in board["stages"].as_array().into_iter().flatten() {
        if let (Some(id), Some(name)) = (s["id"].as_str(), s["name"].as_str()) {
            names.stages.insert(id.into(), name.into());
        }
    }
    // Names make lines readable but are not needed: a key without the members scope
    // shows ids.
    if let Ok(members) = get("/members".into()).await {
        for m in members["data"].as_array().into_iter().flatten() {
            if let (Some(id), Some(name)) = (m["user_id"].as_str(), m["name"].as_str()) {
                names.members.insert(id.into(), name.into());
            }
        }
    }
    Ok(())
}

/// One connection: subscribes (resuming after `last_seq`) and prints frames until it
/// ends.
async fn follow(client: &awc::Client, base: &str, w: &Watch<'_>, names: &Names, last_seq: &mut Option<i64>, failures: &mut u32) -> Ended {
    let ws_url = format!("{}/api/v1/ws", base.replacen("http", "ws", 1));
    let connected = client
        .ws(&ws_url)
        .bearer_auth(w.token)
        .max_frame_size(16 * 1024 * 1024)
        .connect()
        .await;
    let mut socket = match connected {
        Ok((_, socket)) => socket,
        Err(e) => return Ended::Lost(format!("cannot connect to {ws_url}: {e}")),
    };
    let mut subscribe = json!({"type": "subscribe", "topic": format!("board:{}", w.pipeline)});
    if let Some(seq) = *last_seq {
        subscribe["since_seq"] = json!(seq);
    }
    if let Err(e) = socket.send(awc::ws::Message::Text(subscribe.to_string().into())).await {
        return Ended::Lost(e.to_string());
    }
    let mut out = std::io::stdout().lock();
    while let Some(frame) = socket.next().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        match frame {
            awc::ws::Frame::Text(bytes) => {
                let Ok(f) = serde_json::from_slice::<Value>(&bytes) else {
                    return Ended::Refused("the server sent a frame that is not JSON".into());
                };
                if let Some(seq) = f["seq"]
                    .as_i64()
                    .filter(|_| matches!(f["type"].as_str(), Some("event" | "snapshot")))
                {
                    *last_seq = Some(seq);
                }
                if f["type"] == "subscribed" {
                    // Following again: later drops start their count afresh.
                    *failures = 0;
                }
                let line = if w.raw { f.to_string() } else { describe(&f, names) };
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    // Standard output is closed (piped into `head`, say): done.
                    return Ended::Refused("standard output closed".into());
                }
                match f["type"].as_str() {
                    Some("error") => {
                        return Ended::Refused(format!(
                            "{}: {}",
                            f["code"].as_str().unwrap_or("error"),
                            f["message"].as_str().unwrap_or("")
                        ))
                    }
                    // The server stopped following the topic for us: follow it again.
                    Some("resync") => return Ended::Lost(format!("resync: {}", f["reason"].as_str().unwrap_or(""))),
                    _ => {}
                }
            }
            awc::ws::Frame::Ping(p) if socket.send(awc::ws::Message::Pong(p.clone())).await.is_err() => {
                return Ended::Lost("the connection failed".into());
            }
            awc::ws::Frame::Close(reason) => {
                let code = reason.as_ref().map(|r| u16::from(r.code));
                let why = reason.and_then(|r| r.description).unwrap_or_default();
                return match code {
                    Some(crate::ws::CLOSE_UNAUTHORIZED) => Ended::Refused(format!(
                        "{why}: the server closed the connection; use a fresh access token, or an API key for long watches"
                    )),
                    _ => Ended::Lost(format!("closed by the server ({why})")),
                };
            }
            _ => {}
        }
    }
    Ended::Lost("the connection ended".into())
}

/// Minor units as a readable amount: 4200000 USD → "42,000.00 USD".
fn amount(minor: i64, currency: &str) -> String {
    let (sign, minor) = if minor < 0 { ("-", -(minor as i128)) } else { ("", minor as i128) };
    let whole = (minor / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02} {currency}", minor % 100).trim_end().to_string()
}

/// One line per frame.
fn describe(f: &Value, names: &Names) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    match f["type"].as_str().unwrap_or("") {
        "snapshot" => {
            let stages = f["state"]["stages"].as_array().map(Vec::len).unwrap_or(0);
            let deals = f["state"]["deals"].as_array().map(Vec::len).unwrap_or(0);
            format!("snapshot at #{}: {stages} stages, {deals} deals", f["seq"])
        }
        "subscribed" => format!(
            "subscribed to {} at #{}{}; waiting for changes (Ctrl-C stops)",
            s(&f["topic"]),
            f["seq"],
            match f["replayed"].as_i64() {
                Some(n) if n > 0 => format!(", {n} missed events replayed"),
                _ => String::new(),
            }
        ),
        "event" => {
            let record = &f["data"]["record"];
            let name = record["title"].as_str().or(record["name"].as_str()).unwrap_or("");
            let mut details = Vec::new();
            if let Some(minor) = record["amount"].as_i64() {
                details.push(amount(minor, record["currency"].as_str().unwrap_or("")));
            }
            if f["data"]["object_type"] == "deal" {
                if let Some(stage) = record["stage_id"].as_str() {
                    details.push(format!("in {}", names.stage(stage)));
                }
            }
            let changes: Vec<&str> = f["data"]["changes"]
                .as_object()
                .map(|c| c.keys().map(String::as_str).collect())
                .unwrap_or_default();
            format!(
                "#{} {} \"{}\"{} [{}] by {}",
                f["seq"],
                s(&f["kind"]),
                name,
                if details.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", details.join(", "))
                },
                changes.join(", "),
                names.actor(&s(&f["actor"]))
            )
        }
        "presence" => {
            let who: Vec<String> = f["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|x| format!("{} {}", names.actor(&format!("user:{}", s(&x["user_id"]))), x["state"]))
                        .collect()
                })
                .unwrap_or_default();
            format!("presence: {}", if who.is_empty() { "nobody".to_string() } else { who.join("; ") })
        }
        "resync" => format!("resync {}: {}", s(&f["topic"]), s(&f["reason"])),
        _ => f.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_in_minor_units_read_as_money() {
        assert_eq!(amount(4_200_000, "USD"), "42,000.00 USD");
        assert_eq!(amount(5, "EUR"), "0.05 EUR");
        assert_eq!(amount(-123_456_789, ""), "-1,234,567.89");
    }

    #[test]
    fn an_event_line_names_the_stage_and_the_member() {
        let mut names = Names::default();
        names.stages.insert("s1".into(), "Proposal".into());
        names.members.insert("u1".into(), "Ada".into());
        let f = json!({"type": "event", "seq": 7, "kind": "deal.moved", "actor": "user:u1",
            "data": {"object_type": "deal", "record": {"title": "Big one", "amount": 4200000, "currency": "USD", "stage_id": "s1"},
                     "changes": {"stage_id": ["s0", "s1"]}}});
        assert_eq!(
            describe(&f, &names),
            "#7 deal.moved \"Big one\" (42,000.00 USD, in Proposal) [stage_id] by Ada"
        );
    }
}
