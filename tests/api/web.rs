//! The web app as served: its page, its files and the browser's session cookies; and
//! the app itself in a real browser (the scripts in tests/browser/).

use std::io::Read;

use serde_json::json;

use crate::helpers::*;
use crate::on_both_backends;

/// A GET of a path outside the API, as a browser sends it.
async fn browse(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> (u16, awc::http::header::HeaderMap, Vec<u8>) {
    let mut req = app.client.get(format!("{}{path}", app.address));
    for (k, v) in headers {
        req = req.insert_header((*k, *v));
    }
    let mut res = req.send().await.expect("request");
    let body = res.body().limit(8 * 1024 * 1024).await.expect("body").to_vec();
    (res.status().as_u16(), res.headers().clone(), body)
}

fn header<'a>(h: &'a awc::http::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[actix_web::test]
async fn the_app_page_is_served_at_the_root_and_at_its_own_paths_under_a_strict_content_security_policy() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let html = [("accept", "text/html,application/xhtml+xml")];
    let (status, h, root) = browse(&app, "/", &html).await;
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").starts_with("text/html"));
    assert_eq!(header(&h, "cache-control"), "no-cache");
    let csp = header(&h, "content-security-policy");
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(rule), "{rule} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    let root = String::from_utf8(root).unwrap();
    assert!(
        !root.contains("<script>") && root.contains(r#"<script type="module" src="/assets/"#),
        "no inline script: {root}"
    );

    // A reload of an address inside the app gets the same page; the API's unknown
    // paths, and requests that are not a browser's navigation, still get errors.
    let (status, _, page) = browse(&app, "/boards/some-board", &html).await;
    assert_eq!((status, String::from_utf8(page).unwrap()), (200, root.clone()));
    let (status, _, body) = browse(&app, "/api/v1/no-such-thing", &html).await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"]["code"],
        "not_found"
    );
    let (status, _, _) = browse(&app, "/boards/some-board", &[("accept", "application/json")]).await;
    assert_eq!(status, 404);
}

#[actix_web::test]
async fn the_apps_files_have_content_hashed_paths_long_cache_lives_and_come_compressed_within_150_kib() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (_, _, page) = browse(&app, "/", &[("accept", "text/html")]).await;
    let page = String::from_utf8(page).unwrap();
    let start = page.find("/assets/").expect("assets named in the page");
    let build: String = page[start + 8..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    assert_eq!(build.len(), 12, "{page}");

    // Every file the page names, and every module those import, in turn.
    let mut queue: Vec<String> = vec!["app.js".into(), "style.css".into()];
    let mut seen = Vec::new();
    let mut compressed = 0;
    while let Some(name) = queue.pop() {
        if seen.contains(&name) {
            continue;
        }
        let path = format!("/assets/{build}/{name}");
        let (status, h, plain) = browse(&app, &path, &[]).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&h, "cache-control"), "public, max-age=31536000, immutable");
        assert_eq!(header(&h, "x-content-type-options"), "nosniff");
        let (status, h, gz) = browse(&app, &path, &[("accept-encoding", "gzip, deflate, br")]).await;
        assert_eq!((status, header(&h, "content-encoding")), (200, "gzip"), "{path}");
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut unpacked).unwrap();
        assert_eq!(unpacked, plain, "{path}: the compressed file is the file");
        compressed += gz.len();
        let text = String::from_utf8(plain).unwrap();
        for (i, _) in text.match_indices("from \"./") {
            let rest = &text[i + 8..];
            queue.push(rest[..rest.find('"').unwrap()].to_string());
        }
        seen.push(name);
    }
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(compressed <= 150 * 1024, "{compressed} bytes compressed");

    // Another build's files are not served: a page that old is reloaded, not mixed.
    let (status, _, _) = browse(&app, "/assets/000000000000/app.js", &[]).await;
    assert_eq!(status, 404);
    let (status, _, _) = browse(&app, &format!("/assets/{build}/../Cargo.toml"), &[]).await;
    assert_eq!(status, 404);
}

/// The `Set-Cookie` header of `name` in a response.
fn set_cookie(r: &Response, name: &str) -> String {
    r.headers
        .get_all("set-cookie")
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", r.headers))
        .to_string()
}

fn cookie_value(set: &str) -> &str {
    set.split(';').next().unwrap().split_once('=').unwrap().1
}

on_both_backends! {
    async fn a_browser_session_keeps_its_refresh_token_in_an_http_only_cookie_that_counts_only_with_the_csrf_value(app) {
        let r = app
            .anonymous_post(
                "/auth/signup",
                json!({"workspace_name": "Acme", "name": "Ada", "email": "ada@example.com", "password": "a long enough password", "refresh_cookie": true}),
            )
            .await
            .expect(201);
        assert!(r.body.get("refresh_token").is_none(), "{}", r.body);
        assert!(r.body["access_token"].is_string());
        assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
        let refresh = set_cookie(&r, "shoal_refresh");
        for part in ["HttpOnly", "SameSite=Strict", "Path=/api/v1/auth"] {
            assert!(refresh.contains(part), "{refresh}");
        }
        let csrf = set_cookie(&r, "shoal_csrf");
        assert!(!csrf.contains("HttpOnly") && csrf.contains("SameSite=Strict"), "{csrf}");
        let cookies = format!("shoal_refresh={}; shoal_csrf={}", cookie_value(&refresh), cookie_value(&csrf));

        // The cookie alone, as a forged cross-site request could send it: refused.
        let forged = app
            .request(awc::http::Method::POST, "/auth/refresh", None, &[("cookie", &cookies)], Some(("application/json", b"{}".to_vec())))
            .await;
        assert_eq!((forged.status, forged.body["error"]["code"].as_str()), (403, Some("forbidden")), "{}", forged.text);
        let wrong = [("cookie", cookies.as_str()), ("x-csrf-token", "guessed")];
        let r = app.request(awc::http::Method::POST, "/auth/refresh", None, &wrong, Some(("application/json", b"{}".to_vec()))).await;
        assert_eq!(r.status, 403);

        // With the CSRF value echoed: a new access token, and the refresh token rotated.
        let echoed = [("cookie", cookies.as_str()), ("x-csrf-token", cookie_value(&csrf))];
        let r = app.request(awc::http::Method::POST, "/auth/refresh", None, &echoed, Some(("application/json", b"{}".to_vec()))).await.expect(200);
        assert!(r.body.get("refresh_token").is_none());
        let access = r.body["access_token"].as_str().unwrap().to_string();
        app.get("/me", &access).await.expect(200);
        let rotated = set_cookie(&r, "shoal_refresh");
        assert_ne!(cookie_value(&rotated), cookie_value(&refresh));
        let csrf2 = set_cookie(&r, "shoal_csrf");
        let cookies = format!("shoal_refresh={}; shoal_csrf={}", cookie_value(&rotated), cookie_value(&csrf2));

        // Logging out ends the session and clears both cookies.
        let echoed = [("cookie", cookies.as_str()), ("x-csrf-token", cookie_value(&csrf2))];
        let r = app.request(awc::http::Method::POST, "/auth/logout", None, &echoed, Some(("application/json", b"{}".to_vec()))).await.expect(204);
        for name in ["shoal_refresh", "shoal_csrf"] {
            let cleared = set_cookie(&r, name);
            assert!(cleared.contains("Max-Age=0"), "{cleared}");
        }
        let r = app.get("/me", &access).await;
        assert_eq!(r.status, 401, "{}", r.text);
        let r = app.request(awc::http::Method::POST, "/auth/refresh", None, &echoed, Some(("application/json", b"{}".to_vec()))).await;
        assert_eq!(r.status, 401, "{}", r.text);

        // Without the flag, sessions are as before: the refresh token in the body.
        let r = app.anonymous_post("/auth/login", json!({"email": "ada@example.com", "password": "a long enough password"})).await.expect(200);
        assert!(r.body["refresh_token"].is_string());
        assert!(r.headers.get("set-cookie").is_none());
    }
}

/// One browser script at a time: each drives Chromium processes of its own, and two at
/// once on a small machine would measure the machine, not the app.
static BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `tests/browser/<script>` against a new server on SQLite; fails with its output.
async fn in_chromium(script: &'static str) {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    let url = app.address.clone();
    let path = format!("{}/tests/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = actix_web::rt::task::spawn_blocking(move || {
        let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
        std::process::Command::new("python3")
            .args([path.as_str(), "--url", &url, "--screenshots"])
            .arg(&shots)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    assert!(
        out.status.success(),
        "the browser test {script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[actix_web::test]
async fn in_chromium_a_newcomer_signs_up_and_two_members_work_one_live_board_through_drags_refusals_keys_and_a_network_drop() {
    in_chromium("web_app.py").await;
}

#[actix_web::test]
async fn in_chromium_records_are_listed_searched_edited_through_a_version_conflict_converted_imported_and_exported() {
    in_chromium("records.py").await;
}

#[actix_web::test]
async fn in_chromium_agents_see_customer_messages_arrive_live_and_reply_note_and_triage_from_the_inbox() {
    in_chromium("inbox.py").await;
}

#[actix_web::test]
async fn in_chromium_an_admin_shapes_the_workspace_from_the_settings_screens() {
    in_chromium("settings.py").await;
}
