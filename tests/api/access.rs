//! Rights on open connections and sessions: a changed role, a removed member, a revoked
//! API key, an expired access token or an ended session takes effect at once, on open
//! WebSockets as on REST requests.

use serde_json::{json, Value};
use shoal::auth::{Claims, TokenSigner};
use shoal::config::{Secret, Settings};

use crate::helpers::*;
use crate::on_both_backends;

/// The close code of a connection whose credential no longer works.
const UNAUTHORIZED: u16 = 4401;

fn close_code(close: &Option<Option<awc::ws::CloseReason>>) -> Option<u16> {
    close.clone().flatten().map(|r| u16::from(r.code))
}

fn error_code(frames: &[Value]) -> Option<&str> {
    frames.iter().find(|f| f["type"] == "error").and_then(|f| f["code"].as_str())
}

on_both_backends! {
    async fn a_member_demoted_to_viewer_has_the_next_command_on_an_open_connection_refused(app) {
        let owner = app.signup("Acme").await;
        let member = app.member(&owner, "member").await;
        let (pipeline, stages) = app.pipeline(&owner.token).await;
        let deal = app.deal(&owner.token, &pipeline, "Big").await;
        let topic = format!("board:{pipeline}");
        let mut ws = app.ws(&member.token).await;
        ws.subscribe(&topic, None).await;
        let move_to = |id: &str, stage: &str| {
            json!({"type": "command", "id": id, "topic": topic, "op": "deal.move", "args": {"id": deal, "stage_id": stage}})
        };
        ws.send(move_to("as-member", &stages[1])).await;
        assert_eq!(ws.until("ack").await.last().unwrap()["id"], "as-member");

        app.patch(&format!("/members/{}", member.user_id), &owner.token, json!({"role": "viewer"})).await.expect(200);
        ws.send(move_to("as-viewer", &stages[2])).await;
        let nack = ws.until("nack").await.pop().unwrap();
        assert_eq!((nack["id"].as_str(), nack["code"].as_str()), (Some("as-viewer"), Some("forbidden")), "{nack}");

        // A viewer still reads the board: the connection and its subscription go on.
        app.post(&format!("/deals/{deal}/move"), &owner.token, json!({"stage_id": stages[3]})).await.expect(200);
        loop {
            let f = ws.recv().await;
            if f["type"] == "event" && f["data"]["record"]["stage_id"] == stages[3].as_str() {
                break;
            }
        }
        let stored = app.get(&format!("/deals/{deal}"), &owner.token).await.expect(200);
        assert_eq!(stored.body["stage_id"], stages[3].as_str(), "the refused move changed nothing");
    }

    async fn a_removed_member_is_disconnected_with_a_close_code_that_says_why(app) {
        let owner = app.signup("Acme").await;
        let member = app.member(&owner, "member").await;
        let (pipeline, _) = app.pipeline(&owner.token).await;
        let mut ws = app.ws(&member.token).await;
        ws.subscribe(&format!("board:{pipeline}"), None).await;

        app.delete(&format!("/members/{}", member.user_id), &owner.token).await.expect(204);

        let (frames, close) = ws.until_closed().await;
        assert_eq!(close_code(&close), Some(UNAUTHORIZED), "{frames:?}");
        assert_eq!(error_code(&frames), Some("invalid_credentials"));
        assert_eq!(app.get("/me", &member.token).await.status, 401);
    }

    async fn a_revoked_api_key_loses_its_open_connection(app) {
        let owner = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&owner.token).await;
        let created = app
            .post("/api-keys", &owner.token, json!({"name": "board feed", "scopes": ["pipelines:read", "deals:read"]}))
            .await
            .expect(201);
        let key = created.body["key"].as_str().unwrap().to_string();
        let mut ws = app.ws(&key).await;
        ws.subscribe(&format!("board:{pipeline}"), None).await;

        app.delete(&format!("/api-keys/{}", created.id()), &owner.token).await.expect(204);

        let (frames, close) = ws.until_closed().await;
        assert_eq!(close_code(&close), Some(UNAUTHORIZED), "{frames:?}");
        assert_eq!(error_code(&frames), Some("invalid_credentials"));
    }

    async fn logout_ends_the_sessions_access_tokens_and_connections_but_not_the_users_other_sessions(app) {
        let s = app.signup("Acme").await;
        let email = app.get("/me", &s.token).await.expect(200).body["user"]["email"].as_str().unwrap().to_string();
        let other = session(
            &app.anonymous_post("/auth/login", json!({"email": email, "password": "correct horse battery"})).await.expect(200).body,
        );
        let mut ws = app.ws(&s.token).await;
        ws.send(json!({"type": "ping"})).await;
        assert_eq!(ws.recv().await["type"], "pong");

        app.anonymous_post("/auth/logout", json!({"refresh_token": s.refresh})).await.expect(204);

        let me = app.get("/me", &s.token).await;
        assert_eq!((me.status, me.code()), (401, "invalid_credentials"), "{}", me.text);
        let (frames, close) = ws.until_closed().await;
        assert_eq!(close_code(&close), Some(UNAUTHORIZED), "{frames:?}");
        app.get("/me", &other.token).await.expect(200);
    }

    async fn a_refresh_token_presented_twice_ends_the_access_tokens_of_its_session(app) {
        let s = app.signup("Acme").await;
        let rotated = session(&app.anonymous_post("/auth/refresh", json!({"refresh_token": s.refresh})).await.expect(200).body);
        app.get("/me", &rotated.token).await.expect(200);

        let reused = app.anonymous_post("/auth/refresh", json!({"refresh_token": s.refresh})).await;
        assert_eq!((reused.status, reused.code()), (401, "refresh_token_reused"), "{}", reused.text);

        for token in [&s.token, &rotated.token] {
            let me = app.get("/me", token).await;
            assert_eq!((me.status, me.code()), (401, "invalid_credentials"), "{}", me.text);
        }
    }
}

/// A server whose token key the test knows, so it can make tokens that expire soon.
async fn app_with_known_key() -> (TestApp, TokenSigner) {
    let secret = "a-test-only-signing-key-of-at-least-32-bytes";
    let settings = Settings {
        jwt_secret: Some(Secret::new(secret)),
        ..test_settings()
    };
    (TestApp::spawn_with(Backend::Sqlite, settings).await, TokenSigner::new(secret))
}

/// `token` again, expiring `secs` seconds from now.
fn expiring_in(signer: &TokenSigner, token: &str, secs: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = signer.verify(token, now).unwrap();
    signer.sign(&Claims { exp: now + secs, ..claims })
}

#[actix_web::test]
async fn an_access_token_that_expires_on_an_open_connection_closes_it_unless_a_fresh_one_was_sent() {
    let (app, signer) = app_with_known_key().await;
    let s = app.signup("Acme").await;
    let (pipeline, _) = app.pipeline(&s.token).await;
    let topic = format!("board:{pipeline}");
    let short = expiring_in(&signer, &s.token, 2);
    let mut expiring = app.ws(&short).await;
    let mut renewed = app.ws(&short).await;
    expiring.subscribe(&topic, None).await;
    renewed.subscribe(&topic, None).await;

    renewed.send(json!({"type": "auth", "token": s.token})).await;
    let ok = renewed.until("authenticated").await.pop().unwrap();
    assert!(ok["expires_at"].is_string(), "{ok}");

    let (frames, close) = expiring.until_closed().await;
    assert_eq!(close_code(&close), Some(UNAUTHORIZED), "{frames:?}");
    assert_eq!(error_code(&frames), Some("token_expired"));

    // The renewed connection outlives the token it opened with.
    let deal = app.deal(&s.token, &pipeline, "After expiry").await;
    loop {
        let f = renewed.recv().await;
        if f["type"] == "event" && f["data"]["id"] == deal.as_str() {
            break;
        }
    }
}

#[actix_web::test]
async fn a_token_of_someone_else_sent_on_a_connection_is_refused_and_changes_nothing() {
    let (app, _) = app_with_known_key().await;
    let owner = app.signup("Acme").await;
    let member = app.member(&owner, "viewer").await;
    let stranger = app.signup("Other").await;
    let mut ws = app.ws(&member.token).await;
    for token in [&owner.token, &stranger.token, &"not a token".to_string()] {
        ws.send(json!({"type": "auth", "token": token})).await;
        let f = ws.recv().await;
        assert_eq!(f["type"], "error", "{f}");
        assert!(matches!(f["code"].as_str(), Some("forbidden" | "invalid_credentials")), "{f}");
    }
    // Still the viewer it was: commands are refused as a viewer's.
    let (pipeline, _) = app.pipeline(&owner.token).await;
    ws.send(json!({"type": "command", "id": "c", "topic": format!("board:{pipeline}"), "op": "deal.create", "args": {"title": "x"}}))
        .await;
    assert_eq!(ws.recv().await["code"], "forbidden");
}

#[actix_web::test]
async fn metrics_answer_only_to_their_token_and_are_off_without_one() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let metrics = |app: &TestApp, token: Option<&'static str>| {
        let app = app.address.clone();
        async move {
            let mut req = awc::Client::new().get(format!("{app}/metrics"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(metrics(&app, None).await, 401);
    assert_eq!(metrics(&app, Some("not-the-metrics-token")).await, 401);
    assert_eq!(metrics(&app, Some(METRICS_TOKEN)).await, 200);

    let off = TestApp::spawn_with(
        Backend::Sqlite,
        Settings {
            metrics_token: None,
            ..test_settings()
        },
    )
    .await;
    let r = off.get("/metrics", METRICS_TOKEN).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("SHOAL_METRICS_TOKEN"));
}
