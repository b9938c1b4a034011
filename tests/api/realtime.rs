//! Live boards over the WebSocket: ordered fan-out, echoes and acks, resume by
//! since_seq, slow consumers, presence, authorization, and events of REST writes.

use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

fn events(frames: &[Value]) -> Vec<&Value> {
    frames.iter().filter(|f| f["type"] == "event").collect()
}

fn subscribed_seq(frames: &[Value]) -> i64 {
    frames.last().unwrap()["seq"].as_i64().unwrap()
}

on_both_backends! {
    async fn a_move_made_by_one_user_reaches_every_other_viewer_in_order_with_the_same_seqs(app) {
        let a = app.signup("Acme").await;
        let b = app.member(&a, "member").await;
        let (pipeline, stages) = app.pipeline(&a.token).await;
        let mut deals = Vec::new();
        for t in ["one", "two", "three"] {
            deals.push(app.post("/deals", &a.token, json!({"title": t, "pipeline_id": pipeline})).await.expect(201).id());
        }
        let topic = format!("board:{pipeline}");
        let mut wa = app.ws(&a.token).await;
        let mut wb = app.ws(&b.token).await;
        let first = wa.subscribe(&topic, None).await;
        assert_eq!(first[0]["type"], "snapshot");
        assert_eq!(first[0]["state"]["deals"].as_array().unwrap().len(), 3);
        assert_eq!(first[0]["state"]["stages"].as_array().unwrap().len(), 4);
        let start = subscribed_seq(&first);
        assert_eq!(first[0]["seq"], start);
        wb.subscribe(&topic, None).await;

        // A moves one deal over the WebSocket while B moves another through REST.
        for i in 0..10 {
            let cmd = json!({"type": "command", "id": format!("a-{i}"), "topic": topic, "op": "deal.move", "args": {"id": deals[0], "stage_id": stages[(i + 1) % 4]}});
            wa.send(cmd).await;
            let r = app.post_with(&format!("/deals/{}/move", deals[1]), &b.token, &[("x-mutation-id", &format!("b-{i}"))], json!({"stage_id": stages[(i + 1) % 4]})).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
        let (mut seen_a, mut acks) = (Vec::new(), Vec::new());
        while seen_a.len() < 20 || acks.len() < 10 {
            let f = wa.recv().await;
            match f["type"].as_str() {
                Some("event") => seen_a.push(f),
                Some("ack") => acks.push(f),
                other => panic!("unexpected frame {other:?}: {f}"),
            }
        }
        let mut seen_b = Vec::new();
        while seen_b.len() < 20 {
            let f = wb.recv().await;
            if f["type"] == "event" {
                seen_b.push(f);
            }
        }
        let key = |f: &Value| (f["seq"].as_i64().unwrap(), f["kind"].as_str().unwrap().to_string(), f["data"]["id"].as_str().unwrap().to_string());
        let order_a: Vec<_> = seen_a.iter().map(key).collect();
        let order_b: Vec<_> = seen_b.iter().map(key).collect();
        assert_eq!(order_a, order_b, "both viewers see one order");
        let seqs: Vec<i64> = order_a.iter().map(|k| k.0).collect();
        assert_eq!(seqs, ((start + 1)..=(start + 20)).collect::<Vec<_>>(), "no gap, no duplicate");
        assert!(order_a.iter().all(|k| k.1 == "deal.moved"));
        // Every ack names the seq of the event its command made, echoed with its id.
        for ack in &acks {
            let id = ack["id"].as_str().unwrap();
            let echo = seen_a.iter().find(|e| e["cause"] == id).unwrap_or_else(|| panic!("no echo for {id}"));
            assert_eq!(echo["seq"], ack["seq"]);
        }
        assert_eq!(seen_b.iter().filter(|e| e["cause"].as_str().is_some_and(|c| c.starts_with("b-"))).count(), 10);
        // The board as the store holds it is the board the stream built.
        let last = app.get(&format!("/deals/{}", deals[0]), &a.token).await.expect(200);
        let echo = seen_a.iter().rev().find(|e| e["data"]["id"] == deals[0].as_str()).unwrap();
        assert_eq!(echo["data"]["record"], last.body);
    }

    async fn a_client_that_misses_100_events_resumes_with_exactly_those(app) {
        let a = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&a.token).await;
        let deal = app.post("/deals", &a.token, json!({"title": "d", "pipeline_id": pipeline})).await.expect(201).id();
        let topic = format!("board:{pipeline}");
        let mut w = app.ws(&a.token).await;
        let seq0 = subscribed_seq(&w.subscribe(&topic, None).await);
        w.close().await;
        for i in 0..100 {
            app.patch(&format!("/deals/{deal}"), &a.token, json!({"title": format!("title {i}")})).await.expect(200);
        }
        let mut w = app.ws(&a.token).await;
        let frames = w.subscribe(&topic, Some(seq0)).await;
        let got: Vec<i64> = events(&frames).iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(got, ((seq0 + 1)..=(seq0 + 100)).collect::<Vec<_>>());
        assert_eq!(events(&frames)[99]["data"]["record"]["title"], "title 99");
        let done = frames.last().unwrap();
        assert_eq!((done["seq"].as_i64().unwrap(), done["replayed"].as_i64().unwrap(), done["snapshot"].as_bool().unwrap()), (seq0 + 100, 100, false));
        // Already current: nothing to replay.
        let again = w.subscribe(&topic, Some(seq0 + 100)).await;
        assert_eq!(again.len(), 1);
    }

    async fn a_resume_on_a_fresh_node_replays_from_the_event_log(app) {
        let a = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&a.token).await;
        let deal = app.post("/deals", &a.token, json!({"title": "d", "pipeline_id": pipeline})).await.expect(201).id();
        for i in 0..30 {
            app.patch(&format!("/deals/{deal}"), &a.token, json!({"title": format!("title {i}")})).await.expect(200);
        }
        let restarted = app.another_node().await;
        let mut w = restarted.ws(&a.token).await;
        let frames = w.subscribe(&format!("board:{pipeline}"), Some(2)).await;
        let seqs: Vec<i64> = events(&frames).iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        let last = subscribed_seq(&frames);
        assert_eq!(seqs, (3..=last).collect::<Vec<_>>());
        assert_eq!(events(&frames).last().unwrap()["data"]["record"]["title"], "title 29");
    }

    async fn presence_shows_who_views_and_who_drags_which_card(app) {
        let a = app.signup("Acme").await;
        let b = app.member(&a, "viewer").await;
        let (pipeline, _) = app.pipeline(&a.token).await;
        let deal = app.post("/deals", &a.token, json!({"title": "d", "pipeline_id": pipeline})).await.expect(201).id();
        let topic = format!("board:{pipeline}");
        let mut wa = app.ws(&a.token).await;
        let mut wb = app.ws(&b.token).await;
        wa.subscribe(&topic, None).await;
        wb.subscribe(&topic, None).await;
        wa.send(json!({"type": "presence", "topic": topic, "state": {"dragging": deal}})).await;
        let p = wb.until("presence").await.pop().unwrap();
        assert_eq!(p["members"], json!([{"user_id": a.user_id, "state": {"dragging": deal}}]));
        wa.send(json!({"type": "unsubscribe", "topic": topic})).await;
        let p = wb.until("presence").await.pop().unwrap();
        assert_eq!(p["members"], json!([]));
        // Presence needs a subscription, and stays small.
        wa.send(json!({"type": "presence", "topic": topic, "state": {"viewing": true}})).await;
        assert_eq!(wa.until("error").await.pop().unwrap()["code"], "invalid_body");
    }

    async fn subscriptions_and_commands_are_limited_to_the_callers_workspace_and_role(app) {
        let a = app.signup("Acme").await;
        let viewer = app.member(&a, "viewer").await;
        let other = app.signup("Other").await;
        let (pipeline, stages) = app.pipeline(&a.token).await;
        let deal = app.post("/deals", &a.token, json!({"title": "d", "pipeline_id": pipeline})).await.expect(201).id();
        let topic = format!("board:{pipeline}");
        let mut wo = app.ws(&other.token).await;
        wo.send(json!({"type": "subscribe", "topic": topic})).await;
        assert_eq!(wo.until("error").await.pop().unwrap()["code"], "not_found");
        wo.send(json!({"type": "subscribe", "topic": format!("workspace:{}", a.workspace_id)})).await;
        assert_eq!(wo.until("error").await.pop().unwrap()["code"], "not_found");
        wo.send(json!({"type": "subscribe", "topic": format!("user:{}:{}", a.workspace_id, a.user_id)})).await;
        assert_eq!(wo.until("error").await.pop().unwrap()["code"], "forbidden");
        wo.send(json!({"type": "command", "id": "x", "topic": topic, "op": "deal.move", "args": {"id": deal, "stage_id": stages[1]}})).await;
        assert_eq!(wo.until("nack").await.pop().unwrap()["code"], "not_found");

        let mut wv = app.ws(&viewer.token).await;
        wv.subscribe(&topic, None).await;
        wv.send(json!({"type": "command", "id": "v1", "topic": topic, "op": "deal.move", "args": {"id": deal, "stage_id": stages[1]}})).await;
        let nack = wv.until("nack").await.pop().unwrap();
        assert_eq!((nack["id"].as_str(), nack["code"].as_str()), (Some("v1"), Some("forbidden")));
        for (bad, code) in [
            ("{", "malformed_json"),
            ("[1]", "invalid_body"),
            (r#"{"type":"dance"}"#, "invalid_body"),
            (r#"{"type":"subscribe","topic":"room:1"}"#, "invalid_body"),
            (r#"{"type":"subscribe"}"#, "invalid_body"),
        ] {
            wv.framed_text(bad).await;
            assert_eq!(wv.until("error").await.pop().unwrap()["code"], code, "{bad}");
        }
        let mut wa = app.ws(&a.token).await;
        wa.send(json!({"type": "command", "id": "c1", "topic": topic, "op": "deal.explode", "args": {}})).await;
        assert_eq!(wa.until("nack").await.pop().unwrap()["code"], "invalid_body");
        wa.send(json!({"type": "command", "id": "c2", "topic": topic, "op": "deal.update", "args": {"id": deal, "changes": {"amount": -1}}})).await;
        let nack = wa.until("nack").await.pop().unwrap();
        assert_eq!(nack["code"], "validation_failed");
        assert!(nack["details"]["fields"]["amount"].is_string());
        wa.send(json!({"type": "command", "id": "c3", "topic": topic, "op": "deal.update", "args": {"id": deal, "version": 99, "changes": {"title": "x"}}})).await;
        let nack = wa.until("nack").await.pop().unwrap();
        assert_eq!(nack["code"], "version_conflict");
        assert_eq!(nack["details"]["current_version"], 1);
        wa.send(json!({"type": "ping"})).await;
        assert_eq!(wa.recv().await["type"], "pong");
    }

    async fn rest_changes_to_contacts_and_assignments_appear_on_their_topics(app) {
        let a = app.signup("Acme").await;
        let m = app.member(&a, "member").await;
        let mut wa = app.ws(&a.token).await;
        let mut wm = app.ws(&m.token).await;
        wa.subscribe(&format!("workspace:{}", a.workspace_id), None).await;
        wm.subscribe(&format!("user:{}:{}", a.workspace_id, m.user_id), None).await;
        let c = app.post("/contacts", &a.token, json!({"name": "Grace", "owner_id": m.user_id})).await.expect(201).id();
        let e = wa.until("event").await.pop().unwrap();
        assert_eq!((e["kind"].as_str(), e["data"]["id"].as_str()), (Some("contact.created"), Some(c.as_str())));
        assert_eq!(e["actor"], format!("user:{}", a.user_id));
        let n = wm.until("event").await.pop().unwrap();
        assert_eq!((n["kind"].as_str(), n["data"]["id"].as_str(), n["data"]["field"].as_str()), (Some("assigned"), Some(c.as_str()), Some("owner_id")));
        app.patch(&format!("/contacts/{c}"), &a.token, json!({"title": "Admiral"})).await.expect(200);
        let e = wa.until("event").await.pop().unwrap();
        assert_eq!(e["kind"], "contact.updated");
        assert_eq!(e["data"]["changes"]["title"], json!([null, "Admiral"]));
        app.delete(&format!("/contacts/{c}"), &a.token).await.expect(204);
        assert_eq!(wa.until("event").await.pop().unwrap()["kind"], "contact.deleted");
    }
}

#[actix_web::test]
async fn a_slow_reader_is_told_to_resync_and_can_resume() {
    let settings = shoal::config::Settings {
        ws_outbound_queue: 16,
        ..test_settings()
    };
    let app = TestApp::spawn_with(Backend::Sqlite, settings).await;
    let a = app.signup("Acme").await;
    let (pipeline, _) = app.pipeline(&a.token).await;
    // Large events fill the socket's buffers quickly.
    for i in 0..40 {
        app.post(
            "/custom-fields",
            &a.token,
            json!({"object_type": "deal", "key": format!("f{i}"), "label": "x", "kind": "text"}),
        )
        .await
        .expect(201);
    }
    let deal = app
        .post("/deals", &a.token, json!({"title": "d", "pipeline_id": pipeline}))
        .await
        .expect(201)
        .id();
    let topic = format!("board:{pipeline}");
    let mut slow = app.ws(&a.token).await;
    slow.subscribe(&topic, None).await;
    // The slow client reads nothing while 300 large events happen.
    for i in 0..300 {
        let custom: serde_json::Map<String, Value> = (0..40)
            .map(|f| (format!("f{f}"), json!(format!("{i:04}{}", "x".repeat(996)))))
            .collect();
        app.patch(&format!("/deals/{deal}"), &a.token, json!({"custom_fields": custom}))
            .await
            .expect(200);
    }
    let mut last_seq = 0;
    loop {
        let f = slow.recv().await;
        match f["type"].as_str() {
            Some("event") => last_seq = f["seq"].as_i64().unwrap(),
            Some("resync") => {
                assert_eq!(
                    (f["topic"].as_str(), f["reason"].as_str()),
                    (Some(topic.as_str()), Some("slow_consumer"))
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(last_seq > 0);
    // Resuming from the last event seen brings the client up to date.
    let frames = slow.subscribe(&topic, Some(last_seq)).await;
    let end = subscribed_seq(&frames);
    let got = events(&frames);
    if frames[0]["type"] == "snapshot" {
        assert_eq!(frames[0]["seq"], end);
    } else {
        assert_eq!(got.first().unwrap()["seq"].as_i64().unwrap(), last_seq + 1);
        assert_eq!(got.last().unwrap()["seq"].as_i64().unwrap(), end);
    }
}

on_both_backends! {
    async fn a_board_actor_that_fails_is_rebuilt_and_its_viewers_resync(app) {
        let a = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&a.token).await;
        let deal = app.post("/deals", &a.token, json!({"title": "d", "pipeline_id": pipeline})).await.expect(201).id();
        let topic = format!("board:{pipeline}");
        let mut w = app.ws(&a.token).await;
        let seq = subscribed_seq(&w.subscribe(&topic, None).await);

        app.post(&format!("/_faults/crash/{topic}"), &a.token, json!({})).await.expect(204);
        let resync = w.until("resync").await.pop().unwrap();
        assert_eq!((resync["topic"].as_str(), resync["reason"].as_str()), (Some(topic.as_str()), Some("restarted")));
        let metrics = app.get("/metrics", METRICS_TOKEN).await.expect(200);
        assert!(metrics.text.contains("shoal_topic_restarts_total 1"), "{}", metrics.text);

        // The node carries on: the board resumes from where the client was.
        app.post(&format!("/deals/{deal}/move"), &a.token, json!({"stage_id": stages[1]})).await.expect(200);
        let frames = w.subscribe(&topic, Some(seq)).await;
        let got = events(&frames);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0]["seq"].as_i64(), got[0]["kind"].as_str()), (Some(seq + 1), Some("deal.moved")));
        let snapshot = w.subscribe(&topic, None).await;
        assert_eq!(snapshot[0]["state"]["deals"][0]["stage_id"], stages[1].as_str());
    }
}
