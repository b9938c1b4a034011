//! What every scenario needs from the server: a workspace, boards, deals, and the
//! server's own figures from `/metrics`.

use std::time::Duration;

use serde_json::{json, Value};

pub fn client(connections: usize) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(connections))
        .timeout(Duration::from_secs(30))
        .finish()
}

pub async fn post(client: &awc::Client, url: &str, token: &str, body: Value) -> Value {
    let mut res = client.post(url).bearer_auth(token).send_json(&body).await.expect("request");
    assert!(res.status().is_success(), "{url}: {}", res.status());
    res.json().limit(1 << 24).await.expect("json body")
}

/// A new workspace; returns its owner's access token.
pub async fn workspace(client: &awc::Client, base: &str) -> String {
    let email = format!("load-{}@load.test", uuid::Uuid::new_v4().simple());
    let s = post(
        client,
        &format!("{base}/api/v1/auth/signup"),
        "",
        json!({"workspace_name": "Load", "name": "Load", "email": email, "password": "correct horse battery"}),
    )
    .await;
    s["access_token"].as_str().expect("a token").to_string()
}

/// A pipeline (a board) with four stages; returns its id and its stages' ids.
pub async fn board(client: &awc::Client, base: &str, token: &str) -> (String, Vec<String>) {
    let p = post(
        client,
        &format!("{base}/api/v1/pipelines"),
        token,
        json!({"name": "Load", "stages": [{"name": "A"}, {"name": "B"}, {"name": "C"}, {"name": "D"}]}),
    )
    .await;
    let stages = p["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["id"].as_str().expect("stage id").to_string())
        .collect();
    (p["id"].as_str().expect("pipeline id").to_string(), stages)
}

/// A deal titled `title` on the board of `pipeline`; returns its id.
pub async fn deal(client: &awc::Client, base: &str, token: &str, pipeline: &str, title: &str) -> String {
    let d = post(
        client,
        &format!("{base}/api/v1/deals"),
        token,
        json!({"title": title, "pipeline_id": pipeline}),
    )
    .await;
    d["id"].as_str().expect("deal id").to_string()
}

/// A WebSocket connection following `topic`, once the server says it is subscribed.
pub async fn follow(client: &awc::Client, ws_url: &str, token: &str, topic: &str) -> actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec> {
    use futures_util::{SinkExt, StreamExt};
    let (_, mut ws) = client
        .ws(ws_url)
        .bearer_auth(token)
        .max_frame_size(1 << 24)
        .connect()
        .await
        .expect("connect");
    ws.send(awc::ws::Message::Text(
        json!({"type": "subscribe", "topic": topic}).to_string().into(),
    ))
    .await
    .expect("subscribe");
    loop {
        match ws.next().await {
            Some(Ok(awc::ws::Frame::Text(t))) => {
                if serde_json::from_slice::<Value>(&t).is_ok_and(|f| f["type"] == "subscribed") {
                    return ws;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the server closed the connection while subscribing: {other:?}"),
        }
    }
}

/// The server's figures: `/metrics` samples by name.
pub async fn metrics(base: &str) -> std::collections::HashMap<String, f64> {
    // A client of its own: the scenario's pooled connections may have sat idle longer
    // than the server keeps them open.
    let client = client(1);
    // The token the server was started with (load-tests/run-all sets both).
    let token = std::env::var("SHOAL_METRICS_TOKEN").unwrap_or_default();
    let mut res = client
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("metrics");
    let body = res.body().await.expect("metrics body");
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}
