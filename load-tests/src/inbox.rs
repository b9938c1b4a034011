//! The support inbox at scale. W writers post customers' messages through the API
//! channel (C conversations of M messages each): acknowledged (durable) inbound
//! messages per second. Then, on that inbox: every conversation-list filter agents use,
//! timed one request at a time; opening a conversation of L messages (the conversation
//! and its newest page of messages); and fan-out, the time from posting a message to
//! each of A agents following the inbox receiving it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::fanout::percentile;

pub async fn run(flags: &crate::Flags) -> crate::Outcome {
    let url = flags.url("url").expect("--url");
    let conversations = flags.number("conversations", 20, 100_000);
    let per = flags.number("messages", 5, 10);
    let writers = flags.number("writers", 4, 64);
    let agents = flags.number("agents", 3, 50);
    let probes = flags.number("probes", 20, 300);
    let long = flags.number("long", 50, 500);
    let settle = flags.number("settle-secs", 0, 0);
    assert!(
        conversations <= 1_000_000 && per <= 100 && writers <= 1000 && agents <= 1000 && probes <= 10_000,
        "bounded runs only"
    );
    let client = crate::setup::client(writers + agents + 8);
    let api = format!("{url}/api/v1");
    let token = crate::setup::workspace(&client, &url).await;
    let inbox = crate::setup::post(
        &client,
        &format!("{api}/inboxes"),
        &token,
        json!({"name": "Load", "channel": "api"}),
    )
    .await;
    let (inbox_id, inbox_token) = (
        inbox["id"].as_str().expect("inbox id").to_string(),
        inbox["token"].as_str().expect("inbox token").to_string(),
    );

    // 1. Ingest: every message acknowledged, so durable.
    let total = conversations * per;
    let next = Rc::new(std::cell::Cell::new(0usize));
    let failed = Rc::new(std::cell::Cell::new(0usize));
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (client, api, inbox_token, next, failed) = (client.clone(), api.clone(), inbox_token.clone(), next.clone(), failed.clone());
            actix_rt::spawn(async move {
                loop {
                    let i = next.get();
                    if i >= total {
                        break;
                    }
                    next.set(i + 1);
                    let body = json!({"contact_identifier": format!("c{}", i % conversations), "text": format!("message {i} about order {}", i % 977), "external_id": format!("m{i}")});
                    if !post_ok(&client, &format!("{api}/channels/api/messages"), &inbox_token, None, &body).await {
                        failed.set(failed.get() + 1);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let inbound_per_sec = (total - failed.get()) as f64 / ingest_secs;

    // Some conversations worked on, so that every filter finds a few.
    let page = get_json(&client, &format!("{api}/conversations?inbox_id={inbox_id}&limit=200"), &token).await;
    let me = get_json(&client, &format!("{api}/me"), &token).await;
    let user = me["user"]["id"].as_str().or(me["user_id"].as_str()).unwrap_or_default().to_string();
    for (n, c) in page["data"].as_array().expect("conversations").iter().enumerate() {
        let id = c["id"].as_str().expect("id");
        let change = match n % 4 {
            0 => json!({"status": "pending", "priority": "high"}),
            1 => json!({"assignee_id": user, "tags": ["vip"]}),
            2 => json!({"priority": "urgent"}),
            _ => json!({"status": "resolved"}),
        };
        let mut res = client
            .patch(format!("{api}/conversations/{id}"))
            .bearer_auth(&token)
            .send_json(&change)
            .await
            .expect("patch");
        let _ = res.body().await;
    }

    // 2. A long conversation.
    for i in 0..long {
        let body = json!({"contact_identifier": "long", "text": format!("long thread message {i}")});
        assert!(
            post_ok(&client, &format!("{api}/channels/api/messages"), &inbox_token, None, &body).await,
            "long thread"
        );
    }
    let long_id = get_json(
        &client,
        &format!("{api}/conversations?inbox_id={inbox_id}&sort=-last_message_at&limit=1"),
        &token,
    )
    .await["data"][0]["id"]
        .as_str()
        .expect("the long conversation")
        .to_string();

    // A store just filled may not have planned for what it holds yet (PostgreSQL's
    // statistics come from autovacuum's ANALYZE, within a minute by default).
    assert!(settle <= 600, "bounded runs only");
    actix_rt::time::sleep(Duration::from_secs(settle as u64)).await;

    // 3. The filters, one request at a time.
    let since = chrono::Utc::now() - chrono::Duration::seconds(60);
    let filters: Vec<(&str, String)> = vec![
        ("inbox", format!("inbox_id={inbox_id}")),
        ("inbox, open", format!("inbox_id={inbox_id}&status=open")),
        ("pending", "status=pending".into()),
        ("assigned to me", "assignee=me".into()),
        ("unassigned", "assignee=none".into()),
        ("priority urgent", "priority=urgent".into()),
        ("label vip", "tags=vip".into()),
        ("sla breached", "sla_breached=true".into()),
        ("longest waiting", "waiting_since_is_null=false&sort=waiting_since".into()),
        (
            "changed since",
            format!(
                "updated_since={}&sort=updated_at",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
    ];
    let mut filter_rows = Vec::new();
    let mut worst = (Duration::ZERO, "");
    for (name, q) in &filters {
        let mut times = Vec::with_capacity(probes);
        for _ in 0..probes {
            let t0 = Instant::now();
            let v = get_json(&client, &format!("{api}/conversations?{q}&limit=50"), &token).await;
            times.push(t0.elapsed());
            assert!(v["data"].is_array(), "{name}: {v}");
        }
        times.sort();
        let p99 = percentile(&times, 0.99);
        if p99 > worst.0 {
            worst = (p99, name);
        }
        filter_rows.push(json!({"filter": name, "query": q, "p50_ms": ms(percentile(&times, 0.5)), "p99_ms": ms(p99)}));
    }

    // 4. Opening the long conversation: it, and its newest page of messages.
    let mut opens = Vec::with_capacity(probes);
    for _ in 0..probes {
        let t0 = Instant::now();
        let c = get_json(&client, &format!("{api}/conversations/{long_id}"), &token).await;
        let m = get_json(&client, &format!("{api}/conversations/{long_id}/messages?limit=50"), &token).await;
        opens.push(t0.elapsed());
        assert!(c["id"].is_string() && m["data"].as_array().is_some_and(|d| !d.is_empty()), "open");
    }
    opens.sort();

    // 5. Fan-out to agents following the inbox.
    let topic = format!("inbox:{inbox_id}");
    let ws_url = format!("{}/api/v1/ws", url.replacen("http", "ws", 1));
    let sends = probes;
    let mut receivers = Vec::new();
    for _ in 0..agents {
        let mut ws = crate::setup::follow(&client, &ws_url, &token, &topic).await;
        receivers.push(actix_rt::spawn(async move {
            let mut seen: HashMap<usize, Instant> = HashMap::new();
            while seen.len() < sends {
                match actix_rt::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(awc::ws::Frame::Text(t)))) => {
                        let f: Value = serde_json::from_slice(&t).unwrap_or(Value::Null);
                        if f["kind"] == "message.created" {
                            if let Some(n) = f["cause"].as_str().and_then(|c| c.strip_prefix('f')).and_then(|n| n.parse().ok()) {
                                seen.insert(n, Instant::now());
                            }
                        }
                    }
                    Ok(Some(Ok(awc::ws::Frame::Ping(p)))) => {
                        let _ = ws.send(awc::ws::Message::Pong(p)).await;
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            seen
        }));
    }
    let sent: Rc<RefCell<Vec<Instant>>> = Rc::default();
    for n in 0..sends {
        let t0 = Instant::now();
        let body = json!({"contact_identifier": format!("c{}", n % conversations), "text": format!("live {n}")});
        assert!(
            post_ok(
                &client,
                &format!("{api}/channels/api/messages"),
                &inbox_token,
                Some(&format!("f{n}")),
                &body
            )
            .await,
            "live"
        );
        sent.borrow_mut().push(t0);
    }
    let mut delays = Vec::new();
    let mut missing = 0;
    for r in receivers {
        let seen = r.await.expect("an agent");
        for (n, t0) in sent.borrow().iter().enumerate() {
            match seen.get(&n) {
                Some(t) => delays.push(t.duration_since(*t0)),
                None => missing += 1,
            }
        }
    }
    delays.sort();
    let fan = |q: f64| {
        if delays.is_empty() {
            Duration::ZERO
        } else {
            percentile(&delays, q)
        }
    };

    crate::Outcome {
        json: json!({
            "params": {"conversations": conversations, "messages_per_conversation": per, "writers": writers, "agents": agents, "probes": probes, "long": long},
            "results": {
                "inbound_per_sec": inbound_per_sec,
                "inbound_messages": total,
                "inbound_failed": failed.get(),
                "filters": filter_rows,
                "worst_filter": worst.1,
                "worst_filter_p99_ms": ms(worst.0),
                "open_conversation_ms": {"p50": ms(percentile(&opens, 0.5)), "p99": ms(percentile(&opens, 0.99))},
                "fanout_ms": {"p50": ms(fan(0.5)), "p99": ms(fan(0.99))},
                "fanout_missing": missing,
            },
        }),
        header: vec![
            "conversations",
            "messages",
            "writers",
            "inbound/s",
            "worst filter p99 ms",
            "open p99 ms",
            "agents",
            "fan-out p50 ms",
            "fan-out p99 ms",
            "failed",
        ],
        row: vec![
            conversations.to_string(),
            total.to_string(),
            writers.to_string(),
            format!("{inbound_per_sec:.0}"),
            format!("{} ({})", crate::ms(worst.0), worst.1),
            crate::ms(percentile(&opens, 0.99)),
            agents.to_string(),
            crate::ms(fan(0.5)),
            crate::ms(fan(0.99)),
            (failed.get() + missing).to_string(),
        ],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn post_ok(client: &awc::Client, url: &str, token: &str, mutation: Option<&str>, body: &Value) -> bool {
    let mut req = client.post(url).bearer_auth(token);
    if let Some(m) = mutation {
        req = req.insert_header(("x-mutation-id", m));
    }
    match req.send_json(body).await {
        Ok(mut res) => {
            let _ = res.body().await;
            res.status().is_success()
        }
        Err(_) => false,
    }
}

async fn get_json(client: &awc::Client, url: &str, token: &str) -> Value {
    let mut res = client.get(url).bearer_auth(token).send().await.expect("request");
    assert!(res.status().is_success(), "{url}: {}", res.status());
    res.json().limit(1 << 24).await.expect("json body")
}
