//! One hot board: W writers move their own deals on one board as fast as the server
//! acknowledges them (each move durable before its answer), for D seconds. It measures
//! the board actor's and the persister's throughput: acknowledged moves per second and
//! the time to acknowledgement.
//!
//! Writers send `deal.move` commands over WebSocket connections (`--via ws`, the
//! default), one in flight per connection, as a user dragging cards does; `--via rest`
//! sends the same moves as `POST /deals/{id}/move` requests instead.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

#[derive(Default, Clone)]
struct Tally {
    latencies: Vec<Duration>,
    /// Moves answered with a nack or an error status (overloaded, unavailable, …).
    refused: usize,
    /// Connections or requests that failed outright.
    failed: usize,
}

pub async fn run(flags: &crate::Flags) -> crate::Outcome {
    let url = flags.url("url").expect("--url");
    let writers = flags.number("writers", 4, 256);
    let secs = flags.number("secs", 2, 10);
    let via = flags.get("via", "ws", "ws");
    assert!(writers <= 2000 && secs <= 120, "bounded runs only");
    assert!(via == "ws" || via == "rest", "--via is ws or rest");
    let client = crate::setup::client(writers + 8);
    let token = crate::setup::workspace(&client, &url).await;
    let (pipeline, stages) = crate::setup::board(&client, &url, &token).await;
    let mut deals = Vec::new();
    for i in 0..writers {
        deals.push(crate::setup::deal(&client, &url, &token, &pipeline, &format!("hot {i}")).await);
    }
    let topic = format!("board:{pipeline}");
    let ws_url = format!("{}/api/v1/ws", url.replacen("http", "ws", 1));
    let mut sockets = Vec::new();
    if via == "ws" {
        for _ in 0..writers {
            let (_, ws) = client.ws(&ws_url).bearer_auth(&token).connect().await.expect("connect");
            sockets.push(Some(ws));
        }
    } else {
        sockets.resize_with(writers, || None);
    }

    let before = crate::setup::metrics(&url).await;
    let started = Instant::now();
    let until = started + Duration::from_secs(secs as u64);
    let tally: Rc<RefCell<Tally>> = Rc::default();
    let tasks: Vec<_> = deals
        .into_iter()
        .zip(sockets)
        .enumerate()
        .map(|(w, (deal, socket))| {
            let (client, url, token, stages, topic, tally) =
                (client.clone(), url.clone(), token.clone(), stages.clone(), topic.clone(), tally.clone());
            actix_rt::spawn(async move {
                let mut socket = socket;
                let mut n = 0;
                while Instant::now() < until {
                    n += 1;
                    let stage = &stages[(w + n) % stages.len()];
                    let sent = Instant::now();
                    let answer = match &mut socket {
                        Some(ws) => {
                            let id = format!("w{w}-{n}");
                            let cmd = json!({"type": "command", "id": id, "topic": topic, "op": "deal.move", "args": {"id": deal, "stage_id": stage}});
                            command(ws, &id, cmd).await
                        }
                        None => {
                            let res = client
                                .post(format!("{url}/api/v1/deals/{deal}/move"))
                                .bearer_auth(&token)
                                .send_json(&json!({"stage_id": stage}))
                                .await;
                            match res {
                                Ok(mut r) => {
                                    let _ = r.body().await;
                                    Some(r.status().is_success())
                                }
                                Err(_) => None,
                            }
                        }
                    };
                    let mut t = tally.borrow_mut();
                    match answer {
                        Some(true) => t.latencies.push(sent.elapsed()),
                        Some(false) => t.refused += 1,
                        None => {
                            t.failed += 1;
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let after = crate::setup::metrics(&url).await;
    let Tally {
        mut latencies,
        refused,
        failed,
    } = tally.borrow().clone();
    latencies.sort();
    let acked = latencies.len();
    let p = |q: f64| {
        if latencies.is_empty() {
            Duration::ZERO
        } else {
            crate::fanout::percentile(&latencies, q)
        }
    };
    let rate = acked as f64 / elapsed.as_secs_f64();
    let cpu =
        after.get("process_cpu_seconds_total").copied().unwrap_or(0.0) - before.get("process_cpu_seconds_total").copied().unwrap_or(0.0);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    crate::Outcome {
        json: json!({
            "params": {"writers": writers, "secs": secs, "via": via},
            "results": {
                "acked": acked,
                "refused": refused,
                "failed": failed,
                "acked_per_sec": rate,
                "server_cpu_seconds": cpu,
                "ack_latency_ms": {"p50": ms(p(0.5)), "p90": ms(p(0.9)), "p99": ms(p(0.99)), "p999": ms(p(0.999)), "max": ms(latencies.last().copied().unwrap_or_default())},
            },
        }),
        header: vec![
            "via",
            "writers",
            "seconds",
            "acked",
            "refused",
            "failed",
            "acked/s",
            "server CPU s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
        ],
        row: vec![
            via,
            writers.to_string(),
            format!("{:.1}", elapsed.as_secs_f64()),
            acked.to_string(),
            refused.to_string(),
            failed.to_string(),
            format!("{rate:.0}"),
            format!("{cpu:.1}"),
            crate::ms(p(0.5)),
            crate::ms(p(0.9)),
            crate::ms(p(0.99)),
        ],
    }
}

/// Sends a command and waits for its answer: `Some(true)` for an ack, `Some(false)`
/// for a nack, `None` when the connection failed or 30 s passed.
async fn command(ws: &mut actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>, id: &str, cmd: Value) -> Option<bool> {
    ws.send(awc::ws::Message::Text(cmd.to_string().into())).await.ok()?;
    loop {
        match actix_rt::time::timeout(Duration::from_secs(30), ws.next()).await.ok()? {
            Some(Ok(awc::ws::Frame::Text(t))) => {
                let f: Value = serde_json::from_slice(&t).ok()?;
                if f["id"] == id {
                    return Some(f["type"] == "ack");
                }
            }
            Some(Ok(awc::ws::Frame::Ping(p))) => ws.send(awc::ws::Message::Pong(p)).await.ok()?,
            Some(Ok(_)) => {}
            _ => return None,
        }
    }
}
