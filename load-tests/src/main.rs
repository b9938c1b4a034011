//! Fan-out latency of a live board: one writer moves deals through the REST API while
//! V viewers follow the board over WebSockets; for every move, the time from sending
//! the request to each viewer receiving the event is recorded.
//!
//! It targets a running server on this machine only, and stops by itself after the
//! given number of moves.
//!
//!     cargo run --release -p shoal-load -- --url http://127.0.0.1:8080 --viewers 20 --moves 500
//!
//! With `--writer-url`, the writer uses another node of a cluster than the viewers, so
//! every event crosses between nodes through Redis.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

struct Args {
    url: String,
    /// The node the writer uses; the viewers' node when unset.
    writer_url: Option<String>,
    viewers: usize,
    moves: usize,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        writer_url: None,
        viewers: 20,
        moves: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value,
            "--writer-url" => a.writer_url = Some(value),
            "--viewers" => a.viewers = value.parse().expect("--viewers is a number"),
            "--moves" => a.moves = value.parse().expect("--moves is a number"),
            _ => panic!("unknown flag {flag}; use --url, --writer-url, --viewers, --moves"),
        }
    }
    for url in std::iter::once(&a.url).chain(a.writer_url.iter()) {
        let host = url.trim_start_matches("http://").split([':', '/']).next().unwrap_or("");
        assert!(
            host == "localhost" || host.starts_with("127."),
            "load tests only target this machine's loopback addresses"
        );
    }
    assert!(a.viewers <= 2000 && a.moves <= 100_000, "bounded runs only");
    a
}

async fn post(client: &awc::Client, url: &str, token: &str, body: Value) -> Value {
    let mut res = client.post(url).bearer_auth(token).send_json(&body).await.expect("request");
    assert!(res.status().is_success(), "{url}: {}", res.status());
    res.json().limit(1 << 24).await.expect("json body")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[actix_rt::main]
async fn main() {
    let a = args();
    // One connection per viewer, plus the writer's.
    let connector = awc::Connector::new().limit(a.viewers + 8);
    let client = awc::Client::builder()
        .connector(connector)
        .timeout(Duration::from_secs(30))
        .finish();
    let api = format!("{}/api/v1", a.writer_url.as_deref().unwrap_or(&a.url));
    let email = format!("load-{}@load.test", uuid::Uuid::new_v4().simple());
    let s = post(
        &client,
        &format!("{api}/auth/signup"),
        "",
        json!({"workspace_name": "Load", "name": "Load", "email": email, "password": "correct horse battery"}),
    )
    .await;
    let token = s["access_token"].as_str().unwrap().to_string();
    let p = post(
        &client,
        &format!("{api}/pipelines"),
        &token,
        json!({"name": "Load", "stages": [{"name": "A"}, {"name": "B"}, {"name": "C"}, {"name": "D"}]}),
    )
    .await;
    let pipeline = p["id"].as_str().unwrap().to_string();
    let stages: Vec<String> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let mut deals = Vec::new();
    for i in 0..10 {
        let d = post(
            &client,
            &format!("{api}/deals"),
            &token,
            json!({"title": format!("deal {i}"), "pipeline_id": pipeline}),
        )
        .await;
        deals.push(d["id"].as_str().unwrap().to_string());
    }

    // Viewers: each records when it received the event caused by move n.
    let topic = format!("board:{pipeline}");
    let ws_url = format!("{}/api/v1/ws", a.url.replacen("http", "ws", 1));
    let mut viewers = Vec::new();
    for _ in 0..a.viewers {
        let (_, mut ws) = client
            .ws(&ws_url)
            .bearer_auth(&token)
            .max_frame_size(1 << 24)
            .connect()
            .await
            .expect("connect");
        ws.send(awc::ws::Message::Text(
            json!({"type": "subscribe", "topic": topic}).to_string().into(),
        ))
        .await
        .unwrap();
        loop {
            if let Some(Ok(awc::ws::Frame::Text(t))) = ws.next().await {
                if serde_json::from_slice::<Value>(&t).unwrap()["type"] == "subscribed" {
                    break;
                }
            }
        }
        viewers.push(ws);
    }
    let moves = a.moves;
    let receivers: Vec<_> = viewers
        .into_iter()
        .map(|mut ws| {
            actix_rt::spawn(async move {
                let mut seen: HashMap<usize, Instant> = HashMap::new();
                while seen.len() < moves {
                    match tokio_timeout(ws.next()).await {
                        Some(Some(Ok(awc::ws::Frame::Text(t)))) => {
                            let f: Value = serde_json::from_slice(&t).unwrap();
                            if let Some(n) = f["cause"].as_str().and_then(|c| c.strip_prefix("m")).and_then(|n| n.parse().ok()) {
                                seen.insert(n, Instant::now());
                            }
                        }
                        Some(Some(Ok(awc::ws::Frame::Ping(p)))) => {
                            let _ = ws.send(awc::ws::Message::Pong(p)).await;
                        }
                        Some(Some(Ok(_))) => {}
                        _ => break,
                    }
                }
                seen
            })
        })
        .collect();

    let started = Instant::now();
    let mut sent = Vec::with_capacity(moves);
    for n in 0..moves {
        let deal = &deals[n % deals.len()];
        let stage = &stages[(n / deals.len() + 1) % stages.len()];
        let t0 = Instant::now();
        let mut res = client
            .post(format!("{api}/deals/{deal}/move"))
            .bearer_auth(&token)
            .insert_header(("x-mutation-id", format!("m{n}")))
            .send_json(&json!({"stage_id": stage}))
            .await
            .expect("move");
        assert!(res.status().is_success(), "move {n}: {}", res.status());
        let _ = res.body().await;
        sent.push(t0);
    }
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    let mut missing = 0;
    for r in receivers {
        let seen = r.await.unwrap();
        for (n, t0) in sent.iter().enumerate() {
            match seen.get(&n) {
                Some(t) => latencies.push(t.duration_since(*t0)),
                None => missing += 1,
            }
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "viewers {}, moves {}, moves/s {:.0}, events delivered {}, missing {}",
        a.viewers,
        moves,
        moves as f64 / elapsed.as_secs_f64(),
        latencies.len(),
        missing
    );
    if !latencies.is_empty() {
        println!(
            "move -> viewer latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.9)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap())
        );
    }
}

/// Waits at most 30 s for the next frame, so a lost event cannot hang the run.
async fn tokio_timeout<F: std::future::Future>(f: F) -> Option<F::Output> {
    actix_rt::time::timeout(Duration::from_secs(30), f).await.ok()
}
