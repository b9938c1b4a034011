//! The `shoal` command: help, migrations, workspace creation, settings errors, a
//! clean stop on SIGTERM and Ctrl-C, and backups.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::helpers::*;

fn shoal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shoal"));
    // The suite's own variables are not settings of the server.
    c.env_remove("SHOAL_TEST_POSTGRES_URL")
        .env_remove("SHOAL_TEST_REDIS_URL")
        .env("SHOAL_LOG", "info");
    c
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        TempDir(std::env::temp_dir().join(format!("shoal-cli-{}", uuid::Uuid::new_v4().simple())))
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn help_explains_every_command_and_flag() {
    let out = shoal().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "serve",
        "migrate",
        "admin",
        "--config",
        "--host",
        "--port",
        "--database-url",
        "--data-dir",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    // A command's help lists its own flags, not the server's.
    let out = shoal().args(["watch", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("--board") && text.contains("--retries"), "{text}");
    assert!(
        !text.contains("--data-dir") && !text.contains("--database-url"),
        "watch --help lists server flags:\n{text}"
    );
    let out = shoal().args(["admin", "create-workspace", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for word in ["--name", "--email", "--owner-name", "--password-stdin"] {
        assert!(text.contains(word), "create-workspace --help lacks {word}:\n{text}");
    }
}

#[test]
fn migrate_applies_the_schema_to_a_new_store() {
    let dir = TempDir::new();
    let out = shoal().args(["migrate", "--data-dir", dir.arg()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied (sqlite)"));
    assert!(dir.0.join("shoal.db").exists());
}

#[test]
fn an_unknown_setting_stops_start_up_with_a_message_naming_it() {
    let dir = TempDir::new();
    let out = shoal()
        .args(["migrate", "--data-dir", dir.arg()])
        .env("SHOAL_PROT", "9000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SHOAL_PROT"));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("shoal.toml");
    std::fs::write(&file, "port = 1\nverbosity = 3\n").unwrap();
    let out = shoal().args(["migrate", "--config", file.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("verbosity"));
}

#[actix_web::test]
async fn create_workspace_prints_a_generated_password_once_and_it_logs_in() {
    let dir = TempDir::new();
    let out = shoal()
        .args([
            "admin",
            "create-workspace",
            "--name",
            "Initech",
            "--email",
            "Peter@Initech.test",
            "--data-dir",
            dir.arg(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .expect("a printed password")
        .to_string();

    let mut settings = test_settings();
    settings.data_dir = dir.0.clone();
    let app = shoal::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}/api/v1", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    let client = awc::Client::default();
    let mut res = client
        .post(format!("{base}/auth/login"))
        .send_json(&json!({"email": "peter@initech.test", "password": password}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let mut me = client
        .get(format!("{base}/me"))
        .insert_header(("authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["workspace"]["name"], "Initech");
    assert_eq!(me["role"], "owner");
}

#[test]
fn create_workspace_can_take_the_password_from_standard_input() {
    let dir = TempDir::new();
    let mut child = shoal()
        .args([
            "admin",
            "create-workspace",
            "--name",
            "A",
            "--email",
            "a@a.test",
            "--password-stdin",
            "--data-dir",
            dir.arg(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a long enough password\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("password"),
        "a given password is not echoed"
    );
}

/// Starts the server, checks it answers, sends it `signal`, and returns what it logged
/// after.
fn serve_then_signal(signal: &str) -> Vec<String> {
    let dir = TempDir::new();
    let mut child = shoal()
        .args(["--port", "0", "--data-dir", dir.arg()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Read the log until the server says where it listens.
    let port: u16 = loop {
        let line = lines.next().expect("the server logs before exiting").unwrap();
        if line.contains("shoal is listening") {
            let url = line.split("url=http://127.0.0.1:").nth(1).unwrap();
            break url.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"), "{reply}");

    let killed = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    lines.map_while(Result::ok).collect()
}

#[test]
fn the_server_answers_then_stops_cleanly_on_sigterm() {
    let log = serve_then_signal("TERM");
    assert!(log.iter().any(|l| l.contains("shutting down") && l.contains("SIGTERM")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
}

#[test]
fn ctrl_c_drains_the_server_as_sigterm_does() {
    let log = serve_then_signal("INT");
    assert!(log.iter().any(|l| l.contains("shutting down") && l.contains("SIGINT")), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("forced")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:?}");
}

#[actix_web::test]
async fn watch_prints_a_boards_events_as_they_happen() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let s = app.signup("Acme").await;
    let (pipeline, stages) = app.pipeline(&s.token).await;
    let deal = app.deal(&s.token, &pipeline, "Big one").await;
    let mut child = shoal()
        .args(["watch", "--url", &app.address, "--board", &pipeline])
        .env("SHOAL_TOKEN", &s.token)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || rx.recv_timeout(std::time::Duration::from_secs(20)).expect("watch prints a line");
    assert!(next_line().starts_with("snapshot at #"));
    assert!(next_line().starts_with("subscribed to board:"));
    app.post(&format!("/deals/{deal}/move"), &s.token, json!({"stage_id": stages[2]}))
        .await
        .expect(200);
    let line = next_line();
    assert!(line.contains("deal.moved \"Big one\""), "{line}");
    assert!(
        line.contains("in Negotiation") && line.ends_with("by Owner"),
        "stage and member by name: {line}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `shoal watch` with `args`, its lines (stdout and stderr) as they come. Read without
/// blocking the test's thread, which also runs the test's proxy.
fn spawn_watch(address: &str, token: &str, args: &[&str]) -> (std::process::Child, tokio::sync::mpsc::Receiver<String>) {
    let mut child = shoal()
        .args(["watch", "--url", address])
        .args(args)
        .env("SHOAL_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(1024);
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
    }
    (child, rx)
}

/// Lines until one containing `what`; fails the test after 20 s.
async fn line_with(rx: &mut tokio::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let line = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no line with {what:?} within 20 s"));
        if line.contains(what) {
            return line;
        }
    }
}

#[actix_web::test]
async fn watch_says_why_the_server_refused_it_and_exits_non_zero() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let s = app.signup("Acme").await;
    let (pipeline, _) = app.pipeline(&s.token).await;
    let address = app.address.clone();
    let out = actix_web::rt::task::spawn_blocking(move || {
        shoal()
            .args(["watch", "--url", &address, "--board", &pipeline, "--token", "not-a-token"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_credentials:"), "{stderr}");
}

#[actix_web::test]
async fn watch_reconnects_and_resumes_where_it_was_then_gives_up_when_the_server_stays_away() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let s = app.signup("Acme").await;
    let (pipeline, stages) = app.pipeline(&s.token).await;
    let deal = app.deal(&s.token, &pipeline, "Big one").await;
    let proxy = Proxy::start(app.address.trim_start_matches("http://").to_string()).await;
    let (mut child, mut rx) = spawn_watch(
        &format!("http://127.0.0.1:{}", proxy.port),
        &s.token,
        &["--board", &pipeline, "--retries", "2"],
    );
    line_with(&mut rx, "subscribed to board:").await;

    // The connection drops; a move happens meanwhile; the connection comes back.
    proxy.set_down(true);
    line_with(&mut rx, "connection lost").await;
    app.post(&format!("/deals/{deal}/move"), &s.token, json!({"stage_id": stages[1]}))
        .await
        .expect(200);
    proxy.set_down(false);
    let missed = line_with(&mut rx, "deal.moved").await;
    assert!(missed.contains("in Proposal"), "{missed}");
    line_with(&mut rx, "1 missed events replayed").await;

    // Down for good: after its retries it says it gave up and fails.
    proxy.set_down(true);
    line_with(&mut rx, "gave up after 2 attempts").await;
    let status = actix_web::rt::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(!status.success());
}

/// Runs `shoal` with `args` off the test's thread, so the servers it talks to go on.
async fn run_shoal(args: Vec<String>) -> std::process::Output {
    actix_web::rt::task::spawn_blocking(move || shoal().args(&args).output().unwrap())
        .await
        .unwrap()
}

#[actix_web::test]
async fn a_backup_taken_under_write_load_restores_to_a_server_holding_every_write_acknowledged_before_it_began() {
    let dir = TempDir::new();
    let settings = shoal::config::Settings {
        data_dir: dir.0.clone(),
        ..test_settings()
    };
    let server = Server::start(&settings, &[]);
    let api = TestApp::remote(&server.address);
    let s = api.signup("Acme").await;
    let mut before = Vec::new();
    for i in 0..40 {
        before.push(
            api.post("/contacts", &s.token, json!({"name": format!("before {i}")}))
                .await
                .expect(201)
                .id(),
        );
    }

    // Writers keep going while the backup runs.
    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (api, token, stop) = (TestApp::remote(&server.address), s.token.clone(), stop.clone());
            actix_web::rt::spawn(async move {
                let mut n = 0;
                while !stop.get() {
                    api.post("/contacts", &token, json!({"name": format!("during {w}-{n}")}))
                        .await
                        .expect(201);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let backup = dir.0.with_extension("backup.db");
    // `shoal backup|restore <backup> --data-dir <the server's>`.
    let on_store = |command: &str| {
        run_shoal(vec![
            command.into(),
            backup.to_str().unwrap().into(),
            "--data-dir".into(),
            dir.arg().into(),
        ])
    };
    let out = on_store("backup").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stop.set(true);
    let mut during = 0;
    for w in writers {
        during += w.await.unwrap();
    }
    assert!(during > 0, "writes went on during the backup");

    // A restore refuses to replace the store of a running server.
    let out = on_store("restore").await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop it first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.signal("TERM");
    drop(server);

    let out = on_store("restore").await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept as"));
    let _ = std::fs::remove_file(&backup);

    let restored = Server::start(&settings, &[]);
    let api = TestApp::remote(&restored.address);
    let login = api
        .anonymous_post(
            "/auth/login",
            json!({"email": api.get("/me", &s.token).await.body["user"]["email"], "password": "correct horse battery"}),
        )
        .await
        .expect(200);
    let token = session(&login.body).token;
    for id in &before {
        api.get(&format!("/contacts/{id}"), &token).await.expect(200);
    }
    // The restored server takes writes again.
    api.post("/contacts", &token, json!({"name": "after"})).await.expect(201);
}

#[test]
fn a_backup_of_a_postgresql_store_points_to_pg_dump() {
    let out = shoal()
        .args(["backup", "x.db", "--database-url", &postgres_admin_url()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg_dump"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
