//! Test harness: every test gets its own server on port 0 and its own fresh store
//! (a temporary SQLite directory, or a new PostgreSQL database).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use awc::http::Method;
use serde_json::{json, Value};
use shoal::config::{Secret, Settings};
use shoal::Application;
use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each test body once per store backend, as `<name>::on_sqlite` and
/// `<name>::on_postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($app: $crate::helpers::TestApp) $body
                #[actix_web::test]
                async fn on_sqlite() {
                    run($crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await).await
                }
                #[actix_web::test]
                async fn on_postgres() {
                    run($crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await).await
                }
            }
        )*
    };
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("SHOAL_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Removes the test's store when the test ends, pass or fail.
enum Cleanup {
    Dir(PathBuf),
    /// A database, and the server's data directory (attachments live there).
    Database(String, PathBuf),
    None,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::None => {}
            Cleanup::Dir(d) => {
                let _ = std::fs::remove_dir_all(d);
            }
            Cleanup::Database(name, dir) => {
                let _ = std::fs::remove_dir_all(&*dir);
                let name = name.clone();
                // Drop runs inside the test's runtime; a separate thread with its own
                // runtime can block on the cleanup.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    rt.block_on(async {
                        let mut c = sqlx::PgConnection::connect(&postgres_admin_url()).await.ok()?;
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut c)
                            .await
                            .ok()
                    })
                })
                .join();
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    /// Stops the in-process server (none for a server in another process).
    server: Option<(actix_web::dev::ServerHandle, actix_web::rt::task::JoinHandle<anyhow::Result<()>>)>,
    pub client: awc::Client,
    /// What the server was started with, so a second node can share its store.
    pub settings: Settings,
    _cleanup: Cleanup,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Response {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", self.text))
            .to_string()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub refresh: String,
    pub user_id: String,
    pub workspace_id: String,
}

async fn start(
    settings: Settings,
) -> (
    String,
    actix_web::dev::ServerHandle,
    actix_web::rt::task::JoinHandle<anyhow::Result<()>>,
) {
    let app = Application::build(settings).await.expect("the application starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let running = actix_web::rt::spawn(app.run_until_stopped());
    (address, handle, running)
}

/// The token test servers ask for on `/metrics`.
pub const METRICS_TOKEN: &str = "test-only-metrics-token";

pub fn test_settings() -> Settings {
    Settings {
        metrics_token: Some(Secret::new(METRICS_TOKEN)),
        port: 0,
        http_workers: 1,
        database_max_connections: 5,
        // Cheap hashes keep the suite fast; production uses the defaults.
        argon2_memory_kib: 64,
        argon2_iterations: 1,
        ..Settings::default()
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, test_settings()).await
    }

    pub async fn spawn_with(backend: Backend, mut settings: Settings) -> TestApp {
        let cleanup = match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("shoal-test-{}", uuid::Uuid::new_v4().simple()));
                settings.data_dir = dir.clone();
                Cleanup::Dir(dir)
            }
            Backend::Postgres => {
                let name = format!("shoal_test_{}", uuid::Uuid::new_v4().simple());
                let admin = postgres_admin_url();
                let mut c = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL must be reachable at {admin} for the test suite: {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut c)
                    .await
                    .expect("create the test database");
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin.clone());
                settings.database_url = Some(Secret::new(format!("{base}/{name}")));
                // The store is PostgreSQL, but files (mail attachments) still go under
                // the data directory: one of the test's own, removed with it.
                let dir = std::env::temp_dir().join(format!("shoal-test-{}", uuid::Uuid::new_v4().simple()));
                settings.data_dir = dir.clone();
                Cleanup::Database(name, dir)
            }
        };
        Self::launch(settings, cleanup).await
    }

    async fn launch(settings: Settings, cleanup: Cleanup) -> TestApp {
        let (address, handle, running) = start(settings.clone()).await;
        let client = awc::Client::builder().timeout(std::time::Duration::from_secs(60)).finish();
        TestApp {
            address,
            server: Some((handle, running)),
            client,
            settings,
            _cleanup: cleanup,
        }
    }

    /// A client of a server already running at `address` (a `shoal` process).
    pub fn remote(address: &str) -> TestApp {
        TestApp {
            address: address.to_string(),
            server: None,
            client: awc::Client::builder().timeout(std::time::Duration::from_secs(60)).finish(),
            settings: test_settings(),
            _cleanup: Cleanup::None,
        }
    }

    /// Stops the server (draining requests, closing the store) and starts it again on
    /// the same store, as an operator's restart would.
    pub async fn restart(&mut self) {
        if let Some((handle, running)) = self.server.take() {
            handle.stop(true).await;
            running.await.expect("the server task ends").expect("the server stops cleanly");
        }
        let (address, handle, running) = start(self.settings.clone()).await;
        self.address = address;
        self.server = Some((handle, running));
    }

    /// Moves the server's clock forward by `ms`, so timers due by then fire.
    pub async fn advance_clock(&self, ms: i64, token: &str) {
        self.post("/_faults/clock", token, json!({"advance_ms": ms})).await.expect(200);
    }

    /// Another server with other settings (such as another way to the same store).
    pub async fn node_with(&self, settings: Settings) -> TestApp {
        Self::launch(settings, Cleanup::None).await
    }

    /// Another server on the same store, as a restarted or second node would be.
    pub async fn another_node(&self) -> TestApp {
        self.node_with(self.settings.clone()).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Response {
        let url = if path.starts_with('/')
            && !path.starts_with("/api/")
            && path != "/metrics"
            && path != "/healthz"
            && path != "/readyz"
            && !path.starts_with("/docs")
        {
            format!("{}/api/v1{path}", self.address)
        } else {
            format!("{}{path}", self.address)
        };
        let mut req = self.client.request(method, &url);
        if let Some(t) = token {
            req = req.insert_header(("authorization", format!("Bearer {t}")));
        }
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
        }
        let mut res = match body {
            Some((ct, bytes)) => req.insert_header(("content-type", ct)).send_body(bytes).await,
            None => req.send().await,
        }
        .unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
        let bytes = res.body().limit(64 * 1024 * 1024).await.expect("read the response body");
        let text = String::from_utf8_lossy(&bytes).to_string();
        Response {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), &[], None).await
    }

    /// A JSON request with a bearer token and extra headers.
    pub async fn send_json(&self, method: Method, path: &str, token: &str, headers: &[(&str, &str)], body: Value) -> Response {
        self.request(
            method,
            path,
            Some(token),
            headers,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.send_json(Method::POST, path, token, &[], body).await
    }

    pub async fn post_with(&self, path: &str, token: &str, headers: &[(&str, &str)], body: Value) -> Response {
        self.send_json(Method::POST, path, token, headers, body).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Response {
        self.send_json(Method::PATCH, path, token, &[], body).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.request(Method::DELETE, path, Some(token), &[], None).await
    }

    pub async fn anonymous_post(&self, path: &str, body: Value) -> Response {
        self.request(
            Method::POST,
            path,
            None,
            &[],
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    /// Signs up a new workspace and returns its owner's session.
    pub async fn signup(&self, workspace: &str) -> Session {
        let email = format!(
            "owner-{}@{}.test",
            uuid::Uuid::new_v4().simple(),
            workspace.to_lowercase().replace(' ', "-")
        );
        let r = self
            .anonymous_post(
                "/auth/signup",
                json!({"workspace_name": workspace, "name": "Owner", "email": email, "password": "correct horse battery"}),
            )
            .await
            .expect(201);
        session(&r.body)
    }

    /// Invites a new member with `role` to the owner's workspace; they sign up with the
    /// invitation. Returns their session.
    pub async fn member(&self, owner: &Session, role: &str) -> Session {
        let email = format!("{role}-{}@example.test", uuid::Uuid::new_v4().simple());
        let invitation = self
            .post("/invitations", &owner.token, json!({"email": email, "role": role}))
            .await
            .expect(201);
        let r = self
            .anonymous_post(
                "/auth/signup",
                json!({"invitation_token": invitation.body["token"], "name": role, "email": email, "password": "correct horse battery"}),
            )
            .await
            .expect(201);
        session(&r.body)
    }

    /// Creates a pipeline with three open stages and a won stage; returns (pipeline, stage ids).
    pub async fn pipeline(&self, token: &str) -> (String, Vec<String>) {
        let r = self
            .post(
                "/pipelines",
                token,
                json!({"name": "Sales", "stages": [
                    {"name": "Qualified", "probability": 10},
                    {"name": "Proposal", "probability": 40},
                    {"name": "Negotiation", "probability": 70},
                    {"name": "Won", "probability": 100, "kind": "won"}
                ]}),
            )
            .await
            .expect(201);
        let stages = r.body["stages"]
            .as_array()
            .expect("stages")
            .iter()
            .map(|s| s["id"].as_str().expect("id").to_string())
            .collect();
        (r.id(), stages)
    }

    /// Creates a deal titled `title` on `pipeline`'s board; returns its id.
    pub async fn deal(&self, token: &str, pipeline: &str, title: &str) -> String {
        self.post("/deals", token, json!({"title": title, "pipeline_id": pipeline}))
            .await
            .expect(201)
            .id()
    }
}

pub fn session(body: &Value) -> Session {
    let s = |k: &str| body[k].as_str().unwrap_or_else(|| panic!("no {k} in {body}")).to_string();
    Session {
        token: s("access_token"),
        refresh: s("refresh_token"),
        user_id: s("user_id"),
        workspace_id: s("workspace_id"),
    }
}

pub fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// A WebSocket client speaking the real-time protocol.
pub struct Ws {
    framed: actix_codec::Framed<awc::BoxedSocket, awc::ws::Codec>,
}

impl TestApp {
    pub async fn ws(&self, token: &str) -> Ws {
        Ws::connect(&self.address, token).await
    }
}

impl Ws {
    /// A connection to the server at `address` (`http://host:port`).
    pub async fn connect(address: &str, token: &str) -> Ws {
        let url = format!("{}/api/v1/ws", address.replace("http://", "ws://"));
        let client = awc::Client::builder().timeout(std::time::Duration::from_secs(60)).finish();
        let (_, framed) = client
            .ws(url)
            .max_frame_size(16 * 1024 * 1024)
            .bearer_auth(token)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("websocket connect failed: {e}"));
        Ws { framed }
    }
}

impl Ws {
    pub async fn send(&mut self, v: Value) {
        use futures_util::SinkExt;
        self.framed
            .send(awc::ws::Message::Text(v.to_string().into()))
            .await
            .expect("send a frame");
    }

    /// The next JSON frame; fails the test if none arrives within 20 seconds.
    pub async fn recv(&mut self) -> Value {
        use futures_util::{SinkExt, StreamExt};
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(20), self.framed.next())
                .await
                .expect("a frame within 20 s")
                .expect("the socket is open")
                .expect("a valid frame");
            match frame {
                awc::ws::Frame::Text(b) => return serde_json::from_slice(&b).expect("JSON frame"),
                awc::ws::Frame::Ping(p) => self.framed.send(awc::ws::Message::Pong(p)).await.expect("pong"),
                awc::ws::Frame::Close(r) => panic!("closed by the server: {r:?}"),
                _ => {}
            }
        }
    }

    /// The next JSON frame, or `None` once the connection is closed or broken.
    pub async fn try_recv(&mut self) -> Option<Value> {
        use futures_util::{SinkExt, StreamExt};
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(20), self.framed.next())
                .await
                .ok()??
                .ok()?;
            match frame {
                awc::ws::Frame::Text(b) => return serde_json::from_slice(&b).ok(),
                awc::ws::Frame::Ping(p) => self.framed.send(awc::ws::Message::Pong(p)).await.ok()?,
                awc::ws::Frame::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// Frames until one of type `t` (inclusive); returns them all.
    pub async fn until(&mut self, t: &str) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let f = self.recv().await;
            let done = f["type"] == t;
            seen.push(f);
            if done {
                return seen;
            }
        }
    }

    /// Subscribes and returns the frames up to and including `subscribed`.
    pub async fn subscribe(&mut self, topic: &str, since: Option<i64>) -> Vec<Value> {
        let mut m = json!({"type": "subscribe", "topic": topic});
        if let Some(s) = since {
            m["since_seq"] = json!(s);
        }
        self.send(m).await;
        self.until("subscribed").await
    }

    /// Frames until the server closes the connection: the JSON frames before, and the
    /// close frame's reason (`None` when the connection ended without a close frame).
    pub async fn until_closed(&mut self) -> (Vec<Value>, Option<Option<awc::ws::CloseReason>>) {
        use futures_util::{SinkExt, StreamExt};
        let mut seen = Vec::new();
        // One deadline for the whole wait: the server's pings would renew a per-frame one.
        // (An idle connection's expired token is noticed within a 15 s heartbeat.)
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .unwrap_or_else(|_| panic!("the server closes within 30 s; frames so far: {seen:?}"));
            match frame {
                Some(Ok(awc::ws::Frame::Text(b))) => seen.push(serde_json::from_slice(&b).expect("JSON frame")),
                Some(Ok(awc::ws::Frame::Ping(p))) => {
                    let _ = self.framed.send(awc::ws::Message::Pong(p)).await;
                }
                Some(Ok(awc::ws::Frame::Close(r))) => return (seen, Some(r)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return (seen, None),
            }
        }
    }

    /// Sends a Close frame.
    pub async fn send_close(&mut self, reason: Option<awc::ws::CloseReason>) {
        use futures_util::SinkExt;
        self.framed.send(awc::ws::Message::Close(reason)).await.expect("send a close frame");
    }

    pub async fn close(mut self) {
        use futures_util::SinkExt;
        let _ = self.framed.send(awc::ws::Message::Close(None)).await;
    }
}

impl Ws {
    /// Sends raw text, for malformed messages.
    pub async fn framed_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.framed
            .send(awc::ws::Message::Text(text.to_string().into()))
            .await
            .expect("send a frame");
    }
}

/// A TCP proxy in front of a server (PostgreSQL, Redis) that can cut every connection
/// and refuse new ones, as a stopped or unreachable server would.
pub struct Proxy {
    pub port: u16,
    down: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (down, state) = tokio::sync::watch::channel(false);
        actix_web::rt::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *state.borrow() {
                    continue; // dropped: the connection is refused
                }
                let (target, mut state) = (target.clone(), state.clone());
                actix_web::rt::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|d| *d) => {}
                    }
                });
            }
        });
        Proxy { port, down }
    }

    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

/// A `shoal` server process on the test's store.
pub struct Server {
    child: Child,
    pub address: String,
}

impl Server {
    /// Starts the binary on `settings`' store, with more `SHOAL_*` variables in `env`.
    pub fn start(settings: &shoal::config::Settings, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args(["--port", "0"])
            .env_remove("SHOAL_TEST_POSTGRES_URL")
            .env_remove("SHOAL_TEST_REDIS_URL");
        cmd.env("SHOAL_LOG", "warn,shoal=info").env("SHOAL_HTTP_WORKERS", "2");
        cmd.env("SHOAL_ARGON2_MEMORY_KIB", "64").env("SHOAL_ARGON2_ITERATIONS", "1");
        cmd.envs(env.iter().copied());
        // SHOAL_TEST_NODE_LOGS=<filter> shows the nodes' logs at that level.
        if let Some(filter) = std::env::var("SHOAL_TEST_NODE_LOGS").ok().filter(|f| f != "1") {
            cmd.env("SHOAL_LOG", filter);
        }
        match &settings.database_url {
            Some(url) => cmd.env("SHOAL_DATABASE_URL", url.expose()),
            None => cmd.args(["--data-dir", settings.data_dir.to_str().unwrap()]),
        };
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("the server logs before exiting").unwrap();
            if let Some(rest) = line.split("url=http://127.0.0.1:").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep reading the log so the server never blocks on a full pipe; shown with
        // SHOAL_TEST_NODE_LOGS=1 when a test needs looking into.
        let show = std::env::var_os("SHOAL_TEST_NODE_LOGS").is_some();
        let name = port.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if show {
                    eprintln!("[node {name}] {line}");
                }
            }
        });
        Server {
            child,
            address: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn kill9(mut self) {
        self.signal("KILL");
        self.child.wait().unwrap();
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One client's view of the board, built only from the frames it received.
#[derive(Default, Clone)]
pub struct View {
    pub seq: i64,
    pub deals: std::collections::BTreeMap<String, Value>,
}

impl View {
    pub fn apply(&mut self, f: &Value) {
        match f["type"].as_str() {
            Some("snapshot") => {
                self.seq = f["seq"].as_i64().unwrap();
                self.deals = f["state"]["deals"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| (d["id"].as_str().unwrap().to_string(), d.clone()))
                    .collect();
            }
            Some("event") => {
                let seq = f["seq"].as_i64().unwrap();
                assert_eq!(seq, self.seq + 1, "events arrive without gaps: {f}");
                self.seq = seq;
                if f["kind"] == "stage.rebalanced" {
                    for (deal, rank) in f["data"]["ranks"].as_object().unwrap() {
                        self.deals.get_mut(deal).unwrap()["rank"] = rank.clone();
                    }
                } else if f["data"]["object_type"] == "deal" {
                    let id = f["data"]["id"].as_str().unwrap().to_string();
                    if f["kind"].as_str().unwrap().ends_with(".deleted") {
                        self.deals.remove(&id);
                    } else {
                        self.deals.insert(id, f["data"]["record"].clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// Deal ids of a stage in board order.
    pub fn column(&self, stage: &str) -> Vec<String> {
        let mut ds: Vec<&Value> = self.deals.values().filter(|d| d["stage_id"] == stage).collect();
        ds.sort_by(|a, b| a["rank"].as_str().cmp(&b["rank"].as_str()));
        ds.iter().map(|d| d["id"].as_str().unwrap().to_string()).collect()
    }
}

/// Receives one frame and applies it; returns it.
pub async fn pump(ws: &mut Ws, view: &mut View) -> Value {
    let f = ws.recv().await;
    view.apply(&f);
    f
}
