//! Bad input on every endpoint family gets a 4xx with a stable code from the error
//! table: never a 5xx, never a panic, never lost data.

use awc::http::Method;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_backends;

const KNOWN_CODES: &[&str] = &[
    "malformed_json",
    "invalid_body",
    "validation_failed",
    "unsupported_media_type",
    "payload_too_large",
    "invalid_query",
    "unknown_parameter",
    "invalid_cursor",
    "invalid_idempotency_key",
    "unauthenticated",
    "invalid_credentials",
    "token_expired",
    "refresh_token_reused",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "version_conflict",
    "already_exists",
    "in_use",
    "idempotency_key_in_progress",
    "idempotency_key_reused",
];

#[track_caller]
fn assert_clean_4xx(r: &Response, what: &str) {
    assert!((400..500).contains(&r.status), "{what}: status {} body {}", r.status, r.text);
    assert!(KNOWN_CODES.contains(&r.code()), "{what}: unknown error body {}", r.text);
    assert!(r.body["error"]["message"].is_string(), "{what}: {}", r.text);
}

on_both_backends! {
    async fn malformed_mistyped_unknown_and_oversized_bodies_get_a_clear_4xx_everywhere(app) {
        let s = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&s.token).await;
        let contact = app.post("/contacts", &s.token, json!({"name": "Keep me"})).await.expect(201).id();
        let deal = app.post("/deals", &s.token, json!({"title": "Keep", "pipeline_id": pipeline})).await.expect(201).id();
        let lead = app.post("/leads", &s.token, json!({"name": "Lead"})).await.expect(201).id();
        let inbox = app.post("/inboxes", &s.token, json!({"name": "Chat", "channel": "api"})).await.expect(201).id();
        let conversation = app.post("/conversations", &s.token, json!({"inbox_id": inbox, "contact_id": contact})).await.expect(201).id();
        let canned = app.post("/canned-responses", &s.token, json!({"shortcode": "hi", "text": "Hi"})).await.expect(201).id();
        let mac = app.post("/macros", &s.token, json!({"name": "Close", "actions": [{"type": "set_status", "value": "resolved"}]})).await.expect(201).id();
        let endpoints: Vec<(Method, String)> = vec![
            (Method::POST, "/contacts".into()), (Method::POST, "/companies".into()), (Method::POST, "/leads".into()),
            (Method::POST, "/deals".into()), (Method::POST, "/activities".into()), (Method::POST, "/tags".into()),
            (Method::POST, "/teams".into()), (Method::POST, "/custom-fields".into()), (Method::POST, "/pipelines".into()),
            (Method::POST, format!("/pipelines/{pipeline}/stages")), (Method::POST, format!("/deals/{deal}/move")),
            (Method::POST, format!("/leads/{lead}/convert")), (Method::POST, "/invitations".into()), (Method::POST, "/api-keys".into()),
            (Method::POST, "/auth/signup".into()), (Method::POST, "/auth/login".into()), (Method::POST, "/auth/refresh".into()),
            (Method::POST, "/auth/logout".into()),
            (Method::PATCH, format!("/contacts/{contact}")), (Method::PATCH, format!("/deals/{deal}")),
            (Method::PATCH, format!("/pipelines/{pipeline}")), (Method::PATCH, format!("/pipelines/{pipeline}/stages/{}", stages[0])),
            (Method::PATCH, format!("/members/{}", s.user_id)), (Method::PATCH, format!("/leads/{lead}")),
            (Method::POST, "/inboxes".into()), (Method::PATCH, format!("/inboxes/{inbox}")), (Method::POST, "/conversations".into()),
            (Method::PATCH, format!("/conversations/{conversation}")), (Method::POST, format!("/conversations/{conversation}/messages")),
            (Method::POST, "/canned-responses".into()), (Method::POST, format!("/canned-responses/{canned}/render")),
            (Method::POST, "/macros".into()), (Method::POST, format!("/macros/{mac}/apply")), (Method::POST, "/sla-policies".into()),
            (Method::POST, "/channels/api/messages".into()), (Method::PUT, "/availability".into()),
        ];
        let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
        let bodies: Vec<(&str, &str, Vec<u8>, Option<&str>)> = vec![
            ("malformed", "application/json", b"{bad".to_vec(), Some("malformed_json")),
            ("empty", "application/json", Vec::new(), Some("malformed_json")),
            ("an array", "application/json", b"[1,2]".to_vec(), Some("invalid_body")),
            ("a string", "application/json", b"\"x\"".to_vec(), Some("invalid_body")),
            ("null", "application/json", b"null".to_vec(), Some("invalid_body")),
            ("wrong types", "application/json", br#"{"name": 12, "title": [], "email": 5, "amount": "lots", "role": 3, "stage_id": 9, "password": 1}"#.to_vec(), None),
            ("unknown fields", "application/json", br#"{"zzz_unknown": 1}"#.to_vec(), None),
            ("deep nesting", "application/json", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(), None),
            ("invalid utf-8", "application/json", b"{\"name\": \"\xff\xfe\"}".to_vec(), Some("malformed_json")),
            ("oversized", "application/json", huge.into_bytes(), Some("payload_too_large")),
            ("form data", "application/x-www-form-urlencoded", b"name=x".to_vec(), Some("unsupported_media_type")),
            ("no content type", "", b"{}".to_vec(), Some("unsupported_media_type")),
        ];
        for (method, path) in &endpoints {
            for (what, ct, body, code) in &bodies {
                let anon = path.starts_with("/auth/");
                let token = if anon { None } else { Some(s.token.as_str()) };
                let r = if ct.is_empty() {
                    app.request(method.clone(), path, token, &[], None).await
                } else {
                    app.request(method.clone(), path, token, &[], Some((ct, body.clone()))).await
                };
                let label = format!("{method} {path} with {what}");
                assert_clean_4xx(&r, &label);
                if let Some(code) = code {
                    assert_eq!(r.code(), *code, "{label}: {}", r.text);
                }
            }
        }
        // Nothing was created, changed or lost.
        assert_eq!(ids(&app.get("/contacts", &s.token).await.body), vec![contact.clone()]);
        assert_eq!(app.get(&format!("/contacts/{contact}"), &s.token).await.body["version"], 1);
        assert_eq!(app.get(&format!("/deals/{deal}"), &s.token).await.body["version"], 1);
        assert_eq!(ids(&app.get("/leads", &s.token).await.body).len(), 1);
        assert_eq!(app.get(&format!("/conversations/{conversation}"), &s.token).await.body["version"], 1);
        assert_eq!(ids(&app.get(&format!("/conversations/{conversation}/messages"), &s.token).await.body).len(), 0);
    }

    async fn invalid_field_values_name_the_field_and_the_problem(app) {
        let s = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&s.token).await;
        for (path, body, field) in [
            ("/contacts", json!({"name": "x", "emails": ["not-an-email"]}), "emails"),
            ("/contacts", json!({"name": "x", "phones": ["call me"]}), "phones"),
            ("/contacts", json!({"name": "   "}), "name"),
            ("/contacts", json!({"name": "x", "company_id": "nope"}), "company_id"),
            ("/contacts", json!({"name": "x", "company_id": uuid::Uuid::new_v4().to_string()}), "company_id"),
            ("/contacts", json!({"name": "x", "owner_id": uuid::Uuid::new_v4().to_string()}), "owner_id"),
            ("/contacts", json!({"name": "x", "tags": ["a;b"]}), "tags"),
            ("/companies", json!({"name": "x", "domain": "not a domain"}), "domain"),
            ("/companies", json!({"name": "x", "size": "huge"}), "size"),
            ("/deals", json!({"title": "x", "pipeline_id": pipeline, "stage_id": uuid::Uuid::new_v4().to_string()}), "stage_id"),
            ("/deals", json!({"title": "x", "pipeline_id": pipeline, "amount": -5, "currency": "EUR"}), "amount"),
            ("/deals", json!({"title": "x", "pipeline_id": pipeline, "amount": 5, "currency": "EURO"}), "currency"),
            ("/deals", json!({"title": "x", "pipeline_id": pipeline, "expected_close_date": "2026-02-30"}), "expected_close_date"),
            ("/deals", json!({"title": "x", "pipeline_id": pipeline, "rank": "a"}), "rank"),
            ("/deals", json!({"title": "x"}), "pipeline_id"),
            ("/activities", json!({"kind": "fax", "contact_id": null}), "kind"),
            ("/activities", json!({"kind": "call", "occurred_at": "yesterday"}), "occurred_at"),
            ("/leads", json!({"name": "x", "status": "hot"}), "status"),
            ("/pipelines", json!({"name": "x", "stages": [{"name": "a", "probability": 101}]}), "stages[0].probability"),
            ("/pipelines", json!({"name": "x", "stages": "a,b"}), "stages"),
            ("/invitations", json!({"email": "nope", "role": "admin"}), "email"),
            ("/invitations", json!({"email": "a@b.io", "role": "god"}), "role"),
        ] {
            let r = app.post(path, &s.token, body.clone()).await;
            assert_eq!(r.status, 422, "{path} {body}: {}", r.text);
            assert_eq!(r.code(), "validation_failed");
            assert!(r.body["error"]["details"]["fields"][field].is_string(), "{path} {body}: expected an error on {field}, got {}", r.text);
        }
        let r = app.anonymous_post("/auth/signup", json!({"workspace_name": "x", "name": "x", "email": "a@b.io", "password": "short"})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["password"].is_string());
        let r = app.anonymous_post("/auth/signup", json!({"workspace_name": "x", "name": "x", "email": "a@b.io"})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["password"].is_string(), "{}", r.text);
    }

    async fn bad_query_strings_paths_and_methods_get_a_clear_4xx(app) {
        let s = app.signup("Acme").await;
        for path in [
            "/contacts?limit=0", "/contacts?limit=abc", "/contacts?limit=201", "/contacts?sort=nope", "/contacts?sort=emails",
            "/contacts?cursor=zzz", "/contacts?colour=red", "/deals?amount_gte=abc", "/contacts?created_at_gt=notadate",
            "/contacts?updated_since=yesterday", "/contacts?name_gte=a", "/contacts?tags_in=a", "/search", "/search?q=%20%20",
            "/search?q=x&types=planet", "/search?q=x&limit=1000", "/search?q=x&colour=red", "/exports", "/exports?object_type=tag",
            "/exports?object_type=contact&limit=5", "/audit-log?action=explode", "/contacts?owner_id=not-a-uuid",
            "/contacts/not-a-uuid", "/contacts/00000000-0000-0000-0000-000000000000", "/nothing/here",
        ] {
            let r = app.get(path, &s.token).await;
            assert_clean_4xx(&r, path);
        }
        for (method, path, allow) in [
            (Method::PUT, "/contacts", "GET, POST"),
            (Method::DELETE, "/contacts", "GET, POST"),
            (Method::POST, "/audit-log", "GET"),
            (Method::PUT, "/healthz", "GET"),
            (Method::GET, "/invitations/accept", "POST"),
            (Method::PUT, "/contacts/00000000-0000-0000-0000-000000000000", "DELETE, GET, PATCH"),
        ] {
            let r = app.request(method.clone(), path, Some(&s.token), &[], None).await;
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text);
            assert_eq!(r.code(), "method_not_allowed");
            assert_eq!(r.header("allow").as_deref(), Some(allow), "{method} {path}");
        }
        let r = app.request(Method::PATCH, "/contacts/00000000-0000-0000-0000-000000000000", Some(&s.token), &[("if-match", "banana")], Some(("application/json", b"{}".to_vec()))).await;
        assert_clean_4xx(&r, "bad If-Match");
        let r = app.request(Method::POST, "/imports?object_type=contact", Some(&s.token), &[], Some(("text/csv", b"name,\"unclosed\nx".to_vec()))).await;
        assert_clean_4xx(&r, "malformed csv");
        let r = app.request(Method::POST, "/imports?object_type=contact", Some(&s.token), &[], Some(("text/csv", b"nickname\nx\n".to_vec()))).await;
        assert_clean_4xx(&r, "unknown csv column");
        let r = app.request(Method::POST, "/imports?object_type=contact", Some(&s.token), &[], Some(("application/json", b"{}".to_vec()))).await;
        assert_eq!(r.code(), "unsupported_media_type");
    }

    async fn error_messages_say_how_to_fix_the_input(app) {
        let s = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&s.token).await;
        let field = |r: &Response, name: &str| r.body["error"]["details"]["fields"][name].as_str().unwrap_or_default().to_string();

        let r = app.post("/contacts", &s.token, json!({"name": "x", "email": "a@b.io"})).await.expect(422);
        assert!(field(&r, "email").contains("did you mean 'emails'"), "{}", r.text);
        let r = app.post("/contacts", &s.token, json!({"name": "x", "zodiac": "leo"})).await.expect(422);
        assert!(field(&r, "zodiac").contains("name, emails, phones"), "every field is listed when none is close: {}", r.text);
        let r = app.post("/deals", &s.token, json!({"title": "x", "pipeline_id": pipeline, "amount": 42000.5, "currency": "EUR"})).await.expect(422);
        assert!(field(&r, "amount").contains("4200000 for 42,000.00"), "{}", r.text);

        let r = app.get("/contacts?sort=birthday", &s.token).await.expect(400);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("created_at") && message.contains("name"), "{message}");
        let r = app.post("/api-keys", &s.token, json!({"name": "k", "scopes": ["planets:read"]})).await.expect(422);
        assert!(field(&r, "scopes[0]").contains("contacts"), "the grantable resources are listed: {}", r.text);
    }
}
