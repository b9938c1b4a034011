//! Fan-out latency of a live board: W writers (one by default) move deals through the REST API while
//! V viewers follow the board over WebSockets; for every move, the time from sending
//! the request to each viewer receiving the event is recorded. With `--writer-url`, the
//! writer uses another node of a cluster than the viewers, so every event crosses
//! between nodes through Redis.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn run(flags: &crate::Flags) -> crate::Outcome {
    let url = flags.url("url").expect("--url");
    let writer = flags.url("writer-url").unwrap_or_else(|| url.clone());
    let viewers = flags.number("viewers", 3, 20);
    let moves = flags.number("moves", 30, 500);
    assert!(viewers <= 2000 && moves <= 100_000, "bounded runs only");
    // One connection per viewer, plus the writer's.
    let client = crate::setup::client(viewers + 8);
    let api = format!("{writer}/api/v1");
    let token = crate::setup::workspace(&client, &writer).await;
    let (pipeline, stages) = crate::setup::board(&client, &writer, &token).await;
    // Each writer moves deals of its own, so that no two moves of a deal race.
    let writers = flags.number("writers", 1, 1).max(1);
    assert!(writers <= 256, "bounded runs only");
    let mut deals = Vec::new();
    for i in 0..writers * 10_usize.div_ceil(writers) {
        deals.push(crate::setup::deal(&client, &writer, &token, &pipeline, &format!("deal {i}")).await);
    }

    // Viewers: each records when it received the event caused by move n.
    let topic = format!("board:{pipeline}");
    let ws_url = format!("{}/api/v1/ws", url.replacen("http", "ws", 1));
    let mut sockets = Vec::new();
    for _ in 0..viewers {
        let ws = crate::setup::follow(&client, &ws_url, &token, &topic).await;
        sockets.push(ws);
    }
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            actix_rt::spawn(async move {
                let mut seen: HashMap<usize, Instant> = HashMap::new();
                let mut resyncs = 0;
                while seen.len() < moves {
                    match tokio_timeout(ws.next()).await {
                        Some(Some(Ok(awc::ws::Frame::Text(t)))) => {
                            let f: Value = serde_json::from_slice(&t).unwrap();
                            // The server fell behind this viewer and asks it to resume.
                            if f["type"] == "resync" {
                                resyncs += 1;
                            }
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
                (seen, resyncs)
            })
        })
        .collect();

    let before = crate::setup::metrics(&url).await;
    let started = Instant::now();
    let sent: Rc<RefCell<Vec<Option<Instant>>>> = Rc::new(RefCell::new(vec![None; moves]));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (client, api, token, deals, stages, sent) = (
                client.clone(),
                api.clone(),
                token.clone(),
                deals.clone(),
                stages.clone(),
                sent.clone(),
            );
            actix_rt::spawn(async move {
                for n in (w..moves).step_by(writers) {
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
                    sent.borrow_mut()[n] = Some(t0);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a writer finished");
    }
    let elapsed = started.elapsed();
    let after = crate::setup::metrics(&url).await;
    let mut latencies = Vec::new();
    let mut missing = 0;
    let mut resyncs = 0;
    for r in receivers {
        let (seen, r) = r.await.unwrap();
        resyncs += r;
        for (n, t0) in sent.borrow().iter().enumerate() {
            match (seen.get(&n), t0) {
                (Some(t), Some(t0)) => latencies.push(t.duration_since(*t0)),
                _ => missing += 1,
            }
        }
    }
    let figure = |m: &HashMap<String, f64>, name: &str| m.get(name).copied().unwrap_or(0.0);
    let server = json!({
        "resyncs": resyncs,
        "server_cpu_seconds": figure(&after, "process_cpu_seconds_total") - figure(&before, "process_cpu_seconds_total"),
        "server_rss_bytes": figure(&after, "process_resident_memory_bytes"),
    });
    report(
        latencies,
        missing,
        elapsed,
        moves,
        viewers,
        writers,
        json!({"cross_node": writer != url}),
        server,
    )
}

/// The figures of a fan-out run, Shoal's or the baseline's: latency percentiles from
/// each send to each viewer's receipt, and delivered events per second.
#[allow(clippy::too_many_arguments)]
pub fn report(
    mut latencies: Vec<Duration>,
    missing: usize,
    elapsed: Duration,
    moves: usize,
    viewers: usize,
    writers: usize,
    extra: Value,
    server: Value,
) -> crate::Outcome {
    latencies.sort();
    let p = |q: f64| {
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            percentile(&latencies, q)
        }
    };
    let (p50, p90, p99, p999) = (p(0.5), p(0.9), p(0.99), p(0.999));
    let max = latencies.last().copied().unwrap_or_default();
    let rate = moves as f64 / elapsed.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut params = json!({"viewers": viewers, "writers": writers, "moves": moves});
    if let (Some(p), Some(extra)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(extra.clone());
    }
    let mut results = json!({
        "moves_per_sec": rate,
        "events_delivered": latencies.len(),
        "events_per_sec": latencies.len() as f64 / elapsed.as_secs_f64(),
        "missing": missing,
        "latency_ms": {"p50": ms(p50), "p90": ms(p90), "p99": ms(p99), "p999": ms(p999), "max": ms(max)},
    });
    if let (Some(r), Some(server)) = (results.as_object_mut(), server.as_object()) {
        r.extend(server.clone());
    }
    crate::Outcome {
        json: json!({"params": params, "results": results}),
        header: vec![
            "viewers",
            "writers",
            "moves",
            "moves/s",
            "events delivered",
            "events/s",
            "missing",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "resyncs",
            "server CPU s",
        ],
        row: vec![
            viewers.to_string(),
            writers.to_string(),
            moves.to_string(),
            format!("{rate:.0}"),
            latencies.len().to_string(),
            format!("{:.0}", latencies.len() as f64 / elapsed.as_secs_f64()),
            missing.to_string(),
            crate::ms(p50),
            crate::ms(p90),
            crate::ms(p99),
            crate::ms(p999),
            crate::ms(max),
            server.get("resyncs").map_or("–".into(), |v| v.to_string()),
            server
                .get("server_cpu_seconds")
                .and_then(Value::as_f64)
                .map_or("–".into(), |v| format!("{v:.1}")),
        ],
    }
}

/// Waits at most 30 s for the next frame, so a lost event cannot hang the run.
async fn tokio_timeout<F: std::future::Future>(f: F) -> Option<F::Output> {
    actix_rt::time::timeout(Duration::from_secs(30), f).await.ok()
}
