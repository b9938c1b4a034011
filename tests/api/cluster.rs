//! Several nodes on one PostgreSQL store and one Redis: a change made through any node
//! reaches viewers on every node, in order, with the same seqs; when Redis goes away
//! and comes back, viewers catch up from the event log.

use serde_json::{json, Value};

use crate::helpers::*;

pub fn redis_url() -> String {
    std::env::var("SHOAL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Three nodes on a fresh database, sharing a Redis channel of their own.
async fn three_nodes() -> (TestApp, TestApp, TestApp) {
    three_nodes_via(redis_url()).await
}

async fn three_nodes_via(redis: String) -> (TestApp, TestApp, TestApp) {
    let channel = format!("shoal-test:{}", uuid::Uuid::new_v4().simple());
    let settings = shoal::config::Settings {
        redis_url: Some(shoal::config::Secret::new(redis)),
        redis_channel: channel,
        ..test_settings()
    };
    let a = TestApp::spawn_with(Backend::Postgres, settings).await;
    let b = a.another_node().await;
    let c = a.another_node().await;
    (a, b, c)
}

/// A workspace on `node` with a pipeline and one deal; returns (session, stages, deal, topic).
async fn board(node: &TestApp) -> (Session, Vec<String>, String, String) {
    let s = node.signup("Acme").await;
    let (pipeline, stages) = node.pipeline(&s.token).await;
    let deal = node.deal(&s.token, &pipeline, "d").await;
    (s, stages, deal, format!("board:{pipeline}"))
}

/// Moves the deal through `node`, tagged with mutation id `id`.
async fn move_via(node: &TestApp, s: &Session, deal: &str, stage: &str, id: &str) {
    let r = node
        .post_with(
            &format!("/deals/{deal}/move"),
            &s.token,
            &[("x-mutation-id", id)],
            json!({"stage_id": stage}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The user ids a presence frame lists.
fn users(presence: &Value) -> Vec<&str> {
    presence["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect()
}

fn events(frames: &[Value]) -> Vec<(i64, String)> {
    frames
        .iter()
        .filter(|f| f["type"] == "event")
        .map(|f| (f["seq"].as_i64().unwrap(), f["cause"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[actix_web::test]
async fn a_move_made_through_one_node_reaches_viewers_on_the_others_in_order() {
    let (a, b, c) = three_nodes().await;
    let ready = a.request(awc::http::Method::GET, "/readyz", None, &[], None).await.expect(200);
    assert_eq!(ready.body["redis"], "ok");
    let (s, stages, deal, topic) = board(&a).await;
    let mut on_a = a.ws(&s.token).await;
    let mut on_c = c.ws(&s.token).await;
    let start = on_a.subscribe(&topic, None).await.last().unwrap()["seq"].as_i64().unwrap();
    on_c.subscribe(&topic, None).await;

    // Moves through C and B, alternating.
    for i in 0..20 {
        let node = if i % 2 == 0 { &c } else { &b };
        move_via(node, &s, &deal, &stages[(i + 1) % 4], &format!("m{i}")).await;
    }
    let mut seen_a = Vec::new();
    while seen_a.len() < 20 {
        seen_a.extend(events(&[on_a.recv().await]));
    }
    let mut seen_c = Vec::new();
    while seen_c.len() < 20 {
        seen_c.extend(events(&[on_c.recv().await]));
    }
    assert_eq!(seen_a, seen_c, "viewers on different nodes see one stream");
    let expected: Vec<(i64, String)> = (0..20).map(|i| (start + 1 + i as i64, format!("m{i}"))).collect();
    assert_eq!(seen_a, expected, "in order, no gap, no duplicate");
}

#[actix_web::test]
async fn when_redis_comes_back_viewers_on_other_nodes_catch_up_from_the_log() {
    let target = redis_url().trim_start_matches("redis://").trim_end_matches('/').to_string();
    let proxy = Proxy::start(target).await;
    let (a, _b, c) = three_nodes_via(format!("redis://127.0.0.1:{}", proxy.port)).await;
    let (s, stages, deal, topic) = board(&a).await;
    let mut on_a = a.ws(&s.token).await;
    let start = on_a.subscribe(&topic, None).await.last().unwrap()["seq"].as_i64().unwrap();

    proxy.set_down(true);
    // Writes keep working on every node while Redis is away.
    for i in 0..5 {
        move_via(&c, &s, &deal, &stages[(i + 1) % 4], &format!("m{i}")).await;
    }
    let ready = a.request(awc::http::Method::GET, "/readyz", None, &[], None).await;
    assert_eq!((ready.status, ready.code()), (503, "unavailable"));
    proxy.set_down(false);

    // A's node resubscribes by itself and replays what it missed from the log.
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.extend(events(&[on_a.recv().await]));
    }
    let expected: Vec<(i64, String)> = (0..5).map(|i| (start + 1 + i as i64, format!("m{i}"))).collect();
    assert_eq!(seen, expected);
}

#[actix_web::test]
async fn viewers_connected_to_every_node_are_listed_in_presence() {
    let (a, b, _c) = three_nodes().await;
    let owner = a.signup("Acme").await;
    let other = a.member(&owner, "member").await;
    let (pipeline, _) = a.pipeline(&owner.token).await;
    let topic = format!("board:{pipeline}");
    let mut on_a = a.ws(&owner.token).await;
    let mut on_b = b.ws(&other.token).await;
    on_a.subscribe(&topic, None).await;
    on_b.subscribe(&topic, None).await;
    on_b.send(json!({"type": "presence", "topic": topic, "state": {"viewing": true}}))
        .await;
    // B's own frame comes first; A hears of B's viewer through Redis.
    let p = on_a.until("presence").await.pop().unwrap();
    assert_eq!(p["members"], json!([{"user_id": other.user_id, "state": {"viewing": true}}]));
    on_a.send(json!({"type": "presence", "topic": topic, "state": {"dragging": "x"}}))
        .await;
    loop {
        let p = on_b.until("presence").await.pop().unwrap();
        if p["members"].as_array().unwrap().len() == 2 {
            let users = users(&p);
            assert!(users.contains(&owner.user_id.as_str()) && users.contains(&other.user_id.as_str()));
            break;
        }
    }
    // Leaving on B clears B's viewer on A.
    on_b.send(json!({"type": "unsubscribe", "topic": topic})).await;
    loop {
        let p = on_a.until("presence").await.pop().unwrap();
        if users(&p) == vec![owner.user_id.as_str()] {
            break;
        }
    }
}

#[actix_web::test]
async fn in_a_cluster_a_deal_cannot_move_to_another_owners_pipeline_and_nothing_changes() {
    let (a, b, _c) = three_nodes().await;
    let (s, _stages, deal, _topic) = board(&a).await;
    let (_other, other_stages) = b.pipeline(&s.token).await;
    let r = b
        .post(&format!("/deals/{deal}/move"), &s.token, json!({"stage_id": other_stages[0]}))
        .await
        .expect(422);
    assert_eq!(r.code(), "validation_failed");
    assert!(r.body["error"]["details"]["fields"]["pipeline_id"].is_string(), "{}", r.text);
    let d = a.get(&format!("/deals/{deal}"), &s.token).await.expect(200);
    assert_eq!(d.body["version"], 1, "the deal is unchanged");
}
