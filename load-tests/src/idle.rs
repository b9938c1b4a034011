//! Idle connections: C WebSocket clients, each following one of B boards, are opened and
//! held; the server's resident memory is read from `/metrics` before and after, giving
//! the memory one idle connection costs. Client sockets are bound to several loopback
//! source addresses (127.0.0.2, 127.0.0.3, …) so that one address's ephemeral ports
//! (about 28,000) are no limit.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Connections from one source address.
const PER_SOURCE: usize = 20_000;
/// Connection attempts in flight at once.
const IN_FLIGHT: usize = 256;

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens one connection from `source` and follows `topic`.
async fn open(server: SocketAddr, source: Ipv4Addr, url: &str, topic: &str) -> Result<Socket, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(server).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    // Small buffers: the generator holds tens of thousands of these.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let subscribe = json!({"type": "subscribe", "topic": topic}).to_string();
    ws.send(Message::Text(subscribe.into())).await.map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let f: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                match f["type"].as_str() {
                    Some("subscribed") => return Ok(ws),
                    Some("error") | Some("nack") => return Err(t.to_string()),
                    _ => {}
                }
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("no subscription: {other:?}")),
        }
    }
}

pub async fn run(flags: &crate::Flags) -> crate::Outcome {
    let url = flags.url("url").expect("--url");
    let connections = flags.number("connections", 200, 20_000);
    let boards = flags.number("boards", 2, 100).max(1);
    let hold = Duration::from_secs(flags.number("hold-secs", 1, 5) as u64);
    assert!(connections <= 100_000 && hold <= Duration::from_secs(60), "bounded runs only");
    let client = crate::setup::client(8);
    let token = crate::setup::workspace(&client, &url).await;
    let mut topics = Vec::new();
    for _ in 0..boards {
        topics.push(format!("board:{}", crate::setup::board(&client, &url, &token).await.0));
    }
    let authority = url.trim_start_matches("http://").trim_end_matches('/');
    let server: SocketAddr = tokio::net::lookup_host(authority)
        .await
        .expect("resolve the server")
        .find(SocketAddr::is_ipv4)
        .expect("an IPv4 server address");
    let ws_url = format!("ws://{authority}/api/v1/ws?access_token={token}");
    let before = crate::setup::metrics(&url).await;

    let started = Instant::now();
    let mut errors = Vec::new();
    let opened: Vec<Socket> = futures_util::stream::iter(0..connections)
        .map(|i| {
            let source = Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8);
            let (ws_url, topic) = (ws_url.clone(), topics[i % boards].clone());
            async move { open(server, source, &ws_url, &topic).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter_map(|r| {
            let kept = match r {
                Ok(ws) => Some(ws),
                Err(e) => {
                    errors.push(e);
                    None
                }
            };
            async move { kept }
        })
        .collect()
        .await;
    let connect_time = started.elapsed();
    // Held without traffic; the server's memory settles.
    tokio::time::sleep(hold).await;
    let after = crate::setup::metrics(&url).await;
    let held = opened.len();
    let figure = |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    let rss_before = figure(&before, "process_resident_memory_bytes");
    let rss_after = figure(&after, "process_resident_memory_bytes");
    let per_conn = if held > 0 { (rss_after - rss_before) / held as f64 } else { 0.0 };
    let server_count = figure(&after, "shoal_websocket_connections");
    drop(opened);
    if let Some(e) = errors.first() {
        eprintln!("{} connections failed; the first: {e}", errors.len());
    }
    let rate = held as f64 / connect_time.as_secs_f64();
    crate::Outcome {
        json: json!({
            "params": {"connections": connections, "boards": boards, "hold_secs": hold.as_secs()},
            "results": {
                "held": held,
                "errors": errors.len(),
                "server_connections": server_count,
                "connects_per_sec": rate,
                "server_rss_before_bytes": rss_before,
                "server_rss_after_bytes": rss_after,
                "server_rss_per_connection_bytes": per_conn,
            },
        }),
        header: vec![
            "connections",
            "held",
            "errors",
            "connects/s",
            "server RSS before MiB",
            "server RSS after MiB",
            "RSS per connection KiB",
        ],
        row: vec![
            connections.to_string(),
            held.to_string(),
            errors.len().to_string(),
            format!("{rate:.0}"),
            format!("{:.1}", rss_before / 1048576.0),
            format!("{:.1}", rss_after / 1048576.0),
            format!("{:.1}", per_conn / 1024.0),
        ],
    }
}
