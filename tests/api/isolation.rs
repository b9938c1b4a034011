//! No endpoint returns or changes another workspace's data, whatever the caller's role.

use awc::http::Method;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_backends;

/// A marker that appears in every record of the victim workspace.
const MARK: &str = "zyxwv";

fn leaks(r: &Response, secrets: &[String]) -> bool {
    let t = r.text.to_lowercase();
    t.contains(MARK) || secrets.iter().any(|s| r.text.contains(s.as_str()))
}

on_both_backends! {
    async fn no_endpoint_returns_or_changes_another_workspaces_data_for_any_role(app) {
        // The victim workspace, with a record of every kind.
        let a = app.signup("Victim").await;
        let (pipeline, stages) = app.pipeline(&a.token).await;
        let company = app.post("/companies", &a.token, json!({"name": "Zyxwv Secret Co"})).await.expect(201).id();
        let contact = app.post("/contacts", &a.token, json!({"name": "Zyxwv Person", "company_id": company, "tags": ["zyxwvtag"]})).await.expect(201).id();
        let lead = app.post("/leads", &a.token, json!({"name": "Zyxwv Lead"})).await.expect(201).id();
        let deal = app.post("/deals", &a.token, json!({"title": "Zyxwv Deal", "pipeline_id": pipeline})).await.expect(201).id();
        let activity = app.post("/activities", &a.token, json!({"kind": "note", "body": "zyxwv note", "contact_id": contact})).await.expect(201).id();
        let team = app.post("/teams", &a.token, json!({"name": "Zyxwv Team"})).await.expect(201).id();
        let field = app.post("/custom-fields", &a.token, json!({"object_type": "contact", "key": "zyxwv", "label": "Zyxwv", "kind": "text"})).await.expect(201).id();
        let tag = app.get("/tags", &a.token).await.body["data"][0]["id"].as_str().unwrap().to_string();
        let key = app.post("/api-keys", &a.token, json!({"name": "Zyxwv key", "scopes": ["contacts:read"]})).await.expect(201).id();
        let audit = app.get("/audit-log?limit=1", &a.token).await.body["data"][0]["id"].as_str().unwrap().to_string();
        let invitation = app.post("/invitations", &a.token, json!({"email": "zyxwv@victim.test", "role": "member"})).await.expect(201).id();
        let policy = app.post("/sla-policies", &a.token, json!({"name": "Zyxwv SLA", "first_response_minutes": 60})).await.expect(201).id();
        let inbox = app.post("/inboxes", &a.token, json!({"name": "Zyxwv Inbox", "channel": "api", "sla_policy_id": policy})).await.expect(201);
        let (inbox, inbox_token) = (inbox.id(), inbox.body["token"].as_str().unwrap().to_string());
        let posted = app.post("/channels/api/messages", &inbox_token, json!({"contact_identifier": "zyxwv", "subject": "Zyxwv case", "text": "zyxwv message"})).await.expect(201);
        let conversation = posted.body["conversation"]["id"].as_str().unwrap().to_string();
        let canned = app.post("/canned-responses", &a.token, json!({"shortcode": "zyxwv", "text": "Zyxwv reply"})).await.expect(201).id();
        let mac = app.post("/macros", &a.token, json!({"name": "Zyxwv macro", "actions": [{"type": "add_note", "value": "zyxwv"}]})).await.expect(201).id();
        let records: Vec<(String, String)> = vec![
            ("/pipelines".into(), pipeline.clone()),
            (format!("/pipelines/{pipeline}/stages"), stages[0].clone()),
            ("/companies".into(), company.clone()),
            ("/contacts".into(), contact.clone()),
            ("/leads".into(), lead.clone()),
            ("/deals".into(), deal.clone()),
            ("/activities".into(), activity.clone()),
            ("/teams".into(), team.clone()),
            ("/custom-fields".into(), field.clone()),
            ("/tags".into(), tag.clone()),
            ("/api-keys".into(), key.clone()),
            ("/members".into(), a.user_id.clone()),
            ("/audit-log".into(), audit.clone()),
            ("/inboxes".into(), inbox.clone()),
            ("/conversations".into(), conversation.clone()),
            ("/canned-responses".into(), canned.clone()),
            ("/macros".into(), mac.clone()),
            ("/sla-policies".into(), policy.clone()),
        ];
        let secrets: Vec<String> = records.iter().map(|(_, id)| id.clone()).chain([a.workspace_id.clone(), invitation.clone(), inbox_token.clone()]).collect();
        let mut versions = Vec::new();
        for (path, id) in &records {
            if path.starts_with("/pipelines/") || path == "/api-keys" || path == "/members" || path == "/audit-log" {
                continue;
            }
            versions.push((path.clone(), id.clone(), app.get(&format!("{path}/{id}"), &a.token).await.expect(200).body["version"].clone()));
        }

        // The intruding workspace, with every role and an all-scopes key.
        let b = app.signup("Intruder").await;
        let mut tokens = vec![b.token.clone()];
        for role in ["admin", "member", "agent", "viewer"] {
            tokens.push(app.member(&b, role).await.token);
        }
        let scopes: Vec<String> = ["contacts", "companies", "leads", "pipelines", "deals", "activities", "tags", "custom_fields", "teams", "members", "audit_log", "imports", "exports", "inboxes", "conversations"]
            .iter().map(|r| format!("{r}:write")).collect();
        tokens.push(app.post("/api-keys", &b.token, json!({"name": "all", "scopes": scopes})).await.expect(201).body["key"].as_str().unwrap().to_string());
        let b_pipeline = app.pipeline(&b.token).await.0;

        for t in &tokens {
            for (path, id) in &records {
                let one = format!("{path}/{id}");
                for r in [
                    app.get(&one, t).await,
                    app.patch(&one, t, json!({"name": "hijacked"})).await,
                    app.delete(&one, t).await,
                ] {
                    assert!(matches!(r.status, 403 | 404 | 405 | 422), "{one}: {} {}", r.status, r.text);
                    assert!(!leaks(&r, &secrets), "{one} leaked: {}", r.text);
                }
            }
            for path in [
                "/contacts", "/companies", "/leads", "/deals", "/activities", "/tags", "/teams", "/custom-fields", "/pipelines",
                "/members", "/invitations", "/api-keys", "/audit-log", "/imports", "/search?q=zyxwv", "/exports?object_type=contact",
                "/exports?object_type=deal", "/me", "/inboxes", "/conversations", "/canned-responses", "/macros", "/sla-policies",
                "/availability", "/search?q=zyxwv&types=message,conversation",
            ] {
                let r = app.get(path, t).await;
                assert!(matches!(r.status, 200 | 403), "{path}: {} {}", r.status, r.text);
                assert!(!leaks(&r, &secrets), "{path} leaked: {}", r.text);
            }
            for (method, path, body) in [
                (Method::GET, format!("/contacts/{contact}/timeline"), None),
                (Method::GET, format!("/pipelines/{pipeline}"), None),
                (Method::GET, format!("/pipelines/{pipeline}/stages"), None),
                (Method::POST, format!("/pipelines/{pipeline}/stages"), Some(json!({"name": "x"}))),
                (Method::POST, format!("/deals/{deal}/move"), Some(json!({"stage_id": stages[1]}))),
                (Method::POST, format!("/leads/{lead}/convert"), Some(json!({}))),
                (Method::POST, "/contacts".to_string(), Some(json!({"name": "x", "company_id": company}))),
                (Method::POST, "/deals".to_string(), Some(json!({"title": "x", "pipeline_id": pipeline}))),
                (Method::POST, "/deals".to_string(), Some(json!({"title": "x", "pipeline_id": b_pipeline, "stage_id": stages[0]}))),
                (Method::POST, "/activities".to_string(), Some(json!({"kind": "note", "deal_id": deal}))),
                (Method::POST, "/teams".to_string(), Some(json!({"name": "x", "member_ids": [a.user_id]}))),
                (Method::PATCH, format!("/members/{}", a.user_id), Some(json!({"role": "viewer"}))),
                (Method::DELETE, format!("/invitations/{invitation}"), None),
                (Method::GET, format!("/conversations/{conversation}/messages"), None),
                (Method::POST, format!("/conversations/{conversation}/messages"), Some(json!({"text": "x"}))),
                (Method::POST, format!("/conversations/{conversation}/read"), None),
                (Method::POST, format!("/inboxes/{inbox}/token"), None),
                (Method::POST, format!("/macros/{mac}/apply"), Some(json!({"conversation_id": conversation}))),
                (Method::POST, format!("/canned-responses/{canned}/render"), Some(json!({"conversation_id": conversation}))),
                (Method::POST, "/conversations".to_string(), Some(json!({"inbox_id": inbox, "contact_id": contact}))),
                (Method::POST, "/inboxes".to_string(), Some(json!({"name": "x", "sla_policy_id": policy}))),
            ] {
                let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
                let r = app.request(method.clone(), &path, Some(t), &[], body).await;
                assert!(matches!(r.status, 403 | 404 | 422), "{method} {path}: {} {}", r.status, r.text);
                assert!(!leaks(&r, &secrets), "{path} leaked: {}", r.text);
            }
        }

        // Nothing of the victim's changed.
        for (path, id, version) in versions {
            let r = app.get(&format!("{path}/{id}"), &a.token).await.expect(200);
            assert_eq!(r.body["version"], version, "{path}/{id} changed");
        }
        let got = app.get(&format!("/pipelines/{pipeline}"), &a.token).await.expect(200);
        assert_eq!(got.body["stages"].as_array().unwrap().len(), 4);
        let members = app.get("/members", &a.token).await.expect(200);
        assert_eq!(members.body["data"].as_array().unwrap().len(), 1);
        assert_eq!(members.body["data"][0]["role"], "owner");
        let keys = app.get("/api-keys", &a.token).await.expect(200);
        assert!(keys.body["data"][0]["revoked_at"].is_null());
        let lead = app.get(&format!("/leads/{lead}"), &a.token).await.expect(200);
        assert_eq!(lead.body["status"], "new");
        let messages = app.get(&format!("/conversations/{conversation}/messages"), &a.token).await.expect(200);
        assert_eq!(messages.body["data"].as_array().unwrap().len(), 1);
        // The inbox's token still works, for its own inbox only.
        app.post("/channels/api/messages", &inbox_token, json!({"contact_identifier": "zyxwv", "text": "still mine"})).await.expect(201);
    }
}
