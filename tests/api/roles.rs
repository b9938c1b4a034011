//! Role checks on every endpoint family, as a matrix of role × family × read/write.

use awc::http::Method;
use serde_json::json;

use crate::on_both_backends;

/// The permission table as the product defines it: (family, [read, write] for owner,
/// admin, member, agent, viewer).
const MATRIX: &[(&str, [(bool, bool); 5])] = &[
    ("contacts", [(true, true), (true, true), (true, true), (true, true), (true, false)]),
    ("companies", [(true, true), (true, true), (true, true), (true, true), (true, false)]),
    ("leads", [(true, true), (true, true), (true, true), (true, true), (true, false)]),
    ("deals", [(true, true), (true, true), (true, true), (true, false), (true, false)]),
    (
        "activities",
        [(true, true), (true, true), (true, true), (true, true), (true, false)],
    ),
    ("tags", [(true, true), (true, true), (true, true), (true, true), (true, false)]),
    ("teams", [(true, true), (true, true), (true, true), (true, false), (true, false)]),
    (
        "custom-fields",
        [(true, true), (true, true), (true, false), (true, false), (true, false)],
    ),
    (
        "pipelines",
        [(true, true), (true, true), (true, false), (true, false), (true, false)],
    ),
    ("members", [(true, true), (true, true), (true, false), (true, false), (true, false)]),
    (
        "api-keys",
        [(true, true), (true, true), (false, false), (false, false), (false, false)],
    ),
    (
        "audit-log",
        [(true, false), (true, false), (false, false), (false, false), (false, false)],
    ),
    ("imports", [(true, true), (true, true), (true, true), (true, false), (true, false)]),
    (
        "exports",
        [(true, false), (true, false), (false, false), (false, false), (false, false)],
    ),
    ("inboxes", [(true, true), (true, true), (true, false), (true, false), (true, false)]),
    (
        "conversations",
        [(true, true), (true, true), (true, true), (true, true), (true, false)],
    ),
    (
        "canned-responses",
        [(true, true), (true, true), (true, false), (true, false), (true, false)],
    ),
    ("macros", [(true, true), (true, true), (true, false), (true, false), (true, false)]),
    (
        "sla-policies",
        [(true, true), (true, true), (true, false), (true, false), (true, false)],
    ),
];

const ROLES: [&str; 5] = ["owner", "admin", "member", "agent", "viewer"];

on_both_backends! {
    async fn each_role_may_do_exactly_what_the_permission_table_allows(app) {
        let owner = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&owner.token).await;
        let contact = app.post("/contacts", &owner.token, json!({"name": "Target"})).await.expect(201).id();
        let inbox = app.post("/inboxes", &owner.token, json!({"name": "Support"})).await.expect(201).id();
        let mut sessions = vec![owner.clone()];
        for role in &ROLES[1..] {
            sessions.push(app.member(&owner, role).await);
        }
        for (family, expected) in MATRIX {
            for (i, s) in sessions.iter().enumerate() {
                let (may_read, may_write) = expected[i];
                let role = ROLES[i];
                let unique = uuid::Uuid::new_v4().simple().to_string();
                let read_path = match *family {
                    "exports" => "/exports?object_type=contact".to_string(),
                    f => format!("/{f}"),
                };
                let r = app.get(&read_path, &s.token).await;
                assert_eq!(r.status == 200, may_read, "{role} reading {family}: {} {}", r.status, r.text);
                if !may_read {
                    assert_eq!(r.code(), "forbidden");
                }
                let write = match *family {
                    "contacts" | "companies" | "leads" | "teams" | "pipelines" => Some(json!({"name": format!("x{unique}")})),
                    "deals" => Some(json!({"title": "x", "pipeline_id": pipeline})),
                    "activities" => Some(json!({"kind": "note", "contact_id": contact})),
                    "tags" => Some(json!({"name": format!("t{}", &unique[..8])})),
                    "custom-fields" => Some(json!({"object_type": "deal", "key": format!("k{unique}"), "label": "x", "kind": "text"})),
                    "members" => Some(json!({"email": format!("{unique}@example.test"), "role": "viewer"})),
                    "api-keys" => Some(json!({"name": "x", "scopes": ["contacts:read"]})),
                    "inboxes" => Some(json!({"name": "x"})),
                    "sla-policies" => Some(json!({"name": "x", "first_response_minutes": 5})),
                    "conversations" => Some(json!({"inbox_id": inbox, "contact_id": contact})),
                    "canned-responses" => Some(json!({"shortcode": format!("s{}", &unique[..8]), "text": "Hello"})),
                    "macros" => Some(json!({"name": "x", "actions": [{"type": "set_status", "value": "resolved"}]})),
                    _ => None,
                };
                let r = match (family, write) {
                    // Members join by invitation.
                    (&"members", Some(body)) => app.post("/invitations", &s.token, body).await,
                    (_, Some(body)) => app.post(&format!("/{family}"), &s.token, body).await,
                    (&"imports", None) => app.request(Method::POST, "/imports?object_type=contact&wait=true", Some(&s.token), &[], Some(("text/csv", b"name\nImported\n".to_vec()))).await,
                    _ => continue,
                };
                assert_eq!(r.status < 300, may_write, "{role} writing {family}: {} {}", r.status, r.text);
                if !may_write {
                    assert_eq!(r.status, 403, "{role} writing {family}: {}", r.text);
                }
            }
        }
        // Updates and deletes follow the same table: a viewer cannot change what a
        // member can.
        let viewer = &sessions[4];
        let member = &sessions[2];
        assert_eq!(app.patch(&format!("/contacts/{contact}"), &viewer.token, json!({"title": "x"})).await.status, 403);
        assert_eq!(app.delete(&format!("/contacts/{contact}"), &viewer.token).await.status, 403);
        app.patch(&format!("/contacts/{contact}"), &member.token, json!({"title": "x"})).await.expect(200);
        assert_eq!(app.delete(&format!("/pipelines/{pipeline}"), &member.token).await.status, 403);
        // Agents work conversations but only admins remove them.
        let conversation = app.post("/conversations", &owner.token, json!({"inbox_id": inbox, "contact_id": contact})).await.expect(201).id();
        let agent = &sessions[3];
        app.post(&format!("/conversations/{conversation}/messages"), &agent.token, json!({"text": "On it"})).await.expect(201);
        assert_eq!(app.post(&format!("/conversations/{conversation}/messages"), &viewer.token, json!({"text": "x"})).await.status, 403);
        assert_eq!(app.delete(&format!("/conversations/{conversation}"), &agent.token).await.status, 403);
        assert_eq!(app.delete(&format!("/conversations/{conversation}"), &member.token).await.status, 403);
        app.delete(&format!("/conversations/{conversation}"), &sessions[1].token).await.expect(204);
    }
}
