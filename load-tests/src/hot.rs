//! One hot board: W writers move their own deals on one board as fast as the server
//! acknowledges them (each move durable before its answer), for D seconds. It measures
//! the board actor's and the persister's throughput: acknowledged moves per second and
//! the time to acknowledgement.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::json;

pub async fn run(flags: &crate::Flags) -> crate::Outcome {
    let url = flags.url("url").expect("--url");
    let writers = flags.number("writers", 4, 64);
    let secs = flags.number("secs", 2, 10);
    assert!(writers <= 1000 && secs <= 120, "bounded runs only");
    let client = crate::setup::client(writers + 8);
    let token = crate::setup::workspace(&client, &url).await;
    let (pipeline, stages) = crate::setup::board(&client, &url, &token).await;
    let mut deals = Vec::new();
    for i in 0..writers {
        deals.push(crate::setup::deal(&client, &url, &token, &pipeline, &format!("hot {i}")).await);
    }
    let before = crate::setup::metrics(&client, &url).await;
    let started = Instant::now();
    let until = started + Duration::from_secs(secs as u64);
    // (latencies of acknowledged moves, refused or failed moves)
    let outcome: Rc<RefCell<(Vec<Duration>, usize)>> = Rc::default();
    let tasks: Vec<_> = deals
        .into_iter()
        .enumerate()
        .map(|(w, deal)| {
            let (client, url, token, stages, outcome) = (client.clone(), url.clone(), token.clone(), stages.clone(), outcome.clone());
            actix_rt::spawn(async move {
                let mut n = 0;
                while Instant::now() < until {
                    n += 1;
                    let stage = &stages[(w + n) % stages.len()];
                    let sent = Instant::now();
                    let res = client
                        .post(format!("{url}/api/v1/deals/{deal}/move"))
                        .bearer_auth(&token)
                        .send_json(&json!({"stage_id": stage}))
                        .await;
                    let ok = match res {
                        Ok(mut r) => {
                            let _ = r.body().await;
                            r.status().is_success()
                        }
                        Err(_) => false,
                    };
                    let mut o = outcome.borrow_mut();
                    if ok {
                        o.0.push(sent.elapsed());
                    } else {
                        o.1 += 1;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let after = crate::setup::metrics(&client, &url).await;
    let (mut latencies, failed) = outcome.borrow().clone();
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
            "params": {"writers": writers, "secs": secs},
            "results": {
                "acked": acked,
                "failed": failed,
                "acked_per_sec": rate,
                "server_cpu_seconds": cpu,
                "ack_latency_ms": {"p50": ms(p(0.5)), "p90": ms(p(0.9)), "p99": ms(p(0.99)), "max": ms(latencies.last().copied().unwrap_or_default())},
            },
        }),
        header: vec![
            "writers",
            "seconds",
            "acked",
            "failed",
            "acked/s",
            "server CPU s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
        ],
        row: vec![
            writers.to_string(),
            format!("{:.1}", elapsed.as_secs_f64()),
            acked.to_string(),
            failed.to_string(),
            format!("{rate:.0}"),
            format!("{cpu:.1}"),
            crate::ms(p(0.5)),
            crate::ms(p(0.9)),
            crate::ms(p(0.99)),
        ],
    }
}
