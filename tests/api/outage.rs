//! A store outage: while the store cannot be written, writes are refused with
//! `unavailable` (503 with Retry-After, or a nack), nothing panics, and service comes
//! back by itself when the store does, without a restart.

use std::process::Command;

use serde_json::json;

use crate::helpers::*;

/// Makes the SQLite files unwritable (as root, permissions do not stop writes; the
/// immutable attribute does), and writable again when dropped.
struct Frozen(Vec<String>);

impl Frozen {
    fn new(dir: &std::path::Path) -> Frozen {
        let files: Vec<String> = ["shoal.db", "shoal.db-wal"]
            .iter()
            .map(|f| dir.join(f).display().to_string())
            .collect();
        let ok = Command::new("chattr").arg("+i").args(&files).status().unwrap();
        assert!(ok.success(), "chattr +i failed");
        Frozen(files)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

/// Checks the node refuses writes cleanly during `outage`, and recovers after.
async fn writes_fail_cleanly_and_recover(node: &TestApp, start_outage: impl FnOnce(), end_outage: impl FnOnce()) {
    let s = node.signup("Acme").await;
    let (pipeline, stages) = node.pipeline(&s.token).await;
    let deal = node.deal(&s.token, &pipeline, "d").await;
    let topic = format!("board:{pipeline}");
    let mut ws = node.ws(&s.token).await;
    ws.subscribe(&topic, None).await;

    start_outage();
    let r = node.post("/contacts", &s.token, json!({"name": "During"})).await;
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{}", r.text);
    assert!(r.header("retry-after").is_some());
    let r = node
        .post(&format!("/deals/{deal}/move"), &s.token, json!({"stage_id": stages[1]}))
        .await;
    assert_eq!((r.status, r.code()), (503, "unavailable"), "{}", r.text);
    ws.send(json!({"type": "command", "id": "m1", "topic": topic, "op": "deal.move", "args": {"id": deal, "stage_id": stages[2]}}))
        .await;
    let nack = ws.until("nack").await.pop().unwrap();
    assert_eq!(nack["code"], "unavailable");
    let health = node.request(awc::http::Method::GET, "/healthz", None, &[], None).await;
    assert_eq!(health.status, 200, "the node stays up");

    end_outage();
    // A client retries a 503 as told. A connection opened during the outage (SQLite
    // opens a file it cannot write read-only) may refuse one more write; that refusal
    // renews the pool, so the retry goes through.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = node.post("/contacts", &s.token, json!({"name": "After"})).await;
        if r.status == 201 {
            break;
        }
        assert_eq!((r.status, r.code()), (503, "unavailable"), "{}", r.text);
        assert!(attempts < 3, "service did not resume after {attempts} attempts");
    }
    ws.send(json!({"type": "command", "id": "m2", "topic": topic, "op": "deal.move", "args": {"id": deal, "stage_id": stages[2]}}))
        .await;
    // The ack and the echoed event may come in either order.
    let (mut acked, mut echoed) = (false, false);
    while !(acked && echoed) {
        let f = ws.recv().await;
        acked |= f["type"] == "ack" && f["id"] == "m2";
        echoed |= f["type"] == "event" && f["cause"] == "m2";
    }
    let names: Vec<String> = node.get("/contacts", &s.token).await.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["After"], "nothing half-written during the outage");
}

#[actix_web::test]
async fn a_postgres_outage_gets_clean_refusals_and_service_resumes_by_itself() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let url = app.settings.database_url.as_ref().unwrap().expose().to_string();
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    let via_proxy = url.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(via_proxy, url, "the test database URL names 127.0.0.1:5432");
    let settings = shoal::config::Settings {
        database_url: Some(shoal::config::Secret::new(via_proxy)),
        database_acquire_timeout_ms: 1000,
        ..app.settings.clone()
    };
    let node = app.node_with(settings).await;
    writes_fail_cleanly_and_recover(&node, || proxy.set_down(true), || proxy.set_down(false)).await;
    let ready = node.request(awc::http::Method::GET, "/readyz", None, &[], None).await;
    assert_eq!(ready.status, 200);
}

#[actix_web::test]
async fn an_unwritable_sqlite_store_gets_clean_refusals_and_service_resumes_by_itself() {
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        shoal::config::Settings {
            database_acquire_timeout_ms: 1000,
            ..test_settings()
        },
    )
    .await;
    let dir = app.settings.data_dir.clone();
    let frozen = std::cell::RefCell::new(None);
    writes_fail_cleanly_and_recover(
        &app,
        || *frozen.borrow_mut() = Some(Frozen::new(&dir)),
        || drop(frozen.borrow_mut().take()),
    )
    .await;
}
