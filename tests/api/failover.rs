//! Cluster mode with real node processes (the `shoal` binary) on one PostgreSQL
//! database and Redis: one owner per board, writes forwarded to it from the other
//! nodes, the owner killed or paused under traffic, and the store's one sequence per
//! board kept throughout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Row;

use crate::cluster::redis_url;
use crate::helpers::*;

/// Short leases keep the tests quick; production uses 5 s.
const LEASE_TTL_MS: u64 = 2000;

/// Three node processes on a fresh database and a Redis channel of their own.
struct Cluster {
    app: TestApp,
    nodes: Vec<Option<Server>>,
    channel: String,
    redis: String,
    client: awc::Client,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_on(&redis_url()).await
    }

    async fn start_on(redis: &str) -> Cluster {
        // The in-process app provides the fresh database (and its signing key).
        let app = TestApp::spawn(Backend::Postgres).await;
        let channel = format!("shoal-test:{}", uuid::Uuid::new_v4().simple());
        let ttl = LEASE_TTL_MS.to_string();
        let env = [
            ("SHOAL_REDIS_URL", redis),
            ("SHOAL_REDIS_CHANNEL", channel.as_str()),
            ("SHOAL_LEASE_TTL_MS", ttl.as_str()),
        ];
        let nodes = (0..3).map(|_| Some(Server::start(&app.settings, &env))).collect();
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        Cluster {
            app,
            nodes,
            channel,
            redis: redis.to_string(),
            client,
        }
    }

    fn url(&self, node: usize) -> String {
        self.nodes[node].as_ref().map(|n| n.address.clone()).expect("the node runs")
    }

    async fn post(&self, node: &str, path: &str, token: &str, mutation: &str, body: Value) -> Option<(u16, Value)> {
        post(&self.client, node, path, token, mutation, body).await
    }

    /// The board's lease in Redis.
    async fn lease(&self, pipeline: &str) -> Option<String> {
        self.lease_of(&format!("board:{pipeline}")).await
    }

    /// The lease of a topic (`board:<id>`, `inbox:<id>`) in Redis.
    async fn lease_of(&self, topic: &str) -> Option<String> {
        let client = redis::Client::open(self.redis.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET")
            .arg(format!("{}:lease:{topic}", self.channel))
            .query_async::<Option<String>>(&mut c)
            .await
            .unwrap()
    }

    /// Signs up a workspace through `node`; returns its owner's access token.
    async fn signup(&self, node: &str, workspace: &str, email: &str) -> String {
        let body = json!({"workspace_name": workspace, "name": workspace, "email": email, "password": "correct horse battery"});
        let (status, s) = self.post(node, "/auth/signup", "", "signup", body).await.unwrap();
        assert_eq!(status, 201, "{s}");
        s["access_token"].as_str().unwrap().to_string()
    }

    /// The board's event log: (seq, cause) in seq order.
    async fn log(&self, pipeline: &str) -> Vec<(i64, Option<String>)> {
        let url = self.app.settings.database_url.as_ref().unwrap().expose().to_string();
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let rows = sqlx::query("SELECT seq, cause, type FROM event_log WHERE topic = $1 ORDER BY seq")
            .bind(format!("board:{pipeline}"))
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        // A write's follow-up (a column's ranks respread) shares its cause; only the
        // write's own event counts as the write.
        rows.iter()
            .map(|r| {
                let own = r.get::<String, _>(2) != "stage.rebalanced";
                (r.get(0), r.get::<Option<String>, _>(1).filter(|_| own))
            })
            .collect()
    }
}

/// POSTs to `path` on `node` with a mutation id; `None` when the node did not answer.
async fn post(client: &awc::Client, node: &str, path: &str, token: &str, mutation: &str, body: Value) -> Option<(u16, Value)> {
    let mut res = client
        .post(format!("{node}/api/v1{path}"))
        .bearer_auth(token)
        .insert_header(("x-mutation-id", mutation))
        .send_json(&body)
        .await
        .ok()?;
    let status = res.status().as_u16();
    Some((status, res.json::<Value>().limit(1 << 20).await.unwrap_or(Value::Null)))
}

/// A workspace and a pipeline made through `node`, and a deal created through it, so
/// that `node` owns the board. Returns (token, pipeline, stages).
async fn owned_board(c: &Cluster, node: usize) -> (String, String, Vec<String>) {
    let url = c.url(node);
    let token = c.signup(&url, "Fail", "f@failover.test").await;
    let (status, p) = c
        .post(
            &url,
            "/pipelines",
            &token,
            "pipeline",
            json!({"name": "P", "stages": [{"name": "A"}, {"name": "B"}, {"name": "C"}]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{p}");
    let pipeline = p["id"].as_str().unwrap().to_string();
    let stages = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let (status, _) = c
        .post(&url, "/deals", &token, "first", json!({"title": "first", "pipeline_id": pipeline}))
        .await
        .unwrap();
    assert_eq!(status, 201);
    let lease = c.lease(&pipeline).await.expect("the board has a lease");
    assert!(lease.contains(&url), "{url} owns the board: {lease}");
    (token, pipeline, stages)
}

/// Until the writers running alongside have had `n` writes acknowledged (at most a
/// minute).
async fn until_acknowledged<T>(acked: &Rc<RefCell<Vec<T>>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.borrow().len() < n {
        assert!(Instant::now() < deadline, "only {} writes acknowledged", acked.borrow().len());
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every acknowledged mutation is in the log exactly once, and the seqs run 1, 2, 3…
fn assert_one_sequence(log: &[(i64, Option<String>)], acked: &[String]) {
    let seqs: Vec<i64> = log.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=log.len() as i64).collect::<Vec<_>>(), "one sequence without gaps");
    let mut causes: HashMap<&str, usize> = HashMap::new();
    for (_, cause) in log {
        if let Some(c) = cause {
            *causes.entry(c.as_str()).or_default() += 1;
        }
    }
    for m in acked {
        assert_eq!(causes.get(m.as_str()), Some(&1), "acknowledged {m} is in the log once");
    }
}

/// Event seqs in the frames, checked to follow `after` one by one.
fn follow(after: i64, frames: &[Value]) -> i64 {
    let mut last = after;
    for f in frames.iter().filter(|f| f["type"] == "event") {
        let seq = f["seq"].as_i64().unwrap();
        assert_eq!(seq, last + 1, "no gap and no duplicate after {last}");
        last = seq;
    }
    last
}

#[actix_web::test]
async fn a_move_through_node_c_reaches_viewers_on_nodes_a_and_b_in_order_with_the_same_seqs() {
    let c = Cluster::start().await;
    let (token, pipeline, stages) = owned_board(&c, 0).await;
    let topic = format!("board:{pipeline}");
    let mut on_a = Ws::connect(&c.url(0), &token).await;
    let mut on_b = Ws::connect(&c.url(1), &token).await;
    let start = on_a.subscribe(&topic, None).await.last().unwrap()["seq"].as_i64().unwrap();
    on_b.subscribe(&topic, None).await;
    let (_, d) = c
        .post(&c.url(2), "/deals", &token, "d", json!({"title": "d", "pipeline_id": pipeline}))
        .await
        .unwrap();
    let deal = d["id"].as_str().unwrap().to_string();
    let mut latencies = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        let (status, body) = c
            .post(
                &c.url(2),
                &format!("/deals/{deal}/move"),
                &token,
                &format!("m{i}"),
                json!({"stage_id": stages[(i + 1) % 3]}),
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        loop {
            let f = on_b.recv().await;
            if f["cause"] == format!("m{i}") {
                latencies.push(sent.elapsed());
                break;
            }
        }
    }
    let mut seen = Vec::new();
    while seen.len() < 21 {
        let f = on_a.recv().await;
        if f["type"] == "event" {
            seen.push((f["seq"].as_i64().unwrap(), f["cause"].as_str().unwrap_or("").to_string()));
        }
    }
    let mut expected = vec![(start + 1, "d".to_string())];
    expected.extend((0..20).map(|i| (start + 2 + i as i64, format!("m{i}"))));
    assert_eq!(seen, expected, "A sees C's writes in order, with the owner's seqs");
    latencies.sort();
    eprintln!(
        "cross-node (write via C, owner A, viewer on B): median {:?}, max {:?} from request to event",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
}

#[actix_web::test]
async fn when_the_owner_is_killed_another_node_takes_the_board_over_and_loses_nothing_acknowledged() {
    let mut c = Cluster::start().await;
    let (token, pipeline, stages) = owned_board(&c, 0).await;
    let topic = format!("board:{pipeline}");

    // A viewer on B stays connected throughout; one on A loses its node and resumes on C.
    let mut on_b = Ws::connect(&c.url(1), &token).await;
    let b_start = on_b.subscribe(&topic, None).await.last().unwrap()["seq"].as_i64().unwrap();
    let mut on_a = Ws::connect(&c.url(0), &token).await;
    let a_start = on_a.subscribe(&topic, None).await.last().unwrap()["seq"].as_i64().unwrap();
    let seen_on_a: Rc<RefCell<Vec<Value>>> = Rc::default();
    let reader = {
        let seen = seen_on_a.clone();
        actix_web::rt::spawn(async move {
            while let Some(f) = on_a.try_recv().await {
                seen.borrow_mut().push(f);
            }
        })
    };

    // Four writers create and move deals through B and C, whose owner is A.
    // (mutation id, sent, acknowledged)
    let acked: Rc<RefCell<Vec<(String, Instant, Instant)>>> = Rc::default();
    let stop = Rc::new(std::cell::Cell::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, node) = (c.client.clone(), c.url(1 + w % 2));
            let (token, pipeline, stages, acked, stop) = (token.clone(), pipeline.clone(), stages.clone(), acked.clone(), stop.clone());
            async move {
                let mut i = 0;
                while !stop.get() {
                    i += 1;
                    let m = format!("w{w}-{i}");
                    let sent = Instant::now();
                    let created = post(&client, &node, "/deals", &token, &m, json!({"title": m, "pipeline_id": pipeline}));
                    let Some((201, d)) = created.await else { continue };
                    acked.borrow_mut().push((m.clone(), sent, Instant::now()));
                    let path = format!("/deals/{}/move", d["id"].as_str().unwrap());
                    let mv = format!("{m}-move");
                    let sent = Instant::now();
                    if let Some((200, _)) = post(&client, &node, &path, &token, &mv, json!({"stage_id": stages[1]})).await {
                        acked.borrow_mut().push((mv, sent, Instant::now()));
                    }
                }
            }
        })
        .collect();
    let writing = actix_web::rt::spawn(futures_util::future::join_all(writers));

    let wait_for = |n: usize| until_acknowledged(&acked, n);
    wait_for(100).await;
    let killed = Instant::now();
    let before = acked.borrow().len();
    c.nodes[0].take().unwrap().kill9();
    wait_for(before + 100).await;
    stop.set(true);
    writing.await.unwrap();
    let _ = reader.await;

    let acked: Vec<(String, Instant, Instant)> = acked.borrow().clone();
    // From the kill to the first acknowledgement of a write sent after it.
    let failover = acked
        .iter()
        .filter(|(_, sent, _)| *sent > killed)
        .map(|(_, _, t)| *t)
        .min()
        .unwrap()
        - killed;
    assert!(
        failover < Duration::from_secs(10),
        "writes resumed {failover:?} after the owner died"
    );
    let lease = c.lease(&pipeline).await.unwrap();
    assert!(
        lease.contains(&c.url(1)) || lease.contains(&c.url(2)),
        "a live node owns the board: {lease}"
    );

    let log = c.log(&pipeline).await;
    let ids: Vec<String> = acked.iter().map(|(m, _, _)| m.clone()).collect();
    assert_one_sequence(&log, &ids);
    let last = log.last().unwrap().0;

    // B's viewer saw every event once, in order.
    let mut frames = Vec::new();
    let mut at = b_start;
    while at < last {
        let f = on_b.recv().await;
        at = f["seq"].as_i64().unwrap_or(at);
        frames.push(f);
    }
    assert_eq!(follow(b_start, &frames), last);

    // A's viewer resumes on C from where its node died, without gap or duplicate.
    let seen = seen_on_a.borrow().clone();
    let resumed_from = follow(a_start, &seen);
    let mut on_c = Ws::connect(&c.url(2), &token).await;
    let mut frames = on_c.subscribe(&topic, Some(resumed_from)).await;
    while follow(resumed_from, &frames) < last {
        frames.push(on_c.recv().await);
    }
    assert_eq!(follow(resumed_from, &frames), last);
    eprintln!(
        "failover: owner SIGKILLed after {before} acknowledged writes; writes succeeded again after {failover:?} (lease {LEASE_TTL_MS} ms); {} acknowledged, {} events, one sequence",
        acked.len(),
        log.len()
    );
}

#[actix_web::test]
async fn an_inbox_has_one_owner_takes_writes_through_the_others_and_its_owner_killed_loses_no_acknowledged_message() {
    let mut c = Cluster::start().await;
    let url = c.url(0);
    let token = c.signup(&url, "Help", "h@failover.test").await;
    let (status, inbox) = c
        .post(&url, "/inboxes", &token, "inbox", json!({"name": "Chat", "channel": "api"}))
        .await
        .unwrap();
    assert_eq!(status, 201, "{inbox}");
    let (id, inbox_token) = (
        inbox["id"].as_str().unwrap().to_string(),
        inbox["token"].as_str().unwrap().to_string(),
    );
    let (status, _) = c
        .post(
            &url,
            "/channels/api/messages",
            &inbox_token,
            "first",
            json!({"contact_identifier": "c0", "text": "first"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let topic = format!("inbox:{id}");
    assert!(
        c.lease_of(&topic).await.unwrap().contains(&url),
        "the first writer's node owns the inbox"
    );

    // An agent watches from node B throughout.
    let mut on_b = Ws::connect(&c.url(1), &token).await;
    let b_start = on_b.subscribe(&topic, None).await.last().unwrap()["seq"].as_i64().unwrap();

    // Customers write through B and C, whose owner is A; A is killed midway.
    let acked: Rc<RefCell<Vec<String>>> = Rc::default();
    let stop = Rc::new(std::cell::Cell::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, node) = (c.client.clone(), c.url(1 + w % 2));
            let (inbox_token, acked, stop) = (inbox_token.clone(), acked.clone(), stop.clone());
            async move {
                let mut i = 0;
                while !stop.get() {
                    i += 1;
                    let m = format!("w{w}-{i}");
                    let body = json!({"contact_identifier": format!("c{w}"), "text": m, "external_id": m});
                    if let Some((201, _)) = post(&client, &node, "/channels/api/messages", &inbox_token, &m, body).await {
                        acked.borrow_mut().push(m);
                    }
                }
            }
        })
        .collect();
    let writing = actix_web::rt::spawn(futures_util::future::join_all(writers));
    let wait_for = |n: usize| until_acknowledged(&acked, n);
    wait_for(60).await;
    let before = acked.borrow().len();
    c.nodes[0].take().unwrap().kill9();
    wait_for(before + 60).await;
    stop.set(true);
    writing.await.unwrap();
    let lease = c.lease_of(&topic).await.unwrap();
    assert!(
        lease.contains(&c.url(1)) || lease.contains(&c.url(2)),
        "a live node owns the inbox: {lease}"
    );

    // The inbox's log: one sequence, and every acknowledged message in it once.
    let db = c.app.settings.database_url.as_ref().unwrap().expose().to_string();
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db).await.unwrap();
    let rows = sqlx::query("SELECT seq, cause, type FROM event_log WHERE topic = $1 ORDER BY seq")
        .bind(&topic)
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(seqs, (1..=rows.len() as i64).collect::<Vec<_>>(), "one sequence without gaps");
    let mut created: HashMap<String, usize> = HashMap::new();
    for r in rows.iter().filter(|r| r.get::<String, _>(2) == "message.created") {
        if let Some(cause) = r.get::<Option<String>, _>(1) {
            *created.entry(cause).or_default() += 1;
        }
    }
    for m in acked.borrow().iter() {
        assert_eq!(created.get(m), Some(&1), "acknowledged {m} is in the inbox once");
    }
    // B's agent saw every event once, in order.
    let last = *seqs.last().unwrap();
    let mut frames = Vec::new();
    let mut at = b_start;
    while at < last {
        let f = on_b.recv().await;
        at = f["seq"].as_i64().unwrap_or(at);
        frames.push(f);
    }
    assert_eq!(follow(b_start, &frames), last);
}

#[actix_web::test]
async fn a_paused_owner_that_lost_its_lease_cannot_write_and_the_board_keeps_one_sequence() {
    let c = Cluster::start().await;
    let (token, pipeline, _) = owned_board(&c, 0).await;
    let (a, b) = (c.url(0), c.url(1));
    let mut acked = vec!["first".to_string()];

    c.nodes[0].as_ref().unwrap().signal("STOP");
    let paused = Instant::now();
    // A write sent to the paused owner waits in its socket until it resumes.
    let late = {
        let (client, a, token, pipeline) = (c.client.clone(), a.clone(), token.clone(), pipeline.clone());
        actix_web::rt::spawn(async move {
            let res = client
                .post(format!("{a}/api/v1/deals"))
                .bearer_auth(&token)
                .insert_header(("x-mutation-id", "late"))
                .send_json(&json!({"title": "late", "pipeline_id": pipeline}))
                .await
                .ok()?;
            Some(res.status().as_u16())
        })
    };
    // Through B, writes fail while A holds the lease, then B takes the board over.
    let mut i = 0;
    loop {
        i += 1;
        let m = format!("b{i}");
        if let Some((201, _)) = c.post(&b, "/deals", &token, &m, json!({"title": m, "pipeline_id": pipeline})).await {
            acked.push(m);
            break;
        }
        assert!(paused.elapsed() < Duration::from_secs(30), "B never took the board over");
    }
    let takeover = paused.elapsed();
    let lease = c.lease(&pipeline).await.unwrap();
    assert!(lease.contains(&b), "B owns the board now: {lease}");

    c.nodes[0].as_ref().unwrap().signal("CONT");
    // The old owner's queued write and new writes through it go to B; none is made
    // with A's stale claim.
    if late.await.unwrap() == Some(201) {
        acked.push("late".into());
    }
    for i in 0..10 {
        let (node, m) = if i % 2 == 0 {
            (&a, format!("a{i}"))
        } else {
            (&b, format!("b-after{i}"))
        };
        let (status, body) = c
            .post(node, "/deals", &token, &m, json!({"title": m, "pipeline_id": pipeline}))
            .await
            .unwrap();
        assert_eq!(status, 201, "{body}");
        acked.push(m);
    }
    let lease = c.lease(&pipeline).await.unwrap();
    assert!(lease.contains(&b), "B still owns the board: {lease}");
    let log = c.log(&pipeline).await;
    assert_one_sequence(&log, &acked);
    eprintln!("paused owner: B took the board over {takeover:?} after A was paused (lease {LEASE_TTL_MS} ms)");
}

/// A Redis server of the test's own, which it can restart (losing every key, as a
/// Redis that keeps nothing on disk does).
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = OwnRedis { port, child: None };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server on its port and returns once it answers.
    fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (the Redis server's binary is needed by this test)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::yield_now();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[actix_web::test]
async fn when_redis_restarts_under_traffic_writes_go_on_and_viewers_catch_up_by_replay() {
    let mut redis = OwnRedis::start();
    let c = Cluster::start_on(&redis.url()).await;
    let (token, pipeline, _) = owned_board(&c, 0).await;
    let topic = format!("board:{pipeline}");
    let mut on_b = Ws::connect(&c.url(1), &token).await;
    let start = on_b.subscribe(&topic, None).await.last().unwrap()["seq"].as_i64().unwrap();

    let mut acked = vec!["first".to_string()];
    let write = |node: usize, i: usize| {
        let m = format!("r{i}");
        let (client, url, token, pipeline) = (c.client.clone(), c.url(node), token.clone(), pipeline.clone());
        async move {
            match post(&client, &url, "/deals", &token, &m, json!({"title": m, "pipeline_id": pipeline})).await {
                Some((201, _)) => Some(m),
                other => panic!("{m} through node {node} failed: {other:?}"),
            }
        }
    };
    for i in 0..10 {
        acked.extend(write(2, i).await);
    }
    redis.stop();
    // Without Redis, writes through C still reach the owner it knows, A.
    for i in 10..20 {
        acked.extend(write(2, i).await);
    }
    redis.restart();
    // The owner takes its lease back by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.lease(&pipeline).await.is_none() {
        assert!(Instant::now() < deadline, "the owner did not take its lease back");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let lease = c.lease(&pipeline).await.unwrap();
    assert!(lease.contains(&c.url(0)), "A owns the board again: {lease}");
    for i in 20..30 {
        acked.extend(write(1 + i % 2, i).await);
    }

    // B's viewer missed what was published while Redis was away and gets it by replay.
    let log = c.log(&pipeline).await;
    assert_one_sequence(&log, &acked);
    let last = log.last().unwrap().0;
    let mut frames = Vec::new();
    while follow(start, &frames) < last {
        frames.push(on_b.recv().await);
    }
    for node in 0..3 {
        let res = c.client.get(format!("{}/healthz", c.url(node))).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "node {node} is up");
    }
}
