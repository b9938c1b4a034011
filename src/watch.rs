//! `shoal watch`: follows a board live and prints each event as a line, a first taste
//! of the real-time protocol.

use std::io::Write;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

/// Connects to `url`, subscribes to the board of `pipeline` and prints frames until the
/// server closes the connection.
pub async fn watch(url: &str, token: &str, pipeline: &str, raw: bool) -> anyhow::Result<()> {
    let ws_url = format!("{}/api/v1/ws", url.trim_end_matches('/').replacen("http", "ws", 1));
    let client = awc::Client::builder().max_http_version(awc::http::Version::HTTP_11).finish();
    let (_, mut socket) = client
        .ws(&ws_url)
        .bearer_auth(token)
        .max_frame_size(16 * 1024 * 1024)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {ws_url}: {e}"))?;
    let topic = format!("board:{pipeline}");
    let subscribe = json!({"type": "subscribe", "topic": topic}).to_string();
    socket
        .send(awc::ws::Message::Text(subscribe.into()))
        .await
        .context("cannot subscribe")?;
    let mut out = std::io::stdout().lock();
    while let Some(frame) = socket.next().await {
        match frame.context("the connection failed")? {
            awc::ws::Frame::Text(bytes) => {
                let f: Value = serde_json::from_slice(&bytes).context("the server sent a frame that is not JSON")?;
                if raw {
                    writeln!(out, "{f}")?;
                } else {
                    writeln!(out, "{}", describe(&f))?;
                }
                out.flush()?;
                if f["type"] == "error" {
                    bail!("{}: {}", f["code"].as_str().unwrap_or("error"), f["message"].as_str().unwrap_or(""));
                }
            }
            awc::ws::Frame::Ping(p) => socket.send(awc::ws::Message::Pong(p)).await.context("the connection failed")?,
            awc::ws::Frame::Close(reason) => {
                writeln!(out, "closed by the server: {reason:?}")?;
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

/// One line per frame.
fn describe(f: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    match f["type"].as_str().unwrap_or("") {
        "snapshot" => {
            let stages = f["state"]["stages"].as_array().map(Vec::len).unwrap_or(0);
            let deals = f["state"]["deals"].as_array().map(Vec::len).unwrap_or(0);
            format!("snapshot at #{}: {stages} stages, {deals} deals", f["seq"])
        }
        "subscribed" => format!(
            "subscribed to {} at #{}; waiting for changes (Ctrl-C stops)",
            s(&f["topic"]),
            f["seq"]
        ),
        "event" => {
            let record = &f["data"]["record"];
            let name = record["title"].as_str().or(record["name"].as_str()).unwrap_or("");
            let changes: Vec<&str> = f["data"]["changes"]
                .as_object()
                .map(|c| c.keys().map(String::as_str).collect())
                .unwrap_or_default();
            format!(
                "#{} {} \"{}\" [{}] by {}",
                f["seq"],
                s(&f["kind"]),
                name,
                changes.join(", "),
                s(&f["actor"])
            )
        }
        "presence" => {
            let who: Vec<String> = f["members"]
                .as_array()
                .map(|m| m.iter().map(|x| format!("{} {}", s(&x["user_id"]), x["state"])).collect())
                .unwrap_or_default();
            format!("presence: {}", if who.is_empty() { "nobody".to_string() } else { who.join("; ") })
        }
        "resync" => format!("resync {}: {}", s(&f["topic"]), s(&f["reason"])),
        _ => f.to_string(),
    }
}
