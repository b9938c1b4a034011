//! Baselines: what this machine does with no CRM in the way, so that Shoal's figures can
//! be read as ratios to them.
//!
//! - `baseline-server` is a minimal WebSocket broadcast server (tokio-tungstenite on a
//!   multi-threaded tokio runtime): every text message a client sends goes to every
//!   connected client, the sender included. No authentication, parsing, storage or
//!   ordering.
//! - `baseline-fanout` drives it as `fanout` drives Shoal: V viewers, W writers each
//!   sending a message once its previous one came back, latency from send to each
//!   viewer's receipt.
//! - `baseline-insert` measures the store's raw group-commit rate: transactions of B
//!   rows, each one multi-row INSERT, one after another on one connection, as Shoal's
//!   persister commits its batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Messages waiting for one slow client before the server drops more of them.
const CLIENT_QUEUE: usize = 1024;

type Clients = Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>;

/// Runs the broadcast server on `--port` (0: any free port) for at most `--secs`, on a
/// runtime of its own with one worker per core, like Shoal's server.
pub fn serve(flags: &crate::Flags) {
    let port: u16 = flags.number("port", 0, 0).try_into().expect("--port is a port");
    let secs = flags.number("secs", 60, 3600);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        // The driver reads this line to learn the port.
        println!("baseline listening on ws://{addr}");
        let clients: Clients = Arc::default();
        let accept = async {
            let mut next_id = 0u64;
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                next_id += 1;
                tokio::spawn(connection(stream, next_id, clients.clone()));
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(secs as u64), accept).await;
    });
}

async fn connection(stream: tokio::net::TcpStream, id: u64, clients: Clients) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(CLIENT_QUEUE);
    clients.lock().unwrap().insert(id, tx);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        if let Message::Text(_) = &msg {
            let targets: Vec<_> = clients.lock().unwrap().values().cloned().collect();
            for t in targets {
                // A full queue drops the message for that client: the baseline keeps
                // no log to catch up from.
                let _ = t.try_send(msg.clone());
            }
        }
    }
    clients.lock().unwrap().remove(&id);
    writer.abort();
}

/// Fan-out through the baseline server at `--url ws://…`.
pub async fn fanout(flags: &crate::Flags) -> crate::Outcome {
    let url = flags.get("url", "", "");
    let host = url.trim_start_matches("ws://").split([':', '/']).next().unwrap_or("");
    assert!(
        host.starts_with("127.") || host == "localhost",
        "load tests only target this machine's loopback addresses"
    );
    let viewers = flags.number("viewers", 3, 20);
    let writers = flags.number("writers", 1, 1).max(1);
    let moves = flags.number("moves", 30, 500);
    assert!(viewers <= 2000 && writers <= 256 && moves <= 100_000, "bounded runs only");
    let client = crate::setup::client(viewers + writers + 8);
    let connect = || async {
        let (_, ws) = client.ws(&url).max_frame_size(1 << 20).connect().await.expect("connect");
        ws
    };
    let mut receivers = Vec::new();
    for _ in 0..viewers {
        let mut ws = connect().await;
        receivers.push(actix_rt::spawn(async move {
            let mut seen: HashMap<usize, Instant> = HashMap::new();
            while seen.len() < moves {
                match actix_rt::time::timeout(Duration::from_secs(30), ws.next()).await {
                    Ok(Some(Ok(awc::ws::Frame::Text(t)))) => {
                        if let Some(n) = std::str::from_utf8(&t).ok().and_then(|s| s.parse().ok()) {
                            seen.insert(n, Instant::now());
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            seen
        }));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut ws = connect().await;
        tasks.push(actix_rt::spawn(async move {
            let mut sent = Vec::new();
            for n in (w..moves).step_by(writers) {
                let t0 = Instant::now();
                ws.send(awc::ws::Message::Text(n.to_string().into())).await.expect("send");
                // Its own message coming back is the writer's acknowledgement.
                loop {
                    match actix_rt::time::timeout(Duration::from_secs(30), ws.next()).await {
                        Ok(Some(Ok(awc::ws::Frame::Text(t)))) if t.as_ref() == n.to_string().as_bytes() => break,
                        Ok(Some(Ok(_))) => {}
                        _ => panic!("the baseline server stopped answering"),
                    }
                }
                sent.push((n, t0));
            }
            sent
        }));
    }
    let mut sent: HashMap<usize, Instant> = HashMap::new();
    for t in tasks {
        sent.extend(t.await.expect("a writer finished"));
    }
    let elapsed = started.elapsed();
    let mut latencies = Vec::new();
    let mut missing = 0;
    for r in receivers {
        let seen = r.await.unwrap();
        for (n, t0) in &sent {
            match seen.get(n) {
                Some(t) => latencies.push(t.duration_since(*t0)),
                None => missing += 1,
            }
        }
    }
    crate::fanout::report(
        latencies,
        missing,
        elapsed,
        moves,
        viewers,
        writers,
        json!({"baseline": true}),
        json!({}),
    )
}

/// The store's raw batched insert rate at `--database-url` (a SQLite file or a
/// PostgreSQL database; a scratch table is made and dropped).
pub async fn insert(flags: &crate::Flags) -> crate::Outcome {
    use sqlx::Connection;
    let url = flags.get("database-url", "", "");
    assert!(!url.is_empty(), "--database-url sqlite:FILE or postgres://127.0.0.1/DB");
    if let Some(rest) = url.strip_prefix("postgres://") {
        let host = rest.rsplit('@').next().unwrap_or("").split([':', '/']).next().unwrap_or("");
        assert!(
            host.starts_with("127.") || host == "localhost",
            "load tests only target this machine's loopback addresses"
        );
    }
    let batch = flags.number("batch", 64, 256);
    let rows = flags.number("rows", 2_000, 200_000);
    assert!(batch > 0 && batch <= 1000 && rows <= 10_000_000, "bounded runs only");
    sqlx::any::install_default_drivers();
    let url = if url.starts_with("sqlite:") && !url.contains('?') {
        format!("{url}?mode=rwc")
    } else {
        url
    };
    let mut conn = sqlx::AnyConnection::connect(&url).await.expect("connect to the store");
    if url.starts_with("sqlite:") {
        // As Shoal opens SQLite: write-ahead log, synchronous = NORMAL.
        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut conn).await.unwrap();
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut conn).await.unwrap();
    }
    let table = format!("baseline_rows_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!(
        "CREATE TABLE {table} (topic TEXT NOT NULL, seq BIGINT NOT NULL, payload TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (topic, seq))"
    ))
    .execute(&mut conn)
    .await
    .expect("create the scratch table");
    let payload =
        json!({"object_type": "deal", "id": "0192f1c4-7a8b-7c3d-9e0f-123456789abc", "changes": {"stage_id": ["a", "b"]}}).to_string();
    let mut commits: Vec<Duration> = Vec::new();
    let started = Instant::now();
    let mut seq = 0i64;
    while (seq as usize) < rows {
        let t0 = Instant::now();
        let mut tx = conn.begin().await.unwrap();
        let n = batch.min(rows - seq as usize);
        let mut sql = format!("INSERT INTO {table} (topic, seq, payload, created_at) VALUES ");
        for i in 0..n {
            let p = i * 4;
            sql.push_str(&format!(
                "{}(${}, ${}, ${}, ${})",
                if i > 0 { ", " } else { "" },
                p + 1,
                p + 2,
                p + 3,
                p + 4
            ));
        }
        let mut q = sqlx::query(&sql);
        for _ in 0..n {
            seq += 1;
            q = q.bind("board:baseline").bind(seq).bind(payload.as_str()).bind(seq);
        }
        q.execute(&mut *tx).await.expect("insert");
        tx.commit().await.expect("commit");
        commits.push(t0.elapsed());
    }
    let elapsed = started.elapsed();
    let _ = sqlx::query(&format!("DROP TABLE {table}")).execute(&mut conn).await;
    commits.sort();
    let rate = seq as f64 / elapsed.as_secs_f64();
    let store = if url.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| crate::fanout::percentile(&commits, q);
    crate::Outcome {
        json: json!({
            "params": {"store": store, "batch": batch, "rows": rows},
            "results": {
                "rows_per_sec": rate,
                "commits_per_sec": commits.len() as f64 / elapsed.as_secs_f64(),
                "commit_ms": {"p50": ms(p(0.5)), "p99": ms(p(0.99)), "max": ms(commits.last().copied().unwrap_or_default())},
            },
        }),
        header: vec![
            "store",
            "rows per commit",
            "rows",
            "rows/s",
            "commits/s",
            "commit p50 ms",
            "commit p99 ms",
        ],
        row: vec![
            store.into(),
            batch.to_string(),
            seq.to_string(),
            format!("{rate:.0}"),
            format!("{:.0}", commits.len() as f64 / elapsed.as_secs_f64()),
            crate::ms(p(0.5)),
            crate::ms(p(0.99)),
        ],
    }
}
