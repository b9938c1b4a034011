//! Details of the real-time protocol a client relies on: a clean close, acks that say
//! when nothing changed, and topic names however they are spelled.

use serde_json::json;

use crate::on_both_backends;

on_both_backends! {
    async fn a_close_from_the_client_is_answered_with_a_close_echoing_its_code(app) {
        let s = app.signup("Acme").await;
        let mut ws = app.ws(&s.token).await;
        ws.send_close(Some(awc::ws::CloseCode::Normal.into())).await;
        let (frames, close) = ws.until_closed().await;
        assert!(frames.is_empty(), "{frames:?}");
        let reason = close.expect("a close frame, not a dropped connection").expect("with a code");
        assert_eq!(reason.code, awc::ws::CloseCode::Normal);
    }

    async fn a_move_to_the_place_a_card_already_holds_is_acked_as_a_no_op_without_a_seq(app) {
        let s = app.signup("Acme").await;
        let (pipeline, stages) = app.pipeline(&s.token).await;
        let first = app.deal(&s.token, &pipeline, "first").await;
        let second = app.deal(&s.token, &pipeline, "second").await;
        let topic = format!("board:{pipeline}");
        let mut ws = app.ws(&s.token).await;
        ws.subscribe(&topic, None).await;
        let command = |id: &str, args: serde_json::Value| json!({"type": "command", "id": id, "topic": topic, "op": "deal.move", "args": args});

        // Already last of its column; already right after `first`.
        ws.send(command("stay-last", json!({"id": second, "stage_id": stages[0]}))).await;
        ws.send(command("stay-after", json!({"id": second, "after": first}))).await;
        for id in ["stay-last", "stay-after"] {
            let ack = ws.recv().await;
            assert_eq!(ack["type"], "ack", "no event before the ack: {ack}");
            assert_eq!((ack["id"].as_str(), ack["seq"].is_null(), ack["noop"].as_bool()), (Some(id), true, Some(true)), "{ack}");
        }
        let stored = app.get(&format!("/deals/{second}"), &s.token).await.expect(200);
        assert_eq!(stored.body["version"], 1, "nothing was written");

        // A move that changes something says which event it made.
        ws.send(command("to-front", json!({"id": second, "before": first}))).await;
        let frames = ws.until("ack").await;
        let ack = frames.last().unwrap();
        assert_eq!(ack["noop"], false);
        let seq = ack["seq"].as_i64().expect("a seq");
        let mut events: Vec<_> = frames.iter().filter(|f| f["type"] == "event").cloned().collect();
        if events.is_empty() {
            events.push(ws.until("event").await.pop().unwrap());
        }
        assert_eq!((events[0]["seq"].as_i64(), events[0]["cause"].as_str()), (Some(seq), Some("to-front")));
    }

    async fn unsubscribing_with_a_differently_spelled_topic_ends_the_subscription(app) {
        let s = app.signup("Acme").await;
        let (pipeline, _) = app.pipeline(&s.token).await;
        let mut ws = app.ws(&s.token).await;
        ws.subscribe(&format!("board:{pipeline}"), None).await;

        ws.send(json!({"type": "unsubscribe", "topic": format!("board:{}", pipeline.to_uppercase())})).await;
        let answer = ws.recv().await;
        assert_eq!((answer["type"].as_str(), answer["topic"].as_str()), (Some("unsubscribed"), Some(format!("board:{pipeline}").as_str())));

        // Once another follower has the event, it was fanned out to every follower;
        // a few round trips later it would have reached this connection too.
        let mut observer = app.ws(&s.token).await;
        observer.subscribe(&format!("board:{pipeline}"), None).await;
        app.deal(&s.token, &pipeline, "unseen").await;
        observer.until("event").await;
        for _ in 0..3 {
            ws.send(json!({"type": "ping"})).await;
            let frames = ws.until("pong").await;
            assert_eq!(frames.len(), 1, "no event after unsubscribing: {frames:?}");
        }
    }
}
