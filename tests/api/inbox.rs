//! The support inbox: conversations and messages on inbox topics, the API channel,
//! replies and notes, filters, roles and isolation.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

/// An API inbox of the owner's workspace: its id and token.
async fn api_inbox(app: &TestApp, owner: &Session, name: &str) -> (String, String) {
    let r = app
        .post("/inboxes", &owner.token, json!({"name": name, "channel": "api"}))
        .await
        .expect(201);
    let token = r.body["token"].as_str().expect("an API inbox answers its token").to_string();
    assert!(token.starts_with("shoal_inbox_"), "{token}");
    (r.id(), token)
}

/// Posts a customer's message through the API channel.
async fn inbound(app: &TestApp, token: &str, body: Value) -> Response {
    app.post("/channels/api/messages", token, body).await
}

fn events(frames: &[Value]) -> Vec<Value> {
    frames.iter().filter(|f| f["type"] == "event").cloned().collect()
}

/// Events until `n` of them have arrived.
async fn next_events(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let f = ws.recv().await;
        if f["type"] == "event" {
            seen.push(f);
        }
    }
    seen
}

fn seq_kind_id(f: &Value) -> (i64, String, String) {
    (
        f["seq"].as_i64().unwrap(),
        f["kind"].as_str().unwrap().to_string(),
        f["data"]["id"].as_str().unwrap().to_string(),
    )
}

on_both_backends! {
    async fn two_agents_on_one_inbox_see_the_same_messages_in_order_and_one_that_reconnects_gets_exactly_what_it_missed(app) {
        let owner = app.signup("Support").await;
        let ann = app.member(&owner, "agent").await;
        let bob = app.member(&owner, "agent").await;
        let (inbox, token) = api_inbox(&app, &owner, "Website chat").await;
        let topic = format!("inbox:{inbox}");
        let mut wa = app.ws(&ann.token).await;
        let mut wb = app.ws(&bob.token).await;
        let first = wa.subscribe(&topic, None).await;
        assert_eq!(first[0]["type"], "snapshot");
        assert_eq!(first[0]["state"]["conversations"], json!([]));
        wb.subscribe(&topic, None).await;

        // A customer writes; the conversation opens and each message updates it.
        for i in 0..5 {
            inbound(&app, &token, json!({"contact_identifier": "cust-1", "name": "Carla", "text": format!("hello {i}")})).await.expect(201);
        }
        // conversation.created, then per message message.created + conversation.updated.
        let a = next_events(&mut wa, 11).await;
        let b = next_events(&mut wb, 11).await;
        assert_eq!(a.iter().map(seq_kind_id).collect::<Vec<_>>(), b.iter().map(seq_kind_id).collect::<Vec<_>>());
        assert_eq!(a[0]["kind"], "conversation.created");
        assert_eq!(a[1]["kind"], "message.created");
        assert_eq!(a[1]["data"]["record"]["direction"], "incoming");
        assert_eq!(a[1]["data"]["record"]["text"], "hello 0");
        let seqs: Vec<i64> = a.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");

        // Bob drops; 100 messages arrive; he comes back from his last seq.
        let last_b = b.last().unwrap()["seq"].as_i64().unwrap();
        wb.close().await;
        for i in 0..100 {
            inbound(&app, &token, json!({"contact_identifier": "cust-1", "text": format!("more {i}"), "external_id": format!("m-{i}")})).await.expect(201);
        }
        let missed = next_events(&mut wa, 200).await;
        let mut wb = app.ws(&bob.token).await;
        let frames = wb.subscribe(&topic, Some(last_b)).await;
        let replayed = events(&frames);
        assert_eq!(replayed.iter().map(seq_kind_id).collect::<Vec<_>>(), missed.iter().map(seq_kind_id).collect::<Vec<_>>());
        assert_eq!(frames.last().unwrap()["seq"], missed.last().unwrap()["seq"]);

        // A new subscriber's snapshot holds the open conversation as it is now.
        let mut wc = app.ws(&owner.token).await;
        let snap = wc.subscribe(&topic, None).await;
        let convs = snap[0]["state"]["conversations"].as_array().unwrap();
        assert_eq!(convs.len(), 1);
        assert_eq!(snap[0]["state"]["open_total"], 1);
        let listed = app.get(&format!("/conversations/{}/messages?limit=200", convs[0]["id"].as_str().unwrap()), &ann.token).await.expect(200);
        assert_eq!(listed.body["data"].as_array().unwrap().len(), 105);
        assert_eq!(listed.body["data"][0]["text"], "more 99", "newest first");
    }

    async fn the_api_channel_threads_a_customers_messages_matches_contacts_and_takes_each_external_id_once(app) {
        let owner = app.signup("Support").await;
        let (inbox, token) = api_inbox(&app, &owner, "Widget").await;
        let known = app.post("/contacts", &owner.token, json!({"name": "Dora", "emails": ["dora@example.com"]})).await.expect(201).id();

        let first = inbound(&app, &token, json!({"email": "Dora@Example.com", "subject": "Billing", "text": "Invoice?", "external_id": "x1"})).await.expect(201);
        let conv = first.body["conversation"].clone();
        assert_eq!(conv["contact_id"], known.as_str(), "matched by e-mail");
        assert_eq!(conv["inbox_id"], inbox.as_str());
        assert_eq!(conv["subject"], "Billing");
        assert_eq!(conv["status"], "open");
        assert!(conv["number"].as_i64().unwrap() >= 1);
        assert!(conv["waiting_since"].is_string());
        assert_eq!(first.body["duplicate"], false);

        // The same external id again: answered as before, nothing new.
        let again = inbound(&app, &token, json!({"email": "dora@example.com", "text": "Invoice?", "external_id": "x1"})).await.expect(200);
        assert_eq!(again.body["duplicate"], true);
        assert_eq!(again.body["message"]["id"], first.body["message"]["id"]);

        // A second message threads into the same conversation.
        let second = inbound(&app, &token, json!({"email": "dora@example.com", "text": "Hello?", "external_id": "x2"})).await.expect(201);
        assert_eq!(second.body["conversation"]["id"], conv["id"]);
        let conv_id = conv["id"].as_str().unwrap().to_string();
        let msgs = app.get(&format!("/conversations/{conv_id}/messages?sort=created_at"), &owner.token).await.expect(200);
        let texts: Vec<&str> = msgs.body["data"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["Invoice?", "Hello?"]);

        // Resolved, the next message opens a new conversation with the next number.
        app.patch(&format!("/conversations/{conv_id}"), &owner.token, json!({"status": "resolved"})).await.expect(200);
        let third = inbound(&app, &token, json!({"email": "dora@example.com", "text": "One more thing"})).await.expect(201);
        assert_ne!(third.body["conversation"]["id"], conv["id"]);
        assert_eq!(third.body["conversation"]["number"].as_i64().unwrap(), conv["number"].as_i64().unwrap() + 1);

        // An unknown sender becomes a contact, found again by the integrator's id.
        let new = inbound(&app, &token, json!({"contact_identifier": "user-77", "name": "Eve", "text": "Hi"})).await.expect(201);
        let eve = new.body["conversation"]["contact_id"].as_str().unwrap().to_string();
        let contact = app.get(&format!("/contacts/{eve}"), &owner.token).await.expect(200);
        assert_eq!(contact.body["name"], "Eve");
        let later = inbound(&app, &token, json!({"contact_identifier": "user-77", "text": "Still there?"})).await.expect(201);
        assert_eq!(later.body["conversation"]["contact_id"], eve.as_str());
        assert_eq!(later.body["conversation"]["id"], new.body["conversation"]["id"]);

        // Messages are found by search.
        let found = app.get("/search?q=invoice&types=message", &owner.token).await.expect(200);
        assert_eq!(found.body["data"].as_array().unwrap().len(), 1);
    }

    async fn a_reply_ends_the_wait_and_sets_the_first_reply_and_a_note_tells_the_members_it_mentions(app) {
        let owner = app.signup("Support").await;
        let ann = app.member(&owner, "agent").await;
        let bob = app.member(&owner, "agent").await;
        let (_, token) = api_inbox(&app, &owner, "Chat").await;
        let conv = inbound(&app, &token, json!({"contact_identifier": "c1", "text": "Help"})).await.expect(201).body["conversation"].clone();
        let id = conv["id"].as_str().unwrap().to_string();
        let mut bob_ws = app.ws(&bob.token).await;
        bob_ws.subscribe(&format!("user:{}:{}", owner.workspace_id, bob.user_id), None).await;

        let note = app.post(&format!("/conversations/{id}/messages"), &ann.token, json!({"kind": "note", "text": "@bob can you take this?", "mentions": [bob.user_id]})).await.expect(201);
        assert_eq!(note.body["direction"], Value::Null);
        assert_eq!(note.body["author"], format!("user:{}", ann.user_id));
        let told = bob_ws.until("event").await;
        let told = told.last().unwrap();
        assert_eq!(told["kind"], "mentioned");
        assert_eq!(told["data"]["conversation_id"], id.as_str());
        let still = app.get(&format!("/conversations/{id}"), &ann.token).await.expect(200);
        assert!(still.body["waiting_since"].is_string(), "a note is no answer");
        assert_eq!(still.body["first_reply_at"], Value::Null);

        let reply = app.post(&format!("/conversations/{id}/messages"), &ann.token, json!({"text": "On it!"})).await.expect(201);
        assert_eq!(reply.body["direction"], "outgoing");
        let after = app.get(&format!("/conversations/{id}"), &ann.token).await.expect(200);
        assert_eq!(after.body["waiting_since"], Value::Null);
        assert_eq!(after.body["first_reply_at"], reply.body["created_at"]);
        assert_eq!(after.body["last_message_at"], reply.body["created_at"]);

        // Unread counts are each member's: customer messages after their read position.
        inbound(&app, &token, json!({"contact_identifier": "c1", "text": "Thanks, and also…"})).await.expect(201);
        let unread = |body: &Value| body["unread_count"].as_i64().unwrap();
        assert_eq!(unread(&app.get(&format!("/conversations/{id}"), &ann.token).await.expect(200).body), 2);
        let mut ann_ws = app.ws(&ann.token).await;
        ann_ws.subscribe(&format!("user:{}:{}", owner.workspace_id, ann.user_id), None).await;
        let read = app.post(&format!("/conversations/{id}/read"), &ann.token, json!({})).await.expect(200);
        assert_eq!(read.body["conversation_id"], id.as_str());
        let seen = ann_ws.until("event").await;
        assert_eq!(seen.last().unwrap()["kind"], "conversation.read", "the member's other sessions hear of it");
        assert_eq!(unread(&app.get(&format!("/conversations/{id}"), &ann.token).await.expect(200).body), 0);
        let listed = app.get("/conversations", &bob.token).await.expect(200);
        assert_eq!(unread(&listed.body["data"][0]), 2, "bob has read nothing");
        inbound(&app, &token, json!({"contact_identifier": "c1", "text": "Hello again"})).await.expect(201);
        assert_eq!(unread(&app.get(&format!("/conversations/{id}"), &ann.token).await.expect(200).body), 1);

        // Mentions belong to notes only.
        let r = app.post(&format!("/conversations/{id}/messages"), &ann.token, json!({"text": "hi", "mentions": [bob.user_id]})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["mentions"].is_string(), "{}", r.text);
    }

    async fn assigning_and_changing_status_are_their_own_events_and_conversations_filter_by_assignee(app) {
        let owner = app.signup("Support").await;
        let ann = app.member(&owner, "agent").await;
        let (inbox, token) = api_inbox(&app, &owner, "Chat").await;
        let mut ids = Vec::new();
        for c in ["a", "b", "c"] {
            ids.push(inbound(&app, &token, json!({"contact_identifier": c, "text": "Hi"})).await.expect(201).body["conversation"]["id"].as_str().unwrap().to_string());
        }
        let mut ws = app.ws(&ann.token).await;
        ws.subscribe(&format!("inbox:{inbox}"), None).await;
        app.patch(&format!("/conversations/{}", ids[0]), &ann.token, json!({"assignee_id": ann.user_id})).await.expect(200);
        app.patch(&format!("/conversations/{}", ids[1]), &ann.token, json!({"status": "snoozed", "snoozed_until": "2030-01-01T09:00:00Z"})).await.expect(200);
        app.patch(&format!("/conversations/{}", ids[1]), &ann.token, json!({"status": "open"})).await.expect(200);
        let kinds: Vec<String> = next_events(&mut ws, 3).await.iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["conversation.assigned", "conversation.status_changed", "conversation.status_changed"]);
        let reopened = app.get(&format!("/conversations/{}", ids[1]), &ann.token).await.expect(200);
        assert_eq!(reopened.body["snoozed_until"], Value::Null, "opening ends the snooze");

        let mine = app.get("/conversations?assignee=me", &ann.token).await.expect(200);
        assert_eq!(ids_of(&mine.body), vec![ids[0].clone()]);
        let nobodys = app.get("/conversations?assignee=none&sort=created_at", &ann.token).await.expect(200);
        assert_eq!(ids_of(&nobodys.body), vec![ids[1].clone(), ids[2].clone()]);
        let open = app.get(&format!("/conversations?inbox_id={inbox}&status=open&sort=-last_message_at"), &ann.token).await.expect(200);
        assert_eq!(open.body["data"].as_array().unwrap().len(), 3);
        let r = app.get("/conversations?assignee=someone", &ann.token).await.expect(400);
        assert_eq!(r.code(), "invalid_query");
        let r = app.patch(&format!("/conversations/{}", ids[2]), &ann.token, json!({"status": "snoozed"})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["snoozed_until"].is_string(), "{}", r.text);
    }

    async fn agents_work_conversations_but_only_admins_shape_inboxes_and_viewers_only_read(app) {
        let owner = app.signup("Support").await;
        let agent = app.member(&owner, "agent").await;
        let viewer = app.member(&owner, "viewer").await;
        let (inbox, token) = api_inbox(&app, &owner, "Chat").await;
        let conv = inbound(&app, &token, json!({"contact_identifier": "c", "text": "Hi"})).await.expect(201).body["conversation"]["id"].as_str().unwrap().to_string();

        app.post("/inboxes", &agent.token, json!({"name": "Mine"})).await.expect(403);
        app.patch(&format!("/inboxes/{inbox}"), &agent.token, json!({"name": "Renamed"})).await.expect(403);
        app.post(&format!("/inboxes/{inbox}/token"), &agent.token, json!({})).await.expect(403);
        app.delete(&format!("/conversations/{conv}"), &agent.token).await.expect(403);
        app.post(&format!("/conversations/{conv}/messages"), &agent.token, json!({"text": "Hello"})).await.expect(201);
        app.patch(&format!("/conversations/{conv}"), &agent.token, json!({"priority": "high", "tags": ["vip"]})).await.expect(200);

        app.get("/conversations", &viewer.token).await.expect(200);
        app.get(&format!("/inboxes/{inbox}"), &viewer.token).await.expect(200);
        app.post(&format!("/conversations/{conv}/messages"), &viewer.token, json!({"text": "Hello"})).await.expect(403);
        app.patch(&format!("/conversations/{conv}"), &viewer.token, json!({"status": "resolved"})).await.expect(403);

        // Creating an inbox again with the same Idempotency-Key answers the same token
        // (kept sealed, not readable in the store).
        let once = app.post_with("/inboxes", &owner.token, &[("idempotency-key", "inbox-1")], json!({"name": "Once", "channel": "api"})).await.expect(201);
        let again = app.post_with("/inboxes", &owner.token, &[("idempotency-key", "inbox-1")], json!({"name": "Once", "channel": "api"})).await.expect(201);
        assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(again.body["token"], once.body["token"]);
        inbound(&app, once.body["token"].as_str().unwrap(), json!({"contact_identifier": "c", "text": "Hi"})).await.expect(201);

        // A rotated token replaces the old one at once.
        let fresh = app.post(&format!("/inboxes/{inbox}/token"), &owner.token, json!({})).await.expect(200);
        let r = inbound(&app, &token, json!({"contact_identifier": "c", "text": "Hi"})).await.expect(401);
        assert_eq!(r.code(), "invalid_credentials");
        inbound(&app, fresh.body["token"].as_str().unwrap(), json!({"contact_identifier": "c", "text": "Hi"})).await.expect(201);
        // An inbox still holding conversations cannot be deleted; an admin removes them first.
        app.delete(&format!("/inboxes/{inbox}"), &owner.token).await.expect(409);
        app.delete(&format!("/conversations/{conv}"), &owner.token).await.expect(204);
        app.get(&format!("/conversations/{conv}/messages"), &owner.token).await.expect(404);
    }

    async fn another_workspace_sees_nothing_of_an_inbox_and_a_token_posts_only_to_its_own(app) {
        let a = app.signup("A").await;
        let b = app.signup("B").await;
        let (inbox, token) = api_inbox(&app, &a, "Chat").await;
        let conv = inbound(&app, &token, json!({"contact_identifier": "c", "text": "Hi"})).await.expect(201).body["conversation"]["id"].as_str().unwrap().to_string();
        app.get(&format!("/inboxes/{inbox}"), &b.token).await.expect(404);
        app.get(&format!("/conversations/{conv}"), &b.token).await.expect(404);
        app.get(&format!("/conversations/{conv}/messages"), &b.token).await.expect(404);
        app.post(&format!("/conversations/{conv}/messages"), &b.token, json!({"text": "x"})).await.expect(404);
        assert_eq!(app.get("/conversations", &b.token).await.expect(200).body["data"], json!([]));
        let mut ws = app.ws(&b.token).await;
        ws.send(json!({"type": "subscribe", "topic": format!("inbox:{inbox}")})).await;
        let err = ws.until("error").await;
        assert_eq!(err.last().unwrap()["code"], "not_found");
        // A's token cannot be used as B's credential, nor B's access token as an inbox's.
        app.get("/conversations", &token).await.expect(401);
        inbound(&app, &b.token, json!({"contact_identifier": "c", "text": "Hi"})).await.expect(401);
    }

    async fn agents_reply_and_change_conversations_with_commands_on_the_inbox_topic(app) {
        let owner = app.signup("Support").await;
        let agent = app.member(&owner, "agent").await;
        let (inbox, token) = api_inbox(&app, &owner, "Chat").await;
        let (other, _) = api_inbox(&app, &owner, "Other").await;
        let conv = inbound(&app, &token, json!({"contact_identifier": "c", "text": "Hi"})).await.expect(201).body["conversation"]["id"].as_str().unwrap().to_string();
        let topic = format!("inbox:{inbox}");
        let mut ws = app.ws(&agent.token).await;
        ws.subscribe(&topic, None).await;
        ws.send(json!({"type": "command", "id": "r1", "topic": topic, "op": "message.create", "args": {"conversation_id": conv, "text": "Hello from the socket"}})).await;
        // The ack and the events it caused, in whichever order they come.
        let (ack, evs) = ack_and_events(&mut ws, 2).await;
        assert_eq!(evs[0]["kind"], "message.created");
        assert_eq!(evs[0]["cause"], "r1");
        assert_eq!(evs[1]["kind"], "conversation.updated");
        assert_eq!(ack["seq"], evs[1]["seq"], "acked with the seq of its last event on the topic");
        ws.send(json!({"type": "command", "id": "r2", "topic": topic, "op": "conversation.update", "args": {"id": conv, "changes": {"status": "pending"}}})).await;
        let (_, evs) = ack_and_events(&mut ws, 1).await;
        assert_eq!(evs[0]["kind"], "conversation.status_changed");
        assert_eq!(evs[0]["cause"], "r2");
        // A macro, one change; reading, which makes no event on the inbox.
        let mac = app.post("/macros", &owner.token, json!({"name": "Close", "actions": [{"type": "set_status", "value": "resolved"}]})).await.expect(201).id();
        ws.send(json!({"type": "command", "id": "r5", "topic": topic, "op": "conversation.apply_macro", "args": {"id": conv, "macro_id": mac}})).await;
        let (_, evs) = ack_and_events(&mut ws, 1).await;
        assert_eq!(evs[0]["kind"], "conversation.status_changed");
        assert_eq!(evs[0]["data"]["record"]["status"], "resolved");
        ws.send(json!({"type": "command", "id": "r6", "topic": topic, "op": "conversation.read", "args": {"id": conv}})).await;
        let acked = ws.until("ack").await;
        assert_eq!(acked.last().unwrap()["seq"], Value::Null, "its event is on the member's own topic");
        // A conversation of another inbox is not found from this one's topic.
        let other_topic = format!("inbox:{other}");
        ws.send(json!({"type": "command", "id": "r3", "topic": other_topic, "op": "message.create", "args": {"conversation_id": conv, "text": "x"}})).await;
        let nack = ws.until("nack").await;
        assert_eq!(nack.last().unwrap()["code"], "not_found");
        ws.send(json!({"type": "command", "id": "r4", "topic": topic, "op": "inbox.update", "args": {"id": inbox, "changes": {"name": "x"}}})).await;
        let nack = ws.until("nack").await;
        assert_eq!(nack.last().unwrap()["code"], "invalid_body");
    }

    async fn two_agents_replying_to_one_conversation_are_both_told_and_everyone_sees_who_types(app) {
        let owner = app.signup("Support").await;
        let ann = app.member(&owner, "agent").await;
        let bob = app.member(&owner, "agent").await;
        let (inbox, token) = api_inbox(&app, &owner, "Chat").await;
        let conv = inbound(&app, &token, json!({"contact_identifier": "c", "text": "Hi"})).await.expect(201).body["conversation"]["id"].as_str().unwrap().to_string();
        let other = inbound(&app, &token, json!({"contact_identifier": "d", "text": "Hi"})).await.expect(201).body["conversation"]["id"].as_str().unwrap().to_string();
        let topic = format!("inbox:{inbox}");
        let mut wa = app.ws(&ann.token).await;
        let mut wb = app.ws(&bob.token).await;
        wa.subscribe(&topic, None).await;
        wb.subscribe(&topic, None).await;

        wa.send(json!({"type": "presence", "topic": topic, "state": {"conversation_id": conv, "activity": "typing"}})).await;
        let seen = wb.until("presence").await;
        let members = &seen.last().unwrap()["members"];
        assert_eq!(members[0]["user_id"], ann.user_id.as_str());
        assert_eq!(members[0]["state"]["activity"], "typing");

        // Replying to different conversations is no collision; to the same one is.
        wa.send(json!({"type": "presence", "topic": topic, "state": {"conversation_id": conv, "activity": "replying"}})).await;
        wb.send(json!({"type": "presence", "topic": topic, "state": {"conversation_id": other, "activity": "replying"}})).await;
        wb.send(json!({"type": "presence", "topic": topic, "state": {"conversation_id": conv, "activity": "replying"}})).await;
        for ws in [&mut wa, &mut wb] {
            let frames = ws.until("collision").await;
            let c = frames.last().unwrap();
            assert_eq!(c["conversation_id"], conv.as_str());
            let mut who: Vec<&str> = c["replying"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
            who.sort_unstable();
            let mut expected = vec![ann.user_id.as_str(), bob.user_id.as_str()];
            expected.sort_unstable();
            assert_eq!(who, expected);
            assert!(frames.iter().all(|f| f["type"] != "collision" || f["conversation_id"] == conv.as_str()));
        }

        // A presence state on an inbox says which conversation and what is done there.
        wa.send(json!({"type": "presence", "topic": topic, "state": {"conversation_id": conv, "activity": "dancing"}})).await;
        let err = wa.until("error").await;
        assert_eq!(err.last().unwrap()["code"], "invalid_body");
    }

    async fn bad_posts_to_the_api_channel_are_refused_with_a_reason(app) {
        let owner = app.signup("Support").await;
        let (_, token) = api_inbox(&app, &owner, "Chat").await;
        let r = inbound(&app, &token, json!({"text": "who am I?"})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["contact_identifier"].is_string(), "{}", r.text);
        let r = inbound(&app, &token, json!({"email": "not-an-address", "text": "x"})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["email"].is_string(), "{}", r.text);
        let r = inbound(&app, &token, json!({"contact_identifier": "c", "text": "   "})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["text"].is_string(), "{}", r.text);
        inbound(&app, &token, json!({"contact_identifier": "c", "text": "x", "colour": "red"})).await.expect(422);
        inbound(&app, "shoal_inbox_nope", json!({"contact_identifier": "c", "text": "x"})).await.expect(401);
        let r = app.anonymous_post("/channels/api/messages", json!({"contact_identifier": "c", "text": "x"})).await.expect(401);
        assert_eq!(r.code(), "unauthenticated");
        // Only channels the server serves can be chosen.
        let r = app.post("/inboxes", &owner.token, json!({"name": "Mail", "channel": "fax"})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["channel"].is_string(), "{}", r.text);
    }
}

/// The next ack and the `n` events before or after it.
async fn ack_and_events(ws: &mut Ws, n: usize) -> (Value, Vec<Value>) {
    let (mut ack, mut evs) = (None, Vec::new());
    while ack.is_none() || evs.len() < n {
        let f = ws.recv().await;
        match f["type"].as_str() {
            Some("ack") => ack = Some(f),
            Some("event") => evs.push(f),
            _ => panic!("unexpected frame {f}"),
        }
    }
    (ack.unwrap(), evs)
}

fn ids_of(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

on_both_backends! {
    async fn a_macro_applies_as_one_change_and_one_conversation_event_with_its_note_and_filled_in_reply(app) {
        let owner = app.signup("Acme Support").await;
        let agent = app.member(&owner, "agent").await;
        let (inbox, token) = api_inbox(&app, &owner, "Chat").await;
        let conv = inbound(&app, &token, json!({"email": "rita@example.com", "name": "Rita", "text": "Refund please"})).await.expect(201).body["conversation"].clone();
        let id = conv["id"].as_str().unwrap().to_string();
        let canned = app
            .post("/canned-responses", &owner.token, json!({"shortcode": "refund", "text": "Hi {{contact.name}}, {{agent.name}} here from {{workspace.name}}: your refund for #{{conversation.number}} is on its way."}))
            .await
            .expect(201)
            .id();
        let r = app.post("/canned-responses", &owner.token, json!({"shortcode": "Bad Code", "text": "Hi {{contact.age}}"})).await.expect(422);
        let fields = &r.body["error"]["details"]["fields"];
        assert!(fields["shortcode"].is_string() && fields["text"].as_str().unwrap().contains("unknown variable"), "{}", r.text);
        app.post("/canned-responses", &agent.token, json!({"shortcode": "mine", "text": "x"})).await.expect(403);

        let rendered = app.post(&format!("/canned-responses/{canned}/render"), &agent.token, json!({"conversation_id": id})).await.expect(200);
        let number = conv["number"].as_i64().unwrap();
        assert_eq!(rendered.body["text"], format!("Hi Rita, agent here from Acme Support: your refund for #{number} is on its way."));

        let mac = app
            .post(
                "/macros",
                &owner.token,
                json!({"name": "Refund", "actions": [
                    {"type": "set_priority", "value": "high"},
                    {"type": "assign", "value": agent.user_id},
                    {"type": "add_labels", "value": ["refund", "billing"]},
                    {"type": "add_note", "value": "Refund approved by policy 4.2"},
                    {"type": "send_canned_response", "value": canned},
                    {"type": "set_status", "value": "resolved"}
                ]}),
            )
            .await
            .expect(201)
            .id();
        let r = app.post("/macros", &owner.token, json!({"name": "Broken", "actions": [{"type": "explode"}]})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["actions"].as_str().unwrap().contains("type is one of"), "{}", r.text);

        let mut ws = app.ws(&agent.token).await;
        let start = ws.subscribe(&format!("inbox:{inbox}"), None).await.last().unwrap()["seq"].as_i64().unwrap();
        let applied = app.post(&format!("/macros/{mac}/apply"), &agent.token, json!({"conversation_id": id})).await.expect(200);
        let after = &applied.body["conversation"];
        assert_eq!(after["status"], "resolved");
        assert_eq!(after["priority"], "high");
        assert_eq!(after["assignee_id"], agent.user_id.as_str());
        assert_eq!(after["tags"], json!(["refund", "billing"]));
        assert!(after["first_reply_at"].is_string(), "the reply counts as the first reply");
        assert_eq!(after["version"].as_i64().unwrap(), conv["version"].as_i64().unwrap() + 1, "one change");
        let msgs = applied.body["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0]["kind"], "note");
        assert_eq!(msgs[1]["kind"], "message");
        assert_eq!(msgs[1]["text"], rendered.body["text"]);

        let evs = next_events(&mut ws, 3).await;
        let kinds: Vec<&str> = evs.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["message.created", "message.created", "conversation.updated"]);
        assert_eq!(evs[0]["seq"].as_i64().unwrap(), start + 1);
        // Nothing more: the macro's conversation changes were one event.
        app.post(&format!("/conversations/{id}/read"), &agent.token, json!({})).await.expect(200);
        let viewers_next = app.post(&format!("/conversations/{id}/messages"), &agent.token, json!({"kind": "note", "text": "done"})).await.expect(201);
        let next = next_events(&mut ws, 1).await;
        assert_eq!(next[0]["data"]["id"], viewers_next.body["id"]);

        // Based on a stale version, a macro is refused.
        let r = app.post(&format!("/macros/{mac}/apply"), &agent.token, json!({"conversation_id": id, "version": 1})).await.expect(409);
        assert_eq!(r.code(), "version_conflict");
        app.post(&format!("/macros/{mac}/apply"), &agent.token, json!({"conversation_id": mac})).await.expect(422);
    }
}

/// How many of an inbox's conversations each member holds, and how many nobody does.
async fn assignees(app: &TestApp, token: &str, inbox: &str) -> (std::collections::HashMap<String, usize>, usize) {
    let mut per: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut unassigned = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/conversations?inbox_id={inbox}&limit=200");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get(&path, token).await.expect(200);
        for c in page.body["data"].as_array().unwrap() {
            match c["assignee_id"].as_str() {
                Some(a) => *per.entry(a.to_string()).or_default() += 1,
                None => unassigned += 1,
            }
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (per, unassigned),
        }
    }
}

/// The next `availability` frame that satisfies `ok`.
async fn availability_until(ws: &mut Ws, ok: impl Fn(&Value) -> bool) -> Value {
    loop {
        let f = ws.recv().await;
        if f["type"] == "availability" && ok(&f["members"]) {
            return f;
        }
    }
}

on_both_backends! {
    async fn a_member_is_available_as_they_choose_while_connected_and_offline_with_their_last_connection_gone(app) {
        let owner = app.signup("Support").await;
        let ann = app.member(&owner, "agent").await;
        let mut watch = app.ws(&owner.token).await;
        watch.subscribe(&format!("workspace:{}", owner.workspace_id), None).await;
        let status = |body: &Value, user: &str| {
            body["data"].as_array().unwrap().iter().find(|m| m["user_id"] == user).unwrap()["status"].as_str().unwrap().to_string()
        };
        let listed = app.get("/availability", &owner.token).await.expect(200);
        assert_eq!(status(&listed.body, &ann.user_id), "offline", "not connected");

        let first = app.ws(&ann.token).await;
        let second = app.ws(&ann.token).await;
        availability_until(&mut watch, |m| m[&ann.user_id] == "online").await;
        let chose = app.send_json(awc::http::Method::PUT, "/availability", &ann.token, &[], json!({"status": "busy"})).await.expect(200);
        assert_eq!(chose.body["status"], "busy");
        availability_until(&mut watch, |m| m[&ann.user_id] == "busy").await;
        first.close().await;
        assert_eq!(status(&app.get("/availability", &owner.token).await.expect(200).body, &ann.user_id), "busy", "one connection is still open");
        second.close().await;
        availability_until(&mut watch, |m| m.get(&ann.user_id).is_none()).await;
        assert_eq!(status(&app.get("/availability", &owner.token).await.expect(200).body, &ann.user_id), "offline");

        // The choice outlives the connections: back online means back busy.
        let _again = app.ws(&ann.token).await;
        availability_until(&mut watch, |m| m[&ann.user_id] == "busy").await;
        let r = app.send_json(awc::http::Method::PUT, "/availability", &ann.token, &[], json!({"status": "away"})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["status"].is_string());
    }

    async fn round_robin_shares_new_conversations_fairly_among_online_agents_within_their_capacity(app) {
        let owner = app.signup("Support").await;
        let agents = [app.member(&owner, "agent").await, app.member(&owner, "agent").await, app.member(&owner, "agent").await];
        let busy = app.member(&owner, "agent").await;
        let viewer = app.member(&owner, "viewer").await;
        let mut sockets = Vec::new();
        for s in agents.iter().chain([&busy, &viewer]) {
            sockets.push(app.ws(&s.token).await);
        }
        app.send_json(awc::http::Method::PUT, "/availability", &busy.token, &[], json!({"status": "busy"})).await.expect(200);
        let _offline = app.member(&owner, "agent").await;

        // 100 conversations, capacity 40: each of the three online agents gets 33 or 34.
        let r = app.post("/inboxes", &owner.token, json!({"name": "Wide", "channel": "api", "auto_assign": true, "max_open_per_agent": 40})).await.expect(201);
        let (wide, token) = (r.id(), r.body["token"].as_str().unwrap().to_string());
        for i in 0..100 {
            inbound(&app, &token, json!({"contact_identifier": format!("c{i}"), "text": "Hi"})).await.expect(201);
        }
        let (per, unassigned) = assignees(&app, &owner.token, &wide).await;
        assert_eq!(unassigned, 0);
        assert_eq!(per.len(), 3, "only the online agents: {per:?}");
        for a in &agents {
            let n = per[&a.user_id];
            assert!((33..=34).contains(&n), "fair to one: {per:?}");
        }

        // 40 conversations, capacity 10: ten each, and the rest wait for someone.
        let r = app.post("/inboxes", &owner.token, json!({"name": "Narrow", "channel": "api", "auto_assign": true, "max_open_per_agent": 10})).await.expect(201);
        let (narrow, token) = (r.id(), r.body["token"].as_str().unwrap().to_string());
        for i in 0..40 {
            inbound(&app, &token, json!({"contact_identifier": format!("n{i}"), "text": "Hi"})).await.expect(201);
        }
        let (per, unassigned) = assignees(&app, &owner.token, &narrow).await;
        assert_eq!(per.values().copied().collect::<Vec<_>>(), vec![10, 10, 10], "{per:?}");
        assert_eq!(unassigned, 10);

        // An inbox with a team assigns only within it; a new conversation's assignee
        // hears of it on their topic.
        let team = app.post("/teams", &owner.token, json!({"name": "Tier 2", "member_ids": [agents[2].user_id]})).await.expect(201).id();
        let r = app.post("/inboxes", &owner.token, json!({"name": "Tier 2", "channel": "api", "auto_assign": true, "team_id": team})).await.expect(201);
        let token = r.body["token"].as_str().unwrap().to_string();
        let mut personal = app.ws(&agents[2].token).await;
        personal.subscribe(&format!("user:{}:{}", owner.workspace_id, agents[2].user_id), None).await;
        let conv = inbound(&app, &token, json!({"contact_identifier": "t", "text": "Hi"})).await.expect(201).body["conversation"].clone();
        assert_eq!(conv["assignee_id"], agents[2].user_id.as_str());
        assert_eq!(conv["team_id"], team.as_str());
        let told = personal.until("event").await;
        assert_eq!(told.last().unwrap()["kind"], "assigned");
        drop(sockets);
    }
}

on_both_backends! {
    async fn sla_warnings_and_breaches_fire_on_time_once_each_even_across_a_restart(app) {
        let mut app = app;
        let owner = app.signup("Support").await;
        let agent = app.member(&owner, "agent").await;
        let policy = app
            .post("/sla-policies", &owner.token, json!({"name": "Chat", "first_response_minutes": 10, "next_response_minutes": 5, "resolution_minutes": 60, "business_hours_only": false}))
            .await
            .expect(201)
            .id();
        let r = app.post("/inboxes", &owner.token, json!({"name": "Chat", "channel": "api", "sla_policy_id": policy})).await.expect(201);
        let (inbox, token) = (r.id(), r.body["token"].as_str().unwrap().to_string());
        let topic = format!("inbox:{inbox}");
        let conv = inbound(&app, &token, json!({"contact_identifier": "c", "text": "Help!"})).await.expect(201).body["conversation"].clone();
        let id = conv["id"].as_str().unwrap().to_string();
        let opened = chrono::DateTime::parse_from_rfc3339(conv["created_at"].as_str().unwrap()).unwrap().timestamp_millis();
        let due = |field: &str, c: &Value| chrono::DateTime::parse_from_rfc3339(c[field].as_str().unwrap()).unwrap().timestamp_millis();
        assert!((due("first_response_due_at", &conv) - opened - 600_000).abs() < 1000, "{conv}");
        assert!((due("resolution_due_at", &conv) - opened - 3_600_000).abs() < 1000, "{conv}");
        assert_eq!(conv["next_response_due_at"], Value::Null);
        assert_eq!(conv["sla_breached"], false);
        app.patch(&format!("/conversations/{id}"), &owner.token, json!({"assignee_id": agent.user_id})).await.expect(200);

        let mut ws = app.ws(&agent.token).await;
        let start = ws.subscribe(&topic, None).await.last().unwrap()["seq"].as_i64().unwrap();
        let mut mine = app.ws(&agent.token).await;
        mine.subscribe(&format!("user:{}:{}", owner.workspace_id, agent.user_id), None).await;

        // 80 % of ten minutes: the warning, on the inbox and to the assignee.
        app.advance_clock(8 * 60_000 + 5_000, &owner.token).await;
        let warned = ws.until("event").await;
        let warned = warned.last().unwrap();
        assert_eq!(warned["kind"], "sla.warning");
        assert_eq!(warned["data"]["target"], "first_response");
        assert_eq!(warned["data"]["id"], id.as_str());
        let told = mine.until("event").await;
        assert_eq!(told.last().unwrap()["kind"], "sla.warning");

        // The server restarts between the warning and the breach.
        drop((ws, mine));
        app.restart().await;
        app.advance_clock(10 * 60_000 + 5_000, &owner.token).await;
        let mut ws = app.ws(&agent.token).await;
        let mut frames = ws.subscribe(&topic, Some(start)).await;
        while !frames.iter().any(|f| f["kind"] == "sla.breached") {
            frames.push(ws.recv().await);
        }
        let sla: Vec<(String, String)> = frames
            .iter()
            .filter(|f| f["kind"].as_str().is_some_and(|k| k.starts_with("sla.")))
            .map(|f| (f["kind"].as_str().unwrap().to_string(), f["data"]["target"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(sla, [("sla.warning".to_string(), "first_response".to_string()), ("sla.breached".to_string(), "first_response".to_string())], "once each");
        let breached = app.get("/conversations?sla_breached=true", &agent.token).await.expect(200);
        assert_eq!(ids_of(&breached.body), vec![id.clone()]);

        // A reply meets the first response; a customer waiting again starts the next
        // response, which the next reply meets; resolving meets the resolution.
        app.post(&format!("/conversations/{id}/messages"), &agent.token, json!({"text": "Sorry for the wait"})).await.expect(201);
        let c = app.get(&format!("/conversations/{id}"), &agent.token).await.expect(200).body;
        assert_eq!(c["first_response_due_at"], Value::Null);
        inbound(&app, &token, json!({"contact_identifier": "c", "text": "Still broken"})).await.expect(201);
        let c = app.get(&format!("/conversations/{id}"), &agent.token).await.expect(200).body;
        assert!(c["next_response_due_at"].is_string(), "{c}");
        app.post(&format!("/conversations/{id}/messages"), &agent.token, json!({"text": "Fixed now"})).await.expect(201);
        let c = app.get(&format!("/conversations/{id}"), &agent.token).await.expect(200).body;
        assert_eq!(c["next_response_due_at"], Value::Null);
        let c = app.patch(&format!("/conversations/{id}"), &agent.token, json!({"status": "resolved"})).await.expect(200).body;
        assert_eq!(c["resolution_due_at"], Value::Null);
        assert_eq!(c["sla_breached"], true, "a breach stays on record");
    }

    async fn a_snoozed_conversation_opens_again_when_its_snooze_ends(app) {
        let owner = app.signup("Support").await;
        let (inbox, token) = api_inbox(&app, &owner, "Chat").await;
        let id = inbound(&app, &token, json!({"contact_identifier": "c", "text": "Later is fine"})).await.expect(201).body["conversation"]["id"].as_str().unwrap().to_string();
        let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        app.patch(&format!("/conversations/{id}"), &owner.token, json!({"status": "snoozed", "snoozed_until": until})).await.expect(200);
        let mut ws = app.ws(&owner.token).await;
        ws.subscribe(&format!("inbox:{inbox}"), None).await;
        app.advance_clock(3_600_000 + 5_000, &owner.token).await;
        let woke = ws.until("event").await;
        let woke = woke.last().unwrap();
        assert_eq!(woke["kind"], "conversation.status_changed");
        assert_eq!(woke["data"]["record"]["status"], "open");
        assert_eq!(woke["data"]["record"]["snoozed_until"], Value::Null);
        assert_eq!(woke["actor"], "system:timers");
    }

    async fn deadlines_count_only_the_inbox_business_hours(app) {
        let owner = app.signup("Support").await;
        let policy = app.post("/sla-policies", &owner.token, json!({"name": "Office", "first_response_minutes": 120})).await.expect(201).id();
        // Closed every day but one a week, an hour long: two open hours are a week apart.
        let r = app
            .post("/inboxes", &owner.token, json!({"name": "Office", "channel": "api", "sla_policy_id": policy, "time_zone": "Asia/Tokyo", "business_hours": {"mon": [["09:00", "10:00"]]}}))
            .await
            .expect(201);
        let token = r.body["token"].as_str().unwrap().to_string();
        let conv = inbound(&app, &token, json!({"contact_identifier": "c", "text": "Hi"})).await.expect(201).body["conversation"].clone();
        let due = chrono::DateTime::parse_from_rfc3339(conv["first_response_due_at"].as_str().unwrap()).unwrap();
        let local = due.with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap());
        assert_eq!(local.format("%a %H:%M").to_string(), "Mon 10:00", "{conv}");
        let created = chrono::DateTime::parse_from_rfc3339(conv["created_at"].as_str().unwrap()).unwrap();
        assert!(due - created > chrono::Duration::days(7), "two open hours take more than a week");

        let r = app.post("/inboxes", &owner.token, json!({"name": "Bad", "time_zone": "Mars/Olympus", "business_hours": {"mon": [["17:00", "09:00"]]}})).await.expect(422);
        let fields = &r.body["error"]["details"]["fields"];
        assert!(fields["time_zone"].is_string() || fields["business_hours"].is_string(), "{}", r.text);
        let r = app.post("/sla-policies", &owner.token, json!({"name": "Empty"})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["first_response_minutes"].is_string());
    }
}

on_both_backends! {
    async fn html_is_kept_sanitised_attachments_are_described_and_the_channel_reports_delivery(app) {
        let owner = app.signup("Support").await;
        let (inbox, token) = api_inbox(&app, &owner, "Widget").await;
        let posted = inbound(&app, &token, json!({
            "contact_identifier": "c", "text": "See attached",
            "html": "<p>See <b>attached</b><script>steal()</script><img src=x onerror=steal()></p>",
            "attachments": [{"name": "screen.png", "content_type": "image/png", "size": 48213, "url": "https://files.example/screen.png"}]
        }))
        .await
        .expect(201);
        let msg = &posted.body["message"];
        let html = msg["html"].as_str().unwrap();
        assert!(html.contains("<b>attached</b>") && !html.contains("script") && !html.contains("onerror"), "{html}");
        assert_eq!(msg["attachments"][0]["name"], "screen.png");
        assert_eq!(msg["delivery_status"], Value::Null, "incoming");
        let r = inbound(&app, &token, json!({"contact_identifier": "c", "text": "x", "attachments": [{"name": "a", "content_type": "nope", "size": 1}]})).await.expect(422);
        assert!(r.body["error"]["details"]["fields"]["attachments"].is_string(), "{}", r.text);

        let conv = posted.body["conversation"]["id"].as_str().unwrap().to_string();
        let reply = app.post(&format!("/conversations/{conv}/messages"), &owner.token, json!({"text": "Thanks", "html": "<i>Thanks</i><iframe src=x></iframe>"})).await.expect(201);
        assert_eq!(reply.body["html"], "<i>Thanks</i>");
        assert_eq!(reply.body["delivery_status"], "pending", "waiting for the channel");
        let id = reply.id();
        let mut ws = app.ws(&owner.token).await;
        ws.subscribe(&format!("inbox:{inbox}"), None).await;
        let status = |s: &str| json!({"status": s});
        let path = format!("/channels/api/messages/{id}/status");
        let delivered = app.post(&path, &token, status("delivered")).await.expect(200);
        assert_eq!(delivered.body["delivery_status"], "delivered");
        let ev = ws.until("event").await;
        let ev = ev.last().unwrap();
        assert_eq!(ev["kind"], "message.updated");
        assert_eq!(ev["data"]["record"]["delivery_status"], "delivered");
        // Reports only move it forward; an incoming message has none; another inbox's token finds nothing.
        assert_eq!(app.post(&path, &token, status("sent")).await.expect(200).body["delivery_status"], "delivered");
        assert_eq!(app.post(&path, &token, status("failed")).await.expect(200).body["delivery_status"], "delivered");
        assert_eq!(app.post(&path, &token, status("read")).await.expect(200).body["delivery_status"], "read");
        app.post(&format!("/channels/api/messages/{}/status", msg["id"].as_str().unwrap()), &token, status("read")).await.expect(422);
        app.post(&path, &token, status("lost")).await.expect(422);
        let (_, other) = api_inbox(&app, &owner, "Other").await;
        app.post(&path, &other, status("read")).await.expect(404);
        app.post(&path, &owner.token, status("read")).await.expect(401);
    }
}

on_both_backends! {
    async fn many_customers_posting_at_once_each_get_one_conversation_with_their_messages_in_order_numbered_without_gaps(app) {
        let owner = app.signup("Support").await;
        let (inbox, token) = api_inbox(&app, &owner, "Chat").await;
        let (senders, each) = (12, 5);
        let post_all = || {
            let runs = (0..senders).map(|k| {
                let (app, token) = (&app, token.clone());
                async move {
                    let mut answers = Vec::new();
                    for j in 0..each {
                        let body = json!({"contact_identifier": format!("s{k}"), "text": format!("s{k} #{j}"), "external_id": format!("s{k}-{j}")});
                        answers.push(inbound(app, &token, body).await);
                    }
                    answers
                }
            });
            futures_util::future::join_all(runs)
        };
        let answers: Vec<Response> = post_all().await.into_iter().flatten().collect();
        assert!(answers.iter().all(|r| r.status == 201 && r.body["duplicate"] == false));

        let convs = app.get(&format!("/conversations?inbox_id={inbox}&limit=200"), &owner.token).await.expect(200);
        let convs = convs.body["data"].as_array().unwrap().clone();
        assert_eq!(convs.len(), senders, "one conversation per customer");
        let mut numbers: Vec<i64> = convs.iter().map(|c| c["number"].as_i64().unwrap()).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (numbers[0]..numbers[0] + senders as i64).collect::<Vec<_>>(), "numbered without gaps");
        for c in &convs {
            let msgs = app.get(&format!("/conversations/{}/messages?sort=created_at&limit=50", c["id"].as_str().unwrap()), &owner.token).await.expect(200);
            let texts: Vec<String> = msgs.body["data"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
            let k = texts[0].split(' ').next().unwrap().to_string();
            assert_eq!(texts, (0..each).map(|j| format!("{k} #{j}")).collect::<Vec<_>>());
            let contact = app.get(&format!("/contacts/{}", c["contact_id"].as_str().unwrap()), &owner.token).await.expect(200);
            assert_eq!(contact.body["name"], k.as_str());
        }

        // All of it again: every post answered as before, nothing new.
        let again: Vec<Response> = post_all().await.into_iter().flatten().collect();
        assert!(again.iter().all(|r| r.status == 200 && r.body["duplicate"] == true));
        for (a, b) in answers.iter().zip(&again) {
            assert_eq!(a.body["message"]["id"], b.body["message"]["id"]);
        }
        let convs = app.get(&format!("/conversations?inbox_id={inbox}&limit=200"), &owner.token).await.expect(200);
        assert_eq!(convs.body["data"].as_array().unwrap().len(), senders);
    }
}
