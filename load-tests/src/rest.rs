//! A REST mix: W clients send, for D seconds, a mix of reads and writes of deals and
//! contacts — by default 45% lists, 45% gets, 5% creates, 5% updates — each waiting for
//! its answer before the next. It measures requests per second and latency, for reads
//! and writes apart.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Default, Clone)]
struct Tally {
    reads: Vec<Duration>,
    writes: Vec<Duration>,
    failed: usize,
}

pub async fn run(flags: &crate::Flags) -> crate::Outcome {
    let url = flags.url("url").expect("--url");
    let clients = flags.number("clients", 4, 32);
    let secs = flags.number("secs", 2, 10);
    let write_pct = flags.number("write-percent", 10, 10).min(100);
    assert!(clients <= 1000 && secs <= 120, "bounded runs only");
    let client = crate::setup::client(clients + 8);
    let token = crate::setup::workspace(&client, &url).await;
    let (pipeline, _) = crate::setup::board(&client, &url, &token).await;
    // Something to read: 100 contacts and 100 deals.
    let (mut contacts, mut deals) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let c = crate::setup::post(
            &client,
            &format!("{url}/api/v1/contacts"),
            &token,
            json!({"name": format!("Contact {i}"), "emails": [format!("c{i}@load.test")]}),
        )
        .await;
        contacts.push(c["id"].as_str().expect("contact id").to_string());
        deals.push(crate::setup::deal(&client, &url, &token, &pipeline, &format!("Deal {i}")).await);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(secs as u64);
    let tally: Rc<RefCell<Tally>> = Rc::default();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, url, token, pipeline, contacts, deals, tally) = (
                client.clone(),
                url.clone(),
                token.clone(),
                pipeline.clone(),
                contacts.clone(),
                deals.clone(),
                tally.clone(),
            );
            actix_rt::spawn(async move {
                let mut n: usize = c * 7919;
                while Instant::now() < until {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let pick = (n >> 33) % 100;
                    let i = (n >> 20) % 100;
                    let (kind, path) = if i.is_multiple_of(2) {
                        ("contacts", &contacts[i])
                    } else {
                        ("deals", &deals[i])
                    };
                    let write = pick < write_pct;
                    let even = pick.is_multiple_of(2);
                    let sent = Instant::now();
                    let req = if !write && even {
                        client.get(format!("{url}/api/v1/{kind}?limit=20"))
                    } else if !write {
                        client.get(format!("{url}/api/v1/{kind}/{path}"))
                    } else if even {
                        client.post(format!("{url}/api/v1/{kind}"))
                    } else {
                        client.patch(format!("{url}/api/v1/{kind}/{path}"))
                    };
                    let body: Option<Value> = match (write, even, kind) {
                        (false, _, _) => None,
                        (true, true, "contacts") => Some(json!({"name": format!("New {n}")})),
                        (true, true, _) => Some(json!({"title": format!("New {n}"), "pipeline_id": pipeline})),
                        (true, false, "contacts") => Some(json!({"title": format!("Title {n}")})),
                        (true, false, _) => Some(json!({"amount": (n % 100_000) as i64, "currency": "EUR"})),
                    };
                    let req = req.bearer_auth(&token);
                    let res = match body {
                        Some(b) => req.send_json(&b).await,
                        None => req.send().await,
                    };
                    let ok = match res {
                        Ok(mut r) => {
                            let _ = r.body().limit(1 << 22).await;
                            r.status().is_success()
                        }
                        Err(_) => false,
                    };
                    let mut t = tally.borrow_mut();
                    match (ok, write) {
                        (false, _) => t.failed += 1,
                        (true, false) => t.reads.push(sent.elapsed()),
                        (true, true) => t.writes.push(sent.elapsed()),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut t = tally.borrow().clone();
    t.reads.sort();
    t.writes.sort();
    let p = |v: &[Duration], q: f64| {
        if v.is_empty() {
            Duration::ZERO
        } else {
            crate::fanout::percentile(v, q)
        }
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (reads, writes) = (t.reads.len() as f64 / elapsed, t.writes.len() as f64 / elapsed);
    crate::Outcome {
        json: json!({
            "params": {"clients": clients, "secs": secs, "write_percent": write_pct},
            "results": {
                "reads_per_sec": reads,
                "writes_per_sec": writes,
                "failed": t.failed,
                "read_latency_ms": {"p50": ms(p(&t.reads, 0.5)), "p99": ms(p(&t.reads, 0.99))},
                "write_latency_ms": {"p50": ms(p(&t.writes, 0.5)), "p99": ms(p(&t.writes, 0.99))},
            },
        }),
        header: vec![
            "clients",
            "writes %",
            "reads/s",
            "read p50 ms",
            "read p99 ms",
            "writes/s",
            "write p50 ms",
            "write p99 ms",
            "failed",
        ],
        row: vec![
            clients.to_string(),
            write_pct.to_string(),
            format!("{reads:.0}"),
            crate::ms(p(&t.reads, 0.5)),
            crate::ms(p(&t.reads, 0.99)),
            format!("{writes:.0}"),
            crate::ms(p(&t.writes, 0.5)),
            crate::ms(p(&t.writes, 0.99)),
            t.failed.to_string(),
        ],
    }
}
