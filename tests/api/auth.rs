//! Sign-up, login, refresh-token rotation, logout, API keys and membership changes.

use serde_json::json;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends! {
    async fn signing_up_returns_a_session_that_knows_its_user_and_workspace(app) {
        let owner = app.signup("Acme").await;
        let me = app.get("/me", &owner.token).await.expect(200);
        assert_eq!(me.body["kind"], "user");
        assert_eq!(me.body["role"], "owner");
        assert_eq!(me.body["workspace"]["name"], "Acme");
        assert_eq!(me.body["user"]["id"], owner.user_id.as_str());
    }

    async fn signing_up_twice_with_one_email_is_refused(app) {
        let body = json!({"workspace_name": "A", "name": "A", "email": "same@example.test", "password": "correct horse battery"});
        app.anonymous_post("/auth/signup", body.clone()).await.expect(201);
        let again = app.anonymous_post("/auth/signup", body).await.expect(409);
        assert_eq!(again.code(), "already_exists");
    }

    async fn logging_in_with_a_wrong_password_or_unknown_email_gives_the_same_answer(app) {
        app.anonymous_post("/auth/signup", json!({"workspace_name": "A", "name": "A", "email": "ada@example.test", "password": "correct horse battery"})).await.expect(201);
        let wrong = app.anonymous_post("/auth/login", json!({"email": "ada@example.test", "password": "wrong horse battery"})).await.expect(401);
        let unknown = app.anonymous_post("/auth/login", json!({"email": "bob@example.test", "password": "wrong horse battery"})).await.expect(401);
        assert_eq!(wrong.body, unknown.body);
        assert_eq!(wrong.code(), "invalid_credentials");
        let ok = app.anonymous_post("/auth/login", json!({"email": "ADA@example.test", "password": "correct horse battery"})).await.expect(200);
        app.get("/me", ok.body["access_token"].as_str().unwrap()).await.expect(200);
    }

    async fn a_refresh_token_rotates_and_reusing_an_old_one_revokes_the_whole_session(app) {
        let owner = app.signup("Acme").await;
        let first = app.anonymous_post("/auth/refresh", json!({"refresh_token": owner.refresh})).await.expect(200);
        let second = session(&first.body);
        assert_ne!(second.refresh, owner.refresh);
        app.get("/me", &second.token).await.expect(200);
        // The old token again: treated as stolen, the family is revoked.
        let reuse = app.anonymous_post("/auth/refresh", json!({"refresh_token": owner.refresh})).await.expect(401);
        assert_eq!(reuse.code(), "refresh_token_reused");
        let after = app.anonymous_post("/auth/refresh", json!({"refresh_token": second.refresh})).await.expect(401);
        assert_eq!(after.code(), "refresh_token_reused");
    }

    async fn logout_revokes_the_refresh_token(app) {
        let owner = app.signup("Acme").await;
        app.anonymous_post("/auth/logout", json!({"refresh_token": owner.refresh})).await.expect(204);
        app.anonymous_post("/auth/refresh", json!({"refresh_token": owner.refresh})).await.expect(401);
        app.anonymous_post("/auth/logout", json!({"refresh_token": "not-a-token"})).await.expect(401);
    }

    async fn requests_without_valid_credentials_are_refused(app) {
        let r = app.request(awc::http::Method::GET, "/contacts", None, &[], None).await.expect(401);
        assert_eq!(r.code(), "unauthenticated");
        let r = app.get("/contacts", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln").await.expect(401);
        assert_eq!(r.code(), "invalid_credentials");
        let r = app.get("/contacts", "shoal_sk_doesnotexist").await.expect(401);
        assert_eq!(r.code(), "invalid_credentials");
    }

    async fn an_api_key_is_shown_once_stored_hashed_and_limited_to_its_scopes(app) {
        let owner = app.signup("Acme").await;
        let created = app.post("/api-keys", &owner.token, json!({"name": "zapier", "scopes": ["contacts:write", "deals:read"]})).await.expect(201);
        let key = created.body["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("shoal_sk_"));
        let listed = app.get("/api-keys", &owner.token).await.expect(200);
        assert!(!listed.text.contains(&key), "the key is never shown again");
        assert!(listed.body["data"][0]["last_used_at"].is_null());

        app.post("/contacts", &key, json!({"name": "From Zapier"})).await.expect(201);
        app.get("/contacts", &key).await.expect(200);
        app.get("/deals", &key).await.expect(200);
        assert_eq!(app.post("/companies", &key, json!({"name": "Nope"})).await.expect(403).code(), "forbidden");
        app.get("/companies", &key).await.expect(403);
        // Keys cannot manage keys.
        app.post("/api-keys", &key, json!({"name": "x", "scopes": ["contacts:read"]})).await.expect(403);
        let me = app.get("/me", &key).await.expect(200);
        assert_eq!(me.body["kind"], "api_key");
        let listed = app.get("/api-keys", &owner.token).await.expect(200);
        assert!(listed.body["data"][0]["last_used_at"].is_string(), "last use is recorded");

        let audit = app.get("/audit-log?object_type=contact", &owner.token).await.expect(200);
        assert!(audit.body["data"][0]["actor_id"].as_str().unwrap().starts_with("api_key:"));
    }

    async fn a_revoked_api_key_stops_working_at_once(app) {
        let owner = app.signup("Acme").await;
        let created = app.post("/api-keys", &owner.token, json!({"name": "ci", "scopes": ["contacts:read"]})).await.expect(201);
        let key = created.body["key"].as_str().unwrap().to_string();
        app.get("/contacts", &key).await.expect(200);
        app.delete(&format!("/api-keys/{}", created.id()), &owner.token).await.expect(204);
        app.get("/contacts", &key).await.expect(401);
    }

    async fn invalid_scopes_are_refused(app) {
        let owner = app.signup("Acme").await;
        for scopes in [json!([]), json!(["contacts"]), json!(["contacts:admin"]), json!(["api_keys:write"]), json!(["planets:read"])] {
            let r = app.post("/api-keys", &owner.token, json!({"name": "x", "scopes": scopes})).await.expect(422);
            assert_eq!(r.code(), "validation_failed");
        }
    }

    async fn a_removed_member_loses_access_at_once_and_their_records_are_unassigned(app) {
        let owner = app.signup("Acme").await;
        let member = app.member(&owner, "member").await;
        let c = app.post("/contacts", &owner.token, json!({"name": "Owned", "owner_id": member.user_id})).await.expect(201);
        app.get("/contacts", &member.token).await.expect(200);
        app.delete(&format!("/members/{}", member.user_id), &owner.token).await.expect(204);
        assert_eq!(app.get("/contacts", &member.token).await.expect(401).code(), "invalid_credentials");
        app.anonymous_post("/auth/refresh", json!({"refresh_token": member.refresh})).await.expect(401);
        let c = app.get(&format!("/contacts/{}", c.id()), &owner.token).await.expect(200);
        assert!(c.body["owner_id"].is_null());
    }

    async fn a_role_change_takes_effect_on_the_next_request(app) {
        let owner = app.signup("Acme").await;
        let m = app.member(&owner, "viewer").await;
        app.post("/contacts", &m.token, json!({"name": "x"})).await.expect(403);
        app.patch(&format!("/members/{}", m.user_id), &owner.token, json!({"role": "member"})).await.expect(200);
        app.post("/contacts", &m.token, json!({"name": "x"})).await.expect(201);
    }

    async fn the_last_owner_cannot_be_removed_or_demoted_and_only_owners_make_owners(app) {
        let owner = app.signup("Acme").await;
        let admin = app.member(&owner, "admin").await;
        assert_eq!(app.patch(&format!("/members/{}", owner.user_id), &owner.token, json!({"role": "admin"})).await.expect(409).code(), "in_use");
        app.delete(&format!("/members/{}", owner.user_id), &owner.token).await.expect(409);
        app.post("/invitations", &admin.token, json!({"email": "x@example.test", "role": "owner"})).await.expect(403);
        app.post("/invitations", &owner.token, json!({"email": "x@example.test", "role": "owner"})).await.expect(201);
        app.patch(&format!("/members/{}", owner.user_id), &admin.token, json!({"role": "viewer"})).await.expect(403);
        app.patch(&format!("/members/{}", admin.user_id), &owner.token, json!({"role": "owner"})).await.expect(200);
        app.patch(&format!("/members/{}", owner.user_id), &admin.token, json!({"role": "admin"})).await.expect(200);
    }

    async fn someone_invited_joins_only_by_accepting_and_nothing_of_them_is_shown_before(app) {
        let owner = app.signup("Acme").await;
        // Someone with an account of their own elsewhere.
        let email = format!("grace-{}@navy.test", uuid::Uuid::new_v4().simple());
        let grace = session(
            &app.anonymous_post("/auth/signup", json!({"workspace_name": "Navy", "name": "Grace Hopper", "email": email, "password": "correct horse battery"}))
                .await
                .expect(201)
                .body,
        );

        let invited = app.post("/invitations", &owner.token, json!({"email": email.to_uppercase(), "role": "agent"})).await.expect(201);
        assert_eq!((invited.body["email"].as_str(), invited.body["role"].as_str()), (Some(email.as_str()), Some("agent")));
        let token = invited.body["token"].as_str().unwrap().to_string();
        let members = app.get("/members", &owner.token).await.expect(200);
        assert_eq!(members.body["data"].as_array().unwrap().len(), 1, "not a member before accepting");
        let pending = app.get("/invitations", &owner.token).await.expect(200);
        assert_eq!(pending.body["data"][0]["email"], email.as_str());
        assert!(!pending.text.contains("Grace") && !pending.text.contains(&token), "neither their name nor the token: {}", pending.text);

        let joined = app.post("/invitations/accept", &grace.token, json!({"token": token})).await.expect(200);
        assert_eq!(joined.body["workspace_id"], owner.workspace_id.as_str());
        let in_acme = session(&joined.body);
        assert_eq!(app.get("/me", &in_acme.token).await.expect(200).body["role"], "agent");
        let members = app.get("/members", &owner.token).await.expect(200);
        assert!(members.text.contains("Grace Hopper"));
        assert!(app.get("/invitations", &owner.token).await.expect(200).body["data"].as_array().unwrap().is_empty());
        // Their own workspace is still theirs.
        assert_eq!(app.get("/me", &grace.token).await.expect(200).body["workspace"]["name"], "Navy");
        // A token is taken up once.
        assert_eq!(app.post("/invitations/accept", &grace.token, json!({"token": token})).await.expect(404).code(), "not_found");
    }

    async fn an_invitation_is_for_its_address_only_and_a_revoked_one_cannot_be_taken_up(app) {
        let owner = app.signup("Acme").await;
        let stranger = app.signup("Other").await;
        let invited = app.post("/invitations", &owner.token, json!({"email": "ada@acme.test", "role": "member"})).await.expect(201);
        let token = invited.body["token"].as_str().unwrap();
        let r = app.post("/invitations/accept", &stranger.token, json!({"token": token})).await.expect(403);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("another e-mail address"));
        let r = app
            .anonymous_post("/auth/signup", json!({"invitation_token": token, "name": "Eve", "email": "eve@acme.test", "password": "correct horse battery"}))
            .await
            .expect(403);
        assert_eq!(r.code(), "forbidden");

        app.delete(&format!("/invitations/{}", invited.id()), &owner.token).await.expect(204);
        let r = app
            .anonymous_post("/auth/signup", json!({"invitation_token": token, "name": "Ada", "email": "ada@acme.test", "password": "correct horse battery"}))
            .await
            .expect(404);
        assert_eq!(r.code(), "not_found");
        // Inviting the address again replaces the old invitation with a new token.
        let again = app.post("/invitations", &owner.token, json!({"email": "ada@acme.test", "role": "viewer"})).await.expect(201);
        let joined = app
            .anonymous_post("/auth/signup", json!({"invitation_token": again.body["token"], "name": "Ada", "email": "ada@acme.test", "password": "correct horse battery"}))
            .await
            .expect(201);
        assert_eq!(app.get("/me", &session(&joined.body).token).await.expect(200).body["role"], "viewer");
        assert_eq!(app.post("/invitations", &owner.token, json!({"email": "ada@acme.test", "role": "viewer"})).await.expect(409).code(), "already_exists");
    }

    async fn a_removed_member_can_be_invited_back_and_accept_with_their_password(app) {
        let owner = app.signup("Acme").await;
        let m = app.member(&owner, "member").await;
        let email = app.get("/me", &m.token).await.expect(200).body["user"]["email"].as_str().unwrap().to_string();
        app.delete(&format!("/members/{}", m.user_id), &owner.token).await.expect(204);
        let invited = app.post("/invitations", &owner.token, json!({"email": email, "role": "viewer"})).await.expect(201);
        let joined = app
            .anonymous_post("/invitations/accept", json!({"token": invited.body["token"], "email": email, "password": "correct horse battery"}))
            .await
            .expect(200);
        assert_eq!(app.get("/me", &session(&joined.body).token).await.expect(200).body["role"], "viewer");
    }

    async fn a_member_of_two_workspaces_switches_between_them_and_the_session_left_behind_ends(app) {
        let first = app.signup("First").await;
        let second = app.signup("Second").await;
        let m = app.member(&first, "agent").await;
        let email = app.get("/me", &m.token).await.expect(200).body["user"]["email"].as_str().unwrap().to_string();
        let invited = app.post("/invitations", &second.token, json!({"email": email, "role": "viewer"})).await.expect(201);
        app.post("/invitations/accept", &m.token, json!({"token": invited.body["token"]})).await.expect(200);

        let me = app.get("/me", &m.token).await.expect(200).body;
        let names: Vec<&str> = me["workspaces"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["First", "Second"]);
        assert_eq!(me["workspaces"][1]["role"], "viewer");

        // An access token alone does not switch: the session's refresh token must come too.
        let r = app.post("/auth/switch", &m.token, json!({"workspace_id": second.workspace_id})).await.expect(401);
        assert_eq!(r.code(), "invalid_credentials");
        let moved = app
            .post("/auth/switch", &m.token, json!({"workspace_id": second.workspace_id, "refresh_token": m.refresh}))
            .await
            .expect(200);
        let there = session(&moved.body);
        let me = app.get("/me", &there.token).await.expect(200).body;
        assert_eq!((me["workspace"]["id"].as_str().unwrap(), me["role"].as_str().unwrap()), (second.workspace_id.as_str(), "viewer"));
        // The session it came from is over; the new one refreshes.
        assert_eq!(app.get("/me", &m.token).await.expect(401).code(), "invalid_credentials");
        app.anonymous_post("/auth/refresh", json!({"refresh_token": m.refresh})).await.expect(401);
        let renewed = session(&app.anonymous_post("/auth/refresh", json!({"refresh_token": there.refresh})).await.expect(200).body);

        // Only with this session's own current token, to a workspace of one's own, to
        // another than the one it is in, and only as a user.
        let other = app.signup("Other").await;
        let back = json!({"workspace_id": first.workspace_id, "refresh_token": first.refresh});
        assert_eq!(app.post("/auth/switch", &renewed.token, back).await.expect(401).code(), "invalid_credentials");
        let stale = json!({"workspace_id": first.workspace_id, "refresh_token": there.refresh});
        assert_eq!(app.post("/auth/switch", &renewed.token, stale).await.expect(401).code(), "refresh_token_reused");
        let fresh = app.anonymous_post("/auth/login", json!({"email": email, "password": "correct horse battery", "workspace_id": second.workspace_id})).await.expect(200);
        let fresh = session(&fresh.body);
        let elsewhere = app.anonymous_post("/auth/login", json!({"email": email, "password": "correct horse battery"})).await.expect(200);
        let elsewhere = json!({"workspace_id": first.workspace_id, "refresh_token": session(&elsewhere.body).refresh});
        assert_eq!(app.post("/auth/switch", &fresh.token, elsewhere).await.expect(401).code(), "invalid_credentials");
        let r = app.post("/auth/switch", &fresh.token, json!({"workspace_id": other.workspace_id, "refresh_token": fresh.refresh})).await.expect(404);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("not a member"));
        let same = json!({"workspace_id": second.workspace_id, "refresh_token": fresh.refresh});
        assert_eq!(app.post("/auth/switch", &fresh.token, same).await.expect(422).code(), "validation_failed");
        let key = app.post("/api-keys", &first.token, json!({"name": "k", "scopes": ["contacts:read"]})).await.expect(201);
        let key = key.body["key"].as_str().unwrap().to_string();
        app.post("/auth/switch", &key, json!({"workspace_id": second.workspace_id})).await.expect(403);
        assert_eq!(app.post("/auth/switch", &fresh.token, json!({"workspace": "x"})).await.expect(422).code(), "validation_failed");
    }
}
